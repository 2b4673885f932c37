//! `mvm logs`.

use std::io::Write;

use clap::Args;
use mvm_engine::Engine;
use mvm_engine::container::logs::{LogError, Window};
use mvm_engine::logs::LogEntry;

use crate::error::CliError;

/// `logs`' flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show extra details provided to logs (the attributes --log-opt labels=/env= keep).
    #[arg(long)]
    pub details: bool,
    /// Show logs since a timestamp (2026-12-01T10:00:00Z, Unix seconds) or a relative time (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or a relative time.
    #[arg(long)]
    pub until: Option<String>,
    /// Container.
    pub container: String,
}

/// `mvm logs`.
pub fn logs(engine: &Engine, a: &LogsArgs) -> Result<i32, CliError> {
    let tail = match a.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| CliError::usage(format!("invalid --tail {n:?}")))?,
        ),
    };
    let window = log_window(a.since.as_deref(), a.until.as_deref())?;
    let failed = |e: LogError| CliError::with_code(1, e.to_string());
    let mut log = engine.logs(&a.container, window).map_err(failed)?;
    for e in log.backlog(tail).map_err(failed)? {
        print_entry(&e, a.timestamps, a.details);
    }
    if a.follow {
        log.follow(|e| print_entry(e, a.timestamps, a.details))
            .map_err(failed)?;
    }
    Ok(0)
}

/// `logs --since/--until` in Docker's forms: an RFC 3339 time, Unix seconds
/// (`1700000000[.5]`), or a duration before now (`10m`, `1h30m`, `45s`).
pub fn log_window(since: Option<&str>, until: Option<&str>) -> Result<Window, CliError> {
    let secs = crate::output::time::point_in_time;
    Ok(Window::new(
        since.map(|v| secs(v, "since")).transpose()?,
        until.map(|v| secs(v, "until")).transpose()?,
    ))
}

/// Writes one log entry to our stdout or stderr, as its stream was (with its time first for
/// `-t`).
fn print_entry(e: &LogEntry, timestamps: bool, details: bool) {
    let mut text = String::new();
    if timestamps {
        text.push_str(&e.time);
        text.push(' ');
    }
    // `--details`: the line's attributes, `k=v,k2=v2 `, before the text (Docker's order:
    // time, details, text).
    if details {
        let attrs: Vec<String> = e.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&attrs.join(","));
        text.push(' ');
    }
    text.push_str(&e.log);
    if e.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_in_dockers_forms() {
        assert!(log_window(Some("10m"), Some("2026-12-01T00:00:00Z")).is_ok());
        assert!(log_window(Some("1700000000.5"), None).is_ok());
        assert!(log_window(Some("yesterday"), None).is_err());
        assert!(log_window(None, Some("-5")).is_err());
    }
}

//! The runtime's log: errors (and with `--debug`, debug lines) appended to `--log` in runc's
//! text or JSON form (containerd-shim-runc-v2 shows dockerd the last JSON `msg`), and errors on
//! stderr too (podman shows that).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::cli::LogFormat;

/// Where lines go.
#[derive(Debug, Clone)]
pub struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
    stderr: bool,
}

impl Logger {
    /// A logger for `--log`, `--log-format` and `--debug`.
    pub fn new(file: Option<PathBuf>, format: LogFormat, debug: bool) -> Logger {
        Logger {
            file,
            format,
            debug,
            stderr: true,
        }
    }

    /// The same logger, writing nothing to stderr: a relay's stderr is the container's.
    pub fn without_stderr(mut self) -> Logger {
        self.stderr = false;
        self
    }

    /// Whether debug lines are kept.
    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    /// An error: to the log file and stderr.
    pub fn error(&self, msg: &str) {
        self.append("error", msg);
        if self.stderr {
            let _ = writeln!(std::io::stderr(), "mvm-runc: {msg}");
        }
    }

    /// A warning: to the log file.
    pub fn warn(&self, msg: &str) {
        self.append("warning", msg);
    }

    /// A debug line: to the log file with `--debug` (to stderr when there is no file).
    pub fn debug(&self, msg: &str) {
        if !self.debug {
            return;
        }
        if self.file.is_some() {
            self.append("debug", msg);
        } else if self.stderr {
            let _ = writeln!(std::io::stderr(), "mvm-runc: debug: {msg}");
        }
    }

    fn append(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else {
            return;
        };
        let line = format_line(self.format, level, msg, &mvm_rootfs::time::now());
        // One write per line, O_APPEND: concurrent runtimes' lines do not interleave.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// One line of the log in `format`.
pub fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let v = serde_json::json!({"level": level, "msg": msg, "time": time});
            format!("{v}\n")
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_formats() {
        let j = format_line(LogFormat::Json, "error", "no \"such\" bundle", "T");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "no \"such\" bundle");
        assert!(j.ends_with('\n') && j.matches('\n').count() == 1);
        assert_eq!(
            format_line(LogFormat::Text, "debug", "a\nb", "T"),
            "time=\"T\" level=debug msg=\"a\\nb\"\n"
        );
    }
}

//! `mvm events` (and `system events`): what happened to containers, networks and volumes,
//! replayed from the state root's event log and followed, in Docker's line or a template.

use std::path::Path;
use std::time::Duration;

use mvm_engine::events::{self, Event};
use serde_json::Value;

use crate::error::CliError;
use crate::output::filter::Filters;
use crate::output::template::Template;

/// `events`' flags.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Show all events created since timestamp.
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided.
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Format the output using the given Go template.
    #[arg(long)]
    pub format: Option<String>,
}

/// The filters `events` knows, as Docker's.
const FILTER_KEYS: &[&str] = &[
    "container",
    "event",
    "type",
    "image",
    "label",
    "network",
    "volume",
];

/// How often the log is looked at for new events while following.
const POLL: Duration = Duration::from_millis(100);

impl EventsArgs {
    /// Prints the events in the window, following the log until `--until` (or forever).
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        let since = self
            .since
            .as_deref()
            .map(|v| crate::output::time::point_in_time(v, "since"))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|v| crate::output::time::point_in_time(v, "until"))
            .transpose()?;
        let filters = Filters::parse(&self.filter, FILTER_KEYS)
            .map_err(|e| CliError::with_code(1, e.message))?;
        let template = match self.format.as_deref() {
            None => None,
            Some("json") => Some(parse("{{json .}}")?),
            Some(f) => Some(parse(&f.replace("\\t", "\t").replace("\\n", "\n"))?),
        };
        let nano = |secs: f64| (secs * 1e9) as i64;
        // Without --since, only what happens from now on, as Docker's.
        let (past, mut offset) = events::read_from(root, 0);
        let start = since.map(nano);
        let end = until.map(nano);
        let show = |e: &Event| -> Result<(), CliError> {
            if start.is_some_and(|s| e.time_nano < s) || !matches(&filters, e) {
                return Ok(());
            }
            let line = match &template {
                Some(t) => {
                    let v = serde_json::to_value(e).unwrap_or(Value::Null);
                    t.render(&v)
                        .map_err(|err| CliError::with_code(1, format!("template: {err}")))?
                }
                None => docker_line(e),
            };
            println!("{line}");
            Ok(())
        };
        if start.is_some() {
            for e in past.iter().filter(|e| end.is_none_or(|u| e.time_nano <= u)) {
                show(e)?;
            }
        }
        loop {
            let now = nano(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            if end.is_some_and(|u| now > u) {
                return Ok(0);
            }
            std::thread::sleep(POLL);
            let (new, next) = events::read_from(root, offset);
            offset = next;
            for e in new.iter().filter(|e| end.is_none_or(|u| e.time_nano <= u)) {
                show(e)?;
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    }
}

fn parse(text: &str) -> Result<Template, CliError> {
    Template::parse(text)
        .map_err(|e| CliError::with_code(1, format!("template parsing error: {e}")))
}

/// Docker's line: time, type, action, actor and its attributes.
fn docker_line(e: &Event) -> String {
    let attrs: Vec<String> = e
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut line = format!(
        "{} {} {} {}",
        crate::output::time::rfc3339_nano(e.time_nano),
        e.kind,
        e.action,
        e.actor.id
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}

/// Docker's event filters: each key any of its values, all keys.
fn matches(f: &Filters, e: &Event) -> bool {
    let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let action = e.action.split(':').next().unwrap_or("");
    f.any("type", |v| e.kind == v)
        && f.any("event", |v| action == v)
        && f.any("container", |v| {
            e.kind == "container" && (e.actor.id.starts_with(v) || attr("name") == v)
        })
        && f.any("image", |v| {
            attr("image") == v || (e.kind == "image" && (e.actor.id == v || attr("name") == v))
        })
        && f.any("network", |v| {
            e.kind == "network" && (e.actor.id.starts_with(v) || attr("name") == v)
        })
        && f.any("volume", |v| e.kind == "volume" && e.actor.id == v)
        && f.labels(&e.actor.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_filters_as_docker_prints_them() {
        let mut e = Event {
            kind: "container".into(),
            action: "exec_start: sh -c true".into(),
            time_nano: 1_700_000_000_120_000_000,
            ..Default::default()
        };
        e.actor.id = "abc123".into();
        e.actor.attributes.insert("name".into(), "c1".into());
        e.actor.attributes.insert("image".into(), "busybox".into());
        assert_eq!(
            docker_line(&e),
            "2023-11-14T22:13:20.12Z container exec_start: sh -c true abc123 (image=busybox, name=c1)"
        );
        let f = |w: &[&str]| {
            Filters::parse(
                &w.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                FILTER_KEYS,
            )
            .unwrap()
        };
        assert!(matches(&f(&["event=exec_start", "container=c1"]), &e));
        assert!(matches(&f(&["container=abc"]), &e));
        assert!(!matches(&f(&["type=network"]), &e));
        assert!(!matches(&f(&["event=start"]), &e));
    }
}

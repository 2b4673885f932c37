//! `events`: what happened to containers, images, networks and volumes, as Docker reports it.
//! Every command that changes an object appends one JSON line (Docker's event document) to
//! `<root>/events.jsonl` with a single `O_APPEND` write, so concurrent commands never mix
//! lines; past 8 MiB the file is rotated once (`events.jsonl.1`), which bounds the history.
//! Readers replay the file and follow it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Size past which the event log is rotated.
const MAX_LOG_BYTES: u64 = 8 << 20;

/// The object an event is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Its ID (a container's or network's ID, an image's reference, a volume's name).
    #[serde(rename = "ID")]
    pub id: String,
    /// What Docker attaches (`name`, `image`, `exitCode`, `signal`...).
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, in Docker's JSON shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Docker's legacy `status` (the action), for containers and images.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Legacy `id`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Legacy `from` (a container's image).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// `container`, `image`, `network` or `volume`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`...
    #[serde(rename = "Action")]
    pub action: String,
    /// What it happened to.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

/// The event log of a state root.
pub fn log_path(root: &Path) -> PathBuf {
    root.join("events.jsonl")
}

/// Records that `action` happened to the object `id` of `kind`. Best effort: a state root
/// that cannot take the line does not fail the command that did the work.
pub fn record(root: &Path, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let attributes: BTreeMap<String, String> = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let legacy = matches!(kind, "container" | "image");
    let e = Event {
        status: if legacy { action.into() } else { String::new() },
        id: if legacy { id.into() } else { String::new() },
        from: if kind == "container" {
            attributes.get("image").cloned().unwrap_or_default()
        } else {
            String::new()
        },
        kind: kind.into(),
        action: action.into(),
        actor: Actor {
            id: id.into(),
            attributes,
        },
        scope: "local".into(),
        time: now.as_secs() as i64,
        time_nano: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
    };
    let Ok(mut line) = serde_json::to_vec(&e) else {
        return;
    };
    line.push(b'\n');
    let path = log_path(root);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(&path, path.with_extension("jsonl.1"));
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&line));
    if let Err(e) = written {
        tracing::debug!("recording the event {kind} {action}: {e}");
    }
}

/// A container's event, with its name and image (and `extra`) as attributes, as Docker's.
pub fn container(
    root: &Path,
    rec: &crate::container::ContainerRecord,
    action: &str,
    extra: &[(&str, &str)],
) {
    let mut attrs: Vec<(&str, &str)> = vec![("image", &rec.spec.image), ("name", &rec.name)];
    attrs.extend(
        rec.spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    attrs.extend_from_slice(extra);
    record(root, "container", action, &rec.id, &attrs);
}

/// Reads the events recorded from byte `offset` of the current log (the rotated one first
/// when `offset` is 0); returns them and the offset to read on from. Lines that do not parse
/// are skipped.
pub fn read_from(root: &Path, offset: u64) -> (Vec<Event>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    let path = log_path(root);
    if offset == 0
        && let Ok(old) = std::fs::read(path.with_extension("jsonl.1"))
    {
        out.extend(parse(&old));
    }
    let Ok(mut f) = std::fs::File::open(&path) else {
        return (out, 0);
    };
    let len = f.metadata().map_or(0, |m| m.len());
    // Rotated since the last read: start over in the new file.
    let start = if offset > len { 0 } else { offset };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (out, start);
    }
    // Only whole lines: a line being written is read next time.
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    out.extend(parse(&buf[..whole]));
    (out, start + whole as u64)
}

fn parse(bytes: &[u8]) -> Vec<Event> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_events_read_back_in_order_and_follow_on() {
        let root = std::env::temp_dir().join(format!("mvm-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        record(
            &root,
            "container",
            "create",
            "abc",
            &[("name", "c1"), ("image", "busybox")],
        );
        record(
            &root,
            "network",
            "create",
            "n1id",
            &[("name", "n1"), ("type", "bridge")],
        );
        let (events, offset) = read_from(&root, 0);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].status, "create");
        assert_eq!(events[0].from, "busybox");
        assert_eq!(events[1].status, "");
        assert_eq!(events[1].actor.attributes["name"], "n1");
        std::fs::OpenOptions::new()
            .append(true)
            .open(log_path(&root))
            .unwrap()
            .write_all(b"{\"Type\":\"half")
            .unwrap();
        record(&root, "volume", "destroy", "v1", &[]);
        let (more, _) = read_from(&root, offset);
        assert!(more.is_empty(), "a broken line is skipped: {more:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! Reading a container's json-file log: what it holds now, then (following) what it gets
//! until the container stops.

use std::path::Path;
use std::time::Duration;

use super::{ContainerDirs, ContainerError, resolve, time_key};
use crate::logs::{Follower, LogEntry, read_rotated};

/// `logs --since/--until`: entries with `since <= time < until`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    since: Option<String>,
    until: Option<String>,
}

impl Window {
    /// The entries between two times in Unix seconds (either end open).
    pub fn new(since: Option<f64>, until: Option<f64>) -> Self {
        let key = |secs: f64| {
            let secs = secs.max(0.0);
            let whole = secs.trunc() as u64;
            let nanos = ((secs - secs.trunc()) * 1e9) as u32;
            time_key(&mvm_rootfs::time::rfc3339(whole, nanos))
        };
        Self {
            since: since.map(key),
            until: until.map(key),
        }
    }

    /// Whether `e` was written inside the window.
    pub fn contains(&self, e: &LogEntry) -> bool {
        let t = time_key(&e.time);
        self.since.as_ref().is_none_or(|s| t >= *s) && self.until.as_ref().is_none_or(|u| t < *u)
    }

    /// Whether the window ends (then nothing newer can match, and there is nothing to follow).
    pub fn is_closed(&self) -> bool {
        self.until.is_some()
    }
}

/// A container's log, read from where it starts.
pub struct LogReader {
    dirs: ContainerDirs,
    follower: Follower,
    window: Window,
}

/// Why a log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The container is not there.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// It runs with `--log-driver none`.
    #[error(
        "configured logging driver does not support reading: the container runs with --log-driver none"
    )]
    NotKept,
    /// The log files cannot be read.
    #[error("cannot read the container's log: {0}")]
    Io(#[from] std::io::Error),
}

impl LogReader {
    /// Opens container `key`'s log.
    pub fn open(root: &Path, key: &str, window: Window) -> Result<Self, LogError> {
        let (dirs, rec) = resolve(root, key)?;
        if rec.log().is_none() {
            return Err(LogError::NotKept);
        }
        // The current file is read through the follower, so following goes on exactly where
        // the first read ended.
        let follower = Follower::at_start(&dirs.log_path());
        Ok(Self {
            dirs,
            follower,
            window,
        })
    }

    /// Every entry in the window so far, rotated files first; the last `tail` only when given.
    pub fn backlog(&mut self, tail: Option<usize>) -> Result<Vec<LogEntry>, LogError> {
        let mut entries = read_rotated(&self.dirs.log_path())?;
        entries.extend(self.follower.poll()?);
        entries.retain(|e| self.window.contains(e));
        let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
        entries.drain(..skip);
        Ok(entries)
    }

    /// Waits for what the container writes next and passes it to `each`, until the container
    /// stops (or at once when the window is closed). Reads only what was added, across
    /// rotations.
    pub fn follow(&mut self, mut each: impl FnMut(&LogEntry)) -> Result<(), LogError> {
        if self.window.is_closed() {
            return Ok(());
        }
        loop {
            let running = self.dirs.load().is_ok_and(|r| r.is_running());
            for e in self.follower.poll()? {
                if self.window.contains(&e) {
                    each(&e);
                }
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: &str) -> LogEntry {
        LogEntry {
            log: "x\n".into(),
            stream: "stdout".into(),
            time: time.into(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn windows_are_half_open_and_compare_times_not_strings() {
        // 2026-12-01T00:00:05Z is 1796083205.
        let w = Window::new(Some(1_796_083_205.0), Some(1_796_083_206.0));
        assert!(w.is_closed());
        assert!(!w.contains(&entry("2026-12-01T00:00:04.999999999Z")));
        assert!(w.contains(&entry("2026-12-01T00:00:05Z")));
        assert!(w.contains(&entry("2026-12-01T00:00:05.5Z")));
        assert!(!w.contains(&entry("2026-12-01T00:00:06Z")));
        let open = Window::default();
        assert!(!open.is_closed() && open.contains(&entry("1970-01-01T00:00:00Z")));
        let since = Window::new(Some(1_796_083_205.25), None);
        assert!(!since.contains(&entry("2026-12-01T00:00:05.2Z")));
        assert!(since.contains(&entry("2026-12-01T00:00:05.25Z")));
    }
}

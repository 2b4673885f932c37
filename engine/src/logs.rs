//! Container logs in Docker's json-file format: one JSON object per line of output,
//! `{"log":"text\n","stream":"stdout","time":"<RFC 3339, nanoseconds>"}`, rotated as
//! Docker's driver rotates with `--log-opt max-size=...,max-file=...` (`container.log`,
//! `container.log.1`, ... oldest last), with a default bound: a guest that writes without end
//! must not fill the host's disk.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::logfile::{RotatingFile, rotated};

use serde::{Deserialize, Serialize};

/// One logged line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// The text, with its newline when it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was written.
    pub time: String,
    /// The container's labels and environment variables that `--log-opt labels=`/`env=`
    /// named, as Docker's json-file keeps them with each line (`logs --details`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attrs: std::collections::BTreeMap<String, String>,
}

/// Longest line kept whole; longer output is split, as Docker splits at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

/// Default `max-size`: Docker's json-file has none; ours keeps a guest from filling the disk
/// (the same bounds as Docker's `local` driver: 20 MB, 5 files).
pub const DEFAULT_MAX_SIZE: u64 = 20 * 1000 * 1000;
/// Default `max-file`.
pub const DEFAULT_MAX_FILE: u32 = 5;
/// Most files `max-file` may ask for.
const MAX_MAX_FILE: u32 = 100;

/// How a container's log is bounded: `--log-opt max-size=` and `max-file=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogOptions {
    /// Bytes per file before it rotates.
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_file: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
        }
    }
}

/// Docker's size syntax for `max-size`: a number with an optional unit k, m or g (decimal,
/// as Docker's `units.FromHumanSize`; `kb`/`mb`/`gb` too).
fn parse_size(v: &str) -> Option<u64> {
    let lower = v.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.char_indices().last()? {
        (i, 'k') => (&lower[..i], 1_000u64),
        (i, 'm') => (&lower[..i], 1_000_000),
        (i, 'g') => (&lower[..i], 1_000_000_000),
        _ => (lower, 1),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(mult).filter(|&b| b > 0)
}

impl LogOptions {
    /// Parses `--log-opt` values (`key=value`, repeatable) for the json-file driver; one
    /// clear error for an unknown key or a bad value.
    pub fn parse(opts: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        for opt in opts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("invalid --log-opt {opt:?}: expected key=value"))?;
            match k {
                "max-size" => {
                    o.max_size = parse_size(v).filter(|&b| b >= 1024).ok_or_else(|| {
                        format!(
                            "invalid --log-opt max-size={v:?}: use a size of at least 1k, e.g. 10m"
                        )
                    })?;
                }
                "max-file" => {
                    o.max_file = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_MAX_FILE).contains(n))
                        .ok_or_else(|| {
                            format!("invalid --log-opt max-file={v:?}: use a number from 1 to {MAX_MAX_FILE}")
                        })?;
                }
                // Read by `attrs` when the writer opens.
                "labels" | "env" => {}
                _ => {
                    return Err(format!(
                        "unknown log opt {k:?} for the json-file log driver (supported: max-size, max-file, labels, env)"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// The attributes `--log-opt labels=a,b` and `env=A,B` ask to keep with every line: those of
/// the container's `labels` and `env` (`KEY=VALUE`) it has.
pub fn attrs(
    log_opts: &[String],
    labels: &std::collections::BTreeMap<String, String>,
    env: &[String],
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for opt in log_opts {
        let Some((k, v)) = opt.split_once('=') else {
            continue;
        };
        for name in v.split(',').filter(|n| !n.is_empty()) {
            let found = match k {
                "labels" => labels.get(name).cloned(),
                "env" => env.iter().find_map(|e| {
                    e.split_once('=')
                        .filter(|(ek, _)| *ek == name)
                        .map(|(_, ev)| ev.to_string())
                }),
                _ => None,
            };
            if let Some(val) = found {
                out.insert(name.to_string(), val);
            }
        }
    }
    out
}

/// Appends a container's output to its log, a line per entry.
pub struct LogWriter {
    file: RotatingFile,
    partial: [Vec<u8>; 2],
    attrs: std::collections::BTreeMap<String, String>,
}

impl LogWriter {
    /// Opens (creating) the log at `path` for appending, rotated by `opts`.
    pub fn open(path: &Path, opts: LogOptions) -> io::Result<Self> {
        Ok(Self {
            file: RotatingFile::open(path, opts.max_size, opts.max_file)?,
            partial: [Vec::new(), Vec::new()],
            attrs: Default::default(),
        })
    }

    /// Every line from now on carries `attrs` (see [`attrs`]).
    pub fn with_attrs(mut self, attrs: std::collections::BTreeMap<String, String>) -> Self {
        self.attrs = attrs;
        self
    }

    fn entry(&mut self, stderr: bool, bytes: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: if stderr { "stderr" } else { "stdout" }.into(),
            time: mvm_rootfs::time::now(),
            attrs: self.attrs.clone(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_record(&line)
    }

    /// Logs output of one stream; complete lines are written at once, a partial line waits
    /// for its end (or for [`LogWriter::flush`]).
    pub fn write(&mut self, stderr: bool, data: &[u8]) -> io::Result<()> {
        let idx = usize::from(stderr);
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.entry(stderr, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start > MAX_LINE {
            self.entry(stderr, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.partial[idx] = buf[start..].to_vec();
        Ok(())
    }

    /// Writes what is left of unterminated lines.
    pub fn flush(&mut self) -> io::Result<()> {
        for stderr in [false, true] {
            let rest = std::mem::take(&mut self.partial[usize::from(stderr)]);
            if !rest.is_empty() {
                self.entry(stderr, &rest)?;
            }
        }
        Ok(())
    }
}

/// The files of a log, oldest first: `path.N` ... `path.1`, then `path`.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_MAX_FILE)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    files
}

fn parse_lines(r: impl BufRead, out: &mut Vec<LogEntry>) {
    out.extend(
        r.lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok()),
    );
}

/// Reads the entries of a log's rotated files (`path.N` ... `path.1`), oldest first.
pub fn read_rotated(path: &Path) -> io::Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    let mut files = log_files(path);
    files.pop();
    for p in files {
        match File::open(&p) {
            Ok(f) => parse_lines(BufReader::new(f), &mut out),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
/// Reads every entry of a log, its rotated files first; a damaged line is skipped rather than
/// failing the whole read.
pub fn read_entries(path: &Path) -> io::Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    for p in log_files(path) {
        match File::open(&p) {
            Ok(f) => parse_lines(BufReader::new(f), &mut out),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Follows a log as it grows (`logs -f`): reads only what was added since the last call,
/// and across a rotation finishes the file it had open before starting the new one.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the current end of the log.
    #[cfg(test)]
    pub fn at_end(path: &Path) -> Self {
        let mut f = Self::at_start(path);
        f.pos = f
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        f
    }

    /// Starts at the beginning of the log's current file (its rotated files are not read).
    pub fn at_start(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(path).ok();
        let ino = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.ino());
        Self {
            path: path.to_path_buf(),
            file,
            ino,
            pos: 0,
            partial: Vec::new(),
        }
    }

    fn drain(&mut self, out: &mut Vec<LogEntry>) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        // At most one file's worth per call; a truncated file (max-file=1) starts over.
        if f.metadata()?.len() < self.pos {
            self.pos = 0;
            self.partial.clear();
            f.seek(SeekFrom::Start(0))?;
        }
        f.take(64 << 20).read_to_end(&mut buf)?;
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        if let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = self.partial.drain(..=last).collect();
            parse_lines(&complete[..], out);
        }
        Ok(())
    }

    /// The entries added since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogEntry>> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        self.drain(&mut out)?;
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if let Some(ino) = now
            && (self.file.is_none() || ino != self.ino)
        {
            // Rotated (or created): the old file was finished above. Files rotated past it
            // since (`path.k-1` ... `path.1` when ours is now `path.k`) are read whole, then
            // the new one from 0.
            if self.file.is_some() {
                let older: Vec<PathBuf> = (1..=MAX_MAX_FILE)
                    .map(|n| rotated(&self.path, n))
                    .take_while(|p| p.exists())
                    .collect();
                let ours = older
                    .iter()
                    .position(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == self.ino));
                if let Some(k) = ours {
                    for p in older[..k].iter().rev() {
                        if let Ok(f) = File::open(p) {
                            parse_lines(BufReader::new(f), &mut out);
                        }
                    }
                }
            }
            self.file = File::open(&self.path).ok();
            self.ino = ino;
            self.pos = 0;
            self.partial.clear();
            self.drain(&mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_partials_wait() {
        let path = std::env::temp_dir().join(format!("mvm-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::open(&path, LogOptions::default()).unwrap();
        w.write(false, b"one\ntw").unwrap();
        w.write(true, b"err\n").unwrap();
        w.write(false, b"o\nthree").unwrap();
        w.flush().unwrap();
        let e = read_entries(&path).unwrap();
        let logs: Vec<(&str, &str)> = e
            .iter()
            .map(|x| (x.stream.as_str(), x.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            vec![
                ("stdout", "one\n"),
                ("stderr", "err\n"),
                ("stdout", "two\n"),
                ("stdout", "three")
            ]
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn log_opts_parse_as_dockers() {
        let o =
            |v: &[&str]| LogOptions::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&[]).unwrap(), LogOptions::default());
        assert_eq!(
            o(&["max-size=10m", "max-file=3"]).unwrap(),
            LogOptions {
                max_size: 10_000_000,
                max_file: 3
            }
        );
        assert_eq!(o(&["max-size=2k"]).unwrap().max_size, 2000);
        assert_eq!(o(&["max-size=1g"]).unwrap().max_size, 1_000_000_000);
        assert_eq!(o(&["max-size=4096"]).unwrap().max_size, 4096);
        for bad in [
            "max-size=abc",
            "max-size=0",
            "max-size=10",
            "max-size=-1m",
            "max-file=0",
            "max-file=x",
            "max-file=1000",
            "color=blue",
            "max-size",
        ] {
            let e = o(&[bad]).unwrap_err();
            assert!(!e.contains('\n') && e.contains("log"), "{bad}: {e}");
        }
    }

    #[test]
    fn rotated_logs_read_in_order_and_follow_across_rotation() {
        let dir = std::env::temp_dir().join(format!("mvm-log-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("container.log");
        let opts = LogOptions {
            max_size: 2048,
            max_file: 3,
        };
        let mut w = LogWriter::open(&path, opts).unwrap();
        let mut follow = Follower::at_end(&path);
        let mut followed = Vec::new();
        for i in 0..200 {
            w.write(false, format!("line {i}\n").as_bytes()).unwrap();
            if i % 7 == 0 {
                followed.extend(follow.poll().unwrap());
            }
        }
        followed.extend(follow.poll().unwrap());
        // Several rotations between two polls: the files in between are read whole.
        let mut follow = Follower::at_end(&path);
        for i in 200..240 {
            w.write(false, format!("line {i}\n").as_bytes()).unwrap();
        }
        followed.extend(follow.poll().unwrap());
        // The follower saw every line in order, across rotations.
        let seen: Vec<String> = followed.iter().map(|e| e.log.clone()).collect();
        let want: Vec<String> = (0..240).map(|i| format!("line {i}\n")).collect();
        assert_eq!(seen, want);
        // Only the last three files are left, in order, ending with the newest line.
        let all = read_entries(&path).unwrap();
        assert!(all.len() < 200 && !all.is_empty());
        let first: usize = all[0]
            .log
            .trim()
            .strip_prefix("line ")
            .unwrap()
            .parse()
            .unwrap();
        let tail: Vec<String> = all.iter().map(|e| e.log.clone()).collect();
        assert_eq!(tail, want[first..].to_vec());
        assert!(!rotated(&path, 3).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Container logs in Docker's json-file format: one JSON object per line of output,
//! `{"log":"text\n","stream":"stdout","time":"<RFC 3339, nanoseconds>"}`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
}

/// Longest line kept whole; longer output is split, as Docker splits at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

/// Appends a container's output to its log, a line per entry.
pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn entry(&mut self, stderr: bool, bytes: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: if stderr { "stderr" } else { "stdout" }.into(),
            time: mvm_rootfs::time::now(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
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
        self.file.flush()
    }
}

/// Reads every entry of a log; a damaged line is skipped rather than failing the whole read.
pub fn read_entries(path: &Path) -> io::Result<Vec<LogEntry>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_partials_wait() {
        let path = std::env::temp_dir().join(format!("mvm-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::open(&path).unwrap();
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
}

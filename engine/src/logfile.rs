//! Log files a guest can fill: bounded on disk (rotated at a size, a fixed number of files
//! kept) and, for the byte streams the host copies from a hypervisor (console, the VMM's own
//! messages) or from the agent, rate-limited. A guest that writes without end costs the host
//! at most `max_size * max_files` bytes of disk per log and a bounded share of one thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A file that rotates as Docker's json-file driver does: before a write would take it past
/// `max_size`, `log.(n-1)` becomes `log.n`, ..., `log` becomes `log.1`, and a new `log` starts;
/// at most `max_files` files exist (the current one included). With one file, it is
/// truncated instead.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// After each rotation: make descriptor 2 the new file (the monitor's own stderr).
    redirect_stderr: bool,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The `n`th rotated file of `path` (`path.n`); `n == 0` is `path` itself.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    /// Opens (creating, appending to) `path`, which then holds at most `max_size` bytes
    /// (at least 1 KiB) in each of `max_files` files (at least 1).
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
            redirect_stderr: false,
        })
    }

    /// Makes descriptor 2 follow the file across rotations (for a process whose stderr is
    /// this file: its panic message then lands in the current file).
    pub fn follow_with_stderr(mut self) -> Self {
        self.redirect_stderr = true;
        self
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.max_files).rev() {
            let from = rotated(&self.path, n - 1);
            match std::fs::rename(&from, rotated(&self.path, n)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        if self.redirect_stderr {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto descriptor 2 of a descriptor we own; no memory is involved.
            unsafe { libc::dup2(self.file.as_raw_fd(), 2) };
        }
        Ok(())
    }

    /// Writes `data` whole into the current file, rotating first if it would not fit. A
    /// record larger than a whole file is cut to `max_size` (a log entry is never split
    /// across two files).
    pub fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let data = &data[..data.len().min(self.max_size as usize)];
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Writes a byte stream's chunk, splitting it across rotations as needed.
    pub fn write_bytes(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.max_size {
                self.rotate()?;
            }
            let room = (self.max_size - self.size) as usize;
            let (now, rest) = data.split_at(data.len().min(room));
            self.file.write_all(now)?;
            self.size += now.len() as u64;
            data = rest;
        }
        Ok(())
    }
}

/// A token bucket over bytes: `burst` bytes at once, refilled at `per_sec`.
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
    /// Bytes refused since the last accepted write.
    pub dropped: u64,
}

impl RateLimit {
    /// A bucket that starts full.
    pub fn new(burst: u64, per_sec: u64) -> Self {
        Self {
            tokens: burst as f64,
            burst: burst as f64,
            per_sec: per_sec as f64,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether `n` bytes may be written now (and takes them); counts them as dropped if not.
    pub fn allow(&mut self, n: usize) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            self.dropped += n as u64;
            false
        }
    }
}

/// Bounds of a hypervisor's byte stream (its console or its own messages): two files of
/// 1 MiB on disk, and beyond a 256 KiB burst, 64 KiB a second.
pub const STREAM_MAX_SIZE: u64 = 1 << 20;
/// Files kept of a hypervisor's byte stream.
pub const STREAM_MAX_FILES: u32 = 2;
const STREAM_BURST: u64 = 256 << 10;
const STREAM_RATE: u64 = 64 << 10;

/// Copies a pipe (a hypervisor's stdout or stderr) into `path` on a thread of its own until
/// the writer closes it, within [`STREAM_MAX_SIZE`] x [`STREAM_MAX_FILES`] and the stream's
/// rate limit. The pipe is always drained, so the hypervisor never blocks on it; what the
/// limit refuses is dropped and the file says how much.
pub fn pump(mut pipe: File, path: &Path) -> io::Result<std::thread::JoinHandle<()>> {
    let mut out = RotatingFile::open(path, STREAM_MAX_SIZE, STREAM_MAX_FILES)?;
    std::thread::Builder::new()
        .name("log-pump".into())
        .spawn(move || {
            let mut limit = RateLimit::new(STREAM_BURST, STREAM_RATE);
            let mut buf = vec![0u8; 64 << 10];
            let mut noted = false;
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if limit.allow(n) {
                    if noted {
                        let note = format!(
                            "\n[mvm: {} bytes dropped by this log's rate limit]\n",
                            limit.dropped
                        );
                        let _ = out.write_bytes(note.as_bytes());
                        limit.dropped = 0;
                        noted = false;
                    }
                    let _ = out.write_bytes(&buf[..n]);
                } else if !noted {
                    noted = true;
                    let _ = out.write_bytes(b"\n[mvm: rate limit reached, dropping output]\n");
                }
            }
            if noted {
                let note = format!(
                    "\n[mvm: {} bytes dropped by this log's rate limit]\n",
                    limit.dropped
                );
                let _ = out.write_bytes(note.as_bytes());
            }
        })
}

/// The monitor's own log (`monitor.log`, its stderr): what it logs is partly the guest's
/// doing (agent errors, dropped clients), so it is rotated and rate-limited too.
pub struct MonitorLog {
    inner: std::sync::Mutex<(RotatingFile, RateLimit, bool)>,
}

/// Bounds of the monitor's log: four files of 1 MiB; 64 KiB burst, 8 KiB a second.
const MONITOR_MAX_SIZE: u64 = 1 << 20;
const MONITOR_MAX_FILES: u32 = 4;
const MONITOR_BURST: u64 = 64 << 10;
const MONITOR_RATE: u64 = 8 << 10;

impl MonitorLog {
    /// Opens the monitor's log at `path` (descriptor 2 follows its rotations).
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            inner: std::sync::Mutex::new((
                RotatingFile::open(path, MONITOR_MAX_SIZE, MONITOR_MAX_FILES)?.follow_with_stderr(),
                RateLimit::new(MONITOR_BURST, MONITOR_RATE),
                false,
            )),
        })
    }
}

/// One event's writer for tracing: the event is written whole when the limit allows.
pub struct MonitorLogWriter<'a>(&'a MonitorLog);

impl Write for MonitorLogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (file, limit, noted) = &mut *g;
        if limit.allow(buf.len()) {
            if *noted {
                let note = format!("[mvm: {} bytes of log dropped]\n", limit.dropped);
                let _ = file.write_record(note.as_bytes());
                limit.dropped = 0;
                *noted = false;
            }
            file.write_record(buf)?;
        } else if !*noted {
            *noted = true;
            let _ = file.write_record(b"[mvm: log rate limit reached, dropping lines]\n");
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MonitorLog {
    type Writer = MonitorLogWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        MonitorLogWriter(self)
    }
}

/// At most `max` characters of a message a guest sent, for a log line.
pub fn clip(message: &str, max: usize) -> String {
    let mut out: String = message
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mvm-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotation_keeps_max_files_of_max_size() {
        let d = scratch("rotate");
        let p = d.join("log");
        let mut f = RotatingFile::open(&p, 1024, 3).unwrap();
        for i in 0..100u32 {
            f.write_record(format!("{i:099}\n").as_bytes()).unwrap();
        }
        let sizes: Vec<u64> = (0..5)
            .map(|n| std::fs::metadata(rotated(&p, n)).map_or(0, |m| m.len()))
            .collect();
        assert!(sizes[..3].iter().all(|&s| s > 0 && s <= 1024), "{sizes:?}");
        assert_eq!(&sizes[3..], &[0, 0], "a fourth file was kept");
        // Records stay whole and in order across files: the newest is last in `log`.
        let newest = std::fs::read_to_string(&p).unwrap();
        assert!(newest.ends_with(&format!("{:099}\n", 99)));
        assert!(newest.lines().all(|l| l.len() == 99));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn one_file_is_truncated_and_bytes_split() {
        let d = scratch("one");
        let p = d.join("log");
        let mut f = RotatingFile::open(&p, 1024, 1).unwrap();
        f.write_bytes(&[b'x'; 5000]).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 1024);
        assert!(!rotated(&p, 1).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_pump_bounds_a_flood_and_says_what_it_dropped() {
        let d = scratch("pump");
        let p = d.join("console.log");
        let (r, w) = nix::unistd::pipe().unwrap();
        let t = pump(File::from(r), &p).unwrap();
        let mut w = File::from(w);
        // 64 MiB at once: far past the burst and both files.
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..64 {
            w.write_all(&chunk).unwrap();
        }
        drop(w);
        t.join().unwrap();
        let total: u64 = (0..4)
            .map(|n| std::fs::metadata(rotated(&p, n)).map_or(0, |m| m.len()))
            .sum();
        assert!(
            total <= STREAM_MAX_SIZE * u64::from(STREAM_MAX_FILES),
            "{total}"
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("bytes dropped by this log's rate limit"),
            "{}",
            text.len()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn clip_cuts_and_cleans() {
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip(&"z".repeat(2000), 4), "zzzz...");
    }
}

//! Why the VM ended, and the record the monitor leaves behind for whoever started it.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum ExitReason {
    /// The guest pulsed the reset line through the i8042 (`reboot=k`).
    I8042Reset,
    /// The guest shut the vCPU down: a triple fault (`reboot=t`) or a CPU reset.
    Shutdown,
    /// KVM reported a system event (reset, shutdown or crash) with its type.
    SystemEvent(u32),
    /// A vCPU executed HLT with interrupts disabled and nothing can wake it (userspace HLT).
    Halt,
    /// The monitor was asked to stop by a signal.
    Signal(i32),
    /// A vCPU failed (KVM error, failed entry, emulation failure).
    VcpuError(String),
}

impl ExitReason {
    /// The monitor's exit code for this reason: 0 when the guest ended itself, 128+N for
    /// signal N, 1 for an error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::I8042Reset | ExitReason::Shutdown | ExitReason::Halt => 0,
            ExitReason::SystemEvent(_) => 0,
            ExitReason::Signal(sig) => 128 + sig,
            ExitReason::VcpuError(_) => 1,
        }
    }
}

/// What the monitor writes to the exit-record file when the VM ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Why.
    #[serde(flatten)]
    pub reason: ExitReason,
    /// The monitor's exit code.
    pub exit_code: i32,
    /// When, as RFC 3339 UTC.
    pub time: String,
    /// When, in milliseconds since the Unix epoch.
    pub unix_time_ms: u64,
}

impl ExitRecord {
    /// A record for `reason` stamped now.
    pub fn now(reason: ExitReason) -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            exit_code: reason.exit_code(),
            reason,
            time: rfc3339(since.as_secs(), since.subsec_millis()),
            unix_time_ms: since.as_millis() as u64,
        }
    }

    /// Writes the record atomically: a reader sees the old file or the whole new one.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        ExitRecordFile::create(path)?.write(self)
    }
}

/// Where an exit record goes, opened before the VM runs (the seccomp filter then allows no
/// `open`): a temporary file beside `path`, renamed over it once written.
/// Renamed through a descriptor of its directory, so that it works from inside the jail too.
pub struct ExitRecordFile {
    dir: std::fs::File,
    tmp: std::ffi::CString,
    name: std::ffi::CString,
    file: std::fs::File,
}

impl ExitRecordFile {
    /// Creates the temporary file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let c = |p: &Path| {
            let name = p.file_name().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name")
            })?;
            std::ffi::CString::new(name.as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(parent)?;
        let file = std::fs::File::create(&tmp)?;
        Ok(Self {
            dir,
            tmp: c(&tmp)?,
            name: c(path)?,
            file,
        })
    }

    /// Gives the temporary file to `uid` and `gid` (a jailed VMM that is no longer root must
    /// be able to rename it into place).
    pub fn chown(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
    }

    /// Writes `record`, syncs it and renames it into place.
    pub fn write(mut self, record: &ExitRecord) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        serde_json::to_writer(&mut self.file, record).map_err(std::io::Error::other)?;
        self.file.write_all(b"\n")?;
        self.file.sync_all()?;
        let dir = self.dir.as_raw_fd();
        // SAFETY: renameat with a directory descriptor we hold and two C strings.
        if unsafe { libc::renameat(dir, self.tmp.as_ptr(), dir, self.name.as_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_000_000, 0), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn record_round_trips_through_json() {
        let dir = std::env::temp_dir().join(format!("mvm-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exit.json");
        let rec = ExitRecord::now(ExitReason::Signal(15));
        rec.write_to(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""reason":"signal""#), "{text}");
        let back: ExitRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.exit_code, 143);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

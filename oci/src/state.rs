//! A container's state on disk: `<root>/<id>/state.json`, written atomically, under a lock
//! for the commands that change it. The relay process (the pid in `--pid-file`) is the
//! container's life: its status is read from the stored one and whether that process still
//! lives (its PID *and* its start time, so a reused PID is not mistaken for it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// The spec version `state` reports.
pub const OCI_VERSION: &str = "1.0.2";
/// Where the VMs' sockets live: unix socket paths are short, and `--root` may be long.
pub const RUN_BASE: &str = "/run/mvm-runc-vm";

/// The status as stored; [`Stored::status`] gives the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is running.
    Creating,
    /// The VM runs; the process waits for `start`.
    Created,
    /// The process runs.
    Running,
    /// The VM is frozen.
    Paused,
    /// The process (or the relay) has ended.
    Stopped,
}

impl Status {
    /// The name runtime-spec's state uses.
    pub fn name(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What is kept of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The container ID.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// `root.path`, absolute.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The bundle's annotations.
    pub annotations: HashMap<String, String>,
    /// The stored status.
    pub status: Status,
    /// The relay process, once it exists.
    pub pid: Option<i32>,
    /// The relay's start time (field 22 of /proc/PID/stat).
    pub pid_start: Option<u64>,
    /// The VM's run directory (sockets, logs).
    pub run_dir: PathBuf,
    /// The VM's host processes, for pause and resume.
    #[serde(default)]
    pub vm_pids: Vec<u32>,
    /// The bundle's `cgroupsPath`, relative to each hierarchy's root.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

impl Stored {
    /// The live status: a stored created, running or paused container whose relay has
    /// ended is stopped.
    pub fn status(&self) -> Status {
        match self.status {
            Status::Created | Status::Running | Status::Paused if !self.relay_alive() => {
                Status::Stopped
            }
            s => s,
        }
    }

    /// Whether the relay process is still the one recorded.
    pub fn relay_alive(&self) -> bool {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) => start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// The relay's control socket: `start`, `signal N`.
    pub fn control_path(&self) -> PathBuf {
        self.run_dir.join("ctl.sock")
    }

    /// The VM's hybrid-vsock socket, for `exec`.
    pub fn vsock_path(&self) -> PathBuf {
        mvm_engine::container::vm_dir(&self.run_dir).join("vsock.sock")
    }

    /// runtime-spec's state, with what go-runc also reads (`rootfs`, `created`).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_json_with(self.status())
    }

    /// [`Stored::to_json`] with `status` (the hooks of `create` see `creating`).
    pub fn to_json_with(&self, status: Status) -> serde_json::Value {
        let pid = match status {
            Status::Stopped => 0,
            _ => self.pid.unwrap_or(0),
        };
        serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": pid,
            "status": status.name(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": "",
        })
    }
}

/// The start time of process `pid` in clock ticks since boot, `None` if it does not exist
/// (or is a zombie: it has ended, only not been reaped).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Checks a container ID as runc does: letters, digits, `_`, `+`, `-`, `.`, not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadId(id.to_string()))
    }
}

/// The state root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (`--root`).
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// The directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The run directory of a container: short, unique per root and ID.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.root.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(id.as_bytes());
        let hex: String = h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Path::new(RUN_BASE).join(hex)
    }

    /// Makes the directory of a new container; an error if the ID is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root).map_err(|e| RuntimeError::io(&self.root, e))?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => Err(RuntimeError::io(&dir, e)),
        }
    }

    /// Loads container `id`.
    pub fn load(&self, id: &str) -> Result<Stored, RuntimeError> {
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Err(e) => return Err(RuntimeError::io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes the state of `s` atomically.
    pub fn save(&self, s: &Stored) -> Result<(), RuntimeError> {
        let path = self.dir(&s.id).join("state.json");
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| RuntimeError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        mvm_rootfs::fsutil::atomic_write(&path, &bytes).map_err(|e| RuntimeError::io(&path, e))
    }

    /// Loads, changes and saves container `id` under its lock.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Stored)) -> Result<Stored, RuntimeError> {
        let _lock = self.lock(id)?;
        let mut s = self.load(id)?;
        f(&mut s);
        self.save(&s)?;
        Ok(s)
    }

    /// The lock of container `id`'s state.
    pub fn lock(&self, id: &str) -> Result<mvm_rootfs::fsutil::LockFile, RuntimeError> {
        let path = self.dir(id).join("lock");
        mvm_rootfs::fsutil::LockFile::acquire(&path).map_err(|e| RuntimeError::io(&path, e))
    }

    /// Every container ID in the store.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Removes container `id`'s directory and run directory.
    pub fn remove(&self, s: &Stored) {
        let _ = std::fs::remove_dir_all(&s.run_dir);
        let _ = std::fs::remove_dir_all(self.dir(&s.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_runc_accepts_them() {
        for ok in ["abc", "a.b_c+d-e", "0123456789abcdef"] {
            check_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn our_own_start_time_and_none_for_a_missing_process() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(i32::MAX), None);
    }

    #[test]
    fn a_stored_running_container_whose_relay_is_gone_is_stopped() {
        let mut s = Stored {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-12-07T00:00:00Z".into(),
            annotations: HashMap::new(),
            status: Status::Running,
            pid: Some(std::process::id() as i32),
            pid_start: start_time(std::process::id() as i32),
            run_dir: "/run/x".into(),
            vm_pids: vec![],
            cgroup: None,
        };
        assert_eq!(s.status(), Status::Running);
        assert_eq!(s.to_json()["status"], "running");
        assert_eq!(s.to_json()["pid"], std::process::id());
        // Same PID, another start time: a reused PID.
        s.pid_start = s.pid_start.map(|t| t + 1);
        assert_eq!(s.status(), Status::Stopped);
        assert_eq!(s.to_json()["pid"], 0);
        s.status = Status::Creating;
        assert_eq!(s.status(), Status::Creating);
    }

    #[test]
    fn run_dirs_are_short_and_differ_by_root_and_id() {
        let a = Store::new(Path::new("/run/docker/runtime-runc/moby"));
        let b = Store::new(Path::new("/run/other"));
        assert_ne!(a.run_dir("c1"), a.run_dir("c2"));
        assert_ne!(a.run_dir("c1"), b.run_dir("c1"));
        assert!(a.run_dir("c1").as_os_str().len() < 40);
    }
}

//! Containers on disk: IDs, names, and their directories under the state root.
//!
//! ```text
//! <root>/containers/<64-hex id>/config.json   what was asked for, and the state
//! <root>/containers/<64-hex id>/upper.ext4    the writable disk
//! <root>/run/<12-hex id>/                     sockets and logs (short: unix socket paths)
//! ```

pub mod attach;
pub mod commit;
pub mod copy;
mod error;
pub mod exec;
pub mod logs;
pub mod process_opts;
pub mod prune;
pub mod rename;
pub mod signal;
pub mod spec;
pub mod start;
pub mod state;
pub mod stats;
pub mod stop;
pub mod top;
pub mod update;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ContainerError;
pub use spec::{ContainerSpec, LogConfig, NetworkMode, Resources, RestartPolicy, SpecError};
pub use state::{State, Status};

use crate::backend::{Kind, Nic};
use crate::network::Endpoint;
use crate::network::ports::PortMapping;
use crate::volume::mounts::MountSpec;

/// The process a container runs: its spec resolved against its image when it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// argv.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User (`name|uid[:group|gid]`, empty: root).
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// Signal `stop` sends first (the image's StopSignal, SIGTERM when `None`).
    pub stop_signal: Option<i32>,
}

/// What the container's VM boots: chosen when it was created, kept across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSetup {
    /// The backend that runs it.
    pub backend: Kind,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// The image's read-only disk.
    pub image_disk: PathBuf,
    /// The agent's disk.
    pub agent_disk: PathBuf,
    /// Boot with the guest's console and the agent's log on (`--log-level debug`).
    pub debug: bool,
}

/// A container's record, written atomically to `config.json`: what was asked for
/// ([`ContainerSpec`]), what that became once resolved against the image and the host, and,
/// apart, the live [`State`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The image ID.
    pub image_id: String,
    /// What was asked for.
    pub spec: ContainerSpec,
    /// The process, resolved against the image.
    pub process: Process,
    /// What its VM boots.
    pub vm: VmSetup,
    /// Published ports (the spec's and, with `-P`, the image's exposed ones); host ports
    /// filled in once bound.
    pub ports: Vec<PortMapping>,
    /// Volumes, bind mounts and tmpfs mounts in the order they are mounted (the spec's and
    /// an anonymous volume per image VOLUME), volume names filled in.
    pub mounts: Vec<MountSpec>,
    /// The container's interfaces, in the guest's order (eth0, eth1, ...).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The running VM's network interfaces: the endpoints' and spare ones (a TAP on no
    /// bridge, an unconfigured interface in the guest) that `network connect` can take up.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// A build step's container: where its agent's layer of changes goes when it exits 0.
    #[serde(default)]
    pub export_layer: Option<PathBuf>,
    /// The live state.
    pub state: State,
}

impl ContainerRecord {
    /// Status as `ps` shows it (see [`State::effective`]).
    pub fn effective(&self) -> (Status, Option<i32>) {
        self.state.effective(self.state.pid.is_some_and(pid_alive))
    }

    /// The creation time as a key that sorts in time order (RFC 3339 times with fractions of
    /// different lengths do not sort as strings).
    pub fn created_key(&self) -> String {
        time_key(&self.created)
    }

    /// Whether the container has a live monitor: its VM runs, is paused, or is about to be
    /// restarted by its policy.
    pub fn is_running(&self) -> bool {
        self.effective().0.is_live()
    }

    /// A record of a container that was never created, for tests of what reads records.
    #[doc(hidden)]
    pub fn for_tests(id: &str, name: &str) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            created: String::new(),
            image_id: String::new(),
            spec: ContainerSpec::default(),
            process: Process::default(),
            vm: VmSetup {
                backend: Kind::QemuTcg,
                kernel: PathBuf::new(),
                image_disk: PathBuf::new(),
                agent_disk: PathBuf::new(),
                debug: false,
            },
            ports: Vec::new(),
            mounts: Vec::new(),
            endpoints: Vec::new(),
            nics: Vec::new(),
            export_layer: None,
            state: State::default(),
        }
    }

    /// The json-file log's bounds; `None` with `--log-driver none`.
    pub fn log(&self) -> Option<crate::logs::LogOptions> {
        self.spec.log.json_file()
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` with the fraction padded to nine digits.
pub fn time_key(t: &str) -> String {
    let (head, tail) = t.split_at(t.len().min(19));
    let frac = tail.trim_end_matches(['Z', 'z']).trim_start_matches('.');
    format!("{head}.{frac:0<9}")
}

/// Whether a process exists (and is not a zombie we would wait for forever).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Paths of one container.
pub struct ContainerDirs {
    /// The container's ID.
    pub id: String,
    /// The state root it lives under.
    pub root: PathBuf,
    /// Persistent directory.
    pub dir: PathBuf,
    /// Runtime directory (sockets, logs).
    pub run: PathBuf,
}

impl ContainerDirs {
    /// Directories of container `id` under `root`.
    pub fn new(root: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            root: root.to_path_buf(),
            dir: root.join("containers").join(id),
            run: root.join("run").join(&id[..12]),
        }
    }

    /// Removes everything the container had on disk, and its TAP devices.
    pub fn remove(&self) {
        if let Ok(rec) = self.load() {
            for tap in rec
                .endpoints
                .iter()
                .map(|e| &e.tap)
                .chain(rec.nics.iter().map(|n| &n.tap))
            {
                crate::network::host::delete_tap(tap);
            }
        }
        let _ = fs::remove_dir_all(&self.run);
        // A command that resolved the container just before may create its lock file in the
        // directory while it is being removed (then it finds no record and gives up).
        for _ in 0..3 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
        }
        // Half removed (a file that will not go): what is left shows as dead, for `rm` to
        // try again, rather than as the container it no longer is.
        let _ = self.update(|r| r.state.dead());
    }

    /// Takes the container's [`CommandLock`], waiting for the command that holds it.
    pub fn command_lock(&self) -> std::io::Result<CommandLock> {
        mvm_rootfs::fsutil::LockFile::acquire(&self.dir.join(".command.lock"))
            .map(|file| CommandLock { _file: file })
    }

    /// The record file.
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The json-file log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The VM's hybrid-vsock socket (the agent's sessions).
    pub fn vsock_path(&self) -> PathBuf {
        vm_dir(&self.run).join("vsock.sock")
    }

    /// The monitor's control socket.
    pub fn control_path(&self) -> PathBuf {
        self.run.join("ctl.sock")
    }

    /// Reads the record.
    pub fn load(&self) -> Result<ContainerRecord, String> {
        let data = fs::read(self.record_path())
            .map_err(|e| format!("cannot read {}: {e}", self.record_path().display()))?;
        serde_json::from_slice(&data).map_err(|e| {
            format!(
                "corrupt container record {}: {e}",
                self.record_path().display()
            )
        })
    }

    /// Reads, changes and saves the record under the container's lock.
    pub fn update(&self, f: impl FnOnce(&mut ContainerRecord)) -> Result<ContainerRecord, String> {
        let _lock = mvm_rootfs::fsutil::LockFile::acquire(&self.dir.join(".lock"))
            .map_err(|e| format!("cannot lock {}: {e}", self.dir.display()))?;
        let mut rec = self.load()?;
        let before = rec.state.status;
        f(&mut rec);
        self.save(&rec)?;
        self.status_event(before, &rec);
        Ok(rec)
    }

    /// The event a change of status is (`start`, `die`, `pause`, `unpause`).
    fn status_event(&self, before: Status, rec: &ContainerRecord) {
        let after = rec.state.status;
        let code = rec.state.exit_code.unwrap_or(0).to_string();
        let (action, extra): (&str, Vec<(&str, &str)>) = match (before, after) {
            (Status::Paused, Status::Running) => ("unpause", vec![]),
            (Status::Running, Status::Paused) => ("pause", vec![]),
            (b, Status::Running) if b != Status::Running => ("start", vec![]),
            (b, Status::Exited | Status::Restarting) if b.is_live() && b != Status::Restarting => {
                ("die", vec![("exitCode", code.as_str())])
            }
            _ => return,
        };
        crate::events::container(&self.root, rec, action, &extra);
    }

    /// Writes the record atomically (the first write of a record is its `create` event).
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), String> {
        let new = !self.record_path().exists();
        let data = serde_json::to_vec_pretty(rec).map_err(|e| e.to_string())?;
        mvm_rootfs::fsutil::atomic_write(&self.record_path(), &data)
            .map_err(|e| format!("cannot write {}: {e}", self.record_path().display()))?;
        if new {
            crate::events::container(&self.root, rec, "create", &[]);
        }
        Ok(())
    }
}

/// The directory of a VM's vsock sockets under its run directory `run`.
pub fn vm_dir(run: &Path) -> PathBuf {
    run.join("vm")
}

/// A new random 64-hex container ID.
pub fn new_id() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Docker avoids all-digit short IDs, which would read as numbers.
    if id[..12].bytes().all(|b| b.is_ascii_digit()) {
        return new_id();
    }
    Ok(id)
}

/// Finds a container by full ID, unique ID prefix or name, as Docker does.
pub fn resolve(root: &Path, key: &str) -> Result<(ContainerDirs, ContainerRecord), ContainerError> {
    let all = list(root);
    if let Some(rec) = all
        .iter()
        .find(|c| c.id == key || c.name == key || c.name == key.trim_start_matches('/'))
    {
        return Ok((ContainerDirs::new(root, &rec.id), rec.clone()));
    }
    let matches: Vec<&ContainerRecord> =
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            all.iter().filter(|c| c.id.starts_with(key)).collect()
        } else {
            Vec::new()
        };
    match matches.as_slice() {
        [one] => Ok((ContainerDirs::new(root, &one.id), (*one).clone())),
        [] => Err(ContainerError::NotFound(key.to_string())),
        _ => Err(ContainerError::Ambiguous(key.to_string())),
    }
}

/// Held while a command changes a container's state (start, stop, restart, rm, pause, ...):
/// two such commands on one container run one after the other, so two `start`s cannot both
/// spawn a monitor. The owner of a running VM never holds it, so a stop is never kept waiting
/// by the container it stops.
pub struct CommandLock {
    _file: mvm_rootfs::fsutil::LockFile,
}

/// As [`resolve`], holding the container's [`CommandLock`]; the record is read after the lock
/// is taken, so it is what the previous command left.
pub fn resolve_locked(
    root: &Path,
    key: &str,
) -> Result<(ContainerDirs, ContainerRecord, CommandLock), ContainerError> {
    let (dirs, _) = resolve(root, key)?;
    let gone = || ContainerError::NotFound(key.to_string());
    // Removed meanwhile: the lock file's directory is gone (ENOENT) or its record is.
    let lock = dirs.command_lock().map_err(|_| gone())?;
    let rec = dirs.load().map_err(|_| gone())?;
    Ok((dirs, rec, lock))
}

/// Every container record under `root`.
pub fn list(root: &Path) -> Vec<ContainerRecord> {
    let Ok(rd) = fs::read_dir(root.join("containers")) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path().join("config.json");
            let data = fs::read(&path).ok()?;
            serde_json::from_slice(&data)
                .inspect_err(|err| {
                    // Not listed (a record being written is never seen half-done: saves are
                    // atomic), but not silently: a record from an older mvm or a damaged one.
                    tracing::warn!(
                        "skipping the unreadable container record {}: {err}",
                        path.display()
                    );
                })
                .ok()
        })
        .collect()
}

/// Checks a user-given name as Docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && name.len() <= 128
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble",
    "quiet", "sharp", "swift", "tender", "vivid", "witty", "bold", "clever", "daring", "jolly",
];
const NOUNS: &[&str] = &[
    "turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "torvalds", "liskov",
    "dijkstra", "hamilton", "babbage", "shannon", "noether", "curie", "euler", "gauss",
];

/// A free generated name like `brave_turing`, derived from the ID.
pub fn generate_name(id: &str, taken: &[String]) -> String {
    let seed = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    for attempt in 0u64.. {
        let n = seed.wrapping_add(attempt.wrapping_mul(7919));
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize],
            NOUNS[((n / 97) % NOUNS.len() as u64) as usize]
        );
        if attempt >= (ADJECTIVES.len() * NOUNS.len()) as u64 {
            name.push_str(&format!("{attempt}"));
        }
        if !taken.contains(&name) {
            return name;
        }
    }
    unreachable!("the loop only ends by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        let a = generate_name(&id, &[]);
        let b = generate_name(&id, std::slice::from_ref(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn times_sort_in_time_order() {
        let a = time_key("2026-12-01T00:00:05Z");
        let b = time_key("2026-12-01T00:00:05.12Z");
        let c = time_key("2026-12-01T00:00:05.123Z");
        assert!(a < b && b < c, "{a} {b} {c}");
    }
}

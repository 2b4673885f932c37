//! Containers on disk: IDs, names, and their directories under the state root.
//!
//! ```text
//! <root>/containers/<64-hex id>/config.json   what was asked for, and the state
//! <root>/containers/<64-hex id>/upper.ext4    the writable disk
//! <root>/run/<12-hex id>/                     sockets and logs (short: unix socket paths)
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A container's record, written atomically to `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The process.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// TTY.
    pub tty: bool,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// `created`, `running` or `exited`.
    pub status: String,
    /// Exit code once exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The backend that ran it.
    #[serde(default)]
    pub backend: String,
    /// Keep stdin open (`-i`).
    #[serde(default)]
    pub interactive: bool,
    /// PID of the process that owns the VM (the monitor, or `mvm run` when attached).
    #[serde(default)]
    pub pid: Option<u32>,
    /// When it started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it stopped (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Why it could not start, when it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// Signal `stop` sends first (the image's StopSignal, SIGTERM by default).
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// Guest kernel the VM boots.
    #[serde(default)]
    pub kernel: PathBuf,
    /// The image's read-only disk.
    #[serde(default)]
    pub image_disk: PathBuf,
    /// The agent's disk.
    #[serde(default)]
    pub agent_disk: PathBuf,
    /// Boot the guest with its console and the agent's log on (`--log-level debug`).
    #[serde(default)]
    pub debug: bool,
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The json-file log's bounds (`--log-opt`); `None` with `--log-driver none`. Records
    /// from before these options get the default bounds.
    #[serde(default = "default_log")]
    pub log: Option<crate::logs::LogOptions>,
    /// A build step's container: where its agent's layer of changes goes when it exits 0.
    #[serde(default)]
    pub export_layer: Option<PathBuf>,
    /// How often the monitor restarted the process.
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped by `stop` or `kill`: the restart policy does not bring it back.
    #[serde(default)]
    pub manual_stop: bool,
    /// vCPUs stopped by `pause`.
    #[serde(default)]
    pub paused: bool,
    /// The hypervisor's PID and its helpers' while the VM runs (`pause`, `stats`).
    #[serde(default)]
    pub vm_pids: Vec<u32>,
    /// `--network`: `bridge` (default), `none`, or a network's name.
    #[serde(default)]
    pub network_mode: String,
    /// The container's interfaces, in the guest's order (eth0, eth1, ...).
    #[serde(default)]
    pub endpoints: Vec<crate::network::Endpoint>,
    /// The running VM's network interfaces: the endpoints' and spare ones (a TAP on no
    /// bridge, an unconfigured interface in the guest) that `network connect` can take up.
    #[serde(default)]
    pub nics: Vec<crate::backend::Nic>,
    /// Published ports (`-p`, `-P`); host ports filled in once bound.
    #[serde(default)]
    pub ports: Vec<crate::network::ports::PortMapping>,
    /// Volumes, bind mounts and tmpfs mounts, in the order they are mounted.
    #[serde(default)]
    pub mounts: Vec<crate::volume::mounts::MountSpec>,
}

fn default_log() -> Option<crate::logs::LogOptions> {
    Some(crate::logs::LogOptions::default())
}

/// Docker's `--restart` policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped` (empty means `no`).
    #[serde(default)]
    pub name: String,
    /// For `on-failure`: at most this many restarts (0 is no limit).
    #[serde(default)]
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Parses `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let max_retries = match (name, count) {
            ("on-failure", Some(c)) => c.parse::<u32>().map_err(|_| {
                format!("invalid restart policy {s:?}: maximum retry count must be a number")
            })?,
            (_, Some(_)) => {
                return Err(format!(
                    "invalid restart policy {s:?}: maximum retry count can only be used with 'on-failure'"
                ));
            }
            _ => 0,
        };
        match name {
            "no" | "always" | "unless-stopped" | "on-failure" => Ok(Self {
                name: if name == "no" {
                    String::new()
                } else {
                    name.into()
                },
                max_retries,
            }),
            _ => Err(format!(
                "invalid restart policy {s:?}: use no, always, unless-stopped or on-failure[:N]"
            )),
        }
    }

    /// Whether there is a policy at all.
    pub fn is_none(&self) -> bool {
        self.name.is_empty() || self.name == "no"
    }

    /// Whether a process that ended with `code`, after `restarts` restarts, comes back.
    pub fn should_restart(&self, code: i32, restarts: u32, manual_stop: bool) -> bool {
        if manual_stop {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }

    /// The policy's name as `inspect` shows it.
    pub fn display_name(&self) -> &str {
        if self.is_none() { "no" } else { &self.name }
    }
}

impl ContainerRecord {
    /// Status as `ps` shows it: a record that says running but whose owner is gone is reported
    /// as exited with 137 (killed), which is what happened to its VM.
    pub fn effective(&self) -> (&'static str, Option<i32>) {
        let owner_alive = self.pid.is_some_and(pid_alive);
        match self.status.as_str() {
            "running" if owner_alive && self.paused => ("paused", None),
            "running" if owner_alive => ("running", None),
            "restarting" if owner_alive => ("restarting", self.exit_code),
            "running" | "restarting" => ("exited", Some(137)),
            "exited" => ("exited", self.exit_code),
            _ => ("created", None),
        }
    }

    /// The creation time as a key that sorts in time order (RFC 3339 times with fractions of
    /// different lengths do not sort as strings).
    pub fn created_key(&self) -> String {
        time_key(&self.created)
    }

    /// Whether the container has a live monitor: its VM runs, is paused, or is about to be
    /// restarted by its policy.
    pub fn is_running(&self) -> bool {
        matches!(self.effective().0, "running" | "paused" | "restarting")
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
                break;
            }
        }
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
        f(&mut rec);
        self.save(&rec)?;
        Ok(rec)
    }

    /// Writes the record atomically.
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), String> {
        let data = serde_json::to_vec_pretty(rec).map_err(|e| e.to_string())?;
        mvm_rootfs::fsutil::atomic_write(&self.record_path(), &data)
            .map_err(|e| format!("cannot write {}: {e}", self.record_path().display()))
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
pub fn resolve(root: &Path, key: &str) -> Result<(ContainerDirs, ContainerRecord), String> {
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
        [] => Err(format!("No such container: {key}")),
        _ => Err(format!("Multiple IDs found with provided prefix: {key}")),
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
) -> Result<(ContainerDirs, ContainerRecord, CommandLock), String> {
    let (dirs, _) = resolve(root, key)?;
    let gone = || format!("No such container: {key}");
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
        .filter_map(|e| fs::read(e.path().join("config.json")).ok())
        .filter_map(|d| serde_json::from_slice(&d).ok())
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

    #[test]
    fn restart_policies() {
        let no = RestartPolicy::parse("no").unwrap();
        assert!(no.is_none());
        assert!(!no.should_restart(1, 0, false));
        let always = RestartPolicy::parse("always").unwrap();
        assert!(always.should_restart(0, 100, false));
        assert!(!always.should_restart(0, 0, true));
        let f = RestartPolicy::parse("on-failure:2").unwrap();
        assert_eq!(f.max_retries, 2);
        assert!(f.should_restart(3, 1, false));
        assert!(!f.should_restart(3, 2, false));
        assert!(!f.should_restart(0, 0, false));
        let unlimited = RestartPolicy::parse("on-failure").unwrap();
        assert!(unlimited.should_restart(1, 1000, false));
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
    }
}

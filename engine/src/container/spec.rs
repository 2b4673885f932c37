//! The one typed description of a container: what a front end asks for (made once from
//! `mvm run`'s flags, an OCI bundle or a compose service) and what the engine keeps in the
//! container's record and uses all the way down to its VM.
//!
//! Values carry units and enums, not strings; each has one parser with the message a user
//! sees for a bad value, so every front end rejects the same inputs the same way.

use std::fmt;
use std::str::FromStr;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::logs::LogOptions;
use crate::network::ports::PortMapping;
use crate::volume::mounts::MountSpec;

/// Default guest memory: enough for the agent and a small service; `-m` changes it.
pub const DEFAULT_MEM_MIB: u64 = 512;
/// Smallest memory a guest kernel and agent boot in.
pub const MIN_MEM_MIB: u64 = 64;
/// Largest memory a container's VM may ask for (1 TiB).
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// Most vCPUs a container's VM may have.
pub const MAX_VCPUS: u8 = 32;

/// Why a value of a container's description is refused. One line each, as Docker words it
/// where Docker has the same check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `-m` is not a size.
    #[error("invalid memory size {0:?}: use e.g. 512m or 2g")]
    Memory(String),
    /// `-w` is not absolute (Docker's words).
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    Workdir(String),
    /// `-m` is below what a guest boots in.
    #[error("minimum memory for a microVM is {MIN_MEM_MIB}m, got {0}")]
    MemoryTooSmall(String),
    /// `--cpus` is not a number.
    #[error("invalid --cpus {0:?}: expected a number")]
    Cpus(String),
    /// `--cpus` is out of range.
    #[error("--cpus must be between 0.01 and {MAX_VCPUS}, got {0}")]
    CpusRange(String),
    /// `--restart` is not a policy.
    #[error("invalid restart policy {0:?}: use no, always, unless-stopped or on-failure[:N]")]
    Restart(String),
    /// `--restart on-failure:x`.
    #[error("invalid restart policy {0:?}: maximum retry count must be a number")]
    RestartCount(String),
    /// `--restart always:3`.
    #[error("invalid restart policy {0:?}: maximum retry count can only be used with 'on-failure'")]
    RestartCountNotAllowed(String),
    /// `--log-driver` names no driver.
    #[error("unknown log driver {0:?}: use json-file or none")]
    LogDriver(String),
    /// `--log-driver none` with `--log-opt`.
    #[error("the none log driver takes no --log-opt")]
    LogOptsWithNone,
    /// A bad `--log-opt`.
    #[error("{0}")]
    LogOpt(String),
    /// `--network host`.
    #[error(
        "--network host cannot share the host's network stack with a microVM (it has its own kernel): publish ports with -p instead"
    )]
    HostNetwork,
    /// `--network` is empty or not a name.
    #[error("invalid network name {0:?}")]
    NetworkName(String),
    /// `-p` with `--network none`.
    #[error("published ports need a network: --network none has none")]
    PortsWithoutNetwork,
    /// `--network-alias` on the default network or none.
    #[error("network-scoped aliases are supported only for containers in user-defined networks")]
    AliasesNeedUserNetwork,
    /// A bad `--network-alias`.
    #[error("invalid network alias {0:?}")]
    Alias(String),
    /// `--rm` with a restart policy.
    #[error("Conflicting options: --restart and --rm")]
    RestartWithRm,
    /// A bad `--shm-size`.
    #[error("invalid size {0:?} for --shm-size: use e.g. 64m or 1g")]
    ShmSize(String),
    /// A bad `--ulimit`.
    #[error("invalid ulimit argument: {0}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")]
    Ulimit(String),
    /// A bad `--sysctl`.
    #[error("invalid sysctl {0:?}: use KEY=VALUE, e.g. net.ipv4.ip_forward=1")]
    Sysctl(String),
    /// A bad `--add-host`.
    #[error("invalid argument {0:?} for --add-host: use NAME:IP")]
    Host(String),
    /// A bad `--cap-add` or `--cap-drop`.
    #[error("unknown capability: {0:?}")]
    Capability(String),
    /// A bad `--dns` or `--dns-search`.
    #[error("invalid DNS setting {0:?}")]
    Dns(String),
    /// A host device: a microVM's kernel has its own devices.
    #[error("--device {0}: a host device cannot be handed to a microVM's own kernel")]
    Device(String),
    /// A bad `--stop-signal`.
    #[error("invalid signal: {0}")]
    StopSignal(String),
    /// A bad `--name`.
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    Name(String),
    /// A bad `--hostname`.
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    /// A bad `-p`, `-v`, `--mount` or `--tmpfs` (the parser's own message).
    #[error("{0}")]
    Mount(String),
    /// A bad `-p` (the parser's own message).
    #[error("{0}")]
    Port(String),
    /// A signal that is no signal.
    #[error("invalid signal: {0}")]
    Signal(String),
}

/// The VM's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
        }
    }
}

/// Parses Docker's memory syntax (`512m`, `1g`, `1073741824`) into MiB.
pub fn parse_memory(s: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::Memory(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (lower, 1),
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mib = n.checked_mul(mult).ok_or_else(bad)? >> 20;
    if mib < MIN_MEM_MIB {
        return Err(SpecError::MemoryTooSmall(s.to_string()));
    }
    if mib > MAX_MEM_MIB {
        return Err(bad());
    }
    Ok(mib)
}

/// Parses `--cpus` (a decimal, rounded up to whole vCPUs).
pub fn parse_cpus(s: &str) -> Result<u8, SpecError> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| SpecError::Cpus(s.to_string()))?;
    if !(n > 0.0 && n <= f64::from(MAX_VCPUS)) {
        return Err(SpecError::CpusRange(s.to_string()));
    }
    Ok(n.ceil() as u8)
}

/// Docker's `--restart` policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    /// Never (`no`).
    #[default]
    No,
    /// Whenever the process ends, unless stopped by the user.
    Always,
    /// As `always`; Docker also keeps it down across daemon restarts after a stop.
    UnlessStopped,
    /// When the process ends with a non-zero code, at most `max_retries` times (0: no limit).
    OnFailure {
        /// Restarts allowed (0 is no limit).
        max_retries: u32,
    },
}

impl FromStr for RestartPolicy {
    type Err = SpecError;

    /// Parses `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("on-failure", Some(c)) => Ok(Self::OnFailure {
                max_retries: c
                    .parse()
                    .map_err(|_| SpecError::RestartCount(s.to_string()))?,
            }),
            ("on-failure", None) => Ok(Self::OnFailure { max_retries: 0 }),
            // As before the spec was typed: any other name with a count says why first.
            (_, Some(_)) => Err(SpecError::RestartCountNotAllowed(s.to_string())),
            ("no", None) => Ok(Self::No),
            ("always", None) => Ok(Self::Always),
            ("unless-stopped", None) => Ok(Self::UnlessStopped),
            _ => Err(SpecError::Restart(s.to_string())),
        }
    }
}

impl RestartPolicy {
    /// Whether there is a policy at all.
    pub fn is_none(&self) -> bool {
        *self == Self::No
    }

    /// Whether a process that ended with `code`, after `restarts` restarts, comes back.
    pub fn should_restart(&self, code: i32, restarts: u32, manual_stop: bool) -> bool {
        if manual_stop {
            return false;
        }
        match *self {
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || restarts < max_retries)
            }
            Self::No => false,
        }
    }

    /// The policy's name as `inspect` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
            Self::OnFailure { .. } => "on-failure",
        }
    }

    /// `on-failure`'s limit (0 for the others), as `inspect` shows it.
    pub fn max_retries(&self) -> u32 {
        match *self {
            Self::OnFailure { max_retries } => max_retries,
            _ => 0,
        }
    }
}

/// Where the container's output goes besides attached clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "driver")]
pub enum LogConfig {
    /// Docker's json-file log, rotated within these bounds (`logs` reads it).
    JsonFile(LogOptions),
    /// Nothing is kept.
    None,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self::JsonFile(LogOptions::default())
    }
}

impl LogConfig {
    /// From `--log-driver` (json-file when not given) and its `--log-opt` values.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<Self, SpecError> {
        match driver {
            None | Some("json-file") => Ok(Self::JsonFile(
                LogOptions::parse(opts).map_err(SpecError::LogOpt)?,
            )),
            Some("none") if opts.is_empty() => Ok(Self::None),
            Some("none") => Err(SpecError::LogOptsWithNone),
            Some(other) => Err(SpecError::LogDriver(other.to_string())),
        }
    }

    /// The json-file bounds, if the log is kept.
    pub fn json_file(&self) -> Option<LogOptions> {
        match *self {
            Self::JsonFile(o) => Some(o),
            Self::None => None,
        }
    }
}

/// Which network the container's first interface joins (`--network`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The default network (`bridge`).
    #[default]
    Bridge,
    /// No interface at all.
    None,
    /// A user-defined network, by name or ID.
    Named(String),
}

impl FromStr for NetworkMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            crate::network::DEFAULT_NETWORK => Ok(Self::Bridge),
            "none" => Ok(Self::None),
            "host" => Err(SpecError::HostNetwork),
            "" => Err(SpecError::NetworkName(s.to_string())),
            s if s.bytes().any(|b| b.is_ascii_control() || b == b'/') => {
                Err(SpecError::NetworkName(s.to_string()))
            }
            s => Ok(Self::Named(s.to_string())),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bridge => crate::network::DEFAULT_NETWORK,
            Self::None => "none",
            Self::Named(n) => n,
        })
    }
}

/// A container, as asked for. Fields left `None` or empty take the image's value when the
/// container is created (see `ContainerRecord::process`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image as the user named it.
    pub image: String,
    /// `--name` (a generated one when `None`).
    pub name: Option<String>,
    /// `--entrypoint`: replaces the image's Entrypoint (and drops its Cmd); `Some([])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// The command after the image (the image's Cmd when empty).
    pub command: Vec<String>,
    /// `-e` and `--env-file` values, `K=V`, later keys replacing the image's.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`: `name|uid[:group|gid]`.
    pub user: Option<String>,
    /// `--hostname` (the short ID when `None`).
    pub hostname: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`: stdin stays open.
    pub interactive: bool,
    /// `-m`, `--cpus`.
    pub resources: Resources,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--log-driver`, `--log-opt`.
    pub log: LogConfig,
    /// `--log-opt` as given (its `labels=` and `env=` name what each log line carries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_opts: Vec<String>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--network-alias`.
    pub network_aliases: Vec<String>,
    /// `-p`.
    pub ports: Vec<PortMapping>,
    /// `-P`: also publish the image's exposed ports.
    pub publish_all: bool,
    /// `-v`, `--mount`, `--tmpfs`, in that order.
    pub mounts: Vec<MountSpec>,
    /// `-l`/`--label` and `--label-file`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `--stop-signal` as written (the image's StopSignal, then SIGTERM, when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `--stop-timeout`, seconds `stop` waits when not told (10 when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// `--cap-add`, kernel names (`CAP_NET_ADMIN`) or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `--cap-drop`, as `cap_add`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// `--init`: a minimal init is the container's PID 1 and runs the command as its child.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--read-only`: the root file system is read-only (volumes and tmpfs mounts are not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `--ulimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<mvm_agent_protocol::Rlimit>,
    /// `--sysctl`, set in the VM's own kernel before the process starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<(String, String)>,
    /// `--add-host`, `name:ip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// `--dns`: the container's name servers instead of the network's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--dns-search`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `--shm-size` in bytes (Docker's 64 MiB when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
}

impl ContainerSpec {
    /// Checks what can be checked without the image: names, combinations of options.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.network {
            NetworkMode::None if !self.ports.is_empty() || self.publish_all => {
                return Err(SpecError::PortsWithoutNetwork);
            }
            NetworkMode::None | NetworkMode::Bridge if !self.network_aliases.is_empty() => {
                return Err(SpecError::AliasesNeedUserNetwork);
            }
            _ => {}
        }
        if let Some(a) = self.network_aliases.iter().find(|a| !super::valid_name(a)) {
            return Err(SpecError::Alias(a.clone()));
        }
        if self.auto_remove && !self.restart.is_none() {
            return Err(SpecError::RestartWithRm);
        }
        // Docker's pattern: at least two characters.
        if let Some(n) = &self.name
            && (n.len() < 2 || !super::valid_name(n))
        {
            return Err(SpecError::Name(n.clone()));
        }
        if let Some(s) = &self.stop_signal
            && parse_signal(s).is_none()
        {
            return Err(SpecError::StopSignal(s.clone()));
        }
        if let Some(h) = &self.hostname
            && !valid_hostname(h)
        {
            return Err(SpecError::Hostname(h.clone()));
        }
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            return Err(SpecError::Workdir(w.clone()));
        }
        crate::volume::mounts::check_duplicates(&self.mounts).map_err(SpecError::Mount)?;
        Ok(())
    }
}

/// A hostname the guest can take: 1 to 63 letters, digits, `-` and `.`.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses a signal as images and users write it: `SIGTERM`, `TERM` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m"), Ok(512));
        assert_eq!(parse_memory("1g"), Ok(1024));
        assert_eq!(parse_memory("1GB"), Ok(1024));
        assert_eq!(parse_memory("1073741824"), Ok(1024));
        assert_eq!(parse_memory("65536k"), Ok(64));
        for bad in [
            "",
            "m",
            "12x",
            "-1g",
            "1.5g",
            "99999999999999999999g",
            "2048g",
        ] {
            assert_eq!(
                parse_memory(bad),
                Err(SpecError::Memory(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_memory("63m"),
            Err(SpecError::MemoryTooSmall("63m".into()))
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1"), Ok(1));
        assert_eq!(parse_cpus("0.5"), Ok(1));
        assert_eq!(parse_cpus("2.1"), Ok(3));
        assert_eq!(parse_cpus("32"), Ok(32));
        assert_eq!(parse_cpus("x"), Err(SpecError::Cpus("x".into())));
        for bad in ["0", "-1", "33", "NaN", "inf"] {
            assert_eq!(
                parse_cpus(bad),
                Err(SpecError::CpusRange(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn restart_policies() {
        let no: RestartPolicy = "no".parse().unwrap();
        assert!(no.is_none());
        assert!(!no.should_restart(1, 0, false));
        let always: RestartPolicy = "always".parse().unwrap();
        assert!(always.should_restart(0, 100, false));
        assert!(!always.should_restart(0, 0, true));
        let f: RestartPolicy = "on-failure:2".parse().unwrap();
        assert_eq!(f.max_retries(), 2);
        assert!(f.should_restart(3, 1, false));
        assert!(!f.should_restart(3, 2, false));
        assert!(!f.should_restart(0, 0, false));
        let unlimited: RestartPolicy = "on-failure".parse().unwrap();
        assert!(unlimited.should_restart(1, 1000, false));
        assert_eq!(
            "always:3".parse::<RestartPolicy>(),
            Err(SpecError::RestartCountNotAllowed("always:3".into()))
        );
        assert_eq!(
            "on-failure:x".parse::<RestartPolicy>(),
            Err(SpecError::RestartCount("on-failure:x".into()))
        );
        assert_eq!(
            "sometimes".parse::<RestartPolicy>(),
            Err(SpecError::Restart("sometimes".into()))
        );
        assert_eq!(
            "sometimes:3".parse::<RestartPolicy>(),
            Err(SpecError::RestartCountNotAllowed("sometimes:3".into()))
        );
        assert_eq!(
            "unless-stopped".parse::<RestartPolicy>().unwrap().name(),
            "unless-stopped"
        );
    }

    #[test]
    fn log_configs() {
        assert_eq!(LogConfig::parse(None, &[]), Ok(LogConfig::default()));
        assert_eq!(LogConfig::parse(Some("none"), &[]), Ok(LogConfig::None));
        assert_eq!(
            LogConfig::parse(Some("none"), &["max-size=1m".into()]),
            Err(SpecError::LogOptsWithNone)
        );
        assert_eq!(
            LogConfig::parse(Some("syslog"), &[]),
            Err(SpecError::LogDriver("syslog".into()))
        );
        assert!(matches!(
            LogConfig::parse(None, &["max-size=bad".into()]),
            Err(SpecError::LogOpt(_))
        ));
        let kept = LogConfig::parse(Some("json-file"), &["max-file=2".into()]).unwrap();
        assert_eq!(kept.json_file().map(|o| o.max_file), Some(2));
    }

    #[test]
    fn network_modes() {
        assert_eq!("bridge".parse(), Ok(NetworkMode::Bridge));
        assert_eq!("none".parse(), Ok(NetworkMode::None));
        assert_eq!("web".parse(), Ok(NetworkMode::Named("web".into())));
        assert_eq!("host".parse::<NetworkMode>(), Err(SpecError::HostNetwork));
        assert!("".parse::<NetworkMode>().is_err());
        assert!("a/b".parse::<NetworkMode>().is_err());
        assert_eq!(NetworkMode::Named("web".into()).to_string(), "web");
        assert_eq!(NetworkMode::Bridge.to_string(), "bridge");
    }

    #[test]
    fn combinations_are_checked() {
        let ok = ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let port = crate::network::ports::parse("8080:80").unwrap();
        let cases = [
            (
                ContainerSpec {
                    network: NetworkMode::None,
                    ports: vec![port],
                    ..ok.clone()
                },
                SpecError::PortsWithoutNetwork,
            ),
            (
                ContainerSpec {
                    network: NetworkMode::None,
                    publish_all: true,
                    ..ok.clone()
                },
                SpecError::PortsWithoutNetwork,
            ),
            (
                ContainerSpec {
                    network_aliases: vec!["db".into()],
                    ..ok.clone()
                },
                SpecError::AliasesNeedUserNetwork,
            ),
            (
                ContainerSpec {
                    network: NetworkMode::Named("web".into()),
                    network_aliases: vec!["-db".into()],
                    ..ok.clone()
                },
                SpecError::Alias("-db".into()),
            ),
            (
                ContainerSpec {
                    auto_remove: true,
                    restart: RestartPolicy::Always,
                    ..ok.clone()
                },
                SpecError::RestartWithRm,
            ),
            (
                ContainerSpec {
                    name: Some("a/b".into()),
                    ..ok.clone()
                },
                SpecError::Name("a/b".into()),
            ),
            (
                ContainerSpec {
                    hostname: Some("a b".into()),
                    ..ok.clone()
                },
                SpecError::Hostname("a b".into()),
            ),
            (
                ContainerSpec {
                    hostname: Some("x".repeat(64)),
                    ..ok.clone()
                },
                SpecError::Hostname("x".repeat(64)),
            ),
            (
                ContainerSpec {
                    workdir: Some("relative/dir".into()),
                    ..ok.clone()
                },
                SpecError::Workdir("relative/dir".into()),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.validate(), Err(want));
        }
        let twice = crate::volume::mounts::parse_tmpfs("/data").unwrap();
        let dup = ContainerSpec {
            mounts: vec![twice.clone(), twice],
            ..ok.clone()
        };
        assert!(matches!(dup.validate(), Err(SpecError::Mount(_))));
        let named = ContainerSpec {
            network: NetworkMode::Named("web".into()),
            network_aliases: vec!["db".into()],
            name: Some("web-1.a_b".into()),
            hostname: Some("web-1.example".into()),
            ..ok
        };
        assert_eq!(named.validate(), Ok(()));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("kill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal(""), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn specs_round_trip_through_json() {
        let spec = ContainerSpec {
            image: "busybox".into(),
            entrypoint: Some(vec![]),
            restart: RestartPolicy::OnFailure { max_retries: 3 },
            log: LogConfig::None,
            network: NetworkMode::Named("web".into()),
            ..Default::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ContainerSpec>(&json).unwrap(), spec);
    }
}

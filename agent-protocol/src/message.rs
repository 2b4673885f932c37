//! Control messages: JSON objects tagged by `"type"`, one per control frame.

use serde::{Deserialize, Serialize};

/// A control message from the host to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// The first message on a connection: the protocol version the host speaks.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the host.
        version: u32,
    },
    /// Start the container's process. Allowed once per connection.
    Start(ProcessSpec),
    /// Send a signal to the process (not its group: as `docker kill` does).
    Signal {
        /// The signal number, 1 to 64.
        signal: i32,
    },
    /// Set the terminal's size. Before `Start`, it sets the initial size; ignored when the
    /// process has no terminal.
    Resize {
        /// Rows (lines).
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Instead of `Start`: configure the interface with this MAC address (a network connected
    /// to the running container). The agent answers `Done` or `Error` and closes.
    NetworkUp(NetworkUp),
    /// Instead of `Start`: remove the address of the interface with this MAC address and take
    /// it down (a network disconnected). The agent answers `Done` or `Error` and closes.
    NetworkDown {
        /// `aa:bb:cc:dd:ee:ff`.
        mac: String,
    },
    /// The container's changes to its image (the overlay's upper directory): instead of
    /// `Start` on a connection of its own, or after `Exited` on the process's connection (a
    /// build step, before the VM ends). The agent streams them on [`crate::Stream::Changes`]
    /// data frames, ends the stream with its EOF frame and answers `Done`, or answers
    /// `Error` at any point (the host then discards what it got), and closes.
    Export(Export),
    /// `cp` out of the container: instead of `Start`, on a connection of its own. The agent
    /// answers `CopyFailed`, or streams a tar of the path (one top entry named by the path's
    /// last component, a directory with all it holds) on [`crate::Stream::Changes`] data
    /// frames, ends it with its EOF frame and answers `Done`, and closes.
    CopyOut(CopyOut),
    /// `cp` into the container: instead of `Start`, on a connection of its own. The host then
    /// sends a tar on [`crate::Stream::Stdin`] data frames and their EOF; the agent writes it
    /// where [`CopyIn`] says, answers `Done` or `CopyFailed` once the stream ended, and
    /// closes.
    CopyIn(CopyIn),
    /// `top` and `stats`: instead of `Start`, on a connection of its own. The agent answers
    /// `Processes` with the processes of the container's PID namespace, and closes.
    Processes,
    /// A message type this version does not know (sent by a newer peer). Never sent; the
    /// receiver answers it with an `Error` and carries on.
    #[serde(other)]
    Unknown,
}

/// One process of the container, as `ps -ef` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Its PID in the container's namespace.
    pub pid: i32,
    /// Its parent's PID there (0 for the container's PID 1).
    pub ppid: i32,
    /// Its real user ID.
    pub uid: u32,
    /// That user's name in the container's /etc/passwd, or the number.
    pub user: String,
    /// Its controlling terminal (`pts/0`), or `?`.
    pub tty: String,
    /// When it started, seconds since the epoch (the guest's clock).
    pub started: u64,
    /// CPU time used, milliseconds.
    pub cpu_ms: u64,
    /// Its command line, or `[name]` when it has none.
    pub cmd: String,
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOut {
    /// The path in the container, absolute (relative is taken from `/`).
    pub path: String,
    /// Follow a symlink that is the path's last component (`cp -L`).
    #[serde(default)]
    pub follow_link: bool,
}

/// What a [`HostMessage::CopyIn`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyIn {
    /// The destination in the container, as the user wrote it (a trailing `/` says it must
    /// be a directory).
    pub path: String,
    /// How the tar's entries map onto the destination.
    pub how: CopyInHow,
    /// Keep the tar's owners (`cp -a`); otherwise everything belongs to root, as Docker's.
    #[serde(default)]
    pub keep_owners: bool,
}

/// How a [`CopyIn`] tar lands, as Docker's `cp` decides from the source and the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyInHow {
    /// The tar has one top entry (the source's name): into the destination when it is a
    /// directory, else as the destination (whose parent must exist).
    Named,
    /// The tar has one top directory whose children are copied (`SRC/.`): into the
    /// destination directory, made when missing.
    Contents,
    /// A tar the user gave (`cp - c1:/dir`): extracted as it is into the destination, which
    /// must be a directory.
    Archive,
}

/// Why a copy failed, for the host to word it as Docker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFailedKind {
    /// The path (or the destination's parent) does not exist.
    NotFound,
    /// A destination that must be a directory is not one.
    NotADirectory,
    /// Anything else.
    Other,
}

/// What an [`HostMessage::Export`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// A layer tar or Docker's change list.
    pub what: ExportKind,
    /// Stop every process in the guest (SIGSTOP) while the changes are read, and continue
    /// them after (`commit --pause`).
    #[serde(default)]
    pub freeze: bool,
}

/// The form of exported changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    /// An OCI layer tar: changed files, `.wh.NAME` whiteouts and `.wh..wh..opq` opaque
    /// markers; the files the runtime writes (/etc/hostname, hosts, resolv.conf) left out.
    Layer,
    /// Docker's `diff` lines, `A /path`, `C /path` or `D /path`, one per line, sorted.
    Diff,
    /// The container's whole root file system as a tar (`export`): the image with the
    /// changes, without volumes and the kernel's file systems mounted in it.
    Rootfs,
}

/// One interface's configuration, as `mvm.net` gives it at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUp {
    /// The interface's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its IPv4 address.
    pub address: std::net::Ipv4Addr,
    /// The prefix length of its subnet, 1 to 32.
    pub prefix: u8,
    /// The default route through this gateway (replacing any other), when set.
    #[serde(default)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// The MTU, when set.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The `nameserver` of /etc/resolv.conf (replacing the others), when set.
    #[serde(default)]
    pub dns: Option<std::net::Ipv4Addr>,
}

/// A control message from the agent to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The answer to the host's `Hello` when the agent speaks its version.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the agent.
        version: u32,
        /// The agent's build version, for diagnostics only.
        agent_version: String,
    },
    /// The agent refused a message (bad version, a message out of place, a malformed
    /// message). After a refused `Hello` the agent closes the connection.
    Error {
        /// What was wrong, for a human.
        message: String,
    },
    /// The process runs.
    Started {
        /// Its PID inside the guest.
        pid: i32,
    },
    /// The process could not be started. The agent then closes the connection and powers off.
    StartFailed {
        /// Why, coarsely: it decides the container's exit code.
        kind: StartFailedKind,
        /// What happened, for a human (one line).
        message: String,
    },
    /// The process ended. Sent only after the EOF frames of stdout and stderr; the last
    /// message on the connection.
    Exited {
        /// The exit code when the process exited normally.
        code: Option<i32>,
        /// The signal number when the process was killed by a signal.
        signal: Option<i32>,
    },
    /// A `NetworkUp`, `NetworkDown`, `Export`, `CopyOut` or `CopyIn` was carried out.
    Done,
    /// The answer to `Processes`.
    Processes {
        /// By PID.
        processes: Vec<ProcessEntry>,
    },
    /// A `CopyOut` or `CopyIn` could not be carried out; the agent then closes.
    CopyFailed {
        /// Why, coarsely.
        kind: CopyFailedKind,
        /// What happened, for a human (one line).
        message: String,
    },
    /// A message type this version does not know (sent by a newer peer). Never sent.
    #[serde(other)]
    Unknown,
}

/// Why a process could not be started; maps to Docker's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFailedKind {
    /// The command does not exist (not in `PATH`, or no such file): exit code 127.
    NotFound,
    /// The command exists but cannot be executed (no execute permission, a directory, a bad
    /// binary format): exit code 126.
    PermissionDenied,
    /// Anything else (unknown user, bad rlimit, bad spec, I/O failure): exit code 125.
    Other,
}

impl StartFailedKind {
    /// The container exit code Docker reports for this failure.
    pub fn exit_code(self) -> i32 {
        match self {
            StartFailedKind::NotFound => 127,
            StartFailedKind::PermissionDenied => 126,
            StartFailedKind::Other => 125,
        }
    }
}

/// The container exit code for an `Exited` message: the code itself, or 128 + the signal
/// number, as a shell and Docker report it. The message comes from the guest, which may be
/// hostile: anything a real process cannot end with (a code outside 0..=255, a signal outside
/// 1..=127, neither set) is 255, so the arithmetic cannot overflow.
pub fn container_exit_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(code), _) if (0..=255).contains(&code) => code,
        (None, Some(signal)) if (1..=127).contains(&signal) => 128 + signal,
        _ => 255,
    }
}

/// The process the agent starts, as given by the user and the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The command and its arguments; must not be empty. `args[0]` without a `/` is looked
    /// up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// The environment, `KEY=VALUE` entries. The agent adds `PATH` (Docker's default),
    /// `HOSTNAME`, `HOME` (from the user's passwd entry) and with a terminal `TERM=xterm`,
    /// each only when absent.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory, absolute; created when missing (unless `no_create_cwd`).
    /// Empty means `/`.
    #[serde(default)]
    pub cwd: String,
    /// A missing working directory fails the start (126) instead of being made: `exec -w`,
    /// as Docker's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_create_cwd: bool,
    /// The user as the user gave it: `""` (root), `name`, `uid`, `uid:gid`, `name:group`,
    /// resolved in the container's `/etc/passwd` and `/etc/group`.
    #[serde(default)]
    pub user: String,
    /// The supplementary groups, exactly (an OCI bundle's `additionalGids`); absent, they are
    /// those `/etc/group` gives the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u32>>,
    /// Start the process as PID 1 of a new PID namespace with its own /proc (the container's
    /// main process, as under runc); later processes (`exec`) join that namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pid_namespace: bool,
    /// With `pid_namespace`: a minimal init is PID 1 and runs the process as its child,
    /// forwarding signals and reaping orphans (`run --init`, Docker's docker-init).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// With `pid_namespace`: paths hidden in the container's mount namespace (a file under
    /// /dev/null, a directory under an empty read-only tmpfs; missing ones skipped), as an
    /// OCI bundle's `linux.maskedPaths`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    /// With `pid_namespace`: paths made read-only there (`linux.readonlyPaths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_paths: Vec<String>,
    /// The capability sets by name (`CAP_CHOWN`, ...), as an OCI bundle's
    /// `process.capabilities`; absent, the process keeps all of root's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Box<CapabilitySets>>,
    /// `process.noNewPrivileges`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// `process.oomScoreAdj`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// With `pid_namespace`: kernel parameters set before the process starts, as
    /// (`net.ipv4.ip_forward`, `1`) (`linux.sysctl`; the VM's kernel is the container's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctl: Vec<(String, String)>,
    /// Whether the process gets a terminal (stdin, stdout and stderr all on one PTY).
    #[serde(default)]
    pub terminal: bool,
    /// Whether stdin is attached; if not, the process reads `/dev/null` and the agent
    /// ignores `Stdin` frames.
    #[serde(default)]
    pub stdin: bool,
    /// Resource limits to set before exec.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
}

/// The kernel's capability names, by number (linux/capability.h, up to
/// CAP_CHECKPOINT_RESTORE): the agent turns them into masks, the engine checks `--cap-add`
/// and `--cap-drop` against them.
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A process's capability sets by name, in the OCI runtime spec's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySets {
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Inheritable set.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// Permitted set.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// Ambient set.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// One resource limit, in the OCI runtime spec's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource: `RLIMIT_NOFILE` and the like (the `RLIMIT_` prefix and case are
    /// optional, so Docker's `nofile` works too).
    #[serde(rename = "type")]
    pub kind: String,
    /// The soft limit; `u64::MAX` is unlimited.
    pub soft: u64,
    /// The hard limit; `u64::MAX` is unlimited.
    pub hard: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let json = serde_json::to_string(&HostMessage::Hello { version: 1 }).unwrap();
        assert_eq!(json, r#"{"type":"hello","version":1}"#);
        let json = serde_json::to_string(&AgentMessage::StartFailed {
            kind: StartFailedKind::NotFound,
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"start_failed","kind":"not_found","message":"x"}"#
        );
        let json = serde_json::to_string(&AgentMessage::Exited {
            code: None,
            signal: Some(15),
        })
        .unwrap();
        assert_eq!(json, r#"{"type":"exited","code":null,"signal":15}"#);
    }

    #[test]
    fn start_needs_only_args() {
        let msg: HostMessage = serde_json::from_str(r#"{"type":"start","args":["true"]}"#).unwrap();
        assert_eq!(
            msg,
            HostMessage::Start(ProcessSpec {
                args: vec!["true".into()],
                ..Default::default()
            })
        );
        let full = HostMessage::Start(ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "ulimit -n".into()],
            env: vec!["A=b".into()],
            cwd: "/srv".into(),
            no_create_cwd: true,
            user: "1000:1000".into(),
            groups: Some(vec![10, 20]),
            pid_namespace: true,
            init: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            sysctl: vec![("net.ipv4.ip_forward".into(), "1".into())],
            capabilities: None,
            no_new_privileges: false,
            oom_score_adj: None,
            terminal: true,
            stdin: true,
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 10,
                hard: u64::MAX,
            }],
        });
        let json = serde_json::to_string(&full).unwrap();
        assert!(json.contains(r#""type":"RLIMIT_NOFILE""#));
        assert_eq!(serde_json::from_str::<HostMessage>(&json).unwrap(), full);
    }

    #[test]
    fn unknown_messages_and_fields_are_tolerated() {
        let msg: HostMessage = serde_json::from_str(r#"{"type":"checkpoint","x":1}"#).unwrap();
        assert_eq!(msg, HostMessage::Unknown);
        let msg: AgentMessage =
            serde_json::from_str(r#"{"type":"started","pid":7,"new_field":true}"#).unwrap();
        assert_eq!(msg, AgentMessage::Started { pid: 7 });
    }

    #[test]
    fn missing_fields_are_errors() {
        assert!(serde_json::from_str::<HostMessage>(r#"{"type":"start"}"#).is_err());
        assert!(serde_json::from_str::<HostMessage>(r#"{"type":"signal"}"#).is_err());
        assert!(serde_json::from_str::<HostMessage>(r#"{"version":1}"#).is_err());
        assert!(
            serde_json::from_str::<HostMessage>(r#"{"type":"resize","rows":-1,"cols":2}"#).is_err()
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(container_exit_code(Some(3), None), 3);
        assert_eq!(container_exit_code(None, Some(9)), 137);
        assert_eq!(container_exit_code(None, None), 255);
        // A hostile agent's numbers cannot overflow or pass for a real status.
        assert_eq!(container_exit_code(None, Some(i32::MAX)), 255);
        assert_eq!(container_exit_code(None, Some(-1)), 255);
        assert_eq!(container_exit_code(Some(i32::MIN), None), 255);
        assert_eq!(container_exit_code(Some(256), None), 255);
        assert_eq!(container_exit_code(Some(255), None), 255);
        assert_eq!(container_exit_code(None, Some(127)), 255);
        assert_eq!(StartFailedKind::NotFound.exit_code(), 127);
        assert_eq!(StartFailedKind::PermissionDenied.exit_code(), 126);
        assert_eq!(StartFailedKind::Other.exit_code(), 125);
    }
}

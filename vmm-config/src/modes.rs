//! How the VMM confines itself once the VM is built: the seccomp mode, the jail mode and the
//! identity it takes. Only the choices live here; vmm/src/seccomp.rs and vmm/src/jail.rs act
//! on them.

/// What the seccomp filter does with a system call that is not on the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Kill the process (SIGSYS). The default.
    #[default]
    Kill,
    /// Allow it, and log it to the kernel's audit log (to find what a new feature needs).
    Log,
    /// No filter (debugging only).
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Self::Kill),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid seccomp mode {s:?}: use kill, log or off")),
        }
    }
}

/// Whether to jail the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JailMode {
    /// When running as root (the runtime's case). The default.
    #[default]
    Auto,
    /// Always; fails if it cannot.
    On,
    /// Never (debugging only).
    Off,
}

impl std::str::FromStr for JailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid jail mode {s:?}: use auto, on or off")),
        }
    }
}

/// The unprivileged identity the jailed VMM takes (the runtime gives each VM its own uid,
/// so that one VM's VMM cannot signal, trace or share files with another's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user ID (real, effective and saved).
    pub uid: u32,
    /// The group ID (real, effective and saved); supplementary groups are dropped.
    pub gid: u32,
}

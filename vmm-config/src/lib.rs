//! The mvm VMM's configuration: what a microVM is made of, defined once for both ends.
//!
//! In the spirit of Firecracker's `--config-file`: one JSON document (or the same fields as
//! flags) describes the kernel, the command line, vCPUs, memory, disks, network interfaces,
//! vsock, the serial console and where the exit record goes. The VMM (`mvm-vmm`) reads it and
//! validates everything up front, so a bad config ends the monitor with one clear line before
//! any VM exists; the runtime writes it from these same types, so the two cannot drift apart.
//!
//! This crate is pure data and checks (no KVM): the device limits the VMM's devices impose on a
//! config live here too ([`MAX_VIRTIO_DEVICES`], [`BLOCK_ID_BYTES`], [`check_tag`],
//! [`valid_ifname`]), and the VMM's device code uses them from here.

pub mod api;
mod devices;
mod modes;

pub use devices::{
    BLOCK_ID_BYTES, MAX_VIRTIO_DEVICES, TAG_BYTES, TagError, check_tag, valid_ifname,
};
pub use modes::{Identity, JailMode, SeccompMode};

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest number of vCPUs: the MP table must fit in the EBDA below 640 KiB (the VMM checks
/// this against its MP table at compile time).
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest memory that can hold the boot structures, a kernel and its page tables.
pub const MIN_MEM_MIB: u64 = 16;
/// Largest guest memory accepted; larger values are almost always a typo (bytes for MiB).
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// The guest CID range: 0, 1 and 2 are reserved by the vsock specification (hypervisor,
/// local, host), and `u32::MAX` is VMADDR_CID_ANY.
pub const MIN_GUEST_CID: u64 = 3;

/// Everything the monitor needs to build and run one microVM.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Guest kernel: an ELF `vmlinux` (PVH entry used when present) or a `bzImage`. Not
    /// used (and may be left empty) when the VM is restored from a snapshot.
    #[serde(default)]
    pub kernel: PathBuf,
    /// Optional initial ramdisk loaded high in guest memory.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the monitor appends one `virtio_mmio.device=` word per device.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Number of vCPUs (1 to [`MAX_VCPUS`]).
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u64,
    /// Block devices, in the order the guest will see them (vda, vdb, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Optional virtio-vsock device with its host side on unix sockets.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Network interfaces (virtio-net over existing TAP devices), in the order the guest
    /// will see them (eth0, eth1, ...).
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// Shared directories (virtio-fs devices served by vhost-user backends such as
    /// virtiofsd); the guest mounts each by its tag.
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    /// Where the guest's serial console goes.
    #[serde(default)]
    pub serial: SerialOutput,
    /// File the monitor writes its exit record to (JSON, atomically) when the VM ends.
    #[serde(default)]
    pub exit_record: Option<PathBuf>,
    /// The seccomp filter once the VM runs: `kill` (default), `log` or `off`.
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// The jail (namespaces, chroot, no capabilities) once the VM is built: `auto` (when
    /// running as root; the default), `on` or `off`.
    #[serde(default)]
    pub jail: JailMode,
    /// The uid the jailed VMM runs as once everything is open (real, effective and saved).
    /// Give each VM a uid of its own (e.g. 100000 + N): the VMM's thread limit (RLIMIT_NPROC)
    /// counts every task of that uid. Needs `jail_gid` too and a jail (`auto` as root, or
    /// `on`). When absent, the jailed VMM stays uid 0 without capabilities.
    ///
    /// As that uid the VMM still reaches, inside its chroot (the vsock socket's directory):
    /// the directory itself (search permission), the host's `<uds_path>_<port>` sockets it
    /// connects to (write permission on each socket file), and the exit record's directory
    /// (write and search permission, to rename the record into place; the temporary record
    /// file is given to the uid before the drop). Files opened before the jail (disks, TAPs,
    /// the serial log, /dev/kvm) are used through their descriptors and need nothing.
    #[serde(default)]
    pub jail_uid: Option<u32>,
    /// The gid the jailed VMM runs as (real, effective and saved; no supplementary groups).
    /// Given together with `jail_uid`.
    #[serde(default)]
    pub jail_gid: Option<u32>,
    /// The control socket ([`api`]): the VMM listens here for pause, resume and snapshot
    /// requests. Created by the VMM before it is jailed; it must lie in the jail's root (the
    /// vsock socket's directory) when there is one.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Restore this snapshot instead of booting the kernel: the config's vCPUs, memory and
    /// devices must have the snapshot's shape (the same kinds in the same order); the files
    /// and TAPs behind the devices may differ.
    #[serde(default)]
    pub restore: Option<RestoreSource>,
}

/// The two files of a snapshot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreSource {
    /// The state file (vCPUs, interrupt controllers, clock, devices).
    pub state: PathBuf,
    /// The guest memory file, mapped privately (pages load when the guest touches them and
    /// are shared with every VM restored from the same file).
    pub memory: PathBuf,
}

/// One virtio-blk device backed by a raw file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Raw disk image.
    pub path: PathBuf,
    /// Refuse guest writes (the device offers VIRTIO_BLK_F_RO and fails write requests).
    #[serde(default)]
    pub read_only: bool,
    /// Serial number returned to the guest's GET_ID request (at most 20 bytes).
    #[serde(default)]
    pub id: Option<String>,
}

/// The vsock device: guest CID and the host unix socket (Firecracker's hybrid vsock).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID.
    pub guest_cid: u64,
    /// Host socket: the host connects here and sends `CONNECT <port>\n`; connections the guest
    /// opens to host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// One virtio-net device over an existing TAP device.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Name of the TAP device on the host (it must exist; at most 15 bytes).
    pub tap: String,
    /// The guest's MAC address, `xx:xx:xx:xx:xx:xx` in hex, unicast. When absent, a locally
    /// administered address is derived from the TAP name.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One virtio-fs device whose queues a running vhost-user backend (virtiofsd) serves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The backend's listening unix socket (`virtiofsd --socket-path`); it must exist when
    /// the monitor starts.
    pub socket: PathBuf,
    /// The tag the guest mounts by (`mount -t virtiofs TAG DIR`): 1 to 36 bytes, no NUL.
    pub tag: String,
}

impl NetConfig {
    /// The guest's MAC address (given or derived).
    pub fn mac_addr(&self) -> Result<[u8; 6], ConfigError> {
        match &self.mac {
            Some(text) => parse_mac(text),
            None => Ok(derived_mac(&self.tap)),
        }
    }
}

/// Parses `xx:xx:xx:xx:xx:xx` (hex, either case) and requires a unicast, non-zero address.
pub fn parse_mac(text: &str) -> Result<[u8; 6], ConfigError> {
    let bad = |why: &str| ConfigError::Invalid(format!("net mac {text:?}: {why}"));
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| bad("expected six hex bytes separated by ':'"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("expected six hex bytes separated by ':'"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| bad("expected six hex bytes separated by ':'"))?;
    }
    if parts.next().is_some() {
        return Err(bad("expected six hex bytes separated by ':'"));
    }
    if mac[0] & 1 != 0 {
        return Err(bad("a multicast address cannot be a NIC's address"));
    }
    if mac == [0; 6] {
        return Err(bad("the all-zero address is not valid"));
    }
    Ok(mac)
}

/// A locally administered unicast MAC from the TAP name (FNV-1a), stable across restarts.
fn derived_mac(tap: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tap.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// Destination of the 8250 UART's output.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum SerialOutput {
    /// The monitor's standard output.
    #[default]
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    None,
}

fn default_cmdline() -> String {
    "console=ttyS0 reboot=k panic=-1".to_string()
}
fn default_vcpus() -> u8 {
    1
}
fn default_mem_mib() -> u64 {
    128
}

/// A configuration the monitor cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid JSON of the expected shape.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A file the VM needs does not exist or cannot be opened.
    #[error("{what} {path}: {reason}")]
    MissingFile {
        /// Which file (kernel, initrd, disk).
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// A number outside what the monitor supports.
    #[error("{0}")]
    OutOfRange(String),
    /// A value of the wrong form (a TAP name, a MAC address).
    #[error("{0}")]
    Invalid(String),
}

impl VmConfig {
    /// Reads and validates a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: VmConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(cfg)
    }

    /// Checks every field so that a VM is only built from a config that can run: the rules
    /// ([`VmConfig::validate_rules`]), then what the host must provide (the kernel, initrd and
    /// disk files, the TAP devices, the virtio-fs sockets).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_rules()?;
        self.validate_host()
    }

    /// The checks that need nothing but the config itself (no file, TAP or socket it names
    /// need exist): ranges, device limits, names, tags, MACs, duplicates and the jail identity.
    /// A writer of configs (the runtime) can run them where the VMM's host resources are not.
    pub fn validate_rules(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::OutOfRange(format!(
                "vcpus must be between 1 and {MAX_VCPUS}, got {}",
                self.vcpus
            )));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ConfigError::OutOfRange(format!(
                "memory must be between {MIN_MEM_MIB} MiB and {MAX_MEM_MIB} MiB, got {} MiB",
                self.mem_mib
            )));
        }
        for disk in &self.disks {
            if let Some(id) = &disk.id
                && id.len() > BLOCK_ID_BYTES
            {
                return Err(ConfigError::OutOfRange(format!(
                    "disk id {id:?} is longer than {BLOCK_ID_BYTES} bytes"
                )));
            }
        }
        if self.disks.len() + usize::from(self.vsock.is_some()) + self.net.len() + self.fs.len()
            > MAX_VIRTIO_DEVICES
        {
            return Err(ConfigError::OutOfRange(format!(
                "at most {MAX_VIRTIO_DEVICES} virtio devices are supported"
            )));
        }
        self.validate_net()?;
        self.validate_fs()?;
        if self.restore.is_some() && !self.fs.is_empty() {
            return Err(ConfigError::Invalid(
                "a VM with shared directories (fs) cannot be restored from a snapshot: their \
                 state lives in the vhost-user backend"
                    .into(),
            ));
        }
        self.validate_identity()?;
        if let Some(vsock) = &self.vsock {
            if vsock.guest_cid < MIN_GUEST_CID || vsock.guest_cid >= u64::from(u32::MAX) {
                return Err(ConfigError::OutOfRange(format!(
                    "vsock guest CID must be between {MIN_GUEST_CID} and {}, got {}",
                    u32::MAX - 1,
                    vsock.guest_cid
                )));
            }
            if vsock.uds_path.as_os_str().is_empty() {
                return Err(ConfigError::OutOfRange("vsock uds_path is empty".into()));
            }
        }
        Ok(())
    }

    /// What the host must provide: the files, TAP devices and sockets the config names.
    fn validate_host(&self) -> Result<(), ConfigError> {
        match &self.restore {
            Some(from) => {
                check_file("snapshot state", &from.state)?;
                check_file("snapshot memory", &from.memory)?;
            }
            None => {
                check_file("kernel", &self.kernel)?;
                if let Some(initrd) = &self.initrd {
                    check_file("initrd", initrd)?;
                }
            }
        }
        for disk in &self.disks {
            check_file("disk", &disk.path)?;
        }
        for nic in &self.net {
            if !interface_exists(&nic.tap) {
                return Err(ConfigError::Invalid(format!(
                    "net tap {} does not exist",
                    nic.tap
                )));
            }
        }
        for fs in &self.fs {
            match std::fs::metadata(&fs.socket) {
                Ok(m) if m.file_type().is_socket() => {}
                Ok(_) => {
                    return Err(ConfigError::MissingFile {
                        what: "fs socket",
                        path: fs.socket.clone(),
                        reason: "not a unix socket".into(),
                    });
                }
                Err(e) => {
                    return Err(ConfigError::MissingFile {
                        what: "fs socket",
                        path: fs.socket.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl VmConfig {
    /// The identity the jailed VMM takes, when one is given.
    pub fn jail_identity(&self) -> Option<Identity> {
        Some(Identity {
            uid: self.jail_uid?,
            gid: self.jail_gid?,
        })
    }

    fn validate_identity(&self) -> Result<(), ConfigError> {
        match (self.jail_uid, self.jail_gid) {
            (None, None) => return Ok(()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "jail_uid and jail_gid are given together".into(),
                ));
            }
            (Some(uid), Some(gid)) => {
                // -1 means "unchanged" to setresuid and setresgid.
                if uid == u32::MAX || gid == u32::MAX {
                    return Err(ConfigError::OutOfRange(format!(
                        "jail uid and gid must be below {}",
                        u32::MAX
                    )));
                }
            }
        }
        if self.jail == JailMode::Off {
            return Err(ConfigError::Invalid(
                "jail_uid and jail_gid need the jail (it is off)".into(),
            ));
        }
        Ok(())
    }

    fn validate_net(&self) -> Result<(), ConfigError> {
        let mut macs = Vec::with_capacity(self.net.len());
        for (i, nic) in self.net.iter().enumerate() {
            if nic.tap.len() >= libc::IFNAMSIZ {
                return Err(ConfigError::Invalid(format!(
                    "net tap name {:?} is longer than {} bytes",
                    nic.tap,
                    libc::IFNAMSIZ - 1
                )));
            }
            if !valid_ifname(&nic.tap) {
                return Err(ConfigError::Invalid(format!(
                    "net tap name {:?} is not a valid interface name",
                    nic.tap
                )));
            }
            if self.net[..i].iter().any(|other| other.tap == nic.tap) {
                return Err(ConfigError::Invalid(format!(
                    "net tap {} is given twice",
                    nic.tap
                )));
            }
            let mac = nic.mac_addr()?;
            if macs.contains(&mac) {
                return Err(ConfigError::Invalid(format!(
                    "net mac {} is given twice",
                    nic.mac.as_deref().unwrap_or("(derived)")
                )));
            }
            macs.push(mac);
        }
        Ok(())
    }
}

impl VmConfig {
    fn validate_fs(&self) -> Result<(), ConfigError> {
        for (i, fs) in self.fs.iter().enumerate() {
            check_tag(&fs.tag).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let earlier = &self.fs[..i];
            if earlier.iter().any(|other| other.tag == fs.tag) {
                return Err(ConfigError::Invalid(format!(
                    "fs tag {} is given twice",
                    fs.tag
                )));
            }
            if earlier.iter().any(|other| other.socket == fs.socket) {
                return Err(ConfigError::Invalid(format!(
                    "fs socket {} is given twice",
                    fs.socket.display()
                )));
            }
        }
        Ok(())
    }
}

/// Whether a network interface of that name exists in the monitor's network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(cname.as_ptr()) != 0 }
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(ConfigError::MissingFile {
            what,
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(ConfigError::MissingFile {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(kernel: &Path) -> VmConfig {
        VmConfig {
            kernel: kernel.to_path_buf(),
            initrd: None,
            cmdline: default_cmdline(),
            vcpus: 1,
            mem_mib: 128,
            disks: vec![],
            vsock: None,
            net: vec![],
            fs: vec![],
            serial: SerialOutput::Stdout,
            exit_record: None,
            seccomp: Default::default(),
            jail: Default::default(),
            jail_uid: None,
            jail_gid: None,
            api_socket: None,
            restore: None,
        }
    }

    #[test]
    fn validates_the_jail_identity() {
        let exe = std::env::current_exe().unwrap();
        let mut cfg = base(&exe);
        cfg.validate().unwrap();
        assert_eq!(cfg.jail_identity(), None);
        cfg.jail_uid = Some(100_005);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("together"), "{e}");
        cfg.jail_gid = Some(100_005);
        cfg.validate().unwrap();
        assert_eq!(
            cfg.jail_identity(),
            Some(Identity {
                uid: 100_005,
                gid: 100_005
            })
        );
        cfg.jail = JailMode::Off;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("need the jail"), "{e}");
        cfg.jail = JailMode::On;
        cfg.jail_uid = Some(u32::MAX);
        assert!(cfg.validate().is_err());
        let parsed: VmConfig =
            serde_json::from_str(r#"{"kernel":"/k","jail_uid":100001,"jail_gid":100002}"#).unwrap();
        assert_eq!(
            (parsed.jail_uid, parsed.jail_gid),
            (Some(100_001), Some(100_002))
        );
    }

    #[test]
    fn parses_minimal_json_with_defaults() {
        let cfg: VmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(cfg.vcpus, 1);
        assert_eq!(cfg.mem_mib, 128);
        assert_eq!(cfg.serial, SerialOutput::Stdout);
    }

    #[test]
    fn parses_full_json() {
        let cfg: VmConfig = serde_json::from_str(
            r#"{"kernel":"/k","cmdline":"x","vcpus":2,"mem_mib":64,
                "disks":[{"path":"/d","read_only":true,"id":"root"}],
                "vsock":{"guest_cid":3,"uds_path":"/v"},
                "net":[{"tap":"tap0","mac":"02:00:00:00:00:01"},{"tap":"tap1"}],
                "fs":[{"socket":"/run/vfs.sock","tag":"vol0"}],
                "serial":{"kind":"file","path":"/s"},"exit_record":"/e"}"#,
        )
        .unwrap();
        assert!(cfg.disks[0].read_only);
        assert_eq!(cfg.net[0].mac_addr().unwrap(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(cfg.net[1].mac, None);
        assert_eq!(cfg.serial, SerialOutput::File("/s".into()));
        assert_eq!(
            cfg.fs,
            vec![FsConfig {
                socket: "/run/vfs.sock".into(),
                tag: "vol0".into()
            }]
        );
        assert!(
            serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","fs":[{"socket":"/s"}]}"#).is_err(),
            "tag is required"
        );
        assert!(
            serde_json::from_str::<VmConfig>(
                r#"{"kernel":"/k","fs":[{"socket":"/s","tag":"t","cache":"x"}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn validates_shared_directories() {
        let exe = std::env::current_exe().unwrap();
        /// Removes the test's directory also when an assertion fails.
        struct TempDir(PathBuf);
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let name = format!("mvm-fs-cfg-{}", std::process::id());
        let dir = TempDir(std::env::temp_dir().join(name));
        std::fs::create_dir_all(&dir.0).unwrap();
        let sock_a = dir.0.join("a.sock");
        let sock_b = dir.0.join("b.sock");
        let _la = std::os::unix::net::UnixListener::bind(&sock_a).unwrap();
        let _lb = std::os::unix::net::UnixListener::bind(&sock_b).unwrap();
        let fs = |socket: &Path, tag: &str| FsConfig {
            socket: socket.to_path_buf(),
            tag: tag.into(),
        };
        let check = |list: Vec<FsConfig>| {
            let mut c = base(&exe);
            c.fs = list;
            c.validate().map_err(|e| e.to_string())
        };
        assert!(check(vec![fs(&sock_a, "vol0"), fs(&sock_b, "vol1")]).is_ok());
        assert!(check(vec![fs(&sock_a, &"x".repeat(36))]).is_ok());
        let e = check(vec![fs(&sock_a, "")]).unwrap_err();
        assert_eq!(e, "fs tag is empty");
        let e = check(vec![fs(&sock_a, &"x".repeat(37))]).unwrap_err();
        assert!(e.contains("longer than 36 bytes"), "{e}");
        let e = check(vec![fs(&sock_a, "a\0b")]).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
        let e = check(vec![fs(&sock_a, "v"), fs(&sock_b, "v")]).unwrap_err();
        assert_eq!(e, "fs tag v is given twice");
        let e = check(vec![fs(&sock_a, "v"), fs(&sock_a, "w")]).unwrap_err();
        assert!(e.contains("socket") && e.contains("given twice"), "{e}");
        let e = check(vec![fs(&dir.0.join("none.sock"), "v")]).unwrap_err();
        assert!(
            e.starts_with("fs socket ") && e.contains("No such file"),
            "{e}"
        );
        let e = check(vec![fs(&exe, "v")]).unwrap_err();
        assert!(e.ends_with("not a unix socket"), "{e}");
    }

    #[test]
    fn the_rules_need_no_host_resources() {
        let mut c = base(Path::new("/nonexistent/kernel"));
        c.disks.push(DiskConfig {
            path: "/nonexistent/disk".into(),
            read_only: false,
            id: Some("root".into()),
        });
        c.net.push(NetConfig {
            tap: "mvm-nosuchtap".into(),
            mac: None,
        });
        c.fs.push(FsConfig {
            socket: "/nonexistent/fs.sock".into(),
            tag: "vol0".into(),
        });
        c.validate_rules().unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("kernel "));
        c.disks[0].id = Some("x".repeat(BLOCK_ID_BYTES + 1));
        let e = c.validate_rules().unwrap_err().to_string();
        assert!(e.contains("longer than 20 bytes"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","memory":1}"#).is_err());
    }

    #[test]
    fn validates_ranges_and_files() {
        let exe = std::env::current_exe().unwrap();
        assert!(base(&exe).validate().is_ok());
        let mut c = base(&exe);
        c.vcpus = 0;
        assert!(c.validate().unwrap_err().to_string().contains("vcpus"));
        let mut c = base(&exe);
        c.mem_mib = 0;
        assert!(c.validate().unwrap_err().to_string().contains("memory"));
        let c = base(Path::new("/nonexistent/kernel"));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("kernel /nonexistent")
        );
        let mut c = base(&exe);
        c.disks.push(DiskConfig {
            path: "/nonexistent/disk".into(),
            read_only: false,
            id: None,
        });
        assert!(c.validate().unwrap_err().to_string().starts_with("disk "));
        let mut c = base(&exe);
        c.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: "/v".into(),
        });
        assert!(c.validate().unwrap_err().to_string().contains("CID"));
    }

    #[test]
    fn validates_network_interfaces() {
        let exe = std::env::current_exe().unwrap();
        let nic = |tap: &str, mac: Option<&str>| NetConfig {
            tap: tap.into(),
            mac: mac.map(Into::into),
        };
        let check = |nics: Vec<NetConfig>| {
            let mut c = base(&exe);
            c.net = nics;
            c.validate().map_err(|e| e.to_string())
        };
        // The loopback interface exists in every namespace (a TAP is not required here).
        assert!(check(vec![nic("lo", Some("02:AB:cd:00:00:01"))]).is_ok());
        let e = check(vec![nic("mvm-nosuchtap", None)]).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = check(vec![nic("a-very-long-tapname", None)]).unwrap_err();
        assert!(e.contains("longer than 15 bytes"), "{e}");
        assert!(
            check(vec![nic("", None)])
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(
            check(vec![nic("a/b", None)])
                .unwrap_err()
                .contains("not a valid")
        );
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:0:0:0:0:1",
            "0g:00:00:00:00:01",
            "",
        ] {
            let e = check(vec![nic("tap0", Some(bad))]).unwrap_err();
            assert!(e.contains("six hex bytes"), "{bad}: {e}");
        }
        let e = check(vec![nic("tap0", Some("01:00:5e:00:00:01"))]).unwrap_err();
        assert!(e.contains("multicast"), "{e}");
        assert!(check(vec![nic("tap0", Some("00:00:00:00:00:00"))]).is_err());
        let e = check(vec![nic("lo", None), nic("lo", None)]).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let m = Some("02:00:00:00:00:09");
        let e = check(vec![nic("lo", m), nic("tap1", m)]).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let many: Vec<_> = (0..20).map(|i| nic(&format!("tap{i}"), None)).collect();
        assert!(check(many).unwrap_err().contains("virtio devices"));
    }

    #[test]
    fn derived_macs_are_local_unicast_and_stable() {
        let a = NetConfig {
            tap: "tap0".into(),
            mac: None,
        }
        .mac_addr()
        .unwrap();
        let b = NetConfig {
            tap: "tap1".into(),
            mac: None,
        }
        .mac_addr()
        .unwrap();
        assert_eq!(a[0], 0x02);
        assert_ne!(a, b);
        assert_eq!(a, derived_mac("tap0"));
    }
}

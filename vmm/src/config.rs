//! The monitor's configuration: what a microVM is made of.
//!
//! In the spirit of Firecracker's `--config-file`: one JSON document (or the same fields as
//! flags) describes the kernel, the command line, vCPUs, memory, disks, vsock, the serial
//! console and where the exit record goes. Everything is validated up front so a bad config
//! ends the monitor with one clear line before any VM exists.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest number of vCPUs: the MP table must fit in the EBDA below 640 KiB.
pub const MAX_VCPUS: u8 = 32;
const _: () = assert!(MAX_VCPUS <= crate::arch::x86_64::mptable::MPTABLE_MAX_CPUS);
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
    /// Guest kernel: an ELF `vmlinux` (PVH entry used when present) or a `bzImage`.
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
    /// Where the guest's serial console goes.
    #[serde(default)]
    pub serial: SerialOutput,
    /// File the monitor writes its exit record to (JSON, atomically) when the VM ends.
    #[serde(default)]
    pub exit_record: Option<PathBuf>,
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

    /// Checks every field so that a VM is only built from a config that can run.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        for disk in &self.disks {
            check_file("disk", &disk.path)?;
            if let Some(id) = &disk.id
                && id.len() > crate::devices::virtio::block::BLOCK_ID_BYTES
            {
                return Err(ConfigError::OutOfRange(format!(
                    "disk id {id:?} is longer than {} bytes",
                    crate::devices::virtio::block::BLOCK_ID_BYTES
                )));
            }
        }
        if self.disks.len() + usize::from(self.vsock.is_some())
            > crate::arch::x86_64::layout::MAX_VIRTIO_DEVICES
        {
            return Err(ConfigError::OutOfRange(format!(
                "at most {} virtio devices are supported",
                crate::arch::x86_64::layout::MAX_VIRTIO_DEVICES
            )));
        }
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
            serial: SerialOutput::Stdout,
            exit_record: None,
        }
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
                "serial":{"kind":"file","path":"/s"},"exit_record":"/e"}"#,
        )
        .unwrap();
        assert!(cfg.disks[0].read_only);
        assert_eq!(cfg.serial, SerialOutput::File("/s".into()));
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
}

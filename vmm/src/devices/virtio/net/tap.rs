//! A TAP device opened through /dev/net/tun.
//!
//! The TAP must already exist (the runtime creates it, puts it on a bridge and gives it to
//! us by name): attaching to a missing name would silently create a fresh, unconnected
//! interface that disappears with the monitor. It is opened with IFF_VNET_HDR and a 12-byte
//! vnet header, so every frame carries the guest's own `virtio_net_hdr_v1`, and offloads are
//! switched on only for what the guest acknowledged.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;
use super::backend::Backend;

/// The offloads we ever ask a TAP for (UFO/USO are not used: see the module of `device`).
const WANTED_OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Opening or configuring a TAP failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long for an interface name or has forbidden characters.
    #[error("invalid TAP name {0:?}")]
    InvalidName(String),
    /// No interface of that name exists in the monitor's network namespace.
    #[error("TAP device {0} does not exist")]
    NotFound(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// An ioctl on the TAP failed.
    #[error("{what} on TAP {name} failed: {source}")]
    Ioctl {
        /// Which request.
        what: &'static str,
        /// The TAP.
        name: String,
        /// The error.
        source: io::Error,
    },
}

/// Whether a name is a valid Linux interface name (defined with the config it checks).
pub use mvm_vmm_config::valid_ifname;

/// An open TAP queue in non-blocking mode.
pub struct Tap {
    file: File,
    name: String,
    supported: u32,
    offloads: u32,
}

impl Tap {
    /// Attaches to the existing TAP `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_ifname(name) {
            return Err(TapError::InvalidName(name.to_string()));
        }
        let cname = CString::new(name).map_err(|_| TapError::InvalidName(name.to_string()))?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut tap = Self {
            file,
            name: name.to_string(),
            supported: 0,
            offloads: 0,
        };

        // SAFETY: ifreq is plain old data (a name array and a union of integers and
        // addresses); all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is; the fd is ours.
        let rc = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        tap.check(rc, "TUNSETIFF")?;

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at `hdr_len`.
        let rc = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        tap.check(rc, "TUNSETVNETHDRSZ")?;

        // Probe what the kernel lets us deliver; TSO needs CSUM, so try the set, then CSUM.
        tap.supported = [WANTED_OFFLOADS, libc::TUN_F_CSUM]
            .into_iter()
            .find(|&f| tap.ioctl_offload(f).is_ok())
            .unwrap_or(0);
        // Nothing is enabled until the guest acknowledges features.
        tap.set_offloads(0).map_err(|source| TapError::Ioctl {
            what: "TUNSETOFFLOAD",
            name: name.to_string(),
            source,
        })?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, rc: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl {
                what,
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn ioctl_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long); the fd is ours.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Backend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn supported_offloads(&self) -> u32 {
        self.supported
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.ioctl_offload(flags & self.supported)?;
        self.offloads = flags & self.supported;
        Ok(())
    }

    fn offloads(&self) -> u32 {
        self.offloads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("tap0"));
        assert!(valid_ifname("mvm-0123456789a"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("mvm-0123456789ab"), "16 bytes");
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("a:b"));
        assert!(!valid_ifname(".."));
    }

    #[test]
    fn missing_tap_is_refused_before_anything_is_created() {
        let e = Tap::open("mvm-nosuchtap").err().expect("no such TAP");
        assert!(matches!(e, TapError::NotFound(_)), "{e}");
        assert!(matches!(
            Tap::open("bad/name").err(),
            Some(TapError::InvalidName(_))
        ));
    }
}

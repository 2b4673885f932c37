//! What the device exchanges frames with on the host side.
//!
//! A backend moves whole frames, each starting with a 12-byte `virtio_net_hdr_v1`, and never
//! blocks: a receive with nothing to read fails with `WouldBlock`, and the device waits for
//! its file descriptor to become readable.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// The host side of a virtio-net device.
pub trait Backend: AsRawFd + Send {
    /// Reads one frame (vnet header first) into `buf`; `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (vnet header first).
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// The `TUN_F_*` offloads the backend can deliver to the guest (frames with a partial
    /// checksum or larger than the MTU).
    fn supported_offloads(&self) -> u32;
    /// Allows exactly the `TUN_F_*` offloads in `flags` on frames delivered to the guest.
    fn set_offloads(&mut self, flags: u32) -> io::Result<()>;
    /// The offloads currently allowed.
    fn offloads(&self) -> u32;
}

/// A backend over a unix datagram socket: one datagram per frame, as on a TAP. Tests and the
/// fuzz target use one end of a socket pair as the "TAP" and the other as the host network.
pub struct DatagramBackend {
    sock: UnixDatagram,
    supported: u32,
    offloads: u32,
}

impl DatagramBackend {
    /// Wraps `sock` (made non-blocking), claiming support for the `supported` offloads.
    pub fn new(sock: UnixDatagram, supported: u32) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            supported,
            offloads: 0,
        })
    }

    /// A connected pair: the backend and the peer socket playing the host network.
    pub fn pair(supported: u32) -> io::Result<(Self, UnixDatagram)> {
        let (a, b) = UnixDatagram::pair()?;
        Ok((Self::new(a, supported)?, b))
    }
}

impl AsRawFd for DatagramBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Backend for DatagramBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    fn supported_offloads(&self) -> u32 {
        self.supported
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        if flags & !self.supported != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.offloads = flags;
        Ok(())
    }

    fn offloads(&self) -> u32 {
        self.offloads
    }
}

//! The AF_VSOCK listener the host connects to.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept4, bind, listen, socket,
};

/// A listening vsock socket on every CID of the guest.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port`.
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
        listen(&fd, Backlog::new(4)?)?;
        Ok(VsockListener { fd })
    }

    /// Its descriptor (to poll it).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<VsockStream> {
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 just returned this descriptor and nothing else owns it.
                Ok(fd) => return Ok(VsockStream(unsafe { OwnedFd::from_raw_fd(fd) })),
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u32 = 2;

impl VsockStream {
    /// Connects to `port` on the host.
    pub fn connect_host(port: u32) -> io::Result<VsockStream> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        nix::sys::socket::connect(fd.as_raw_fd(), &VsockAddr::new(HOST_CID, port))?;
        Ok(VsockStream(fd))
    }

    /// A second handle on the same connection (one thread reads, another writes).
    pub fn try_clone(&self) -> io::Result<VsockStream> {
        Ok(VsockStream(self.0.try_clone()?))
    }
}

/// An accepted connection.
#[derive(Debug)]
pub struct VsockStream(OwnedFd);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(nix::unistd::read(&self.0, buf)?)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(nix::unistd::write(&self.0, buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

//! The classic interface ioctls (`SIOC*`) on an AF_INET datagram socket: enough to configure
//! an IPv4 interface and a default route without writing rtnetlink messages by hand.
//!
//! Everything acts on the network namespace of the thread that created the [`IfSocket`].

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// An AF_INET datagram socket, the handle the `SIOC*` ioctls need.
#[derive(Debug)]
pub struct IfSocket(OwnedFd);

/// `IFNAMSIZ`-sized, NUL-padded interface name, as `ifreq` and `rtentry` want it.
type IfName = [libc::c_char; libc::IFNAMSIZ];

fn if_name(name: &str) -> io::Result<IfName> {
    let mut buf: IfName = [0; libc::IFNAMSIZ];
    let bytes = name.as_bytes();
    // One byte stays NUL.
    if bytes.is_empty() || bytes.len() >= buf.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(buf)
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data (a name array and a union of integers, sockaddrs and a
    // pointer); all-zero is a valid value of every member.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = if_name(name)?;
    Ok(req)
}

/// A `struct sockaddr` holding a `struct sockaddr_in` (port 0), built field by field: the
/// in-kernel layout is family, 2-byte port, then the 4-byte address in network order.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as libc::c_char; 14];
    for (dst, src) in sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data,
    }
}

impl IfSocket {
    /// Opens the socket (close-on-exec).
    pub fn new() -> io::Result<IfSocket> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        Ok(IfSocket(fd))
    }

    /// Runs an ioctl whose argument is an `ifreq`.
    fn ifreq_ioctl(&self, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: every request passed here takes a pointer to one `struct ifreq`, which `req`
        // is, valid and writable for the duration of the call, with a NUL-terminated name.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface's hardware (MAC) address; `None` when it is not 6 bytes long (loopback
    /// has one, all zeros; tunnels have none).
    pub fn hwaddr(&self, name: &str) -> io::Result<Option<[u8; 6]>> {
        let mut req = ifreq(name)?;
        self.ifreq_ioctl(libc::SIOCGIFHWADDR, &mut req)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            return Ok(None);
        }
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data) {
            *dst = src as u8;
        }
        Ok(Some(mac))
    }

    /// Sets the interface's hardware (MAC) address; the interface must be down.
    pub fn set_hwaddr(&self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut req = ifreq(name)?;
        // SAFETY: writing the hwaddr member of the union, a plain sockaddr.
        unsafe {
            req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *dst = src as libc::c_char;
            }
        }
        self.ifreq_ioctl(libc::SIOCSIFHWADDR, &mut req)
    }

    /// Sets the interface's MTU.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> io::Result<()> {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
        self.ifreq_ioctl(libc::SIOCSIFMTU, &mut req)
    }

    /// Sets the interface's (primary) IPv4 address. The kernel gives it a classful netmask
    /// until [`set_netmask`](Self::set_netmask).
    pub fn set_addr(&self, name: &str, addr: Ipv4Addr) -> io::Result<()> {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
        self.ifreq_ioctl(libc::SIOCSIFADDR, &mut req)
    }

    /// Sets the netmask of the interface's address; the kernel recomputes the broadcast
    /// address from it.
    pub fn set_netmask(&self, name: &str, mask: Ipv4Addr) -> io::Result<()> {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
        self.ifreq_ioctl(libc::SIOCSIFNETMASK, &mut req)
    }

    /// Sets `IFF_UP` on the interface.
    pub fn set_up(&self, name: &str) -> io::Result<()> {
        let mut req = ifreq(name)?;
        self.ifreq_ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ifreq_ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// Clears `IFF_UP` on the interface `name` (the kernel drops the routes through it).
    pub fn set_down(&self, name: &str) -> io::Result<()> {
        let mut req = ifreq(name)?;
        self.ifreq_ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        self.ifreq_ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// Deletes one IPv4 default route, whichever interface it goes through; `Ok(false)` when
    /// there is none.
    pub fn del_default_route(&self) -> io::Result<bool> {
        // SAFETY: rtentry is plain old data; all-zero is a valid value (no device pointer).
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
        // SAFETY: SIOCDELRT reads one `struct rtentry`, valid for the call; rt_dev is null.
        if unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCDELRT,
                &rt as *const libc::rtentry,
            )
        } < 0
        {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ESRCH) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(true)
    }

    /// Adds the IPv4 default route through `gateway` on interface `name`.
    pub fn add_default_route(&self, name: &str, gateway: Ipv4Addr) -> io::Result<()> {
        // The kernel copies IFNAMSIZ - 1 bytes from rt_dev whatever the name's length, so it
        // must point at a full-sized buffer, not at a short C string.
        let mut dev = if_name(name)?;
        // SAFETY: rtentry is plain old data (integers, sockaddrs and a pointer, which may be
        // null); all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_v4(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        rt.rt_dev = dev.as_mut_ptr();
        // SAFETY: SIOCADDRT reads one `struct rtentry`, valid for the call; its rt_dev points
        // at `dev`, IFNAMSIZ bytes with a NUL, alive until the call returns.
        if unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCADDRT,
                &rt as *const libc::rtentry,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(if_name("").is_err());
        assert!(if_name("a-name-too-long").is_ok());
        assert!(if_name("a-name-too-long!").is_err());
        assert!(if_name("a\0b").is_err());
        let sa = sockaddr_v4(Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // SAFETY: sockaddr and sockaddr_in are both 16 bytes, and the read is unaligned.
        let sin: libc::sockaddr_in =
            unsafe { std::ptr::read_unaligned((&sa as *const libc::sockaddr).cast()) };
        assert_eq!(sin.sin_port, 0);
        assert_eq!(
            u32::from_be(sin.sin_addr.s_addr),
            u32::from(Ipv4Addr::new(10, 88, 0, 2))
        );
    }
}

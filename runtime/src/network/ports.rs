//! Published ports: `-p [IP:][HOST:]CONTAINER[/tcp|udp]` parsed, bound on the host before the
//! container starts, and proxied to the guest's address while its VM runs. A user-space proxy
//! reaches the guest from every host address, loopback included, which NAT rules alone do not.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port. `host_port` 0 until bound (then the port the kernel chose).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on (`0.0.0.0`: all).
    pub host_ip: Ipv4Addr,
    /// Host port (0: any free one).
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl PortMapping {
    /// `80/tcp`, as Docker keys ports.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.name())
    }
}

fn parse_port(s: &str, what: &str, spec: &str) -> Result<u16, String> {
    if s.contains('-') {
        return Err(format!(
            "invalid port specification {spec:?}: port ranges are not supported"
        ));
    }
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0 || what == "host")
        .ok_or_else(|| format!("invalid {what} port {s:?} in {spec:?}"))
}

/// Parses one `-p` value.
pub fn parse(spec: &str) -> Result<PortMapping, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some((_, p)) => {
            return Err(format!(
                "invalid protocol {p:?} in {spec:?}: use tcp or udp"
            ));
        }
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => (None, "", *c),
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => return Err(format!("invalid port specification {spec:?}")),
    };
    let host_ip = match ip {
        None | Some("") => Ipv4Addr::UNSPECIFIED,
        Some(a) => a
            .parse()
            .map_err(|_| format!("invalid IP address {a:?} in {spec:?} (IPv4 only)"))?,
    };
    let host_port = if host.is_empty() {
        0
    } else {
        parse_port(host, "host", spec)?
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port: parse_port(container, "container", spec)?,
        proto,
    })
}

/// Parses an image's ExposedPorts key (`80/tcp`, `53/udp`, `8080`) for `-P`.
pub fn parse_exposed(key: &str) -> Result<PortMapping, String> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(format!("image exposes {key:?}: unknown protocol {other}")),
    };
    Ok(PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 0,
        container_port: parse_port(port, "container", key)?,
        proto,
    })
}

/// A bound host socket, waiting for the guest's address.
pub enum Bound {
    /// TCP listener.
    Tcp(TcpListener),
    /// UDP socket.
    Udp(UdpSocket),
}

/// Binds every mapping (before the VM starts: a port in use fails the start) and fills in
/// the ports the kernel chose.
pub fn bind_all(maps: &mut [PortMapping]) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    for m in maps.iter_mut() {
        let addr = SocketAddrV4::new(m.host_ip, m.host_port);
        let in_use = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "Bind for {}:{} failed: port is already allocated",
                    m.host_ip, m.host_port
                )
            } else {
                format!(
                    "cannot publish {}:{}/{}: {e}",
                    m.host_ip,
                    m.host_port,
                    m.proto.name()
                )
            }
        };
        let bound = match m.proto {
            Proto::Tcp => Bound::Tcp(TcpListener::bind(addr).map_err(in_use)?),
            Proto::Udp => Bound::Udp(UdpSocket::bind(addr).map_err(in_use)?),
        };
        let local = match &bound {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(u) => u.local_addr(),
        }
        .map_err(|e| e.to_string())?;
        m.host_port = local.port();
        out.push(bound);
    }
    Ok(out)
}

/// Running proxies; dropping this stops them.
pub struct Proxies {
    stop: Arc<AtomicBool>,
    guest: Arc<AtomicU32>,
    fds: Vec<i32>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxies {
    /// New connections go to `guest` from now on (its first network changed).
    pub fn set_guest(&self, guest: Ipv4Addr) {
        self.guest.store(u32::from(guest), Ordering::SeqCst);
    }
}

/// The guest's address for container port `port`, as the proxies currently target it.
fn target(guest: &AtomicU32, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(guest.load(Ordering::SeqCst)),
        port,
    ))
}

/// Starts a proxy for each bound socket to `guest`'s matching port.
pub fn start(bound: Vec<Bound>, maps: &[PortMapping], guest: Ipv4Addr) -> Proxies {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = Arc::new(AtomicU32::new(u32::from(guest)));
    let mut fds = Vec::new();
    let mut threads = Vec::new();
    for (b, m) in bound.into_iter().zip(maps) {
        let (stop, guest, port) = (stop.clone(), addr.clone(), m.container_port);
        match b {
            Bound::Tcp(l) => {
                fds.push(l.as_raw_fd());
                threads.push(std::thread::spawn(move || {
                    tcp_accept_loop(l, &guest, port, &stop)
                }));
            }
            Bound::Udp(u) => {
                // No shutdown for UDP (std's recv_from panics on the empty address it
                // then gets): the loop polls the stop flag between read timeouts.
                let _ = u.set_read_timeout(Some(Duration::from_millis(200)));
                threads.push(std::thread::spawn(move || udp_loop(u, &guest, port, &stop)));
            }
        }
    }
    Proxies {
        stop,
        guest: addr,
        fds,
        threads,
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for fd in &self.fds {
            // SAFETY: shutdown(2) on a socket fd that its thread still owns (the thread is
            // joined below, so the fd is not closed yet); it wakes a blocked accept/recv.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_accept_loop(listener: TcpListener, guest: &AtomicU32, port: u16, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let target = target(guest, port);
        std::thread::spawn(move || {
            let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                // Nothing listens in the guest: the client sees the connection close.
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            pipe_both(client, upstream);
        });
    }
}

/// Copies both directions until each side has closed its half.
fn pipe_both(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy_half(a2, b2));
    copy_half(b, a);
    let _ = t.join();
}

fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// UDP: one upstream socket per client address, replies sent back from the published port.
fn udp_loop(sock: UdpSocket, guest: &AtomicU32, port: u16, stop: &AtomicBool) {
    let sock = Arc::new(sock);
    let mut clients: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
        std::collections::HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut current = target(guest, port);
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let target = target(guest, port);
        // Upstream sockets are connected to the old address: start over after a change.
        if clients.len() > 1024 || target != current {
            clients.clear();
            current = target;
        }
        let upstream = match clients.get(&from) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("0.0.0.0:0") else {
                    continue;
                };
                if u.connect(target).is_err() {
                    continue;
                }
                let _ = u.set_read_timeout(Some(Duration::from_secs(120)));
                let u = Arc::new(u);
                let (reply_to, back, up) = (from, sock.clone(), u.clone());
                std::thread::spawn(move || {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = up.recv(&mut b) {
                        let _ = back.send_to(&b[..n], reply_to);
                    }
                });
                clients.insert(from, u.clone());
                u
            }
        };
        let _ = upstream.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let m = parse("8080:80").unwrap();
        assert_eq!(
            (m.host_port, m.container_port, m.proto),
            (8080, 80, Proto::Tcp)
        );
        assert_eq!(m.host_ip, Ipv4Addr::UNSPECIFIED);
        let m = parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(m.host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(m.proto, Proto::Udp);
        assert_eq!(parse("80").unwrap().host_port, 0);
        assert_eq!(parse("127.0.0.1::80").unwrap().host_port, 0);
        assert_eq!(m.key(), "53/udp");
        for bad in [
            "",
            "x",
            "80/sctp",
            "1:2:3:4",
            "99999:80",
            "8080:0",
            "::1:80:80",
            "80-81:80-81",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_exposed("80/tcp").unwrap().container_port, 80);
        assert!(parse_exposed("80/sctp").is_err());
    }

    #[test]
    fn tcp_proxy_on_loopback() {
        // An "upstream" on loopback stands in for the guest.
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = up.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b.map(|c| c.to_ascii_uppercase())).unwrap();
        });
        let mut maps = vec![PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 0,
            container_port: port,
            proto: Proto::Tcp,
        }];
        let bound = bind_all(&mut maps).unwrap();
        assert_ne!(maps[0].host_port, 0);
        // The same port again is "already allocated".
        let mut again = maps.clone();
        let err = bind_all(&mut again).err().unwrap();
        assert!(err.contains("port is already allocated"), "{err}");
        let proxies = start(bound, &maps, Ipv4Addr::LOCALHOST);
        let mut c = TcpStream::connect(("127.0.0.1", maps[0].host_port)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut r = [0u8; 5];
        c.read_exact(&mut r).unwrap();
        assert_eq!(&r, b"HELLO");
        drop(proxies);
    }
}

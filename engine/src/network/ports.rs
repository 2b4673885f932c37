//! Published ports: `-p [IP:][HOST:]CONTAINER[/tcp|udp]` parsed, bound on the host before the
//! container starts, and proxied to the guest's address while its VM runs. A user-space proxy
//! reaches the guest from every host address, loopback included, which NAT rules alone do not.
//! One event-driven thread per container serves all its ports, with bounded connections,
//! buffers and idle times (`ports/proxy.rs`).

mod proxy;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

pub use proxy::Limits;

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
    /// Host address to listen on (`0.0.0.0`: all IPv4 addresses, and all IPv6 ones too when
    /// the host has IPv6, as Docker's; `::`: all IPv6 addresses).
    pub host_ip: IpAddr,
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

    /// The host end as Docker's `port` prints it: `0.0.0.0:8080`, `[::]:8080`.
    pub fn host_addr(&self) -> String {
        SocketAddr::new(self.host_ip, self.host_port).to_string()
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
    // An IPv6 host address is bracketed: `[::1]:8080:80`.
    let (bracketed, body) = match body.strip_prefix('[').and_then(|b| b.split_once("]:")) {
        Some((ip, rest)) => (Some(ip), rest),
        None => (None, body),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, container) = match (bracketed, parts.as_slice()) {
        (Some(ip), [h, c]) => (Some(ip), *h, *c),
        (Some(_), _) => return Err(format!("invalid port specification {spec:?}")),
        (None, parts) => match parts {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            _ => return Err(format!("invalid port specification {spec:?}")),
        },
    };
    let host_ip = match ip {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(a) => a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("invalid IP address {a:?} in {spec:?}"))?,
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
        host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
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

/// Backlog of a published TCP port's listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds every mapping (before the VM starts: a port in use fails the start) and fills in
/// the ports the kernel chose. A mapping on all IPv4 addresses gets its IPv6 twin on the
/// same port (`[::]`, IPv6 only) when the host has IPv6, as Docker's; the twin is added to
/// `maps` after it.
pub fn bind_all(maps: &mut Vec<PortMapping>) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    let given = std::mem::take(maps);
    let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    // A restart binds the record's ports again: their IPv6 twins are made anew below.
    let is_twin = |m: &PortMapping| {
        m.host_ip == any6
            && given.iter().any(|v4| {
                v4.host_ip == any4
                    && v4.host_port == m.host_port
                    && v4.container_port == m.container_port
                    && v4.proto == m.proto
            })
    };
    let kept: Vec<PortMapping> = given.iter().filter(|m| !is_twin(m)).cloned().collect();
    for mut m in kept {
        out.push(bind_one(&mut m)?);
        let twin = (m.host_ip == any4).then(|| PortMapping {
            host_ip: any6,
            ..m.clone()
        });
        all.push(m);
        if let Some(mut t) = twin {
            match bind_one(&mut t) {
                Ok(b) => {
                    out.push(b);
                    all.push(t);
                }
                // No IPv6 on this host: IPv4 alone, as Docker's.
                Err(BindError::NoFamily) => {}
                Err(BindError::Other(e)) => return Err(e),
            }
        }
    }
    *maps = all;
    Ok(out)
}

enum BindError {
    /// The host has no IPv6.
    NoFamily,
    Other(String),
}

impl From<BindError> for String {
    fn from(e: BindError) -> String {
        match e {
            BindError::NoFamily => "the host has no IPv6".into(),
            BindError::Other(s) => s,
        }
    }
}

/// A socket of `m`'s family and protocol bound to its address (IPv6 sockets only take IPv6,
/// so `[::]` and `0.0.0.0` can share a port).
fn bind_socket(m: &PortMapping) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
    };
    let family = match m.host_ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let kind = match m.proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if m.proto == Proto::Tcp {
        // As std's listeners: a port in TIME_WAIT can be bound again.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let addr = SockaddrStorage::from(SocketAddr::new(m.host_ip, m.host_port));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    Ok(fd)
}

fn bind_one(m: &mut PortMapping) -> Result<Bound, BindError> {
    let in_use = |e: std::io::Error| {
        if matches!(
            e.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
        ) && m.host_ip.is_ipv6()
        {
            return BindError::NoFamily;
        }
        BindError::Other(if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "Bind for {} failed: port is already allocated",
                m.host_addr()
            )
        } else {
            format!("cannot publish {}/{}: {e}", m.host_addr(), m.proto.name())
        })
    };
    let fd = bind_socket(m).map_err(in_use)?;
    let bound = match m.proto {
        Proto::Tcp => {
            // std listens with a backlog of 128: a burst of connections beyond it would
            // wait for SYN retransmits, seconds, although the proxy accepts quickly.
            let backlog = nix::sys::socket::Backlog::new(LISTEN_BACKLOG)
                .unwrap_or(nix::sys::socket::Backlog::MAXCONN);
            nix::sys::socket::listen(&fd, backlog).map_err(|e| in_use(std::io::Error::from(e)))?;
            Bound::Tcp(TcpListener::from(fd))
        }
        Proto::Udp => Bound::Udp(UdpSocket::from(fd)),
    };
    let local = match &bound {
        Bound::Tcp(l) => l.local_addr(),
        Bound::Udp(u) => u.local_addr(),
    }
    .map_err(|e| BindError::Other(e.to_string()))?;
    m.host_port = local.port();
    Ok(bound)
}

/// Running proxies (one thread for all of a container's published ports); dropping this
/// stops them and closes their sockets.
pub struct Proxies {
    guest: Arc<AtomicU32>,
    /// `None` when the loop could not start (already logged): the ports are then unserved.
    _handle: Option<proxy::Handle>,
}

impl Proxies {
    /// New connections go to `guest` from now on (its first network changed).
    pub fn set_guest(&self, guest: Ipv4Addr) {
        self.guest.store(u32::from(guest), Ordering::SeqCst);
    }
}

/// Starts proxying each bound socket to `guest`'s matching port.
pub fn start(bound: Vec<Bound>, maps: &[PortMapping], guest: Ipv4Addr) -> Proxies {
    start_with(bound, maps, guest, Limits::default())
}

/// [`start`] with other limits (tests use short timeouts and small caps).
pub fn start_with(
    bound: Vec<Bound>,
    maps: &[PortMapping],
    guest: Ipv4Addr,
    limits: Limits,
) -> Proxies {
    let addr = Arc::new(AtomicU32::new(u32::from(guest)));
    let ports = bound
        .into_iter()
        .zip(maps)
        .map(|(b, m)| {
            let l = match b {
                Bound::Tcp(l) => proxy::Listen::Tcp(l),
                Bound::Udp(u) => proxy::Listen::Udp(u),
            };
            (l, m.container_port)
        })
        .collect();
    let handle = match proxy::spawn(ports, addr.clone(), limits) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("cannot start the published ports' proxy: {e}");
            None
        }
    };
    Proxies {
        guest: addr,
        _handle: handle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

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
        let m = parse("[::1]:8080:80").unwrap();
        assert_eq!((m.host_ip, m.host_port), (Ipv6Addr::LOCALHOST.into(), 8080));
        assert_eq!(m.host_addr(), "[::1]:8080");
        assert!(parse("[::1]:80").is_err());
    }

    #[test]
    fn all_addresses_means_ipv6_too_and_a_rebind_keeps_one_twin() {
        let host_has_ipv6 =
            std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty());
        for proto in ["tcp", "udp"] {
            let mut maps = vec![parse(&format!("80/{proto}")).unwrap()];
            let bound = bind_all(&mut maps).unwrap();
            assert_eq!(bound.len(), maps.len());
            if !host_has_ipv6 {
                assert_eq!(maps.len(), 1);
                continue;
            }
            assert_eq!(maps.len(), 2, "{maps:?}");
            assert_eq!(maps[1].host_ip, Ipv6Addr::UNSPECIFIED);
            assert_eq!(maps[0].host_port, maps[1].host_port);
            assert_eq!(maps[1].host_addr(), format!("[::]:{}", maps[0].host_port));
            // As a restart does: the same ports again, once the old sockets are gone.
            drop(bound);
            let again = bind_all(&mut maps).unwrap();
            assert_eq!((again.len(), maps.len()), (2, 2), "{maps:?}");
        }
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
            host_ip: Ipv4Addr::LOCALHOST.into(),
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

    /// A TCP echo server on loopback standing in for the guest: one thread (mio), so the
    /// tests' thread counts are the proxy's. On EOF it echoes what is left, then shuts its
    /// write side and closes.
    struct Echo {
        port: u16,
        stop: Arc<std::sync::atomic::AtomicBool>,
        waker: Arc<mio::Waker>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.waker.wake();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn echo() -> Echo {
        use mio::{Interest, Token};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // A deep backlog: thousands of proxied connects arrive at once.
        nix::sys::socket::listen(&l, nix::sys::socket::Backlog::MAXCONN).unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let mut l = mio::net::TcpListener::from_std(l);
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut l, Token(0), Interest::READABLE)
            .unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(1)).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut events = mio::Events::with_capacity(1024);
            let mut conns: std::collections::HashMap<usize, (mio::net::TcpStream, Vec<u8>, bool)> =
                Default::default();
            let mut next = 2;
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::SeqCst) {
                if poll.poll(&mut events, None).is_err() {
                    continue;
                }
                for ev in events.iter() {
                    match ev.token().0 {
                        0 => {
                            while let Ok((mut c, _)) = l.accept() {
                                poll.registry()
                                    .register(
                                        &mut c,
                                        Token(next),
                                        Interest::READABLE | Interest::WRITABLE,
                                    )
                                    .unwrap();
                                conns.insert(next, (c, Vec::new(), false));
                                next += 1;
                            }
                        }
                        1 => {}
                        t => {
                            let Some((c, pending, eof)) = conns.get_mut(&t) else {
                                continue;
                            };
                            let mut dead = false;
                            loop {
                                if !pending.is_empty() {
                                    match c.write(pending) {
                                        Ok(n) => {
                                            pending.drain(..n);
                                            continue;
                                        }
                                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                            break;
                                        }
                                        Err(_) => {
                                            dead = true;
                                            break;
                                        }
                                    }
                                }
                                if *eof {
                                    let _ = c.shutdown(std::net::Shutdown::Write);
                                    dead = true;
                                    break;
                                }
                                match c.read(&mut buf) {
                                    Ok(0) => *eof = true,
                                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                    Err(_) => {
                                        dead = true;
                                        break;
                                    }
                                }
                            }
                            if dead {
                                conns.remove(&t);
                            }
                        }
                    }
                }
            }
        });
        Echo {
            port,
            stop,
            waker,
            thread: Some(thread),
        }
    }

    /// A proxy on a loopback port to `echo`'s port.
    fn proxy_to(port: u16, proto: Proto, limits: Limits) -> (Proxies, u16) {
        let mut maps = vec![PortMapping {
            host_ip: Ipv4Addr::LOCALHOST.into(),
            host_port: 0,
            container_port: port,
            proto,
        }];
        let bound = bind_all(&mut maps).unwrap();
        let p = start_with(bound, &maps, Ipv4Addr::LOCALHOST, limits);
        (p, maps[0].host_port)
    }

    fn status(field: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut r = vec![0u8; msg.len()];
        c.read_exact(&mut r)?;
        Ok(r)
    }

    /// Whether the proxy closed `c` (EOF or reset) within `wait`.
    fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
        c.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn thousands_of_connections_one_thread() {
        // Four descriptors per connection live in this process (client, proxy's two, echo's).
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let hard = if setrlimit(Resource::RLIMIT_NOFILE, 65536, hard.max(65536)).is_ok() {
            hard.max(65536)
        } else {
            hard
        };
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let wave = usize::try_from((soft.saturating_sub(1000)) / 4)
            .unwrap()
            .min(5000);
        assert!(wave >= 500, "RLIMIT_NOFILE {soft} is too low for this test");
        const TOTAL: usize = 5000;
        let echo = echo();
        let limits = Limits {
            max_tcp_conns: 8192,
            ..Limits::default()
        };
        let (proxies, port) = proxy_to(echo.port, Proto::Tcp, limits);
        // The proxy's thread is up once one connection went through.
        let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(roundtrip(&mut first, b"warm").unwrap(), b"warm");
        drop(first);
        let (threads0, rss0) = (status("Threads:"), status("VmRSS:"));
        let (mut threads_max, mut rss_max) = (threads0, rss0);
        let mut done = 0;
        let started = Instant::now();
        while done < TOTAL {
            let n = wave.min(TOTAL - done);
            let mut conns = Vec::with_capacity(n);
            for i in 0..n {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(&((done + i) as u32).to_be_bytes()).unwrap();
                conns.push(c);
            }
            threads_max = threads_max.max(status("Threads:"));
            eprintln!("wave of {n} connected after {:?}", started.elapsed());
            for (i, c) in conns.iter_mut().enumerate() {
                let mut r = [0u8; 4];
                c.read_exact(&mut r).unwrap();
                assert_eq!(u32::from_be_bytes(r) as usize, done + i);
            }
            threads_max = threads_max.max(status("Threads:"));
            rss_max = rss_max.max(status("VmRSS:"));
            done += n;
        }
        let elapsed = started.elapsed();
        // Still serving afterwards.
        let mut after = TcpStream::connect(("127.0.0.1", port)).unwrap();
        after
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(roundtrip(&mut after, b"after").unwrap(), b"after");
        eprintln!(
            "{TOTAL} connections ({wave} open at once) in {elapsed:?}: threads {threads0} -> max {threads_max}, \
             VmRSS {rss0} kB -> max {rss_max} kB"
        );
        // Other tests run in this process too: a few threads of slack, never one per
        // connection; memory well under one buffer per connection.
        assert!(threads_max <= threads0 + 8, "{threads0} -> {threads_max}");
        assert!(
            rss_max.saturating_sub(rss0) < 256 * 1024,
            "{rss0} -> {rss_max} kB"
        );
        drop(proxies);
    }

    #[test]
    fn connections_beyond_the_cap_are_closed() {
        let echo = echo();
        let limits = Limits {
            max_tcp_conns: 3,
            ..Limits::default()
        };
        let (_proxies, port) = proxy_to(echo.port, Proto::Tcp, limits);
        let mut open: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        for c in &mut open {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(roundtrip(c, b"in").unwrap(), b"in");
        }
        let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = extra.write_all(b"x");
        assert!(closed_within(&mut extra, Duration::from_secs(10)));
        // One closes: a new connection gets through again.
        drop(open.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if roundtrip(&mut c, b"again").is_ok_and(|r| r == b"again") {
                break;
            }
            assert!(Instant::now() < deadline, "no connection after one closed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The ones inside the cap still work.
        for c in &mut open {
            assert_eq!(roundtrip(c, b"still").unwrap(), b"still");
        }
    }

    #[test]
    fn idle_connections_are_closed_and_half_close_is_passed_on() {
        let echo = echo();
        let limits = Limits {
            tcp_idle: Duration::from_millis(200),
            ..Limits::default()
        };
        let (_proxies, port) = proxy_to(echo.port, Proto::Tcp, limits);
        let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(roundtrip(&mut idle, b"hi").unwrap(), b"hi");
        assert!(closed_within(&mut idle, Duration::from_secs(10)));
        // Half-close: the client's EOF reaches the guest, which still answers, then closes.
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"last words").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"last words");
    }

    #[test]
    fn a_guest_that_does_not_read_gets_bounded_buffering() {
        // The "guest" accepts and never reads: the client can only fill kernel buffers and
        // the proxy's one bounded buffer, then its writes block.
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_port = sink.local_addr().unwrap().port();
        let held = std::thread::spawn(move || sink.accept().map(|(s, _)| s));
        let (_proxies, port) = proxy_to(sink_port, Proto::Tcp, Limits::default());
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut sent = 0usize;
        while sent < (256 << 20) {
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        eprintln!(
            "a non-reading guest took {} KiB before the client blocked",
            sent >> 10
        );
        assert!(
            sent < (64 << 20),
            "{sent} bytes went into a guest that reads nothing"
        );
        drop(held);
    }

    #[test]
    fn udp_flows() {
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up_port = up.local_addr().unwrap().port();
        up.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let server = std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            let mut peers = std::collections::HashSet::new();
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, from)) = up.recv_from(&mut b) {
                    peers.insert(from);
                    let _ = up.send_to(&b[..n], from);
                }
            }
            peers.len()
        });
        let limits = Limits {
            udp_idle: Duration::from_millis(200),
            max_udp_flows: 2,
            ..Limits::default()
        };
        let (proxies, port) = proxy_to(up_port, Proto::Udp, limits);
        let ask = |c: &UdpSocket, msg: &[u8]| -> Option<Vec<u8>> {
            c.send_to(msg, ("127.0.0.1", port)).ok()?;
            let mut b = [0u8; 2048];
            let (n, from): (usize, SocketAddr) = c.recv_from(&mut b).ok()?;
            assert_eq!(from.port(), port, "the reply comes from the published port");
            Some(b[..n].to_vec())
        };
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                c
            })
            .collect();
        assert_eq!(ask(&clients[0], b"one").as_deref(), Some(&b"one"[..]));
        assert_eq!(ask(&clients[1], b"two").as_deref(), Some(&b"two"[..]));
        // A third peer while two flows are live: dropped (the cap is 2).
        assert_eq!(ask(&clients[2], b"three"), None);
        // Once the flows are idle they are forgotten, and the third peer gets through.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(ask(&clients[2], b"three").as_deref(), Some(&b"three"[..]));
        drop(proxies);
        stop.store(true, Ordering::SeqCst);
        // Three peers seen by the "guest": one upstream socket per flow.
        assert_eq!(server.join().unwrap(), 3);
    }

    /// Benchmark, run by `bench/bench.py proxy` (never a timed assertion): latency and
    /// throughput of 100 concurrent connections through the published-port proxy to a loopback
    /// echo server standing in for the guest; prints one JSON line. The proxy runs in a child
    /// process (this test again, in the proxy role) so that its threads and RSS are its own.
    /// std only, so that bench/proxy_bench.patch adds this same function to the
    /// thread-per-connection proxy of 711f1e7^. MVM_PROXY_BENCH_DIRECT=1 skips the proxy.
    #[test]
    #[ignore = "benchmark: bench/bench.py proxy"]
    fn proxy_bench() {
        use std::io::{BufRead as _, Read as _, Write as _};
        use std::net::{TcpListener, TcpStream};
        use std::sync::{Arc, Barrier, atomic::AtomicBool};
        use std::time::{Duration, Instant};
        const CONNS: usize = 100;
        const MSG: usize = 64;
        let knob = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        if let Ok(guest) = std::env::var("MVM_PROXY_BENCH_GUEST_PORT") {
            // The proxy role: serve until the parent closes our stdin.
            let mut maps = vec![PortMapping {
                host_ip: Ipv4Addr::LOCALHOST.into(),
                host_port: 0,
                container_port: guest.parse().unwrap(),
                proto: Proto::Tcp,
            }];
            let proxies = start(bind_all(&mut maps).unwrap(), &maps, Ipv4Addr::LOCALHOST);
            let mut out = std::io::stdout();
            writeln!(out, "PROXY_PORT {}", maps[0].host_port).unwrap();
            out.flush().unwrap();
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(proxies);
            return;
        }
        // The "guest": a request is b'e' (echo until EOF) or b'd' and a u64 (send that many
        // bytes, then close); a thread per connection, in this process, not the proxy's.
        let guest = TcpListener::bind("127.0.0.1:0").unwrap();
        let guest_port = guest.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in guest.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let _ = c.set_nodelay(true);
                    let mut head = [0u8; 9];
                    let mut buf = vec![0u8; 64 << 10];
                    if c.read_exact(&mut head).is_err() {
                        return;
                    }
                    if head[0] == b'd' {
                        let mut left = u64::from_be_bytes(head[1..].try_into().unwrap());
                        while left > 0 {
                            let n = left.min(buf.len() as u64) as usize;
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            left -= n as u64;
                        }
                    } else {
                        while let Ok(n @ 1..) = c.read(&mut buf) {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let direct = std::env::var("MVM_PROXY_BENCH_DIRECT").is_ok_and(|v| v == "1");
        let mut child = None;
        let port = if direct {
            guest_port
        } else {
            // Test names leave out the crate's name.
            let tests = module_path!().split_once("::").unwrap().1;
            let mut c = std::process::Command::new(std::env::current_exe().unwrap())
                .args([&format!("{tests}::proxy_bench"), "--exact", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env("MVM_PROXY_BENCH_GUEST_PORT", guest_port.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
            let mut line = String::new();
            let port = loop {
                line.clear();
                assert!(out.read_line(&mut line).unwrap() > 0, "the proxy exited");
                // After libtest's "test ... " on the same line.
                if let Some((_, p)) = line.trim().split_once("PROXY_PORT ") {
                    break p.parse().unwrap();
                }
            };
            child = Some((c, out));
            port
        };
        // The proxy process's threads and RSS, sampled through the run.
        let pid = child.as_ref().map(|(c, _)| c.id());
        let sample = move || -> Option<(u64, u64)> {
            let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
            let field = |f: &str| -> Option<u64> {
                let v = s.lines().find_map(|l| l.strip_prefix(f))?;
                v.split_whitespace().next()?.parse().ok()
            };
            Some((field("Threads:")?, field("VmRSS:")?))
        };
        let idle = sample();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    if let Some((t, r)) = sample() {
                        peak = (peak.0.max(t), peak.1.max(r));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            })
        };
        let connect = || {
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_nodelay(true).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            c
        };
        let request = |c: &mut TcpStream, mode: u8, arg: u64| {
            let mut head = [mode; 9];
            head[1..].copy_from_slice(&arg.to_be_bytes());
            c.write_all(&head).unwrap();
        };
        // `conns` clients at once, each: connect, `warm` (untimed), barrier, `run` (timed);
        // returns what each run gave and the time from the first start to the last end.
        let at_once = |conns: usize,
                       warm: &(dyn Fn(&mut TcpStream) + Sync),
                       run: &(dyn Fn(TcpStream) -> Vec<f64> + Sync)| {
            let go = Barrier::new(conns + 1);
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..conns)
                    .map(|_| {
                        s.spawn(|| {
                            let mut c = connect();
                            warm(&mut c);
                            go.wait();
                            // Each thread's own clock: this one may run long before main does.
                            let t = Instant::now();
                            let got = run(c);
                            (t, Instant::now(), got)
                        })
                    })
                    .collect();
                go.wait();
                let (mut first, mut last, mut all) = (None::<Instant>, None::<Instant>, vec![]);
                for h in hs {
                    let (t, end, got) = h.join().unwrap();
                    first = Some(first.map_or(t, |f| f.min(t)));
                    last = Some(last.map_or(end, |l| l.max(end)));
                    all.extend(got);
                }
                (all, (last.unwrap() - first.unwrap()).as_secs_f64())
            })
        };
        let rtt = |c: &mut TcpStream| {
            let (msg, mut back) = ([7u8; MSG], [0u8; MSG]);
            let t = Instant::now();
            c.write_all(&msg).unwrap();
            c.read_exact(&mut back).unwrap();
            t.elapsed().as_secs_f64()
        };
        let trips = knob("MVM_PROXY_BENCH_TRIPS", 300);
        let warm = |c: &mut TcpStream| {
            request(c, b'e', 0);
            for _ in 0..20 {
                rtt(c);
            }
        };
        let timed = |mut c: TcpStream| (0..trips).map(|_| rtt(&mut c)).collect::<Vec<_>>();
        let pct = |xs: &mut Vec<f64>, p: f64| {
            xs.sort_by(f64::total_cmp);
            xs[((xs.len() - 1) as f64 * p).round() as usize] * 1e6
        };
        let (mut lat1, _) = at_once(1, &warm, &|mut c| {
            (0..trips * 10).map(|_| rtt(&mut c)).collect()
        });
        let (mut lat100, lat100_wall) = at_once(CONNS, &warm, &timed);
        // Bulk: the guest sends, each client reads to the end.
        let bulk = |conns: usize, bytes: u64| {
            let (_, wall) = at_once(conns, &|_: &mut TcpStream| {}, &|mut c| {
                request(&mut c, b'd', bytes);
                let (mut buf, mut got) = (vec![0u8; 64 << 10], 0u64);
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    got += n as u64;
                }
                assert_eq!(got, bytes, "short transfer");
                vec![]
            });
            (conns as u64 * bytes) as f64 / wall / 1e6
        };
        let mib = 1u64 << 20;
        let tput1 = bulk(1, knob("MVM_PROXY_BENCH_MIB1", 512) as u64 * mib);
        let tput100 = bulk(CONNS, knob("MVM_PROXY_BENCH_MIB100", 16) as u64 * mib);
        stop.store(true, Ordering::SeqCst);
        let peak = sampler.join().unwrap();
        if let Some((mut c, mut out)) = child {
            drop(c.stdin.take());
            let _ = out.read_to_end(&mut Vec::new());
            let _ = c.wait();
        }
        let (idle_t, idle_r) = idle.unwrap_or((0, 0));
        println!(
            "\n{{\"lat1_p50_us\": {:.1}, \"lat1_p99_us\": {:.1}, \"lat100_p50_us\": {:.1}, \
             \"lat100_p90_us\": {:.1}, \"lat100_p99_us\": {:.1}, \"trips100_per_s\": {:.0}, \
             \"tput1_mbs\": {tput1:.1}, \"tput100_mbs\": {tput100:.1}, \"threads_idle\": {idle_t}, \
             \"threads_peak\": {}, \"rss_idle_kib\": {idle_r}, \"rss_peak_kib\": {}}}",
            pct(&mut lat1, 0.5),
            pct(&mut lat1, 0.99),
            pct(&mut lat100, 0.5),
            pct(&mut lat100, 0.9),
            pct(&mut lat100, 0.99),
            (CONNS * trips) as f64 / lat100_wall,
            peak.0,
            peak.1,
        );
    }
}

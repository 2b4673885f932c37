//! The DNS server containers use (their resolv.conf names their network's gateway): names of
//! containers on a user-defined network resolve to their addresses; anything else goes to the
//! host's resolvers. Every monitor with a container on a network serves that network's
//! gateway address:53 with SO_REUSEPORT, so the service lives exactly as long as some
//! container on the network does, with no daemon.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Header flags of a response: QR, and RD copied; RA set.
const QR: u16 = 0x8000;
const RA: u16 = 0x0080;
const RD: u16 = 0x0100;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// TTL of answers about containers: short, they come and go.
const TTL: u32 = 10;
/// How often the server thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A parsed question.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    /// Query ID.
    pub id: u16,
    /// Flags of the query.
    pub flags: u16,
    /// Lower-case name without the trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Where the question section ends in the packet.
    pub end: usize,
}

/// Parses a query with exactly one question; `None` for anything else (it gets no answer).
pub fn parse_query(p: &[u8]) -> Option<Question> {
    if p.len() < 12 {
        return None;
    }
    let u16at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?])) };
    let id = u16at(0)?;
    let flags = u16at(2)?;
    if flags & QR != 0 || u16at(4)? != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = usize::from(*p.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        // Compression pointers and extended labels have no place in a question.
        if len > 63 {
            return None;
        }
        total += len + 1;
        if total > 255 {
            return None;
        }
        let label = p.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16at(i)?;
    let qclass = u16at(i + 2)?;
    Some(Question {
        id,
        flags,
        name: labels.join("."),
        qtype,
        qclass,
        end: i + 4,
    })
}

/// A response to `q` (from packet `query`) with `rcode` and A records for `addrs`.
pub fn response(query: &[u8], q: &Question, rcode: u16, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end + addrs.len() * 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    let flags = QR | RA | (q.flags & RD) | (q.flags & 0x7800) | (rcode & 0xf);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&query[12..q.end]);
    for a in addrs {
        // Name: a pointer to the question's name at offset 12.
        out.extend_from_slice(&0xc00cu16.to_be_bytes());
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&a.octets());
    }
    out
}

/// What the server knows: the state root and the network it serves.
#[derive(Clone)]
pub struct Names {
    root: PathBuf,
    network_id: String,
}

impl Names {
    /// Names of running containers on network `network_id`, read from the state at each query.
    pub fn new(root: &Path, network_id: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            network_id: network_id.to_string(),
        }
    }

    /// What the asker at `from` can know of `name`, from one read of the container records:
    /// the addresses of running containers it names (name, alias or short ID) on this
    /// network and on every other network the asking container is on (as Docker's embedded
    /// DNS answers for all of a container's networks, whichever server it asks), and whether
    /// any container there, running or not, has that name.
    pub fn lookup(&self, from: Option<Ipv4Addr>, name: &str) -> Lookup {
        let mut out = Lookup::default();
        let all = crate::container::list(&self.root);
        let mut networks = vec![self.network_id.as_str()];
        if let Some(from) = from.map(|a| a.to_string())
            && let Some(asker) = all.iter().find(|c| {
                c.is_running()
                    && c.endpoints
                        .iter()
                        .any(|e| e.network_id == self.network_id && e.ip == from)
            })
        {
            networks.extend(asker.endpoints.iter().map(|e| e.network_id.as_str()));
        }
        for c in &all {
            let here = c
                .endpoints
                .iter()
                .filter(|e| networks.contains(&e.network_id.as_str()));
            let named = c.name.eq_ignore_ascii_case(name);
            for e in here {
                out.known |= named;
                if !c.is_running() {
                    continue;
                }
                let matches = named
                    || c.id.get(..12).is_some_and(|s| s == name)
                    || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name));
                if matches && let Ok(ip) = e.ip.parse() {
                    out.addrs.push(ip);
                }
            }
        }
        out
    }
}

/// The result of [`Names::lookup`].
#[derive(Debug, Default)]
pub struct Lookup {
    /// Addresses of running containers the name stands for.
    pub addrs: Vec<Ipv4Addr>,
    /// A container on the network has that name (a stopped one answers empty rather than
    /// going upstream).
    pub known: bool,
}

/// The host's resolvers, from its /etc/resolv.conf.
fn upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Asks the host's resolvers; `None` when none answers.
fn forward(query: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for s in servers {
        let bind: SocketAddr = if s.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        if sock.connect(s).is_err() || sock.send(query).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The answer to one query packet from `from`, or `None` to stay silent (not a query).
pub fn answer(query: &[u8], from: Option<Ipv4Addr>, names: &Names) -> Option<Vec<u8>> {
    let q = parse_query(query)?;
    if q.qclass != CLASS_IN {
        return Some(response(query, &q, RCODE_NOTIMP, &[]));
    }
    // Container names are single labels (Docker also answers `name.network`? no: plain names).
    let known = names.lookup(from, &q.name);
    let found = if q.name.contains('.') {
        Vec::new()
    } else {
        known.addrs
    };
    if !found.is_empty() || known.known {
        let addrs = if q.qtype == TYPE_A { found } else { Vec::new() };
        return Some(response(query, &q, 0, &addrs));
    }
    match forward(query, &upstreams()) {
        Some(reply) => Some(reply),
        None if q.name.contains('.') => Some(response(query, &q, RCODE_SERVFAIL, &[])),
        // A single label nobody knows: no such container, and no resolver to ask.
        None => Some(response(query, &q, RCODE_NXDOMAIN, &[])),
    }
}

/// A running DNS server; dropping it stops it.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The thread sees the flag within one read timeout. (A shutdown(2) would wake it at
        // once, but recvfrom then returns an empty address, which std's recv_from rejects
        // with a panic.)
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `names` on `addr`:53 (UDP), shared with other monitors through SO_REUSEPORT.
pub fn serve(addr: Ipv4Addr, names: Names) -> Result<Server, String> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("DNS socket: {e}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("DNS socket: {e}"))?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| format!("DNS socket: {e}"))?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(addr, 53)),
    )
    .map_err(|e| format!("cannot serve DNS on {addr}:53: {e}"))?;
    let sock = UdpSocket::from(fd);
    sock.set_read_timeout(Some(STOP_POLL))
        .map_err(|e| format!("DNS socket: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !flag.load(Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let asker = match from.ip() {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            };
            if let Some(reply) = answer(&buf[..n], asker, &names) {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    Ok(Server {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn parse_and_answer() {
        let p = query("Web", TYPE_A);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.name, "web");
        assert_eq!(q.id, 0x1234);
        let r = response(&p, &q, 0, &[Ipv4Addr::new(10, 1, 0, 2)]);
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]) & QR, QR);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[10, 1, 0, 2]);
        let nx = response(&p, &q, RCODE_NXDOMAIN, &[]);
        assert_eq!(nx[3] & 0xf, 3);
    }

    #[test]
    fn hostile_packets_are_ignored() {
        assert!(parse_query(&[]).is_none());
        assert!(parse_query(&[0; 11]).is_none());
        let mut p = query("a", TYPE_A);
        p[12] = 0xc0; // a compression pointer in a question
        assert!(parse_query(&p).is_none());
        let mut long = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..10 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        long.extend_from_slice(&[0, 1, 0, 1]);
        assert!(parse_query(&long).is_none());
        let mut truncated = query("abc", TYPE_A);
        truncated.truncate(truncated.len() - 3);
        assert!(parse_query(&truncated).is_none());
        // A response is not a query.
        let mut resp = query("a", TYPE_A);
        resp[2] |= 0x80;
        assert!(parse_query(&resp).is_none());
        // Arbitrary bytes never panic.
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..(seed % 64))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 8) as u8)
                .collect();
            let _ = parse_query(&bytes);
        }
    }
}

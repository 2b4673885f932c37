//! The DNS server containers use (their resolv.conf names their network's gateway): names of
//! containers on a user-defined network resolve to their addresses, for askers on that
//! network only; anything else goes to the host's resolvers, asynchronously and with a bound
//! on queries in flight (`dns/server.rs`), so a guest asking random names cannot stall
//! resolution for the others. Every monitor with a container on a network serves that network's
//! gateway address:53 with SO_REUSEPORT, so the service lives exactly as long as some
//! container on the network does, with no daemon.

mod server;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use super::Subnet;

/// Header flags of a response: QR, and RD copied; RA set.
const QR: u16 = 0x8000;
const RA: u16 = 0x0080;
const RD: u16 = 0x0100;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const RCODE_REFUSED: u16 = 5;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// TTL of answers about containers: short, they come and go.
const TTL: u32 = 10;

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
    /// Names of running containers on network `network_id`, read from the state.
    pub fn new(root: &Path, network_id: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            network_id: network_id.to_string(),
        }
    }

    /// The network's range: only askers inside it get answers.
    pub fn subnet(&self) -> Result<Subnet, String> {
        super::list(&self.root)
            .into_iter()
            .find(|n| n.id == self.network_id)
            .map(|n| n.subnet)
            .ok_or_else(|| format!("network {} not found", self.network_id))
    }

    /// The containers on this network, from one read of their records.
    pub fn table(&self) -> Table {
        let mut entries = Vec::new();
        for c in crate::container::list(&self.root) {
            let running = c.is_running();
            for e in c
                .endpoints
                .iter()
                .filter(|e| e.network_id == self.network_id)
            {
                entries.push(Entry {
                    name: c.name.to_ascii_lowercase(),
                    short_id: c.id.get(..12).unwrap_or_default().to_string(),
                    aliases: e.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
                    ip: e.ip,
                    running,
                });
            }
        }
        Table { entries }
    }
}

/// One container's endpoint on the served network.
#[derive(Debug)]
struct Entry {
    name: String,
    short_id: String,
    aliases: Vec<String>,
    ip: Ipv4Addr,
    running: bool,
}

/// A snapshot of the containers on one network. Only that network's: a guest learns nothing
/// about networks it is not on from its network's server (unlike Docker, which also answers
/// for a container's other networks; here the asker's address is all the server has, and a
/// guest can claim any address on its own network).
#[derive(Debug, Default)]
pub struct Table {
    entries: Vec<Entry>,
}

impl Table {
    /// What `name` (lower case) stands for on the network.
    pub fn lookup(&self, name: &str) -> Lookup {
        let mut out = Lookup::default();
        for e in &self.entries {
            let named = e.name == name;
            out.known |= named;
            if !e.running {
                continue;
            }
            if named || e.short_id == name || e.aliases.iter().any(|a| a == name) {
                out.addrs.push(e.ip);
            }
        }
        out
    }
}

/// The result of [`Table::lookup`].
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

/// What the server does with a query it parsed as `q`.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this answer.
    Reply(Vec<u8>),
    /// Ask the upstream resolvers.
    Forward,
}

/// The server's decision on `query` (parsed as `q`) from `from`, knowing `table`.
pub fn decide(
    query: &[u8],
    q: &Question,
    from: Option<Ipv4Addr>,
    subnet: &Subnet,
    table: &Table,
) -> Action {
    // Only the network's own guests use its server: nothing about its containers, and no
    // free recursion, for anyone else. (The answer is no larger than the query: no use for
    // reflection.)
    if !from.is_some_and(|a| subnet.contains_host(a)) {
        return Action::Reply(response(query, q, RCODE_REFUSED, &[]));
    }
    if q.qclass != CLASS_IN {
        return Action::Reply(response(query, q, RCODE_NOTIMP, &[]));
    }
    let known = table.lookup(&q.name);
    // Container names are single labels (Docker does not answer `name.network` either).
    let found = if q.name.contains('.') {
        Vec::new()
    } else {
        known.addrs
    };
    if !found.is_empty() || known.known {
        let addrs = if q.qtype == TYPE_A { found } else { Vec::new() };
        return Action::Reply(response(query, q, 0, &addrs));
    }
    Action::Forward
}

/// The answer when no upstream answered: SERVFAIL, or NXDOMAIN for a single label (no such
/// container, and no resolver to ask).
pub fn failure(query: &[u8], q: &Question) -> Vec<u8> {
    let rcode = if q.name.contains('.') {
        RCODE_SERVFAIL
    } else {
        RCODE_NXDOMAIN
    };
    response(query, q, rcode, &[])
}

/// A running DNS server; dropping it stops it.
pub type Server = server::Server;

/// Serves `names` on `addr`:53 (UDP), shared with other monitors through SO_REUSEPORT,
/// forwarding other names to the host's resolvers.
pub fn serve(addr: Ipv4Addr, names: Names) -> Result<Server, String> {
    let config = server::Config {
        listen: SocketAddrV4::new(addr, 53),
        subnet: names.subnet()?,
        upstreams: upstreams(),
        max_in_flight: server::MAX_IN_FLIGHT,
        timeout: server::FORWARD_TIMEOUT,
    };
    server::serve(config, names)
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

//! The DNS server's event loop: one thread, one listening socket, one connected socket per
//! upstream resolver. It never waits for an upstream: a forwarded query goes into a table
//! under a fresh random ID (an off-path spoofer must guess it and the source port) and is
//! answered when the upstream's reply comes, or with a failure at its deadline. The table is
//! bounded; when it is full, new forwarded queries get SERVFAIL at once, so a guest flooding
//! random names gets failures while container names keep being answered.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Action, Names, Question, Table, decide, failure, parse_query, response};
use crate::network::Subnet;

/// Forwarded queries in flight per server.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long an upstream has to answer before the next one is asked (or the query fails).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// How stale the snapshot of the network's containers may be: a flood of queries reads the
/// state at most this often, and a container started now resolves this much later at worst.
const TABLE_MAX_AGE: Duration = Duration::from_millis(100);
/// Packets one socket gets handled before the others have their turn.
const BUDGET: usize = 256;
/// Receive buffer asked for the listening socket (the kernel doubles it): a burst of a few
/// thousand queries queues instead of being dropped. Memory is used only while queued.
const RCVBUF: usize = 4 << 20;
/// Largest reply relayed from an upstream.
const MAX_REPLY: usize = 65535;

const LISTEN: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_UPSTREAM: usize = 2;

/// What a server serves and where it forwards.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it listens.
    pub listen: SocketAddrV4,
    /// Its network: only askers inside get answers.
    pub subnet: Subnet,
    /// Resolvers for other names, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// See [`MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`FORWARD_TIMEOUT`].
    pub timeout: Duration,
}

/// A running DNS server; dropping it stops it at once.
pub struct Server {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    local: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (the port the kernel chose for port 0).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            tracing::warn!("cannot wake the DNS server to stop it: {e}");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The listening socket: SO_REUSEPORT, so every monitor on the network can serve its gateway.
fn listen_socket(addr: SocketAddrV4) -> Result<std::net::UdpSocket, String> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("DNS socket: {e}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("DNS socket: {e}"))?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| format!("DNS socket: {e}"))?;
    // Best effort: the default still works, it only drops sooner under a burst. Beyond
    // net.core.rmem_max only with CAP_NET_ADMIN, which a monitor that makes TAPs has.
    if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
    }
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr))
        .map_err(|e| format!("cannot serve DNS on {}: {e}", addr.ip()))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Starts a server with `config`.
pub fn serve(config: Config, names: Names) -> Result<Server, String> {
    let sock = listen_socket(config.listen)?;
    let local = sock.local_addr().map_err(|e| format!("DNS socket: {e}"))?;
    let mut sock = UdpSocket::from_std(sock);
    let poll = Poll::new().map_err(|e| format!("DNS server: {e}"))?;
    poll.registry()
        .register(&mut sock, LISTEN, Interest::READABLE)
        .map_err(|e| format!("DNS server: {e}"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("DNS: {e}"))?);
    let mut upstreams = Vec::new();
    for (i, addr) in config.upstreams.iter().enumerate() {
        let any = match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let up = UdpSocket::bind(SocketAddr::new(any, 0)).and_then(|mut u| {
            u.connect(*addr)?;
            poll.registry()
                .register(&mut u, Token(FIRST_UPSTREAM + i), Interest::READABLE)?;
            Ok(u)
        });
        match up {
            Ok(u) => upstreams.push(Some(u)),
            Err(e) => {
                tracing::debug!("DNS: cannot use resolver {addr}: {e}");
                upstreams.push(None);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let lp = Loop {
        poll,
        sock,
        upstreams,
        names,
        table: Table::default(),
        table_at: None,
        pending: HashMap::new(),
        expiry: VecDeque::new(),
        ids: std::collections::hash_map::RandomState::new(),
        counter: 0,
        refused: 0,
        config,
        stop: stop.clone(),
        buf: vec![0u8; MAX_REPLY],
    };
    let thread = std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || lp.run())
        .map_err(|e| format!("cannot start the DNS server: {e}"))?;
    Ok(Server {
        stop,
        waker,
        local,
        thread: Some(thread),
    })
}

/// A forwarded query waiting for its upstream's reply.
struct Pending {
    /// Tells this entry from an older one under the same ID in the expiry queue.
    seq: u64,
    client: SocketAddr,
    client_id: u16,
    /// The query as sent upstream (under the upstream ID).
    query: Vec<u8>,
    /// End of its question section.
    question_end: usize,
    /// Index of the upstream asked.
    upstream: usize,
}

struct Loop {
    poll: Poll,
    sock: UdpSocket,
    /// `None`: that resolver's socket could not be made.
    upstreams: Vec<Option<UdpSocket>>,
    names: Names,
    table: Table,
    table_at: Option<Instant>,
    /// By upstream ID.
    pending: HashMap<u16, Pending>,
    /// (deadline, upstream ID, seq) in deadline order: every query gets the same timeout.
    expiry: VecDeque<(Instant, u16, u64)>,
    /// Keyed hasher: hashing a counter gives IDs nobody off the host can predict.
    ids: std::collections::hash_map::RandomState,
    counter: u64,
    /// Forwards refused at the bound in the current burst (logged at its start and end).
    refused: u64,
    config: Config,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // Sockets with packets left after their budget: their readiness will not be reported
        // again (edge-triggered), so they are served next round without waiting.
        let mut carried: Vec<Token> = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = if carried.is_empty() {
                self.expiry
                    .front()
                    .map(|(t, _, _)| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!("DNS server: poll failed: {e}; it stops");
                    return;
                }
                continue;
            }
            let mut tokens: Vec<Token> = std::mem::take(&mut carried);
            for ev in events.iter() {
                if !tokens.contains(&ev.token()) {
                    tokens.push(ev.token());
                }
            }
            for t in tokens {
                let more = match t {
                    LISTEN => self.serve_clients(),
                    WAKER => false,
                    Token(i) => self.relay_upstream(i - FIRST_UPSTREAM),
                };
                if more {
                    carried.push(t);
                }
            }
            self.expire(Instant::now());
        }
    }

    fn table(&mut self) -> &Table {
        let now = Instant::now();
        if self
            .table_at
            .is_none_or(|t| now.duration_since(t) >= TABLE_MAX_AGE)
        {
            self.table = self.names.table();
            self.table_at = Some(now);
        }
        &self.table
    }

    fn reply(&self, packet: &[u8], to: SocketAddr) {
        // A full send buffer drops the reply, as the network would: the client retries.
        let _ = self.sock.send_to(packet, to);
    }

    /// Queries from clients; true when the budget ran out with more to read.
    fn serve_clients(&mut self) -> bool {
        for _ in 0..BUDGET {
            let (n, from) = match self.sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                // ICMP errors of earlier replies and the like: the next packet is fine.
                Err(_) => continue,
            };
            let query = self.buf[..n].to_vec();
            let Some(q) = parse_query(&query) else {
                continue;
            };
            let asker = match from.ip() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            };
            let subnet = self.config.subnet;
            match decide(&query, &q, asker, &subnet, self.table()) {
                Action::Reply(r) => self.reply(&r, from),
                Action::Forward => self.forward(query, &q, from),
            }
        }
        true
    }

    fn fresh_id(&mut self) -> u16 {
        loop {
            self.counter += 1;
            let id = self.ids.hash_one(self.counter) as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn forward(&mut self, mut query: Vec<u8>, q: &Question, from: SocketAddr) {
        if self.pending.len() >= self.config.max_in_flight {
            self.refused += 1;
            if self.refused == 1 {
                tracing::warn!(
                    "DNS server on {}: {} queries in flight to the resolvers, answering SERVFAIL to more",
                    self.config.listen.ip(),
                    self.pending.len()
                );
            }
            self.reply(&response(&query, q, super::RCODE_SERVFAIL, &[]), from);
            return;
        }
        let id = self.fresh_id();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let mut p = Pending {
            seq: self.counter,
            client: from,
            client_id: q.id,
            query,
            question_end: q.end,
            upstream: 0,
        };
        if self.send_from(&mut p, 0) {
            self.expiry
                .push_back((Instant::now() + self.config.timeout, id, p.seq));
            self.pending.insert(id, p);
        } else {
            self.fail(&p);
        }
    }

    /// Sends `p` to the first upstream from index `first` that takes it; false if none does.
    fn send_from(&self, p: &mut Pending, first: usize) -> bool {
        for i in first..self.upstreams.len() {
            if let Some(u) = &self.upstreams[i]
                && u.send(&p.query).is_ok()
            {
                p.upstream = i;
                return true;
            }
        }
        false
    }

    /// Answers the client of `p` with a failure under its own ID.
    fn fail(&self, p: &Pending) {
        let mut query = p.query.clone();
        query[..2].copy_from_slice(&p.client_id.to_be_bytes());
        if let Some(q) = parse_query(&query) {
            self.reply(&failure(&query, &q), p.client);
        }
    }

    fn done(&mut self, id: u16) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if self.refused > 0 && self.pending.len() <= self.config.max_in_flight / 2 {
            tracing::warn!(
                "DNS server on {}: {} queries got SERVFAIL at the limit of queries in flight",
                self.config.listen.ip(),
                self.refused
            );
            self.refused = 0;
        }
        Some(p)
    }

    /// Replies from upstream `i`; true when the budget ran out with more to read.
    fn relay_upstream(&mut self, i: usize) -> bool {
        for _ in 0..BUDGET {
            let Some(Some(u)) = self.upstreams.get(i) else {
                return false;
            };
            let n = match u.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    // Nothing listens there (an ICMP error of one of our sends, which one is
                    // not known): what waits on it moves on now rather than at its deadline.
                    self.fail_over(i);
                    continue;
                }
                Err(_) => continue,
            };
            let reply = &self.buf[..n];
            if n < 12 || reply[2] & 0x80 == 0 {
                continue;
            }
            let id = u16::from_be_bytes([reply[0], reply[1]]);
            // The reply must be to the question asked, from the resolver asked.
            let matches = self.pending.get(&id).is_some_and(|p| {
                p.upstream == i
                    && reply[4..6] == p.query[4..6]
                    && reply
                        .get(12..p.question_end)
                        .is_some_and(|qs| qs.eq_ignore_ascii_case(&p.query[12..p.question_end]))
            });
            if !matches {
                continue;
            }
            let mut reply = reply.to_vec();
            if let Some(p) = self.done(id) {
                reply[..2].copy_from_slice(&p.client_id.to_be_bytes());
                self.reply(&reply, p.client);
            }
        }
        true
    }

    /// Moves every query waiting on upstream `i` to the next one, or fails it.
    fn fail_over(&mut self, i: usize) {
        let ids: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.upstream == i)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.retry_or_fail(id, Instant::now());
        }
    }

    fn retry_or_fail(&mut self, id: u16, now: Instant) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        let next = p.upstream + 1;
        if self.send_from(&mut p, next) {
            self.counter += 1;
            p.seq = self.counter;
            self.expiry
                .push_back((now + self.config.timeout, id, p.seq));
            self.pending.insert(id, p);
        } else {
            self.pending.insert(id, p);
            if let Some(p) = self.done(id) {
                self.fail(&p);
            }
        }
    }

    /// Queries past their deadline go to the next upstream, or fail.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id, seq)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.seq == seq) {
                self.retry_or_fail(id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdp;

    const NET: &str = "127.77.0.0/16";

    /// A state root with network `n` on 127.77.0.0/16, a running container `web` (alias
    /// `www`) on it at 127.77.0.9, and a running container `other` on another network.
    struct State {
        root: PathBuf,
        names: Names,
        subnet: Subnet,
    }

    use std::path::PathBuf;

    impl Drop for State {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn container(
        root: &std::path::Path,
        name: &str,
        net: &crate::network::NetworkRecord,
        ip: &str,
    ) {
        let id = crate::container::new_id().unwrap();
        let mut rec = crate::container::ContainerRecord::for_tests(&id, name);
        rec.state.status = crate::container::Status::Running;
        rec.state.pid = Some(std::process::id());
        let ip: Ipv4Addr = ip.parse().unwrap();
        rec.endpoints = vec![crate::network::Endpoint {
            network: net.name.clone(),
            network_id: net.id.clone(),
            ip,
            prefix: 16,
            gateway: net.gateway,
            mac: crate::network::mac_for(ip),
            tap: String::new(),
            bridge: net.bridge.clone(),
            aliases: if name == "web" {
                vec!["www".into()]
            } else {
                vec![]
            },
        }];
        let dir = root.join("containers").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
    }

    fn state(tag: &str) -> State {
        let root = std::env::temp_dir().join(format!("mvm-dns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let n =
            crate::network::create_locked(&root, "n", Some(NET), None, Default::default()).unwrap();
        let m = crate::network::create_locked(
            &root,
            "m",
            Some("127.78.0.0/16"),
            None,
            Default::default(),
        )
        .unwrap();
        container(&root, "web", &n, "127.77.0.9");
        container(&root, "other", &m, "127.78.0.9");
        let names = Names::new(&root, &n.id);
        let subnet = names.subnet().unwrap();
        assert_eq!(subnet.to_string(), NET);
        State {
            root,
            names,
            subnet,
        }
    }

    fn start(st: &State, upstreams: Vec<SocketAddr>, max: usize, timeout: Duration) -> Server {
        serve(
            Config {
                listen: SocketAddrV4::new(Ipv4Addr::new(127, 77, 0, 1), 0),
                subnet: st.subnet,
                upstreams,
                max_in_flight: max,
                timeout,
            },
            st.names.clone(),
        )
        .unwrap()
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut p = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p[..2].copy_from_slice(&id.to_be_bytes());
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&[0, 1, 0, 1]);
        p
    }

    fn client(ip: &str) -> StdUdp {
        let c = StdUdp::bind((ip, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    /// (ID, rcode, addresses of the A records) of a reply.
    fn read_reply(c: &StdUdp) -> Option<(u16, u8, Vec<Ipv4Addr>)> {
        let mut b = [0u8; 1500];
        let n = c.recv(&mut b).ok()?;
        let r = &b[..n];
        let q = parse_query(&{
            let mut x = r.to_vec();
            x[2] &= 0x7f;
            x
        })?;
        let ancount = u16::from_be_bytes([r[6], r[7]]);
        let mut addrs = Vec::new();
        let mut i = q.end;
        for _ in 0..ancount {
            // Pointer name (2), type, class, TTL, length (10), then the data.
            let len = usize::from(u16::from_be_bytes([r[i + 10], r[i + 11]]));
            if len == 4 {
                addrs.push(Ipv4Addr::new(r[i + 12], r[i + 13], r[i + 14], r[i + 15]));
            }
            i += 12 + len;
        }
        Some((q.id, r[3] & 0xf, addrs))
    }

    #[test]
    fn a_flood_of_foreign_names_does_not_delay_container_names() {
        let st = state("flood");
        // An upstream that never answers: every forward waits for its deadline.
        let silent = StdUdp::bind("127.0.0.1:0").unwrap();
        let server = start(
            &st,
            vec![silent.local_addr().unwrap()],
            MAX_IN_FLIGHT,
            FORWARD_TIMEOUT,
        );
        let to = server.local_addr();
        let flooder = StdUdp::bind("127.77.0.5:0").unwrap();
        let sending = Arc::new(AtomicBool::new(true));
        let still = sending.clone();
        let flood = std::thread::spawn(move || {
            let seed = std::collections::hash_map::RandomState::new();
            for i in 0u64..10_000 {
                let name = format!("r{:x}.example", seed.hash_one(i));
                let _ = flooder.send_to(&query(i as u16, &name), to);
            }
            still.store(false, Ordering::SeqCst);
            // What came back: SERVFAIL for those beyond the bound (as many as this socket's
            // buffer kept).
            flooder
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut servfails = 0;
            let mut b = [0u8; 512];
            while let Ok(n) = flooder.recv(&mut b) {
                servfails += usize::from(n >= 4 && b[3] & 0xf == 2);
            }
            servfails
        });
        let asker = client("127.77.0.6");
        // A stub resolver's retransmission, in case the kernel dropped a query from the full
        // queue (UDP): counted and reported.
        asker
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let web = Ipv4Addr::new(127, 77, 0, 9);
        let mut max = Duration::ZERO;
        let (mut asked, mut during, mut resent) = (0u16, 0, 0);
        while sending.load(Ordering::SeqCst) || asked < 20 {
            asked += 1;
            let flooding = sending.load(Ordering::SeqCst);
            let name = if asked % 2 == 0 { "web" } else { "WWW" };
            let t = Instant::now();
            let mut r = None;
            for attempt in 0..4 {
                resent += usize::from(attempt > 0);
                asker.send_to(&query(asked, name), to).unwrap();
                r = read_reply(&asker);
                if r.is_some() {
                    break;
                }
            }
            max = max.max(t.elapsed());
            assert_eq!(r, Some((asked, 0, vec![web])), "query {asked} for {name}");
            during += usize::from(flooding);
        }
        let servfails = flood.join().unwrap();
        eprintln!(
            "{asked} container-name queries ({during} during a flood of 10000 foreign names), \
             all answered ({resent} resent): max latency {max:?}; the flooder got {servfails} \
             SERVFAILs"
        );
        assert!(servfails > 0);
        assert!(max < Duration::from_secs(1), "{max:?}");
        drop(server);
    }

    #[test]
    fn only_the_networks_own_guests_get_its_names() {
        let st = state("scope");
        let silent = StdUdp::bind("127.0.0.1:0").unwrap();
        let server = start(
            &st,
            vec![silent.local_addr().unwrap()],
            8,
            Duration::from_millis(200),
        );
        let to = server.local_addr();
        // From outside the network's range: refused, no addresses, and nothing forwarded.
        let outsider = client("127.78.0.5");
        outsider.send_to(&query(7, "web"), to).unwrap();
        assert_eq!(read_reply(&outsider), Some((7, 5, vec![])));
        outsider.send_to(&query(8, "example.com"), to).unwrap();
        assert_eq!(read_reply(&outsider), Some((8, 5, vec![])));
        // From inside: its network's containers; another network's are unknown here (the
        // silent upstream is asked, and times out: NXDOMAIN for a single label).
        let insider = client("127.77.0.5");
        insider.send_to(&query(9, "web"), to).unwrap();
        assert_eq!(
            read_reply(&insider),
            Some((9, 0, vec![Ipv4Addr::new(127, 77, 0, 9)]))
        );
        insider.send_to(&query(10, "other"), to).unwrap();
        assert_eq!(read_reply(&insider), Some((10, 3, vec![])));
        let mut b = [0u8; 512];
        silent
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let n = silent.recv(&mut b).unwrap();
        assert!(parse_query(&b[..n]).is_some_and(|q| q.name == "other"));
    }

    #[test]
    fn the_bound_on_queries_in_flight_gives_servfail_at_once() {
        let st = state("bound");
        let silent = StdUdp::bind("127.0.0.1:0").unwrap();
        let server = start(
            &st,
            vec![silent.local_addr().unwrap()],
            4,
            Duration::from_secs(30),
        );
        let to = server.local_addr();
        let c = client("127.77.0.5");
        for id in 0..4 {
            c.send_to(&query(id, &format!("n{id}.example")), to)
                .unwrap();
        }
        // The four wait on the upstream; the fifth fails now, under its own ID.
        let t = Instant::now();
        c.send_to(&query(99, "fifth.example"), to).unwrap();
        assert_eq!(read_reply(&c), Some((99, 2, vec![])));
        eprintln!("SERVFAIL at the bound after {:?}", t.elapsed());
        // Container names are still answered.
        c.send_to(&query(100, "web"), to).unwrap();
        assert_eq!(
            read_reply(&c),
            Some((100, 0, vec![Ipv4Addr::new(127, 77, 0, 9)]))
        );
    }

    #[test]
    fn upstream_answers_are_relayed_under_the_clients_id() {
        let st = state("relay");
        let up = StdUdp::bind("127.0.0.1:0").unwrap();
        up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let up_addr = up.local_addr().unwrap();
        let upstream = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for _ in 0..3 {
                let mut b = [0u8; 512];
                let Ok((n, from)) = up.recv_from(&mut b) else {
                    break;
                };
                let q = parse_query(&b[..n]).unwrap();
                ids.push(q.id);
                // A reply under a wrong ID first (a spoofer's guess): it must be ignored.
                let mut wrong = response(&b[..n], &q, 0, &[Ipv4Addr::new(192, 0, 2, 66)]);
                wrong[..2].copy_from_slice(&q.id.wrapping_add(1).to_be_bytes());
                up.send_to(&wrong, from).unwrap();
                let right = response(&b[..n], &q, 0, &[Ipv4Addr::new(192, 0, 2, 7)]);
                up.send_to(&right, from).unwrap();
            }
            ids
        });
        let server = start(&st, vec![up_addr], 8, Duration::from_secs(5));
        let to = server.local_addr();
        let c = client("127.77.0.5");
        for id in [0xbeef, 0xbeef, 0x0102] {
            c.send_to(&query(id, "example.test"), to).unwrap();
            assert_eq!(
                read_reply(&c),
                Some((id, 0, vec![Ipv4Addr::new(192, 0, 2, 7)]))
            );
        }
        let ids = upstream.join().unwrap();
        assert_eq!(ids.len(), 3);
        // Fresh IDs upstream, not the client's.
        assert!(ids.iter().any(|i| *i != 0xbeef && *i != 0x0102), "{ids:?}");
        assert_ne!(ids[0], ids[1], "two queries, the same upstream ID");
    }
}

//! The event loop behind a container's published ports: one thread serves every port of the
//! container, whatever the number of connections and UDP peers, since the guest (and anyone
//! who can reach a published port) is untrusted and must not be able to make the monitor
//! spawn threads, allocate without bound, or hold resources forever.
//!
//! Bounds: at most [`Limits::max_tcp_conns`] connections per TCP port (more are accepted and
//! closed at once), at most [`Limits::max_udp_flows`] peers per UDP port (datagrams of more
//! are dropped), an idle timeout for each, and at most [`Limits::buf`] bytes buffered in each
//! direction of a connection (a side whose buffer is full is not read: backpressure). A
//! resource error (EMFILE on accept, ENOBUFS, ...) is logged once per burst and backed off
//! from; nothing here panics on I/O.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

/// Connections per published TCP port at once.
pub const MAX_TCP_CONNS: usize = 1024;
/// A TCP connection with no traffic either way for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(600);
/// Peers per published UDP port at once.
pub const MAX_UDP_FLOWS: usize = 1024;
/// A UDP peer's flow with no datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Bytes buffered per direction of a TCP connection.
pub const BUF: usize = 64 << 10;
/// How long the guest has to accept a proxied connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause of accepting after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Units of work (accepts, datagrams, read/write rounds) one socket gets before the others
/// have their turn: a busy peer cannot starve the rest of the loop.
const BUDGET: usize = 64;
/// Largest UDP datagram.
const DATAGRAM: usize = 65536;

const WAKER: Token = Token(0);
/// Tokens below this are the waker and the ports; above, two per slot (client, upstream).
const FIRST_SLOT_TOKEN: usize = 1 << 20;

/// What a container's proxies allow; [`Limits::default`] is what `mvm` uses.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// See [`MAX_TCP_CONNS`].
    pub max_tcp_conns: usize,
    /// See [`TCP_IDLE`].
    pub tcp_idle: Duration,
    /// See [`MAX_UDP_FLOWS`].
    pub max_udp_flows: usize,
    /// See [`UDP_IDLE`].
    pub udp_idle: Duration,
    /// See [`BUF`].
    pub buf: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tcp_conns: MAX_TCP_CONNS,
            tcp_idle: TCP_IDLE,
            max_udp_flows: MAX_UDP_FLOWS,
            udp_idle: UDP_IDLE,
            buf: BUF,
        }
    }
}

/// A host socket of a published port, ready for the loop.
pub enum Listen {
    /// TCP listener (non-blocking).
    Tcp(std::net::TcpListener),
    /// UDP socket (non-blocking).
    Udp(std::net::UdpSocket),
}

/// The running loop's handle: dropping it stops the loop and closes every socket.
pub struct Handle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            tracing::warn!("cannot wake the port proxy to stop it: {e}");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the loop for `ports` (socket, container port), proxying to `guest`'s address.
pub fn spawn(
    ports: Vec<(Listen, u16)>,
    guest: Arc<AtomicU32>,
    limits: Limits,
) -> std::io::Result<Handle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut lp = Loop {
        poll,
        ports: Vec::new(),
        slots: Vec::new(),
        free: Vec::new(),
        ready: VecDeque::new(),
        guest,
        limits,
        stop: stop.clone(),
        scratch: vec![0u8; limits.buf.max(DATAGRAM)],
        resource_errors: 0,
    };
    for (i, (l, container_port)) in ports.into_iter().enumerate() {
        let token = Token(1 + i);
        let kind = match l {
            Listen::Tcp(l) => {
                l.set_nonblocking(true)?;
                let mut l = TcpListener::from_std(l);
                lp.poll
                    .registry()
                    .register(&mut l, token, Interest::READABLE)?;
                PortKind::Tcp(l)
            }
            Listen::Udp(u) => {
                u.set_nonblocking(true)?;
                let mut u = UdpSocket::from_std(u);
                lp.poll
                    .registry()
                    .register(&mut u, token, Interest::READABLE)?;
                PortKind::Udp {
                    sock: u,
                    flows: HashMap::new(),
                    target: None,
                }
            }
        };
        lp.ports.push(Port {
            kind,
            container_port,
            active: 0,
            refused: 0,
            paused_until: None,
        });
    }
    let thread = std::thread::Builder::new()
        .name("port-proxy".into())
        .spawn(move || lp.run())?;
    Ok(Handle {
        stop,
        waker,
        thread: Some(thread),
    })
}

enum PortKind {
    Tcp(TcpListener),
    Udp {
        sock: UdpSocket,
        /// Peer address to its flow's slot.
        flows: HashMap<SocketAddr, usize>,
        /// The guest address the flows' sockets are connected to.
        target: Option<SocketAddr>,
    },
}

struct Port {
    kind: PortKind,
    container_port: u16,
    /// Open connections or flows.
    active: usize,
    /// Refused at the limit in the current burst (logged at its start and end).
    refused: u64,
    /// Accepting is paused after a resource error until then.
    paused_until: Option<Instant>,
}

/// One direction of a connection: bytes read from its source not yet written to its sink.
#[derive(Default)]
struct Half {
    pending: Vec<u8>,
    off: usize,
    /// The source sent EOF.
    eof: bool,
    /// The sink's write side is shut down (after EOF, once `pending` is written).
    shut: bool,
}

struct Conn {
    port: usize,
    client: TcpStream,
    upstream: TcpStream,
    connected: bool,
    opened: Instant,
    last: Instant,
    /// Client to guest.
    up: Half,
    /// Guest to client.
    down: Half,
}

struct Flow {
    port: usize,
    peer: SocketAddr,
    sock: UdpSocket,
    last: Instant,
}

enum Slot {
    Tcp(Box<Conn>),
    Udp(Flow),
}

/// A socket with work left after its budget ran out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Port(usize),
    Slot(usize),
}

struct Loop {
    poll: Poll,
    ports: Vec<Port>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    ready: VecDeque<Work>,
    guest: Arc<AtomicU32>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
    /// Resource errors in the current burst (logged at its start).
    resource_errors: u64,
}

/// Errors that mean "out of descriptors or memory": back off instead of retrying at once.
fn is_resource(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = (self.limits.tcp_idle.min(self.limits.udp_idle) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut next_sweep = Instant::now() + tick;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut wake_at = next_sweep;
            for p in &self.ports {
                if let Some(t) = p.paused_until {
                    wake_at = wake_at.min(t);
                }
            }
            let timeout = if self.ready.is_empty() {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!("port proxy: poll failed: {e}; published ports stop");
                    return;
                }
                continue;
            }
            // Work left over from the last round goes first, then what the kernel reports.
            let carried: Vec<Work> = self.ready.drain(..).collect();
            for w in carried {
                self.work(w);
            }
            for ev in events.iter() {
                let t = ev.token().0;
                if ev.token() == WAKER {
                    continue;
                } else if t < FIRST_SLOT_TOKEN {
                    self.work(Work::Port(t - 1));
                } else {
                    let slot = (t - FIRST_SLOT_TOKEN) / 2;
                    if !self.ready.contains(&Work::Slot(slot)) {
                        self.work(Work::Slot(slot));
                    }
                }
            }
            let now = Instant::now();
            for i in 0..self.ports.len() {
                if self.ports[i].paused_until.is_some_and(|t| t <= now) {
                    self.ports[i].paused_until = None;
                    self.work(Work::Port(i));
                }
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + tick;
            }
        }
    }

    fn work(&mut self, w: Work) {
        let more = match w {
            Work::Port(i) => match self.ports.get(i).map(|p| &p.kind) {
                Some(PortKind::Tcp(_)) => self.accept(i),
                Some(PortKind::Udp { .. }) => self.udp_from_peers(i),
                None => false,
            },
            Work::Slot(s) => match self.slots.get(s) {
                Some(Some(Slot::Tcp(_))) => self.pump(s),
                Some(Some(Slot::Udp(_))) => self.udp_from_guest(s),
                _ => false,
            },
        };
        if more && !self.ready.contains(&w) {
            self.ready.push_back(w);
        }
    }

    fn target(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(self.guest.load(Ordering::SeqCst)),
            port,
        ))
    }

    fn resource_error(&mut self, what: &str, e: &std::io::Error) {
        self.resource_errors += 1;
        if self.resource_errors == 1 {
            tracing::warn!("port proxy: {what}: {e}; backing off");
        }
    }

    fn insert(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn token(slot: usize, side: usize) -> Token {
        Token(FIRST_SLOT_TOKEN + slot * 2 + side)
    }

    /// Accepts on TCP port `i`; true when its budget ran out with more to do.
    fn accept(&mut self, i: usize) -> bool {
        for _ in 0..BUDGET {
            let port = &mut self.ports[i];
            if port.paused_until.is_some() {
                return false;
            }
            let PortKind::Tcp(listener) = &port.kind else {
                return false;
            };
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE and the like leave the connection in the backlog: retrying at
                    // once would spin, so accepting pauses briefly.
                    port.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    self.resource_error("accept", &e);
                    return false;
                }
            };
            if port.active >= self.limits.max_tcp_conns {
                port.refused += 1;
                if port.refused == 1 {
                    tracing::warn!(
                        "published port for {}/tcp: {} connections open, refusing more",
                        port.container_port,
                        port.active
                    );
                }
                drop(client);
                continue;
            }
            let container_port = port.container_port;
            let target = self.target(container_port);
            let upstream = match TcpStream::connect(target) {
                Ok(u) => u,
                Err(e) => {
                    drop(client);
                    if is_resource(&e) {
                        self.ports[i].paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        self.resource_error("connect to the guest", &e);
                        return false;
                    }
                    tracing::debug!("port proxy: connect to {target}: {e}");
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let now = Instant::now();
            let s = self.insert(Slot::Tcp(Box::new(Conn {
                port: i,
                client,
                upstream,
                connected: false,
                opened: now,
                last: now,
                up: Half::default(),
                down: Half::default(),
            })));
            let registry = self.poll.registry();
            let both = Interest::READABLE | Interest::WRITABLE;
            let ok = match &mut self.slots[s] {
                Some(Slot::Tcp(c)) => registry
                    .register(&mut c.client, Self::token(s, 0), both)
                    .and_then(|()| registry.register(&mut c.upstream, Self::token(s, 1), both)),
                _ => Ok(()),
            };
            self.ports[i].active += 1;
            if let Err(e) = ok {
                self.resource_error("register a connection", &e);
                self.close(s);
            }
        }
        true
    }

    /// Moves bytes of connection `s` both ways; true when its budget ran out with more to do.
    fn pump(&mut self, s: usize) -> bool {
        let Some(Some(Slot::Tcp(c))) = self.slots.get_mut(s) else {
            return false;
        };
        if !c.connected {
            match c.upstream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    // Nothing listens in the guest: the client sees the connection close.
                    tracing::debug!("port proxy: connect to the guest: {e}");
                    self.close(s);
                    return false;
                }
            }
            match c.upstream.peer_addr() {
                Ok(_) => c.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return false,
                Err(_) => {
                    self.close(s);
                    return false;
                }
            }
        }
        let cap = self.limits.buf;
        let scratch = &mut self.scratch[..cap.max(1)];
        for _ in 0..BUDGET {
            let a = transfer(&mut c.client, &mut c.upstream, &mut c.up, scratch);
            let b = transfer(&mut c.upstream, &mut c.client, &mut c.down, scratch);
            match (a, b) {
                (Err(_), _) | (_, Err(_)) => {
                    self.close(s);
                    return false;
                }
                (Ok(moved_a), Ok(moved_b)) => {
                    if moved_a || moved_b {
                        c.last = Instant::now();
                    }
                    if c.up.shut && c.down.shut {
                        self.close(s);
                        return false;
                    }
                    if !moved_a && !moved_b {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn close(&mut self, s: usize) {
        let Some(slot) = self.slots.get_mut(s).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        let port = match slot {
            Slot::Tcp(mut c) => {
                let _ = registry.deregister(&mut c.client);
                let _ = registry.deregister(&mut c.upstream);
                c.port
            }
            Slot::Udp(mut f) => {
                let _ = registry.deregister(&mut f.sock);
                if let Some(Port {
                    kind: PortKind::Udp { flows, .. },
                    ..
                }) = self.ports.get_mut(f.port)
                {
                    flows.remove(&f.peer);
                }
                f.port
            }
        };
        self.free.push(s);
        if let Some(p) = self.ports.get_mut(port) {
            p.active = p.active.saturating_sub(1);
            if p.refused > 0 {
                tracing::warn!(
                    "published port for {}: {} connections or peers refused at the limit",
                    p.container_port,
                    p.refused
                );
                p.refused = 0;
            }
        }
        if self.resource_errors > 1 {
            tracing::warn!(
                "port proxy: {} resource errors in the last burst",
                self.resource_errors
            );
        }
        self.resource_errors = 0;
    }

    /// Datagrams from peers to the guest on UDP port `i`.
    fn udp_from_peers(&mut self, i: usize) -> bool {
        let target = self.target(self.ports[i].container_port);
        // Flows' sockets are connected to the old address: start over after a change.
        if let PortKind::Udp {
            target: t, flows, ..
        } = &mut self.ports[i].kind
            && *t != Some(target)
        {
            *t = Some(target);
            let old: Vec<usize> = flows.values().copied().collect();
            for s in old {
                self.close(s);
            }
        }
        for _ in 0..BUDGET {
            let Port {
                kind: PortKind::Udp { sock, flows, .. },
                active,
                refused,
                container_port,
                ..
            } = &mut self.ports[i]
            else {
                return false;
            };
            let (n, peer) = match sock.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP error of an earlier send_to: the next datagram is fine.
                Err(_) => continue,
            };
            let now = Instant::now();
            if let Some(&s) = flows.get(&peer) {
                if let Some(Some(Slot::Udp(f))) = self.slots.get_mut(s) {
                    f.last = now;
                    let _ = f.sock.send(&self.scratch[..n]);
                }
                continue;
            }
            if *active >= self.limits.max_udp_flows {
                *refused += 1;
                if *refused == 1 {
                    tracing::warn!(
                        "published port for {container_port}/udp: {active} peers, dropping new ones"
                    );
                }
                continue;
            }
            let sock = match UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .and_then(|u| u.connect(target).map(|()| u))
            {
                Ok(u) => u,
                Err(e) => {
                    self.resource_error("UDP socket to the guest", &e);
                    continue;
                }
            };
            *active += 1;
            let s = self.insert(Slot::Udp(Flow {
                port: i,
                peer,
                sock,
                last: now,
            }));
            if let PortKind::Udp { flows, .. } = &mut self.ports[i].kind {
                flows.insert(peer, s);
            }
            let registry = self.poll.registry();
            let res = match &mut self.slots[s] {
                Some(Slot::Udp(f)) => registry
                    .register(&mut f.sock, Self::token(s, 0), Interest::READABLE)
                    .map(|()| {
                        let _ = f.sock.send(&self.scratch[..n]);
                    }),
                _ => Ok(()),
            };
            if let Err(e) = res {
                self.resource_error("register a UDP flow", &e);
                self.close(s);
            }
        }
        true
    }

    /// Datagrams from the guest back to flow `s`'s peer, from the published port.
    fn udp_from_guest(&mut self, s: usize) -> bool {
        let Some(Some(Slot::Udp(f))) = self.slots.get_mut(s) else {
            return false;
        };
        let Some(Port {
            kind: PortKind::Udp { sock, .. },
            ..
        }) = self.ports.get(f.port)
        else {
            return false;
        };
        for _ in 0..BUDGET {
            match f.sock.recv(&mut self.scratch) {
                Ok(n) => {
                    f.last = Instant::now();
                    let _ = sock.send_to(&self.scratch[..n], f.peer);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                // ICMP port unreachable from the guest and the like: nothing to relay.
                Err(_) => continue,
            }
        }
        true
    }

    /// Closes idle connections and flows, and connections the guest never accepted.
    fn sweep(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (s, slot) in self.slots.iter().enumerate() {
            match slot {
                Some(Slot::Tcp(c)) => {
                    let stuck = !c.connected && now.duration_since(c.opened) > CONNECT_TIMEOUT;
                    if stuck || now.duration_since(c.last) > self.limits.tcp_idle {
                        dead.push(s);
                    }
                }
                Some(Slot::Udp(f)) if now.duration_since(f.last) > self.limits.udp_idle => {
                    dead.push(s);
                }
                Some(Slot::Udp(_)) | None => {}
            }
        }
        for s in dead {
            self.close(s);
        }
    }
}

/// One step of one direction: writes what is pending, or reads (only when nothing is
/// pending: that is the backpressure) and writes what it can, keeping the rest; passes EOF on
/// as a shutdown of the sink's write side. Ok(true) when anything moved.
fn transfer(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    h: &mut Half,
    scratch: &mut [u8],
) -> std::io::Result<bool> {
    let mut moved = false;
    if h.off < h.pending.len() {
        match dst.write(&h.pending[h.off..]) {
            Ok(n) => {
                h.off += n;
                moved = n > 0;
            }
            Err(e) if retry_later(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        if h.off < h.pending.len() {
            return Ok(moved);
        }
        // Drained: give the memory back, an idle connection holds none.
        h.pending = Vec::new();
        h.off = 0;
    }
    if !h.eof {
        match src.read(scratch) {
            Ok(0) => {
                h.eof = true;
                moved = true;
            }
            Ok(n) => {
                moved = true;
                let written = match dst.write(&scratch[..n]) {
                    Ok(w) => w,
                    Err(e) if retry_later(&e) => 0,
                    Err(e) => return Err(e),
                };
                if written < n {
                    h.pending = scratch[written..n].to_vec();
                    h.off = 0;
                }
            }
            Err(e) if retry_later(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if h.eof && h.off >= h.pending.len() && !h.shut {
        // The other side may have closed completely already (ENOTCONN): nothing to tell it.
        let _ = dst.shutdown(Shutdown::Write);
        h.shut = true;
        moved = true;
    }
    Ok(moved)
}

fn retry_later(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

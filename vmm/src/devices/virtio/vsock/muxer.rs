//! The connection multiplexer: routes guest packets to connections, accepts host connections
//! on the unix listener and reads their `CONNECT <port>` line, opens host sockets for guest
//! connections, and queues the packets waiting for guest rx buffers.
//!
//! Host sockets live in the muxer's own epoll set, whose descriptor the device registers with
//! the event loop (as Firecracker does): connections come and go without touching the event
//! manager's bookkeeping, and tests can drive the muxer without an event manager. Each socket
//! is registered only while there is something we can act on (see
//! `Connection::interest`), so the level-triggered loop never spins on readiness we ignore.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vm_memory::VolatileSlice;
use vm_memory::bitmap::BitmapSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, Timeouts};
use super::device::VsockError;
use super::packet::{Header, op_name};
use super::{HOST_CID, LOCAL_PORT_BASE, MAX_CONNECTIONS, MAX_HANDSHAKE_LEN, MAX_PENDING_RST, uapi};

/// Epoll token of the listener; connection tokens start above the fixed ones.
const TOKEN_LISTENER: u64 = 0;
/// Epoll token of the timer.
const TOKEN_TIMER: u64 = 1;
const FIRST_TOKEN: u64 = 2;
/// The timer ticks this often while anything waits for a deadline.
const TICK: Duration = Duration::from_millis(250);
/// Events handled per call; more stay ready and the event loop calls again.
const EVENTS_PER_CALL: usize = 64;
/// Connections accepted per listener event, so a connect storm cannot starve the guest.
const ACCEPTS_PER_CALL: usize = 64;

/// A connection is named by its two ports (the CIDs are always host and guest).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct ConnKey {
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
}

struct ConnEntry {
    conn: Connection,
    token: u64,
    /// What the stream is registered for; empty means not registered.
    registered: EventSet,
    /// Whether the key is in `conn_q`.
    queued: bool,
}

/// A host connection that has not finished its `CONNECT <port>\n` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// The connection table and host sockets of one vsock device.
pub(crate) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// The listener is out of the epoll set after accept failed for lack of descriptors.
    listener_paused: bool,
    epoll: Epoll,
    timer: TimerFd,
    timer_armed: bool,
    timeouts: Timeouts,
    conns: HashMap<ConnKey, ConnEntry>,
    /// Epoll token → connection.
    tokens: HashMap<u64, ConnKey>,
    handshakes: HashMap<u64, Handshake>,
    next_token: u64,
    /// How many connections use each local port.
    local_ports: HashMap<u32, usize>,
    next_local_port: u32,
    /// Resets for packets that match no connection.
    rst_q: VecDeque<Header>,
    /// Connections with packets for the guest, served round-robin.
    conn_q: VecDeque<ConnKey>,
}

impl Muxer {
    /// Binds the host listener at `uds_path` (replacing a stale socket file).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let listener = bind(uds_path)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        let timer = TimerFd::new().map_err(|e| VsockError::Timer(e.into()))?;
        set_nonblocking(timer.as_raw_fd()).map_err(VsockError::Timer)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
            )
            .map_err(VsockError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                timer.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_TIMER),
            )
            .map_err(VsockError::Epoll)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            listener_paused: false,
            epoll,
            timer,
            timer_armed: false,
            timeouts: Timeouts::default(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            handshakes: HashMap::new(),
            next_token: FIRST_TOKEN,
            local_ports: HashMap::new(),
            next_local_port: LOCAL_PORT_BASE,
            rst_q: VecDeque::new(),
            conn_q: VecDeque::new(),
        })
    }

    /// The epoll set to register with the event loop (readable when a socket needs us).
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// The host socket path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Where the host's `_PORT` sockets are from now on (the same directory, seen from the
    /// VMM's jail).
    pub fn set_uds_path(&mut self, path: PathBuf) {
        self.uds_path = path;
    }

    #[cfg(test)]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    #[cfg(test)]
    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    /// Whether packets wait for guest rx buffers.
    pub fn has_pending_rx(&self) -> bool {
        !self.rst_q.is_empty() || !self.conn_q.is_empty()
    }

    /// Whether the reset queue is full: the device stops taking guest packets (which may
    /// need a reset in answer) until the guest takes some.
    pub fn rx_congested(&self) -> bool {
        self.rst_q.len() >= MAX_PENDING_RST
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    // ---- Guest → host ----------------------------------------------------------------------

    /// Handles a packet from the guest's tx queue; `data` is its payload.
    pub fn on_guest_packet<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) {
        if hdr.src_cid != self.guest_cid
            || hdr.dst_cid != HOST_CID
            || hdr.type_ != uapi::TYPE_STREAM
        {
            tracing::debug!(
                "vsock: refusing {} from cid {} to cid {} type {}",
                op_name(hdr.op),
                hdr.src_cid,
                hdr.dst_cid,
                hdr.type_
            );
            self.reply_rst(hdr);
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if let Some(e) = self.conns.get_mut(&key) {
            if hdr.op == uapi::OP_REQUEST {
                // The guest reuses a live connection's ports: ours is stale. The reset refuses
                // the new attempt too; the guest retries from another port.
                e.conn.kill();
            } else {
                e.conn.on_guest_packet(hdr, data);
            }
            self.after_change(key);
            return;
        }
        match hdr.op {
            uapi::OP_REQUEST => self.connect_to_host(hdr, key),
            // Never answer a reset with a reset.
            uapi::OP_RST => {}
            _ => self.reply_rst(hdr),
        }
    }

    /// Handles a chain whose header was readable but whose payload was not valid: the stream
    /// lost data, so its connection (if any) is reset.
    pub fn on_bad_packet(&mut self, hdr: &Header) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.src_cid == self.guest_cid
            && hdr.dst_cid == HOST_CID
            && let Some(e) = self.conns.get_mut(&key)
        {
            e.conn.kill();
            self.after_change(key);
            return;
        }
        self.reply_rst(hdr);
    }

    fn reply_rst(&mut self, to: &Header) {
        if to.op == uapi::OP_RST {
            return;
        }
        if self.rst_q.len() >= MAX_PENDING_RST {
            // The device stops reading the tx queue before this happens; if it does anyway,
            // forgetting the oldest reset only delays the guest noticing a dead port.
            self.rst_q.pop_front();
        }
        self.rst_q.push_back(Header::rst_reply(to, self.guest_cid));
    }

    /// The guest connects to host port P: connect to `<uds_path>_P`.
    fn connect_to_host(&mut self, req: &Header, key: ConnKey) {
        if self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS {
            tracing::warn!(
                "vsock: too many connections; refusing guest port {}",
                req.src_port
            );
            self.reply_rst(req);
            return;
        }
        let path = port_path(&self.uds_path, req.dst_port);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let conn = Connection::new_peer(stream, self.guest_cid, req, self.timeouts);
                let token = self.alloc_token();
                self.insert_conn(key, conn, token, EventSet::empty());
            }
            Err(e) => {
                tracing::debug!("vsock: guest connect to {}: {e}", path.display());
                self.reply_rst(req);
            }
        }
    }

    // ---- Host → guest ----------------------------------------------------------------------

    /// Produces the next packet for the guest: `hdr` is filled and the payload (if any) is
    /// written to `data`; returns the payload length, or `None` if nothing can be sent now.
    pub fn fill_rx<B: BitmapSlice>(
        &mut self,
        hdr: &mut Header,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Option<u32> {
        if let Some(rst) = self.rst_q.pop_front() {
            *hdr = rst;
            return Some(0);
        }
        // Each queued connection gets one chance per buffer; one that cannot use this buffer
        // (no data after all, or a buffer without room for data) goes to the back.
        for _ in 0..self.conn_q.len() {
            let Some(key) = self.conn_q.pop_front() else {
                break;
            };
            let Some(e) = self.conns.get_mut(&key) else {
                continue;
            };
            e.queued = false;
            let produced = e.conn.fill_rx(hdr, data, now);
            self.after_change(key);
            if produced.is_some() {
                return produced;
            }
        }
        None
    }

    // ---- Host sockets ----------------------------------------------------------------------

    /// Handles whatever is ready on the host sockets.
    pub fn process_events(&mut self, now: Instant) {
        let mut events = [EpollEvent::default(); EVENTS_PER_CALL];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!("vsock: epoll_wait: {e}");
                }
                0
            }
        };
        for ev in &events[..n] {
            let set = ev.event_set();
            match ev.data() {
                TOKEN_LISTENER => self.accept(now),
                TOKEN_TIMER => {
                    // The timer is non-blocking; nothing to read just means no expiry yet.
                    let _ = self.timer.wait();
                    self.sweep(now);
                }
                token => {
                    if self.handshakes.contains_key(&token) {
                        self.read_handshake(token);
                    } else if let Some(&key) = self.tokens.get(&token) {
                        if let Some(e) = self.conns.get_mut(&key) {
                            e.conn.on_host_event(set);
                        }
                        self.after_change(key);
                    }
                    // Otherwise the socket went away earlier in this batch.
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_CALL {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // Typically out of descriptors: the listener would stay readable and spin
                    // the loop, so stop watching it until a connection closes or the timer
                    // ticks.
                    tracing::warn!("vsock: accept failed: {e}; pausing the listener");
                    self.pause_listener();
                    return;
                }
            };
            if self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS {
                tracing::warn!("vsock: too many connections; closing a new host connection");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.alloc_token();
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            ) {
                tracing::warn!("vsock: cannot watch a host connection: {e}");
                continue;
            }
            // Bytes already sent are reported by the (level-triggered) epoll set.
            self.handshakes.insert(
                token,
                Handshake {
                    stream,
                    line: Vec::with_capacity(MAX_HANDSHAKE_LEN),
                    deadline: now + self.timeouts.handshake,
                },
            );
        }
    }

    fn pause_listener(&mut self) {
        if !self.listener_paused {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                self.listener.as_raw_fd(),
                EpollEvent::default(),
            );
            self.listener_paused = true;
        }
    }

    fn resume_listener(&mut self) {
        if self.listener_paused
            && self
                .epoll
                .ctl(
                    ControlOperation::Add,
                    self.listener.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
                )
                .is_ok()
        {
            self.listener_paused = false;
        }
    }

    /// Reads the handshake line byte by byte, so that data the host process sends right
    /// after it stays in the socket for the connection.
    fn read_handshake(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let outcome = loop {
            let mut b = [0u8; 1];
            match (&hs.stream).read(&mut b) {
                Ok(0) => break Err("end of stream".to_string()),
                Ok(_) if b[0] == b'\n' => break parse_connect(&hs.line),
                Ok(_) => {
                    hs.line.push(b[0]);
                    if hs.line.len() >= MAX_HANDSHAKE_LEN {
                        break Err("line too long".to_string());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        match outcome {
            Ok(port) => self.connect_to_guest(token, hs.stream, port),
            Err(why) => {
                tracing::debug!("vsock: host handshake refused: {why}");
                self.unwatch(hs.stream.as_raw_fd());
            }
        }
    }

    /// A host process asked for guest port `port`: queue the REQUEST.
    fn connect_to_guest(&mut self, token: u64, stream: UnixStream, port: u32) {
        let Some(local_port) = self.alloc_local_port() else {
            tracing::warn!("vsock: no free local port");
            self.unwatch(stream.as_raw_fd());
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        let conn = Connection::new_local(stream, self.guest_cid, local_port, port, self.timeouts);
        // The stream stays registered (for input) under the same token; `after_change`
        // switches it to what the connection needs.
        self.insert_conn(key, conn, token, EventSet::IN);
    }

    /// A local port no connection uses, counting up from `LOCAL_PORT_BASE` and wrapping.
    fn alloc_local_port(&mut self) -> Option<u32> {
        // At most MAX_CONNECTIONS ports are in use, so this finds one.
        for _ in 0..=MAX_CONNECTIONS {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(LOCAL_PORT_BASE);
            if !self.local_ports.contains_key(&p) {
                return Some(p);
            }
        }
        None
    }

    fn unwatch(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    // ---- Connection table ------------------------------------------------------------------

    fn insert_conn(&mut self, key: ConnKey, conn: Connection, token: u64, registered: EventSet) {
        self.tokens.insert(token, key);
        *self.local_ports.entry(key.local_port).or_insert(0) += 1;
        self.conns.insert(
            key,
            ConnEntry {
                conn,
                token,
                registered,
                queued: false,
            },
        );
        self.after_change(key);
    }

    /// Brings the muxer's view of a connection up to date after anything happened to it:
    /// drops it when closed, (re)registers its stream for what it can act on, and queues it
    /// when it has a packet for the guest.
    fn after_change(&mut self, key: ConnKey) {
        let Some(e) = self.conns.get_mut(&key) else {
            return;
        };
        if e.conn.is_closed() {
            self.remove_conn(key);
            return;
        }
        let want = e.conn.interest();
        if want != e.registered {
            let event = EpollEvent::new(want, e.token);
            let res = if want.is_empty() {
                self.epoll
                    .ctl(ControlOperation::Delete, e.conn.fd(), EpollEvent::default())
            } else if e.registered.is_empty() {
                self.epoll.ctl(ControlOperation::Add, e.conn.fd(), event)
            } else {
                self.epoll.ctl(ControlOperation::Modify, e.conn.fd(), event)
            };
            match res {
                Ok(()) => e.registered = want,
                Err(err) => {
                    tracing::warn!("vsock: cannot update epoll for a connection: {err}");
                    e.conn.kill();
                }
            }
        }
        if e.conn.has_pending_rx() && !e.queued {
            e.queued = true;
            self.conn_q.push_back(key);
        }
    }

    fn remove_conn(&mut self, key: ConnKey) {
        let Some(e) = self.conns.remove(&key) else {
            return;
        };
        if !e.registered.is_empty() {
            self.unwatch(e.conn.fd());
        }
        if e.queued {
            self.conn_q.retain(|k| *k != key);
        }
        self.tokens.remove(&e.token);
        if let Some(n) = self.local_ports.get_mut(&key.local_port) {
            *n -= 1;
            if *n == 0 {
                self.local_ports.remove(&key.local_port);
            }
        }
        // A descriptor was freed: a paused listener may accept again.
        self.resume_listener();
        // Dropping `e` closes the host stream.
    }

    // ---- Time ------------------------------------------------------------------------------

    /// Gives up every wait that expired by `now`.
    pub fn sweep(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for t in expired {
            if let Some(hs) = self.handshakes.remove(&t) {
                tracing::debug!("vsock: host handshake timed out");
                self.unwatch(hs.stream.as_raw_fd());
            }
        }
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.expiry().is_some_and(|t| t <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in expired {
            if let Some(e) = self.conns.get_mut(&key) {
                e.conn.on_timeout(now);
            }
            self.after_change(key);
        }
        self.resume_listener();
    }

    /// Arms the timer while anything has a deadline, disarms it otherwise.
    pub fn update_timer(&mut self) {
        let needed = self.listener_paused
            || !self.handshakes.is_empty()
            || self.conns.values().any(|e| e.conn.expiry().is_some());
        if needed == self.timer_armed {
            return;
        }
        let res = if needed {
            self.timer.reset(TICK, Some(TICK))
        } else {
            self.timer.clear()
        };
        match res {
            Ok(()) => self.timer_armed = needed,
            Err(e) => tracing::warn!("vsock: cannot set the timer: {e}"),
        }
    }

    /// Closes every connection (device reset); the listener stays.
    pub fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key);
        }
        for (_, hs) in self.handshakes.drain() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                hs.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.rst_q.clear();
        self.conn_q.clear();
        self.update_timer();
    }
}

/// Parses `CONNECT <port>` (the newline already stripped).
fn parse_connect(line: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(line).map_err(|_| "handshake is not text".to_string())?;
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("CONNECT"), Some(port), None) => port
            .parse::<u32>()
            .map_err(|_| format!("bad port {port:?}")),
        _ => Err(format!("bad handshake {text:?}")),
    }
}

/// `<uds_path>_<port>`.
fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds_path.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Binds the listener, replacing a stale socket file (but nothing else) at `path`.
fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    let err = |source| VsockError::Bind {
        path: path.display().to_string(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(VsockError::NotASocket(path.display().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor we own reads its flags and touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL only changes the descriptor's status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to a unix socket without blocking: a unix connect either completes at once or
/// fails (EAGAIN when the listener's backlog is full), so the event loop never waits on a
/// host process.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    // Room for the terminating NUL, which the zeroed tail provides.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it on drop.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size (checked
    // above); the kernel only reads it.
    let ret = unsafe {
        libc::connect(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Ok(1234));
        assert_eq!(parse_connect(b"CONNECT  52 \r"), Ok(52));
        assert!(parse_connect(b"CONNECT").is_err());
        assert!(parse_connect(b"CONNECT -1").is_err());
        assert!(parse_connect(b"CONNECT 4294967296").is_err());
        assert!(parse_connect(b"CONNECT 1 2").is_err());
        assert!(parse_connect(b"connect 1").is_err());
        assert!(parse_connect(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn port_paths_and_nonblocking_connect() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
        let base = dir.as_path().join("v.sock");
        let p = port_path(&base, 52);
        assert_eq!(p, dir.as_path().join("v.sock_52"));
        assert!(connect_nonblocking(&p).is_err());
        let l = UnixListener::bind(&p).unwrap();
        let s = connect_nonblocking(&p).unwrap();
        drop(l.accept().unwrap());
        drop(s);
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn bind_replaces_stale_sockets_only() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
        let path = dir.as_path().join("v.sock");
        drop(UnixListener::bind(&path).unwrap());
        // A stale socket file is replaced.
        let l = bind(&path).unwrap();
        drop(l);
        let file = dir.as_path().join("regular");
        std::fs::write(&file, b"keep").unwrap();
        assert!(matches!(bind(&file), Err(VsockError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        assert!(matches!(
            bind(&dir.as_path().join("missing/v.sock")),
            Err(VsockError::Bind { .. })
        ));
    }

    #[test]
    fn local_ports_skip_ones_in_use() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
        let mut m = Muxer::new(3, &dir.as_path().join("v.sock")).unwrap();
        m.local_ports.insert(LOCAL_PORT_BASE, 1);
        m.local_ports.insert(LOCAL_PORT_BASE + 1, 1);
        assert_eq!(m.alloc_local_port(), Some(LOCAL_PORT_BASE + 2));
        m.next_local_port = u32::MAX;
        assert_eq!(m.alloc_local_port(), Some(u32::MAX));
        // Wraps to the base, skipping the ports in use.
        assert_eq!(m.alloc_local_port(), Some(LOCAL_PORT_BASE + 2));
    }
}

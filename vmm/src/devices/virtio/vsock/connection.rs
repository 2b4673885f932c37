//! One vsock connection: the state machine between the guest's socket and a host unix stream,
//! and the flow control (credit) in both directions.
//!
//! Terminology: "to the guest" is the rx direction (host stream → rx queue), "to the host" is
//! the tx direction (tx queue → host stream).
//!
//! Flow control follows the virtio-vsock credit scheme:
//! * we may send the guest at most `peer_buf_alloc - (sent_to_guest - peer_fwd_cnt)` bytes,
//!   with both peer values taken from the latest packet the guest sent;
//! * we advertise `CONN_BUF_ALLOC` and `fwd_cnt` (bytes written to the host stream) in every
//!   packet, so a well-behaved guest never has more than `CONN_BUF_ALLOC` bytes unwritten at
//!   our end; one that sends more is reset, which bounds the per-connection buffer.
//!
//! Nothing here blocks: the host stream is non-blocking, data the host cannot take yet is
//! buffered, and the muxer asks [`Connection::interest`] which readiness to wait for.

use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};
use vmm_sys_util::epoll::EventSet;

use super::packet::Header;
use super::{
    CONN_BUF_ALLOC, CREDIT_UPDATE_THRESHOLD, HANDSHAKE_TIMEOUT, HOST_CID, MAX_PKT_DATA,
    RESPONSE_TIMEOUT, SHUTDOWN_TIMEOUT, uapi,
};

/// Once the host-bound buffer drains, memory above this is given back (a burst must not pin
/// 256 KiB per idle connection).
const KEEP_BUF_CAPACITY: usize = 64 * 1024;

/// Timeouts, adjustable so tests need not wait seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// A host process must complete its `CONNECT` line within this.
    pub handshake: Duration,
    /// The guest must answer a delivered REQUEST within this.
    pub response: Duration,
    /// The guest must reset a connection within this after our SHUTDOWN.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: HANDSHAKE_TIMEOUT,
            response: RESPONSE_TIMEOUT,
            shutdown: SHUTDOWN_TIMEOUT,
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Host-initiated: the REQUEST waits for an rx buffer, or was sent and the guest's
    /// RESPONSE is awaited.
    LocalInit {
        /// Whether the REQUEST reached the guest.
        request_sent: bool,
    },
    /// Guest-initiated: the host socket is connected; the RESPONSE waits for an rx buffer.
    PeerInit,
    /// Data flows both ways.
    Established,
    /// The host stream reached EOF: SHUTDOWN is pending or sent, the guest's RST is awaited.
    LocalClosed {
        /// Whether the SHUTDOWN reached the guest.
        shutdown_sent: bool,
    },
    /// The guest shut down one or both directions.
    PeerClosed {
        /// The guest will receive no more data.
        rcv: bool,
        /// The guest will send no more data.
        send: bool,
    },
    /// An RST waits for an rx buffer; after it the connection is gone.
    Killed,
    /// Finished: the muxer drops the connection and its stream.
    Closed,
}

/// The host stream's write half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteHalf {
    Open,
    /// The guest will send no more: shut it once the buffer is written.
    ShutdownPending,
    Shut,
}

/// What [`Connection::fill_rx`] produced.
type RxPacket = (u16, u32, u32); // (op, flags, data length)

/// One connection between a guest port and a host unix stream.
pub(crate) struct Connection {
    stream: UnixStream,
    state: State,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    timeouts: Timeouts,
    /// When the current wait (for RESPONSE or for RST) gives up.
    expiry: Option<Instant>,

    // Host → guest.
    /// Bytes sent to the guest, ever (wrapping).
    sent_to_guest: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The host stream looked readable: try to fill the next rx buffer from it.
    rw_pending: bool,
    credit_request_pending: bool,
    /// A CREDIT_REQUEST went out and the guest has not granted credit since.
    credit_requested: bool,

    // Guest → host.
    /// Bytes of guest data written to the host stream, ever (wrapping).
    fwd_cnt: u32,
    /// `fwd_cnt` as of the last packet we sent the guest.
    last_fwd_cnt_sent: u32,
    credit_update_pending: bool,
    /// Bytes the host stream did not take yet.
    to_host: Vec<u8>,
    /// How many leading bytes of `to_host` are our own (`OK <port>\n`), not guest data.
    to_host_ctrl: usize,
    write_half: WriteHalf,
    /// The guest sent SHUTDOWN after ours: reset once `to_host` is written.
    guest_closed: bool,
}

impl Connection {
    /// A host-initiated connection to guest port `peer_port`, from host port `local_port`.
    pub fn new_local(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        timeouts: Timeouts,
    ) -> Self {
        Self::new(
            stream,
            State::LocalInit {
                request_sent: false,
            },
            guest_cid,
            local_port,
            peer_port,
            timeouts,
        )
    }

    /// A guest-initiated connection, from the guest's REQUEST `req`; `stream` is connected.
    pub fn new_peer(stream: UnixStream, guest_cid: u64, req: &Header, timeouts: Timeouts) -> Self {
        let mut c = Self::new(
            stream,
            State::PeerInit,
            guest_cid,
            req.dst_port,
            req.src_port,
            timeouts,
        );
        c.peer_buf_alloc = req.buf_alloc;
        c.peer_fwd_cnt = req.fwd_cnt;
        c
    }

    fn new(
        stream: UnixStream,
        state: State,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            stream,
            state,
            guest_cid,
            local_port,
            peer_port,
            timeouts,
            expiry: None,
            sent_to_guest: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rw_pending: false,
            credit_request_pending: false,
            credit_requested: false,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            credit_update_pending: false,
            to_host: Vec::new(),
            to_host_ctrl: 0,
            write_half: WriteHalf::Open,
            guest_closed: false,
        }
    }

    /// The state.
    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    /// The host stream's descriptor (for epoll).
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// When a pending wait times out.
    pub fn expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// Whether the connection is finished and can be dropped.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes we may still send the guest. A guest claiming to have consumed more than we sent
    /// just gets no more than its buffer size in flight.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.sent_to_guest.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether host data still flows to the guest.
    fn reads_host(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::PeerClosed { rcv: false, .. }
        )
    }

    /// Resets the connection: an RST goes to the guest, then it is dropped.
    pub fn kill(&mut self) {
        if matches!(self.state, State::Closed | State::Killed) {
            return;
        }
        self.state = State::Killed;
        self.expiry = None;
        self.rw_pending = false;
        self.credit_request_pending = false;
        self.credit_update_pending = false;
    }

    /// Closes without telling the guest (it reset, or never heard of the connection).
    pub fn close_silently(&mut self) {
        self.state = State::Closed;
        self.expiry = None;
    }

    /// Handles a packet the guest sent on this connection; `data` is its payload (RW).
    pub fn on_guest_packet<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) {
        if matches!(self.state, State::Closed | State::Killed) {
            return;
        }
        if hdr.op == uapi::OP_RST {
            self.close_silently();
            return;
        }
        // Every packet carries the guest's current receive-buffer view.
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        match (self.state, hdr.op) {
            (State::LocalInit { request_sent: true }, uapi::OP_RESPONSE) => {
                self.state = State::Established;
                self.expiry = None;
                // The host process learns its port and then owns the stream.
                let line = format!("OK {}\n", self.local_port);
                self.to_host.extend_from_slice(line.as_bytes());
                self.to_host_ctrl += line.len();
                if self.flush().is_err() {
                    self.kill();
                }
            }
            (State::PeerInit, uapi::OP_CREDIT_UPDATE) => {}
            (State::PeerInit, uapi::OP_CREDIT_REQUEST) => self.credit_update_pending = true,
            // Anything else before the handshake completed is a protocol violation.
            (State::LocalInit { .. } | State::PeerInit, _) => self.kill(),
            (_, uapi::OP_RW) => self.forward_to_host(data),
            (_, uapi::OP_CREDIT_UPDATE) => {}
            (_, uapi::OP_CREDIT_REQUEST) => self.credit_update_pending = true,
            (State::Established | State::PeerClosed { .. }, uapi::OP_SHUTDOWN) => {
                self.peer_shutdown(hdr.flags)
            }
            // We already said the host end is done; the guest closing too waits for our
            // RST (Linux does, for up to 8 s), so finish once its last bytes are written.
            (State::LocalClosed { .. }, uapi::OP_SHUTDOWN) => {
                self.guest_closed = true;
                self.note_forwarded();
            }
            // REQUEST or RESPONSE on a live connection, unknown operations.
            _ => self.kill(),
        }
    }

    /// Writes (or buffers) guest data for the host stream.
    fn forward_to_host<B: BitmapSlice>(&mut self, data: Option<&VolatileSlice<'_, B>>) {
        if matches!(self.state, State::PeerClosed { send: true, .. })
            || self.write_half != WriteHalf::Open
        {
            // The guest said it would send no more.
            self.kill();
            return;
        }
        let Some(data) = data else {
            return;
        };
        let buffered = self.to_host.len() - self.to_host_ctrl;
        if buffered + data.len() > CONN_BUF_ALLOC as usize {
            tracing::warn!(
                "vsock: guest overran its credit on port {} -> {}; resetting",
                self.peer_port,
                self.local_port
            );
            self.kill();
            return;
        }
        let mut written = 0;
        if self.to_host.is_empty() {
            match send_volatile(&self.stream, data) {
                Ok(n) => written = n,
                Err(e) if io_transient(&e) => {}
                Err(e) => {
                    tracing::debug!("vsock: host stream write failed: {e}");
                    self.kill();
                    return;
                }
            }
            self.fwd_cnt = self.fwd_cnt.wrapping_add(written as u32);
        }
        if written < data.len() {
            let Ok(rest) = data.offset(written) else {
                self.kill();
                return;
            };
            let old = self.to_host.len();
            self.to_host.resize(old + rest.len(), 0);
            rest.copy_to(&mut self.to_host[old..]);
        }
        self.note_forwarded();
    }

    /// Writes as much of the buffer as the host stream takes; an error means the host end
    /// is gone.
    fn flush(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            match send_bytes(&self.stream, &self.to_host) {
                Ok(0) => break,
                Ok(n) => {
                    let ctrl = n.min(self.to_host_ctrl);
                    self.to_host_ctrl -= ctrl;
                    self.fwd_cnt = self.fwd_cnt.wrapping_add((n - ctrl) as u32);
                    self.to_host.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.to_host.is_empty() && self.to_host.capacity() > KEEP_BUF_CAPACITY {
            self.to_host = Vec::new();
        }
        self.note_forwarded();
        Ok(())
    }

    /// After data reached the host: tell the guest about the space freed when its view is
    /// stale, and finish a guest shutdown once everything is written.
    fn note_forwarded(&mut self) {
        if matches!(self.state, State::Killed | State::Closed) {
            return;
        }
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.credit_update_pending = true;
        }
        if !self.to_host.is_empty() {
            return;
        }
        if self.write_half == WriteHalf::ShutdownPending {
            // The host reader sees EOF; an error means it is gone already, which is fine.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.write_half = WriteHalf::Shut;
        }
        if self.state
            == (State::PeerClosed {
                rcv: true,
                send: true,
            })
            || self.guest_closed
        {
            // Both directions are done and everything was delivered: reset, as Firecracker
            // does, so the guest can release the socket.
            self.kill();
        }
    }

    fn peer_shutdown(&mut self, flags: u32) {
        let (mut rcv, mut send) = match self.state {
            State::PeerClosed { rcv, send } => (rcv, send),
            _ => (false, false),
        };
        rcv |= flags & uapi::SHUTDOWN_RCV != 0;
        send |= flags & uapi::SHUTDOWN_SEND != 0;
        self.state = State::PeerClosed { rcv, send };
        if rcv {
            self.rw_pending = false;
            self.credit_request_pending = false;
        }
        if send && self.write_half == WriteHalf::Open {
            self.write_half = WriteHalf::ShutdownPending;
        }
        self.note_forwarded();
    }

    /// The host end reached EOF: tell the guest with a SHUTDOWN and wait for its RST.
    fn host_eof(&mut self) {
        self.state = State::LocalClosed {
            shutdown_sent: false,
        };
        self.rw_pending = false;
        self.credit_request_pending = false;
    }

    /// Handles readiness of the host stream.
    pub fn on_host_event(&mut self, evset: EventSet) {
        if matches!(self.state, State::Closed | State::Killed) {
            return;
        }
        if evset.contains(EventSet::ERROR) {
            self.kill();
            return;
        }
        let input = evset.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP);
        match self.state {
            // Before the handshake completes we only watch for the host giving up.
            State::LocalInit { request_sent } if input => {
                if request_sent {
                    self.kill();
                } else {
                    // The guest never heard of it.
                    self.close_silently();
                }
                return;
            }
            State::PeerInit if input => {
                self.kill();
                return;
            }
            _ => {}
        }
        if (evset.contains(EventSet::OUT) || evset.contains(EventSet::HANG_UP))
            && !self.to_host.is_empty()
            && self.flush().is_err()
        {
            self.kill();
            return;
        }
        if !input {
            return;
        }
        match self.state {
            State::Established | State::PeerClosed { rcv: false, .. } => {
                if self.peer_credit() > 0 {
                    self.rw_pending = true;
                } else if !self.credit_requested {
                    self.credit_request_pending = true;
                }
            }
            State::PeerClosed { rcv: true, .. }
                if evset.intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP) =>
            {
                // The guest reads no more, so the stream is only watched for its end.
                self.host_eof();
            }
            _ => {}
        }
    }

    /// Gives up a wait that expired by `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.expiry.is_some_and(|t| t <= now) {
            self.expiry = None;
            tracing::debug!(
                "vsock: connection {} -> {} timed out in {:?}",
                self.local_port,
                self.peer_port,
                self.state
            );
            self.kill();
        }
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::Killed | State::PeerInit => true,
            State::LocalInit { request_sent } => !request_sent,
            State::LocalClosed { shutdown_sent } => {
                !shutdown_sent || self.credit_update_pending || self.credit_request_pending
            }
            State::Established | State::PeerClosed { .. } => {
                self.credit_update_pending
                    || self.credit_request_pending
                    || (self.rw_pending && self.reads_host())
            }
        }
    }

    /// Produces the next packet for the guest into `hdr` and `data` (the rx buffer's data
    /// part); returns its payload length, or `None` when there is nothing to send.
    pub fn fill_rx<B: BitmapSlice>(
        &mut self,
        hdr: &mut Header,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Option<u32> {
        let (op, flags, len) = self.next_rx(data, now)?;
        *hdr = Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: uapi::TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        };
        // Every header carries our credit, so the guest's view is now current.
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.credit_update_pending = false;
        Some(len)
    }

    fn next_rx<B: BitmapSlice>(
        &mut self,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Option<RxPacket> {
        match self.state {
            State::Closed => return None,
            State::Killed => {
                self.state = State::Closed;
                return Some((uapi::OP_RST, 0, 0));
            }
            State::PeerInit => {
                self.state = State::Established;
                return Some((uapi::OP_RESPONSE, 0, 0));
            }
            State::LocalInit {
                request_sent: false,
            } => {
                self.state = State::LocalInit { request_sent: true };
                self.expiry = Some(now + self.timeouts.response);
                return Some((uapi::OP_REQUEST, 0, 0));
            }
            State::LocalClosed {
                shutdown_sent: false,
            } => {
                self.state = State::LocalClosed {
                    shutdown_sent: true,
                };
                self.expiry = Some(now + self.timeouts.shutdown);
                return Some((
                    uapi::OP_SHUTDOWN,
                    uapi::SHUTDOWN_RCV | uapi::SHUTDOWN_SEND,
                    0,
                ));
            }
            _ => {}
        }
        if self.credit_update_pending {
            return Some((uapi::OP_CREDIT_UPDATE, 0, 0));
        }
        if self.credit_request_pending {
            self.credit_request_pending = false;
            self.credit_requested = true;
            return Some((uapi::OP_CREDIT_REQUEST, 0, 0));
        }
        if self.rw_pending && self.reads_host() {
            return self.read_host(data, now);
        }
        None
    }

    /// Reads host data into the rx buffer, within the guest's credit.
    fn read_host<B: BitmapSlice>(
        &mut self,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Option<RxPacket> {
        let credit = self.peer_credit();
        if credit == 0 {
            // Stop reading until the guest grants credit; ask once.
            self.rw_pending = false;
            if self.credit_requested {
                return None;
            }
            self.credit_requested = true;
            return Some((uapi::OP_CREDIT_REQUEST, 0, 0));
        }
        // A buffer without room for data cannot carry this; the next one may.
        let data = data?;
        let max = data.len().min(credit as usize).min(MAX_PKT_DATA as usize);
        let mut buf = data.subslice(0, max).ok()?;
        if buf.is_empty() {
            return None;
        }
        match (&self.stream).read_volatile(&mut buf) {
            Ok(0) => {
                self.state = State::LocalClosed {
                    shutdown_sent: true,
                };
                self.rw_pending = false;
                self.expiry = Some(now + self.timeouts.shutdown);
                Some((
                    uapi::OP_SHUTDOWN,
                    uapi::SHUTDOWN_RCV | uapi::SHUTDOWN_SEND,
                    0,
                ))
            }
            Ok(n) => {
                // `n <= max <= MAX_PKT_DATA`, so it fits.
                let n = n as u32;
                self.sent_to_guest = self.sent_to_guest.wrapping_add(n);
                // Keep reading speculatively: the next buffer finds out whether there is more.
                Some((uapi::OP_RW, 0, n))
            }
            Err(e) if volatile_transient(&e) => {
                if volatile_kind(&e) == Some(ErrorKind::WouldBlock) {
                    // Drained: wait for epoll to say there is more.
                    self.rw_pending = false;
                }
                None
            }
            Err(e) => {
                tracing::debug!("vsock: host stream read failed: {e}");
                self.state = State::Closed;
                self.rw_pending = false;
                Some((uapi::OP_RST, 0, 0))
            }
        }
    }

    /// The readiness to wait for on the host stream; empty means "do not poll it" (level-
    /// triggered hang-up events would otherwise fire while we cannot act on them).
    pub fn interest(&self) -> EventSet {
        match self.state {
            // Only the host giving up matters before the handshake completes.
            State::LocalInit { .. } | State::PeerInit => EventSet::READ_HANG_UP,
            State::Established | State::PeerClosed { .. } => {
                let mut s = EventSet::empty();
                if !self.to_host.is_empty() {
                    s |= EventSet::OUT;
                }
                if self.reads_host() {
                    if !self.rw_pending && self.peer_credit() > 0 {
                        s |= EventSet::IN;
                    }
                } else {
                    s |= EventSet::READ_HANG_UP;
                }
                s
            }
            State::LocalClosed { .. } if !self.to_host.is_empty() => EventSet::OUT,
            State::LocalClosed { .. } | State::Killed | State::Closed => EventSet::empty(),
        }
    }
}

fn volatile_kind(e: &VolatileMemoryError) -> Option<ErrorKind> {
    match e {
        VolatileMemoryError::IOError(io) => Some(io.kind()),
        _ => None,
    }
}

/// Errors after which the operation can simply be tried again later.
fn io_transient(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

fn volatile_transient(e: &VolatileMemoryError) -> bool {
    matches!(
        volatile_kind(e),
        Some(ErrorKind::WouldBlock | ErrorKind::Interrupted)
    )
}

/// `send(2)` without blocking and without SIGPIPE when the host end is gone.
fn send_raw(stream: &UnixStream, ptr: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: callers pass a pointer valid for reads of `len` bytes for the duration of the
    // call (a live slice, or guest memory mapped for the VM's lifetime); the kernel only
    // reads it. MSG_NOSIGNAL turns a closed peer into EPIPE instead of a signal.
    let ret = unsafe {
        libc::send(
            stream.as_raw_fd(),
            ptr.cast(),
            len,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // Non-negative and at most `len`.
        Ok(ret as usize)
    }
}

fn send_bytes(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    send_raw(stream, buf.as_ptr(), buf.len())
}

fn send_volatile<B: BitmapSlice>(
    stream: &UnixStream,
    buf: &VolatileSlice<'_, B>,
) -> io::Result<usize> {
    let guard = buf.ptr_guard();
    send_raw(stream, guard.as_ptr(), buf.len())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (a, b)
    }

    fn guest_hdr(op: u16) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: LOCAL,
            type_: uapi::TYPE_STREAM,
            op,
            buf_alloc: 64 * 1024,
            ..Default::default()
        }
    }

    const LOCAL: u32 = 1 << 30;
    const NONE: Option<&VolatileSlice<'_, ()>> = None;

    /// Fills an rx packet with a data area of `cap` bytes.
    fn rx(c: &mut Connection, cap: usize) -> Option<(Header, Vec<u8>)> {
        let mut buf = vec![0u8; cap];
        let mut hdr = Header::default();
        let len = {
            let vs = VolatileSlice::from(&mut buf[..]);
            c.fill_rx(&mut hdr, Some(&vs), Instant::now())?
        };
        assert_eq!(len, hdr.len);
        buf.truncate(len as usize);
        Some((hdr, buf))
    }

    fn send(c: &mut Connection, hdr: Header, payload: &[u8]) {
        let mut p = payload.to_vec();
        let vs = VolatileSlice::from(&mut p[..]);
        let data = if payload.is_empty() { None } else { Some(&vs) };
        c.on_guest_packet(
            &Header {
                len: payload.len() as u32,
                ..hdr
            },
            data,
        );
    }

    fn established() -> (Connection, UnixStream) {
        let (a, mut host) = pair();
        let mut c = Connection::new_local(a, 3, LOCAL, 1234, Timeouts::default());
        let (req, _) = rx(&mut c, 0).unwrap();
        assert_eq!(req.op, uapi::OP_REQUEST);
        send(&mut c, guest_hdr(uapi::OP_RESPONSE), &[]);
        assert_eq!(c.state(), State::Established);
        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
        assert_eq!(&line, format!("OK {LOCAL}\n").as_bytes());
        (c, host)
    }

    #[test]
    fn local_handshake_sends_request_then_ok() {
        let (a, _host) = pair();
        let mut c = Connection::new_local(a, 3, LOCAL, 1234, Timeouts::default());
        assert!(c.has_pending_rx());
        assert_eq!(c.interest(), EventSet::READ_HANG_UP);
        let (h, _) = rx(&mut c, 0).unwrap();
        assert_eq!(
            (h.src_cid, h.dst_cid, h.src_port, h.dst_port, h.op),
            (HOST_CID, 3, LOCAL, 1234, uapi::OP_REQUEST)
        );
        assert_eq!(h.buf_alloc, CONN_BUF_ALLOC);
        assert!(c.expiry().is_some());
        assert!(!c.has_pending_rx());
        drop(established());
    }

    #[test]
    fn response_timeout_resets() {
        let (a, _host) = pair();
        let mut c = Connection::new_local(a, 3, LOCAL, 1234, Timeouts::default());
        rx(&mut c, 0).unwrap();
        c.on_timeout(Instant::now());
        assert_eq!(c.state(), State::LocalInit { request_sent: true });
        c.on_timeout(Instant::now() + RESPONSE_TIMEOUT);
        assert_eq!(rx(&mut c, 0).unwrap().0.op, uapi::OP_RST);
        assert!(c.is_closed());
    }

    #[test]
    fn host_hangup_before_request_closes_silently() {
        let (a, host) = pair();
        let mut c = Connection::new_local(a, 3, LOCAL, 1234, Timeouts::default());
        drop(host);
        c.on_host_event(EventSet::IN | EventSet::HANG_UP);
        assert!(c.is_closed());
        assert!(rx(&mut c, 0).is_none());
    }

    #[test]
    fn data_to_guest_respects_credit() {
        let (mut c, mut host) = established();
        host.write_all(&[7u8; 100]).unwrap();
        // The guest's RESPONSE advertised 64 KiB; shrink it to 10 bytes.
        send(
            &mut c,
            Header {
                buf_alloc: 10,
                ..guest_hdr(uapi::OP_CREDIT_UPDATE)
            },
            &[],
        );
        assert!(c.interest().contains(EventSet::IN));
        c.on_host_event(EventSet::IN);
        assert!(!c.interest().contains(EventSet::IN));
        let (h, d) = rx(&mut c, 4096).unwrap();
        assert_eq!((h.op, h.len), (uapi::OP_RW, 10));
        assert_eq!(d, vec![7u8; 10]);
        // Out of credit: ask once, then stop reading.
        let (h, _) = rx(&mut c, 4096).unwrap();
        assert_eq!(h.op, uapi::OP_CREDIT_REQUEST);
        assert!(rx(&mut c, 4096).is_none());
        assert!(!c.interest().contains(EventSet::IN));
        // The guest consumed the 10 bytes.
        send(
            &mut c,
            Header {
                buf_alloc: 10,
                fwd_cnt: 10,
                ..guest_hdr(uapi::OP_CREDIT_UPDATE)
            },
            &[],
        );
        assert!(c.interest().contains(EventSet::IN));
        c.on_host_event(EventSet::IN);
        let (h, _) = rx(&mut c, 4).unwrap();
        assert_eq!((h.op, h.len), (uapi::OP_RW, 4));
    }

    #[test]
    fn data_to_host_is_written_and_buffered_within_credit() {
        let (mut c, mut host) = established();
        send(&mut c, guest_hdr(uapi::OP_RW), b"hello");
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(c.fwd_cnt, 5);

        // The host stops reading: fill its socket buffer, then our buffer up to buf_alloc.
        let chunk = vec![1u8; MAX_PKT_DATA as usize];
        while c.to_host.len() + chunk.len() <= CONN_BUF_ALLOC as usize {
            send(&mut c, guest_hdr(uapi::OP_RW), &chunk);
            assert_ne!(c.state(), State::Killed);
        }
        assert!(!c.to_host.is_empty());
        assert!(c.interest().contains(EventSet::OUT));
        // One more packet than the credit we advertised: the guest is reset.
        send(&mut c, guest_hdr(uapi::OP_RW), &chunk);
        assert_eq!(c.state(), State::Killed);
        assert!(c.to_host.len() <= CONN_BUF_ALLOC as usize);
    }

    #[test]
    fn buffered_data_drains_and_credit_update_follows() {
        let (mut c, mut host) = established();
        let chunk = vec![2u8; MAX_PKT_DATA as usize];
        for _ in 0..4 {
            send(&mut c, guest_hdr(uapi::OP_RW), &chunk);
        }
        assert_eq!(c.state(), State::Established);
        let total = 4 * chunk.len();
        let reader = std::thread::spawn(move || {
            let mut v = vec![0u8; total];
            host.read_exact(&mut v).unwrap();
            v
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.to_host.is_empty() && Instant::now() < deadline {
            c.on_host_event(EventSet::OUT);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(reader.join().unwrap().iter().all(|&b| b == 2));
        assert_eq!(c.fwd_cnt as usize, total);
        // More than half of buf_alloc was forwarded since the guest last heard from us.
        assert!(c.has_pending_rx());
        let (h, _) = rx(&mut c, 4096).unwrap();
        assert_eq!((h.op, h.fwd_cnt), (uapi::OP_CREDIT_UPDATE, total as u32));
        assert!(!c.has_pending_rx());
    }

    #[test]
    fn credit_request_is_answered() {
        let (mut c, _host) = established();
        send(&mut c, guest_hdr(uapi::OP_CREDIT_REQUEST), &[]);
        let (h, _) = rx(&mut c, 0).unwrap();
        assert_eq!(
            (h.op, h.buf_alloc),
            (uapi::OP_CREDIT_UPDATE, CONN_BUF_ALLOC)
        );
    }

    #[test]
    fn host_eof_sends_shutdown_then_times_out() {
        let (mut c, host) = established();
        drop(host);
        c.on_host_event(EventSet::IN | EventSet::HANG_UP);
        let (h, _) = rx(&mut c, 4096).unwrap();
        assert_eq!(h.op, uapi::OP_SHUTDOWN);
        assert_eq!(h.flags, uapi::SHUTDOWN_RCV | uapi::SHUTDOWN_SEND);
        assert_eq!(c.interest(), EventSet::empty());
        // Without an answer, the connection is reset after the timeout.
        c.on_timeout(Instant::now());
        assert_eq!(
            c.state(),
            State::LocalClosed {
                shutdown_sent: true
            }
        );
        c.on_timeout(Instant::now() + SHUTDOWN_TIMEOUT);
        assert_eq!(rx(&mut c, 0).unwrap().0.op, uapi::OP_RST);
        assert!(c.is_closed());

        // The guest closing too is answered with the RST it waits for.
        let (mut c, host) = established();
        drop(host);
        c.on_host_event(EventSet::IN | EventSet::HANG_UP);
        assert_eq!(rx(&mut c, 4096).unwrap().0.op, uapi::OP_SHUTDOWN);
        send(
            &mut c,
            Header {
                flags: 3,
                ..guest_hdr(uapi::OP_SHUTDOWN)
            },
            &[],
        );
        assert_eq!(rx(&mut c, 0).unwrap().0.op, uapi::OP_RST);
        assert!(c.is_closed());
    }

    #[test]
    fn guest_send_shutdown_closes_host_write_half() {
        let (mut c, mut host) = established();
        send(&mut c, guest_hdr(uapi::OP_RW), b"bye");
        send(
            &mut c,
            Header {
                flags: uapi::SHUTDOWN_SEND,
                ..guest_hdr(uapi::OP_SHUTDOWN)
            },
            &[],
        );
        let mut v = Vec::new();
        host.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"bye");
        // The host can still answer.
        host.write_all(b"ok").unwrap();
        c.on_host_event(EventSet::IN);
        let (h, d) = rx(&mut c, 64).unwrap();
        assert_eq!((h.op, d.as_slice()), (uapi::OP_RW, &b"ok"[..]));
        // Data after SEND shutdown is a violation.
        send(&mut c, guest_hdr(uapi::OP_RW), b"x");
        assert_eq!(rx(&mut c, 0).unwrap().0.op, uapi::OP_RST);
    }

    #[test]
    fn guest_full_shutdown_resets_and_guest_rst_closes() {
        let (mut c, _host) = established();
        send(
            &mut c,
            Header {
                flags: 3,
                ..guest_hdr(uapi::OP_SHUTDOWN)
            },
            &[],
        );
        assert_eq!(rx(&mut c, 0).unwrap().0.op, uapi::OP_RST);
        assert!(c.is_closed());

        let (mut c, _host) = established();
        send(&mut c, guest_hdr(uapi::OP_RST), &[]);
        assert!(c.is_closed());
        assert!(rx(&mut c, 0).is_none());
    }

    #[test]
    fn protocol_violations_reset() {
        for op in [uapi::OP_REQUEST, uapi::OP_RESPONSE, 99] {
            let (mut c, _host) = established();
            send(&mut c, guest_hdr(op), &[]);
            assert_eq!(c.state(), State::Killed, "op {op}");
        }
        // RW before the RESPONSE.
        let (a, _host) = pair();
        let mut c = Connection::new_local(a, 3, LOCAL, 1234, Timeouts::default());
        rx(&mut c, 0).unwrap();
        send(&mut c, guest_hdr(uapi::OP_RW), b"x");
        assert_eq!(c.state(), State::Killed);
    }

    #[test]
    fn peer_init_responds_then_carries_data() {
        let (a, mut host) = pair();
        let req = Header {
            dst_port: 52,
            ..guest_hdr(uapi::OP_REQUEST)
        };
        let mut c = Connection::new_peer(a, 3, &req, Timeouts::default());
        let (h, _) = rx(&mut c, 0).unwrap();
        assert_eq!(
            (h.op, h.src_port, h.dst_port),
            (uapi::OP_RESPONSE, 52, 1234)
        );
        host.write_all(b"hi").unwrap();
        c.on_host_event(EventSet::IN);
        let (h, d) = rx(&mut c, 64).unwrap();
        assert_eq!((h.op, d.as_slice()), (uapi::OP_RW, &b"hi"[..]));
        // Nothing more to read: the speculative read finds the stream empty.
        assert!(rx(&mut c, 64).is_none());
        assert!(c.interest().contains(EventSet::IN));
    }

    #[test]
    fn header_only_rx_buffer_keeps_data_pending() {
        let (mut c, mut host) = established();
        host.write_all(b"abc").unwrap();
        c.on_host_event(EventSet::IN);
        let mut hdr = Header::default();
        assert!(c.fill_rx(&mut hdr, NONE, Instant::now()).is_none());
        assert!(c.has_pending_rx());
        let (_, d) = rx(&mut c, 64).unwrap();
        assert_eq!(d, b"abc");
    }
}

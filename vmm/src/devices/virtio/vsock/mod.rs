//! virtio-vsock with its host side on unix sockets (Firecracker's "hybrid vsock").
//!
//! The guest sees an ordinary virtio-vsock device whose only peer is the host (CID 2). On the
//! host, streams are unix sockets:
//!
//! * a host process connects to `uds_path` and writes `CONNECT <port>\n`; the device opens a
//!   connection to guest port `<port>` and, once the guest accepts, answers `OK <local port>\n`
//!   on the unix stream, which from then on carries the connection's bytes;
//! * a guest connection to host port P is forwarded to a unix socket listening at
//!   `<uds_path>_P`.
//!
//! The layout follows Firecracker's `devices/virtio/vsock`: `packet` wraps the header,
//! `connection` is one connection's state machine and flow control, `muxer` owns the
//! connection table, the host sockets and the queue of packets waiting for guest rx buffers,
//! and `device` glues all of it to the virtio queues and the event loop.
//!
//! Everything the guest or a host process sends is untrusted: connections, per-connection
//! buffers and queued control packets are bounded, every socket is non-blocking, and malformed
//! packets are answered with a reset or dropped.

mod connection;
mod device;
#[doc(hidden)]
pub mod fuzzing;
mod muxer;
pub mod packet;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use device::{Vsock, VsockError};

/// Queue size offered for each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Number of queues: rx, tx, event.
pub const NUM_QUEUES: usize = 3;
/// Index of the receive queue (device → guest).
pub const RXQ: usize = 0;
/// Index of the transmit queue (guest → device).
pub const TXQ: usize = 1;
/// Index of the event queue (unused: we never send transport events).
pub const EVQ: usize = 2;

/// The host's CID, the only peer the guest can reach.
pub const HOST_CID: u64 = 2;

/// Bytes of guest data a connection buffers for a slow host reader: the `buf_alloc` we
/// advertise to the guest, hence the most a well-behaved guest can have in flight.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// After forwarding this many bytes since the guest last heard our `fwd_cnt`, tell it
/// (CREDIT_UPDATE) so it does not stall on a stale view of our free space.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 2;
/// Largest payload of one packet in either direction (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Connections (including host connections still sending their handshake line) the device
/// holds at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Resets for packets that match no connection, waiting for rx buffers. When full, the guest's
/// transmit queue is no longer processed until the guest takes some (and, as a last resort,
/// the oldest is dropped).
pub const MAX_PENDING_RST: usize = 256;
/// Longest handshake line a host process may send (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_HANDSHAKE_LEN: usize = 32;
/// Local (host-side) ports of host-initiated connections are allocated from here up.
pub const LOCAL_PORT_BASE: u32 = 1 << 30;

/// How long a host process has to send its complete `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to answer a connection request once it was delivered.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to reset a connection after we told it the host end closed.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Wire values of the virtio-vsock header (virtio 1.2 section 5.10.6).
pub mod uapi {
    /// The only socket type we support.
    pub const TYPE_STREAM: u16 = 1;

    /// Connection request.
    pub const OP_REQUEST: u16 = 1;
    /// Connection accepted.
    pub const OP_RESPONSE: u16 = 2;
    /// Connection reset / refused.
    pub const OP_RST: u16 = 3;
    /// The sender will no longer receive and/or send (see the SHUTDOWN flags).
    pub const OP_SHUTDOWN: u16 = 4;
    /// Data.
    pub const OP_RW: u16 = 5;
    /// The sender's buf_alloc/fwd_cnt, unsolicited or on request.
    pub const OP_CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a CREDIT_UPDATE.
    pub const OP_CREDIT_REQUEST: u16 = 7;

    /// SHUTDOWN flag: the sender will receive no more data.
    pub const SHUTDOWN_RCV: u32 = 1;
    /// SHUTDOWN flag: the sender will send no more data.
    pub const SHUTDOWN_SEND: u32 = 2;
}

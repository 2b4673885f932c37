//! The wire protocol between the mvm host runtime and the agent, the guest's PID 1.
//!
//! One vsock stream connection carries everything for one container process: control messages
//! (JSON) and the process's stdin, stdout and stderr (raw bytes), multiplexed as frames. The
//! full description, including who closes what and what happens when either side dies, is in
//! `docs/PROTOCOL.md`.
//!
//! The host's side of a session, in order:
//! 1. connect, then [`host_handshake`];
//! 2. send [`HostMessage::Start`] (optionally preceded by [`HostMessage::Resize`] for a
//!    terminal's initial size);
//! 3. read [`AgentMessage::Started`] or [`AgentMessage::StartFailed`];
//! 4. meanwhile send stdin as [`Stream::Stdin`] data frames and read stdout/stderr frames;
//! 5. read [`AgentMessage::Exited`], then close the connection.
//!
//! Two ways to read frames: [`FrameReader`] pulls from a blocking [`std::io::Read`];
//! [`FrameDecoder`] is fed bytes by an event loop and yields whole frames.

pub mod boot;
mod decoder;
pub mod dns;
mod error;
mod frame;
mod handshake;
mod message;
mod reader;
pub mod warm;
mod writer;

pub use decoder::FrameDecoder;
pub use error::ProtocolError;
pub use frame::{
    AgentFrame, Frame, FrameKind, HEADER_LEN, Header, HostFrame, MAX_PAYLOAD_LEN, Stream,
    decode_header, decode_payload, encode_control, encode_data, encode_eof,
};
pub use handshake::{check_version, host_handshake};
pub use message::{
    AgentMessage, CAPABILITY_NAMES, CapabilitySets, CopyFailedKind, CopyIn, CopyInHow, CopyOut,
    Export, ExportKind, HostMessage, NetworkUp, ProcessEntry, ProcessSpec, Rlimit, StartFailedKind,
    container_exit_code,
};
pub use reader::FrameReader;
pub use writer::FrameWriter;

/// The protocol version this crate speaks; both sides refuse a peer with another one.
pub const PROTOCOL_VERSION: u32 = 2;

/// The vsock port the agent listens on unless the kernel command line says otherwise
/// (`mvm.port=`).
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// The host port the agent connects to once it is ready (`mvm.callback=`), carrying the
/// container's first session. A guest-initiated connection needs no polling while the guest
/// boots, and it works before the host could know the guest's vsock device is up.
pub const DEFAULT_CALLBACK_PORT: u32 = 1025;

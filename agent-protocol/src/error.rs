//! Everything that can go wrong reading, writing or negotiating frames.

use std::io;

/// An error of the framing layer, of message encoding, or of the handshake.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The underlying stream failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),

    /// A frame announced (or a caller asked to send) more payload than the protocol allows.
    /// The stream cannot be resynchronised after this.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The announced or requested payload length.
        len: usize,
        /// The limit, [`crate::MAX_PAYLOAD_LEN`].
        max: usize,
    },

    /// A frame header carried a kind byte this version does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownFrameKind(u8),

    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {needed} bytes)")]
    Truncated {
        /// Bytes the frame needed (header, or header plus payload).
        needed: usize,
        /// Bytes that arrived before the end of the stream.
        got: usize,
    },

    /// A control frame's payload was not a valid message. The frame itself was consumed, so
    /// the stream is still in sync and the receiver may carry on.
    #[error("malformed control message: {0}")]
    BadControl(#[source] serde_json::Error),

    /// A control message could not be serialised.
    #[error("cannot encode control message: {0}")]
    Encode(#[source] serde_json::Error),

    /// The peer closed the connection where a message was required.
    #[error("connection closed by the peer")]
    Closed,

    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The version the peer announced.
        theirs: u32,
    },

    /// The peer answered with an `Error` message.
    #[error("the agent refused: {0}")]
    Rejected(String),

    /// The peer sent a valid frame that is wrong at this point of the conversation.
    #[error("unexpected {0}")]
    Unexpected(String),
}

impl ProtocolError {
    /// Whether the stream is still in sync after this error, i.e. the next frame can still be
    /// read. Only a malformed control payload leaves it so.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, ProtocolError::BadControl(_))
    }
}

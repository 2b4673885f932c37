//! The frame: a 5-byte header (payload length, kind) and its payload.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ProtocolError;
use crate::message::{AgentMessage, HostMessage};

/// Bytes in a frame header: a little-endian `u32` payload length, then the kind byte.
pub const HEADER_LEN: usize = 5;

/// The largest payload a frame may carry. A header announcing more is an error, never an
/// allocation, so a corrupt or hostile peer cannot make the receiver reserve memory.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// What a frame's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON control message ([`HostMessage`] or [`AgentMessage`]).
    Control = 1,
    /// Bytes for the process's stdin (host to agent).
    Stdin = 2,
    /// Bytes the process wrote to stdout, or to its terminal (agent to host).
    Stdout = 3,
    /// Bytes the process wrote to stderr (agent to host).
    Stderr = 4,
    /// The container's changes, as an `Export` asked (agent to host).
    Changes = 5,
}

impl FrameKind {
    /// The kind for a header byte, if this version knows it. Zero is deliberately not a kind,
    /// so a run of zero bytes is caught as garbage.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Control),
            2 => Some(FrameKind::Stdin),
            3 => Some(FrameKind::Stdout),
            4 => Some(FrameKind::Stderr),
            5 => Some(FrameKind::Changes),
            _ => None,
        }
    }

    /// The header byte for this kind.
    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

/// One of the process's three standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Host to agent.
    Stdin,
    /// Agent to host; also carries a terminal's output.
    Stdout,
    /// Agent to host; unused (only its EOF is sent) when the process has a terminal.
    Stderr,
    /// Agent to host: the answer to an `Export` (not a process stream).
    Changes,
}

impl Stream {
    /// The frame kind that carries this stream.
    pub fn kind(self) -> FrameKind {
        match self {
            Stream::Stdin => FrameKind::Stdin,
            Stream::Stdout => FrameKind::Stdout,
            Stream::Stderr => FrameKind::Stderr,
            Stream::Changes => FrameKind::Changes,
        }
    }
}

/// A decoded frame whose control messages are of type `C`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<C> {
    /// A control message.
    Control(C),
    /// Stream bytes; an empty `data` is the end of that stream.
    Data {
        /// Which stream.
        stream: Stream,
        /// The bytes; empty means EOF.
        data: Vec<u8>,
    },
}

impl<C> Frame<C> {
    /// Whether this is the EOF marker (an empty data frame) of some stream.
    pub fn is_eof(&self) -> bool {
        matches!(self, Frame::Data { data, .. } if data.is_empty())
    }
}

/// A frame as the agent receives it from the host.
pub type HostFrame = Frame<HostMessage>;

/// A frame as the host receives it from the agent.
pub type AgentFrame = Frame<AgentMessage>;

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The payload's kind.
    pub kind: FrameKind,
    /// The payload's length, at most [`MAX_PAYLOAD_LEN`].
    pub len: usize,
}

/// Parses and validates a frame header.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(ProtocolError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    let kind = FrameKind::from_byte(bytes[4]).ok_or(ProtocolError::UnknownFrameKind(bytes[4]))?;
    Ok(Header { kind, len })
}

/// Turns a frame's payload into a [`Frame`]: control payloads are parsed as JSON `C`, data
/// payloads are taken as they are.
pub fn decode_payload<C: DeserializeOwned>(
    kind: FrameKind,
    payload: Vec<u8>,
) -> Result<Frame<C>, ProtocolError> {
    let stream = match kind {
        FrameKind::Control => {
            return serde_json::from_slice(&payload)
                .map(Frame::Control)
                .map_err(ProtocolError::BadControl);
        }
        FrameKind::Stdin => Stream::Stdin,
        FrameKind::Stdout => Stream::Stdout,
        FrameKind::Stderr => Stream::Stderr,
        FrameKind::Changes => Stream::Changes,
    };
    Ok(Frame::Data {
        stream,
        data: payload,
    })
}

fn push_header(kind: FrameKind, len: usize, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(ProtocolError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    // Cannot truncate: len <= MAX_PAYLOAD_LEN < u32::MAX.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind.as_byte());
    Ok(())
}

/// Appends one control frame carrying `msg` to `out`. On error `out` is left as it was.
pub fn encode_control<C: Serialize>(msg: &C, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let json = serde_json::to_vec(msg).map_err(ProtocolError::Encode)?;
    push_header(FrameKind::Control, json.len(), out)?;
    out.extend_from_slice(&json);
    Ok(())
}

/// Appends `data` to `out` as data frames of `stream`, split so that none exceeds
/// [`MAX_PAYLOAD_LEN`]. Empty `data` appends nothing: the end of a stream is said only with
/// [`encode_eof`], never by accident.
pub fn encode_data(stream: Stream, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_PAYLOAD_LEN) {
        // Cannot fail: a chunk is at most MAX_PAYLOAD_LEN long.
        let _ = push_header(stream.kind(), chunk.len(), out);
        out.extend_from_slice(chunk);
    }
}

/// Appends the end-of-stream marker of `stream` (an empty data frame) to `out`.
pub fn encode_eof(stream: Stream, out: &mut Vec<u8>) {
    // Cannot fail: the payload is empty.
    let _ = push_header(stream.kind(), 0, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        encode_data(Stream::Stderr, b"abc", &mut out);
        let header: [u8; HEADER_LEN] = out[..HEADER_LEN].try_into().unwrap();
        assert_eq!(
            decode_header(&header).unwrap(),
            Header {
                kind: FrameKind::Stderr,
                len: 3
            }
        );
        assert_eq!(&out[HEADER_LEN..], b"abc");
    }

    #[test]
    fn oversized_header_is_rejected_before_any_allocation() {
        let header = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(matches!(
            decode_header(&header),
            Err(ProtocolError::PayloadTooLarge { len, .. }) if len == u32::MAX as usize
        ));
        let just_over = ((MAX_PAYLOAD_LEN + 1) as u32).to_le_bytes();
        let header = [just_over[0], just_over[1], just_over[2], just_over[3], 3];
        assert!(matches!(
            decode_header(&header),
            Err(ProtocolError::PayloadTooLarge { .. })
        ));
        let exactly = (MAX_PAYLOAD_LEN as u32).to_le_bytes();
        let header = [exactly[0], exactly[1], exactly[2], exactly[3], 3];
        assert!(decode_header(&header).is_ok());
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        for kind in [0u8, 6, 0x80, 0xff] {
            assert!(matches!(
                decode_header(&[0, 0, 0, 0, kind]),
                Err(ProtocolError::UnknownFrameKind(k)) if k == kind
            ));
        }
    }

    #[test]
    fn large_data_is_split_and_empty_data_is_not_eof() {
        let mut out = Vec::new();
        encode_data(Stream::Stdout, &[], &mut out);
        assert!(out.is_empty());
        let data = vec![7u8; MAX_PAYLOAD_LEN * 2 + 10];
        encode_data(Stream::Stdout, &data, &mut out);
        assert_eq!(out.len(), data.len() + 3 * HEADER_LEN);
    }

    #[test]
    fn oversized_control_is_an_error_and_leaves_buffer_alone() {
        let big = HostMessage::Start(crate::ProcessSpec {
            args: vec!["x".repeat(MAX_PAYLOAD_LEN)],
            ..Default::default()
        });
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode_control(&big, &mut out),
            Err(ProtocolError::PayloadTooLarge { .. })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn bad_json_is_a_typed_error() {
        for payload in [&b"{"[..], b"null", b"{\"type\":5}", b"\xff\xfe", b"[]"] {
            let r = decode_payload::<HostMessage>(FrameKind::Control, payload.to_vec());
            assert!(
                matches!(r, Err(ProtocolError::BadControl(_))),
                "{payload:?} gave {r:?}"
            );
        }
    }
}

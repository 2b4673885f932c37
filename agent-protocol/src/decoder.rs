//! Incremental decoding for event loops that read whatever bytes are available.

use serde::de::DeserializeOwned;

use crate::error::ProtocolError;
use crate::frame::{Frame, HEADER_LEN, decode_header, decode_payload};

/// Collects bytes as they arrive and hands out whole frames.
///
/// The buffer holds at most one incomplete frame plus whatever was pushed after it, so a
/// caller that pushes bounded chunks and drains [`FrameDecoder::next_frame`] after each push
/// keeps it under [`crate::MAX_PAYLOAD_LEN`] plus one chunk.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    // Bytes before `start` were already handed out; compacted lazily so that draining many
    // small frames is not quadratic.
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or `None` until more bytes arrive.
    ///
    /// A malformed control payload ([`ProtocolError::BadControl`]) consumes its frame, so the
    /// caller may go on; any other error is final and is returned again on every call.
    pub fn next_frame<C: DeserializeOwned>(&mut self) -> Result<Option<Frame<C>>, ProtocolError> {
        let avail = &self.buf[self.start..];
        let Some(header_bytes) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = decode_header(header_bytes)?;
        let end = HEADER_LEN + header.len;
        let Some(payload) = avail.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += end;
        decode_payload(header.kind, payload).map(Some)
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// To call when the stream has ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(());
        }
        let needed = match avail.first_chunk::<HEADER_LEN>() {
            Some(header) => HEADER_LEN + decode_header(header)?.len,
            None => HEADER_LEN,
        };
        Err(ProtocolError::Truncated {
            needed,
            got: avail.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Stream, encode_control, encode_data, encode_eof};
    use crate::message::HostMessage;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_control(&HostMessage::Hello { version: 1 }, &mut out).unwrap();
        encode_data(Stream::Stdin, b"hello", &mut out);
        encode_eof(Stream::Stdin, &mut out);
        encode_control(&HostMessage::Signal { signal: 15 }, &mut out).unwrap();
        out
    }

    fn expected() -> Vec<Frame<HostMessage>> {
        vec![
            Frame::Control(HostMessage::Hello { version: 1 }),
            Frame::Data {
                stream: Stream::Stdin,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream: Stream::Stdin,
                data: vec![],
            },
            Frame::Control(HostMessage::Signal { signal: 15 }),
        ]
    }

    #[test]
    fn byte_at_a_time() {
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for b in sample() {
            dec.push(&[b]);
            while let Some(f) = dec.next_frame::<HostMessage>().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, expected());
        assert_eq!(dec.buffered(), 0);
        dec.finish().unwrap();
    }

    #[test]
    fn all_at_once() {
        let mut dec = FrameDecoder::new();
        dec.push(&sample());
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame::<HostMessage>().unwrap() {
            frames.push(f);
        }
        assert_eq!(frames, expected());
    }

    #[test]
    fn truncated_at_end() {
        let bytes = sample();
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..bytes.len() - 1]);
        while dec.next_frame::<HostMessage>().unwrap().is_some() {}
        assert!(matches!(dec.finish(), Err(ProtocolError::Truncated { .. })));
        let mut dec = FrameDecoder::new();
        dec.push(&[1, 0]);
        assert!(dec.next_frame::<HostMessage>().unwrap().is_none());
        assert!(matches!(
            dec.finish(),
            Err(ProtocolError::Truncated { needed: 5, got: 2 })
        ));
    }

    #[test]
    fn bad_json_is_skipped_bad_header_is_final() {
        let mut dec = FrameDecoder::new();
        dec.push(&[3, 0, 0, 0, 1, b'{', b'{', b'{']);
        encode_data(Stream::Stdin, b"x", &mut Vec::new());
        let mut ok = Vec::new();
        encode_data(Stream::Stdin, b"x", &mut ok);
        dec.push(&ok);
        assert!(matches!(
            dec.next_frame::<HostMessage>(),
            Err(ProtocolError::BadControl(_))
        ));
        assert!(matches!(
            dec.next_frame::<HostMessage>(),
            Ok(Some(Frame::Data { .. }))
        ));
        dec.push(&[0, 0, 0x20, 0, 3]);
        for _ in 0..2 {
            assert!(matches!(
                dec.next_frame::<HostMessage>(),
                Err(ProtocolError::PayloadTooLarge { .. })
            ));
        }
    }
}

//! Blocking frame reading from any [`Read`].

use std::io::{ErrorKind, Read};

use serde::de::DeserializeOwned;

use crate::error::ProtocolError;
use crate::frame::{Frame, HEADER_LEN, decode_header, decode_payload};

/// Reads frames one at a time from a blocking stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a stream. It is read without buffering beyond the current frame, so the caller
    /// may hand the stream to someone else between frames.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader { inner }
    }

    /// Reads the next frame, decoding control payloads as `C` ([`crate::AgentMessage`] on the
    /// host, [`crate::HostMessage`] on the agent). `Ok(None)` when the stream ends cleanly
    /// between frames.
    ///
    /// After [`ProtocolError::BadControl`] the stream is still in sync; after any other error
    /// it is not, and the connection should be closed.
    pub fn read_frame<C: DeserializeOwned>(&mut self) -> Result<Option<Frame<C>>, ProtocolError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                needed: HEADER_LEN,
                got,
            });
        }
        let header = decode_header(&header)?;
        // The length is already bounded by MAX_PAYLOAD_LEN; growing the buffer as bytes really
        // arrive still avoids reserving a whole MiB for a peer that then hangs up.
        let mut payload = Vec::with_capacity(header.len.min(64 * 1024));
        (&mut self.inner)
            .take(header.len as u64)
            .read_to_end(&mut payload)?;
        if payload.len() < header.len {
            return Err(ProtocolError::Truncated {
                needed: HEADER_LEN + header.len,
                got: HEADER_LEN + payload.len(),
            });
        }
        decode_payload(header.kind, payload).map(Some)
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::frame::{Stream, encode_control, encode_data, encode_eof};
    use crate::message::{AgentMessage, HostMessage};

    fn reader(bytes: Vec<u8>) -> FrameReader<Cursor<Vec<u8>>> {
        FrameReader::new(Cursor::new(bytes))
    }

    #[test]
    fn reads_frames_then_clean_eof() {
        let mut bytes = Vec::new();
        encode_control(&AgentMessage::Started { pid: 42 }, &mut bytes).unwrap();
        encode_data(Stream::Stdout, b"out", &mut bytes);
        encode_eof(Stream::Stdout, &mut bytes);
        let mut r = reader(bytes);
        assert_eq!(
            r.read_frame::<AgentMessage>().unwrap(),
            Some(Frame::Control(AgentMessage::Started { pid: 42 }))
        );
        assert_eq!(
            r.read_frame::<AgentMessage>().unwrap(),
            Some(Frame::Data {
                stream: Stream::Stdout,
                data: b"out".to_vec()
            })
        );
        let eof = r.read_frame::<AgentMessage>().unwrap().unwrap();
        assert!(eof.is_eof());
        assert_eq!(r.read_frame::<AgentMessage>().unwrap(), None);
        assert_eq!(r.read_frame::<AgentMessage>().unwrap(), None);
    }

    #[test]
    fn truncated_header_and_payload() {
        let r = reader(vec![5, 0, 0]).read_frame::<HostMessage>();
        assert!(matches!(
            r,
            Err(ProtocolError::Truncated { needed: 5, got: 3 })
        ));
        let r = reader(vec![5, 0, 0, 0, 3, b'a', b'b']).read_frame::<HostMessage>();
        assert!(matches!(
            r,
            Err(ProtocolError::Truncated { needed: 10, got: 7 })
        ));
    }

    #[test]
    fn oversized_length_is_an_error_not_an_allocation() {
        // Claims 4 GiB; must fail at the header without trying to read or reserve it.
        let r = reader(vec![0xff, 0xff, 0xff, 0xff, 3]).read_frame::<HostMessage>();
        assert!(matches!(r, Err(ProtocolError::PayloadTooLarge { .. })));
    }

    #[test]
    fn unknown_kind() {
        let r = reader(vec![0, 0, 0, 0, 9]).read_frame::<HostMessage>();
        assert!(matches!(r, Err(ProtocolError::UnknownFrameKind(9))));
    }

    #[test]
    fn bad_json_then_the_stream_goes_on() {
        let mut bytes = vec![4, 0, 0, 0, 1, b'n', b'o', b'p', b'e'];
        encode_control(&HostMessage::Resize { rows: 1, cols: 2 }, &mut bytes).unwrap();
        let mut r = reader(bytes);
        let err = r.read_frame::<HostMessage>().unwrap_err();
        assert!(err.is_recoverable(), "{err}");
        assert_eq!(
            r.read_frame::<HostMessage>().unwrap(),
            Some(Frame::Control(HostMessage::Resize { rows: 1, cols: 2 }))
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        // A tiny deterministic generator: no dev-dependency needed for a smoke fuzz.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Small lengths and valid kinds often enough to reach the payload path.
                bytes.push(if state.is_multiple_of(3) {
                    (state % 5) as u8
                } else {
                    (state >> 8) as u8
                });
            }
            let mut r = reader(bytes);
            for _ in 0..10 {
                match r.read_frame::<HostMessage>() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.is_recoverable() => {}
                    Err(_) => break,
                }
            }
        }
    }
}

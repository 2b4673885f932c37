//! Blocking frame writing to any [`Write`].

use std::io::Write;

use serde::Serialize;

use crate::error::ProtocolError;
use crate::frame::{Frame, MAX_PAYLOAD_LEN, Stream, encode_control, encode_data, encode_eof};

/// Writes frames to a blocking stream.
///
/// Each frame reaches the stream in one `write_all` call, so a writer shared between threads
/// behind a mutex never interleaves two frames. Nothing is buffered here: wrap the stream in a
/// [`std::io::BufWriter`] to batch small frames, and call [`FrameWriter::flush`].
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    /// Wraps a stream.
    pub fn new(inner: W) -> FrameWriter<W> {
        FrameWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// Sends a control message ([`crate::HostMessage`] on the host).
    pub fn write_control<C: Serialize>(&mut self, msg: &C) -> Result<(), ProtocolError> {
        self.buf.clear();
        encode_control(msg, &mut self.buf)?;
        self.inner.write_all(&self.buf)?;
        Ok(())
    }

    /// Sends stream bytes, split into frames of at most [`MAX_PAYLOAD_LEN`]. Empty `data`
    /// sends nothing; use [`FrameWriter::write_eof`] to end a stream.
    pub fn write_data(&mut self, stream: Stream, data: &[u8]) -> Result<(), ProtocolError> {
        for chunk in data.chunks(MAX_PAYLOAD_LEN) {
            self.buf.clear();
            encode_data(stream, chunk, &mut self.buf);
            self.inner.write_all(&self.buf)?;
        }
        Ok(())
    }

    /// Sends the end of `stream` (for the host: closes the process's stdin).
    pub fn write_eof(&mut self, stream: Stream) -> Result<(), ProtocolError> {
        self.buf.clear();
        encode_eof(stream, &mut self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(())
    }

    /// Sends any frame; an empty data frame is an EOF.
    pub fn write_frame<C: Serialize>(&mut self, frame: &Frame<C>) -> Result<(), ProtocolError> {
        match frame {
            Frame::Control(msg) => self.write_control(msg),
            Frame::Data { stream, data } if data.is_empty() => self.write_eof(*stream),
            Frame::Data { stream, data } => self.write_data(*stream, data),
        }
    }

    /// Flushes the wrapped stream.
    pub fn flush(&mut self) -> Result<(), ProtocolError> {
        self.inner.flush()?;
        Ok(())
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::message::HostMessage;
    use crate::reader::FrameReader;

    #[test]
    fn writer_and_reader_agree() {
        let mut w = FrameWriter::new(Vec::new());
        let frames: Vec<Frame<HostMessage>> = vec![
            Frame::Control(HostMessage::Hello { version: 1 }),
            Frame::Data {
                stream: Stream::Stdin,
                data: b"abc".to_vec(),
            },
            Frame::Data {
                stream: Stream::Stdin,
                data: vec![],
            },
        ];
        for f in &frames {
            w.write_frame(f).unwrap();
        }
        w.flush().unwrap();
        let mut r = FrameReader::new(Cursor::new(w.into_inner()));
        for f in &frames {
            assert_eq!(r.read_frame::<HostMessage>().unwrap().as_ref(), Some(f));
        }
        assert_eq!(r.read_frame::<HostMessage>().unwrap(), None);
    }

    #[test]
    fn big_writes_are_split() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_data(Stream::Stdin, &vec![1u8; MAX_PAYLOAD_LEN + 1])
            .unwrap();
        let mut r = FrameReader::new(Cursor::new(w.into_inner()));
        let mut total = 0;
        while let Some(Frame::Data { data, .. }) = r.read_frame::<HostMessage>().unwrap() {
            assert!(!data.is_empty());
            total += data.len();
        }
        assert_eq!(total, MAX_PAYLOAD_LEN + 1);
    }
}

//! zstd layers (`tar+zstd`), decoded in pure Rust with ruzstd (no C to build). ruzstd's
//! `StreamingDecoder` reads one frame; a layer may hold several (and skippable frames, as
//! zstd:chunked writes), so this reader decodes frames until the input ends.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// A reader of the concatenated frames of a zstd stream.
pub struct ZstdReader<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    /// Decodes `src`.
    pub fn new(src: R) -> Self {
        Self {
            src,
            dec: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.dec.init(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = io::copy(
                            &mut (&mut self.src).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(bad("truncated skippable frame"));
                        }
                        continue;
                    }
                    Err(e) => return Err(bad(e)),
                }
            }
            while self.dec.can_collect() < buf.len() && !self.dec.is_finished() {
                self.dec
                    .decode_blocks(
                        &mut self.src,
                        BlockDecodingStrategy::UptoBytes(buf.len().max(64 << 10)),
                    )
                    .map_err(bad)?;
            }
            let n = self.dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.dec.is_finished() {
                self.in_frame = false;
            } else {
                return Err(bad("decoder made no progress"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_concatenated_and_skippable_frames() {
        let a = zstd_frame(b"hello ");
        let b = zstd_frame(b"world");
        let mut data = a.clone();
        data.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        data.extend_from_slice(&b);
        let mut out = String::new();
        ZstdReader::new(&data[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut out = Vec::new();
        assert!(
            ZstdReader::new(&b"\x28\xb5\x2f\xfdgarbage"[..])
                .read_to_end(&mut out)
                .is_err()
        );
    }

    /// A frame holding `data` as one raw block: single-segment, content size in one byte,
    /// no checksum.
    fn zstd_frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, data.len() as u8];
        // Block header: last block, raw, size.
        let h = 1u32 | ((data.len() as u32) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }
}

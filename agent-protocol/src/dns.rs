//! The DNS relay between the guest and the container's network namespace on the host: an OCI
//! engine's embedded resolver (Docker's 127.0.0.11) listens in that namespace, which the guest
//! cannot reach by IP (a loopback address never leaves a machine). The agent answers UDP on
//! 127.0.0.11:53 in the guest and carries each query over one vsock connection to host port
//! [`DNS_RELAY_PORT`]; the host sends it to the resolver from inside the namespace and carries
//! the answer back.
//!
//! A frame is a big-endian `u16` length of what follows, a `u32` query tag the agent chose,
//! and one DNS message of at most [`MAX_DNS_MESSAGE`] bytes. The host treats every frame as
//! hostile: bounded, and the resolver it reaches is fixed on the host side.

use std::io::{self, Read, Write};

/// The host vsock port the agent's forwarder connects to.
pub const DNS_RELAY_PORT: u32 = 1053;
/// Where the forwarder listens in the guest, as Docker's embedded resolver in a container.
pub const GUEST_RESOLVER: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 11), 53);
/// The largest DNS message carried (a UDP answer with EDNS0 is at most this in practice).
pub const MAX_DNS_MESSAGE: usize = 4096;
/// Bytes of a frame before the message: the tag.
const TAG_LEN: usize = 4;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, tag: u32, message: &[u8]) -> io::Result<()> {
    if message.is_empty() || message.len() > MAX_DNS_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a DNS message of 1 to 4096 bytes",
        ));
    }
    let len = u16::try_from(TAG_LEN + message.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = Vec::with_capacity(2 + TAG_LEN + message.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&tag.to_be_bytes());
    buf.extend_from_slice(message);
    w.write_all(&buf)
}

/// Reads one frame: `None` at a clean end of the stream; an error for a frame that breaks the
/// format (too short, too long), after which the stream cannot be trusted.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u32, Vec<u8>)>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len <= TAG_LEN || len > TAG_LEN + MAX_DNS_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a DNS relay frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    let tag = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    buf.drain(..TAG_LEN);
    Ok(Some((tag, buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, 7, b"query").unwrap();
        write_frame(&mut buf, u32::MAX, &[1u8; MAX_DNS_MESSAGE]).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((7, b"query".to_vec())));
        let (tag, big) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((tag, big.len()), (u32::MAX, MAX_DNS_MESSAGE));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert!(write_frame(&mut Vec::new(), 1, b"").is_err());
        assert!(write_frame(&mut Vec::new(), 1, &[0; MAX_DNS_MESSAGE + 1]).is_err());
        // Hostile lengths: only a tag, too long, and a frame cut short.
        for bad in [
            &[0u8, 4, 0, 0, 0, 1][..],
            &[0xff, 0xff],
            &[0, 10, 0, 0, 0, 1, 2],
        ] {
            assert!(read_frame(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }
}

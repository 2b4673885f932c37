//! The virtio-vsock packet header as a plain value.
//!
//! virtio-vsock's `VsockPacket` validates descriptor chains and maps the header and data into
//! guest memory; the rest of the device works on a copied [`Header`] so that the connection
//! logic can be exercised without guest memory, and so that a header read once from guest
//! memory cannot change under our feet while we act on it.

use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::bitmap::BitmapSlice;

use super::{CONN_BUF_ALLOC, uapi};

/// A virtio-vsock packet header (all fields little-endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (`uapi::TYPE_STREAM`).
    pub type_: u16,
    /// Operation (`uapi::OP_*`).
    pub op: u16,
    /// Operation flags (SHUTDOWN).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// Copies the header out of a packet built by virtio-vsock.
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Self {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// Decodes the wire format.
    pub fn from_bytes(b: &[u8; PKT_HEADER_SIZE]) -> Self {
        // The offsets are fixed by the specification; the sub-slices have constant bounds
        // within the 44-byte array, so the conversions cannot fail.
        let u64_at = |o: usize| u64::from_le_bytes(array(&b[o..o + 8]));
        let u32_at = |o: usize| u32::from_le_bytes(array(&b[o..o + 4]));
        let u16_at = |o: usize| u16::from_le_bytes(array(&b[o..o + 2]));
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Writes this header into an rx packet's header buffer.
    pub fn write_to<B: BitmapSlice>(
        &self,
        pkt: &mut VsockPacket<'_, B>,
    ) -> Result<(), virtio_vsock::packet::Error> {
        pkt.set_header_from_raw(&self.to_bytes())
    }

    /// A reset answering `to`, a guest packet that matches no usable connection: the ports
    /// are swapped and the source CID is the one the guest addressed, so that the guest's
    /// socket recognises it; `guest_cid` is the only destination we ever send to.
    pub fn rst_reply(to: &Header, guest_cid: u64) -> Self {
        Self {
            src_cid: to.dst_cid,
            dst_cid: guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            len: 0,
            type_: uapi::TYPE_STREAM,
            op: uapi::OP_RST,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: 0,
        }
    }
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

/// Human-readable operation name for logs.
pub fn op_name(op: u16) -> &'static str {
    match op {
        uapi::OP_REQUEST => "REQUEST",
        uapi::OP_RESPONSE => "RESPONSE",
        uapi::OP_RST => "RST",
        uapi::OP_SHUTDOWN => "SHUTDOWN",
        uapi::OP_RW => "RW",
        uapi::OP_CREDIT_UPDATE => "CREDIT_UPDATE",
        uapi::OP_CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes_and_packets() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 0xdead_beef,
            len: 77,
            type_: 1,
            op: uapi::OP_RW,
            flags: 3,
            buf_alloc: 4096,
            fwd_cnt: u32::MAX,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        // Field offsets as the specification lays them out.
        let b = h.to_bytes();
        assert_eq!(&b[16..20], &1234u32.to_le_bytes());
        assert_eq!(&b[30..32], &uapi::OP_RW.to_le_bytes());

        let mut raw = [0u8; PKT_HEADER_SIZE];
        // SAFETY: `raw` outlives the packet and nothing else accesses it meanwhile.
        let mut pkt = unsafe { VsockPacket::new(&mut raw, None) }.unwrap();
        h.write_to(&mut pkt).unwrap();
        assert_eq!(Header::from_packet(&pkt), h);
    }

    #[test]
    fn rst_reply_swaps_ports() {
        let h = Header {
            src_cid: 3,
            dst_cid: 7,
            src_port: 10,
            dst_port: 20,
            op: uapi::OP_REQUEST,
            ..Default::default()
        };
        let r = Header::rst_reply(&h, 3);
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (7, 3, 20, 10)
        );
        assert_eq!(r.op, uapi::OP_RST);
        assert_eq!(op_name(r.op), "RST");
    }
}

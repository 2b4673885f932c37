//! The `virtio_net_hdr_v1` in front of every frame, checked against the negotiated features.
//!
//! Layout (little endian, virtio 1.2 section 5.1.6): flags u8, gso_type u8, hdr_len u16,
//! gso_size u16, csum_start u16, csum_offset u16, num_buffers u16. The TAP uses the same
//! layout, so the device only reads the fields that decide whether a frame may pass and
//! writes `num_buffers` (and clears what the guest did not negotiate) on receive.

use virtio_bindings::bindings::virtio_net;

use super::{ETH_HDR_LEN, F_CSUM, F_GUEST_CSUM, F_HOST_TSO4, F_HOST_TSO6, VNET_HDR_LEN};

/// Flag: the checksum at csum_start + csum_offset must be completed.
pub const FLAG_NEEDS_CSUM: u8 = virtio_net::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// Flag: the checksum was already validated.
pub const FLAG_DATA_VALID: u8 = virtio_net::VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// No segmentation.
pub const GSO_NONE: u8 = virtio_net::VIRTIO_NET_HDR_GSO_NONE as u8;
/// TCPv4 segmentation.
pub const GSO_TCPV4: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// TCPv6 segmentation.
pub const GSO_TCPV6: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// ECN bit of gso_type (needs HOST_ECN, which we do not offer).
pub const GSO_ECN: u8 = virtio_net::VIRTIO_NET_HDR_GSO_ECN as u8;
/// Offset of `num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;

/// Why a transmitted frame was refused.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a vnet header plus an Ethernet header.
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM, or a checksum position outside the frame.
    #[error("bad checksum offload request")]
    BadChecksum,
    /// A segmentation type that was not negotiated or does not exist.
    #[error("segmentation type {0:#x} not negotiated")]
    BadGso(u8),
}

/// The fields of a header the device looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// NEEDS_CSUM / DATA_VALID.
    pub flags: u8,
    /// GSO type, ECN bit included.
    pub gso_type: u8,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum goes, from csum_start.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads the header at the start of `frame` (`None` if it is shorter than a header).
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let h = frame.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Some(Self {
            flags: h[0],
            gso_type: h[1],
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }
}

/// Checks a frame from the guest (vnet header included) against the `acked` features: the
/// guest may only ask for the offloads it negotiated.
pub fn check_tx(frame: &[u8], acked: u64) -> Result<(), HeaderError> {
    if frame.len() < VNET_HDR_LEN + ETH_HDR_LEN {
        return Err(HeaderError::TooShort(frame.len()));
    }
    let h = VnetHeader::parse(frame).ok_or(HeaderError::TooShort(frame.len()))?;
    if h.flags & FLAG_NEEDS_CSUM != 0 {
        let payload = frame.len() - VNET_HDR_LEN;
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if acked & F_CSUM == 0 || end > payload {
            return Err(HeaderError::BadChecksum);
        }
    }
    let needed = match h.gso_type {
        GSO_NONE => 0,
        GSO_TCPV4 => F_HOST_TSO4,
        GSO_TCPV6 => F_HOST_TSO6,
        other => return Err(HeaderError::BadGso(other)),
    };
    // Segmentation implies a partial checksum (spec 5.1.6.2: the driver MUST set NEEDS_CSUM).
    if needed != 0 && (acked & needed == 0 || h.flags & FLAG_NEEDS_CSUM == 0) {
        return Err(HeaderError::BadGso(h.gso_type));
    }
    Ok(())
}

/// Prepares the header of a frame from the backend for the guest: sets `num_buffers` and, if
/// the guest did not negotiate GUEST_CSUM, clears the checksum flags it cannot interpret.
/// `frame` must hold at least a header.
pub fn fix_rx(frame: &mut [u8], acked: u64, num_buffers: u16) {
    if frame.len() < VNET_HDR_LEN {
        return;
    }
    if acked & F_GUEST_CSUM == 0 {
        // The TAP marks DATA_VALID whatever the offloads; without GUEST_CSUM it means nothing.
        frame[0] &= !(FLAG_NEEDS_CSUM | FLAG_DATA_VALID);
    }
    frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&num_buffers.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, gso: u8, csum_start: u16, csum_offset: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0] = flags;
        f[1] = gso;
        f[6..8].copy_from_slice(&csum_start.to_le_bytes());
        f[8..10].copy_from_slice(&csum_offset.to_le_bytes());
        f
    }

    #[test]
    fn plain_frames_pass_without_features() {
        assert_eq!(check_tx(&frame(0, 0, 0, 0, 60), 0), Ok(()));
        assert_eq!(
            check_tx(&frame(0, 0, 0, 0, 20), 0),
            Err(HeaderError::TooShort(20))
        );
    }

    #[test]
    fn offloads_need_their_features() {
        let csum = frame(FLAG_NEEDS_CSUM, 0, 34, 16, 100);
        assert_eq!(check_tx(&csum, 0), Err(HeaderError::BadChecksum));
        assert_eq!(check_tx(&csum, F_CSUM), Ok(()));
        // Checksum field past the end of the frame.
        let far = frame(FLAG_NEEDS_CSUM, 0, 80, 16, 100);
        assert_eq!(check_tx(&far, F_CSUM), Err(HeaderError::BadChecksum));

        let tso = frame(FLAG_NEEDS_CSUM, GSO_TCPV4, 34, 16, 100);
        assert_eq!(check_tx(&tso, F_CSUM), Err(HeaderError::BadGso(GSO_TCPV4)));
        assert_eq!(check_tx(&tso, F_CSUM | F_HOST_TSO4), Ok(()));
        let tso6 = frame(FLAG_NEEDS_CSUM, GSO_TCPV6, 54, 16, 100);
        assert_eq!(
            check_tx(&tso6, F_CSUM | F_HOST_TSO4),
            Err(HeaderError::BadGso(GSO_TCPV6))
        );
        let no_csum = frame(0, GSO_TCPV4, 0, 0, 100);
        assert!(check_tx(&no_csum, F_CSUM | F_HOST_TSO4).is_err());
        let ecn = frame(FLAG_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 34, 16, 100);
        assert!(check_tx(&ecn, u64::MAX).is_err());
        let udp = frame(FLAG_NEEDS_CSUM, 3, 34, 6, 100);
        assert!(check_tx(&udp, u64::MAX).is_err());
    }

    #[test]
    fn rx_header_gets_num_buffers_and_loses_unnegotiated_flags() {
        let mut f = frame(FLAG_DATA_VALID | FLAG_NEEDS_CSUM, 0, 0, 0, 60);
        f[10] = 0xff;
        fix_rx(&mut f, 0, 3);
        assert_eq!(f[0], 0);
        assert_eq!(&f[10..12], &[3, 0]);
        let mut f = frame(FLAG_DATA_VALID, 0, 0, 0, 60);
        fix_rx(&mut f, F_GUEST_CSUM, 1);
        assert_eq!(f[0], FLAG_DATA_VALID);
        let mut short = [0u8; 4];
        fix_rx(&mut short, 0, 1);
    }
}

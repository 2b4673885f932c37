//! virtio-net over a host TAP device.
//!
//! The guest sees a virtio-net device with a MAC address, a link that is always up, two
//! queues (receive and transmit) and, when the TAP can do them, checksum and TCP segmentation
//! offloads in both directions. Frames cross the TAP with a 12-byte `virtio_net_hdr_v1` in
//! front (IFF_VNET_HDR), the same header the guest uses, so offload metadata passes through
//! untouched.
//!
//! The layout follows Firecracker's `devices/virtio/net`: `backend` is what the device reads
//! frames from and writes them to (`tap` is the real one; a unix datagram socket pair stands
//! in for it in tests and fuzzing), `chain` validates a guest descriptor chain, `header` checks
//! the virtio-net header against the negotiated features, `rx` and `tx` move one direction
//! each, and `device` glues them to the virtqueues and the event loop.
//!
//! Everything the guest puts in a queue is untrusted: every descriptor's direction, length
//! and address is checked, chains are bounded in descriptors and bytes, and a chain that fails
//! is returned to the guest with a used length of 0 (its frame dropped) instead of stopping
//! the device.

pub mod backend;
mod chain;
mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
mod rx;
pub mod tap;
#[cfg(test)]
mod tests;
mod tx;

pub use backend::{Backend, DatagramBackend};
pub use chain::ChainError;
pub use device::{Net, NetError, NetStats};
pub use tap::{Tap, TapError};

use virtio_bindings::bindings::virtio_net;

/// Queue size offered for both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Number of queues: rx, tx (no control queue, no multiqueue).
pub const NUM_QUEUES: usize = 2;
/// Index of the receive queue (device → guest).
pub const RXQ: usize = 0;
/// Index of the transmit queue (guest → device).
pub const TXQ: usize = 1;

/// Size of `virtio_net_hdr_v1` (with `num_buffers`): the header of every frame in both
/// directions once VIRTIO_F_VERSION_1 is negotiated, and the TAP's vnet header size.
pub const VNET_HDR_LEN: usize = 12;
/// Bytes of an Ethernet header: the shortest frame worth sending.
pub const ETH_HDR_LEN: usize = 14;
/// Largest frame, header included: a 64 KiB TSO packet plus Ethernet and vnet headers
/// (Firecracker's and Linux's big-packet bound).
pub const MAX_FRAME_LEN: usize = 65562;
/// Most descriptors accepted in one chain. Linux uses at most MAX_SKB_FRAGS + 2 (19 by
/// default, 47 at most) for a frame; anything longer is a driver bug or an attack.
pub const MAX_CHAIN_DESCS: usize = 64;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Feature: the device accepts frames with a partial checksum (NEEDS_CSUM).
pub const F_CSUM: u64 = bit(virtio_net::VIRTIO_NET_F_CSUM);
/// Feature: the driver accepts frames with a partial checksum.
pub const F_GUEST_CSUM: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_CSUM);
/// Feature: the configuration space holds the MAC address.
pub const F_MAC: u64 = bit(virtio_net::VIRTIO_NET_F_MAC);
/// Feature: the driver accepts TCPv4 segmentation-offload frames.
pub const F_GUEST_TSO4: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO4);
/// Feature: the driver accepts TCPv6 segmentation-offload frames.
pub const F_GUEST_TSO6: u64 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO6);
/// Feature: the device accepts TCPv4 segmentation-offload frames.
pub const F_HOST_TSO4: u64 = bit(virtio_net::VIRTIO_NET_F_HOST_TSO4);
/// Feature: the device accepts TCPv6 segmentation-offload frames.
pub const F_HOST_TSO6: u64 = bit(virtio_net::VIRTIO_NET_F_HOST_TSO6);
/// Feature: a received frame may span several receive buffers (`num_buffers`).
pub const F_MRG_RXBUF: u64 = bit(virtio_net::VIRTIO_NET_F_MRG_RXBUF);
/// Feature: the configuration space holds the link status.
pub const F_STATUS: u64 = bit(virtio_net::VIRTIO_NET_F_STATUS);

/// Link status bit of the configuration space.
pub const S_LINK_UP: u16 = virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// A MAC address.
pub type MacAddr = [u8; 6];

//! Receive: one frame from the backend into one or more guest receive buffers.
//!
//! Without VIRTIO_NET_F_MRG_RXBUF a frame must fit in a single chain; with it, the frame is
//! spread over as many chains as it needs and the header's `num_buffers` says how many. The
//! chains of one frame are taken from the ring first and the frame is only written once they
//! hold all of it; if the guest has not posted enough, the chains are given back (the ring
//! position is rewound) and the frame waits for more buffers.
//!
//! The used entries of a frame are published together, with a single update of the used
//! index: a Linux driver that sees the first buffer of a merged frame before the others
//! counts the frame as broken and drops it. virtio-queue's `add_used` publishes each entry on
//! its own, hence `publish_used` below.

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::chain::{self, Buffers, Direction};
use super::{F_MRG_RXBUF, VNET_HDR_LEN, header};

/// What became of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into `buffers` guest buffers.
    Delivered {
        /// Chains used for the frame.
        buffers: usize,
        /// Refused chains returned with length 0 on the way.
        bad_chains: usize,
    },
    /// The guest has not posted enough buffers: the frame must wait.
    NoBuffers {
        /// Refused chains returned with length 0 (the used ring changed).
        bad_chains: usize,
    },
    /// The frame can never be delivered (too large for the guest's buffers) and was dropped.
    Dropped {
        /// Refused chains returned with length 0.
        bad_chains: usize,
        /// Whether anything was added to the used ring.
        used_changed: bool,
    },
}

impl RxOutcome {
    /// Whether the used ring changed (the guest may need an interrupt).
    pub fn used_changed(&self) -> bool {
        match *self {
            RxOutcome::Delivered { .. } => true,
            RxOutcome::NoBuffers { bad_chains } => bad_chains > 0,
            RxOutcome::Dropped { used_changed, .. } => used_changed,
        }
    }
}

/// Places `frame` (vnet header first, at least [`VNET_HDR_LEN`] bytes) in the receive queue.
/// The header's `num_buffers` (and unnegotiated flags) are fixed up in place.
pub fn deliver(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
    acked: u64,
) -> RxOutcome {
    let mergeable = acked & F_MRG_RXBUF != 0;
    let size = queue.size();
    let start = queue.next_avail();
    let mut bad: Vec<u16> = Vec::new();
    let mut good: Vec<Buffers> = Vec::new();
    let mut capacity = 0usize;
    let mut popped = 0usize;
    let mut exhausted = false;
    while capacity < frame.len() && (mergeable || good.is_empty()) {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            exhausted = true;
            break;
        };
        popped += 1;
        let head = chain.head_index();
        match chain::validate(chain, Direction::DeviceWrites, VNET_HDR_LEN, usize::MAX) {
            Ok(b) => {
                capacity += b.len;
                good.push(b);
            }
            Err(e) => {
                tracing::debug!("virtio-net: refused rx chain {head}: {e}");
                // A head outside the table cannot be named in the used ring.
                if head < size {
                    bad.push(head);
                }
            }
        }
    }
    let bad_chains = bad.len();

    if capacity >= frame.len() {
        // `good` is non-empty here since frame.len() > 0.
        return match write_frame(mem, frame, &good, acked) {
            Ok(lens) => {
                let mut used = zeros(bad.iter().copied());
                used.extend(good.iter().map(|b| b.head).zip(lens));
                publish(queue, mem, &used);
                RxOutcome::Delivered {
                    buffers: good.len(),
                    bad_chains,
                }
            }
            Err(()) => {
                let used = zeros(bad.iter().copied().chain(good.iter().map(|b| b.head)));
                publish(queue, mem, &used);
                RxOutcome::Dropped {
                    bad_chains,
                    used_changed: true,
                }
            }
        };
    }

    if good.is_empty() {
        // Only refused chains (or none): return them and wait for usable ones.
        publish(queue, mem, &zeros(bad.iter().copied()));
        return RxOutcome::NoBuffers { bad_chains };
    }

    if !mergeable {
        // The one buffer is too small for this frame: keep the buffer, drop the frame.
        queue.go_to_previous_position();
        publish(queue, mem, &zeros(bad.iter().copied()));
        return RxOutcome::Dropped {
            bad_chains,
            used_changed: bad_chains > 0,
        };
    }

    debug_assert!(exhausted);
    if popped >= usize::from(size) {
        // Every buffer the ring can hold is not enough: this frame will never fit.
        let used = zeros(bad.iter().copied().chain(good.iter().map(|b| b.head)));
        publish(queue, mem, &used);
        return RxOutcome::Dropped {
            bad_chains,
            used_changed: true,
        };
    }
    // Give everything back and wait for the guest to post more buffers.
    queue.set_next_avail(start);
    RxOutcome::NoBuffers { bad_chains: 0 }
}

/// Used entries of length 0 for `heads`: chains handed back without data.
fn zeros(heads: impl Iterator<Item = u16>) -> Vec<(u16, u32)> {
    heads.map(|h| (h, 0)).collect()
}

/// Writes the frame across `bufs` in order; returns the bytes written to each.
fn write_frame(
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
    bufs: &[Buffers],
    acked: u64,
) -> Result<Vec<u32>, ()> {
    // At most QUEUE_SIZE (256) chains, so the count always fits.
    let n = u16::try_from(bufs.len()).map_err(|_| ())?;
    header::fix_rx(frame, acked, n);
    let mut off = 0usize;
    let mut lens = Vec::with_capacity(bufs.len());
    for b in bufs {
        let mut written = 0usize;
        for &(addr, len) in &b.segments {
            if off == frame.len() {
                break;
            }
            let take = (len as usize).min(frame.len() - off);
            mem.write_slice(&frame[off..off + take], addr)
                .map_err(|e| {
                    tracing::warn!("virtio-net: rx write to guest memory failed: {e}");
                })?;
            off += take;
            written += take;
        }
        // `written` <= the chain's length, which fit a u32 descriptor length sum bounded by
        // MAX_FRAME_LEN here, so the conversion cannot fail.
        lens.push(u32::try_from(written).map_err(|_| ())?);
    }
    Ok(lens)
}

fn publish(queue: &mut Queue, mem: &GuestMemoryMmap, used: &[(u16, u32)]) {
    if let Err(e) = publish_used(queue, mem, used) {
        tracing::warn!("virtio-net: cannot update the rx used ring: {e}");
    }
}

/// Appends `used` (head, length) entries to the used ring and makes them visible with one
/// release store of the used index. Heads must be below the queue size.
pub fn publish_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    used: &[(u16, u32)],
) -> Result<(), vm_memory::GuestMemoryError> {
    if used.is_empty() {
        return Ok(());
    }
    let size = queue.size();
    let ring = GuestAddress(queue.used_ring());
    let start = queue.next_used();
    let overflow = || vm_memory::GuestMemoryError::InvalidGuestAddress(ring);
    for (i, &(head, len)) in used.iter().enumerate() {
        // A ready queue never has size 0 (virtio-queue refuses it); fail rather than divide.
        let slot = start
            .wrapping_add(i as u16)
            .checked_rem(size)
            .ok_or_else(overflow)?;
        // Used ring layout: flags u16, idx u16, then (id u32, len u32) elements.
        let addr = ring
            .0
            .checked_add(4 + 8 * u64::from(slot))
            .ok_or_else(overflow)?;
        mem.write_obj([u32::from(head).to_le(), len.to_le()], GuestAddress(addr))?;
    }
    let next = start.wrapping_add(used.len() as u16);
    let idx_addr = ring.0.checked_add(2).ok_or_else(overflow)?;
    // Release: the elements above are visible before the index that publishes them.
    mem.store(next.to_le(), GuestAddress(idx_addr), Ordering::Release)?;
    queue.set_next_used(next);
    Ok(())
}

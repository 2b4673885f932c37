//! Transmit: each guest chain (vnet header + frame) gathered and written to the backend.
//!
//! Every chain is returned to the guest (used length 0, the device writes nothing into a
//! transmit buffer) whether its frame was sent, refused or dropped: a refused chain must not
//! stay in the ring, and a network may drop frames anyway. The backend never blocks; a frame
//! it cannot take right now (a full socket buffer) is dropped as a busy NIC would.

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::backend::Backend;
use super::chain::{self, Direction};
use super::device::NetStats;
use super::{ETH_HDR_LEN, MAX_FRAME_LEN, VNET_HDR_LEN, header};

/// Sends every frame waiting in `queue`; returns whether any chain was used.
pub fn process(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    backend: &mut dyn Backend,
    buf: &mut Vec<u8>,
    acked: u64,
    stats: &mut NetStats,
) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        match chain::validate(
            chain,
            Direction::DeviceReads,
            VNET_HDR_LEN + ETH_HDR_LEN,
            MAX_FRAME_LEN,
        ) {
            Ok(bufs) => {
                buf.clear();
                buf.resize(bufs.len, 0);
                let mut off = 0usize;
                let mut ok = true;
                for &(addr, len) in &bufs.segments {
                    let end = off + len as usize;
                    if let Err(e) = mem.read_slice(&mut buf[off..end], addr) {
                        tracing::debug!("virtio-net: tx read from guest memory failed: {e}");
                        ok = false;
                        break;
                    }
                    off = end;
                }
                if ok {
                    send(backend, buf, acked, stats);
                } else {
                    stats.bad_chains += 1;
                }
            }
            Err(e) => {
                tracing::debug!("virtio-net: refused tx chain {head}: {e}");
                stats.bad_chains += 1;
            }
        }
        match queue.add_used(mem, head, 0) {
            Ok(()) => used = true,
            // A head outside the table: nothing to return it to.
            Err(e) => tracing::debug!("virtio-net: cannot return tx chain {head}: {e}"),
        }
    }
    used
}

fn send(backend: &mut dyn Backend, frame: &[u8], acked: u64, stats: &mut NetStats) {
    if let Err(e) = header::check_tx(frame, acked) {
        tracing::debug!("virtio-net: refused tx frame: {e}");
        stats.tx_dropped += 1;
        return;
    }
    loop {
        match backend.send(frame) {
            Ok(_) => {
                stats.tx_frames += 1;
                stats.tx_bytes += (frame.len() - VNET_HDR_LEN) as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // WouldBlock (full queue), EIO (TAP down), EINVAL (kernel refused the header).
                tracing::debug!("virtio-net: backend dropped a tx frame: {e}");
                stats.tx_dropped += 1;
            }
        }
        return;
    }
}

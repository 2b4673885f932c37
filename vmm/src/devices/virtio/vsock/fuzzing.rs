//! Entry points for fuzz targets: arbitrary bytes become guest memory holding the device's
//! queues, and the device processes them. Not part of the device's API.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::Vsock;
use crate::devices::virtio::{IrqTrigger, VirtioDevice};

/// Guest memory size; the input is copied to its start.
const MEM_SIZE: usize = 0x1_0000;
/// Queue size used by the fuzz layout.
const FUZZ_QUEUE_SIZE: u16 = 16;

/// Where the queues live in the fuzz memory. Descriptor tables and available rings are
/// input bytes; everything past 0x800 is free for buffers the descriptors point to.
pub mod layout {
    /// Transmit descriptor table (16 descriptors of 16 bytes).
    pub const TX_DESC: u64 = 0x000;
    /// Transmit available ring: flags, idx, 16 entries.
    pub const TX_AVAIL: u64 = 0x100;
    /// Transmit used ring (cleared before the run).
    pub const TX_USED: u64 = 0x200;
    /// Receive descriptor table.
    pub const RX_DESC: u64 = 0x400;
    /// Receive available ring.
    pub const RX_AVAIL: u64 = 0x500;
    /// Receive used ring (cleared before the run).
    pub const RX_USED: u64 = 0x600;
    /// Size of a used ring with 16 entries (flags, idx, ring, avail_event).
    pub const USED_SIZE: usize = 4 + 16 * 8 + 2;
}

fn queue(desc: u64, avail: u64, used: u64) -> Option<Queue> {
    let mut q = Queue::new(FUZZ_QUEUE_SIZE).ok()?;
    q.set_size(FUZZ_QUEUE_SIZE);
    q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
    q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
    q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
    q.set_ready(true);
    Some(q)
}

/// Builds guest memory from `data` (see [`layout`]), activates a vsock device (guest CID 3)
/// on it and runs the tx path, then the rx path for whatever it queued. Any panic is a bug.
pub fn fuzz_tx_chain(data: &[u8]) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else {
        return;
    };
    let n = data.len().min(MEM_SIZE);
    if mem.write_slice(&data[..n], GuestAddress(0)).is_err() {
        return;
    }
    // The used rings belong to the device; a driver starts them zeroed.
    let zero = [0u8; layout::USED_SIZE];
    for used in [layout::TX_USED, layout::RX_USED] {
        if mem.write_slice(&zero, GuestAddress(used)).is_err() {
            return;
        }
    }
    let (Some(rxq), Some(txq), Some(evq)) = (
        queue(layout::RX_DESC, layout::RX_AVAIL, layout::RX_USED),
        queue(layout::TX_DESC, layout::TX_AVAIL, layout::TX_USED),
        Queue::new(FUZZ_QUEUE_SIZE).ok(),
    ) else {
        return;
    };
    let path: PathBuf = std::env::temp_dir().join(format!(
        "mvm-vsock-fuzz-{}-{}.sock",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let Ok(mut dev) = Vsock::new(3, &path) else {
        return;
    };
    let Ok(evt) = EventFd::new(libc::EFD_NONBLOCK) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    if dev
        .activate(mem, vec![rxq, txq, evq], Arc::new(IrqTrigger::new(evt)))
        .is_ok()
    {
        dev.handle_queue_event(super::TXQ);
        // Whatever guest connections were opened (none should be: nothing listens) and
        // whatever the host sockets report.
        dev.handle_backend_event();
        dev.reset();
    }
    drop(dev);
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::Header;
    use crate::devices::virtio::vsock::uapi;

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn desc(buf: &mut [u8], table: u64, i: usize, addr: u64, len: u32, flags: u16, next: u16) {
        let o = table as usize + i * 16;
        buf[o..o + 8].copy_from_slice(&addr.to_le_bytes());
        buf[o + 8..o + 12].copy_from_slice(&len.to_le_bytes());
        buf[o + 12..o + 14].copy_from_slice(&flags.to_le_bytes());
        buf[o + 14..o + 16].copy_from_slice(&next.to_le_bytes());
    }

    fn avail(buf: &mut [u8], ring: u64, heads: &[u16]) {
        let o = ring as usize;
        buf[o..o + 2].copy_from_slice(&0u16.to_le_bytes());
        buf[o + 2..o + 4].copy_from_slice(&(heads.len() as u16).to_le_bytes());
        for (i, h) in heads.iter().enumerate() {
            buf[o + 4 + 2 * i..o + 6 + 2 * i].copy_from_slice(&h.to_le_bytes());
        }
    }

    #[test]
    fn random_inputs_do_not_panic() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..200 {
            let len = (rng.next() % 0x1200) as usize;
            let mut input = rng.bytes(len);
            if round % 2 == 0 && input.len() > 0x600 {
                // Keep avail idx small so that chains are actually parsed.
                let idx = (rng.next() % 17) as u16;
                let o = layout::TX_AVAIL as usize + 2;
                input[o..o + 2].copy_from_slice(&idx.to_le_bytes());
                let o = layout::RX_AVAIL as usize + 2;
                input[o..o + 2].copy_from_slice(&idx.to_le_bytes());
            }
            fuzz_tx_chain(&input);
        }
        fuzz_tx_chain(&[]);
        fuzz_tx_chain(&[0xff; MEM_SIZE + 10]);
    }

    #[test]
    fn structured_input_exercises_the_packet_paths() {
        let mut mem = vec![0u8; 0x4000];
        let hdr = |op: u16, len: u32, dst_cid: u64| Header {
            src_cid: 3,
            dst_cid,
            src_port: 99,
            dst_port: 52,
            len,
            type_: uapi::TYPE_STREAM,
            op,
            buf_alloc: 4096,
            ..Default::default()
        };
        let put = |mem: &mut Vec<u8>, at: usize, h: Header| {
            mem[at..at + 44].copy_from_slice(&h.to_bytes());
        };
        put(&mut mem, 0x1000, hdr(uapi::OP_REQUEST, 0, 2)); // nothing listens: RST
        put(&mut mem, 0x1100, hdr(uapi::OP_RW, 5000, 2)); // len beyond its descriptor
        put(&mut mem, 0x1200, hdr(99, 0, 2)); // unknown op
        put(&mut mem, 0x1300, hdr(uapi::OP_RW, 4, 7)); // unknown CID
        desc(&mut mem, layout::TX_DESC, 0, 0x1000, 44, 0, 0);
        desc(&mut mem, layout::TX_DESC, 1, 0x1100, 44, 1, 2);
        desc(&mut mem, layout::TX_DESC, 2, 0x2000, 16, 0, 0);
        desc(&mut mem, layout::TX_DESC, 3, 0x1200, 44, 0, 0);
        desc(&mut mem, layout::TX_DESC, 4, 0x1300, 48, 0, 0);
        desc(&mut mem, layout::TX_DESC, 5, 0x1300, 10, 0, 0); // header too short
        desc(&mut mem, layout::TX_DESC, 6, 0xffff_0000, 44, 0, 0); // outside memory
        avail(&mut mem, layout::TX_AVAIL, &[0, 1, 3, 4, 5, 6]);
        for i in 0..4 {
            desc(
                &mut mem,
                layout::RX_DESC,
                i,
                0x3000 + 0x100 * i as u64,
                0x100,
                2,
                0,
            );
        }
        avail(&mut mem, layout::RX_AVAIL, &[0, 1, 2, 3]);
        fuzz_tx_chain(&mem);
    }
}

//! Entry point for the block fuzz target: arbitrary bytes become guest memory holding a
//! request queue, and the device processes every chain in it. Not part of the device's API.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::Block;
use crate::devices::virtio::{IrqTrigger, VirtioDevice};

/// Guest memory size; the input is copied to its start.
const MEM_SIZE: usize = 0x1_0000;
/// Queue size of the fuzz layout.
const QUEUE_SIZE: u16 = 16;
/// Descriptor table (input bytes).
const DESC: u64 = 0x000;
/// Available ring (input bytes).
const AVAIL: u64 = 0x100;
/// Used ring (zeroed before the run).
const USED: u64 = 0x200;

fn backing_file() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"mvm-blk-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(64 * 512).ok()?;
    Some(f)
}

/// Builds guest memory from `data`, activates a 64-sector disk on it (read-only when the first
/// byte is odd) and processes the queue. Any panic or hang is a bug.
pub fn fuzz_request_queue(data: &[u8]) {
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else {
        return;
    };
    let n = data.len().min(MEM_SIZE);
    if mem.write_slice(&data[..n], GuestAddress(0)).is_err()
        || mem
            .write_slice(&[0u8; 4 + 8 * 16 + 2], GuestAddress(USED))
            .is_err()
    {
        return;
    }
    let Some(file) = backing_file() else { return };
    let read_only = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(mut dev) = Block::from_file(file, read_only, Some("fuzz")) else {
        return;
    };
    let Ok(mut q) = Queue::new(QUEUE_SIZE) else {
        return;
    };
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    let Ok(evt) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    if dev
        .activate(mem, vec![q], Arc::new(IrqTrigger::new(evt)))
        .is_err()
    {
        return;
    }
    dev.process_queue();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_inputs_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 16, 300, 1024, 4096, 70_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            fuzz_request_queue(&data);
        }
    }
}

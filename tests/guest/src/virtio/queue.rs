//! A split virtqueue, driver side.
//!
//! Callers own descriptor numbering (each device uses fixed descriptor slots, so there is
//! no free list): they fill descriptors with `set_desc`, publish a chain head with
//! `submit`, and poll `pop_used`. Everything is single-threaded and polled.

use super::mmio::{Mmio, QUEUE_NOTIFY};
use core::sync::atomic::{Ordering, fence};

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

pub struct Queue {
    mmio: Mmio,
    index: u16,
    size: u16,
    desc: *mut Desc,
    /// Avail ring: flags u16, idx u16, ring[size] u16, used_event u16.
    avail: *mut u16,
    /// Used ring: flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16.
    used: *mut u8,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    /// Allocates the three ring areas (zeroed) for `size` entries.
    pub fn new(mmio: Mmio, index: u16, size: u16) -> Option<Queue> {
        let n = size as usize;
        let desc = crate::arena::alloc(16 * n, 64, true)?.cast::<Desc>();
        let avail = crate::arena::alloc(6 + 2 * n, 64, true)?.cast::<u16>();
        let used = crate::arena::alloc(6 + 8 * n, 64, true)?;
        Some(Queue {
            mmio,
            index,
            size,
            desc,
            avail,
            used,
            next_avail: 0,
            last_used: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Physical addresses of descriptor table, avail ring and used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc as u64, self.avail as u64, self.used as u64)
    }

    /// Fills descriptor `i` (i < size; callers use fixed slots below size).
    pub fn set_desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        assert!(i < self.size, "descriptor index out of range");
        // SAFETY: i < size, so the write is inside the table allocated in new(); the
        // device only reads descriptors of chains we have submitted and not yet got back,
        // and callers never rewrite those.
        unsafe {
            self.desc.add(i as usize).write_volatile(Desc {
                addr,
                len,
                flags,
                next,
            })
        };
    }

    /// Publishes the chain starting at `head` and notifies the device.
    pub fn submit(&mut self, head: u16) {
        self.push(head);
        self.notify();
    }

    /// Publishes a chain without notifying (batching; call `notify` afterwards).
    pub fn push(&mut self, head: u16) {
        let slot = (self.next_avail % self.size) as usize;
        // SAFETY: slot < size, inside the avail ring allocated in new().
        unsafe { self.avail.add(2 + slot).write_volatile(head) };
        self.next_avail = self.next_avail.wrapping_add(1);
        // Descriptors and the ring entry must be visible before the new index.
        fence(Ordering::SeqCst);
        // SAFETY: idx field of the avail ring.
        unsafe { self.avail.add(1).write_volatile(self.next_avail) };
    }

    pub fn notify(&self) {
        // The index must be visible before the device looks.
        fence(Ordering::SeqCst);
        self.mmio.write(QUEUE_NOTIFY, self.index as u32);
    }

    /// The next used element (id, len), if the device has returned one. The id comes from
    /// the device: callers must validate it.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        // SAFETY: idx field of the used ring allocated in new().
        let idx = unsafe { (self.used.add(2) as *const u16).read_volatile() };
        if idx == self.last_used {
            return None;
        }
        // The element must not be read before the index that covers it.
        fence(Ordering::SeqCst);
        let slot = (self.last_used % self.size) as usize;
        // SAFETY: slot < size, so the 8-byte element is inside the used ring.
        let (id, len) = unsafe {
            let e = self.used.add(4 + 8 * slot);
            (
                (e as *const u32).read_volatile(),
                (e.add(4) as *const u32).read_volatile(),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }
}

//! A bump allocator over a static region, for virtqueues and DMA buffers.
//!
//! Nothing is ever freed: devices are set up once per boot. The region lives in .noinit
//! (see link.ld), so it starts with whatever the VMM left there; `alloc` zeroes what it
//! hands out when asked to, and physical = virtual, so an address from here can go
//! straight into a descriptor.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

const SIZE: usize = 512 * 1024;

#[repr(C, align(4096))]
struct Region(MaybeUninit<[u8; SIZE]>);

#[unsafe(link_section = ".bss.noinit.arena")]
static mut REGION: Region = Region(MaybeUninit::uninit());
static USED: AtomicUsize = AtomicUsize::new(0);

/// Returns `size` bytes aligned to `align` (a power of two), zeroed if `zero`, or None
/// when the region is exhausted. Buffers the device fills before we read them need no
/// zeroing, which spares touching their pages early.
pub fn alloc(size: usize, align: usize, zero: bool) -> Option<*mut u8> {
    // The guest is single-threaded; the atomic just avoids a `static mut` counter.
    let used = USED.load(Ordering::Relaxed);
    let start = (used + align - 1) & !(align - 1);
    let end = start.checked_add(size)?;
    if end > SIZE {
        return None;
    }
    USED.store(end, Ordering::Relaxed);
    // SAFETY: start..end lies inside REGION and is handed out once, so no other pointer
    // aliases it; `&raw mut` takes the address without creating a reference.
    let p = unsafe { (&raw mut REGION).cast::<u8>().add(start) };
    if zero {
        // SAFETY: p..p+size is ours (above).
        unsafe { p.write_bytes(0, size) };
    }
    Some(p)
}

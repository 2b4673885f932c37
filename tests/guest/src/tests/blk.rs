//! virtio-blk checks. Each builds its data in static DMA buffers and only looks at them
//! once the device has returned the request.

use crate::blk::{
    Blk, Dir, F_FLUSH, ID_LEN, S_IOERR, S_OK, S_UNSUPP, SECTOR, T_FLUSH, T_GET_ID, T_IN, T_OUT,
};
use crate::cmdline::Disk;
use crate::report::{Bytes, Check, Msg, report};
use crate::time::Deadline;
use crate::virtio::mmio::{INT_VRING, INTERRUPT_ACK, INTERRUPT_STATUS};
use core::mem::MaybeUninit;

/// Sectors the host pre-fills (blk_pattern) and the guest writes (blk_write).
const PATTERN_SECTORS: u64 = 64;
const BUF_LEN: usize = PATTERN_SECTORS as usize * SECTOR;
/// The benchmark stays clear of the sectors the pattern tests use.
const BENCH_FIRST_SECTOR: u64 = 128;
const BENCH_IO: usize = 4096;
/// Request type no device implements.
const T_BOGUS: u32 = 0x55;

#[repr(C, align(4096))]
struct Buf([u8; BUF_LEN]);

// In .noinit (link.ld): every check fills what it later reads, so the pages are only
// touched by checks that use them.
#[unsafe(link_section = ".bss.noinit.blk_data")]
static mut DATA: MaybeUninit<Buf> = MaybeUninit::uninit();
#[unsafe(link_section = ".bss.noinit.blk_saved")]
static mut SAVED: MaybeUninit<Buf> = MaybeUninit::uninit();

fn data() -> *mut u8 {
    (&raw mut DATA).cast()
}

/// The DMA buffer as a slice.
///
/// # Safety
/// No request using the buffer may be in flight, the slice must be dropped before the
/// next request (checks are sequential, so each borrow ends before the next I/O), and the
/// bytes must have been written (by a `fill` or by the device) before they are read.
unsafe fn data_slice(len: usize) -> &'static mut [u8] {
    // SAFETY: per the contract, nothing else (device or code) uses DATA meanwhile.
    unsafe { core::slice::from_raw_parts_mut(data(), len.min(BUF_LEN)) }
}

/// The second buffer, for data kept across requests (never given to the device).
///
/// # Safety
/// Bytes must be written before they are read; one check at a time.
unsafe fn saved() -> &'static mut [u8] {
    // SAFETY: SAVED is used only here, by one check at a time, and never for DMA.
    unsafe { core::slice::from_raw_parts_mut((&raw mut SAVED).cast::<u8>(), BUF_LEN) }
}

// Whole-sector fills and one big comparison rather than byte loops: they become
// `rep stosq`/`repe cmpsq` (mem.rs), which matters where KVM emulates every instruction.

/// Fills `len` bytes of DATA; sector i (counted from `first_sector`) gets one byte value.
fn fill(len: usize, byte_of_sector: impl Fn(u64) -> u8, first_sector: u64) {
    // SAFETY: called between requests.
    let d = unsafe { data_slice(len) };
    for (i, sector) in d.chunks_mut(SECTOR).enumerate() {
        sector.fill(byte_of_sector(first_sector + i as u64));
    }
}

/// Compares the first `len` bytes of DATA with the per-sector pattern (built in SAVED).
fn verify(len: usize, byte_of_sector: impl Fn(u64) -> u8) -> Check {
    // SAFETY: SAVED is written here before it is read.
    let want = unsafe { &mut saved()[..len.min(BUF_LEN)] };
    for (i, sector) in want.chunks_mut(SECTOR).enumerate() {
        sector.fill(byte_of_sector(i as u64));
    }
    // SAFETY: called after the read completed; DATA was filled before the read.
    let d = unsafe { data_slice(len) };
    if d == &want[..] {
        return Ok(());
    }
    match d.iter().zip(want.iter()).position(|(a, b)| a != b) {
        Some(i) => fail!(
            "sector {} byte {}: {:#04x}, want {:#04x}",
            i / SECTOR,
            i % SECTOR,
            d[i],
            want[i]
        ),
        None => Ok(()),
    }
}

/// Checks run on every block device right after init: GET_ID, the used-buffer interrupt
/// status, an unsupported request type, and FLUSH on writable disks.
pub fn basic(blk: &mut Blk, idx: usize) {
    // SAFETY: no request in flight.
    unsafe { data_slice(ID_LEN) }.fill(0);
    let id = blk.request_noack(T_GET_ID, 0, Some((data(), ID_LEN, Dir::FromDevice)));
    let completed = id.is_ok();
    report(
        format_args!("blk_getid_{}", Disk(idx)),
        match id {
            Ok(S_OK) => {
                // SAFETY: the request completed.
                let raw = unsafe { data_slice(ID_LEN) };
                let end = raw.iter().position(|&b| b == 0).unwrap_or(ID_LEN);
                println!("BLK {} id=\"{}\"", Disk(idx), Bytes(&raw[..end]));
                Ok(())
            }
            Ok(s) => Err(Msg::new(format_args!("GET_ID status {}", s))),
            Err(m) => Err(m),
        },
    );
    if completed {
        report(format_args!("blk_irq_{}", Disk(idx)), check_irq(blk));
    }
    report(format_args!("blk_unsupp_{}", Disk(idx)), {
        match blk.request(T_BOGUS, 0, Some((data(), SECTOR, Dir::FromDevice))) {
            Ok(S_UNSUPP) => Ok(()),
            Ok(s) => Err(Msg::new(format_args!(
                "request type {:#x} got status {}, want UNSUPP (2)",
                T_BOGUS, s
            ))),
            Err(m) => Err(m),
        }
    });
    if !blk.read_only() {
        report(format_args!("blk_flush_{}", Disk(idx)), flush(blk));
    }
}

/// After a completed request the device must show a used-buffer interrupt (bit 0) in
/// InterruptStatus, and acknowledging it must clear it. The device may set the bit just
/// after publishing the used entry, so allow it a moment.
fn check_irq(blk: &mut Blk) -> Check {
    let mut deadline = Deadline::after_ms(100);
    let mut status = blk.mmio.read(INTERRUPT_STATUS);
    while status & INT_VRING == 0 {
        if deadline.expired() {
            fail!(
                "InterruptStatus {:#x} after a completed request, want bit 0 set",
                status
            );
        }
        status = blk.mmio.read(INTERRUPT_STATUS);
    }
    blk.mmio.write(INTERRUPT_ACK, status);
    let after = blk.mmio.read(INTERRUPT_STATUS);
    if after & INT_VRING != 0 {
        fail!("InterruptStatus still {:#x} after ACK", after);
    }
    Ok(())
}

/// FLUSH must succeed when the device offers VIRTIO_BLK_F_FLUSH; without it the device
/// may also answer UNSUPP.
fn flush(blk: &mut Blk) -> Check {
    match blk.request(T_FLUSH, 0, None)? {
        S_OK => Ok(()),
        S_UNSUPP if blk.features & F_FLUSH == 0 => Ok(()),
        s => fail!(
            "FLUSH status {} (flush feature {})",
            s,
            (blk.features & F_FLUSH != 0) as u8
        ),
    }
}

/// The host filled sector i of the first 64 with (i & 0xff) ^ 0x5a: read them in one
/// 32 KiB request and compare.
pub fn pattern(blk: &mut Blk) -> Check {
    if blk.capacity < PATTERN_SECTORS {
        fail!("capacity {} sectors < {}", blk.capacity, PATTERN_SECTORS);
    }
    fill(BUF_LEN, |_| 0xee, 0);
    blk.read(0, data(), BUF_LEN)?;
    verify(BUF_LEN, |s| (s as u8) ^ 0x5a)
}

/// Writes sector i of the first 64 with (i * 7 + 3) & 0xff in 4 KiB requests, flushes,
/// reads everything back in one request and compares. The host checks the file after.
pub fn write(blk: &mut Blk) -> Check {
    let byte = |s: u64| (s.wrapping_mul(7).wrapping_add(3) & 0xff) as u8;
    if blk.read_only() {
        fail!("disk offers VIRTIO_BLK_F_RO");
    }
    if blk.capacity < PATTERN_SECTORS {
        fail!("capacity {} sectors < {}", blk.capacity, PATTERN_SECTORS);
    }
    let per = BENCH_IO / SECTOR;
    for first in (0..PATTERN_SECTORS).step_by(per) {
        fill(BENCH_IO, byte, first);
        blk.write(first, data(), BENCH_IO)?;
    }
    flush(blk)?;
    fill(BUF_LEN, |_| 0xee, 0);
    blk.read(0, data(), BUF_LEN)?;
    verify(BUF_LEN, byte)
}

/// A read-only disk: the feature is offered, a write fails with IOERR and changes nothing.
pub fn read_only(blk: &mut Blk) -> Check {
    if !blk.read_only() {
        fail!(
            "device does not offer VIRTIO_BLK_F_RO (features {:#x})",
            blk.features
        );
    }
    fill(SECTOR, |_| 0xee, 0);
    blk.read(0, data(), SECTOR)?;
    // SAFETY: the read completed; `saved` is written before it is read.
    let saved = unsafe { &mut saved()[..SECTOR] };
    // SAFETY: the read completed and DATA was filled before it.
    saved.copy_from_slice(unsafe { data_slice(SECTOR) });
    // SAFETY: between requests.
    for (d, s) in unsafe { data_slice(SECTOR) }.iter_mut().zip(saved.iter()) {
        *d = !*s;
    }
    match blk.request(T_OUT, 0, Some((data(), SECTOR, Dir::ToDevice)))? {
        S_IOERR => {}
        S_OK => fail!("write to a read-only disk succeeded"),
        s => fail!("write to a read-only disk got status {}, want IOERR (1)", s),
    }
    fill(SECTOR, |_| 0xee, 0);
    blk.read(0, data(), SECTOR)?;
    // SAFETY: the read completed.
    if unsafe { data_slice(SECTOR) } != &saved[..] {
        fail!("sector 0 changed after a rejected write");
    }
    Ok(())
}

/// Reads past the end fail with IOERR; the last sector reads fine.
pub fn out_of_bounds(blk: &mut Blk) -> Check {
    let cap = blk.capacity;
    if cap == 0 {
        fail!("capacity is 0");
    }
    match blk.request(T_IN, cap, Some((data(), SECTOR, Dir::FromDevice)))? {
        S_IOERR => {}
        s => fail!(
            "read at sector {} (= capacity) got status {}, want IOERR (1)",
            cap,
            s
        ),
    }
    match blk.request(T_IN, cap - 1, Some((data(), SECTOR, Dir::FromDevice)))? {
        S_OK => {}
        s => fail!(
            "read of the last sector {} got status {}, want OK",
            cap - 1,
            s
        ),
    }
    match blk.request(T_IN, cap - 1, Some((data(), 2 * SECTOR, Dir::FromDevice)))? {
        S_IOERR => {}
        s => fail!(
            "2-sector read at the last sector {} got status {}, want IOERR (1)",
            cap - 1,
            s
        ),
    }
    Ok(())
}

/// `n` synchronous 4 KiB reads then `n` 4 KiB writes, cycling over up to 16 MiB from
/// sector 128 on, timed with the TSC.
pub fn bench(blk: &mut Blk, idx: usize, n: u64) -> Check {
    let per = (BENCH_IO / SECTOR) as u64;
    let span = blk
        .capacity
        .saturating_sub(BENCH_FIRST_SECTOR)
        .min(16 << 11);
    let slots = span / per;
    if slots == 0 {
        fail!("disk too small: {} sectors", blk.capacity);
    }
    let hz = crate::time::tsc_hz();
    fill(BENCH_IO, |s| s as u8, 0);
    let t0 = crate::arch::rdtsc();
    for i in 0..n {
        blk.read(BENCH_FIRST_SECTOR + (i % slots) * per, data(), BENCH_IO)?;
    }
    let t1 = crate::arch::rdtsc();
    for i in 0..n {
        blk.write(BENCH_FIRST_SECTOR + (i % slots) * per, data(), BENCH_IO)?;
    }
    let t2 = crate::arch::rdtsc();
    let iops = |cycles: u64| (n as u128 * hz as u128 / cycles.max(1) as u128) as u64;
    let (rc, wc) = (t1.wrapping_sub(t0), t2.wrapping_sub(t1));
    println!(
        "BENCH blk_read_iops={} blk_write_iops={} disk={} ops={} read_cycles={} write_cycles={} tsc_hz={} tsc_source={}",
        iops(rc),
        iops(wc),
        Disk(idx),
        n,
        rc,
        wc,
        hz,
        crate::time::tsc_source()
    );
    Ok(())
}

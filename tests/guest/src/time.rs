//! Time: the TSC frequency (for timeouts and the block benchmark) and deadlines.
//!
//! Sources, in order: KVM's paravirtual clock (exact, one MSR write, no device needed),
//! the i8254 PIT (channel 2 counter read back, as Linux's quick PIT calibration does),
//! CPUID leaves 0x15/0x16, and finally a guess. Timeouts only need the right order of
//! magnitude; a deadline also counts loop iterations so a TSC that does not tick cannot
//! turn a timeout into a hang.

use crate::arch::{cpuid, inb, outb, rdtsc, wrmsr};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_SOURCE: AtomicU8 = AtomicU8::new(0);

const SOURCES: [&str; 5] = ["none", "kvmclock", "pit", "cpuid", "guess"];

/// Plausible TSC range; anything outside means the source lied or is absent.
const MIN_HZ: u64 = 100_000_000;
const MAX_HZ: u64 = 20_000_000_000;

/// TSC ticks per second (calibrated on first use).
pub fn tsc_hz() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz != 0 {
        return hz;
    }
    let (hz, src) = calibrate();
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_SOURCE.store(src, Ordering::Relaxed);
    hz
}

/// Name of the source `tsc_hz` came from.
pub fn tsc_source() -> &'static str {
    tsc_hz();
    SOURCES[TSC_SOURCE.load(Ordering::Relaxed) as usize % SOURCES.len()]
}

fn calibrate() -> (u64, u8) {
    if let Some(hz) = kvmclock_hz().filter(|h| (MIN_HZ..=MAX_HZ).contains(h)) {
        return (hz, 1);
    }
    if let Some(hz) = pit_hz().filter(|h| (MIN_HZ..=MAX_HZ).contains(h)) {
        return (hz, 2);
    }
    if let Some(hz) = cpuid_hz().filter(|h| (MIN_HZ..=MAX_HZ).contains(h)) {
        return (hz, 3);
    }
    (3_000_000_000, 4)
}

/// pvclock_vcpu_time_info, which KVM fills in once MSR_KVM_SYSTEM_TIME_NEW points at it.
#[repr(C, align(64))]
struct PvClock {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

static mut PVCLOCK: PvClock = PvClock {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

fn kvmclock_hz() -> Option<u64> {
    // Only touch the MSR when CPUID says it exists: a #GP here would be a triple fault.
    let (max, b, c, d) = cpuid(0x4000_0000, 0);
    if (b, c, d) != (0x4b4d_564b, 0x564b_4d56, 0x4d) || max < 0x4000_0001 {
        return None;
    }
    if cpuid(0x4000_0001, 0).0 & KVM_FEATURE_CLOCKSOURCE2 == 0 {
        return None;
    }
    let p = &raw mut PVCLOCK;
    // SAFETY: the MSR exists (CPUID above); KVM writes only the 32-byte PVCLOCK, which
    // nothing else uses and which we read with volatile loads. Bit 0 enables the update.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, p as u64 | 1) };
    let mut result = None;
    for _ in 0..1_000_000 {
        // SAFETY: reading our own static; volatile because the hypervisor writes it.
        let (v1, mul, shift, v2) = unsafe {
            let v1 = (&raw const (*p).version).read_volatile();
            core::sync::atomic::fence(Ordering::SeqCst);
            let mul = (&raw const (*p).tsc_to_system_mul).read_volatile();
            let shift = (&raw const (*p).tsc_shift).read_volatile();
            core::sync::atomic::fence(Ordering::SeqCst);
            (v1, mul, shift, (&raw const (*p).version).read_volatile())
        };
        if v1 != 0 && v1 & 1 == 0 && v1 == v2 && mul != 0 {
            // ns = (tsc << shift) * mul >> 32, so hz = 1e9 * 2^32 / (mul * 2^shift).
            let base = (1_000_000_000u128 << 32) / mul as u128;
            let hz = if shift >= 0 {
                base >> shift
            } else {
                base << (-shift)
            };
            result = u64::try_from(hz).ok();
            break;
        }
        core::hint::spin_loop();
    }
    // Stop KVM from updating our memory behind our back from now on.
    // SAFETY: as above; 0 disables the clock.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    result
}

/// Times 10 ms of PIT channel 2 against the TSC by reading the counter back (latch
/// command), as Linux's quick PIT calibration does. Reading the counter, rather than
/// waiting for OUT2 on port 0x61, also works when the VMM leaves port 0x61 to user space
/// (KVM_PIT_SPEAKER_DUMMY, as Firecracker does), where it reads as 0xff.
fn pit_hz() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const TICKS: u64 = PIT_HZ / 100;
    // Gate on (bit 0), speaker off (bit 1), for a VMM that does emulate port 0x61.
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0 (count down once from the reload value).
    outb(0x43, 0xb0);
    outb(0x42, 0xff);
    outb(0x42, 0xff);
    // Each sample latches the count, reads it, then the TSC; the read latency is the same
    // at both ends, so it mostly cancels out.
    let c0 = pit_count2();
    let t0 = rdtsc();
    let mut samples = 0u32;
    loop {
        let c = pit_count2();
        let t = rdtsc();
        samples += 1;
        // The counter ticks every 0.84 µs, far faster than a sample: if it never moves,
        // there is no PIT (an unhandled port reads as a constant).
        if c == c0 && samples > 200 {
            return None;
        }
        let elapsed = c0.wrapping_sub(c) as u64;
        // Below 0x8000: a garbage jump (or a wrap) is not 10 ms of counting.
        if (TICKS..0x8000).contains(&elapsed) {
            return Some(t.wrapping_sub(t0) * PIT_HZ / elapsed);
        }
        // 20 ms at the fastest plausible TSC: a PIT that counts wrongly must not stop
        // the boot.
        if t.wrapping_sub(t0) > MAX_HZ / 50 {
            return None;
        }
    }
}

/// Latches and reads PIT channel 2's current count.
fn pit_count2() -> u16 {
    outb(0x43, 0x80);
    let lo = inb(0x42) as u16;
    let hi = inb(0x42) as u16;
    lo | (hi << 8)
}

fn cpuid_hz() -> Option<u64> {
    let max = cpuid(0, 0).0;
    if max >= 0x15 {
        let (den, num, crystal, _) = cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            return Some(crystal as u64 * num as u64 / den as u64);
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16, 0).0 & 0xffff;
        if mhz != 0 {
            return Some(mhz as u64 * 1_000_000);
        }
    }
    None
}

/// A point in time after which a wait gives up.
pub struct Deadline {
    end: u64,
    spins_left: u64,
}

impl Deadline {
    pub fn after_ms(ms: u64) -> Deadline {
        let hz = tsc_hz();
        Deadline {
            end: rdtsc().saturating_add(hz / 1000 * ms),
            // Backstop if the TSC stands still: no poll iteration is faster than ~1 ns.
            spins_left: ms.saturating_mul(1_000_000),
        }
    }

    /// True once the deadline has passed; call once per poll iteration.
    pub fn expired(&mut self) -> bool {
        self.spins_left = self.spins_left.saturating_sub(1);
        self.spins_left == 0 || rdtsc() >= self.end
    }
}

/// Busy-waits about `ms` milliseconds.
pub fn delay_ms(ms: u64) {
    let mut d = Deadline::after_ms(ms);
    while !d.expired() {
        core::hint::spin_loop();
    }
}

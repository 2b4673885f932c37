//! The few x86 instructions the guest needs, wrapped.

use core::arch::asm;

/// Writes a byte to an I/O port. Safe to call: this guest only addresses legacy devices
/// (UART, PIT, i8042) that cannot write to memory, so port I/O cannot break memory safety.
pub fn outb(port: u16, val: u8) {
    // SAFETY: `out` touches no memory the program owns (see above).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port (see `outb` for why this is safe).
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: `in` touches no memory the program owns.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

/// Reads the time stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads a counter (CR4.TSD is not set by the boot protocol).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

/// Executes CPUID; returns (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: cpuid has no side effects; rbx is reserved by LLVM so it is saved by hand.
    unsafe {
        asm!("mov {tmp:r}, rbx", "cpuid", "xchg {tmp:r}, rbx",
             tmp = out(reg) b, inout("eax") leaf => a, inout("ecx") sub => c, out("edx") d,
             options(nostack, preserves_flags));
    }
    (a, b, c, d)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist (or the CPU raises #GP, which with no IDT is a triple fault) and the
/// write must not hand memory the program uses to someone else unexpectedly.
pub unsafe fn wrmsr(msr: u32, val: u64) {
    // SAFETY: the caller vouches for the MSR.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

//! The memory functions LLVM may call (no libc here). They are written with string
//! instructions, for two reasons: the optimiser cannot recognise them as loops and turn
//! them into calls to themselves, and on a PVM host, where KVM emulates every guest
//! instruction, one `rep movsq` iteration costs about what one ordinary instruction does,
//! so moving 8 bytes per step is what keeps copies cheap.

use core::arch::asm;

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; DF is clear (cleared in _start
    // and only ever set briefly inside memmove).
    unsafe {
        asm!("rep movsq", "mov rcx, {rest}", "rep movsb",
             rest = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dest;
    }
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize) + n {
        // A forward copy is right when dest starts before src or past its end.
        // SAFETY: as memcpy; overlap in this direction is fine for a forward copy.
        return unsafe { memcpy(dest, src, n) };
    }
    // dest overlaps the tail of src: copy backwards (bytewise; rare), with DF set only for
    // this copy.
    // SAFETY: both ranges are valid per the caller; DF is restored before returning.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _,
             inout("rdi") dest.add(n - 1) => _,
             inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let pattern = (c as u8 as u64) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        asm!("rep stosq", "mov rcx, {rest}", "rep stosb",
             rest = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, in("rax") pattern,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let words = n / 8;
    let mut start = 0;
    if words > 0 {
        let (stop, ne): (*const u8, u8);
        // SAFETY: both ranges are valid for n ≥ 8 * words bytes. `repe cmpsq` stops after
        // the first differing qword (ZF clear) or when RCX runs out (ZF set).
        unsafe {
            asm!("repe cmpsq", "setne {ne}",
                 ne = out(reg_byte) ne,
                 inout("rcx") words => _, inout("rsi") a => stop, inout("rdi") b => _,
                 options(nostack, readonly));
        }
        // On a difference, re-check that qword bytewise to order it; else do the tail.
        start = if ne != 0 {
            stop as usize - a as usize - 8
        } else {
            words * 8
        };
    }
    for i in start..n {
        // SAFETY: i < n; volatile keeps this a loop rather than a call to memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// Same as memcmp.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

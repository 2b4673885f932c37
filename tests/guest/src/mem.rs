//! The memory functions LLVM may call (no libc here). They use `rep movsb`/`rep stosb` and
//! volatile reads so that the optimiser cannot recognise the loops as the very functions
//! being defined and turn them into calls to themselves.

use core::arch::asm;

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; DF is clear (cleared in _start
    // and never left set).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
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
        // Forward copy is safe when dest starts before src or past its end.
        // SAFETY: see memcpy; overlap in this direction is fine for a forward copy.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // dest overlaps the tail of src: copy backwards, with DF set only for this copy.
        // SAFETY: both ranges are valid per the caller; DF is restored before returning.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees both ranges; volatile keeps this a loop.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
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

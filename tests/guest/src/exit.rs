//! Ending the run: reset through the i8042 (default), a triple fault, or halting forever
//! (so the host can test stopping a VM that does not exit by itself).

use crate::arch::outb;
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Reset = 0,
    Triple = 1,
    Hlt = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Reset as u8);

/// Chooses how `exit` ends the run (also used by the panic handler).
pub fn set_mode(m: Mode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Triple,
        2 => Mode::Hlt,
        _ => Mode::Reset,
    }
}

pub fn exit(m: Mode) -> ! {
    match m {
        Mode::Reset => {
            // i8042 "pulse reset line": what Linux's reboot=k does, and the exit a
            // Firecracker-style VMM turns into a clean stop.
            outb(0x64, 0xfe);
            // The VMM may take a moment to stop the vCPU. If it never does, fall back to a
            // triple fault so a broken reset path still ends the VM rather than hanging it.
            crate::time::delay_ms(10_000);
            println!("EXIT reset did not stop the VM; triple faulting");
            triple_fault()
        }
        Mode::Triple => triple_fault(),
        Mode::Hlt => loop {
            // SAFETY: halting with interrupts off just stops this vCPU.
            unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
        },
    }
}

/// Loads an empty IDT and raises an exception: delivery fails (#GP), then the #DF fails,
/// and the CPU shuts down, which KVM reports as KVM_EXIT_SHUTDOWN.
pub fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct IdtPtr {
        limit: u16,
        base: u64,
    }
    let idt = IdtPtr { limit: 0, base: 0 };
    // SAFETY: the whole point is to stop the CPU; nothing runs afterwards.
    unsafe {
        asm!("lidt [{}]", "ud2", in(reg) &idt, options(noreturn, nostack));
    }
}

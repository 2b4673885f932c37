//! Output on the 8250 UART at COM1 (0x3f8). No initialisation: the VMM's UART accepts
//! bytes written to THR as they are. Lines end in a bare '\n' so the host can split on it.

use crate::arch::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
/// LSR bit 5: the transmit holding register is empty.
const LSR_THRE: u8 = 0x20;

/// Writes one byte, waiting (boundedly: a UART that never reports THRE must not hang the
/// guest) for room in the transmitter.
pub fn putb(b: u8) {
    let mut spins = 0u32;
    while inb(LSR) & LSR_THRE == 0 && spins < 100_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

/// Writes raw bytes (e.g. a command line that may not be UTF-8).
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        putb(b);
    }
}

/// `core::fmt` sink for the print macros.
pub struct Serial;

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

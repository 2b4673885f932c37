//! Test result lines and failure reasons.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

static FAILURES: AtomicU32 = AtomicU32::new(0);

/// Number of failed checks so far.
pub fn failures() -> u32 {
    FAILURES.load(Ordering::Relaxed)
}

/// A failure reason, formatted into a fixed buffer (there is no heap).
pub struct Msg {
    buf: [u8; 120],
    len: usize,
}

impl Msg {
    pub fn new(args: fmt::Arguments) -> Msg {
        let mut m = Msg {
            buf: [0; 120],
            len: 0,
        };
        let _ = m.write_fmt(args);
        m
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s (truncated at char boundaries) are copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            // Newlines would break the one-line-per-check format.
            let enc: &[u8] = if c == '\n' || c == '\r' { b" " } else { enc };
            if self.len + enc.len() > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

/// Result of one check.
pub type Check = Result<(), Msg>;

/// Prints `TEST <name> OK` or `TEST <name> FAIL <reason>` and counts failures.
pub fn report(name: fmt::Arguments, result: Check) {
    match result {
        Ok(()) => println!("TEST {} OK", name),
        Err(m) => {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            println!("TEST {} FAIL {}", name, m.as_str());
        }
    }
}

/// Displays bytes from the command line or a device as text, escaping anything that is
/// not printable ASCII (so one result stays one line).
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Printable runs go out in one piece: per-character formatting is slow when every
        // instruction is emulated (see mem.rs).
        let mut rest = self.0;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|b| !(0x20..0x7f).contains(b))
                .unwrap_or(rest.len());
            // The run is printable ASCII, hence UTF-8.
            f.write_str(core::str::from_utf8(&rest[..run]).unwrap_or("?"))?;
            if run < rest.len() {
                write!(f, "\\x{:02x}", rest[run])?;
                rest = &rest[run + 1..];
            } else {
                rest = &[];
            }
        }
        Ok(())
    }
}

//! Logging to the serial console: quiet unless `mvm.debug=1`, errors always.
//!
//! Written by hand rather than with `eprintln!`, which panics when stderr is gone: PID 1 must
//! not panic because the kernel found no console to give it.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug logging on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug logging is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one line to stderr in a single write, ignoring failures.
pub fn write_line(args: fmt::Arguments<'_>) {
    let line = format!("mvm-agent: {args}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Makes `path` (the console device) the agent's stdin, stdout and stderr. The kernel does
/// this itself only if `/dev/console` existed on the root before devtmpfs was mounted.
pub fn attach(path: &Path) -> nix::Result<()> {
    let fd = open(path, OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty())?;
    for target in 0..=2 {
        if fd.as_raw_fd() != target {
            // SAFETY: dup2 onto a descriptor number the process owns by convention (0 to 2);
            // it only replaces what was there and touches no memory.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                return Err(nix::Error::last());
            }
        }
    }
    if fd.as_raw_fd() <= 2 {
        // The descriptor is one of 0..=2 and must stay open.
        std::mem::forget(fd);
    }
    Ok(())
}

/// Logs a line when debug logging is on.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => {
        if $crate::console::debug_enabled() {
            $crate::console::write_line(format_args!($($arg)*));
        }
    };
}

/// Logs a line always.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => {
        $crate::console::write_line(format_args!($($arg)*))
    };
}

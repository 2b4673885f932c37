//! mvm test guest: a bare-metal program the VMM boots like a Linux kernel (64-bit boot
//! protocol, ELF entry in long mode, RSI = boot_params). It checks what the VMM gave it
//! (boot_params, e820, command line), drives the virtio-mmio devices named on the command
//! line by polling, prints one `TEST <name> OK|FAIL <reason>` line per check on COM1 and
//! ends with `MVMTEST DONE <n> failures`, then exits the way `mvmtest.exit=` asks.
//!
//! A real kernel cannot boot on this project's PVM-based KVM, so this is how the VMM's
//! devices are exercised through real KVM exits. Interrupts stay disabled throughout.
#![no_std]
#![no_main]
// Failure reasons are formatted into a fixed buffer (no heap to box them in).
#![allow(clippy::result_large_err)]

/// Prints formatted text and a newline on the serial port.
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}

/// Returns early from a check with a formatted failure reason.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::report::Msg::new(format_args!($($arg)*)))
    };
}

// The flags in .cargo/config.toml (read only when cargo runs inside tests/guest, as
// build.sh does) turn SSE off; without them the guest dies on a PVM host (see there).
#[cfg(target_feature = "sse2")]
compile_error!("build the test guest with tests/guest/build.sh (its rustflags disable SSE)");

mod arch;
mod arena;
mod blk;
mod bootparams;
mod cmdline;
mod entry;
mod exit;
mod mem;
mod report;
mod serial;
mod tests;
mod time;
mod virtio;
mod vsock;

/// Called by `_start` (entry.rs) on our own stack, with .bss zeroed.
#[unsafe(no_mangle)]
extern "C" fn rust_main(boot_params: u64) -> ! {
    tests::run(boot_params)
}

/// A panic is a bug in the guest or a device answer we did not guard against: report it
/// as a failure in the normal format so the host sees it, then end as asked.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("TEST panic FAIL {}", info.message());
    if let Some(loc) = info.location() {
        println!("PANIC at {}:{}", loc.file(), loc.line());
    }
    println!("MVMTEST DONE {} failures", report::failures() + 1);
    exit::exit(exit::mode())
}

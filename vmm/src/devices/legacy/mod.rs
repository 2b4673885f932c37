//! Legacy PC devices: the 8250 UART for the kernel console and the i8042 for reset.

pub mod i8042;
pub mod serial;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// A vm-superio trigger that signals an eventfd (an irqfd for interrupts, or the monitor's
/// exit event for the i8042 reset line).
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

//! The i8042 keyboard controller, just enough for `reboot=k`: the guest pulses the CPU reset
//! line by writing 0xfe to the command port, and the monitor ends the VM.

use vm_superio::I8042Device;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;

/// The keyboard controller on ports 0x60-0x64.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset` when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || (offset != 0 && offset != COMMAND_OFFSET) {
            data.fill(0xff);
            return;
        }
        data[0] = self.inner.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || (offset != 0 && offset != COMMAND_OFFSET) {
            return;
        }
        if let Err(e) = self.inner.write(offset as u8, data[0]) {
            tracing::warn!("i8042 reset signal failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn reset_command_signals_the_exit_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger(evt.try_clone().unwrap()));
        assert!(evt.read().is_err(), "nothing signalled yet");
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }
}

//! The i8042 keyboard controller, just enough for `reboot=k` and for Linux's i8042 driver to
//! find a controller without waiting: the guest pulses the CPU reset line by writing 0xfe to
//! the command port, and the monitor ends the VM.
//!
//! The driver's probe reads the controller configuration byte (CTR) first. A controller that
//! never sets "output buffer full" makes every such read time out after 10000 polls of the
//! status port, 50 µs apart: half a second of busy waiting, each poll a VM exit (measured
//! inside the nested test machine: about 2.5 s of a 4 s boot). So the controller answers the
//! CTR and self-test commands as Firecracker's does. There is no keyboard or aux (mouse)
//! device behind it: the monitor boots guests with `i8042.noaux i8042.nomux i8042.dumbkbd`
//! so that the driver does not probe them.

use std::collections::VecDeque;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;
use vm_superio::Trigger;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
const DATA_OFFSET: u64 = 0;

// Status register.
/// Output buffer full: the guest may read a byte from the data port.
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// System flag: the power-on self test passed.
const STATUS_SYSTEM: u8 = 0x04;
/// The last byte written went to the command port.
const STATUS_COMMAND: u8 = 0x08;
/// Keyboard not inhibited (keylock off).
const STATUS_UNLOCKED: u8 = 0x10;

// Controller configuration byte (CTR).
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_PASSED: u8 = 0x55;
const KBD_TEST_PASSED: u8 = 0x00;
/// Output port with the reset line deasserted (bit 0) and A20 enabled (bit 1).
const OUTPUT_PORT_DEFAULT: u8 = 0x03;
/// The controller's output buffer is one byte on real parts; a few cover back-to-back replies.
const OUTPUT_BUFFER_MAX: usize = 16;

/// The keyboard controller on ports 0x60-0x64.
pub struct I8042 {
    reset: EventFdTrigger,
    ctr: u8,
    output_port: u8,
    /// A command (0x60, 0xd1) waiting for its parameter on the data port.
    pending: Option<u8>,
    last_was_command: bool,
    output: VecDeque<u8>,
}

impl I8042 {
    /// A controller that signals `reset` when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            reset,
            ctr: CTR_KBD_INT | CTR_SYSTEM,
            output_port: OUTPUT_PORT_DEFAULT,
            pending: None,
            last_was_command: false,
            output: VecDeque::new(),
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM | STATUS_UNLOCKED;
        if !self.output.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_COMMAND;
        }
        s
    }

    fn reply(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_BUFFER_MAX {
            self.output.push_back(byte);
        }
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => {
                self.output.clear();
                self.reply(self.ctr);
            }
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT => self.pending = Some(cmd),
            CMD_SELF_TEST => {
                self.output.clear();
                self.reply(SELF_TEST_PASSED);
            }
            CMD_KBD_TEST => self.reply(KBD_TEST_PASSED),
            CMD_READ_OUTPUT_PORT => self.reply(self.output_port),
            CMD_RESET_CPU => {
                if let Err(e) = self.reset.trigger() {
                    tracing::warn!("i8042 reset signal failed: {e}");
                }
            }
            // Everything else (keyboard/aux enable and disable, aux commands, pulses of
            // other output lines) has nothing behind it here.
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            Some(CMD_WRITE_OUTPUT_PORT) => self.output_port = byte,
            // A byte for the keyboard: there is none (guests use i8042.dumbkbd).
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            data.fill(0xff);
            return;
        }
        data[0] = match offset {
            COMMAND_OFFSET => self.status(),
            DATA_OFFSET => self.output.pop_front().unwrap_or(0),
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(data[0]);
            }
            DATA_OFFSET => {
                self.last_was_command = false;
                self.data(data[0]);
            }
            _ => {}
        }
    }
}

/// Kernel command-line words for the i8042 this monitor emulates: a controller with no
/// keyboard or mouse behind it, so the driver must not probe them (each probe would time out).
pub const I8042_CMDLINE: &str = "i8042.noaux i8042.nomux i8042.dumbkbd";

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    fn device() -> (I8042, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042::new(EventFdTrigger(evt.try_clone().unwrap())), evt)
    }

    fn status(dev: &mut I8042) -> u8 {
        let mut b = [0u8];
        dev.read(COMMAND_OFFSET, &mut b);
        b[0]
    }

    fn data(dev: &mut I8042) -> u8 {
        let mut b = [0u8];
        dev.read(DATA_OFFSET, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_the_exit_event() {
        let (mut dev, evt) = device();
        assert!(evt.read().is_err(), "nothing signalled yet");
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    /// Linux's i8042 probe reads the CTR and polls the status port for "output buffer full"
    /// up to 10000 times: the reply must be there on the first poll.
    #[test]
    fn ctr_read_is_answered_at_once() {
        let (mut dev, evt) = device();
        assert_eq!(
            status(&mut dev) & STATUS_OUTPUT_FULL,
            0,
            "nothing to read at first"
        );
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_ne!(status(&mut dev) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(data(&mut dev), CTR_KBD_INT | CTR_SYSTEM);
        assert_eq!(status(&mut dev) & STATUS_OUTPUT_FULL, 0, "buffer drained");
        // Input buffer never full: kb_wait() in the kernel's reboot path must not spin.
        assert_eq!(status(&mut dev) & 0x02, 0);
        assert!(evt.read().is_err(), "no reset");
    }

    #[test]
    fn ctr_write_then_read_back() {
        let (mut dev, _evt) = device();
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        assert_ne!(status(&mut dev) & STATUS_COMMAND, 0);
        dev.write(DATA_OFFSET, &[0x65]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(data(&mut dev), 0x65);
    }

    #[test]
    fn self_test_and_output_port() {
        let (mut dev, evt) = device();
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(data(&mut dev), SELF_TEST_PASSED);
        dev.write(COMMAND_OFFSET, &[CMD_READ_OUTPUT_PORT]);
        assert_eq!(data(&mut dev), OUTPUT_PORT_DEFAULT);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0xdf]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_OUTPUT_PORT]);
        assert_eq!(data(&mut dev), 0xdf);
        assert!(evt.read().is_err(), "no reset");
    }

    #[test]
    fn keyboard_bytes_and_unknown_commands_are_ignored() {
        let (mut dev, evt) = device();
        dev.write(DATA_OFFSET, &[0xf2]); // keyboard GETID: no keyboard
        dev.write(COMMAND_OFFSET, &[0xd3]); // write aux output buffer: no aux
        dev.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(status(&mut dev) & STATUS_OUTPUT_FULL, 0);
        assert!(evt.read().is_err());
        let mut wide = [0u8; 2];
        dev.read(COMMAND_OFFSET, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }
}

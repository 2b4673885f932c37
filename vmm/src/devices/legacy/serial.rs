//! COM1: vm-superio's 8250 UART on the port-I/O bus. Output only; the kernel console is for
//! logs, container I/O goes over vsock.

use std::io::Write;

use vm_superio::Serial;
use vm_superio::serial::NoEvents;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// The guest's serial port.
pub struct SerialDevice {
    inner: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A UART raising its interrupt through `irq` and writing what the guest sends to `out`.
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Serial::new(irq, out),
        }
    }

    /// A UART with a snapshot's registers (see [`SerialDevice::new`] for the rest).
    pub fn from_state(
        state: &crate::snapshot::SerialSnapshot,
        irq: EventFdTrigger,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, crate::snapshot::SnapshotError> {
        Serial::from_state(&state.into(), irq, NoEvents, out)
            .map(|inner| Self { inner })
            .map_err(|e| crate::snapshot::SnapshotError::Invalid(format!("serial: {e:?}")))
    }

    /// The registers, for a snapshot.
    pub fn state(&self) -> crate::snapshot::SerialSnapshot {
        self.inner.state().into()
    }

    /// Flushes buffered output (on exit).
    pub fn flush(&mut self) {
        let _ = self.inner.writer_mut().flush();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset > 7 {
            data.fill(0xff);
            return;
        }
        data[0] = self.inner.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset > 7 {
            return;
        }
        if let Err(e) = self.inner.write(offset as u8, data[0]) {
            // A broken console must not stop the guest: drop the byte.
            tracing::debug!("serial write failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EventFd;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_output() {
        let out = Shared::default();
        let irq = EventFdTrigger(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut dev = SerialDevice::new(irq, Box::new(out.clone()));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
        // Wide or out-of-range accesses are ignored rather than trusted.
        dev.write(0, &[1, 2]);
        let mut wide = [0u8; 2];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }
}

//! The virtio-mmio register block and the device initialisation sequence.

use super::queue::Queue;
use crate::report::Msg;
use core::sync::atomic::{Ordering, fence};

pub const MAGIC_VALUE: usize = 0x000;
pub const VERSION: usize = 0x004;
pub const DEVICE_ID: usize = 0x008;
pub const DEVICE_FEATURES: usize = 0x010;
pub const DEVICE_FEATURES_SEL: usize = 0x014;
pub const DRIVER_FEATURES: usize = 0x020;
pub const DRIVER_FEATURES_SEL: usize = 0x024;
pub const QUEUE_SEL: usize = 0x030;
pub const QUEUE_NUM_MAX: usize = 0x034;
pub const QUEUE_NUM: usize = 0x038;
pub const QUEUE_READY: usize = 0x044;
pub const QUEUE_NOTIFY: usize = 0x050;
pub const INTERRUPT_STATUS: usize = 0x060;
pub const INTERRUPT_ACK: usize = 0x064;
pub const STATUS: usize = 0x070;
pub const QUEUE_DESC_LOW: usize = 0x080;
pub const QUEUE_DESC_HIGH: usize = 0x084;
pub const QUEUE_DRIVER_LOW: usize = 0x090;
pub const QUEUE_DRIVER_HIGH: usize = 0x094;
pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
pub const CONFIG_GENERATION: usize = 0x0fc;
pub const CONFIG: usize = 0x100;

pub const MAGIC: u32 = 0x7472_6976; // "virt"

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 64;
pub const STATUS_FAILED: u32 = 128;

/// Used-buffer notification bit of InterruptStatus.
pub const INT_VRING: u32 = 1;

/// One device's register window.
#[derive(Clone, Copy)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// `base` must be below 4 GiB (identity mapped); checked by the caller.
    pub fn new(base: u64) -> Mmio {
        Mmio {
            base: base as usize,
        }
    }

    pub fn read(&self, off: usize) -> u32 {
        // SAFETY: base is a virtio-mmio window from the command line inside the 4 GiB
        // identity map; a 32-bit volatile load is the access the transport defines.
        unsafe { ((self.base + off) as *const u32).read_volatile() }
    }

    pub fn write(&self, off: usize, v: u32) {
        // SAFETY: as in read(); register writes have no effect on memory we own except
        // through queues we set up ourselves.
        unsafe { ((self.base + off) as *mut u32).write_volatile(v) }
    }

    /// Checks magic and version, returning the device id (0 = no device behind it).
    pub fn probe(&self) -> Result<u32, Msg> {
        let magic = self.read(MAGIC_VALUE);
        if magic != MAGIC {
            fail!("bad magic {:#x} at {:#x}", magic, self.base);
        }
        let version = self.read(VERSION);
        if version != 2 {
            fail!("version {} at {:#x} (want 2)", version, self.base);
        }
        Ok(self.read(DEVICE_ID))
    }

    /// Resets the device and negotiates features: VERSION_1 plus whatever of `optional`
    /// the device offers. Returns the accepted feature set. Queues come next, then
    /// `driver_ok`.
    pub fn negotiate(&self, optional: u64) -> Result<u64, Msg> {
        self.write(STATUS, 0);
        // Reset completes when Status reads back 0.
        let mut tries = 0;
        while self.read(STATUS) != 0 {
            tries += 1;
            if tries > 1000 {
                fail!(
                    "device does not reset (status stays {:#x})",
                    self.read(STATUS)
                );
            }
        }
        self.write(STATUS, STATUS_ACKNOWLEDGE);
        self.write(STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.write(DEVICE_FEATURES_SEL, 0);
        let lo = self.read(DEVICE_FEATURES) as u64;
        self.write(DEVICE_FEATURES_SEL, 1);
        let hi = self.read(DEVICE_FEATURES) as u64;
        let offered = lo | (hi << 32);
        if offered & super::VIRTIO_F_VERSION_1 == 0 {
            self.fail_device();
            fail!(
                "device does not offer VIRTIO_F_VERSION_1 (features {:#x})",
                offered
            );
        }
        let accepted = super::VIRTIO_F_VERSION_1 | (offered & optional);
        self.write(DRIVER_FEATURES_SEL, 0);
        self.write(DRIVER_FEATURES, accepted as u32);
        self.write(DRIVER_FEATURES_SEL, 1);
        self.write(DRIVER_FEATURES, (accepted >> 32) as u32);
        self.write(
            STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        let status = self.read(STATUS);
        if status & STATUS_FEATURES_OK == 0 {
            self.fail_device();
            fail!(
                "FEATURES_OK not accepted (status {:#x}, features {:#x})",
                status,
                accepted
            );
        }
        Ok(accepted)
    }

    /// Sets up queue `index` with at most `want` entries (see Queue::new).
    pub fn queue(&self, index: u16, want: u16) -> Result<Queue, Msg> {
        self.write(QUEUE_SEL, index as u32);
        if self.read(QUEUE_READY) != 0 {
            fail!("queue {} already ready after reset", index);
        }
        let max = self.read(QUEUE_NUM_MAX);
        if max == 0 {
            fail!("queue {} not available (QueueNumMax 0)", index);
        }
        let mut size = (want as u32).min(max);
        // Split queues have power-of-two sizes.
        while size & (size - 1) != 0 {
            size &= size - 1;
        }
        let q = match Queue::new(*self, index, size as u16) {
            Some(q) => q,
            None => fail!("out of memory for queue {}", index),
        };
        self.write(QUEUE_NUM, size);
        let (d, a, u) = q.addresses();
        self.write(QUEUE_DESC_LOW, d as u32);
        self.write(QUEUE_DESC_HIGH, (d >> 32) as u32);
        self.write(QUEUE_DRIVER_LOW, a as u32);
        self.write(QUEUE_DRIVER_HIGH, (a >> 32) as u32);
        self.write(QUEUE_DEVICE_LOW, u as u32);
        self.write(QUEUE_DEVICE_HIGH, (u >> 32) as u32);
        fence(Ordering::SeqCst);
        self.write(QUEUE_READY, 1);
        if self.read(QUEUE_READY) != 1 {
            fail!("queue {} does not read back ready", index);
        }
        Ok(q)
    }

    /// Final step of initialisation.
    pub fn driver_ok(&self) -> Result<(), Msg> {
        self.write(
            STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        let status = self.read(STATUS);
        if status & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 || status & STATUS_DRIVER_OK == 0 {
            fail!("device status {:#x} after DRIVER_OK", status);
        }
        Ok(())
    }

    fn fail_device(&self) {
        let s = self.read(STATUS);
        self.write(STATUS, s | STATUS_FAILED);
    }

    /// Reads a 64-bit config field as two 32-bit halves, retrying if the device changed
    /// the config in between (ConfigGeneration).
    pub fn config_u64(&self, off: usize) -> u64 {
        let mut v = 0;
        for _ in 0..10 {
            let g1 = self.read(CONFIG_GENERATION);
            let lo = self.read(CONFIG + off) as u64;
            let hi = self.read(CONFIG + off + 4) as u64;
            v = lo | (hi << 32);
            if self.read(CONFIG_GENERATION) == g1 {
                break;
            }
        }
        v
    }

    /// Acknowledges pending interrupt causes (interrupts are off; this just keeps the
    /// device's view tidy, as a driver's handler would). Returns what was pending.
    pub fn ack_interrupts(&self) -> u32 {
        let s = self.read(INTERRUPT_STATUS);
        if s != 0 {
            self.write(INTERRUPT_ACK, s);
        }
        s
    }
}

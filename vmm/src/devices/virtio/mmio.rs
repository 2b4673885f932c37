//! The virtio-mmio transport, version 2 (virtio 1.x section 4.2).
//!
//! The guest's driver programs the device through a page of 32-bit registers. The status
//! register follows the initialisation sequence (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK);
//! writes out of sequence are ignored, queue registers only take effect while the driver is
//! setting up, and queues are validated against guest memory before the device sees them, so a
//! hostile driver can at worst make the device refuse to start.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    ActivateError, IrqTrigger, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
    VirtioDevice,
};
use crate::devices::bus::{BusDevice, lock};
use crate::snapshot::{DeviceKind, MmioState, QueueSnapshot, SnapshotError, VirtioSnapshot};
use virtio_queue::QueueState;

const MMIO_MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest ("MVM").
pub const VENDOR_ID: u32 = 0x004d_564d;

/// Offset of the QueueNotify register (KVM ioeventfds are registered on it).
pub const NOTIFY_REG_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// Register offsets (virtio 1.x section 4.2.2), as u64 to match bus offsets.
mod reg {
    use virtio_bindings::virtio_mmio as m;

    pub const MAGIC_VALUE: u64 = m::VIRTIO_MMIO_MAGIC_VALUE as u64;
    pub const VERSION: u64 = m::VIRTIO_MMIO_VERSION as u64;
    pub const DEVICE_ID: u64 = m::VIRTIO_MMIO_DEVICE_ID as u64;
    pub const VENDOR_ID: u64 = m::VIRTIO_MMIO_VENDOR_ID as u64;
    pub const DEVICE_FEATURES: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES as u64;
    pub const DEVICE_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
    pub const DRIVER_FEATURES: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES as u64;
    pub const DRIVER_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
    pub const QUEUE_SEL: u64 = m::VIRTIO_MMIO_QUEUE_SEL as u64;
    pub const QUEUE_NUM_MAX: u64 = m::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
    pub const QUEUE_NUM: u64 = m::VIRTIO_MMIO_QUEUE_NUM as u64;
    pub const QUEUE_READY: u64 = m::VIRTIO_MMIO_QUEUE_READY as u64;
    pub const QUEUE_NOTIFY: u64 = m::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
    pub const INTERRUPT_STATUS: u64 = m::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
    pub const INTERRUPT_ACK: u64 = m::VIRTIO_MMIO_INTERRUPT_ACK as u64;
    pub const STATUS: u64 = m::VIRTIO_MMIO_STATUS as u64;
    pub const QUEUE_DESC_LOW: u64 = m::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
    pub const QUEUE_DESC_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
    pub const QUEUE_AVAIL_LOW: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
    pub const QUEUE_AVAIL_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
    pub const QUEUE_USED_LOW: u64 = m::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
    pub const QUEUE_USED_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
    pub const SHM_LEN_LOW: u64 = m::VIRTIO_MMIO_SHM_LEN_LOW as u64;
    pub const SHM_LEN_HIGH: u64 = m::VIRTIO_MMIO_SHM_LEN_HIGH as u64;
    pub const CONFIG_GENERATION: u64 = m::VIRTIO_MMIO_CONFIG_GENERATION as u64;
    /// The device-specific configuration space starts here.
    pub const CONFIG: u64 = m::VIRTIO_MMIO_CONFIG as u64;
}

/// Device status bits.
pub mod status {
    use virtio_bindings::virtio_config as c;

    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The driver gave up on the device.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// One virtio device behind its MMIO register page.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    irq: Arc<IrqTrigger>,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    acked_features: u64,
    device_status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// Wraps `device`; `irq` is the trigger wired to the device's GSI.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Self {
        let queues = lock(&device)
            .queue_max_sizes()
            .iter()
            // Queue::new only fails for a max size that is zero, above 32768 or not a power of
            // two: a device bug, so fall back to the smallest valid queue.
            .map(|&max| Queue::new(max).unwrap_or_else(|_| Queue::new(1).expect("size 1 is valid")))
            .collect();
        Self {
            device,
            mem,
            irq,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            acked_features: 0,
            device_status: 0,
            config_generation: 0,
        }
    }

    /// The device behind this transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The registers, and the device's queue positions if it runs (the VM is paused).
    pub fn save_state(&self) -> VirtioSnapshot {
        let dev = lock(&self.device);
        VirtioSnapshot {
            transport: MmioState {
                queue_select: self.queue_select,
                device_features_select: self.device_features_select,
                driver_features_select: self.driver_features_select,
                acked_features: self.acked_features,
                device_status: self.device_status,
                config_generation: self.config_generation,
                interrupt_status: self.irq.status(),
                queues: self.queues.iter().map(|q| q.state().into()).collect(),
            },
            device_acked_features: dev.acked_features(),
            active_queues: dev
                .common()
                .active()
                .map(|a| a.queues.iter().map(|q| q.state().into()).collect()),
        }
    }

    /// Takes a snapshot's registers and, if the device was running, starts it with the
    /// snapshot's queue positions; then lets it look at its queues (notifications the old
    /// VMM had not served are not repeated by the guest) and tells it it was restored.
    pub fn restore_state(&mut self, saved: &VirtioSnapshot) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Invalid(why));
        let t = &saved.transport;
        let mut dev = lock(&self.device);
        let max: Vec<u16> = dev.queue_max_sizes().to_vec();
        if t.queues.len() != max.len() || t.queues.iter().zip(&max).any(|(q, m)| q.max_size != *m) {
            return bad(format!(
                "a {:?} device with queues of {:?}, the snapshot's has {:?}",
                DeviceKind::of(dev.device_type()),
                max,
                t.queues.iter().map(|q| q.max_size).collect::<Vec<_>>()
            ));
        }
        let to_queues = |saved: &[QueueSnapshot]| -> Result<Vec<Queue>, SnapshotError> {
            saved
                .iter()
                .map(|q| {
                    let queue = Queue::try_from(QueueState::from(*q))
                        .map_err(|e| SnapshotError::Invalid(format!("a queue: {e}")))?;
                    if queue.ready() && !queue.is_valid(&self.mem) {
                        return Err(SnapshotError::Invalid(
                            "a queue outside guest memory".into(),
                        ));
                    }
                    Ok(queue)
                })
                .collect()
        };
        self.queues = to_queues(&t.queues)?;
        self.queue_select = t.queue_select;
        self.device_features_select = t.device_features_select;
        self.driver_features_select = t.driver_features_select;
        self.acked_features = t.acked_features & dev.avail_features();
        self.device_status = t.device_status;
        self.config_generation = t.config_generation;
        self.irq.restore(t.interrupt_status);
        if let Some(active) = &saved.active_queues {
            dev.set_acked_features(saved.device_acked_features);
            let queues = to_queues(active)?;
            dev.activate(self.mem.clone(), queues, self.irq.clone())
                .map_err(|e| SnapshotError::Invalid(format!("starting a device: {e}")))?;
            for i in 0..max.len() {
                dev.common().kick(i);
            }
            if dev.restored() {
                self.config_generation = self.config_generation.wrapping_add(1);
                self.irq.trigger_config();
            }
        }
        Ok(())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// Status bits `set` all on and `clear` all off.
    fn status_is(&self, set: u32, clear: u32) -> bool {
        self.device_status & set == set && self.device_status & clear == 0
    }

    fn reset(&mut self) {
        let mut dev = lock(&self.device);
        dev.reset();
        for q in &mut self.queues {
            q.reset();
        }
        drop(dev);
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.acked_features = 0;
        self.device_status = 0;
        self.irq.clear();
    }

    fn set_status(&mut self, value: u32) {
        use status::*;
        if value == 0 {
            self.reset();
            return;
        }
        // DEVICE_NEEDS_RESET belongs to the device: a driver writing back what it read (a
        // read-modify-write adding FAILED) neither sets nor clears it.
        let value = (value & !DEVICE_NEEDS_RESET) | (self.device_status & DEVICE_NEEDS_RESET);
        // Bits may only be added, one step of the sequence at a time.
        if value & self.device_status != self.device_status {
            return;
        }
        let new = value & !self.device_status;
        match new {
            ACKNOWLEDGE if self.device_status == 0 => self.device_status = value,
            DRIVER if self.status_is(ACKNOWLEDGE, DRIVER) => self.device_status = value,
            // A modern device only works with a driver that accepted VERSION_1.
            FEATURES_OK
                if self.status_is(ACKNOWLEDGE | DRIVER, FEATURES_OK)
                    && self.acked_features & VIRTIO_F_VERSION_1 != 0 =>
            {
                lock(&self.device).set_acked_features(self.acked_features);
                self.device_status = value;
            }
            DRIVER_OK if self.status_is(ACKNOWLEDGE | DRIVER | FEATURES_OK, DRIVER_OK) => {
                self.device_status = value;
                self.activate();
            }
            FAILED => self.device_status |= FAILED,
            _ => {}
        }
    }

    fn activate(&mut self) {
        let invalid = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.mem));
        let result = match invalid {
            Some(i) => Err(ActivateError::QueueOutsideMemory(i)),
            None => {
                // Queue is not Clone: hand the device copies rebuilt from the register state
                // and keep ours for QueueReady reads and the next reset.
                let copies: Result<Vec<Queue>, _> = self
                    .queues
                    .iter()
                    .map(|q| Queue::try_from(q.state()))
                    .collect();
                match copies {
                    Ok(queues) => {
                        lock(&self.device).activate(self.mem.clone(), queues, self.irq.clone())
                    }
                    Err(e) => Err(ActivateError::BadQueue(e)),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!("virtio device activation failed: {e}");
            self.device_status |= status::DEVICE_NEEDS_RESET;
            self.irq.trigger_config();
        }
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => lock(&self.device).device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = lock(&self.device).avail_features();
                match self.device_features_select {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.irq.status(),
            reg::STATUS => {
                // Only an initialised device can need a reset: after the driver's reset the
                // status must read 0, or the driver would wait for it forever.
                if self.device_status != 0 && lock(&self.device).needs_reset() {
                    self.device_status | status::DEVICE_NEEDS_RESET
                } else {
                    self.device_status
                }
            }
            // No shared memory regions: a length of all ones means "absent".
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        use status::*;
        let setting_features = self.status_is(DRIVER, FEATURES_OK | FAILED);
        let setting_queues = self.status_is(FEATURES_OK, DRIVER_OK | FAILED);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::DRIVER_FEATURES if setting_features => {
                let offered = lock(&self.device).avail_features();
                let shift = match self.driver_features_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                // Accept only what was offered: a driver cannot enable features we lack.
                let acked = (u64::from(value) << shift) & offered;
                self.acked_features = (self.acked_features & !mask) | acked;
            }
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::QUEUE_SEL => self.queue_select = value,
            reg::QUEUE_NUM if setting_queues => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY if setting_queues => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_NOTIFY => {
                // Normally KVM's ioeventfd catches this write; without one, forward it.
                if let Some(evt) = lock(&self.device).queue_events().get(value as usize)
                    && let Err(e) = evt.write(1)
                {
                    tracing::warn!("queue notify failed: {e}");
                }
            }
            reg::INTERRUPT_ACK => self
                .irq
                .ack(value & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)),
            reg::STATUS => self.set_status(value),
            reg::QUEUE_DESC_LOW if setting_queues => {
                self.with_queue(|q| q.set_desc_table_address(Some(value), None))
            }
            reg::QUEUE_DESC_HIGH if setting_queues => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::QUEUE_AVAIL_LOW if setting_queues => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::QUEUE_AVAIL_HIGH if setting_queues => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::QUEUE_USED_LOW if setting_queues => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::QUEUE_USED_HIGH if setting_queues => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            _ => tracing::debug!("ignored virtio-mmio write {offset:#x} = {value:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            lock(&self.device).read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.status_is(status::DRIVER, status::FAILED) {
                lock(&self.device).write_config(offset - reg::CONFIG, data);
                self.config_generation = self.config_generation.wrapping_add(1);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        common: super::super::VirtioCommon,
        failed: bool,
        config: [u8; 8],
    }
    impl VirtioDevice for Dummy {
        fn common(&self) -> &super::super::VirtioCommon {
            &self.common
        }
        fn common_mut(&mut self) -> &mut super::super::VirtioCommon {
            &mut self.common
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&self.config, offset, data);
        }
        fn activate(
            &mut self,
            mem: GuestMemoryMmap,
            q: Vec<Queue>,
            irq: Arc<IrqTrigger>,
        ) -> Result<(), ActivateError> {
            self.common.activate(mem, q, irq, |_, _| Ok(()))
        }
        fn reset(&mut self) {
            self.common.reset();
        }
        fn needs_reset(&self) -> bool {
            self.failed
        }
    }

    fn transport() -> (MmioTransport, Arc<Mutex<Dummy>>) {
        let dev = Arc::new(Mutex::new(Dummy {
            common: super::super::VirtioCommon::new(42, VIRTIO_F_VERSION_1 | 1, &[16, 16], &[])
                .unwrap(),
            failed: false,
            config: [1, 2, 3, 4, 5, 6, 7, 8],
        }));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        (MmioTransport::new(dev.clone(), mem, irq), dev)
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }
    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn setup_queue(t: &mut MmioTransport, i: u32, base: u64) {
        w(t, 0x30, i);
        w(t, 0x38, 16);
        w(t, 0x80, base as u32);
        w(t, 0x90, (base + 0x100) as u32);
        w(t, 0xa0, (base + 0x200) as u32);
        w(t, 0x44, 1);
    }

    #[test]
    fn identifies_itself() {
        let (mut t, _) = transport();
        assert_eq!(r(&mut t, 0), MMIO_MAGIC_VALUE);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 42);
        assert_eq!(r(&mut t, 0x34), 16);
        let mut cfg = [0u8; 2];
        t.read(0x106, &mut cfg);
        assert_eq!(cfg, [7, 8]);
    }

    #[test]
    fn full_initialisation_activates_the_device() {
        let (mut t, dev) = transport();
        w(&mut t, 0x70, status::ACKNOWLEDGE);
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 is bit 0 of page 1");
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 0xffff_ffff); // more than offered
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, status::FEATURES_OK);
        assert_eq!(dev.lock().unwrap().acked_features(), VIRTIO_F_VERSION_1 | 1);
        setup_queue(&mut t, 0, 0x1000);
        setup_queue(&mut t, 1, 0x2000);
        w(&mut t, 0x70, 0xf);
        assert!(dev.lock().unwrap().is_activated());
        assert_eq!(r(&mut t, 0x70), 0xf);
        w(&mut t, 0x70, 0);
        assert!(!dev.lock().unwrap().is_activated());
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn features_without_version_1_are_refused() {
        let (mut t, _) = transport();
        w(&mut t, 0x70, 1);
        w(&mut t, 0x70, 3);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 0xb);
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, 0);
    }

    #[test]
    fn out_of_order_status_and_early_queue_writes_are_ignored() {
        let (mut t, dev) = transport();
        w(&mut t, 0x70, status::DRIVER_OK);
        assert_eq!(r(&mut t, 0x70), 0);
        w(&mut t, 0x38, 4); // queue size before FEATURES_OK
        w(&mut t, 0x70, 1);
        w(&mut t, 0x70, 3);
        w(&mut t, 0x70, 7); // DRIVER_OK without FEATURES_OK
        assert!(!dev.lock().unwrap().is_activated());
        // Narrow register accesses are ignored.
        t.write(0x70, &[0]);
        assert_eq!(r(&mut t, 0x70), 3);
        // Out-of-range queue select is harmless.
        w(&mut t, 0x30, 99);
        assert_eq!(r(&mut t, 0x34), 0);
    }

    #[test]
    fn queue_outside_memory_needs_reset() {
        let (mut t, dev) = transport();
        w(&mut t, 0x70, 1);
        w(&mut t, 0x70, 3);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 0xb);
        setup_queue(&mut t, 0, 0x1000);
        w(&mut t, 0x30, 1);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0xffff_f000); // descriptor table far outside guest memory
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, 0xf);
        assert!(!dev.lock().unwrap().is_activated());
        assert_ne!(r(&mut t, 0x70) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(r(&mut t, 0x60) & VIRTIO_MMIO_INT_CONFIG, 0);
    }

    #[test]
    fn a_failed_device_reads_needs_reset_until_the_driver_resets_it() {
        let (mut t, dev) = transport();
        dev.lock().unwrap().failed = true;
        assert_eq!(r(&mut t, 0x70), 0, "no status before the driver starts");
        w(&mut t, 0x70, status::ACKNOWLEDGE);
        assert_eq!(
            r(&mut t, 0x70),
            status::ACKNOWLEDGE | status::DEVICE_NEEDS_RESET
        );
        // Writing back what was read, plus DRIVER, is the next step of the sequence.
        let read = r(&mut t, 0x70);
        w(&mut t, 0x70, read | status::DRIVER);
        assert_eq!(r(&mut t, 0x70) & 0xf, status::ACKNOWLEDGE | status::DRIVER);
        let read = r(&mut t, 0x70);
        w(&mut t, 0x70, read | status::FAILED);
        assert_ne!(r(&mut t, 0x70) & status::FAILED, 0);
        w(&mut t, 0x70, 0);
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn notify_write_signals_queue_event() {
        let (mut t, dev) = transport();
        w(&mut t, 0x50, 1);
        assert_eq!(dev.lock().unwrap().queue_events()[1].read().unwrap(), 1);
        w(&mut t, 0x50, 7); // no such queue
    }
}

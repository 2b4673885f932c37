//! Virtio devices on the virtio-mmio transport (version 2, "modern").
//!
//! The split follows Firecracker's `devices/virtio`: a device holds its emulation and its
//! queue-notify eventfds and is driven by the event loop; the MMIO transport owns the register
//! file and the queue configuration while the driver sets the device up, then hands the
//! queues to the device when the driver sets DRIVER_OK.

pub mod block;
pub mod common;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod vhost_user;
pub mod vsock;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub use common::{ActiveState, VirtioCommon};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use virtio_bindings::{virtio_config, virtio_ids};

/// Feature bit every modern device offers and every driver must accept.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
/// Device ID of virtio-net.
pub const TYPE_NET: u32 = virtio_ids::VIRTIO_ID_NET;
/// Device ID of virtio-blk.
pub const TYPE_BLOCK: u32 = virtio_ids::VIRTIO_ID_BLOCK;
/// Device ID of virtio-vsock.
pub const TYPE_VSOCK: u32 = virtio_ids::VIRTIO_ID_VSOCK;
/// Device ID of virtio-fs.
pub const TYPE_FS: u32 = virtio_ids::VIRTIO_ID_FS;

/// Interrupt status bits: the device used buffers (VRING), the configuration changed or the
/// device needs a reset (CONFIG).
pub use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

/// Raises the device's interrupt: sets a bit in the transport's InterruptStatus register and
/// signals the irqfd KVM injects from.
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    evt: EventFd,
}

impl IrqTrigger {
    /// A trigger writing `evt` (registered with KVM as an irqfd).
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            evt,
        }
    }

    /// Signals that buffers were placed in a used ring.
    pub fn trigger_vring(&self) {
        self.trigger(VIRTIO_MMIO_INT_VRING);
    }

    /// Signals a configuration change.
    pub fn trigger_config(&self) {
        self.trigger(VIRTIO_MMIO_INT_CONFIG);
    }

    fn trigger(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            tracing::warn!("cannot raise virtio interrupt: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged (cleared) these bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Sets the register to a snapshot's value (no interrupt: the interrupt controllers'
    /// own state says whether one is pending).
    pub fn restore(&self, bits: u32) {
        self.status.store(
            bits & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG),
            Ordering::SeqCst,
        );
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The eventfd KVM listens on.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Activating a device failed; the transport reports DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not set up a queue the device cannot work without.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// A queue the driver enabled lies (partly) outside guest memory.
    #[error("queue {0} does not fit in guest memory")]
    QueueOutsideMemory(usize),
    /// A queue's register state could not be turned into a queue.
    #[error("bad queue: {0}")]
    BadQueue(#[source] virtio_queue::Error),
    /// The TAP refused the offloads the driver negotiated.
    #[error("cannot set TAP offloads: {0}")]
    TapOffloads(#[source] std::io::Error),
    /// The vhost-user backend went away before the driver started the device.
    #[error("virtio-fs {tag}: the vhost-user backend is gone")]
    BackendGone {
        /// The device's tag.
        tag: String,
    },
    /// The vhost-user backend refused to start the rings.
    #[error("virtio-fs {tag}: {source}")]
    VhostUser {
        /// The device's tag.
        tag: String,
        /// What failed.
        source: vhost_user::VhostUserError,
    },
}

/// What the transport needs from a device.
///
/// Everything the devices share (features, queues, activation state) lives in the
/// [`VirtioCommon`] each embeds; the provided methods read it, so a device implements only
/// its configuration space, its start-up and its reset.
pub trait VirtioDevice: Send {
    /// The state shared by every device.
    fn common(&self) -> &VirtioCommon;
    /// The state shared by every device, to change it.
    fn common_mut(&mut self) -> &mut VirtioCommon;
    /// The virtio device ID.
    fn device_type(&self) -> u32 {
        self.common().device_type()
    }
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16] {
        self.common().queue_max_sizes()
    }
    /// One eventfd per queue, signalled (through KVM ioeventfds) when the driver notifies it.
    fn queue_events(&self) -> &[EventFd] {
        self.common().queue_events()
    }
    /// Feature bits the device offers.
    fn avail_features(&self) -> u64 {
        self.common().avail_features()
    }
    /// Feature bits the driver accepted.
    fn acked_features(&self) -> u64 {
        self.common().acked_features()
    }
    /// Records the features the driver accepted, keeping only those the device offers.
    fn set_acked_features(&mut self, features: u64) {
        self.common_mut().ack_features(features);
    }
    /// Reads the device-specific configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space. Our devices' configurations are read-only for the
    /// driver, so the default ignores the write.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the queues the driver configured.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError>;
    /// Stops the device and forgets its queues and features (driver wrote 0 to Status).
    fn reset(&mut self);
    /// Whether the device is running.
    fn is_activated(&self) -> bool {
        self.common().is_activated()
    }
    /// Whether the device failed after activation (e.g. its external backend went away) and
    /// can only work again after the driver resets it; the transport then reports
    /// DEVICE_NEEDS_RESET.
    fn needs_reset(&self) -> bool {
        false
    }
    /// Called once a restored device runs again with its snapshot's queues, in a new VMM
    /// whose backends (host sockets, TAPs, disk files) are not the ones the guest used
    /// before. Returns whether its configuration space may differ from what the guest read
    /// (the transport then tells the driver, as a configuration change).
    fn restored(&mut self) -> bool {
        false
    }
}

/// Copies `data.len()` bytes of `config` from `offset` into `data`, zero past the end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = config.len().min(start.saturating_add(data.len()));
    data[..end - start].copy_from_slice(&config[start..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 100, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn irq_status_bits() {
        let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        irq.trigger_vring();
        irq.trigger_config();
        assert_eq!(irq.status(), 3);
        irq.ack(1);
        assert_eq!(irq.status(), 2);
        assert_eq!(irq.eventfd().read().unwrap(), 2);
    }
}

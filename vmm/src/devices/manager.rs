//! Places virtio devices on the guest's MMIO bus: each gets the next register page and the
//! next interrupt line, its notifications and interrupt are wired to KVM, and the kernel
//! learns where it is from the command line.
//!
//! Slots are handed out in the order devices are added, so the builder decides the guest's
//! view (which `/dev/vdX` a disk becomes) only by the order it adds them in.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{
    MAX_VIRTIO_DEVICES, VIRTIO_IRQ_BASE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use crate::devices::bus::{Bus, BusError, lock};
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::fs::FsError;
use crate::devices::virtio::mmio::{MmioTransport, NOTIFY_REG_OFFSET};
use crate::devices::virtio::net::NetError;
use crate::devices::virtio::vsock::VsockError;
use crate::devices::virtio::{IrqTrigger, VirtioDevice};

/// The event loop every device subscribes to.
pub type EventLoop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A device could not be created or placed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Every virtio-mmio slot is taken.
    #[error("no room for another virtio device: at most {MAX_VIRTIO_DEVICES}")]
    NoSlot,
    /// A disk could not be opened.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A network interface could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The vsock device could not be set up.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A shared directory could not be set up.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The device's range on its bus is taken or invalid.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The interrupt eventfd could not be created.
    #[error("cannot create eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// KVM refused the interrupt's irqfd.
    #[error("KVM register irqfd failed: {0}")]
    Irqfd(#[source] kvm_ioctls::Error),
    /// KVM refused a queue-notify ioeventfd.
    #[error("KVM register ioeventfd failed: {0}")]
    Ioeventfd(#[source] kvm_ioctls::Error),
    /// The device does not fit on the kernel command line.
    #[error("invalid kernel command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
}

/// Where one virtio-mmio device lives: its register page and its interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest-physical address of the register page.
    pub base: u64,
    /// Length of the register page.
    pub len: u64,
    /// GSI (IOAPIC pin) of the device's interrupt.
    pub gsi: u32,
}

/// Hands out virtio-mmio slots in order, at most [`MAX_VIRTIO_DEVICES`] of them (one per
/// free IOAPIC pin).
#[derive(Debug, Default)]
pub struct MmioSlots {
    used: u32,
}

impl MmioSlots {
    /// The next free slot.
    pub fn allocate(&mut self) -> Result<MmioSlot, DeviceError> {
        if self.used as usize >= MAX_VIRTIO_DEVICES {
            return Err(DeviceError::NoSlot);
        }
        let slot = MmioSlot {
            base: VIRTIO_MMIO_BASE + u64::from(self.used) * VIRTIO_MMIO_SIZE,
            len: VIRTIO_MMIO_SIZE,
            gsi: VIRTIO_IRQ_BASE + self.used,
        };
        self.used += 1;
        Ok(slot)
    }
}

/// Owns the MMIO bus while the VM is built and places virtio devices on it.
#[derive(Default)]
pub struct DeviceManager {
    slots: MmioSlots,
    mmio: Bus,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
}

impl DeviceManager {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` in the next slot: its interrupt as a KVM irqfd, its queue notifications
    /// as KVM ioeventfds on the QueueNotify register, its transport on the MMIO bus, its
    /// `virtio_mmio.device=` word on the command line, and the device itself on the event
    /// loop. Returns the slot it got.
    pub fn attach_virtio<D>(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        cmdline: &mut Cmdline,
        event_loop: &mut EventLoop,
        device: Arc<Mutex<D>>,
    ) -> Result<MmioSlot, DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        let slot = self.slots.allocate()?;
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(DeviceError::EventFd)?;
        vm.register_irqfd(&irq_evt, slot.gsi)
            .map_err(DeviceError::Irqfd)?;
        {
            let dev = lock(&device);
            for (i, evt) in dev.queue_events().iter().enumerate() {
                vm.register_ioevent(
                    evt,
                    &IoEventAddress::Mmio(slot.base + NOTIFY_REG_OFFSET),
                    i as u32,
                )
                .map_err(DeviceError::Ioeventfd)?;
            }
        }
        let transport = MmioTransport::new(
            device.clone() as Arc<Mutex<dyn VirtioDevice>>,
            mem.clone(),
            Arc::new(IrqTrigger::new(irq_evt)),
        );
        let transport = Arc::new(Mutex::new(transport));
        self.mmio.insert(transport.clone(), slot.base, slot.len)?;
        self.transports.push(transport);
        cmdline
            .add_virtio_mmio_device(slot.len, GuestAddress(slot.base), slot.gsi, None)
            .map_err(DeviceError::Cmdline)?;
        event_loop.add_subscriber(device as Arc<Mutex<dyn MutEventSubscriber + Send>>);
        Ok(slot)
    }

    /// The MMIO bus with every device placed, for the vCPUs to dispatch to, and the
    /// transports in slot order (to snapshot and restore them).
    pub fn into_parts(self) -> (Bus, Vec<Arc<Mutex<MmioTransport>>>) {
        (self.mmio, self.transports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::IOAPIC_START;

    #[test]
    fn slots_come_in_order() {
        let mut slots = MmioSlots::default();
        let first = slots.allocate().unwrap();
        let second = slots.allocate().unwrap();
        assert_eq!(
            first,
            MmioSlot {
                base: VIRTIO_MMIO_BASE,
                len: VIRTIO_MMIO_SIZE,
                gsi: VIRTIO_IRQ_BASE,
            }
        );
        assert_eq!(second.base, VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE);
        assert_eq!(second.gsi, VIRTIO_IRQ_BASE + 1);
    }

    #[test]
    fn slots_run_out_at_the_last_ioapic_pin() {
        let mut slots = MmioSlots::default();
        let mut last = None;
        for _ in 0..MAX_VIRTIO_DEVICES {
            last = Some(slots.allocate().unwrap());
        }
        let last = last.unwrap();
        assert_eq!(last.gsi, 23, "the IOAPIC has 24 pins");
        assert!(last.base + last.len <= IOAPIC_START);
        assert!(matches!(slots.allocate(), Err(DeviceError::NoSlot)));
        // Still refused: a failed allocation takes nothing.
        assert!(matches!(slots.allocate(), Err(DeviceError::NoSlot)));
    }
}

//! The devices' state: COM1's registers and, for each virtio device, its transport's register
//! file and the positions of its queues (the device's own copies, which move as it serves
//! them). Device backends (disk files, TAPs, host sockets) are not state: the restoring VMM
//! opens the ones its config names.

use serde::{Deserialize, Serialize};
use virtio_queue::QueueState;

use super::SnapshotError;
use crate::devices::virtio::{TYPE_BLOCK, TYPE_FS, TYPE_NET, TYPE_VSOCK};

/// A virtio device's kind, as the guest found it in its slot.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// virtio-blk.
    Block,
    /// virtio-vsock.
    Vsock,
    /// virtio-net.
    Net,
    /// virtio-fs (never in a snapshot: its state is in the vhost-user backend).
    Fs,
}

impl DeviceKind {
    /// The kind of a virtio device ID.
    pub fn of(device_type: u32) -> Option<Self> {
        match device_type {
            TYPE_BLOCK => Some(Self::Block),
            TYPE_VSOCK => Some(Self::Vsock),
            TYPE_NET => Some(Self::Net),
            TYPE_FS => Some(Self::Fs),
            _ => None,
        }
    }

    /// "block, vsock, net" (or "none").
    pub fn list(kinds: &[DeviceKind]) -> String {
        if kinds.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = kinds
            .iter()
            .map(|k| match k {
                Self::Block => "block",
                Self::Vsock => "vsock",
                Self::Net => "net",
                Self::Fs => "fs",
            })
            .collect();
        names.join(", ")
    }
}

/// One virtqueue's configuration and positions ([`QueueState`], which is not serialisable).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    /// The device's largest size.
    pub max_size: u16,
    /// Next available-ring entry the device will take.
    pub next_avail: u16,
    /// Next used-ring entry the device will fill.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// The size the driver chose.
    pub size: u16,
    /// The driver enabled it.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// The virtio-mmio transport's registers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MmioState {
    /// QueueSel.
    pub queue_select: u32,
    /// DeviceFeaturesSel.
    pub device_features_select: u32,
    /// DriverFeaturesSel.
    pub driver_features_select: u32,
    /// What the driver wrote to DriverFeatures (masked with the offer).
    pub acked_features: u64,
    /// Status.
    pub device_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// The queues as the driver configured them.
    pub queues: Vec<QueueSnapshot>,
}

/// One virtio device.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VirtioSnapshot {
    /// The transport.
    pub transport: MmioState,
    /// The features the device accepted when it started.
    pub device_acked_features: u64,
    /// The running device's queues (where it has got to); `None` when it was not running.
    pub active_queues: Option<Vec<QueueSnapshot>>,
}

/// Most queues any of our devices has (net: rx and tx per pair; vsock: three).
const MAX_QUEUES: usize = 16;

impl VirtioSnapshot {
    /// Counts and sizes within what a device of `kind` could have had.
    pub fn check(&self, kind: DeviceKind) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Invalid(format!("{kind:?} device: {why}")));
        if kind == DeviceKind::Fs {
            return bad("virtio-fs cannot be restored".into());
        }
        let queues = self
            .transport
            .queues
            .iter()
            .chain(self.active_queues.iter().flatten());
        if self.transport.queues.len() > MAX_QUEUES {
            return bad(format!("{} queues", self.transport.queues.len()));
        }
        if let Some(active) = &self.active_queues
            && active.len() != self.transport.queues.len()
        {
            return bad(format!(
                "{} running queues for {} configured",
                active.len(),
                self.transport.queues.len()
            ));
        }
        for q in queues {
            if q.size > q.max_size || (q.size != 0 && !q.size.is_power_of_two()) {
                return bad(format!("queue size {} (largest {})", q.size, q.max_size));
            }
        }
        Ok(())
    }
}

/// The 16550A's registers (vm-superio's `SerialState`, which is not serialisable).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SerialSnapshot {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// IER.
    pub interrupt_enable: u8,
    /// IIR.
    pub interrupt_identification: u8,
    /// LCR.
    pub line_control: u8,
    /// LSR.
    pub line_status: u8,
    /// MCR.
    pub modem_control: u8,
    /// MSR.
    pub modem_status: u8,
    /// SCR.
    pub scratch: u8,
    /// Bytes received and not yet read by the guest.
    pub in_buffer: Vec<u8>,
}

/// vm-superio's receive FIFO size.
const SERIAL_FIFO: usize = 64;

impl SerialSnapshot {
    /// The FIFO fits.
    pub fn check(&self) -> Result<(), SnapshotError> {
        if self.in_buffer.len() > SERIAL_FIFO {
            return Err(SnapshotError::Invalid(format!(
                "serial receive buffer of {} bytes",
                self.in_buffer.len()
            )));
        }
        Ok(())
    }
}

impl From<vm_superio::serial::SerialState> for SerialSnapshot {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for vm_superio::serial::SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

//! Snapshots: a paused VM written to two files and brought back in a new process.
//!
//! The state file ([`file`]) holds what KVM and the devices know: each vCPU's registers,
//! MSRs, FPU/XSAVE, LAPIC and pending events ([`vcpu`]), the in-kernel PIC, IOAPIC, PIT and
//! clock ([`vm`]), the serial port and every virtio transport with its queue positions
//! ([`devices`]). The memory file is guest RAM, region after region, with never-touched pages
//! left as holes; restore maps it `MAP_PRIVATE`, so pages load when the guest touches them and
//! VMs restored from one file share them in the page cache until one writes (Firecracker's
//! design).
//!
//! The state file is read as untrusted input: a header with a magic, the format version, this
//! VMM's build and the CPU it ran on, a bounded length and a SHA-256 of the body; then the
//! body is parsed and checked against the VM being restored before any of it reaches KVM.

pub mod devices;
pub mod file;
pub mod identity;
pub mod vcpu;
pub mod vm;

use serde::{Deserialize, Serialize};

pub use devices::{DeviceKind, MmioState, QueueSnapshot, SerialSnapshot, VirtioSnapshot};
pub use file::{SnapshotError, read_state, write_memory, write_state};
pub use vcpu::VcpuState;
pub use vm::VmState;

/// The shape a VM must have to take a snapshot's state: what the guest saw at boot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// The virtio devices in slot order.
    pub devices: Vec<DeviceKind>,
    /// The vsock device's guest CID (the guest's drivers keep it).
    pub guest_cid: Option<u64>,
}

/// Everything in a state file after its header.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshot {
    /// The VM's shape.
    pub shape: Shape,
    /// The in-kernel interrupt controllers, PIT and clock.
    pub vm: VmState,
    /// One entry per vCPU, in ID order.
    pub vcpus: Vec<VcpuState>,
    /// COM1.
    pub serial: SerialSnapshot,
    /// One entry per virtio device, in slot order.
    pub devices: Vec<VirtioSnapshot>,
}

impl VmSnapshot {
    /// Checks what KVM and the devices would not check themselves, against the shape of the
    /// VM about to take this state.
    pub fn check(&self, want: &Shape) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Invalid(why));
        if self.shape.vcpus != want.vcpus || self.shape.mem_mib != want.mem_mib {
            return bad(format!(
                "the snapshot is of a VM with {} vCPUs and {} MiB, this one has {} and {}",
                self.shape.vcpus, self.shape.mem_mib, want.vcpus, want.mem_mib
            ));
        }
        if self.shape.devices != want.devices {
            return bad(format!(
                "the snapshot's devices are {}, this VM's are {}",
                DeviceKind::list(&self.shape.devices),
                DeviceKind::list(&want.devices)
            ));
        }
        if self.shape.guest_cid != want.guest_cid {
            return bad(format!(
                "the snapshot's vsock CID is {:?}, this VM's is {:?}",
                self.shape.guest_cid, want.guest_cid
            ));
        }
        if self.vcpus.len() != usize::from(self.shape.vcpus) {
            return bad(format!(
                "{} vCPU states for {} vCPUs",
                self.vcpus.len(),
                self.shape.vcpus
            ));
        }
        if self.devices.len() != self.shape.devices.len() {
            return bad(format!(
                "{} device states for {} devices",
                self.devices.len(),
                self.shape.devices.len()
            ));
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            v.check(i)?;
        }
        self.serial.check()?;
        for (dev, kind) in self.devices.iter().zip(&self.shape.devices) {
            dev.check(*kind)?;
        }
        Ok(())
    }
}

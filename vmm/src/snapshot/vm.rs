//! The VM's own state in KVM: the two PICs, the IOAPIC, the PIT and the clock.

use kvm_bindings::{
    KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME, KVM_CLOCK_TSC_STABLE, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip, kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The in-kernel interrupt controllers, PIT and clock.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// The master 8259.
    pub pic_master: kvm_irqchip,
    /// The slave 8259.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
    /// The i8254 PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock's time.
    pub clock: kvm_clock_data,
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm { what, source }
}

fn chip(vm: &VmFd, id: u32) -> Result<kvm_irqchip, SnapshotError> {
    let mut c = kvm_irqchip {
        chip_id: id,
        ..Default::default()
    };
    vm.get_irqchip(&mut c).map_err(kvm("get irqchip"))?;
    Ok(c)
}

impl VmState {
    /// Reads the state of a VM whose vCPUs are paused.
    pub fn save(vm: &VmFd) -> Result<Self, SnapshotError> {
        let mut clock = vm.get_clock().map_err(kvm("get clock"))?;
        // A restored clock is set, not "stable" from the host's TSC (as Firecracker does).
        clock.flags &= !KVM_CLOCK_TSC_STABLE;
        Ok(Self {
            pic_master: chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(kvm("get PIT"))?,
            clock,
        })
    }

    /// Sets this state on a new VM that has its irqchip and PIT, before any vCPU runs.
    pub fn restore(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        for (c, id) in [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if c.chip_id != id {
                return Err(SnapshotError::Invalid(format!(
                    "irqchip {id} is saved as chip {}",
                    c.chip_id
                )));
            }
            vm.set_irqchip(c).map_err(kvm("set irqchip"))?;
        }
        vm.set_pit2(&self.pit).map_err(kvm("set PIT"))?;
        // Only the clock's value: with KVM_CLOCK_REALTIME (kernels 5.16+ report it) KVM would
        // move kvmclock on by the time since the snapshot (days, for a template), firing every
        // timer at once; the guest's clock stands still instead and the warm boot sets its
        // wall time.
        let mut clock = self.clock;
        clock.flags &= !(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC);
        vm.set_clock(&clock).map_err(kvm("set clock"))?;
        Ok(())
    }
}

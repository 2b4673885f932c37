//! The KVM VM: guest memory registration, the in-kernel interrupt controllers and PIT.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{KVM_TSS_ADDRESS, ram_ranges};

/// Creating or configuring the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is missing or unusable.
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl on the VM failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Its error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Memory {
        /// Size asked for.
        mib: u64,
        /// Why.
        reason: String,
    },
}

/// Opens /dev/kvm.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(VmError::OpenKvm)
}

/// Allocates guest RAM (anonymous, private) laid out around the MMIO hole.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mem_mib << 20)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory {
        mib: mem_mib,
        reason: e.to_string(),
    })
}

/// Creates the VM with its memory, TSS, IOAPIC/PIC/LAPIC and PIT.
pub fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let kvm_err = |what| move |source| VmError::Kvm { what, source };
    let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmError::Memory {
                mib: 0,
                reason: e.to_string(),
            })?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region describes a mapping owned by `mem`, which the caller keeps alive
        // (and mapped) for as long as the VM exists; slots are distinct.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("set user memory region"))?;
    }
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("set TSS address"))?;
    vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("create PIT"))?;
    Ok(vm)
}

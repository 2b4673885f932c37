//! The KVM VM: guest memory registration, the in-kernel interrupt controllers and PIT.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

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

/// Allocates guest RAM in one memfd mapped `MAP_SHARED`, laid out as
/// [`create_guest_memory`] does.
///
/// vhost-user backends (virtiofsd) serve the guest's queues from their own process, so they
/// must map the very pages the guest uses: each region carries a [`FileOffset`] naming the
/// memfd and where the region starts in it, which is what SET_MEM_TABLE sends. The memfd is
/// sealed against shrinking and growing once sized, so a backend holding it cannot truncate
/// the file under the monitor's mapping (a later access would raise SIGBUS here).
pub fn create_shared_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, VmError> {
    let err = |reason: String| VmError::Memory {
        mib: mem_mib,
        reason,
    };
    let ranges = ram_ranges(mem_mib << 20);
    let total: u64 = ranges.iter().map(|(_, len)| len).sum();
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new descriptor
    // (or -1), which is owned below only when valid.
    let fd = unsafe {
        libc::memfd_create(
            c"mvm-guest-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(err(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` is a valid descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(total)
        .map_err(|e| err(format!("sizing the memfd: {e}")))?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own takes an int argument and touches no memory.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(err(format!(
            "sealing the memfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    let file = Arc::new(file);
    let mut offset = 0u64;
    let mut regions = Vec::with_capacity(ranges.len());
    for (start, len) in ranges {
        regions.push((
            GuestAddress(start),
            len as usize,
            Some(FileOffset::from_arc(file.clone(), offset)),
        ));
        offset += len;
    }
    GuestMemoryMmap::from_ranges_with_files(&regions).map_err(|e| err(e.to_string()))
}

/// Maps a snapshot's memory file as guest RAM laid out as [`create_guest_memory`] does:
/// `MAP_PRIVATE`, so the file is never written, pages are read in when the guest first touches
/// them, and every VM restored from the same file shares the pages none of them has written.
pub fn restore_guest_memory(mem_mib: u64, file: File) -> Result<GuestMemoryMmap, VmError> {
    use vm_memory::mmap::{GuestRegionMmap, MmapRegionBuilder};
    let err = |reason: String| VmError::Memory {
        mib: mem_mib,
        reason,
    };
    let file = Arc::new(file);
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(mem_mib << 20) {
        let mapping = MmapRegionBuilder::new(len as usize)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| err(format!("mapping the snapshot's memory: {e}")))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| err("a memory region past the end of the address space".into()))?;
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| err(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;

    #[test]
    fn shared_memory_is_one_sealed_memfd_behind_every_region() {
        // Above the MMIO hole, so that there are two regions at different file offsets.
        let mib = (crate::arch::x86_64::layout::MMIO_GAP_START >> 20) + 2;
        let mem = create_shared_guest_memory(mib).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        let low = regions[0].file_offset().unwrap();
        let high = regions[1].file_offset().unwrap();
        assert_eq!(low.start(), 0);
        assert_eq!(high.start(), regions[0].len());
        assert!(Arc::ptr_eq(low.arc(), high.arc()), "one memfd");
        let file = high.file();
        assert_eq!(file.metadata().unwrap().len(), mib << 20);

        // The guest's writes are the file's contents (what a backend maps).
        let gpa = regions[1].start_addr().unchecked_add(0x10);
        mem.write_obj(0xfeed_u32, gpa).unwrap();
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, high.start() + 0x10).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xfeed);

        // A backend holding the memfd cannot shrink it under the monitor.
        assert!(file.set_len(4096).is_err());
    }

    #[test]
    fn private_memory_has_no_file() {
        let mem = create_guest_memory(16).unwrap();
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
    }
}

//! The boot vCPU's architectural state: GDT, page tables, segment and control registers,
//! general registers and FPU, for the two entry protocols we support.
//!
//! Linux 64-bit boot enters in long mode with paging on, `rsi` pointing at `boot_params`.
//! PVH enters in 32-bit protected mode with paging off, `rbx` pointing at `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux 64-bit boot protocol: long mode, `rsi` = `boot_params`.
    Linux,
    /// PVH: 32-bit protected mode, `rbx` = `hvm_start_info`.
    Pvh,
}

/// Setting up a vCPU's registers failed.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM register ioctl failed.
    #[error("cannot set vCPU {what}: {source}")]
    Kvm {
        /// Which register set.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// Boot structures could not be written to guest memory (memory too small).
    #[error("cannot write {0} to guest memory")]
    Memory(&'static str),
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Packs a GDT descriptor from its flags (access byte and granularity nibble), base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((flags & 0x0000_f0ff) << 40)
}

/// Unpacks a GDT descriptor into the segment KVM loads into a segment register.
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

fn gdt_for(protocol: BootProtocol) -> [u64; 4] {
    match protocol {
        BootProtocol::Linux => [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        BootProtocol::Pvh => [
            0,
            gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit flat code
            gdt_entry(0xc093, 0, 0xffff_ffff), // 32-bit flat data
            gdt_entry(0x008b, 0, 0x67),        // TSS
        ],
    }
}

fn write_gdt_and_idt(mem: &GuestMemoryMmap, gdt: &[u64]) -> Result<(), RegsError> {
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(|_| RegsError::Memory("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| RegsError::Memory("IDT"))
}

/// Writes identity-mapping page tables for the first 4 GiB with 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let err = |_| RegsError::Memory("page tables");
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(err)?;
    for dir in 0..PDE_COUNT {
        let pde_table = PDE_START + dir * 0x1000;
        mem.write_obj(pde_table | 0x03, GuestAddress(PDPTE_START + dir * 8))
            .map_err(err)?;
        for i in 0..512u64 {
            let frame = (dir * 512 + i) << 21;
            // Present, writable, 2 MiB page.
            mem.write_obj(frame | 0x83, GuestAddress(pde_table + i * 8))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Sets the special registers: segments from our GDT, and either long mode with paging
/// (Linux) or flat 32-bit protected mode (PVH).
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    vcpu: &VcpuFd,
    protocol: BootProtocol,
) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(|source| RegsError::Kvm {
        what: "sregs",
        source,
    })?;
    let gdt = gdt_for(protocol);
    write_gdt_and_idt(mem, &gdt)?;
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match protocol {
        BootProtocol::Linux => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(|source| RegsError::Kvm {
        what: "sregs",
        source,
    })
}

/// Sets the general registers for entry at `entry`.
pub fn setup_regs(
    vcpu: &VcpuFd,
    entry: GuestAddress,
    protocol: BootProtocol,
) -> Result<(), RegsError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.raw_value(),
        ..Default::default()
    };
    match protocol {
        BootProtocol::Linux => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => {
            regs.rbx = PVH_INFO_START;
        }
    }
    vcpu.set_regs(&regs).map_err(|source| RegsError::Kvm {
        what: "regs",
        source,
    })
}

/// Sets the x87 control word and MXCSR to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::Kvm {
        what: "fpu",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn gdt_entries_round_trip() {
        let code = kvm_segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(code.l, 1);
        assert_eq!(code.present, 1);
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.selector, 8);
        assert_eq!(code.limit, 0xffff_ffff);
        let data = kvm_segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!(data.db, 1);
        assert_eq!(data.l, 0);
        assert_eq!(data.type_, 0x3);
        let tss = kvm_segment_from_gdt(gdt_entry(0x008b, 0x1000, 0x67), 3);
        assert_eq!(tss.base, 0x1000);
        assert_eq!(tss.limit, 0x67);
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 24)).unwrap();
        assert_eq!(pdpte3, (PDE_START + 3 * 0x1000) | 3);
        // The last 2 MiB page below 4 GiB maps itself.
        let last: u64 = mem
            .read_obj(GuestAddress(PDE_START + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, ((4u64 << 30) - (2 << 20)) | 0x83);
    }
}

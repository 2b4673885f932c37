//! Where things live in guest physical memory and on the guest's buses.
//!
//! The low-memory layout follows Firecracker's, which follows the Linux x86 boot protocol:
//! the structures the kernel reads at entry sit below 1 MiB, the kernel is loaded at 1 MiB,
//! and a 768 MiB hole below 4 GiB holds the MMIO devices and the IOAPIC/LAPIC.

/// GDT used for the boot (a flat 64-bit code, data and TSS descriptor).
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the guest loads its own before it enables interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 of the boot page tables.
pub const PML4_START: u64 = 0x9000;
/// The single page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Four page directories of 2 MiB pages: an identity map of the first 4 GiB, so that 64-bit
/// entry code can reach the MMIO devices below 4 GiB before it builds its own tables.
pub const PDE_START: u64 = 0xb000;
/// How many page directories follow `PDE_START`.
pub const PDE_COUNT: u64 = 4;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Capacity of the command line (x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of the low RAM the e820 map reports: the EBDA (which holds the MP table) starts here.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the kernel is loaded and where RAM above the legacy hole starts.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// First address of the MMIO hole below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address past 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Size of the MMIO hole.
pub const MMIO_GAP_SIZE: u64 = FIRST_ADDR_PAST_32BITS - MMIO_GAP_START;
/// Each virtio-mmio device gets one 4 KiB page of registers, starting at the hole.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
/// Register window of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's register window (the TSS and identity-map pages KVM needs sit below it).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Address KVM uses for the real-mode TSS on Intel (three pages).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// GSI of the 8250 UART at 0x3f8 (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// GSI of the first virtio-mmio device; each further device takes the next one (the device
/// manager hands them out).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// The IOAPIC has 24 pins; virtio devices use 5..=23. Defined with the config it limits.
pub use mvm_vmm_config::MAX_VIRTIO_DEVICES;
/// Port of COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// Ports of the i8042 keyboard controller: data at 0x60, command/status at 0x64.
pub const I8042_PORT: u16 = 0x60;

/// The guest RAM ranges for `mem_size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (FIRST_ADDR_PAST_32BITS, mem_size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (0, MMIO_GAP_START));
        assert_eq!(r[1].0, FIRST_ADDR_PAST_32BITS);
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        const { assert!(BOOT_IDT_START >= BOOT_GDT_START + 4 * 8) };
        const { assert!(PML4_START > BOOT_STACK_POINTER) };
        assert_eq!(PDPTE_START, PML4_START + 0x1000);
        assert_eq!(PDE_START, PDPTE_START + 0x1000);
        const { assert!(PDE_START + PDE_COUNT * 0x1000 <= CMDLINE_START) };
        assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    }
}

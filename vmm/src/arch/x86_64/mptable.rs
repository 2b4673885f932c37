//! The Intel MultiProcessor Specification 1.4 table.
//!
//! We boot Linux without ACPI, so the MP table is how an SMP guest learns how many CPUs it
//! has, their local APIC ids, where the IOAPIC is and how ISA/virtio IRQs reach it. Linux
//! finds the table by scanning the last KiB of base memory (639 KiB = 0x9fc00) for the
//! "_MP_" floating pointer, so we put the floating pointer at the EBDA and the configuration
//! table right behind it. The whole thing must stay inside the EBDA (below 0xa0000): the e820
//! map ends low RAM at the EBDA and the VGA hole starts at 0xa0000.
//!
//! Interrupt routing mirrors KVM's default GSI routing (`kvm_setup_default_irq_routing`):
//! ISA IRQ n goes to IOAPIC pin n for all 24 pins, including IRQ 0, because KVM's in-kernel PIT
//! raises GSI 0, which lands on IOAPIC pin 0 as an ordinary interrupt. The 8259 PIC reaches the
//! boot CPU through the local APIC's LINT0 (ExtINT, "virtual wire" mode), and NMIs through
//! LINT1 of every CPU. This is the arrangement Firecracker guests have booted with for years.

use std::mem::size_of;

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::EBDA_START;

/// Where the MP floating pointer structure goes; the configuration table follows it.
pub const MPTABLE_START: u64 = EBDA_START;

/// First address past the EBDA: the legacy VGA hole starts here, the table must end before it.
const MPTABLE_END: u64 = 0xa_0000;

/// Local APIC base every processor uses.
const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC register window.
const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// Version of the local APICs (an integrated xAPIC, as KVM emulates).
const APIC_VERSION: u8 = 0x14;
/// Version of the IOAPIC (82093AA-compatible, as KVM emulates).
const IOAPIC_VERSION: u8 = 0x11;
/// IOAPIC pins: 0..=15 for ISA devices, 16..=23 for our virtio-mmio devices.
const IOAPIC_PINS: u8 = 24;
/// xAPIC ids are 8 bits and 0xff is the broadcast id, so at most 255 APICs (CPUs + IOAPIC).
const MAX_APIC_CPUS: u8 = 254;

// Entry types (MP spec 1.4, table 4-3).
const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

// Interrupt types (MP spec 1.4, table 4-8).
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// Polarity and trigger "conforms to the bus" (ISA: active high, edge triggered).
const MP_IRQFLAG_DEFAULT: u16 = 0;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Processor signature of a family 6, model 1, stepping 3 part (Pentium Pro): Linux only uses
/// it for ancient quirks, the real identity comes from CPUID.
const CPU_SIGNATURE: u32 = (6 << 8) | (1 << 4) | 3;
/// CPUID.1:EDX FPU (bit 0) and APIC (bit 9): the features the MP spec cares about.
const CPU_FEATURE_FLAGS: u32 = (1 << 0) | (1 << 9);
const MPC_APIC_USABLE: u8 = 1;
/// LINT entries with this destination apply to every local APIC.
const ALL_LOCAL_APICS: u8 = 0xff;

/// Spec revision 1.4 is encoded as 4 in both headers.
const MP_SPEC_REV: u8 = 4;

/// MP floating pointer structure (`struct mpf_intel`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpfIntel {
    signature: [u8; 4],
    physptr: u32,
    length: u8,
    specification: u8,
    checksum: u8,
    feature1: u8,
    feature2: u8,
    feature3: [u8; 3],
}

/// MP configuration table header (`struct mpc_table`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcTable {
    signature: [u8; 4],
    length: u16,
    spec: u8,
    checksum: u8,
    oem: [u8; 8],
    productid: [u8; 12],
    oemptr: u32,
    oemsize: u16,
    oemcount: u16,
    lapic: u32,
    reserved: u32,
}

/// Processor entry (`struct mpc_cpu`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcCpu {
    type_: u8,
    apicid: u8,
    apicver: u8,
    cpuflag: u8,
    cpufeature: u32,
    featureflag: u32,
    reserved: [u32; 2],
}

/// Bus entry (`struct mpc_bus`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcBus {
    type_: u8,
    busid: u8,
    bustype: [u8; 6],
}

/// IOAPIC entry (`struct mpc_ioapic`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcIoapic {
    type_: u8,
    apicid: u8,
    apicver: u8,
    flags: u8,
    apicaddr: u32,
}

/// I/O interrupt assignment entry (`struct mpc_intsrc`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcIntsrc {
    type_: u8,
    irqtype: u8,
    irqflag: u16,
    srcbus: u8,
    srcbusirq: u8,
    dstapic: u8,
    dstirq: u8,
}

/// Local interrupt assignment entry (`struct mpc_lintsrc`).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcLintsrc {
    type_: u8,
    irqtype: u8,
    irqflag: u16,
    srcbusid: u8,
    srcbusirq: u8,
    destapic: u8,
    destapiclint: u8,
}

// The layouts are fixed by the MP spec; catch a mistyped field at compile time.
const _: () = assert!(size_of::<MpfIntel>() == 16);
const _: () = assert!(size_of::<MpcTable>() == 44);
const _: () = assert!(size_of::<MpcCpu>() == 20);
const _: () = assert!(size_of::<MpcBus>() == 8);
const _: () = assert!(size_of::<MpcIoapic>() == 8);
const _: () = assert!(size_of::<MpcIntsrc>() == 8);
const _: () = assert!(size_of::<MpcLintsrc>() == 8);

// SAFETY: each struct is `repr(C, packed)` and made only of integers and integer arrays, so it
// has no padding and every bit pattern is a valid value.
unsafe impl ByteValued for MpfIntel {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcTable {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcCpu {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcBus {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcIoapic {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcIntsrc {}
// SAFETY: as above: packed, integer fields only.
unsafe impl ByteValued for MpcLintsrc {}

/// Bytes of the table that do not depend on the CPU count.
const FIXED_SIZE: usize = size_of::<MpfIntel>()
    + size_of::<MpcTable>()
    + size_of::<MpcBus>()
    + size_of::<MpcIoapic>()
    + IOAPIC_PINS as usize * size_of::<MpcIntsrc>()
    + 2 * size_of::<MpcLintsrc>();

/// Most CPUs whose MP table fits in the EBDA (37): the VMM's vCPU limit must not exceed it.
pub const MPTABLE_MAX_CPUS: u8 = {
    let n = ((MPTABLE_END - MPTABLE_START) as usize - FIXED_SIZE) / size_of::<MpcCpu>();
    if n > MAX_APIC_CPUS as usize {
        MAX_APIC_CPUS
    } else {
        n as u8
    }
};

/// Building or writing the MP table failed.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// An MP table describes at least the boot processor.
    #[error("the MP table needs at least one CPU")]
    NoCpus,
    /// More CPUs than xAPIC ids (CPUs and the IOAPIC share the 0..=254 id space).
    #[error("{0} CPUs do not fit in the xAPIC id space (at most {MAX_APIC_CPUS})")]
    TooManyCpus(u8),
    /// The table would run past the EBDA into the VGA hole.
    #[error(
        "the MP table for {num_cpus} CPUs takes {size} bytes and does not fit in the EBDA \
         (at most {MPTABLE_MAX_CPUS} CPUs)"
    )]
    TooLarge {
        /// CPUs requested.
        num_cpus: u8,
        /// Bytes the table would take.
        size: usize,
    },
    /// Guest memory does not cover the EBDA.
    #[error("cannot write the MP table to guest memory: {0}")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// Size in bytes of the floating pointer plus the configuration table for `num_cpus` CPUs.
pub fn mptable_size(num_cpus: u8) -> usize {
    FIXED_SIZE + usize::from(num_cpus) * size_of::<MpcCpu>()
}

/// The value that makes `bytes` (with the checksum byte currently 0) sum to 0 mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    0u8.wrapping_sub(sum)
}

/// Builds the configuration table (header and entries) for `num_cpus` CPUs, checksummed.
fn build_config_table(num_cpus: u8) -> Vec<u8> {
    let ioapic_id = num_cpus;
    let mut entries = Vec::with_capacity(mptable_size(num_cpus));
    let mut count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };

    for cpu in 0..num_cpus {
        let bsp = if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        push(
            MpcCpu {
                type_: MP_PROCESSOR,
                apicid: cpu,
                apicver: APIC_VERSION,
                cpuflag: CPU_ENABLED | bsp,
                cpufeature: CPU_SIGNATURE,
                featureflag: CPU_FEATURE_FLAGS,
                reserved: [0; 2],
            }
            .as_slice(),
        );
    }
    push(
        MpcBus {
            type_: MP_BUS,
            busid: 0,
            bustype: *b"ISA   ",
        }
        .as_slice(),
    );
    push(
        MpcIoapic {
            type_: MP_IOAPIC,
            apicid: ioapic_id,
            apicver: IOAPIC_VERSION,
            flags: MPC_APIC_USABLE,
            apicaddr: IO_APIC_DEFAULT_PHYS_BASE,
        }
        .as_slice(),
    );
    for irq in 0..IOAPIC_PINS {
        push(
            MpcIntsrc {
                type_: MP_INTSRC,
                irqtype: MP_INT,
                irqflag: MP_IRQFLAG_DEFAULT,
                srcbus: 0,
                srcbusirq: irq,
                dstapic: ioapic_id,
                dstirq: irq,
            }
            .as_slice(),
        );
    }
    // The PIC's output is wired to LINT0 of the boot CPU ...
    push(
        MpcLintsrc {
            type_: MP_LINTSRC,
            irqtype: MP_EXTINT,
            irqflag: MP_IRQFLAG_DEFAULT,
            srcbusid: 0,
            srcbusirq: 0,
            destapic: 0,
            destapiclint: 0,
        }
        .as_slice(),
    );
    // ... and NMIs to LINT1 of every CPU.
    push(
        MpcLintsrc {
            type_: MP_LINTSRC,
            irqtype: MP_NMI,
            irqflag: MP_IRQFLAG_DEFAULT,
            srcbusid: 0,
            srcbusirq: 0,
            destapic: ALL_LOCAL_APICS,
            destapiclint: 1,
        }
        .as_slice(),
    );

    let length = size_of::<MpcTable>() + entries.len();
    let mut header = MpcTable {
        signature: *b"PCMP",
        // Bounded by the EBDA check in `setup_mptable` (and by u8 CPU counts in any case:
        // 44 + 254 * 20 + 248 < 65536), so the truncation cannot happen.
        length: length as u16,
        spec: MP_SPEC_REV,
        checksum: 0,
        oem: *b"MVM     ",
        productid: *b"MVM-MICROVM ",
        oemptr: 0,
        oemsize: 0,
        oemcount: count,
        lapic: APIC_DEFAULT_PHYS_BASE,
        reserved: 0,
    };
    let mut table = Vec::with_capacity(length);
    table.extend_from_slice(header.as_slice());
    table.extend_from_slice(&entries);
    header.checksum = checksum(&table);
    table[..size_of::<MpcTable>()].copy_from_slice(header.as_slice());
    table
}

/// Builds the floating pointer structure pointing at a configuration table at `physptr`.
fn build_floating_pointer(physptr: u32) -> MpfIntel {
    let mut mpf = MpfIntel {
        signature: *b"_MP_",
        physptr,
        // In 16-byte paragraphs.
        length: 1,
        specification: MP_SPEC_REV,
        checksum: 0,
        // 0: a configuration table is present (rather than one of the spec's default setups).
        feature1: 0,
        // IMCR absent: the PIC is wired in virtual-wire mode through LINT0.
        feature2: 0,
        feature3: [0; 3],
    };
    mpf.checksum = checksum(mpf.as_slice());
    mpf
}

/// Writes the MP floating pointer and configuration table for `num_cpus` CPUs at
/// [`MPTABLE_START`]. CPU `i` gets APIC id `i` (CPU 0 is the boot processor), the IOAPIC gets
/// id `num_cpus`, and IRQs 0..=23 are routed to IOAPIC pins 0..=23.
pub fn setup_mptable<M: GuestMemoryBackend>(mem: &M, num_cpus: u8) -> Result<(), MptableError> {
    if num_cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    if num_cpus > MAX_APIC_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let size = mptable_size(num_cpus);
    if MPTABLE_START + size as u64 > MPTABLE_END {
        return Err(MptableError::TooLarge { num_cpus, size });
    }

    let table_addr = MPTABLE_START + size_of::<MpfIntel>() as u64;
    // Below 0xa0000 by the check above, so it fits the 32-bit pointer.
    let mpf = build_floating_pointer(table_addr as u32);
    let table = build_config_table(num_cpus);
    debug_assert_eq!(size_of::<MpfIntel>() + table.len(), size);

    mem.write_slice(mpf.as_slice(), GuestAddress(MPTABLE_START))
        .map_err(MptableError::Memory)?;
    mem.write_slice(&table, GuestAddress(table_addr))
        .map_err(MptableError::Memory)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn byte_sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// What the guest sees, decoded the way Linux's mpparse.c walks it.
    #[derive(Default)]
    struct Parsed {
        cpus: Vec<(u8, u8)>,
        buses: usize,
        ioapics: Vec<(u8, u32)>,
        intsrcs: Vec<(u8, u8, u8, u8)>,
        lintsrcs: Vec<(u8, u8, u8)>,
        entries: usize,
    }

    /// Finds the floating pointer like Linux's `smp_scan_config` (16-byte steps over the
    /// last KiB of base memory), checks both checksums and decodes every entry.
    fn parse(mem: &GuestMemoryMmap, num_cpus: u8) -> Parsed {
        let mut mpf_addr = None;
        for addr in (0x9_fc00u64..MPTABLE_END).step_by(16) {
            let mut sig = [0u8; 4];
            mem.read_slice(&mut sig, GuestAddress(addr)).unwrap();
            if &sig == b"_MP_" {
                mpf_addr = Some(addr);
                break;
            }
        }
        let mpf_addr = mpf_addr.expect("no _MP_ floating pointer in the last KiB of base memory");
        assert_eq!(mpf_addr, MPTABLE_START);

        let mpf: MpfIntel = mem.read_obj(GuestAddress(mpf_addr)).unwrap();
        assert_eq!({ mpf.length }, 1);
        assert_eq!({ mpf.specification }, 4);
        assert_eq!({ mpf.feature1 }, 0);
        assert_eq!(byte_sum(mpf.as_slice()), 0, "floating pointer checksum");

        let physptr = u64::from(mpf.physptr);
        assert_eq!(physptr, MPTABLE_START + 16);
        let header: MpcTable = mem.read_obj(GuestAddress(physptr)).unwrap();
        assert_eq!(&{ header.signature }, b"PCMP");
        assert_eq!({ header.spec }, 4);
        assert_eq!(&{ header.oem }, b"MVM     ");
        assert_eq!({ header.lapic }, 0xfee0_0000);
        assert_eq!({ header.oemptr }, 0);
        let length = usize::from(header.length);
        assert_eq!(16 + length, mptable_size(num_cpus));
        assert!(physptr + length as u64 <= MPTABLE_END);

        let mut table = vec![0u8; length];
        mem.read_slice(&mut table, GuestAddress(physptr)).unwrap();
        assert_eq!(byte_sum(&table), 0, "configuration table checksum");

        let mut p = Parsed::default();
        let mut off = size_of::<MpcTable>();
        while off < length {
            let e = &table[off..];
            off += match e[0] {
                MP_PROCESSOR => {
                    let cpu = MpcCpu::from_slice(&e[..20]).unwrap();
                    assert_eq!({ cpu.apicver }, 0x14);
                    assert_eq!({ cpu.featureflag }, 0x201);
                    assert_eq!({ cpu.cpufeature }, 0x613);
                    p.cpus.push((cpu.apicid, cpu.cpuflag));
                    20
                }
                MP_BUS => {
                    assert_eq!(&e[2..8], b"ISA   ");
                    p.buses += 1;
                    8
                }
                MP_IOAPIC => {
                    let io = MpcIoapic::from_slice(&e[..8]).unwrap();
                    assert_eq!({ io.apicver }, 0x11);
                    assert_eq!({ io.flags }, 1);
                    p.ioapics.push((io.apicid, io.apicaddr));
                    8
                }
                MP_INTSRC => {
                    let i = MpcIntsrc::from_slice(&e[..8]).unwrap();
                    assert_eq!({ i.irqflag }, 0);
                    p.intsrcs
                        .push((i.irqtype, i.srcbusirq, i.dstapic, i.dstirq));
                    8
                }
                MP_LINTSRC => {
                    let l = MpcLintsrc::from_slice(&e[..8]).unwrap();
                    p.lintsrcs.push((l.irqtype, l.destapic, l.destapiclint));
                    8
                }
                t => panic!("unknown MP entry type {t} at offset {off}"),
            };
            p.entries += 1;
        }
        assert_eq!(off, length, "entries overrun the table length");
        assert_eq!(p.entries, usize::from(header.oemcount));
        p
    }

    fn check(num_cpus: u8) {
        let mem = memory(1 << 20);
        setup_mptable(&mem, num_cpus).unwrap();
        let p = parse(&mem, num_cpus);

        assert_eq!(p.cpus.len(), usize::from(num_cpus));
        for (i, (apicid, flags)) in p.cpus.iter().enumerate() {
            assert_eq!(usize::from(*apicid), i);
            let want = if i == 0 {
                CPU_ENABLED | CPU_BOOTPROCESSOR
            } else {
                CPU_ENABLED
            };
            assert_eq!(*flags, want, "cpu {i} flags");
        }
        assert_eq!(p.buses, 1);
        assert_eq!(p.ioapics, vec![(num_cpus, 0xfec0_0000)]);
        assert_eq!(p.intsrcs.len(), 24);
        for (irq, (ty, src, dstapic, dst)) in p.intsrcs.iter().enumerate() {
            assert_eq!(*ty, MP_INT);
            assert_eq!(usize::from(*src), irq);
            assert_eq!(*dstapic, num_cpus);
            assert_eq!(usize::from(*dst), irq);
        }
        assert_eq!(p.lintsrcs, vec![(MP_EXTINT, 0, 0), (MP_NMI, 0xff, 1)]);
        assert_eq!(p.entries, usize::from(num_cpus) + 1 + 1 + 24 + 2);
    }

    #[test]
    fn one_cpu() {
        check(1);
    }

    #[test]
    fn two_cpus() {
        check(2);
    }

    #[test]
    fn eight_cpus() {
        check(8);
    }

    #[test]
    fn thirty_two_cpus() {
        check(32);
    }

    #[test]
    fn largest_table_that_fits_the_ebda() {
        assert_eq!(MPTABLE_MAX_CPUS, 37);
        check(MPTABLE_MAX_CPUS);
        assert!(MPTABLE_START + mptable_size(MPTABLE_MAX_CPUS) as u64 <= MPTABLE_END);
        assert!(MPTABLE_START + mptable_size(MPTABLE_MAX_CPUS + 1) as u64 > MPTABLE_END);
    }

    #[test]
    fn too_many_cpus_for_the_ebda_are_refused() {
        let mem = memory(1 << 20);
        for n in [MPTABLE_MAX_CPUS + 1, 254] {
            match setup_mptable(&mem, n) {
                Err(MptableError::TooLarge { num_cpus, size }) => {
                    assert_eq!(num_cpus, n);
                    assert_eq!(size, mptable_size(n));
                }
                other => panic!("{n} CPUs: expected TooLarge, got {other:?}"),
            }
        }
        // Nothing was written.
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(sig, [0; 4]);
    }

    #[test]
    fn zero_and_255_cpus_are_refused() {
        let mem = memory(1 << 20);
        assert!(matches!(setup_mptable(&mem, 0), Err(MptableError::NoCpus)));
        assert!(matches!(
            setup_mptable(&mem, 255),
            Err(MptableError::TooManyCpus(255))
        ));
    }

    #[test]
    fn memory_not_covering_the_ebda_is_an_error() {
        let mem = memory(512 << 10);
        assert!(matches!(
            setup_mptable(&mem, 1),
            Err(MptableError::Memory(_))
        ));
    }

    #[test]
    fn size_formula() {
        assert_eq!(mptable_size(1), 16 + 44 + 20 + 8 + 8 + 24 * 8 + 2 * 8);
        assert_eq!(mptable_size(2) - mptable_size(1), 20);
        assert_eq!(build_config_table(3).len() + 16, mptable_size(3));
    }
}

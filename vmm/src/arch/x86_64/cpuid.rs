//! CPUID normalisation: turn what KVM says it can virtualise into what one vCPU should see.
//!
//! `KVM_GET_SUPPORTED_CPUID` describes the host, not our VM: its APIC ids, topology and cache
//! sharing are the host's (or garbage), and it advertises a PMU and MSRs we don't offer. Every
//! vCPU gets its own copy, filtered here, before `KVM_SET_CPUID2`. The topology we present is
//! one package of `num_cpus` single-threaded cores, described consistently in leaves 0x1, 0x4,
//! 0xb/0x1f and, for AMD guests, 0x8000_0008, 0x8000_001d and 0x8000_001e, so that Linux's
//! topology code agrees with the MP table's APIC ids (vCPU index = APIC id).

use kvm_bindings::{
    CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2,
};

/// Building a vCPU's CPUID failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("cannot get the CPUID KVM supports: {0}")]
    GetSupported(#[source] kvm_ioctls::Error),
    /// The vCPU index or count cannot describe a valid topology.
    #[error("invalid topology: vCPU {vcpu_id} of {num_cpus}")]
    InvalidTopology {
        /// Index of the vCPU being configured.
        vcpu_id: u8,
        /// Total vCPUs.
        num_cpus: u8,
    },
    /// Adding the missing extended-topology subleaves overflowed the CPUID table.
    #[error("too many CPUID entries: {0}")]
    TooManyEntries(#[source] vmm_sys_util::fam::Error),
}

// Leaf 0x1.
const LEAF1_EBX_APIC_ID_SHIFT: u32 = 24;
const LEAF1_EBX_LOGICAL_COUNT_SHIFT: u32 = 16;
const LEAF1_EBX_CLFLUSH_SHIFT: u32 = 8;
/// CLFLUSH line size in 8-byte units: 8 = 64 bytes, what every x86_64 part has.
const CLFLUSH_LINE_QWORDS: u32 = 8;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

// Leaf 0x4 / 0x8000_001d (deterministic cache parameters; same EAX layout for bits 0..=25).
const CACHE_EAX_TYPE_MASK: u32 = 0x1f;
const CACHE_EAX_LEVEL_SHIFT: u32 = 5;
const CACHE_EAX_LEVEL_MASK: u32 = 0x7;
const CACHE_EAX_SHARING_SHIFT: u32 = 14;
const CACHE_EAX_SHARING_MASK: u32 = 0xfff << CACHE_EAX_SHARING_SHIFT;
const LEAF4_EAX_CORES_SHIFT: u32 = 26;
const LEAF4_EAX_CORES_MASK: u32 = 0x3f << LEAF4_EAX_CORES_SHIFT;

// Leaf 0x6: IA32_ENERGY_PERF_BIAS is not emulated.
const LEAF6_ECX_EPB: u32 = 1 << 3;

// Leaf 0x7 subleaf 0: IA32_ARCH_CAPABILITIES, which some hosts refuse to let us set.
const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;

// Leaves 0xb / 0x1f.
const TOPO_LEVEL_SMT: u32 = 1;
const TOPO_LEVEL_CORE: u32 = 2;
const TOPO_LEVEL_TYPE_SHIFT: u32 = 8;

// AMD leaf 0x8000_0008 ECX: NC (cores - 1) in bits 7..0, ApicIdCoreIdSize in bits 15..12.
const AMD_8_ECX_NC_MASK: u32 = 0xff;
const AMD_8_ECX_APIC_ID_SIZE_SHIFT: u32 = 12;
const AMD_8_ECX_APIC_ID_SIZE_MASK: u32 = 0xf << AMD_8_ECX_APIC_ID_SIZE_SHIFT;

/// Returns every CPUID leaf KVM can virtualise on this host.
pub fn supported_cpuid(kvm: &kvm_ioctls::Kvm) -> Result<CpuId, CpuidError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::GetSupported)
}

/// Bits needed to number `n` items: ceil(log2(n)), 0 for n <= 1.
fn order(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - u32::from(n - 1).leading_zeros()
    }
}

/// Normalises `cpuid` (a copy of [`supported_cpuid`]) for vCPU `vcpu_id` of `num_cpus`.
///
/// Leaves that are absent stay absent, except that the extended topology leaves (0xb, 0x1f)
/// get their SMT and core subleaves added when KVM reported the leaf but not those subleaves.
pub fn filter_cpuid(cpuid: &mut CpuId, vcpu_id: u8, num_cpus: u8) -> Result<(), CpuidError> {
    if num_cpus == 0 || vcpu_id >= num_cpus {
        return Err(CpuidError::InvalidTopology { vcpu_id, num_cpus });
    }
    for function in [0xb, 0x1f] {
        add_topology_subleaves(cpuid, function)?;
    }

    let apic_id = u32::from(vcpu_id);
    let cpus = u32::from(num_cpus);
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ebx = (apic_id << LEAF1_EBX_APIC_ID_SHIFT)
                    | (cpus << LEAF1_EBX_LOGICAL_COUNT_SHIFT)
                    | (CLFLUSH_LINE_QWORDS << LEAF1_EBX_CLFLUSH_SHIFT)
                    // Bits 7..0 (brand index) stay as KVM reports them.
                    | (e.ebx & 0xff);
                // TSC deadline (bit 24) and everything else stays as KVM reports it.
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                // HTT means "leaf 1 EBX[23:16] is valid": only meaningful with several CPUs.
                if num_cpus > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Subleaves of cache type 0 are the null terminator: leave them empty.
            0x4 if e.eax & CACHE_EAX_TYPE_MASK != 0 => {
                e.eax =
                    (e.eax & !LEAF4_EAX_CORES_MASK) | ((cpus - 1).min(63) << LEAF4_EAX_CORES_SHIFT);
                set_cache_sharing(e, cpus);
            }
            0x6 => e.ecx &= !LEAF6_ECX_EPB,
            0x7 if e.index == 0 => e.edx &= !LEAF7_EDX_ARCH_CAPABILITIES,
            // No virtual PMU: a guest that finds one would program counters KVM ignores.
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => set_topology_subleaf(e, apic_id, num_cpus),
            0x8000_0008 => {
                e.ecx = (e.ecx & !(AMD_8_ECX_NC_MASK | AMD_8_ECX_APIC_ID_SIZE_MASK))
                    | (cpus - 1)
                    | (order(num_cpus) << AMD_8_ECX_APIC_ID_SIZE_SHIFT);
            }
            0x8000_001d if e.eax & CACHE_EAX_TYPE_MASK != 0 => set_cache_sharing(e, cpus),
            0x8000_001e => {
                // Extended APIC id; core id = vCPU with one thread per core; node 0 of 1.
                e.eax = apic_id;
                e.ebx = apic_id;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
    Ok(())
}

/// L1 and L2 are private to a core (which has one thread); L3 and beyond are shared by all.
fn set_cache_sharing(e: &mut kvm_cpuid_entry2, cpus: u32) {
    let level = (e.eax >> CACHE_EAX_LEVEL_SHIFT) & CACHE_EAX_LEVEL_MASK;
    let sharing = if level >= 3 { cpus - 1 } else { 0 };
    e.eax = (e.eax & !CACHE_EAX_SHARING_MASK) | (sharing << CACHE_EAX_SHARING_SHIFT);
}

/// Fills one subleaf of leaf 0xb/0x1f: level 0 is SMT (one thread), level 1 the core level
/// (all our CPUs), anything higher is the invalid terminator.
fn set_topology_subleaf(e: &mut kvm_cpuid_entry2, apic_id: u32, num_cpus: u8) {
    let sub = e.index & 0xff;
    let (eax, ebx, level_type) = match sub {
        0 => (0, 1, TOPO_LEVEL_SMT),
        1 => (order(num_cpus), u32::from(num_cpus), TOPO_LEVEL_CORE),
        _ => (0, 0, 0),
    };
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = (level_type << TOPO_LEVEL_TYPE_SHIFT) | sub;
    e.edx = apic_id;
}

/// If KVM reported `function` (0xb or 0x1f) at all, makes sure subleaves 0 (SMT), 1 (core)
/// and 2 (terminator) exist: hosts whose topology leaf is masked report only subleaf 0, and
/// without the core level Linux would put every vCPU in its own package.
fn add_topology_subleaves(cpuid: &mut CpuId, function: u32) -> Result<(), CpuidError> {
    if !cpuid.as_slice().iter().any(|e| e.function == function) {
        return Ok(());
    }
    for index in 0..=2 {
        let present = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == function && e.index == index);
        if !present {
            cpuid
                .push(kvm_cpuid_entry2 {
                    function,
                    index,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    ..Default::default()
                })
                .map_err(CpuidError::TooManyEntries)?;
        }
    }
    // Subleaf-indexed lookups in KVM only honour `index` when this flag is set.
    for e in cpuid.as_mut_slice() {
        if e.function == function {
            e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        let flags = if matches!(function, 0x4 | 0x7 | 0xb | 0x1f | 0x8000_001d) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        };
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A cut-down Intel-style table, with host values that must all be overwritten.
    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0x0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            // Host APIC id 0x2a, 0x10 logical CPUs, CLFLUSH 8, brand index 0x03; TSC
            // deadline (bit 24) reported; HTT set.
            entry(0x1, 0, 0x0009_06ea, 0x2a10_0803, 0x0100_0000, 0x1789_fbff),
            // L1d, L2, L3 and the null terminator.
            entry(0x4, 0, 0x1c00_4121, 0x01c0_003f, 0x3f, 0),
            entry(0x4, 1, 0x1c00_4143, 0x01c0_003f, 0x3ff, 0),
            entry(0x4, 2, 0x1c03_c163, 0x03c0_003f, 0x2fff, 6),
            entry(0x4, 3, 0, 0, 0, 0),
            entry(0x6, 0, 0x4, 0, 0x9, 0),
            entry(0x7, 0, 0, 0x029c_6fbb, 0, 0xbc00_0400),
            entry(0x7, 1, 0, 0, 0, 0x2000_0000),
            entry(0xa, 0, 0x0704_8302, 0x0, 0x0, 0x0000_0603),
            entry(0xb, 0, 1, 2, 0x100, 0x55),
            entry(0xb, 1, 5, 16, 0x201, 0x55),
            entry(0xb, 2, 0, 0, 2, 0x55),
            entry(
                0x8000_0002,
                0,
                0x6574_6e49,
                0x2952_286c,
                0x6f65_5820,
                0x2952_286e,
            ),
            entry(0x8000_0008, 0, 0x3030, 0, 0x7001, 0),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    fn filtered(vcpu: u8, cpus: u8) -> CpuId {
        let mut c = sample();
        filter_cpuid(&mut c, vcpu, cpus).unwrap();
        c
    }

    #[test]
    fn leaf1_apic_id_count_and_clflush() {
        let c = filtered(3, 4);
        let e = find(&c, 0x1, 0);
        assert_eq!(e.ebx >> 24, 3, "initial APIC id");
        assert_eq!((e.ebx >> 16) & 0xff, 4, "logical processor count");
        assert_eq!((e.ebx >> 8) & 0xff, 8, "CLFLUSH line size");
        assert_eq!(e.ebx & 0xff, 0x03, "brand index kept");
        assert_eq!(e.eax, 0x0009_06ea, "signature kept");
    }

    #[test]
    fn leaf1_hypervisor_bit_and_tsc_deadline_kept() {
        let c = filtered(0, 1);
        let e = find(&c, 0x1, 0);
        assert_ne!(e.ecx & (1 << 31), 0, "hypervisor bit");
        assert_ne!(e.ecx & (1 << 24), 0, "TSC deadline as KVM reported it");

        let mut c = CpuId::from_entries(&[entry(0x1, 0, 0, 0, 0, 0)]).unwrap();
        filter_cpuid(&mut c, 0, 1).unwrap();
        assert_eq!(find(&c, 0x1, 0).ecx, 1 << 31, "TSC deadline not invented");
    }

    #[test]
    fn leaf1_htt_only_with_several_cpus() {
        assert_eq!(find(&filtered(0, 1), 0x1, 0).edx & (1 << 28), 0);
        assert_ne!(find(&filtered(0, 2), 0x1, 0).edx & (1 << 28), 0);
        // Other EDX feature bits untouched.
        assert_eq!(find(&filtered(0, 1), 0x1, 0).edx, 0x1789_fbff & !(1 << 28));
    }

    #[test]
    fn leaf4_cache_topology() {
        let c = filtered(0, 8);
        for sub in 0..3 {
            let e = find(&c, 0x4, sub);
            assert_eq!(e.eax >> 26, 7, "cores per package - 1, subleaf {sub}");
            let level = (e.eax >> 5) & 7;
            let sharing = (e.eax >> 14) & 0xfff;
            let want = if level == 3 { 7 } else { 0 };
            assert_eq!(sharing, want, "threads sharing L{level}");
            assert_eq!(
                e.eax & 0x3fff,
                sample().as_slice()[2 + sub as usize].eax & 0x3fff
            );
        }
        assert_eq!(find(&c, 0x4, 3).eax, 0, "null subleaf untouched");

        let c = filtered(0, 1);
        for sub in 0..3 {
            assert_eq!(find(&c, 0x4, sub).eax >> 14, 0);
        }
    }

    #[test]
    fn leaf4_cores_clamped_to_63() {
        let c = filtered(0, 200);
        let e = find(&c, 0x4, 2);
        assert_eq!(e.eax >> 26, 63);
        assert_eq!((e.eax >> 14) & 0xfff, 199);
    }

    #[test]
    fn leaf6_energy_perf_bias_cleared() {
        assert_eq!(find(&filtered(0, 1), 0x6, 0).ecx, 0x1);
    }

    #[test]
    fn leaf7_arch_capabilities_cleared_only_in_subleaf0() {
        let c = filtered(0, 1);
        assert_eq!(find(&c, 0x7, 0).edx, 0xbc00_0400 & !(1 << 29));
        assert_eq!(find(&c, 0x7, 0).ebx, 0x029c_6fbb);
        assert_eq!(find(&c, 0x7, 1).edx, 0x2000_0000);
    }

    #[test]
    fn pmu_leaf_zeroed() {
        let e = find(&filtered(0, 2), 0xa, 0);
        assert_eq!((e.eax, e.ebx, e.ecx, e.edx), (0, 0, 0, 0));
    }

    #[test]
    fn extended_topology_leaf() {
        let c = filtered(5, 6);
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
        let end = find(&c, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 5));
    }

    #[test]
    fn extended_topology_shift_is_ceil_log2() {
        for (cpus, shift) in [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (254, 8),
        ] {
            assert_eq!(find(&filtered(0, cpus), 0xb, 1).eax, shift, "{cpus} CPUs");
        }
    }

    #[test]
    fn missing_topology_subleaves_are_added() {
        // What a host with a masked leaf 0xb reports: subleaf 0, all zero.
        let mut c = CpuId::from_entries(&[entry(0xb, 0, 0, 0, 0, 0)]).unwrap();
        filter_cpuid(&mut c, 1, 2).unwrap();
        assert_eq!(c.as_slice().len(), 3);
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (1, 2, 0x201, 1));
        assert!(
            c.as_slice()
                .iter()
                .all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0)
        );
        // Leaf 0x1f was absent, so it stays absent.
        assert!(!c.as_slice().iter().any(|e| e.function == 0x1f));
    }

    #[test]
    fn leaf_0x1f_follows_the_same_rules() {
        let mut c = CpuId::from_entries(&[entry(0x1f, 0, 1, 2, 0x100, 9)]).unwrap();
        filter_cpuid(&mut c, 2, 3).unwrap();
        let smt = find(&c, 0x1f, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let core = find(&c, 0x1f, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
    }

    #[test]
    fn amd_topology_leaves() {
        let mut c = CpuId::from_entries(&[
            entry(0x8000_0008, 0, 0x3030, 0x110a_d205, 0x7001, 0),
            entry(0x8000_001d, 0, 0x121, 0x01c0_003f, 0x3f, 0),
            entry(0x8000_001d, 3, 0x4163, 0x03c0_003f, 0x7fff, 1),
            entry(0x8000_001d, 4, 0, 0, 0, 0),
            entry(0x8000_001e, 0, 0x77, 0x0107, 0x0301, 0),
        ])
        .unwrap();
        filter_cpuid(&mut c, 4, 5).unwrap();
        let e = find(&c, 0x8000_0008, 0);
        assert_eq!(
            (e.eax, e.ebx),
            (0x3030, 0x110a_d205),
            "address sizes and features kept"
        );
        assert_eq!(e.ecx, (3 << 12) | 4, "NC = 4, ApicIdCoreIdSize = 3");
        assert_eq!(
            (find(&c, 0x8000_001d, 0).eax >> 14) & 0xfff,
            0,
            "L1 private"
        );
        assert_eq!(
            (find(&c, 0x8000_001d, 3).eax >> 14) & 0xfff,
            4,
            "L3 shared by all"
        );
        assert_eq!(find(&c, 0x8000_001d, 4).eax, 0, "null subleaf untouched");
        let e = find(&c, 0x8000_001e, 0);
        assert_eq!((e.eax, e.ebx, e.ecx, e.edx), (4, 4, 0, 0));
    }

    #[test]
    fn brand_string_and_unknown_leaves_kept() {
        let c = filtered(1, 2);
        assert_eq!(find(&c, 0x8000_0002, 0), sample().as_slice()[13]);
        assert_eq!(find(&c, 0x0, 0), sample().as_slice()[0]);
        assert_eq!(c.as_slice().len(), sample().as_slice().len());
    }

    #[test]
    fn invalid_topology_refused() {
        let mut c = sample();
        assert!(matches!(
            filter_cpuid(&mut c, 0, 0),
            Err(CpuidError::InvalidTopology { .. })
        ));
        assert!(matches!(
            filter_cpuid(&mut c, 2, 2),
            Err(CpuidError::InvalidTopology {
                vcpu_id: 2,
                num_cpus: 2
            })
        ));
    }

    /// Runs against this machine's /dev/kvm: KVM must accept the filtered table for every
    /// vCPU, and the vCPU must report our APIC id back.
    #[test]
    fn kvm_accepts_filtered_cpuid() {
        let kvm = kvm_ioctls::Kvm::new()
            .unwrap_or_else(|e| panic!("this test needs /dev/kvm (read-write): {e}"));
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let supported = supported_cpuid(&kvm).expect("KVM_GET_SUPPORTED_CPUID");
        let num_cpus = 2;
        for id in 0..num_cpus {
            let vcpu = vm.create_vcpu(u64::from(id)).expect("KVM_CREATE_VCPU");
            let mut cpuid = supported.clone();
            filter_cpuid(&mut cpuid, id, num_cpus).unwrap();
            vcpu.set_cpuid2(&cpuid)
                .expect("KVM_SET_CPUID2 refused the filtered CPUID");
            let back = vcpu
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .expect("KVM_GET_CPUID2");
            let leaf1 = find(&back, 0x1, 0);
            assert_eq!(leaf1.ebx >> 24, u32::from(id));
            assert_ne!(leaf1.ecx & (1 << 31), 0);
        }
    }
}

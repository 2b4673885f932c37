//! Model-specific registers a vCPU needs before it enters a 64-bit Linux kernel.
//!
//! A freshly created KVM vCPU has reset values in its MSRs; the kernel sets up SYSCALL/SYSENTER
//! itself, but we zero them explicitly (as firmware would leave them) and turn on fast string
//! operations and write-back MTRRs, whose reset values (off, and "everything uncacheable")
//! would make an unaware guest slow.
//!
//! Not every KVM accepts every MSR (some hosts refuse e.g. 0x10a, IA32_ARCH_CAPABILITIES, and
//! QEMU aborts on that). Boot MSRs are a nicety, not a requirement, so an MSR KVM does not
//! support is left out with a warning instead of failing the boot.

use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;

/// Setting the boot MSRs failed.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The entry list did not fit a `kvm_msrs` structure.
    #[error("cannot build the MSR list: {0}")]
    Build(#[source] vmm_sys_util::fam::Error),
    /// `KVM_SET_MSRS` itself failed (as opposed to refusing one MSR).
    #[error("KVM_SET_MSRS failed: {0}")]
    SetMsrs(#[source] kvm_ioctls::Error),
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast string operations (`rep movs`/`stos`).
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// IA32_MTRR_DEF_TYPE: MTRRs enabled (bit 11), default memory type write-back (6).
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;

/// MSRs KVM always emulates but leaves out of `KVM_GET_MSR_INDEX_LIST`: the MTRRs are
/// emulated by KVM's MTRR code and VMMs save them by name, so the index list never has them.
const EMULATED_UNLISTED: &[u32] = &[MSR_MTRR_DEF_TYPE];

/// Every boot MSR with its value, in the order they are set.
fn all_boot_msrs() -> [(u32, u64); 10] {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// The boot MSR entries KVM claims to support: those whose index is in `supported` (from
/// `Kvm::get_msr_index_list()`), plus the MTRR default type, which KVM emulates without
/// listing it.
pub fn boot_msr_entries(supported: &[u32]) -> Vec<kvm_msr_entry> {
    all_boot_msrs()
        .into_iter()
        .filter(|(index, _)| supported.contains(index) || EMULATED_UNLISTED.contains(index))
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

/// Sets `entries` through `set`, which behaves like `KVM_SET_MSRS`: it returns how many
/// leading entries were set and stops at the first one refused. A refused MSR is logged and
/// skipped, and the rest are retried. Returns how many were set.
fn set_skipping_refused<F>(entries: &[kvm_msr_entry], mut set: F) -> Result<usize, MsrError>
where
    F: FnMut(&[kvm_msr_entry]) -> Result<usize, MsrError>,
{
    let mut done = 0;
    let mut rest = entries;
    while !rest.is_empty() {
        // Never trust a count larger than what we passed.
        let n = set(rest)?.min(rest.len());
        done += n;
        if let Some(refused) = rest.get(n) {
            tracing::warn!(
                msr = format_args!("{:#x}", refused.index),
                value = format_args!("{:#x}", refused.data),
                "KVM refused a boot MSR; leaving it at its reset value"
            );
            rest = &rest[n + 1..];
        } else {
            rest = &[];
        }
    }
    Ok(done)
}

/// Sets the boot MSRs KVM supports on `vcpu` (see [`boot_msr_entries`]); MSRs KVM refuses
/// anyway are logged and skipped. Returns how many were set.
pub fn setup_boot_msrs(vcpu: &VcpuFd, supported: &[u32]) -> Result<usize, MsrError> {
    let entries = boot_msr_entries(supported);
    set_skipping_refused(&entries, |batch| {
        let msrs = Msrs::from_entries(batch).map_err(MsrError::Build)?;
        vcpu.set_msrs(&msrs).map_err(MsrError::SetMsrs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_indices() -> Vec<u32> {
        all_boot_msrs().iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn boot_values() {
        let entries = boot_msr_entries(&all_indices());
        assert_eq!(entries.len(), 10);
        for e in &entries {
            let want = match e.index {
                MSR_IA32_MISC_ENABLE => 1,
                MSR_MTRR_DEF_TYPE => 0x806,
                _ => 0,
            };
            assert_eq!(e.data, want, "MSR {:#x}", e.index);
        }
        let mut idx = all_indices();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), 10, "no MSR listed twice");
    }

    #[test]
    fn unsupported_msrs_are_left_out() {
        let supported = [MSR_STAR, MSR_LSTAR, MSR_IA32_MISC_ENABLE, 0x10];
        let got: Vec<u32> = boot_msr_entries(&supported)
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(
            got,
            vec![MSR_STAR, MSR_LSTAR, MSR_IA32_MISC_ENABLE, MSR_MTRR_DEF_TYPE]
        );
    }

    #[test]
    fn empty_support_list_keeps_only_the_unlisted_mtrr() {
        let got: Vec<u32> = boot_msr_entries(&[]).iter().map(|e| e.index).collect();
        assert_eq!(got, vec![MSR_MTRR_DEF_TYPE]);
    }

    /// A fake KVM_SET_MSRS that refuses `refused` indices, stopping there like KVM does.
    fn fake_kvm<'a>(
        refused: &'static [u32],
        calls: &'a mut Vec<Vec<u32>>,
    ) -> impl FnMut(&[kvm_msr_entry]) -> Result<usize, MsrError> + 'a {
        move |batch| {
            calls.push(batch.iter().map(|e| e.index).collect());
            Ok(batch
                .iter()
                .position(|e| refused.contains(&e.index))
                .unwrap_or(batch.len()))
        }
    }

    #[test]
    fn all_accepted_in_one_call() {
        let entries = boot_msr_entries(&all_indices());
        let mut calls = Vec::new();
        let n = set_skipping_refused(&entries, fake_kvm(&[], &mut calls)).unwrap();
        assert_eq!(n, 10);
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn refused_msrs_are_skipped_and_the_rest_retried() {
        let entries = boot_msr_entries(&all_indices());
        let mut calls = Vec::new();
        let n = set_skipping_refused(
            &entries,
            fake_kvm(
                &[
                    MSR_IA32_SYSENTER_CS,
                    MSR_IA32_MISC_ENABLE,
                    MSR_MTRR_DEF_TYPE,
                ],
                &mut calls,
            ),
        )
        .unwrap();
        assert_eq!(n, 7);
        // First call refused at entry 0; second at MISC_ENABLE; third at the last entry.
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1][0], MSR_IA32_SYSENTER_ESP);
        assert_eq!(calls[2], vec![MSR_MTRR_DEF_TYPE]);
    }

    #[test]
    fn ioctl_failure_is_an_error() {
        let entries = boot_msr_entries(&all_indices());
        let r = set_skipping_refused(&entries, |_| {
            Err(MsrError::SetMsrs(kvm_ioctls::Error::new(libc::EINVAL)))
        });
        assert!(matches!(r, Err(MsrError::SetMsrs(_))));
    }

    #[test]
    fn nothing_to_set() {
        let n = set_skipping_refused(&[], |_| panic!("no call expected")).unwrap();
        assert_eq!(n, 0);
    }

    /// Runs against this machine's /dev/kvm: a real vCPU takes the boot MSRs, and reading
    /// them back gives the values we set.
    #[test]
    fn boot_msrs_on_real_kvm() {
        let kvm = kvm_ioctls::Kvm::new()
            .unwrap_or_else(|e| panic!("this test needs /dev/kvm (read-write): {e}"));
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        let supported = kvm.get_msr_index_list().expect("KVM_GET_MSR_INDEX_LIST");

        let n = setup_boot_msrs(&vcpu, supported.as_slice()).expect("setup_boot_msrs");
        assert!(n > 0, "KVM accepted no boot MSR at all");

        let wanted = boot_msr_entries(supported.as_slice());
        let mut back = Msrs::from_entries(&wanted).unwrap();
        let read = vcpu.get_msrs(&mut back).expect("KVM_GET_MSRS");
        // Reading stops at the first MSR KVM does not know; those read must hold our values.
        for (got, want) in back.as_slice()[..read].iter().zip(&wanted) {
            assert_eq!(got.index, want.index);
            assert_eq!(got.data, want.data, "MSR {:#x}", want.index);
        }
        assert!(read > 0);
    }
}

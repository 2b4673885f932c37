//! One vCPU's state: what KVM holds for it, saved on its own thread while it is paused and
//! set on a new vCPU before its first run.
//!
//! The order of restore follows Firecracker's (`vstate/vcpu`): the TSC frequency, CPUID, the
//! multiprocessing state, registers, special registers, XSAVE (which holds the FPU), XCRs,
//! debug registers, the LAPIC, MSRs (the TSC before the TSC deadline) and last the pending
//! events.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs,
    kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    kvm_xsave,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// IA32_TSC_DEADLINE: must be set after the TSC it is compared against.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_TSC.
const MSR_IA32_TSC: u32 = 0x10;
/// The most MSRs read or written in one KVM call.
const MSR_BATCH: usize = 64;

/// One vCPU, as KVM reports it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    /// The guest's CPUID (what this vCPU was given).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Every MSR KVM let us read.
    pub msrs: Vec<kvm_msr_entry>,
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// The XSAVE area (x87, SSE, AVX, ... state).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Running, halted, waiting for SIPI, ...
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs and SMIs.
    pub events: kvm_vcpu_events,
    /// The guest TSC frequency, when KVM reports it.
    pub tsc_khz: Option<u32>,
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm { what, source }
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running; `msr_index` is KVM's list of MSRs
    /// (those it refuses to read are left out).
    pub fn save(fd: &VcpuFd, msr_index: &[u32]) -> Result<Self, SnapshotError> {
        // First: KVM_GET_MP_STATE makes the LAPIC take pending INIT/SIPI events, which may
        // change the registers and LAPIC read after it (Firecracker's order).
        let mp_state = fd.get_mp_state().map_err(kvm("get MP state"))?;
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("get CPUID"))?;
        let mut msrs = read_msrs(fd, msr_index)?;
        fix_zero_tsc_deadline(&mut msrs);
        Ok(Self {
            cpuid: cpuid.as_slice().to_vec(),
            msrs,
            regs: fd.get_regs().map_err(kvm("get registers"))?,
            sregs: fd.get_sregs().map_err(kvm("get special registers"))?,
            xsave: fd.get_xsave().map_err(kvm("get XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(kvm("get XCRs"))?,
            debugregs: fd.get_debug_regs().map_err(kvm("get debug registers"))?,
            lapic: fd.get_lapic().map_err(kvm("get LAPIC"))?,
            mp_state,
            events: fd.get_vcpu_events().map_err(kvm("get vCPU events"))?,
            tsc_khz: fd.get_tsc_khz().ok(),
        })
    }

    /// What KVM would not check: entry counts within its limits.
    pub fn check(&self, id: usize) -> Result<(), SnapshotError> {
        if self.cpuid.is_empty() || self.cpuid.len() > KVM_MAX_CPUID_ENTRIES {
            return Err(SnapshotError::Invalid(format!(
                "vCPU {id} has {} CPUID entries (1 to {KVM_MAX_CPUID_ENTRIES})",
                self.cpuid.len()
            )));
        }
        if self.msrs.len() > KVM_MAX_MSR_ENTRIES * 8 {
            return Err(SnapshotError::Invalid(format!(
                "vCPU {id} has {} MSRs",
                self.msrs.len()
            )));
        }
        Ok(())
    }

    /// Sets this state on a new vCPU, before it first runs.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), SnapshotError> {
        if let Some(khz) = self.tsc_khz
            && fd.get_tsc_khz().ok() != Some(khz)
        {
            // A host TSC of another frequency: KVM scales the guest's when the CPU can.
            fd.set_tsc_khz(khz).map_err(kvm("set TSC frequency"))?;
        }
        let cpuid = CpuId::from_entries(&self.cpuid)
            .map_err(|e| SnapshotError::Invalid(format!("CPUID: {e:?}")))?;
        fd.set_cpuid2(&cpuid).map_err(kvm("set CPUID"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm("set MP state"))?;
        fd.set_regs(&self.regs).map_err(kvm("set registers"))?;
        fd.set_sregs(&self.sregs)
            .map_err(kvm("set special registers"))?;
        // SAFETY: `kvm_xsave` is the legacy fixed-size area KVM_GET_XSAVE filled on the same
        // kind of host (the CPU identity was checked), so KVM reads no more than it holds.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(kvm("set XSAVE"))?;
        fd.set_xcrs(&self.xcrs).map_err(kvm("set XCRs"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(kvm("set debug registers"))?;
        fd.set_lapic(&self.lapic).map_err(kvm("set LAPIC"))?;
        write_msrs(fd, &self.msrs)?;
        fd.set_vcpu_events(&self.events)
            .map_err(kvm("set vCPU events"))?;
        Ok(())
    }
}

/// Reads every MSR of `index` KVM lets us read, in batches; one it refuses is left out (KVM
/// stops a batch at the first MSR it cannot read and reports how many it did).
fn read_msrs(fd: &VcpuFd, index: &[u32]) -> Result<Vec<kvm_msr_entry>, SnapshotError> {
    let mut out = Vec::with_capacity(index.len());
    let mut i = 0;
    while i < index.len() {
        let end = (i + MSR_BATCH).min(index.len());
        let batch = &index[i..end];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|e| SnapshotError::Invalid(format!("MSR list: {e:?}")))?;
        let n = fd
            .get_msrs(&mut msrs)
            .map_err(kvm("get MSRs"))?
            .min(batch.len());
        out.extend_from_slice(&msrs.as_slice()[..n]);
        // A short batch stopped at an MSR KVM cannot read: leave it out, go on after it.
        i = if n == batch.len() { end } else { i + n + 1 };
    }
    Ok(out)
}

/// A TSC deadline of 0 means "no timer armed" to KVM, but a guest in TSC-deadline mode that was
/// waiting for its timer would then wait forever after a restore: make it the TSC's value, so
/// that the timer fires at once (Firecracker's `fix_zero_tsc_deadline_msr`).
fn fix_zero_tsc_deadline(msrs: &mut [kvm_msr_entry]) {
    let Some(tsc) = msrs
        .iter()
        .find(|e| e.index == MSR_IA32_TSC)
        .map(|e| e.data)
    else {
        return;
    };
    for e in msrs.iter_mut() {
        if e.index == MSR_IA32_TSC_DEADLINE && e.data == 0 {
            e.data = tsc;
        }
    }
}

/// Writes `msrs` with the TSC before the TSC deadline; every one must be taken.
fn write_msrs(fd: &VcpuFd, msrs: &[kvm_msr_entry]) -> Result<(), SnapshotError> {
    let mut ordered: Vec<kvm_msr_entry> = msrs.to_vec();
    // Stable: only the deadline moves, to the end; the TSC keeps its place before it.
    ordered.sort_by_key(|e| e.index == MSR_IA32_TSC_DEADLINE);
    debug_assert!(
        ordered
            .iter()
            .position(|e| e.index == MSR_IA32_TSC)
            .is_none_or(|t| ordered
                .iter()
                .position(|e| e.index == MSR_IA32_TSC_DEADLINE)
                .is_none_or(|d| t < d))
    );
    for batch in ordered.chunks(MSR_BATCH) {
        let msrs = Msrs::from_entries(batch)
            .map_err(|e| SnapshotError::Invalid(format!("MSR list: {e:?}")))?;
        let n = fd.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
        if n != batch.len() {
            return Err(SnapshotError::Invalid(format!(
                "KVM refused MSR {:#x}",
                batch[n].index
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msr(index: u32, data: u64) -> kvm_msr_entry {
        kvm_msr_entry {
            index,
            data,
            ..Default::default()
        }
    }

    #[test]
    fn a_zero_tsc_deadline_becomes_the_tsc() {
        let mut m = vec![msr(MSR_IA32_TSC_DEADLINE, 0), msr(MSR_IA32_TSC, 12345)];
        fix_zero_tsc_deadline(&mut m);
        assert_eq!(m[0].data, 12345);
        let mut armed = vec![msr(MSR_IA32_TSC_DEADLINE, 99), msr(MSR_IA32_TSC, 12345)];
        fix_zero_tsc_deadline(&mut armed);
        assert_eq!(armed[0].data, 99);
    }
}

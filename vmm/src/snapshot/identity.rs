//! What a snapshot must have been written by and on: this VMM build and this kind of CPU.
//!
//! A state file holds KVM structures whose meaning depends on the code that wrote them and on
//! the CPU features the guest was shown; restoring elsewhere would hand a guest a CPU it did
//! not boot on. Both are compared before anything is restored.

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// This VMM's build: its version and a hash of its sources (vmm/build.rs).
pub const BUILD_ID: &str = env!("MVM_VMM_BUILD_ID");

/// The host CPU a snapshot was taken on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CpuIdentity {
    /// "GenuineIntel", "AuthenticAMD", ...
    pub vendor: String,
    /// Family, model and stepping from CPUID leaf 1.
    pub signature: u32,
    /// A hash of the CPU feature words KVM offers guests on this host (FNV-1a).
    pub kvm_features: u64,
}

impl std::fmt::Display for CpuIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.signature;
        let base_family = (s >> 8) & 0xf;
        let family = if base_family == 0xf {
            base_family + ((s >> 20) & 0xff)
        } else {
            base_family
        };
        let model = ((s >> 4) & 0xf) | (((s >> 16) & 0xf) << 4);
        write!(
            f,
            "{} family {family} model {model} stepping {}",
            self.vendor,
            s & 0xf
        )
    }
}

impl CpuIdentity {
    /// This host's.
    pub fn host(kvm: &Kvm) -> Result<Self, SnapshotError> {
        let leaf0 = std::arch::x86_64::__cpuid(0);
        let leaf1 = std::arch::x86_64::__cpuid(1);
        let mut vendor = Vec::with_capacity(12);
        for r in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| SnapshotError::Kvm {
                what: "get supported CPUID",
                source,
            })?;
        // Only the feature words: other fields (APIC IDs in leaves 1, 0xb, 0x1f and
        // 0x8000001e) depend on the core that answered the ioctl.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for e in supported.as_slice() {
            let words: &[u32] = match e.function {
                0x1 => &[e.ecx, e.edx],
                0x7 => &[e.ebx, e.ecx, e.edx],
                0xd if e.index <= 1 => &[e.eax],
                0x8000_0001 => &[e.ecx, e.edx],
                0x8000_0008 => &[e.ebx],
                _ => continue,
            };
            for w in [e.function, e.index].iter().chain(words) {
                for b in w.to_le_bytes() {
                    hash ^= u64::from(b);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        Ok(Self {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            // Without the APIC ID and brand fields: the same CPU on another core is the same.
            signature: leaf1.eax & 0x0fff_3fff,
            kvm_features: hash,
        })
    }

    /// Refuses a snapshot from another kind of CPU.
    pub fn check_same(&self, host: &CpuIdentity) -> Result<(), SnapshotError> {
        if self.vendor != host.vendor || self.signature != host.signature {
            return Err(SnapshotError::OtherCpu(format!(
                "the snapshot was taken on a {self}, this host is a {host}"
            )));
        }
        if self.kvm_features != host.kvm_features {
            return Err(SnapshotError::OtherCpu(format!(
                "the snapshot was taken on a {self} whose KVM offered other CPU features than \
                 this host's"
            )));
        }
        Ok(())
    }
}

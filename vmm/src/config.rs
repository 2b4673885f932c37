//! The monitor's configuration: what a microVM is made of.
//!
//! The types and their validation live in the `mvm-vmm-config` crate, the one definition the
//! runtime writes and this monitor reads; they are re-exported here under their old paths.

pub use mvm_vmm_config::*;

const _: () = assert!(MAX_VCPUS <= crate::arch::x86_64::mptable::MPTABLE_MAX_CPUS);

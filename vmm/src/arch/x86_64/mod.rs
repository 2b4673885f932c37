//! x86_64 specifics: memory layout, boot protocols, registers, CPUID, MSRs and the MP table.

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

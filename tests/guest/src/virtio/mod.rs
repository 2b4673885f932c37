//! Driver side of virtio over MMIO (version 2, "modern"), polled.
//!
//! Written by hand: the rust-vmm crates implement the device side, and this guest has no
//! allocator or OS underneath.

pub mod mmio;
pub mod queue;

/// Feature bit every modern device offers and the driver must accept.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const DEVICE_ID_BLOCK: u32 = 2;
pub const DEVICE_ID_VSOCK: u32 = 19;

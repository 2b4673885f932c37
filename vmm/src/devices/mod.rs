//! Emulated devices: the buses the vCPUs dispatch to, legacy PC devices and virtio.

pub mod bus;
pub mod legacy;
pub mod manager;
pub mod virtio;

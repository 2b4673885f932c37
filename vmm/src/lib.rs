//! mvm's virtual machine monitor: one process per KVM microVM.
//!
//! It knows nothing of images or containers: it boots a kernel with a command line, a few
//! virtio-mmio devices (block, net over TAP, vsock, virtio-fs through vhost-user) and a serial
//! console, and reports how the VM ended.

pub mod api;
pub mod arch;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod seccomp;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

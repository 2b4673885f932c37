//! # mvm-oci: mvm as an OCI runtime
//!
//! `mvm-runc` is the program dockerd's `containerd-shim-runc-v2` and podman's `conmon` call as
//! `RT create --bundle B ...`, `start`, `kill`, `exec`, `delete`, so that `docker run --runtime
//! microvm` and `podman --runtime` run each container in its own KVM microVM.
//!
//! - [`bundle`]: reads and checks a bundle's `config.json` with oci-spec's runtime types (the
//!   bundle is hostile input).
//! - [`vm`]: the bundle as the engine's sandbox (root shared with virtio-fs, mounts, size).
//! - [`relay`]: the process the pid file names, which owns the VM and relays stdio and signals.
//! - [`netns`]: the engine's network namespace joined to the VM with TAPs and tc redirects.
//! - [`cmd`]: one module per group of runc's commands.

pub mod bundle;
pub mod cgroups;
pub mod child;
pub mod cli;
pub mod cmd;
pub mod console;
pub mod error;
pub mod hooks;
pub mod log;
pub mod mount;
pub mod netns;
pub mod process;
pub mod relay;
pub mod resources;
pub mod state;
pub mod sync;
pub mod vm;

pub use bundle::Bundle;
pub use error::{BundleError, RuntimeError};

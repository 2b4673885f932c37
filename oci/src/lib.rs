//! # mvm-oci: mvm as an OCI runtime
//!
//! This crate will become mvm's runc-compatible runtime: the program dockerd's
//! `containerd-shim-runc-v2` and podman's `conmon` call as `RT create --bundle B ...`, `start`,
//! `kill`, `exec`, `delete`, so that `docker run --runtime microvm` and `podman --runtime`
//! run each container in its own KVM microVM (issue "docker run --runtime microvm and podman
//! --runtime: mvm as an OCI runtime").
//!
//! This first piece reads and checks a bundle: [`Bundle::load`] parses `config.json` with
//! oci-spec's runtime types and returns a typed view of what a VM runtime needs (process, root,
//! mounts sorted into host shares and guest filesystems, hooks, namespaces, the VM's size from
//! the cgroup limits), refusing what cannot run in a VM and listing in
//! [`Bundle::unsupported`] what is accepted but has no effect there (seccomp, AppArmor,
//! SELinux, device cgroup rules...). The bundle is treated as hostile input; see [`bundle`].

pub mod bundle;
pub mod error;
pub mod mount;
pub mod resources;

pub use bundle::Bundle;
pub use error::BundleError;

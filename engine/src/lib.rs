//! The mvm engine: containers, each in its own KVM microVM, with their monitor, the images
//! they run, their networks, volumes and builds, and the VM backends under them.
//!
//! Front ends (the `mvm` CLI, the OCI runtime, the containerd shim) parse their own input,
//! call this library and print its typed results; the engine itself never prints (a
//! [`report::Reporter`] receives its progress lines).

pub mod agent_disk;
mod api;
pub mod backend;
pub mod build;
pub mod changes;
pub mod container;
pub mod error;
pub mod events;
pub mod image;
pub mod logfile;
pub mod logs;
pub mod network;
pub mod paths;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod session;
pub mod system;
pub mod terminal;
pub mod volume;

pub use api::{Engine, EngineOptions, RemoveOptions};
pub use error::EngineError;

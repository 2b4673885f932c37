//! `mvm info` and `mvm version`.

use std::path::{Path, PathBuf};

use mvm_engine::{backend, paths};

use crate::error::CliError;

/// `mvm info`: the backend in use and where things are.
pub fn info(root: &Path, vmm: Option<&str>) -> Result<i32, CliError> {
    let sel = backend::select(vmm).map_err(CliError::usage)?;
    println!("Backend: {}", sel.kind.name());
    println!("Reason: {}", sel.reason);
    if let Some(w) = &sel.warning {
        println!("Warning: {w}");
    }
    println!("KVM: {:?}", backend::detect_kvm());
    println!("State root: {}", root.display());
    let show = |name: &str, r: Result<PathBuf, String>| match r {
        Ok(p) => println!("{name}: {}", p.display()),
        Err(e) => println!("{name}: missing ({e})"),
    };
    show("Kernel", paths::kernel());
    show("Agent", paths::agent());
    show("VMM", paths::vmm());
    show(
        "QEMU",
        paths::on_path("qemu-system-x86_64").ok_or_else(|| "not on PATH".into()),
    );
    show(
        "vhost-device-vsock",
        paths::on_path("vhost-device-vsock").ok_or_else(|| "not on PATH".into()),
    );
    Ok(0)
}

/// `mvm version`.
pub fn version() -> Result<i32, CliError> {
    println!("mvm version {}", env!("CARGO_PKG_VERSION"));
    Ok(0)
}

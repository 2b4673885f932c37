//! Where mvm finds its state and the artifacts it boots: the state root, the guest kernel, the
//! agent, the VMM and the QEMU-side helpers.

use std::path::{Path, PathBuf};

/// Default state root, as in DESIGN.md.
pub const DEFAULT_ROOT: &str = "/var/lib/mvm";
/// Default cache of built artifacts (the kernel), shared by every state root on the machine.
pub const DEFAULT_CACHE: &str = "/var/cache/mvm";

/// Creates the state root if missing and makes it 0700: containers' disks, logs, sockets and
/// unpacked images below it are no other local user's to read, whatever their own modes.
pub fn private_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    let meta = std::fs::metadata(root)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Directory of the running `mvm` executable.
fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// Finds an artifact: the environment variable if set, else the first existing candidate.
fn find(env: &str, candidates: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("{env}={} does not exist", p.display()))
        };
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!("not found (tried {}; set {env})", tried.join(", "))
        })
}

/// The artifact cache directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The guest kernel (ELF vmlinux), built by kernel-config/build.sh.
pub fn kernel() -> Result<PathBuf, String> {
    find("MVM_KERNEL", &[cache_dir().join("kernel/current/vmlinux")])
        .map_err(|e| format!("guest kernel {e}: run scripts/setup.sh to build it"))
}

/// The static guest agent, built by scripts/build-agent.sh next to the target directory.
pub fn agent() -> Result<PathBuf, String> {
    let mut c = Vec::new();
    if let Some(d) = exe_dir() {
        c.push(d.join("mvm-agent.static"));
        c.push(d.join("../mvm-agent.static"));
    }
    c.push(PathBuf::from("/usr/local/lib/mvm/mvm-agent.static"));
    find("MVM_AGENT", &c).map_err(|e| format!("guest agent {e}: run scripts/build-agent.sh"))
}

/// The `mvm-vmm` binary.
pub fn vmm() -> Result<PathBuf, String> {
    let mut c = Vec::new();
    if let Some(d) = exe_dir() {
        c.push(d.join("mvm-vmm"));
    }
    c.push(PathBuf::from("/usr/local/bin/mvm-vmm"));
    find("MVM_VMM_BIN", &c).map_err(|e| format!("mvm-vmm {e}"))
}

/// A program on PATH, or where `cargo install` puts it (the set-up installs
/// vhost-device-vsock and virtiofsd there, and a root shell may not have it on PATH).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

//! A bundle as the engine's [`SandboxSpec`]: the root shared from `root.path`; bind mounts as
//! shared files (copied) or directories; tmpfs mounts made in the guest; the kernel file
//! systems the agent always makes (/proc, /sys, /dev, /dev/pts, /dev/shm) left to it; the
//! VM's size from `linux.resources`. What has no effect in a VM is returned as notes for the
//! debug log.

use std::path::PathBuf;

use mvm_agent_protocol::boot::{self, TmpfsMount};
use mvm_engine::backend::Kind;
use mvm_engine::sandbox::{SandboxNic, SandboxSpec, SharedDir, SharedFile};

use crate::bundle::Bundle;
use crate::error::RuntimeError;
use crate::mount::{GuestFs, Mount, TmpfsSize};

/// Memory of a VM whose bundle sets no limit: `mvm run`'s default.
pub const DEFAULT_MEMORY_MIB: u64 = mvm_engine::container::spec::DEFAULT_MEM_MIB;
/// The most vCPUs a bundle's CPU limit gives.
pub const MAX_VCPUS: u32 = 32;

/// Where the agent makes a kernel file system whatever the bundle says.
const AGENT_MAKES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys/fs/cgroup",
];

/// The sandbox for `bundle`, and notes on what was left out.
pub fn sandbox_spec(
    bundle: &Bundle,
    kind: Kind,
    run_dir: PathBuf,
    cache: PathBuf,
    nics: Vec<SandboxNic>,
    debug: bool,
) -> Result<(SandboxSpec, Vec<String>), RuntimeError> {
    let mut notes = bundle.unsupported.clone();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut tmpfs = Vec::new();
    let memory_mib = bundle
        .linux
        .resources
        .memory_mib
        .unwrap_or(DEFAULT_MEMORY_MIB);
    for m in &bundle.mounts {
        let dest = m.destination().to_string_lossy().into_owned();
        if AGENT_MAKES.contains(&dest.as_str()) {
            notes.push(format!("mount {dest}: the guest makes its own"));
            continue;
        }
        let target = || {
            boot::check_target(&dest).map_err(|why| {
                RuntimeError::Unsupported(format!(
                    "mount {dest:?} cannot be made in the guest: {why}"
                ))
            })
        };
        match m {
            Mount::Bind(b) => {
                let meta = std::fs::metadata(&b.source).map_err(|e| {
                    RuntimeError::Other(format!("bind mount {} on {dest}: {e}", b.source.display()))
                })?;
                if boot::in_kernel_dir(&dest) {
                    notes.push(format!(
                        "bind mount {} on {dest}: not made (the guest's own kernel file systems are there)",
                        b.source.display()
                    ));
                } else if meta.is_dir() {
                    dirs.push(SharedDir {
                        source: b.source.clone(),
                        target: target()?,
                        read_only: b.readonly,
                    });
                } else if meta.is_file() {
                    files.push(SharedFile {
                        source: b.source.clone(),
                        target: target()?,
                        read_only: b.readonly,
                    });
                } else {
                    return Err(RuntimeError::Unsupported(format!(
                        "bind mount {} on {dest}: only directories and regular files can be shared with a microVM",
                        b.source.display()
                    )));
                }
            }
            Mount::Guest(g) => match &g.fs {
                GuestFs::Tmpfs { size, mode } if !boot::in_kernel_dir(&dest) => {
                    tmpfs.push(TmpfsMount {
                        target: target()?,
                        size: size.map(|s| match s {
                            TmpfsSize::Bytes(b) => b,
                            TmpfsSize::Percent(p) => (memory_mib << 20) * u64::from(p) / 100,
                        }),
                        mode: mode.unwrap_or(boot::DEFAULT_TMPFS_MODE),
                        read_only: g.readonly,
                    });
                }
                fs => notes.push(format!("mount {dest} ({fs:?}): not made in the guest")),
            },
        }
    }
    let vcpus = bundle
        .linux
        .resources
        .vcpus()
        .unwrap_or(1)
        .clamp(1, MAX_VCPUS);
    let spec = SandboxSpec {
        kind,
        run_dir,
        cache,
        root: bundle.root.path.clone(),
        root_read_only: bundle.root.readonly,
        files,
        dirs,
        tmpfs,
        hostname: bundle.hostname.clone().filter(|h| !h.is_empty()),
        vcpus: u8::try_from(vcpus).unwrap_or(u8::MAX),
        memory_mib,
        // Docker's embedded DNS listens at 127.0.0.11 in the namespace we are in.
        dns_upstream: (!nics.is_empty())
            .then(|| std::net::SocketAddr::from(mvm_agent_protocol::dns::GUEST_RESOLVER)),
        nics,
        // Set by the relay once it has joined the bundle's cgroup.
        cgroup_parent: None,
        debug,
    };
    Ok((spec, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Docker bundle captured here, with its root and /etc files made real.
    fn docker_bundle(dir: &std::path::Path) -> Bundle {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/docker-bundle-config.json"
        ))
        .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        v["root"]["path"] = "rootfs".into();
        for m in v["mounts"].as_array_mut().unwrap() {
            if m["type"] == "bind" {
                let name = m["destination"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
                std::fs::write(dir.join(&name), "x\n").unwrap();
                m["source"] = dir.join(&name).to_string_lossy().into_owned().into();
            }
        }
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": 268435456});
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        Bundle::load(dir).unwrap()
    }

    #[test]
    fn dockers_bundle_becomes_a_root_share_three_files_and_its_size() {
        let dir = std::env::temp_dir().join(format!("mvm-oci-vm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let b = docker_bundle(&dir);
        let (s, notes) = sandbox_spec(
            &b,
            Kind::QemuTcg,
            "/run/x".into(),
            "/c".into(),
            vec![],
            false,
        )
        .unwrap();
        assert_eq!(s.root, dir.canonicalize().unwrap().join("rootfs"));
        assert_eq!(
            s.files
                .iter()
                .map(|f| f.target.as_str())
                .collect::<Vec<_>>(),
            ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]
        );
        assert!(s.dirs.is_empty() && s.tmpfs.is_empty());
        assert_eq!(s.memory_mib, 256);
        assert_eq!(s.vcpus, 1);
        assert!(notes.iter().any(|n| n.contains("/dev/mqueue")), "{notes:?}");
        // A bind source that is neither a file nor a directory is refused in one line.
        let _ = std::fs::remove_dir_all(&dir);
    }
}

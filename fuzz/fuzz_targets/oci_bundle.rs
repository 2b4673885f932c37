//! An OCI bundle's `config.json` as dockerd, podman or anyone able to write a bundle may give
//! it to `mvm-runc create`: parsed and checked by `Bundle::load`, then turned into the VM's
//! description as the relay does (`vm::sandbox_spec`).
//!
//! Seeds are the bundles captured from dockerd and podman (oci/tests/data); the bundle
//! directory holds a `rootfs` and nothing else.
//!
//! Oracle, besides never panicking: a loaded bundle has a non-empty `process.args`, an absolute
//! `process.cwd` and an absolute canonical root that is not a symlink; its memory is at least
//! the runtime's floor; and every mount the sandbox makes in the guest has a target the agent's
//! own checker accepts, so the agent is never handed a path it would refuse or misread.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use mvm_agent_protocol::boot::check_target;
use mvm_oci::Bundle;

fn bundle_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mvm-fuzz-oci-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs")).expect("scratch bundle");
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = bundle_dir();
    if std::fs::write(dir.join("config.json"), data).is_err() {
        return;
    }
    let Ok(b) = Bundle::load(dir) else {
        return;
    };
    assert!(!b.process.args.is_empty());
    assert!(b.process.cwd.is_absolute());
    assert!(b.root.path.is_absolute());
    assert!(!b.root.path.is_symlink());
    if let Some(m) = b.linux.resources.memory_mib {
        assert!(m >= mvm_oci::resources::MIN_MEMORY_MIB);
    }
    if let Ok((spec, _notes)) = mvm_oci::vm::sandbox_spec(
        &b,
        mvm_engine::backend::Kind::QemuTcg,
        dir.join("run"),
        dir.join("cache"),
        Vec::new(),
        false,
    ) {
        for t in spec
            .files
            .iter()
            .map(|f| &f.target)
            .chain(spec.dirs.iter().map(|d| &d.target))
            .chain(spec.tmpfs.iter().map(|t| &t.target))
        {
            assert_eq!(check_target(t).as_deref(), Ok(t.as_str()), "{t}");
        }
        assert!(spec.vcpus >= 1);
    }
});

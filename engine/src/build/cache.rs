//! The build cache: `<root>/build-cache/<key>` holds the image ID a step made, keyed by the
//! parent image, its config, the instruction and what else the step read (build arguments,
//! COPY contents). A key whose image is gone is a miss.

use std::path::{Path, PathBuf};

use mvm_rootfs::{ImageRecord, Store, catalog};
use sha2::{Digest as _, Sha256};

fn dir(root: &Path) -> PathBuf {
    root.join("build-cache")
}

/// The key of a step from its parts.
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The image a step with this key made before, if it still exists.
pub fn lookup(root: &Path, store: &Store, key: &str) -> Option<ImageRecord> {
    let id = std::fs::read_to_string(dir(root).join(key)).ok()?;
    catalog::resolve(store, id.trim()).ok()
}

/// Remembers the image a step made (best effort: a failed write only costs a rebuild).
pub fn store(root: &Path, key: &str, image: &ImageRecord) {
    let _ = std::fs::create_dir_all(dir(root));
    if let Err(e) =
        mvm_rootfs::fsutil::atomic_write(&dir(root).join(key), image.id.to_string().as_bytes())
    {
        tracing::warn!("build cache not written: {e}");
    }
}

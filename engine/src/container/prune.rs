//! `container prune`.

use std::path::Path;

use super::{list, resolve_locked};

/// What a prune removed.
#[derive(Debug, Default)]
pub struct Pruned {
    /// IDs of the removed containers.
    pub ids: Vec<String>,
    /// Bytes their directories took on disk.
    pub bytes: u64,
}

/// Removes every container that is not running.
pub fn prune(root: &Path) -> Pruned {
    let mut out = Pruned::default();
    for rec in list(root) {
        if rec.is_running() {
            continue;
        }
        // Started meanwhile, or removed: not ours to prune.
        let Ok((dirs, rec, _lock)) = resolve_locked(root, &rec.id) else {
            continue;
        };
        if rec.is_running() {
            continue;
        }
        out.bytes += disk_usage(&dirs.dir);
        dirs.remove();
        out.ids.push(rec.id);
    }
    out
}

/// Bytes a directory's files take on disk (sparse files count what is allocated).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| if m.is_dir() { 0 } else { m.blocks() * 512 })
        .sum()
}

//! The state root as a whole: what it holds and uses on disk (`system df`) and pruning what
//! nothing uses (`system prune`, and each kind's own `prune`).

use std::collections::BTreeSet;
use std::path::Path;

use mvm_rootfs::prune::{PruneOptions, PruneReport};
use mvm_rootfs::{Digest, Store};

use crate::error::EngineError;
use crate::{container, network, volume};

/// Counts and bytes of one kind of object, as `system df` shows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// How many there are.
    pub total: usize,
    /// How many are in use (images with a container, running containers, volumes mounted).
    pub active: usize,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes a prune would free.
    pub reclaimable: u64,
}

/// `system df`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Images (their layers' sizes).
    pub images: Usage,
    /// Containers (their writable disks' allocated bytes).
    pub containers: Usage,
    /// Volumes (their data directories).
    pub volumes: Usage,
}

/// IDs of the images containers were made from.
pub fn images_in_use(root: &Path) -> BTreeSet<Digest> {
    container::list(root)
        .iter()
        .filter_map(|c| Digest::parse(&c.image_id).ok())
        .collect()
}

/// Bytes a file takes on disk (its allocated blocks: a sparse disk counts what it holds).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// `ps -s`: the bytes a container's writable disk takes, and those with its image's layers
/// ("virtual").
pub fn container_sizes(root: &Path, rec: &container::ContainerRecord) -> (u64, u64) {
    let rw = allocated(
        &container::ContainerDirs::new(root, &rec.id)
            .dir
            .join("upper.ext4"),
    );
    let image = Store::open(&root.join("images"))
        .ok()
        .and_then(|s| mvm_rootfs::catalog::resolve(&s, &rec.image_id).ok())
        .map_or(0, |img| crate::image::size(&img));
    (rw, rw + image)
}

/// What the root holds, by kind.
pub fn disk_usage(root: &Path) -> Result<DiskUsage, EngineError> {
    let store = Store::open(&root.join("images")).map_err(EngineError::runtime)?;
    let used = images_in_use(root);
    let mut images = Usage::default();
    for img in mvm_rootfs::catalog::list(&store).map_err(EngineError::runtime)? {
        let size = crate::image::size(&img);
        images.total += 1;
        images.size += size;
        if used.contains(&img.id) {
            images.active += 1;
        } else {
            images.reclaimable += size;
        }
    }
    let mut containers = Usage::default();
    for c in container::list(root) {
        let dirs = container::ContainerDirs::new(root, &c.id);
        let size = allocated(&dirs.dir.join("upper.ext4"));
        containers.total += 1;
        containers.size += size;
        if c.is_running() {
            containers.active += 1;
        } else {
            containers.reclaimable += size;
        }
    }
    let mut volumes = Usage::default();
    for v in volume::list(root) {
        let size = volume::disk_usage(&volume::data_dir(root, &v.name));
        volumes.total += 1;
        volumes.size += size;
        if volume::users(root, &v.name).is_empty() {
            volumes.reclaimable += size;
        } else {
            volumes.active += 1;
        }
    }
    Ok(DiskUsage {
        images,
        containers,
        volumes,
    })
}

/// Removes the user networks no container uses; their names.
pub fn prune_networks(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for n in network::list(root) {
        if n.name != network::DEFAULT_NETWORK && network::remove(root, &n.id).is_ok() {
            removed.push(n.name);
        }
    }
    network::resync_rules(root);
    removed
}

/// Removes the volumes no container uses: anonymous ones, or all with `all`; their names and
/// the bytes freed.
pub fn prune_volumes(root: &Path, all: bool) -> Result<(Vec<String>, u64), EngineError> {
    let _lock = volume::lock(root).map_err(EngineError::runtime)?;
    let mut removed = Vec::new();
    let mut bytes = 0;
    for v in volume::list(root) {
        if !(all || v.anonymous) || !volume::users(root, &v.name).is_empty() {
            continue;
        }
        let size = volume::disk_usage(&volume::data_dir(root, &v.name));
        if volume::remove_locked(root, &v.name).is_ok() {
            bytes += size;
            removed.push(v.name);
        }
    }
    Ok((removed, bytes))
}

/// Removes dangling images (every image no container uses with `all`).
pub fn prune_images(root: &Path, all: bool) -> Result<PruneReport, EngineError> {
    let store = Store::open(&root.join("images")).map_err(EngineError::runtime)?;
    let opts = PruneOptions {
        all,
        in_use: images_in_use(root),
    };
    mvm_rootfs::prune::prune(&store, &opts).map_err(EngineError::runtime)
}

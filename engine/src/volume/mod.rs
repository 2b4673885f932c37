//! Volumes: directories under the state root that outlive containers, shared into guests
//! with virtio-fs.
//!
//! ```text
//! <root>/volumes/<name>/_data       the volume's files (as Docker lays them out)
//! <root>/volumes/<name>/volume.json its record
//! <root>/volumes/.lock              serialises create and remove against use
//! ```

pub mod mounts;
pub mod virtiofsd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container;

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// Bad user input.
    #[error("{0}")]
    Invalid(String),
    /// A volume used by containers.
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse {
        /// Volume name.
        name: String,
        /// Containers using it.
        containers: String,
    },
    /// State on disk.
    #[error("{0}")]
    State(String),
}

/// A volume's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Name (user-given, or 64 hex digits for anonymous volumes).
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image VOLUME): removed with it by `rm -v` and
    /// `--rm`.
    #[serde(default)]
    pub anonymous: bool,
}

fn dir(root: &Path) -> PathBuf {
    root.join("volumes")
}

/// The directory holding the volume's files.
pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    dir(root).join(name).join("_data")
}

/// Takes the volumes lock.
pub fn lock(root: &Path) -> Result<mvm_rootfs::fsutil::LockFile, VolumeError> {
    std::fs::create_dir_all(dir(root)).map_err(|e| VolumeError::State(e.to_string()))?;
    mvm_rootfs::fsutil::LockFile::acquire(&dir(root).join(".lock"))
        .map_err(|e| VolumeError::State(format!("cannot lock the volumes: {e}")))
}

/// Volume names: Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && container::valid_name(name)
}

/// Every volume, by name.
pub fn list(root: &Path) -> Vec<VolumeRecord> {
    let Ok(rd) = std::fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut v: Vec<VolumeRecord> = rd
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("volume.json")).ok())
        .filter_map(|d| serde_json::from_slice(&d).ok())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// One volume.
pub fn get(root: &Path, name: &str) -> Result<VolumeRecord, VolumeError> {
    let p = dir(root).join(name).join("volume.json");
    if !valid_name(name) {
        return Err(VolumeError::NotFound(name.to_string()));
    }
    let data = std::fs::read(&p).map_err(|_| VolumeError::NotFound(name.to_string()))?;
    serde_json::from_slice(&data)
        .map_err(|e| VolumeError::State(format!("corrupt volume record {}: {e}", p.display())))
}

/// Creates a volume, or returns the existing one of that name (as `docker volume create`
/// does). The caller holds the lock. `None` makes an anonymous volume with a random name.
pub fn create_locked(
    root: &Path,
    name: Option<&str>,
    labels: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<VolumeRecord, VolumeError> {
    let name = match name {
        Some(n) if !valid_name(n) => {
            return Err(VolumeError::Invalid(format!(
                "create {n}: {n:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        Some(n) => n.to_string(),
        None => container::new_id().map_err(VolumeError::State)?,
    };
    if let Ok(existing) = get(root, &name) {
        return Ok(existing);
    }
    let rec = VolumeRecord {
        name: name.clone(),
        created: mvm_rootfs::time::now(),
        labels,
        anonymous,
    };
    let data = data_dir(root, &name);
    std::fs::create_dir_all(&data)
        .map_err(|e| VolumeError::State(format!("cannot create {}: {e}", data.display())))?;
    let json = serde_json::to_vec_pretty(&rec).map_err(|e| VolumeError::State(e.to_string()))?;
    mvm_rootfs::fsutil::atomic_write(&dir(root).join(&name).join("volume.json"), &json)
        .map_err(|e| VolumeError::State(format!("cannot write the volume record: {e}")))?;
    crate::events::record(root, "volume", "create", &name, &[("driver", "local")]);
    Ok(rec)
}

/// Containers (by name) whose mounts use volume `name`.
pub fn users(root: &Path, name: &str) -> Vec<String> {
    container::list(root)
        .into_iter()
        .filter(|c| {
            c.mounts
                .iter()
                .any(|m| m.kind == mounts::Kind::Volume && m.source == name)
        })
        .map(|c| c.name)
        .collect()
}

/// Removes a volume no container uses (`force` only forgives a missing volume).
pub fn remove(root: &Path, name: &str) -> Result<(), VolumeError> {
    let _lock = lock(root)?;
    remove_locked(root, name)
}

/// As [`remove`], with the lock held.
pub fn remove_locked(root: &Path, name: &str) -> Result<(), VolumeError> {
    get(root, name)?;
    let users = users(root, name);
    if !users.is_empty() {
        return Err(VolumeError::InUse {
            name: name.to_string(),
            containers: users.join(", "),
        });
    }
    std::fs::remove_dir_all(dir(root).join(name))
        .map_err(|e| VolumeError::State(format!("remove {name}: {e}")))?;
    crate::events::record(root, "volume", "destroy", name, &[("driver", "local")]);
    Ok(())
}

/// Removes the anonymous volumes a removed container had (`rm -v`, `--rm`); volumes another
/// container also mounts stay.
pub fn remove_anonymous(root: &Path, mounts: &[mounts::MountSpec]) {
    for m in mounts
        .iter()
        .filter(|m| m.kind == mounts::Kind::Volume && m.anonymous)
    {
        if let Err(e) = remove(root, &m.source) {
            tracing::warn!("anonymous volume {} kept: {e}", m.source);
        }
    }
}

/// Bytes used by a directory tree (allocated blocks).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(rd) = std::fs::read_dir(path)
    {
        for e in rd.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_remove() {
        let root = std::env::temp_dir().join(format!("mvm-vol-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let v = create_locked(&root, Some("data"), BTreeMap::new(), false).unwrap();
        assert_eq!(v.name, "data");
        assert!(data_dir(&root, "data").is_dir());
        // Creating it again returns the same volume.
        assert_eq!(
            create_locked(&root, Some("data"), BTreeMap::new(), true)
                .unwrap()
                .created,
            v.created
        );
        let anon = create_locked(&root, None, BTreeMap::new(), true).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.anonymous);
        assert!(create_locked(&root, Some("../x"), BTreeMap::new(), false).is_err());
        assert!(matches!(
            get(&root, "../volumes"),
            Err(VolumeError::NotFound(_))
        ));
        assert_eq!(list(&root).len(), 2);
        remove(&root, "data").unwrap();
        assert!(matches!(get(&root, "data"), Err(VolumeError::NotFound(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}

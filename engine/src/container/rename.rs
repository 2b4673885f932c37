//! `rename`.

use std::path::Path;

use super::{ContainerError, list, resolve, valid_name};

/// Gives container `old` the name `new` (a leading `/` is dropped, as Docker).
pub fn rename(root: &Path, old: &str, new: &str) -> Result<(), ContainerError> {
    let new = new.trim_start_matches('/');
    if !valid_name(new) {
        return Err(ContainerError::InvalidName(new.to_string()));
    }
    // Names are claimed under the lock `run` and `create` take (its directory may not be
    // there yet on a new root: then the container is not found below, not an I/O error).
    let containers = root.join("containers");
    std::fs::create_dir_all(&containers).map_err(|e| ContainerError::Record(e.to_string()))?;
    let _lock = mvm_rootfs::fsutil::LockFile::acquire(&root.join("containers/.lock"))
        .map_err(|e| ContainerError::Record(e.to_string()))?;
    let (dirs, rec) = resolve(root, old)?;
    if rec.name == new {
        return Err(ContainerError::SameName(new.to_string()));
    }
    if list(root).iter().any(|c| c.name == new) {
        return Err(ContainerError::NameInUse(new.to_string()));
    }
    let renamed = dirs
        .update(|r| r.name = new.to_string())
        .map_err(ContainerError::Record)?;
    let old_name = format!("/{}", rec.name);
    crate::events::container(root, &renamed, "rename", &[("oldName", &old_name)]);
    Ok(())
}

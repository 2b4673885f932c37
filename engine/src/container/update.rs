//! `update`: a container's restart policy and its VM's size, changed in its record. The
//! restart policy is read when the process ends, so it holds from then on; a size applies
//! at the VM's next boot, so a running container's size is refused (a VM's memory and vCPUs
//! are fixed while it runs) rather than changed behind the user's back.

use std::path::Path;

use super::spec::RestartPolicy;
use super::{Status, resolve};
use crate::error::{EXIT_FAILED, EngineError};

/// What `update` changes; `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// `--restart`.
    pub restart: Option<RestartPolicy>,
    /// `-m/--memory`, MiB.
    pub memory_mib: Option<u64>,
    /// `--cpus`.
    pub vcpus: Option<u8>,
}

/// Applies `u` to the container `key`.
pub fn update(root: &Path, key: &str, u: &Update) -> Result<(), EngineError> {
    let (dirs, rec) = resolve(root, key)?;
    let resizes = u
        .memory_mib
        .is_some_and(|m| m != rec.spec.resources.memory_mib)
        || u.vcpus.is_some_and(|c| c != rec.spec.resources.vcpus);
    if resizes && rec.effective().0 != Status::Exited && rec.effective().0 != Status::Created {
        return Err(EngineError::with_code(
            EXIT_FAILED,
            format!(
                "Cannot update container {key}: a running microVM's memory and vCPUs are fixed; \
                 stop it first (the new size applies at its next start)"
            ),
        ));
    }
    if u.restart.as_ref().is_some_and(|r| !r.is_none()) && rec.spec.auto_remove {
        return Err(EngineError::with_code(
            EXIT_FAILED,
            format!(
                "Cannot update container {key}: Restart policy cannot be updated because AutoRemove is enabled for the container"
            ),
        ));
    }
    dirs.update(|r| {
        if let Some(p) = &u.restart {
            r.spec.restart = *p;
        }
        if let Some(m) = u.memory_mib {
            r.spec.resources.memory_mib = m;
        }
        if let Some(c) = u.vcpus {
            r.spec.resources.vcpus = c;
        }
    })
    .map_err(EngineError::runtime)
    .map(|rec| crate::events::container(root, &rec, "update", &[]))
}

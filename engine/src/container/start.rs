//! Starting existing containers again: `start` (detached or attached) and `restart`.

use std::path::Path;
use std::time::Duration;

use super::{ContainerError, resolve_locked};
use crate::error::EngineError;
use crate::run::{self, Start};

/// `start` of one container: a created or exited one runs again under a monitor; a running
/// one is left as it is (not an error, as Docker).
pub fn start(root: &Path, key: &str) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    if rec.is_running() {
        return Ok(());
    }
    refuse_dead(&rec)?;
    run::start_monitor(root, &dirs, Start::Existing)
        .map(|_| ())
        .map_err(|e| ContainerError::Start {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

/// `start -a`: runs one container attached to the caller's standard streams (`interactive`:
/// with stdin) until it ends; its exit code.
pub fn start_attached(root: &Path, key: &str, interactive: bool) -> Result<i32, EngineError> {
    let (dirs, rec, lock) = resolve_locked(root, key)?;
    if rec.is_running() {
        return Err(ContainerError::AlreadyRunning(rec.id).into());
    }
    refuse_dead(&rec)?;
    run::start_attached(root, &dirs, interactive, lock)
}

/// `restart`: stop (as `stop` with `timeout`), then start.
pub fn restart(root: &Path, key: &str, timeout: Option<Duration>) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    refuse_dead(&rec)?;
    let timeout = timeout.unwrap_or_else(|| super::stop::stop_timeout(&rec));
    super::stop::stop_one(&dirs, &rec, timeout);
    if !dirs.dir.exists() {
        // It was started with --rm and went with its stop.
        return Err(ContainerError::NotFound(key.to_string()));
    }
    run::start_monitor(root, &dirs, Start::Existing)
        .map(|_| ())
        .map_err(|e| ContainerError::Start {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

/// A dead container (its removal failed half-way) does not start again, as Docker's.
fn refuse_dead(rec: &super::ContainerRecord) -> Result<(), ContainerError> {
    if rec.state.status == super::Status::Dead {
        return Err(ContainerError::Dead(rec.id.clone()));
    }
    Ok(())
}

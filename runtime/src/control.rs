//! `start`, `restart`, `pause`, `unpause`, `rename` and `container prune`: the engine's
//! container operations, printed as Docker prints them.

use std::path::Path;
use std::time::Duration;

use mvm_engine::container;

use crate::error::CliError;
use crate::lifecycle::each_container;

/// `mvm pause`.
pub fn pause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| container::signal::pause(root, key))
}

/// `mvm unpause`.
pub fn unpause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| container::signal::unpause(root, key))
}

/// `mvm start`: containers that are created or exited run again under a monitor; with
/// `attach`, the one container runs attached to this terminal instead.
pub fn start(
    root: &Path,
    keys: &[String],
    attach: bool,
    interactive: bool,
) -> Result<i32, CliError> {
    if attach || interactive {
        let [key] = keys else {
            return Err(CliError::usage(
                "you cannot start and attach multiple containers at once".into(),
            ));
        };
        return Ok(container::start::start_attached(root, key, interactive)?);
    }
    each_container(keys, |key| container::start::start(root, key))
}

/// `mvm restart`.
pub fn restart(root: &Path, keys: &[String], timeout: u64) -> Result<i32, CliError> {
    each_container(keys, |key| {
        container::start::restart(root, key, Duration::from_secs(timeout))
    })
}

/// `mvm rename OLD NEW`.
pub fn rename(root: &Path, old: &str, new: &str) -> Result<i32, CliError> {
    match container::rename::rename(root, old, new) {
        Ok(()) => Ok(0),
        Err(e @ container::ContainerError::InvalidName(_)) => Err(CliError::usage(e.to_string())),
        Err(e) => Err(CliError::with_code(1, e.to_string())),
    }
}

/// `mvm container prune`: removes every container that is not running.
pub fn prune(root: &Path, force: bool) -> Result<i32, CliError> {
    if !crate::output::prompt::confirm(force, "This will remove all stopped containers.") {
        return Ok(0);
    }
    let pruned = container::prune::prune(root);
    if !pruned.ids.is_empty() {
        println!("Deleted Containers:");
        for id in &pruned.ids {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::output::units::human_size(pruned.bytes)
    );
    Ok(0)
}

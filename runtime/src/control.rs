//! Commands that change a container's state without running a new one: `start`, `restart`,
//! `pause`, `unpause`, `rename` and `container prune`.

use std::path::Path;

use crate::container::{self, ContainerDirs, ContainerRecord};
use crate::error::CliError;
use crate::lifecycle::{each_container, stop_one};
use crate::run::{self, Start};

/// The container's hypervisor and helper PIDs, only those that are still children of its
/// monitor (a recorded PID the kernel has since reused is never signalled).
pub fn vm_pids(rec: &ContainerRecord) -> Vec<u32> {
    let Some(owner) = rec.pid else {
        return Vec::new();
    };
    rec.vm_pids
        .iter()
        .copied()
        .filter(|p| parent_of(*p) == Some(owner))
        .collect()
}

/// The parent PID of `pid`, from /proc.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state, ppid, ...
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn signal_vm(rec: &ContainerRecord, sig: i32) -> Result<(), String> {
    let pids = vm_pids(rec);
    if pids.is_empty() {
        return Err(format!("cannot find the VM of container {}", rec.id));
    }
    for pid in pids {
        // SAFETY: kill(2) on a PID checked above to be a live child of the container's monitor.
        if unsafe { libc::kill(pid as i32, sig) } != 0 {
            return Err(format!(
                "cannot signal the VM of container {}: {}",
                rec.id,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Lets a paused container's VM run again (before it is stopped); no-op otherwise.
pub fn resume_vm(dirs: &ContainerDirs, rec: &ContainerRecord) {
    if rec.paused {
        let _ = signal_vm(rec, libc::SIGCONT);
        let _ = dirs.update(|r| r.paused = false);
    }
}

/// Stops (`true`) or resumes the container's VM and records it.
pub fn set_paused(dirs: &ContainerDirs, rec: &ContainerRecord, paused: bool) -> Result<(), String> {
    signal_vm(rec, if paused { libc::SIGSTOP } else { libc::SIGCONT })?;
    dirs.update(|r| r.paused = paused).map(|_| ())
}

/// `mvm pause`: the VM's vCPUs (the whole hypervisor) stop until `unpause`.
pub fn pause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        match rec.effective().0 {
            "running" => {}
            "paused" => return Err(format!("Container {} is already paused", rec.id)),
            _ => return Err(format!("Container {} is not running", rec.id)),
        }
        set_paused(&dirs, &rec, true)
    })
}

/// `mvm unpause`.
pub fn unpause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        if rec.effective().0 != "paused" {
            return Err(format!("Container {} is not paused", rec.id));
        }
        set_paused(&dirs, &rec, false)
    })
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
        let (dirs, rec, lock) = container::resolve_locked(root, key).map_err(failed)?;
        if rec.is_running() {
            return Err(failed(format!(
                "Container {} is already running; use mvm attach",
                rec.id
            )));
        }
        return run::start_attached(root, &dirs, interactive, lock);
    }
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        if rec.is_running() {
            // As Docker: starting a running container is not an error.
            return Ok(());
        }
        run::start_monitor(root, &dirs, Start::Existing)
            .map(|_| ())
            .map_err(|e| format!("Error response: failed to start container {key}: {e}"))
    })
}

/// `mvm restart`: stop (as `stop -t`), then start.
pub fn restart(root: &Path, keys: &[String], timeout: u64) -> Result<i32, CliError> {
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        stop_one(&dirs, &rec, timeout);
        if !dirs.dir.exists() {
            // It was started with --rm and went with its stop.
            return Err(format!("No such container: {key}"));
        }
        run::start_monitor(root, &dirs, Start::Existing)
            .map(|_| ())
            .map_err(|e| format!("Error response: failed to start container {key}: {e}"))
    })
}

/// `mvm rename OLD NEW`.
pub fn rename(root: &Path, old: &str, new: &str) -> Result<i32, CliError> {
    let new = new.trim_start_matches('/');
    if !container::valid_name(new) {
        return Err(CliError::usage(format!(
            "invalid container name {new:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    // Names are claimed under the lock `run` and `create` take.
    let _lock = mvm_rootfs::fsutil::LockFile::acquire(&root.join("containers/.lock"))
        .map_err(CliError::runtime)?;
    let (dirs, rec) = container::resolve(root, old).map_err(failed)?;
    if rec.name == new {
        return Err(failed(format!(
            "Renaming a container with the same name as its current name: {new}"
        )));
    }
    if container::list(root).iter().any(|c| c.name == new) {
        return Err(failed(format!(
            "Conflict. The container name \"/{new}\" is already in use. Remove it or pick another name."
        )));
    }
    dirs.update(|r| r.name = new.to_string()).map_err(failed)?;
    Ok(0)
}

/// `mvm container prune`: removes every container that is not running.
pub fn prune(root: &Path, force: bool) -> Result<i32, CliError> {
    if !crate::output::prompt::confirm(force, "This will remove all stopped containers.") {
        return Ok(0);
    }
    let mut removed = Vec::new();
    let mut bytes = 0u64;
    for rec in container::list(root) {
        if rec.is_running() {
            continue;
        }
        // Started meanwhile, or removed: not ours to prune.
        let Ok((dirs, rec, _lock)) = container::resolve_locked(root, &rec.id) else {
            continue;
        };
        if rec.is_running() {
            continue;
        }
        bytes += disk_usage(&dirs.dir);
        dirs.remove();
        removed.push(rec.id);
    }
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::output::units::human_size(bytes)
    );
    Ok(0)
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

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, msg.to_string())
}

//! Signals to a container: to its process through its owner (`kill`), or to its VM's
//! processes on the host (`pause`, `unpause`).

use std::path::Path;

use super::{ContainerDirs, ContainerError, ContainerRecord, Status, resolve, resolve_locked};
use crate::session::request_signal;

/// The container's hypervisor and helper PIDs, only those that are still children of its
/// monitor (a recorded PID the kernel has since reused is never signalled).
pub fn vm_pids(rec: &ContainerRecord) -> Vec<u32> {
    let Some(owner) = rec.state.pid else {
        return Vec::new();
    };
    rec.state
        .vm_pids
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

fn signal_vm(rec: &ContainerRecord, sig: i32) -> Result<(), ContainerError> {
    let pids = vm_pids(rec);
    if pids.is_empty() {
        return Err(ContainerError::Vm(format!(
            "cannot find the VM of container {}",
            rec.id
        )));
    }
    for pid in pids {
        // SAFETY: kill(2) on a PID checked above to be a live child of the container's monitor.
        if unsafe { libc::kill(pid as i32, sig) } != 0 {
            return Err(ContainerError::Vm(format!(
                "cannot signal the VM of container {}: {}",
                rec.id,
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Lets a paused container's VM run again (before it is stopped); no-op otherwise.
pub fn resume_vm(dirs: &ContainerDirs, rec: &ContainerRecord) {
    if rec.state.status == Status::Paused {
        let _ = signal_vm(rec, libc::SIGCONT);
        let _ = dirs.update(|r| {
            let _ = r.state.unpause();
        });
    }
}

/// Stops (`true`) or resumes the container's VM and records it.
pub fn set_paused(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    paused: bool,
) -> Result<(), ContainerError> {
    signal_vm(rec, if paused { libc::SIGSTOP } else { libc::SIGCONT })?;
    dirs.update(|r| {
        let _ = if paused {
            r.state.pause()
        } else {
            r.state.unpause()
        };
    })
    .map(|_| ())
    .map_err(ContainerError::Record)
}

/// `pause`: the VM's vCPUs (the whole hypervisor) stop until [`unpause`].
pub fn pause(root: &Path, key: &str) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    match rec.effective().0 {
        Status::Running => {}
        Status::Paused => return Err(ContainerError::AlreadyPaused(rec.id)),
        _ => return Err(ContainerError::NotRunning(rec.id)),
    }
    set_paused(&dirs, &rec, true)
}

/// `unpause`.
pub fn unpause(root: &Path, key: &str) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    if rec.effective().0 != Status::Paused {
        return Err(ContainerError::NotPaused(rec.id));
    }
    set_paused(&dirs, &rec, false)
}

/// `kill`: sends `signal` to the container's process (SIGKILL, SIGTERM and SIGINT also keep
/// its restart policy from bringing it back).
pub fn kill(root: &Path, key: &str, signal: i32) -> Result<(), ContainerError> {
    let (dirs, rec) = resolve(root, key)?;
    match rec.effective().0 {
        Status::Running | Status::Restarting => {}
        Status::Paused => return Err(ContainerError::PausedSignal(key.to_string())),
        _ => return Err(ContainerError::NotRunning(key.to_string())),
    }
    if matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) {
        let _ = dirs.update(|r| r.state.manual_stop = true);
    }
    if rec.effective().0 == Status::Restarting {
        // Between two runs there is no process to signal; the policy stops here.
        return Ok(());
    }
    crate::events::container(root, &rec, "kill", &[("signal", &signal.to_string())]);
    request_signal(&dirs.control_path(), signal).map_err(ContainerError::Owner)?;
    // As Docker's daemon: a SIGKILL returns once the container has exited, so a `ps` or
    // `inspect` right after sees it stopped.
    if signal == libc::SIGKILL {
        super::stop::wait_stopped(&dirs, std::time::Duration::from_secs(10));
    }
    Ok(())
}

/// Runs `f` with the container's agent able to answer: a paused VM is resumed for the
/// duration (`f` gets the record as running) and paused again after.
pub(crate) fn while_awake<R>(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    f: impl FnOnce(&ContainerRecord) -> Result<R, crate::changes::ChangesError>,
) -> Result<R, crate::changes::ChangesError> {
    use crate::changes::ChangesError;
    if rec.effective().0 != super::Status::Paused {
        return f(rec);
    }
    set_paused(dirs, rec, false).map_err(|e| ChangesError::Agent(e.to_string()))?;
    // Read again: it is running now, so its agent answers, not its disk.
    let result = dirs
        .load()
        .map_err(ChangesError::Agent)
        .and_then(|resumed| f(&resumed));
    if let Err(e) = set_paused(dirs, rec, true) {
        tracing::warn!("pausing the container again: {e}");
    }
    result
}

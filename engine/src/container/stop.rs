//! Ending containers: `stop` (the stop signal, then SIGKILL), `rm`, and `wait`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{ContainerDirs, ContainerError, ContainerRecord, pid_alive, resolve, resolve_locked};
use crate::session::request_signal;

/// Polls until the container has no live monitor, at most `timeout`; whether it stopped.
pub(crate) fn wait_stopped(dirs: &ContainerDirs, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match dirs.load() {
            Ok(r) if r.is_running() => std::thread::sleep(Duration::from_millis(20)),
            _ => return true,
        }
    }
    false
}

/// Ends the process owning the container's VM; its children (the hypervisor) die with it.
pub fn kill_owner(dirs: &ContainerDirs, rec: &ContainerRecord) {
    if let Some(pid) = rec.state.pid.filter(|p| pid_alive(*p)) {
        // SAFETY: signalling a PID recorded as this container's owner and checked alive.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = dirs.update(|r| r.state.killed(mvm_rootfs::time::now()));
    let _ = std::fs::remove_dir_all(&dirs.run);
}

/// `stop`: the stop signal, then SIGKILL after `timeout` (the container's `--stop-timeout`,
/// else 10 s, when `None`), then the VM goes.
pub fn stop(root: &Path, key: &str, timeout: Option<Duration>) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    stop_one(&dirs, &rec, timeout.unwrap_or_else(|| stop_timeout(&rec)));
    Ok(())
}

/// How long `stop` waits for a container when not told: its `--stop-timeout`, else 10 s.
pub fn stop_timeout(rec: &ContainerRecord) -> Duration {
    Duration::from_secs(rec.spec.stop_timeout.map_or(10, u64::from))
}

/// Stops one container if it runs: no restart by its policy, the stop signal, SIGKILL after
/// `timeout`, and its monitor killed if even that does not end it.
pub fn stop_one(dirs: &ContainerDirs, rec: &ContainerRecord, timeout: Duration) {
    if !rec.is_running() {
        return;
    }
    // The policy must not bring it back, and a paused VM must run to stop.
    let _ = dirs.update(|r| r.state.manual_stop = true);
    super::signal::resume_vm(dirs, rec);
    let sig = rec.process.stop_signal.unwrap_or(libc::SIGTERM);
    let root = &dirs.root;
    crate::events::container(root, rec, "kill", &[("signal", &sig.to_string())]);
    let _ = request_signal(&dirs.control_path(), sig);
    if !wait_stopped(dirs, timeout) {
        crate::events::container(root, rec, "kill", &[("signal", "9")]);
        let _ = request_signal(&dirs.control_path(), libc::SIGKILL);
        if !wait_stopped(dirs, Duration::from_secs(5)) {
            kill_owner(dirs, rec);
        }
    }
    crate::events::container(root, rec, "stop", &[]);
}

/// `rm` (`force`: a running one too, killed first; `volumes`: with its anonymous volumes).
pub fn remove(root: &Path, key: &str, force: bool, volumes: bool) -> Result<(), ContainerError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    if rec.is_running() {
        if !force {
            return Err(ContainerError::RemoveRunning(rec.id));
        }
        kill_owner(&dirs, &rec);
    }
    dirs.remove();
    crate::events::container(root, &rec, "destroy", &[]);
    if volumes {
        crate::volume::remove_anonymous(root, &rec.mounts);
    }
    Ok(())
}

/// `wait`: blocks until the container stops; its exit code.
pub fn wait(root: &Path, key: &str) -> Result<i32, ContainerError> {
    let (dirs, _) = resolve(root, key)?;
    while dirs.load().is_ok_and(|r| r.is_running()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(dirs.load().ok().and_then(|r| r.effective().1).unwrap_or(0))
}

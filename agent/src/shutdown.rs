//! Ending the VM cleanly: the VM stopping is how the host learns the container is gone.

use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, sync};

use crate::{log_debug, log_error};

/// Kills every process, flushes the disks and resets the VM (the kernel runs with `reboot=k`
/// or `reboot=t`, so a reboot ends the VM). Never returns: PID 1 must not exit.
pub fn power_off() -> ! {
    log_debug!("powering off");
    // kill(-1) reaches every process but PID 1 itself.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => {}
            // ECHILD: everything is reaped.
            Err(_) => break,
        }
    }
    sync();
    // The writable disk holds the overlay's upper layer: a read-only remount of the root
    // overlay makes sure nothing writes after the sync. It fails (EBUSY) if a killed process
    // still holds a file open for writing; the sync and ext4's journal suffice then.
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        log_debug!("remounting / read-only: {e}");
    }
    sync();
    crate::changes::freeze_upper_fs();
    let Err(e) = reboot(RebootMode::RB_AUTOBOOT);
    log_error!("reboot failed: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

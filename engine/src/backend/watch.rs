//! Notices at once when a process of a running VM dies (the hypervisor, the vsock helper, a
//! virtiofsd): one thread polls their pidfds and, on the first death, records which process
//! ended and how, and calls the owner's hook (which cuts the agent's session, so the
//! container is marked exited with that reason instead of staying "Up" with an agent nobody
//! can reach). Peeking with `WNOWAIT` leaves the reaping to the process's `Child`.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};

/// A process to watch: its PID (a child of ours, not yet reaped) and what to call it.
#[derive(Clone, Debug)]
pub struct Watched {
    /// Its PID.
    pub pid: u32,
    /// Its name in the reason (`qemu-system-x86_64`, `vhost-device-vsock`, ...).
    pub name: String,
}

/// The watching thread; stops when dropped.
pub struct Watch {
    wake: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    death: Arc<Mutex<Option<String>>>,
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How a process ended, in words.
fn describe(w: &Watched, status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => {
            format!("{} (pid {}) exited with code {code}", w.name, w.pid)
        }
        WaitStatus::Signaled(_, sig, _) => {
            format!("{} (pid {}) was killed by {sig}", w.name, w.pid)
        }
        _ => format!("{} (pid {}) ended", w.name, w.pid),
    }
}

/// Starts watching `procs`; `on_death` runs once, on the watching thread, when the first of
/// them ends (not when the watch is dropped first).
pub fn start(procs: Vec<Watched>, on_death: impl FnOnce() + Send + 'static) -> io::Result<Watch> {
    let fds = procs
        .iter()
        .map(|p| pidfd_open(p.pid))
        .collect::<io::Result<Vec<_>>>()?;
    let (wake_r, wake_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let death = Arc::new(Mutex::new(None));
    let seen = death.clone();
    let thread = std::thread::Builder::new()
        .name("vm-watch".into())
        .spawn(move || {
            loop {
                let mut polled: Vec<PollFd> = fds
                    .iter()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                    .collect();
                polled.push(PollFd::new(wake_r.as_fd(), PollFlags::POLLIN));
                match poll(&mut polled, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!("cannot watch the VM's processes: {e}");
                        return;
                    }
                }
                let fired = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
                if polled.last().is_some_and(fired) {
                    return; // The watch was dropped.
                }
                let Some(i) = polled[..fds.len()].iter().position(fired) else {
                    continue;
                };
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
                let reason = match waitid(Id::PIDFd(fds[i].as_fd()), flags) {
                    Ok(status) => describe(&procs[i], status),
                    Err(_) => format!("{} (pid {}) ended", procs[i].name, procs[i].pid),
                };
                tracing::warn!("{reason}");
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                on_death();
                return;
            }
        })?;
    Ok(Watch {
        wake: Some(wake_w),
        thread: Some(thread),
        death,
    })
}

impl Watch {
    /// Which process ended first and how, once one has.
    pub fn death(&self) -> Option<String> {
        self.death.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Like [`Watch::death`], waiting up to `timeout` for one: a session that broke because a
    /// process died may notice before this thread does.
    pub fn wait_death(&self, timeout: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.death() {
                return Some(d);
            }
            if std::time::Instant::now() >= deadline
                || self.thread.as_ref().is_none_or(|t| t.is_finished())
            {
                return self.death();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn the_first_death_is_seen_at_once_with_its_signal() {
        let mut a = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut b = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let w = start(
            vec![
                Watched {
                    pid: a.id(),
                    name: "hypervisor".into(),
                },
                Watched {
                    pid: b.id(),
                    name: "helper".into(),
                },
            ],
            move || f.store(true, Ordering::SeqCst),
        )
        .unwrap();
        let t0 = Instant::now();
        b.kill().unwrap();
        while !fired.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(fired.load(Ordering::SeqCst), "the death was not noticed");
        let why = w.death().unwrap();
        assert!(
            why.starts_with("helper (pid ") && why.contains("SIGKILL"),
            "{why}"
        );
        // Not reaped by the watch: the Child still gets its status.
        assert!(b.wait().unwrap().code().is_none());
        drop(w);
        a.kill().unwrap();
        a.wait().unwrap();
    }

    #[test]
    fn dropping_the_watch_stops_it_quietly() {
        let mut a = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let w = start(
            vec![Watched {
                pid: a.id(),
                name: "x".into(),
            }],
            move || f.store(true, Ordering::SeqCst),
        )
        .unwrap();
        drop(w);
        a.kill().unwrap();
        a.wait().unwrap();
        assert!(!fired.load(Ordering::SeqCst));
    }
}

//! Collecting exited children.
//!
//! As PID 1 the agent inherits every orphan in the guest and must reap them all, or they stay
//! zombies. In tests it runs inside a test harness whose other threads have children of their
//! own, so there it waits only for its own child.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Which children to reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// Every child (PID 1).
    All,
    /// Only the process the session started (tests, or any non-init use).
    Child,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code of a normal exit.
    pub code: Option<i32>,
    /// Number of the signal that killed it.
    pub signal: Option<i32>,
}

/// Reaps children and, in [`ReapMode::All`], provides a descriptor that becomes readable on
/// SIGCHLD.
#[derive(Debug)]
pub struct Reaper {
    mode: ReapMode,
    sigchld: Option<SignalFd>,
    /// Exit statuses of session processes reaped on behalf of another session: with `exec`
    /// several sessions run at once and any of them may reap any child. Only registered PIDs
    /// are kept, so orphans' statuses do not pile up.
    watched: std::sync::Mutex<std::collections::HashMap<i32, Option<ExitInfo>>>,
}

impl Reaper {
    /// Sets up reaping. In [`ReapMode::All`] this blocks SIGCHLD in the calling thread and
    /// reads it from a signalfd instead, so it must be called before any other thread exists
    /// (PID 1 has none). Children get an empty signal mask back before exec.
    pub fn new(mode: ReapMode) -> nix::Result<Reaper> {
        let sigchld = match mode {
            ReapMode::All => {
                let mut mask = SigSet::empty();
                mask.add(Signal::SIGCHLD);
                mask.thread_block()?;
                Some(SignalFd::with_flags(
                    &mask,
                    SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
                )?)
            }
            ReapMode::Child => None,
        };
        Ok(Reaper {
            mode,
            sigchld,
            watched: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Starts a session process under the reaper's lock and registers it, so that no other
    /// session can reap it (and lose its status) before it is registered.
    pub fn spawn_watched<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<T, E>,
        pid_of: impl Fn(&T) -> Pid,
    ) -> Result<T, E> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let spawned = spawn()?;
        watched.insert(pid_of(&spawned).as_raw(), None);
        Ok(spawned)
    }

    /// The mode.
    pub fn mode(&self) -> ReapMode {
        self.mode
    }

    /// A descriptor to poll for "some child changed state", if there is one.
    pub fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sigchld.as_ref().map(|s| s.as_fd())
    }

    /// Consumes pending SIGCHLD notifications so the wake descriptor stops being readable.
    pub fn drain_wake(&self) {
        if let Some(sfd) = &self.sigchld {
            while let Ok(Some(_)) = sfd.read_signal() {}
        }
    }

    /// Reaps whatever has exited without blocking; returns how `main` ended if it was among
    /// them.
    pub fn reap(&self, main: Pid) -> Option<ExitInfo> {
        let target = match self.mode {
            ReapMode::All => None,
            ReapMode::Child => Some(main),
        };
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        let mut record = |pid: Pid, info: ExitInfo, found: &mut Option<ExitInfo>| {
            if pid == main {
                *found = Some(info);
            } else if let Some(slot) = watched.get_mut(&pid.as_raw()) {
                *slot = Some(info);
            }
        };
        loop {
            match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => record(
                    pid,
                    ExitInfo {
                        code: Some(code),
                        signal: None,
                    },
                    &mut found,
                ),
                Ok(WaitStatus::Signaled(pid, signal, _)) => record(
                    pid,
                    ExitInfo {
                        code: None,
                        signal: Some(signal as i32),
                    },
                    &mut found,
                ),
                Ok(WaitStatus::StillAlive) => break,
                // Stops and continues are not reported without WUNTRACED/WCONTINUED.
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                // ECHILD: nothing left to wait for.
                Err(_) => break,
            }
            if self.mode == ReapMode::Child && found.is_some() {
                break;
            }
        }
        // Another session may have reaped ours first.
        if found.is_none()
            && let Some(Some(info)) = watched.get(&main.as_raw())
        {
            found = Some(*info);
        }
        if found.is_some() {
            watched.remove(&main.as_raw());
        }
        found
    }
}

/// A descriptor that becomes readable when `pid` exits (pidfd_open(2), Linux 5.3+). It wakes
/// the event loop for the main process without SIGCHLD, which a multi-threaded test process
/// cannot route to one thread.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor (close-on-exec by default) and nothing
    // else owns it. It fits an i32: descriptors are small non-negative ints.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

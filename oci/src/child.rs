//! Starting the runtime's own long-lived children (the container's relay, an exec's relay):
//! pipes moved out of the way, the container's terminal, the network namespace, and exactly
//! the descriptors the child is meant to have (the engine's own, such as the shim's socket at
//! fd 3 of ours, stay with the engine).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::console;
use crate::error::RuntimeError;

/// Where pipe ends wait before the child's `dup2`s: above any number those assign, so they
/// cannot clobber each other.
const HIGH_FD: RawFd = 100;

/// A close-on-exec pipe, both ends above [`HIGH_FD`].
pub fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::Other(format!("cannot make a pipe: {e}")))?;
    let up = |fd: OwnedFd| -> Result<OwnedFd, RuntimeError> {
        let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))
            .map_err(|e| RuntimeError::Other(format!("cannot move a pipe: {e}")))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    Ok((up(r)?, up(w)?))
}

/// The network namespace the child enters.
#[derive(Debug, Clone, Copy)]
pub enum Net {
    /// Ours.
    Same,
    /// A new one.
    New,
    /// The namespace of this descriptor (kept open by the caller until the spawn).
    Join(RawFd),
}

/// With `terminal`, a new pty of `size` whose master goes to `console_socket` and whose slave
/// becomes the child's stdio; whether it did.
pub fn terminal(
    cmd: &mut Command,
    terminal: bool,
    size: Option<(u16, u16)>,
    console_socket: Option<&Path>,
) -> Result<bool, RuntimeError> {
    let Some(socket) = console_socket.filter(|_| terminal) else {
        return Ok(false);
    };
    let (master, slave) = console::open(size)?;
    console::send_master(socket, &master)?;
    let err = |e: std::io::Error| RuntimeError::Other(format!("cannot use the pty: {e}"));
    cmd.stdin(Stdio::from(slave.try_clone().map_err(err)?))
        .stdout(Stdio::from(slave.try_clone().map_err(err)?))
        .stderr(Stdio::from(slave));
    Ok(true)
}

/// Sets up `cmd`'s child: `net`; with `tty`, a new session whose controlling terminal is its
/// stdin; `fds` at 3, 4, ...; nothing open above them; no signal blocked.
pub fn prepare(cmd: &mut Command, fds: [RawFd; 2], tty: bool, net: Net) {
    // SAFETY: the hook runs in the forked child before exec and makes only async-signal-safe
    // system calls on descriptors and values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            match net {
                Net::Same => {}
                Net::New => check(libc::unshare(libc::CLONE_NEWNET))?,
                Net::Join(fd) => check(libc::setns(fd, libc::CLONE_NEWNET))?,
            }
            if tty {
                check(libc::setsid())?;
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            for (i, fd) in fds.iter().enumerate() {
                check(libc::dup2(*fd, 3 + i as RawFd))?;
            }
            check(
                libc::syscall(libc::SYS_close_range, 3 + fds.len() as u32, u32::MAX, 0)
                    as libc::c_int,
            )?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Writes `pid` to `path` atomically (the engine reads it as soon as we exit).
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), RuntimeError> {
    let tmp = mvm_rootfs::fsutil::temp_sibling(path);
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| RuntimeError::io(path, e))
}

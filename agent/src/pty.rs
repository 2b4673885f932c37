//! Pseudo-terminals for processes run with a terminal.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

/// A terminal pair: the agent keeps the master, the process gets the slave.
#[derive(Debug)]
pub struct Pty {
    /// The side the agent reads output from and writes input to.
    pub master: OwnedFd,
    /// The process's terminal.
    pub slave: OwnedFd,
}

/// Opens a new PTY pair, both ends close-on-exec (the child gets the slave through dup2,
/// which clears the flag).
pub fn open_pty() -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Pty {
        master: master.into(),
        slave,
    })
}

/// Sets the terminal size (the kernel then sends SIGWINCH to the foreground process group).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

//! The user's terminal: raw mode for `-t`, its size, and silencing output for `build -q`.

use std::os::fd::BorrowedFd;

use nix::sys::termios::{self, SetArg, Termios};

/// Restores the terminal's mode when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode, when stdin is a terminal.
    pub fn enable() -> Option<Self> {
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: as above.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, &self.saved);
    }
}

/// Rows and columns of the terminal on stdout or stdin, if any.
pub fn size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        // SAFETY: winsize is plain old data; TIOCGWINSZ writes exactly one into it.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd number and a pointer to a local winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Whether fd is a terminal.
pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Sends stdout and stderr to /dev/null until dropped (`build -q` hides its RUN output).
pub struct SilenceStdout {
    saved: [i32; 2],
}

impl SilenceStdout {
    /// Starts silencing; if /dev/null cannot be opened, nothing changes.
    pub fn start() -> Option<Self> {
        use std::os::fd::IntoRawFd;
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .ok()?
            .into_raw_fd();
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // SAFETY: dup/dup2/close on the process's own standard descriptors and a descriptor
        // we just opened; the saved copies are restored and closed on drop.
        unsafe {
            let saved = [libc::dup(1), libc::dup(2)];
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
            Some(Self { saved })
        }
    }
}

impl Drop for SilenceStdout {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // SAFETY: restores the descriptors saved in start and closes the copies.
        unsafe {
            for (fd, saved) in [1, 2].into_iter().zip(self.saved) {
                if saved >= 0 {
                    libc::dup2(saved, fd);
                    libc::close(saved);
                }
            }
        }
    }
}

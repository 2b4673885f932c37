//! `run --init`: a minimal init as PID 1 of the container's PID namespace, as Docker's
//! `docker-init` (tini). It runs the command as its only child, in a process group of its
//! own (the terminal's foreground group, so a terminal's ^C reaches the command once),
//! forwards every signal it gets to it, reaps every orphan that lands on it, and exits with
//! the command's status (128 + the signal when a signal ended it).

use std::io;

/// A handler that does nothing: PID 1 of a PID namespace only receives the signals it
/// handles, and the init takes them with `sigwaitinfo`.
extern "C" fn take(_: libc::c_int) {}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Forks: the new child returns (and goes on to exec the command); this process becomes the
/// init and never returns.
///
/// # Safety
/// Only between fork and exec in a single-threaded child: it makes only async-signal-safe
/// system calls and allocates nothing.
pub unsafe fn become_init(terminal: bool) -> io::Result<()> {
    // SAFETY: every call below is a system call on local, initialised values, in a process
    // that is single-threaded (between fork and exec), as the caller guarantees.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        // Blocked before the fork: no signal is lost before the handlers are in place.
        check(libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old))?;
        let child = libc::fork();
        if child < 0 {
            let e = io::Error::last_os_error();
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Err(e);
        }
        if child == 0 {
            libc::setpgid(0, 0);
            if terminal {
                // SIGTTOU is still blocked, so a background group may take the terminal.
                libc::tcsetpgrp(0, libc::getpid());
            }
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &old,
                std::ptr::null_mut(),
            ))?;
            return Ok(());
        }
        // The init holds no descriptor but stdio: the spawner's exec-error pipe must close
        // when the command execs, and nothing else of the agent's may linger here.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_NAME, c"docker-init".as_ptr(), 0, 0, 0);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = take as extern "C" fn(libc::c_int) as usize;
        libc::sigfillset(&mut sa.sa_mask);
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    let code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        1
                    };
                    libc::_exit(code);
                }
            }
        }
    }
}

//! The VMM's seccomp filter. Once the VM is built (guest memory mapped, devices opened, vCPU
//! threads started), every thread of the process may make only the system calls that running
//! a guest needs: KVM_RUN and a few TAP ioctls, I/O on descriptors it already has, memory
//! management, futexes and epoll, and unix-domain sockets for vsock. Anything else (opening a
//! file, executing a program, another kind of socket, ptrace, mount, ...) kills the process, so
//! a device emulation bug that a guest turns into code execution still cannot reach the host
//! beyond what the VMM already holds.
//!
//! The list was taken from what the VMM does under strace in its tests (test guests, virtio
//! blk, vsock both ways, net, fs, and Linux guests in the KVM-in-TCG tier), plus what a thread
//! that is still starting when the filter is installed may call.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What the filter does with a system call that is not on the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Kill the process (SIGSYS). The default.
    #[default]
    Kill,
    /// Allow it, and log it to the kernel's audit log (to find what a new feature needs).
    Log,
    /// No filter (debugging only).
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Self::Kill),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid seccomp mode {s:?}: use kill, log or off")),
        }
    }
}

/// Why the filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules do not compile (a bug here).
    #[error("seccomp filter: {0}")]
    Build(String),
    /// The kernel refused it.
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
}

/// `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

/// System calls allowed whatever their arguments.
const ALLOWED: &[i64] = &[
    // I/O on descriptors the VMM holds: disks, TAPs, sockets, eventfds, the serial output.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_close,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // vsock's host side (unix sockets: see `socket` below) and vhost-user.
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    // The exit record: written to a file opened before the filter, then renamed.
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    // Memory and threads.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_restart_syscall,
    // Signals (the exit signals are read from a signalfd) and the end.
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|e| SeccompError::Build(e.to_string()))
}

/// The filter as a BPF program, with `mismatch` for anything not allowed.
fn program(mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    // ioctl: running a vCPU, the TAP offloads and header size (set when the guest's driver
    // starts the device), and non-blocking mode.
    rules.insert(
        libc::SYS_ioctl,
        [
            KVM_RUN,
            libc::TUNSETOFFLOAD,
            libc::TUNSETVNETHDRSZ,
            libc::FIONBIO,
            libc::FIOCLEX,
        ]
        .into_iter()
        .map(|request| rule(vec![eq(1, request)?]))
        .collect::<Result<_, _>>()?,
    );
    // Sockets: unix-domain only (vsock's connections to the host's `_PORT` sockets).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![eq(0, libc::AF_UNIX as u64)?])?],
    );
    // A thread starting while the filter goes in names itself.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![eq(0, libc::PR_SET_NAME as u64)?])?],
    );
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

/// Installs the filter on every thread of the process (TSYNC).
pub fn install(mode: SeccompMode) -> Result<(), SeccompError> {
    let mismatch = match mode {
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(()),
    };
    let prog = program(mismatch)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| SeccompError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("kill".parse::<SeccompMode>().unwrap(), SeccompMode::Kill);
        assert_eq!("off".parse::<SeccompMode>().unwrap(), SeccompMode::Off);
        assert!("sometimes".parse::<SeccompMode>().is_err());
    }

    /// In a child process: allowed calls work, a forbidden one kills it with SIGSYS.
    #[test]
    fn forbidden_calls_kill_the_process() {
        let prog = program(SeccompAction::KillProcess).unwrap();
        // SAFETY: fork in a test; the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if seccompiler::apply_filter_all_threads(&prog).is_err() {
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(3) };
            }
            // Allowed: a unix socket, a write.
            // SAFETY: plain system calls with valid arguments.
            unsafe {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    libc::_exit(4);
                }
                libc::close(fd);
                // Forbidden: an inet socket.
                libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
    }
}

//! The VMM's seccomp filters, one per kind of thread, as Firecracker does it: each thread
//! installs its own filter on itself (no TSYNC) before it touches anything a guest controls.
//!
//! - A vCPU thread installs the narrow [`ThreadKind::Vcpu`] filter before its first KVM_RUN.
//!   It runs the guest and handles its port-I/O and MMIO exits, which includes starting and
//!   resetting devices (TAP offloads, vhost-user messages, vsock's epoll and timer), writing
//!   the serial console and raising interrupts through eventfds. It opens nothing, makes no
//!   socket, reads no disk.
//! - The main thread installs the wider [`ThreadKind::Vmm`] filter once the vCPU threads are
//!   started and before its event loop serves the first device queue: disk I/O, TAP frames,
//!   vsock's unix sockets (the only sockets it may create), the signalfd, the exit record.
//!   Neither filter allows clone, so no thread can be started after it (there is none to
//!   start: a thread added later must install a filter of its own first thing).
//!
//! Both are allow-lists. Arguments are checked where the call is dangerous in general:
//! `ioctl` only with the request numbers that thread kind uses, `socket` only for AF_UNIX,
//! `mmap`/`mprotect` never with PROT_EXEC (no new code at run time), `kill`/`tgkill` only to
//! the VMM's own process (its pid taken when the filter is built; `tkill` is not allowed at
//! all). Anything else (open, execve, fork, ptrace, mount, another socket family, a signal to
//! another process) kills the process, or is only logged in [`SeccompMode::Log`].
//!
//! The lists were taken from what the VMM does under `strace -f` in its tests (test guests
//! with virtio-blk, vsock both ways, several vCPUs, resets, signals, triple faults) and from
//! the device code that runs on each thread.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

pub use mvm_vmm_config::SeccompMode;

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules do not compile (a bug here).
    #[error("seccomp filter: {0}")]
    Build(String),
    /// The kernel refused it.
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
}

/// The kinds of thread the VMM runs, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: building the VM, then the event loop that serves the devices.
    Vmm,
    /// A vCPU thread: KVM_RUN and the exits it handles.
    Vcpu,
}

/// `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;

/// The KVM ioctls that read state for a snapshot, numbered as `<linux/kvm.h>` numbers them.
mod kvm_ioctls {
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
        kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };

    const KVMIO: u64 = 0xae;

    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
    }
    const fn io(nr: u64) -> u64 {
        ioc(0, nr, 0)
    }
    const fn ior<T>(nr: u64) -> u64 {
        ioc(2, nr, std::mem::size_of::<T>())
    }
    const fn iowr<T>(nr: u64) -> u64 {
        ioc(3, nr, std::mem::size_of::<T>())
    }

    /// KVM_GET_REGS, _SREGS, _MSRS, _CPUID2, _LAPIC, _MP_STATE, _VCPU_EVENTS, _DEBUGREGS,
    /// _XSAVE, _XCRS and _TSC_KHZ.
    pub const VCPU_SNAPSHOT_READS: [u64; 11] = [
        ior::<kvm_regs>(0x81),
        ior::<kvm_sregs>(0x83),
        iowr::<kvm_msrs>(0x88),
        iowr::<kvm_cpuid2>(0x91),
        ior::<kvm_lapic_state>(0x8e),
        ior::<kvm_mp_state>(0x98),
        ior::<kvm_vcpu_events>(0x9f),
        ior::<kvm_debugregs>(0xa1),
        ior::<kvm_xsave>(0xa4),
        ior::<kvm_xcrs>(0xa6),
        io(0xa3),
    ];

    /// KVM_GET_IRQCHIP, KVM_GET_PIT2 and KVM_GET_CLOCK.
    pub const VM_SNAPSHOT_READS: [u64; 3] = [
        iowr::<kvm_irqchip>(0x62),
        ior::<kvm_pit_state2>(0x9f),
        ior::<kvm_clock_data>(0x7c),
    ];

    #[test]
    fn numbers_match_linux() {
        // From <linux/kvm.h> on x86_64.
        assert_eq!(ior::<kvm_regs>(0x81), 0x8090_ae81);
        assert_eq!(ior::<kvm_sregs>(0x83), 0x8138_ae83);
        assert_eq!(iowr::<kvm_msrs>(0x88), 0xc008_ae88);
        assert_eq!(ior::<kvm_xsave>(0xa4), 0x9000_aea4);
        assert_eq!(iowr::<kvm_irqchip>(0x62), 0xc208_ae62);
        assert_eq!(ior::<kvm_clock_data>(0x7c), 0x8030_ae7c);
        assert_eq!(io(0xa3), 0xaea3);
    }
}

/// What a thread kind may call: system calls allowed whatever their arguments, and those
/// whose arguments are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Allowed with any arguments.
    pub plain: BTreeSet<i64>,
    /// `ioctl` request numbers allowed (empty: no ioctl at all).
    pub ioctls: BTreeSet<u64>,
    /// Whether `socket(AF_UNIX, ...)` is allowed (no other family ever is).
    pub unix_sockets: bool,
}

impl Policy {
    /// Every system call number the policy allows in some form.
    pub fn syscalls(&self) -> BTreeSet<i64> {
        let mut all = self.plain.clone();
        all.extend(CHECKED);
        if !self.ioctls.is_empty() {
            all.insert(libc::SYS_ioctl);
        }
        if self.unix_sockets {
            all.insert(libc::SYS_socket);
        }
        all
    }
}

/// Allowed to both kinds only with checked arguments: the memory calls without PROT_EXEC,
/// the signals to our own process.
const CHECKED: [i64; 4] = [
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_kill,
    libc::SYS_tgkill,
];

/// What any thread needs to live and die: memory, locks, signal masks, time, the end. The
/// thread start-up calls (rseq, set_robust_list, naming) happen before a vCPU thread's
/// filter goes in, so they are not here.
const THREAD_BASICS: &[i64] = &[
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// A vCPU thread's exits: the serial console and logs (write), interrupts and device resets
/// through eventfds (read, write), closing what a reset drops, vsock's reset (its epoll set and
/// timer), and vhost-user's messages when a virtio-fs device starts or stops.
const VCPU_EXTRA: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_settime,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
];

/// The event loop's: I/O on the disks, TAPs, sockets and eventfds it holds, the epoll sets and
/// the vsock timer, unix sockets to the host's `_PORT` sockets and from its listener,
/// vhost-user, the exit signals' signalfd, and the exit record (written to a file opened
/// before, synced, then renamed through a descriptor of its directory).
const VMM_EXTRA: &[i64] = &[
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
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_renameat,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // Snapshot files (descriptors the control socket's client sends) are cut and sized
    // before they are written.
    libc::SYS_ftruncate,
];

/// The allow-list of `kind`.
pub fn policy(kind: ThreadKind) -> Policy {
    let extra = match kind {
        ThreadKind::Vmm => VMM_EXTRA,
        ThreadKind::Vcpu => VCPU_EXTRA,
    };
    let ioctls = match kind {
        // Non-blocking mode and close-on-exec on accepted vsock streams; reading the
        // interrupt controllers, PIT and clock for a snapshot.
        ThreadKind::Vmm => [libc::FIONBIO, libc::FIOCLEX]
            .into_iter()
            .chain(kvm_ioctls::VM_SNAPSHOT_READS)
            .collect(),
        // Running the vCPU; the TAP offloads the guest's driver agrees to (or clears) when it
        // starts (or resets) a virtio-net device; reading its state for a snapshot.
        ThreadKind::Vcpu => [KVM_RUN, libc::TUNSETOFFLOAD]
            .into_iter()
            .chain(kvm_ioctls::VCPU_SNAPSHOT_READS)
            .collect::<Vec<_>>(),
    };
    Policy {
        plain: THREAD_BASICS.iter().chain(extra).copied().collect(),
        ioctls: ioctls.into_iter().collect(),
        unix_sockets: kind == ThreadKind::Vmm,
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|e| SeccompError::Build(e.to_string()))
}

/// `kind`'s filter as a BPF program, with `mismatch` for anything not allowed and `pid` as
/// the only process `kill` and `tgkill` may signal.
pub fn program(
    kind: ThreadKind,
    mismatch: SeccompAction,
    pid: libc::pid_t,
) -> Result<BpfProgram, SeccompError> {
    let policy = policy(kind);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        policy.plain.iter().map(|&nr| (nr, Vec::new())).collect();
    if !policy.ioctls.is_empty() {
        rules.insert(
            libc::SYS_ioctl,
            policy
                .ioctls
                .iter()
                .map(|&request| rule(vec![cond(1, SeccompCmpOp::Eq, request)?]))
                .collect::<Result<_, _>>()?,
        );
    }
    if policy.unix_sockets {
        rules.insert(
            libc::SYS_socket,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::Eq,
                libc::AF_UNIX as u64,
            )?])?],
        );
    }
    // No executable mapping: whatever a guest gets to run in the VMM cannot load code.
    let no_exec = || {
        rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])
    };
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    // Signals only to ourselves (abort, a thread's wakeup): never to another process. A pid
    // compared as 32 bits also refuses negative (process group) and 0 (our group) targets.
    let own = || rule(vec![cond(0, SeccompCmpOp::Eq, pid as u32 as u64)?]);
    rules.insert(libc::SYS_kill, vec![own()?]);
    rules.insert(libc::SYS_tgkill, vec![own()?]);
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

/// The filters of one VMM process, built once (with its pid) and installed by each thread on
/// itself.
#[derive(Clone, Debug)]
pub struct Filters {
    vmm: Option<BpfProgram>,
    vcpu: Option<BpfProgram>,
}

impl Filters {
    /// Builds both filters for this process; with [`SeccompMode::Off`], none.
    pub fn new(mode: SeccompMode) -> Result<Self, SeccompError> {
        let mismatch = match mode {
            SeccompMode::Kill => SeccompAction::KillProcess,
            SeccompMode::Log => SeccompAction::Log,
            SeccompMode::Off => {
                return Ok(Self {
                    vmm: None,
                    vcpu: None,
                });
            }
        };
        // SAFETY: getpid has no failure modes and touches no memory.
        let pid = unsafe { libc::getpid() };
        Ok(Self {
            vmm: Some(program(ThreadKind::Vmm, mismatch.clone(), pid)?),
            vcpu: Some(program(ThreadKind::Vcpu, mismatch, pid)?),
        })
    }

    /// Installs `kind`'s filter on the calling thread only (and the threads it starts after).
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let prog = match kind {
            ThreadKind::Vmm => &self.vmm,
            ThreadKind::Vcpu => &self.vcpu,
        };
        match prog {
            Some(prog) => {
                seccompiler::apply_filter(prog).map_err(|e| SeccompError::Install(e.to_string()))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("kill".parse::<SeccompMode>().unwrap(), SeccompMode::Kill);
        assert_eq!("log".parse::<SeccompMode>().unwrap(), SeccompMode::Log);
        assert_eq!("off".parse::<SeccompMode>().unwrap(), SeccompMode::Off);
        assert!("sometimes".parse::<SeccompMode>().is_err());
    }

    #[test]
    fn the_vcpu_filter_is_narrower_than_the_main_threads() {
        let vmm = policy(ThreadKind::Vmm);
        let vcpu = policy(ThreadKind::Vcpu);
        let (vmm_calls, vcpu_calls) = (vmm.syscalls(), vcpu.syscalls());
        assert!(vcpu_calls.is_subset(&vmm_calls), "{vcpu_calls:?}");
        assert!(vcpu_calls.len() < vmm_calls.len());
        // Only the event loop makes sockets, reads disks, renames the exit record.
        for nr in [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_renameat,
            libc::SYS_epoll_wait,
        ] {
            assert!(vmm_calls.contains(&nr) && !vcpu_calls.contains(&nr), "{nr}");
        }
        // Each kind has only its own ioctls: KVM_RUN is the vCPUs' alone.
        assert!(vcpu.ioctls.contains(&KVM_RUN) && !vmm.ioctls.contains(&KVM_RUN));
        assert!(vmm.ioctls.is_disjoint(&vcpu.ioctls));
        assert!(!vcpu.unix_sockets && vmm.unix_sockets);
        // Neither may start a process or a thread, open a file, or trace.
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ptrace,
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_tkill,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_prctl,
            libc::SYS_process_vm_writev,
        ] {
            assert!(
                !vmm_calls.contains(&nr) && !vcpu_calls.contains(&nr),
                "{nr}"
            );
        }
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
            program(kind, SeccompAction::KillProcess, 1).unwrap();
        }
    }

    /// Runs `body` in a forked child behind `kind`'s filter (built in the child, for its own
    /// pid); returns the child's wait status.
    fn in_filtered_child(kind: ThreadKind, body: impl FnOnce() -> i32) -> i32 {
        // SAFETY: fork in a test; the child makes system calls and exits without returning.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = match Filters::new(SeccompMode::Kill).and_then(|f| f.apply(kind)) {
                Ok(()) => body(),
                Err(_) => 100,
            };
            // SAFETY: ending the forked child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    fn killed_by_sigsys(status: i32) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    fn exited_ok(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn the_main_thread_makes_unix_sockets_only() {
        // SAFETY: (both closures): plain system calls with valid arguments.
        let ok = in_filtered_child(ThreadKind::Vmm, || unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 4;
            }
            libc::close(fd);
            0
        });
        assert!(exited_ok(ok), "status {ok:#x}");
        // SAFETY: as above.
        let inet = in_filtered_child(ThreadKind::Vmm, || unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            0
        });
        assert!(killed_by_sigsys(inet), "status {inet:#x}");
    }

    #[test]
    fn a_vcpu_thread_makes_no_socket_at_all() {
        // SAFETY: a plain system call with valid arguments.
        let status = in_filtered_child(ThreadKind::Vcpu, || unsafe {
            libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            0
        });
        assert!(killed_by_sigsys(status), "status {status:#x}");
    }

    #[test]
    fn no_executable_memory() {
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
            // SAFETY: an anonymous mapping that is unmapped again; no memory of ours touched.
            let rw = in_filtered_child(kind, || unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    return 4;
                }
                libc::munmap(p, 4096);
                0
            });
            assert!(exited_ok(rw), "{kind:?}: status {rw:#x}");
            // SAFETY: as above; the call must not complete.
            let exec = in_filtered_child(kind, || unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                0
            });
            assert!(killed_by_sigsys(exec), "{kind:?}: status {exec:#x}");
        }
    }

    /// A process standing for "another process on the host": it waits until killed.
    struct Victim(libc::pid_t);
    impl Victim {
        fn start() -> Self {
            // SAFETY: fork in a test; the child only pauses until it is killed.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                loop {
                    // SAFETY: pause has no arguments.
                    unsafe { libc::pause() };
                }
            }
            Self(pid)
        }
        fn alive(&self) -> bool {
            let mut status = 0;
            // SAFETY: polling our own child.
            unsafe { libc::waitpid(self.0, &mut status, libc::WNOHANG) == 0 }
        }
    }
    impl Drop for Victim {
        fn drop(&mut self) {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Behind either filter, a process may signal itself (abort, waking its own threads) but
    /// not another process: `kill` and `tgkill` to another pid end it, `tkill` too.
    #[test]
    fn signals_reach_only_the_vmm_itself() {
        let victim = Victim::start();
        let other = victim.0;
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
            // SAFETY: (all closures): signal 0 only checks that the target exists.
            let own = in_filtered_child(kind, || unsafe {
                let pid = libc::getpid();
                let tid = libc::gettid();
                if libc::kill(pid, 0) != 0 {
                    return 4;
                }
                if libc::syscall(libc::SYS_tgkill, pid, tid, 0) != 0 {
                    return 5;
                }
                0
            });
            assert!(exited_ok(own), "{kind:?}: status {own:#x}");
            let calls: [fn(libc::pid_t) -> i64; 6] = [
                // SAFETY: (all): signals to a child of the test at worst; signal 0 only checks
                // that the target exists.
                |other| unsafe { libc::kill(other, 0).into() },
                // SAFETY: as above.
                |other| unsafe { libc::kill(other, libc::SIGKILL).into() },
                // SAFETY: as above.
                |_| unsafe { libc::kill(-1, 0).into() },
                // SAFETY: as above.
                |_| unsafe { libc::kill(0, 0).into() },
                // SAFETY: as above.
                |other| unsafe { libc::syscall(libc::SYS_tgkill, other, other, libc::SIGKILL) },
                // SAFETY: as above.
                |other| unsafe { libc::syscall(libc::SYS_tkill, other, libc::SIGKILL) },
            ];
            for call in calls {
                let status = in_filtered_child(kind, || {
                    call(other);
                    0
                });
                assert!(killed_by_sigsys(status), "{kind:?}: status {status:#x}");
                assert!(victim.alive(), "{kind:?}: the other process was killed");
            }
        }
    }
}

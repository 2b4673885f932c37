//! The VMM's jail, entered once everything the VM needs is open and before any vCPU runs:
//! new mount, network, IPC and UTS namespaces (the TAPs, disks and sockets already open keep
//! working), a chroot into the directory of the vsock socket (where the host's `_PORT` sockets
//! and the exit record are; nothing else of the host's filesystem is visible), an unprivileged
//! uid and gid when given (no supplementary groups), no capabilities left, no way to gain any
//! (`PR_SET_NO_NEW_PRIVS`), not dumpable or traceable by its own uid, and resource limits
//! sized for this VM: descriptors, threads, file size, no core dumps, no locked memory. The
//! seccomp filters (seccomp.rs) then narrow the system calls of each thread.
//!
//! The order matters: the chroot and the bounding set need the capabilities the uid change
//! then takes away; the uid change goes groups, gid, uid (a gid cannot be changed once the uid
//! is unprivileged).
//!
//! A VMM started without privileges has none to give up and may not create namespaces: the
//! default mode (`auto`) jails it only when it runs as root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use mvm_vmm_config::{Identity, JailMode};

/// Resource limits of the jailed VMM (soft and hard, so they cannot be raised again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Descriptors it may open beyond the highest one it holds when jailed (RLIMIT_NOFILE is
    /// that number plus one plus this): vsock connections and what the event loop needs.
    pub extra_files: u64,
    /// RLIMIT_NPROC: tasks of its uid, i.e. its own threads when the uid is its alone, and
    /// the one KVM starts for the VM on the first KVM_RUN (x86's NX huge page recovery
    /// worker, a vhost task of the VMM's process counted against its uid: without room for
    /// it, KVM_RUN fails with EAGAIN forever).
    pub threads: u64,
    /// RLIMIT_FSIZE in bytes: the largest file it may write, which bounds the serial log.
    /// Must be at least the largest disk. SIGXFSZ is ignored: a write past it fails (EFBIG).
    pub file_size: u64,
}

/// The smallest file-size limit: the serial log may grow to this.
pub const MIN_FILE_SIZE: u64 = 64 << 20;
/// Tasks KVM starts in the VMM's name (see [`Limits::threads`]).
const KVM_TASKS: u64 = 1;
/// Descriptors beyond vsock's connections (eventfds, timers, a connection being refused).
const SPARE_FILES: u64 = 64;

impl Limits {
    /// The limits of a VM with `vcpus` vCPUs, a vsock device or not, and disks of at most
    /// `largest_disk` bytes.
    pub fn for_vm(vcpus: u8, vsock: bool, largest_disk: u64) -> Self {
        let connections = if vsock {
            crate::devices::virtio::vsock::MAX_CONNECTIONS as u64
        } else {
            0
        };
        Self {
            extra_files: connections + SPARE_FILES,
            threads: u64::from(vcpus) + 1 + KVM_TASKS,
            file_size: largest_disk.max(MIN_FILE_SIZE),
        }
    }
}

/// A step of the jail that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot jail the VMM: {step}: {source}")]
pub struct JailError {
    /// What was being done.
    pub step: String,
    /// The errno.
    #[source]
    pub source: io::Error,
}

fn check(rc: libc::c_int, step: impl Into<String>) -> Result<(), JailError> {
    if rc < 0 {
        return Err(JailError {
            step: step.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether `mode` jails this process.
pub fn wanted(mode: JailMode) -> bool {
    match mode {
        JailMode::On => true,
        JailMode::Off => false,
        // SAFETY: geteuid has no failure modes and touches no memory.
        JailMode::Auto => (unsafe { libc::geteuid() }) == 0,
    }
}

/// `path` as seen from inside a chroot into `root`: `/` and its name when it is directly in
/// `root`; `None` otherwise (it cannot be reached from inside).
pub fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    if path.parent()? != root {
        return None;
    }
    Some(Path::new("/").join(path.file_name()?))
}

/// Enters the jail, with `root` as the filesystem's root when given, as `identity` when given
/// (otherwise uid 0 without capabilities), within `limits`. Must be called while the process
/// has one thread: the threads created after share its namespaces, root, credentials and
/// limits.
pub fn enter(
    root: Option<&Path>,
    identity: Option<Identity>,
    limits: &Limits,
) -> Result<(), JailError> {
    // Counted while /proc is still in reach.
    let highest_fd = highest_open_fd()?;
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) }, "unshare namespaces")?;
    // Nothing mounted in our namespace may propagate back to the host's.
    check(
        // SAFETY: null source/type/data are allowed for a propagation change; "/" is a C string.
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        "make / private",
    )?;
    if let Some(root) = root {
        let dir = CString::new(root.as_os_str().as_bytes()).map_err(|_| JailError {
            step: format!("chroot to {}", root.display()),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        check(
            // SAFETY: both take a valid C string.
            unsafe { libc::chroot(dir.as_ptr()) },
            format!("chroot to {}", root.display()),
        )?;
        // SAFETY: as above.
        check(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir /")?;
    }
    drop_bounding_set()?;
    if let Some(id) = identity {
        become_user(id)?;
    }
    drop_capabilities()?;
    set_limits(highest_fd, limits)?;
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "set no_new_privs",
    )?;
    // Not dumpable: no core, no ptrace or /proc/PID/mem from its uid, /proc files root's.
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "clear dumpable",
    )?;
    Ok(())
}

/// The highest descriptor number open now.
fn highest_open_fd() -> Result<u64, JailError> {
    let err = |source| JailError {
        step: "list open descriptors in /proc/self/fd".into(),
        source,
    };
    let mut highest = 0;
    for entry in std::fs::read_dir("/proc/self/fd").map_err(err)? {
        let entry = entry.map_err(err)?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        {
            highest = highest.max(fd);
        }
    }
    Ok(highest)
}

/// Drops every supplementary group, then the gid, then the uid (real, effective, saved).
fn become_user(id: Identity) -> Result<(), JailError> {
    check(
        // SAFETY: setgroups with a count of 0 reads no memory.
        unsafe { libc::setgroups(0, std::ptr::null()) },
        "setgroups []",
    )?;
    check(
        // SAFETY: integer arguments only.
        unsafe { libc::setresgid(id.gid, id.gid, id.gid) },
        format!("setresgid {}", id.gid),
    )?;
    check(
        // SAFETY: integer arguments only.
        unsafe { libc::setresuid(id.uid, id.uid, id.uid) },
        format!("setresuid {}", id.uid),
    )
}

/// Sets `resource` to `value` (soft and hard), or to the current hard limit when that is
/// lower (a limit can be lowered, never raised, without privileges).
fn limit(resource: libc::__rlimit_resource_t, value: u64, name: &str) -> Result<(), JailError> {
    // SAFETY: rlimit is plain old data; getrlimit fills it.
    let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
    check(
        // SAFETY: `current` is a valid, writable rlimit.
        unsafe { libc::getrlimit(resource, &mut current) },
        format!("get {name}"),
    )?;
    let value = value.min(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    check(
        // SAFETY: `new` is a valid rlimit, read only.
        unsafe { libc::setrlimit(resource, &new) },
        format!("set {name} to {value}"),
    )
}

fn set_limits(highest_fd: u64, limits: &Limits) -> Result<(), JailError> {
    limit(
        libc::RLIMIT_NOFILE,
        highest_fd + 1 + limits.extra_files,
        "RLIMIT_NOFILE",
    )?;
    limit(libc::RLIMIT_NPROC, limits.threads, "RLIMIT_NPROC")?;
    limit(libc::RLIMIT_FSIZE, limits.file_size, "RLIMIT_FSIZE")?;
    limit(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    limit(libc::RLIMIT_MEMLOCK, 0, "RLIMIT_MEMLOCK")?;
    // A guest filling its serial log up to the limit gets its writes refused, and the VM
    // goes on: the default action of SIGXFSZ would end it.
    // SAFETY: SIG_IGN for a signal that has no handler of ours.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(JailError {
            step: "ignore SIGXFSZ".into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Empties the bounding and ambient sets; needs CAP_SETPCAP, so before the uid changes.
fn drop_bounding_set() -> Result<(), JailError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments; EINVAL past the kernel's last capability.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(JailError {
                step: format!("drop capability {cap} from the bounding set"),
                source: io::Error::last_os_error(),
            });
        }
    }
    check(
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        },
        "clear ambient capabilities",
    )
}

/// Empties the effective, permitted and inheritable capability sets, and checks that they
/// are empty (a uid change alone leaves them so; uid 0 must give them up).
fn drop_capabilities() -> Result<(), JailError> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    check(
        // SAFETY: capset reads one header and two data structs (version 3), both valid for the
        // call and laid out as the kernel's.
        unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
                as libc::c_int
        },
        "drop capabilities",
    )?;
    let mut header = header;
    let mut now = [CapData {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    }; 2];
    check(
        // SAFETY: capget writes two data structs (version 3) into `now`, which has room for
        // them, and may write the header's version; both are ours and valid.
        unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                now.as_mut_ptr(),
            ) as libc::c_int
        },
        "read capabilities",
    )?;
    if now
        .iter()
        .any(|d| d.effective != 0 || d.permitted != 0 || d.inheritable != 0)
    {
        return Err(JailError {
            step: "drop capabilities".into(),
            source: io::Error::other("capabilities are left after dropping them"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_jail() {
        let root = Path::new("/run/mvm/abc");
        assert_eq!(
            inside(root, Path::new("/run/mvm/abc/vsock.sock")),
            Some(PathBuf::from("/vsock.sock"))
        );
        assert_eq!(inside(root, Path::new("/run/mvm/abc/sub/x")), None);
        assert_eq!(inside(root, Path::new("/elsewhere/x")), None);
        assert!("sometimes".parse::<JailMode>().is_err());
    }

    /// In a child process (it changes the whole process): after `enter`, the host's files are
    /// out of reach, the directory's are in reach, and no capability is left.
    #[test]
    fn a_jailed_process_sees_only_its_directory_and_has_no_capabilities() {
        if !wanted(JailMode::Auto) {
            panic!("this test must run as root (the runtime's VMM does)");
        }
        let dir = std::env::temp_dir().join(format!("mvm-jail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("inside"), "x").unwrap();
        // SAFETY: fork in a test; the child makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match enter(Some(&dir), None, &Limits::for_vm(1, false, 0)) {
                Err(_) => 2,
                Ok(()) if !Path::new("/inside").exists() => 3,
                Ok(()) if Path::new("/etc/passwd").exists() || Path::new("/proc/1").exists() => 4,
                Ok(()) => {
                    // Without CAP_SYS_ADMIN, mounting fails.
                    // SAFETY: a mount that must be refused; C strings are valid.
                    let rc = unsafe {
                        libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            c"tmpfs".as_ptr(),
                            0,
                            std::ptr::null(),
                        )
                    };
                    if rc == 0 { 5 } else { 0 }
                }
            };
            // SAFETY: ending the forked child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }

    /// In a child process: with an identity, the jailed process runs as that uid and gid with
    /// no groups, no capabilities, no new privileges, not dumpable, within its limits; and it
    /// cannot get root back.
    #[test]
    fn a_jailed_process_takes_the_given_uid_and_limits() {
        if !wanted(JailMode::Auto) {
            panic!("this test must run as root (the runtime's VMM does)");
        }
        let dir = std::env::temp_dir().join(format!("mvm-jail-uid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = Identity {
            uid: 100_077,
            gid: 100_078,
        };
        // Opened before the jail, as the serial log is.
        let log = std::fs::File::create(dir.join("serial.log")).unwrap();
        let limits = Limits::for_vm(3, true, 1 << 30);
        assert_eq!(limits.threads, 5);
        assert_eq!(limits.file_size, 1 << 30);
        assert_eq!(Limits::for_vm(1, false, 0).file_size, MIN_FILE_SIZE);
        // SAFETY: fork in a test; the child makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if enter(Some(&dir), Some(id), &limits).is_err() {
                2
            } else {
                match check_identity_and_limits(id, &limits) {
                    0 => check_file_size_limit(&log, limits.file_size),
                    n => n,
                }
            };
            // SAFETY: ending the forked child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }

    /// 0 when a write up to `limit` lands and one past it fails with EFBIG, without the
    /// SIGXFSZ that would end the process.
    fn check_file_size_limit(file: &std::fs::File, limit: u64) -> i32 {
        use std::os::unix::fs::FileExt;
        if file.write_at(b"x", limit - 1).is_err() {
            return 20;
        }
        match file.write_at(b"y", limit) {
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => 0,
            _ => 21,
        }
    }

    /// 0 when the calling process is jailed as `id` within `limits`; the failed check's number
    /// otherwise.
    fn check_identity_and_limits(id: Identity, limits: &Limits) -> i32 {
        // SAFETY: plain system calls with valid arguments and buffers of ours.
        unsafe {
            let (mut r, mut e, mut s) = (0, 0, 0);
            libc::getresuid(&mut r, &mut e, &mut s);
            if [r, e, s] != [id.uid; 3] {
                return 3;
            }
            libc::getresgid(&mut r, &mut e, &mut s);
            if [r, e, s] != [id.gid; 3] {
                return 4;
            }
            if libc::getgroups(0, std::ptr::null_mut()) != 0 {
                return 5;
            }
            if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                return 6;
            }
            if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 {
                return 7;
            }
            if libc::setuid(0) == 0 || libc::setgid(0) == 0 {
                return 8;
            }
            let mut lim: libc::rlimit = std::mem::zeroed();
            for (res, want) in [
                (libc::RLIMIT_NPROC, limits.threads),
                (libc::RLIMIT_FSIZE, limits.file_size),
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_MEMLOCK, 0),
            ] {
                libc::getrlimit(res, &mut lim);
                if lim.rlim_cur != want || lim.rlim_max != want {
                    return 9;
                }
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            if lim.rlim_max <= limits.extra_files || lim.rlim_max > limits.extra_files + 4096 {
                return 10;
            }
            // The limit cannot be raised again.
            lim.rlim_max += 1;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                return 11;
            }
        }
        0
    }
}

//! The VMM's jail, entered once everything the VM needs is open and before any vCPU runs:
//! new mount, network, IPC and UTS namespaces (the TAPs, disks and sockets already open keep
//! working), a chroot into the directory of the vsock socket (where the host's `_PORT` sockets
//! and the exit record are; nothing else of the host's filesystem is visible), and no
//! capabilities left. The seccomp filter (seccomp.rs) then narrows the system calls.
//!
//! A VMM started without privileges has none to give up and may not create namespaces: the
//! default mode (`auto`) jails it only when it runs as root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether to jail the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JailMode {
    /// When running as root (the runtime's case). The default.
    #[default]
    Auto,
    /// Always; fails if it cannot.
    On,
    /// Never (debugging only).
    Off,
}

impl std::str::FromStr for JailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid jail mode {s:?}: use auto, on or off")),
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

/// Enters the jail, with `root` as the filesystem's root when given. Must be called while the
/// process has one thread: the threads created after share its namespaces and root.
pub fn enter(root: Option<&Path>) -> Result<(), JailError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) }, "unshare namespaces")?;
    // Nothing mounted in our namespace may propagate back to the host's.
    // SAFETY: null source/type/data are allowed for a propagation change; "/" is a C string.
    check(
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
        // SAFETY: both take a valid C string.
        check(
            unsafe { libc::chroot(dir.as_ptr()) },
            format!("chroot to {}", root.display()),
        )?;
        // SAFETY: as above.
        check(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir /")?;
    }
    drop_capabilities()
}

/// Empties the bounding, ambient, effective, permitted and inheritable capability sets.
fn drop_capabilities() -> Result<(), JailError> {
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
    // SAFETY: prctl with integer arguments.
    check(
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
    )?;
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
    // SAFETY: capset reads one header and two data structs (version 3), both valid for the
    // call and laid out as the kernel's.
    check(
        unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
                as libc::c_int
        },
        "drop capabilities",
    )
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
            let code = match enter(Some(&dir)) {
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
}

//! The container's PID namespace, as under runc: the container's process is PID 1 of a
//! namespace of its own (with its own /proc), so a process without a SIGTERM handler ignores
//! `stop`'s SIGTERM until the timeout's SIGKILL, its orphans are its to reap, and when it ends
//! the kernel ends everything else in the namespace. The agent stays outside; `exec`
//! processes join the namespace (and the mount namespace that holds its /proc).
//!
//! A PID namespace is entered by a process's *children*: the spawning thread sets the
//! namespace its next child gets ([`ForChildren`]) and puts its own back once the child
//! exists. The child itself, between fork and exec, gets the mount namespace ([`ChildSetup`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Where the next child's PID namespace is set for the calling thread, until dropped.
pub struct ForChildren {
    /// The thread's own namespace, restored on drop.
    saved: File,
}

impl Drop for ForChildren {
    fn drop(&mut self) {
        // SAFETY: setns on a descriptor we own. Going back to the thread's active namespace
        // (an ancestor of the one set) is always allowed.
        let rc = unsafe { libc::setns(self.saved.as_raw_fd(), libc::CLONE_NEWPID) };
        if rc < 0 {
            crate::log_error!(
                "cannot restore the agent's PID namespace for its children: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// What the child does about namespaces between fork and exec. The descriptors and strings
/// are made before the fork: the child may not allocate.
pub enum ChildSetup {
    /// Nothing: the agent's namespaces.
    None,
    /// A new mount namespace with its own /proc (the child is PID 1 of a new PID namespace).
    New,
    /// Join this mount namespace and go back to `cwd` (setns resets it).
    Join {
        /// The container's mount namespace.
        mnt: File,
        /// The working directory.
        cwd: CString,
    },
}

/// The namespaces of a process about to be spawned: a new PID namespace (`new`), the
/// container's when its PID 1 (`init`, the agent-side PID, 0 if none yet) exists, or the
/// agent's. The returned guard must live until the child has been forked.
pub fn prepare(
    new: bool,
    init: i32,
    cwd: &std::path::Path,
) -> io::Result<(Option<ForChildren>, ChildSetup)> {
    use std::os::unix::ffi::OsStrExt;
    if !new && init <= 0 {
        return Ok((None, ChildSetup::None));
    }
    let saved = File::open("/proc/thread-self/ns/pid")?;
    if new {
        // SAFETY: unshare with a flag; it changes only the calling thread's namespace for
        // children, which ForChildren restores.
        check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
        return Ok((Some(ForChildren { saved }), ChildSetup::New));
    }
    let pid_ns = match File::open(format!("/proc/{init}/ns/pid")) {
        Ok(f) => f,
        // PID 1 has ended (the VM is going down): the agent's namespaces.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, ChildSetup::None)),
        Err(e) => return Err(e),
    };
    let mnt = File::open(format!("/proc/{init}/ns/mnt"))?;
    let cwd = CString::new(cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: setns on a descriptor we own; restored by ForChildren.
    check(unsafe { libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) })?;
    Ok((Some(ForChildren { saved }), ChildSetup::Join { mnt, cwd }))
}

impl ChildSetup {
    /// The raw values the child uses (no allocation after the fork).
    pub fn raw(&self) -> RawChild {
        match self {
            ChildSetup::None => RawChild::None,
            ChildSetup::New => RawChild::New,
            ChildSetup::Join { mnt, cwd } => RawChild::Join {
                mnt: mnt.as_raw_fd(),
                cwd: cwd.as_ptr(),
            },
        }
    }
}

/// [`ChildSetup`] as plain values for the child.
#[derive(Clone, Copy)]
pub enum RawChild {
    /// Nothing.
    None,
    /// New mount namespace and /proc.
    New,
    /// setns to `mnt`, chdir to `cwd`.
    Join {
        /// The mount namespace's descriptor.
        mnt: RawFd,
        /// The working directory, NUL-terminated, owned by the ChildSetup.
        cwd: *const libc::c_char,
    },
}

// SAFETY: the pointer refers to a CString owned by the ChildSetup, which outlives the spawn
// the value is moved into; it is only read, in the child.
unsafe impl Send for RawChild {}
// SAFETY: as above.
unsafe impl Sync for RawChild {}

impl RawChild {
    /// Runs in the child between fork and exec: only async-signal-safe system calls.
    pub fn apply(self) -> io::Result<()> {
        match self {
            RawChild::None => Ok(()),
            RawChild::New => {
                // SAFETY: system calls on literals; the child is single-threaded.
                unsafe {
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                    check(libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ))?;
                    // Its own /proc: it shows this namespace's processes.
                    check(libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ))
                }
            }
            RawChild::Join { mnt, cwd } => {
                // SAFETY: setns on a descriptor the parent keeps open across the fork, chdir
                // on a string it owns; the child is single-threaded.
                unsafe {
                    check(libc::setns(mnt, libc::CLONE_NEWNS))?;
                    check(libc::chdir(cwd))
                }
            }
        }
    }
}

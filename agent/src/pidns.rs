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

/// Paths as C strings and the array of their pointers, made before the fork.
pub struct PathList {
    _owned: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl PathList {
    fn new(paths: &[String]) -> io::Result<PathList> {
        let owned = paths
            .iter()
            .map(|p| {
                if !p.starts_with('/') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{p:?} is not an absolute path"),
                    ));
                }
                CString::new(p.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let ptrs = owned.iter().map(|c| c.as_ptr()).collect();
        Ok(PathList {
            _owned: owned,
            ptrs,
        })
    }

    fn raw(&self) -> RawPaths {
        RawPaths {
            ptr: self.ptrs.as_ptr(),
            len: self.ptrs.len(),
        }
    }
}

/// A [`PathList`]'s pointers, for the child.
#[derive(Clone, Copy)]
pub struct RawPaths {
    ptr: *const *const libc::c_char,
    len: usize,
}

impl RawPaths {
    /// The `i`th path.
    ///
    /// # Safety
    /// The PathList this came from must be alive and `i < self.len`.
    unsafe fn get(&self, i: usize) -> *const libc::c_char {
        // SAFETY: the caller keeps the list alive and `i` in bounds.
        unsafe { *self.ptr.add(i) }
    }
}

/// What the child does about namespaces between fork and exec. The descriptors and strings
/// are made before the fork: the child may not allocate.
pub enum ChildSetup {
    /// Nothing: the agent's namespaces.
    None,
    /// A new mount namespace with its own /proc (the child is PID 1 of a new PID namespace),
    /// with these paths masked and made read-only.
    New {
        /// `maskedPaths`.
        masked: PathList,
        /// `readonlyPaths`.
        readonly: PathList,
    },
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
    new: Option<(&[String], &[String])>,
    init: i32,
    cwd: &std::path::Path,
) -> io::Result<(Option<ForChildren>, ChildSetup)> {
    use std::os::unix::ffi::OsStrExt;
    if new.is_none() && init <= 0 {
        return Ok((None, ChildSetup::None));
    }
    let saved = File::open("/proc/thread-self/ns/pid")?;
    if let Some((masked, readonly)) = new {
        let setup = ChildSetup::New {
            masked: PathList::new(masked)?,
            readonly: PathList::new(readonly)?,
        };
        // SAFETY: unshare with a flag; it changes only the calling thread's namespace for
        // children, which ForChildren restores.
        check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
        return Ok((Some(ForChildren { saved }), setup));
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
            ChildSetup::New { masked, readonly } => RawChild::New {
                masked: masked.raw(),
                readonly: readonly.raw(),
            },
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
    /// New mount namespace and /proc, paths masked and made read-only.
    New {
        /// Masked paths.
        masked: RawPaths,
        /// Read-only paths.
        readonly: RawPaths,
    },
    /// setns to `mnt`, chdir to `cwd`.
    Join {
        /// The mount namespace's descriptor.
        mnt: RawFd,
        /// The working directory, NUL-terminated, owned by the ChildSetup.
        cwd: *const libc::c_char,
    },
}

// SAFETY: the pointers refer to CStrings (and arrays of them) owned by the ChildSetup, which
// outlives the spawn the value is moved into; they are only read, in the child.
unsafe impl Send for RawChild {}
// SAFETY: as above.
unsafe impl Sync for RawChild {}

impl RawChild {
    /// Runs in the child between fork and exec: only async-signal-safe system calls.
    pub fn apply(self) -> io::Result<()> {
        match self {
            RawChild::None => Ok(()),
            RawChild::New { masked, readonly } => {
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
                    ))?;
                }
                for i in 0..masked.len {
                    // SAFETY: in bounds; the list lives in the parent's ChildSetup, copied
                    // into this child by fork.
                    mask(unsafe { masked.get(i) })?;
                }
                for i in 0..readonly.len {
                    // SAFETY: as above.
                    read_only(unsafe { readonly.get(i) })?;
                }
                Ok(())
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

/// The errno of the last call, without allocating.
fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Hides `path`: /dev/null bound over a file, an empty read-only tmpfs over a directory; a
/// missing path is skipped (as runc does).
fn mask(path: *const libc::c_char) -> io::Result<()> {
    // SAFETY: mount(2) on a NUL-terminated path the caller keeps alive and on literals.
    let r = unsafe {
        libc::mount(
            c"/dev/null".as_ptr(),
            path,
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match errno() {
        libc::ENOENT => Ok(()),
        // A directory: /dev/null cannot be bound on it.
        libc::ENOTDIR => {
            // SAFETY: as above.
            let r = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    path,
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY,
                    std::ptr::null(),
                )
            };
            if r == 0 || errno() == libc::ENOENT {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        _ => Err(io::Error::last_os_error()),
    }
}

/// Makes `path` read-only (a bind of itself, remounted read-only); a missing path is skipped.
/// `/` is the root file system (`--read-only`): its own mount remounted read-only in this
/// namespace, the mounts under it (volumes, /proc, /dev) left as they are.
fn read_only(path: *const libc::c_char) -> io::Result<()> {
    // SAFETY: the caller's path is NUL-terminated: reading its first two bytes is in bounds.
    if unsafe { *path == b'/' as libc::c_char && *path.add(1) == 0 } {
        // SAFETY: mount(2) on a literal; only this mount namespace's root mount changes.
        return check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            )
        });
    }
    // SAFETY: mount(2) on a NUL-terminated path the caller keeps alive.
    let r = unsafe {
        libc::mount(
            path,
            path,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return if errno() == libc::ENOENT {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
    }
    // SAFETY: as above.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            path,
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_REC,
            std::ptr::null(),
        )
    })
}

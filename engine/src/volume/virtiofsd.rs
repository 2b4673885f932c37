//! The virtio-fs daemons: one `virtiofsd` per shared directory of a running container, in its
//! own sandbox (mount namespace with the shared directory as its root, seccomp), read-only on
//! the host side for `:ro` mounts.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long virtiofsd may take to create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// A running virtiofsd, killed and reaped on drop.
pub struct Daemon {
    child: Child,
    /// Its vhost-user socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// The daemon for a [`crate::backend::watch`].
    pub fn watched(&self) -> crate::backend::watch::Watched {
        crate::backend::watch::Watched {
            pid: self.child.id(),
            name: "virtiofsd".into(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts virtiofsd sharing `dir` on `socket`; its log goes to `log`.
pub fn start(dir: &Path, socket: &Path, read_only: bool, log: &Path) -> Result<Daemon, String> {
    start_staged(dir, socket, read_only, log, None)
}

/// Starts virtiofsd sharing one regular file: in a mount namespace of its own, a tmpfs on the
/// empty directory `stage` holds only an empty file [`SHARED_FILE_NAME`] with `file` bound on
/// it, and that directory is shared. The guest reaches that one file and nothing beside it
/// (sharing its host directory would hand the guest its siblings); the host's namespace
/// never sees the mounts, and they go with the daemon.
///
/// [`SHARED_FILE_NAME`]: mvm_agent_protocol::boot::SHARED_FILE_NAME
pub fn start_file(
    file: &Path,
    stage: &Path,
    socket: &Path,
    read_only: bool,
    log: &Path,
) -> Result<Daemon, String> {
    if !std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", file.display()));
    }
    std::fs::create_dir_all(stage)
        .map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    let staged = stage.join(mvm_agent_protocol::boot::SHARED_FILE_NAME);
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{} has a NUL byte", p.display()))
    };
    let paths = StagePaths {
        source: c(file)?,
        stage: c(stage)?,
        staged: c(&staged)?,
        read_only,
    };
    start_staged(stage, socket, read_only, log, Some(paths))
}

/// What the child makes in its namespace before virtiofsd runs, prepared before the fork
/// (nothing may allocate after it).
struct StagePaths {
    source: std::ffi::CString,
    stage: std::ffi::CString,
    staged: std::ffi::CString,
    read_only: bool,
}

impl StagePaths {
    /// In the forked child: a private mount namespace, the tmpfs and the bound file.
    fn apply(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: unshare, mount, open and close are async-signal-safe system calls; every
        // pointer is a NUL-terminated string made before the fork, alive for the calls, or
        // null where the call allows it.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0755,size=16k".as_ptr().cast(),
            ))?;
            let fd = libc::open(
                self.staged.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            );
            check(fd)?;
            libc::close(fd);
            check(libc::mount(
                self.source.as_ptr(),
                self.staged.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            if self.read_only {
                check(libc::mount(
                    std::ptr::null(),
                    self.staged.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

fn start_staged(
    dir: &Path,
    socket: &Path,
    read_only: bool,
    log: &Path,
    stage: Option<StagePaths>,
) -> Result<Daemon, String> {
    let bin = crate::paths::on_path("virtiofsd")
        .ok_or("virtiofsd not found: `cargo install --locked virtiofsd` (scripts/setup.sh does)")?;
    // Its stderr goes through a pump that keeps the log bounded (logfile::pump); the thread
    // ends when the daemon (and its sandboxed child) close the pipe.
    let mut pumps = Vec::new();
    let log_file = crate::backend::log_pipe(log, &mut pumps)?;
    let _ = std::fs::remove_file(socket);
    // Like the hypervisor: its own process group, killed if its owner dies.
    let mut cmd = crate::backend::vm_command(&bin);
    cmd.arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(dir)
        .args(["--sandbox", "namespace", "--cache", "auto", "--xattr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    if read_only {
        cmd.arg("--readonly");
    }
    if let Some(stage) = stage {
        use std::os::unix::process::CommandExt;
        // SAFETY: `apply` makes only async-signal-safe system calls on data prepared before
        // the fork (see there).
        unsafe {
            cmd.pre_exec(move || stage.apply());
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start virtiofsd: {e}"))?;
    let mut d = Daemon {
        child,
        socket: socket.to_path_buf(),
    };
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while !socket.exists() {
        if let Ok(Some(status)) = d.child.try_wait() {
            return Err(format!(
                "virtiofsd for {} exited ({status}): {}",
                dir.display(),
                crate::backend::log_tail(log)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("virtiofsd for {} did not start", dir.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(d)
}

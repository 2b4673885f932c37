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

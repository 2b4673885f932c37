//! What the VMM's guest-booting tests share: the test guest, a scratch directory, a VMM that
//! dies with a failed test, and waiting for a line on the guest's serial output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the test guest once per test run (tests/guest/build.sh) and returns its ELF.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| {
        assert!(
            Path::new("/dev/kvm").exists(),
            "/dev/kvm is missing: these tests need KVM"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guest/build.sh");
        let out = Command::new("sh")
            .arg(&script)
            .output()
            .expect("run tests/guest/build.sh");
        assert!(
            out.status.success(),
            "building the test guest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        assert!(
            path.is_file(),
            "test guest {} missing after build",
            path.display()
        );
        path
    })
}

/// A fresh directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// `/tmp/mvm-vmmtest-<tag>-<pid>`, empty.
    pub fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/mvm-vmmtest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// A path inside it.
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the VMM if a test fails while it runs.
pub struct Vm(pub Child);

impl Drop for Vm {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for a line holding `needle` in the serial log at `path` and returns it.
pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; serial:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

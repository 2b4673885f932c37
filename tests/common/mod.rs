//! Shared helpers for the end-to-end tests: a private state root per test, the `mvm` binary,
//! and the busybox base image.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The busybox root filesystem tarball the set-up makes from Debian's busybox-static.
pub fn busybox_tar() -> PathBuf {
    let cache = std::env::var_os("MVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/mvm".into());
    let p = cache.join("images/busybox-rootfs.tar");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it builds the busybox image)",
        p.display()
    );
    p
}

/// A private state root, removed (with a check that nothing is left running) on drop.
pub struct TestRoot {
    pub path: PathBuf,
    pub bin: PathBuf,
    /// Run each `mvm` in a network namespace of its own (`unshare -n`), so that the default
    /// network's bridge, TAPs and rules never touch the host's; the namespace goes when the
    /// last process in it (the container's monitor) does.
    pub own_netns: bool,
    /// Run each `mvm` in this network namespace (a path under /var/run/netns) instead, one
    /// the test made and shares with other programs (tests/parity: with a dockerd).
    pub netns: Option<PathBuf>,
}

impl TestRoot {
    /// A fresh root with the busybox image imported as `busybox`.
    pub fn with_busybox(bin: &str) -> Self {
        let root = Self::empty(bin);
        let out = root.mvm(&["import", busybox_tar().to_str().unwrap(), "busybox"]);
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        root
    }

    /// A fresh, empty root.
    pub fn empty(bin: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Short: unix socket paths live under it.
        let path = PathBuf::from(format!("/tmp/mvt-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self {
            path,
            bin: PathBuf::from(bin),
            own_netns: true,
            netns: None,
        }
    }

    /// Runs `mvm` in the test's own network namespace (to reach a registry on the host's
    /// loopback); such tests give their containers `--network none`.
    pub fn on_host_network(mut self) -> Self {
        self.own_netns = false;
        self
    }

    /// Runs `mvm` in the network namespace at `path`.
    pub fn in_netns(mut self, path: &Path) -> Self {
        self.netns = Some(path.to_path_buf());
        self
    }

    /// A command for `mvm --root <root> args...`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = if let Some(ns) = &self.netns {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg(&self.bin);
            c
        } else if self.own_netns {
            // unshare execs mvm in the same process: PIDs and signals stay mvm's.
            let mut c = Command::new("unshare");
            c.arg("-n").arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        c.arg("--root").arg(&self.path).args(args);
        c.env_remove("MVM_VMM");
        // Docker's config file (registry credentials) of this test's own, not the user's.
        c.env("DOCKER_CONFIG", self.path.join("docker-config"));
        c
    }

    /// Runs `mvm` to completion with stdin closed.
    pub fn mvm(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn mvm")
    }

    /// Runs `mvm` and returns its stdout, failing the test (with its output) unless it
    /// exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.mvm(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "mvm {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs `mvm` with `input` on stdin.
    pub fn mvm_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mvm");
        let mut stdin = child.stdin.take().unwrap();
        // A command that refuses its arguments may exit before it reads its stdin.
        if let Err(e) = stdin.write_all(input) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing stdin: {e}"
            );
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Container directories left under the root.
    pub fn leftover_containers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["containers", "run"] {
            if let Ok(rd) = std::fs::read_dir(self.path.join(sub)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') {
                        out.push(format!("{sub}/{name}"));
                    }
                }
            }
        }
        out
    }

    /// Fails unless nothing of this root's containers is left: no state directory, and (after
    /// a moment for monitors to exit) no process naming the root (monitor, hypervisor,
    /// vhost-device-vsock, virtiofsd).
    pub fn assert_clean(&self) {
        assert!(
            self.leftover_containers().is_empty(),
            "{:?}",
            self.leftover_containers()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.leftover_processes().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            self.leftover_processes().is_empty(),
            "processes left: {:?}",
            self.leftover_processes()
        );
    }

    /// Processes whose command line mentions this root (VMMs, QEMU, vhost daemons).
    pub fn leftover_processes(&self) -> Vec<String> {
        processes_mentioning(&self.path)
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        // A test that failed half-way may leave detached containers running: end their
        // monitors (this root's, so started by this test), whose VMs die with them.
        for line in processes_mentioning(&self.path) {
            if line.contains("__monitor")
                && let Some(pid) = line.split(':').next().and_then(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) on a PID whose command line names this test's own root.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// PIDs and command lines of processes that mention `needle` in their arguments, and of
/// their descendants (a jailed hypervisor sees only paths inside its jail, so its command
/// line does not name the root; its parent, the monitor, does).
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    // (pid, ppid, command line) of every process.
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse().ok()
                })
                .unwrap_or(0);
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                all.push((pid, ppid, cmd));
            }
        }
    }
    let mut found: Vec<u32> = all
        .iter()
        .filter(|(_, _, cmd)| cmd.contains(&needle))
        .map(|(pid, _, _)| *pid)
        .collect();
    loop {
        let more: Vec<u32> = all
            .iter()
            .filter(|(pid, ppid, _)| found.contains(ppid) && !found.contains(pid))
            .map(|(pid, _, _)| *pid)
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
    }
    all.iter()
        .filter(|(pid, _, _)| found.contains(pid))
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Retries `f` until it returns Some, for up to a minute (VMs boot slowly under TCG).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

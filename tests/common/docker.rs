//! A dockerd of the test's own: in a network namespace the test made (its bridge, iptables and
//! published ports stay there) and a private mount namespace, its data under the test's
//! directory. Dropping it removes every container, stops the daemon, and checks that the
//! runtime left nothing behind. Shared by tests/oci (mvm-runc under dockerd) and tests/parity
//! (the same commands through docker and mvm).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A program the set-up installs; the test fails (never skips) without it.
pub fn require(program: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: run scripts/setup.sh (it installs docker.io and containerd)"
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A network namespace of the test's, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "mvmoci-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(o.status.success(), "ip netns add: {}", stderr(&o));
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `args` inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub struct Dockerd {
    pub dir: PathBuf,
    pub ns: Netns,
    child: Child,
}

impl Dockerd {
    /// Starts a daemon (with `runtime`, if given, registered as `microvm`; runc stays the
    /// default) and imports the busybox image as `image`.
    pub fn start_with(tag: &str, runtime: Option<&Path>, image: &str) -> Dockerd {
        let dockerd = require("dockerd");
        require("docker");
        let ns = Netns::new(tag);
        let dir = std::env::temp_dir().join(&ns.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut script = format!(
            "ip link set lo up && exec {dockerd} --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/dockerd.pid -H unix://{d}/docker.sock --storage-driver overlay2",
            dockerd = dockerd.display(),
            d = dir.display(),
        );
        if let Some(rt) = runtime {
            script += &format!(" --add-runtime microvm={}", rt.display());
        }
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Dockerd { dir, ns, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.docker(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let tar = std::env::var_os("MVM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/cache/mvm".into())
            .join("images/busybox-rootfs.tar");
        assert!(
            tar.exists(),
            "{} is missing: run scripts/setup.sh",
            tar.display()
        );
        d.ok(&["import", tar.to_str().unwrap(), image]);
        d
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", self.dir.display()),
        )
        .args(args)
        .stdin(Stdio::null());
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs `docker args`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}\n{}",
            stderr(&o),
            self.runtime_log()
        );
        stdout(&o)
    }

    /// `docker run --rm --runtime microvm ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm", "--runtime", "microvm"];
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// `docker run -d --runtime microvm ARGS`: the container ID.
    pub fn run_d(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d", "--runtime", "microvm"];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_string()
    }

    /// The runtime's JSON error lines of every container (for failure messages).
    pub fn runtime_log(&self) -> String {
        let mut out = String::new();
        let tasks = self
            .dir
            .join("exec/containerd/daemon/io.containerd.runtime.v2.task/moby");
        for e in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            out += &std::fs::read_to_string(e.path().join("log.json")).unwrap_or_default();
        }
        out
    }

    /// Waits until `docker logs ID` contains `text`.
    pub fn wait_log(&self, id: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = self.docker(&["logs", id]);
            if stdout(&o).contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} not in the logs of {id}: {}{}",
                stdout(&o),
                stderr(&o)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // The runtime's state root: nothing may be left of any container.
        let state = self.dir.join("exec/runtime-runc/moby");
        let left: Vec<_> = std::fs::read_dir(&state)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let pid = std::fs::read_to_string(self.dir.join("dockerd.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill(2) of the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The daemon's shims outlive it by design; those of this daemon go too.
        kill_mentioning(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(
                left.is_empty(),
                "the runtime left container state: {left:?}"
            );
        }
    }
}

/// SIGKILLs every process whose command line mentions `dir` (what a daemon of the test left).
pub fn kill_mentioning(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill(2) of a process the test's own daemon started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Runs the shell command line `cmdline` in `dir` under `script`, so its stdin and stdout are a
/// terminal (`-it`).
pub fn on_a_terminal(cmdline: &str, dir: &Path) -> Output {
    Command::new(require("script"))
        .args(["-qec", cmdline, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

//! The test's engines with `mvm-runc` as their runtime: a dockerd with it registered as
//! `microvm` (tests/common/docker.rs) and podman with `--runtime`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

#[path = "../common/docker.rs"]
mod docker;
pub use docker::*;

/// The runtime under test.
pub fn runtime() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mvm-runc"))
}

impl Dockerd {
    /// A daemon with `mvm-runc` registered as `microvm`, busybox imported as `busybox:local`.
    pub fn start(tag: &str) -> Dockerd {
        Dockerd::start_with(tag, Some(&runtime()), "busybox:local")
    }
}

/// podman with `mvm-runc` as its runtime (`--runtime`), as ../shared/clients describes it:
/// its configuration, storage and CNI networks under the test's directory, every command run
/// in a network namespace the test made.
pub struct Podman {
    pub dir: PathBuf,
    pub ns: Netns,
}

impl Podman {
    pub fn new(tag: &str) -> Podman {
        require("podman");
        require("conmon");
        let ns = Netns::new(tag);
        let dir = std::env::temp_dir().join(&ns.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("podman/tmp")).unwrap();
        let w = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\nnetns = \"none\"\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{w}/podman/events.log\"\ntmp_dir = \"{w}/podman/tmp\"\n\
                 [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{w}/podman/cni\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{w}/podman/run\"\n\
                 graphroot = \"{w}/podman/storage\"\n"
            ),
        )
        .unwrap();
        let _ = ns.run(&["ip", "link", "set", "lo", "up"]);
        let p = Podman { dir, ns };
        let tar = "/var/cache/mvm/images/busybox-rootfs.tar";
        p.ok(&["import", tar, "busybox:local"]);
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.path()))
            .arg("podman")
            .arg("--runtime")
            .arg(runtime())
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(o.status.success(), "podman {args:?}: {}", stderr(&o));
        stdout(&o)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "1"]);
        let _ = self.podman(&["system", "reset", "-f"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

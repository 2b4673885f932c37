//! Hypervisor backends: one small interface, two implementations.
//!
//! - `mvm`: our VMM (`mvm-vmm`), the product's path where KVM has hardware virtualization.
//! - `qemu`: QEMU's `microvm` machine with the same kernel, disks and agent, and vsock through
//!   `vhost-device-vsock` (the same hybrid unix socket as our VMM); TCG where /dev/kvm is
//!   missing or is PVM (which cannot run a stock guest kernel), KVM otherwise.

pub mod jail;
mod mvm;
mod qemu;
pub mod template;
pub mod watch;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A disk attached to the VM.
#[derive(Clone, Debug)]
pub struct Disk {
    /// Raw image.
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
    /// Serial the guest sees.
    pub id: String,
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Kernel command line, without the reboot method (each backend adds its own).
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Disks, in the order the guest names them (vda, vdb, ...).
    pub disks: Vec<Disk>,
    /// Directory for the VM's sockets and logs (short path: unix sockets live here).
    pub run_dir: PathBuf,
    /// Network interfaces, in the guest's order.
    pub nics: Vec<Nic>,
    /// virtio-fs devices: vhost-user sockets of running virtiofsd daemons.
    pub shares: Vec<Share>,
    /// A cgroup (relative to each hierarchy's root) the VM's processes join instead of their
    /// own, with the VM's limits set on it: an OCI bundle's `cgroupsPath`, which the caller
    /// is in too.
    pub cgroup_parent: Option<PathBuf>,
}

/// A virtio-fs device backed by a vhost-user daemon.
#[derive(Clone, Debug)]
pub struct Share {
    /// The daemon's vhost-user socket.
    pub socket: PathBuf,
    /// The tag the guest mounts.
    pub tag: String,
}

/// A network interface: a host TAP device and the guest's MAC.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Nic {
    /// TAP device name on the host.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: mvm_agent_protocol::boot::MacAddr,
}

impl VmSpec {
    /// The directory of the VM's vsock sockets and exit record: all our VMM sees of the host's
    /// filesystem once jailed (vmm/src/jail.rs), so the monitor's own sockets are not in it.
    pub fn vm_dir(&self) -> PathBuf {
        crate::container::vm_dir(&self.run_dir)
    }
    /// The hybrid-vsock socket the host connects to (`CONNECT <port>\n`).
    pub fn vsock_path(&self) -> PathBuf {
        self.vm_dir().join("vsock.sock")
    }
    /// The VM's name: its run directory's (the container's short ID, or a helper VM's).
    pub fn name(&self) -> String {
        self.run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    /// The guest's serial console log.
    pub fn console_path(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }
    /// The hypervisor's own stderr.
    pub fn vmm_log_path(&self) -> PathBuf {
        self.run_dir.join("vmm.log")
    }
}

/// Which backend, and for QEMU which accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Our VMM.
    #[serde(rename = "mvm")]
    Mvm,
    /// QEMU with TCG (software emulation).
    #[serde(rename = "qemu (tcg)")]
    QemuTcg,
    /// QEMU with KVM.
    #[serde(rename = "qemu (kvm)")]
    QemuKvm,
}

impl Kind {
    /// The kind named by [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Mvm, Kind::QemuTcg, Kind::QemuKvm]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// How many virtio devices a VM of this kind can have: our VMM's (IOAPIC pins 5-23, from
    /// the config crate both use); QEMU's microvm machine has 8 virtio-mmio transports.
    pub fn virtio_slots(self) -> usize {
        match self {
            Kind::Mvm => mvm_vmm_config::MAX_VIRTIO_DEVICES,
            Kind::QemuTcg | Kind::QemuKvm => 8,
        }
    }

    /// The name `mvm info` shows.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mvm => "mvm",
            Kind::QemuTcg => "qemu (tcg)",
            Kind::QemuKvm => "qemu (kvm)",
        }
    }
}

/// The backend chosen for this host and why.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The backend.
    pub kind: Kind,
    /// Why it was chosen.
    pub reason: String,
    /// A warning to show once (a forced choice that will not work well here).
    pub warning: Option<String>,
}

/// What this host's /dev/kvm is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmKind {
    /// No /dev/kvm.
    Missing,
    /// kvm_pvm: paravirtualised, cannot run an unmodified guest kernel in usable time.
    Pvm,
    /// Hardware virtualization (VMX or SVM).
    Hardware,
    /// /dev/kvm exists but the CPU flags show no VMX/SVM.
    Unknown,
}

/// Inspects the host's KVM.
pub fn detect_kvm() -> KvmKind {
    if !Path::new("/dev/kvm").exists() {
        return KvmKind::Missing;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return KvmKind::Pvm;
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = |f: &str| {
        cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|w| w == f))
    };
    if has_flag("vmx") || has_flag("svm") {
        KvmKind::Hardware
    } else {
        KvmKind::Unknown
    }
}

/// Chooses the backend: `forced` (from `--vmm` or `MVM_VMM`) wins; otherwise our VMM where
/// KVM is hardware virtualization, QEMU everywhere else.
pub fn select(forced: Option<&str>) -> Result<Selection, String> {
    let kvm = detect_kvm();
    let qemu_for = |kvm: KvmKind| match kvm {
        KvmKind::Hardware => Kind::QemuKvm,
        _ => Kind::QemuTcg,
    };
    match forced {
        Some("mvm") => Ok(Selection {
            kind: Kind::Mvm,
            reason: "forced with --vmm mvm / MVM_VMM=mvm".into(),
            warning: match kvm {
                KvmKind::Pvm => Some(
                    "/dev/kvm is PVM (kvm_pvm): a stock Linux guest will not boot in usable time with --vmm mvm; use --vmm qemu".into(),
                ),
                KvmKind::Missing => Some("there is no /dev/kvm: --vmm mvm cannot start a VM".into()),
                _ => None,
            },
        }),
        Some("qemu") => Ok(Selection {
            kind: qemu_for(kvm),
            reason: "forced with --vmm qemu / MVM_VMM=qemu".into(),
            warning: None,
        }),
        Some(other) => Err(format!("unknown --vmm {other:?}: expected mvm or qemu")),
        None => Ok(match kvm {
            KvmKind::Hardware => Selection {
                kind: Kind::Mvm,
                reason: "/dev/kvm has hardware virtualization".into(),
                warning: None,
            },
            KvmKind::Pvm => Selection {
                kind: Kind::QemuTcg,
                reason: "/dev/kvm is PVM (kvm_pvm), which cannot run the guest kernel; QEMU with TCG is used".into(),
                warning: None,
            },
            KvmKind::Missing => Selection {
                kind: Kind::QemuTcg,
                reason: "there is no /dev/kvm; QEMU with TCG is used".into(),
                warning: None,
            },
            KvmKind::Unknown => Selection {
                kind: Kind::QemuTcg,
                reason: "/dev/kvm shows no VMX/SVM; QEMU with TCG is used".into(),
                warning: None,
            },
        }),
    }
}

/// A started VM: its hypervisor process and any helper daemons.
pub struct VmHandle {
    child: jail::Proc,
    helpers: Vec<jail::Proc>,
    /// The hypervisor's name, then each helper's, for a reason when one dies.
    names: Vec<&'static str>,
    log: PathBuf,
    /// The threads copying the processes' output into their bounded logs.
    pumps: Vec<std::thread::JoinHandle<()>>,
    /// The VM's own uid, held while it runs (jailed backends).
    _uid: Option<jail::UidSlot>,
    /// The VM's cgroups, removed after its processes.
    _cgroups: Option<jail::Cgroups>,
}

/// A pipe for a VM process's stdout or stderr whose read end is copied into the bounded log
/// `path` ([`crate::logfile::pump`]); the write end goes to the process.
pub fn log_pipe(
    path: &Path,
    pumps: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<std::os::fd::OwnedFd, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe for {}: {e}", path.display()))?;
    pumps.push(
        crate::logfile::pump(fs::File::from(r), path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
    );
    Ok(w)
}

impl VmHandle {
    /// PIDs of the hypervisor (first) and its helper daemons, for `pause` and `stats`.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.child.id())
            .chain(self.helpers.iter().map(jail::Proc::id))
            .collect()
    }

    /// The VM's processes for a [`watch`].
    pub fn watched(&self) -> Vec<watch::Watched> {
        self.pids()
            .into_iter()
            .zip(&self.names)
            .map(|(pid, name)| watch::Watched {
                pid,
                name: (*name).to_string(),
            })
            .collect()
    }

    /// Puts a process of the VM started before it (a virtiofsd) into the VM's cgroups.
    pub fn adopt(&self, pid: u32) {
        if let Some(c) = &self._cgroups {
            c.adopt(pid);
        }
    }

    /// A helper (not the hypervisor) that has already ended, and how.
    pub fn helper_died(&mut self) -> Option<String> {
        for (h, name) in self.helpers.iter_mut().zip(self.names.iter().skip(1)) {
            if let Some(status) = h.try_wait() {
                return Some(format!("{name} (pid {}) ended: {status}", h.id()));
            }
        }
        None
    }

    /// Whether the hypervisor has exited (without blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for the hypervisor to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops everything: the hypervisor (SIGKILL) and the helpers, and reaps them; their
    /// logs are complete when this returns.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            self.child.kill();
            self.child.wait();
        }
        self.stop_helpers();
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
    }

    fn stop_helpers(&mut self) {
        for h in &mut self.helpers {
            if h.try_wait().is_none() {
                h.kill();
            }
            h.wait();
        }
        self.helpers.clear();
    }

    /// Waits for a clean end (the guest resets after the process exits), then makes sure.
    pub fn finish(&mut self, timeout: Duration) {
        if self.wait_timeout(timeout).is_none() {
            tracing::warn!("VM did not power off within {timeout:?}; killing it");
        }
        self.kill();
    }

    /// The last lines the hypervisor wrote to its log, for an error message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for VmHandle {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last non-empty line of a log file.
pub fn log_tail(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The guest kernel's panic line in a console log (`Kernel panic - not syncing: ...`), without
/// its timestamp, with the line before it when that names the cause (`..MP-BIOS bug: ...`).
/// Reads at most the log's last 256 KiB: the console is the guest's, of any size.
pub fn console_panic(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 << 10;
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    f.take(TAIL).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let strip = |l: &str| -> String {
        let l = l.trim();
        let l = match l.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(l, |(_, after)| after.trim()),
            None => l,
        };
        l.chars().filter(|c| !c.is_control()).take(300).collect()
    };
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("Kernel panic - not syncing"))?;
    let panic = strip(lines[at]);
    let before = at
        .checked_sub(1)
        .map(|i| strip(lines[i]))
        .unwrap_or_default();
    if before.contains("bug") || before.contains("BUG") || before.contains("error") {
        Some(format!("{before} ... {panic}"))
    } else {
        Some(panic)
    }
}

/// A command for a VM process: its own process group (a Ctrl-C at the terminal goes to `mvm`,
/// which forwards it to the container, not to the hypervisor), killed if `mvm` dies.
pub fn vm_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    // SAFETY: prctl, sigemptyset and sigprocmask are async-signal-safe and touch only the
    // child's own state and a local sigset.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // `mvm run` blocks the signals it forwards; the hypervisor must not inherit that.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}

/// Starts the VM described by `spec` on `kind`.
pub fn start(kind: Kind, spec: &VmSpec) -> Result<VmHandle, String> {
    fs::create_dir_all(spec.vm_dir())
        .map_err(|e| format!("cannot create {}: {e}", spec.vm_dir().display()))?;
    // Unix socket paths are limited to 107 bytes; guest-initiated connections append _PORT.
    let longest = spec.vsock_path().as_os_str().len() + 11;
    if longest > 107 {
        return Err(format!(
            "state root path too long for unix sockets ({} bytes under {}): use a shorter --root",
            longest,
            spec.run_dir.display()
        ));
    }
    match kind {
        Kind::Mvm => mvm::start(spec),
        Kind::QemuTcg => qemu::start(spec, false),
        Kind::QemuKvm => qemu::start(spec, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_panic_line_is_found_with_its_cause() {
        let dir = std::env::temp_dir().join(format!("mvm-console-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("console.log");
        fs::write(
            &p,
            "[    0.1] booting\n[    0.2] ..MP-BIOS bug: 8254 timer not connected to IO-APIC\n\
             [    0.3] Kernel panic - not syncing: IO-APIC + timer doesn't work!\n\
             [    0.4] ---[ end Kernel panic ]---\n",
        )
        .unwrap();
        assert_eq!(
            console_panic(&p).unwrap(),
            "..MP-BIOS bug: 8254 timer not connected to IO-APIC ... Kernel panic - not syncing: IO-APIC + timer doesn't work!"
        );
        fs::write(&p, "[ 1.0] all fine\n").unwrap();
        assert_eq!(console_panic(&p), None);
        assert_eq!(console_panic(&dir.join("missing")), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn forced_backends() {
        assert_eq!(select(Some("mvm")).unwrap().kind, Kind::Mvm);
        assert!(matches!(
            select(Some("qemu")).unwrap().kind,
            Kind::QemuTcg | Kind::QemuKvm
        ));
        assert!(select(Some("xen")).unwrap_err().contains("unknown --vmm"));
    }

    #[test]
    fn this_host_uses_qemu_tcg_when_pvm() {
        if detect_kvm() == KvmKind::Pvm {
            let s = select(None).unwrap();
            assert_eq!(s.kind, Kind::QemuTcg);
            assert!(s.reason.contains("PVM"));
            assert!(
                select(Some("mvm"))
                    .unwrap()
                    .warning
                    .unwrap()
                    .contains("usable time")
            );
        }
    }
}

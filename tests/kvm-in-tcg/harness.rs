//! The KVM-in-TCG harness: a QEMU TCG machine ("L2") emulating an AMD CPU with SVM, whose
//! Linux (Debian's cloud kernel) loads kvm_amd and so has a hardware-style /dev/kvm. Our VMM
//! and runtime run inside it and boot the project's real guest kernel
//! (../shared/reference/kvm-in-tcg.md).
//!
//! One machine runs a list of scenarios (shell snippets) one after the other, so its start
//! (about 3 s) is paid once. Its /init prints
//!   `=== SCENARIO <name> ===`, the snippet's output (stdout and stderr), `=== END <name> rc=N ===`
//! on the serial console; [`run`] parses that into one [`Outcome`] per scenario.
//!
//! Inputs (all required; a missing one is an error that says how to get it):
//! - `qemu-system-x86_64` on PATH (package qemu-system-x86);
//! - the L2 kernel and modules: `${MVM_CACHE:-/var/cache/mvm}/l2/current/{vmlinuz,modules/}`
//!   (scripts/kvm-in-tcg/fetch-l2-kernel.sh, called by scripts/setup.sh), or `MVM_L2_DIR`;
//! - `mvm`, `mvm-vmm` and `mvm-agent.static` (the mvm binary of this test build; the other two
//!   beside it or from `MVM_VMM_BIN` / `MVM_AGENT`);
//! - the guest kernel (`MVM_KERNEL` or `${MVM_CACHE}/kernel/current/vmlinux`);
//! - static busybox (`/bin/busybox`, package busybox-static), `mkfs.ext4` (e2fsprogs),
//!   `mkfs.erofs` (erofs-utils), and for `mvm run`'s networks `ip` (iproute2) and `nft`
//!   (nftables), and for volumes `virtiofsd`, copied with their shared libraries;
//! - the busybox rootfs tarball `${MVM_CACHE}/images/busybox-rootfs.tar`.
//!
//! Environment knobs: `MVM_L2_TIMEOUT` (seconds for the whole machine; the test sets the
//! default), `MVM_L2_VERBOSE=1` (echo the serial console to stderr as it arrives),
//! `MVM_L2_ONLY=name,name` (run only these scenarios).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cpio;

/// Modules the L2 kernel loads, in dependency order (file names under `modules/`; the cloud
/// kernel package's modules.dep, or `modinfo -F depends`, gives the order): KVM, then what
/// `mvm run`'s networks need (engine/src/network/host.rs): TAP devices, a bridge, and
/// nftables with a masquerading NAT chain and a filter forward chain. There is no modprobe
/// in the machine, so whatever `ip` or `nft` would make the kernel load on demand is here.
const MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "kvm-amd",
    "tun",
    "llc",
    "stp",
    "bridge",
    "libcrc32c",
    "nfnetlink",
    "nf_tables",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_masq",
];

/// One shell snippet to run inside the machine.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name: letters, digits, `-` and `_`.
    pub name: String,
    /// A `sh` script (busybox ash), run with `set -u` off, stdin from /dev/null, in /tmp.
    pub script: String,
    /// Inside-machine limit; the snippet is killed after it (rc 124 / 143).
    pub timeout: Duration,
}

impl Scenario {
    /// A scenario with a 120 s limit.
    pub fn new(name: &str, script: &str) -> Self {
        Self {
            name: name.to_string(),
            script: script.to_string(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// What one scenario did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its name.
    pub name: String,
    /// Its combined output, `\r` removed.
    pub output: String,
    /// Its exit status (`None`: the machine ended before the scenario did).
    pub rc: Option<i32>,
    /// Seconds from QEMU's start to the scenario's start and end (on the host's clock).
    pub started_at: f64,
    /// See `started_at`.
    pub ended_at: f64,
}

/// What a run of the machine produced.
#[derive(Debug)]
pub struct Run {
    /// One per scenario that started, in order.
    pub outcomes: Vec<Outcome>,
    /// The whole serial log.
    pub serial: String,
    /// Where the serial log was saved.
    pub serial_path: PathBuf,
    /// Seconds from QEMU's start to "/dev/kvm ready" (None if never).
    pub kvm_ready_at: Option<f64>,
    /// Seconds QEMU ran.
    pub total: f64,
}

impl Run {
    /// The outcome of scenario `name`.
    pub fn get(&self, name: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.name == name)
    }
}

/// Everything the machine is built from.
#[derive(Clone, Debug)]
pub struct Inputs {
    qemu: PathBuf,
    l2_kernel: PathBuf,
    l2_modules: PathBuf,
    mvm: PathBuf,
    vmm: PathBuf,
    agent: PathBuf,
    guest_kernel: PathBuf,
    busybox: PathBuf,
    mkfs: PathBuf,
    mkfs_erofs: PathBuf,
    ip: PathBuf,
    nft: PathBuf,
    virtiofsd: PathBuf,
    rootfs_tar: PathBuf,
    /// More files for the machine: (path inside, path here, executable with its libraries).
    extra: Vec<(String, PathBuf, bool)>,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("MVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mvm"))
}

/// A program on PATH, in /usr/sbin or /sbin, or where `cargo install` puts it (the set-up
/// installs virtiofsd and vhost-device-vsock there, and a root shell may not have it on PATH).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .chain(cargo_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

impl Inputs {
    /// Finds every input; the error lists all that are missing and how to get each.
    pub fn locate(mvm: &Path) -> Result<Self, String> {
        let mut missing = Vec::new();
        let mut need = |what: &str, path: Option<PathBuf>, hint: &str| -> PathBuf {
            match path {
                Some(p) if p.is_file() => p,
                Some(p) => {
                    missing.push(format!("{what} ({} does not exist): {hint}", p.display()));
                    p
                }
                None => {
                    missing.push(format!("{what} (not found): {hint}"));
                    PathBuf::new()
                }
            }
        };
        let bin_dir = mvm.parent().unwrap_or(Path::new(".")).to_path_buf();
        let l2 = env_or("MVM_L2_DIR", cache_dir().join("l2/current"));
        let fetch = "run scripts/kvm-in-tcg/fetch-l2-kernel.sh (scripts/setup.sh does)";
        let qemu = need(
            "qemu-system-x86_64",
            on_path("qemu-system-x86_64"),
            "apt-get install qemu-system-x86 (scripts/setup.sh does)",
        );
        let l2_kernel = need("L2 cloud kernel", Some(l2.join("vmlinuz")), fetch);
        for m in MODULES {
            need(
                &format!("L2 module {m}.ko"),
                Some(l2.join(format!("modules/{m}.ko"))),
                fetch,
            );
        }
        let mvm = need(
            "mvm binary",
            Some(mvm.to_path_buf()),
            "cargo build -p mvm-runtime",
        );
        let vmm = need(
            "mvm-vmm binary",
            Some(env_or("MVM_VMM_BIN", bin_dir.join("mvm-vmm"))),
            "build it with the same profile as this test: cargo build [--release] -p mvm-vmm, or set MVM_VMM_BIN",
        );
        let profile = bin_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("release");
        let agent = need(
            "guest agent",
            Some(env_or("MVM_AGENT", bin_dir.join("mvm-agent.static"))),
            &format!("scripts/build-agent.sh {profile}, or set MVM_AGENT"),
        );
        let guest_kernel = need(
            "guest kernel",
            Some(env_or(
                "MVM_KERNEL",
                cache_dir().join("kernel/current/vmlinux"),
            )),
            "kernel-config/build.sh (scripts/setup.sh does), or set MVM_KERNEL",
        );
        let busybox = need(
            "static busybox",
            Some(PathBuf::from("/bin/busybox")),
            "apt-get install busybox-static",
        );
        let mkfs = need(
            "mkfs.ext4",
            on_path("mkfs.ext4"),
            "apt-get install e2fsprogs",
        );
        let mkfs_erofs = need(
            "mkfs.erofs",
            on_path("mkfs.erofs"),
            "apt-get install erofs-utils",
        );
        // Debian's, not busybox's `ip` applet: the runtime needs `ip tuntap` and bridges.
        let ip = need(
            "ip (iproute2)",
            on_path("ip"),
            "apt-get install iproute2 (scripts/setup.sh does)",
        );
        let nft = need(
            "nft (nftables)",
            on_path("nft"),
            "apt-get install nftables (scripts/setup.sh does)",
        );
        // For volumes (engine/src/volume/virtiofsd.rs looks for it on PATH).
        let virtiofsd = need(
            "virtiofsd",
            on_path("virtiofsd"),
            "scripts/setup.sh installs it (cargo install virtiofsd)",
        );
        let rootfs_tar = need(
            "busybox rootfs tarball",
            Some(cache_dir().join("images/busybox-rootfs.tar")),
            "scripts/make-busybox-rootfs.sh (scripts/setup.sh does)",
        );
        if busybox.is_file() && !is_static(&busybox) {
            missing.push(format!(
                "{} is dynamically linked: install busybox-static",
                busybox.display()
            ));
        }
        if !missing.is_empty() {
            return Err(format!(
                "the KVM-in-TCG test cannot run; missing:\n  - {}",
                missing.join("\n  - ")
            ));
        }
        Ok(Self {
            qemu,
            l2_modules: l2.join("modules"),
            l2_kernel,
            mvm,
            vmm,
            agent,
            guest_kernel,
            busybox,
            mkfs,
            mkfs_erofs,
            ip,
            nft,
            virtiofsd,
            rootfs_tar,
            extra: Vec::new(),
        })
    }

    /// Adds a file at `inside` (an absolute path in the machine); a dynamically linked
    /// `executable` brings its shared libraries (e.g. QEMU for a benchmark beside our VMM).
    #[allow(dead_code)] // not every user of the harness needs it
    pub fn add_file(&mut self, inside: &str, here: &Path, executable: bool) {
        self.extra
            .push((inside.to_string(), here.to_path_buf(), executable));
    }

    /// A warning when `mvm-vmm` looks older than the VMM's sources (the test does not build
    /// it: `cargo test -p mvm-runtime` builds only the runtime's binaries).
    pub fn staleness_warning(&self, vmm_src: &Path) -> Option<String> {
        let bin = std::fs::metadata(&self.vmm)
            .and_then(|m| m.modified())
            .ok()?;
        let mut stack = vec![vmm_src.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).ok()?.flatten() {
                let m = e.metadata().ok()?;
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.modified().ok()? > bin {
                    return Some(format!(
                        "warning: {} is older than {}: rebuild it (cargo build -p mvm-vmm) or this test runs old code",
                        self.vmm.display(),
                        e.path().display()
                    ));
                }
            }
        }
        None
    }
}

/// Whether an ELF file has no program interpreter.
fn is_static(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return false;
    }
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([data[54], data[55]]) as usize;
    let phnum = u16::from_le_bytes([data[56], data[57]]) as usize;
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        data.get(off..off + 4)
            .is_none_or(|ph| u32::from_le_bytes(ph.try_into().unwrap()) != 3)
    })
}

/// The shared libraries and loader of a dynamically linked binary, as `ldd` lists them
/// (absolute paths; the same paths must exist inside the machine).
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, String> {
    if is_static(bin) {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("cannot run ldd (libc-bin) on {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if line.contains("not found") {
            return Err(format!("{}: {}", bin.display(), line.trim()));
        }
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The machine's /init: mounts, loads kvm_amd, runs /scenarios/*.sh in order, reboots.
const INIT: &str = r#"#!/bin/busybox sh
# The initramfs is the kernel's rootfs, from which pivot_root(2) refuses to move (EINVAL), and
# virtiofsd's namespace sandbox pivot_roots into the shared directory. A bind mount of it is
# an ordinary mount: continue chrooted there.
if [ -z "$MVM_L2_ROOT_BOUND" ]; then
  /bin/busybox mkdir -p /l2root
  /bin/busybox mount --bind / /l2root || echo "=== L2 bind of / failed ==="
  export MVM_L2_ROOT_BOUND=1
  exec /bin/busybox chroot /l2root /init
fi
/bin/busybox mkdir -p /bin /proc /sys /dev /tmp /run /var/tmp
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
export MVM_KERNEL=/guest/vmlinux
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o size=1536m tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
# Only emergencies on the console: the scenario markers must not interleave with printk.
dmesg -n 1
hostname l2
ifconfig lo 127.0.0.1 up 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
echo "=== L2 INIT uptime=$(up) ==="
for m in @MODULES@; do
  insmod /modules/$m.ko || echo "=== L2 insmod $m failed ==="
done
if [ -c /dev/kvm ]; then
  echo "=== L2 KVM READY uptime=$(up) ==="
else
  echo "=== L2 NO KVM ==="
  dmesg | tail -n 30
fi
cd /tmp
for s in /scenarios/*.sh; do
  name=$(basename "$s" .sh); name=${name#*-}
  limit=$(cat "${s%.sh}.timeout")
  echo "=== SCENARIO $name ==="
  mkdir -p "/tmp/$name" && cd "/tmp/$name"
  timeout -s KILL "$limit" sh "$s" </dev/null 2>&1
  rc=$?
  cd /tmp
  echo
  echo "=== END $name rc=$rc ==="
  if [ "$rc" != 0 ]; then
    echo "=== DMESG $name ==="
    dmesg | tail -n 40
    echo "=== END DMESG ==="
  fi
done
echo "=== L2 DONE uptime=$(up) ==="
sync
reboot -f
"#;

/// A copy of `bin` without debug information in `work` when `strip` (binutils) is there, so
/// the initramfs is smaller and unpacks faster under emulation; else `bin` itself.
fn stripped(bin: &Path, work: &Path) -> PathBuf {
    let Some(strip) = on_path("strip") else {
        return bin.to_path_buf();
    };
    let out = work.join(bin.file_name().unwrap_or_default());
    let ok = Command::new(strip)
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok { out } else { bin.to_path_buf() }
}

/// Builds the initramfs for `scenarios` at `out`.
pub fn build_initramfs(inputs: &Inputs, scenarios: &[Scenario], out: &Path) -> Result<u64, String> {
    let err = |e: std::io::Error| format!("building {}: {e}", out.display());
    let bin_dir = out.with_extension("bin");
    std::fs::create_dir_all(&bin_dir).map_err(err)?;
    let mut w = cpio::Writer::create(out).map_err(err)?;
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "etc",
        "root",
        "tmp",
        "proc",
        "sys",
        "dev",
        "run",
        "modules",
        "scenarios",
        "guest",
    ] {
        w.dir(d).map_err(err)?;
    }
    w.file("bin/busybox", &inputs.busybox, Some(0o755))
        .map_err(err)?;
    let init = INIT.replace("@MODULES@", &MODULES.join(" "));
    w.bytes("init", 0o755, init.as_bytes()).map_err(err)?;
    w.bytes("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(err)?;
    w.bytes("etc/group", 0o644, b"root:x:0:\n").map_err(err)?;
    if Path::new("/etc/mke2fs.conf").is_file() {
        w.file("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), None)
            .map_err(err)?;
    }
    for m in std::fs::read_dir(&inputs.l2_modules)
        .map_err(err)?
        .flatten()
    {
        let name = m.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ko") {
            w.file(&format!("modules/{name}"), &m.path(), Some(0o644))
                .map_err(err)?;
        }
    }
    let mut libs = BTreeSet::new();
    for (dst, src) in [
        ("usr/local/bin/mvm", &inputs.mvm),
        ("usr/local/bin/mvm-vmm", &inputs.vmm),
        ("usr/sbin/mkfs.ext4", &inputs.mkfs),
        ("usr/bin/mkfs.erofs", &inputs.mkfs_erofs),
        // /usr/sbin comes before /bin (busybox's applets) on the machine's PATH.
        ("usr/sbin/ip", &inputs.ip),
        ("usr/sbin/nft", &inputs.nft),
        ("usr/local/bin/virtiofsd", &inputs.virtiofsd),
    ] {
        w.file(dst, &stripped(src, &bin_dir), Some(0o755))
            .map_err(err)?;
        libs.extend(shared_libs(src)?);
    }
    w.file(
        "usr/local/bin/mvm-agent.static",
        &stripped(&inputs.agent, &bin_dir),
        Some(0o755),
    )
    .map_err(err)?;
    for lib in &libs {
        w.file(&lib.to_string_lossy(), lib, Some(0o755))
            .map_err(err)?;
    }
    w.file("guest/vmlinux", &inputs.guest_kernel, Some(0o644))
        .map_err(err)?;
    w.file("busybox-rootfs.tar", &inputs.rootfs_tar, Some(0o644))
        .map_err(err)?;
    for (inside, here, executable) in &inputs.extra {
        let mode = if *executable { 0o755 } else { 0o644 };
        w.file(inside, here, Some(mode)).map_err(err)?;
        if *executable {
            for lib in shared_libs(here)? {
                if libs.insert(lib.clone()) {
                    w.file(&lib.to_string_lossy(), &lib, Some(0o755))
                        .map_err(err)?;
                }
            }
        }
    }
    for (i, s) in scenarios.iter().enumerate() {
        assert!(
            !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "bad scenario name {:?}",
            s.name
        );
        w.bytes(
            &format!("scenarios/{i:03}-{}.sh", s.name),
            0o755,
            s.script.as_bytes(),
        )
        .map_err(err)?;
        w.bytes(
            &format!("scenarios/{i:03}-{}.timeout", s.name),
            0o644,
            s.timeout.as_secs().max(1).to_string().as_bytes(),
        )
        .map_err(err)?;
    }
    w.finish().map_err(err)
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo's "cpu MHz" (on a virtual machine
/// and on CPUs with a constant TSC, the TSC's frequency).
fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 100.0).then(|| (mhz * 1000.0).round() as u64)
}

/// Kills QEMU (by its PID, through `Child`) when dropped: on timeout, error or panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The limit for the whole machine: `MVM_L2_TIMEOUT` seconds or `default`.
pub fn machine_timeout(default: Duration) -> Duration {
    std::env::var("MVM_L2_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// Builds the initramfs in `work`, boots the machine, runs `scenarios`, and returns what
/// happened. An error means the machine itself could not run (QEMU missing, no /dev/kvm in
/// it, timeout); a scenario's failure is in its [`Outcome`].
pub fn run(
    inputs: &Inputs,
    scenarios: &[Scenario],
    work: &Path,
    timeout: Duration,
) -> Result<Run, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    // A subset while working on one scenario (the tests of the others then fail, saying so).
    let only: Option<Vec<String>> = std::env::var("MVM_L2_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let scenarios: Vec<Scenario> = scenarios
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.name)))
        .cloned()
        .collect();
    let initrd = work.join("initramfs.cpio");
    build_initramfs(inputs, &scenarios, &initrd)?;
    let serial_path = work.join("serial.log");
    let verbose = std::env::var_os("MVM_L2_VERBOSE").is_some_and(|v| v != "0");

    // Under TCG the guest's TSC is the host's: give the L2 kernel its frequency. Left to
    // calibrate against the PIT on a busy host it sometimes fails ("Unable to calibrate
    // against PIT", no HPET/PM timer on microvm) and the boot then hangs for minutes; and the
    // clocksource watchdog (jiffies as reference) would mark a good TSC unstable.
    let mut append =
        String::from("console=ttyS0 reboot=t panic=-1 rdinit=/init quiet tsc=reliable");
    if let Some(khz) = host_tsc_khz() {
        append.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let start = Instant::now();
    let mut cmd = Command::new(&inputs.qemu);
    // If this test process dies (killed, aborted), the kernel kills QEMU too.
    // SAFETY: prctl is async-signal-safe and only changes this child's own attributes.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            unsafe extern "C" {
                fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
            }
            const PR_SET_PDEATHSIG: i32 = 1;
            const SIGKILL: u64 = 9;
            if prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .args([
            "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "1",
        ])
        .arg("-kernel")
        .arg(&inputs.l2_kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&append)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", inputs.qemu.display()))?;
    let mut qemu = KillOnDrop(child);

    let (tx, rx) = mpsc::channel::<(f64, String)>();
    let stdout = qemu.0.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).replace('\r', "");
                    let line = line.trim_end_matches('\n').to_string();
                    if tx.send((start.elapsed().as_secs_f64(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = qemu.0.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = start + timeout;
    let mut serial = String::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut current: Option<Outcome> = None;
    let mut kvm_ready_at = None;
    let mut no_kvm = false;
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok((t, line)) => {
                if verbose {
                    eprintln!("[L2 {t:7.2}] {line}");
                }
                serial.push_str(&line);
                serial.push('\n');
                if line.starts_with("=== L2 KVM READY") {
                    kvm_ready_at = Some(t);
                } else if line.starts_with("=== L2 NO KVM") {
                    no_kvm = true;
                } else if let Some(name) = line
                    .strip_prefix("=== SCENARIO ")
                    .and_then(|r| r.strip_suffix(" ==="))
                {
                    current = Some(Outcome {
                        name: name.to_string(),
                        output: String::new(),
                        rc: None,
                        started_at: t,
                        ended_at: t,
                    });
                } else if let Some(rest) = line
                    .strip_prefix("=== END ")
                    .and_then(|r| r.strip_suffix(" ==="))
                {
                    if let Some((name, rc)) = rest.rsplit_once(" rc=")
                        && let Some(mut o) = current.take_if(|o| o.name == name)
                    {
                        o.rc = rc.parse().ok();
                        o.ended_at = t;
                        // the snippet's last newline plus the `echo` before the marker
                        while o.output.ends_with("\n\n") {
                            o.output.pop();
                        }
                        outcomes.push(o);
                    }
                } else if let Some(o) = current.as_mut() {
                    o.output.push_str(&line);
                    o.output.push('\n');
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let total = start.elapsed().as_secs_f64();
    if timed_out {
        drop(qemu); // kills QEMU, which ends the reader threads
    } else {
        let _ = qemu.0.wait();
        drop(qemu);
    }
    let _ = reader.join();
    let qemu_stderr = err_reader.join().unwrap_or_default();
    if let Some(o) = current.take() {
        outcomes.push(o);
    }
    let _ = std::fs::write(&serial_path, &serial);

    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    if no_kvm {
        return Err(format!(
            "the L2 machine has no /dev/kvm (kvm_amd did not load); serial log {}:\n{}",
            serial_path.display(),
            tail(&serial)
        ));
    }
    if timed_out && outcomes.is_empty() {
        return Err(format!(
            "the L2 machine did not run any scenario within {timeout:?} (killed); serial log {}:\n{}",
            serial_path.display(),
            tail(&serial)
        ));
    }
    if kvm_ready_at.is_none() && outcomes.is_empty() {
        return Err(format!(
            "the L2 machine ended before /dev/kvm was ready; QEMU stderr: {}\nserial log {}:\n{}",
            qemu_stderr.trim(),
            serial_path.display(),
            tail(&serial)
        ));
    }
    if timed_out {
        eprintln!("kvm-in-tcg: the L2 machine was killed after {timeout:?}");
    }
    Ok(Run {
        outcomes,
        serial,
        serial_path,
        kvm_ready_at,
        total,
    })
}

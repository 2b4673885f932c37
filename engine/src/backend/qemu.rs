//! The `qemu` backend: `qemu-system-x86_64 -M microvm` with the same kernel and disks, and
//! virtio-vsock through `vhost-device-vsock`, whose host side is the same hybrid-vsock unix
//! socket our VMM offers (reference/qemu-vsock.md).
//!
//! Both processes read guest bytes, so both run confined (jail.rs): the VM's own uid, new
//! namespaces, a tmpfs root holding only /usr, the kernel, the VM's socket directory and the
//! virtio-fs sockets; disks and TAPs are opened here and handed over as descriptors, so
//! neither process can open anything else of the host. QEMU's own seccomp sandbox is on.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::jail::{self, Bind, JailSpec, Proc};
use super::{VmHandle, VmSpec, log_pipe};
use crate::paths;

/// How long vhost-device-vsock may take to create its socket.
const VHOST_SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the VM's socket directory is inside the jails.
const VM_DIR: &str = "/vm";
/// Tasks (threads) one VM's processes may have: QEMU's vCPU, I/O and worker threads and the
/// vsock helper's.
const TASKS: u64 = 512;
/// Memory QEMU may use beyond the guest's RAM (TCG's translated code, device state).
const OVERHEAD_TCG: u64 = 1 << 30;
const OVERHEAD_KVM: u64 = 256 << 20;

fn wait_for_socket(path: &Path, helper: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + VHOST_SOCKET_TIMEOUT;
    while !path.exists() {
        if let Some(status) = helper.try_wait() {
            return Err(format!(
                "vhost-device-vsock exited ({status}) before creating its socket"
            ));
        }
        if Instant::now() > deadline {
            return Err("vhost-device-vsock did not create its socket in time".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// rlimits of a jailed VM process.
fn rlimits(max_file: u64) -> Vec<(libc::__rlimit_resource_t, u64)> {
    vec![
        (libc::RLIMIT_NOFILE, 4096),
        (libc::RLIMIT_NPROC, TASKS),
        // Disks are written in place, never grown; the limit is the largest disk (or the
        // guest's memory, whichever is larger).
        (libc::RLIMIT_FSIZE, max_file),
        (libc::RLIMIT_MEMLOCK, 64 << 10),
        (libc::RLIMIT_CORE, 0),
    ]
}

pub(super) fn start(spec: &VmSpec, kvm: bool) -> Result<VmHandle, String> {
    // Before anything is started: a bad setting must leave nothing behind.
    let accel = accel(kvm)?;
    let qemu = paths::on_path("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/setup.sh does)")?;
    let vhost = paths::on_path("vhost-device-vsock").ok_or(
        "vhost-device-vsock not found: `cargo install vhost-device-vsock` (scripts/setup.sh does)",
    )?;
    let vm_dir = spec.vm_dir();
    let run_name = spec.name();
    let slot = jail::take_uid(&run_name)?;
    let uid = slot.uid;
    jail::hand_vm_dir(&vm_dir, uid)?;
    let overhead = if kvm { OVERHEAD_KVM } else { OVERHEAD_TCG };
    let cgroups = jail::Cgroups::make(
        &format!("{run_name}-{uid}"),
        (spec.mem_mib << 20) + overhead,
        TASKS,
        spec.cgroup_parent.as_deref(),
    );
    let jail_root = |name: &str| -> Result<std::path::PathBuf, String> {
        let d = spec.run_dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(d)
    };
    let vm_bind = Bind {
        src: vm_dir.clone(),
        dst: VM_DIR.into(),
        writable: true,
    };
    let mut pumps = Vec::new();

    let helper_log = log_pipe(&spec.run_dir.join("vhost-vsock.log"), &mut pumps)?;
    let vhost_sock = vm_dir.join("vhost.sock");
    let mut helper = Helper(Some(jail::spawn(JailSpec {
        name: "vhost-device-vsock",
        program: vhost,
        args: vec![
            "--vm".into(),
            format!("guest-cid=3,socket={VM_DIR}/vhost.sock,uds-path={VM_DIR}/vsock.sock"),
        ],
        root: Some(jail_root("jail-vsock")?),
        binds: vec![vm_bind.clone()],
        devices: Vec::new(),
        uid: Some(uid),
        new_net: true,
        rlimits: rlimits(1 << 20),
        keep_fds: Vec::new(),
        stdout: OwnedFd::from(File::open("/dev/null").map_err(|e| e.to_string())?),
        stderr: helper_log,
        cgroup_procs: cgroups.procs_files(),
    })?));
    if let Some(h) = helper.0.as_mut() {
        wait_for_socket(&vhost_sock, h)?;
    }

    // Disks and TAPs are opened here and handed over (`-add-fd`, `tap,fd=`).
    let mut handed: Vec<OwnedFd> = Vec::new();
    let mut max_disk = 1u64 << 20;
    let mut args: Vec<String> = Vec::new();
    let mem = format!("{}M", spec.mem_mib);
    let a = |args: &mut Vec<String>, v: &[&str]| args.extend(v.iter().map(|s| s.to_string()));
    a(&mut args, &["-M", "microvm,acpi=off,memory-backend=mem"]);
    a(&mut args, &["-accel", &accel]);
    a(
        &mut args,
        &[
            "-cpu",
            if kvm {
                "host,-arch-capabilities"
            } else {
                "max"
            },
        ],
    );
    a(&mut args, &["-m", &mem, "-smp", &spec.vcpus.to_string()]);
    a(
        &mut args,
        &[
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ],
    );
    a(&mut args, &["-kernel", "/kernel"]);
    a(
        &mut args,
        &["-append", &format!("{} reboot=t", spec.cmdline)],
    );
    a(
        &mut args,
        &[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ],
    );
    // QEMU's own seccomp filter on top of the jail.
    a(
        &mut args,
        &[
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ],
    );
    // The console goes to our pipe, which keeps console.log bounded (logfile::pump).
    a(
        &mut args,
        &[
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ],
    );
    for (i, d) in spec.disks.iter().enumerate() {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(!d.read_only)
            .open(&d.path)
            .map_err(|e| format!("cannot open disk {}: {e}", d.path.display()))?;
        max_disk = max_disk.max(f.metadata().map(|m| m.len()).unwrap_or(0));
        let fd = OwnedFd::from(f);
        let set = i + 1;
        args.push("-add-fd".into());
        args.push(format!("fd={},set={set}", fd.as_raw_fd()));
        if !d.read_only {
            // QEMU also opens a writable image read-only (its probes and lock checks): the set
            // holds a descriptor of each access mode, and it takes the matching one.
            let ro = std::fs::File::open(&d.path)
                .map_err(|e| format!("cannot open disk {}: {e}", d.path.display()))?;
            let ro = OwnedFd::from(ro);
            args.push("-add-fd".into());
            args.push(format!("fd={},set={set}", ro.as_raw_fd()));
            handed.push(ro);
        }
        args.push("-drive".into());
        args.push(format!(
            "id=d{i},file=/dev/fdset/{set},format=raw,if=none,readonly={},discard=unmap",
            if d.read_only { "on" } else { "off" }
        ));
        args.push("-device".into());
        args.push(format!("virtio-blk-device,drive=d{i},serial={}", d.id));
        handed.push(fd);
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let fd = jail::open_tap(&n.tap)?;
        args.push("-netdev".into());
        args.push(format!("tap,id=n{i},fd={}", fd.as_raw_fd()));
        args.push("-device".into());
        args.push(format!("virtio-net-device,netdev=n{i},mac={}", n.mac));
        handed.push(fd);
    }
    let mut binds = vec![
        vm_bind,
        Bind {
            src: spec.kernel.clone(),
            dst: "/kernel".into(),
            writable: false,
        },
    ];
    for (i, f) in spec.shares.iter().enumerate() {
        jail::chown(&f.socket, uid)?;
        let inside = format!("/fs{i}.sock");
        binds.push(Bind {
            src: f.socket.clone(),
            dst: inside.clone(),
            writable: true,
        });
        args.push("-chardev".into());
        args.push(format!("socket,id=fs{i},path={inside}"));
        args.push("-device".into());
        args.push(format!("vhost-user-fs-device,chardev=fs{i},tag={}", f.tag));
    }
    args.push("-chardev".into());
    args.push(format!("socket,id=vsock,path={VM_DIR}/vhost.sock"));
    a(
        &mut args,
        &["-device", "vhost-user-vsock-device,chardev=vsock"],
    );

    let console = log_pipe(&spec.console_path(), &mut pumps)?;
    let log = log_pipe(&spec.vmm_log_path(), &mut pumps)?;
    let started = jail::spawn(JailSpec {
        name: "qemu-system-x86_64",
        program: qemu,
        args,
        root: Some(jail_root("jail-qemu")?),
        binds,
        devices: if kvm {
            vec![jail::KVM_DEVICE]
        } else {
            Vec::new()
        },
        uid: Some(uid),
        new_net: true,
        // Guest RAM is a memfd QEMU sizes itself, which counts against RLIMIT_FSIZE too: a
        // VM whose disks are all smaller than its memory (an OCI bundle's, rooted on
        // virtio-fs) must still be able to make it.
        rlimits: rlimits(max_disk.max(spec.mem_mib << 20) + (1 << 20)),
        keep_fds: handed.iter().map(|f| f.as_raw_fd()).collect(),
        stdout: console,
        stderr: log,
        cgroup_procs: cgroups.procs_files(),
    });
    drop(handed);
    let child = started?;
    Ok(VmHandle {
        child,
        helpers: helper.0.take().into_iter().collect(),
        names: vec!["qemu-system-x86_64", "vhost-device-vsock"],
        log: spec.vmm_log_path(),
        pumps,
        _uid: Some(slot),
        _cgroups: Some(cgroups),
    })
}

/// The vsock helper of a VM being started: killed if the VM's start fails after it (a disk
/// or TAP that cannot be opened, QEMU that cannot be spawned), taken by the VM's handle
/// otherwise.
struct Helper(Option<Proc>);

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(h) = self.0.as_mut() {
            h.kill();
            h.wait();
        }
    }
}

/// The TCG translation cache mvm gives each QEMU, in MiB: QEMU 7.2's own default reserves up to
/// 1 GiB per VM and fills it with code translated once at boot, which then stays resident
/// while the container idles.
pub const DEFAULT_TB_MIB: u32 = 32;

/// The translation cache size: `MVM_QEMU_TB_MIB` (0: QEMU's own default), else
/// [`DEFAULT_TB_MIB`].
fn tb_mib() -> Result<u32, String> {
    match std::env::var("MVM_QEMU_TB_MIB") {
        Err(_) => Ok(DEFAULT_TB_MIB),
        Ok(v) => v.trim().parse().map_err(|_| {
            format!("MVM_QEMU_TB_MIB={v:?}: expected a size in MiB (0 for QEMU's default)")
        }),
    }
}

/// `-accel`'s value: KVM, or TCG with a bounded translation cache.
fn accel(kvm: bool) -> Result<String, String> {
    Ok(match (kvm, tb_mib()?) {
        (true, _) => "kvm".into(),
        (false, 0) => "tcg".into(),
        (false, mib) => format!("tcg,tb-size={mib}"),
    })
}

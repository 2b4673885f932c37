//! The `mvm` backend: our own VMM, one `mvm-vmm` process per VM, configured by a JSON file.

use std::path::Path;

use mvm_vmm_config::{
    DiskConfig, FsConfig, JailMode, NetConfig, SeccompMode, SerialOutput, VmConfig, VsockConfig,
};

use super::{VmHandle, VmSpec, log_pipe, template};
use crate::paths;

/// Memory our VMM may use beyond the guest's RAM.
const VMM_OVERHEAD: u64 = 64 << 20;
/// The guest's vsock CID: the first one not reserved; each VM has its own vsock device, so
/// they need not differ.
const GUEST_CID: u64 = mvm_vmm_config::MIN_GUEST_CID;

pub(super) fn start(spec: &VmSpec) -> Result<VmHandle, String> {
    let vmm = paths::vmm()?;
    if template::enabled()? && template::unsuitable(spec).is_none() {
        match warm_start(spec, &vmm) {
            Ok(handle) => return Ok(handle),
            // A warm start that fails costs its time, never the container: boot it cold, and
            // say why where the VM's logs are.
            Err(e) => {
                let _ = std::fs::write(
                    spec.run_dir.join("warm-start.log"),
                    format!("warm start failed, booted cold: {e}\n"),
                );
            }
        }
    }
    launch(spec, &vmm, None)
}

/// Restores `spec`'s shape's template (made first if there is none) and tells its agent
/// which container it is.
fn warm_start(spec: &VmSpec, vmm: &Path) -> Result<VmHandle, String> {
    let t = template::ensure(spec, vmm, &paths::cache_dir())?;
    let mut handle = launch(spec, vmm, Some(&t))?;
    let macs: Vec<_> = spec.nics.iter().map(|n| n.mac).collect();
    let mut alive = || handle.child.try_wait().is_none();
    match template::warm_boot(&spec.vsock_path(), &spec.cmdline, &macs, &mut alive) {
        Ok(()) => Ok(handle),
        Err(f) => {
            drop(handle);
            if f.template_suspect {
                // Made again on the next start (a template of another VMM build, say).
                template::discard(&t);
            }
            Err(f.message)
        }
    }
}

/// Starts the VMM for `spec`: booting its kernel, or restoring `template`.
fn launch(
    spec: &VmSpec,
    vmm: &Path,
    template: Option<&template::Template>,
) -> Result<VmHandle, String> {
    let vmm = vmm.to_path_buf();
    let vm_dir = spec.vm_dir();
    let run_name = spec.name();
    // The VMM opens its devices as root, then jails itself (vmm/src/jail.rs) and drops to the
    // VM's own uid; what it reaches after that (its chroot, the callback sockets the guest
    // dials, the exit record) is handed to that uid here.
    let slot = super::jail::take_uid(&run_name)?;
    let uid = slot.uid;
    super::jail::hand_vm_dir(&vm_dir, uid)?;
    let cgroups = super::jail::Cgroups::make(
        &format!("{run_name}-{uid}"),
        (spec.mem_mib << 20) + VMM_OVERHEAD,
        u64::from(spec.vcpus) + 16,
        spec.cgroup_parent.as_deref(),
    );
    let mut config = vmm_config(spec, &vm_dir, uid);
    if let Some(t) = template {
        config.restore = Some(template::restore_source(t));
    }
    let config = serde_json::to_string(&config)
        .map_err(|e| format!("cannot serialize the VMM's config: {e}"))?;
    let config_path = spec.run_dir.join("vmm.json");
    std::fs::write(&config_path, config)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let mut pumps = Vec::new();
    let console = log_pipe(&spec.console_path(), &mut pumps)?;
    let log = log_pipe(&spec.vmm_log_path(), &mut pumps)?;
    // A PID namespace of its own and the VM's cgroups from the start; the VMM makes its
    // other namespaces itself once its TAPs (which live in the host's network namespace)
    // are open.
    let child = super::jail::spawn(super::jail::JailSpec {
        name: "mvm-vmm",
        program: vmm,
        args: vec![
            "--config".into(),
            config_path.to_string_lossy().into_owned(),
        ],
        root: None,
        binds: Vec::new(),
        devices: Vec::new(),
        uid: None,
        new_net: false,
        rlimits: Vec::new(),
        keep_fds: Vec::new(),
        stdout: console,
        stderr: log,
        cgroup_procs: cgroups.procs_files(),
    })?;
    Ok(VmHandle {
        child,
        helpers: Vec::new(),
        names: vec!["mvm-vmm"],
        log: spec.vmm_log_path(),
        pumps,
        _uid: Some(slot),
        _cgroups: Some(cgroups),
    })
}

/// The VMM's config for `spec`, in the types the VMM itself reads (one definition of the
/// contract); the VMM jails itself and takes `uid` as its uid and gid.
pub(super) fn vmm_config(spec: &VmSpec, vm_dir: &Path, uid: u32) -> VmConfig {
    VmConfig {
        kernel: spec.kernel.clone(),
        initrd: None,
        cmdline: format!("{} reboot=k", spec.cmdline),
        vcpus: spec.vcpus,
        mem_mib: spec.mem_mib,
        disks: spec
            .disks
            .iter()
            .map(|d| DiskConfig {
                path: d.path.clone(),
                read_only: d.read_only,
                id: Some(d.id.clone()),
            })
            .collect(),
        vsock: Some(VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: spec.vsock_path(),
        }),
        net: spec
            .nics
            .iter()
            .map(|n| NetConfig {
                tap: n.tap.clone(),
                mac: Some(n.mac.to_string()),
            })
            .collect(),
        fs: spec
            .shares
            .iter()
            .map(|f| FsConfig {
                socket: f.socket.clone(),
                tag: f.tag.clone(),
            })
            .collect(),
        // Both go to pipes that keep console.log and vmm.log bounded (logfile::pump).
        serial: SerialOutput::Stdout,
        exit_record: Some(vm_dir.join("exit.json")),
        seccomp: SeccompMode::Kill,
        jail: JailMode::Auto,
        jail_uid: Some(uid),
        jail_gid: Some(uid),
        // Pause, resume and snapshot for the engine (checkpoints); in the VMM's jail root.
        api_socket: Some(vm_dir.join("api.sock")),
        restore: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::backend::{Disk, Kind, Nic, Share};

    /// A VM with everything the engine gives one: disks, NICs, shares, vsock and a jail uid.
    fn spec() -> VmSpec {
        VmSpec {
            kernel: "/var/lib/mvm/kernel/vmlinux".into(),
            cmdline: "console=ttyS0 quiet".into(),
            vcpus: 2,
            mem_mib: 256,
            disks: vec![
                Disk {
                    path: "/var/lib/mvm/containers/abc/rootfs.img".into(),
                    read_only: false,
                    id: "rootfs".into(),
                },
                Disk {
                    path: "/var/lib/mvm/volumes/data.img".into(),
                    read_only: true,
                    id: "vol-data".into(),
                },
            ],
            run_dir: "/run/mvm/abc123".into(),
            nics: vec![
                Nic {
                    tap: "mvm-abc123-0".into(),
                    mac: "02:42:0a:58:00:02".parse().unwrap(),
                },
                Nic {
                    tap: "mvm-abc123-1".into(),
                    mac: "02:42:0a:59:00:02".parse().unwrap(),
                },
            ],
            shares: vec![Share {
                socket: "/run/mvm/abc123/fs0.sock".into(),
                tag: "share0".into(),
            }],
            cgroup_parent: None,
        }
    }

    #[test]
    fn the_config_written_is_one_the_vmm_reads_and_accepts() {
        let spec = spec();
        let vm_dir = spec.vm_dir();
        let written = serde_json::to_string(&vmm_config(&spec, &vm_dir, 100_007)).unwrap();
        // The VMM's own parser (unknown fields refused) and its rules that need no host files.
        let read: VmConfig = serde_json::from_str(&written).unwrap();
        read.validate_rules().unwrap();
        assert_eq!(read.kernel, spec.kernel);
        assert_eq!(read.cmdline, "console=ttyS0 quiet reboot=k");
        assert_eq!((read.vcpus, read.mem_mib), (2, 256));
        assert_eq!(read.disks.len(), 2);
        assert!(read.disks[1].read_only);
        assert_eq!(read.disks[0].id.as_deref(), Some("rootfs"));
        assert_eq!(read.net[1].mac_addr().unwrap(), [2, 0x42, 10, 0x59, 0, 2]);
        assert_eq!(read.fs[0].tag, "share0");
        let vsock = read.vsock.as_ref().unwrap();
        assert_eq!(vsock.uds_path, spec.vsock_path());
        assert!(vsock.guest_cid >= mvm_vmm_config::MIN_GUEST_CID);
        assert_eq!(read.exit_record, Some(vm_dir.join("exit.json")));
        assert_eq!(read.serial, SerialOutput::Stdout);
        assert_eq!(read.jail, JailMode::Auto);
        assert_eq!(
            read.jail_identity(),
            Some(mvm_vmm_config::Identity {
                uid: 100_007,
                gid: 100_007
            })
        );
        assert_eq!(read, vmm_config(&spec, &vm_dir, 100_007));
    }

    #[test]
    fn a_full_vm_fits_the_vmm_and_one_more_device_does_not() {
        let mut spec = spec();
        // vsock takes one slot; disks fill the rest.
        let free = Kind::Mvm.virtio_slots() - 1 - spec.nics.len() - spec.shares.len();
        spec.disks = (0..free)
            .map(|i| Disk {
                path: PathBuf::from(format!("/d{i}")),
                read_only: false,
                id: format!("d{i}"),
            })
            .collect();
        let vm_dir = spec.vm_dir();
        vmm_config(&spec, &vm_dir, 100_007)
            .validate_rules()
            .unwrap();
        spec.disks.push(Disk {
            path: "/extra".into(),
            read_only: false,
            id: "extra".into(),
        });
        let e = vmm_config(&spec, &vm_dir, 100_007)
            .validate_rules()
            .unwrap_err();
        assert!(e.to_string().contains("virtio devices"), "{e}");
    }
}

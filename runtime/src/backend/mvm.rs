//! The `mvm` backend: our own VMM, one `mvm-vmm` process per VM, configured by a JSON file.

use super::{VmHandle, VmSpec, log_pipe};
use crate::paths;

/// Memory our VMM may use beyond the guest's RAM.
const VMM_OVERHEAD: u64 = 64 << 20;

pub(super) fn start(spec: &VmSpec) -> Result<VmHandle, String> {
    let vmm = paths::vmm()?;
    let vm_dir = spec.vm_dir();
    let run_name = spec.name();
    // The VMM opens its devices as root, then jails itself (vmm/src/jail.rs) and drops to the
    // VM's own uid; what it reaches after that (its chroot, the callback sockets the guest
    // dials, the exit record) is handed to that uid here.
    let slot = super::jail::take_uid(&run_name)?;
    let uid = slot.uid;
    super::qemu::hand_vm_dir(&vm_dir, uid)?;
    let cgroups = super::jail::Cgroups::make(
        &format!("{run_name}-{uid}"),
        (spec.mem_mib << 20) + VMM_OVERHEAD,
        u64::from(spec.vcpus) + 16,
    );
    let config = serde_json::json!({
        "kernel": spec.kernel,
        "cmdline": format!("{} reboot=k", spec.cmdline),
        "vcpus": spec.vcpus,
        "mem_mib": spec.mem_mib,
        "disks": spec.disks.iter().map(|d| serde_json::json!({
            "path": d.path, "read_only": d.read_only, "id": d.id,
        })).collect::<Vec<_>>(),
        "vsock": { "guest_cid": 3, "uds_path": spec.vsock_path() },
        // Both go to pipes that keep console.log and vmm.log bounded (logfile::pump).
        "serial": { "kind": "stdout" },
        "exit_record": vm_dir.join("exit.json"),
        "jail_uid": uid,
        "jail_gid": uid,
    });
    let mut config = config;
    if !spec.nics.is_empty() {
        config["net"] = spec
            .nics
            .iter()
            .map(|n| serde_json::json!({ "tap": n.tap, "mac": n.mac }))
            .collect();
    }
    if !spec.shares.is_empty() {
        config["fs"] = spec
            .shares
            .iter()
            .map(|f| serde_json::json!({ "socket": f.socket, "tag": f.tag }))
            .collect();
    }
    let config_path = spec.run_dir.join("vmm.json");
    std::fs::write(&config_path, config.to_string())
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

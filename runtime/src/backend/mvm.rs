//! The `mvm` backend: our own VMM, one `mvm-vmm` process per VM, configured by a JSON file.

use std::process::Stdio;

use super::{VmHandle, VmSpec, log_pipe, vm_command};
use crate::paths;

pub(super) fn start(spec: &VmSpec) -> Result<VmHandle, String> {
    let vmm = paths::vmm()?;
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
        "exit_record": spec.vm_dir().join("exit.json"),
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
    let child = vm_command(&vmm)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    Ok(VmHandle {
        child,
        helpers: Vec::new(),
        names: vec!["mvm-vmm"],
        log: spec.vmm_log_path(),
        pumps,
    })
}

//! The `qemu` backend: `qemu-system-x86_64 -M microvm` with the same kernel and disks, and
//! virtio-vsock through `vhost-device-vsock`, whose host side is the same hybrid-vsock unix
//! socket our VMM offers (reference/qemu-vsock.md).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{VmHandle, VmSpec, log_pipe, vm_command};
use crate::paths;

/// How long vhost-device-vsock may take to create its socket.
const VHOST_SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

fn wait_for_socket(path: &Path, helper: &mut std::process::Child) -> Result<(), String> {
    let deadline = Instant::now() + VHOST_SOCKET_TIMEOUT;
    while !path.exists() {
        if let Ok(Some(status)) = helper.try_wait() {
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

pub(super) fn start(spec: &VmSpec, kvm: bool) -> Result<VmHandle, String> {
    let qemu = paths::on_path("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/setup.sh does)")?;
    let vhost = paths::on_path("vhost-device-vsock").ok_or(
        "vhost-device-vsock not found: `cargo install vhost-device-vsock` (scripts/setup.sh does)",
    )?;
    let vhost_sock = spec.run_dir.join("vhost.sock");
    let mut pumps = Vec::new();
    let helper_log = log_pipe(&spec.run_dir.join("vhost-vsock.log"), &mut pumps)?;
    let mut helper = vm_command(&vhost)
        .arg("--vm")
        .arg(format!(
            "guest-cid=3,socket={},uds-path={}",
            vhost_sock.display(),
            spec.vsock_path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(helper_log)
        .spawn()
        .map_err(|e| format!("cannot start vhost-device-vsock: {e}"))?;
    if let Err(e) = wait_for_socket(&vhost_sock, &mut helper) {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(e);
    }

    let mem = format!("{}M", spec.mem_mib);
    let mut cmd = vm_command(&qemu);
    cmd.args(["-M", "microvm,acpi=off,memory-backend=mem"])
        .args(["-accel", if kvm { "kvm" } else { "tcg" }])
        .args([
            "-cpu",
            if kvm {
                "host,-arch-capabilities"
            } else {
                "max"
            },
        ])
        .args(["-m", &mem, "-smp", &spec.vcpus.to_string()])
        .arg("-object")
        .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-append")
        .arg(format!("{} reboot=t", spec.cmdline))
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        // The console goes to our pipe, which keeps console.log bounded (logfile::pump).
        .args([
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ]);
    for (i, d) in spec.disks.iter().enumerate() {
        cmd.arg("-drive").arg(format!(
            "id=d{i},file={},format=raw,if=none,readonly={},discard=unmap",
            d.path.display(),
            if d.read_only { "on" } else { "off" }
        ));
        cmd.arg("-device")
            .arg(format!("virtio-blk-device,drive=d{i},serial={}", d.id));
    }
    for (i, n) in spec.nics.iter().enumerate() {
        cmd.arg("-netdev")
            .arg(format!(
                "tap,id=n{i},ifname={},script=no,downscript=no",
                n.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-device,netdev=n{i},mac={}", n.mac));
    }
    for (i, f) in spec.shares.iter().enumerate() {
        cmd.arg("-chardev")
            .arg(format!("socket,id=fs{i},path={}", f.socket.display()))
            .arg("-device")
            .arg(format!("vhost-user-fs-device,chardev=fs{i},tag={}", f.tag));
    }
    cmd.arg("-chardev")
        .arg(format!("socket,id=vsock,path={}", vhost_sock.display()))
        .args(["-device", "vhost-user-vsock-device,chardev=vsock"]);
    let console = log_pipe(&spec.console_path(), &mut pumps)?;
    let log = log_pipe(&spec.vmm_log_path(), &mut pumps)?;
    let child = match cmd.stdin(Stdio::null()).stdout(console).stderr(log).spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = helper.kill();
            let _ = helper.wait();
            return Err(format!("cannot start qemu: {e}"));
        }
    };
    Ok(VmHandle {
        child,
        helpers: vec![helper],
        names: vec!["qemu-system-x86_64", "vhost-device-vsock"],
        log: spec.vmm_log_path(),
        pumps,
    })
}

//! `state`, `kill`, `delete`, `ps`, `pause`, `resume`, `update`, `features`, `list`.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use mvm_engine::container::spec::parse_signal;
use nix::sys::signal::{Signal, kill as send_signal};
use nix::unistd::Pid;

use super::Context;
use crate::bundle::Bundle;
use crate::error::RuntimeError;
use crate::hooks;
use crate::state::{Status, Stored};

/// How long `delete` waits for a relay that is ending by itself.
const RELAY_EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long a relay may take to end after SIGKILL (its VM's processes die with it).
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long the container's process may take to die of a SIGKILL sent through the agent
/// before the relay itself is killed (a guest that does not obey is cut off).
const GUEST_KILL_GRACE: Duration = Duration::from_secs(2);

/// `state`: runtime-spec state JSON.
pub fn state(ctx: &Context, id: &str) -> Result<i32, RuntimeError> {
    let s = ctx.store.load(id)?;
    let text = serde_json::to_string_pretty(&s.to_json())
        .map_err(|e| RuntimeError::Other(e.to_string()))?;
    println!("{text}");
    Ok(0)
}

/// `kill ID SIG`: through the relay to the container's process.
pub fn kill(ctx: &Context, id: &str, signal: &str) -> Result<i32, RuntimeError> {
    let sig = parse_signal(signal).ok_or_else(|| RuntimeError::BadSignal(signal.into()))?;
    let s = ctx.store.load(id)?;
    let status = s.status();
    match status {
        Status::Stopped | Status::Creating => {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.name(),
                action: "container not running",
            });
        }
        Status::Paused if sig == libc::SIGKILL => {
            // A frozen VM cannot act on the signal: thaw it first, as a paused runc container's
            // SIGKILL takes effect.
            signal_vm(&s, Signal::SIGCONT);
            ctx.store.update(id, |s| s.status = Status::Running)?;
        }
        _ => {}
    }
    let sent = mvm_engine::session::request_signal(&s.control_path(), sig);
    if sig == libc::SIGKILL {
        // The agent may not obey: the relay (and with it the VM) ends anyway.
        if !wait_gone(&s, GUEST_KILL_GRACE) {
            kill_relay(&s);
        }
        return Ok(0);
    }
    sent.map_err(|e| RuntimeError::Other(format!("cannot signal container {id}: {e}")))?;
    Ok(0)
}

/// Whether `s`'s relay ended within `timeout`.
fn wait_gone(s: &Stored, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while s.relay_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// SIGKILLs the relay (if it is still the recorded process) and waits for it to end.
fn kill_relay(s: &Stored) {
    if let (Some(pid), true) = (s.pid, s.relay_alive()) {
        // A paused VM's processes are stopped; the relay is not, and its death ends them.
        let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
        wait_gone(s, KILL_WAIT);
    }
}

/// Sends `sig` to each of the VM's host processes still alive.
fn signal_vm(s: &Stored, sig: Signal) {
    if !s.relay_alive() {
        return;
    }
    for pid in &s.vm_pids {
        if let Ok(pid) = i32::try_from(*pid) {
            let _ = send_signal(Pid::from_raw(pid), sig);
        }
    }
}

/// `delete [--force] ID`.
pub fn delete(ctx: &Context, id: &str, force: bool) -> Result<i32, RuntimeError> {
    let s = match ctx.store.load(id) {
        Ok(s) => s,
        // As runc: deleting what is already gone is not an error with --force.
        Err(RuntimeError::NotFound(_)) if force => return Ok(0),
        Err(e) => return Err(e),
    };
    let _lock = ctx.store.lock(id)?;
    // A process that just ended leaves its relay a moment to power the VM off and exit: the
    // engine's `delete` often follows the exit (or a failed start) at once.
    if !force && matches!(s.status(), Status::Running | Status::Paused) {
        wait_gone(&s, RELAY_EXIT_WAIT);
    }
    match s.status() {
        Status::Stopped | Status::Created | Status::Creating => {}
        status if !force => {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.name(),
                action: "cannot delete a container that is not stopped (use --force)",
            });
        }
        _ => {}
    }
    if s.status() == Status::Paused {
        signal_vm(&s, Signal::SIGCONT);
    }
    kill_relay(&s);
    if let Some(c) = &s.cgroup {
        crate::cgroups::remove(c);
    }
    let state = s.to_json_with(Status::Stopped).to_string();
    match Bundle::load(&s.bundle) {
        Ok(b) => {
            if let Err(e) = hooks::run_all("poststop", &b.hooks.poststop, &state) {
                ctx.log.warn(&e.to_string());
            }
        }
        Err(e) => ctx.log.debug(&format!("poststop hooks not run: {e}")),
    }
    ctx.store.remove(&s);
    Ok(0)
}

/// `ps --format json|table ID`: the container's host processes (the relay, then the VM's
/// hypervisor and helpers); what runs in the guest is the guest's.
pub fn ps(ctx: &Context, id: &str, format: &str) -> Result<i32, RuntimeError> {
    let s = ctx.store.load(id)?;
    let mut pids: Vec<i32> = s.pid.filter(|_| s.relay_alive()).into_iter().collect();
    if !pids.is_empty() {
        pids.extend(
            s.vm_pids
                .iter()
                .filter_map(|p| i32::try_from(*p).ok())
                .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        );
    }
    match format {
        "json" => println!("{}", serde_json::json!(pids)),
        "table" => {
            println!("PID");
            for p in pids {
                println!("{p}");
            }
        }
        other => {
            return Err(RuntimeError::Unsupported(format!(
                "invalid format {other:?}: use table or json"
            )));
        }
    }
    Ok(0)
}

/// `pause`: the VM's processes stopped.
pub fn pause(ctx: &Context, id: &str) -> Result<i32, RuntimeError> {
    freeze(ctx, id, true)
}

/// `resume`.
pub fn resume(ctx: &Context, id: &str) -> Result<i32, RuntimeError> {
    freeze(ctx, id, false)
}

fn freeze(ctx: &Context, id: &str, pause: bool) -> Result<i32, RuntimeError> {
    let _lock = ctx.store.lock(id)?;
    let s = ctx.store.load(id)?;
    let (from, to, sig, action) = if pause {
        (
            Status::Running,
            Status::Paused,
            Signal::SIGSTOP,
            "only a running container can be paused",
        )
    } else {
        (
            Status::Paused,
            Status::Running,
            Signal::SIGCONT,
            "only a paused container can be resumed",
        )
    };
    if s.status() != from {
        return Err(RuntimeError::WrongStatus {
            id: id.into(),
            status: s.status().name(),
            action,
        });
    }
    signal_vm(&s, sig);
    let mut s = s;
    s.status = to;
    ctx.store.save(&s)?;
    Ok(0)
}

/// `update --resources FILE|- ID`: accepted and logged; a running microVM's memory and vCPUs
/// are fixed at boot.
pub fn update(ctx: &Context, id: &str, resources: Option<&Path>) -> Result<i32, RuntimeError> {
    let s = ctx.store.load(id)?;
    let mut text = String::new();
    match resources {
        Some(p) if p == Path::new("-") => {
            std::io::stdin()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| RuntimeError::Other(format!("cannot read the resources: {e}")))?;
        }
        Some(p) => {
            text = String::from_utf8_lossy(&crate::bundle::read_config(p)?).into_owned();
        }
        None => {}
    }
    if !text.trim().is_empty() {
        let _: oci_spec::runtime::LinuxResources = serde_json::from_str(&text)
            .map_err(|e| RuntimeError::Other(format!("bad resources JSON: {e}")))?;
    }
    ctx.log.debug(&format!(
        "update of {}: not applied, a running microVM keeps the memory and vCPUs it booted with",
        s.id
    ));
    Ok(0)
}

/// `features`: what this runtime supports, in runtime-spec's features document.
pub fn features() -> Result<i32, RuntimeError> {
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["network", "mount", "pid", "ipc", "uts"],
            "capabilities": [],
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "seccomp": {"enabled": false},
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.mvm.isolation": "kvm-microvm",
        },
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(0)
}

/// `list`.
pub fn list(ctx: &Context, format: &str, quiet: bool) -> Result<i32, RuntimeError> {
    let all: Vec<Stored> = ctx
        .store
        .ids()
        .iter()
        .filter_map(|id| ctx.store.load(id).ok())
        .collect();
    if quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match format {
        "json" => println!(
            "{}",
            serde_json::Value::Array(all.iter().map(Stored::to_json).collect())
        ),
        _ => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for s in &all {
                let j = s.to_json();
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {}",
                    s.id,
                    j["pid"],
                    s.status().name(),
                    s.bundle.display(),
                    s.created
                );
            }
        }
    }
    Ok(0)
}

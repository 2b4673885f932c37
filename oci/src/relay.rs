//! The relay: the process a container's `--pid-file` names. `create` starts it (in the
//! container's network namespace, with the container's stdio as its own), runs the hooks that
//! need its PID, then lets it go on: it boots the VM, says it is ready, waits on its control
//! socket for `start`, runs the container's process through the agent (stdio and signals
//! relayed, a terminal's resizes too) and exits with the process's exit code, which is what
//! the engine's shim waits for.
//!
//! Descriptors: 0/1/2 the container's stdio (or a pty slave), 3 the `ready` pipe to `create`,
//! 4 the `go` pipe from it. Nothing else is inherited.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use mvm_engine::sandbox::Sandbox;

use crate::bundle::{Bundle, Network};
use crate::error::RuntimeError;
use crate::log::Logger;
use crate::state::{Status, Store};
use crate::sync::{self, Reply};
use crate::{netns, process, vm};

/// The relay's end of the `ready` pipe.
pub const READY_FD: i32 = 3;
/// The relay's end of the `go` pipe.
pub const GO_FD: i32 = 4;

/// Runs the relay of container `id`; returns its exit code.
pub fn main(store: &Store, id: &str, log: &Logger) -> i32 {
    // SAFETY: `create` gave us these descriptors (see the module doc) and nothing else in
    // this process uses those numbers.
    let (ready, go) = unsafe { (File::from_raw_fd(READY_FD), File::from_raw_fd(GO_FD)) };
    // Until `create` has run the hooks that configure our network namespace.
    if !matches!(sync::receive(go), Ok(Reply::Ok(_))) {
        return 1;
    }
    let sandbox = match prepare(store, id, log) {
        Ok(s) => s,
        Err(e) => {
            sync::send(&ready, &Reply::Failed(1, e.to_string()));
            return 1;
        }
    };
    let (sandbox, listener, bundle, joined) = sandbox;
    sync::send(&ready, &Reply::Ok(String::new()));
    drop(ready);
    let start = match wait_for_start(&listener, log) {
        Some(conn) => conn,
        None => {
            sandbox.kill();
            netns::disconnect(&joined);
            return 137;
        }
    };
    let mut spec = process::to_agent(&bundle.process, process::stdin_is_open());
    // Applied in the guest, in the container's own mount namespace.
    spec.masked_paths = bundle.linux.masked_paths.clone();
    spec.readonly_paths = bundle.linux.readonly_paths.clone();
    let mut sysctl: Vec<(String, String)> = bundle.linux.sysctl.clone().into_iter().collect();
    sysctl.sort();
    spec.sysctl = sysctl;
    let mut answer = start.try_clone().ok();
    let started = || {
        if let Err(e) = store.update(id, |s| s.status = Status::Running) {
            log.warn(&format!("cannot record {id} as running: {e}"));
        }
        if let Some(c) = answer.take() {
            sync::send(c, &Reply::Ok(String::new()));
        }
    };
    let stdio = process::relay_stdio(&spec);
    let result = sandbox.run(spec, stdio, Some(listener), started);
    netns::disconnect(&joined);
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.code();
            log.error(&format!("container {id}: {e}"));
            // `start` waits for an answer: the process never ran.
            sync::send(&start, &Reply::Failed(code, e.to_string()));
            code
        }
    }
}

/// Boots the VM and opens the control socket.
fn prepare(
    store: &Store,
    id: &str,
    log: &Logger,
) -> Result<(Sandbox, UnixListener, Bundle, netns::Joined), RuntimeError> {
    let stored = store.load(id)?;
    let bundle = Bundle::load(&stored.bundle)?;
    let (nics, joined) = match bundle.linux.network() {
        Network::Host => {
            return Err(RuntimeError::Unsupported(
                "a microVM cannot share the host's network namespace (--network host)".into(),
            ));
        }
        Network::New | Network::Join(_) => netns::connect(log)?,
    };
    // The engine's cgroup for the container: ours, then the VM's processes' too.
    let cgroup = stored
        .cgroup
        .clone()
        .filter(|c| match crate::cgroups::join(c) {
            Ok(()) => true,
            Err(e) => {
                log.warn(&format!(
                    "{id}: {e}; the VM runs in the runtime's own cgroups"
                ));
                false
            }
        });
    let selection = mvm_engine::backend::select(None).map_err(RuntimeError::Other)?;
    let (spec, notes) = vm::sandbox_spec(
        &bundle,
        selection.kind,
        stored.run_dir.clone(),
        mvm_engine::paths::cache_dir().join("oci"),
        nics,
        log.debug_enabled(),
    )?;
    let spec = mvm_engine::sandbox::SandboxSpec {
        cgroup_parent: cgroup,
        ..spec
    };
    for n in notes {
        log.debug(&format!("{id}: {n}"));
    }
    let sandbox = match Sandbox::boot(&spec) {
        Ok(s) => s,
        Err(e) => {
            netns::disconnect(&joined);
            return Err(e.into());
        }
    };
    let listener = UnixListener::bind(stored.control_path())
        .map_err(|e| RuntimeError::io(&stored.control_path(), e))?;
    let pids = sandbox.pids();
    store.update(id, |s| {
        s.vm_pids = pids;
        s.status = Status::Created;
    })?;
    Ok((sandbox, listener, bundle, joined))
}

/// A signal sent to the relay itself (blocked, as every forwarded signal is) that ends a
/// container not started yet: the engine may signal the pid it knows rather than call `kill`.
fn pending_end_signal() -> Option<i32> {
    let set = mvm_engine::session::forwarded_signals();
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: sigtimedwait with a valid set, an out-pointer to local storage and a zero
        // timeout: it only takes a pending signal of the set, if any.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), info.as_mut_ptr(), &zero) };
        match sig {
            libc::SIGWINCH => continue,
            s if s > 0 => return Some(s),
            _ => return None,
        }
    }
}

/// Serves the control socket until `start` (its connection is returned, to be answered once
/// the process runs) or a signal that ends a created container (`None`).
fn wait_for_start(listener: &UnixListener, log: &Logger) -> Option<UnixStream> {
    use std::os::fd::AsFd;
    loop {
        if let Some(sig) = pending_end_signal() {
            log.debug(&format!("signal {sig} before start: the container ends"));
            return None;
        }
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        match line.trim().split_once(' ').unwrap_or((line.trim(), "")) {
            ("start", _) => return Some(conn),
            ("signal", n) => match n.parse::<i32>() {
                // Signals whose default action does not end a process leave it waiting.
                Ok(libc::SIGCHLD | libc::SIGCONT | libc::SIGURG | libc::SIGWINCH) => {
                    let _ = conn.write_all(b"ok\n");
                }
                Ok(n) if (1..=64).contains(&n) => {
                    log.debug(&format!("signal {n} before start: the container ends"));
                    let _ = conn.write_all(b"ok\n");
                    return None;
                }
                _ => {
                    let _ = conn.write_all(b"error bad signal\n");
                }
            },
            _ => {
                let _ = conn.write_all(b"error the container has not started\n");
            }
        }
    }
}

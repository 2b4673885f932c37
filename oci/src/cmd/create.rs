//! `create`: check the bundle, start the relay in the container's network namespace, run the
//! hooks that need its PID (prestart, createRuntime: Docker's libnetwork hook configures the
//! namespace there), let the relay boot the VM, and write the pid file once it is ready.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Child;

use super::Context;
use crate::bundle::{Bundle, Network};
use crate::cli::CreateArgs;
use crate::error::RuntimeError;
use crate::state::{Status, Stored, start_time};
use crate::sync::{self, Reply};
use crate::{child, hooks};

/// `create`; on success the container is `created` and its relay waits for `start`.
pub fn create(ctx: &Context, args: &CreateArgs) -> Result<i32, RuntimeError> {
    if args.preserve_fds > 0 {
        return Err(RuntimeError::Unsupported(
            "--preserve-fds: descriptors cannot be passed into a microVM".into(),
        ));
    }
    let bundle = Bundle::load(&args.bundle)?;
    if bundle.process.terminal && args.console_socket.is_none() {
        return Err(RuntimeError::Unsupported(
            "cannot allocate a terminal without --console-socket".into(),
        ));
    }
    let netns = match bundle.linux.network() {
        Network::Host => {
            return Err(RuntimeError::Unsupported(
                "a microVM cannot share the host's network namespace (--network host)".into(),
            ));
        }
        Network::New => None,
        Network::Join(path) if crate::netns::is_own(&path)? => {
            return Err(RuntimeError::Unsupported(
                "a microVM cannot share the host's network namespace (--network host)".into(),
            ));
        }
        Network::Join(path) => Some(File::open(&path).map_err(|e| {
            RuntimeError::Other(format!("network namespace {}: {e}", path.display()))
        })?),
    };
    ctx.store.create_dir(&args.id)?;
    let mut stored = Stored {
        id: args.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.root.path.clone(),
        created: mvm_rootfs::time::now(),
        annotations: bundle.annotations.clone(),
        status: Status::Creating,
        pid: None,
        pid_start: None,
        run_dir: ctx.store.run_dir(&args.id),
        vm_pids: Vec::new(),
        cgroup: crate::cgroups::parent(bundle.linux.cgroups_path.as_deref(), ctx.systemd_cgroup),
    };
    let result = (|| {
        ctx.store.save(&stored)?;
        let mut relay = spawn_relay(ctx, args, &bundle, netns.as_ref())?;
        let pid = relay.child.id() as i32;
        stored.pid = Some(pid);
        stored.pid_start = start_time(pid);
        ctx.store.save(&stored)?;
        let state = stored.to_json_with(Status::Creating).to_string();
        let ready = (|| {
            hooks::run_all("prestart", &bundle.hooks.prestart, &state)?;
            hooks::run_all("createRuntime", &bundle.hooks.create_runtime, &state)?;
            sync::send(
                relay
                    .go
                    .take()
                    .ok_or_else(|| RuntimeError::Other("go pipe".into()))?,
                &Reply::Ok("go".into()),
            );
            match sync::receive(&relay.ready)? {
                Reply::Ok(_) => Ok(()),
                Reply::Failed(_, msg) => Err(RuntimeError::Other(msg)),
            }
        })();
        if let Err(e) = ready {
            let _ = relay.child.kill();
            let _ = relay.child.wait();
            return Err(e);
        }
        if let Some(path) = &args.pid_file {
            child::write_pid_file(path, pid as u32)?;
        }
        let state = ctx.store.load(&args.id)?.to_json().to_string();
        if let Err(e) = hooks::run_all("createContainer", &bundle.hooks.create_container, &state) {
            let _ = relay.child.kill();
            let _ = relay.child.wait();
            return Err(e);
        }
        // Not waited for: the relay outlives us and is the engine's (its subreaper's) child.
        std::mem::forget(relay.child);
        Ok(())
    })();
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            // The state and run directories, as far as they were made.
            ctx.store.remove(&stored);
            Err(e)
        }
    }
}

/// A relay being started: the process and our ends of its pipes.
struct Relay {
    child: Child,
    ready: File,
    go: Option<File>,
}

/// Starts `mvm-runc __relay ID` with the container's stdio (a pty slave, the master sent to
/// the console socket, when the bundle asks for a terminal), in the container's network
/// namespace: a new one, or `netns` joined.
fn spawn_relay(
    ctx: &Context,
    args: &CreateArgs,
    bundle: &Bundle,
    netns: Option<&File>,
) -> Result<Relay, RuntimeError> {
    let (ready_r, ready_w) = child::pipe()?;
    let (go_r, go_w) = child::pipe()?;
    let mut cmd = ctx.self_command()?;
    cmd.arg("__relay").arg(&args.id);
    let size = bundle.process.console_size.map(|(h, w)| {
        (
            u16::try_from(h).unwrap_or(24),
            u16::try_from(w).unwrap_or(80),
        )
    });
    let tty = child::terminal(
        &mut cmd,
        bundle.process.terminal,
        size,
        args.console_socket.as_deref(),
    )?;
    let net = match netns {
        Some(f) => child::Net::Join(f.as_raw_fd()),
        None => child::Net::New,
    };
    // fd 3 (READY_FD) and fd 4 (GO_FD) of the relay.
    child::prepare(&mut cmd, [ready_w.as_raw_fd(), go_r.as_raw_fd()], tty, net);
    let child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Other(format!("cannot start the container's relay: {e}")))?;
    drop((ready_w, go_r));
    Ok(Relay {
        child,
        ready: File::from(ready_r),
        go: Some(File::from(go_w)),
    })
}

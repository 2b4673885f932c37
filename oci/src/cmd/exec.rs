//! `exec`: one more process in a running container's VM. Like `create`, it starts a relay of
//! our own (`__exec`), whose PID goes to `--pid-file` and which exits with the process's exit
//! code; the process spec reaches it over a pipe (fd 3) and it reports the start on another
//! (fd 4).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use mvm_agent_protocol::ProcessSpec;

use super::Context;
use crate::cli::ExecArgs;
use crate::error::RuntimeError;
use crate::state::Status;
use crate::sync::{self, Reply};
use crate::{child, process};

const SPEC_FD: i32 = 3;
const READY_FD: i32 = 4;
/// The largest process spec read from the pipe.
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// The process `args` describe.
fn process_spec(args: &ExecArgs) -> Result<ProcessSpec, RuntimeError> {
    let stdin = process::stdin_is_open();
    if let Some(path) = &args.process {
        // It joins the container's PID namespace; it does not make one.
        return Ok(ProcessSpec {
            pid_namespace: false,
            no_create_cwd: true,
            ..process::to_agent(&process::load(path)?, stdin)
        });
    }
    if args.command.is_empty() {
        return Err(RuntimeError::Unsupported(
            "exec needs --process or a command".into(),
        ));
    }
    Ok(ProcessSpec {
        args: args.command.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone().unwrap_or_else(|| "/".into()),
        user: args.user.clone().unwrap_or_default(),
        terminal: args.tty,
        stdin: stdin || args.tty,
        no_create_cwd: true,
        // It joins the container's PID namespace (pid_namespace false).
        ..ProcessSpec::default()
    })
}

/// `exec`.
pub fn exec(ctx: &Context, args: &ExecArgs) -> Result<i32, RuntimeError> {
    let s = ctx.store.load(&args.id)?;
    if s.status() != Status::Running {
        return Err(RuntimeError::WrongStatus {
            id: args.id.clone(),
            status: s.status().name(),
            action: "cannot exec in a container that is not running",
        });
    }
    let spec = process_spec(args)?;
    let (spec_r, spec_w) = child::pipe()?;
    let (ready_r, ready_w) = child::pipe()?;
    let mut cmd = ctx.self_command()?;
    cmd.arg("__exec").arg(&args.id);
    let tty = child::terminal(
        &mut cmd,
        spec.terminal,
        None,
        args.console_socket.as_deref(),
    )?;
    // fd 3 (SPEC_FD) and fd 4 (READY_FD) of the exec relay; the container's namespaces are
    // the VM's, reached over vsock.
    child::prepare(
        &mut cmd,
        [spec_r.as_raw_fd(), ready_w.as_raw_fd()],
        tty,
        child::Net::Same,
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Other(format!("cannot start the exec relay: {e}")))?;
    drop((spec_r, ready_w));
    let json = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Other(e.to_string()))?;
    let _ = File::from(spec_w).write_all(&json);
    match sync::receive(File::from(ready_r)) {
        Ok(Reply::Ok(_)) => {}
        Ok(Reply::Failed(_, msg)) => {
            let _ = child.wait();
            return Err(RuntimeError::Other(msg));
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
    if let Some(path) = &args.pid_file {
        child::write_pid_file(path, child.id())?;
    }
    if args.detach {
        // The exec relay is the engine's (its subreaper's) to wait for.
        std::mem::forget(child);
        return Ok(0);
    }
    let status = child
        .wait()
        .map_err(|e| RuntimeError::Other(format!("cannot wait for the exec relay: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// `__exec ID`: the exec relay.
pub fn exec_relay(ctx: &Context, id: &str) -> i32 {
    // SAFETY: `exec` gave us these descriptors and nothing else here uses those numbers.
    let (spec_in, ready) = unsafe { (File::from_raw_fd(SPEC_FD), File::from_raw_fd(READY_FD)) };
    let mut json = Vec::new();
    if spec_in.take(MAX_SPEC_BYTES).read_to_end(&mut json).is_err() {
        return 1;
    }
    let spec: ProcessSpec = match serde_json::from_slice(&json) {
        Ok(s) => s,
        Err(e) => {
            sync::send(&ready, &Reply::Failed(1, format!("bad process spec: {e}")));
            return 1;
        }
    };
    let s = match ctx.store.load(id) {
        Ok(s) => s,
        Err(e) => {
            sync::send(&ready, &Reply::Failed(1, e.to_string()));
            return 1;
        }
    };
    let mut ready = Some(ready);
    let stdio = process::relay_stdio(&spec);
    let result = mvm_engine::sandbox::exec(&s.vsock_path(), spec, stdio, || {
        if let Some(r) = ready.take() {
            sync::send(r, &Reply::Ok(String::new()));
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.code();
            match ready.take() {
                Some(r) => sync::send(r, &Reply::Failed(code, e.to_string())),
                None => ctx.log.error(&format!("exec in {id}: {e}")),
            }
            code
        }
    }
}

//! `start` (the relay runs the process) and `run` (create, start, wait, delete).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::Context;
use crate::bundle::Bundle;
use crate::cli::CreateArgs;
use crate::error::RuntimeError;
use crate::hooks;
use crate::state::Status;

/// How long the relay may take to start the process in the guest (TCG is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `start`: the created container's process runs once this returns.
pub fn start(ctx: &Context, id: &str) -> Result<i32, RuntimeError> {
    let stored = ctx.store.load(id)?;
    match stored.status() {
        Status::Created => {}
        s => {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: s.name(),
                action: "only a created container can be started",
            });
        }
    }
    let bundle = Bundle::load(&stored.bundle)?;
    let state = stored.to_json().to_string();
    hooks::run_all("startContainer", &bundle.hooks.start_container, &state)?;
    let fail = |e: std::io::Error| {
        RuntimeError::Other(format!("cannot reach the relay of container {id}: {e}"))
    };
    let mut conn = UnixStream::connect(stored.control_path()).map_err(fail)?;
    conn.set_read_timeout(Some(START_TIMEOUT)).map_err(fail)?;
    conn.write_all(b"start\n").map_err(fail)?;
    match crate::sync::receive(&conn)? {
        crate::sync::Reply::Ok(_) => {}
        crate::sync::Reply::Failed(_, msg) => return Err(RuntimeError::Other(msg)),
    }
    let state = ctx.store.load(id)?.to_json().to_string();
    if let Err(e) = hooks::run_all("poststart", &bundle.hooks.poststart, &state) {
        ctx.log.warn(&e.to_string());
    }
    Ok(0)
}

/// `run`: create, start, wait for the process, delete; the process's exit code.
pub fn run(ctx: &Context, args: &CreateArgs) -> Result<i32, RuntimeError> {
    super::create(ctx, args)?;
    let result = start(ctx, &args.id);
    let stored = ctx.store.load(&args.id)?;
    let code = match (result, stored.pid) {
        (Ok(_), Some(pid)) => wait(pid),
        (Err(e), _) => {
            let _ = super::delete(ctx, &args.id, true);
            return Err(e);
        }
        (Ok(_), None) => 1,
    };
    super::delete(ctx, &args.id, true)?;
    Ok(code)
}

/// Waits for our child `pid`; its exit code (128+N when a signal ended it).
fn wait(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

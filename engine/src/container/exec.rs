//! `exec`: one more process in a running container's VM, through its agent.

use std::path::Path;
use std::time::Duration;

use mvm_agent_protocol::{DEFAULT_VSOCK_PORT, ProcessSpec};

use super::{ContainerDirs, ContainerError, ContainerRecord, Status, resolve};
use crate::error::{EXIT_FAILED, EngineError};
use crate::session::{self, SessionError, Stdio};

/// The process to start, over the container's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv (not empty).
    pub args: Vec<String>,
    /// `K=V` values over the container's environment.
    pub env: Vec<String>,
    /// Working directory (the container's when `None`).
    pub workdir: Option<String>,
    /// User (the container's when `None`).
    pub user: Option<String>,
    /// A terminal.
    pub tty: bool,
    /// Stdin stays open.
    pub interactive: bool,
}

/// Container `key`, if it can take an `exec` (it runs, not paused or between restarts).
pub fn target(root: &Path, key: &str) -> Result<(ContainerDirs, ContainerRecord), ContainerError> {
    let (dirs, rec) = resolve(root, key)?;
    match rec.effective().0 {
        Status::Running => Ok((dirs, rec)),
        Status::Paused => Err(ContainerError::PausedExec(rec.id)),
        Status::Restarting => Err(ContainerError::Restarting(rec.id)),
        _ => Err(ContainerError::NotRunning(rec.id)),
    }
}

/// Runs `spec` in container `key` until it ends; its exit code. `attached`: its streams are
/// the caller's standard ones (stdin too with `interactive`); otherwise they are dropped.
/// `started` is called once the agent reports the process running.
pub fn exec(
    root: &Path,
    key: &str,
    spec: &ExecSpec,
    attached: bool,
    started: impl FnOnce(),
) -> Result<i32, EngineError> {
    if spec.args.is_empty() {
        return Err(EngineError::usage("exec needs a command".into()));
    }
    let (dirs, rec) = target(root, key)?;
    let mut env = rec.process.env.clone();
    for kv in &spec.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    let mut process = ProcessSpec {
        args: spec.args.clone(),
        env,
        cwd: spec
            .workdir
            .clone()
            .unwrap_or_else(|| rec.process.cwd.clone()),
        user: spec
            .user
            .clone()
            .unwrap_or_else(|| rec.process.user.clone()),
        terminal: spec.tty,
        stdin: spec.interactive,
        // As Docker's exec: a missing -w directory fails (126) rather than being made.
        no_create_cwd: true,
        // It joins the container's PID namespace (pid_namespace false).
        ..ProcessSpec::default()
    };
    // The container's capabilities and limits, as Docker's exec gets them.
    super::process_opts::apply(&rec.spec, &mut process);
    let failed = |msg: String| EngineError::with_code(EXIT_FAILED, msg);
    session::forwarded_signals()
        .thread_block()
        .map_err(|e| failed(format!("cannot block signals: {e}")))?;
    let stream = session::connect_guest(
        &dirs.vsock_path(),
        DEFAULT_VSOCK_PORT,
        Duration::from_secs(10),
    )
    .map_err(|e| failed(format!("cannot reach container {}: {e}", rec.id)))?;
    let command = spec.args.join(" ");
    crate::events::container(root, &rec, &format!("exec_create: {command}"), &[]);
    crate::events::container(root, &rec, &format!("exec_start: {command}"), &[]);
    let raw = if attached && spec.tty && spec.interactive && crate::terminal::is_tty(0) {
        crate::terminal::RawMode::enable()
    } else {
        None
    };
    let result = session::run_process(
        stream,
        process,
        Stdio {
            stdin: spec.interactive && attached,
            open_stdin: false,
            tty: spec.tty,
            export_layer: None,
            attached,
        },
        None,
        None,
        started,
    );
    drop(raw);
    let code = match &result {
        Ok(c) => c.to_string(),
        Err(SessionError::StartFailed { code, .. }) => code.to_string(),
        Err(_) => "-1".into(),
    };
    crate::events::container(root, &rec, "exec_die", &[("exitCode", &code)]);
    match result {
        Ok(code) => Ok(code),
        // Docker's exec reports every start failure (not found, not executable, a missing
        // working directory) as 126, unlike run's 127 for a missing command.
        Err(SessionError::StartFailed { code, message }) => Err(EngineError::with_code(
            if code == 127 { 126 } else { code },
            message,
        )),
        Err(e) => Err(failed(e.to_string())),
    }
}

//! `mvm exec`.

use clap::Args;
use mvm_engine::Engine;
use mvm_engine::container::{self, exec::ExecSpec};

use crate::error::CliError;

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, msg.to_string())
}

/// `exec`'s flags.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container.
    pub container: String,
    /// Command and arguments.
    #[arg(allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// Set in the detached child of `exec -d`: the fd on which it reports that the process
/// started.
const EXEC_READY_FD_ENV: &str = "MVM_EXEC_READY_FD";
/// The fd number the readiness pipe gets in that child.
const EXEC_READY_FD: i32 = 3;

/// `exec -d`: re-runs this command as a child in its own session that holds the exec session
/// until the process ends, and returns once the agent reports the process started.
fn exec_detached(dirs: &container::ContainerDirs) -> Result<i32, CliError> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| failed(format!("cannot create a pipe: {e}")))?;
    let log = dirs.run.join(format!("exec-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(failed)?;
    let exe = std::env::current_exe().map_err(failed)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(EXEC_READY_FD_ENV, EXEC_READY_FD.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    let w = write_end.as_raw_fd();
    // SAFETY: setsid and dup2 are async-signal-safe; dup2 onto fd 3 clears close-on-exec for
    // the pipe's write end in the child only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(w, EXEC_READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot start exec -d: {e}")))?;
    drop(write_end);
    let mut byte = [0u8; 1];
    let started = std::fs::File::from(read_end).read(&mut byte).unwrap_or(0) == 1;
    if started {
        // The child keeps its (now unlinked) log open and is reaped by init once we exit.
        let _ = std::fs::remove_file(&log);
        return Ok(0);
    }
    let status = child.wait().map_err(failed)?;
    let why = mvm_engine::backend::log_tail(&log);
    let _ = std::fs::remove_file(&log);
    let msg = why.strip_prefix("mvm: ").unwrap_or(&why).to_string();
    Err(CliError::with_code(
        status.code().unwrap_or(126).max(1),
        if msg.is_empty() {
            format!("exec -d failed ({status})")
        } else {
            msg
        },
    ))
}

/// `mvm exec`: one more process in the running container's VM, through its agent.
pub fn exec(engine: &Engine, a: &ExecArgs) -> Result<i32, CliError> {
    if a.command.is_empty() {
        return Err(CliError::usage("exec needs a command".into()));
    }
    if !a.detach && a.tty && a.interactive && !mvm_engine::terminal::is_tty(0) {
        return Err(CliError::with_code(
            1,
            "the input device is not a TTY".into(),
        ));
    }
    let (dirs, _) = container::exec::target(engine.root(), &a.container).map_err(failed)?;
    let detached_child = a.detach && std::env::var_os(EXEC_READY_FD_ENV).is_some();
    if a.detach && !detached_child {
        return exec_detached(&dirs);
    }
    let spec = ExecSpec {
        args: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        interactive: a.interactive,
    };
    Ok(engine.exec(&a.container, &spec, !detached_child, || {
        if detached_child {
            // SAFETY: fd 3 is the readiness pipe our parent gave us (see exec_detached);
            // one write and a close, nothing else uses that fd.
            unsafe {
                libc::write(EXEC_READY_FD, b"1".as_ptr().cast(), 1);
                libc::close(EXEC_READY_FD);
            }
        }
    })?)
}

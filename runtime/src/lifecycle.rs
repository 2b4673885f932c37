//! Commands on existing containers: `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `inspect`.
//! Everything is read from the state root, so they work whoever started the container and
//! report truthfully after a crash.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::container::{self, ContainerRecord, Status};
use crate::error::CliError;
use crate::output::time::{human_duration as human, since};
use mvm_engine::Engine;
use mvm_engine::container::logs::Window;
use mvm_engine::container::spec::parse_signal;

/// Exit code of a failed command on a container (Docker's CLI gives 1).
const EXIT_FAILED: i32 = 1;

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError::with_code(EXIT_FAILED, msg.to_string())
}

pub fn status_text(rec: &ContainerRecord) -> String {
    let st = &rec.state;
    match rec.effective() {
        (Status::Running, _) => format!("Up {}", human(since(st.started_at.as_deref()))),
        (Status::Paused, _) => format!("Up {} (Paused)", human(since(st.started_at.as_deref()))),
        (Status::Restarting, code) => format!(
            "Restarting ({}) {} ago",
            code.unwrap_or(0),
            human(since(st.finished_at.as_deref()))
        ),
        (Status::Exited, code) => format!(
            "Exited ({}) {} ago",
            code.unwrap_or(0),
            human(since(
                st.finished_at.as_deref().or(st.started_at.as_deref())
            ))
        ),
        (Status::Dead, _) => "Dead".into(),
        (Status::Created, _) => "Created".into(),
    }
}

/// `logs --since/--until` in Docker's forms: an RFC 3339 time, Unix seconds
/// (`1700000000[.5]`), or a duration before now (`10m`, `1h30m`, `45s`).
pub fn log_window(since: Option<&str>, until: Option<&str>) -> Result<Window, CliError> {
    let secs = |v: &str, flag: &str| -> Result<f64, CliError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let bad = || {
            CliError::usage(format!(
                "invalid value for --{flag}: {v:?} (use e.g. 2026-12-01T10:00:00Z, 1700000000 or 10m)"
            ))
        };
        let secs: f64 = if let Some(d) = crate::output::time::parse_go_duration(v) {
            now.as_secs_f64() - d
        } else if let Ok(n) = v.parse::<f64>() {
            n
        } else {
            crate::output::time::parse_rfc3339(v).ok_or_else(bad)? as f64
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        Ok(secs)
    };
    Ok(Window::new(
        since.map(|v| secs(v, "since")).transpose()?,
        until.map(|v| secs(v, "until")).transpose()?,
    ))
}

/// Writes one log entry to our stdout or stderr, as its stream was (with its time first for
/// `-t`).
fn print_entry(e: &crate::logs::LogEntry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    if e.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

/// `mvm logs`.
pub fn logs(
    engine: &Engine,
    key: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    window: Window,
) -> Result<i32, CliError> {
    let mut log = engine.logs(key, window).map_err(failed)?;
    for e in log.backlog(tail).map_err(failed)? {
        print_entry(&e, timestamps);
    }
    if follow {
        log.follow(|e| print_entry(e, timestamps)).map_err(failed)?;
    }
    Ok(0)
}

/// `mvm stop`: the stop signal, then SIGKILL after the timeout, then the VM goes.
pub fn stop(root: &Path, keys: &[String], timeout: u64) -> Result<i32, CliError> {
    each_container(keys, |key| {
        container::stop::stop(root, key, Duration::from_secs(timeout))
    })
}

/// Runs `f` on each container named, printing the name on success and the error otherwise,
/// as Docker's multi-container commands do; fails if any one failed.
pub fn each_container(
    keys: &[String],
    mut f: impl FnMut(&str) -> Result<(), container::ContainerError>,
) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match f(key) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    Ok(code)
}

/// `mvm kill`.
pub fn kill(root: &Path, keys: &[String], signal: &str) -> Result<i32, CliError> {
    let sig =
        parse_signal(signal).ok_or_else(|| CliError::usage(format!("invalid signal: {signal}")))?;
    each_container(keys, |key| container::signal::kill(root, key, sig))
}

/// `mvm rm` (`-v`: with the container's anonymous volumes).
pub fn rm(root: &Path, keys: &[String], force: bool, volumes: bool) -> Result<i32, CliError> {
    each_container(keys, |key| {
        container::stop::remove(root, key, force, volumes)
    })
}

/// `mvm wait`: blocks until each container stops and prints its exit code.
pub fn wait(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match container::stop::wait(root, key) {
            Ok(exit) => println!("{exit}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    Ok(code)
}

/// `mvm inspect` for containers: Docker's JSON shape, as far as it applies.
pub fn inspect(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    let mut out = Vec::new();
    let mut code = 0;
    for key in keys {
        match container::resolve(root, key) {
            Ok((dirs, rec)) => {
                let (status, exit) = rec.effective();
                let (spec, process, st) = (&rec.spec, &rec.process, &rec.state);
                out.push(serde_json::json!({
                    "Id": rec.id,
                    "Created": rec.created,
                    "Path": process.args.first(),
                    "Args": process.args.get(1..).unwrap_or(&[]),
                    "RestartCount": st.restart_count,
                    "State": {
                        "Status": status,
                        "Running": matches!(status, Status::Running | Status::Paused),
                        "Paused": status == Status::Paused,
                        "Restarting": status == Status::Restarting,
                        "Dead": status == Status::Dead,
                        "Pid": if status == Status::Running { st.pid.unwrap_or(0) } else { 0 },
                        "ExitCode": exit.unwrap_or(0),
                        "Error": st.error.clone().unwrap_or_default(),
                        "StartedAt": st.started_at.clone().unwrap_or_default(),
                        "FinishedAt": st.finished_at.clone().unwrap_or_default(),
                    },
                    "Image": rec.image_id,
                    "LogPath": dirs.log_path(),
                    "Name": format!("/{}", rec.name),
                    "Driver": "mvm",
                    "HostConfig": {
                        "Memory": spec.resources.memory_mib << 20,
                        "NanoCpus": u64::from(spec.resources.vcpus) * 1_000_000_000,
                        "AutoRemove": spec.auto_remove,
                        "Runtime": rec.vm.backend,
                        "NetworkMode": spec.network.to_string(),
                        "RestartPolicy": {
                            "Name": spec.restart.name(),
                            "MaximumRetryCount": spec.restart.max_retries(),
                        },
                    },
                    "Config": {
                        "Hostname": process.hostname,
                        "User": process.user,
                        "Tty": spec.tty,
                        "OpenStdin": spec.interactive,
                        "Env": process.env,
                        "Cmd": process.args,
                        "Image": spec.image,
                        "WorkingDir": process.cwd,
                    },
                    "Mounts": crate::volume_cmds::mounts_json(root, &rec),
                    "NetworkSettings": crate::network_cmds::network_settings(&rec),
                }));
            }
            Err(e) => {
                // As `docker inspect`: a name that is no container may be an image.
                match crate::image_cmds::inspect_value(root, key) {
                    Ok(Some(v)) => out.push(v),
                    Ok(None) => {
                        eprintln!("mvm: {e}");
                        code = EXIT_FAILED;
                    }
                    Err(err) => {
                        eprintln!("mvm: {err}");
                        code = EXIT_FAILED;
                    }
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".into())
    );
    Ok(code)
}

/// Options of `mvm exec`.
pub struct ExecOptions {
    /// Keep stdin open.
    pub interactive: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// Extra environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// `-d`: start the process and return; its output is discarded, as Docker's.
    pub detach: bool,
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
    let why = crate::backend::log_tail(&log);
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
pub fn exec(
    engine: &Engine,
    key: &str,
    command: &[String],
    opts: ExecOptions,
) -> Result<i32, CliError> {
    if command.is_empty() {
        return Err(CliError::usage("exec needs a command".into()));
    }
    let (dirs, _) = container::exec::target(engine.root(), key).map_err(failed)?;
    let detached_child = opts.detach && std::env::var_os(EXEC_READY_FD_ENV).is_some();
    if opts.detach && !detached_child {
        return exec_detached(&dirs);
    }
    let spec = container::exec::ExecSpec {
        args: command.to_vec(),
        env: opts.env,
        workdir: opts.workdir,
        user: opts.user,
        tty: opts.tty,
        interactive: opts.interactive,
    };
    Ok(engine.exec(key, &spec, !detached_child, || {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert!(log_window(Some("10m"), Some("2026-12-01T00:00:00Z")).is_ok());
        assert!(log_window(Some("yesterday"), None).is_err());
    }
}

//! Commands on existing containers: `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `inspect`.
//! Everything is read from the state root, so they work whoever started the container and
//! report truthfully after a crash.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::container::{self, ContainerDirs, ContainerRecord, pid_alive};
use crate::error::CliError;
use crate::output::time::{human_duration as human, since};
use crate::run::parse_signal;
use crate::session::request_signal;

/// Exit code of a failed command on a container (Docker's CLI gives 1).
const EXIT_FAILED: i32 = 1;

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError::with_code(EXIT_FAILED, msg.to_string())
}

pub fn status_text(rec: &ContainerRecord) -> String {
    match rec.effective() {
        ("running", _) => format!("Up {}", human(since(rec.started_at.as_deref()))),
        ("paused", _) => format!("Up {} (Paused)", human(since(rec.started_at.as_deref()))),
        ("restarting", code) => format!(
            "Restarting ({}) {} ago",
            code.unwrap_or(0),
            human(since(rec.finished_at.as_deref()))
        ),
        ("exited", code) => format!(
            "Exited ({}) {} ago",
            code.unwrap_or(0),
            human(since(
                rec.finished_at.as_deref().or(rec.started_at.as_deref())
            ))
        ),
        _ => "Created".into(),
    }
}

/// `logs --since/--until`: entries with `since <= time < until`, compared as time keys.
#[derive(Debug, Default)]
pub struct LogWindow {
    since: Option<String>,
    until: Option<String>,
}

impl LogWindow {
    /// From Docker's forms: an RFC 3339 time, Unix seconds (`1700000000[.5]`), or a duration
    /// before now (`10m`, `1h30m`, `45s`).
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Self, CliError> {
        let key = |v: &str, flag: &str| -> Result<String, CliError> {
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
            let whole = secs.trunc() as u64;
            let nanos = ((secs - secs.trunc()) * 1e9) as u32;
            Ok(container::time_key(&mvm_rootfs::time::rfc3339(
                whole, nanos,
            )))
        };
        Ok(Self {
            since: since.map(|v| key(v, "since")).transpose()?,
            until: until.map(|v| key(v, "until")).transpose()?,
        })
    }

    fn contains(&self, e: &crate::logs::LogEntry) -> bool {
        let t = container::time_key(&e.time);
        self.since.as_ref().is_none_or(|s| t >= *s) && self.until.as_ref().is_none_or(|u| t < *u)
    }
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
    root: &Path,
    key: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    window: &LogWindow,
) -> Result<i32, CliError> {
    let (dirs, rec) = container::resolve(root, key).map_err(failed)?;
    if rec.log.is_none() {
        return Err(failed(
            "configured logging driver does not support reading: the container runs with --log-driver none",
        ));
    }
    let path = dirs.log_path();
    let print = |e: &crate::logs::LogEntry| print_entry(e, timestamps);
    // The current file is read through the follower, so `-f` goes on exactly where the
    // first read ended.
    let mut follower = crate::logs::Follower::at_start(&path);
    let mut entries = crate::logs::read_rotated(&path).map_err(failed)?;
    entries.extend(follower.poll().map_err(failed)?);
    let shown: Vec<&crate::logs::LogEntry> =
        entries.iter().filter(|e| window.contains(e)).collect();
    let skip = tail.map_or(0, |n| shown.len().saturating_sub(n));
    for e in &shown[skip..] {
        print(e);
    }
    // --until in the past: nothing newer can match, so there is nothing to follow.
    let follow = follow && window.until.is_none();
    if follow {
        // Reads only what was added (across rotations), not the whole log each time.
        loop {
            let running = dirs.load().is_ok_and(|r| r.is_running());
            for e in follower.poll().map_err(failed)? {
                if window.contains(&e) {
                    print(&e);
                }
            }
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(0)
}

fn wait_stopped(dirs: &ContainerDirs, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match dirs.load() {
            Ok(r) if r.is_running() => std::thread::sleep(Duration::from_millis(20)),
            _ => return true,
        }
    }
    false
}

/// Ends the process owning the container's VM; its children (the hypervisor) die with it.
fn kill_owner(dirs: &ContainerDirs, rec: &ContainerRecord) {
    if let Some(pid) = rec.pid.filter(|p| pid_alive(*p)) {
        // SAFETY: signalling a PID recorded as this container's owner and checked alive.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = dirs.update(|r| {
        if r.status == "running" || r.status == "restarting" {
            r.status = "exited".into();
            r.exit_code = Some(137);
            r.finished_at = Some(mvm_rootfs::time::now());
        }
        r.paused = false;
        r.vm_pids.clear();
    });
    let _ = std::fs::remove_dir_all(&dirs.run);
}

/// `mvm stop`: the stop signal, then SIGKILL after the timeout, then the VM goes.
pub fn stop(root: &Path, keys: &[String], timeout: u64) -> Result<i32, CliError> {
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        stop_one(&dirs, &rec, timeout);
        Ok(())
    })
}

/// Stops one container if it runs: no restart by its policy, the stop signal, SIGKILL after
/// `timeout` seconds, and its monitor killed if even that does not end it.
pub fn stop_one(dirs: &ContainerDirs, rec: &ContainerRecord, timeout: u64) {
    if !rec.is_running() {
        return;
    }
    // The policy must not bring it back, and a paused VM must run to stop.
    let _ = dirs.update(|r| r.manual_stop = true);
    crate::control::resume_vm(dirs, rec);
    let sig = rec.stop_signal.unwrap_or(libc::SIGTERM);
    let _ = request_signal(&dirs.control_path(), sig);
    if !wait_stopped(dirs, Duration::from_secs(timeout)) {
        let _ = request_signal(&dirs.control_path(), libc::SIGKILL);
        if !wait_stopped(dirs, Duration::from_secs(5)) {
            kill_owner(dirs, rec);
        }
    }
}

/// Runs `f` on each container named, printing the name on success and the error otherwise,
/// as Docker's multi-container commands do; fails if any one failed.
pub fn each_container(
    keys: &[String],
    mut f: impl FnMut(&str) -> Result<(), String>,
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
    each_container(keys, |key| {
        let (dirs, rec) = container::resolve(root, key)?;
        if !rec.is_running() {
            return Err(format!("Container {key} is not running"));
        }
        if rec.paused {
            return Err(format!(
                "Container {key} is paused. Unpause the container before sending a signal"
            ));
        }
        if matches!(sig, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) {
            let _ = dirs.update(|r| r.manual_stop = true);
        }
        if rec.effective().0 == "restarting" {
            // Between two runs there is no process to signal; the policy stops here.
            return Ok(());
        }
        request_signal(&dirs.control_path(), sig)
    })
}

/// `mvm rm` (`-v`: with the container's anonymous volumes).
pub fn rm(root: &Path, keys: &[String], force: bool, volumes: bool) -> Result<i32, CliError> {
    each_container(keys, |key| {
        let (dirs, rec, _lock) = container::resolve_locked(root, key)?;
        if rec.is_running() {
            if !force {
                return Err(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    rec.id
                ));
            }
            kill_owner(&dirs, &rec);
        }
        dirs.remove();
        if volumes {
            crate::volume::remove_anonymous(root, &rec.mounts);
        }
        Ok(())
    })
}

/// `mvm wait`: blocks until each container stops and prints its exit code.
pub fn wait(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match container::resolve(root, key) {
            Ok((dirs, _)) => {
                while dirs.load().is_ok_and(|r| r.is_running()) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let exit = dirs.load().ok().and_then(|r| r.effective().1).unwrap_or(0);
                println!("{exit}");
            }
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
                out.push(serde_json::json!({
                    "Id": rec.id,
                    "Created": rec.created,
                    "Path": rec.args.first(),
                    "Args": rec.args.get(1..).unwrap_or(&[]),
                    "RestartCount": rec.restart_count,
                    "State": {
                        "Status": status,
                        "Running": matches!(status, "running" | "paused"),
                        "Paused": status == "paused",
                        "Restarting": status == "restarting",
                        "Pid": if status == "running" { rec.pid.unwrap_or(0) } else { 0 },
                        "ExitCode": exit.unwrap_or(0),
                        "Error": rec.error.clone().unwrap_or_default(),
                        "StartedAt": rec.started_at.clone().unwrap_or_default(),
                        "FinishedAt": rec.finished_at.clone().unwrap_or_default(),
                    },
                    "Image": rec.image_id,
                    "LogPath": dirs.log_path(),
                    "Name": format!("/{}", rec.name),
                    "Driver": "mvm",
                    "HostConfig": {
                        "Memory": rec.mem_mib << 20,
                        "NanoCpus": u64::from(rec.vcpus) * 1_000_000_000,
                        "AutoRemove": rec.auto_remove,
                        "Runtime": rec.backend,
                        "NetworkMode": rec.network_mode,
                        "RestartPolicy": {
                            "Name": rec.restart_policy.display_name(),
                            "MaximumRetryCount": rec.restart_policy.max_retries,
                        },
                    },
                    "Config": {
                        "Hostname": rec.hostname,
                        "User": rec.user,
                        "Tty": rec.tty,
                        "OpenStdin": rec.interactive,
                        "Env": rec.env,
                        "Cmd": rec.args,
                        "Image": rec.image,
                        "WorkingDir": rec.cwd,
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
fn exec_detached(dirs: &ContainerDirs) -> Result<i32, CliError> {
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
    root: &Path,
    key: &str,
    command: &[String],
    opts: ExecOptions,
) -> Result<i32, CliError> {
    use mvm_agent_protocol::{DEFAULT_VSOCK_PORT, ProcessSpec};
    let (dirs, rec) = container::resolve(root, key).map_err(failed)?;
    match rec.effective().0 {
        "running" => {}
        "paused" => {
            return Err(failed(format!(
                "Container {} is paused, unpause the container before exec",
                rec.id
            )));
        }
        "restarting" => {
            return Err(failed(format!(
                "Container {} is restarting, wait until the container is running",
                rec.id
            )));
        }
        _ => return Err(failed(format!("Container {} is not running", rec.id))),
    }
    if command.is_empty() {
        return Err(CliError::usage("exec needs a command".into()));
    }
    let detached_child = opts.detach && std::env::var_os(EXEC_READY_FD_ENV).is_some();
    if opts.detach && !detached_child {
        return exec_detached(&dirs);
    }
    let mut env = rec.env.clone();
    for kv in &opts.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    let spec = ProcessSpec {
        args: command.to_vec(),
        env,
        cwd: opts.workdir.clone().unwrap_or_else(|| rec.cwd.clone()),
        user: opts.user.clone().unwrap_or_else(|| rec.user.clone()),
        terminal: opts.tty,
        stdin: opts.interactive,
        rlimits: Vec::new(),
    };
    crate::session::forwarded_signals()
        .thread_block()
        .map_err(|e| failed(format!("cannot block signals: {e}")))?;
    let stream = crate::session::connect_guest(
        &dirs.vsock_path(),
        DEFAULT_VSOCK_PORT,
        Duration::from_secs(10),
    )
    .map_err(|e| failed(format!("cannot reach container {}: {e}", rec.id)))?;
    let raw = if opts.tty && opts.interactive && crate::terminal::is_tty(0) {
        crate::terminal::RawMode::enable()
    } else {
        None
    };
    let result = crate::session::run_process(
        stream,
        spec,
        crate::session::Stdio {
            stdin: opts.interactive && !detached_child,
            open_stdin: false,
            tty: opts.tty,
            export_layer: None,
            attached: !detached_child,
        },
        None,
        None,
        || {
            if detached_child {
                // SAFETY: fd 3 is the readiness pipe our parent gave us (see exec_detached);
                // one write and a close, nothing else uses that fd.
                unsafe {
                    libc::write(EXEC_READY_FD, b"1".as_ptr().cast(), 1);
                    libc::close(EXEC_READY_FD);
                }
            }
        },
    );

    drop(raw);
    match result {
        Ok(code) => Ok(code),
        Err(crate::session::SessionError::StartFailed { code, message }) => {
            Err(CliError::with_code(code, message))
        }
        Err(e) => Err(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert!(LogWindow::parse(Some("10m"), Some("2026-12-01T00:00:00Z")).is_ok());
        assert!(LogWindow::parse(Some("yesterday"), None).is_err());
    }
}

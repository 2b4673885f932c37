//! Starting the container's process: user, limits, environment, working directory, stdio.
//!
//! The fork is std's `Command`: it sets up stdio and the working directory and reports an
//! error of the child's setup to the parent through a close-on-exec pipe carrying the errno,
//! which is what turns a failed exec into StartFailed. Our `pre_exec` hook does the rest and
//! the execve itself:
//! - std's own uid/gid switch happens before `pre_exec`, after which rlimits could no longer
//!   be raised, so the user is switched in the hook;
//! - std execs with execvp, which runs a file that fails with ENOEXEC through /bin/sh; runc
//!   (and so Docker) report "exec format error" (exit code 126) instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mvm_agent_protocol::{ProcessSpec, StartFailedKind};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{Pid, pipe2};

use crate::exec_path::{LookupError, find_executable};
use crate::pty::{open_pty, set_window_size};
use crate::rlimit::{ParsedRlimit, RlimitError, parse_rlimit};
use crate::users::{UserError, resolve_user};

/// Docker's default `PATH`, used when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the agent knows besides the spec.
#[derive(Debug, Clone)]
pub struct SpawnContext<'a> {
    /// The container's `/etc` (`/etc` after pivot_root; a fixture directory in tests).
    pub etc_dir: &'a Path,
    /// The container's hostname, for `HOSTNAME`.
    pub hostname: Option<&'a str>,
    /// Initial terminal size (rows, cols).
    pub window: Option<(u16, u16)>,
    /// The agent-side PID of the container's PID 1 (0 until a `pid_namespace` process
    /// started); set when one starts.
    pub container_init: &'a std::sync::atomic::AtomicI32,
}

/// A started process and the agent's ends of its stdio, all non-blocking.
#[derive(Debug)]
pub struct Spawned {
    /// Its PID; also its process group and session ID.
    pub pid: Pid,
    /// Where its stdin goes: a pipe, or the PTY master. `None` when stdin is not attached.
    pub stdin: Option<OwnedFd>,
    /// Its stdout pipe, or the PTY master.
    pub stdout: Option<OwnedFd>,
    /// Its stderr pipe; `None` with a terminal.
    pub stderr: Option<OwnedFd>,
    /// The PTY master, for resizing.
    pub pty: Option<OwnedFd>,
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `args` is empty.
    #[error("no command specified")]
    NoCommand,
    /// The user or group does not resolve.
    #[error(transparent)]
    User(#[from] UserError),
    /// The command cannot be found or executed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A resource limit is invalid.
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    /// The working directory cannot be created.
    #[error("cannot create working directory {path}: {source}")]
    Cwd {
        /// The directory.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The working directory does not exist and may not be made (`exec -w`).
    #[error("chdir to cwd ({path:?}) failed: no such file or directory")]
    NoCwd {
        /// The directory.
        path: String,
    },
    /// A kernel parameter could not be set.
    #[error("cannot set sysctl {key}: {source}")]
    Sysctl {
        /// The key as given.
        key: String,
        /// Why.
        source: io::Error,
    },
    /// Pipes, PTY or similar could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// fork, the child's setup or execve failed.
    #[error("exec {program:?}: {source}")]
    Exec {
        /// `args[0]`.
        program: String,
        /// The errno the child reported.
        source: io::Error,
    },
}

impl SpawnError {
    /// The StartFailed kind, which decides exit code 127, 126 or 125.
    pub fn kind(&self) -> StartFailedKind {
        match self {
            SpawnError::Lookup(LookupError::NotInPath(_) | LookupError::NoSuchFile(_)) => {
                StartFailedKind::NotFound
            }
            SpawnError::Lookup(LookupError::NotExecutable(_)) | SpawnError::NoCwd { .. } => {
                StartFailedKind::PermissionDenied
            }
            SpawnError::Exec { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => StartFailedKind::NotFound,
                Some(libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR) => {
                    StartFailedKind::PermissionDenied
                }
                _ => StartFailedKind::Other,
            },
            _ => StartFailedKind::Other,
        }
    }
}

fn setup(what: &'static str) -> impl FnOnce(nix::Error) -> SpawnError {
    move |e| SpawnError::Setup {
        what,
        source: e.into(),
    }
}

/// The process environment: the spec's `KEY=VALUE` entries (a later duplicate wins, entries
/// without `=` are dropped) plus `PATH`, `HOSTNAME`, `HOME` and with a terminal `TERM`, each
/// only when absent.
pub fn build_env(
    spec_env: &[String],
    hostname: Option<&str>,
    home: &str,
    terminal: bool,
) -> Vec<(String, String)> {
    fn set(env: &mut Vec<(String, String)>, key: &str, value: &str, replace: bool) {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) if replace => entry.1 = value.to_string(),
            Some(_) => {}
            None => env.push((key.to_string(), value.to_string())),
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in spec_env {
        if let Some((key, value)) = entry.split_once('=')
            && !key.is_empty()
        {
            set(&mut env, key, value, true);
        }
    }
    set(&mut env, "PATH", DEFAULT_PATH, false);
    if let Some(hostname) = hostname {
        set(&mut env, "HOSTNAME", hostname, false);
    }
    set(&mut env, "HOME", home, false);
    if terminal {
        set(&mut env, "TERM", "xterm", false);
    }
    env
}

/// Resolves everything that can fail before forking, then starts the process in a new
/// session (so its PID is also its process group, for killing it with its children).
pub fn spawn(spec: &ProcessSpec, ctx: &SpawnContext<'_>) -> Result<Spawned, SpawnError> {
    let arg0 = spec.args.first().ok_or(SpawnError::NoCommand)?;
    let user = resolve_user(&spec.user, ctx.etc_dir)?;
    let rlimits = spec
        .rlimits
        .iter()
        .map(parse_rlimit)
        .collect::<Result<Vec<_>, _>>()?;
    let env = build_env(&spec.env, ctx.hostname, &user.home, spec.terminal);
    let cwd = PathBuf::from("/").join(&spec.cwd);
    if !cwd.is_dir() && spec.no_create_cwd {
        return Err(SpawnError::NoCwd {
            path: cwd.display().to_string(),
        });
    }
    if !cwd.is_dir() {
        std::fs::create_dir_all(&cwd).map_err(|source| SpawnError::Cwd {
            path: cwd.display().to_string(),
            source,
        })?;
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let program = find_executable(arg0, path_var, &cwd)?;

    // Switching identity needs root; without it (tests as a normal user) the process may only
    // run as the agent's own user.
    // SAFETY: these getters cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let switch_user = if euid == 0 {
        true
    } else if user.uid == euid && user.gid == egid {
        false
    } else {
        return Err(SpawnError::Setup {
            what: "switching user",
            source: io::Error::from_raw_os_error(libc::EPERM),
        });
    };

    let exec = ExecArgs::new(&program, &spec.args, &env)?;
    // Only the working directory and stdio of this Command matter: the hook execs.
    let mut cmd = Command::new(&program);
    cmd.current_dir(&cwd);

    let mut spawned = Spawned {
        pid: Pid::from_raw(0),
        stdin: None,
        stdout: None,
        stderr: None,
        pty: None,
    };
    if spec.terminal {
        let pty = open_pty().map_err(|source| SpawnError::Setup {
            what: "opening a terminal",
            source,
        })?;
        if let Some((rows, cols)) = ctx.window {
            set_window_size(pty.master.as_fd(), rows, cols).map_err(|source| {
                SpawnError::Setup {
                    what: "setting the terminal size",
                    source,
                }
            })?;
        }
        set_nonblocking(&pty.master)?;
        let clone = |fd: &OwnedFd| {
            fd.try_clone().map_err(|source| SpawnError::Setup {
                what: "duplicating the terminal",
                source,
            })
        };
        cmd.stdin(clone(&pty.slave)?)
            .stdout(clone(&pty.slave)?)
            .stderr(Stdio::from(pty.slave));
        spawned.stdout = Some(clone(&pty.master)?);
        if spec.stdin {
            spawned.stdin = Some(clone(&pty.master)?);
        }
        spawned.pty = Some(pty.master);
    } else {
        if spec.stdin {
            let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("creating a pipe"))?;
            set_nonblocking(&write)?;
            cmd.stdin(read);
            spawned.stdin = Some(write);
        } else {
            cmd.stdin(Stdio::null());
        }
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("creating a pipe"))?;
        set_nonblocking(&read)?;
        cmd.stdout(write);
        spawned.stdout = Some(read);
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("creating a pipe"))?;
        set_nonblocking(&read)?;
        cmd.stderr(write);
        spawned.stderr = Some(read);
    }

    if spec.pid_namespace {
        set_sysctls(&spec.sysctl)?;
    }
    let (for_children, ns) = crate::pidns::prepare(
        spec.pid_namespace
            .then_some((&spec.masked_paths[..], &spec.readonly_paths[..])),
        ctx.container_init
            .load(std::sync::atomic::Ordering::Relaxed),
        &cwd,
    )
    .map_err(|source| SpawnError::Setup {
        what: "entering the container's namespaces",
        source,
    })?;
    let raw_ns = ns.raw();
    let privileges = crate::caps::Privileges {
        caps: spec.capabilities.as_ref().map(|c| crate::caps::Masks {
            bounding: crate::caps::mask(&c.bounding),
            effective: crate::caps::mask(&c.effective),
            permitted: crate::caps::mask(&c.permitted),
            inheritable: crate::caps::mask(&c.inheritable),
            ambient: crate::caps::mask(&c.ambient),
        }),
        no_new_privs: spec.no_new_privileges,
        oom_score_adj: spec.oom_score_adj,
    };
    let terminal = spec.terminal;
    let with_init = spec.init && spec.pid_namespace;
    let groups: Vec<libc::gid_t> = spec.groups.clone().unwrap_or_else(|| user.groups.clone());
    let (uid, gid) = (user.uid, user.gid);
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed; `child_setup` makes only raw system calls on data prepared here
    // (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            raw_ns.apply()?;
            child_setup(
                terminal,
                &rlimits,
                &groups,
                (uid, gid, switch_user),
                &privileges,
            )?;
            if with_init {
                crate::mini_init::become_init(terminal)?;
            }
            exec.exec()
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: arg0.clone(),
        source,
    });
    // The thread's children are the agent's again; the child's set-up data can go.
    drop(for_children);
    drop(ns);
    let child = child?;
    if spec.pid_namespace {
        ctx.container_init
            .store(child.id() as i32, std::sync::atomic::Ordering::Relaxed);
    }
    // The Command holds the child's ends of the pipes: close them now, or the agent would
    // never see EOF on stdout.
    drop(cmd);
    spawned.pid = Pid::from_raw(child.id() as i32);
    // Dropping a Child neither kills nor waits for it; the reaper collects it.
    drop(child);
    Ok(spawned)
}

/// The file under /proc/sys of a sysctl key (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`),
/// `None` for a key that would leave /proc/sys.
pub fn sysctl_path(key: &str) -> Option<PathBuf> {
    let rel = key.replace('.', "/");
    let ok = !rel.is_empty()
        && rel.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    ok.then(|| Path::new("/proc/sys").join(rel))
}

/// Sets the container's kernel parameters (the VM's kernel is the container's own).
fn set_sysctls(sysctl: &[(String, String)]) -> Result<(), SpawnError> {
    for (key, value) in sysctl {
        let bad = |source| SpawnError::Sysctl {
            key: key.clone(),
            source,
        };
        let path =
            sysctl_path(key).ok_or_else(|| bad(io::Error::from(io::ErrorKind::InvalidInput)))?;
        std::fs::write(&path, value.as_bytes()).map_err(bad)?;
    }
    Ok(())
}

/// Program, argv and envp as execve wants them, built before the fork: the child may not
/// allocate.
struct ExecArgs {
    program: CString,
    // Owners of the strings the pointer arrays point into. A CString's bytes live on the
    // heap, so moving this struct does not invalidate the pointers.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `_strings`, owned by the same struct and never mutated;
// the struct is only moved into the pre_exec hook and read there.
unsafe impl Send for ExecArgs {}
// SAFETY: as above: shared access only reads immutable data.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    fn new(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<ExecArgs, SpawnError> {
        let nul = |_| SpawnError::Setup {
            what: "command, argument or environment contains a NUL byte",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        };
        let program = CString::new(program.as_os_str().as_bytes()).map_err(nul)?;
        let mut strings = Vec::with_capacity(args.len() + env.len());
        for arg in args {
            strings.push(CString::new(arg.as_bytes()).map_err(nul)?);
        }
        for (key, value) in env {
            strings.push(CString::new(format!("{key}={value}")).map_err(nul)?);
        }
        let ptrs = |s: &[CString]| {
            s.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = ptrs(&strings[..args.len()]);
        let envp = ptrs(&strings[args.len()..]);
        Ok(ExecArgs {
            program,
            _strings: strings,
            argv,
            envp,
        })
    }

    /// Replaces the process image; returns only on failure.
    fn exec(&self) -> io::Result<()> {
        // SAFETY: all three are valid NUL-terminated strings / NULL-terminated arrays of them,
        // alive for the call (owned by self).
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        Err(io::Error::last_os_error())
    }
}

/// Runs in the child between fork and exec.
fn child_setup(
    terminal: bool,
    rlimits: &[ParsedRlimit],
    groups: &[libc::gid_t],
    (uid, gid, switch_user): (libc::uid_t, libc::gid_t, bool),
    privileges: &crate::caps::Privileges,
) -> io::Result<()> {
    let check = |ret: libc::c_int| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on integers and on pointers to data that lives across the
    // call (`limit`, `groups`); all are async-signal-safe.
    unsafe {
        check(libc::setsid())?;
        if terminal {
            // stdin is the PTY slave already (std dup2'd it); make it the controlling terminal
            // of the new session.
            check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
        }
        for limit in rlimits {
            let value = libc::rlimit {
                rlim_cur: limit.soft,
                rlim_max: limit.hard,
            };
            check(libc::setrlimit(limit.resource, &value))?;
        }
        privileges.before_user_switch()?;
        if switch_user {
            // Groups first: after setuid the process may no longer change them.
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
    }
    privileges.after_user_switch()
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), SpawnError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(setup("reading descriptor flags"))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(setup("making a descriptor non-blocking"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn sysctl_keys_stay_under_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0/forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0/forwarding")
        );
        for bad in [
            "",
            ".",
            "..",
            "net..x",
            "../../etc/passwd",
            "/etc",
            "a b",
            "kernel.*",
        ] {
            assert_eq!(sysctl_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn env_defaults_and_overrides() {
        let env = build_env(
            &[
                "A=1".into(),
                "NOEQ".into(),
                "=x".into(),
                "A=2".into(),
                "B=x=y".into(),
            ],
            Some("box"),
            "/root",
            false,
        );
        assert_eq!(get(&env, "A"), Some("2"));
        assert_eq!(get(&env, "B"), Some("x=y"));
        assert_eq!(get(&env, "NOEQ"), None);
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "HOSTNAME"), Some("box"));
        assert_eq!(get(&env, "HOME"), Some("/root"));
        assert_eq!(get(&env, "TERM"), None);
        assert_eq!(env[0].0, "A");

        let env = build_env(
            &["PATH=/x".into(), "HOME=/h".into(), "TERM=vt100".into()],
            None,
            "/root",
            true,
        );
        assert_eq!(get(&env, "PATH"), Some("/x"));
        assert_eq!(get(&env, "HOME"), Some("/h"));
        assert_eq!(get(&env, "TERM"), Some("vt100"));
        assert_eq!(get(&env, "HOSTNAME"), None);
        let env = build_env(&[], None, "/", true);
        assert_eq!(get(&env, "TERM"), Some("xterm"));
    }

    #[test]
    fn error_kinds() {
        let exec = |errno| SpawnError::Exec {
            program: "x".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert_eq!(exec(libc::ENOENT).kind(), StartFailedKind::NotFound);
        assert_eq!(exec(libc::EACCES).kind(), StartFailedKind::PermissionDenied);
        assert_eq!(
            exec(libc::ENOEXEC).kind(),
            StartFailedKind::PermissionDenied
        );
        assert_eq!(exec(libc::ENOMEM).kind(), StartFailedKind::Other);
        assert_eq!(SpawnError::NoCommand.kind(), StartFailedKind::Other);
        assert_eq!(
            SpawnError::Lookup(LookupError::NotInPath("x".into())).kind(),
            StartFailedKind::NotFound
        );
    }
}

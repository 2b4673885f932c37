//! The jailed VMM seen from the host, with the guest as the attacker: a VMM running the test
//! guest (tests/guest) with a uid of its own is that uid, without capabilities or a way to gain
//! any, within its resource limits, and each of its threads is behind the seccomp filter of its
//! kind: the vCPU threads behind the narrow one they installed themselves, alone (the main
//! thread's is not laid over it). And a process confined as the VMM is (the library's jail and
//! filter, in a forked child) cannot signal another process on the host.
//!
//! The tests run as root (the runtime starts the VMM as root); they fail, never skip, when
//! they cannot.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mvm_vmm::jail::{self, Identity, Limits};
use mvm_vmm::seccomp::{self, Filters, SeccompMode, ThreadKind};

mod support;

use support::{Dir, Vm, guest, wait_for_line};

const VMM: &str = env!("CARGO_BIN_EXE_mvm-vmm");

fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no failure modes.
        unsafe { libc::geteuid() },
        0,
        "these tests must run as root (the runtime starts the VMM as root)"
    );
}

/// The value of `field` in a /proc status file.
fn field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
        .trim()
}

/// The soft and hard values of one line of /proc/PID/limits.
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in\n{limits}"));
    let mut rest = line[name.len()..].split_whitespace();
    let soft = rest.next().unwrap_or_default().to_string();
    let hard = rest.next().unwrap_or_default().to_string();
    (soft, hard)
}

// ptrace requests (not all in the libc crate).
const PTRACE_SEIZE: libc::c_long = 0x4206;
const PTRACE_INTERRUPT: libc::c_long = 0x4207;
const PTRACE_DETACH: libc::c_long = 17;
const PTRACE_SECCOMP_GET_FILTER: libc::c_long = 0x420c;

/// The seccomp filters attached to thread `tid`, most recent first, read with
/// PTRACE_SECCOMP_GET_FILTER while the thread is stopped (needs CAP_SYS_ADMIN: root).
fn installed_filters(tid: libc::pid_t) -> Vec<Vec<(u16, u8, u8, u32)>> {
    let ptrace = |req: libc::c_long, addr: libc::c_long, data: *mut libc::c_void| {
        // SAFETY: ptrace on a thread of our child; `data` is null or a buffer large enough
        // for what the request writes (checked by the callers).
        unsafe { libc::syscall(libc::SYS_ptrace, req, tid as libc::c_long, addr, data) }
    };
    let rc = ptrace(PTRACE_SEIZE, 0, std::ptr::null_mut());
    assert_eq!(rc, 0, "seize {tid}: {}", std::io::Error::last_os_error());
    assert_eq!(ptrace(PTRACE_INTERRUPT, 0, std::ptr::null_mut()), 0);
    let mut status = 0;
    // SAFETY: waiting for the thread we trace.
    let w = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
    assert_eq!(w, tid, "waitpid {tid}: {}", std::io::Error::last_os_error());
    let mut filters = Vec::new();
    for index in 0.. {
        let len = ptrace(PTRACE_SECCOMP_GET_FILTER, index, std::ptr::null_mut());
        if len < 0 {
            // ENOENT past the last filter.
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOENT),
                "get filter {index} of {tid}"
            );
            break;
        }
        let mut prog = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0
            };
            len as usize
        ];
        let got = ptrace(PTRACE_SECCOMP_GET_FILTER, index, prog.as_mut_ptr().cast());
        assert_eq!(got, len, "get filter {index} of {tid}");
        filters.push(prog.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect());
    }
    assert_eq!(ptrace(PTRACE_DETACH, 0, std::ptr::null_mut()), 0);
    filters
}

fn expected(kind: ThreadKind, pid: libc::pid_t) -> Vec<(u16, u8, u8, u32)> {
    seccomp::program(kind, seccompiler::SeccompAction::KillProcess, pid)
        .unwrap()
        .iter()
        .map(|i| (i.code, i.jt, i.jf, i.k))
        .collect()
}

/// A VMM given a uid runs the guest as that uid, confined: no capabilities, no new
/// privileges, its limits, each thread behind its own filter. Guest-initiated vsock
/// connections still reach the host's `_PORT` socket, host-initiated ones still come in, and
/// the exit record is still renamed into place.
#[test]
fn a_jailed_vmm_with_a_uid_is_confined_per_thread() {
    require_root();
    let (uid, gid) = (100_000 + std::process::id() % 50_000, 100_000 + 7);
    let d = Dir::new("uid");
    // What the runtime grants the VM's uid: its directory (the jail's root, where the exit
    // record is renamed) and the host socket the guest connects to.
    std::os::unix::fs::chown(&d.0, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uds = d.join("v.sock");
    let serial = d.join("serial.log");
    let exit = d.join("exit.json");
    let port = d.join("v.sock_5678");
    let listener = UnixListener::bind(&port).unwrap();
    std::os::unix::fs::chown(&port, Some(uid), Some(gid)).unwrap();
    let echo = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        (&s).write_all(line.as_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        line
    });
    let vcpus = 2u8;
    let mut vm = Vm(Command::new(VMM)
        .args([
            "--kernel",
            guest().to_str().unwrap(),
            "--cmdline",
            "mvmtest.vsock_connect=5678 mvmtest.vsock_listen=1234",
            "--vcpus",
            &vcpus.to_string(),
            "--vsock",
            &format!("7,{}", uds.display()),
            "--serial",
            serial.to_str().unwrap(),
            "--exit-record",
            exit.to_str().unwrap(),
            "--uid",
            &uid.to_string(),
            "--gid",
            &gid.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    let line = echo.join().unwrap();
    assert!(line.starts_with("hello from guest 7"), "{line:?}");
    wait_for_line(
        &serial,
        "VSOCK listening port=1234",
        Duration::from_secs(30),
    );

    // The process: its uid and gid, no groups, no capabilities, no new privileges.
    let pid = vm.0.id() as libc::pid_t;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |v: u32| [v.to_string(), v.to_string(), v.to_string(), v.to_string()].join("\t");
    assert_eq!(field(&status, "Uid"), ids(uid), "{status}");
    assert_eq!(field(&status, "Gid"), ids(gid), "{status}");
    assert_eq!(field(&status, "Groups"), "", "{status}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, cap), "0000000000000000", "{cap}: {status}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(field(&status, "Seccomp"), "2", "{status}");

    // Its limits: its threads (and KVM's worker), descriptors for vsock's connections, a
    // bounded file size, no core, no locked memory.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let want = Limits::for_vm(vcpus, true, 0);
    let same = |name: &str, value: u64| {
        assert_eq!(
            limit(&limits, name),
            (value.to_string(), value.to_string()),
            "{limits}"
        );
    };
    same("Max processes", want.threads);
    same("Max file size", want.file_size);
    same("Max core file size", 0);
    same("Max locked memory", 0);
    let (soft, hard) = limit(&limits, "Max open files");
    assert_eq!(soft, hard, "{limits}");
    let files: u64 = soft.parse().unwrap();
    assert!(
        files > want.extra_files && files < want.extra_files + 256,
        "{limits}"
    );

    // Each thread: the uid and a filter; the main thread's filter is the VMM's, each vCPU
    // thread's the vCPU one, alone: one filter per thread, none stacked.
    let mut vcpu_threads = 0;
    let mut main_seen = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let tid: libc::pid_t = task.file_name().to_str().unwrap().parse().unwrap();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        assert_eq!(field(&status, "Seccomp"), "2", "{status}");
        assert_eq!(field(&status, "Uid"), ids(uid), "{status}");
        assert_eq!(field(&status, "CapEff"), "0000000000000000", "{status}");
        let name = field(&status, "Name").to_string();
        if tid == pid {
            main_seen = true;
            let filters = installed_filters(tid);
            assert_eq!(filters, vec![expected(ThreadKind::Vmm, pid)], "main thread");
        } else if name.starts_with("vcpu") {
            vcpu_threads += 1;
            let filters = installed_filters(tid);
            assert_eq!(filters, vec![expected(ThreadKind::Vcpu, pid)], "{name}");
        } else {
            // KVM's own worker (kvm-nx-lpage-recovery), started by a vCPU's first KVM_RUN,
            // carries that vCPU's filter.
            assert!(name.starts_with("kvm"), "unexpected thread {name}");
            assert_eq!(
                installed_filters(tid),
                vec![expected(ThreadKind::Vcpu, pid)]
            );
        }
    }
    assert!(main_seen);
    assert_eq!(vcpu_threads, usize::from(vcpus));

    // Host-initiated vsock still works after all that.
    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"CONNECT 1234\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut ok = String::new();
    r.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "{ok:?}");
    s.write_all(b"ping from host\n").unwrap();
    let mut back = String::new();
    r.read_line(&mut back).unwrap();
    assert_eq!(back, "ping from host\n");
    drop(r);
    drop(s);
    let code = vm.0.wait().unwrap();
    let text = std::fs::read_to_string(&serial).unwrap();
    for t in ["vsock_init", "vsock_connect", "vsock_listen"] {
        assert!(
            text.lines().any(|l| l == format!("TEST {t} OK")),
            "TEST {t} did not pass:\n{text}"
        );
    }
    assert!(text.contains("MVMTEST DONE 0 failures"), "{text}");
    assert_eq!(code.code(), Some(0));
    // Renamed by the unprivileged VMM.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exit).unwrap()).unwrap();
    assert_eq!(record["exit_code"], 0, "{record}");
}

/// The flag without its pair, or with the jail off, is a configuration error: the VMM never
/// runs a guest as root when it was asked for a uid.
#[test]
fn a_uid_without_a_gid_or_a_jail_is_refused() {
    let g = guest().to_str().unwrap();
    for args in [
        &["--kernel", g, "--uid", "100001"][..],
        &["--kernel", g, "--gid", "100001"],
        &[
            "--kernel", g, "--uid", "100001", "--gid", "1", "--jail", "off",
        ],
        &["--kernel", g, "--uid", "4294967295", "--gid", "1"],
    ] {
        let out = Command::new(VMM).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("jail") || err.contains("uid"),
            "{args:?}: {err}"
        );
    }
}

/// A process standing for "another process on the host" (root's): it waits until killed.
struct Victim(libc::pid_t);
impl Victim {
    fn start() -> Self {
        // SAFETY: fork in a test; the child only pauses until it is killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        Self(pid)
    }
    fn alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: polling our own child.
        unsafe { libc::waitpid(self.0, &mut status, libc::WNOHANG) == 0 }
    }
}
impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// In a forked child, confined as the VMM confines itself (the jail with a uid, then the
/// filter of `kind` in `mode`), runs `body`; returns the wait status.
fn confined_child(
    dir: &Path,
    id: Identity,
    kind: ThreadKind,
    mode: SeccompMode,
    body: impl FnOnce() -> i32,
) -> i32 {
    // SAFETY: fork in a test; the child makes system calls and exits without returning.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match jail::enter(Some(dir), Some(id), &Limits::for_vm(1, false, 0)) {
            Err(_) => 100,
            Ok(()) => match Filters::new(mode).and_then(|f| f.apply(kind)) {
                Err(_) => 101,
                Ok(()) => body(),
            },
        };
        // SAFETY: ending the forked child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// From inside the VMM's confinement, `kill` and `tgkill` of another process fail: the filter
/// kills the process that tries (either thread kind), and without the filter the uid alone
/// is refused (EPERM); signalling itself works.
#[test]
fn from_inside_the_confinement_another_process_cannot_be_signalled() {
    require_root();
    let d = Dir::new("kill");
    let victim = Victim::start();
    let other = victim.0;
    let id = Identity {
        uid: 100_000 + (std::process::id() + 1) % 50_000,
        gid: 100_009,
    };
    let sigsys = |s: i32| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGSYS;
    let exit0 = |s: i32| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0;
    for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
        // SAFETY: (all bodies): signal 0 only checks that the target exists; a SIGKILL that
        // got through would hit our own child only.
        let own = confined_child(&d.0, id, kind, SeccompMode::Kill, || unsafe {
            let (pid, tid) = (libc::getpid(), libc::gettid());
            if libc::kill(pid, 0) != 0 || libc::syscall(libc::SYS_tgkill, pid, tid, 0) != 0 {
                return 4;
            }
            0
        });
        assert!(exit0(own), "{kind:?}: status {own:#x}");
        // SAFETY: a signal to a child of the test at worst (the filter should stop it).
        let kill = confined_child(&d.0, id, kind, SeccompMode::Kill, || unsafe {
            libc::kill(other, libc::SIGKILL);
            0
        });
        assert!(sigsys(kill), "{kind:?}: kill: status {kill:#x}");
        // SAFETY: as above.
        let tgkill = confined_child(&d.0, id, kind, SeccompMode::Kill, || unsafe {
            libc::syscall(libc::SYS_tgkill, other, other, libc::SIGKILL);
            0
        });
        assert!(sigsys(tgkill), "{kind:?}: tgkill: status {tgkill:#x}");
        assert!(victim.alive(), "{kind:?}: the other process was killed");
    }
    // Without the filter, the uid is the barrier: EPERM.
    // SAFETY: as above.
    let eperm = confined_child(&d.0, id, ThreadKind::Vmm, SeccompMode::Off, || unsafe {
        let rc = libc::kill(other, libc::SIGKILL);
        let errno = std::io::Error::last_os_error().raw_os_error();
        if rc == -1 && errno == Some(libc::EPERM) {
            0
        } else {
            5
        }
    });
    assert!(exit0(eperm), "status {eperm:#x}");
    assert!(victim.alive(), "the other process was killed");
}

//! End-to-end tests of `mvm run`: real microVMs (QEMU/TCG on a PVM host, our VMM where KVM
//! has hardware virtualization), the real agent, through the real `mvm` binary.

#[path = "../common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestRoot, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn root() -> TestRoot {
    TestRoot::with_busybox(MVM)
}

#[test]
fn echo_hello() {
    let r = root();
    let o = r.mvm(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(stdout(&o), "hello\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn stdout_and_stderr_are_separate_and_exit_code_passes_through() {
    let r = root();
    let o = r.mvm(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn process_killed_by_signal_gives_128_plus_signal() {
    let r = root();
    // A process killed by a signal: 128+9, passed on by the container's PID 1.
    let o = r.mvm(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "sh -c 'kill -9 $$'; exit $?",
    ]);
    assert_eq!(o.status.code(), Some(137), "stderr: {}", stderr(&o));
    // The container's PID 1 cannot be killed from inside its own namespace, as under runc
    // (`docker run --rm busybox sh -c 'kill -9 $$; echo survived'` prints survived, exits 0).
    let o = r.mvm(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "kill -9 $$; echo survived",
    ]);
    assert_eq!(stdout(&o), "survived\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    // Killed from outside, it ends: 137 (the kill tests of the lifecycle tier).
}

#[test]
fn env_workdir_user_and_hostname() {
    let r = root();
    let envfile = r.path.join("env.list");
    std::fs::write(&envfile, "# comment\nFROMFILE=1\nFOO=fromfile\n").unwrap();
    let o = r.mvm(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "--env-file",
        envfile.to_str().unwrap(),
        "-w",
        "/tmp/newdir",
        "-u",
        "1000:1000",
        "--hostname",
        "box1",
        "busybox",
        "sh",
        "-c",
        "echo $FOO $FROMFILE; pwd; id -u; id -g; hostname; cat /etc/hostname; echo $PATH",
    ]);
    assert_eq!(
        stdout(&o),
        "bar 1\n/tmp/newdir\n1000\n1000\nbox1\nbox1\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn user_by_name_gets_its_home_and_groups() {
    let r = root();
    let o = r.mvm(&[
        "run",
        "--rm",
        "-u",
        "user",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; echo $HOME",
    ]);
    assert_eq!(
        stdout(&o),
        "1000\n1000\n/home/user\n",
        "stderr: {}",
        stderr(&o)
    );
    let o = r.mvm(&["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("nosuchuser"), "{}", stderr(&o));
}

#[test]
fn stdin_with_dash_i() {
    let r = root();
    let o = r.mvm_stdin(&["run", "--rm", "-i", "busybox", "cat"], b"x\n");
    assert_eq!(stdout(&o), "x\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    // Larger than a frame and than the pipe buffers, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let o = r.mvm_stdin(&["run", "--rm", "-i", "busybox", "cat"], &big);
    assert_eq!(o.stdout.len(), big.len());
    assert!(o.stdout == big, "stdin data came back altered");
}

#[test]
fn without_dash_i_stdin_is_empty() {
    let r = root();
    let o = r.mvm_stdin(&["run", "--rm", "busybox", "cat"], b"should not arrive\n");
    assert_eq!(stdout(&o), "");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn tty_gives_a_pseudo_terminal() {
    let r = root();
    let o = r.mvm(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; echo $TERM",
    ]);
    let out = stdout(&o);
    assert!(out.starts_with("/dev/pts/"), "{out:?} {}", stderr(&o));
    assert!(out.contains("xterm"), "{out:?}");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn image_defaults_and_entrypoint_override() {
    let r = TestRoot::empty(MVM);
    let tar = common::busybox_tar();
    let o = r.mvm(&[
        "import",
        "-c",
        r#"CMD ["echo","default cmd"]"#,
        "-c",
        "ENV GREETING=hi",
        "-c",
        "WORKDIR /etc",
        tar.to_str().unwrap(),
        "bb:cfg",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = r.mvm(&["run", "--rm", "bb:cfg"]);
    assert_eq!(stdout(&o), "default cmd\n", "{}", stderr(&o));
    let o = r.mvm(&["run", "--rm", "bb:cfg", "sh", "-c", "echo $GREETING; pwd"]);
    assert_eq!(stdout(&o), "hi\n/etc\n");
    let o = r.mvm(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "bb:cfg",
        "via",
        "entrypoint",
    ]);
    assert_eq!(stdout(&o), "via entrypoint\n");
}

#[test]
fn runtime_errors_have_docker_exit_codes() {
    let r = root();
    // Missing image: `run` tries to pull it (from a loopback port where no registry listens:
    // tests send nothing off the machine), says so as Docker does, then fails with one
    // error line and 125.
    let o = r.mvm(&["run", "--rm", "127.0.0.1:9/nosuchimage", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("Unable to find image '127.0.0.1:9/nosuchimage:latest' locally"),
        "{err}"
    );
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[1].starts_with("mvm: "), "{err}");
    assert!(r.leftover_containers().is_empty());
    // Command not found: 127.
    let o = r.mvm(&["run", "--rm", "busybox", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuchcommand"));
    // Not executable: 126.
    let o = r.mvm(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    // Bad flag and bad values: 125 before anything starts.
    let o = r.mvm(&["run", "--bogus", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let o = r.mvm(&["run", "--rm", "-m", "1m", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("minimum memory"));
    let o = r.mvm(&["run", "--rm", "--name", "bad/name", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    // Nothing was left behind by any of them.
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    assert!(
        r.leftover_processes().is_empty(),
        "{:?}",
        r.leftover_processes()
    );
}

#[test]
fn rm_leaves_nothing_behind() {
    let r = root();
    let o = r.mvm(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo data > /file; sync",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    assert!(
        r.leftover_processes().is_empty(),
        "{:?}",
        r.leftover_processes()
    );
}

#[test]
fn name_in_use_is_refused() {
    let r = root();
    let o = r.mvm(&["run", "--name", "web", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = r.mvm(&["run", "--rm", "--name", "web", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
}

#[test]
fn memory_and_cpus_size_the_vm() {
    let r = root();
    let o = r.mvm(&[
        "run",
        "--rm",
        "-m",
        "256m",
        "--cpus",
        "2",
        "busybox",
        "sh",
        "-c",
        "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo",
    ]);
    let out = stdout(&o);
    assert!(out.starts_with("2\n"), "{out:?} {}", stderr(&o));
    let kib: u64 = out
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!((200_000..=262_144).contains(&kib), "MemTotal {kib} kB");
}

#[test]
fn sigterm_to_mvm_reaches_the_process() {
    let r = root();
    let mut child = r
        .cmd(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "ready" so the trap is installed.
    use std::io::{BufRead, BufReader};
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(r.leftover_containers().is_empty());
}

#[test]
fn ten_runs_in_parallel() {
    let r = root();
    let children: Vec<_> = (0..10)
        .map(|i| {
            r.cmd(&["run", "--rm", "busybox", "echo", &format!("run {i}")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(stdout(&o), format!("run {i}\n"), "stderr: {}", stderr(&o));
        assert_eq!(o.status.code(), Some(0));
    }
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    assert!(
        r.leftover_processes().is_empty(),
        "{:?}",
        r.leftover_processes()
    );
}

#[test]
fn info_names_the_backend_and_why() {
    let r = TestRoot::empty(MVM);
    let o = r.mvm(&["info"]);
    let out = stdout(&o);
    assert!(out.contains("Backend: "), "{out}");
    assert!(out.contains("Reason: "), "{out}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert!(out.contains("Backend: qemu (tcg)"), "{out}");
        let o = r.cmd(&["info"]).env("MVM_VMM", "mvm").output().unwrap();
        assert!(
            stdout(&o).contains("will not boot in usable time"),
            "{}",
            stdout(&o)
        );
    }
    let o = r.mvm(&["--vmm", "xen", "info"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn import_refuses_garbage_and_bad_names() {
    let r = TestRoot::empty(MVM);
    let junk = r.path.join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let o = r.mvm(&["import", junk.to_str().unwrap(), "junk"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a tar"), "{}", stderr(&o));
    let o = r.mvm(&[
        "import",
        common::busybox_tar().to_str().unwrap(),
        "Bad:Name:x",
    ]);
    // Docker's daemon refuses the reference: exit 1.
    assert_eq!(o.status.code(), Some(1));
    let o = r.mvm(&["import", "/nonexistent.tar", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let o = r.mvm(&["images", "-q"]);
    assert_eq!(stdout(&o), "");
}

#[test]
fn dash_it_without_a_terminal_and_a_relative_workdir_are_refused_as_docker_does() {
    let r = root();
    // `echo hi | docker run --rm -it busybox cat`: rc 1, at once.
    let o = r.mvm_stdin(&["run", "--rm", "-it", "busybox", "cat"], b"hi\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the input device is not a TTY"),
        "{}",
        stderr(&o)
    );
    // `docker run -w relative`: rc 125 with Docker's words.
    let o = r.mvm(&["run", "--rm", "-w", "relative", "busybox", "pwd"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "the working directory 'relative' is invalid, it needs to be an absolute path"
        ),
        "{}",
        stderr(&o)
    );
    assert!(r.leftover_containers().is_empty());
}

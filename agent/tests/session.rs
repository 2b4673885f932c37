//! The agent's session logic driven through a socketpair, as the host would drive it over
//! vsock: real processes, real pipes and PTYs, no VM.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mvm_agent::reaper::{ExitInfo, ReapMode, Reaper};
use mvm_agent::session::{SessionConfig, SessionError, SessionOutcome, serve};
use mvm_agent::test_util::TempDir;
use mvm_agent_protocol::{
    AgentFrame, AgentMessage, Frame, FrameReader, FrameWriter, HostMessage, PROTOCOL_VERSION,
    ProcessSpec, Rlimit, StartFailedKind, Stream, host_handshake,
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";

struct Agent {
    // Kept alive for the session's lifetime: it is the container's /etc.
    _etc: TempDir,
    thread: Option<JoinHandle<Result<SessionOutcome, SessionError>>>,
}

struct Host {
    reader: FrameReader<UnixStream>,
    writer: FrameWriter<UnixStream>,
}

/// Starts a session on one end of a socketpair; returns the host's end, not yet greeted.
fn start_agent() -> (Agent, Host) {
    let etc = TempDir::new("session-etc");
    std::fs::write(etc.path().join("passwd"), PASSWD).unwrap();
    std::fs::write(etc.path().join("group"), GROUP).unwrap();
    let (host, agent) = UnixStream::pair().unwrap();
    let config = SessionConfig {
        root: std::path::PathBuf::from("/"),
        etc_dir: etc.path().to_path_buf(),
        hostname: Some("testbox".into()),
        exit_grace: Duration::from_millis(100),
        close_timeout: Duration::from_secs(5),
        handshake_timeout: None,
        container_init: Default::default(),
    };
    let thread = std::thread::spawn(move || {
        let reaper = Reaper::new(ReapMode::Child).unwrap();
        serve(agent, &config, &reaper)
    });
    let host = Host {
        reader: FrameReader::new(host.try_clone().unwrap()),
        writer: FrameWriter::new(host),
    };
    (
        Agent {
            _etc: etc,
            thread: Some(thread),
        },
        host,
    )
}

impl Agent {
    fn outcome(mut self) -> SessionOutcome {
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

/// The user the test may run processes as: root when the tests run as root (so that user
/// switching is exercised), the test's own identity otherwise.
fn me() -> String {
    // SAFETY: trivial getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        String::new()
    } else {
        format!("{uid}:{gid}")
    }
}

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        user: me(),
        ..Default::default()
    }
}

#[derive(Debug, Default)]
struct Run {
    pid: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exited: Option<(Option<i32>, Option<i32>)>,
    failed: Option<(StartFailedKind, String)>,
    errors: Vec<String>,
}

impl Host {
    fn hello(&mut self) {
        host_handshake(&mut self.reader, &mut self.writer).unwrap();
    }

    fn send(&mut self, msg: HostMessage) {
        self.writer.write_control(&msg).unwrap();
    }

    fn next(&mut self) -> Option<AgentFrame> {
        self.reader.read_frame::<AgentMessage>().unwrap()
    }

    /// Reads until the agent closes, checking the ordering rules of the protocol.
    fn collect(&mut self) -> Run {
        self.collect_started(None)
    }

    /// As `collect`, when `Started` was already read.
    fn collect_started(&mut self, pid: Option<i32>) -> Run {
        let mut run = Run {
            pid,
            ..Run::default()
        };
        let mut eof = [false, false];
        while let Some(frame) = self.next() {
            assert!(run.exited.is_none(), "frame after Exited: {frame:?}");
            match frame {
                Frame::Control(AgentMessage::Started { pid }) => run.pid = Some(pid),
                Frame::Control(AgentMessage::StartFailed { kind, message }) => {
                    run.failed = Some((kind, message))
                }
                Frame::Control(AgentMessage::Exited { code, signal }) => {
                    assert!(eof[0] && eof[1], "Exited before both EOFs");
                    run.exited = Some((code, signal));
                }
                Frame::Control(AgentMessage::Error { message }) => run.errors.push(message),
                Frame::Control(other) => panic!("unexpected {other:?}"),
                Frame::Data { stream, data } => {
                    assert!(run.pid.is_some(), "output before Started");
                    let i = match stream {
                        Stream::Stdout => 0,
                        Stream::Stderr => 1,
                        Stream::Stdin | Stream::Changes => {
                            panic!("{stream:?} from the agent in a process session")
                        }
                    };
                    assert!(!eof[i], "{stream:?} data after its EOF");
                    if data.is_empty() {
                        eof[i] = true;
                    } else if i == 0 {
                        run.stdout.extend_from_slice(&data);
                    } else {
                        run.stderr.extend_from_slice(&data);
                    }
                }
            }
        }
        run
    }
}

/// Runs a spec to its end and closes the host side.
fn run_spec(spec: ProcessSpec) -> (Run, SessionOutcome) {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec));
    let run = host.collect();
    drop(host);
    (run, agent.outcome())
}

#[test]
fn stdout_stderr_and_exit_code() {
    let (run, outcome) = run_spec(spec(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]));
    assert!(run.pid.is_some());
    assert_eq!(String::from_utf8_lossy(&run.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&run.stderr), "err\n");
    assert_eq!(run.exited, Some((Some(3), None)));
    assert_eq!(
        outcome,
        SessionOutcome::Exited(ExitInfo {
            code: Some(3),
            signal: None
        })
    );
}

#[test]
fn stdin_round_trip_through_cat() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(ProcessSpec {
        stdin: true,
        ..spec(&["cat"])
    }));
    host.writer.write_data(Stream::Stdin, b"hello\n").unwrap();
    host.writer.write_data(Stream::Stdin, b"world\n").unwrap();
    host.writer.write_eof(Stream::Stdin).unwrap();
    let run = host.collect();
    drop(host);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello\nworld\n");
    assert!(run.stderr.is_empty());
    assert_eq!(run.exited, Some((Some(0), None)));
    assert!(matches!(agent.outcome(), SessionOutcome::Exited(_)));
}

#[test]
fn large_stdin_and_stdout_with_back_pressure() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(ProcessSpec {
        stdin: true,
        ..spec(&["cat"])
    }));
    // 5 MiB: more than the agent buffers, more than one frame, more than any pipe holds.
    let data: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut writer = host.writer;
    let expected = data.clone();
    let feeder = std::thread::spawn(move || {
        for chunk in data.chunks(100_000) {
            writer.write_data(Stream::Stdin, chunk).unwrap();
        }
        writer.write_eof(Stream::Stdin).unwrap();
        writer
    });
    let run = Host::collect_from(&mut host.reader);
    let writer = feeder.join().unwrap();
    drop(writer);
    drop(host.reader);
    assert_eq!(run.stdout.len(), expected.len());
    assert!(run.stdout == expected);
    assert_eq!(run.exited, Some((Some(0), None)));
    assert!(matches!(agent.outcome(), SessionOutcome::Exited(_)));
}

impl Host {
    fn collect_from(reader: &mut FrameReader<UnixStream>) -> Run {
        // Same checks as `collect`, for a host whose writer lives in another thread.
        let mut host = Host {
            reader: FrameReader::new(reader.get_ref().try_clone().unwrap()),
            writer: FrameWriter::new(reader.get_ref().try_clone().unwrap()),
        };
        host.collect()
    }
}

#[test]
fn large_output() {
    let (run, _) = run_spec(spec(&["head", "-c", "3000000", "/dev/zero"]));
    assert_eq!(run.stdout.len(), 3_000_000);
    assert_eq!(run.exited, Some((Some(0), None)));
}

#[test]
fn command_not_found() {
    let (run, outcome) = run_spec(spec(&["no-such-command-mvm"]));
    let (kind, message) = run.failed.unwrap();
    assert_eq!(kind, StartFailedKind::NotFound);
    assert_eq!(kind.exit_code(), 127);
    assert!(message.contains("no-such-command-mvm"), "{message}");
    assert!(run.pid.is_none());
    assert_eq!(outcome, SessionOutcome::StartFailed);

    let (run, _) = run_spec(spec(&["/no/such/path"]));
    assert_eq!(run.failed.unwrap().0, StartFailedKind::NotFound);
}

#[test]
fn command_not_executable() {
    let dir = TempDir::new("noexec");
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (run, _) = run_spec(spec(&[file.to_str().unwrap()]));
    assert_eq!(run.failed.unwrap().0, StartFailedKind::PermissionDenied);
    let (run, _) = run_spec(spec(&[dir.path().to_str().unwrap()]));
    assert_eq!(run.failed.unwrap().0, StartFailedKind::PermissionDenied);
}

#[test]
fn exec_failure_in_the_child_is_reported() {
    // Executable bit set but not a valid binary or script: execve itself fails (ENOEXEC).
    let dir = TempDir::new("badbin");
    let file = dir.path().join("bad");
    std::fs::write(&file, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (run, _) = run_spec(spec(&[file.to_str().unwrap()]));
    let (kind, message) = run.failed.unwrap();
    assert_eq!(kind, StartFailedKind::PermissionDenied, "{message}");
}

#[test]
fn signal_is_forwarded() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec(&["sleep", "100"])));
    let pid = match host.next() {
        Some(Frame::Control(AgentMessage::Started { pid })) => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    host.send(HostMessage::Signal { signal: 15 });
    let run = host.collect_started(Some(pid));
    drop(host);
    assert_eq!(run.exited, Some((None, Some(15))));
    assert!(matches!(agent.outcome(), SessionOutcome::Exited(_)));
}

#[test]
fn invalid_signal_is_refused() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec(&["sleep", "100"])));
    host.send(HostMessage::Signal { signal: 0 });
    host.send(HostMessage::Signal { signal: 9 });
    let run = host.collect();
    drop(host);
    assert_eq!(run.errors.len(), 1, "{:?}", run.errors);
    assert_eq!(run.exited, Some((None, Some(9))));
    agent.outcome();
}

#[test]
fn terminal() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Resize { rows: 33, cols: 99 });
    host.send(HostMessage::Start(ProcessSpec {
        terminal: true,
        ..spec(&["/bin/sh", "-c", "tty; stty size; echo $TERM; exit 4"])
    }));
    let run = host.collect();
    drop(host);
    let out = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[1], "33 99", "{out:?}");
    assert_eq!(lines[2], "xterm", "{out:?}");
    assert!(run.stderr.is_empty());
    assert_eq!(run.exited, Some((Some(4), None)));
    agent.outcome();
}

#[test]
fn terminal_input_and_resize_while_running() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(ProcessSpec {
        terminal: true,
        stdin: true,
        ..spec(&["/bin/sh", "-c", "read line; stty size; echo got:$line"])
    }));
    host.send(HostMessage::Resize { rows: 10, cols: 20 });
    // The PTY echoes input; the size must be set before `read` returns.
    std::thread::sleep(Duration::from_millis(100));
    host.writer.write_data(Stream::Stdin, b"abc\n").unwrap();
    let run = host.collect();
    drop(host);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("10 20\r\n"), "{out:?}");
    assert!(out.contains("got:abc\r\n"), "{out:?}");
    assert_eq!(run.exited, Some((Some(0), None)));
    agent.outcome();
}

#[test]
fn environment_cwd_and_defaults() {
    let dir = TempDir::new("cwd");
    let cwd = dir.path().join("new/work/dir");
    let (run, _) = run_spec(ProcessSpec {
        env: vec!["FOO=bar".into()],
        cwd: cwd.to_str().unwrap().into(),
        ..spec(&["/bin/sh", "-c", "echo $FOO $HOSTNAME $PATH; pwd"])
    });
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(
        out,
        format!(
            "bar testbox /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{}\n",
            cwd.display()
        )
    );
}

#[test]
fn stdin_not_attached_reads_dev_null() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec(&["cat"])));
    // Ignored: stdin is not attached.
    host.writer.write_data(Stream::Stdin, b"ignored").unwrap();
    let run = host.collect();
    drop(host);
    assert!(run.stdout.is_empty());
    assert_eq!(run.exited, Some((Some(0), None)));
    agent.outcome();
}

#[test]
fn user_and_groups_from_the_image() {
    assert!(
        me().is_empty(),
        "switching users needs the tests to run as root (as they do in CI)"
    );
    let (run, _) = run_spec(ProcessSpec {
        user: "app".into(),
        ..spec(&["/bin/sh", "-c", "id -u; id -g; id -G; echo $HOME"])
    });
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "1000\n1000\n1000 2000\n/home/app\n"
    );
    let (run, _) = run_spec(ProcessSpec {
        user: "4242:extra".into(),
        ..spec(&["/bin/sh", "-c", "id -u; id -g; echo $HOME"])
    });
    assert_eq!(String::from_utf8_lossy(&run.stdout), "4242\n2000\n/\n");
    let (run, _) = run_spec(ProcessSpec {
        user: "nobody-here".into(),
        ..spec(&["true"])
    });
    let (kind, message) = run.failed.unwrap();
    assert_eq!(kind, StartFailedKind::Other);
    assert!(message.contains("nobody-here"), "{message}");
}

#[test]
fn rlimits_are_applied() {
    let (run, _) = run_spec(ProcessSpec {
        rlimits: vec![Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 123,
            hard: 456,
        }],
        ..spec(&["/bin/sh", "-c", "ulimit -Sn; ulimit -Hn"])
    });
    assert_eq!(String::from_utf8_lossy(&run.stdout), "123\n456\n");
    let (run, _) = run_spec(ProcessSpec {
        rlimits: vec![Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            soft: 1,
            hard: 1,
        }],
        ..spec(&["true"])
    });
    assert_eq!(run.failed.unwrap().0, StartFailedKind::Other);
}

#[test]
fn children_holding_the_pipes_do_not_block_exit() {
    let start = Instant::now();
    let (run, _) = run_spec(spec(&["/bin/sh", "-c", "sleep 60 & echo done"]));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "done\n");
    assert_eq!(run.exited, Some((Some(0), None)));
    // Generous: the point is that it does not wait for the 60 s sleep.
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn host_gone_kills_the_process() {
    let dir = TempDir::new("gone");
    let marker = dir.path().join("alive");
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec(&[
        "/bin/sh",
        "-c",
        &format!("sleep 2; touch {}", marker.display()),
    ])));
    let pid = match host.next() {
        Some(Frame::Control(AgentMessage::Started { pid })) => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    drop(host);
    assert_eq!(agent.outcome(), SessionOutcome::HostGone);
    // SAFETY: signal 0 only checks for existence.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "process {pid} survived");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!marker.exists(), "the process group was not killed");
}

#[test]
fn host_leaving_before_start_ends_without_a_process() {
    let (agent, mut host) = start_agent();
    host.hello();
    drop(host);
    assert_eq!(agent.outcome(), SessionOutcome::NoProcess);
    let (agent, host) = start_agent();
    drop(host);
    assert_eq!(agent.outcome(), SessionOutcome::NoProcess);
}

#[test]
fn wrong_version_is_refused() {
    let (agent, mut host) = start_agent();
    host.send(HostMessage::Hello {
        version: PROTOCOL_VERSION + 1,
    });
    match host.next() {
        Some(Frame::Control(AgentMessage::Error { message })) => {
            assert!(message.contains("version"), "{message}")
        }
        other => panic!("expected Error, got {other:?}"),
    }
    assert!(host.next().is_none(), "the agent must close after refusing");
    drop(host);
    assert_eq!(agent.outcome(), SessionOutcome::NoProcess);
}

#[test]
fn garbage_before_hello_is_refused() {
    let (agent, host) = start_agent();
    let mut raw = host.writer.into_inner();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0x01]).unwrap();
    let mut reader = host.reader;
    match reader.read_frame::<AgentMessage>().unwrap() {
        Some(Frame::Control(AgentMessage::Error { .. })) => {}
        other => panic!("expected Error, got {other:?}"),
    }
    drop(raw);
    drop(reader);
    assert_eq!(agent.outcome(), SessionOutcome::NoProcess);
}

#[test]
fn malformed_control_is_answered_and_skipped() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.writer
        .get_mut()
        .write_all(&[5, 0, 0, 0, 1, b'{', b'x', b'x', b'x', b'}'])
        .unwrap();
    // Valid JSON of a type this version does not know.
    host.writer.get_mut().write_all(&[21, 0, 0, 0, 1]).unwrap();
    host.writer
        .get_mut()
        .write_all(br#"{"type":"frobnicate"}"#)
        .unwrap();
    host.send(HostMessage::Start(spec(&["true"])));
    let run = host.collect();
    drop(host);
    assert_eq!(run.errors.len(), 2, "{:?}", run.errors);
    assert_eq!(run.exited, Some((Some(0), None)));
    agent.outcome();
}

#[test]
fn second_start_is_refused() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(spec(&["sleep", "0.3"])));
    host.send(HostMessage::Start(spec(&["true"])));
    let run = host.collect();
    drop(host);
    assert_eq!(run.errors.len(), 1);
    assert_eq!(run.exited, Some((Some(0), None)));
    agent.outcome();
}

#[test]
fn a_pid_namespace_process_is_pid_1_with_its_own_proc() {
    let (run, _) = run_spec(ProcessSpec {
        pid_namespace: true,
        ..spec(&["/bin/sh", "-c", "echo $$; ls -d /proc/[0-9]* | wc -l"])
    });
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    // sh, ls and wc: not the host's processes.
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(n <= 4, "{out}");
    assert_eq!(run.exited, Some((Some(0), None)));
}

#[test]
fn pid_1_without_a_handler_ignores_sigterm_as_under_runc_but_not_sigkill() {
    let (agent, mut host) = start_agent();
    host.hello();
    host.send(HostMessage::Start(ProcessSpec {
        pid_namespace: true,
        ..spec(&["sleep", "100"])
    }));
    let pid = match host.next() {
        Some(Frame::Control(AgentMessage::Started { pid })) => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    host.send(HostMessage::Signal { signal: 15 });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill with signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "SIGTERM ended PID 1");
    host.send(HostMessage::Signal { signal: 9 });
    let run = host.collect_started(Some(pid));
    drop(host);
    assert_eq!(run.exited, Some((None, Some(9))));
    agent.outcome();
}

#[test]
fn masked_and_read_only_paths_in_the_containers_mount_namespace_only() {
    let dir = TempDir::new("masked");
    std::fs::create_dir_all(dir.path().join("secret")).unwrap();
    std::fs::write(dir.path().join("secret/key"), "k").unwrap();
    std::fs::write(dir.path().join("file"), "contents").unwrap();
    let d = dir.path().display();
    let script = format!(
        "ls {d}/secret | wc -l; wc -c < {d}/file; \
         [ -w /proc/sys/kernel/domainname ] && echo writable || echo read-only; \
         [ -w {d}/secret ] && echo writable || echo read-only"
    );
    let (run, _) = run_spec(ProcessSpec {
        pid_namespace: true,
        masked_paths: vec![
            format!("{d}/secret"),
            format!("{d}/file"),
            format!("{d}/missing"),
        ],
        readonly_paths: vec!["/proc/sys".into(), format!("{d}/nothing-here")],
        ..spec(&["/bin/sh", "-c", &script])
    });
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["0", "0", "read-only", "read-only"],
        "{out}{:?}",
        run.failed
    );
    // Only the container's view changed.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file")).unwrap(),
        "contents"
    );
    assert!(dir.path().join("secret/key").exists());
}

#[test]
fn capabilities_no_new_privileges_and_oom_score_as_the_bundle_says() {
    // SAFETY: a trivial getter.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test must run as root (it sets capabilities)");
    let one = vec!["CAP_CHOWN".to_string()];
    let (run, _) = run_spec(ProcessSpec {
        capabilities: Some(Box::new(mvm_agent_protocol::CapabilitySets {
            bounding: one.clone(),
            effective: one.clone(),
            permitted: one.clone(),
            inheritable: Vec::new(),
            ambient: Vec::new(),
        })),
        no_new_privileges: true,
        oom_score_adj: Some(123),
        ..spec(&[
            "/bin/sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; cat /proc/self/oom_score_adj",
        ])
    });
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let fields: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        fields,
        [
            "CapEff: 0000000000000001",
            "CapBnd: 0000000000000001",
            "NoNewPrivs: 1",
            "123"
        ],
        "{out}{:?}",
        run.failed
    );
}

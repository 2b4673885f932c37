//! What a guest can make the host hold, and how the host copes when a VM's process dies or
//! many VMs start at once (issue: every host process a guest can reach is confined and
//! bounded). Real microVMs through the real `mvm` binary.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestRoot, processes_mentioning, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn run_d(r: &TestRoot, args: &[&str]) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let o = r.mvm(&a);
    assert_eq!(o.status.code(), Some(0), "run -d failed: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn record(r: &TestRoot, id: &str) -> serde_json::Value {
    let p = r.path.join("containers").join(id).join("config.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn state(r: &TestRoot, id: &str) -> (String, String) {
    let rec = record(r, id);
    (
        rec["state"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        rec["state"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn files_size(paths: impl IntoIterator<Item = PathBuf>) -> u64 {
    paths
        .into_iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A log and its rotated files.
fn log_and_rotated(path: &Path) -> Vec<PathBuf> {
    let mut v = vec![path.to_path_buf()];
    for n in 1..10 {
        v.push(PathBuf::from(format!("{}.{n}", path.display())));
    }
    v
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Kills one process of a running container's VM with SIGKILL; the container must end (it
/// has no restart policy) with the process named in its error, within moments.
fn kill_helper_and_expect_exit(r: &TestRoot, id: &str, name: &str, pid: u32) {
    // SAFETY: kill(2) on a process of this test's own container.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    loop {
        let (status, error) = state(r, id);
        if status == "exited" {
            assert!(
                error.contains(name),
                "error does not name {name}: {error:?}"
            );
            assert!(error.contains("SIGKILL"), "{error:?}");
            println!("{name} killed: container exited in {:?}", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the container stayed {status:?} after {name} died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ps agrees, and exec says the container is not running.
    let ps = stdout(&r.mvm(&["ps", "-a"]));
    let line = ps
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_default();
    assert!(line.contains("Exited (137)"), "{line}");
    let o = r.mvm(&["exec", id, "true"]);
    assert_ne!(o.status.code(), Some(0));
    r.ok(&["rm", id]);
}

/// One line of /proc/PID/status.
fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// The soft limit of /proc/PID/limits' line starting with `name`.
fn limit(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| {
            l[name.len()..]
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[test]
fn qemu_and_its_vsock_helper_run_confined_under_a_uid_of_their_vm() {
    let r = TestRoot::with_busybox(MVM);
    let a = run_d(&r, &["busybox", "sleep", "1000"]);
    let b = run_d(&r, &["busybox", "sleep", "1000"]);
    let pids = |id: &str| -> Vec<u32> {
        serde_json::from_value(record(&r, id)["state"]["vm_pids"].clone()).unwrap()
    };
    let monitor = record(&r, &a)["state"]["pid"].as_u64().unwrap() as u32;
    let ns = |pid: u32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let mut uids = Vec::new();
    for id in [&a, &b] {
        let vm = pids(id);
        assert_eq!(vm.len(), 2, "qemu and vhost-device-vsock: {vm:?}");
        let uid_of = |p: u32| {
            status_field(p, "Uid:")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let uid = uid_of(vm[0]);
        // Real, effective, saved and filesystem uid: all the VM's own, from the range.
        assert!(uid.iter().all(|u| u == &uid[0]), "{uid:?}");
        assert!(uid[0].parse::<u64>().unwrap() >= 2_000_000_000, "{uid:?}");
        for &p in &vm {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
            assert_eq!(
                uid_of(p),
                uid,
                "{comm}: both processes of a VM share its uid"
            );
            assert_eq!(status_field(p, "CapEff:"), "0000000000000000", "{comm}");
            assert_eq!(status_field(p, "CapBnd:"), "0000000000000000", "{comm}");
            assert_eq!(status_field(p, "NoNewPrivs:"), "1", "{comm}");
            assert_eq!(status_field(p, "Groups:"), "", "{comm}");
            // Its own PID namespace (PID 1 there), mount and network namespaces.
            assert!(
                status_field(p, "NSpid:").ends_with("\t1")
                    || status_field(p, "NSpid:").ends_with(" 1"),
                "{comm}: {}",
                status_field(p, "NSpid:")
            );
            for kind in ["pid", "mnt", "net", "ipc", "uts"] {
                assert_ne!(
                    ns(p, kind),
                    ns(monitor, kind),
                    "{comm}: {kind} namespace shared with the monitor"
                );
            }
            assert_eq!(limit(p, "Max open files"), "4096", "{comm}");
            assert_eq!(limit(p, "Max processes"), "512", "{comm}");
            assert_eq!(limit(p, "Max core file size"), "0", "{comm}");
            assert_ne!(limit(p, "Max file size"), "unlimited", "{comm}");
            // Its root is the jail: /usr, its sockets' directory and device nodes, not the
            // host's tree.
            let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{p}/root"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            root.sort();
            for host_only in ["home", "root", "var", "tmp", "proc", "sys", "boot"] {
                assert!(
                    !root.contains(&host_only.to_string()),
                    "{comm}: jail root has {host_only}: {root:?}"
                );
            }
            assert!(
                root.contains(&"usr".to_string()) && root.contains(&"vm".to_string()),
                "{comm}: {root:?}"
            );
            // Nothing of the state root is open but what the VM needs (its disks).
            for fd in std::fs::read_dir(format!("/proc/{p}/fd"))
                .unwrap()
                .flatten()
            {
                let target = std::fs::read_link(fd.path()).unwrap_or_default();
                let t = target.to_string_lossy();
                assert!(
                    !t.starts_with(&*r.path.to_string_lossy())
                        || t.ends_with(".ext4")
                        || t.ends_with(".erofs")
                        || t.ends_with(".img")
                        || t.contains("/vm/"),
                    "{comm} holds {t}"
                );
            }
        }
        // QEMU also behind its own seccomp filter (-sandbox).
        assert_eq!(status_field(vm[0], "Seccomp:"), "2");
        uids.push(uid[0].clone());
    }
    assert_ne!(uids[0], uids[1], "two VMs share a uid");
    // Confinement does not get in the way: exec, and the VM's vsock both ways.
    assert_eq!(r.ok(&["exec", &a, "echo", "in-a"]), "in-a\n");
    r.ok(&["rm", "-f", &a, &b]);
    r.assert_clean();
}

#[test]
fn killing_any_process_of_a_vm_ends_its_container_with_the_reason() {
    let r = TestRoot::with_busybox(MVM);
    r.ok(&["volume", "create", "vol"]);
    for victim in ["qemu-system-x86_64", "vhost-device-vsock", "virtiofsd"] {
        let id = run_d(&r, &["-v", "vol:/data", "busybox", "sleep", "1000"]);
        let pid = if victim == "virtiofsd" {
            processes_mentioning(&r.path)
                .iter()
                .find(|l| l.contains("virtiofsd") && l.contains("--socket-path"))
                .and_then(|l| l.split(':').next()?.parse().ok())
                .expect("no virtiofsd for the volume")
        } else {
            let pids = record(&r, &id)["state"]["vm_pids"].clone();
            let pids: Vec<u32> = serde_json::from_value(pids).unwrap();
            *pids
                .iter()
                .find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| victim.starts_with(c.trim()))
                })
                .unwrap_or_else(|| panic!("no {victim} among {pids:?}"))
        };
        kill_helper_and_expect_exit(&r, &id, victim, pid);
    }
    r.ok(&["volume", "rm", "vol"]);
    r.assert_clean();
}

#[test]
fn a_restart_policy_brings_back_a_container_whose_hypervisor_was_killed() {
    let r = TestRoot::with_busybox(MVM);
    let id = run_d(&r, &["--restart", "always", "busybox", "sleep", "1000"]);
    let pids: Vec<u32> =
        serde_json::from_value(record(&r, &id)["state"]["vm_pids"].clone()).unwrap();
    // SAFETY: kill(2) on this test's own container's hypervisor.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    common::eventually("the container comes back", || {
        let rec = record(&r, &id);
        (rec["state"]["status"] == "running" && rec["state"]["restart_count"].as_u64() >= Some(1))
            .then_some(())
    });
    assert_eq!(r.ok(&["exec", &id, "echo", "back"]), "back\n");
    r.ok(&["rm", "-f", &id]);
    r.assert_clean();
}

#[test]
fn a_guest_that_writes_without_end_cannot_fill_the_hosts_disk() {
    let r = TestRoot::with_busybox(MVM);
    let id = run_d(
        &r,
        &[
            "--log-opt",
            "max-size=200k",
            "--log-opt",
            "max-file=2",
            "busybox",
            "sh",
            "-c",
            // stdout and stderr, without end.
            "yes out & yes err >&2; wait",
        ],
    );
    let dir = r.path.join("containers").join(&id);
    let run = r.path.join("run").join(&id[..12]);
    // Long enough for an unbounded log to pass its bound many times over.
    std::thread::sleep(Duration::from_secs(15));
    let log = files_size(log_and_rotated(&dir.join("container.log")));
    assert!(log > 100_000, "the log did not fill: {log}");
    assert!(
        log <= 2 * 200_000,
        "container.log and its files hold {log} bytes"
    );
    assert!(!dir.join("container.log.2").exists());
    for f in ["console.log", "vmm.log", "vhost-vsock.log"] {
        let n = files_size(log_and_rotated(&run.join(f)));
        assert!(n <= 2 << 20, "{f} holds {n} bytes");
    }
    let monitor = files_size(log_and_rotated(&dir.join("monitor.log")));
    assert!(monitor <= 4 << 20, "monitor.log holds {monitor} bytes");
    // The monitor holds little memory and few threads while copying the flood.
    let pid = record(&r, &id)["state"]["pid"].as_u64().unwrap() as u32;
    let rss = proc_status(pid, "VmRSS:");
    let threads = proc_status(pid, "Threads:");
    println!("monitor under a flood: VmRSS {rss} kB, {threads} threads, log {log} bytes");
    assert!(rss < 64 * 1024, "monitor VmRSS {rss} kB");
    assert!(threads < 32, "monitor has {threads} threads");
    // `logs` reads the rotated files in order; the container still serves.
    let o = r.mvm(&["logs", "--tail", "3", &id]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(r.ok(&["exec", &id, "echo", "alive"]), "alive\n");
    r.ok(&["rm", "-f", &id]);
    r.assert_clean();
}

#[test]
fn bad_log_options_get_one_clear_line() {
    let r = TestRoot::with_busybox(MVM);
    for (args, want) in [
        (vec!["--log-opt", "max-size=lots"], "max-size"),
        (vec!["--log-opt", "max-size=0"], "max-size"),
        (vec!["--log-opt", "max-file=0"], "max-file"),
        (vec!["--log-opt", "max-file=many"], "max-file"),
        (vec!["--log-opt", "mode=non-blocking"], "unknown log opt"),
        (vec!["--log-opt", "max-size"], "key=value"),
        (vec!["--log-driver", "syslog"], "unknown log driver"),
        (
            vec!["--log-driver", "none", "--log-opt", "max-size=1m"],
            "none",
        ),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args.iter().copied());
        a.extend(["busybox", "true"]);
        let o = r.mvm(&a);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // --log-driver none: the container runs; `logs` says why it has nothing.
    let o = r.mvm(&[
        "run",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "hi",
    ]);
    assert_eq!(stdout(&o), "hi\n");
    let o = r.mvm(&["logs", "quiet"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--log-driver none"), "{}", stderr(&o));
    r.ok(&["rm", "quiet"]);
    r.assert_clean();
}

#[test]
fn twenty_containers_started_at_once_all_run() {
    let r = TestRoot::with_busybox(MVM);
    let children: Vec<_> = (0..20)
        .map(|i| {
            r.cmd(&["run", "--rm", "busybox", "echo", &format!("n{i}")])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        if o.status.code() != Some(0) || stdout(&o) != format!("n{i}\n") {
            failed.push(format!(
                "{i}: {:?} {}{}",
                o.status.code(),
                stdout(&o),
                stderr(&o)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 20 failed: {failed:#?}",
        failed.len()
    );
    r.assert_clean();
}

// A hostile agent (issue 15): the guest kernel and the agent are the attacker's. These run the
// container with `MVM_AGENT` set to agent/examples/hostile-agent.rs, built static, which
// boots as the real agent does, does the handshake, and then misbehaves as the container's
// first argument says.

/// The hostile agent, built (or brought up to date) once per test run by its script; a
/// failed build fails the test, with the command to run.
fn hostile_agent() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the runtime crate lives in the workspace");
            // The profile of the mvm under test: target/<profile>/mvm.
            let profile = Path::new(MVM)
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("release")
                .to_string();
            let o = std::process::Command::new(repo.join("scripts/build-hostile-agent.sh"))
                .arg(&profile)
                .current_dir(repo)
                .output()
                .expect("cannot run scripts/build-hostile-agent.sh");
            assert!(
                o.status.success(),
                "building the hostile agent failed; run `scripts/build-hostile-agent.sh {profile}`: {}",
                stderr(&o)
            );
            let p = repo.join(stdout(&o).lines().last().unwrap_or_default().trim());
            assert!(
                p.is_file(),
                "{} is missing after scripts/build-hostile-agent.sh {profile}",
                p.display()
            );
            p
        })
        .clone()
}

/// `mvm args...` with the hostile agent in the guest.
fn hostile_cmd(r: &TestRoot, args: &[&str]) -> std::process::Command {
    let mut c = r.cmd(args);
    c.env("MVM_AGENT", hostile_agent());
    c.stdin(std::process::Stdio::null());
    c
}

/// Runs `mvm args...` with the hostile agent to its end, failing the test (and killing it)
/// if it has not ended after a minute: a hostile agent must not make `mvm` hang.
fn hostile_mvm(r: &TestRoot, args: &[&str]) -> std::process::Output {
    let child = hostile_cmd(r, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mvm");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o.expect("wait for mvm"),
        Err(_) => {
            // SAFETY: kill(2) on the mvm this test started, not yet reaped (its waiter
            // thread has not returned).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("mvm {args:?} did not end within a minute");
        }
    }
}

fn hostile_run_d(r: &TestRoot, args: &[&str]) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let o = hostile_mvm(r, &a);
    assert_eq!(o.status.code(), Some(0), "run -d failed: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// The ID of the container named `name`.
fn id_of(r: &TestRoot, name: &str) -> String {
    std::fs::read_dir(r.path.join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| !id.starts_with('.'))
        .find(|id| record(r, id)["name"] == name)
        .unwrap_or_else(|| panic!("no container named {name}"))
}

fn monitor_pid(r: &TestRoot, id: &str) -> u32 {
    record(r, id)["state"]["pid"]
        .as_u64()
        .expect("no monitor pid") as u32
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The largest VmRSS (kB) and thread count of `pid` seen once a second for `secs` seconds.
fn watch_monitor(pid: u32, secs: u64) -> (u64, u64) {
    let (mut rss, mut threads) = (0, 0);
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        rss = rss.max(proc_status(pid, "VmRSS:"));
        threads = threads.max(proc_status(pid, "Threads:"));
    }
    (rss, threads)
}

/// monitor.log and its rotated files: within 4 files of 1 MiB (logfile.rs).
fn assert_monitor_log_bounded(dir: &Path) -> u64 {
    let files = log_and_rotated(&dir.join("monitor.log"));
    for f in &files {
        let n = files_size([f.clone()]);
        assert!(n <= 1 << 20, "{} holds {n} bytes", f.display());
    }
    assert!(!files[4].exists(), "a fifth monitor.log file was kept");
    files_size(files)
}

#[test]
fn a_hostile_agent_flooding_maximal_error_messages_is_bounded() {
    let r = TestRoot::with_busybox(MVM);
    let id = hostile_run_d(&r, &["busybox", "error-flood"]);
    let dir = r.path.join("containers").join(&id);
    let pid = monitor_pid(&r, &id);
    // Each message is a whole 1 MiB frame: long enough for an unbounded path to show.
    let (rss, threads) = watch_monitor(pid, 12);
    let fds = open_fds(pid);
    let monitor = assert_monitor_log_bounded(&dir);
    let log = files_size(log_and_rotated(&dir.join("container.log")));
    println!(
        "error flood: monitor VmRSS max {rss} kB, {threads} threads, {fds} fds; monitor.log {monitor} bytes, container.log {log} bytes"
    );
    assert!(rss < 64 * 1024, "monitor VmRSS {rss} kB");
    assert!(threads < 32, "monitor has {threads} threads");
    assert!(fds < 64, "monitor has {fds} descriptors");
    assert_eq!(log, 0, "agent errors went to the container's log");
    let text =
        String::from_utf8_lossy(&std::fs::read(dir.join("monitor.log")).unwrap()).into_owned();
    assert!(
        text.contains("agent: "),
        "the errors were not logged at all"
    );
    assert!(
        text.contains("log rate limit reached"),
        "the monitor's log was not rate-limited"
    );
    // Each message is cut to a line; the newlines and escapes it carries cannot forge one.
    for line in text.lines() {
        assert!(
            line.len() < 1024,
            "a {}-byte line in monitor.log",
            line.len()
        );
        assert!(!line.starts_with("2099-01-01"), "a forged line: {line}");
        assert!(!line.contains('\x1b'), "an escape sequence reached the log");
    }
    assert_eq!(state(&r, &id).0, "running");
    r.ok(&["rm", "-f", &id]);
    r.assert_clean();
}

#[test]
fn a_hostile_agent_flooding_output_drops_a_stuck_attach_client() {
    let r = TestRoot::with_busybox(MVM);
    let id = hostile_run_d(
        &r,
        &[
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
            "busybox",
            "data-flood",
        ],
    );
    let dir = r.path.join("containers").join(&id);
    let pid = monitor_pid(&r, &id);
    std::thread::sleep(Duration::from_secs(1));
    let before = proc_status(pid, "Threads:");
    // A client whose output nobody reads: its pipes fill, it stops reading its socket.
    let mut client = hostile_cmd(&r, &["attach", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mvm attach");
    let dropped = std::panic::catch_unwind(|| {
        common::eventually("the monitor drops the stuck client", || {
            std::fs::read_to_string(dir.join("monitor.log"))
                .ok()?
                .contains("dropping an attached client that does not read")
                .then_some(())
        });
        // Dropped means gone: its two threads end although the client still does not read.
        common::eventually("the dropped client's threads end", || {
            (proc_status(pid, "Threads:") <= before).then_some(())
        });
    });
    let _ = client.kill();
    let _ = client.wait();
    if let Err(e) = dropped {
        std::panic::resume_unwind(e);
    }
    // The monitor keeps going: the log still moves, within its bounds.
    let sizes = || {
        log_and_rotated(&dir.join("container.log"))[..3]
            .iter()
            .map(|f| files_size([f.clone()]))
            .collect::<Vec<_>>()
    };
    let first = sizes();
    let (rss, threads) = watch_monitor(pid, 6);
    let then = sizes();
    assert_ne!(first, then, "the monitor stopped copying the output");
    let log = files_size(log_and_rotated(&dir.join("container.log")));
    let monitor = assert_monitor_log_bounded(&dir);
    println!(
        "data flood: monitor VmRSS max {rss} kB, {threads} threads ({before} before attaching); container.log {log} bytes, monitor.log {monitor} bytes"
    );
    assert!(
        log <= 2 * 1_000_000,
        "container.log and its files hold {log}"
    );
    assert!(!dir.join("container.log.2").exists());
    assert!(rss < 64 * 1024, "monitor VmRSS {rss} kB");
    assert!(threads < 32, "monitor has {threads} threads");
    assert_eq!(state(&r, &id).0, "running");
    r.ok(&["rm", "-f", &id]);
    r.assert_clean();
}

#[test]
fn garbage_from_a_hostile_agent_ends_the_session_with_a_clear_error() {
    let r = TestRoot::with_busybox(MVM);
    for (mode, want) in [
        ("oversize", "exceeds the limit"),
        ("garbage", "exceeds the limit"),
        ("bad-kind", "unknown frame kind 0x7f"),
        ("bad-json", "malformed control message"),
    ] {
        let o = hostile_mvm(&r, &["run", "--name", mode, "busybox", mode]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{mode}: {e}");
        assert_eq!(e.lines().count(), 1, "{mode}: {e}");
        assert!(e.contains(want), "{mode}: {e}");
        let id = id_of(&r, mode);
        let (status, error) = state(&r, &id);
        assert_eq!(status, "exited", "{mode}");
        assert!(error.contains(want), "{mode}: recorded {error:?}");
        assert_eq!(record(&r, &id)["state"]["exit_code"], 125, "{mode}");
        r.ok(&["rm", mode]);
    }
    // Detached, the monitor records the same and goes.
    let id = hostile_run_d(&r, &["busybox", "bad-kind"]);
    common::eventually("the container ends", || {
        (state(&r, &id).0 == "exited").then_some(())
    });
    assert!(
        state(&r, &id).1.contains("unknown frame kind"),
        "{:?}",
        state(&r, &id)
    );
    let ps = stdout(&r.mvm(&["ps", "-a"]));
    assert!(ps.contains("Exited (125)"), "{ps}");
    r.ok(&["rm", &id]);
    r.assert_clean();
}

#[test]
fn absurd_exit_values_from_a_hostile_agent_give_255() {
    let r = TestRoot::with_busybox(MVM);
    for mode in ["exit-signal", "exit-negative", "exit-both"] {
        let o = hostile_mvm(&r, &["run", "--name", mode, "busybox", mode]);
        assert_eq!(o.status.code(), Some(255), "{mode}: {}", stderr(&o));
        assert_eq!(
            record(&r, &id_of(&r, mode))["state"]["exit_code"],
            255,
            "{mode}"
        );
        let ps = stdout(&r.mvm(&["ps", "-a"]));
        let line = ps
            .lines()
            .find(|l| l.trim_end().ends_with(mode))
            .unwrap_or_default();
        assert!(line.contains("Exited (255)"), "{mode}: {ps}");
        r.ok(&["rm", mode]);
    }
    r.assert_clean();
}

#[test]
fn a_hostile_agent_that_stalls_mid_frame_is_stopped_and_removed() {
    let r = TestRoot::with_busybox(MVM);
    let id = hostile_run_d(&r, &["busybox", "stall"]);
    // Half a frame, then silence: the container "runs"; it ignores signals.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&r, &id).0, "running");
    let o = hostile_mvm(&r, &["stop", "-t", "1", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(state(&r, &id).0, "exited");
    let id2 = hostile_run_d(&r, &["busybox", "stall"]);
    let o = hostile_mvm(&r, &["rm", "-f", &id, &id2]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    r.assert_clean();
}

#[test]
fn a_hostile_agent_under_a_restart_policy_does_not_grow_its_monitor() {
    let r = TestRoot::with_busybox(MVM);
    // Each run ends at once with a protocol error, and the policy starts the next.
    let id = hostile_run_d(&r, &["--restart", "always", "busybox", "bad-kind"]);
    let pid = monitor_pid(&r, &id);
    let (mut threads, mut fds) = (0, 0);
    common::eventually("six restarts", || {
        threads = threads.max(proc_status(pid, "Threads:"));
        fds = fds.max(open_fds(pid));
        (record(&r, &id)["state"]["restart_count"].as_u64() >= Some(6)).then_some(())
    });
    println!("six restarts: monitor at most {threads} threads, {fds} descriptors");
    // One run needs about ten threads; each run used to leave two behind (its signal
    // forwarder and its control socket's), with their descriptors.
    assert!(threads <= 12, "monitor grew to {threads} threads");
    assert!(fds < 48, "monitor grew to {fds} descriptors");
    r.ok(&["rm", "-f", &id]);
    r.assert_clean();
}

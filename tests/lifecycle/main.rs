//! Detached containers and the commands on them: `run -d`, `ps`, `logs`, `stop`, `kill`,
//! `rm`, `wait`, `inspect`, through the real `mvm` binary and real microVMs.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestRoot, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn root() -> TestRoot {
    TestRoot::with_busybox(MVM)
}

fn run_d(r: &TestRoot, args: &[&str]) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let o = r.mvm(&a);
    assert_eq!(o.status.code(), Some(0), "run -d failed: {}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "{id:?}");
    id
}

/// Waits until the container's log contains `needle`.
fn wait_log(r: &TestRoot, id: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = r.mvm(&["logs", id]);
        if stdout(&o).contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?}: {}",
            stdout(&o)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ps_line(r: &TestRoot, id: &str) -> String {
    let o = r.mvm(&["ps", "-a"]);
    stdout(&o)
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_default()
        .to_string()
}

fn assert_clean(r: &TestRoot) {
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    // Monitors exit a moment after the VM; give them that moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.leftover_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r.leftover_processes().is_empty(),
        "{:?}",
        r.leftover_processes()
    );
}

#[test]
fn detached_container_runs_logs_stops_and_is_removed() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "echo start; echo oops >&2; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, "ticker", "start");
    let line = ps_line(&r, &id);
    assert!(line.contains("Up "), "{line}");
    assert!(line.ends_with("ticker"), "{line}");
    // Running containers only by default; -q prints short IDs.
    assert_eq!(stdout(&r.mvm(&["ps", "-q"])), format!("{}\n", &id[..12]));
    let o = r.mvm(&["logs", &id[..8]]);
    assert_eq!(stdout(&o), "start\n");
    assert_eq!(stderr(&o), "oops\n");
    let o = r.mvm(&["logs", "-t", "ticker"]);
    assert!(stdout(&o).starts_with("20"), "{}", stdout(&o));
    let o = r.mvm(&["inspect", "ticker"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["Id"], id);
    assert_eq!(v[0]["State"]["Running"], true);
    assert_eq!(v[0]["Name"], "/ticker");
    let o = r.mvm(&["rm", "ticker"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot remove a running container"),
        "{}",
        stderr(&o)
    );
    let o = r.mvm(&["stop", "ticker"]);
    assert_eq!(stdout(&o), "ticker\n", "{}", stderr(&o));
    assert!(
        ps_line(&r, &id).contains("Exited (143)"),
        "{}",
        ps_line(&r, &id)
    );
    assert_eq!(stdout(&r.mvm(&["ps", "-q"])), "");
    assert_eq!(stdout(&r.mvm(&["wait", "ticker"])), "143\n");
    // Stopping a stopped container is fine, as in Docker.
    assert_eq!(r.mvm(&["stop", "ticker"]).status.code(), Some(0));
    assert_eq!(stdout(&r.mvm(&["rm", "ticker"])), "ticker\n");
    assert_eq!(stdout(&r.mvm(&["ps", "-aq"])), "");
    assert_clean(&r);
}

#[test]
fn stop_kills_a_process_that_ignores_sigterm_after_the_timeout() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, &id, "ready");
    let t = Instant::now();
    let o = r.mvm(&["stop", "-t", "1", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "stop returned before its timeout: {took:?}"
    );
    assert!(
        ps_line(&r, &id).contains("Exited (137)"),
        "{}",
        ps_line(&r, &id)
    );
    r.mvm(&["rm", &id]);
    assert_clean(&r);
}

#[test]
fn kill_sends_signals_and_refuses_stopped_containers() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "busybox",
            "sh",
            "-c",
            "trap 'echo got USR1; exit 9' USR1; echo ready; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, &id, "ready");
    let o = r.mvm(&["kill", "-s", "USR1", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&r.mvm(&["wait", &id])), "9\n");
    assert!(stdout(&r.mvm(&["logs", &id])).contains("got USR1"));
    let o = r.mvm(&["kill", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    let o = r.mvm(&["kill", "-s", "NOPE", &id]);
    assert_eq!(o.status.code(), Some(125));
    r.mvm(&["rm", &id]);
    assert_clean(&r);
}

#[test]
fn kill_dash_9_of_the_monitor_is_reported_and_cleaned_up() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "busybox",
            "sh",
            "-c",
            "echo ready; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, &id, "ready");
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.path.join("containers").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    let pid = rec["pid"].as_u64().unwrap() as i32;
    // SAFETY: the monitor is a process of this test's own container.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ps_line(&r, &id).contains("Exited (137)") {
        assert!(Instant::now() < deadline, "{}", ps_line(&r, &id));
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = r.mvm(&["rm", "-f", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_clean(&r);
}

#[test]
fn rm_f_stops_and_removes_a_running_container() {
    let r = root();
    let id = run_d(&r, &["busybox", "sleep", "1000"]);
    let o = r.mvm(&["rm", "-f", &id[..12]]);
    assert_eq!(stdout(&o), format!("{}\n", &id[..12]), "{}", stderr(&o));
    assert_clean(&r);
}

#[test]
fn detached_rm_removes_itself_and_logs_follow_until_exit() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "--name",
            "brief",
            "busybox",
            "sh",
            "-c",
            "echo one; sleep 1; echo two",
        ],
    );
    let o = r.mvm(&["logs", "-f", "brief"]);
    assert_eq!(stdout(&o), "one\ntwo\n", "{}", stderr(&o));
    assert_eq!(stdout(&r.mvm(&["wait", &id])), "0\n");
    r.mvm(&["rm", &id]);
    let id = run_d(&r, &["--rm", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.path.join("containers").join(&id).exists() {
        assert!(Instant::now() < deadline, "--rm container still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_clean(&r);
}

#[test]
fn unknown_containers_and_bad_input() {
    let r = root();
    for cmd in [
        &["logs", "nosuch"][..],
        &["stop", "nosuch"],
        &["rm", "nosuch"],
        &["wait", "nosuch"],
        &["kill", "nosuch"],
        &["inspect", "nosuch"],
    ] {
        let o = r.mvm(cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        assert!(
            stderr(&o).contains("No such container: nosuch"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
    let o = r.mvm(&["stop"]);
    assert_eq!(o.status.code(), Some(125));
    let o = r.mvm(&["logs", "--tail", "x", "c"]);
    assert_eq!(o.status.code(), Some(125));
    // A container that fails to start is not left behind, also with -d.
    let o = r.mvm(&["run", "-d", "busybox", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuchcommand"), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.leftover_containers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_clean(&r);
}

#[test]
fn ten_detached_containers_then_rm_f_all() {
    let r = root();
    let ids: Vec<String> = (0..10)
        .map(|_| run_d(&r, &["busybox", "sleep", "1000"]))
        .collect();
    let listed = stdout(&r.mvm(&["ps", "-q"]));
    for id in &ids {
        assert!(listed.contains(&id[..12]), "{listed}");
    }
    let all: Vec<String> = stdout(&r.mvm(&["ps", "-aq"]))
        .lines()
        .map(String::from)
        .collect();
    let mut args = vec!["rm", "-f"];
    args.extend(all.iter().map(String::as_str));
    let o = r.mvm(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_clean(&r);
}

#[test]
fn exec_runs_more_processes_in_the_running_vm() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "-e",
            "FOO=bar",
            "--name",
            "svc",
            "busybox",
            "sh",
            "-c",
            "echo ready; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, &id, "ready");
    let o = r.mvm(&["exec", "svc", "sh", "-c", "echo $FOO; echo err >&2; exit 4"]);
    assert_eq!(stdout(&o), "bar\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(o.status.code(), Some(4));
    let o = r.mvm(&[
        "exec",
        "-u",
        "1000",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "svc",
        "sh",
        "-c",
        "echo $X; pwd; id -u",
    ]);
    assert_eq!(stdout(&o), "1\n/tmp\n1000\n", "{}", stderr(&o));
    let o = r.mvm_stdin(&["exec", "-i", "svc", "cat"], b"through exec\n");
    assert_eq!(stdout(&o), "through exec\n");
    // Several at once, and the container's own process keeps running.
    let kids: Vec<_> = (0..4)
        .map(|i| {
            r.cmd(&["exec", "svc", "sh", "-c", &format!("sleep 0.3; echo {i}")])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, k) in kids.into_iter().enumerate() {
        let o = k.wait_with_output().unwrap();
        assert_eq!(stdout(&o), format!("{i}\n"));
        assert_eq!(o.status.code(), Some(0));
    }
    let o = r.mvm(&["exec", "svc", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(ps_line(&r, &id).contains("Up "), "{}", ps_line(&r, &id));
    r.mvm(&["stop", "-t", "1", "svc"]);
    let o = r.mvm(&["exec", "svc", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    r.mvm(&["rm", "svc"]);
    assert_clean(&r);
}

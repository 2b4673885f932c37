//! Detached containers and the commands on them: `run -d`, `ps`, `logs`, `stop`, `kill`,
//! `rm`, `wait`, `inspect`, through the real `mvm` binary and real microVMs.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestRoot, eventually, stderr, stdout};

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
        // Either stream: the container's stdout and stderr reach the log independently.
        if stdout(&o).contains(needle) || stderr(&o).contains(needle) {
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
    r.assert_clean();
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
            // PID 1 of its namespace, as under runc: only a handler makes SIGTERM end it.
            "echo start; echo oops >&2; trap 'echo bye; exit 143' TERM; while true; do sleep 0.2; done",
        ],
    );
    wait_log(&r, "ticker", "start");
    wait_log(&r, "ticker", "oops");
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
    // Docker's daemon refuses a bad signal: exit 1.
    let o = r.mvm(&["kill", "-s", "NOPE", &id]);
    assert_eq!(o.status.code(), Some(1));
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
    let pid = rec["state"]["pid"].as_u64().unwrap() as i32;
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
    // `rm -f` of a container that does not exist: said on stderr, not failed on (Docker's
    // CLI: rc 0).
    let o = r.mvm(&["rm", "-f", "nosuch"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No such container: nosuch"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
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
    // A -w that does not exist is not made: Docker's 126 and its reason.
    let o = r.mvm(&["exec", "-w", "/nonexist", "svc", "pwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexist"), "{}", stderr(&o));
    assert_eq!(
        r.mvm(&["exec", "svc", "ls", "/nonexist"]).status.code(),
        Some(1),
        "exec -w made the directory"
    );
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
    // Docker's exec: 126 for any start failure.
    let o = r.mvm(&["exec", "svc", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(126));
    assert!(ps_line(&r, &id).contains("Up "), "{}", ps_line(&r, &id));
    r.mvm(&["stop", "-t", "1", "svc"]);
    let o = r.mvm(&["exec", "svc", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    r.mvm(&["rm", "svc"]);
    assert_clean(&r);
}

/// Polls `inspect` until `pred` holds for the container's JSON.
fn wait_inspect(
    r: &TestRoot,
    id: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let o = r.mvm(&["inspect", id]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout(&o))
            && pred(&v[0])
        {
            return v[0].clone();
        }
        assert!(Instant::now() < deadline, "never {what}: {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn create_then_start_restart_keeps_the_writable_layer() {
    let r = root();
    let o = r.mvm(&[
        "create",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "echo run >> /count; wc -l < /count; sleep 600",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64);
    assert!(ps_line(&r, &id).contains("Created"), "{}", ps_line(&r, &id));
    assert!(
        stdout(&r.mvm(&["ps", "-q"])).is_empty(),
        "created is not running"
    );
    // Starting it twice: the second is a no-op, as Docker.
    let o = r.mvm(&["start", "counter"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "counter\n");
    wait_log(&r, &id, "1\n");
    assert_eq!(r.mvm(&["start", "counter"]).status.code(), Some(0));
    // restart: the same container and its files, a second run.
    let o = r.mvm(&["restart", "-t", "1", "counter"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    wait_log(&r, &id, "2\n");
    assert!(ps_line(&r, &id).contains("Up "), "{}", ps_line(&r, &id));
    // stop, then start again: still the same writable disk. The shell is PID 1 of its
    // namespace, as under runc, and has no SIGTERM handler: the timeout's SIGKILL ends it.
    assert_eq!(
        r.mvm(&["stop", "-t", "1", "counter"]).status.code(),
        Some(0)
    );
    assert!(
        ps_line(&r, &id).contains("Exited (137)"),
        "{}",
        ps_line(&r, &id)
    );
    assert_eq!(r.mvm(&["start", "counter"]).status.code(), Some(0));
    wait_log(&r, &id, "3\n");
    assert_eq!(r.mvm(&["rm", "-f", "counter"]).status.code(), Some(0));
    assert_clean(&r);
}

#[test]
fn start_attached_prints_output_and_exit_code() {
    let r = root();
    let o = r.mvm(&[
        "create",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let id = stdout(&o).trim().to_string();
    let o = r.mvm(&["start", "-a", &id]);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(o.status.code(), Some(3));
    assert!(
        ps_line(&r, &id).contains("Exited (3)"),
        "{}",
        ps_line(&r, &id)
    );
    // A bad command: start fails with the runtime's code, the container stays.
    let o = r.mvm(&["create", "--name", "bad", "busybox", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = r.mvm(&["start", "bad"]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/binary"), "{}", stderr(&o));
    let kept = stdout(&r.mvm(&[
        "ps",
        "-a",
        "--filter",
        "name=bad",
        "--format",
        "{{.Names}} {{.State}}",
    ]));
    assert_eq!(
        kept, "bad exited\n",
        "a container that failed to start stays"
    );
    let o = r.mvm(&["container", "prune", "-f"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("Deleted Containers:"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains(&id), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("Total reclaimed space:"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&r.mvm(&["ps", "-aq"])).is_empty());
    assert_clean(&r);
}

#[test]
fn restart_policies_bring_a_crashing_process_back() {
    let r = root();
    // on-failure:2 — the process fails three times: two restarts, then it stays exited.
    let id = run_d(
        &r,
        &[
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo boot; exit 4",
        ],
    );
    let v = wait_inspect(&r, &id, "exited after 2 restarts", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 2
    });
    assert_eq!(v["State"]["ExitCode"], 4);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(stdout(&r.mvm(&["logs", &id])).matches("boot").count(), 3);
    // A success is not a failure: on-failure does not restart it.
    let ok = run_d(&r, &["--restart", "on-failure", "busybox", "true"]);
    let v = wait_inspect(&r, &ok, "exited", |v| v["State"]["Status"] == "exited");
    assert_eq!(v["RestartCount"], 0);
    // always: restarts even a success, until `stop`; stop is final.
    let always = run_d(
        &r,
        &[
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "echo again; sleep 1",
        ],
    );
    wait_inspect(&r, &always, "restarted twice", |v| {
        v["RestartCount"].as_u64().is_some_and(|n| n >= 2)
    });
    let o = r.mvm(&["stop", "-t", "1", &always]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = wait_inspect(&r, &always, "exited", |v| v["State"]["Status"] == "exited");
    let count = v["RestartCount"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let v = wait_inspect(&r, &always, "still exited", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(v["RestartCount"], count, "stop is final");
    // Bad policies and a policy with --rm: usage errors, nothing created.
    for bad in [
        vec!["run", "--restart", "sometimes", "busybox", "true"],
        vec!["run", "--restart", "always:3", "busybox", "true"],
        vec!["run", "--rm", "--restart", "always", "busybox", "true"],
    ] {
        let o = r.mvm(&bad);
        assert_eq!(o.status.code(), Some(125), "{bad:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    let o = r.mvm(&["rm", "-f", &id, &ok, &always]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_clean(&r);
}

#[test]
fn pause_stops_the_vm_and_unpause_resumes_it() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done",
        ],
    );
    wait_log(&r, &id, "3\n");
    let o = r.mvm(&["pause", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        ps_line(&r, &id).contains("(Paused)"),
        "{}",
        ps_line(&r, &id)
    );
    let v = wait_inspect(&r, &id, "paused", |v| v["State"]["Paused"] == true);
    assert_eq!(v["State"]["Status"], "paused");
    // Nothing runs while paused: the log does not grow.
    let before = stdout(&r.mvm(&["logs", &id])).lines().count();
    std::thread::sleep(Duration::from_secs(2));
    let after = stdout(&r.mvm(&["logs", &id])).lines().count();
    assert!(after <= before + 1, "{before} -> {after}");
    assert_eq!(
        r.mvm(&["pause", &id]).status.code(),
        Some(1),
        "already paused"
    );
    let o = r.mvm(&["exec", &id, "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("paused"), "{}", stderr(&o));
    let o = r.mvm(&["unpause", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let n = after + 5;
    wait_log(&r, &id, &format!("{n}\n"));
    assert_eq!(
        r.mvm(&["unpause", &id]).status.code(),
        Some(1),
        "not paused"
    );
    // A paused container stops too.
    assert_eq!(r.mvm(&["pause", &id]).status.code(), Some(0));
    let o = r.mvm(&["stop", "-t", "1", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(ps_line(&r, &id).contains("Exited"), "{}", ps_line(&r, &id));
    assert_eq!(r.mvm(&["rm", &id]).status.code(), Some(0));
    assert_clean(&r);
}

#[test]
fn ps_filters_formats_rename_top_and_stats() {
    let r = root();
    let a = run_d(&r, &["--name", "alpha", "busybox", "sleep", "600"]);
    let o = r.mvm(&["run", "--name", "beta", "busybox", "sh", "-c", "exit 2"]);
    assert_eq!(o.status.code(), Some(2));
    let lines = |args: &[&str]| -> Vec<String> {
        let o = r.mvm(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        stdout(&o).lines().map(str::to_string).collect()
    };
    assert_eq!(lines(&["ps", "--format", "{{.Names}}"]), ["alpha"]);
    assert_eq!(
        lines(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        ["beta exited", "alpha running"]
    );
    assert_eq!(lines(&["ps", "-l", "--format", "{{.Names}}"]), ["beta"]);
    assert_eq!(lines(&["ps", "-n", "2", "-q"]).len(), 2);
    assert_eq!(
        lines(&["ps", "--filter", "status=exited", "--format", "{{.Names}}"]),
        ["beta"]
    );
    assert_eq!(
        lines(&["ps", "-a", "--filter", "exited=2", "--format", "{{.Names}}"]),
        ["beta"]
    );
    assert_eq!(
        lines(&["ps", "-a", "--filter", "name=alp", "-q"]),
        [a[..12].to_string()]
    );
    assert_eq!(
        lines(&["ps", "-a", "--filter", "ancestor=busybox", "-q"]).len(),
        2
    );
    let table = lines(&["ps", "-a", "--format", "table {{.ID}}\t{{.Names}}"]);
    assert!(table[0].starts_with("CONTAINER ID"), "{table:?}");
    let json = lines(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["Names"], "alpha");
    let header = lines(&["ps"]);
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header[0].contains(col), "{header:?}");
    }
    for bad in [
        ["ps", "--filter", "colour=red"],
        ["ps", "--filter", "status=asleep"],
    ] {
        // Docker's daemon refuses a bad filter: exit 1.
        let o = r.mvm(&bad);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    // rename: the new name resolves, the old one no longer; a taken name is refused.
    assert_eq!(r.mvm(&["rename", "alpha", "gamma"]).status.code(), Some(0));
    assert_eq!(lines(&["ps", "--format", "{{.Names}}"]), ["gamma"]);
    let o = r.mvm(&["rename", "gamma", "beta"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    assert_eq!(r.mvm(&["rename", "alpha", "delta"]).status.code(), Some(1));
    assert_eq!(
        r.mvm(&["rename", "gamma", "no/slash"]).status.code(),
        Some(125)
    );
    // top: the guest's processes.
    let o = r.mvm(&["top", "gamma"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("sleep 600"), "{}", stdout(&o));
    assert_eq!(r.mvm(&["top", "beta"]).status.code(), Some(1));
    // stats: the VM's memory as the host sees it, under the limit.
    let o = r.mvm(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "gamma",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(line.starts_with("gamma "), "{line}");
    assert!(line.contains("MiB / 512.00MiB"), "{line}");
    let o = r.mvm(&["stats", "--no-stream"]);
    assert!(stdout(&o).starts_with("CONTAINER ID"), "{}", stdout(&o));
    assert!(stdout(&o).contains("gamma"), "{}", stdout(&o));
    assert_eq!(
        r.mvm(&["stats", "--no-stream", "nope"]).status.code(),
        Some(1)
    );
    assert_eq!(r.mvm(&["rm", "-f", "gamma", "beta"]).status.code(), Some(0));
    assert_clean(&r);
}

#[test]
fn exec_detached_and_attach() {
    let r = root();
    let id = run_d(
        &r,
        &[
            "busybox",
            "sh",
            "-c",
            "sleep 4; i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo line$i; done; exit 7",
        ],
    );
    // exec -d returns once the process started; it goes on in the background.
    let t0 = Instant::now();
    let o = r.mvm(&["exec", "-d", &id, "sh", "-c", "sleep 1; echo bg > /tmp/bg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = r.mvm(&["exec", &id, "cat", "/tmp/bg"]);
        if stdout(&o) == "bg\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exec -d never ran: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = r.mvm(&["exec", "-d", &id, "no-such-command"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // attach: the output from now on, and the exit code.
    let o = r.mvm(&["attach", &id]);
    assert!(stdout(&o).contains("line5\n"), "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(7));
    let o = r.mvm(&["attach", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("stopped container"), "{}", stderr(&o));
    assert_eq!(r.mvm(&["rm", &id]).status.code(), Some(0));
    assert_clean(&r);
}

#[test]
fn logs_since_and_until() {
    let r = root();
    let id = run_d(
        &r,
        &["busybox", "sh", "-c", "echo early; sleep 1; echo late"],
    );
    wait_log(&r, &id, "late\n");
    let stamped = stdout(&r.mvm(&["logs", "-t", &id]));
    let late_time = stamped
        .lines()
        .find(|l| l.ends_with(" late"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert_eq!(
        stdout(&r.mvm(&["logs", "--since", &late_time, &id])),
        "late\n"
    );
    assert_eq!(
        stdout(&r.mvm(&["logs", "--until", &late_time, &id])),
        "early\n"
    );
    assert_eq!(
        stdout(&r.mvm(&["logs", "--since", "1h", &id])),
        "early\nlate\n"
    );
    let o = r.mvm(&["logs", "--since", "yesterday", &id]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_eq!(r.mvm(&["rm", "-f", &id]).status.code(), Some(0));
    assert_clean(&r);
}

#[test]
fn attach_takes_stdin_of_an_interactive_container_and_detaches_with_keys() {
    let r = root();
    // Created with -i, the process's stdin waits for whoever attaches.
    run_d(
        &r,
        &[
            "-i",
            "--name",
            "reader",
            "busybox",
            "sh",
            "-c",
            "read l; echo got:$l; echo err:$l >&2; exit 3",
        ],
    );
    let o = r.mvm_stdin(&["attach", "reader"], b"hi\n");
    assert_eq!(stdout(&o), "got:hi\n", "{}", stderr(&o));
    assert_eq!(stderr(&o), "err:hi\n");
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(r.ok(&["ps", "-a", "--format", "{{.State}}"]), "exited\n");
    r.ok(&["rm", "reader"]);

    // The detach sequence leaves the container running; what came before it was delivered,
    // and a client's end of input does not close the process's stdin for the next one.
    run_d(&r, &["-i", "--name", "cat", "busybox", "cat"]);
    let o = r.mvm_stdin(
        &["attach", "--detach-keys", "ctrl-x", "cat"],
        b"one\n\x18two\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read escape sequence"),
        "{}",
        stderr(&o)
    );
    let o = r.mvm_stdin(&["attach", "cat"], b"three\n\x10\x11");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    eventually("the log to show both inputs", || {
        (r.ok(&["logs", "cat"]) == "one\nthree\n").then_some(())
    });
    assert!(
        r.ok(&["ps"]).contains("cat"),
        "still running after detaching"
    );
    // --no-stdin: input is not delivered; the client follows the output until the end.
    let mut child = r
        .cmd(&["attach", "--no-stdin", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"four\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    r.ok(&["kill", "cat"]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(137));
    assert!(!stdout(&o).contains("four"), "{}", stdout(&o));
    assert_eq!(r.ok(&["logs", "cat"]), "one\nthree\n");

    let o = r.mvm(&["attach", "--detach-keys", "ctrl-1", "cat"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    r.ok(&["rm", "-f", "cat"]);
    assert_clean(&r);
}

#[test]
fn concurrent_starts_of_one_container_run_one_monitor() {
    let r = root();
    r.ok(&["create", "--name", "once", "busybox", "sleep", "600"]);
    let starts: Vec<_> = (0..3)
        .map(|_| {
            r.cmd(&["start", "once"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for s in starts {
        let o = s.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "once\n");
    }
    let monitors = r
        .leftover_processes()
        .into_iter()
        .filter(|p| p.contains("__monitor"))
        .count();
    assert_eq!(monitors, 1, "{:?}", r.leftover_processes());
    // A stop and a start racing end in one of the two states, never in a half-started one.
    let stop = r.cmd(&["stop", "-t", "1", "once"]).spawn().unwrap();
    let start = r.cmd(&["start", "once"]).output().unwrap();
    assert_eq!(start.status.code(), Some(0), "{}", stderr(&start));
    assert!(stop.wait_with_output().unwrap().status.success());
    let state = r.ok(&["ps", "-a", "--format", "{{.State}}"]);
    assert!(state == "running\n" || state == "exited\n", "{state}");
    let monitors = r
        .leftover_processes()
        .into_iter()
        .filter(|p| p.contains("__monitor"))
        .count();
    assert!(monitors <= 1, "{:?}", r.leftover_processes());
    r.ok(&["rm", "-f", "once"]);
    assert_clean(&r);
}

#[test]
fn events_follow_what_happens_and_replay_a_window() {
    use std::io::{BufRead, BufReader};
    let r = root();
    // Following: only what happens from now on, until it is stopped.
    let mut follower = r
        .cmd(&[
            "events",
            "--filter",
            "container=evf",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mvm events");
    let lines = BufReader::new(follower.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for l in lines.lines().map_while(Result::ok) {
            let done = l.ends_with("destroy evf");
            seen.push(l);
            if done {
                break;
            }
        }
        seen
    });
    // Another container's events are filtered out.
    r.ok(&["create", "--name", "other", "busybox", "true"]);
    r.ok(&["run", "--name", "evf", "busybox", "true"]);
    r.ok(&["rm", "evf", "other"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let seen = reader.join().unwrap();
    assert_eq!(
        seen,
        [
            "container create evf",
            "container attach evf",
            "container start evf",
            "container die evf",
            "container destroy evf"
        ],
        "{seen:?}"
    );
    // Replaying a window ends by itself, in Docker's line format.
    let out = r.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "event=destroy",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(" container destroy "), "{out}");
    assert!(lines.iter().any(|l| l.ends_with("name=evf)")), "{out}");
    // Bad input: one clear line, non-zero.
    let o = r.mvm(&["events", "--since", "yesterday"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--since"), "{}", stderr(&o));
    assert_clean(&r);
}

//! `mvm-runc` under real engines: dockerd (Debian's docker.io, with containerd-shim-runc-v2)
//! with the runtime registered as `microvm`, each in a network namespace the test made; and
//! the runtime called directly with bad bundles.

mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Dockerd, runtime, stderr, stdout};

#[test]
fn docker_run_gives_output_exit_codes_the_guest_kernel_and_the_asked_size() {
    let d = Dockerd::start("run");
    let o = d.run(&[
        "busybox:local",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}{}",
        stderr(&o),
        d.runtime_log()
    );
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err"), "{}", stderr(&o));
    // The guest's own kernel.
    let host = Command::new("uname").arg("-r").output().unwrap();
    let o = d.run(&["busybox:local", "uname", "-r"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(stdout(&o), stdout(&host));
    // -m and --cpus size the VM.
    let o = d.run(&[
        "-m",
        "256m",
        "--cpus",
        "1",
        "busybox:local",
        "sh",
        "-c",
        "grep MemTotal /proc/meminfo; nproc",
    ]);
    let out = stdout(&o);
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}{}", stderr(&o)));
    assert!((150_000..=262_144).contains(&kib), "{out}");
    assert!(out.ends_with("\n1\n"), "{out}");
    // The process is PID 1 of its namespace; --network none leaves loopback only.
    let o = d.run(&[
        "--network",
        "none",
        "busybox:local",
        "sh",
        "-c",
        "echo $$; ls /sys/class/net",
    ]);
    let out = stdout(&o);
    assert!(
        out.starts_with("1\nlo\n") && !out.contains("eth"),
        "{out}{}",
        stderr(&o)
    );
    // --init: Docker's docker-init (a link in /usr/bin on the host) is the guest's PID 1.
    let o = d.run(&[
        "--init",
        "busybox:local",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo",
    ]);
    assert!(
        stdout(&o).starts_with("/sbin/docker-init -- sh -c"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // The kernel file systems Docker's bundle lists are made in the guest.
    let o = d.run(&[
        "busybox:local",
        "sh",
        "-c",
        "grep -cE ' /dev/mqueue mqueue | /sys/fs/cgroup cgroup2 ro,' /proc/mounts",
    ]);
    assert_eq!(stdout(&o), "2\n", "{}", stderr(&o));
    // --sysctl is set in the guest's kernel; Docker's read-only /proc/sys holds in the guest.
    let o = d.run(&[
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox:local",
        "sh",
        "-c",
        // The guest's own kernel: a write that went through would harm nobody else.
        "cat /proc/sys/net/ipv4/ip_forward; (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo writable || echo read-only; ls /sys/firmware | wc -l",
    ]);
    // /sys/firmware is among Docker's masked paths: an empty tmpfs.
    assert_eq!(stdout(&o), "1\nread-only\n0\n", "{}", stderr(&o));
    // Docker's capability set and --cap-drop hold in the guest; so does no-new-privileges.
    let chown = "touch /x; chown 1 /x 2>/dev/null && echo chowned || echo denied; grep NoNewPrivs /proc/self/status";
    let o = d.run(&["busybox:local", "sh", "-c", chown]);
    assert!(
        stdout(&o).starts_with("chowned\nNoNewPrivs:\t0"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = d.run(&[
        "--cap-drop",
        "CHOWN",
        "--security-opt",
        "no-new-privileges",
        "busybox:local",
        "sh",
        "-c",
        chown,
    ]);
    assert!(
        stdout(&o).starts_with("denied\nNoNewPrivs:\t1"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // A command that does not exist: Docker's code for it, and the reason.
    let o = d.run(&["busybox:local", "nosuchcommand"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("nosuchcommand"), "{}", stderr(&o));
    // --network host cannot be a VM's: refused, with the reason.
    let o = d.run(&["--network", "host", "busybox:local", "true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("host's network"), "{}", stderr(&o));
}

#[test]
fn docker_detached_logs_exec_stop_kill_pause_restart_and_rm() {
    let d = Dockerd::start("life");
    let id = d.run_d(&[
        "busybox:local",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
    ]);
    d.wait_log(&id, "ready");
    // exec: the same VM, the container's PID namespace.
    let out = d.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $PPID",
    ]);
    assert!(out.starts_with("sh -c trap"), "{out}");
    let o = d.docker(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    // exec -it under a terminal.
    let cmdline = format!(
        "DOCKER_HOST=unix://{}/docker.sock docker exec -it {id} sh -c 'tty; echo tty-ok'",
        d.dir.display()
    );
    let o = harness::on_a_terminal(&cmdline, &d.dir);
    assert!(
        stdout(&o).contains("/dev/pts/"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("tty-ok"), "{}", stdout(&o));
    // top: the container's host process; stats: one line.
    let top = d.ok(&["top", &id]);
    assert!(
        top.contains("__relay") && top.contains("qemu-system"),
        "{top}"
    );
    // stats: the VM's processes are in the container's cgroup (cgroupsPath), so its memory
    // is the VM's, not the relay's few MiB.
    let stats = d.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
    let used = stats
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let mib: f64 = used
        .strip_suffix("MiB")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            used.strip_suffix("GiB")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|g| g * 1024.0)
        })
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(mib > 20.0, "{stats}");
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory/docker").join(&id);
    assert!(cgroup.exists() || !std::path::Path::new("/sys/fs/cgroup/memory").exists());
    // pause and unpause.
    d.ok(&["pause", &id]);
    assert!(d.ok(&["ps", "--format", "{{.Status}}"]).contains("Paused"));
    d.ok(&["unpause", &id]);
    d.ok(&["exec", &id, "true"]);
    // stop: the handler runs, exit 0, quickly.
    let t = Instant::now();
    d.ok(&["stop", &id]);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]).trim(),
        "0"
    );
    d.wait_log(&id, "bye");
    // restart of a stopped container: a new VM, the same rootfs.
    d.ok(&["start", &id]);
    d.ok(&["exec", &id, "true"]);
    d.ok(&["rm", "-f", &id]);
    assert!(!cgroup.exists(), "{} left", cgroup.display());

    // A shell without a handler ignores SIGTERM as PID 1: stop waits for the timeout, 137.
    let id = d.run_d(&[
        "busybox:local",
        "sh",
        "-c",
        "echo ready; while true; do sleep 0.2; done",
    ]);
    d.wait_log(&id, "ready");
    let t = Instant::now();
    d.ok(&["stop", "-t", "2", &id]);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]).trim(),
        "137"
    );
    d.ok(&["restart", "-t", "1", &id]);
    d.wait_log(&id, "ready");
    d.ok(&["kill", &id]);
    assert_eq!(d.ok(&["wait", &id]).trim(), "137");
    d.ok(&["rm", &id]);
    // rm -f of a running container.
    let id = d.run_d(&["busybox:local", "sleep", "600"]);
    d.ok(&["rm", "-f", &id]);
    // logs -f follows until the process ends.
    let id = d.run_d(&["busybox:local", "sh", "-c", "echo one; sleep 1; echo two"]);
    assert_eq!(d.ok(&["logs", "-f", &id]), "one\ntwo\n");
    d.ok(&["rm", &id]);
    // run -it: the process gets a terminal (the console socket's pty) of the caller's size.
    let cmdline = format!(
        "stty rows 33 cols 101; DOCKER_HOST=unix://{}/docker.sock docker run --rm -it --runtime microvm busybox:local sh -c 'tty; stty size'",
        d.dir.display()
    );
    let o = harness::on_a_terminal(&cmdline, &d.dir);
    let out = stdout(&o);
    assert!(out.contains("/dev/pts/"), "{out}{}", stderr(&o));
    assert!(out.contains("33 101"), "{out}");
}

#[test]
fn docker_ports_networks_by_name_volumes_and_binds() {
    let d = Dockerd::start("net");
    let port = 18080 + (std::process::id() % 1000) as u16;
    let publish = format!("127.0.0.1:{port}:80");
    let web = d.run_d(&[
        "-p",
        &publish,
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-the-vm > /www/index.html && echo up && httpd -f -p 80 -h /www",
    ]);
    d.wait_log(&web, "up");
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = d.ns.run(&["busybox", "wget", "-qO-", &url]);
        if stdout(&o) == "hello-from-the-vm\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{}{}", stdout(&o), stderr(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Two containers on a user network: one finds the other by name (Docker's DNS).
    d.ok(&["network", "create", "appnet"]);
    let srv = d.run_d(&[
        "--network",
        "appnet",
        "--name",
        "srv",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /www && echo srv-ok > /www/index.html && echo up && httpd -f -p 80 -h /www",
    ]);
    d.wait_log(&srv, "up");
    let o = d.run(&[
        "--network",
        "appnet",
        "busybox:local",
        "wget",
        "-qO-",
        "http://srv/",
    ]);
    assert_eq!(stdout(&o), "srv-ok\n", "{}{}", stderr(&o), d.runtime_log());
    // A named volume keeps what one container wrote for the next.
    let o = d.run(&[
        "-v",
        "vol:/data",
        "busybox:local",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&["-v", "vol:/data", "busybox:local", "cat", "/data/f"]);
    assert_eq!(stdout(&o), "kept\n", "{}", stderr(&o));
    // A bind mount: the host sees what the guest wrote; :ro is read-only.
    let host_dir = d.dir.join("bind");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("in"), "from-host\n").unwrap();
    let bind = format!("{}:/mnt", host_dir.display());
    let o = d.run(&[
        "-v",
        &bind,
        "busybox:local",
        "sh",
        "-c",
        "cat /mnt/in; echo from-guest > /mnt/out",
    ]);
    assert_eq!(stdout(&o), "from-host\n", "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out")).unwrap(),
        "from-guest\n"
    );
    let ro = format!("{}:/mnt:ro", host_dir.display());
    let o = d.run(&["-v", &ro, "busybox:local", "sh", "-c", "echo x > /mnt/out"]);
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn docker_diff_commit_and_cp_see_what_the_container_wrote() {
    let d = Dockerd::start("diff");
    let id = d.run_d(&[
        "busybox:local",
        "sh",
        "-c",
        "echo data > /newfile; rm /etc/motd 2>/dev/null; echo done; sleep 600",
    ]);
    d.wait_log(&id, "done");
    let diff = d.ok(&["diff", &id]);
    assert!(diff.lines().any(|l| l == "A /newfile"), "{diff}");
    d.ok(&["commit", &id, "committed:1"]);
    // docker cp both ways: out of the container's root, and into it while the guest runs.
    let out = d.dir.join("copied");
    d.ok(&["cp", &format!("{id}:/newfile"), out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "data\n");
    let into = d.dir.join("into");
    std::fs::write(&into, "from the host\n").unwrap();
    d.ok(&["cp", into.to_str().unwrap(), &format!("{id}:/fromhost")]);
    assert_eq!(d.ok(&["exec", &id, "cat", "/fromhost"]), "from the host\n");
    d.ok(&["rm", "-f", &id]);
    let o = d.run(&["committed:1", "cat", "/newfile"]);
    assert_eq!(stdout(&o), "data\n", "{}", stderr(&o));
}

/// A bundle directory with a busybox root and `config.json` made from `process` and `extra`.
fn bundle(dir: &std::path::Path, config: serde_json::Value) {
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let tar = std::path::Path::new("/var/cache/mvm/images/busybox-rootfs.tar");
    let o = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir.join("rootfs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn config(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                    "env": ["PATH=/bin:/usr/bin"]},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}
    })
}

#[test]
fn bad_bundles_end_with_one_error_line_in_the_log_and_leave_nothing() {
    let base = std::env::temp_dir().join(format!("mvm-oci-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("state");
    let good = config(&["true"]);
    let mut missing_root = good.clone();
    missing_root["root"]["path"] = "nosuchdir".into();
    let mut bad_ns = good.clone();
    bad_ns["linux"]["namespaces"][1]["path"] = "/var/run/netns/mvm-no-such-ns".into();
    // Docker's --network host joins the daemon's own namespace: the runtime's own here.
    let mut host_net = good.clone();
    host_net["linux"]["namespaces"][1]["path"] = "/proc/self/ns/net".into();
    let mut bad_hook = good.clone();
    bad_hook["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook says no >&2; exit 4"]}]});
    let cases: Vec<(&str, Option<serde_json::Value>, &str)> = vec![
        ("json", None, "config.json"),
        ("rootfs", Some(missing_root), "nosuchdir"),
        ("netns", Some(bad_ns), "mvm-no-such-ns"),
        ("hook", Some(bad_hook), "hook says no"),
        ("hostnet", Some(host_net), "host's network namespace"),
    ];
    for (name, cfg, says) in cases {
        let dir = base.join(name);
        match cfg {
            Some(c) => bundle(&dir, c),
            None => {
                bundle(&dir, good.clone());
                std::fs::write(dir.join("config.json"), "{\"ociVersion\": ").unwrap();
            }
        }
        let log = base.join(format!("{name}.log"));
        let o = Command::new(runtime())
            .arg("--root")
            .arg(&root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(&dir)
            .arg(format!("c-{name}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{name}: {}", stderr(&o));
        let line = std::fs::read_to_string(&log).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        assert_eq!(v["level"], "error", "{line}");
        assert!(v["msg"].as_str().unwrap().contains(says), "{line}");
        assert!(
            !root.join(format!("c-{name}")).exists(),
            "{name}: state left"
        );
    }
    // runc's version form and features.
    let o = Command::new(runtime()).arg("--version").output().unwrap();
    let v = stdout(&o);
    assert_eq!(v.lines().count(), 3, "{v}");
    assert!(
        v.starts_with("mvm-runc version ") && v.contains("\nspec: 1."),
        "{v}"
    );
    let o = Command::new(runtime()).arg("features").output().unwrap();
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(f["hooks"].as_array().unwrap().len() == 6);
    // A whole life by hand: create, state, start, kill, delete.
    let dir = base.join("life");
    let mut life = config(&[
        "sh",
        "-c",
        // /ready (seen on the host: the root is shared) says the handler is installed:
        // a SIGTERM before it would be discarded, as for any PID 1 without a handler.
        "trap 'exit 0' TERM; touch /ready; while true; do sleep 0.2; done",
    ]);
    // Every kind of hook, each saving the state it gets on stdin.
    const HOOKS: [&str; 6] = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    for h in HOOKS {
        let out = base.join(format!("hook-{h}.json"));
        life["hooks"][h] = serde_json::json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}", out.display())],
        }]);
    }
    bundle(&dir, life);
    // The relay `create` starts keeps create's stdout and stderr (the container's): they are
    // files here, so that nothing waits for their end.
    let rt = |args: &[&str]| {
        let out = base.join("rt.out");
        let err = base.join("rt.err");
        let status = Command::new(runtime())
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        std::process::Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    };
    let pidfile = base.join("life.pid");
    let o = rt(&[
        "create",
        "--bundle",
        dir.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        "life",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let state: serde_json::Value = serde_json::from_slice(&rt(&["state", "life"]).stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(
        state["pid"].to_string(),
        std::fs::read_to_string(&pidfile).unwrap()
    );
    assert!(state["rootfs"].as_str().unwrap().ends_with("/life/rootfs"));
    let o = rt(&["delete", "life"]);
    assert!(
        o.status.success(),
        "a created container is deleted: {}",
        stderr(&o)
    );
    let o = rt(&["create", "--bundle", dir.to_str().unwrap(), "life"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rt(&["start", "life"]).status.success());
    let state: serde_json::Value = serde_json::from_slice(&rt(&["state", "life"]).stdout).unwrap();
    assert_eq!(state["status"], "running");
    let o = rt(&["delete", "life"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a running container needs --force"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("rootfs/ready").exists() {
        assert!(Instant::now() < deadline, "the process did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rt(&["kill", "life", "SIGTERM"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: serde_json::Value = serde_json::from_slice(&rt(&["state", "life"]).stdout).unwrap();
        if s["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rt(&["delete", "life"]).status.success());
    assert!(!rt(&["state", "life"]).status.success());
    // The hooks ran in the spec's order of the life, each with the state of its moment.
    for (h, status) in HOOKS.iter().zip([
        "creating", "creating", "created", "created", "running", "stopped",
    ]) {
        let text = std::fs::read_to_string(base.join(format!("hook-{h}.json")))
            .unwrap_or_else(|e| panic!("hook {h} did not run: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "life", "{h}: {text}");
        assert_eq!(v["status"], status, "{h}: {text}");
        assert!(
            v["bundle"].as_str().unwrap().ends_with("/life"),
            "{h}: {text}"
        );
    }
    assert!(
        rt(&["delete", "--force", "life"]).status.success(),
        "already gone is fine with --force"
    );

    // The relay killed with -9 (the engine's view: the container died): its VM's processes go
    // with it, and `delete` leaves no state, socket or run directory.
    let o = rt(&["create", "--bundle", dir.to_str().unwrap(), "k9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rt(&["start", "k9"]).status.success());
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("k9/state.json")).unwrap()).unwrap();
    let relay = stored["pid"].as_i64().unwrap() as i32;
    let run_dir = std::path::PathBuf::from(stored["run_dir"].as_str().unwrap());
    let vm = descendants(relay);
    assert!(vm.len() >= 2, "the VM's processes: {vm:?}");
    // SAFETY: kill(2) of the relay this test created.
    unsafe { libc::kill(relay, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while vm
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "VM processes outlived the relay: {vm:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s: serde_json::Value = serde_json::from_slice(&rt(&["state", "k9"]).stdout).unwrap();
    assert_eq!(s["status"], "stopped", "{s}");
    assert!(rt(&["delete", "k9"]).status.success());
    assert!(!run_dir.exists(), "{} left", run_dir.display());
    assert!(!root.join("k9").exists());
    let _ = std::fs::remove_dir_all(&base);
}

/// Every process below `pid` (by parent links in /proc).
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i32>().ok())
        {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            stack.push(*child);
        }
    }
    out
}

#[test]
fn podman_runs_detaches_logs_execs_stops_and_publishes_ports() {
    let p = harness::Podman::new("podman");
    let o = p.podman(&[
        "run",
        "--rm",
        "busybox:local",
        "sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\n");
    let id = p.ok(&[
        "run",
        "-d",
        "busybox:local",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
    ]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.ok(&["logs", id]).contains("ready") {
        assert!(Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        p.ok(&["exec", id, "sh", "-c", "echo $$ > /dev/null; echo exec-ok"]),
        "exec-ok\n"
    );
    // exec -it: a terminal over conmon's console socket.
    let cmdline = format!(
        "CONTAINERS_CONF={d}/containers.conf CONTAINERS_STORAGE_CONF={d}/storage.conf \
         nsenter --net={ns} podman --runtime {rt} exec -it {id} sh -c 'tty; echo tty-ok'",
        d = p.dir.display(),
        ns = p.ns.path(),
        rt = runtime().display()
    );
    let o = harness::on_a_terminal(&cmdline, &p.dir);
    assert!(
        stdout(&o).contains("/dev/pts/"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("tty-ok"), "{}", stdout(&o));
    p.ok(&["stop", id]);
    assert_eq!(
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", id]).trim(),
        "0"
    );
    p.ok(&["rm", id]);
    // -p on podman's own network (CNI, in the test's namespace).
    let port = 19080 + (std::process::id() % 1000) as u16;
    let publish = format!("127.0.0.1:{port}:80");
    let web = p.ok(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "-p",
        &publish,
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /www && echo podman-vm > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = p.ns.run(&["busybox", "wget", "-qO-", &url]);
        if stdout(&o) == "podman-vm\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{}{}", stdout(&o), stderr(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    p.ok(&["rm", "-f", web.trim()]);
}

#[test]
fn containerd_ctr_runs_the_runtime_as_its_runc_binary() {
    harness::require("containerd");
    harness::require("ctr");
    let ns = harness::Netns::new("ctr");
    let dir = std::env::temp_dir().join(&ns.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let o = Command::new("tar")
        .arg("-xf")
        .arg("/var/cache/mvm/images/busybox-rootfs.tar")
        .arg("-C")
        .arg(dir.join("rootfs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let sock = dir.join("containerd.sock");
    // Its own state and an empty config (not the host's /etc/containerd), in the test's
    // namespaces.
    std::fs::write(dir.join("config.toml"), "version = 2\n").unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut daemon = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .args([
            "unshare",
            "-m",
            "--propagation",
            "private",
            "containerd",
            "--config",
        ])
        .arg(dir.join("config.toml"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "containerd did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rootfs = dir.join("rootfs");
    let o = ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        runtime().to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "c1",
        "sh",
        "-c",
        "echo from-ctr $(uname -r); exit 6",
    ]);
    let host = Command::new("uname").arg("-r").output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(6), "{out}{}", stderr(&o));
    assert!(out.starts_with("from-ctr "), "{out}");
    assert!(!out.contains(stdout(&host).trim()), "{out}");
    let _ = daemon.kill();
    let _ = daemon.wait();
    harness::kill_mentioning(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

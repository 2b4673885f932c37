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
        rec["status"].as_str().unwrap_or_default().to_string(),
        rec["error"].as_str().unwrap_or_default().to_string(),
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
        serde_json::from_value(record(&r, id)["vm_pids"].clone()).unwrap()
    };
    let monitor = record(&r, &a)["pid"].as_u64().unwrap() as u32;
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
            let pids = record(&r, &id)["vm_pids"].clone();
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
    let pids: Vec<u32> = serde_json::from_value(record(&r, &id)["vm_pids"].clone()).unwrap();
    // SAFETY: kill(2) on this test's own container's hypervisor.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    common::eventually("the container comes back", || {
        let rec = record(&r, &id);
        (rec["status"] == "running" && rec["restart_count"].as_u64() >= Some(1)).then_some(())
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
    let pid = record(&r, &id)["pid"].as_u64().unwrap() as u32;
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

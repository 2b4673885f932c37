//! Snapshots on this machine's KVM with the test guest: a guest snapshotted in the middle of
//! its work and restored in a new VMM process finishes with the same checksum as the VM it
//! came from (its registers, memory, timers and virtqueue positions came back), two VMs
//! restored from one snapshot both do, and every damaged or mismatched snapshot is refused
//! with one line and nothing run.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::support::{Dir, Vm, guest, wait_for_line};
use super::{VMM, vmm};

const ROUNDS: u64 = 30;
const SNAP_AT: &str = "WORK 8 ";

/// A client of the VMM's control socket.
struct Api(BufReader<UnixStream>);

impl Api {
    fn connect(path: &Path) -> Api {
        for _ in 0..500 {
            if let Ok(s) = UnixStream::connect(path) {
                return Api(BufReader::new(s));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no API socket at {}", path.display());
    }

    fn send(&mut self, line: &str, files: &[&File]) -> serde_json::Value {
        let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        let msg = format!("{line}\n");
        self.0
            .get_ref()
            .send_with_fds(&[msg.as_bytes()], &fds)
            .unwrap();
        let mut answer = String::new();
        self.0.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    }

    fn ok(&mut self, line: &str, files: &[&File]) -> serde_json::Value {
        let v = self.send(line, files);
        assert_eq!(v["ok"], true, "{line}: {v}");
        v
    }
}

/// A 1 MiB disk of bytes that are not all the same, so that the sums depend on what is read.
fn disk(dir: &Dir) -> PathBuf {
    let p = dir.join("disk.img");
    let mut x = 0x1234_5678_9abc_def1u64;
    let bytes: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&p, bytes).unwrap();
    p
}

fn done_line(serial: &str) -> String {
    serial
        .lines()
        .find(|l| l.starts_with("WORK DONE "))
        .unwrap_or_else(|| panic!("no WORK DONE line:\n{serial}"))
        .to_string()
}

/// Starts the test guest in its work mode (`rounds` rounds, reading `disk` if given) with a
/// control socket at `api`; its console goes to `serial`.
fn working_guest(rounds: u64, mem_mib: &str, disk: Option<&Path>, serial: &Path, api: &Path) -> Vm {
    let cmdline = format!("console=ttyS0 mvmtest.work={rounds}");
    let mut args = vec![
        "--kernel",
        guest().to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--mem-mib",
        mem_mib,
        "--serial",
        serial.to_str().unwrap(),
        "--api-sock",
        api.to_str().unwrap(),
    ];
    if let Some(d) = disk {
        args.extend(["--disk", d.to_str().unwrap()]);
    }
    Vm(vmm(&args).stderr(Stdio::piped()).spawn().unwrap())
}

/// What a snapshot test needs of the VM it snapshotted.
struct Taken {
    state: PathBuf,
    memory: PathBuf,
    /// The original's `WORK DONE` line.
    done: String,
    /// The original's whole console.
    console: String,
}

/// Boots the working guest, snapshots it at round 8 and lets it finish.
fn take_snapshot(dir: &Dir) -> Taken {
    let disk = disk(dir);
    let serial = dir.join("orig.log");
    let api = dir.join("api.sock");
    let mut vm = working_guest(ROUNDS, "128", Some(&disk), &serial, &api);
    wait_for_line(&serial, SNAP_AT, Duration::from_secs(30));
    let mut c = Api::connect(&api);
    // Not paused: refused, and the VM goes on.
    let state_path = dir.join("snap.state");
    let mem_path = dir.join("snap.mem");
    let state = File::create(&state_path).unwrap();
    let mem = File::create(&mem_path).unwrap();
    let v = c.send(r#"{"action":"snapshot"}"#, &[&state, &mem]);
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("must be paused"),
        "{v}"
    );
    assert_eq!(c.ok(r#"{"action":"pause"}"#, &[])["state"], "paused");
    // Without its files: refused with the reason.
    let v = c.send(r#"{"action":"snapshot"}"#, &[]);
    assert!(
        v["error"].as_str().unwrap().contains("2 descriptors"),
        "{v}"
    );
    let v = c.ok(r#"{"action":"snapshot"}"#, &[&state, &mem]);
    assert!(v["state_bytes"].as_u64().unwrap() > 0, "{v}");
    // Sparse: far less than the guest's 128 MiB was written.
    assert!(
        v["memory_bytes_written"].as_u64().unwrap() < 16 << 20,
        "{v}"
    );
    assert_eq!(c.ok(r#"{"action":"resume"}"#, &[])["state"], "running");
    let out = wait_out(&mut vm);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&serial).unwrap();
    assert!(text.contains("MVMTEST DONE 0 failures"), "{text}");
    Taken {
        state: state_path,
        memory: mem_path,
        done: done_line(&text),
        console: text,
    }
}

fn wait_out(vm: &mut Vm) -> Output {
    let status = vm.0.wait().unwrap();
    let mut err = Vec::new();
    if let Some(mut e) = vm.0.stderr.take() {
        std::io::Read::read_to_end(&mut e, &mut err).unwrap();
    }
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn restore_cmd(dir: &Dir, state: &Path, mem: &Path, serial: &str, mem_mib: &str) -> Command {
    let mut c = Command::new(VMM);
    c.args([
        "--restore",
        state.to_str().unwrap(),
        "--restore-memory",
        mem.to_str().unwrap(),
        "--mem-mib",
        mem_mib,
        "--disk",
        dir.join("disk.img").to_str().unwrap(),
        "--serial",
        dir.join(serial).to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn a_restored_guest_finishes_its_work_with_the_same_sums() {
    let d = Dir::new("snap-restore");
    let Taken {
        state,
        memory: mem,
        done: want,
        console,
    } = take_snapshot(&d);
    let mem_sum = file_sum(&mem);

    // Two VMMs restore the same files at once: each goes on from round 9 and ends as the
    // original did.
    let kids: Vec<Vm> = ["r1.log", "r2.log"]
        .iter()
        .map(|s| Vm(restore_cmd(&d, &state, &mem, s, "128").spawn().unwrap()))
        .collect();
    for (mut vm, log) in kids.into_iter().zip(["r1.log", "r2.log"]) {
        let out = wait_out(&mut vm);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = std::fs::read_to_string(d.join(log)).unwrap();
        assert!(!text.contains("MVMTEST START"), "it booted again:\n{text}");
        assert!(
            went_on_after_round_8(&console, &text),
            "did not go on from round 8:\n{text}"
        );
        assert_eq!(done_line(&text), want, "{text}");
        assert!(text.contains("MVMTEST DONE 0 failures"), "{text}");
    }
    // The memory file was mapped privately: the restored guests' writes never reached it.
    assert_eq!(file_sum(&mem), mem_sum);
}

/// Whether a restored guest's console `restored` goes on from round 8 of the `original`'s:
/// its first line is round 9's, or (the snapshot was taken while round 8's line was being
/// printed) the rest of that very line, then round 9's.
fn went_on_after_round_8(original: &str, restored: &str) -> bool {
    let mut lines = restored.lines();
    let Some(first) = lines.next() else {
        return false;
    };
    if first.starts_with("WORK 9 ") {
        return true;
    }
    let round_8 = original
        .lines()
        .find(|l| l.starts_with("WORK 8 "))
        .unwrap_or_default();
    !first.is_empty()
        && round_8.ends_with(first)
        && round_8.len() > first.len()
        && lines.next().is_some_and(|l| l.starts_with("WORK 9 "))
}

fn file_sum(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Rewrites the state file's header with `edit` and a checksum that matches again, as someone
/// who knows the format would.
fn reforge(state: &Path, out: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(state).unwrap();
    let head_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut head: serde_json::Value = serde_json::from_slice(&bytes[56..56 + head_len]).unwrap();
    edit(&mut head);
    let head = serde_json::to_vec(&head).unwrap();
    let body = &bytes[56 + head_len..];
    let mut sum = Sha256::new();
    sum.update(&head);
    sum.update(body);
    let mut new = bytes[..12].to_vec();
    new.extend_from_slice(&(head.len() as u32).to_le_bytes());
    new.extend_from_slice(&bytes[16..24]);
    new.extend_from_slice(&sum.finalize());
    new.extend_from_slice(&head);
    new.extend_from_slice(body);
    std::fs::write(out, new).unwrap();
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_with_one_line() {
    let d = Dir::new("snap-bad");
    let Taken {
        state, memory: mem, ..
    } = take_snapshot(&d);
    let good = std::fs::read(&state).unwrap();
    let bad = d.join("bad.state");
    let refuse = |state: &Path, mem: &Path, mem_mib: &str, want: &str| {
        let out = restore_cmd(&d, state, mem, "bad.log", mem_mib)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("mvm-vmm: cannot restore the snapshot: "),
            "{err}"
        );
        assert!(err.contains(want), "want {want:?}: {err}");
        assert!(
            std::fs::read_to_string(d.join("bad.log"))
                .unwrap_or_default()
                .is_empty(),
            "the guest ran"
        );
    };

    // One byte of the body flipped.
    let mut b = good.clone();
    let at = b.len() - 100;
    b[at] ^= 0x20;
    std::fs::write(&bad, &b).unwrap();
    refuse(
        &bad,
        &mem,
        "128",
        "is corrupted: its checksum does not match",
    );
    // Cut short, in the body and in the fixed prefix.
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    refuse(&bad, &mem, "128", "is truncated");
    std::fs::write(&bad, &good[..20]).unwrap();
    refuse(&bad, &mem, "128", "is truncated: 20 of 56 bytes");
    // Not a snapshot at all; a body length meant to make the VMM allocate without bound.
    std::fs::write(&bad, b"#!/bin/sh\necho hi\n").unwrap();
    refuse(
        &bad,
        &mem,
        "128",
        "is not an mvm snapshot: no snapshot magic",
    );
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    refuse(&bad, &mem, "128", "at most");
    // Another build of the VMM, another CPU: refused even with a checksum that matches.
    reforge(&state, &bad, |h| {
        h["build"] = "0.0.0-0000000000000000".into()
    });
    refuse(
        &bad,
        &mem,
        "128",
        "written by VMM build 0.0.0-0000000000000000",
    );
    reforge(&state, &bad, |h| h["cpu"]["vendor"] = "GenuineIntel".into());
    refuse(
        &bad,
        &mem,
        "128",
        "the snapshot was taken on a GenuineIntel",
    );
    reforge(&state, &bad, |h| {
        h["cpu"]["kvm_features"] = 1.into();
    });
    refuse(&bad, &mem, "128", "offered other CPU features");
    // The memory of another snapshot, or cut short.
    reforge(&state, &bad, |h| h["memory_id"][0] = 255.into());
    refuse(&bad, &mem, "128", "belongs to another snapshot");
    let short = d.join("short.mem");
    let f = File::create(&short).unwrap();
    f.set_len(std::fs::metadata(&mem).unwrap().len() / 2)
        .unwrap();
    refuse(&state, &short, "128", "is truncated");
    // A VM of another shape.
    refuse(
        &state,
        &mem,
        "256",
        "the snapshot is of a VM with 1 vCPUs and 128 MiB",
    );
}

#[test]
fn bad_api_requests_get_an_answer_and_the_vm_runs_on() {
    let d = Dir::new("snap-api");
    let serial = d.join("serial.log");
    let api = d.join("api.sock");
    let mut vm = working_guest(20, "64", None, &serial, &api);
    wait_for_line(&serial, "WORK 1 ", Duration::from_secs(30));
    let mut c = Api::connect(&api);
    for (line, want) in [
        ("not json", "bad request"),
        (r#"{"action":"reboot"}"#, "bad request"),
        (r#"{"action":"snapshot"}"#, "2 descriptors"),
    ] {
        let v = c.send(line, &[]);
        assert_eq!(v["ok"], false, "{line}");
        assert!(v["error"].as_str().unwrap().contains(want), "{line}: {v}");
    }
    // A line longer than any request: refused, connection closed, VM unharmed.
    let mut raw = UnixStream::connect(&api).unwrap();
    raw.write_all(&vec![b'x'; 10_000]).unwrap();
    let mut answer = String::new();
    BufReader::new(&raw).read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than"), "{answer}");
    assert_eq!(c.ok(r#"{"action":"status"}"#, &[])["state"], "running");
    // Pausing twice and resuming twice are fine.
    c.ok(r#"{"action":"pause"}"#, &[]);
    c.ok(r#"{"action":"pause"}"#, &[]);
    c.ok(r#"{"action":"resume"}"#, &[]);
    c.ok(r#"{"action":"resume"}"#, &[]);
    let out = wait_out(&mut vm);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&serial).unwrap();
    assert!(text.contains("MVMTEST DONE 0 failures"), "{text}");
}

/// The jailed VMM writes its snapshot through the descriptors it was given, and a restored
/// VMM runs jailed and filtered too.
#[test]
fn snapshots_work_under_the_jail_and_seccomp() {
    let d = Dir::new("snap-jail");
    let Taken {
        state,
        memory: mem,
        done: want,
        ..
    } = take_snapshot(&d);
    let out = restore_cmd(&d, &state, &mem, "j.log", "128")
        .args([
            "--jail",
            "on",
            "--seccomp",
            "kill",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        done_line(&std::fs::read_to_string(d.join("j.log")).unwrap()),
        want
    );
}

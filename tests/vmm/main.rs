//! The VMM on this machine's KVM with the project's own test guest (tests/guest): boot
//! protocol, serial, i8042 reset, virtio-blk and virtio-vsock through real KVM exits, and the
//! monitor's handling of bad configs, all through the real `mvm-vmm` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod snapshot;
#[path = "../../vmm/tests/support/mod.rs"]
mod support;

use support::{Dir, Vm, guest, wait_for_line};

pub(crate) const VMM: &str = env!("CARGO_BIN_EXE_mvm-vmm");

pub(crate) fn vmm(args: &[&str]) -> Command {
    let mut c = Command::new(VMM);
    c.args(args).stdin(Stdio::null());
    c
}

fn run_guest(dir: &Dir, cmdline: &str, extra: &[&str]) -> (Output, String) {
    let serial = dir.join("serial.log");
    let exit = dir.join("exit.json");
    let mut args = vec![
        "--kernel",
        guest().to_str().unwrap(),
        "--cmdline",
        cmdline,
        "--serial",
        serial.to_str().unwrap(),
        "--exit-record",
        exit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--mem-mib") {
        args.extend_from_slice(&["--mem-mib", "128"]);
    }
    let out = vmm(&args).output().unwrap();
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    (out, text)
}

fn assert_all_ok(serial: &str, tests: &[&str]) {
    for t in tests {
        assert!(
            serial.lines().any(|l| l == format!("TEST {t} OK")),
            "TEST {t} did not pass:\n{serial}"
        );
    }
    assert!(
        serial.contains("MVMTEST DONE 0 failures"),
        "guest reported failures:\n{serial}"
    );
}

fn exit_record(dir: &Dir) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("exit.json")).unwrap()).unwrap()
}

#[test]
fn boots_with_boot_params_e820_and_cmdline_then_resets() {
    let d = Dir::new("boot");
    let (out, serial) = run_guest(&d, "console=ttyS0 mvmtest.mem_mib=128", &[]);
    assert_all_ok(&serial, &["boot_params", "cmdline", "mem"]);
    assert!(
        serial.contains("CMDLINE console=ttyS0 mvmtest.mem_mib=128"),
        "{serial}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = exit_record(&d);
    assert_eq!(rec["reason"], "i8042_reset");
    assert_eq!(rec["exit_code"], 0);
}

#[test]
fn smp_guest_boots_with_an_mp_table() {
    let d = Dir::new("smp");
    let (out, serial) = run_guest(
        &d,
        "mvmtest.mem_mib=256",
        &["--vcpus", "4", "--mem-mib", "256"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_ok(&serial, &["boot_params", "mem"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn triple_fault_ends_the_vm_as_shutdown() {
    let d = Dir::new("triple");
    let (out, serial) = run_guest(&d, "mvmtest.exit=triple", &[]);
    assert!(serial.contains("MVMTEST DONE 0 failures"), "{serial}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(exit_record(&d)["reason"], "shutdown");
}

#[test]
fn sigterm_stops_a_halted_guest() {
    let d = Dir::new("sigterm");
    let serial = d.join("serial.log");
    let exit = d.join("exit.json");
    let mut vm = Vm(vmm(&[
        "--kernel",
        guest().to_str().unwrap(),
        "--cmdline",
        "mvmtest.exit=hlt",
        "--serial",
        serial.to_str().unwrap(),
        "--exit-record",
        exit.to_str().unwrap(),
    ])
    .spawn()
    .unwrap());
    wait_for_line(&serial, "MVMTEST DONE", Duration::from_secs(30));
    // While the guest runs, every thread of the VMM is behind the seccomp filter (mode 2).
    let tasks = std::fs::read_dir(format!("/proc/{}/task", vm.0.id())).unwrap();
    let mut threads = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
            "{status}"
        );
        threads += 1;
    }
    assert!(threads >= 2, "the main thread and a vCPU thread");
    // ... and in its jail: namespaces of its own and no capabilities (the tests run as root).
    let pid = vm.0.id();
    for ns in ["mnt", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for cap in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq([cap, "0000000000000000"])),
            "{status}"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(vm.0.id() as i32, libc::SIGTERM) };
    let status = vm.0.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let rec = exit_record(&d);
    assert_eq!(rec["reason"], "signal");
    assert_eq!(rec["detail"], 15);
}

fn pattern_disk(path: &Path, sectors: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(sectors * 512).unwrap();
    for i in 0..64u64 {
        f.write_all_at(&[((i & 0xff) as u8) ^ 0x5a; 512], i * 512)
            .unwrap();
    }
}

#[test]
fn virtio_blk_reads_writes_flushes_and_refuses_bad_requests() {
    let d = Dir::new("blk");
    let (a, b, c) = (d.join("a.img"), d.join("b.img"), d.join("c.img"));
    pattern_disk(&a, 2048);
    std::fs::File::create(&b).unwrap().set_len(1 << 20).unwrap();
    pattern_disk(&c, 128);
    let c_before = std::fs::read(&c).unwrap();
    let (out, serial) = run_guest(
        &d,
        "mvmtest.blk_pattern=vda mvmtest.blk_write=vdb mvmtest.blk_ro=vdc mvmtest.blk_oob=vdc mvmtest.blk_oob=vda",
        &[
            "--disk",
            &format!("{},id=disk-a", a.display()),
            "--disk",
            b.to_str().unwrap(),
            "--disk",
            &format!("{},ro", c.display()),
        ],
    );
    assert_all_ok(
        &serial,
        &[
            "virtio_probe",
            "blk_init_vda",
            "blk_getid_vda",
            "blk_flush_vda",
            "blk_unsupp_vda",
            "blk_irq_vda",
            "blk_pattern_vda",
            "blk_write_vdb",
            "blk_ro_vdc",
            "blk_oob_vdc",
            "blk_oob_vda",
        ],
    );
    assert!(serial.contains("BLK vda id=\"disk-a\""), "{serial}");
    assert_eq!(out.status.code(), Some(0));
    // What the guest wrote is on the host file; the read-only disk is untouched.
    let written = std::fs::read(&b).unwrap();
    for i in 0..64usize {
        let want = ((i * 7 + 3) & 0xff) as u8;
        assert!(
            written[i * 512..(i + 1) * 512].iter().all(|&x| x == want),
            "sector {i}"
        );
    }
    assert_eq!(std::fs::read(&c).unwrap(), c_before);
}

#[test]
fn vsock_connections_in_both_directions() {
    let d = Dir::new("vsock");
    let uds = d.join("v.sock");
    let serial = d.join("serial.log");
    let exit = d.join("exit.json");
    // Guest-initiated: the host listens on <uds>_5678 and echoes one line.
    let listener = UnixListener::bind(d.join("v.sock_5678")).unwrap();
    let echo = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        (&s).write_all(line.as_bytes()).unwrap();
        // Let the guest close first (it checks the echo, then shuts down).
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        line
    });
    let mut vm = Vm(vmm(&[
        "--kernel",
        guest().to_str().unwrap(),
        "--cmdline",
        "mvmtest.vsock_connect=5678 mvmtest.vsock_listen=1234",
        "--vsock",
        &format!("7,{}", uds.display()),
        "--serial",
        serial.to_str().unwrap(),
        "--exit-record",
        exit.to_str().unwrap(),
    ])
    .spawn()
    .unwrap());
    let line = echo.join().unwrap();
    assert!(line.starts_with("hello from guest 7"), "{line:?}");
    // Host-initiated: CONNECT, OK, then an echoed line.
    wait_for_line(
        &serial,
        "VSOCK listening port=1234",
        Duration::from_secs(30),
    );
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
    let status = vm.0.wait().unwrap();
    let text = std::fs::read_to_string(&serial).unwrap();
    assert_all_ok(&text, &["vsock_init", "vsock_connect", "vsock_listen"]);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn vsock_handshake_garbage_is_refused_and_the_device_keeps_working() {
    let d = Dir::new("vsockbad");
    let uds = d.join("v.sock");
    let serial = d.join("serial.log");
    let mut vm = Vm(vmm(&[
        "--kernel",
        guest().to_str().unwrap(),
        "--cmdline",
        "mvmtest.vsock_listen=1234",
        "--vsock",
        &format!("9,{}", uds.display()),
        "--serial",
        serial.to_str().unwrap(),
    ])
    .spawn()
    .unwrap());
    wait_for_line(
        &serial,
        "VSOCK listening port=1234",
        Duration::from_secs(30),
    );
    for junk in [
        &b"HELLO\n"[..],
        b"CONNECT x\n",
        b"CONNECT 1234 extra\n",
        &[0xffu8; 40][..],
    ] {
        let mut s = UnixStream::connect(&uds).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "junk {junk:?} got an answer"
        );
    }
    let mut s = UnixStream::connect(&uds).unwrap();
    s.write_all(b"CONNECT 1234\nabc\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut ok = String::new();
    r.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "{ok:?}");
    let mut back = String::new();
    r.read_line(&mut back).unwrap();
    assert_eq!(back, "abc\n");
    drop(r);
    drop(s);
    assert_eq!(vm.0.wait().unwrap().code(), Some(0));
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err}");
}

#[test]
fn bad_configs_end_with_one_clear_line() {
    let d = Dir::new("bad");
    let g = guest().to_str().unwrap();
    one_line_error(
        &vmm(&["--kernel", "/nonexistent/vmlinux"]).output().unwrap(),
        2,
        "kernel /nonexistent/vmlinux",
    );
    one_line_error(
        &vmm(&["--kernel", g, "--mem-mib", "0"]).output().unwrap(),
        2,
        "memory",
    );
    one_line_error(
        &vmm(&["--kernel", g, "--vcpus", "0"]).output().unwrap(),
        2,
        "vcpus",
    );
    one_line_error(
        &vmm(&["--kernel", g, "--disk", "/nonexistent.img"])
            .output()
            .unwrap(),
        2,
        "disk /nonexistent.img",
    );
    one_line_error(
        &vmm(&["--kernel", g, "--vsock", "1,/tmp/x.sock"])
            .output()
            .unwrap(),
        2,
        "CID",
    );
    one_line_error(&vmm(&[]).output().unwrap(), 2, "no kernel");
    one_line_error(
        &vmm(&["--kernel", g, "--bogus"]).output().unwrap(),
        2,
        "--bogus",
    );
    let cfg = d.join("bad.json");
    std::fs::write(&cfg, "{\"kernel\": 5}").unwrap();
    one_line_error(
        &vmm(&["--config", cfg.to_str().unwrap()]).output().unwrap(),
        2,
        "invalid config",
    );
    let notkernel = d.join("zeros");
    std::fs::write(&notkernel, vec![0u8; 8192]).unwrap();
    one_line_error(
        &vmm(&["--kernel", notkernel.to_str().unwrap()])
            .output()
            .unwrap(),
        1,
        "cannot load kernel",
    );
}

#[test]
fn config_file_runs_the_same_guest() {
    let d = Dir::new("cfgfile");
    let cfg = d.join("vm.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "kernel": guest(), "cmdline": "mvmtest.mem_mib=64", "mem_mib": 64,
            "serial": {"kind": "file", "path": d.join("serial.log")},
            "exit_record": d.join("exit.json"),
        })
        .to_string(),
    )
    .unwrap();
    let out = vmm(&["--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_ok(
        &std::fs::read_to_string(d.join("serial.log")).unwrap(),
        &["mem"],
    );
}

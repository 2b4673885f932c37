//! A benchmark, not a test (so `#[ignore]`d): what a checkpoint of a VM with 64 MiB of touched
//! memory costs with our VMM, inside the L2 machine (hardware-style KVM): a Linux guest that
//! filled 64 MiB of a tmpfs with random bytes and then counts on its console is paused and
//! snapshotted (timed from the pause request to the snapshot's answer), killed, and restored
//! in a new VMM (timed from its start to the guest's next line on the console).
//!
//!   cargo test --release -p mvm-runtime --test kvm_in_tcg -- --ignored --nocapture bench_snapshot
//!
//! (`bench/bench.py snapshot` runs exactly that.) `BENCH_SNAPSHOT_N` sets the rounds (5).

use std::path::Path;
use std::time::Duration;

use crate::harness::{self, Inputs, Scenario};

const SCRIPT: &str = r#"up() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN{print $(up) - $1}"; }
mkdir -p root/bin root/dev root/proc root/sys root/tmp
cp /bin/busybox root/bin/busybox
for a in sh mount dd head od tr sleep; do ln -s busybox root/bin/$a; done
mknod root/dev/urandom c 1 9
printf '%s\n' '#!/bin/busybox sh' 'mount -t tmpfs -o size=80m t /tmp' \
  'dd if=/dev/urandom of=/tmp/big bs=1M count=64 2>/dev/null' 'echo TOUCHED' 'i=0' \
  'while true; do echo "TICK $i"; i=$((i+1)); sleep 0.2; done' > root/init
chmod 755 root/init
dd if=/dev/zero of=root.ext4 bs=1M count=0 seek=16 2>/dev/null
mkfs.ext4 -q -F -E root_owner=0:0 -d root root.ext4 || exit 1
wait_for() { for i in $(seq 3000); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.01; done; return 1; }
for n in $(seq @N@); do
  rm -f s.log r.log snap.* api.sock
  mvm-vmm --kernel /guest/vmlinux \
    --cmdline 'console=ttyS0 reboot=k panic=-1 root=/dev/vda ro rootfstype=ext4 init=/init quiet' \
    --mem-mib 256 --disk root.ext4 --serial s.log --api-sock api.sock &
  vm=$!
  wait_for s.log 'TICK 1' || { echo "FAILED boot $n"; kill $vm; continue; }
  t0=$(up)
  mvm-vmmctl api.sock pause >/dev/null && mvm-vmmctl api.sock snapshot snap.state snap.mem >snap.json
  rc=$?
  echo "S $n snapshot_s $(since $t0)"
  kill $vm; wait $vm
  [ $rc = 0 ] || { echo "FAILED snapshot $n"; continue; }
  echo "S $n written_mib $(awk -F'"memory_bytes_written":' '{split($2,a,","); print a[1]/1048576}' snap.json)"
  echo "S $n state_kib $(($(wc -c < snap.state) / 1024))"
  last=$(grep -c TICK s.log)
  t1=$(up)
  mvm-vmm --restore snap.state --restore-memory snap.mem --mem-mib 256 --disk root.ext4 --serial r.log &
  vm=$!
  wait_for r.log TICK || { echo "FAILED restore $n"; kill $vm; continue; }
  echo "S $n restore_to_output_s $(since $t1)"
  echo "S $n first_after_restore $(head -n1 r.log | cut -d' ' -f2) last_before $((last - 1))"
  kill $vm; wait $vm
done
# Failures are the FAILED lines; the last kill's status is not one.
exit 0
"#;

#[test]
#[ignore = "a benchmark (bench/bench.py snapshot), not a test"]
fn bench_snapshot() {
    let n: usize = std::env::var("BENCH_SNAPSHOT_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut inputs =
        Inputs::locate(Path::new(env!("CARGO_BIN_EXE_mvm"))).unwrap_or_else(|e| panic!("{e}"));
    let ctl = Path::new(env!("CARGO_BIN_EXE_mvm")).with_file_name("mvm-vmmctl");
    assert!(
        ctl.is_file(),
        "{} is missing: cargo build --release",
        ctl.display()
    );
    inputs.add_file("/usr/local/bin/mvm-vmmctl", &ctl, true);
    let mut s = Scenario::new("snapshot", &SCRIPT.replace("@N@", &n.to_string()));
    s.timeout = Duration::from_secs(60 + 60 * n as u64);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-in-tcg-bench-snapshot");
    let run = harness::run(
        &inputs,
        std::slice::from_ref(&s),
        &work,
        harness::machine_timeout(s.timeout + Duration::from_secs(120)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = run.get("snapshot").unwrap_or_else(|| {
        panic!(
            "the scenario did not run; serial log {}",
            run.serial_path.display()
        )
    });
    assert!(
        o.rc == Some(0) && !o.output.contains("FAILED"),
        "the snapshot benchmark failed:\n{}",
        o.output
    );
    let mut json = serde_json::Map::new();
    json.insert("n".into(), n.into());
    for key in [
        "snapshot_s",
        "written_mib",
        "state_kib",
        "restore_to_output_s",
    ] {
        let values: Vec<f64> = o
            .output
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == "S" && f[2] == key).then(|| f[3].parse().ok())?
            })
            .collect();
        assert_eq!(values.len(), n, "{key}: {}", o.output);
        json.insert(key.into(), values.into());
    }
    println!("SNAPSHOT-RESULT {}", serde_json::Value::Object(json));
    for l in o
        .output
        .lines()
        .filter(|l| l.contains("first_after_restore"))
    {
        println!("{l}");
    }
}

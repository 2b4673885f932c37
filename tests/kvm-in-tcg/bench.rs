//! A benchmark, not a test (so `#[ignore]`d): inside the L2 machine, `mvm run` with our VMM
//! beside `mvm run` with QEMU (`-M microvm -accel kvm`, which the runtime's qemu backend
//! builds when /dev/kvm is hardware-style, as it is in L2), the same guest kernel, disks,
//! agent and image. Per backend: boot to the agent being ready and to the VM's end (the
//! runtime's own phase timings), the whole command, and the hypervisor's resident memory
//! while a container idles.
//!
//!   cargo test --release -p mvm-runtime --test kvm_in_tcg -- --ignored --nocapture bench_nested
//!
//! (`bench/bench.py nested` runs exactly that and prints the table.) Everything runs under
//! nested emulation, so absolute times mean little: compare the ratios. `BENCH_NESTED_N` sets
//! the iterations per backend (10); each backend also gets one unmeasured warm-up boot.
//!
//! The machine gets QEMU, its libraries, its x86 firmware and `vhost-device-vsock` on top of
//! the normal initramfs; the normal test run does not carry them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::{self, Inputs, Outcome, Scenario};

/// Our VMM with warm starts (the default: runs restore a template snapshot), our VMM booting
/// cold (`MVM_WARM_START=off`), and QEMU.
const BACKENDS: [&str; 3] = ["mvm", "mvm-cold", "qemu"];

/// The state root the scenarios share (the image is imported once).
const SETUP: &str = r#"M="mvm --root /tmp/r"
$M import /busybox-rootfs.tar busybox >/dev/null || exit 1
echo "QEMU-INFO<<"; $M --vmm qemu info; echo ">>"
echo "MVM-INFO<<"; $M --vmm mvm info; echo ">>"
"#;

/// `R <backend> <iteration> <key> <value>` per measurement; iteration 0 is the warm-up (for
/// warm mvm, it also makes the template). The order rotates so that a drift in the machine's
/// speed does not favour one backend.
const BOOT: &str = r#"M="mvm --root /tmp/r"
export NO_COLOR=1
up() { cut -d' ' -f1 /proc/uptime; }
one() {
  case $1 in mvm-cold) w=off; v=mvm ;; *) w=on; v=$1 ;; esac
  t0=$(up)
  MVM_WARM_START=$w $M --vmm $v --log-level debug run --rm --network none busybox true >out.txt 2>err.txt
  rc=$?
  t1=$(up)
  echo "R $1 $2 rc $rc"
  echo "R $1 $2 wall $(awk "BEGIN{print $t1 - $t0}")"
  sed -n "s/.*phase \([a-z_]*\) \([^ ]*\).*/R $1 $2 \1 \2/p" err.txt
  if [ $rc != 0 ]; then echo "FAILED $1 $2 rc=$rc"; tail -n 20 err.txt; fi
}
for i in $(seq 0 @N@); do
  case $((i % 3)) in
    0) one mvm $i; one mvm-cold $i; one qemu $i ;;
    1) one mvm-cold $i; one qemu $i; one mvm $i ;;
    *) one qemu $i; one mvm $i; one mvm-cold $i ;;
  esac
done
"#;

/// `M <backend> <sample> <key> <kib>`: the hypervisor's (and QEMU's vsock helper's) memory,
/// two seconds after a detached container's process started.
const RSS: &str = r#"M="mvm --root /tmp/r"
field() { awk -v k="$2:" '$1 == k {print $2}' /proc/$1/status; }
# Resident KiB of the mappings of exactly the guest's RAM (the runtime's default 512 MiB, one
# region below the 32-bit gap, anonymous in our VMM, a memfd in QEMU).
guest_rss() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / {s = 0; next} $1 == "Size:" {s = $2} $1 == "Rss:" && s == 524288 {g += $2} END {print g + 0}' /proc/$1/smaps
}
for b in mvm mvm-cold qemu; do
  case $b in mvm-cold) w=off; v=mvm ;; *) w=on; v=$b ;; esac
  for i in 1 2 3; do
    id=$(MVM_WARM_START=$w $M --vmm $v run -d --network none busybox sleep 1000) || { echo "FAILED rss $b $i"; continue; }
    for j in $(seq 300); do
      [ "$($M ps --format '{{.State}}')" = running ] && break
      sleep 0.2
    done
    sleep 2
    if [ $v = mvm ]; then pid=$(pidof mvm-vmm); else pid=$(pidof qemu-system-x86_64); fi
    for k in VmRSS RssAnon RssFile RssShmem; do echo "M $b $i $k $(field $pid $k)"; done
    echo "M $b $i GuestRss $(guest_rss $pid)"
    if [ $b = qemu ]; then
      echo "M $b $i HelperVmRSS $(field $(pidof vhost-device-vsock) VmRSS)"
      echo "QEMU-CMDLINE=$(tr '\0' ' ' < /proc/$pid/cmdline)"
    fi
    $M rm -f $id >/dev/null
    # the next sample must find only its own hypervisor
    for j in $(seq 100); do pidof mvm-vmm qemu-system-x86_64 >/dev/null || break; sleep 0.1; done
  done
done
"#;

/// QEMU's x86 firmware and option ROMs that `-M microvm -kernel` may load.
const QEMU_DATA: &[&str] = &[
    "bios-microvm.bin",
    "qboot.rom",
    "linuxboot.bin",
    "linuxboot_dma.bin",
    "pvh.bin",
    "kvmvapic.bin",
    "multiboot.bin",
    "multiboot_dma.bin",
];

/// A Rust `Duration`'s Debug text ("1.5s", "812.3ms", "40µs", "7ns") in seconds.
fn parse_duration(s: &str) -> Option<f64> {
    for (unit, scale) in [
        ("ms", 1e-3),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ns", 1e-9),
        ("s", 1.0),
    ] {
        if let Some(v) = s.strip_suffix(unit) {
            return v.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fail(o: &Outcome, what: &str) -> ! {
    panic!(
        "bench scenario {}: {what} (rc={:?})\n----- output -----\n{}------------------",
        o.name, o.rc, o.output
    )
}

/// (backend, key) -> values, from the lines `<tag> <backend> <iteration> <key> <value>`,
/// leaving out iteration 0 (the warm-up).
fn collect(o: &Outcome, tag: &str) -> BTreeMap<(String, String), Vec<f64>> {
    let mut m: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in o.output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 || f[0] != tag || f[2] == "0" {
            continue;
        }
        let value = if f[3] == "rc" || f[3] == "wall" || tag == "M" {
            f[4].parse().ok()
        } else {
            parse_duration(f[4])
        };
        let Some(v) = value else {
            fail(o, &format!("cannot read the value in {line:?}"))
        };
        m.entry((f[1].to_string(), f[3].to_string()))
            .or_default()
            .push(v);
    }
    m
}

#[test]
#[ignore = "a benchmark (bench/bench.py nested), not a test"]
fn bench_nested() {
    let n: usize = std::env::var("BENCH_NESTED_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut inputs =
        Inputs::locate(Path::new(env!("CARGO_BIN_EXE_mvm"))).unwrap_or_else(|e| panic!("{e}"));
    if let Some(w) =
        inputs.staleness_warning(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm/src"))
    {
        eprintln!("bench-nested: {w}");
    }
    let qemu = crate::harness::on_path("qemu-system-x86_64")
        .expect("qemu-system-x86_64 not found: apt-get install qemu-system-x86");
    let vhost = crate::harness::on_path("vhost-device-vsock").expect(
        "vhost-device-vsock not found: cargo install vhost-device-vsock (scripts/setup.sh does)",
    );
    inputs.add_file("/usr/bin/qemu-system-x86_64", &qemu, true);
    inputs.add_file("/usr/local/bin/vhost-device-vsock", &vhost, true);
    for f in QEMU_DATA {
        let here = Path::new("/usr/share/qemu").join(f);
        assert!(
            here.is_file(),
            "{} is missing: apt-get install qemu-system-data",
            here.display()
        );
        inputs.add_file(&format!("/usr/share/qemu/{f}"), &here, false);
    }

    let mut setup = Scenario::new("setup", SETUP);
    setup.timeout = Duration::from_secs(120);
    let mut boot = Scenario::new("boot", &BOOT.replace("@N@", &n.to_string()));
    // Three boots per iteration at 15-20 s each under nested emulation on a busy host.
    boot.timeout = Duration::from_secs(60 + 90 * (n as u64 + 1));
    let mut rss = Scenario::new("rss", RSS);
    rss.timeout = Duration::from_secs(600);
    // Memory first: it is short, and a rare hang of the outer machine late in the long boot
    // loop then costs only the boot figures.
    let scenarios = [setup, rss, boot];
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-in-tcg-bench");
    let limit = scenarios.iter().map(|s| s.timeout).sum::<Duration>() + Duration::from_secs(120);
    let run = harness::run(&inputs, &scenarios, &work, harness::machine_timeout(limit))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "bench-nested: L2 /dev/kvm ready at {:.1} s; machine ran {:.1} s; serial log {}",
        run.kvm_ready_at.unwrap_or(f64::NAN),
        run.total,
        run.serial_path.display()
    );
    let get = |name: &str| {
        run.get(name).unwrap_or_else(|| {
            panic!(
                "bench scenario {name} did not run to its end in L2; serial log {}",
                run.serial_path.display()
            )
        })
    };

    let setup = get("setup");
    if setup.rc != Some(0) {
        fail(setup, "importing the busybox image failed");
    }
    // The comparison only means something if QEMU runs on the same KVM as our VMM.
    if !setup.output.contains("Backend: qemu (kvm)") {
        fail(setup, "the qemu backend in L2 is not QEMU with KVM");
    }

    let boot = get("boot");
    if boot.rc != Some(0) || boot.output.contains("FAILED ") {
        fail(boot, "a run failed");
    }
    let times = collect(boot, "R");
    let rss_o = get("rss");
    if rss_o.rc != Some(0) || rss_o.output.contains("FAILED ") {
        fail(rss_o, "a detached container failed");
    }
    let cmdline = rss_o
        .output
        .lines()
        .find_map(|l| l.strip_prefix("QEMU-CMDLINE="))
        .unwrap_or("");
    if !cmdline.contains("-accel kvm") {
        fail(rss_o, "QEMU did not run with -accel kvm");
    }
    let mem = collect(rss_o, "M");
    for b in BACKENDS {
        let guest = mem.get(&(b.to_string(), "GuestRss".to_string()));
        if guest.is_none_or(|v| v.iter().any(|&x| x <= 0.0)) {
            fail(
                rss_o,
                &format!("no 512 MiB guest RAM mapping in {b}'s smaps"),
            );
        }
    }

    let mut json = serde_json::Map::new();
    json.insert("n".into(), n.into());
    json.insert("qemu_cmdline".into(), cmdline.trim().into());
    for ((backend, key), values) in times.iter().chain(mem.iter()) {
        if key == "rc" {
            continue;
        }
        let is_mem = mem.contains_key(&(backend.clone(), key.clone()));
        let want = if is_mem { 3 } else { n };
        if values.len() != want {
            fail(
                if is_mem { rss_o } else { boot },
                &format!("{backend} {key}: {} values, expected {want}", values.len()),
            );
        }
        json.insert(format!("{backend}.{key}"), values.clone().into());
    }
    for key in ["agent_ready", "vm_ended", "wall"] {
        if BACKENDS
            .iter()
            .any(|b| !times.contains_key(&(b.to_string(), key.to_string())))
        {
            fail(boot, &format!("no {key} figures"));
        }
    }

    let med = |b: &str, k: &str, m: &BTreeMap<(String, String), Vec<f64>>| {
        median(
            m.get(&(b.to_string(), k.to_string()))
                .map_or(&[][..], |v| &v[..]),
        )
    };
    println!("bench-nested: medians of {n} (nested emulation: compare the ratios)");
    for (label, key) in [
        ("boot to agent ready", "agent_ready"),
        ("VM start to VM end", "vm_ended"),
        ("`mvm run --rm true` wall", "wall"),
    ] {
        let (a, c, b) = (
            med("mvm", key, &times),
            med("mvm-cold", key, &times),
            med("qemu", key, &times),
        );
        println!(
            "  {label:<28} mvm warm {a:7.2} s  cold {c:7.2} s  qemu {b:7.2} s  warm/cold {:.2}  warm/qemu {:.2}",
            a / c,
            a / b
        );
    }
    let (a, b) = (med("mvm", "VmRSS", &mem), med("qemu", "VmRSS", &mem));
    println!(
        "  {:<28} mvm {:7.1} MiB  qemu {:7.1} MiB  ratio {:.2}",
        "hypervisor VmRSS",
        a / 1024.0,
        b / 1024.0,
        a / b
    );
    let (a, b) = (
        a - med("mvm", "GuestRss", &mem),
        b - med("qemu", "GuestRss", &mem),
    );
    println!(
        "  {:<28} mvm {:7.1} MiB  qemu {:7.1} MiB  ratio {:.2}",
        "  without guest RAM",
        a / 1024.0,
        b / 1024.0,
        a / b
    );
    println!("NESTED-RESULT {}", serde_json::Value::Object(json));
}

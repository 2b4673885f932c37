//! The product's main path on hardware-style KVM: our VMM and `mvm run --vmm mvm` inside a
//! QEMU TCG machine that emulates AMD SVM (see harness.rs and
//! ../shared/reference/kvm-in-tcg.md).
//!
//! All scenarios run in ONE outer machine, started by whichever test gets there first; each
//! test then checks its own scenario's output and exit status. The test fails (never skips)
//! when something it needs is missing.
//!
//!   cargo build --release --workspace && scripts/build-agent.sh release
//!   cargo test --release -p mvm-runtime --test kvm_in_tcg
//!
//! `MVM_L2_VERBOSE=1` echoes the outer machine's console as it runs; the whole console is
//! also saved to `$CARGO_TARGET_TMPDIR/kvm-in-tcg/serial.log`.

mod bench;
mod bench_snapshot;
mod cpio;
mod harness;

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use harness::{Inputs, Outcome, Run, Scenario};

/// `mvm` with our VMM and a state root shared by the runtime scenarios (the image is
/// imported once).
const MVM: &str = "mvm --root /tmp/r --vmm mvm";

fn scenarios() -> Vec<Scenario> {
    let mut v = vec![
        // a. The VMM alone boots the guest kernel with a busybox ext4 root; its /init prints a
        //    marker and resets through the i8042 (reboot=k).
        Scenario::new(
            "vmm-boot",
            r#"set -e
mkdir -p root/bin root/dev root/proc root/sys
cp /bin/busybox root/bin/busybox
printf '#!/bin/busybox sh\n/bin/busybox echo MVM-GUEST-INIT-REACHED\n/bin/busybox reboot -f\n' > root/init
chmod 755 root/init
dd if=/dev/zero of=root.ext4 bs=1M count=0 seek=16 2>/dev/null
mkfs.ext4 -q -F -E root_owner=0:0 -d root root.ext4
set +e
t0=$(cut -d' ' -f1 /proc/uptime)
mvm-vmm --kernel /guest/vmlinux \
  --cmdline 'console=ttyS0 reboot=k panic=-1 root=/dev/vda rw rootfstype=ext4 init=/init quiet' \
  --mem-mib 128 --disk root.ext4 --serial stdout --exit-record exit.json
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "VMM-RC=$rc"
echo "VMM-SECONDS=$(awk "BEGIN{print $t1 - $t0}")"
echo "EXIT-RECORD=$(cat exit.json 2>&1)"
exit $rc
"#,
        ),
        // a2. Snapshots with our VMM: a Linux guest counting on its console is paused and
        //     snapshotted at tick 5, goes on to its end; two VMMs then restore the snapshot at
        //     once and each goes on counting from where it was, sharing the memory file's
        //     pages (their PSS below their RSS).
        Scenario::new(
            "vmm-snapshot",
            r#"set -e
up() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN{print $(up) - $1}"; }
mkdir -p root/bin root/dev root/proc root/sys
cp /bin/busybox root/bin/busybox
for a in sh head od tr sleep reboot; do ln -s busybox root/bin/$a; done
mknod root/dev/urandom c 1 9
printf '%s\n' '#!/bin/busybox sh' 'i=0' 'while [ $i -lt 30 ]; do' \
  '  echo "TICK $i $(head -c 8 /dev/urandom | od -An -tx1 | tr -d " \n")"' \
  '  i=$((i+1))' '  sleep 0.3' 'done' 'echo COUNT-DONE' 'reboot -f' > root/init
chmod 755 root/init
dd if=/dev/zero of=root.ext4 bs=1M count=0 seek=16 2>/dev/null
mkfs.ext4 -q -F -E root_owner=0:0 -d root root.ext4
set +e
t0=$(up)
mvm-vmm --kernel /guest/vmlinux \
  --cmdline 'console=ttyS0 reboot=k panic=-1 root=/dev/vda ro rootfstype=ext4 init=/init quiet' \
  --mem-mib 128 --disk root.ext4 --serial s1.log --api-sock api.sock --exit-record e1.json &
vm1=$!
for i in $(seq 900); do grep -q 'TICK 0 ' s1.log 2>/dev/null && break; sleep 0.02; done
echo "BOOT-TO-OUTPUT-SECONDS=$(since $t0)"
for i in $(seq 900); do grep -q 'TICK 5 ' s1.log 2>/dev/null && break; sleep 0.02; done
mvm-vmmctl api.sock pause; echo "PAUSE=$?"
t1=$(up)
mvm-vmmctl api.sock snapshot snap.state snap.mem; echo "SNAPSHOT=$?"
echo "SNAPSHOT-SECONDS=$(since $t1)"
mvm-vmmctl api.sock resume; echo "RESUME=$?"
wait $vm1; echo "VM1-RC=$?"
echo "S1<<"; cat s1.log; echo ">>"
echo "FILES<<"; ls -ls snap.state snap.mem; echo ">>"
t2=$(up)
for n in 1 2; do
  mvm-vmm --restore snap.state --restore-memory snap.mem --mem-mib 128 --disk root.ext4 \
    --serial r$n.log --exit-record x$n.json &
  eval p$n=$!
done
for i in $(seq 900); do grep -q TICK r1.log 2>/dev/null && break; sleep 0.01; done
echo "RESTORE-TO-OUTPUT-SECONDS=$(since $t2)"
sleep 1
for n in 1 2; do
  eval p=\$p$n
  echo "R$n-SMAPS<<"; grep -E '^(Rss|Pss|Shared_Clean|Shared_Dirty|Private_Dirty):' /proc/$p/smaps_rollup; echo ">>"
done
wait $p1; echo "R1-RC=$?"
wait $p2; echo "R2-RC=$?"
echo "R1<<"; cat r1.log; echo ">>"
echo "R2<<"; cat r2.log; echo ">>"
mvm-vmm --restore snap.state --restore-memory snap.mem --mem-mib 256 --disk root.ext4 \
  --serial bad.log 2>bad.txt; echo "BAD-RC=$?"
echo "BAD<<"; cat bad.txt; echo ">>"
"#,
        ),
        Scenario::new(
            "import",
            &format!("{MVM} import /busybox-rootfs.tar busybox && {MVM} images && {MVM} info"),
        ),
        // b. The product path: `mvm run` with our VMM, the agent and the busybox image.
        Scenario::new(
            "run-hello",
            &format!(
                r#"t0=$(cut -d' ' -f1 /proc/uptime)
{MVM} run --rm --network none busybox echo hello
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "RUN-SECONDS=$(awk "BEGIN{{print $t1 - $t0}}")" >&2
exit $rc
"#
            ),
        ),
        // b2. Warm starts on our VMM: the first `run` of a shape makes its template (a VM
        //     booted to "agent ready" and snapshotted), later ones restore it. A warm VM's
        //     kernel command line is the template's; its RNG is its own; `MVM_WARM_START=off`
        //     boots cold.
        Scenario::new(
            "warm-run",
            &format!(
                r#"up() {{ cut -d' ' -f1 /proc/uptime; }}
since() {{ awk "BEGIN{{print $(up) - $1}}"; }}
probe='echo ran; grep -o "mvm.template=1" /proc/cmdline; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"; echo; date +%s'
t0=$(up)
{MVM} run --rm --network none busybox sh -c "$probe" >first.txt 2>&1; echo "FIRST-RC=$?"
echo "FIRST-SECONDS=$(since $t0)"
echo "FIRST<<"; cat first.txt; echo ">>"
echo "TEMPLATES=$(ls /var/cache/mvm/templates | grep -v lock | tr '\n' ' ')"
for n in 1 2 3; do
  t=$(up)
  {MVM} run --rm --network none busybox sh -c "$probe" >warm$n.txt 2>&1; echo "WARM$n-RC=$?"
  echo "WARM$n-SECONDS=$(since $t)"
  echo "WARM$n<<"; cat warm$n.txt; echo ">>"
done
echo "HOST-TIME=$(date +%s)"
{MVM} run --rm busybox sh -c 'grep -o mvm.template=1 /proc/cmdline; ip -4 -o addr show eth0 | awk "{{print \$4}}"; ping -c 1 -W 5 10.89.0.1 >/dev/null && echo gw-ok' >net.txt 2>&1; echo "NET-RC=$?"
echo "NET<<"; cat net.txt; echo ">>"
{MVM} run --rm --network none busybox sh -c 'echo out; echo err >&2; exit 3' >so.txt 2>se.txt; echo "STREAMS-RC=$?"
echo "SO<<"; cat so.txt; echo ">>"
echo "SE<<"; cat se.txt; echo ">>"
t=$(up)
MVM_WARM_START=off {MVM} run --rm --network none busybox sh -c "$probe" >cold.txt 2>&1; echo "COLD-RC=$?"
echo "COLD-SECONDS=$(since $t)"
echo "COLD<<"; cat cold.txt; echo ">>"
"#
            ),
        ),
        // c. The process's exit code, stdout and stderr kept apart, 127, and stdin with -i.
        Scenario::new(
            "streams",
            &format!(
                r#"{MVM} run --rm --network none busybox sh -c 'echo out; echo err >&2; exit 3' >stdout.txt 2>stderr.txt
echo "RC=$?"
echo "STDOUT<<"; cat stdout.txt; echo ">>"
echo "STDERR<<"; cat stderr.txt; echo ">>"
"#
            ),
        ),
        Scenario::new(
            "missing-command",
            &format!(
                r#"{MVM} run --rm --network none busybox no-such-command-xyz >stdout.txt 2>stderr.txt
echo "RC=$?"
echo "STDOUT<<"; cat stdout.txt; echo ">>"
echo "STDERR<<"; cat stderr.txt; echo ">>"
"#
            ),
        ),
        Scenario::new(
            "stdin",
            &format!(
                r#"echo x | {MVM} run --rm --network none -i busybox cat >stdout.txt 2>stderr.txt
echo "RC=$?"
echo "STDOUT<<"; cat stdout.txt; echo ">>"
echo "STDERR<<"; cat stderr.txt; echo ">>"
"#
            ),
        ),
        // d. The lifecycle on our VMM: a detached container, its log, the VMM jailed and behind
        // its seccomp filter, exec, pause (our VMM's threads stopped), stop and rm.
        Scenario::new(
            "lifecycle",
            &format!(
                r#"id=$({MVM} run -d --network none busybox sh -c 'echo started; sleep 600') || exit 1
for i in $(seq 300); do {MVM} logs $id | grep -q started && break; sleep 0.2; done
echo "LOGS<<"; {MVM} logs $id; echo ">>"
# Our VMM, as the runtime starts it (root): jailed and behind its seccomp filter.
vp=$(for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = mvm-vmm ] && echo ${{p#/proc/}}; done | head -n1)
echo "VMM-SECCOMP=$(awk '/^Seccomp:/ {{print $2}}' /proc/$vp/status)"
echo "VMM-CAPEFF=$(awk '/^CapEff:/ {{print $2}}' /proc/$vp/status)"
echo "VMM-ROOT=$(ls /proc/$vp/root/ | sort | tr '\n' ' ')"
echo "VMM-NETNS=$([ "$(readlink /proc/$vp/ns/net)" = "$(readlink /proc/self/ns/net)" ] && echo shared || echo own)"
echo "VMM-PIDNS=$([ "$(readlink /proc/$vp/ns/pid)" = "$(readlink /proc/self/ns/pid)" ] && echo shared || echo own)"
echo "VMM-UID=$(awk '/^Uid:/ {{print $2}}' /proc/$vp/status)"
echo "VMM-NNP=$(awk '/^NoNewPrivs:/ {{print $2}}' /proc/$vp/status)"
echo "VMM-NPROC=$(awk '/^Max processes/ {{print $3}}' /proc/$vp/limits)"
{MVM} exec $id sh -c 'echo from-exec; exit 5' >exec.txt 2>&1; echo "EXECRC=$?"
echo "EXEC<<"; cat exec.txt; echo ">>"
{MVM} pause $id >/dev/null; echo "PAUSE=$?"
echo "PAUSED=$({MVM} ps --format '{{{{.State}}}}')"
{MVM} unpause $id >/dev/null; echo "UNPAUSE=$?"
{MVM} stop -t 2 $id >/dev/null; echo "STOP=$?"
echo "STATE=$({MVM} ps -a --format '{{{{.State}}}}')"
{MVM} rm $id >/dev/null; echo "RM=$?"
echo "LEFT=$({MVM} ps -aq | wc -l)"
"#
            ),
        ),
        // e. Networks on our VMM: virtio-net over a TAP on the default bridge (and two spare
        // interfaces, one of which `network connect` takes up while it runs), a published
        // port (the runtime's proxy), the guest's own address, the gateway, a user-defined
        // network with its DNS names, isolation between networks, and clean-up of the TAPs
        // and the bridge. busybox's wget crashes in Debian's static build: nc fetches; and
        // its nc cannot resolve names (static glibc has no NSS), so nslookup does.
        Scenario::new(
            "network",
            &format!(
                r#"up() {{ cut -d' ' -f1 /proc/uptime; }}
since() {{ awk "BEGIN{{print $(up) - $1}}"; }}
# Our interfaces by name (a TAP's line also names its bridge, as master).
links() {{ ip -o link show | cut -d: -f2 | tr -d ' ' | grep -E '^(mvt|mvmbr-)' | sort; }}
get() {{ printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 "$1" "$2" 2>&1; }}
# The first fetch that returns the page, within about 30 s (httpd starts after `run -d`).
get_until() {{
  for i in $(seq 60); do
    r=$(get "$1" "$2"); case "$r" in *"$3"*) break ;; esac; sleep 0.5
  done
  echo "$r"
}}
t0=$(up)
id=$({MVM} run -d --name web -p 127.0.0.1:18080:80 busybox sh -c 'mkdir -p /www && echo hello-net > /www/index.html && exec httpd -f -p 80 -h /www')
echo "RUN-WEB=$?"
echo "RUN-WEB-SECONDS=$(since $t0)"
echo "WEB-IP=$({MVM} inspect web | sed -n 's/.*"IPAddress": *"\([0-9.]*\)".*/\1/p' | head -n1)"
echo "TUN=$([ -c /dev/net/tun ] && echo yes || echo no)"
echo "LINKS-UP<<"; links; echo ">>"
echo "BRIDGED=$(ip -o link show | grep -c "master $(links | grep '^mvmbr-' | head -n1) ")"
echo "NFT<<"; nft list ruleset 2>&1; echo ">>"
echo "FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)"
t1=$(up)
echo "PORT<<"; get_until 127.0.0.1 18080 hello-net; echo ">>"
echo "PORT-SECONDS=$(since $t1)"
echo "DIRECT<<"; get 10.89.0.2 80; echo ">>"
{MVM} exec web ping -c 1 -W 5 10.89.0.1 >ping.txt 2>&1; echo "PING-GW=$?"
echo "PING<<"; cat ping.txt; echo ">>"
{MVM} network create --subnet 10.90.0.0/24 n1 >/dev/null; echo "NET-CREATE=$?"
n1br=$({MVM} network inspect n1 | grep -o 'mvmbr-[0-9a-f]*' | head -n1)
t2=$(up)
{MVM} run -d --name peer --network n1 busybox sh -c 'mkdir -p /www && echo hello-peer > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
echo "RUN-PEER=$?"
echo "RUN-PEER-SECONDS=$(since $t2)"
# The running web container joins n1 on one of its VM's spare interfaces.
{MVM} network connect n1 web >connect.txt 2>&1; echo "CONNECT=$?"
cat connect.txt
t3=$(up)
# A second container on n1: its gateway, the first one's name and page, and no way to the
# default network's container.
{MVM} run --rm --network n1 busybox sh -c '
ping -c 1 -W 5 10.90.0.1 >/dev/null 2>&1; echo "CLIENT-PING-GW=$?"
echo "LOOKUP<<"; nslookup peer 2>&1; echo ">>"
ip=$(nslookup peer 2>/dev/null | awk "/^Address/ {{a=\$NF}} END {{print a}}")
for i in $(seq 60); do
  r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 "$ip" 80 2>&1); case "$r" in *hello-peer*) break ;; esac; sleep 0.5
done
echo "BYNAME-TRIES=$i"
echo "BYNAME<<"; echo "$r"; echo ">>"
wip=$(nslookup web 2>/dev/null | awk "/^Address/ {{a=\$NF}} END {{print a}}")
echo "WEB-N1-IP=$wip"
echo "WEB-BYNAME<<"; printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 "$wip" 80 2>&1; echo ">>"
echo "ISOLATED<<"; printf "GET / HTTP/1.0\r\n\r\n" | nc -w 3 10.89.0.2 80 2>&1; echo "rc=$?"; echo ">>"
' >client.txt 2>&1
echo "CLIENT=$?"
echo "CLIENT-SECONDS=$(since $t3)"
cat client.txt
{MVM} rm -f web peer >/dev/null; echo "RM=$?"
{MVM} network rm n1 >/dev/null; echo "NET-RM=$?"
echo "N1-BRIDGE=$n1br"
echo "LINKS-DOWN<<"; links; echo ">>"
echo "LEFT=$({MVM} ps -aq | wc -l)"
echo "NET-SECONDS=$(since $t0)"
"#
            ),
        ),
        // f. Volumes on our VMM: virtio-fs through vhost-user to virtiofsd (its namespace
        // sandbox), guest RAM as a shared memfd. A named volume outlives its container, a
        // bind mount shows host files both ways, `:ro` refuses writes in the guest, and no
        // virtiofsd is left when the containers are gone.
        Scenario::new(
            "volumes",
            &format!(
                r#"fsd() {{ for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = virtiofsd ] && echo "${{p#/proc/}}"; done; }}
{MVM} volume create v1 >/dev/null; echo "CREATE=$?"
{MVM} run --rm --network none -v v1:/data busybox sh -c 'echo kept > /data/f' >w.txt 2>&1; echo "WRITE=$?"
cat w.txt
{MVM} run --rm --network none -v v1:/data busybox cat /data/f >r.txt 2>&1; echo "READ=$?"
echo "READ<<"; cat r.txt; echo ">>"
mkdir -p host && echo from-host > host/hello
{MVM} run --rm --network none -v $PWD/host:/h busybox sh -c 'cat /h/hello; echo from-guest > /h/back' >b.txt 2>&1; echo "BIND=$?"
echo "BIND<<"; cat b.txt; echo ">>"
echo "BACK<<"; cat host/back 2>&1; echo ">>"
{MVM} run --rm --network none -v $PWD/host:/h:ro busybox sh -c 'echo x > /h/ro 2>/dev/null; echo "RO-WRITE=$?"; cat /h/hello' >ro.txt 2>&1; echo "RO=$?"
cat ro.txt
echo "RO-FILE=$([ -e host/ro ] && echo present || echo absent)"
{MVM} volume rm v1 >/dev/null; echo "VOLUME-RM=$?"
echo "VIRTIOFSD-LEFT=$(fsd | wc -l)"
echo "LEFT=$({MVM} ps -aq | wc -l)"
"#
            ),
        ),
    ];
    for s in &mut v {
        s.timeout = Duration::from_secs(90);
    }
    // Three guest boots, two of them while another guest runs: 30-45 s in L2 while the
    // host's two cores are moderately busy, over two minutes when they are saturated.
    if let Some(net) = v.iter_mut().find(|s| s.name == "network") {
        net.timeout = Duration::from_secs(240);
    }
    v
}

static RUN: LazyLock<Result<Run, String>> = LazyLock::new(|| {
    let mut inputs = Inputs::locate(Path::new(env!("CARGO_BIN_EXE_mvm")))?;
    // The VMM's control client, built beside the VMM.
    let ctl = Path::new(env!("CARGO_BIN_EXE_mvm")).with_file_name("mvm-vmmctl");
    if !ctl.is_file() {
        return Err(format!(
            "{} is missing: cargo build --release -p mvm-vmm",
            ctl.display()
        ));
    }
    inputs.add_file("/usr/local/bin/mvm-vmmctl", &ctl, true);
    if let Some(w) =
        inputs.staleness_warning(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm/src"))
    {
        eprintln!("kvm-in-tcg: {w}");
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-in-tcg");
    let timeout = harness::machine_timeout(Duration::from_secs(480));
    let run = harness::run(&inputs, &scenarios(), &work, timeout)?;
    eprintln!(
        "kvm-in-tcg: L2 /dev/kvm ready at {:.1} s; machine ran {:.1} s; serial log {}",
        run.kvm_ready_at.unwrap_or(f64::NAN),
        run.total,
        run.serial_path.display()
    );
    for o in &run.outcomes {
        eprintln!(
            "kvm-in-tcg: scenario {:<16} rc={:<4} {:6.1} s",
            o.name,
            o.rc.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
            o.ended_at - o.started_at
        );
    }
    Ok(run)
});

/// The outcome of scenario `name`, or a panic that explains why the machine did not run it.
fn outcome(name: &str) -> &'static Outcome {
    let run = match &*RUN {
        Ok(run) => run,
        Err(e) => panic!("{e}"),
    };
    run.get(name).unwrap_or_else(|| {
        panic!(
            "scenario {name} did not run to its end in the L2 machine (timeout or crash); serial log {}, last lines:\n{}",
            run.serial_path.display(),
            run.serial.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

/// Fails with the scenario's whole output.
fn fail(o: &Outcome, what: &str) -> ! {
    panic!(
        "scenario {}: {what} (rc={:?})\n----- output -----\n{}------------------",
        o.name, o.rc, o.output
    )
}

/// The text between `NAME<<` and `>>` lines.
fn section<'a>(o: &'a Outcome, name: &str) -> &'a str {
    let open = format!("{name}<<\n");
    let Some(start) = o.output.find(&open).map(|i| i + open.len()) else {
        fail(o, &format!("no {name} section in the output"))
    };
    let Some(len) = o.output[start..].find(">>\n") else {
        fail(o, &format!("unterminated {name} section"))
    };
    &o.output[start..start + len]
}

fn value<'a>(o: &'a Outcome, key: &str) -> Option<&'a str> {
    o.output
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn expect_rc(o: &Outcome, want: i32) {
    if o.rc != Some(want) {
        fail(o, &format!("expected exit status {want}"));
    }
}

/// The `Rss`, `Pss` and shared (clean and dirty: a memory file just written is still dirty in
/// the page cache) figures (KiB) of one smaps_rollup section.
fn smaps(o: &Outcome, name: &str) -> (u64, u64, u64) {
    let text = section(o, name);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| fail(o, &format!("no {key} in {name}")))
    };
    (
        get("Rss:"),
        get("Pss:"),
        get("Shared_Clean:") + get("Shared_Dirty:"),
    )
}

#[test]
fn vmm_snapshot_of_a_linux_guest_restores_twice_sharing_memory() {
    let o = outcome("vmm-snapshot");
    for key in ["PAUSE", "SNAPSHOT", "RESUME", "VM1-RC", "R1-RC", "R2-RC"] {
        if value(o, key) != Some("0") {
            fail(o, &format!("{key} is not 0"));
        }
    }
    let ticks = |text: &str| -> Vec<u32> {
        text.lines()
            .filter_map(|l| l.strip_prefix("TICK "))
            .filter_map(|r| r.split(' ').next()?.parse().ok())
            .collect()
    };
    let s1 = section(o, "S1");
    if ticks(s1) != (0..30).collect::<Vec<_>>() || !s1.contains("COUNT-DONE") {
        fail(o, "the snapshotted guest did not count to its end");
    }
    for r in ["R1", "R2"] {
        let text = section(o, r);
        let t = ticks(text);
        // Taken at tick 5 or a little after: each restored guest goes on from there to 29,
        // without booting again.
        let first = t.first().copied().unwrap_or(0);
        if !(6..=10).contains(&first)
            || t != (first..30).collect::<Vec<_>>()
            || !text.contains("COUNT-DONE")
            || text.contains("Linux version")
        {
            fail(o, &format!("{r} did not go on counting from the snapshot"));
        }
        let (rss, pss, shared) = smaps(o, &format!("{r}-SMAPS"));
        if pss >= rss || shared < 1024 {
            fail(
                o,
                &format!("{r}: no pages shared with the other restored VM (Rss {rss} Pss {pss})"),
            );
        }
    }
    let bad = section(o, "BAD");
    if value(o, "BAD-RC") != Some("1")
        || bad.lines().count() != 1
        || !bad.contains("the snapshot is of a VM with 1 vCPUs and 128 MiB")
    {
        fail(
            o,
            "a restore into another shape was not refused with one line",
        );
    }
}

#[test]
fn warm_starts_restore_a_template_with_fresh_entropy() {
    let o = outcome("warm-run");
    for key in ["FIRST-RC", "WARM1-RC", "WARM2-RC", "WARM3-RC", "COLD-RC"] {
        if value(o, key) != Some("0") {
            fail(o, &format!("{key} is not 0"));
        }
    }
    if value(o, "TEMPLATES").is_none_or(|t| t.trim().is_empty()) {
        fail(o, "no template was made");
    }
    let host_time: u64 = value(o, "HOST-TIME")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| fail(o, "no HOST-TIME"));
    let mut randoms = Vec::new();
    for name in ["FIRST", "WARM1", "WARM2", "WARM3"] {
        let text = section(o, name);
        let lines: Vec<&str> = text.lines().collect();
        // ran, the template's marker, 16 random bytes, the guest's clock.
        if lines.len() != 4 || lines[0] != "ran" || lines[1] != "mvm.template=1" {
            fail(o, &format!("{name} was not a warm start"));
        }
        randoms.push(lines[2].to_string());
        let t: u64 = lines[3].parse().unwrap_or(0);
        if t.abs_diff(host_time) > 120 {
            fail(o, &format!("{name}'s clock is {t}, the host's {host_time}"));
        }
    }
    randoms.sort();
    randoms.dedup();
    if randoms.len() != 4 {
        fail(o, "two warm VMs read the same random bytes");
    }
    if section(o, "SO") != "out\n"
        || section(o, "SE") != "err\n"
        || value(o, "STREAMS-RC") != Some("3")
    {
        fail(
            o,
            "a warm start changed the container's streams or exit code",
        );
    }
    let cold = section(o, "COLD");
    if !cold.starts_with("ran\n") || cold.contains("mvm.template=1") {
        fail(o, "MVM_WARM_START=off did not boot cold");
    }
    // On the default network: a template with a network interface, the container's MAC set
    // by the agent (it finds the interface by it), its address, its gateway.
    let net = section(o, "NET");
    if value(o, "NET-RC") != Some("0")
        || !net.starts_with("mvm.template=1\n10.89.0.")
        || !net.contains("gw-ok")
    {
        fail(
            o,
            "a warm start on the default network did not get its address and gateway",
        );
    }
}

#[test]
fn vmm_boots_guest_kernel_and_resets_via_i8042() {
    let o = outcome("vmm-boot");
    if !o.output.contains("MVM-GUEST-INIT-REACHED") {
        fail(
            o,
            "the guest's /init marker never appeared on the serial console",
        );
    }
    expect_rc(o, 0);
    if value(o, "VMM-RC") != Some("0") {
        fail(o, "mvm-vmm did not exit 0");
    }
    let record = value(o, "EXIT-RECORD").unwrap_or("");
    if !record.contains(r#""reason":"i8042_reset""#) {
        fail(o, "the exit record does not say i8042_reset");
    }
    let secs: f64 = value(o, "VMM-SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::MAX);
    // Nested emulation: a boot takes 2-4 s; anything near a minute means a hang or a timeout.
    if secs > 45.0 {
        fail(o, &format!("mvm-vmm took {secs} s to boot and reset"));
    }
    eprintln!("kvm-in-tcg: mvm-vmm boot to /init and reset: {secs:.2} s (nested)");
}

#[test]
fn mvm_run_echo_hello() {
    let imp = outcome("import");
    expect_rc(imp, 0);
    let o = outcome("run-hello");
    expect_rc(o, 0);
    if !o.output.lines().any(|l| l == "hello") {
        fail(o, "no line \"hello\" in the output");
    }
    if let Some(s) = value(o, "RUN-SECONDS") {
        eprintln!("kvm-in-tcg: mvm run --rm busybox echo hello: {s} s (nested)");
    }
}

#[test]
fn mvm_run_exit_code_and_separate_streams() {
    let o = outcome("streams");
    expect_rc(o, 0);
    if value(o, "RC") != Some("3") {
        fail(o, "mvm run should exit with the process's code 3");
    }
    if section(o, "STDOUT") != "out\n" {
        fail(o, "stdout should be exactly \"out\\n\"");
    }
    if section(o, "STDERR") != "err\n" {
        fail(o, "stderr should be exactly \"err\\n\"");
    }
}

#[test]
fn mvm_run_missing_command_is_127() {
    let o = outcome("missing-command");
    expect_rc(o, 0);
    if value(o, "RC") != Some("127") {
        fail(o, "a command that does not exist should give exit code 127");
    }
    if !section(o, "STDOUT").is_empty() {
        fail(o, "nothing should reach stdout");
    }
    if !section(o, "STDERR").contains("no-such-command-xyz") {
        fail(o, "stderr should name the missing command");
    }
}

#[test]
fn mvm_run_interactive_stdin() {
    let o = outcome("stdin");
    expect_rc(o, 0);
    if value(o, "RC") != Some("0") {
        fail(o, "echo x | mvm run -i busybox cat should exit 0");
    }
    if section(o, "STDOUT") != "x\n" {
        fail(o, "stdout should be exactly \"x\\n\"");
    }
}

#[test]
fn mvm_lifecycle_detached_exec_pause_stop_rm() {
    let o = outcome("lifecycle");
    expect_rc(o, 0);
    if section(o, "LOGS") != "started\n" {
        fail(o, "the detached container's log should hold its output");
    }
    // The VMM's root is the VM's own directory: its vsock sockets and exit record, not the
    // host's tree nor the monitor's control socket.
    let root = value(o, "VMM-ROOT").unwrap_or("");
    if !root.split(' ').any(|f| f == "vsock.sock")
        || root.split(' ').any(|f| f == "usr" || f == "ctl.sock")
    {
        fail(o, "the VMM should be chrooted into the VM's own directory");
    }
    if value(o, "EXECRC") != Some("5") || section(o, "EXEC") != "from-exec\n" {
        fail(o, "exec should print from-exec and exit 5");
    }
    // Its own uid from the runtime's range (jail.rs), its own PID namespace, no way back.
    let uid: u64 = value(o, "VMM-UID")
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    if uid < 2_000_000_000 {
        fail(o, "the VMM should run as a uid of the VM's own");
    }
    if value(o, "VMM-NPROC").is_none_or(|n| n == "unlimited") {
        fail(o, "the VMM should have an NPROC limit");
    }
    for (key, want) in [
        ("VMM-SECCOMP", "2"),
        ("VMM-CAPEFF", "0000000000000000"),
        ("VMM-NETNS", "own"),
        ("VMM-PIDNS", "own"),
        ("VMM-NNP", "1"),
        ("PAUSE", "0"),
        ("PAUSED", "paused"),
        ("UNPAUSE", "0"),
        ("STOP", "0"),
        ("STATE", "exited"),
        ("RM", "0"),
        ("LEFT", "0"),
    ] {
        if value(o, key) != Some(want) {
            fail(o, &format!("{key} should be {want}"));
        }
    }
}

/// Whether an HTTP response from busybox httpd is a 200 whose body is the line `body`.
fn http_ok(response: &str, body: &str) -> bool {
    response
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("HTTP/1.") && l.contains(" 200 "))
        && response.lines().any(|l| l == body)
}

#[test]
fn mvm_network_bridge_ports_dns_isolation_cleanup() {
    let o = outcome("network");
    // A module that did not load (e.g. an L2 kernel fetched before the network modules were
    // added to scripts/kvm-in-tcg/fetch-l2-kernel.sh) explains everything below.
    if let Ok(run) = &*RUN {
        let failed: Vec<&str> = run
            .serial
            .lines()
            .filter(|l| l.starts_with("=== L2 insmod "))
            .collect();
        if !failed.is_empty() {
            fail(o, &format!("kernel modules did not load in L2: {failed:?}"));
        }
    }
    expect_rc(o, 0);
    for (key, want) in [
        ("RUN-WEB", "0"),
        ("TUN", "yes"),
        ("FORWARD", "1"),
        // the first container on the default network 10.89.0.0/16 (gateway .1)
        ("WEB-IP", "10.89.0.2"),
    ] {
        if value(o, key) != Some(want) {
            fail(o, &format!("{key} should be {want}"));
        }
    }
    // Three TAPs (mvt + 11 hex digits of the ID + its index): the container's on the one
    // bridge, and two spares on none (for `network connect`).
    let up: Vec<&str> = section(o, "LINKS-UP").lines().collect();
    let taps = up
        .iter()
        .filter(|l| l.starts_with("mvt") && l.len() == 15)
        .count();
    if up.len() != 4 || !up.iter().any(|l| l.starts_with("mvmbr-")) || taps != 3 {
        fail(
            o,
            "with one container running there should be one mvmbr-* bridge and three mvt* TAPs",
        );
    }
    if value(o, "BRIDGED") != Some("1") {
        fail(o, "exactly one TAP should be on the bridge");
    }
    let nft = section(o, "NFT");
    if !nft.contains("table ip mvm")
        || !nft.contains("ip saddr 10.89.0.0/16")
        || !nft.contains("masquerade")
        || !nft.contains("hook forward")
    {
        fail(
            o,
            "nft list ruleset should show the root's mvm table with its NAT (masquerade) and forward chains",
        );
    }
    if !http_ok(section(o, "PORT"), "hello-net") {
        fail(
            o,
            "the published port 127.0.0.1:18080 should serve the container's page",
        );
    }
    if !http_ok(section(o, "DIRECT"), "hello-net") {
        fail(
            o,
            "the container's own address 10.89.0.2:80 should serve its page",
        );
    }
    if value(o, "PING-GW") != Some("0") {
        fail(o, "the container should reach its gateway 10.89.0.1 (ping)");
    }
    for key in [
        "NET-CREATE",
        "RUN-PEER",
        "CONNECT",
        "CLIENT",
        "CLIENT-PING-GW",
    ] {
        if value(o, key) != Some("0") {
            fail(o, &format!("{key} should be 0"));
        }
    }
    let lookup = section(o, "LOOKUP");
    if !lookup
        .lines()
        .any(|l| l.starts_with("Address") && l.trim_end().ends_with(" 10.90.0.2"))
    {
        fail(
            o,
            "nslookup peer on network n1 should answer peer's address 10.90.0.2",
        );
    }
    if !http_ok(section(o, "BYNAME"), "hello-peer") {
        fail(
            o,
            "a container on n1 should fetch peer's page at the address its name resolves to",
        );
    }
    // web joined n1 while running: found by name there, at an n1 address.
    if !value(o, "WEB-N1-IP").is_some_and(|ip| ip.starts_with("10.90.0."))
        || !http_ok(section(o, "WEB-BYNAME"), "hello-net")
    {
        fail(
            o,
            "after network connect n1 web, a container on n1 should fetch web's page by name",
        );
    }
    let isolated = section(o, "ISOLATED");
    if isolated.contains("hello-net") || isolated.lines().any(|l| l == "rc=0") {
        fail(
            o,
            "a container on n1 should not reach the default network's container 10.89.0.2",
        );
    }
    for (key, want) in [("RM", "0"), ("NET-RM", "0"), ("LEFT", "0")] {
        if value(o, key) != Some(want) {
            fail(o, &format!("{key} should be {want}"));
        }
    }
    let n1br = value(o, "N1-BRIDGE").unwrap_or("");
    if !n1br.starts_with("mvmbr-") {
        fail(o, "network inspect n1 should name its bridge mvmbr-*");
    }
    let down = section(o, "LINKS-DOWN");
    if down.lines().any(|l| l.starts_with("mvt")) {
        fail(o, "rm -f should delete the containers' TAP devices");
    }
    if down.lines().any(|l| l == n1br) {
        fail(o, "network rm n1 should delete its bridge");
    }
    for key in [
        "RUN-WEB-SECONDS",
        "PORT-SECONDS",
        "RUN-PEER-SECONDS",
        "CLIENT-SECONDS",
        "NET-SECONDS",
    ] {
        if let Some(s) = value(o, key) {
            eprintln!("kvm-in-tcg: network {key}: {s} s (nested)");
        }
    }
}

#[test]
fn mvm_volumes_named_bind_and_read_only_over_virtio_fs() {
    let o = outcome("volumes");
    expect_rc(o, 0);
    for (key, want) in [
        ("CREATE", "0"),
        ("WRITE", "0"),
        ("READ", "0"),
        ("BIND", "0"),
        ("RO", "0"),
        ("RO-FILE", "absent"),
        ("VOLUME-RM", "0"),
        ("VIRTIOFSD-LEFT", "0"),
        ("LEFT", "0"),
    ] {
        if value(o, key) != Some(want) {
            fail(o, &format!("{key} should be {want}"));
        }
    }
    if section(o, "READ") != "kept\n" {
        fail(
            o,
            "a second container should read what the first wrote to volume v1",
        );
    }
    if section(o, "BIND") != "from-host\n" {
        fail(o, "the bind mount should show the host's file");
    }
    if section(o, "BACK") != "from-guest\n" {
        fail(
            o,
            "the guest's write through the bind mount should reach the host",
        );
    }
    if value(o, "RO-WRITE").is_none_or(|rc| rc == "0") || !o.output.contains("\nfrom-host\n") {
        fail(
            o,
            "a :ro bind mount should refuse writes and still be readable",
        );
    }
}

#!/usr/bin/env python3
"""mvm benchmarks against peers measured in the same run; prints markdown tables.

  bench/bench.py vmm   the VMM with the test guest on this machine's KVM (issue: the VMM)
  bench/bench.py run   `mvm run --rm busybox true` by phase, beside podman+runc and bare QEMU
  bench/bench.py lifecycle   exec round trip, idle memory, stop latency, beside podman+runc
  bench/bench.py build   cold and cached `mvm build` of a small Dockerfile, beside podman build
  bench/bench.py net   iperf3 TCP throughput (container to container, container to host, host
                       loopback) and request latency through a published port, beside podman+runc;
                       everything runs inside a network namespace the bench creates and deletes
  bench/bench.py fs    fio sequential 1 MiB and random 4 KiB read/write on a named volume
                       (virtio-fs), on the container's root disk, and on the host's disk
  bench/bench.py commit  `mvm commit` of a container with 100 MiB of changes: the agent's
                       stream (running container; stopped one through a helper VM) beside what
                       main did before (loop-mount the guest's disk on the host, tar its upper/)
  bench/bench.py stress  BENCH_STRESS_N (50) `mvm run --rm busybox echo` at once, each in a network
                       namespace of its own (default bridge network); counts failures, of which 0 is
                       the only passing figure, and says why each failed
  bench/bench.py proxy  the published-port proxy (engine/src/network/ports.rs): 64 B round trips
                       and bulk MB/s with 1 and 100 concurrent loopback connections to an echo
                       "guest", and the proxy process's threads and RSS; today's mio loop beside
                       the thread-per-connection proxy it replaced (711f1e7^, built in a git
                       worktree in /tmp with bench/proxy_bench.patch) and no proxy at all
  bench/bench.py oci   dockerd 20.10 (in a network namespace the bench creates) with mvm-runc as
                       `--runtime microvm` beside its runc: `docker run --rm`, `docker exec` round
                       trip, idle memory, `docker stop`
  bench/bench.py all   all of them

`net` and `fs` use the `bench-tools` image (busybox + iperf3 + fio), built by
bench/make-tools-image.sh (which installs Debian's iperf3 and fio on the host when missing).
Knobs: BENCH_N (vmm/run/lifecycle), BENCH_NET_N runs per throughput figure, BENCH_NET_SECONDS
per iperf3 run, BENCH_NET_REQS requests per latency figure, BENCH_FS_N runs per fs target,
BENCH_FS_MIB file size and BENCH_FS_SECONDS runtime cap per fio job, BENCH_FS_DIRECT (1: O_DIRECT
in the guests and the host's first column), BENCH_FS_DIR (where the state root and the host's fio
directory go; /var/tmp). The defaults keep `net` and `fs` under ~4 minutes each under TCG.
BENCH_PROXY_N runs per proxy figure (5); MVM_PROXY_BENCH_TRIPS round trips per connection (300),
MVM_PROXY_BENCH_MIB1 and MVM_PROXY_BENCH_MIB100 MiB per bulk connection (512, 16).

Needs the release build, the static agent, the test guest and the kernel (scripts/setup.sh,
scripts/build-agent.sh, tests/guest/build.sh). Every figure is a median of N runs with min and
max; the machine is shared and noisy, so compare ratios, not absolute times.
"""
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(REPO, "target", "release")
VMM = os.path.join(REL, "mvm-vmm")
MVM = os.path.join(REL, "mvm")
GUEST = os.path.join(REPO, "target", "guest", "mvm-test-guest.elf")
CACHE = os.environ.get("MVM_CACHE", "/var/cache/mvm")
KERNEL = os.path.join(CACHE, "kernel", "current", "vmlinux")
BUSYBOX_TAR = os.path.join(CACHE, "images", "busybox-rootfs.tar")
N = int(os.environ.get("BENCH_N", "20"))


def need(path, how):
    if not os.path.exists(path):
        sys.exit(f"bench: {path} is missing: {how}")


def stats(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(v, unit):
    if unit == "ms":
        return f"{v * 1000:.1f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    if unit == "MB/s":
        return f"{v:.2f} MB/s"
    if unit == "us":
        return f"{v * 1e6:.0f} us"
    if unit == "s":
        return f"{v:.1f} s"
    if unit == "Gbit/s":
        return f"{v / 1e9:.2f} Gbit/s"
    if unit == "MB/s1":
        return f"{v / 1e6:.1f} MB/s"
    return f"{v:.0f} {unit}"


def cell(xs, unit):
    if not xs:
        return "n/a"
    m, lo, hi = stats(xs)
    if len(xs) == 1:
        return fmt(m, unit)
    return f"{fmt(m, unit)} ({fmt(lo, unit)}-{fmt(hi, unit)})"


def table(title, cols, rows):
    print(f"\n### {title}\n")
    print("| metric | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def timed(cmd, **kw):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    return time.perf_counter() - t, p


# ---------------------------------------------------------------- VMM with the test guest
def wait_line(path, needle, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if needle in line:
                        return line.strip()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"timed out waiting for {needle!r} in {path}")


def rss_kib(pid):
    total = guest = 0
    with open(f"/proc/{pid}/smaps") as f:
        size = None
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                size = None
            elif line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
                total += rss
                # The guest's RAM is the one anonymous mapping of exactly its size.
                if size == 128 * 1024:
                    guest += rss
    return total, guest


def bench_vmm():
    need(VMM, "cargo build --release")
    need(GUEST, "tests/guest/build.sh")
    d = tempfile.mkdtemp(prefix="mvmb-")
    try:
        boot = []
        for _ in range(N):
            t, p = timed([VMM, "--kernel", GUEST, "--mem-mib", "128", "--serial", "none"])
            if p.returncode != 0:
                sys.exit(f"bench: mvm-vmm failed: {p.stderr.decode()}")
            boot.append(t)

        vmm_rss, guest_rss = [], []
        for _ in range(5):
            serial = os.path.join(d, "s.log")
            if os.path.exists(serial):
                os.unlink(serial)
            p = subprocess.Popen([VMM, "--kernel", GUEST, "--mem-mib", "128", "--cmdline",
                                  "mvmtest.exit=hlt", "--serial", serial])
            wait_line(serial, "MVMTEST DONE")
            total, guest = rss_kib(p.pid)
            p.send_signal(signal.SIGTERM)
            p.wait()
            vmm_rss.append((total - guest) / 1024)
            guest_rss.append(guest / 1024)

        # vsock: ping-pong of 64-byte messages, then a bulk echo.
        msgs = 200
        rtt, thr = [], []
        for mode in ("rtt", "bulk"):
            total_bytes = 64 * msgs if mode == "rtt" else 1 << 20
            serial = os.path.join(d, f"v-{mode}.log")
            uds = os.path.join(d, f"v-{mode}.sock")
            p = subprocess.Popen([VMM, "--kernel", GUEST, "--mem-mib", "128", "--vsock", f"3,{uds}",
                                  "--cmdline", f"mvmtest.vsock_listen=1234 mvmtest.vsock_bytes={total_bytes}",
                                  "--serial", serial])
            wait_line(serial, "VSOCK listening")
            s = socket.socket(socket.AF_UNIX)
            s.connect(uds)
            s.sendall(b"CONNECT 1234\n")
            assert s.recv(64).startswith(b"OK ")
            if mode == "rtt":
                msg = b"x" * 64
                for _ in range(msgs):
                    t = time.perf_counter()
                    s.sendall(msg)
                    got = 0
                    while got < 64:
                        got += len(s.recv(64 - got))
                    rtt.append(time.perf_counter() - t)
            else:
                import threading
                data = os.urandom(total_bytes)
                t = time.perf_counter()
                th = threading.Thread(target=s.sendall, args=(data,))
                th.start()
                got = 0
                while got < total_bytes:
                    got += len(s.recv(1 << 16))
                th.join()
                thr.append(total_bytes / (time.perf_counter() - t) / 1e6)
            s.close()
            p.wait(timeout=60)

        # virtio-blk from inside the guest.
        disk = os.path.join(d, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        serial = os.path.join(d, "b.log")
        subprocess.run([VMM, "--kernel", GUEST, "--mem-mib", "128", "--disk", disk,
                        "--cmdline", "mvmtest.bench_blk=200", "--serial", serial], check=True)
        line = wait_line(serial, "BENCH ")
        kv = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        riops, wiops = float(kv["blk_read_iops"]), float(kv["blk_write_iops"])
    finally:
        shutil.rmtree(d, ignore_errors=True)

    na = "n/a (QEMU's -kernel needs a PVH note or multiboot; the test guest uses the Linux 64-bit entry)"
    rows = [
        ["launch to exit, test guest (median of %d)" % N, cell(boot, "ms"), na],
        ["VMM resident memory, excluding guest RAM", cell(vmm_rss, "MiB"), "n/a"],
        ["guest RAM resident (test guest touches ~2 MiB)", cell(guest_rss, "MiB"), "n/a"],
        [f"vsock round trip, 64 B ({msgs} messages)", cell(rtt, "us"), "n/a"],
        ["vsock echo throughput, 1 MiB each way", cell(thr, "MB/s"), "n/a"],
        ["virtio-blk 4 KiB reads per second (in guest)", f"{riops:.0f} IOPS ({riops * 4096 / 1e6:.2f} MB/s)", "n/a"],
        ["virtio-blk 4 KiB writes per second (in guest)", f"{wiops:.0f} IOPS ({wiops * 4096 / 1e6:.2f} MB/s)", "n/a"],
    ]
    table("VMM with the test guest on this machine's KVM (PVM)", ["mvm-vmm", "QEMU -M microvm,accel=kvm"], rows)


# ---------------------------------------------------------------- mvm run end to end
def podman_env(work):
    conf = open("/work/shared/clients/podman-containers.conf").read() if os.path.exists(
        "/work/shared/clients/podman-containers.conf") else None
    if conf is None or shutil.which("podman") is None:
        return None
    conf = conf.replace("WORKDIR", work)
    os.makedirs(os.path.join(work, "podman", "tmp"), exist_ok=True)
    os.makedirs(os.path.join(work, "podman", "cni"), exist_ok=True)
    path = os.path.join(work, "containers.conf")
    open(path, "w").write(conf)
    storage = os.path.join(work, "storage.conf")
    open(storage, "w").write(
        f'[storage]\ndriver = "overlay"\nrunroot = "{work}/run"\ngraphroot = "{work}/graph"\n')
    env = dict(os.environ, CONTAINERS_CONF=path, CONTAINERS_STORAGE_CONF=storage)
    return env


def bench_run():
    need(MVM, "cargo build --release")
    need(KERNEL, "scripts/setup.sh (kernel-config/build.sh)")
    need(BUSYBOX_TAR, "scripts/setup.sh (scripts/make-busybox-rootfs.sh)")
    work = tempfile.mkdtemp(prefix="mvmb-")
    root = os.path.join(work, "r")
    try:
        subprocess.run([MVM, "--root", root, "import", BUSYBOX_TAR, "busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([MVM, "--root", root, "run", "--rm", "--network", "none", "busybox", "true"], check=True)  # warm caches
        info = subprocess.run([MVM, "info"], stdout=subprocess.PIPE, text=True).stdout
        backend = re.search(r"Backend: (.*)", info).group(1)
        phases = {k: [] for k in ("total", "prepare", "boot", "process", "teardown")}
        for _ in range(N):
            t, p = timed([MVM, "--root", root, "--log-level", "debug", "run", "--rm", "--network", "none", "busybox", "true"])
            if p.returncode != 0:
                sys.exit(f"bench: mvm run failed: {p.stderr.decode()[-500:]}")
            ph = {}
            for m in re.finditer(r"phase (\w+) ([0-9.]+)(ms|µs|s|ns)", p.stderr.decode()):
                v = float(m.group(2)) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[m.group(3)]
                ph[m.group(1)] = v
            phases["total"].append(t)
            phases["prepare"].append(ph["prepared"])
            phases["boot"].append(ph["agent_ready"])
            phases["process"].append(ph["process_exited"] - ph["agent_ready"])
            phases["teardown"].append(t - ph["prepared"] - ph["process_exited"])

        pod = []
        env = podman_env(work)
        if env:
            base = ["podman", "--runtime", "runc"]
            subprocess.run(base + ["import", BUSYBOX_TAR, "busybox:local"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(base + ["run", "--rm", "--network", "none", "busybox:local", "true"], env=env, check=True)
            for _ in range(N):
                t, p = timed(base + ["run", "--rm", "--network", "none", "busybox:local", "true"], env=env)
                if p.returncode == 0:
                    pod.append(t)

        # Bare QEMU: the same kernel to a busybox /init that powers off at once.
        bare = []
        rootdir = os.path.join(work, "bare")
        os.makedirs(rootdir)
        subprocess.run(["tar", "-xf", BUSYBOX_TAR, "-C", rootdir], check=True)
        with open(os.path.join(rootdir, "init"), "w") as f:
            f.write("#!/bin/busybox sh\n/bin/busybox reboot -f\n")
        os.chmod(os.path.join(rootdir, "init"), 0o755)
        img = os.path.join(work, "bare.ext4")
        subprocess.run(["truncate", "-s", "64M", img], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", rootdir, img], check=True)
        for _ in range(N):
            t, p = timed(["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max",
                          "-m", "512", "-smp", "1", "-kernel", KERNEL, "-append",
                          "console=ttyS0 reboot=t panic=-1 quiet root=/dev/vda ro init=/init",
                          "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                          "-serial", "null", "-drive", f"id=r,file={img},format=raw,if=none,readonly=on",
                          "-device", "virtio-blk-device,drive=r"])
            bare.append(t)
    finally:
        if shutil.which("podman") and env:
            subprocess.run(["podman", "--runtime", "runc", "system", "reset", "-f"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])

    tot = statistics.median(phases["total"])
    rows = [
        [f"`run --rm busybox true`, end to end (median of {N})", cell(phases["total"], "ms"),
         cell(pod, "ms") if pod else "not installed", cell(bare, "ms") + " (boot to /init, power off)"],
        ["prepare (image disk cached, writable disk, agent disk)", cell(phases["prepare"], "ms"), "", ""],
        ["boot to agent ready", cell(phases["boot"], "ms"), "", ""],
        ["process (start to exit report)", cell(phases["process"], "ms"), "", ""],
        ["teardown (power off, clean up)", cell(phases["teardown"], "ms"), "", ""],
    ]
    if pod:
        rows.append(["ratio to podman+runc", f"{tot / statistics.median(pod):.1f}x", "1.0x", ""])
    rows.append(["ratio to bare QEMU boot", f"{tot / statistics.median(bare):.2f}x", "", "1.0x"])
    table(f"`mvm run` on this host (backend: {backend}; the `mvm` backend needs hardware KVM)",
          [f"mvm ({backend})", "podman + runc", "bare QEMU microvm (TCG), same kernel"], rows)


def bench_stress():
    """N `mvm run --rm` started at once on this 2-core host: every one must succeed."""
    need(MVM, "cargo build --release")
    need(BUSYBOX_TAR, "scripts/setup.sh (scripts/make-busybox-rootfs.sh)")
    n = int(os.environ.get("BENCH_STRESS_N", "50"))
    work = tempfile.mkdtemp(prefix="mvms-")
    root = os.path.join(work, "r")
    try:
        subprocess.run([MVM, "--root", root, "import", BUSYBOX_TAR, "busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([MVM, "--root", root, "run", "--rm", "--network", "none", "busybox", "true"],
                       check=True)  # warm the image disk cache
        t0 = time.monotonic()
        procs = []
        for i in range(n):
            # Each in a network namespace of its own: its bridge, TAP and DNS server stay there.
            cmd = ["unshare", "-n", MVM, "--root", root, "run", "--rm", "busybox", "echo", f"n{i}"]
            procs.append((i, time.monotonic(), subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                                  stderr=subprocess.PIPE)))
        times, failures = [], []
        for i, start, p in procs:
            out, err = p.communicate()
            times.append(time.monotonic() - start)
            if p.returncode != 0 or out.decode() != f"n{i}\n":
                failures.append(f"{i}: exit {p.returncode}: {err.decode().strip().splitlines()[-1:] }")
        wall = time.monotonic() - t0
        left = subprocess.run([MVM, "--root", root, "ps", "-aq"], stdout=subprocess.PIPE, text=True).stdout.split()
    finally:
        subprocess.run(["rm", "-rf", work])
    rows = [
        [f"`run --rm busybox echo`, {n} at once: failures", f"{len(failures)} of {n}"],
        ["wall time for all of them", fmt(wall, "s")],
        ["each run, start to exit", cell(times, "s")],
        ["containers left behind", str(len(left))],
    ]
    table(f"Stress: {n} containers started at once on {os.cpu_count()} cores (backend: {backend_name()})",
          ["mvm"], rows)
    for f in failures:
        print(f"- failed {f}")
    if failures or left:
        sys.exit(1)


def tree_rss_kib(pid):
    """Resident memory of a process and all its descendants."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


TRAP_LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def bench_lifecycle():
    need(MVM, "cargo build --release")
    work = tempfile.mkdtemp(prefix="mvmb-")
    root = os.path.join(work, "r")
    M = [MVM, "--root", root]
    env = None
    try:
        subprocess.run(M + ["import", BUSYBOX_TAR, "busybox"], check=True, stdout=subprocess.DEVNULL)
        cid = subprocess.run(M + ["run", "-d", "--network", "none", "busybox", "sleep", "100000"], check=True,
                             stdout=subprocess.PIPE, text=True).stdout.strip()
        ex = [timed(M + ["exec", cid, "true"])[0] for _ in range(N)]
        time.sleep(1)
        rec = json.load(open(os.path.join(root, "containers", cid, "config.json")))
        # The owner's PID: in the live state since the record holds spec and state apart.
        mem = [tree_rss_kib(rec.get("state", rec)["pid"]) / 1024]
        stops = []
        for _ in range(5):
            # PID 1 of its namespace, as under runc: only a handler makes SIGTERM end it.
            c = subprocess.run(M + ["run", "-d", "--network", "none", "busybox", "sh", "-c", TRAP_LOOP], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
            time.sleep(0.5)
            stops.append(timed(M + ["stop", c])[0])
            subprocess.run(M + ["rm", c], stdout=subprocess.DEVNULL)
        subprocess.run(M + ["rm", "-f", cid], stdout=subprocess.DEVNULL)

        pex, pstop, pmem = [], [], []
        env = podman_env(work)
        if env:
            base = ["podman", "--runtime", "runc"]
            subprocess.run(base + ["import", BUSYBOX_TAR, "busybox:local"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pc = subprocess.run(base + ["run", "-d", "--network", "none", "busybox:local", "sleep", "100000"],
                                env=env, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
            pex = [timed(base + ["exec", pc, "true"], env=env)[0] for _ in range(N)]
            conmon = subprocess.run(base + ["inspect", "-f", "{{.State.ConmonPid}}", pc], env=env,
                                    stdout=subprocess.PIPE, text=True).stdout.strip()
            if conmon.isdigit():
                pmem = [tree_rss_kib(int(conmon)) / 1024]
            subprocess.run(base + ["rm", "-f", pc], env=env, stdout=subprocess.DEVNULL)
            for _ in range(5):
                c = subprocess.run(base + ["run", "-d", "--network", "none", "busybox:local", "sh", "-c", TRAP_LOOP],
                                   env=env, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
                time.sleep(0.5)
                pstop.append(timed(base + ["stop", c], env=env)[0])
                subprocess.run(base + ["rm", c], env=env, stdout=subprocess.DEVNULL)
    finally:
        if env:
            subprocess.run(["podman", "--runtime", "runc", "system", "reset", "-f"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])
    fit = int(8 * 1024 / statistics.median(mem))
    rows = [
        [f"`exec c true` round trip (median of {N})", cell(ex, "ms"), cell(pex, "ms") if pex else "not installed"],
        ["idle busybox container, resident memory (monitor + hypervisor + guest)", cell(mem, "MiB"),
         cell(pmem, "MiB") + " (conmon + process)" if pmem else "n/a"],
        ["idle busybox containers in 8 GiB (from the line above)", f"~{fit}", ""],
        ["`stop` of a shell with a SIGTERM handler", cell(stops, "ms"), cell(pstop, "ms") if pstop else ""],
    ]
    table("Container lifecycle", [f"mvm ({subprocess.run([MVM, 'info'], stdout=subprocess.PIPE, text=True).stdout.split(chr(10))[0][9:]})", "podman + runc"], rows)


# ---------------------------------------------------------------- mvm-runc under dockerd
RUNC_BIN = os.path.join(REL, "mvm-runc")


def bench_oci():
    """dockerd 20.10 with mvm-runc as `microvm` beside its own runc, in a netns of the bench's."""
    need(RUNC_BIN, "cargo build --release")
    need(BUSYBOX_TAR, "scripts/setup.sh (scripts/make-busybox-rootfs.sh)")
    if shutil.which("dockerd") is None:
        sys.exit("bench: dockerd is not installed: run scripts/setup.sh (docker.io)")
    ns = f"mvmbench-{os.getpid()}"
    work = tempfile.mkdtemp(prefix="mvmo-")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    daemon = None
    env = dict(os.environ, DOCKER_HOST=f"unix://{work}/docker.sock")
    try:
        log = open(os.path.join(work, "dockerd.log"), "w")
        daemon = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{ns}", "unshare", "-m", "--propagation", "private", "sh", "-c",
             f"ip link set lo up && exec dockerd --data-root {work}/data --exec-root {work}/exec "
             f"--pidfile {work}/dockerd.pid -H unix://{work}/docker.sock --storage-driver overlay2 "
             f"--add-runtime microvm={RUNC_BIN}"], stdout=log, stderr=log)
        wait_for("dockerd", lambda: subprocess.run(["docker", "version"], env=env, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL).returncode == 0, timeout=60)
        subprocess.run(["docker", "import", BUSYBOX_TAR, "busybox:local"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        figures = {}
        for rt in ("microvm", "runc"):
            d = ["docker"]
            run = d + ["run", "--rm", "--runtime", rt, "--network", "none", "busybox:local", "true"]
            subprocess.run(run, env=env, check=True)  # warm caches
            runs = []
            for _ in range(N):
                t, p = timed(run, env=env)
                if p.returncode != 0:
                    sys.exit(f"bench: docker run --runtime {rt} failed: {p.stderr.decode()[-500:]}")
                runs.append(t)
            cid = subprocess.run(d + ["run", "-d", "--runtime", rt, "--network", "none", "busybox:local", "sh", "-c",
                                      TRAP_LOOP], env=env, check=True, stdout=subprocess.PIPE,
                                 text=True).stdout.strip()
            time.sleep(1)
            ex = [timed(d + ["exec", cid, "true"], env=env)[0] for _ in range(N)]
            pid = int(subprocess.run(d + ["inspect", "-f", "{{.State.Pid}}", cid], env=env, check=True,
                                     stdout=subprocess.PIPE, text=True).stdout.strip())
            time.sleep(1)
            mem = [tree_rss_kib(pid) / 1024]
            stop = [timed(d + ["stop", cid], env=env)[0]]
            subprocess.run(d + ["rm", "-f", cid], env=env, stdout=subprocess.DEVNULL)
            figures[rt] = (runs, ex, mem, stop)
    finally:
        subprocess.run("docker ps -aq | xargs -r docker rm -f", shell=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if daemon:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        subprocess.run(["ip", "netns", "del", ns])
        subprocess.run(["rm", "-rf", work])
    vm, rc = figures["microvm"], figures["runc"]
    rows = [
        [f"`docker run --rm busybox true`, end to end (median of {N})", cell(vm[0], "ms"), cell(rc[0], "ms"),
         ratio(vm[0], rc[0])],
        [f"`docker exec c true` round trip (median of {N})", cell(vm[1], "ms"), cell(rc[1], "ms"),
         ratio(vm[1], rc[1])],
        ["idle busybox container, resident memory of the pid docker reports and its children "
         "(microvm: relay + QEMU + virtiofsd + vhost-device-vsock)", cell(vm[2], "MiB"), cell(rc[2], "MiB"), ""],
        ["`docker stop` of a shell with a SIGTERM handler", cell(vm[3], "ms"), cell(rc[3], "ms"), ""],
    ]
    table(f"dockerd 20.10 with `--runtime microvm` (mvm-runc, backend: {backend_name()}) beside `--runtime runc`",
          ["microvm (mvm-runc)", "runc", "microvm / runc"], rows)


# ---------------------------------------------------------------- mvm build
BUILD_DOCKERFILE = """FROM busybox
RUN echo one > /one.txt
RUN mkdir -p /app && echo two > /app/two.txt
COPY hello.txt /app/
RUN cat /app/hello.txt /one.txt > /app/all.txt && rm -f /one.txt
ENV MODE=bench
CMD ["cat", "/app/all.txt"]
"""


def bench_build():
    """Cold (--no-cache) and cached builds of a small multi-step Dockerfile, beside podman
    build (buildah, runc) in the same run. RUN has no network in both (--network none)."""
    need(MVM, "cargo build --release")
    work = tempfile.mkdtemp(prefix="mvmb-")
    root = os.path.join(work, "r")
    ctx = os.path.join(work, "ctx")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(BUILD_DOCKERFILE.replace("FROM busybox", "FROM busybox:local"))
    with open(os.path.join(ctx, "hello.txt"), "w") as f:
        f.write("hello\n")
    M = [MVM, "--root", root]
    n = int(os.environ.get("BENCH_BUILD_N", "5"))
    env = None
    try:
        subprocess.run(M + ["import", BUSYBOX_TAR, "busybox:local"], check=True, stdout=subprocess.DEVNULL)
        b = M + ["build", "-q", "--network", "none", "-t", "b:1", ctx]
        subprocess.run(b, check=True, stdout=subprocess.DEVNULL)  # warm the image disk cache
        cold = [timed(M + ["build", "-q", "--no-cache", "--network", "none", "-t", "b:1", ctx])[0] for _ in range(n)]
        warm = [timed(b)[0] for _ in range(n)]
        pcold, pwarm = [], []
        env = podman_env(work)
        if env:
            base = ["podman", "--runtime", "runc"]
            subprocess.run(base + ["import", BUSYBOX_TAR, "busybox:local"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pb = base + ["build", "-q", "--network", "none", "-t", "b:1", ctx]
            subprocess.run(pb, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pcold = [timed(base + ["build", "-q", "--no-cache", "--network", "none", "-t", "b:1", ctx], env=env)[0]
                     for _ in range(n)]
            pwarm = [timed(pb, env=env)[0] for _ in range(n)]
    finally:
        if env:
            subprocess.run(["podman", "--runtime", "runc", "system", "reset", "-f"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])
    ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.1f}x" if a and b else ""
    rows = [
        [f"cold build, 3 RUN + COPY + ENV + CMD (--no-cache, median of {n})", cell(cold, "ms"),
         cell(pcold, "ms") if pcold else "not installed", ratio(cold, pcold)],
        [f"cached build, nothing changed (median of {n})", cell(warm, "ms"),
         cell(pwarm, "ms") if pwarm else "not installed", ratio(warm, pwarm)],
    ]
    table("`mvm build` beside `podman build` (buildah, runc)", ["mvm (qemu (tcg))", "podman + runc", "mvm / podman"], rows)


def bench_commit():
    """`mvm commit` of a container holding 100 MiB of new files (8 x 12.5 MiB of random data):
    the agent streams the layer (running container) or a helper VM does (stopped one). The
    'before' column is what main did until 2026-12-07 and may no longer do: loop-mount the
    guest-written ext4 read-only on the host and tar its upper/ (GNU tar, like the old Rust
    writer), measured on the same disk in the same run."""
    need(MVM, "cargo build --release")
    n = int(os.environ.get("BENCH_COMMIT_N", "5"))
    work = tempfile.mkdtemp(prefix="mvmc-")
    root = os.path.join(work, "r")
    M = [MVM, "--root", root]
    fill = "for i in 1 2 3 4 5 6 7 8; do head -c 13107200 /dev/urandom > /data$i; done"
    running, stopped, before = [], [], []
    try:
        subprocess.run(M + ["import", BUSYBOX_TAR, "busybox:local"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(M + ["run", "--name", "s", "--network", "none", "busybox:local", "sh", "-c", fill],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(M + ["run", "-d", "--name", "r", "--network", "none", "busybox:local", "sh", "-c",
                            fill + "; touch /ready; sleep 3600"], check=True, stdout=subprocess.DEVNULL)
        wait_for("the running container's files",
                 lambda: subprocess.run(M + ["exec", "r", "ls", "/ready"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL).returncode == 0, 300)
        cdir = os.path.join(root, "containers")
        cid = next(c for c in os.listdir(cdir) if os.path.isfile(os.path.join(cdir, c, "config.json"))
                   and json.load(open(os.path.join(cdir, c, "config.json"))).get("name") == "s")
        disk = os.path.join(cdir, cid, "upper.ext4")
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt)
        for i in range(n):
            running.append(timed(M + ["commit", "r", f"cr:{i}"])[0])
            stopped.append(timed(M + ["commit", "s", f"cs:{i}"])[0])
            t0 = time.monotonic()
            subprocess.run(["mount", "-t", "ext4", "-o", "loop,ro,noload", disk, mnt], check=True)
            subprocess.run(["tar", "-C", os.path.join(mnt, "upper"), "-cf", os.path.join(work, "old.tar"), "."],
                           check=True)
            subprocess.run(["umount", mnt], check=True)
            before.append(time.monotonic() - t0)
        # Derive (gzip, store) is the same in every column: measure it once on its own.
    finally:
        subprocess.run(M + ["rm", "-f", "r", "s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["umount", os.path.join(work, "mnt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])
    med = statistics.median
    rows = [
        [f"commit, 100 MiB of changes (median of {n}): running container", cell(running, "ms"),
         "", f"{med(running) / med(before):.1f}x"],
        ["same, stopped container (helper VM boots, reads the disk read-only)", cell(stopped, "ms"),
         "", f"{med(stopped) / med(before):.1f}x"],
        ["reading the changes as main did before: loop-mount on the host + tar (no gzip/store)", "",
         cell(before, "ms"), "1.0x"],
    ]
    table("`mvm commit`: the agent's stream beside the old host mount", ["mvm now (whole command)", "before (read only)",
          "now / before"], rows)


# ---------------------------------------------------------------- tools image, namespace, helpers
TOOLS_SCRIPT = os.path.join(REPO, "bench", "make-tools-image.sh")
NET_N = int(os.environ.get("BENCH_NET_N", "3"))
NET_SECONDS = int(os.environ.get("BENCH_NET_SECONDS", "8"))
NET_REQS = int(os.environ.get("BENCH_NET_REQS", "300"))
FS_N = int(os.environ.get("BENCH_FS_N", "3"))
FS_MIB = int(os.environ.get("BENCH_FS_MIB", "256"))
FS_SECONDS = int(os.environ.get("BENCH_FS_SECONDS", "10"))


def tools_image():
    """The bench-tools rootfs tarball (built or taken from the cache by make-tools-image.sh)."""
    p = subprocess.run([TOOLS_SCRIPT], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        sys.exit("bench: bench/make-tools-image.sh failed")
    return p.stdout.strip().splitlines()[-1]


def backend_name():
    info = subprocess.run([MVM, "info"], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"Backend: (.*)", info)
    return m.group(1) if m else "?"


class Netns:
    """A network namespace of the bench's own: every bridge, TAP, rule and packet of the
    network benchmark stays in it. mvm runs under `ip netns exec`; podman under
    `nsenter --net` (`ip netns exec` also remounts /sys, which hides the cgroup mounts runc
    needs)."""

    def __init__(self):
        self.name = f"mvmb-{os.getpid()}"
        self.path = f"/run/netns/{self.name}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(self.exec(["ip", "link", "set", "lo", "up"]), check=True)

    def exec(self, cmd):
        return ["ip", "netns", "exec", self.name] + cmd

    def enter(self, cmd):
        return ["nsenter", f"--net={self.path}"] + cmd

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


def out(cmd, env=None, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-6:])}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return p.stdout


def wait_for(what, f, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if f():
                return
        except (RuntimeError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"timed out: {what}")


def json_of(text):
    """The JSON document in a tool's stdout (fio may print a warning line before it)."""
    i = text.find("{")
    if i < 0:
        raise RuntimeError(f"no JSON in output: {text.strip()[-300:]!r}")
    return json.loads(text[i:])


def iperf_bps(cmd, env=None):
    """Runs an iperf3 client (-J) and returns the receiver's bits per second."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    try:
        j = json_of(p.stdout)
    except (RuntimeError, ValueError):
        raise RuntimeError(f"iperf3 exit {p.returncode}: {p.stderr.strip()[-300:]} {p.stdout.strip()[-300:]}")
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    return j["end"]["sum_received"]["bits_per_second"]


# A client run inside the namespace: waits until the server answers 200, then WARM + n
# sequential HTTP/1.0 requests on fresh connections; prints the n round trips in seconds.
RTT_CLIENT = r"""
import json, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.0\r\n\r\n"
def get():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(req)
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                return data
            data += c
    finally:
        s.close()
end = time.time() + 120
while True:
    try:
        if b" 200 " in get().split(b"\r\n", 1)[0]:
            break
    except OSError:
        pass
    if time.time() > end:
        sys.exit("server on port %d never answered 200" % port)
    time.sleep(0.2)
rtts = []
for i in range(n + 20):
    t = time.perf_counter()
    d = get()
    dt = time.perf_counter() - t
    if b" 200 " not in d.split(b"\r\n", 1)[0]:
        sys.exit("bad answer: %r" % d[:100])
    if i >= 20:
        rtts.append(dt)
print(json.dumps(rtts))
"""

HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"


def rtts(ns, port):
    return json.loads(out(ns.exec(["python3", "-c", RTT_CLIENT, str(port), str(NET_REQS)])))


def p99(xs):
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(round(0.99 * (len(ys) - 1))))]


def ratio(a, b):
    if not a or not b:
        return ""
    return f"{statistics.median(a) / statistics.median(b):.2f}x"


# ---------------------------------------------------------------- network
def bench_net():
    need(MVM, "cargo build --release")
    need(KERNEL, "scripts/setup.sh (kernel-config/build.sh)")
    for tool in ("iperf3", "nsenter", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing (bench/make-tools-image.sh installs iperf3; util-linux, iproute2)")
    tar = tools_image()
    backend = backend_name()
    work = tempfile.mkdtemp(prefix="mvmb-")
    root = os.path.join(work, "r")
    ns = Netns()
    M = ns.exec([MVM, "--root", root])
    T = str(NET_SECONDS)
    r = {k: [] for k in ("m_c2c", "m_c2h", "p_c2c", "p_c2h", "p_host", "loop", "m_rtt", "p_rtt", "h_rtt",
                         "m_run0", "m_run2", "m_connect", "m_disconnect")}
    err = {}
    procs, env, P = [], None, None
    gw = "10.89.0.1"
    t0 = time.time()

    def measure(key, f):
        try:
            r[key].append(f())
        except RuntimeError as e:
            err.setdefault(key, str(e))
            print(f"bench net: {key}: {e}", file=sys.stderr)

    try:
        out(M + ["import", tar, "bench-tools"])
        # The host side: an iperf3 server and a busybox httpd, both in the namespace (they bind
        # every address there: loopback, mvm's bridges, podman's bridge, nothing else).
        procs.append(subprocess.Popen(ns.exec(["iperf3", "-s", "-p", "5301"]), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        www = os.path.join(work, "www")
        os.makedirs(www)
        open(os.path.join(www, "index.html"), "w").write("ok\n")
        procs.append(subprocess.Popen(ns.exec(["busybox", "httpd", "-f", "-p", "127.0.0.1:18082", "-h", www]),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)

        # mvm: container to container on a user network, by name.
        out(M + ["network", "create", "benchnet"])
        out(M + ["run", "-d", "--network", "benchnet", "--name", "srv", "bench-tools", "iperf3", "-s", "--forceflush"])
        wait_for("iperf3 server in the mvm container",
                 lambda: "listening" in out(M + ["logs", "srv"]))
        for _ in range(NET_N):
            measure("m_c2c", lambda: iperf_bps(M + ["run", "--rm", "--network", "benchnet", "bench-tools",
                                                    "iperf3", "-c", "srv", "-t", T, "-J"]))
        out(M + ["rm", "-f", "srv"])
        # mvm: container on the default bridge to the host side, at the bridge's gateway.
        gw = json.loads(out(M + ["network", "inspect", "bridge"]))[0]["IPAM"]["Config"][0]["Gateway"]
        for _ in range(NET_N):
            measure("m_c2h", lambda: iperf_bps(M + ["run", "--rm", "bench-tools", "iperf3", "-c", gw,
                                                    "-p", "5301", "-t", T, "-J"]))
        # Host loopback, both ends in the namespace.
        for _ in range(NET_N):
            measure("loop", lambda: iperf_bps(ns.exec(["iperf3", "-c", "127.0.0.1", "-p", "5301", "-t", T, "-J"])))
        # mvm: request latency through a published port on loopback.
        out(M + ["run", "-d", "--name", "web", "-p", "127.0.0.1:18080:8080", "bench-tools", "sh", "-c", HTTPD])
        measure("m_rtt", lambda: rtts(ns, 18080))
        out(M + ["rm", "-f", "web"])
        measure("h_rtt", lambda: rtts(ns, 18082))

        # What the spare interfaces for `network connect` cost a start (a `run --rm` on the
        # default bridge to its exit), and a connect/disconnect of a running container.
        def run_with(spares):
            t, p = timed(ns.exec(["env", f"MVM_SPARE_NICS={spares}", MVM, "--root", root, "run", "--rm",
                                  "bench-tools", "true"]))
            if p.returncode != 0:
                raise RuntimeError(p.stderr.decode(errors="replace").strip()[:200])
            return t
        for _ in range(NET_N):
            measure("m_run0", lambda: run_with(0))
            measure("m_run2", lambda: run_with(2))
        out(M + ["run", "-d", "--name", "hot", "bench-tools", "sleep", "600"])

        def step(args):
            t, p = timed(M + args)
            if p.returncode != 0:
                raise RuntimeError(p.stderr.decode(errors="replace").strip()[:200])
            return t
        for _ in range(NET_N):
            measure("m_connect", lambda: step(["network", "connect", "benchnet", "hot"]))
            measure("m_disconnect", lambda: step(["network", "disconnect", "benchnet", "hot"]))
        out(M + ["rm", "-f", "hot"])

        env = podman_env(work)
        if env:
            P = ns.enter(["podman", "--runtime", "runc"])
            out(P + ["import", tar, "bench-tools:local"], env=env)
            out(P + ["run", "-d", "--network", "bridge", "--name", "psrv", "bench-tools:local", "iperf3", "-s", "--forceflush"], env=env)
            wait_for("iperf3 server in the podman container",
                     lambda: "listening" in out(P + ["logs", "psrv"], env=env))
            sip = out(P + ["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "psrv"], env=env).strip()
            pgw = json.loads(out(P + ["network", "inspect", "podman"], env=env))[0]["subnets"][0]["gateway"]
            for _ in range(NET_N):
                measure("p_c2c", lambda: iperf_bps(P + ["run", "--rm", "--network", "bridge", "bench-tools:local",
                                                        "iperf3", "-c", sip, "-t", T, "-J"], env=env))
            out(P + ["rm", "-f", "psrv"], env=env)
            for _ in range(NET_N):
                measure("p_c2h", lambda: iperf_bps(P + ["run", "--rm", "--network", "bridge", "bench-tools:local",
                                                        "iperf3", "-c", pgw, "-p", "5301", "-t", T, "-J"], env=env))
            for _ in range(NET_N):
                measure("p_host", lambda: iperf_bps(P + ["run", "--rm", "--network", "host", "bench-tools:local",
                                                         "iperf3", "-c", "127.0.0.1", "-p", "5301", "-t", T, "-J"],
                                                    env=env))
            out(P + ["run", "-d", "--network", "bridge", "--name", "pweb", "-p", "127.0.0.1:18081:8080",
                     "bench-tools:local", "sh", "-c", HTTPD], env=env)
            measure("p_rtt", lambda: rtts(ns, 18081))
            out(P + ["rm", "-f", "pweb"], env=env)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        for c in ("srv", "web", "hot"):
            subprocess.run(M + ["rm", "-f", c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(M + ["network", "rm", "benchnet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if env:
            subprocess.run(P + ["system", "reset", "-f"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        ns.delete()
        subprocess.run(["rm", "-rf", work])
    wall = time.time() - t0

    def c(key, unit="Gbit/s"):
        if r[key]:
            return cell(r[key], unit)
        if key in err:
            return "failed: " + err[key][:120]
        return "not installed" if key.startswith("p_") else ""

    def flat(key):
        return [x for run in r[key] for x in run]

    def lat(key, f):
        xs = flat(key)
        if xs:
            return f"{f(xs) * 1000:.2f} ms"
        return "failed: " + err[key][:120] if key in err else ("not installed" if key.startswith("p_") else "")

    fr = lambda k: ratio(r["m_" + k], r["p_" + k])
    rows = [
        [f"TCP throughput, container to container (iperf3 -t {T}, median of {NET_N})",
         c("m_c2c") + " (user network, by name)", c("p_c2c") + " (default CNI bridge, by IP)", "", fr("c2c")],
        ["TCP throughput, container to host (server at the bridge's gateway)",
         c("m_c2h") + f" (to {gw})", c("p_c2h"), "", fr("c2h")],
        ["TCP throughput, host loopback / `podman --network host` to loopback", "",
         c("p_host"), c("loop"), ""],
        [f"request round trip via `-p 127.0.0.1:PORT`, median ({NET_REQS} sequential HTTP/1.0 requests, new connection each)",
         lat("m_rtt", statistics.median), lat("p_rtt", statistics.median), lat("h_rtt", statistics.median) + " (httpd on the host, no container)",
         ratio(flat("m_rtt"), flat("p_rtt"))],
        ["same, p99", lat("m_rtt", p99), lat("p_rtt", p99), lat("h_rtt", p99),
         f"{p99(flat('m_rtt')) / p99(flat('p_rtt')):.2f}x" if flat("m_rtt") and flat("p_rtt") else ""],
        ["same, min-max", lat("m_rtt", min) + "-" + lat("m_rtt", max), lat("p_rtt", min) + "-" + lat("p_rtt", max),
         lat("h_rtt", min) + "-" + lat("h_rtt", max), ""],
    ]
    table(f"Network, inside the bench's own network namespace (mvm backend: {backend}; whole mode {wall:.0f} s)",
          [f"mvm ({backend})", "podman + runc", "host (netns)", "mvm / podman"], rows)
    secs = lambda k: c(k, "ms")
    table("Spare interfaces for `network connect` (median of " + str(NET_N) + ")", ["mvm"], [
        ["`run --rm` on the default bridge to exit, MVM_SPARE_NICS=0", secs("m_run0")],
        ["same, MVM_SPARE_NICS=2 (the default)", secs("m_run2")],
        ["`network connect` of a running container", secs("m_connect")],
        ["`network disconnect` of a running container", secs("m_disconnect")],
    ])


# ---------------------------------------------------------------- file systems
FIO_JOBS = [("seq write 1 MiB", "seqwrite", "write", "1M", "write"),
            ("seq read 1 MiB", "seqread", "read", "1M", "read"),
            ("rand read 4 KiB", "randread", "randread", "4k", "read"),
            ("rand write 4 KiB", "randwrite", "randwrite", "4k", "write")]


def fio_args(directory, direct, extra=()):
    """One fio run of the four jobs in turn. Options before the first --name are global (fio
    gives an option after a --name to that job only)."""
    a = ["fio", "--output-format=json", f"--directory={directory}", "--filename=fio.dat",
         f"--size={FS_MIB}M", f"--runtime={FS_SECONDS}", "--ioengine=libaio", "--iodepth=4",
         f"--direct={direct}", "--end_fsync=1", "--stonewall", "--group_reporting=0", *extra]
    for _, name, rw, bs, _ in FIO_JOBS:
        a += [f"--name={name}", f"--rw={rw}", f"--bs={bs}"]
    return a


def fio_result(text):
    """{jobname: (bytes per second, IOPS)} from fio's JSON."""
    j = json_of(text)
    res = {}
    for job, (_, name, _, _, side) in zip(j["jobs"], FIO_JOBS):
        res[name] = (job[side]["bw_bytes"], job[side]["iops"])
    return res


def bench_fs():
    need(MVM, "cargo build --release")
    need(KERNEL, "scripts/setup.sh (kernel-config/build.sh)")
    tar = tools_image()
    backend = backend_name()
    direct = os.environ.get("BENCH_FS_DIRECT", "1")
    work = tempfile.mkdtemp(prefix="mvmb-", dir=os.environ.get("BENCH_FS_DIR", "/var/tmp"))
    root = os.path.join(work, "r")
    M = [MVM, "--root", root]
    res = {t: [] for t in ("vol", "disk", "host", "hostbuf")}
    walls = {t: [] for t in res}
    err = {}
    t0 = time.time()
    try:
        out(M + ["import", tar, "bench-tools"])
        hostdir = os.path.join(work, "host")
        os.makedirs(hostdir)
        cmds = {
            "vol": M + ["run", "--rm", "--network", "none", "-v", "benchvol:/v", "bench-tools"] + fio_args("/v", direct),
            "disk": M + ["run", "--rm", "--network", "none", "bench-tools", "sh", "-c",
                         "mkdir -p /fio && exec " + " ".join(fio_args("/fio", direct))],
            "host": fio_args(hostdir, direct),
            # The host's page cache, which virtiofsd and QEMU's writeback disk go through.
            "hostbuf": fio_args(hostdir, "0", ["--invalidate=0"]),
        }
        for _ in range(FS_N):
            for t, cmd in cmds.items():
                try:
                    tw = time.time()
                    res[t].append(fio_result(out(cmd)))
                    walls[t].append(time.time() - tw)
                except (RuntimeError, ValueError, KeyError) as e:
                    err.setdefault(t, str(e))
                    print(f"bench fs: {t}: {e}", file=sys.stderr)
                if t.startswith("host"):
                    for f in os.listdir(hostdir):
                        os.unlink(os.path.join(hostdir, f))
        subprocess.run(M + ["volume", "rm", "benchvol"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        subprocess.run(["rm", "-rf", work])
    wall = time.time() - t0

    def c(t, name):
        if not res[t]:
            return "failed: " + err.get(t, "?")[:120]
        bw = [x[name][0] for x in res[t]]
        iops = [x[name][1] for x in res[t]]
        return f"{cell(bw, 'MB/s1')}, {statistics.median(iops):.0f} IOPS"

    rows = []
    for label, name, _, _, _ in FIO_JOBS:
        rt = ""
        if res["vol"] and res["hostbuf"]:
            rt = f"{statistics.median(x[name][0] for x in res['vol']) / statistics.median(x[name][0] for x in res['hostbuf']):.2f}x"
        rows.append([label, c("vol", name), c("disk", name), c("host", name), c("hostbuf", name), rt])
    rows.append(["wall time of one fio run (VM boot included for mvm)",
                 cell(walls["vol"], "s"), cell(walls["disk"], "s"), cell(walls["host"], "s"),
                 cell(walls["hostbuf"], "s"), ""])
    table(f"File systems: fio {FS_MIB} MiB file, each job capped at {FS_SECONDS} s, libaio iodepth 4, "
          f"direct={direct} unless noted, end_fsync=1 (median of {FS_N}; mvm backend: {backend}; whole mode {wall:.0f} s)",
          ["mvm named volume `-v vol:/v` (virtio-fs)", "mvm root disk (overlay, ext4 on virtio-blk)",
           f"host ext4, direct={direct}", "host ext4, buffered (direct=0, invalidate=0)",
           "volume / host buffered"], rows)


# ---------------------------------------------------------------- density: idle containers
def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def procs_named(names):
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/comm").read().strip() in names:
                    found.append(int(p))
            except OSError:
                pass
    return found


def density_run(n, env, label):
    """Starts n idle containers (`sleep`), lets them settle, measures, removes them."""
    work = tempfile.mkdtemp(prefix="mvmd-")
    root = os.path.join(work, "r")
    names = {"qemu-system-x86", "vhost-device-vs", "mvm-vmm", "mvm"}
    try:
        subprocess.run([MVM, "--root", root, "import", BUSYBOX_TAR, "busybox"], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        subprocess.run([MVM, "--root", root, "run", "--rm", "--network", "none", "busybox", "true"],
                       check=True, env=env)
        subprocess.run(["sync"])
        time.sleep(3)
        before = mem_available_kib()
        ids = []
        batch = 4
        for i in range(0, n, batch):
            ps = [subprocess.Popen([MVM, "--root", root, "run", "-d", "--network", "none", "busybox",
                                    "sleep", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env) for _ in range(min(batch, n - i))]
            for p in ps:
                o, e = p.communicate()
                if p.returncode != 0:
                    sys.exit(f"bench: density ({label}): run -d failed: {e.decode().strip()}")
                ids.append(o.decode().strip())
        # Let every guest finish booting and go idle.
        time.sleep(15)
        after = mem_available_kib()
        pids = procs_named(names)
        pss = sum(pss_kib(p) for p in pids)
        running = subprocess.run([MVM, "--root", root, "ps", "-q"], stdout=subprocess.PIPE,
                                 text=True, env=env).stdout.split()
        if len(running) != n:
            sys.exit(f"bench: density ({label}): {len(running)} of {n} containers running")
        subprocess.run([MVM, "--root", root, "rm", "-f"] + ids, stdout=subprocess.DEVNULL, env=env)
    finally:
        subprocess.run(["rm", "-rf", work])
    return {"pss": pss / n, "drop": (before - after) / n}


def bench_density():
    """Idle memory per container: BENCH_DENSITY_N (50) detached `busybox sleep` containers
    (512 MiB guests, no network), 15 s after the last started: the summed PSS of the
    hypervisors, their helpers and the monitors per container, and the host's MemAvailable drop
    per container (page cache of the shared image and kernel included). Before: QEMU's TCG
    translation cache at QEMU's own size (MVM_QEMU_TB_MIB=0); after: at mvm's."""
    need(MVM, "cargo build --release")
    need(BUSYBOX_TAR, "scripts/setup.sh (scripts/make-busybox-rootfs.sh)")
    n = int(os.environ.get("BENCH_DENSITY_N", "50"))
    backend = backend_name()
    base = dict(os.environ)
    before = density_run(n, {**base, "MVM_QEMU_TB_MIB": "0"}, "before")
    after = density_run(n, base, "after")
    mib = lambda k: k / 1024
    per8g = lambda d: f"{int(8 * 1024 * 1024 / d['drop'])}" if d["drop"] > 0 else "n/a"
    rows = [
        ["PSS per idle container (hypervisor, helpers, monitor)", fmt(mib(before["pss"]), "MiB"),
         fmt(mib(after["pss"]), "MiB"), f"{after['pss'] / before['pss']:.2f}x"],
        ["host MemAvailable drop per container", fmt(mib(before["drop"]), "MiB"),
         fmt(mib(after["drop"]), "MiB"), f"{after['drop'] / before['drop']:.2f}x"],
        ["containers per 8 GiB (by the drop)", per8g(before), per8g(after), ""],
    ]
    table(f"Density: {n} idle containers on {os.cpu_count()} cores (backend: {backend})",
          ["QEMU's TCG cache", "mvm's TCG cache", "after / before"], rows)


# ---------------------------------------------------------------- VMM snapshots, nested
def nested_result(test, marker, n_var, n_default):
    """Runs the ignored KVM-in-TCG benchmark `test` with `n_var` rounds and returns the JSON it
    prints after `marker`."""
    n = os.environ.get(n_var, n_default)
    cmd = ["cargo", "test", "--release", "-p", "mvm-runtime", "--test", "kvm_in_tcg", "--",
           "--ignored", "--nocapture", test]
    p = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, n_var: n})
    tag = marker + " "
    found = [l[l.index(tag) + len(tag):] for l in p.stdout.splitlines() if tag in l]
    if p.returncode != 0 or not found:
        sys.stderr.write(p.stdout[-6000:] + "\n" + p.stderr[-6000:] + "\n")
        sys.exit(f"bench: `{' '.join(cmd)}` failed")
    return json.loads(found[-1])


def bench_snapshot():
    """Checkpoint cost with our VMM on hardware-style KVM (the KVM-in-TCG machine,
    tests/kvm-in-tcg/bench_snapshot.rs): a Linux guest with 64 MiB of touched memory (random
    bytes in a tmpfs) in a 256 MiB VM, BENCH_SNAPSHOT_N (5) rounds of pause + snapshot, then a
    restore in a new VMM to the guest's next console line."""
    need(VMM, "cargo build --release")
    r = nested_result("bench_snapshot", "SNAPSHOT-RESULT", "BENCH_SNAPSHOT_N", "5")
    rows = [
        ["pause + snapshot (64 MiB touched, 256 MiB guest)", cell(r["snapshot_s"], "s")],
        ["  memory file: bytes written (the rest are holes)", cell(r["written_mib"], "MiB")],
        ["  state file", cell(r["state_kib"], "KiB")],
        ["restore in a new VMM to the guest's next console line", cell(r["restore_to_output_s"], "s")],
    ]
    table(f"Snapshot and restore with our VMM, nested (KVM in TCG; N={r['n']})", ["mvm-vmm"], rows)


# ---------------------------------------------------------------- our VMM beside QEMU/KVM, nested
def bench_nested():
    """`mvm run --rm busybox true` with our VMM beside QEMU (`-M microvm -accel kvm`, the qemu
    backend on hardware-style KVM) inside the KVM-in-TCG machine (tests/kvm-in-tcg/bench.rs):
    same guest kernel, disks, agent and image, BENCH_NESTED_N (10) runs each after one warm-up,
    interleaved. Everything runs under nested emulation: quote the ratios, not the times."""
    need(VMM, "cargo build --release")
    need(os.path.join(REL, "mvm-agent.static"), "scripts/build-agent.sh release")
    r = nested_result("bench_nested", "NESTED-RESULT", "BENCH_NESTED_N", "10")
    mib = lambda xs: [x / 1024 for x in xs]
    r["qemu.WithHelper"] = [a + b for a, b in zip(r["qemu.VmRSS"], r["qemu.HelperVmRSS"])]
    r["mvm.WithHelper"] = r["mvm.VmRSS"]
    r["mvm-cold.WithHelper"] = r["mvm-cold.VmRSS"]
    for b in ("mvm", "mvm-cold", "qemu"):
        r[b + ".Own"] = [a - g for a, g in zip(r[b + ".VmRSS"], r[b + ".GuestRss"])]
    def rel(x, y, k):
        a, b = statistics.median(r[x + "." + k]), statistics.median(r[y + "." + k])
        return f"{a / b:.2f}x" if b else "n/a"
    rows = []
    for label, k in [("boot: VM start to agent ready", "agent_ready"),
                     ("run to exit: VM start to VM ended", "vm_ended"),
                     ("`mvm run --rm --network none busybox true`, whole command", "wall")]:
        rows.append([label, cell(r["mvm." + k], "ms"), cell(r["mvm-cold." + k], "ms"),
                     cell(r["qemu." + k], "ms"), rel("mvm", "mvm-cold", k), rel("mvm", "qemu", k)])
    for label, k in [("hypervisor resident memory (VmRSS), idle container", "VmRSS"),
                     ("  of it anonymous (RssAnon)", "RssAnon"),
                     ("  of it shared memory (RssShmem)", "RssShmem"),
                     ("  of it files (RssFile: a warm VM's template pages)", "RssFile"),
                     ("  of it guest RAM (resident pages of the 512 MiB guest mapping)", "GuestRss"),
                     ("hypervisor's own memory (VmRSS without guest RAM)", "Own"),
                     ("hypervisor + vsock helper (vhost-device-vsock for QEMU)", "WithHelper")]:
        rows.append([label, cell(mib(r["mvm." + k]), "MiB"), cell(mib(r["mvm-cold." + k]), "MiB"),
                     cell(mib(r["qemu." + k]), "MiB"), rel("mvm", "mvm-cold", k), rel("mvm", "qemu", k)])
    table(f"Our VMM (warm and cold) beside QEMU on the same KVM, nested (KVM in TCG; N={r['n']}, memory N=3)",
          ["mvm, warm start", "mvm, cold boot", "QEMU microvm, KVM", "warm / cold", "warm / QEMU"], rows)
    print(f"\nQEMU as the runtime started it: `{r['qemu_cmdline']}`")


# ---------------------------------------------------------------- images: pull, disk build, first run
def bench_images():
    """A 100+ MB, 4-layer image (the debootstrap Debian bookworm + nginx-light tar of
    scripts/make-debian-images.sh, imported, plus three COPY layers of incompressible random
    data) pushed to a docker-registry the bench starts on 127.0.0.1; then, BENCH_IMAGES_N (3)
    times: `mvm pull` into a fresh root beside `skopeo copy` of the same image to a `dir:`
    directory (blobs stored as they come, like mvm) and to an OCI layout, and the first and second `mvm run --rm --network none IMG true` of the freshly pulled image
    (the first one unpacks the layers and builds the image's erofs disk). Also `mkfs.erofs`
    (mvm's image disk format) beside `mkfs.ext4 -d` on the unpacked Debian tree: time and size."""
    need(MVM, "cargo build --release")
    need(KERNEL, "scripts/setup.sh (kernel-config/build.sh)")
    deb = os.path.join(CACHE, "images", "debian-bookworm-nginx-rootfs.tar")
    need(deb, "scripts/setup.sh (scripts/make-debian-images.sh)")
    for tool in ("docker-registry", "skopeo", "mkfs.erofs", "mkfs.ext4"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing: run scripts/setup.sh")
    n = int(os.environ.get("BENCH_IMAGES_N", "3"))
    extra_mib = int(os.environ.get("BENCH_IMAGES_EXTRA_MIB", "16"))
    backend = backend_name()
    work = tempfile.mkdtemp(prefix="mvmb-img-", dir="/var/tmp")
    reg = None
    res = {k: [] for k in ("pull", "skopeo", "skopeo_oci", "run1", "run2", "erofs", "ext4", "untar")}
    sizes = {}
    t0 = time.time()
    try:
        # The registry, on a free loopback port, stopped by its PID below.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        addr = f"127.0.0.1:{port}"
        os.makedirs(os.path.join(work, "reg"))
        cfg = os.path.join(work, "reg", "config.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {work}/reg/data\n"
                    f"http:\n  addr: {addr}\nhealth:\n  storagedriver:\n    enabled: false\n")
        reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(work, "reg", "log"), "w"))
        wait_for("docker-registry", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 30)

        # The image: Debian + nginx, then three COPY layers of random bytes.
        src = [MVM, "--root", os.path.join(work, "src")]
        out(src + ["import", deb, "debian-nginx:bookworm"])
        ctx = os.path.join(work, "ctx")
        os.makedirs(ctx)
        steps = []
        for i in range(3):
            with open(os.path.join(ctx, f"r{i}.bin"), "wb") as f:
                f.write(os.urandom(extra_mib << 20))
            steps.append(f"COPY r{i}.bin /data/\n")
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM debian-nginx:bookworm\n" + "".join(steps))
        img = f"{addr}/debian-nginx:bench"
        out(src + ["build", "-q", "--network", "none", "-t", img, ctx])
        push_t, p = timed(src + ["push", img])
        if p.returncode != 0:
            raise RuntimeError(f"mvm push: {p.stderr.decode()[-300:]}")
        insp = json.loads(out(src + ["image", "inspect", img]))[0]
        nlayers = len(insp["RootFS"]["Layers"])
        blobs = os.path.join(work, "reg", "data", "docker", "registry", "v2", "blobs")
        sizes["image"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(blobs) for f in fs)

        for i in range(n):
            dst = [MVM, "--root", os.path.join(work, f"dst{i}")]
            t, p = timed(dst + ["pull", img])
            if p.returncode != 0:
                raise RuntimeError(f"mvm pull: {p.stderr.decode()[-300:]}")
            res["pull"].append(t)
            # dir: stores the blobs as they come; oci: gzips uncompressed layers on the way.
            oci = os.path.join(work, f"oci{i}")
            for k, dest in (("skopeo", f"dir:{oci}-dir"), ("skopeo_oci", f"oci:{oci}:bench")):
                t, p = timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{img}", dest])
                if p.returncode != 0:
                    raise RuntimeError(f"skopeo copy: {p.stderr.decode()[-300:]}")
                res[k].append(t)
            for k in ("run1", "run2"):
                t, p = timed(dst + ["run", "--rm", "--network", "none", img, "true"])
                if p.returncode != 0:
                    raise RuntimeError(f"mvm run: {p.stderr.decode()[-300:]}")
                res[k].append(t)
            subprocess.run(["rm", "-rf", dst[2], oci, oci + "-dir"])

        # Disk formats on the unpacked Debian tree (the nginx image, without the random layers).
        tree = os.path.join(work, "tree")
        os.makedirs(tree)
        t, _ = timed(["tar", "-xf", deb, "-C", tree, "--numeric-owner"])
        res["untar"].append(t)
        nbytes, inodes = 0, 1
        for d, dirs, fs in os.walk(tree):
            for name in dirs + fs:
                st = os.lstat(os.path.join(d, name))
                inodes += 1
                nbytes += (st.st_size + 4095) // 4096 * 4096
        sizes["tree"] = nbytes
        # As rootfs-tools' ext4_from_dir sizes and makes it (no journal, fixed inode count).
        inodes = inodes + inodes // 4 + 256
        ext4_size = -(-(nbytes + nbytes // 10 + inodes * 256 + (16 << 20)) // (1 << 20)) * (1 << 20)
        for _ in range(n):
            e = os.path.join(work, "t.erofs")
            t, p = timed(["mkfs.erofs", "--quiet", "--preserve-mtime", e, tree])
            if p.returncode != 0:
                raise RuntimeError(f"mkfs.erofs: {p.stderr.decode()[-300:]}")
            res["erofs"].append(t)
            sizes["erofs"] = os.path.getsize(e)
            os.unlink(e)
            x = os.path.join(work, "t.ext4")
            with open(x, "wb") as f:
                f.truncate(ext4_size)
            t, p = timed(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inodes), "-O", "^has_journal",
                          "-E", "root_owner=0:0", "-d", tree, x])
            if p.returncode != 0:
                raise RuntimeError(f"mkfs.ext4: {p.stderr.decode()[-300:]}")
            res["ext4"].append(t)
            sizes["ext4"] = os.path.getsize(x)
            sizes["ext4_used"] = os.stat(x).st_blocks * 512
            os.unlink(x)
    finally:
        if reg:
            reg.kill()
            reg.wait()
        subprocess.run(["rm", "-rf", work])
    wall = time.time() - t0
    mb = lambda b: f"{b / 1e6:.0f} MB"
    ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.2f}x"
    rows = [
        [f"`pull` of the image from the local registry into an empty root (median of {n})",
         cell(res["pull"], "s"), cell(res["skopeo"], "s") + " (`skopeo copy docker://... dir:DIR`)",
         ratio(res["pull"], res["skopeo"])],
        ["same, skopeo to an OCI layout (it gzips the uncompressed layers)", "",
         cell(res["skopeo_oci"], "s") + " (`skopeo copy docker://... oci:DIR:tag`)", ratio(res["pull"], res["skopeo_oci"])],
        ["`push` of the same image into the empty registry (once)", fmt(push_t, "s"), "", ""],
        [f"first `run --rm --network none IMG true` after the pull (unpacks {nlayers} layers, builds the erofs disk)",
         cell(res["run1"], "s"), "", ""],
        ["second `run` of it (image disk cached)", cell(res["run2"], "s"), "", ""],
        [f"image disk build from the unpacked Debian + nginx tree ({mb(sizes['tree'])} in 4 KiB blocks; "
         f"`tar -x` of it took {fmt(res['untar'][0], 's')})",
         cell(res["erofs"], "s") + " (`mkfs.erofs`, mvm's format)", cell(res["ext4"], "s") + " (`mkfs.ext4 -d`, no journal)",
         ratio(res["erofs"], res["ext4"])],
        ["image disk size", mb(sizes["erofs"]),
         f"{mb(sizes['ext4'])} file, {mb(sizes['ext4_used'])} allocated", f"{sizes['erofs'] / sizes['ext4_used']:.2f}x"],
    ]
    table(f"Images: a {mb(sizes['image'])}, {nlayers}-layer Debian bookworm + nginx image "
          f"({3 * extra_mib} MiB of it random COPY layers) through a local docker-registry "
          f"(mvm backend: {backend}; whole mode {wall:.0f} s)",
          ["mvm", "peer", "mvm / peer"], rows)


# ---------------------------------------------------------------- published-port proxy
PROXY_OLD = "711f1e7^"  # the last commit with the thread-per-connection proxy
PROXY_PATCH = os.path.join(REPO, "bench", "proxy_bench.patch")
PROXY_TEST = "network::ports::tests::proxy_bench"
PROXY_FN = "    /// Benchmark, run by `bench/bench.py proxy`"


def test_exe(cwd, env=None):
    """Builds the unit tests (release) holding the proxy in `cwd`: the engine library's, or the
    `mvm` binary's in trees from before the engine was a library. The test binary's path."""
    engine = os.path.isdir(os.path.join(cwd, "engine"))
    which = ["-p", "mvm-engine", "--lib"] if engine else ["-p", "mvm-runtime", "--bin", "mvm"]
    name = "mvm_engine" if engine else "mvm"
    p = subprocess.run(["cargo", "test", "--release", *which, "--no-run",
                        "--message-format=json"], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: cargo test --no-run failed in {cwd}")
    for line in p.stdout.splitlines():
        j = json.loads(line)
        if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == name:
            return j["executable"]
    sys.exit(f"bench: no test binary for {name} in {cwd}")


def proxy_bench_fn(text):
    """The bench test's source in ports.rs (the patch must add the very same to the old one)."""
    start = text.find(PROXY_FN)
    end = text.find("\n    }\n", start)
    return text[start:end] if start >= 0 and end >= 0 else None


def bench_proxy():
    import resource
    n = int(os.environ.get("BENCH_PROXY_N", "5"))
    # Four descriptors per connection in the load process; the default soft limit may be 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with open(os.path.join(REPO, "engine", "src", "network", "ports.rs")) as f:
        now_fn = proxy_bench_fn(f.read())
    with open(PROXY_PATCH) as f:
        added = "".join(l[1:] for l in f.read().splitlines(True)
                        if l.startswith("+") and not l.startswith("+++"))
    if not now_fn or now_fn not in added:
        sys.exit("bench: bench/proxy_bench.patch does not add the proxy_bench of engine/src/network/ports.rs: "
                 "regenerate it (see its header)")
    new_exe = test_exe(REPO)
    tree = os.environ.get("BENCH_PROXY_TREE", "/tmp/mvm-proxy-old")
    target = os.environ.get("BENCH_PROXY_TARGET", "/tmp/mvm-proxy-old-target")
    git = ["git", "-C", REPO]
    if os.path.exists(tree):
        subprocess.run(git + ["worktree", "remove", "--force", tree], stderr=subprocess.DEVNULL)
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(git + ["worktree", "prune"], check=True)
    subprocess.run(git + ["worktree", "add", "--detach", "--quiet", tree, PROXY_OLD], check=True)
    try:
        subprocess.run(["git", "-C", tree, "apply", PROXY_PATCH], check=True)
        if not os.path.exists(target) and os.path.isdir(REL):
            # The old tree differs in few crates: start from this tree's compiled dependencies.
            os.makedirs(target)
            subprocess.run(["cp", "-a", REL, target], check=True)
        old_exe = test_exe(tree, dict(os.environ, CARGO_TARGET_DIR=target))
        shutil.copy(old_exe, os.path.join(target, "proxy-bench-old"))
        old_exe = os.path.join(target, "proxy-bench-old")
    finally:
        subprocess.run(git + ["worktree", "remove", "--force", tree])

    runs = {"now": [], "old": [], "direct": []}
    for i in range(n):
        for which, exe in (("old", old_exe), ("now", new_exe), ("direct", new_exe)):
            env = dict(os.environ, MVM_PROXY_BENCH_DIRECT="1" if which == "direct" else "0")
            p = subprocess.run([exe, PROXY_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
            m = re.search(r'^\{"lat1_p50_us".*\}$', p.stdout, re.M)
            if p.returncode != 0 or not m:
                sys.exit(f"bench: proxy_bench ({which}) failed: {p.stdout[-2000:]}{p.stderr[-2000:]}")
            runs[which].append(json.loads(m.group(0)))
            print(f"bench: proxy run {i + 1}/{n} {which}: {m.group(0)}", file=sys.stderr)

    def col(which, key, scale):
        return [r[key] * scale for r in runs[which]]

    def row(label, key, unit, scale=1.0, direct=True):
        now, old = col("now", key, scale), col("old", key, scale)
        return [label, cell(now, unit), cell(old, unit), cell(col("direct", key, scale), unit) if direct else "n/a",
                ratio(now, old)]

    trips = os.environ.get("MVM_PROXY_BENCH_TRIPS", "300")
    mib1 = os.environ.get("MVM_PROXY_BENCH_MIB1", "512")
    mib100 = os.environ.get("MVM_PROXY_BENCH_MIB100", "16")
    rows = [
        row(f"64 B round trip, 1 connection ({int(trips) * 10} trips): median", "lat1_p50_us", "us", 1e-6),
        row("same: p99", "lat1_p99_us", "us", 1e-6),
        row(f"64 B round trip, 100 connections at once ({trips} trips each): median", "lat100_p50_us", "us", 1e-6),
        row("same: p90", "lat100_p90_us", "us", 1e-6),
        row("same: p99", "lat100_p99_us", "us", 1e-6),
        row("same: round trips per second, all connections", "trips100_per_s", "trips/s"),
        row(f"bulk guest -> client, 1 connection ({mib1} MiB)", "tput1_mbs", "MB/s1", 1e6),
        row(f"bulk guest -> client, 100 connections at once ({mib100} MiB each), aggregate", "tput100_mbs",
            "MB/s1", 1e6),
        row("proxy process: threads, idle", "threads_idle", "threads", direct=False),
        row("proxy process: threads, peak during the run", "threads_peak", "threads", direct=False),
        row("proxy process: RSS, idle", "rss_idle_kib", "MiB", 1 / 1024, direct=False),
        row("proxy process: RSS, peak during the run", "rss_peak_kib", "MiB", 1 / 1024, direct=False),
    ]
    table(f"Published-port proxy on loopback, 100 concurrent connections (median of {n} runs, min-max)",
          ["mvm now: one mio loop (711f1e7)", "before: 2 threads per connection (711f1e7^)",
           "no proxy (loopback direct)", "now / before"], rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("vmm", "run", "lifecycle", "net", "fs", "build", "commit", "nested", "images", "stress", "proxy",
                    "oci", "density", "snapshot", "all"):
        sys.exit("usage: bench/bench.py [vmm|run|lifecycle|net|fs|build|commit|images|stress|proxy|oci|density|all|nested|snapshot]")
    print(f"_{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, N={N}_")
    if what in ("vmm", "all"):
        bench_vmm()
    if what in ("run", "all"):
        bench_run()
    if what in ("lifecycle", "all"):
        bench_lifecycle()
    if what in ("net", "all"):
        bench_net()
    if what in ("fs", "all"):
        bench_fs()
    if what in ("build", "all"):
        bench_build()
    if what in ("commit", "all"):
        bench_commit()
    if what in ("images", "all"):
        bench_images()
    if what in ("stress", "all"):
        bench_stress()
    if what in ("proxy", "all"):
        bench_proxy()
    if what in ("oci", "all"):
        bench_oci()
    if what == "density":  # not in "all": 100 VMs take minutes
        bench_density()
    if what == "snapshot":  # not in "all": it boots the KVM-in-TCG machine
        bench_snapshot()
    if what == "nested":  # not in "all": it boots the KVM-in-TCG machine
        bench_nested()

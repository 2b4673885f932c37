#!/usr/bin/env python3
"""mvm benchmarks against peers measured in the same run; prints markdown tables.

  bench/bench.py vmm   the VMM with the test guest on this machine's KVM (issue: the VMM)
  bench/bench.py run   `mvm run --rm busybox true` by phase, beside podman+runc and bare QEMU
  bench/bench.py lifecycle   exec round trip, idle memory, stop latency, beside podman+runc
  bench/bench.py all   all of them

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
        mem = [tree_rss_kib(rec["pid"]) / 1024]
        stops = []
        for _ in range(5):
            c = subprocess.run(M + ["run", "-d", "--network", "none", "busybox", "sleep", "100000"], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
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
                c = subprocess.run(base + ["run", "-d", "--network", "none", "busybox:local", "sleep", "100000"],
                                   env=env, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
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
        ["`stop` of `sleep` (SIGTERM kills it)", cell(stops, "ms"), cell(pstop, "ms") if pstop else ""],
    ]
    table("Container lifecycle", [f"mvm ({subprocess.run([MVM, 'info'], stdout=subprocess.PIPE, text=True).stdout.split(chr(10))[0][9:]})", "podman + runc"], rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("vmm", "run", "lifecycle", "all"):
        sys.exit("usage: bench/bench.py [vmm|run|lifecycle|all]")
    print(f"_{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, N={N}_")
    if what in ("vmm", "all"):
        bench_vmm()
    if what in ("run", "all"):
        bench_run()
    if what in ("lifecycle", "all"):
        bench_lifecycle()

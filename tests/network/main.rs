//! Networks through the real `mvm` binary and real microVMs. Every test runs all its `mvm`
//! commands inside a network namespace it creates (`ip netns add`), so bridges, TAPs, rules and
//! traffic stay there; nothing is sent anywhere else.

#[path = "../common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{TestRoot, eventually, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let name = format!(
            "mvmt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (iproute2) is missing: run scripts/setup.sh");
        assert!(o.status.success(), "ip netns add: {}", stderr(&o));
        let ns = Self { name };
        assert!(ns.sh("ip link set lo up").status.success());
        ns
    }

    /// `sh -c script` inside the namespace.
    fn sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `mvm --root R args...` inside the namespace.
    fn mvm(&self, r: &TestRoot, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(MVM)
            .arg("--root")
            .arg(&r.path)
            .args(args)
            .env_remove("MVM_VMM")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, r: &TestRoot, args: &[&str]) -> String {
        let o = self.mvm(r, args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "mvm {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Links in the namespace whose names start with `prefix`.
    fn links(&self, prefix: &str) -> Vec<String> {
        stdout(&self.sh("ls /sys/class/net"))
            .split_whitespace()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn root() -> TestRoot {
    TestRoot::with_busybox(MVM)
}

/// An HTTP GET from the test process into the namespace (a thread that enters it), returning
/// the body. The host's busybox wget cannot be used: Debian's static busybox 1.35 wget crashes.
fn http_get(ns: &Netns, addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{}", ns.name);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        // SAFETY: setns(2) with a valid namespace fd moves only this thread, which ends here.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
    })
    .join()
    .unwrap()
}

/// A guest shell snippet that fetches http://HOST:PORT/ with busybox nc (its wget crashes).
fn guest_get(host: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// A web server in the container on `port`, answering `text`.
fn httpd(text: &str, port: u16) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p {port} -h /www")
}

fn inspect(ns: &Netns, r: &TestRoot, what: &str) -> serde_json::Value {
    let out = ns.ok(r, &["inspect", what]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn assert_clean(ns: &Netns, r: &TestRoot) {
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(r.leftover_processes().is_empty() && ns.links("mvt").is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r.leftover_processes().is_empty(),
        "{:?}",
        r.leftover_processes()
    );
    assert!(
        ns.links("mvt").is_empty(),
        "TAPs left: {:?}",
        ns.links("mvt")
    );
}

#[test]
fn containers_on_a_user_network_talk_by_name_over_tcp_and_udp() {
    let ns = Netns::new();
    let r = root();
    let id = ns.ok(
        &r,
        &["network", "create", "--subnet", "10.201.0.0/24", "n1"],
    );
    assert_eq!(id.trim().len(), 64);
    let web = httpd("pong", 8080);
    ns.ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "n1",
            "--network-alias",
            "www",
            "busybox",
            "sh",
            "-c",
            &web,
        ],
    );
    let v = inspect(&ns, &r, "web");
    let web_ip = v["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(web_ip.starts_with("10.201.0."), "{web_ip}");
    assert_eq!(
        v["NetworkSettings"]["Networks"]["n1"]["Gateway"],
        "10.201.0.1"
    );
    // By name and by alias, through the network's DNS server (UDP to the gateway), then TCP.
    for name in ["web", "www"] {
        let script = format!(
            "ip=$(nslookup {name} | awk '/^Address/ {{a=$NF}} END {{print a}}'); echo ip=$ip; {}",
            guest_get("$ip", 8080)
        );
        let out = eventually(&format!("GET via {name}"), || {
            let o = ns.mvm(
                &r,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "n1",
                    "busybox",
                    "sh",
                    "-c",
                    &script,
                ],
            );
            let s = stdout(&o);
            s.contains("pong").then_some(s)
        });
        assert!(out.contains(&format!("ip={web_ip}\n")), "{out}");
    }
    // A container started later is found too, and UDP reaches it: traceroute's UDP probe
    // gets its port-unreachable answer from the named container itself.
    ns.ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "late",
            "--network",
            "n1",
            "busybox",
            "sleep",
            "600",
        ],
    );
    let late_ip = inspect(&ns, &r, "late")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let out = eventually("UDP probe answered by late", || {
        let o = ns.mvm(&r, &["exec", "web", "sh", "-c", "ip=$(nslookup late | awk '/^Address/ {a=$NF} END {print a}'); traceroute -n -q 1 -w 2 -m 2 $ip 2>&1"]);
        let s = stdout(&o);
        s.contains(&format!(" {late_ip} ")).then_some(s)
    });
    assert!(out.contains(&late_ip), "{out}");
    // An unknown name is NXDOMAIN, not a hang.
    let o = ns.mvm(&r, &["exec", "web", "nslookup", "nosuchcontainer"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    // The network lists its containers; rm is refused while they exist.
    let n1 = ns.ok(&r, &["network", "inspect", "n1"]);
    let v: serde_json::Value = serde_json::from_str(&n1).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 2, "{n1}");
    let o = ns.mvm(&r, &["network", "rm", "n1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("active endpoints"), "{}", stderr(&o));
    ns.ok(&r, &["rm", "-f", "web", "late"]);
    ns.ok(&r, &["network", "rm", "n1"]);
    assert!(ns.links("mvmbr-").is_empty(), "{:?}", ns.links("mvmbr-"));
    assert_clean(&ns, &r);
}

#[test]
fn published_ports_answer_on_loopback_and_conflicts_are_refused() {
    let ns = Netns::new();
    let r = root();
    let web = httpd("published", 8080);
    let id = ns.ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "pub",
            "-p",
            "127.0.0.1:18080:8080",
            "-p",
            "8081",
            "busybox",
            "sh",
            "-c",
            &web,
        ],
    );
    let id = id.trim();
    let body = eventually("published port answers", || {
        http_get(&ns, "127.0.0.1:18080")
    });
    assert_eq!(body, "published\n");
    let ports = ns.ok(&r, &["port", "pub"]);
    assert!(ports.contains("8080/tcp -> 127.0.0.1:18080"), "{ports}");
    assert!(ports.contains("8081/tcp -> 0.0.0.0:"), "{ports}");
    assert_eq!(ns.ok(&r, &["port", "pub", "8080"]), "127.0.0.1:18080\n");
    let o = ns.mvm(&r, &["port", "pub", "9999/udp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No public port '9999/udp'"),
        "{}",
        stderr(&o)
    );
    let ps = ns.ok(&r, &["ps", "--format", "{{.Ports}}"]);
    assert!(ps.contains("127.0.0.1:18080->8080/tcp"), "{ps}");
    let v = inspect(&ns, &r, id);
    assert_eq!(
        v["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"],
        "18080"
    );
    // The same host port again: one clear line, 125, nothing left of the second container.
    let o = ns.mvm(
        &r,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18080:80",
            "busybox",
            "sleep",
            "60",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("port is already allocated"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_eq!(ns.ok(&r, &["ps", "-aq"]).lines().count(), 1);
    // Bad specs are usage errors; --network host is refused with the reason.
    for bad in [
        vec!["run", "--rm", "-p", "80/sctp", "busybox", "true"],
        vec!["run", "--rm", "-p", "70000:80", "busybox", "true"],
        vec!["run", "--rm", "--network", "host", "busybox", "true"],
        vec!["run", "--rm", "--network", "nosuchnet", "busybox", "true"],
        vec![
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "80",
            "busybox",
            "true",
        ],
    ] {
        let o = ns.mvm(&r, &bad);
        assert_eq!(o.status.code(), Some(125), "{bad:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{bad:?}: {}", stderr(&o));
    }
    // The running container moves to another network and leaves the default one: its
    // published port follows it to its new address.
    ns.ok(
        &r,
        &["network", "create", "--subnet", "10.207.0.0/24", "moved"],
    );
    ns.ok(&r, &["network", "connect", "moved", "pub"]);
    ns.ok(&r, &["network", "disconnect", "bridge", "pub"]);
    let v = inspect(&ns, &r, "pub");
    assert!(
        v["NetworkSettings"]["IPAddress"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.207.0.")),
        "{v}"
    );
    assert_eq!(
        http_get(&ns, "127.0.0.1:18080").as_deref(),
        Some("published\n")
    );
    ns.ok(&r, &["rm", "-f", "pub"]);
    ns.ok(&r, &["network", "rm", "moved"]);
    // The host port is free again once the container is gone.
    assert!(http_get(&ns, "127.0.0.1:18080").is_none());
    assert_clean(&ns, &r);
}

#[test]
fn publish_all_uses_the_images_exposed_ports() {
    let ns = Netns::new();
    let r = root();
    let tar = common::busybox_tar();
    ns.ok(
        &r,
        &[
            "import",
            "-c",
            "EXPOSE 8080",
            tar.to_str().unwrap(),
            "web:exposed",
        ],
    );
    let web = httpd("all", 8080);
    ns.ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "p1",
            "-P",
            "web:exposed",
            "sh",
            "-c",
            &web,
        ],
    );
    let hostport = ns.ok(&r, &["port", "p1", "8080/tcp"]);
    let port: u16 = hostport.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(port > 0, "{hostport}");
    let body = eventually("-P port answers", || {
        http_get(&ns, &format!("127.0.0.1:{port}"))
    });
    assert_eq!(body, "all\n");
    // stats counts the traffic on the container's interface.
    let net_io = ns.ok(
        &r,
        &["stats", "--no-stream", "--format", "{{.NetIO}}", "p1"],
    );
    assert_ne!(net_io.trim(), "0B / 0B", "{net_io}");
    // All addresses means IPv6 ones too, as Docker's: the same port on [::1].
    assert!(hostport.contains(&format!("[::]:{port}")), "{hostport}");
    assert_eq!(
        http_get(&ns, &format!("[::1]:{port}")).as_deref(),
        Some("all\n")
    );
    ns.ok(&r, &["rm", "-f", "p1"]);
    assert_clean(&ns, &r);
}

#[test]
fn networks_are_isolated_and_connect_adds_an_interface() {
    let ns = Netns::new();
    let r = root();
    // A throw-away container on network `net` running a shell snippet.
    let run_on = |net: &str, script: &str| {
        ns.mvm(
            &r,
            &[
                "run",
                "--rm",
                "--network",
                net,
                "busybox",
                "sh",
                "-c",
                script,
            ],
        )
    };
    ns.ok(&r, &["network", "create", "--subnet", "10.202.0.0/24", "a"]);
    ns.ok(&r, &["network", "create", "--subnet", "10.203.0.0/24", "b"]);
    // Overlapping and malformed ranges, and a taken name: refused with one line.
    for bad in [
        vec!["network", "create", "--subnet", "10.202.0.0/16", "c"],
        vec!["network", "create", "--subnet", "10.204.0.7/24", "c"],
        vec![
            "network",
            "create",
            "--subnet",
            "10.205.0.0/24",
            "--gateway",
            "10.9.9.9",
            "c",
        ],
        vec!["network", "create", "a"],
    ] {
        let o = ns.mvm(&r, &bad);
        assert_ne!(o.status.code(), Some(0), "{bad:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{bad:?}: {}", stderr(&o));
    }
    let web = httpd("from-a", 80);
    ns.ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "sa",
            "--network",
            "a",
            "busybox",
            "sh",
            "-c",
            &web,
        ],
    );
    let ip_a = inspect(&ns, &r, "sa")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let get_a = guest_get(&ip_a, 80);
    // Same network: reachable.
    eventually("same network reaches sa", || {
        let o = run_on("a", &get_a);
        stdout(&o).contains("from-a").then_some(())
    });
    // Other network: not.
    let o = run_on("b", &get_a);
    assert!(
        !stdout(&o).contains("from-a"),
        "network b reached network a"
    );
    // connect while stopped: the container then has an interface on each network.
    ns.ok(
        &r,
        &[
            "create",
            "--name",
            "both",
            "--network",
            "b",
            "busybox",
            "sh",
            "-c",
            "ip -4 -o addr; sleep 600",
        ],
    );
    ns.ok(&r, &["network", "connect", "--alias", "two", "a", "both"]);
    let o = ns.mvm(&r, &["network", "connect", "a", "both"]);
    assert_eq!(o.status.code(), Some(1), "already connected");
    ns.ok(&r, &["start", "both"]);
    let addrs = eventually("both has two interfaces", || {
        let s = ns.ok(&r, &["logs", "both"]);
        (s.contains("10.203.0.") && s.contains("10.202.0.")).then_some(s)
    });
    assert!(addrs.contains("eth1"), "{addrs}");
    eventually("the second interface reaches network a", || {
        let o = ns.mvm(&r, &["exec", "both", "sh", "-c", &get_a]);
        stdout(&o).contains("from-a").then_some(())
    });
    // A running container gains an interface on another network (one of its VM's spare
    // ones, configured by its agent) and is found there by name and alias.
    ns.ok(&r, &["network", "connect", "--alias", "web", "b", "sa"]);
    let v = inspect(&ns, &r, "sa");
    let ip_b = v["NetworkSettings"]["Networks"]["b"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip_b.starts_with("10.203.0."), "{v}");
    // busybox's nc cannot resolve names (static glibc has no NSS): nslookup does.
    let by_name = |name: &str| {
        format!(
            "ip=$(nslookup {name} 2>/dev/null | awk '/^Address/ {{a=$NF}} END {{print a}}'); echo IP=$ip; {}",
            guest_get("$ip", 80)
        )
    };
    let from_b = by_name("web");
    let o = eventually("a container on b reaches sa by its alias", || {
        let o = run_on("b", &from_b);
        stdout(&o).contains("from-a").then_some(o)
    });
    assert!(
        stdout(&o).contains(&format!("IP={ip_b}\n")),
        "{}",
        stdout(&o)
    );
    // `both` (b first, a second) leaves its first network while running: the default route
    // and DNS move to a, where sa's name still resolves.
    ns.ok(&r, &["network", "disconnect", "b", "both"]);
    let o = ns.mvm(
        &r,
        &[
            "exec",
            "both",
            "sh",
            "-c",
            &format!("ip route; {}", by_name("sa")),
        ],
    );
    assert!(
        stdout(&o).contains("default via 10.202.0.1"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!("IP={ip_a}\n")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("from-a"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        !ns.ok(&r, &["exec", "both", "ip", "-4", "-o", "addr"])
            .contains("10.203.0.")
    );
    // ... and joins it again on a spare interface.
    ns.ok(&r, &["network", "connect", "b", "both"]);
    let addrs = ns.ok(&r, &["exec", "both", "ip", "-4", "-o", "addr"]);
    assert!(
        addrs.contains("10.203.0.") && addrs.contains("10.202.0."),
        "{addrs}"
    );
    // sa leaves b: unreachable from there, and refused twice.
    ns.ok(&r, &["network", "disconnect", "b", "sa"]);
    let o = run_on("b", &guest_get(&ip_b, 80));
    assert!(!stdout(&o).contains("from-a"), "{}", stdout(&o));
    let o = ns.mvm(&r, &["network", "disconnect", "b", "sa"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    ns.ok(&r, &["stop", "-t", "1", "both"]);
    ns.ok(&r, &["network", "disconnect", "a", "both"]);
    let v = inspect(&ns, &r, "both");
    assert!(v["NetworkSettings"]["Networks"]["a"].is_null(), "{v}");
    ns.ok(&r, &["rm", "-f", "sa", "both"]);
    let pruned = ns.ok(&r, &["network", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Networks:\n"), "{pruned}");
    assert!(
        pruned.lines().any(|l| l == "a") && pruned.lines().any(|l| l == "b"),
        "{pruned}"
    );
    // Docker's predefined networks stay.
    assert_eq!(
        ns.ok(&r, &["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n"
    );
    assert_clean(&ns, &r);
}

#[test]
fn default_bridge_and_none() {
    let ns = Netns::new();
    let r = root();
    // The default network: an address, a default route, DNS at the gateway.
    let o = ns.mvm(
        &r,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("inet 10.89.0."), "{out}");
    assert!(out.contains("default via 10.89.0.1"), "{out}");
    assert!(out.contains("nameserver 10.89.0.1"), "{out}");
    // The host side reaches the guest through the bridge.
    let web = httpd("bridged", 80);
    ns.ok(
        &r,
        &["run", "-d", "--name", "w1", "busybox", "sh", "-c", &web],
    );
    let ip = inspect(&ns, &r, "w1")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let body = eventually("host reaches the guest", || {
        http_get(&ns, &format!("{ip}:80"))
    });
    assert_eq!(body, "bridged\n");
    // --network none: loopback only.
    let o = ns.mvm(
        &r,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ls",
            "/sys/class/net",
        ],
    );
    // Loopback (and the kernel's own sit0 tunnel device), no Ethernet interface.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed = stdout(&o);
    let links: Vec<&str> = listed.split_whitespace().collect();
    assert!(links.contains(&"lo"), "{links:?}");
    assert!(!links.iter().any(|l| l.starts_with("eth")), "{links:?}");
    // kill -9 of the monitor, then rm -f: its TAP goes too.
    let pid = inspect(&ns, &r, "w1")["State"]["Pid"].as_u64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    ns.ok(&r, &["rm", "-f", "w1"]);
    assert_clean(&ns, &r);
}

/// `Threads:` and `VmRSS:` (kB) of a process, from /proc.
fn threads_and_rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

#[test]
fn five_thousand_connections_to_a_published_port_leave_the_monitor_bounded() {
    let ns = Netns::new();
    let r = root();
    let id = ns.ok(
        &r,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18090:8080",
            "busybox",
            "sh",
            "-c",
            &httpd("still-serving", 8080),
        ],
    );
    let id = id.trim().to_string();
    eventually("published port answers", || {
        http_get(&ns, "127.0.0.1:18090")
    });
    let monitor = inspect(&ns, &r, &id)["State"]["Pid"].as_u64().unwrap() as u32;
    let (threads0, rss0) = threads_and_rss(monitor);
    // 5,000 connections in waves of 1,250 held open at once (past the proxy's cap of 1,024
    // per port), each sending a request; the monitor is sampled while a wave is open.
    let path = format!("/run/netns/{}", ns.name);
    let peak = std::thread::spawn(move || {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) with a valid namespace fd moves only this thread, which ends here.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut peak = (0, 0);
        let mut connected = 0;
        for _ in 0..4 {
            let mut open = Vec::new();
            for _ in 0..1250 {
                if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:18090") {
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    open.push(s);
                    connected += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            let (t, m) = threads_and_rss(monitor);
            peak = (peak.0.max(t), peak.1.max(m));
            drop(open);
        }
        (peak, connected)
    })
    .join()
    .unwrap();
    let ((threads, rss), connected) = peak;
    println!(
        "5,000 connections ({connected} accepted by the kernel): monitor threads {threads0} -> {threads} at peak, VmRSS {rss0} -> {rss} kB"
    );
    assert!(connected >= 4000, "only {connected} connections were made");
    // One event loop serves every connection: no thread per connection, bounded memory.
    assert!(threads <= threads0 + 2, "threads {threads0} -> {threads}");
    assert!(rss < rss0 + 64 * 1024, "VmRSS {rss0} -> {rss} kB");
    // The container keeps serving.
    let body = eventually("the published port answers after the flood", || {
        http_get(&ns, "127.0.0.1:18090")
    });
    assert_eq!(body, "still-serving\n");
    ns.ok(&r, &["rm", "-f", &id]);
    assert_clean(&ns, &r);
}

#[test]
fn two_state_roots_keep_their_own_rules_and_ranges() {
    let ns = Netns::new();
    let (a, b) = (root(), root());
    let ia = ns.ok(&a, &["run", "-d", "busybox", "sleep", "600"]);
    let ib = ns.ok(&b, &["run", "-d", "busybox", "sleep", "600"]);
    let subnet = |r: &TestRoot| {
        let v: serde_json::Value =
            serde_json::from_str(&ns.ok(r, &["network", "inspect", "bridge"])).unwrap();
        v[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (sa, sb) = (subnet(&a), subnet(&b));
    assert_eq!(sa, "10.89.0.0/16");
    assert!(!sb.is_empty() && sb != sa, "{sa} and {sb}");
    // Each root's NAT rule in its own table: the second's sync did not flush the first's.
    let rules = stdout(&ns.sh("nft list ruleset"));
    for s in [&sa, &sb] {
        assert!(
            rules.contains(&format!("ip saddr {s}")),
            "{s} not in {rules}"
        );
    }
    // A rule sync of the second root (network rm) leaves the first's alone.
    ns.ok(&b, &["rm", "-f", ib.trim()]);
    ns.ok(&b, &["network", "create", "other"]);
    ns.ok(&b, &["network", "rm", "other"]);
    let rules = stdout(&ns.sh("nft list ruleset"));
    assert!(rules.contains(&format!("ip saddr {sa}")), "{rules}");
    ns.ok(&a, &["rm", "-f", ia.trim()]);
    assert_clean(&ns, &a);
    assert_clean(&ns, &b);
}

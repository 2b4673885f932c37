//! Network interfaces: loopback, and each NIC configured from its `mvm.net` key (found by its
//! MAC address, so the order the kernel probed the devices in does not matter).
//!
//! Interfaces keep the kernel's names (eth0, eth1...). Only the first NIC with a gateway gets
//! the default route, as Docker does with several networks.

mod ioctl;

use std::io;

use crate::log_debug;
use mvm_agent_protocol::boot::{MacAddr, NetConfig};

pub use ioctl::IfSocket;

/// A network interface that could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The interfaces could not be listed.
    #[error("listing network interfaces: {0}")]
    List(#[source] io::Error),
    /// No interface has the MAC address of an `mvm.net` key.
    #[error("no network interface has MAC {mac} (from mvm.net)")]
    NoInterface {
        /// The MAC address.
        mac: MacAddr,
    },
    /// Two interfaces have the MAC address of an `mvm.net` key.
    #[error("MAC {mac} (from mvm.net) is on both {first} and {second}")]
    Ambiguous {
        /// The MAC address.
        mac: MacAddr,
        /// One interface that has it.
        first: String,
        /// Another.
        second: String,
    },
    /// A configuration step of one interface failed.
    #[error("interface {iface} (MAC {mac}): {step}: {source}")]
    Configure {
        /// The interface's name.
        iface: String,
        /// Its MAC address.
        mac: MacAddr,
        /// What failed, with its values.
        step: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

/// Sets `IFF_UP` on the interface `name`.
pub fn set_up(name: &str) -> io::Result<()> {
    IfSocket::new()?.set_up(name)
}

/// The name of the interface whose MAC address is `mac`.
pub fn find_by_mac(sock: &IfSocket, mac: MacAddr) -> Result<String, NetError> {
    // The ioctls see this thread's network namespace; /sys/class/net would show sysfs's,
    // and needs /sys mounted.
    let interfaces = nix::net::if_::if_nameindex().map_err(|e| NetError::List(e.into()))?;
    let mut found: Option<String> = None;
    for iface in interfaces.iter() {
        let Ok(name) = iface.name().to_str() else {
            continue;
        };
        let hw = match sock.hwaddr(name) {
            Ok(hw) => hw,
            // Gone since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(e) => {
                return Err(NetError::Configure {
                    iface: name.to_string(),
                    mac,
                    step: "reading its MAC address".to_string(),
                    source: e,
                });
            }
        };
        if hw != Some(mac.0) {
            continue;
        }
        if let Some(first) = found {
            return Err(NetError::Ambiguous {
                mac,
                first,
                second: name.to_string(),
            });
        }
        found = Some(name.to_string());
    }
    found.ok_or(NetError::NoInterface { mac })
}

/// Configures each interface of `nets`: MTU, IPv4 address and netmask, up, and the default
/// route through the first gateway. Returns the interfaces' names, in the order of `nets`.
pub fn configure(nets: &[NetConfig]) -> Result<Vec<String>, NetError> {
    if nets.is_empty() {
        return Ok(Vec::new());
    }
    let sock = IfSocket::new().map_err(NetError::List)?;
    let mut names = Vec::with_capacity(nets.len());
    let mut routed = false;
    for net in nets {
        let iface = find_by_mac(&sock, net.mac)?;
        let fail = |step: String| {
            let iface = iface.clone();
            move |source| NetError::Configure {
                iface,
                mac: net.mac,
                step,
                source,
            }
        };
        if let Some(mtu) = net.mtu {
            sock.set_mtu(&iface, mtu)
                .map_err(fail(format!("setting MTU {mtu}")))?;
        }
        sock.set_addr(&iface, net.addr)
            .map_err(fail(format!("setting address {}", net.addr)))?;
        sock.set_netmask(&iface, net.netmask())
            .map_err(fail(format!("setting netmask {}", net.netmask())))?;
        sock.set_up(&iface).map_err(fail("bringing it up".into()))?;
        if let Some(gw) = net.gateway
            && !routed
        {
            sock.add_default_route(&iface, gw)
                .map_err(fail(format!("adding the default route via {gw}")))?;
            routed = true;
        }
        log_debug!(
            "{iface}: {}/{} gateway {:?} mtu {:?}",
            net.addr,
            net.prefix,
            net.gateway,
            net.mtu
        );
        names.push(iface);
    }
    Ok(names)
}

/// Configures one interface of a running container (`network_up`): as at boot, and with a
/// gateway the default route moves to it. Returns the interface's name.
pub fn connect(net: &NetConfig) -> Result<String, NetError> {
    let sock = IfSocket::new().map_err(NetError::List)?;
    if net.gateway.is_some() {
        // At most a few: one per interface that had the route.
        for _ in 0..16 {
            match sock.del_default_route() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(source) => {
                    return Err(NetError::Configure {
                        iface: "-".into(),
                        mac: net.mac,
                        step: "removing the old default route".into(),
                        source,
                    });
                }
            }
        }
    }
    configure(std::slice::from_ref(net)).map(|mut names| names.remove(0))
}

/// Removes the address of the interface with `mac` and takes it down (`network_down`).
pub fn disconnect(mac: MacAddr) -> Result<String, NetError> {
    let sock = IfSocket::new().map_err(NetError::List)?;
    let iface = find_by_mac(&sock, mac)?;
    let fail = |step: &str| {
        let iface = iface.clone();
        let step = step.to_string();
        move |source| NetError::Configure {
            iface,
            mac,
            step,
            source,
        }
    };
    // Setting 0.0.0.0 deletes the interface's primary IPv4 address.
    sock.set_addr(&iface, std::net::Ipv4Addr::UNSPECIFIED)
        .map_err(fail("removing its address"))?;
    sock.set_down(&iface).map_err(fail("taking it down"))?;
    log_debug!("{iface}: down");
    Ok(iface)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs `ip ARGS` and returns its stdout; panics with its stderr when it fails, and with a
    /// clear message when iproute2 is missing.
    fn ip(args: &[&str]) -> String {
        let out = match Command::new("ip").args(args).output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                panic!("this test needs the `ip` tool: install iproute2")
            }
            Err(e) => panic!("running ip {args:?}: {e}"),
        };
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Moves the calling thread (only) into a new, empty network namespace, and proves it did
    /// before anything touches an interface: the host's interfaces are never at risk.
    fn enter_new_netns() {
        let ns = |path| std::fs::read_link(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let before = ns("/proc/thread-self/ns/net");
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            panic!("this test must run as root: unshare(CLONE_NEWNET) failed: {e}");
        }
        let after = ns("/proc/thread-self/ns/net");
        assert_ne!(
            before, after,
            "unshare did not give a new network namespace"
        );
        assert_ne!(after, ns("/proc/self/ns/net"), "the whole process moved");
    }

    /// Runs `f` on a thread of its own inside a new network namespace, which goes away with
    /// the thread (and with it every interface the test made).
    fn in_new_netns(f: impl FnOnce() + Send + 'static) {
        let thread = std::thread::spawn(move || {
            enter_new_netns();
            f();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// A veth pair `name`/`name`p with `name`'s MAC set; the peer is up, so `name` gets a
    /// carrier when it goes up.
    fn veth(name: &str, mac: &str) {
        let peer = format!("{name}p");
        ip(&[
            "link", "add", name, "address", mac, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "up"]);
    }

    fn net(s: &str) -> NetConfig {
        NetConfig::parse(s).unwrap()
    }

    #[test]
    fn configures_interfaces_in_a_network_namespace() {
        in_new_netns(|| {
            veth("v0", "02:42:0a:58:00:02");
            veth("v1", "02:42:0a:59:00:02");
            veth("v2", "02:42:0a:5a:00:02");
            // Out of the kernel's order on purpose: the MAC decides.
            let names = configure(&[
                net("02:42:0a:59:00:02,10.89.0.2/24,-,9000"),
                net("02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1,1400"),
                // Has a gateway, but the default route is already taken.
                net("02:42:0a:5a:00:02,10.90.0.2/16,10.90.0.1"),
            ])
            .unwrap();
            assert_eq!(names, vec!["v1", "v0", "v2"]);

            let addr = ip(&["-4", "-o", "addr", "show", "dev", "v0"]);
            assert!(
                addr.contains("inet 10.88.0.2/16 brd 10.88.255.255"),
                "{addr}"
            );
            let addr = ip(&["-4", "-o", "addr", "show", "dev", "v1"]);
            assert!(addr.contains("inet 10.89.0.2/24 brd 10.89.0.255"), "{addr}");
            let addr = ip(&["-4", "-o", "addr", "show", "dev", "v2"]);
            assert!(addr.contains("inet 10.90.0.2/16"), "{addr}");

            for (dev, mtu) in [("v0", "mtu 1400"), ("v1", "mtu 9000"), ("v2", "mtu 1500")] {
                let link = ip(&["-o", "link", "show", "dev", dev]);
                assert!(link.contains(mtu), "{link}");
                let flags = link.split(['<', '>']).nth(1).unwrap_or("");
                assert!(flags.split(',').any(|f| f == "UP"), "{link}");
            }

            let routes = ip(&["-4", "route", "show", "default"]);
            assert_eq!(routes.trim(), "default via 10.88.0.1 dev v0", "{routes}");
            let routes = ip(&["-4", "route", "show", "dev", "v1"]);
            assert!(
                routes.contains("10.89.0.0/24 proto kernel scope link src 10.89.0.2"),
                "{routes}"
            );
        });
    }

    #[test]
    fn connect_moves_the_default_route_and_disconnect_removes_the_address() {
        in_new_netns(|| {
            veth("v0", "02:42:0a:58:00:02");
            veth("v1", "02:42:0a:59:00:02");
            configure(&[net("02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1")]).unwrap();
            // A second network without a gateway keeps the route where it is.
            let name = connect(&net("02:42:0a:59:00:02,10.89.0.2/24,-")).unwrap();
            assert_eq!(name, "v1");
            let addr = ip(&["-4", "-o", "addr", "show", "dev", "v1"]);
            assert!(addr.contains("inet 10.89.0.2/24"), "{addr}");
            let routes = ip(&["-4", "route", "show", "default"]);
            assert_eq!(routes.trim(), "default via 10.88.0.1 dev v0");
            // The first one goes: its address and routes with it; the route moves.
            let mac = net("02:42:0a:58:00:02,10.88.0.2/16,-").mac;
            assert_eq!(disconnect(mac).unwrap(), "v0");
            let addr = ip(&["-4", "-o", "addr", "show", "dev", "v0"]);
            assert!(addr.trim().is_empty(), "{addr}");
            let link = ip(&["-o", "link", "show", "dev", "v0"]);
            let flags = link.split(['<', '>']).nth(1).unwrap_or("");
            assert!(!flags.split(',').any(|f| f == "UP"), "{link}");
            assert!(ip(&["-4", "route", "show", "default"]).trim().is_empty());
            connect(&net("02:42:0a:59:00:02,10.89.0.2/24,10.89.0.1")).unwrap();
            let routes = ip(&["-4", "route", "show", "default"]);
            assert_eq!(routes.trim(), "default via 10.89.0.1 dev v1");
            // Again: idempotent, the route replaced rather than doubled.
            connect(&net("02:42:0a:59:00:02,10.89.0.2/24,10.89.0.1")).unwrap();
            let routes = ip(&["-4", "route", "show", "default"]);
            assert_eq!(routes.trim(), "default via 10.89.0.1 dev v1");
            assert!(matches!(
                disconnect(net("02:42:0a:5f:00:02,10.9.0.2/24,-").mac),
                Err(NetError::NoInterface { .. })
            ));
        });
    }

    #[test]
    fn errors_name_the_mac_and_the_interface() {
        in_new_netns(|| {
            let err = configure(&[net("02:42:0a:58:00:09,10.88.0.2/16,-")]).unwrap_err();
            assert!(matches!(err, NetError::NoInterface { .. }), "{err}");
            assert!(err.to_string().contains("02:42:0a:58:00:09"), "{err}");

            veth("v0", "02:42:0a:58:00:02");
            veth("v1", "02:42:0a:58:00:03");
            ip(&["link", "set", "v1", "address", "02:42:0a:58:00:02"]);
            let err = configure(&[net("02:42:0a:58:00:02,10.88.0.2/16,-")]).unwrap_err();
            assert!(err.to_string().contains("is on both v0 and v1"), "{err}");

            // A default route that is already there makes SIOCADDRT fail (EEXIST).
            veth("v2", "02:42:0a:58:00:04");
            let nic = net("02:42:0a:58:00:04,10.88.0.2/16,10.88.0.1");
            configure(std::slice::from_ref(&nic)).unwrap();
            let err = configure(&[nic]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(
                    "interface v2 (MAC 02:42:0a:58:00:04): adding the default route via 10.88.0.1: "
                ),
                "{msg}"
            );
        });
    }
}

//! The container's network, from the namespace its engine made: each Ethernet interface there
//! (Docker's or podman's veth) is joined to a TAP with tc mirred redirects both ways (Kata's
//! default), and the guest's NIC takes the interface's MAC, address, prefix, MTU and, where the
//! default route leaves, its gateway. The host side stays as the engine made it, so published
//! ports, user networks and names work unchanged.
//!
//! Only veth interfaces are taken: a bridge, a physical NIC or anything else in the namespace
//! is never redirected (were the runtime ever run in a namespace that is not the container's,
//! it would otherwise cut that namespace off). `create` also refuses to join its own namespace,
//! which is how Docker asks for `--network host`.
//!
//! Read and done with iproute2 (`ip -j` for JSON) and `tc`, run in the relay's namespace.

use std::net::Ipv4Addr;
use std::process::Command;

use mvm_agent_protocol::boot::{MacAddr, NetConfig};
use mvm_engine::backend::Nic;
use mvm_engine::sandbox::SandboxNic;
use serde::Deserialize;

use crate::error::RuntimeError;
use crate::log::Logger;

/// The most interfaces joined to the VM.
pub const MAX_INTERFACES: usize = 4;

/// One interface as `ip -j addr show` prints it.
#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: String,
}

#[derive(Debug, Deserialize)]
struct AddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
}

/// A route as `ip -j route show default` prints it.
#[derive(Debug, Deserialize)]
struct Route {
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

/// An interface to join to the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name in the namespace.
    pub name: String,
    /// The guest's configuration.
    pub config: NetConfig,
}

fn run(program: &str, args: &[&str]) -> Result<String, RuntimeError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        RuntimeError::Other(format!("cannot run {program}: {e} (install iproute2)"))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(RuntimeError::Other(format!(
            "{program} {}: {}",
            args.join(" "),
            err.lines().next().unwrap_or("failed").trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The veth interfaces of `addrs` (`ip -j -d addr show`) with an IPv4 address, and the
/// gateway of the default route in `routes` (`ip -j route show default`) on the one it leaves
/// by.
fn interfaces(addrs: &str, routes: &str) -> Result<Vec<Interface>, RuntimeError> {
    let bad = |what: &str, e: serde_json::Error| {
        RuntimeError::Other(format!("cannot read the network namespace's {what}: {e}"))
    };
    let links: Vec<Link> = serde_json::from_str(addrs).map_err(|e| bad("interfaces", e))?;
    let routes: Vec<Route> = if routes.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(routes).map_err(|e| bad("routes", e))?
    };
    let mut out = Vec::new();
    let veth = |l: &&Link| {
        l.link_type == "ether" && l.linkinfo.as_ref().is_some_and(|i| i.info_kind == "veth")
    };
    for l in links.iter().filter(veth) {
        let Some(a) = l.addr_info.iter().find(|a| a.family == "inet") else {
            continue;
        };
        let mac = MacAddr::parse(&l.address).map_err(|why| {
            RuntimeError::Other(format!(
                "interface {}: MAC {:?}: {why}",
                l.ifname, l.address
            ))
        })?;
        let addr: Ipv4Addr = a.local.parse().map_err(|_| {
            RuntimeError::Other(format!("interface {}: address {:?}", l.ifname, a.local))
        })?;
        let gateway = routes
            .iter()
            .find(|r| r.dev.as_deref() == Some(l.ifname.as_str()))
            .and_then(|r| r.gateway.as_deref())
            .and_then(|g| g.parse().ok());
        out.push(Interface {
            name: l.ifname.clone(),
            config: NetConfig {
                mac,
                addr,
                prefix: a.prefixlen,
                gateway,
                mtu: (l.mtu > 0).then_some(l.mtu),
            },
        });
    }
    if out.len() > MAX_INTERFACES {
        return Err(RuntimeError::Unsupported(format!(
            "the container has {} network interfaces; a microVM takes at most {MAX_INTERFACES}",
            out.len()
        )));
    }
    Ok(out)
}

/// The (interface, TAP) pairs [`connect`] made, for [`disconnect`].
pub type Joined = Vec<(String, String)>;

/// The TAP joined to interface `i`.
fn tap_name(i: usize) -> String {
    format!("mvmtap{i}")
}

/// Joins every veth of our network namespace to a TAP; the VM's NICs, and the (interface,
/// TAP) pairs for [`disconnect`].
pub fn connect(log: &Logger) -> Result<(Vec<SandboxNic>, Joined), RuntimeError> {
    let addrs = run("ip", &["-j", "-d", "addr", "show"])?;
    let routes = run("ip", &["-j", "-4", "route", "show", "default"])?;
    let found = interfaces(&addrs, &routes)?;
    // Loopback is the guest's own; the namespace's stays up for the engine's helpers.
    let _ = run("ip", &["link", "set", "lo", "up"]);
    let mut nics = Vec::new();
    let mut pairs = Vec::new();
    for (i, iface) in found.into_iter().enumerate() {
        let tap = tap_name(i);
        let mtu = iface.config.mtu.unwrap_or(1500).to_string();
        // Left by a relay that was killed: ours by name.
        disconnect_one(&iface.name, &tap);
        pairs.push((iface.name.clone(), tap.clone()));
        run(
            "ip",
            &["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"],
        )?;
        run("ip", &["link", "set", &tap, "mtu", &mtu, "up"])?;
        for (from, to) in [
            (iface.name.as_str(), tap.as_str()),
            (tap.as_str(), iface.name.as_str()),
        ] {
            run("tc", &["qdisc", "add", "dev", from, "ingress"])?;
            run(
                "tc",
                &[
                    "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
                ],
            )?;
        }
        log.debug(&format!(
            "interface {} joined to {tap}: {:?}",
            iface.name, iface.config
        ));
        nics.push(SandboxNic {
            nic: Nic {
                tap,
                mac: iface.config.mac,
            },
            config: iface.config,
        });
    }
    Ok((nics, pairs))
}

/// Undoes [`connect`] for one interface: its ingress redirect and the TAP.
fn disconnect_one(iface: &str, tap: &str) {
    let _ = run("tc", &["qdisc", "del", "dev", iface, "ingress"]);
    let _ = run("ip", &["link", "del", tap]);
}

/// Undoes [`connect`]: the veths are as the engine made them again.
pub fn disconnect(nics: &[(String, String)]) {
    for (iface, tap) in nics {
        disconnect_one(iface, tap);
    }
}

/// Whether the namespace at `path` is the one this process is in (Docker's `--network host`
/// joins the daemon's own namespace).
pub fn is_own(path: &std::path::Path) -> Result<bool, RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(path)
        .map_err(|e| RuntimeError::Other(format!("network namespace {}: {e}", path.display())))?;
    let own = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| RuntimeError::Other(format!("our network namespace: {e}")))?;
    Ok(target.dev() == own.dev() && target.ino() == own.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRS: &str = r#"[
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"link_type":"loopback",
       "address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":3,"ifname":"docker0","mtu":1500,"link_type":"ether",
       "address":"02:42:45:8b:f1:dc","linkinfo":{"info_kind":"bridge"},
       "addr_info":[{"family":"inet","local":"172.17.0.1","prefixlen":16}]},
      {"ifindex":7,"link_index":8,"ifname":"eth0","flags":["BROADCAST","UP"],"mtu":1500,
       "link_type":"ether","address":"02:42:ac:11:00:02","linkinfo":{"info_kind":"veth"},
       "addr_info":[{"family":"inet","local":"172.17.0.2","prefixlen":16},
                    {"family":"inet6","local":"fe80::42:acff:fe11:2","prefixlen":64}]},
      {"ifindex":9,"ifname":"eth1","mtu":1450,"link_type":"ether","address":"02:42:ac:12:00:05",
       "linkinfo":{"info_kind":"veth"},
       "addr_info":[{"family":"inet","local":"172.18.0.5","prefixlen":24}]},
      {"ifindex":11,"ifname":"eth2","mtu":1500,"link_type":"ether","address":"02:42:ac:13:00:05",
       "addr_info":[]}
    ]"#;

    #[test]
    fn dockers_veths_with_the_default_gateway_on_its_own_and_never_a_bridge() {
        let routes = r#"[{"dst":"default","gateway":"172.17.0.1","dev":"eth0","flags":[]}]"#;
        let found = interfaces(ADDRS, routes).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].name, "eth0");
        assert_eq!(found[0].config.mac.to_string(), "02:42:ac:11:00:02");
        assert_eq!(found[0].config.addr, Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(found[0].config.prefix, 16);
        assert_eq!(found[0].config.gateway, Some(Ipv4Addr::new(172, 17, 0, 1)));
        assert_eq!(found[1].config.gateway, None);
        assert_eq!(found[1].config.mtu, Some(1450));
        // --network none: loopback only, no routes.
        let lo_only = r#"[{"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00"}]"#;
        assert!(interfaces(lo_only, "").unwrap().is_empty());
        assert!(interfaces("not json", "").is_err());
    }

    #[test]
    fn our_own_namespace_is_recognised() {
        assert!(is_own(std::path::Path::new("/proc/self/ns/net")).unwrap());
        assert!(!is_own(std::path::Path::new("/proc/self/ns/mnt")).unwrap());
        assert!(is_own(std::path::Path::new("/nonexistent/ns")).is_err());
    }
}

//! Networks: a Linux bridge with an IPv4 range per network, a TAP per container on it, IPAM,
//! published ports and a DNS server for container names.
//!
//! ```text
//! <root>/networks/<name>.json   a network's record
//! <root>/networks/.lock         serialises creation, removal and address allocation
//! ```
//!
//! Addresses are not kept in a lease file of their own: a container's record holds its
//! endpoints, and the allocator takes the addresses of every existing container as used. A
//! crash can therefore never leak or double-hand an address: what exists is what is used.

pub mod connect;
pub mod dns;
pub mod dns_relay;
pub mod host;
pub mod live;
pub mod ports;
pub mod subnet;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mvm_agent_protocol::boot::MacAddr;
use serde::{Deserialize, Serialize};

pub use subnet::Subnet;

use crate::container;

/// The default network's name, used when `--network` is not given.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's range; `MVM_BRIDGE_SUBNET` changes it before the network exists.
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
/// Docker's predefined networks besides the default bridge, with their drivers: `host` (which
/// a microVM cannot join: it has a kernel and a network stack of its own) and `none`.
pub const PREDEFINED: &[(&str, &str)] = &[("host", "host"), ("none", "null")];

/// A predefined network's ID: the same for a state root every time.
pub fn predefined_id(root: &Path, name: &str) -> String {
    let seed = format!("mvm predefined network {name} {}", root.display());
    mvm_rootfs::Digest::of(seed.as_bytes()).hex().to_string()
}

/// The predefined network (not the bridge) a name or ID prefix means, with its driver.
pub fn find_predefined(root: &Path, key: &str) -> Option<(&'static str, &'static str, String)> {
    PREDEFINED.iter().find_map(|&(name, driver)| {
        let id = predefined_id(root, name);
        let by_id = key.len() >= 3 && id.starts_with(key);
        (key == name || by_id).then_some((name, driver, id))
    })
}

/// MTU of bridges, TAPs and guest interfaces.
pub const MTU: u32 = 1500;

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No network of that name or ID.
    #[error("network {0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// Invalid user input.
    #[error("{0}")]
    Invalid(String),
    /// A network is still used by containers.
    #[error(
        "error while removing network: network {name} id {id} has active endpoints ({containers})"
    )]
    InUse {
        /// Network name.
        name: String,
        /// Network ID.
        id: String,
        /// Names of containers on it.
        containers: String,
    },
    /// The range has no free address.
    #[error("no available IPv4 addresses on network {0}")]
    Exhausted(String),
    /// A host command (ip, nft) or system call failed.
    #[error("{0}")]
    Host(String),
    /// State on disk.
    #[error("{0}")]
    State(String),
}

/// A network's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Always `bridge`.
    pub driver: String,
    /// IPv4 range.
    pub subnet: Subnet,
    /// The bridge's own address, the containers' gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// The Linux bridge's name.
    pub bridge: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl NetworkRecord {
    /// Whether containers on it resolve each other by name (user-defined networks; Docker's
    /// default bridge does not).
    pub fn has_names(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }
}

/// A container's attachment to a network. Addresses are kept in their JSON text form
/// (`"10.89.0.2"`, `"02:42:0a:59:00:02"`), and a record with a bad one does not load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Network name.
    pub network: String,
    /// Network ID.
    pub network_id: String,
    /// The container's IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length of the network.
    pub prefix: u8,
    /// Gateway.
    pub gateway: Ipv4Addr,
    /// The guest interface's MAC.
    pub mac: MacAddr,
    /// The host TAP device.
    pub tap: String,
    /// The bridge the TAP is on.
    pub bridge: String,
    /// Extra names on this network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn dir(root: &Path) -> PathBuf {
    root.join("networks")
}

fn record_path(root: &Path, name: &str) -> PathBuf {
    dir(root).join(format!("{name}.json"))
}

/// Takes the networks lock (allocation, creation, removal).
pub fn lock(root: &Path) -> Result<mvm_rootfs::fsutil::LockFile, NetworkError> {
    std::fs::create_dir_all(dir(root)).map_err(|e| NetworkError::State(e.to_string()))?;
    mvm_rootfs::fsutil::LockFile::acquire(&dir(root).join(".lock"))
        .map_err(|e| NetworkError::State(format!("cannot lock the networks: {e}")))
}

/// Rewrites the root's nftables rules for the networks it has now (after some were removed);
/// a failure is logged, the removal stands.
pub fn resync_rules(root: &Path) {
    if let Ok(_lock) = lock(root)
        && let Err(e) = host::sync_rules(root, &list(root))
    {
        tracing::warn!("{e}");
    }
}

/// Every network.
pub fn list(root: &Path) -> Vec<NetworkRecord> {
    let Ok(rd) = std::fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut v: Vec<NetworkRecord> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|d| serde_json::from_slice(&d).ok())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Finds a network by name, full ID or unique ID prefix.
pub fn find(root: &Path, key: &str) -> Result<NetworkRecord, NetworkError> {
    let all = list(root);
    if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
        return Ok(n.clone());
    }
    let by_prefix: Vec<&NetworkRecord> =
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            all.iter().filter(|n| n.id.starts_with(key)).collect()
        } else {
            Vec::new()
        };
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(NetworkError::NotFound(key.to_string())),
        _ => Err(NetworkError::Invalid(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            by_prefix.len()
        ))),
    }
}

fn save(root: &Path, rec: &NetworkRecord) -> Result<(), NetworkError> {
    std::fs::create_dir_all(dir(root)).map_err(|e| NetworkError::State(e.to_string()))?;
    let data = serde_json::to_vec_pretty(rec).map_err(|e| NetworkError::State(e.to_string()))?;
    mvm_rootfs::fsutil::atomic_write(&record_path(root, &rec.name), &data)
        .map_err(|e| NetworkError::State(format!("cannot write the network record: {e}")))
}

/// Validates a network name as Docker does for container names.
fn valid_name(name: &str) -> bool {
    container::valid_name(name) && !matches!(name, "none" | "host" | "default")
}

/// Creates a network record (the bridge itself is made when a container first needs it).
/// The caller holds the lock.
pub fn create_locked(
    root: &Path,
    name: &str,
    subnet: Option<&str>,
    gateway: Option<&str>,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<NetworkRecord, NetworkError> {
    if !valid_name(name) {
        return Err(NetworkError::Invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let all = list(root);
    if all.iter().any(|n| n.name == name) {
        return Err(NetworkError::Exists(name.to_string()));
    }
    let subnet = match subnet {
        Some(s) => Subnet::parse(s).map_err(NetworkError::Invalid)?,
        None => free_subnet(&all)?,
    };
    if subnet.prefix > 30 {
        return Err(NetworkError::Invalid(format!(
            "subnet {subnet} is too small: use a prefix of /30 or shorter"
        )));
    }
    for other in &all {
        let o = other.subnet;
        if o.overlaps(&subnet) {
            return Err(NetworkError::Invalid(format!(
                "invalid pool request: Pool overlaps with other one on this address space ({subnet} and network {}'s {o})",
                other.name
            )));
        }
    }
    let gateway = match gateway {
        Some(g) => {
            let ip: Ipv4Addr = g
                .parse()
                .map_err(|_| NetworkError::Invalid(format!("invalid gateway address {g:?}")))?;
            if !subnet.contains_host(ip) {
                return Err(NetworkError::Invalid(format!(
                    "no matching subnet for gateway {g}: it must be a host address in {subnet}"
                )));
            }
            ip
        }
        None => subnet.host(1),
    };
    let id = container::new_id().map_err(NetworkError::State)?;
    let rec = NetworkRecord {
        bridge: format!("mvmbr-{}", &id[..8]),
        id,
        name: name.to_string(),
        driver: "bridge".into(),
        subnet,
        gateway,
        created: mvm_rootfs::time::now(),
        labels,
    };
    save(root, &rec)?;
    // The default network is Docker's predefined one: made on first use, not "created".
    if name != DEFAULT_NETWORK {
        let attrs = [("name", name), ("type", "bridge")];
        crate::events::record(root, "network", "create", &rec.id, &attrs);
    }
    Ok(rec)
}

/// A /16 in 10.90.0.0-10.250.0.0 that no network uses yet (`network create` without
/// `--subnet`).
fn free_subnet(all: &[NetworkRecord]) -> Result<Subnet, NetworkError> {
    // Ranges routed here already (another state root's running bridge, the host's own
    // networks) are not taken either, as Docker's address pools skip them.
    let routed = host::routed_subnets();
    let free = |cand: &Subnet| {
        all.iter().all(|n| !n.subnet.overlaps(cand)) && routed.iter().all(|r| !r.overlaps(cand))
    };
    for b in 90u8..=250 {
        let cand = Subnet::new(Ipv4Addr::new(10, b, 0, 0), 16);
        if free(&cand) {
            return Ok(cand);
        }
    }
    Err(NetworkError::Invalid(
        "no free address range left for a new network: give --subnet".into(),
    ))
}

/// The default network, created on first use. The caller holds the lock.
pub fn default_locked(root: &Path) -> Result<NetworkRecord, NetworkError> {
    match find(root, DEFAULT_NETWORK) {
        Ok(n) => Ok(n),
        Err(NetworkError::NotFound(_)) => {
            // DEFAULT_SUBNET unless something here routes it already (another state root's
            // default network, running), then the first free range.
            let subnet = match std::env::var("MVM_BRIDGE_SUBNET") {
                Ok(s) => s,
                Err(_) => {
                    let default = Subnet::parse(DEFAULT_SUBNET).map_err(NetworkError::Invalid)?;
                    if host::routed_subnets().iter().any(|r| r.overlaps(&default)) {
                        free_subnet(&list(root))?.to_string()
                    } else {
                        DEFAULT_SUBNET.to_string()
                    }
                }
            };
            create_locked(
                root,
                DEFAULT_NETWORK,
                Some(&subnet),
                None,
                std::collections::BTreeMap::new(),
            )
        }
        Err(e) => Err(e),
    }
}

/// Containers attached to network `id`, by name.
pub fn users(root: &Path, id: &str) -> Vec<String> {
    container::list(root)
        .into_iter()
        .filter(|c| c.endpoints.iter().any(|e| e.network_id == id))
        .map(|c| c.name)
        .collect()
}

/// Removes a network that no container uses: its bridge, rules and record.
pub fn remove(root: &Path, key: &str) -> Result<NetworkRecord, NetworkError> {
    let _lock = lock(root)?;
    let rec = find(root, key)?;
    let users = users(root, &rec.id);
    if !users.is_empty() {
        return Err(NetworkError::InUse {
            name: rec.name.clone(),
            id: rec.id.clone(),
            containers: users.join(", "),
        });
    }
    host::remove_bridge(&rec)?;
    std::fs::remove_file(record_path(root, &rec.name))
        .map_err(|e| NetworkError::State(format!("cannot remove the network record: {e}")))?;
    crate::events::record(
        root,
        "network",
        "destroy",
        &rec.id,
        &[("name", &rec.name), ("type", "bridge")],
    );
    Ok(rec)
}

/// A locally administered unicast MAC derived from the address, as Docker does (02:42:...).
pub fn mac_for(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x02, 0x42, a, b, c, d])
}

/// Interfaces a VM can have: one hex digit of index in the TAP's name.
pub const MAX_NICS: usize = 16;

/// The TAP device name of a container's `index`th interface (IFNAMSIZ allows 15 bytes).
pub fn tap_name(container_id: &str, index: usize) -> String {
    format!("mvt{}{:x}", &container_id[..11], index)
}

/// Spare interfaces a running VM gets for `network connect` (`MVM_SPARE_NICS`, 0 to 8;
/// default 2): virtio-mmio has no hotplug, so they exist from boot, unconfigured.
pub fn spare_nic_count() -> usize {
    std::env::var("MVM_SPARE_NICS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(2, |n| n.min(8))
}

/// The VM's interfaces for a container: its endpoints', then `spares` more (none with
/// `--network none`), each on a TAP index no endpoint uses and with a MAC of its own.
pub fn vm_nics(rec: &container::ContainerRecord, spares: usize) -> Vec<crate::backend::Nic> {
    let mut nics: Vec<crate::backend::Nic> = rec
        .endpoints
        .iter()
        .map(|e| crate::backend::Nic {
            tap: e.tap.clone(),
            mac: e.mac,
        })
        .collect();
    if rec.spec.network == crate::container::NetworkMode::None {
        return nics;
    }
    let mut index = 0;
    for _ in 0..spares {
        while nics.iter().any(|n| n.tap == tap_name(&rec.id, index)) {
            index += 1;
        }
        if index >= MAX_NICS {
            break;
        }
        nics.push(crate::backend::Nic {
            tap: tap_name(&rec.id, index),
            mac: spare_mac(&rec.id, index),
        });
        index += 1;
    }
    nics
}

/// A spare interface's MAC: locally administered (02), `6d` for mvm, three bytes of the
/// container's ID and the interface's index (apart from Docker-style 02:42 addresses).
pub fn spare_mac(container_id: &str, index: usize) -> MacAddr {
    let byte = |i: usize| {
        container_id
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    MacAddr([0x02, 0x6d, byte(0), byte(2), byte(4), (index & 0xff) as u8])
}

/// Allocates an address on `net` for a new endpoint of container `container_id`. The caller
/// holds the lock, and saves the endpoint in the container's record before releasing it.
pub fn allocate_locked(
    root: &Path,
    net: &NetworkRecord,
    container_id: &str,
    index: usize,
    aliases: Vec<String>,
    pending: &[Endpoint],
) -> Result<Endpoint, NetworkError> {
    let subnet = net.subnet;
    let used: std::collections::BTreeSet<Ipv4Addr> = container::list(root)
        .iter()
        .flat_map(|c| c.endpoints.iter())
        .chain(pending.iter())
        .filter(|e| e.network_id == net.id)
        .map(|e| e.ip)
        .collect();
    let ip = subnet
        .hosts()
        .find(|ip| *ip != net.gateway && !used.contains(ip))
        .ok_or_else(|| NetworkError::Exhausted(net.name.clone()))?;
    Ok(Endpoint {
        network: net.name.clone(),
        network_id: net.id.clone(),
        ip,
        prefix: subnet.prefix,
        gateway: net.gateway,
        mac: mac_for(ip),
        tap: tap_name(container_id, index),
        bridge: net.bridge.clone(),
        aliases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        assert!(valid_name("backend-1"));
        assert!(!valid_name("host"));
        assert!(!valid_name("a b"));
        assert_eq!(
            mac_for("10.89.0.2".parse().unwrap()).to_string(),
            "02:42:0a:59:00:02"
        );
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(spare_mac(&id, 3).to_string(), "02:6d:01:23:45:03");
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(tap_name(&id, 0), "mvt0123456789a0");
        assert!(tap_name(&id, 9).len() <= 15);
    }

    /// Records keep addresses as text, and load back the same.
    #[test]
    fn records_round_trip_as_text() {
        let ep = Endpoint {
            network: "bridge".into(),
            network_id: "ab".repeat(32),
            ip: Ipv4Addr::new(10, 89, 0, 2),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 89, 0, 1),
            mac: mac_for(Ipv4Addr::new(10, 89, 0, 2)),
            tap: "mvt0123456789a0".into(),
            bridge: "mvmbr-abababab".into(),
            aliases: vec!["db".into()],
        };
        let json: serde_json::Value = serde_json::to_value(&ep).unwrap();
        assert_eq!(json["ip"], "10.89.0.2");
        assert_eq!(json["gateway"], "10.89.0.1");
        assert_eq!(json["mac"], "02:42:0a:59:00:02");
        assert_eq!(
            serde_json::from_value::<Endpoint>(json.clone()).unwrap(),
            ep
        );
        for (key, bad) in [
            ("ip", "10.89.0"),
            ("gateway", "::1"),
            ("mac", "02:42:0a:59:00"),
        ] {
            let mut j = json.clone();
            j[key] = bad.into();
            assert!(
                serde_json::from_value::<Endpoint>(j).is_err(),
                "{key}={bad}"
            );
        }

        let net = NetworkRecord {
            id: "cd".repeat(32),
            name: "backend".into(),
            driver: "bridge".into(),
            subnet: Subnet::parse("10.1.0.0/24").unwrap(),
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            bridge: "mvmbr-cdcdcdcd".into(),
            created: "2026-01-01T00:00:00Z".into(),
            labels: Default::default(),
        };
        let json: serde_json::Value = serde_json::to_value(&net).unwrap();
        assert_eq!(json["subnet"], "10.1.0.0/24");
        assert_eq!(json["gateway"], "10.1.0.1");
        let back: NetworkRecord = serde_json::from_value(json).unwrap();
        assert_eq!((back.subnet, back.gateway), (net.subnet, net.gateway));
    }

    #[test]
    fn create_allocate_and_overlap() {
        let root = std::env::temp_dir().join(format!("mvm-net-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let a = create_locked(&root, "a", Some("10.1.0.0/24"), None, Default::default()).unwrap();
        assert_eq!(a.gateway.to_string(), "10.1.0.1");
        assert!(matches!(
            create_locked(&root, "a", None, None, Default::default()),
            Err(NetworkError::Exists(_))
        ));
        assert!(
            create_locked(&root, "b", Some("10.1.0.128/25"), None, Default::default()).is_err()
        );
        assert!(
            create_locked(
                &root,
                "c",
                Some("10.2.0.0/24"),
                Some("10.3.0.1"),
                Default::default()
            )
            .is_err()
        );
        let auto = create_locked(&root, "d", None, None, Default::default()).unwrap();
        assert_eq!(auto.subnet.to_string(), "10.90.0.0/16");
        let id = "ab".repeat(32);
        let e1 = allocate_locked(&root, &a, &id, 0, vec![], &[]).unwrap();
        assert_eq!(e1.ip.to_string(), "10.1.0.2");
        let e2 = allocate_locked(&root, &a, &id, 1, vec![], std::slice::from_ref(&e1)).unwrap();
        assert_eq!(e2.ip.to_string(), "10.1.0.3");
        assert_eq!(find(&root, &a.id[..10]).unwrap().name, "a");
        assert!(matches!(find(&root, "zzz"), Err(NetworkError::NotFound(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}

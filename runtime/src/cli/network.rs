//! `mvm network ...` and `mvm port`, printed as Docker prints them.

use std::collections::BTreeMap;
use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::filter::Filters;
use crate::output::table::{Headers, labels_column, print_formatted};
use mvm_engine::container;
use mvm_engine::network::{self, NetworkError, NetworkRecord};

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, e.to_string())
}

/// `mvm network SUBCOMMAND`.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect {
        /// Format the output using the given Go template.
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        /// Add network-scoped alias for the container.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Force the container to disconnect from a network.
        #[arg(short = 'f', long)]
        force: bool,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
}

/// `network create` arguments.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the network (only bridge).
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long)]
    subnet: Option<String>,
    /// IPv4 gateway for the subnet.
    #[arg(long)]
    gateway: Option<String>,
    /// Set metadata on a network (key=value).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Network name.
    name: String,
}

/// `network ls` arguments.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not truncate the output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a template.
    #[arg(long)]
    format: Option<String>,
    /// Filter output: name=, id=, driver=, label=KEY[=VALUE], type=custom|builtin.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
}

/// `mvm network ...`.
pub fn network(root: &Path, cmd: &NetworkCommand) -> Result<i32, CliError> {
    match cmd {
        NetworkCommand::Create(a) => create(root, a),
        NetworkCommand::Ls(a) => ls(root, a),
        NetworkCommand::Inspect { format, networks } => inspect(root, networks, format.as_deref()),
        NetworkCommand::Rm { networks } => rm(root, networks),
        NetworkCommand::Prune { force } => prune(root, *force),
        NetworkCommand::Connect {
            aliases,
            network,
            container,
        } => {
            network::connect::connect(root, network, container, aliases)?;
            Ok(0)
        }
        NetworkCommand::Disconnect {
            force: _,
            network,
            container,
        } => {
            network::connect::disconnect(root, network, container)?;
            Ok(0)
        }
    }
}

fn create(root: &Path, a: &CreateArgs) -> Result<i32, CliError> {
    if a.driver != "bridge" {
        return Err(CliError::usage(format!(
            "network driver {:?} is not supported: only bridge",
            a.driver
        )));
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let _lock = network::lock(root).map_err(CliError::runtime)?;
    let rec = network::create_locked(
        root,
        &a.name,
        a.subnet.as_deref(),
        a.gateway.as_deref(),
        labels,
    )
    .map_err(|e| match e {
        NetworkError::Invalid(m) => CliError::usage(m),
        other => failed(other),
    })?;
    println!("{}", rec.id);
    Ok(0)
}

/// Column names of `network ls`, as Docker's.
const LS_HEADERS: Headers = &[("ID", "NETWORK ID")];

fn ls(root: &Path, a: &LsArgs) -> Result<i32, CliError> {
    // The default network is listed even before its first use, as Docker always has one.
    {
        let _lock = network::lock(root).map_err(CliError::runtime)?;
        network::default_locked(root).map_err(CliError::runtime)?;
    }
    let filters = Filters::parse(&a.filter, &["name", "id", "driver", "label", "type"])?;
    // What a row shows; Docker's host and none are listed as it lists them (no record of
    // ours holds them).
    struct Listed {
        id: String,
        name: String,
        driver: String,
        created: String,
        labels: BTreeMap<String, String>,
    }
    let records = network::list(root);
    let created = records
        .iter()
        .find(|n| n.name == network::DEFAULT_NETWORK)
        .map(|n| n.created.clone())
        .unwrap_or_default();
    let mut all: Vec<Listed> = records
        .into_iter()
        .map(|n| Listed {
            id: n.id,
            name: n.name,
            driver: n.driver,
            created: n.created,
            labels: n.labels,
        })
        .chain(network::PREDEFINED.iter().map(|&(name, driver)| Listed {
            id: network::predefined_id(root, name),
            name: name.to_string(),
            driver: driver.to_string(),
            created: created.clone(),
            labels: BTreeMap::new(),
        }))
        .collect();
    all.sort_by(|x, y| x.name.cmp(&y.name));
    let rows: Vec<BTreeMap<&str, String>> = all
        .iter()
        .filter(|n| {
            let builtin = n.name == network::DEFAULT_NETWORK
                || network::PREDEFINED.iter().any(|(p, _)| *p == n.name);
            filters.any("name", |v| n.name.contains(v))
                && filters.any("id", |v| n.id.starts_with(v))
                && filters.any("driver", |v| n.driver == v)
                && filters.any("type", |v| (v == "builtin") == builtin)
                && filters.labels(&n.labels)
        })
        .map(|n| {
            BTreeMap::from([
                (
                    "ID",
                    if a.no_trunc {
                        n.id.clone()
                    } else {
                        n.id[..12].to_string()
                    },
                ),
                ("Name", n.name.clone()),
                ("Driver", n.driver.clone()),
                ("Scope", "local".to_string()),
                ("CreatedAt", n.created.clone()),
                ("IPv4", "true".to_string()),
                ("IPv6", "false".to_string()),
                ("Internal", "false".to_string()),
                ("Labels", labels_column(&n.labels)),
            ])
        })
        .collect();
    let format = if a.quiet {
        "{{.ID}}"
    } else {
        a.format
            .as_deref()
            .unwrap_or("table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}")
    };
    print_formatted(format, &rows, LS_HEADERS)?;
    Ok(0)
}

/// `network inspect host` / `none`: Docker's document for them.
fn predefined_json(root: &Path, name: &str, driver: &str, id: &str) -> Value {
    let mut containers = serde_json::Map::new();
    if name == "none" {
        for c in container::list(root)
            .into_iter()
            .filter(|c| c.endpoints.is_empty())
        {
            containers.insert(c.id.clone(), endpoint_json(&c.name, "", "", ""));
        }
    }
    let created = network::list(root)
        .into_iter()
        .find(|n| n.name == network::DEFAULT_NETWORK)
        .map(|n| n.created)
        .unwrap_or_default();
    network_json(
        (name, id, &created, driver),
        json!({ "Driver": "default", "Options": null, "Config": [] }),
        containers,
        (json!({}), json!({})),
    )
}

fn inspect_json(root: &Path, n: &NetworkRecord) -> Value {
    let mut containers = serde_json::Map::new();
    for c in container::list(root) {
        for e in c.endpoints.iter().filter(|e| e.network_id == n.id) {
            let ip = format!("{}/{}", e.ip, e.prefix);
            containers.insert(
                c.id.clone(),
                endpoint_json(&c.name, &e.tap, &e.mac.to_string(), &ip),
            );
        }
    }
    network_json(
        (&n.name, &n.id, &n.created, &n.driver),
        json!({
            "Driver": "default",
            "Options": {},
            "Config": [{ "Subnet": n.subnet, "Gateway": n.gateway }],
        }),
        containers,
        (
            json!({ "com.docker.network.bridge.name": n.bridge }),
            json!(n.labels),
        ),
    )
}

/// A container's entry in a network's `Containers`.
fn endpoint_json(name: &str, endpoint: &str, mac: &str, ipv4: &str) -> Value {
    json!({
        "Name": name,
        "EndpointID": endpoint,
        "MacAddress": mac,
        "IPv4Address": ipv4,
        "IPv6Address": "",
    })
}

/// Docker's network document: (name, ID, created, driver), its IPAM, its containers and
/// (options, labels).
fn network_json(
    (name, id, created, driver): (&str, &str, &str, &str),
    ipam: Value,
    containers: serde_json::Map<String, Value>,
    (options, labels): (Value, Value),
) -> Value {
    json!({
        "Name": name,
        "Id": id,
        "Created": created,
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": ipam,
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": labels,
    })
}

fn inspect(root: &Path, keys: &[String], format: Option<&str>) -> Result<i32, CliError> {
    crate::output::inspect::print_found(keys, format, |k| {
        if let Some((name, driver, id)) = network::find_predefined(root, k) {
            return Ok(predefined_json(root, name, driver, &id));
        }
        let found = if k == network::DEFAULT_NETWORK {
            let _lock = network::lock(root).map_err(|e| e.to_string())?;
            network::default_locked(root)
        } else {
            network::find(root, k)
        };
        found
            .map(|n| inspect_json(root, &n))
            .map_err(|e| e.to_string())
    })
}

fn rm(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    let mut code = 0;
    for k in keys {
        if k == network::DEFAULT_NETWORK || network::PREDEFINED.iter().any(|(p, _)| p == k) {
            eprintln!("mvm: {k} is a pre-defined network and cannot be removed");
            code = 1;
            continue;
        }
        match network::remove(root, k) {
            Ok(_) => println!("{k}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = 1;
            }
        }
    }
    network::resync_rules(root);
    Ok(code)
}

fn prune(root: &Path, force: bool) -> Result<i32, CliError> {
    if !crate::output::prompt::confirm(
        force,
        "This will remove all custom networks not used by at least one container.",
    ) {
        return Ok(0);
    }
    let removed = mvm_engine::system::prune_networks(root);
    if !removed.is_empty() {
        println!("Deleted Networks:");
        for n in removed {
            println!("{n}");
        }
    }
    Ok(0)
}

/// `mvm port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(root: &Path, key: &str, private: Option<&str>) -> Result<i32, CliError> {
    let (_, rec) = container::resolve(root, key).map_err(failed)?;
    let mut ports: Vec<_> = if rec.is_running() {
        rec.ports.clone()
    } else {
        Vec::new()
    };
    // Docker's order: by container port and protocol, then the host end.
    ports.sort_by_key(|p| (p.container_port, p.proto.name(), p.host_addr()));
    match private {
        None => {
            for p in &ports {
                println!("{} -> {}", p.key(), p.host_addr());
            }
            Ok(0)
        }
        Some(want) => {
            let want = if want.contains('/') {
                want.to_string()
            } else {
                format!("{want}/tcp")
            };
            let hits: Vec<_> = ports.iter().filter(|p| p.key() == want).collect();
            if hits.is_empty() {
                return Err(failed(format!(
                    "No public port '{want}' published for {}",
                    rec.name
                )));
            }
            for p in hits {
                println!("{}", p.host_addr());
            }
            Ok(0)
        }
    }
}

/// `port`'s arguments.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// Container.
    pub container: String,
    /// PRIVATE_PORT[/PROTO].
    pub private: Option<String>,
}

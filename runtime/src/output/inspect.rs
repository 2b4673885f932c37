//! The JSON documents `inspect` prints and the columns `ps` shares with it, in Docker's
//! shapes: a container's network settings and mounts, an image's description.

use std::path::Path;

use mvm_engine::container::ContainerRecord;
use mvm_engine::volume::{self, mounts::Kind};
use mvm_rootfs::{ImageRecord, Store, StoreError, catalog};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::template::Template;

/// `ps`'s PORTS column: `0.0.0.0:8080->80/tcp, ...`.
pub fn ports_column(rec: &ContainerRecord) -> String {
    rec.ports
        .iter()
        .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.key()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `HostConfig.PortBindings`: the `-p` flags as given (an unset address or port is "").
pub fn port_bindings(ports: &[mvm_engine::network::ports::PortMapping]) -> Value {
    let mut map = serde_json::Map::new();
    for p in ports {
        let host_ip = if p.host_ip.is_unspecified() {
            String::new()
        } else {
            p.host_ip.to_string()
        };
        let host_port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        if let Some(list) = map
            .entry(p.key())
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            list.push(json!({ "HostIp": host_ip, "HostPort": host_port }));
        }
    }
    Value::Object(map)
}

/// `HostConfig.Binds`: host directories and named volumes as `-v` writes them; null when none.
pub fn binds(mounts: &[volume::mounts::MountSpec]) -> Value {
    let binds: Vec<String> = mounts
        .iter()
        .filter(|m| {
            matches!(m.kind, Kind::Bind | Kind::Volume) && !m.source.is_empty() && !m.anonymous
        })
        .map(|m| {
            let ro = if m.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}", m.source, m.target)
        })
        .collect();
    if binds.is_empty() {
        Value::Null
    } else {
        json!(binds)
    }
}

/// `NetworkSettings` of a container's inspect JSON.
pub fn network_settings(rec: &ContainerRecord) -> Value {
    let mut networks = serde_json::Map::new();
    for e in &rec.endpoints {
        networks.insert(
            e.network.clone(),
            json!({
                "NetworkID": e.network_id,
                "EndpointID": e.tap,
                "Gateway": e.gateway,
                "IPAddress": e.ip,
                "IPPrefixLen": e.prefix,
                "MacAddress": e.mac,
                "Aliases": e.aliases,
            }),
        );
    }
    let mut ports = serde_json::Map::new();
    for p in &rec.ports {
        let entry = ports.entry(p.key()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                json!({ "HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string() }),
            );
        }
    }
    let first = rec.endpoints.first();
    json!({
        "Networks": networks,
        "Ports": ports,
        "IPAddress": first.map(|e| e.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": first.map(|e| e.prefix).unwrap_or(0),
        "Gateway": first.map(|e| e.gateway.to_string()).unwrap_or_default(),
        "MacAddress": first.map(|e| e.mac.to_string()).unwrap_or_default(),
    })
}

/// `Mounts` of a container's inspect JSON.
pub fn mounts_json(root: &Path, rec: &ContainerRecord) -> Value {
    Value::Array(
        rec.mounts
            .iter()
            .map(|m| {
                let source = match m.kind {
                    Kind::Volume => volume::data_dir(root, &m.source).display().to_string(),
                    Kind::Bind => m.source.clone(),
                    Kind::Tmpfs => String::new(),
                };
                let mut v = json!({
                    "Type": m.kind.name(),
                    "Source": source,
                    "Destination": m.target,
                    "Mode": if m.read_only { "ro" } else { "" },
                    "RW": !m.read_only,
                    "Propagation": "",
                });
                if m.kind == Kind::Volume {
                    v["Name"] = json!(m.source);
                    v["Driver"] = json!("local");
                }
                v
            })
            .collect(),
    )
}

/// The JSON Docker prints for an image.
pub fn image_json(store: &Store, img: &ImageRecord) -> Value {
    let digests = catalog::repo_digests(store).unwrap_or_default();
    let extra = &img.config.extra;
    json!({
        "Id": img.id.to_string(),
        "RepoTags": img.tags,
        "RepoDigests": catalog::repo_digests_of(&digests, &img.manifest_digest),
        "Parent": "",
        "Comment": extra.get("comment").cloned().unwrap_or(Value::String(String::new())),
        "Created": img.config.created.clone().unwrap_or_default(),
        "DockerVersion": extra.get("docker_version").cloned().unwrap_or(Value::String(String::new())),
        "Author": extra.get("author").cloned().unwrap_or(Value::String(String::new())),
        "Config": img.config.config,
        "Architecture": img.config.architecture,
        "Os": img.config.os,
        "Size": image_size(img),
        "RootFS": {
            "Type": img.config.rootfs.kind,
            "Layers": img.config.rootfs.diff_ids,
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
}

/// The inspect JSON of the image `name`, `None` when the store has no such image (for
/// `mvm inspect`, which tries containers first).
pub fn image_value(root: &Path, name: &str) -> Result<Option<Value>, CliError> {
    let store = Store::open(&root.join("images")).map_err(CliError::runtime)?;
    match catalog::resolve(&store, name) {
        Ok(img) => Ok(Some(image_json(&store, &img))),
        Err(StoreError::NotFound(_)) | Err(StoreError::Reference(_)) => Ok(None),
        Err(e) => Err(CliError::runtime(e)),
    }
}

/// Bytes of an image's layers (compressed, as stored).
pub fn image_size(img: &ImageRecord) -> u64 {
    img.manifest.layers.iter().map(|l| l.size).sum()
}

/// Docker's `inspect` of several objects: one JSON array of those `find` found, printed once,
/// and a line on stderr for each it did not; the exit code is 1 if any was missing.
pub fn print_found<E: std::fmt::Display>(
    keys: &[String],
    format: Option<&str>,
    mut find: impl FnMut(&str) -> Result<Value, E>,
) -> Result<i32, CliError> {
    let template = format.map(parse_format).transpose()?;
    let mut out = Vec::new();
    let mut code = 0;
    for key in keys {
        match find(key) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = 1;
            }
        }
    }
    print_values(&out, template.as_ref())?;
    Ok(code)
}

/// An `-f`/`--format` template, `json` meaning `{{json .}}` as Docker's.
pub fn parse_format(format: &str) -> Result<Template, CliError> {
    let text = if format == "json" {
        "{{json .}}".to_string()
    } else {
        format.replace("\\t", "\t").replace("\\n", "\n")
    };
    Template::parse(&text)
        .map_err(|e| CliError::with_code(1, format!("template parsing error: {e}")))
}

/// Inspect documents: an indented JSON array, or each through the template on its line.
pub fn print_values(values: &[Value], template: Option<&Template>) -> Result<(), CliError> {
    match template {
        None => println!(
            "{}",
            serde_json::to_string_pretty(values).unwrap_or_else(|_| "[]".into())
        ),
        Some(t) => {
            for v in values {
                let line = t
                    .render(v)
                    .map_err(|e| CliError::with_code(1, format!("template parsing error: {e}")))?;
                println!("{line}");
            }
        }
    }
    Ok(())
}

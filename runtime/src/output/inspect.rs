//! The JSON documents `inspect` prints and the columns `ps` shares with it, in Docker's
//! shapes: a container's network settings and mounts, an image's description.

use std::path::Path;

use mvm_engine::container::spec::LogConfig;
use mvm_engine::container::{ContainerDirs, ContainerRecord, Status};
use mvm_engine::volume::{self, mounts::Kind};
use mvm_rootfs::{ImageRecord, Store, StoreError, catalog};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::template::Template;

/// `ps`'s PORTS column: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`, in Docker's order (by
/// container port, host port, protocol, address).
pub fn ports_column(rec: &ContainerRecord) -> String {
    let mut ports: Vec<_> = rec.ports.iter().collect();
    ports.sort_by_key(|p| {
        (
            p.container_port,
            p.host_port,
            p.proto.name(),
            p.host_ip.to_string(),
        )
    });
    ports
        .iter()
        .map(|p| format!("{}->{}", p.host_addr(), p.key()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A container's inspect JSON: every key of Docker's (20.10, API 1.41), with mvm's values
/// where it has them and Docker's values for an option left unset elsewhere.
pub fn container_json(root: &Path, dirs: &ContainerDirs, rec: &ContainerRecord) -> Value {
    let (status, exit) = rec.effective();
    let (spec, process, st) = (&rec.spec, &rec.process, &rec.state);
    let (log_type, log_config) = match &spec.log {
        LogConfig::JsonFile(o) => {
            let mut c =
                json!({ "max-size": o.max_size.to_string(), "max-file": o.max_file.to_string() });
            for (k, v) in spec.log_opts.iter().filter_map(|o| o.split_once('=')) {
                if matches!(k, "labels" | "env") {
                    c[k] = json!(v);
                }
            }
            ("json-file", c)
        }
        LogConfig::None => ("none", json!({})),
    };
    let ulimits: Vec<Value> = spec
        .ulimits
        .iter()
        .map(|u| json!({ "Name": u.kind, "Soft": u.soft, "Hard": u.hard }))
        .collect();
    let sysctls: serde_json::Map<String, Value> = spec
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let null_if_empty = |v: &[String]| if v.is_empty() { Value::Null } else { json!(v) };
    let host_config = json!({
        "Binds": binds(&spec.mounts),
        "ContainerIDFile": "",
        "LogConfig": { "Type": log_type, "Config": log_config },
        "NetworkMode": spec.network.to_string(),
        "PortBindings": port_bindings(&spec.ports),
        "RestartPolicy": {
            "Name": spec.restart.name(),
            "MaximumRetryCount": spec.restart.max_retries(),
        },
        "AutoRemove": spec.auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": Value::Null,
        "CapAdd": null_if_empty(&spec.cap_add),
        "CapDrop": null_if_empty(&spec.cap_drop),
        "CgroupnsMode": "private",
        "Dns": spec.dns,
        "DnsOptions": spec.dns_options,
        "DnsSearch": spec.dns_search,
        "ExtraHosts": null_if_empty(&spec.extra_hosts),
        "GroupAdd": Value::Null,
        "IpcMode": "private",
        "Cgroup": "",
        "Links": Value::Null,
        "OomScoreAdj": 0,
        "PidMode": "",
        "Privileged": spec.privileged,
        "PublishAllPorts": spec.publish_all,
        "ReadonlyRootfs": spec.read_only,
        "Init": spec.init,
        "SecurityOpt": Value::Null,
        "Sysctls": if sysctls.is_empty() { Value::Null } else { Value::Object(sysctls) },
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": spec.shm_size.unwrap_or(64 << 20),
        "Runtime": rec.vm.backend,
        "ConsoleSize": [0, 0],
        "Isolation": "",
        "CpuShares": 0,
        "Memory": spec.resources.memory_mib << 20,
        "NanoCpus": u64::from(spec.resources.vcpus) * 1_000_000_000,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": [],
        "BlkioDeviceReadBps": Value::Null,
        "BlkioDeviceWriteBps": Value::Null,
        "BlkioDeviceReadIOps": Value::Null,
        "BlkioDeviceWriteIOps": Value::Null,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DeviceCgroupRules": Value::Null,
        "DeviceRequests": Value::Null,
        "KernelMemory": 0,
        "KernelMemoryTCP": 0,
        "MemoryReservation": 0,
        // A VM has no swap beside its memory.
        "MemorySwap": spec.resources.memory_mib << 20,
        "MemorySwappiness": Value::Null,
        "OomKillDisable": false,
        "PidsLimit": Value::Null,
        "Ulimits": if ulimits.is_empty() { Value::Null } else { json!(ulimits) },
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "MaskedPaths": Value::Null,
        "ReadonlyPaths": Value::Null,
    });
    let config = json!({
        "Hostname": process.hostname,
        "Domainname": "",
        "User": process.user,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": exposed_ports(rec),
        "Tty": spec.tty,
        "OpenStdin": spec.interactive,
        "StdinOnce": false,
        "Env": process.env,
        "Cmd": process.args,
        "Image": spec.image,
        "Volumes": Value::Null,
        "WorkingDir": process.cwd,
        "Entrypoint": spec.entrypoint,
        "OnBuild": Value::Null,
        "Labels": spec.labels,
        "StopSignal": spec.stop_signal,
        "StopTimeout": spec.stop_timeout,
    });
    json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": process.args.first(),
        "Args": process.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": status,
            "Running": matches!(status, Status::Running | Status::Paused),
            "Paused": status == Status::Paused,
            "Restarting": status == Status::Restarting,
            "OOMKilled": false,
            "Dead": status == Status::Dead,
            "Pid": if status == Status::Running { st.pid.unwrap_or(0) } else { 0 },
            "ExitCode": exit.unwrap_or(0),
            "Error": st.error.clone().unwrap_or_default(),
            "StartedAt": st.started_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
            "FinishedAt": st.finished_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
        },
        "Image": rec.image_id,
        // The guest's files: written into the container's own disk, not on the host.
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": dirs.log_path(),
        "Name": format!("/{}", rec.name),
        "RestartCount": st.restart_count,
        "Driver": "mvm",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": Value::Null,
        "HostConfig": host_config,
        "GraphDriver": {
            "Data": {
                "LowerDir": rec.vm.image_disk,
                "UpperDir": dirs.dir.join("upper.ext4"),
                // Merged inside the guest only.
                "MergedDir": "",
                "WorkDir": "",
            },
            "Name": "mvm",
        },
        "Mounts": mounts_json(root, rec),
        "Config": config,
        "NetworkSettings": network_settings(rec),
    })
}

/// Docker's time for "never" (`StartedAt` of a container never started).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn exposed_ports(rec: &ContainerRecord) -> Value {
    let ports: serde_json::Map<String, Value> =
        rec.ports.iter().map(|p| (p.key(), json!({}))).collect();
    if ports.is_empty() {
        Value::Null
    } else {
        Value::Object(ports)
    }
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
                "IPAMConfig": Value::Null,
                "Links": Value::Null,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DriverOpts": Value::Null,
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
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SandboxKey": "",
        "SecondaryIPAddresses": Value::Null,
        "SecondaryIPv6Addresses": Value::Null,
        "EndpointID": first.map(|e| e.tap.clone()).unwrap_or_default(),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "",
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
        "Container": extra.get("container").cloned().unwrap_or(Value::String(String::new())),
        "ContainerConfig": docker_config(extra.get("container_config").cloned().unwrap_or(Value::Null)),
        "Config": docker_config(serde_json::to_value(&img.config.config).unwrap_or(Value::Null)),
        "Architecture": img.config.architecture,
        "Os": img.config.os,
        "Size": mvm_engine::image::size(img),
        "VirtualSize": mvm_engine::image::size(img),
        // No host directory holds an image's merged tree: a microVM boots it from a disk.
        "GraphDriver": {
            "Name": "mvm",
            "Data": { "MergedDir": "", "UpperDir": "", "WorkDir": "" },
        },
        "RootFS": {
            "Type": img.config.rootfs.kind,
            "Layers": img.config.rootfs.diff_ids,
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
}

/// An image's `Config` (or legacy `ContainerConfig`) with every key Docker prints, the
/// image's own values kept.
fn docker_config(given: Value) -> Value {
    let mut c = match given {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let defaults = [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ];
    for (k, v) in defaults {
        c.entry(k).or_insert(v);
    }
    Value::Object(c)
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

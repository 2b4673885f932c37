//! `mvm inspect`: containers, or images by that name, as Docker's JSON.

use std::path::Path;

use mvm_engine::container::{self, Status};

use crate::error::CliError;

/// `inspect`'s arguments (also `container inspect`).
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format the output using the given Go template.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Return JSON for the specified type: container or image (either when not given).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes (accepted; sizes are not computed).
    #[arg(short = 's', long)]
    pub size: bool,
    /// Containers or images.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `mvm container inspect`: containers only.
pub fn inspect_containers(root: &Path, args: &InspectArgs) -> Result<i32, CliError> {
    if args.kind.as_deref().is_some_and(|k| k != "container") {
        return Err(CliError::usage("unknown flag: --type".into()));
    }
    inspect_kinds(root, args, true, false)
}

/// `mvm inspect`: containers (or images of that name), in Docker's JSON shape as far as it
/// applies, or through `-f`.
pub fn inspect(root: &Path, args: &InspectArgs) -> Result<i32, CliError> {
    let (containers, images) = match args.kind.as_deref() {
        None => (true, true),
        Some("container") => (true, false),
        Some("image") => (false, true),
        Some(other) => {
            return Err(CliError::with_code(
                1,
                format!("\"{other}\" is not a valid value for --type"),
            ));
        }
    };
    inspect_kinds(root, args, containers, images)
}

fn inspect_kinds(
    root: &Path,
    args: &InspectArgs,
    containers: bool,
    images: bool,
) -> Result<i32, CliError> {
    crate::output::inspect::print_found(&args.names, args.format.as_deref(), |key| {
        let found = if containers {
            container::resolve(root, key).map_err(|e| e.to_string())
        } else {
            Err(format!("No such object: {key}"))
        };
        match found {
            Ok((dirs, rec)) => {
                let (status, exit) = rec.effective();
                let (spec, process, st) = (&rec.spec, &rec.process, &rec.state);
                Ok(serde_json::json!({
                    "Id": rec.id,
                    "Created": rec.created,
                    "Path": process.args.first(),
                    "Args": process.args.get(1..).unwrap_or(&[]),
                    "RestartCount": st.restart_count,
                    "State": {
                        "Status": status,
                        "Running": matches!(status, Status::Running | Status::Paused),
                        "Paused": status == Status::Paused,
                        "Restarting": status == Status::Restarting,
                        "Dead": status == Status::Dead,
                        "Pid": if status == Status::Running { st.pid.unwrap_or(0) } else { 0 },
                        "ExitCode": exit.unwrap_or(0),
                        "Error": st.error.clone().unwrap_or_default(),
                        "StartedAt": st.started_at.clone().unwrap_or_default(),
                        "FinishedAt": st.finished_at.clone().unwrap_or_default(),
                    },
                    "Image": rec.image_id,
                    "LogPath": dirs.log_path(),
                    "Name": format!("/{}", rec.name),
                    "Driver": "mvm",
                    "HostConfig": {
                        "Memory": spec.resources.memory_mib << 20,
                        "NanoCpus": u64::from(spec.resources.vcpus) * 1_000_000_000,
                        "AutoRemove": spec.auto_remove,
                        "Runtime": rec.vm.backend,
                        "NetworkMode": spec.network.to_string(),
                        "PortBindings": crate::output::inspect::port_bindings(&spec.ports),
                        "Binds": crate::output::inspect::binds(&spec.mounts),
                        "RestartPolicy": {
                            "Name": spec.restart.name(),
                            "MaximumRetryCount": spec.restart.max_retries(),
                        },
                    },
                    "Config": {
                        "Hostname": process.hostname,
                        "User": process.user,
                        "Tty": spec.tty,
                        "OpenStdin": spec.interactive,
                        "Env": process.env,
                        "Cmd": process.args,
                        "Image": spec.image,
                        "WorkingDir": process.cwd,
                        "Labels": spec.labels,
                        "StopSignal": spec.stop_signal,
                        "StopTimeout": spec.stop_timeout,
                    },
                    "Mounts": crate::output::inspect::mounts_json(root, &rec),
                    "NetworkSettings": crate::output::inspect::network_settings(&rec),
                }))
            }
            // As `docker inspect`: a name that is no container may be an image.
            Err(_) if !images => Err(format!("No such container: {key}")),
            Err(e) => match crate::output::inspect::image_value(root, key) {
                Ok(Some(v)) => Ok(v),
                Ok(None) if containers => Err(e),
                Ok(None) => Err(format!("No such image: {key}")),
                Err(err) => Err(err.to_string()),
            },
        }
    })
}

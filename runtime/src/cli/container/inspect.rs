//! `mvm inspect`: containers, or images by that name, as Docker's JSON.

use std::path::Path;

use mvm_engine::container::{self, Status};

use crate::error::CliError;

/// `mvm inspect` for containers: Docker's JSON shape, as far as it applies.
pub fn inspect(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    Ok(crate::output::inspect::print_found(keys, |key| {
        match container::resolve(root, key) {
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
                    },
                    "Mounts": crate::output::inspect::mounts_json(root, &rec),
                    "NetworkSettings": crate::output::inspect::network_settings(&rec),
                }))
            }
            // As `docker inspect`: a name that is no container may be an image.
            Err(e) => match crate::output::inspect::image_value(root, key) {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(e.to_string()),
                Err(err) => Err(err.to_string()),
            },
        }
    }))
}

//! `mvm volume ...`, printed as Docker prints it, and the `Mounts` of container inspect.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::filter::Filters;
use crate::output::table::{Headers, labels_column, print_formatted};
use mvm_engine::volume::{self, VolumeError, VolumeRecord};

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, e.to_string())
}

/// `mvm volume SUBCOMMAND`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Set metadata for a volume (key=value).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Volume name (generated when not given).
        name: Option<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Format output using a template.
        #[arg(long)]
        format: Option<String>,
        /// Filter output: name=, driver=, dangling=true|false, label=KEY[=VALUE].
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        /// Format the output using the given Go template.
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes.
    #[command(visible_alias = "remove")]
    Rm {
        /// Do not fail on volumes that do not exist.
        #[arg(short = 'f', long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused volumes with -a).
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// `mvm volume ...`.
pub fn volume(root: &Path, cmd: &VolumeCommand) -> Result<i32, CliError> {
    match cmd {
        VolumeCommand::Create { labels, name } => {
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let _lock = volume::lock(root).map_err(CliError::runtime)?;
            let v = volume::create_locked(root, name.as_deref(), labels, false).map_err(
                |e| match e {
                    VolumeError::Invalid(m) => CliError::usage(m),
                    other => failed(other),
                },
            )?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls {
            quiet,
            format,
            filter,
        } => {
            let filters = Filters::parse(filter, &["name", "driver", "dangling", "label"])?;
            let dangling = filters.boolean("dangling")?;
            let rows: Vec<BTreeMap<&str, String>> = volume::list(root)
                .iter()
                .filter(|v| {
                    filters.any("name", |f| v.name.contains(f))
                        && filters.any("driver", |f| f == "local")
                        && filters.labels(&v.labels)
                        && dangling.is_none_or(|d| d == volume::users(root, &v.name).is_empty())
                })
                .map(|v| {
                    BTreeMap::from([
                        ("Driver", "local".to_string()),
                        ("Name", v.name.clone()),
                        (
                            "Mountpoint",
                            volume::data_dir(root, &v.name).display().to_string(),
                        ),
                        ("Scope", "local".to_string()),
                        ("CreatedAt", v.created.clone()),
                        ("Labels", labels_column(&v.labels)),
                        // Docker's values for a local volume without usage data (`-s` not
                        // asked) and outside a cluster.
                        ("Links", "N/A".to_string()),
                        ("Size", "N/A".to_string()),
                        ("Availability", "N/A".to_string()),
                        ("Group", "N/A".to_string()),
                        ("Status", "N/A".to_string()),
                    ])
                })
                .collect();
            let format = if *quiet {
                "{{.Name}}"
            } else {
                format.as_deref().unwrap_or("table {{.Driver}}\t{{.Name}}")
            };
            print_formatted(format, &rows, LS_HEADERS)?;
            Ok(0)
        }
        VolumeCommand::Inspect { format, volumes } => {
            crate::output::inspect::print_found(volumes, format.as_deref(), |n| {
                volume::get(root, n).map(|v| inspect_json(root, &v))
            })
        }
        VolumeCommand::Rm { force, volumes } => {
            let mut code = 0;
            for n in volumes {
                match volume::remove(root, n) {
                    Ok(()) => println!("{n}"),
                    Err(VolumeError::NotFound(_)) if *force => {}
                    Err(e) => {
                        eprintln!("mvm: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune { all, force } => prune(root, *all, *force),
    }
}

/// Column names of `volume ls`, as Docker's.
const LS_HEADERS: Headers = &[("Name", "VOLUME NAME")];

fn inspect_json(root: &Path, v: &VolumeRecord) -> Value {
    json!({
        "CreatedAt": v.created,
        "Driver": "local",
        "Labels": v.labels,
        "Mountpoint": volume::data_dir(root, &v.name),
        "Name": v.name,
        "Options": {},
        "Scope": "local",
    })
}

fn prune(root: &Path, all: bool, force: bool) -> Result<i32, CliError> {
    if !crate::output::prompt::confirm(
        force,
        "This will remove anonymous local volumes not used by at least one container.",
    ) {
        return Ok(0);
    }
    let (removed, bytes) =
        mvm_engine::system::prune_volumes(root, all).map_err(CliError::runtime)?;
    print!(
        "{}",
        crate::output::prune::section("Deleted Volumes", &removed)
    );
    println!(
        "Total reclaimed space: {}",
        crate::output::units::human_size(bytes)
    );
    Ok(0)
}

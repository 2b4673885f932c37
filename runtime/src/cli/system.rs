//! `mvm info`, `mvm version` and `mvm system ...` (`df`, `prune`, `info`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use mvm_engine::system::{self, Usage};
use mvm_engine::{backend, container, paths};

use crate::error::CliError;
use crate::output::prune::{image_lines, section};
use crate::output::table::tabulate;
use crate::output::units::human_size;

/// `mvm system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage: images, containers, volumes.
    Df,
    /// Remove stopped containers, unused networks and dangling images (and with --volumes,
    /// unused anonymous volumes).
    Prune {
        /// Remove all unused images, not just dangling ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// Prune anonymous volumes.
        #[arg(long)]
        volumes: bool,
    },
    /// Show the backend in use and where things are.
    Info,
    /// Get real time events from the engine.
    Events(crate::cli::events::EventsArgs),
}

/// `mvm system ...`.
pub fn system(root: &Path, vmm: Option<&str>, cmd: &SystemCommand) -> Result<i32, CliError> {
    match cmd {
        SystemCommand::Df => df(root),
        SystemCommand::Prune {
            all,
            force,
            volumes,
        } => prune(root, *all, *force, *volumes),
        SystemCommand::Info => info(root, vmm),
        SystemCommand::Events(a) => a.run(root),
    }
}

/// `system df`: Docker's table.
fn df(root: &Path) -> Result<i32, CliError> {
    let usage = system::disk_usage(root).map_err(CliError::runtime)?;
    let row = |kind: &str, u: &Usage| {
        let reclaimable = match (u.reclaimable * 100).checked_div(u.size) {
            Some(percent) => format!("{} ({percent}%)", human_size(u.reclaimable)),
            None => human_size(u.reclaimable),
        };
        vec![
            kind.to_string(),
            u.total.to_string(),
            u.active.to_string(),
            human_size(u.size),
            reclaimable,
        ]
    };
    let rows = vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(str::to_string)
            .to_vec(),
        row("Images", &usage.images),
        row("Containers", &usage.containers),
        row("Local Volumes", &usage.volumes),
        // Build steps are images here: there is no separate cache.
        row("Build Cache", &Usage::default()),
    ];
    print!("{}", tabulate(&rows));
    Ok(0)
}

/// `system prune`: each kind's prune, one question and one total.
fn prune(root: &Path, all: bool, force: bool, volumes: bool) -> Result<i32, CliError> {
    let mut warning = String::from(
        "This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if volumes {
        warning += "  - all anonymous volumes not used by at least one container\n";
    }
    warning += if all {
        "  - all images without at least one container associated to them\n"
    } else {
        "  - all dangling images\n"
    };
    if !crate::output::prompt::confirm(force, warning.trim_end()) {
        return Ok(0);
    }
    let pruned = container::prune::prune(root);
    let mut out = section("Deleted Containers", &pruned.ids);
    out += &section("Deleted Networks", &system::prune_networks(root));
    let mut bytes = pruned.bytes;
    if volumes {
        let (names, freed) = system::prune_volumes(root, false).map_err(CliError::runtime)?;
        out += &section("Deleted Volumes", &names);
        bytes += freed;
    }
    let report = system::prune_images(root, all).map_err(CliError::runtime)?;
    out += &section("Deleted Images", &image_lines(&report));
    bytes += report.reclaimed;
    print!("{out}");
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(0)
}

/// `mvm info`: the backend in use and where things are.
pub fn info(root: &Path, vmm: Option<&str>) -> Result<i32, CliError> {
    let sel = backend::select(vmm).map_err(CliError::usage)?;
    println!("Backend: {}", sel.kind.name());
    println!("Reason: {}", sel.reason);
    if let Some(w) = &sel.warning {
        println!("Warning: {w}");
    }
    println!("KVM: {:?}", backend::detect_kvm());
    println!("Warm starts: {}", backend::template::describe(sel.kind));
    println!("State root: {}", root.display());
    let show = |name: &str, r: Result<PathBuf, String>| match r {
        Ok(p) => println!("{name}: {}", p.display()),
        Err(e) => println!("{name}: missing ({e})"),
    };
    show("Kernel", paths::kernel());
    show("Agent", paths::agent());
    show("VMM", paths::vmm());
    show(
        "QEMU",
        paths::on_path("qemu-system-x86_64").ok_or_else(|| "not on PATH".into()),
    );
    show(
        "vhost-device-vsock",
        paths::on_path("vhost-device-vsock").ok_or_else(|| "not on PATH".into()),
    );
    Ok(0)
}

/// `mvm version`.
pub fn version() -> Result<i32, CliError> {
    println!("mvm version {}", env!("CARGO_PKG_VERSION"));
    Ok(0)
}

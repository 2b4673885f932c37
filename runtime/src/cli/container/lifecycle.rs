//! `start`, `restart`, `pause`, `unpause`, `rename` and `container prune`: the engine's
//! container operations, printed as Docker prints them.

use std::path::Path;
use std::time::Duration;

use mvm_engine::container;

use crate::error::CliError;
use clap::Args;
use mvm_engine::container::spec::parse_signal;

use crate::cli::each_container;

/// `mvm pause`.
pub fn pause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| container::signal::pause(root, key))
}

/// `mvm unpause`.
pub fn unpause(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    each_container(keys, |key| container::signal::unpause(root, key))
}

/// `mvm start`: containers that are created or exited run again under a monitor; with
/// `attach`, the one container runs attached to this terminal instead.
pub fn start(
    root: &Path,
    keys: &[String],
    attach: bool,
    interactive: bool,
) -> Result<i32, CliError> {
    if attach || interactive {
        let [key] = keys else {
            return Err(CliError::usage(
                "you cannot start and attach multiple containers at once".into(),
            ));
        };
        return Ok(container::start::start_attached(root, key, interactive)?);
    }
    each_container(keys, |key| container::start::start(root, key))
}

/// `mvm restart`.
pub fn restart(root: &Path, keys: &[String], timeout: Option<u64>) -> Result<i32, CliError> {
    each_container(keys, |key| {
        container::start::restart(root, key, timeout.map(Duration::from_secs))
    })
}

/// `mvm rename OLD NEW`.
pub fn rename(root: &Path, old: &str, new: &str) -> Result<i32, CliError> {
    match container::rename::rename(root, old, new) {
        Ok(()) => Ok(0),
        Err(e @ container::ContainerError::InvalidName(_)) => Err(CliError::usage(e.to_string())),
        Err(e) => Err(CliError::with_code(1, e.to_string())),
    }
}

/// `mvm container prune`: removes every container that is not running.
pub fn prune(root: &Path, force: bool) -> Result<i32, CliError> {
    if !crate::output::prompt::confirm(force, "This will remove all stopped containers.") {
        return Ok(0);
    }
    let pruned = container::prune::prune(root);
    print!(
        "{}",
        crate::output::prune::section("Deleted Containers", &pruned.ids)
    );
    println!(
        "Total reclaimed space: {}",
        crate::output::units::human_size(pruned.bytes)
    );
    Ok(0)
}

/// `mvm stop`: the stop signal, then SIGKILL after the timeout, then the VM goes.
pub fn stop(root: &Path, keys: &[String], timeout: Option<u64>) -> Result<i32, CliError> {
    each_container(keys, |key| {
        container::stop::stop(root, key, timeout.map(Duration::from_secs))
    })
}

/// `mvm kill`.
pub fn kill(root: &Path, keys: &[String], signal: &str) -> Result<i32, CliError> {
    let sig = parse_signal(signal)
        .ok_or_else(|| CliError::with_code(1, format!("invalid signal: {signal}")))?;
    each_container(keys, |key| container::signal::kill(root, key, sig))
}

/// `mvm rm` (`-v`: with the container's anonymous volumes).
pub fn rm(root: &Path, keys: &[String], force: bool, volumes: bool) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match container::stop::remove(root, key, force, volumes) {
            Ok(()) => println!("{key}"),
            // As Docker's CLI: with --force, a container that does not exist is said, not
            // failed on.
            Err(e @ container::ContainerError::NotFound(_)) if force => eprintln!("mvm: {e}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `mvm wait`: blocks until each container stops and prints its exit code.
pub fn wait(root: &Path, keys: &[String]) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match container::stop::wait(root, key) {
            Ok(exit) => println!("{exit}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = mvm_engine::error::EXIT_FAILED;
            }
        }
    }
    Ok(code)
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container (its --stop-timeout, else 10).
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    pub signal: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainersArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rename`'s arguments.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// Container.
    pub container: String,
    /// New name.
    pub new_name: String,
}

/// `update`'s flags: what a microVM can change.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Number of CPUs (applies at the next start).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit (applies at the next start).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Restart policy to apply when a container exits.
    #[arg(long)]
    pub restart: Option<String>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

impl UpdateArgs {
    /// `mvm update`: each container named, as Docker prints them.
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        let bad = |e: mvm_engine::container::SpecError| CliError::usage(e.to_string());
        let u = mvm_engine::container::update::Update {
            restart: self
                .restart
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            memory_mib: self
                .memory
                .as_deref()
                .map(mvm_engine::container::spec::parse_memory)
                .transpose()
                .map_err(bad)?,
            vcpus: self
                .cpus
                .as_deref()
                .map(mvm_engine::container::spec::parse_cpus)
                .transpose()
                .map_err(bad)?,
        };
        if u == Default::default() {
            return Err(CliError::with_code(
                1,
                "you must provide one or more flags when using this command".into(),
            ));
        }
        let mut code = 0;
        for c in &self.containers {
            match mvm_engine::container::update::update(root, c, &u) {
                Ok(()) => println!("{c}"),
                Err(e) => {
                    eprintln!("mvm: {e}");
                    code = 1;
                }
            }
        }
        Ok(code)
    }
}

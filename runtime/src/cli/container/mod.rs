//! The container commands, one file per command or small group; each parses its flags,
//! calls the engine and prints.

pub mod attach;
pub mod commit;
pub mod copy;
pub mod exec;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod ps;
pub mod run;
pub mod stats;

use clap::Subcommand;

use crate::cli::{Cli, network};
use crate::error::CliError;
use lifecycle::{ContainersArgs, KillArgs, RenameArgs, RmArgs, StartArgs, StopArgs};

/// The container commands: at the top level (`mvm run`) and under `mvm container`.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Run a command in a new container (its own microVM).
    Run(run::RunArgs),
    /// Create a new container without starting it.
    Create(run::RunArgs),
    /// Start one or more created or stopped containers.
    Start(StartArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Pause all processes within one or more containers (the VM's vCPUs stop).
    Pause(ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(ContainersArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Display the running processes of a container.
    Top(stats::TopArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(stats::StatsArgs),
    /// Create a new image from a container's changes.
    Commit(commit::CommitArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(commit::DiffArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(attach::AttachArgs),
    /// List port mappings or a specific mapping for the container.
    Port(network::PortArgs),
    /// Fetch the logs of a container.
    Logs(logs::LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Send a signal to one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(ContainersArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(copy::CpArgs),
    /// Export a container's filesystem as a tar archive.
    Export(copy::ExportArgs),
    /// Update configuration of one or more containers.
    Update(lifecycle::UpdateArgs),
}

impl ContainerCommand {
    /// Runs the command; its exit code.
    pub fn dispatch(&self, cli: &Cli) -> Result<i32, CliError> {
        let root = &cli.root;
        match self {
            ContainerCommand::Run(a) => run::run_or_create(&cli.engine()?, a, false),
            ContainerCommand::Create(a) => run::run_or_create(&cli.engine()?, a, true),
            ContainerCommand::Start(a) => {
                lifecycle::start(root, &a.containers, a.attach, a.interactive)
            }
            ContainerCommand::Restart(a) => lifecycle::restart(root, &a.containers, a.time),
            ContainerCommand::Pause(a) => lifecycle::pause(root, &a.containers),
            ContainerCommand::Unpause(a) => lifecycle::unpause(root, &a.containers),
            ContainerCommand::Rename(a) => lifecycle::rename(root, &a.container, &a.new_name),
            ContainerCommand::Top(a) => stats::top(root, &a.container, &a.ps_options),
            ContainerCommand::Stats(a) => {
                stats::stats(root, &a.containers, a.all, a.no_stream, a.format.as_deref())
            }
            ContainerCommand::Commit(a) => a.run(root),
            ContainerCommand::Diff(a) => commit::diff(root, &a.container),
            ContainerCommand::Attach(a) => a.run(root),
            ContainerCommand::Port(a) => network::port(root, &a.container, a.private.as_deref()),
            ContainerCommand::Logs(a) => logs::logs(&cli.engine()?, a),
            ContainerCommand::Stop(a) => lifecycle::stop(root, &a.containers, a.time),
            ContainerCommand::Kill(a) => lifecycle::kill(root, &a.containers, &a.signal),
            ContainerCommand::Rm(a) => lifecycle::rm(root, &a.containers, a.force, a.volumes),
            ContainerCommand::Wait(a) => lifecycle::wait(root, &a.containers),
            ContainerCommand::Exec(a) => exec::exec(&cli.engine()?, a),
            ContainerCommand::Cp(a) => a.run(root),
            ContainerCommand::Export(a) => a.run(root),
            ContainerCommand::Update(a) => a.run(root),
        }
    }
}

/// `mvm container ...`: the container commands, and those only this group has.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ContainerGroup {
    /// The container commands.
    #[command(flatten)]
    Common(ContainerCommand),
    /// List containers.
    #[command(visible_aliases = ["list", "ps"])]
    Ls(ps::PsArgs),
    /// Display detailed information on one or more containers.
    Inspect(inspect::InspectArgs),
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

//! The `mvm` command line: Docker's commands and flags, dispatched to one file per command
//! (`container/`, `image.rs`, `network.rs`, `volume.rs`, `build.rs`, `system.rs`). A command
//! file knows the engine and `output`; no command file imports another.

pub mod build;
pub mod container;
pub mod events;
pub mod image;
pub mod network;
pub mod system;
pub mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mvm_engine::container::ContainerError;
use mvm_engine::{Engine, EngineOptions, paths, report};

use crate::error::CliError;
use container::{ContainerCommand, ContainerGroup, inspect, lifecycle, ps};

/// `mvm`'s global flags and its command.
#[derive(Parser, Debug)]
#[command(
    name = "mvm",
    version,
    about = "Containers in KVM microVMs, with Docker's interface"
)]
pub struct Cli {
    /// State root (images, containers).
    #[arg(long, global = true, env = "MVM_ROOT", default_value = paths::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Hypervisor backend: mvm (our VMM) or qemu; chosen for this host when not given.
    #[arg(long, global = true, env = "MVM_VMM")]
    pub vmm: Option<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long = "log-level", global = true, default_value = "warn")]
    pub log_level: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Docker's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The container commands (run, exec, logs, stop, ...), also under `container`.
    #[command(flatten)]
    Containers(ContainerCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerGroup),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Create an image from a root filesystem tarball.
    Import(image::ImportArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Download an image from a registry.
    Pull(image::PullArgs),
    /// Upload an image to a registry.
    Push(image::PushArgs),
    /// Log in to a registry.
    Login(image::LoginArgs),
    /// Log out from a registry.
    Logout(image::LogoutArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(image::TagArgs),
    /// Remove one or more images.
    Rmi(image::RmiArgs),
    /// Show the history of an image.
    History(image::HistoryArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(image::SaveArgs),
    /// Load an image from a tar archive or STDIN.
    Load(image::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageGroup),
    /// Show the backend in use and where things are.
    Info,
    /// Manage mvm: disk usage, pruning, information.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Get real time events from the engine.
    Events(events::EventsArgs),
    /// Show the version.
    Version,
    /// List containers.
    Ps(ps::PsArgs),
    /// Return low-level information on containers.
    Inspect(inspect::InspectArgs),
    /// Runs a detached container (started by `run -d`).
    #[command(name = "__monitor", hide = true)]
    Monitor {
        /// Container ID.
        id: String,
    },
}

impl Command {
    /// The container command this is, at the top level or under `container`.
    pub fn container(&self) -> Option<&ContainerCommand> {
        match self {
            Command::Containers(c) | Command::Container(ContainerGroup::Common(c)) => Some(c),
            _ => None,
        }
    }
}

impl Cli {
    /// The engine on the state root the flags name.
    pub fn engine(&self) -> Result<Engine, CliError> {
        Ok(Engine::open(EngineOptions {
            root: self.root.clone(),
            vmm: self.vmm.clone(),
            debug: matches!(self.log_level.as_str(), "debug" | "trace"),
        })?)
    }

    /// Runs the command; its exit code.
    pub fn dispatch(&self) -> Result<i32, CliError> {
        let root = &self.root;
        match &self.command {
            Command::Containers(c) | Command::Container(ContainerGroup::Common(c)) => {
                c.dispatch(self)
            }
            Command::Container(ContainerGroup::Inspect(a)) => inspect::inspect_containers(root, a),
            Command::Container(ContainerGroup::Ls(a)) | Command::Ps(a) => {
                ps::ps(root, &a.options())
            }
            Command::Container(ContainerGroup::Prune { force }) => lifecycle::prune(root, *force),
            Command::Network(c) => network::network(root, c),
            Command::Volume(c) => volume::volume(root, c),
            Command::Build(a) => build::build(&self.engine()?, a),
            Command::Import(a) => image::import(root, a),
            Command::Images(a) => image::images(root, a),
            Command::Pull(a) => image::pull(root, a),
            Command::Push(a) => image::push(root, a),
            Command::Login(a) => image::login(root, a),
            Command::Logout(a) => image::logout(root, a),
            Command::Tag(a) => image::tag(root, a),
            Command::Rmi(a) => image::rmi(root, a),
            Command::History(a) => image::history(root, a),
            Command::Image(ImageGroup::Common(c)) => image::image(root, c),
            Command::Image(ImageGroup::Build(a)) => build::build(&self.engine()?, a),
            Command::Save(a) => image::save(root, a),
            Command::Load(a) => image::load(root, a),
            Command::Info => system::info(root, self.vmm.as_deref()),
            Command::System(c) => system::system(root, self.vmm.as_deref(), c),
            Command::Events(a) => a.run(root),
            Command::Version => system::version(),
            Command::Inspect(a) => inspect::inspect(root, a),
            Command::Monitor { id } => Ok(self.engine()?.monitor(id)),
        }
    }
}

/// `mvm image ...`: the image commands, and `build` (whose flags live with the top-level
/// command).
#[derive(Subcommand, Debug)]
pub enum ImageGroup {
    /// The image commands.
    #[command(flatten)]
    Common(image::ImageCommand),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
}

/// The engine's progress lines, where Docker's CLI prints them.
pub struct Terminal;

impl report::Reporter for Terminal {
    fn notice(&self, line: &str) {
        eprintln!("{line}");
    }
    fn output(&self, line: &str) {
        println!("{line}");
    }
}

/// Runs `f` on each container named, printing the name on success and the error otherwise,
/// as Docker's multi-container commands do; exit 1 if any one failed.
pub fn each_container(
    keys: &[String],
    mut f: impl FnMut(&str) -> Result<(), ContainerError>,
) -> Result<i32, CliError> {
    let mut code = 0;
    for key in keys {
        match f(key) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("mvm: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

//! `mvm`: containers in KVM microVMs, with Docker's interface.

mod attach;
mod commit;
mod control;
mod error;
mod image_cmds;
mod lifecycle;
mod network_cmds;
mod output;
mod ps;
mod run_flags;
mod stats;
mod volume_cmds;

use mvm_engine::{
    backend, build, changes, container, logfile, logs, network, paths, report, run, session,
    terminal, volume,
};

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mvm_rootfs::{Reference, Store};

use crate::error::CliError;
use crate::run_flags::RunArgs;

#[derive(Parser, Debug)]
#[command(
    name = "mvm",
    version,
    about = "Containers in KVM microVMs, with Docker's interface"
)]
struct Cli {
    /// State root (images, containers).
    #[arg(long, global = true, env = "MVM_ROOT", default_value = paths::DEFAULT_ROOT)]
    root: PathBuf,
    /// Hypervisor backend: mvm (our VMM) or qemu; chosen for this host when not given.
    #[arg(long, global = true, env = "MVM_VMM")]
    vmm: Option<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long = "log-level", global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a new container (its own microVM).
    Run(RunArgs),
    /// Create a new container without starting it.
    Create(RunArgs),
    /// Start one or more created or stopped containers.
    Start(StartArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Pause all processes within one or more containers (the VM's vCPUs stop).
    Pause(ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(ContainersArgs),
    /// Rename a container.
    Rename {
        /// Container.
        container: String,
        /// New name.
        new_name: String,
    },
    /// Display the running processes of a container.
    #[command(trailing_var_arg = true)]
    Top {
        /// Container.
        container: String,
        /// Options for ps inside the container.
        #[arg(allow_hyphen_values = true)]
        ps_options: Vec<String>,
    },
    /// Display a live stream of container(s) resource usage statistics.
    Stats(StatsArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network_cmds::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume_cmds::VolumeCommand),
    /// Build an image from a Dockerfile.
    Build {
        /// Name and optionally a tag (NAME[:TAG]), repeatable.
        #[arg(short = 't', long = "tag")]
        tag: Vec<String>,
        /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Set build-time variables.
        #[arg(long = "build-arg")]
        build_arg: Vec<String>,
        /// Do not use cache when building the image.
        #[arg(long = "no-cache")]
        no_cache: bool,
        /// Set the target build stage to build.
        #[arg(long)]
        target: Option<String>,
        /// Type of progress output (plain or tty; both print steps as lines).
        #[arg(long, default_value = "plain")]
        progress: String,
        /// Suppress the build output and print image ID on success.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Networking mode for the RUN instructions (bridge, none, or a network's name).
        #[arg(long)]
        network: Option<String>,
        /// Build context directory.
        context: PathBuf,
    },
    /// Create a new image from a container's changes.
    Commit {
        /// Apply Dockerfile instruction to the created image.
        #[arg(short = 'c', long = "change")]
        change: Vec<String>,
        /// Commit message.
        #[arg(short = 'm', long)]
        message: Option<String>,
        /// Author.
        #[arg(short = 'a', long)]
        author: Option<String>,
        /// Pause the container during commit.
        #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set)]
        pause: bool,
        /// Container.
        container: String,
        /// REPOSITORY[:TAG].
        reference: Option<String>,
    },
    /// Inspect changes to files or directories on a container's filesystem.
    Diff {
        /// Container.
        container: String,
    },
    /// Attach local standard input, output, and error streams to a running container.
    Attach {
        /// Proxy all received signals to the process (not with a terminal).
        #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
        sig_proxy: bool,
        /// Do not attach STDIN.
        #[arg(long = "no-stdin")]
        no_stdin: bool,
        /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q).
        #[arg(long = "detach-keys")]
        detach_keys: Option<String>,
        /// Container.
        container: String,
    },
    /// List port mappings or a specific mapping for the container.
    Port {
        /// Container.
        container: String,
        /// PRIVATE_PORT[/PROTO].
        private: Option<String>,
    },
    /// Create an image from a root filesystem tarball.
    Import(ImportArgs),
    /// List images.
    Images(image_cmds::ImagesArgs),
    /// Download an image from a registry.
    Pull(image_cmds::PullArgs),
    /// Upload an image to a registry.
    Push(image_cmds::PushArgs),
    /// Log in to a registry.
    Login(image_cmds::LoginArgs),
    /// Log out from a registry.
    Logout(image_cmds::LogoutArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(image_cmds::TagArgs),
    /// Remove one or more images.
    Rmi(image_cmds::RmiArgs),
    /// Show the history of an image.
    History(image_cmds::HistoryArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(image_cmds::SaveArgs),
    /// Load an image from a tar archive or STDIN.
    Load(image_cmds::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image_cmds::ImageCommand),
    /// Show the backend in use and where things are.
    Info,
    /// Show the version.
    Version,
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Send a signal to one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(ContainersArgs),
    /// Return low-level information on containers.
    Inspect(ContainersArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Runs a detached container (started by `run -d`).
    #[command(name = "__monitor", hide = true)]
    Monitor {
        /// Container ID.
        id: String,
    },
}

#[derive(Args, Debug)]
struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    latest: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last")]
    last: Option<usize>,
    /// Filter output based on conditions provided (status=, name=, id=, exited=, ancestor=).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a template ('table ...', 'json', or '{{.Field}}...').
    #[arg(long)]
    format: Option<String>,
}

impl PsArgs {
    fn options(&self) -> ps::PsOptions {
        ps::PsOptions {
            all: self.all,
            quiet: self.quiet,
            no_trunc: self.no_trunc,
            latest: self.latest,
            last: self.last,
            filters: self.filter.clone(),
            format: self.format.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum ContainerCommand {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls(PsArgs),
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Format output using a template.
    #[arg(long)]
    format: Option<String>,
    /// Containers (all running ones when none is named).
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Show timestamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Show logs since a timestamp (2026-12-01T10:00:00Z, Unix seconds) or a relative time (10m).
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or a relative time.
    #[arg(long)]
    until: Option<String>,
    /// Container.
    container: String,
}

#[derive(Args, Debug)]
struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct KillArgs {
    /// Signal to send to the container.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// Force the removal of a running container.
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short = 'v', long)]
    volumes: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
struct ExecArgs {
    /// Detached mode: run the command in the background.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Container.
    container: String,
    /// Command and arguments.
    #[arg(allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct ContainersArgs {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// Apply Dockerfile instructions to the image (CMD, ENTRYPOINT, ENV, WORKDIR, USER, ...).
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Tarball (plain or gzip), or - for stdin.
    file: String,
    /// Name for the image, NAME[:TAG].
    reference: Option<String>,
}

fn import(cli: &Cli, args: &ImportArgs) -> Result<i32, CliError> {
    let reference = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(CliError::runtime)?;
    let store = Store::open(&cli.root.join("images")).map_err(CliError::runtime)?;
    let mut input: Box<dyn std::io::Read> = if args.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .map_err(|e| CliError::runtime(format!("open {}: {e}", args.file)))?,
        )
    };
    let image = mvm_rootfs::import::import(
        &store,
        &mut input,
        reference.as_ref(),
        &args.change,
        args.message.as_deref(),
        &mvm_rootfs::time::now(),
    )
    .map_err(CliError::runtime)?;
    println!("{}", image.id);
    Ok(0)
}

fn info(cli: &Cli) -> Result<i32, CliError> {
    let sel = backend::select(cli.vmm.as_deref()).map_err(CliError::usage)?;
    println!("Backend: {}", sel.kind.name());
    println!("Reason: {}", sel.reason);
    if let Some(w) = &sel.warning {
        println!("Warning: {w}");
    }
    println!("KVM: {:?}", backend::detect_kvm());
    println!("State root: {}", cli.root.display());
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

/// `mvm run` and `mvm create`, which take the same options.
fn run_or_create(cli: &Cli, a: &RunArgs, create_only: bool) -> Result<i32, CliError> {
    if create_only && a.detach {
        return Err(CliError::usage("unknown shorthand flag: 'd' in -d".into()));
    }
    let spec = a.spec().map_err(|e| CliError::usage(e.to_string()))?;
    let engine = engine(cli)?;
    if let Some(w) = &engine.backend()?.warning {
        eprintln!("mvm: warning: {w}");
    }
    let mode = match (create_only, a.detach) {
        (true, _) => run::RunMode::Create,
        (false, true) => run::RunMode::Detach,
        (false, false) => run::RunMode::Attach,
    };
    match engine.run(spec, mode, &Terminal)? {
        run::RunOutcome::Created(id) | run::RunOutcome::Detached(id) => {
            println!("{id}");
            Ok(0)
        }
        run::RunOutcome::Exited(code) => Ok(code),
    }
}

/// The engine on the state root the flags name.
fn engine(cli: &Cli) -> Result<mvm_engine::Engine, CliError> {
    Ok(mvm_engine::Engine::open(mvm_engine::EngineOptions {
        root: cli.root.clone(),
        vmm: cli.vmm.clone(),
        debug: matches!(cli.log_level.as_str(), "debug" | "trace"),
    })?)
}

/// The engine's progress lines, where Docker's CLI prints them.
struct Terminal;

impl report::Reporter for Terminal {
    fn notice(&self, line: &str) {
        eprintln!("{line}");
    }
    fn output(&self, line: &str) {
        println!("{line}");
    }
}

fn dispatch(cli: &Cli) -> Result<i32, CliError> {
    match &cli.command {
        Command::Run(a) => run_or_create(cli, a, false),
        Command::Create(a) => run_or_create(cli, a, true),
        Command::Start(a) => control::start(&cli.root, &a.containers, a.attach, a.interactive),
        Command::Restart(a) => control::restart(&cli.root, &a.containers, a.time),
        Command::Pause(a) => control::pause(&cli.root, &a.containers),
        Command::Unpause(a) => control::unpause(&cli.root, &a.containers),
        Command::Rename {
            container,
            new_name,
        } => control::rename(&cli.root, container, new_name),
        Command::Top {
            container,
            ps_options,
        } => stats::top(&cli.root, container, ps_options),
        Command::Stats(a) => stats::stats(
            &cli.root,
            &a.containers,
            a.all,
            a.no_stream,
            a.format.as_deref(),
        ),
        Command::Container(ContainerCommand::Ls(a)) => ps::ps(&cli.root, &a.options()),
        Command::Network(c) => network_cmds::network(&cli.root, c),
        Command::Volume(c) => volume_cmds::volume(&cli.root, c),
        Command::Commit {
            change,
            message,
            author,
            pause,
            container,
            reference,
        } => commit::commit(
            &cli.root,
            container,
            reference.as_deref(),
            &commit::CommitOptions {
                changes: change,
                message: message.as_deref(),
                author: author.as_deref(),
                pause: *pause,
            },
        ),
        Command::Diff { container } => commit::diff(&cli.root, container),
        Command::Build {
            tag,
            file,
            build_arg,
            no_cache,
            target,
            progress,
            quiet,
            network,
            context,
        } => {
            if !matches!(progress.as_str(), "plain" | "tty" | "auto") {
                return Err(CliError::usage(format!(
                    "invalid --progress {progress:?}: use plain or tty"
                )));
            }
            let network = match network {
                Some(n) => n
                    .parse()
                    .map_err(|e: container::SpecError| CliError::usage(e.to_string()))?,
                None => container::NetworkMode::default(),
            };
            let built = engine(cli)?.build(
                &build::BuildOptions {
                    tags: tag.clone(),
                    file: file.clone(),
                    build_args: build_arg.clone(),
                    no_cache: *no_cache,
                    target: target.clone(),
                    quiet: *quiet,
                    context: context.clone(),
                    network,
                },
                &Terminal,
            )?;
            if *quiet {
                println!("{}", built.id);
            } else {
                println!("Successfully built {}", &built.id.hex()[..12]);
                for t in &built.tags {
                    println!("Successfully tagged {t}");
                }
            }
            Ok(0)
        }
        Command::Attach {
            sig_proxy,
            no_stdin,
            detach_keys,
            container,
        } => attach::attach(
            &cli.root,
            container,
            &attach::AttachOptions {
                sig_proxy: *sig_proxy,
                no_stdin: *no_stdin,
                detach_keys: detach_keys.clone(),
            },
        ),
        Command::Port { container, private } => {
            network_cmds::port(&cli.root, container, private.as_deref())
        }
        Command::Container(ContainerCommand::Prune { force }) => control::prune(&cli.root, *force),
        Command::Import(a) => import(cli, a),
        Command::Images(a) => image_cmds::images(&cli.root, a),
        Command::Pull(a) => image_cmds::pull(&cli.root, a),
        Command::Push(a) => image_cmds::push(&cli.root, a),
        Command::Login(a) => image_cmds::login(&cli.root, a),
        Command::Logout(a) => image_cmds::logout(&cli.root, a),
        Command::Tag(a) => image_cmds::tag(&cli.root, a),
        Command::Rmi(a) => image_cmds::rmi(&cli.root, a),
        Command::History(a) => image_cmds::history(&cli.root, a),
        Command::Image(c) => image_cmds::image(&cli.root, c),
        Command::Save(a) => image_cmds::save(&cli.root, a),
        Command::Load(a) => image_cmds::load(&cli.root, a),
        Command::Info => info(cli),
        Command::Ps(a) => ps::ps(&cli.root, &a.options()),
        Command::Logs(a) => {
            let tail = match a.tail.as_deref() {
                None | Some("all") => None,
                Some(n) => Some(
                    n.parse()
                        .map_err(|_| CliError::usage(format!("invalid --tail {n:?}")))?,
                ),
            };
            let window = lifecycle::log_window(a.since.as_deref(), a.until.as_deref())?;
            lifecycle::logs(
                &engine(cli)?,
                &a.container,
                a.follow,
                tail,
                a.timestamps,
                window,
            )
        }
        Command::Stop(a) => lifecycle::stop(&cli.root, &a.containers, a.time),
        Command::Kill(a) => lifecycle::kill(&cli.root, &a.containers, &a.signal),
        Command::Rm(a) => lifecycle::rm(&cli.root, &a.containers, a.force, a.volumes),
        Command::Wait(a) => lifecycle::wait(&cli.root, &a.containers),
        Command::Inspect(a) => lifecycle::inspect(&cli.root, &a.containers),
        Command::Exec(a) => lifecycle::exec(
            &engine(cli)?,
            &a.container,
            &a.command,
            lifecycle::ExecOptions {
                interactive: a.interactive,
                tty: a.tty,
                env: a.env.clone(),
                workdir: a.workdir.clone(),
                user: a.user.clone(),
                detach: a.detach,
            },
        ),
        Command::Monitor { id } => Ok(engine(cli)?.monitor(id)),
        Command::Version => {
            println!("mvm version {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("mvm: {first}\nSee 'mvm --help'.");
            return ExitCode::from(error::EXIT_RUNTIME as u8);
        }
    };
    // A monitor's log is partly the guest's doing (agent errors, dropped clients): rotated and
    // rate-limited (logfile::MonitorLog); other commands log to the terminal.
    let writer = match &cli.command {
        Command::Monitor { id } => logfile::MonitorLog::open(
            &container::ContainerDirs::new(&cli.root, id)
                .dir
                .join("monitor.log"),
        )
        .map(tracing_subscriber::fmt::writer::BoxMakeWriter::new)
        .ok(),
        _ => None,
    }
    .unwrap_or_else(|| tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr));
    let to_file = matches!(cli.command, Command::Monitor { .. });
    tracing_subscriber::fmt()
        .with_ansi(!to_file && terminal::is_tty(2))
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Listing commands die quietly on a closed pipe (`mvm ps | head`), as other Unix tools
    // do; commands that own a VM or a session keep SIGPIPE ignored and see EPIPE instead.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Exec(_) | Command::Monitor { .. }
    ) {
        // SAFETY: resetting a signal's disposition to its default has no memory-safety
        // preconditions; no handler of ours is replaced.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Err(e) = paths::private_root(&cli.root) {
        eprintln!("mvm: state root {}: {e}", cli.root.display());
        return ExitCode::from(error::EXIT_RUNTIME as u8);
    }
    let code = match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mvm: {e}");
            e.code
        }
    };
    let _ = std::io::stdout().flush();
    // Exit at once: helper threads (stdin, signals) may be blocked in the kernel.
    std::process::exit(code)
}

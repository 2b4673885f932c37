//! The command line, as runc's: the global flags and subcommands containerd-shim-runc-v2 and
//! conmon pass (../shared/clients/README.md), each parsed into a typed value.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where container state lives when `--root` is not given (runc's is /run/runc).
pub const DEFAULT_ROOT: &str = "/run/mvm-runc";

/// `mvm-runc`.
#[derive(Debug, Parser)]
#[command(
    name = "mvm-runc",
    about = "Runs OCI bundles each in its own KVM microVM, with runc's command line",
    disable_version_flag = true
)]
pub struct Cli {
    /// Directory of the containers' state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Append errors (and with --debug, debug lines) to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// The --log file's format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug lines too.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility: the VM's host processes go in the bundle's cgroupsPath.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true)]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true)]
    pub criu: Option<PathBuf>,
    /// Print the version, in runc's form.
    #[arg(short = 'v', long)]
    pub version: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="..." level=error msg="..."`.
    Text,
    /// `{"level":"error","msg":"...","time":"..."}`.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle: its VM boots; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start {
        /// Container ID.
        id: String,
    },
    /// Create and start, and wait for the process (as `runc run`).
    Run(CreateArgs),
    /// Print a container's state as JSON.
    State {
        /// Container ID.
        id: String,
    },
    /// Send a signal to a container's process.
    Kill {
        /// Signal every process (the VM has one container: the same as without it).
        #[arg(short, long)]
        all: bool,
        /// Container ID.
        id: String,
        /// Signal: a number, a name, or a name with SIG (default SIGTERM).
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container's state and whatever runs of it.
    Delete {
        /// Kill the container first if it runs.
        #[arg(short, long)]
        force: bool,
        /// Container ID.
        id: String,
    },
    /// Run one more process in a container.
    Exec(ExecArgs),
    /// List a container's host processes.
    Ps {
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Container ID.
        id: String,
        /// `ps` options (ignored).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze a container's VM.
    Pause {
        /// Container ID.
        id: String,
    },
    /// Thaw a paused container's VM.
    Resume {
        /// Container ID.
        id: String,
    },
    /// Update a container's resource limits (linux.resources JSON from a file or `-`).
    Update {
        /// The resources JSON; `-` reads stdin.
        #[arg(short, long)]
        resources: Option<PathBuf>,
        /// Container ID.
        id: String,
    },
    /// Print what this runtime supports, as JSON.
    Features,
    /// List containers.
    List {
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Print IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The relay of an `exec` (internal).
    #[command(name = "__exec", hide = true)]
    ExecRelay {
        /// Container ID.
        id: String,
    },
    /// The relay process a container's pid file names (internal).
    #[command(name = "__relay", hide = true)]
    Relay {
        /// Container ID.
        id: String,
    },
}

/// `create` and `run`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The bundle directory.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the relay process's PID here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the terminal's master to (SCM_RIGHTS).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility; ignored.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility; ignored.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many descriptors after stdio on (not supported beyond 0).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container ID.
    pub id: String,
}

/// `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The process JSON (runtime-spec `process`).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process started.
    #[arg(short, long)]
    pub detach: bool,
    /// A terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// A unix socket to send the terminal's master to.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the exec relay's PID here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// `KEY=value`, repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// `uid[:gid]`.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Accepted for runc compatibility; ignored.
    #[arg(long)]
    pub preserve_fds: Option<u32>,
    /// Container ID.
    pub id: String,
    /// The command, without --process.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

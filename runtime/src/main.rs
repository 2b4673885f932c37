//! `mvm`: containers in KVM microVMs, with Docker's interface. Parses the command line,
//! sets up logging, runs the command and exits with Docker's code; the commands are in
//! `cli/`, their output helpers in `output/`, the work in the `mvm-engine` library.

// serde_json's json! for Docker's inspect documents (70 keys in HostConfig) nests deeply.
#![recursion_limit = "256"]

mod cli;
mod error;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mvm_engine::{container, logfile, paths, terminal};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::cli::container::ContainerCommand;
use crate::cli::{Cli, Command};

/// The first word after the global flags (and their values): the command the user typed.
fn command_word() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if matches!(a.as_str(), "--root" | "--vmm" | "--log-level") {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
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
            if e.kind() == ErrorKind::InvalidSubcommand
                && let Some(word) = command_word()
                && <Cli as clap::CommandFactory>::command()
                    .find_subcommand(&word)
                    .is_none()
            {
                // Docker's words and code for a command it does not have.
                eprintln!(
                    "mvm: unknown command: mvm {word}\n\nRun 'mvm --help' for more information"
                );
                return ExitCode::from(1);
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
    let monitor_log = match &cli.command {
        Command::Monitor { id } => {
            let dir = container::ContainerDirs::new(&cli.root, id).dir;
            logfile::MonitorLog::open(&dir.join("monitor.log")).ok()
        }
        _ => None,
    };
    let to_file = monitor_log.is_some();
    tracing_subscriber::fmt()
        .with_ansi(!to_file && terminal::is_tty(2))
        .with_writer(
            monitor_log.map_or_else(|| BoxMakeWriter::new(std::io::stderr), BoxMakeWriter::new),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Listing commands die quietly on a closed pipe (`mvm ps | head`), as other Unix tools
    // do; commands that own a VM or a session keep SIGPIPE ignored and see EPIPE instead.
    if !matches!(cli.command, Command::Monitor { .. })
        && !matches!(
            cli.command.container(),
            Some(ContainerCommand::Run(_) | ContainerCommand::Exec(_))
        )
    {
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
    let code = cli.dispatch().unwrap_or_else(|e| {
        eprintln!("mvm: {e}");
        // Docker's CLI: 125 when `run` fails or a flag is bad; its other commands exit 1
        // for what failed in the work (a missing image to tag, a context to build).
        if e.code == error::EXIT_RUNTIME
            && !e.usage
            && !matches!(cli.command.container(), Some(ContainerCommand::Run(_)))
        {
            1
        } else {
            e.code
        }
    });
    let _ = std::io::stdout().flush();
    // Exit at once: helper threads (stdin, signals) may be blocked in the kernel.
    std::process::exit(code)
}

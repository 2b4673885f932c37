//! runc's commands, one module per group; each returns the process's exit code or an error
//! that `main` logs (to `--log` and stderr) and exits 1 with.

mod create;
mod exec;
mod manage;
mod start;

use std::path::PathBuf;

pub use create::create;
pub use exec::{exec, exec_relay};
pub use manage::{delete, features, kill, list, pause, ps, resume, state, update};
pub use start::{run, start};

use crate::cli::{Cli, LogFormat};
use crate::log::Logger;
use crate::state::Store;

/// What every command needs: the store, the logger, and the global flags a child of ours
/// (the relay) is started with.
pub struct Context {
    /// The state root.
    pub store: Store,
    /// The log.
    pub log: Logger,
    root: PathBuf,
    log_file: Option<PathBuf>,
    log_format: LogFormat,
    debug: bool,
    /// `--systemd-cgroup`: `cgroupsPath` is systemd's `slice:prefix:name`.
    pub systemd_cgroup: bool,
}

impl Context {
    /// The context of `cli`'s global flags.
    pub fn new(cli: &Cli) -> Context {
        let mut log = Logger::new(cli.log.clone(), cli.log_format, cli.debug);
        if matches!(
            cli.command,
            Some(crate::cli::Command::Relay { .. } | crate::cli::Command::ExecRelay { .. })
        ) {
            log = log.without_stderr();
        }
        Context {
            store: Store::new(&cli.root),
            log,
            root: cli.root.clone(),
            log_file: cli.log.clone(),
            log_format: cli.log_format,
            debug: cli.debug,
            systemd_cgroup: cli.systemd_cgroup,
        }
    }

    /// A command running this program with the same global flags.
    fn self_command(&self) -> Result<std::process::Command, crate::RuntimeError> {
        let exe = std::env::current_exe()
            .map_err(|e| crate::RuntimeError::Other(format!("cannot find this program: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--root").arg(&self.root);
        if let Some(f) = &self.log_file {
            cmd.arg("--log").arg(f);
        }
        cmd.arg("--log-format").arg(match self.log_format {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        });
        if self.debug {
            cmd.arg("--debug");
        }
        Ok(cmd)
    }
}

//! The container commands, one file per command or small group; each parses its flags,
//! calls the engine and prints.

pub mod attach;
pub mod commit;
pub mod exec;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod ps;
pub mod run;
pub mod stats;

use clap::Subcommand;

/// `mvm container ...`.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls(ps::PsArgs),
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

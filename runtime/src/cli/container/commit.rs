//! `mvm commit` (an image from a container's changes) and `mvm diff` (its changed paths).

use std::io::Write;
use std::path::Path;

use mvm_engine::container::commit::{self, CommitOptions};
use mvm_rootfs::Reference;

use crate::error::CliError;

/// `mvm diff CONTAINER`: the lines print once they all came.
pub fn diff(root: &Path, key: &str) -> Result<i32, CliError> {
    let lines = commit::diff(root, key)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&lines)
        .and_then(|()| out.flush())
        .map_err(CliError::runtime)?;
    Ok(0)
}

/// `commit`'s flags.
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Apply Dockerfile instruction to the created image.
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Author.
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Pause the container during commit.
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Container.
    pub container: String,
    /// REPOSITORY[:TAG].
    pub reference: Option<String>,
}

impl CommitArgs {
    /// `mvm commit` with these flags.
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        let reference = self
            .reference
            .as_deref()
            .map(Reference::parse)
            .transpose()
            .map_err(|e| CliError::usage(e.to_string()))?;
        let image = commit::commit(
            root,
            &self.container,
            &CommitOptions {
                reference: reference.as_ref(),
                changes: &self.change,
                message: self.message.as_deref(),
                author: self.author.as_deref(),
                pause: self.pause,
            },
        )?;
        println!("{}", image.id);
        Ok(0)
    }
}

/// `diff`'s argument.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Container.
    pub container: String,
}

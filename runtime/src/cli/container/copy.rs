//! `mvm cp` (files between a container and the host) and `mvm export` (a container's root
//! file system as a tar).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use mvm_engine::container::copy::{self, CopyInFrom, CopyOutTo};

use crate::error::CliError;

/// `cp`'s flags.
#[derive(clap::Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information).
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH or - (a tar on stdin).
    pub src: String,
    /// DEST_PATH or - (a tar on stdout) or CONTAINER:DEST_PATH.
    pub dest: String,
}

/// One side of `cp`: a container's path or a host path.
#[derive(Debug, PartialEq, Eq)]
enum Side<'a> {
    Container { container: &'a str, path: &'a str },
    Local(&'a str),
}

/// Docker's rule: an absolute path, or one with no `:`, is the host's; else `CONTAINER:PATH`.
fn side(arg: &str) -> Side<'_> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Local(arg);
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.is_empty() => Side::Container { container, path },
        _ => Side::Local(arg),
    }
}

fn failed(message: &str) -> CliError {
    CliError::with_code(1, message.to_string())
}

impl CpArgs {
    /// `mvm cp` with these arguments.
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        match (side(&self.src), side(&self.dest)) {
            (Side::Container { .. }, Side::Container { .. }) => {
                Err(failed("copying between containers is not supported"))
            }
            (Side::Local(_), Side::Local(_)) => {
                Err(failed("must specify at least one container source"))
            }
            (Side::Container { container, path }, Side::Local(dest)) => {
                if path.is_empty() {
                    return Err(failed("filesystem paths must not be empty"));
                }
                self.out_of(root, container, path, dest)
            }
            (Side::Local(src), Side::Container { container, path }) => {
                if path.is_empty() {
                    return Err(failed("filesystem paths must not be empty"));
                }
                self.into(root, src, container, path)
            }
        }
    }

    fn out_of(
        &self,
        root: &Path,
        container: &str,
        path: &str,
        dest: &str,
    ) -> Result<i32, CliError> {
        if dest == "-" {
            let mut out = std::io::stdout().lock();
            copy::copy_out(
                root,
                container,
                path,
                self.follow_link,
                CopyOutTo::Archive(&mut out),
            )?;
            out.flush().map_err(CliError::runtime)?;
            return Ok(0);
        }
        let dest_path = PathBuf::from(dest);
        let outcome = copy::copy_out(
            root,
            container,
            path,
            self.follow_link,
            CopyOutTo::Host(&dest_path),
        )?;
        if outcome.skipped > 0 {
            eprintln!(
                "{} device node(s), fifo(s) or socket(s) from the container were not copied to the host",
                outcome.skipped
            );
        }
        if outcome.unprivileged > 0 {
            eprintln!(
                "the setuid and setgid bits of {} file(s) from the container were dropped",
                outcome.unprivileged
            );
        }
        self.report(outcome.totals.bytes, dest);
        Ok(0)
    }

    fn into(&self, root: &Path, src: &str, container: &str, path: &str) -> Result<i32, CliError> {
        if src == "-" {
            let mut input = std::io::stdin().lock();
            copy::copy_in(
                root,
                container,
                CopyInFrom::Archive(&mut input),
                path,
                self.archive,
            )?;
            return Ok(0);
        }
        copy::copy_in(
            root,
            container,
            CopyInFrom::Host {
                path: src,
                follow_link: self.follow_link,
            },
            path,
            self.archive,
        )?;
        self.report(du(Path::new(src)), &format!("{container}:{path}"));
        Ok(0)
    }

    /// Docker's closing line, on a terminal only.
    fn report(&self, bytes: u64, dest: &str) {
        if !self.quiet && std::io::stderr().is_terminal() {
            eprintln!(
                "Successfully copied {} to {dest}",
                crate::output::units::human_size(bytes)
            );
        }
    }
}

/// Bytes of regular files under `p` (links not followed), for the closing line.
fn du(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// `export`'s flags.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Container.
    pub container: String,
}

impl ExportArgs {
    /// `mvm export`: to a file (see [`crate::output::outfile`]) or to stdout.
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        let Some(path) = &self.output else {
            crate::output::outfile::refuse_terminal_stdout()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            copy::export(root, &self.container, &mut out)?;
            out.flush().map_err(CliError::runtime)?;
            return Ok(0);
        };
        crate::output::outfile::write_replacing(path, "failed to export container", |w| {
            copy::export(root, &self.container, w)
                .map(|_| ())
                .map_err(Into::into)
        })?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_split_as_docker_splits_them() {
        assert_eq!(
            side("c1:/etc/hostname"),
            Side::Container {
                container: "c1",
                path: "/etc/hostname"
            }
        );
        assert_eq!(side("/abs/with:colon"), Side::Local("/abs/with:colon"));
        assert_eq!(side("./rel:x"), Side::Local("./rel:x"));
        assert_eq!(side("plain"), Side::Local("plain"));
        assert_eq!(side("-"), Side::Local("-"));
        assert_eq!(side(":x"), Side::Local(":x"));
    }
}

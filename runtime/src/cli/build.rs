//! `mvm build`.

use std::path::PathBuf;

use clap::Args;
use mvm_engine::Engine;
use mvm_engine::build::BuildOptions;
use mvm_engine::container::{NetworkMode, SpecError};

use crate::error::CliError;

/// `build`'s flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME[:TAG]), repeatable.
    #[arg(short = 't', long = "tag")]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Set build-time variables.
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// Do not use cache when building the image.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Set the target build stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Type of progress output (plain or tty; both print steps as lines).
    #[arg(long, default_value = "plain")]
    pub progress: String,
    /// Suppress the build output and print image ID on success.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Networking mode for the RUN instructions (bridge, none, or a network's name).
    #[arg(long)]
    pub network: Option<String>,
    /// Build context directory.
    pub context: PathBuf,
}

/// `mvm build`: the steps as they run, then the image's ID and tags.
pub fn build(engine: &Engine, a: &BuildArgs) -> Result<i32, CliError> {
    if !matches!(a.progress.as_str(), "plain" | "tty" | "auto") {
        return Err(CliError::usage(format!(
            "invalid --progress {:?}: use plain or tty",
            a.progress
        )));
    }
    let network = match &a.network {
        Some(n) => n
            .parse()
            .map_err(|e: SpecError| CliError::usage(e.to_string()))?,
        None => NetworkMode::default(),
    };
    let built = engine.build(
        &BuildOptions {
            tags: a.tag.clone(),
            file: a.file.clone(),
            build_args: a.build_arg.clone(),
            no_cache: a.no_cache,
            target: a.target.clone(),
            quiet: a.quiet,
            context: a.context.clone(),
            network,
        },
        &crate::cli::Terminal,
    )?;
    if a.quiet {
        println!("{}", built.id);
    } else {
        println!("Successfully built {}", &built.id.hex()[..12]);
        for t in &built.tags {
            println!("Successfully tagged {t}");
        }
    }
    Ok(0)
}

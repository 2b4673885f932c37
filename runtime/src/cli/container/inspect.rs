//! `mvm inspect`: containers, or images by that name, as Docker's JSON.

use std::path::Path;

use mvm_engine::container;

use crate::error::CliError;

/// `inspect`'s arguments (also `container inspect`).
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format the output using the given Go template.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Return JSON for the specified type: container or image (either when not given).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes (accepted; sizes are not computed).
    #[arg(short = 's', long)]
    pub size: bool,
    /// Containers or images.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `mvm container inspect`: containers only.
pub fn inspect_containers(root: &Path, args: &InspectArgs) -> Result<i32, CliError> {
    if args.kind.as_deref().is_some_and(|k| k != "container") {
        return Err(CliError::usage("unknown flag: --type".into()));
    }
    inspect_kinds(root, args, true, false)
}

/// `mvm inspect`: containers (or images of that name), in Docker's JSON shape as far as it
/// applies, or through `-f`.
pub fn inspect(root: &Path, args: &InspectArgs) -> Result<i32, CliError> {
    let (containers, images) = match args.kind.as_deref() {
        None => (true, true),
        Some("container") => (true, false),
        Some("image") => (false, true),
        Some(other) => {
            return Err(CliError::with_code(
                1,
                format!("\"{other}\" is not a valid value for --type"),
            ));
        }
    };
    inspect_kinds(root, args, containers, images)
}

fn inspect_kinds(
    root: &Path,
    args: &InspectArgs,
    containers: bool,
    images: bool,
) -> Result<i32, CliError> {
    crate::output::inspect::print_found(&args.names, args.format.as_deref(), |key| {
        let found = if containers {
            container::resolve(root, key).map_err(|e| e.to_string())
        } else {
            Err(format!("No such object: {key}"))
        };
        match found {
            Ok((dirs, rec)) => Ok(crate::output::inspect::container_json(root, &dirs, &rec)),
            // As `docker inspect`: a name that is no container may be an image.
            Err(_) if !images => Err(format!("No such container: {key}")),
            Err(e) => match crate::output::inspect::image_value(root, key) {
                Ok(Some(v)) => Ok(v),
                Ok(None) if containers => Err(e),
                Ok(None) => Err(format!("No such image: {key}")),
                Err(err) => Err(err.to_string()),
            },
        }
    })
}

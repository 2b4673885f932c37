//! `commit` (an image from a container's changes) and `diff` (its changed paths).

use std::path::Path;

use mvm_agent_protocol::{Export, ExportKind};
use mvm_rootfs::{ImageRecord, Reference, Store, catalog};

use super::{ContainerDirs, ContainerRecord, Status, resolve};
use crate::error::EngineError;

/// `diff`: the container's changed paths, one `A|C|D path` line each, as its agent lists them
/// (a helper VM's agent for a stopped container); returned only once they all came.
pub fn diff(root: &Path, key: &str) -> Result<Vec<u8>, EngineError> {
    let (dirs, rec) = resolve(root, key)?;
    let mut lines = Vec::new();
    with_agent_awake(&dirs, &rec, |rec| {
        crate::changes::export(
            &dirs,
            rec,
            Export {
                what: ExportKind::Diff,
                freeze: false,
            },
            &mut lines,
        )
    })?;
    Ok(lines)
}

/// Runs `f` with the container's agent able to answer (see [`super::signal::while_awake`]).
fn with_agent_awake<R>(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    f: impl FnOnce(&ContainerRecord) -> Result<R, crate::changes::ChangesError>,
) -> Result<R, EngineError> {
    super::signal::while_awake(dirs, rec, f)
        .map_err(|e| EngineError::runtime(format!("cannot read the container's changes: {e}")))
}

/// The image a container was made from.
pub fn base_image(store: &Store, rec: &ContainerRecord) -> Result<ImageRecord, EngineError> {
    catalog::resolve(store, &rec.image_id)
        .or_else(|_| catalog::resolve(store, &rec.spec.image))
        .map_err(|e| EngineError::runtime(format!("the container's image is gone: {e}")))
}

/// Options of `commit`.
pub struct CommitOptions<'a> {
    /// The name to tag the image with.
    pub reference: Option<&'a Reference>,
    /// `-c` Dockerfile instructions.
    pub changes: &'a [String],
    /// `-m`.
    pub message: Option<&'a str>,
    /// `-a`.
    pub author: Option<&'a str>,
    /// `-p` (default true): pause a running container while committing.
    pub pause: bool,
}

/// `commit`: an image of the container's changes over its image, with its process's settings
/// as the image's defaults.
pub fn commit(
    root: &Path,
    key: &str,
    opts: &CommitOptions<'_>,
) -> Result<ImageRecord, EngineError> {
    let (dirs, rec) = resolve(root, key)?;
    let store = Store::open(&root.join("images")).map_err(EngineError::runtime)?;
    let base = base_image(&store, &rec)?;
    let mut config = base.config.config.clone();
    // The container's own settings become the image's defaults, as Docker's commit does.
    config.env = Some(rec.process.env.clone());
    config.working_dir = rec.process.cwd.clone();
    config.user = rec.process.user.clone();
    let entry = config.entrypoint.clone().unwrap_or_default();
    if !entry.is_empty() && rec.process.args.starts_with(&entry) {
        config.cmd = Some(rec.process.args[entry.len()..].to_vec());
    } else {
        config.entrypoint = None;
        config.cmd = Some(rec.process.args.clone());
    }
    for c in opts.changes {
        mvm_rootfs::import::apply_change(&mut config, c)
            .map_err(|e| EngineError::usage(e.to_string()))?;
    }
    // Docker's --pause: the container's processes stop while its files are read (in the
    // guest: the agent must keep running to read them).
    let freeze = opts.pause || rec.effective().0 == Status::Paused;
    let tmp = store.temp_path("commit-layer");
    let made = with_agent_awake(&dirs, &rec, |rec| {
        crate::changes::layer_to_file(&dirs, rec, freeze, &tmp)
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let tags: Vec<String> = opts
        .reference
        .and_then(Reference::tagged_name)
        .into_iter()
        .collect();
    let created_by = format!("mvm commit {}", rec.process.args.join(" "));
    let mut file = std::fs::File::open(&tmp).map_err(EngineError::runtime)?;
    let comment = opts.message.map(str::to_string);
    let image = mvm_rootfs::derive::derive(
        &store,
        Some(&base),
        Some(&mut file),
        &mvm_rootfs::derive::Step {
            config,
            created_by: &created_by,
            comment: comment.as_deref(),
            author: opts.author,
            created: &mvm_rootfs::time::now(),
            tags: &tags,
            intermediate: false,
        },
    );
    let _ = std::fs::remove_file(&tmp);
    image.map_err(EngineError::runtime)
}

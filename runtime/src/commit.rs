//! `mvm commit` (an image from a container's changes) and `mvm diff` (its changed paths).

use std::path::{Path, PathBuf};

use mvm_rootfs::{ImageRecord, Reference, Store, catalog};

use crate::container::{self, ContainerDirs, ContainerRecord};
use crate::error::CliError;
use crate::layer::{self, DiskMount};

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, e.to_string())
}

fn upper_disk(dirs: &ContainerDirs) -> PathBuf {
    dirs.dir.join("upper.ext4")
}

/// Flushes the guest's writes to its disk (running containers only), so that the host reads
/// what the container wrote.
fn sync_guest(root: &Path, rec: &ContainerRecord) {
    if rec.effective().0 == "running" {
        let _ = std::process::Command::new(std::env::current_exe().unwrap_or_default())
            .arg("--root")
            .arg(root)
            .args(["exec", &rec.id, "sync"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `mvm diff CONTAINER`.
pub fn diff(root: &Path, key: &str) -> Result<i32, CliError> {
    let (dirs, rec) = container::resolve(root, key).map_err(failed)?;
    let upper = upper_disk(&dirs);
    if !upper.exists() {
        // Never started: nothing changed.
        return Ok(0);
    }
    sync_guest(root, &rec);
    let lines = layer::with_mounted(
        &[
            DiskMount {
                path: &upper,
                fstype: "ext4",
            },
            DiskMount {
                path: &rec.image_disk,
                fstype: "erofs",
            },
        ],
        |d| layer::diff_lines(&d[0].join("upper"), &d[1]),
    )
    .map_err(CliError::runtime)?
    .map_err(|e| CliError::runtime(format!("cannot read the container's changes: {e}")))?;
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// The image a container was made from.
pub fn base_image(store: &Store, rec: &ContainerRecord) -> Result<ImageRecord, CliError> {
    catalog::resolve(store, &rec.image_id)
        .or_else(|_| catalog::resolve(store, &rec.image))
        .map_err(|e| CliError::runtime(format!("the container's image is gone: {e}")))
}

/// Writes the container's writable layer as a tar at `out`.
pub fn layer_tar(dirs: &ContainerDirs, out: &Path) -> Result<(), CliError> {
    let upper = upper_disk(dirs);
    if !upper.exists() {
        // A container that never ran has an empty layer.
        let f = std::fs::File::create(out).map_err(CliError::runtime)?;
        return tar::Builder::new(f).finish().map_err(CliError::runtime);
    }
    layer::with_mounted(
        &[DiskMount {
            path: &upper,
            fstype: "ext4",
        }],
        |d| -> std::io::Result<()> {
            let f = std::fs::File::create(out)?;
            layer::write_layer(&d[0].join("upper"), std::io::BufWriter::new(f))
        },
    )
    .map_err(CliError::runtime)?
    .map_err(|e| CliError::runtime(format!("cannot read the container's changes: {e}")))
}

/// Options of `mvm commit`.
pub struct CommitOptions<'a> {
    /// `-c` Dockerfile instructions.
    pub changes: &'a [String],
    /// `-m`.
    pub message: Option<&'a str>,
    /// `-a`.
    pub author: Option<&'a str>,
    /// `-p` (default true): pause a running container while committing.
    pub pause: bool,
}

/// `mvm commit CONTAINER [REPOSITORY[:TAG]]`.
pub fn commit(
    root: &Path,
    key: &str,
    reference: Option<&str>,
    opts: &CommitOptions<'_>,
) -> Result<i32, CliError> {
    let reference = reference
        .map(Reference::parse)
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let (dirs, rec) = container::resolve(root, key).map_err(failed)?;
    let store = Store::open(&root.join("images")).map_err(CliError::runtime)?;
    let base = base_image(&store, &rec)?;
    let mut config = base.config.config.clone();
    // The container's own settings become the image's defaults, as Docker's commit does.
    config.env = Some(rec.env.clone());
    config.working_dir = rec.cwd.clone();
    config.user = rec.user.clone();
    let entry = config.entrypoint.clone().unwrap_or_default();
    if !entry.is_empty() && rec.args.starts_with(&entry) {
        config.cmd = Some(rec.args[entry.len()..].to_vec());
    } else {
        config.entrypoint = None;
        config.cmd = Some(rec.args.clone());
    }
    for c in opts.changes {
        mvm_rootfs::import::apply_change(&mut config, c)
            .map_err(|e| CliError::usage(e.to_string()))?;
    }
    sync_guest(root, &rec);
    let paused = opts.pause && rec.effective().0 == "running";
    if paused && let Err(e) = crate::control::set_paused(&dirs, &rec, true) {
        tracing::warn!("committing without pausing: {e}");
    }
    let tmp = store.temp_path("commit-layer");
    let made = layer_tar(&dirs, &tmp);
    if paused {
        let _ = crate::control::set_paused(&dirs, &rec, false);
    }
    made?;
    let tags: Vec<String> = reference
        .as_ref()
        .and_then(Reference::tagged_name)
        .into_iter()
        .collect();
    let created_by = format!("mvm commit {}", rec.args.join(" "));
    let mut file = std::fs::File::open(&tmp).map_err(CliError::runtime)?;
    let comment = match (opts.message, opts.author) {
        (Some(m), _) => Some(m.to_string()),
        (None, Some(a)) => Some(format!("author: {a}")),
        _ => None,
    };
    let image = mvm_rootfs::derive::derive(
        &store,
        Some(&base),
        Some(&mut file),
        &mvm_rootfs::derive::Step {
            config,
            created_by: &created_by,
            comment: comment.as_deref(),
            created: &mvm_rootfs::time::now(),
            tags: &tags,
            intermediate: false,
        },
    );
    let _ = std::fs::remove_file(&tmp);
    let image = image.map_err(CliError::runtime)?;
    println!("{}", image.id);
    Ok(0)
}

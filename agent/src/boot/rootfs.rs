//! The container root: overlayfs of the image disk (lower) and the writable disk (upper),
//! then pivot_root into it.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, umount2};
use nix::unistd::{chdir, pivot_root};

use super::mounts::mount_fs;
use super::{BootError, io_err, sys};
use crate::log_debug;
use mvm_agent_protocol::boot::{BootConfig, FILES_SHARE_TAG, ROOT_SHARE_TAG, RootSource};

const RUN: &str = "/run";
const LOWER: &str = "/run/mvm/lower";
const UPPER: &str = "/run/mvm/upper";
const ROOT: &str = "/run/mvm/root";
const FILES: &str = "/run/mvm/files";

fn mkdirs(paths: &[&str]) -> Result<(), BootError> {
    for path in paths {
        std::fs::create_dir_all(path).map_err(io_err(format!("creating {path}")))?;
    }
    Ok(())
}

/// The tmpfs at /run: the agent's disk is read-only, and the mount points live there.
fn mount_run() -> Result<(), BootError> {
    mount_fs(
        "tmpfs",
        RUN,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
}

/// /run with the mount points of the layers, and the image disk mounted read-only at LOWER.
fn mount_run_and_lower(config: &BootConfig) -> Result<(), BootError> {
    mount_run()?;
    mkdirs(&[LOWER, UPPER])?;
    mount_fs(
        &config.lower,
        LOWER,
        config.lower_fs.fstype(),
        MsFlags::MS_RDONLY,
        None,
    )
}

/// Mounts the container root at ROOT: the overlay, or the host directory shared with virtio-fs
/// (and binds the files of `mvm.file` into it), then makes it the root. The old root is
/// detached, so the container sees none of the agent's mounts.
pub(crate) fn build_and_enter(config: &BootConfig) -> Result<(), BootError> {
    match config.root {
        RootSource::Overlay => mount_overlay(config)?,
        RootSource::Share { read_only } => mount_share(config, read_only)?,
    }
    enter_root()
}

/// Makes ROOT the root.
fn enter_root() -> Result<(), BootError> {
    // pivot_root(".", ".") stacks the old root on top of the new one at the same place;
    // detaching it then leaves the new root alone, with no put_old directory needed in the
    // container's file system.
    chdir(Path::new(ROOT)).map_err(sys(format!("chdir {ROOT}")))?;
    pivot_root(".", ".").map_err(sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    chdir("/").map_err(sys("chdir /"))?;
    log_debug!("entered the container root");
    Ok(())
}

/// The root from the host: the virtio-fs share ROOT_SHARE_TAG, and the files share's files
/// bound where `mvm.file` says. The binds are made before pivot_root, while the files share
/// is still mounted in this namespace (a bind's source must be).
fn mount_share(config: &BootConfig, read_only: bool) -> Result<(), BootError> {
    mount_run()?;
    mkdirs(&[ROOT])?;
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_fs(ROOT_SHARE_TAG, ROOT, "virtiofs", flags, None)?;
    if config.files.is_empty() {
        return Ok(());
    }
    mkdirs(&[FILES])?;
    mount_fs(FILES_SHARE_TAG, FILES, "virtiofs", MsFlags::MS_RDONLY, None)?;
    for f in &config.files {
        super::volumes::bind_file(Path::new(ROOT), &Path::new(FILES).join(&f.name), f)?;
    }
    log_debug!(
        "container root from the host share, {} files bound",
        config.files.len()
    );
    Ok(())
}

/// The overlay of the image disk and the writable disk (or a tmpfs) at ROOT.
fn mount_overlay(config: &BootConfig) -> Result<(), BootError> {
    mount_run_and_lower(config)?;
    mkdirs(&[ROOT])?;
    match &config.upper {
        Some(dev) => mount_fs(dev, UPPER, "ext4", MsFlags::empty(), None)?,
        None => {
            log_debug!("no mvm.upper: the writable layer is a tmpfs");
            mount_fs("tmpfs", UPPER, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
        }
    }
    let (upperdir, workdir) = (format!("{UPPER}/upper"), format!("{UPPER}/work"));
    mkdirs(&[&upperdir, &workdir])?;
    mount_fs(
        "overlay",
        ROOT,
        "overlay",
        MsFlags::empty(),
        Some(&format!(
            "lowerdir={LOWER},upperdir={upperdir},workdir={workdir}"
        )),
    )?;

    // Exports walk the layers from these descriptors: after pivot_root they have no path.
    crate::changes::keep(Path::new(&upperdir), Path::new(LOWER))
        .map_err(sys(format!("opening {upperdir} and {LOWER}")))
}

/// Export mode: the image disk and the container's writable disk, both read-only (the host
/// attached the writable one read-only too), for an `export` of the changes. A disk whose
/// journal needs replaying (its VM was killed) cannot be replayed read-only: it is mounted
/// without the journal, which may miss the last writes before the kill.
///
/// The overlay of the two is then the helper's root, as it is the container's, for `cp` and
/// `export` to resolve paths as the container does (read-only, the writable disk as a lower
/// layer; with `export_writable`, the writable disk read-write as the overlay's upper, for
/// `cp` into the container).
pub(crate) fn mount_for_export(config: &BootConfig) -> Result<(), BootError> {
    mount_run_and_lower(config)?;
    let upper = config
        .upper
        .as_deref()
        .ok_or_else(|| BootError::MountTarget {
            target: UPPER.to_string(),
            reason: "export mode needs mvm.upper",
        })?;
    let (upperdir, workdir) = (format!("{UPPER}/upper"), format!("{UPPER}/work"));
    let root_opts = if config.export_writable {
        mount_fs(
            upper,
            UPPER,
            "ext4",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )?;
        mkdirs(&[&upperdir, &workdir])?;
        format!("lowerdir={LOWER},upperdir={upperdir},workdir={workdir}")
    } else {
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(e) = mount_fs(upper, UPPER, "ext4", ro, None) {
            crate::log_error!("{e}; mounting it without its journal");
            mount_fs(upper, UPPER, "ext4", ro, Some("noload"))?;
        }
        if Path::new(&upperdir).is_dir() {
            format!("lowerdir={upperdir}:{LOWER}")
        } else {
            // The container's VM never got as far as making its upper directory: no changes.
            let empty = format!("{RUN}/mvm/empty");
            mkdirs(&[&empty])?;
            crate::changes::keep(Path::new(&empty), Path::new(LOWER))
                .map_err(sys(format!("opening {empty} and {LOWER}")))?;
            // A read-only overlay needs two lower layers.
            format!("lowerdir={empty}:{LOWER}")
        }
    };
    if Path::new(&upperdir).is_dir() {
        crate::changes::keep(Path::new(&upperdir), Path::new(LOWER))
            .map_err(sys(format!("opening {upperdir} and {LOWER}")))?;
    }
    mkdirs(&[ROOT])?;
    let flags = if config.export_writable {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    mount_fs("overlay", ROOT, "overlay", flags, Some(&root_opts))?;
    enter_root()?;
    log_debug!("export mode: the container's root mounted");
    Ok(())
}

//! The disks a microVM boots from: an image's read-only ext4 (built once per image and
//! cached) and a container's writable ext4.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::{MEDIA_TYPE_OCI_LAYER_GZIP, Manifest};
use crate::store::{ImageRecord, Store};
use crate::unpack::{self, Limits, Totals, UnpackError};

/// Building a disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A layer could not be applied.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// A layer's compression is not supported.
    #[error(
        "layer {0}: unsupported compression or damaged layer (expected tar, tar+gzip or tar+zstd)"
    )]
    Compression(String),
    /// mkfs.ext4 is missing or failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// Filesystem error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let what = what.into();
    move |source| DiskError::Io { what, source }
}

/// Space the ext4 metadata needs beyond the files: journal-less, 4 KiB blocks.
const EXT4_SLACK_BYTES: u64 = 16 << 20;

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(1 << 20) * (1 << 20)
}

/// Sums file sizes (in 4 KiB blocks) and counts inodes under `dir`, without following links.
fn usage(dir: &Path) -> io::Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut inodes = 1u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen_links = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if m.nlink() > 1 && !m.is_dir() && !seen_links.insert(m.ino()) {
                continue;
            }
            inodes += 1;
            bytes += m.len().div_ceil(4096) * 4096;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

fn run_mkfs(args: &[&str], target: &Path) -> Result<(), DiskError> {
    let out = Command::new("mkfs.ext4")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| {
            DiskError::Mkfs(if e.kind() == io::ErrorKind::NotFound {
                "mkfs.ext4 not found: install e2fsprogs (scripts/setup.sh does)".into()
            } else {
                e.to_string()
            })
        })?;
    if !out.status.success() {
        return Err(DiskError::Mkfs(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Packs the tree at `dir` into a new ext4 image at `out` (no journal: it is mounted read-only),
/// sized to fit.
pub fn ext4_from_dir(dir: &Path, out: &Path, label: &str) -> Result<(), DiskError> {
    let (bytes, inodes) = usage(dir).map_err(io_err(format!("measure {}", dir.display())))?;
    let inodes = inodes + inodes / 4 + 256;
    let size = round_up_mib(bytes + bytes / 10 + inodes * 256 + EXT4_SLACK_BYTES);
    let f = File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    f.set_len(size).map_err(io_err("size disk"))?;
    drop(f);
    let inode_arg = inodes.to_string();
    let dir_arg = dir.to_string_lossy().into_owned();
    run_mkfs(
        &[
            "-q",
            "-F",
            "-L",
            label,
            "-m",
            "0",
            "-N",
            &inode_arg,
            "-O",
            "^has_journal",
            "-E",
            "root_owner=0:0",
            "-d",
            &dir_arg,
        ],
        out,
    )
}

/// Packs the tree at `dir` into a new uncompressed erofs image at `out`. erofs is the
/// read-only lower layer's format: it builds faster than `mkfs.ext4 -d`, is smaller, and has
/// no `lost+found` to show up in the container's root (measured in BENCHMARKS.md).
pub fn erofs_from_dir(dir: &Path, out: &Path) -> Result<(), DiskError> {
    let result = Command::new("mkfs.erofs")
        .args(["--quiet", "--preserve-mtime"])
        .arg(out)
        .arg(dir)
        .output()
        .map_err(|e| {
            DiskError::Mkfs(if e.kind() == io::ErrorKind::NotFound {
                "mkfs.erofs not found: install erofs-utils (scripts/setup.sh does)".into()
            } else {
                e.to_string()
            })
        })?;
    if !result.status.success() {
        return Err(DiskError::Mkfs(format!(
            "mkfs.erofs: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates a container's writable disk (0600): a sparse file of `size` bytes with an empty
/// ext4.
pub fn create_writable_disk(out: &Path, size: u64) -> Result<(), DiskError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(io_err(format!("create {}", out.display())))?;
    f.set_len(size).map_err(io_err("size disk"))?;
    drop(f);
    run_mkfs(
        &[
            "-q",
            "-F",
            "-L",
            "mvm-upper",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
        ],
        out,
    )
}

/// Opens a stored layer as an uncompressed tar stream, by its media type and magic bytes.
fn open_layer(
    store: &Store,
    digest: &crate::Digest,
    media_type: &str,
) -> Result<Box<dyn Read>, DiskError> {
    let path = store.blob_path(digest);
    let mut f = File::open(&path).map_err(io_err(format!("open layer {digest}")))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io_err("read layer"))?;
    drop(f);
    let f = File::open(&path).map_err(io_err(format!("open layer {digest}")))?;
    let gzip = n >= 2 && magic[..2] == [0x1f, 0x8b];
    let zstd = n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd];
    if zstd || media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        if !zstd {
            return Err(DiskError::Compression(digest.to_string()));
        }
        return Ok(Box::new(crate::zstd::ZstdReader::new(io::BufReader::new(
            f,
        ))));
    }
    if gzip || media_type == MEDIA_TYPE_OCI_LAYER_GZIP {
        Ok(Box::new(flate2::read::GzDecoder::new(io::BufReader::new(
            f,
        ))))
    } else {
        Ok(Box::new(io::BufReader::new(f)))
    }
}

/// Applies every layer of `manifest` onto `dir`.
pub fn unpack_image(
    store: &Store,
    manifest: &Manifest,
    dir: &Path,
    limits: &Limits,
) -> Result<Totals, DiskError> {
    let mut totals = Totals::default();
    for layer in &manifest.layers {
        let reader = open_layer(store, &layer.digest, &layer.media_type)?;
        unpack::apply_layer(dir, reader, limits, &mut totals)?;
    }
    Ok(totals)
}

/// Returns the image's read-only disk, building and caching it on first use.
pub fn ensure_image_disk(store: &Store, image: &ImageRecord) -> Result<PathBuf, DiskError> {
    let disk = store.disk_path(image);
    if disk.exists() {
        return Ok(disk);
    }
    let _lock = store.lock()?;
    if disk.exists() {
        return Ok(disk);
    }
    let work = store.temp_path("rootfs");
    let tmp_disk = store.temp_path("disk");
    let result = (|| {
        // Only root may enter the tree: it holds the image's setuid files and device nodes.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(io_err(format!("create {}", work.display())))?;
        unpack_image(store, &image.manifest, &work, &Limits::default())?;
        erofs_from_dir(&work, &tmp_disk)?;
        fs::rename(&tmp_disk, &disk).map_err(io_err("store image disk"))
    })();
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = fs::remove_file(&tmp_disk);
    }
    result.map(|()| disk)
}

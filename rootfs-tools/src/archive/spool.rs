//! Reading an archive: a tar from a file or a pipe, in any entry order, so every file is
//! written once into a private directory under the store's `tmp/` (hashed on the way) and its
//! metadata files kept in memory. Nothing here is visible in the store; dropping the spool
//! removes what it wrote.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::{ArchiveError, MAX_ENTRIES, MAX_METADATA_BYTES, io_err};
use crate::digest::{Digest, HashingWriter};

/// Top-level files read into memory rather than spooled.
const METADATA_FILES: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];
/// Symbolic links followed before giving up (legacy Docker archives link shared layers).
const MAX_LINK_HOPS: usize = 16;

/// One spooled file.
#[derive(Debug)]
pub(super) struct SpooledFile {
    /// Where its content is.
    pub path: PathBuf,
    /// sha256 of its content.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// Every file of an archive, by normalised path.
pub(super) struct Spool {
    dir: PathBuf,
    files: BTreeMap<String, SpooledFile>,
    links: BTreeMap<String, String>,
    metadata: BTreeMap<String, Vec<u8>>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An archive path without `.` components; `None` for the archive's root itself. Absolute
/// paths and `..` are refused.
pub(super) fn normalize(raw: &Path) -> Result<Option<String>, ArchiveError> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => match p.to_str() {
                Some(s) => parts.push(s),
                None => return Err(ArchiveError::UnsafePath(raw.display().to_string())),
            },
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::UnsafePath(raw.display().to_string()));
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Resolves a symbolic link's target against the directory of `link`; `None` when it leaves
/// the archive.
fn link_target(link: &str, target: &Path) -> Option<String> {
    if target.is_absolute() {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn tar_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Tar(e.to_string())
}

impl Spool {
    /// Reads the whole tar from `input`, spooling into a new directory `dir` (which must not
    /// exist; it is removed when the spool is dropped, also on error).
    pub fn read(dir: PathBuf, input: &mut dyn Read) -> Result<Self, ArchiveError> {
        fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let mut spool = Self {
            dir,
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        let mut archive = tar::Archive::new(input);
        let mut count = 0usize;
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ArchiveError::TooManyEntries);
            }
            let raw = entry.path().map_err(tar_err)?.into_owned();
            let Some(path) = normalize(&raw)? else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(tar_err)?
                    .ok_or_else(|| ArchiveError::Tar(format!("link {path:?} has no target")))?;
                let resolved = if kind.is_symlink() {
                    link_target(&path, &target)
                } else {
                    normalize(&target).ok().flatten()
                };
                let resolved = resolved.ok_or_else(|| {
                    ArchiveError::UnsafePath(format!("{path} -> {}", target.display()))
                })?;
                spool.links.insert(path, resolved);
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(ArchiveError::Format(format!(
                    "entry {path:?} is neither a file, a directory nor a link"
                )));
            }
            if METADATA_FILES.contains(&path.as_str()) {
                let mut data = Vec::new();
                (&mut entry)
                    .take(MAX_METADATA_BYTES + 1)
                    .read_to_end(&mut data)
                    .map_err(tar_err)?;
                if data.len() as u64 > MAX_METADATA_BYTES {
                    return Err(ArchiveError::TooLarge(path));
                }
                spool.metadata.insert(path, data);
                continue;
            }
            let file = spool.write_file(&mut entry, spool.files.len())?;
            // A later entry of the same path replaces the earlier one, as tar extraction does.
            if let Some(old) = spool.files.insert(path, file) {
                let _ = fs::remove_file(old.path);
            }
        }
        Ok(spool)
    }

    fn write_file(&self, entry: &mut dyn Read, n: usize) -> Result<SpooledFile, ArchiveError> {
        let path = self.dir.join(n.to_string());
        let file = File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
        let mut w = HashingWriter::new(file);
        io::copy(entry, &mut w).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => tar_err(e),
            _ => io_err("spool an archive entry")(e),
        })?;
        let (digest, size, file) = w.finish();
        file.sync_all().map_err(io_err("sync a spooled entry"))?;
        Ok(SpooledFile { path, digest, size })
    }

    /// A top-level metadata file (`manifest.json`, `index.json`, `oci-layout`, `repositories`).
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        self.metadata.get(name).map(Vec::as_slice)
    }

    /// The file at `path`, following links.
    pub fn file(&self, path: &str) -> Result<&SpooledFile, ArchiveError> {
        let missing = || ArchiveError::Missing(path.to_string());
        let mut p = normalize(Path::new(path))?.ok_or_else(missing)?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(next) => p = next.clone(),
                None => return Err(missing()),
            }
        }
        Err(ArchiveError::Format(format!(
            "too many links resolving {path}"
        )))
    }

    /// The blob `digest` of an OCI layout (`blobs/sha256/<hex>`), its content checked.
    pub fn blob(&self, digest: &Digest) -> Result<&SpooledFile, ArchiveError> {
        let f = self
            .file(&format!("blobs/sha256/{}", digest.hex()))
            .map_err(|e| match e {
                ArchiveError::Missing(_) => ArchiveError::Missing(format!("blob {digest}")),
                e => e,
            })?;
        check(f, digest, "blob")?;
        Ok(f)
    }

    /// Reads a small spooled file (a manifest or config).
    pub fn read_small(&self, f: &SpooledFile, name: &str) -> Result<Vec<u8>, ArchiveError> {
        if f.size > MAX_METADATA_BYTES {
            return Err(ArchiveError::TooLarge(name.to_string()));
        }
        fs::read(&f.path).map_err(io_err(format!("read {name}")))
    }

    /// Checks a file whose path names a digest (`blobs/sha256/<hex>`, `<hex>.json`), if it does.
    pub fn check_named(&self, path: &str, f: &SpooledFile) -> Result<(), ArchiveError> {
        let base = path.rsplit('/').next().unwrap_or(path);
        let hex = base.strip_suffix(".json").unwrap_or(base);
        if (path.starts_with("blobs/sha256/") || base.ends_with(".json"))
            && let Ok(d) = Digest::from_hex(hex)
        {
            check(f, &d, "blob")?;
        }
        Ok(())
    }
}

/// Fails unless the spooled content has digest `expected`.
pub(super) fn check(
    f: &SpooledFile,
    expected: &Digest,
    what: &'static str,
) -> Result<(), ArchiveError> {
    if f.digest == *expected {
        Ok(())
    } else {
        Err(ArchiveError::DigestMismatch {
            what,
            expected: expected.to_string(),
            actual: f.digest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_escapes_are_refused() {
        assert_eq!(
            normalize(Path::new("./blobs/sha256/ab"))
                .unwrap()
                .as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize(Path::new("./")).unwrap(), None);
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert!(normalize(Path::new("a/../../b")).is_err());
        assert_eq!(
            link_target("x/layer.tar", Path::new("../y/layer.tar")).as_deref(),
            Some("y/layer.tar")
        );
        assert_eq!(link_target("x/layer.tar", Path::new("../../etc")), None);
        assert_eq!(link_target("x/layer.tar", Path::new("/etc")), None);
    }
}

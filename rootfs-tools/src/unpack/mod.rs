//! Applying a layer tarball onto a directory, safely.
//!
//! A layer comes from an untrusted image (a registry, an archive, a build step's guest). Every
//! entry's path is normalised (`..` refused, leading `/` stripped); its parent is resolved one
//! directory descriptor at a time under the root, following the image's symlinks the way the
//! guest would see them (clamped at the root, like `chroot`) but never through the host
//! kernel (`at.rs`). Every call that creates or changes a file (create, mkdir, symlink, link,
//! mknod, chown, chmod, utimes, xattrs) then takes that descriptor and one plain name, or the
//! descriptor of the file itself: no call resolves a path through a link an image made.
//! Directory modes and times are applied last, through the descriptor kept from the
//! directory's creation (or, past a budget of descriptors, after checking the re-opened
//! directory is still the same inode), so a later entry that swaps a directory for a symlink
//! cannot redirect them. Hard links must point inside the root, and never at a setuid or
//! setgid file of another owner. OCI whiteouts (`.wh.NAME`) and opaque directories
//! (`.wh..wh..opq`) delete what lower layers put there. Ownership, modes (setuid included),
//! symlinks, hard links, device nodes and file capabilities come out as the image says: the
//! result is packed into a disk that only the guest mounts, from a tree only root can reach.

mod at;
pub mod copy;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::SFlag;
use tar::{Archive, EntryType};

use at::ResolveError;

/// Marker of an opaque directory.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Prefix of a whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Directory descriptors kept open for the last pass, at most; beyond, directories are
/// re-opened by their real path and checked by inode.
const MAX_KEPT_DIR_FDS: u64 = 4096;

/// Bounds on what one image may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// Running totals across the layers of one image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries processed.
    pub entries: u64,
}

impl Totals {
    /// Counts one more entry of `size` bytes; an error past `limits`.
    fn count(&mut self, size: u64, limits: &Limits) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > limits.max_entries {
            return Err(UnpackError::TooLarge(format!(
                "{} entries",
                limits.max_entries
            )));
        }
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > limits.max_bytes {
            return Err(UnpackError::TooLarge(format!("{} bytes", limits.max_bytes)));
        }
        Ok(())
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream is malformed.
    #[error("corrupt layer: {0}")]
    Corrupt(String),
    /// An entry tries to leave the root.
    #[error("layer entry {path:?} escapes the image root ({why})")]
    Escape {
        /// The entry's path.
        path: String,
        /// How.
        why: &'static str,
    },
    /// The layer is larger than allowed.
    #[error("layer exceeds the limit of {0}")]
    TooLarge(String),
    /// The caller refused where the tree would go.
    #[error("{0}")]
    Refused(String),
    /// A filesystem operation failed.
    #[error("unpacking {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// Why.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Corrupt(e.to_string())
}

/// The target of a link entry (a hard link's path or a symlink's text).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, raw: &Path) -> Result<PathBuf, UnpackError> {
    Ok(entry
        .link_name()
        .map_err(corrupt)?
        .ok_or_else(|| UnpackError::Corrupt(format!("{}: link without target", raw.display())))?
        .into_owned())
}

/// Makes room for entry `name` in `dir`: whatever is there goes, unless both are directories
/// (then it is kept and merged into). Returns (kept a directory, removed a directory).
fn make_room(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    entry_is_dir: bool,
    raw: &Path,
) -> Result<(bool, bool), UnpackError> {
    let existing = at::lstat_at(dir, name).map_err(io_at(raw))?;
    let existing_dir = existing
        .as_ref()
        .is_some_and(|st| at::kind(st) == SFlag::S_IFDIR);
    let keep = entry_is_dir && existing_dir;
    if existing.is_some() && !keep {
        at::remove(dir, name).map_err(io_at(raw))?;
        return Ok((false, existing_dir));
    }
    Ok((keep, false))
}

/// Creates the regular file `name` in `dir` with the entry's `size` bytes; a short entry is
/// corrupt.
fn write_file<R: Read>(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    entry: &mut tar::Entry<'_, R>,
    size: u64,
    raw: &Path,
) -> Result<std::fs::File, UnpackError> {
    let mut f = at::create_file(dir, name).map_err(io_at(raw))?;
    let copied = io::copy(&mut entry.take(size), &mut f)
        .map_err(|e| UnpackError::Corrupt(format!("{}: {e}", raw.display())))?;
    if copied != size {
        return Err(UnpackError::Corrupt(format!(
            "{}: truncated",
            raw.display()
        )));
    }
    Ok(f)
}

/// Splits an entry path into normal components, refusing `..`.
fn normalise(raw: &Path) -> Result<Vec<OsString>, UnpackError> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape {
                    path: raw.display().to_string(),
                    why: "'..' component",
                });
            }
            Component::Prefix(_) => {
                return Err(UnpackError::Escape {
                    path: raw.display().to_string(),
                    why: "path prefix",
                });
            }
        }
    }
    Ok(out)
}

/// Where a directory's deferred mode and times go.
enum DirHandle {
    /// The descriptor kept from its creation.
    Fd(OwnedFd),
    /// Its real path and identity, when too many descriptors are open already.
    Path {
        path: Vec<OsString>,
        dev: u64,
        ino: u64,
    },
}

struct Deferred {
    handle: DirHandle,
    mode: u32,
    mtime: u64,
}

/// One layer being applied.
struct Unpacker<'a> {
    root: OwnedFd,
    root_path: &'a Path,
    /// Real paths (under the root) this layer created: an opaque marker spares them.
    created: HashSet<PathBuf>,
    dirs: Vec<Deferred>,
    kept_fds: u64,
    /// Directory descriptors this layer may keep open.
    fd_budget: u64,
    /// The last parent resolved: (the entry's raw parent components, the directory).
    cache: Option<(Vec<OsString>, at::Dir)>,
}

fn resolve_error(raw: &Path, e: ResolveError) -> UnpackError {
    match e {
        ResolveError::NotADirectory => {
            UnpackError::Corrupt(format!("{}: a parent is not a directory", raw.display()))
        }
        ResolveError::TooManyLinks => UnpackError::Escape {
            path: raw.display().to_string(),
            why: "too many levels of symbolic links",
        },
        ResolveError::Missing => UnpackError::Corrupt(format!(
            "{}: a directory on its path is missing",
            raw.display()
        )),
        ResolveError::Io(source) => UnpackError::Io {
            path: raw.display().to_string(),
            source,
        },
    }
}

/// Lets this process keep directory descriptors for a large layer (the soft NOFILE limit is
/// often 1024 while the hard one is far higher).
fn raise_nofile() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = crate::fsutil::raise_nofile(u64::MAX);
    });
}

fn fd_budget() -> u64 {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(s, _)| s)
        .unwrap_or(1024);
    MAX_KEPT_DIR_FDS.min(soft / 2)
}

impl Unpacker<'_> {
    fn parent(&mut self, raw: &Path, comps: &[OsString]) -> Result<&at::Dir, UnpackError> {
        let hit = self.cache.as_ref().is_some_and(|(k, _)| k == comps);
        if !hit {
            let dir =
                at::resolve(self.root.as_fd(), comps, true).map_err(|e| resolve_error(raw, e))?;
            self.cache = Some((comps.to_vec(), dir));
        }
        match &self.cache {
            Some((_, dir)) => Ok(dir),
            None => unreachable!("the cache was just filled"),
        }
    }

    /// Something was removed: a cached parent may have gone with it.
    fn forget_parent(&mut self) {
        self.cache = None;
    }

    fn defer_dir(&mut self, fd: OwnedFd, path: PathBuf, mode: u32, mtime: u64) -> io::Result<()> {
        let handle = if self.kept_fds < self.fd_budget {
            self.kept_fds += 1;
            DirHandle::Fd(fd)
        } else {
            let st = nix::sys::stat::fstat(&fd)?;
            DirHandle::Path {
                path: path.iter().map(|c| c.to_os_string()).collect(),
                dev: st.st_dev,
                ino: st.st_ino,
            }
        };
        self.dirs.push(Deferred {
            handle,
            mode,
            mtime,
        });
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        limits: &Limits,
        totals: &mut Totals,
    ) -> Result<(), UnpackError> {
        let size = entry.header().size().map_err(corrupt)?;
        totals.count(size, limits)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let mut comps = normalise(&raw)?;
        let Some(name) = comps.pop() else {
            return Ok(()); // the root directory itself
        };
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
            return self.opaque(&raw, &comps);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if !is_plain_name(hidden) {
                return Err(UnpackError::Escape {
                    path: raw.display().to_string(),
                    why: "bad whiteout",
                });
            }
            let parent = self.parent(&raw, &comps)?;
            at::remove(parent.fd.as_fd(), hidden).map_err(io_at(&raw))?;
            self.forget_parent();
            return Ok(());
        }
        let xattrs = xattrs(entry)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(corrupt)? & 0o7777;
        let uid = header.uid().map_err(corrupt)?;
        let gid = header.gid().map_err(corrupt)?;
        let mtime = header.mtime().unwrap_or(0);
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let link_name = match kind {
            EntryType::Symlink | EntryType::Link => Some(link_target(entry, &raw)?),
            _ => None,
        };
        // The source of a hard link, resolved (and checked) before anything is replaced.
        let link_source = match (kind, &link_name) {
            (EntryType::Link, Some(l)) => Some(self.link_source(&raw, l, uid, gid)?),
            _ => None,
        };
        let parent = self.parent(&raw, &comps)?;
        let pfd = parent.fd.try_clone().map_err(io_at(&raw))?;
        let real = at::joined(&parent.path, &name);
        let pfd = pfd.as_fd();
        let (keep_dir, removed_dir) = make_room(pfd, &name, kind == EntryType::Directory, &raw)?;
        if removed_dir {
            self.forget_parent();
        }
        match kind {
            EntryType::Directory => {
                let fd = at::make_dir(pfd, &name, keep_dir).map_err(io_at(&raw))?;
                at::chown_fd(fd.as_fd(), uid, gid).map_err(io_at(&raw))?;
                apply_xattrs(fd.as_fd(), &xattrs, &raw);
                self.defer_dir(fd, real.clone(), mode, mtime)
                    .map_err(io_at(&raw))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let f = write_file(pfd, &name, entry, size, &raw)?;
                // chown first: it clears setuid bits and capabilities that come after it.
                at::chown_fd(f.as_fd(), uid, gid).map_err(io_at(&raw))?;
                at::chmod_fd(f.as_fd(), mode).map_err(io_at(&raw))?;
                apply_xattrs(f.as_fd(), &xattrs, &raw);
                at::set_mtime_fd(f.as_fd(), mtime).map_err(io_at(&raw))?;
            }
            EntryType::Symlink => {
                let target = link_name.unwrap_or_default();
                at::symlink_at(pfd, &name, &target).map_err(io_at(&raw))?;
                at::chown_at(pfd, &name, uid, gid).map_err(io_at(&raw))?;
                at::set_mtime_at(pfd, &name, mtime).map_err(io_at(&raw))?;
            }
            EntryType::Link => {
                let Some((src_dir, src_name)) = link_source else {
                    return Err(UnpackError::Corrupt(format!(
                        "{}: hard link without target",
                        raw.display()
                    )));
                };
                at::link_at(src_dir.as_fd(), &src_name, pfd, &name).map_err(io_at(&raw))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let k = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                match at::mknod_at(pfd, &name, k, mode, major, minor) {
                    Ok(()) => {
                        at::chown_at(pfd, &name, uid, gid).map_err(io_at(&raw))?;
                        at::chmod_node_at(pfd, &name, mode).map_err(io_at(&raw))?;
                    }
                    // Without CAP_MKNOD (rootless), device nodes are skipped as rootless
                    // runtimes do; the guest's devtmpfs provides the real ones.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        tracing::debug!("skipping device node {}: {e}", raw.display());
                        return Ok(());
                    }
                    Err(e) => return Err(io_at(&raw)(e)),
                }
            }
            other => {
                tracing::debug!("skipping tar entry {} of type {other:?}", raw.display());
                return Ok(());
            }
        }
        self.created.insert(real);
        Ok(())
    }

    /// The directory and name a hard link entry points at: inside the root, not a directory,
    /// and not a setuid or setgid file of another owner than the link entry's.
    fn link_source(
        &mut self,
        raw: &Path,
        link: &Path,
        uid: u64,
        gid: u64,
    ) -> Result<(OwnedFd, OsString), UnpackError> {
        let mut lcomps = normalise(link)?;
        let lname = lcomps.pop().ok_or_else(|| UnpackError::Escape {
            path: raw.display().to_string(),
            why: "hard link to the root",
        })?;
        let missing = || {
            UnpackError::Corrupt(format!(
                "{}: hard link target {} is missing or a directory",
                raw.display(),
                link.display()
            ))
        };
        let dir = match at::resolve(self.root.as_fd(), &lcomps, false) {
            Ok(d) => d,
            Err(ResolveError::Missing | ResolveError::NotADirectory) => return Err(missing()),
            Err(e) => return Err(resolve_error(raw, e)),
        };
        let st = at::lstat_at(dir.fd.as_fd(), &lname)
            .map_err(io_at(raw))?
            .filter(|st| at::kind(st) != SFlag::S_IFDIR)
            .ok_or_else(missing)?;
        let setuid_other = st.st_mode & 0o4000 != 0 && u64::from(st.st_uid) != uid;
        let setgid_other = st.st_mode & 0o2000 != 0 && u64::from(st.st_gid) != gid;
        if setuid_other || setgid_other {
            return Err(UnpackError::Escape {
                path: raw.display().to_string(),
                why: "hard link to a setuid or setgid file of another owner",
            });
        }
        Ok((dir.fd, lname))
    }

    /// `.wh..wh..opq`: the directory's lower contents go, this layer's entries stay.
    fn opaque(&mut self, raw: &Path, comps: &[OsString]) -> Result<(), UnpackError> {
        let parent = self.parent(raw, comps)?;
        let pfd = parent.fd.try_clone().map_err(io_at(raw))?;
        let ppath = parent.path.clone();
        for child in at::names(pfd.as_fd()).map_err(io_at(raw))? {
            if !self.created.contains(&at::joined(&ppath, &child)) {
                at::remove(pfd.as_fd(), &child).map_err(io_at(raw))?;
            }
        }
        self.forget_parent();
        Ok(())
    }

    /// Directory modes and times last: adding children changed their mtime, and a read-only
    /// directory mode would have stopped us writing into it.
    fn finish(self) -> Result<(), UnpackError> {
        for d in self.dirs.into_iter().rev() {
            let fd = match d.handle {
                DirHandle::Fd(fd) => fd,
                DirHandle::Path { path, dev, ino } => {
                    let shown = at::joined(&path, OsStr::new(""));
                    match at::reopen_exact(self.root.as_fd(), &path, dev, ino)
                        .map_err(io_at(&shown))?
                    {
                        Some(fd) => fd,
                        // Replaced or removed by a later entry: nothing of it is left to set.
                        None => continue,
                    }
                }
            };
            at::chmod_fd(fd.as_fd(), d.mode).map_err(io_at(self.root_path))?;
            at::set_mtime_fd(fd.as_fd(), d.mtime).map_err(io_at(self.root_path))?;
        }
        Ok(())
    }
}

/// Extended attributes an entry carries (`SCHILY.xattr.NAME` PAX records) that an image may
/// set: file capabilities and the `user.` namespace. Others (`trusted.`, `security.selinux`,
/// overlay's own) would mean something to the host, not the guest, and are dropped.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(OsString, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(corrupt)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(corrupt)?;
        let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if name == b"security.capability" || name.starts_with(b"user.") {
            out.push((
                OsStr::from_bytes(name).to_os_string(),
                ext.value_bytes().to_vec(),
            ));
        }
    }
    Ok(out)
}

fn apply_xattrs(fd: BorrowedFd<'_>, xattrs: &[(OsString, Vec<u8>)], raw: &Path) {
    for (k, v) in xattrs {
        if let Err(e) = at::set_xattr_fd(fd, k, v) {
            tracing::debug!("{}: xattr {}: {e}", raw.display(), k.to_string_lossy());
        }
    }
}

/// Applies one layer (an uncompressed tar stream) onto `root`, adding to `totals`.
pub fn apply_layer<R: Read>(
    root: &Path,
    layer: R,
    limits: &Limits,
    totals: &mut Totals,
) -> Result<(), UnpackError> {
    raise_nofile();
    apply_layer_with_budget(root, layer, limits, totals, fd_budget())
}

fn apply_layer_with_budget<R: Read>(
    root: &Path,
    layer: R,
    limits: &Limits,
    totals: &mut Totals,
    fd_budget: u64,
) -> Result<(), UnpackError> {
    let root_fd = crate::beneath::open_root(root).map_err(io_at(root))?;
    let mut u = Unpacker {
        root: root_fd,
        root_path: root,
        created: HashSet::new(),
        dirs: Vec::new(),
        kept_fds: 0,
        fd_budget,
        cache: None,
    };
    let mut archive = Archive::new(layer);
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        u.entry(&mut entry, limits, totals)?;
    }
    u.finish()
}

/// Checks that `name` is a plain file name (no separators, not `.` or `..`).
pub fn is_plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/')
}

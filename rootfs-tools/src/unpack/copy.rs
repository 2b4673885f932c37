//! `cp` out of a container: a tree the guest tarred, written into a directory of the user's
//! on the host. The guest chose every byte, so the policy is the host's, not the image's:
//!
//! - every entry lies under the one top name the first entry gave (the path asked for);
//!   anything else is refused, so a guest cannot write beside what was asked for;
//! - parents are opened one component at a time with `O_NOFOLLOW`: a symlink on an entry's
//!   path, whoever made it, is refused, never followed (a link is only ever created, as
//!   itself);
//! - nothing is chowned (the files belong to whoever runs `cp`, as Docker's CLI does) and
//!   setuid and setgid bits are dropped, so a guest cannot plant a setuid file on the host;
//! - device nodes, fifos and sockets are skipped (counted), never made on the host;
//! - hard links may only point at a regular file this copy wrote;
//! - sizes and entry counts are bounded by [`Limits`].

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use tar::{Archive, EntryType};

use super::{
    Limits, Totals, UnpackError, at, corrupt, io_at, link_target, make_room, normalise, write_file,
};

/// Where the copied tree's top entry lands in the destination directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Top {
    /// Under its own name (`cp c1:/etc/hostname dir/` makes `dir/hostname`).
    Keep,
    /// Under this name (`cp c1:/etc/hostname dir/h`).
    Rename(OsString),
    /// Its children straight into the directory (`cp c1:/d/. dir`); the top entry itself is
    /// not written.
    Contents,
}

/// What a copy wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Bytes and entries.
    pub totals: Totals,
    /// Device nodes, fifos and other entries that are never made on the host.
    pub skipped: u64,
    /// Files whose setuid or setgid bit was dropped.
    pub unprivileged: u64,
}

/// The first entry of a copied tree: its top name and whether it is a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopEntry {
    /// The name the tree is rooted at.
    pub name: OsString,
    /// A directory (else a file, a link or a node).
    pub is_dir: bool,
}

/// Most directory descriptors kept to set modes and times at the end; past it, a directory
/// keeps the mode it was made with.
const MAX_DEFERRED_DIRS: usize = 4096;

/// Writes the tree in `tar` under a destination directory. `place` is called once, with the
/// first entry, and answers the directory to write into (the user's, trusted as a path) and
/// where the top goes; an error from it ends the copy before anything is written.
pub fn extract_copy<R: Read>(
    tar: R,
    limits: &Limits,
    place: impl FnOnce(&TopEntry) -> Result<(PathBuf, Top), UnpackError>,
) -> Result<CopyOutcome, UnpackError> {
    let mut archive = Archive::new(tar);
    let mut entries = archive.entries().map_err(corrupt)?;
    let mut outcome = CopyOutcome::default();
    // The first entry with a path decides where everything goes.
    let (mut first, comps) = loop {
        let Some(entry) = entries.next() else {
            return Err(UnpackError::Corrupt("the copied tree is empty".into()));
        };
        let entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let comps = normalise(&raw)?;
        if !comps.is_empty() {
            break (entry, comps);
        }
    };
    let top = TopEntry {
        name: comps[0].clone(),
        is_dir: comps.len() == 1 && first.header().entry_type() == EntryType::Directory,
    };
    let (dest, rule) = place(&top)?;
    let root = crate::beneath::open_root(&dest).map_err(io_at(&dest))?;
    let mut c = Copier {
        root,
        top: top.name,
        rule,
        created: HashSet::new(),
        dirs: Vec::new(),
        cache: None,
    };
    c.entry(&mut first, limits, &mut outcome)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        c.entry(&mut entry, limits, &mut outcome)?;
    }
    c.finish(&dest)?;
    Ok(outcome)
}

struct Copier {
    root: OwnedFd,
    top: OsString,
    rule: Top,
    /// Regular files this copy wrote (real paths under the root): hard links may point only
    /// at these.
    created: HashSet<PathBuf>,
    /// Directories whose mode and time are set last.
    dirs: Vec<(OwnedFd, u32, u64)>,
    /// The last parent opened: its components and descriptor.
    cache: Option<(Vec<OsString>, OwnedFd)>,
}

fn escape(raw: &Path, why: &'static str) -> UnpackError {
    UnpackError::Escape {
        path: raw.display().to_string(),
        why,
    }
}

impl Copier {
    /// The entry's path under the destination, by the top rule; `None` for the top itself
    /// under [`Top::Contents`].
    fn place(&self, raw: &Path) -> Result<Option<Vec<OsString>>, UnpackError> {
        let comps = normalise(raw)?;
        let Some((first, rest)) = comps.split_first() else {
            return Ok(None);
        };
        if *first != self.top {
            return Err(escape(raw, "outside the copied path"));
        }
        Ok(match &self.rule {
            Top::Keep => Some(comps),
            Top::Rename(name) => Some(std::iter::once(name.clone()).chain(rest.to_vec()).collect()),
            Top::Contents if rest.is_empty() => None,
            Top::Contents => Some(rest.to_vec()),
        })
    }

    /// Opens the directory `comps` under the root without following any link, making missing
    /// directories (0755).
    fn parent(&mut self, raw: &Path, comps: &[OsString]) -> Result<OwnedFd, UnpackError> {
        if let Some((k, fd)) = &self.cache
            && k == comps
        {
            return fd.try_clone().map_err(io_at(raw));
        }
        let mut cur = self.root.try_clone().map_err(io_at(raw))?;
        for c in comps {
            let open = |dir: &OwnedFd| {
                nix::fcntl::openat(
                    dir,
                    c.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            };
            let next = match open(&cur) {
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(
                        &cur,
                        c.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_at(raw)(e.into())),
                    }
                    open(&cur)
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(escape(raw, "a symbolic link or a file on its path"));
                }
                Err(e) => return Err(io_at(raw)(e.into())),
            };
        }
        let kept = cur.try_clone().map_err(io_at(raw))?;
        self.cache = Some((comps.to_vec(), kept));
        Ok(cur)
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        limits: &Limits,
        outcome: &mut CopyOutcome,
    ) -> Result<(), UnpackError> {
        let size = entry.header().size().map_err(corrupt)?;
        outcome.totals.count(size, limits)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let Some(mut comps) = self.place(&raw)? else {
            return Ok(());
        };
        let Some(name) = comps.pop() else {
            return Ok(());
        };
        let kind = entry.header().entry_type();
        let link = match kind {
            EntryType::Symlink | EntryType::Link => Some(link_target(entry, &raw)?),
            EntryType::Directory | EntryType::Regular | EntryType::Continuous => None,
            _ => {
                // Device nodes and fifos are the guest's; the host never makes them.
                outcome.skipped += 1;
                return Ok(());
            }
        };
        // setuid and setgid never reach the host; the sticky bit is harmless.
        let full = entry.header().mode().map_err(corrupt)?;
        if full & 0o6000 != 0 && kind != EntryType::Symlink {
            outcome.unprivileged += 1;
        }
        let mode = full & 0o1777;
        let mtime = entry.header().mtime().unwrap_or(0);
        // A hard link's source is checked before anything is replaced.
        let source = match (kind, &link) {
            (EntryType::Link, Some(l)) => Some(self.link_source(&raw, l)?),
            _ => None,
        };
        let dir = self.parent(&raw, &comps)?;
        let pfd = dir.as_fd();
        let real: PathBuf = comps.iter().chain(std::iter::once(&name)).collect();
        let (keep, removed_dir) = make_room(pfd, &name, kind == EntryType::Directory, &raw)?;
        if removed_dir {
            self.cache = None;
        }
        match kind {
            EntryType::Directory => {
                let fd = at::make_dir(pfd, &name, keep).map_err(io_at(&raw))?;
                if self.dirs.len() < MAX_DEFERRED_DIRS {
                    self.dirs.push((fd, mode, mtime));
                } else {
                    at::chmod_fd(fd.as_fd(), 0o755).map_err(io_at(&raw))?;
                }
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                at::symlink_at(pfd, &name, &target).map_err(io_at(&raw))?;
                at::set_mtime_at(pfd, &name, mtime).map_err(io_at(&raw))?;
            }
            EntryType::Link => {
                let Some((sdir, sname)) = source else {
                    return Err(UnpackError::Corrupt(format!(
                        "{}: hard link without target",
                        raw.display()
                    )));
                };
                at::link_at(sdir.as_fd(), &sname, pfd, &name).map_err(io_at(&raw))?;
            }
            _ => {
                let f = write_file(pfd, &name, entry, size, &raw)?;
                at::chmod_fd(f.as_fd(), mode).map_err(io_at(&raw))?;
                at::set_mtime_fd(f.as_fd(), mtime).map_err(io_at(&raw))?;
                self.created.insert(real);
            }
        }
        Ok(())
    }

    /// A hard link's target: a regular file this copy wrote, reached without a link.
    fn link_source(&mut self, raw: &Path, link: &Path) -> Result<(OwnedFd, OsString), UnpackError> {
        let mut comps = self
            .place(link)?
            .ok_or_else(|| escape(raw, "hard link to the copied path's top"))?;
        let real: PathBuf = comps.iter().collect();
        if !self.created.contains(&real) {
            return Err(escape(raw, "hard link to a file this copy did not write"));
        }
        let name = comps
            .pop()
            .ok_or_else(|| escape(raw, "hard link to the root"))?;
        let dir = self.parent(raw, &comps)?;
        match at::lstat_at(dir.as_fd(), &name).map_err(io_at(raw))? {
            Some(st) if at::kind(&st) == SFlag::S_IFREG => Ok((dir, name)),
            _ => Err(escape(raw, "hard link to a file this copy did not write")),
        }
    }

    fn finish(self, dest: &Path) -> Result<(), UnpackError> {
        for (fd, mode, mtime) in self.dirs.into_iter().rev() {
            at::chmod_fd(fd.as_fd(), mode).map_err(io_at(dest))?;
            at::set_mtime_fd(fd.as_fd(), mtime).map_err(io_at(dest))?;
        }
        Ok(())
    }
}

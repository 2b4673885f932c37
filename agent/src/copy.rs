//! `cp` and `export` in the guest: the container's files as a tar for the host, and a tar from
//! the host written into the container. Paths resolve in the container's root (the agent's
//! `/` after `pivot_root`; a helper VM for a stopped container pivots into the same overlay),
//! so the container's own symlinks resolve as its processes see them. The host treats what
//! comes out as hostile (`mvm_rootfs::unpack::copy`); what goes in is the user's.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use mvm_agent_protocol::{CopyFailedKind, CopyIn, CopyInHow, CopyOut};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use tar::EntryType;

use crate::changes::{Boundary, LayerWalk};

/// Why a copy failed, as the host is told.
#[derive(Debug)]
pub struct CopyError {
    /// Coarse reason.
    pub kind: CopyFailedKind,
    /// One line for a human.
    pub message: String,
}

impl CopyError {
    fn new(kind: CopyFailedKind, message: impl Into<String>) -> CopyError {
        CopyError {
            kind,
            message: message.into(),
        }
    }
}

impl From<io::Error> for CopyError {
    fn from(e: io::Error) -> CopyError {
        CopyError::new(CopyFailedKind::Other, e.to_string())
    }
}

fn not_found(path: &str) -> CopyError {
    CopyError::new(
        CopyFailedKind::NotFound,
        format!("no such file or directory: {path}"),
    )
}

/// `path` (absolute, or taken from `/`) under `root`, without `.` components.
fn in_root(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    out
}

/// The name a path's tar is rooted at: its last component (`rootfs` for `/`).
fn top_name(path: &Path) -> OsString {
    match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => OsString::from("rootfs"),
    }
}

/// `cp` out: a tar of `req.path` under `root`, its one top entry named by the path's last
/// component.
pub fn copy_out(root: &Path, req: &CopyOut, out: impl Write) -> Result<(), CopyError> {
    let asked = in_root(root, &req.path);
    let name = top_name(Path::new(&req.path));
    // The parent resolves as the container resolves it; the last component is followed
    // only for `-L`.
    let target = if req.follow_link {
        fs::canonicalize(&asked).map_err(|_| not_found(&req.path))?
    } else {
        asked.clone()
    };
    let (parent, last) = match (target.parent(), target.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
        // The root itself.
        _ => (target.clone(), OsString::from(".")),
    };
    let dir = nix::fcntl::open(
        &parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| not_found(&req.path))?;
    let st = nix::sys::stat::fstatat(&dir, last.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|_| not_found(&req.path))?;
    let mut walk = LayerWalk::new(out, false, Boundary::KernelFs);
    walk.entry(dir.as_fd(), &last, Path::new(&name), &st)?;
    walk.finish()?;
    Ok(())
}

/// `export`: the root file system under `root` as a tar, without what is mounted on it.
pub fn export_rootfs_at(root: &Path, out: impl Write) -> io::Result<()> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dev = nix::sys::stat::fstat(&dir)?.st_dev;
    let mut walk = LayerWalk::new(out, false, Boundary::Device(dev));
    walk.dir(dir.as_fd(), Path::new(""))?;
    walk.finish()
}

/// `export` of the container's root.
pub fn export_rootfs(out: impl Write) -> io::Result<()> {
    export_rootfs_at(Path::new("/"), out)
}

/// Where the entries of a [`CopyIn`] tar go: a directory, and what the tar's top becomes.
enum Place {
    /// Every path as it is, under the directory.
    AsIs,
    /// The top renamed (`None`: dropped, its children straight under the directory).
    Top {
        from: OsString,
        to: Option<OsString>,
    },
}

/// `cp` in: the tar `input` written where `req` says under `root`. The whole stream is read
/// even after a failure, so the host is never left writing into a closed connection.
pub fn copy_in(root: &Path, req: &CopyIn, mut input: impl Read) -> Result<(), CopyError> {
    let result = copy_in_inner(root, req, &mut input);
    let _ = io::copy(&mut input, &mut io::sink());
    result
}

fn copy_in_inner(root: &Path, req: &CopyIn, input: &mut impl Read) -> Result<(), CopyError> {
    let dest = in_root(root, &req.path);
    let must_be_dir = req.path.ends_with('/') || req.path.ends_with("/.");
    let meta = fs::metadata(&dest).ok();
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries()?;
    let mut first = loop {
        match entries.next() {
            Some(e) => {
                let e = e?;
                if !components(&e.path()?)?.is_empty() {
                    break Some(e);
                }
            }
            None => break None,
        }
    };
    let Some(top) = first.as_ref() else {
        return Ok(()); // nothing to copy
    };
    let top_comps = components(&top.path()?)?;
    let top_name = top_comps[0].clone();
    let top_is_dir = top_comps.len() == 1 && top.header().entry_type() == EntryType::Directory;
    let not_dir = || {
        CopyError::new(
            CopyFailedKind::NotADirectory,
            format!("{} is not a directory", req.path),
        )
    };
    let (dir, place) = match (req.how, &meta) {
        (CopyInHow::Archive, Some(m)) if m.is_dir() => (dest, Place::AsIs),
        (CopyInHow::Archive, Some(_)) => return Err(not_dir()),
        (CopyInHow::Archive, None) => return Err(not_found(&req.path)),
        (CopyInHow::Named, Some(m)) if m.is_dir() => (dest, Place::AsIs),
        (CopyInHow::Contents, Some(m)) if m.is_dir() => (
            dest,
            Place::Top {
                from: top_name,
                to: None,
            },
        ),
        (_, Some(_)) if top_is_dir => {
            return Err(CopyError::new(
                CopyFailedKind::Other,
                format!("cannot overwrite non-directory {} with directory", req.path),
            ));
        }
        (_, Some(_)) if must_be_dir => return Err(not_dir()),
        (_, None) if must_be_dir && !top_is_dir => {
            return Err(CopyError::new(
                CopyFailedKind::NotFound,
                format!("no such directory: {}", req.path),
            ));
        }
        // A file over a file, or anything as a new name: into the parent, renamed.
        _ => {
            let (Some(parent), Some(to)) = (dest.parent(), dest.file_name()) else {
                return Err(not_dir());
            };
            if !parent.is_dir() {
                return Err(not_found(&req.path));
            }
            (
                parent.to_path_buf(),
                Place::Top {
                    from: top_name,
                    to: Some(to.to_os_string()),
                },
            )
        }
    };
    let writer = Writer {
        dir,
        place,
        keep_owners: req.keep_owners,
    };
    let mut dirs = Vec::new();
    if let Some(e) = first.as_mut() {
        writer.entry(e, &mut dirs)?;
    }
    for e in entries {
        writer.entry(&mut e?, &mut dirs)?;
    }
    // Directory times last: their children changed them.
    for (path, mtime) in dirs.into_iter().rev() {
        set_mtime(&path, mtime);
    }
    Ok(())
}

/// The normal components of a tar path; `..` is refused.
fn components(p: &Path) -> Result<Vec<OsString>, CopyError> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                return Err(CopyError::new(
                    CopyFailedKind::Other,
                    format!("{}: a path in the archive climbs out with ..", p.display()),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn set_mtime(path: &Path, mtime: u64) {
    let t = nix::sys::time::TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

struct Writer {
    dir: PathBuf,
    place: Place,
    keep_owners: bool,
}

impl Writer {
    /// Where a tar path lands; `None` for the dropped top.
    fn target(&self, raw: &Path) -> Result<Option<PathBuf>, CopyError> {
        let comps = components(raw)?;
        let Some((first, rest)) = comps.split_first() else {
            return Ok(None);
        };
        let mut out = self.dir.clone();
        match &self.place {
            Place::AsIs => out.extend(&comps),
            Place::Top { from, to } => {
                if first != from {
                    return Err(CopyError::new(
                        CopyFailedKind::Other,
                        format!("{}: outside the copied path", raw.display()),
                    ));
                }
                match to {
                    Some(to) => out.push(to),
                    None if rest.is_empty() => return Ok(None),
                    None => {}
                }
                out.extend(rest);
            }
        }
        Ok(Some(out))
    }

    fn entry<R: Read>(
        &self,
        e: &mut tar::Entry<'_, R>,
        dirs: &mut Vec<(PathBuf, u64)>,
    ) -> Result<(), CopyError> {
        let raw = e.path()?.into_owned();
        let Some(target) = self.target(&raw)? else {
            return Ok(());
        };
        let kind = e.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let existing = fs::symlink_metadata(&target).ok();
        let keep_dir =
            kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        match &existing {
            Some(m) if m.is_dir() && !keep_dir => fs::remove_dir_all(&target)?,
            Some(_) if !keep_dir => fs::remove_file(&target)?,
            _ => {}
        }
        let mode = e.header().mode()? & 0o7777;
        let mtime = e.header().mtime().unwrap_or(0);
        let (uid, gid) = if self.keep_owners {
            (e.header().uid()?, e.header().gid()?)
        } else {
            (0, 0)
        };
        let bad = |what: &str| {
            CopyError::new(CopyFailedKind::Other, format!("{}: {what}", raw.display()))
        };
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    fs::create_dir(&target)?;
                }
                dirs.push((target.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = fs::File::create(&target)?;
                io::copy(e, &mut f)?;
            }
            EntryType::Symlink => {
                let to = e
                    .link_name()?
                    .ok_or_else(|| bad("a link without a target"))?;
                std::os::unix::fs::symlink(&to, &target)?;
            }
            EntryType::Link => {
                let to = e
                    .link_name()?
                    .ok_or_else(|| bad("a link without a target"))?;
                let source = self
                    .target(&to)?
                    .ok_or_else(|| bad("a hard link to the top"))?;
                fs::hard_link(source, &target)?;
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let k = match kind {
                    EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let major = e.header().device_major()?.unwrap_or(0);
                let minor = e.header().device_minor()?.unwrap_or(0);
                nix::sys::stat::mknod(
                    &target,
                    k,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(io::Error::from)?;
            }
            _ => return Ok(()),
        }
        let (uid, gid) = (
            u32::try_from(uid).unwrap_or(0),
            u32::try_from(gid).unwrap_or(0),
        );
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
        // After chown, which clears setuid bits; a link has no mode of its own.
        if kind != EntryType::Symlink {
            fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        set_mtime(&target, mtime);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mvm-agent-copy-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn tar_of(root: &Path, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        copy_out(
            root,
            &CopyOut {
                path: path.into(),
                follow_link: false,
            },
            &mut out,
        )
        .unwrap();
        out
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn copy_out_names_the_tree_by_the_last_component() {
        let src = scratch("out");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/f"), b"1").unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("d/l")).unwrap();
        assert_eq!(names(&tar_of(&src, "/d")), ["d", "d/e", "d/e/f", "d/l"]);
        assert_eq!(names(&tar_of(&src, "d/e/f")), ["f"]);
        let err = copy_out(
            &src,
            &CopyOut {
                path: "/missing".into(),
                follow_link: false,
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.kind, CopyFailedKind::NotFound);
        fs::remove_dir_all(&src).unwrap();
    }

    fn copy(root: &Path, tar: &[u8], path: &str, how: CopyInHow) -> Result<(), CopyError> {
        let req = CopyIn {
            path: path.into(),
            how,
            keep_owners: false,
        };
        copy_in(root, &req, tar)
    }

    #[test]
    fn copy_in_places_as_docker_does() {
        let src = scratch("in-src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/f"), b"1").unwrap();
        fs::write(src.join("file"), b"2").unwrap();
        let d = tar_of(&src, "/d");
        let f = tar_of(&src, "/file");
        let root = scratch("in-root");
        fs::create_dir_all(root.join("tmp")).unwrap();
        // Into an existing directory, under the source's name.
        copy(&root, &f, "/tmp", CopyInHow::Named).unwrap();
        assert_eq!(fs::read(root.join("tmp/file")).unwrap(), b"2");
        // As a new name, and over an existing file.
        copy(&root, &f, "/tmp/g", CopyInHow::Named).unwrap();
        copy(&root, &f, "/tmp/g", CopyInHow::Named).unwrap();
        assert_eq!(fs::read(root.join("tmp/g")).unwrap(), b"2");
        // A directory as a new name, into a directory, its contents.
        copy(&root, &d, "/new", CopyInHow::Named).unwrap();
        assert_eq!(fs::read(root.join("new/e/f")).unwrap(), b"1");
        copy(&root, &d, "/tmp", CopyInHow::Named).unwrap();
        assert_eq!(fs::read(root.join("tmp/d/e/f")).unwrap(), b"1");
        copy(&root, &d, "/tmp", CopyInHow::Contents).unwrap();
        assert_eq!(fs::read(root.join("tmp/e/f")).unwrap(), b"1");
        // What Docker refuses.
        let e = copy(&root, &d, "/tmp/g", CopyInHow::Named).unwrap_err();
        assert_eq!(e.kind, CopyFailedKind::Other, "{}", e.message);
        let e = copy(&root, &f, "/nodir/x", CopyInHow::Named).unwrap_err();
        assert_eq!(e.kind, CopyFailedKind::NotFound);
        let e = copy(&root, &f, "/nodir/", CopyInHow::Named).unwrap_err();
        assert_eq!(e.kind, CopyFailedKind::NotFound);
        let e = copy(&root, &f, "/tmp/g", CopyInHow::Archive).unwrap_err();
        assert_eq!(e.kind, CopyFailedKind::NotADirectory);
        fs::remove_dir_all(&src).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}

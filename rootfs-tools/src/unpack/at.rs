//! The unpacker's view of its root: directory descriptors, and every filesystem call made
//! relative to one of them with a single plain name, never through a path.
//!
//! Resolving an entry's parent walks its components one descriptor at a time with
//! `O_NOFOLLOW | O_DIRECTORY`; a symlink met on the way (which a layer may have made) is read
//! with `readlinkat` and its target resolved the same way with the root as `/`, as the guest
//! will see it: an absolute or `..`-climbing link is clamped at the root, like `chroot`. So the
//! kernel never follows a link an image made, and every metadata call below takes the final
//! name (or a descriptor) only.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

/// Symlinks followed while resolving one path before giving up (as Linux's ELOOP).
const MAX_SYMLINKS: u32 = 40;

/// Why a parent could not be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// A component is not a directory (and not a link to one).
    NotADirectory,
    /// More than [`MAX_SYMLINKS`] links.
    TooManyLinks,
    /// A component is missing and `create` was not set.
    Missing,
    /// A system call failed.
    Io(io::Error),
}

impl From<Errno> for ResolveError {
    fn from(e: Errno) -> Self {
        ResolveError::Io(io::Error::from(e))
    }
}

/// A directory reached under the root: its descriptor and its real path (no link in it),
/// relative to the root.
pub struct Dir {
    /// Open with `O_RDONLY | O_DIRECTORY`.
    pub fd: OwnedFd,
    /// Components from the root, all real directories.
    pub path: Vec<OsString>,
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` when nothing has that name.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The kind of file a stat describes.
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Resolves the directory `components` under `root` as the guest would (links clamped at the
/// root), creating missing directories (mode 0755) when `create` is set.
pub fn resolve(
    root: BorrowedFd<'_>,
    components: &[OsString],
    create: bool,
) -> Result<Dir, ResolveError> {
    // stack[i] is the descriptor of path[..=i]; empty means the root itself.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut path: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            stack.pop();
            path.pop();
            continue;
        }
        let cur = stack.last().map_or(root, |fd| fd.as_fd());
        match lstat_at(cur, &c).map_err(ResolveError::Io)? {
            Some(st) if kind(&st) == SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManyLinks);
                }
                let target = nix::fcntl::readlinkat(cur, c.as_os_str())?;
                let bytes = target.as_bytes();
                if bytes.first() == Some(&b'/') {
                    stack.clear();
                    path.clear();
                }
                for part in bytes.split(|b| *b == b'/').rev() {
                    if !part.is_empty() {
                        pending.push_front(OsStr::from_bytes(part).to_os_string());
                    }
                }
            }
            Some(st) if kind(&st) == SFlag::S_IFDIR => {
                stack.push(open_dir_at(cur, &c)?);
                path.push(c);
            }
            Some(_) => return Err(ResolveError::NotADirectory),
            None if create => {
                match nix::sys::stat::mkdirat(cur, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                stack.push(open_dir_at(cur, &c)?);
                path.push(c);
            }
            None => return Err(ResolveError::Missing),
        }
    }
    let fd = match stack.pop() {
        Some(fd) => fd,
        None => root.try_clone_to_owned().map_err(ResolveError::Io)?,
    };
    Ok(Dir { fd, path })
}

/// Re-opens the directory at the real path `path` under `root` without following any link,
/// and only if it is still the inode `(dev, ino)`: how deferred metadata reaches a directory
/// whose descriptor was not kept.
pub fn reopen_exact(
    root: BorrowedFd<'_>,
    path: &[OsString],
    dev: u64,
    ino: u64,
) -> io::Result<Option<OwnedFd>> {
    let mut cur = root.try_clone_to_owned()?;
    for c in path {
        cur = match open_dir_at(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    }
    let st = nix::sys::stat::fstat(&cur)?;
    Ok((st.st_dev == dev && st.st_ino == ino).then_some(cur))
}

/// The names in the directory `dir` (not `.` and `..`).
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    crate::beneath::list_dir(dir)
}

/// Removes `name` in `dir`, a whole tree if it is a directory; links are removed, never
/// followed. Nothing there is fine.
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if kind(&st) == SFlag::S_IFDIR {
        let sub = open_dir_at(dir, name)?;
        for child in names(sub.as_fd())? {
            remove(sub.as_fd(), &child)?;
        }
        drop(sub);
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir)?;
    } else {
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// Creates the directory `name` in `dir` (mode 0700 until its own mode is applied last) or
/// keeps the one there, and opens it.
pub fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, keep: bool) -> io::Result<OwnedFd> {
    if !keep {
        nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o700))?;
    }
    Ok(open_dir_at(dir, name)?)
}

/// Creates the regular file `name` in `dir`; it must not exist (no link is followed).
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

fn ids(uid: u64, gid: u64) -> io::Result<(Uid, Gid)> {
    let uid = u32::try_from(uid).map_err(|_| io::Error::other(format!("uid {uid} too large")))?;
    let gid = u32::try_from(gid).map_err(|_| io::Error::other(format!("gid {gid} too large")))?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Owner of an open file.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u64, gid: u64) -> io::Result<()> {
    let (u, g) = ids(uid, gid)?;
    Ok(nix::unistd::fchown(fd, Some(u), Some(g))?)
}

/// Owner of `name` in `dir` itself (a link is not followed).
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u64, gid: u64) -> io::Result<()> {
    let (u, g) = ids(uid, gid)?;
    Ok(nix::unistd::fchownat(
        dir,
        name,
        Some(u),
        Some(g),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Mode (setuid, setgid and sticky included) of an open file.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(
        fd,
        Mode::from_bits_truncate(mode & 0o7777),
    )?)
}

fn times(mtime: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0)
}

/// Access and modification time of an open file.
pub fn set_mtime_fd(fd: BorrowedFd<'_>, mtime: u64) -> io::Result<()> {
    let t = times(mtime);
    Ok(nix::sys::stat::futimens(fd, &t, &t)?)
}

/// Times of `name` in `dir` itself (a link is not followed).
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: u64) -> io::Result<()> {
    let t = times(mtime);
    Ok(nix::sys::stat::utimensat(
        dir,
        name,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?)
}

/// A symlink `name` in `dir` with the target text as the image wrote it: only the guest
/// follows it, inside its own root.
pub fn symlink_at(dir: BorrowedFd<'_>, name: &OsStr, target: &std::path::Path) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(target, dir, name)?)
}

/// A hard link `name` in `dir` to `src_name` in `src_dir` (a link is linked as itself).
pub fn link_at(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(nix::unistd::linkat(
        src_dir,
        src_name,
        dir,
        name,
        AtFlags::empty(),
    )?)
}

/// A device node or fifo `name` in `dir`, then its owner and mode (it was just made, so the
/// name is that node, not a link).
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: SFlag,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    nix::sys::stat::mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
    )?;
    Ok(())
}

/// Mode of the node `name` in `dir` that this unpacker just created with [`mknod_at`]
/// (`fchmodat` cannot refuse to follow a link on every kernel; there is none here).
pub fn chmod_node_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    match lstat_at(dir, name)? {
        Some(st) if kind(&st) != SFlag::S_IFLNK => Ok(nix::sys::stat::fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?),
        _ => Err(io::Error::other("node replaced while unpacking")),
    }
}

/// Extended attribute `key` on an open file.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, key: &OsStr, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let k = std::ffi::CString::new(key.as_bytes()).map_err(|_| io::Error::other("NUL in name"))?;
    // SAFETY: the descriptor is open for the call's duration, `k` is NUL-terminated and
    // `value` is a live slice of the length passed; the kernel only reads both.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The path of `name` under a resolved parent, for messages and bookkeeping.
pub fn joined(parent: &[OsString], name: &OsStr) -> PathBuf {
    let mut p: PathBuf = parent.iter().collect();
    p.push(name);
    p
}

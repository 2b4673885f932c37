//! Opening paths under a root that untrusted bytes made (a build context, an unpacked image),
//! without ever leaving it.
//!
//! The kernel resolves the path with `openat2(RESOLVE_IN_ROOT)`: every symlink, `..` and
//! absolute path is resolved as if the root were `/` (as `chroot` would, and as Docker's
//! builder scopes a context's links), so no component ever reaches a host file. Magic links
//! (`/proc/self/fd/N`) and mount crossings are refused outright. The returned descriptor is
//! what callers read and walk from (`openat` with `O_NOFOLLOW` below it), never the path.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode};

/// How many bytes [`read_file`] reads at most from a file an attacker may have made huge.
pub const MAX_SMALL_FILE: u64 = 4 << 20;

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// Opens the directory `path` as a root to resolve under. `path` itself is trusted (the
/// caller chose it); what is below it is not.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens `rel` under `root` as an `O_PATH` descriptor, following symlinks only inside it
/// (the last one too when `follow_last`; otherwise a final link is opened as itself, for the
/// caller to copy as a link). `O_PATH` looks at the file without opening it: a fifo (which
/// would block) or a device node (whose open has effects) that a hostile root names is never
/// opened. Read a regular file through [`reopen_file`].
pub fn open(root: BorrowedFd<'_>, rel: &Path, follow_last: bool) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow_last {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new().flags(flags).resolve(resolve_flags());
    nix::fcntl::openat2(root, rel, how).map_err(io::Error::from)
}

/// The regular file an `O_PATH` descriptor from [`open`] holds, opened for reading. Its
/// `/proc/self/fd` entry reopens that very inode without resolving any name again; the inode
/// is checked all the same (`st` is the descriptor's `fstat`).
pub fn reopen_file(fd: BorrowedFd<'_>, st: &FileStat) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other("not a regular file"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    same_file(&f, st)?;
    Ok(f)
}

/// Fails unless `f` is the regular file `st` describes (it was not replaced between the
/// `stat` and the `open`).
pub fn same_file(f: &File, st: &FileStat) -> io::Result<()> {
    use std::os::fd::AsFd;
    let now = nix::sys::stat::fstat(f.as_fd())?;
    if now.st_mode & libc::S_IFMT != libc::S_IFREG
        || now.st_ino != st.st_ino
        || now.st_dev != st.st_dev
    {
        return Err(io::Error::other("the file changed while it was being read"));
    }
    Ok(())
}

/// Opens the directory `rel` under `root` (links inside the root followed) for listing.
pub fn open_dir(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(resolve_flags());
    nix::fcntl::openat2(root, rel, how).map_err(io::Error::from)
}

/// The names in the directory `dir` (not `.` and `..`), sorted.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    // A fresh descriptor of the directory: a dup would share (and move) its offset.
    let own = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(own).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads the regular file `rel` under `root` (links followed inside the root only); a
/// missing file is `Ok(None)`. A fifo or device there is refused without being opened, and a
/// file over [`MAX_SMALL_FILE`] bytes is an error, not cut short. For the Dockerfile, the
/// `.dockerignore` and an image's /etc/passwd and /etc/group.
pub fn read_file(root: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsFd;
    let fd = match open(root, rel, true) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    let mut data = Vec::new();
    reopen_file(fd.as_fd(), &st)?
        .take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > MAX_SMALL_FILE {
        return Err(io::Error::other(format!(
            "larger than {} MiB",
            MAX_SMALL_FILE >> 20
        )));
    }
    Ok(Some(data))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)` as std's metadata type would have it, by
/// descriptor: the `(mode, size, uid, gid, mtime, ino, dev, nlink, rdev)` a walker needs.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<nix::sys::stat::FileStat> {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn links_resolve_inside_the_root_only() {
        let base = std::env::temp_dir().join(format!("mvm-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/secret"), "host").unwrap();
        std::fs::write(root.join("etc/secret"), "inside").unwrap();
        std::os::unix::fs::symlink(base.join("etc"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/etc", root.join("magic")).unwrap();
        let r = open_root(&root).unwrap();
        // An absolute link to the host's directory lands on the root's own path of that name.
        let abs = read_file(r.as_fd(), Path::new("abs/secret")).unwrap();
        assert_eq!(
            abs, None,
            "absolute link resolved in the root, where there is nothing"
        );
        assert_eq!(
            read_file(r.as_fd(), Path::new("up/secret"))
                .unwrap()
                .unwrap(),
            b"inside"
        );
        assert_eq!(
            read_file(r.as_fd(), Path::new("../etc/secret"))
                .unwrap()
                .unwrap(),
            b"inside"
        );
        assert!(
            read_file(r.as_fd(), Path::new("magic/secret"))
                .unwrap()
                .is_none()
        );
        assert_eq!(list_dir(r.as_fd()).unwrap().len(), 4);
        let _ = std::fs::remove_dir_all(&base);
    }
}

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
use nix::sys::stat::Mode;

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

/// Opens `rel` under `root`, following symlinks only inside it. With `follow_last` false a
/// final symlink is opened as itself (`O_PATH | O_NOFOLLOW`), for the caller to copy as a
/// link; otherwise the file it names inside the root is opened for reading.
pub fn open(root: BorrowedFd<'_>, rel: &Path, follow_last: bool) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = if follow_last {
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    } else {
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    };
    let how = OpenHow::new().flags(flags).resolve(resolve_flags());
    nix::fcntl::openat2(root, rel, how).map_err(io::Error::from)
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

/// Reads the regular file `rel` under `root` (links inside the root followed), at most
/// [`MAX_SMALL_FILE`] bytes. A missing file is `Ok(None)`.
pub fn read_file(root: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<Vec<u8>>> {
    let fd = match open(root, rel, true) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            rel.display()
        )));
    }
    let mut data = Vec::new();
    f.take(MAX_SMALL_FILE).read_to_end(&mut data)?;
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

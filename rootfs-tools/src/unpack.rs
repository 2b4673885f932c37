//! Applying a layer tarball onto a directory, safely.
//!
//! A layer comes from an untrusted image. Every entry's path is normalised (`..` refused,
//! leading `/` stripped); its parent directory is resolved *inside* the root, following
//! symlinks the way the guest would see them (an absolute or `..`-climbing link is clamped at
//! the root, like `chroot`), so no entry can be written outside the root through `..`,
//! absolute paths, symlinks or a symlinked parent. Hard links must point inside the root.
//! OCI whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) delete what lower layers
//! put there. Ownership, modes (setuid included), symlinks, hard links and device nodes come
//! out as the image says: the result is packed into a disk that only the guest mounts.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, EntryType};

/// Marker of an opaque directory.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Prefix of a whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Symlinks followed while resolving one path before giving up (as Linux's ELOOP).
const MAX_SYMLINKS: u32 = 40;

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

/// Resolves `components` (all directories) under `root`, following symlinks as if `root` were
/// `/`; missing directories are created when `create` is set. The result is a real path under
/// `root` with no symlink in it.
fn resolve_dir(root: &Path, components: &[OsString], create: bool) -> Result<PathBuf, UnpackError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    let mut links = 0;
    let display = || PathBuf::from_iter(components).display().to_string();
    while let Some(c) = pending.pop_front() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(UnpackError::Escape {
                        path: display(),
                        why: "too many levels of symbolic links",
                    });
                }
                let target = fs::read_link(&candidate).map_err(io_at(&candidate))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut front: Vec<OsString> = target
                    .components()
                    .filter_map(|tc| match tc {
                        Component::Normal(s) => Some(s.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .collect();
                front.reverse();
                for f in front {
                    pending.push_front(f);
                }
            }
            Ok(m) if m.is_dir() => resolved.push(c),
            Ok(_) => {
                return Err(UnpackError::Corrupt(format!(
                    "{}: a parent is not a directory",
                    display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&candidate)
                    .map_err(io_at(&candidate))?;
                resolved.push(c);
            }
            Err(e) => return Err(io_at(&candidate)(e)),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))
}

fn lchown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; lchown does not follow the final symlink.
    let rc = unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c = cstring(path)?;
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, not following symlinks.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: valid path; makedev and mknod take plain integers.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            kind | (mode & 0o7777),
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Applies one layer (an uncompressed tar stream) onto `root`, adding to `totals`.
pub fn apply_layer<R: Read>(
    root: &Path,
    layer: R,
    limits: &Limits,
    totals: &mut Totals,
) -> Result<(), UnpackError> {
    let mut archive = Archive::new(layer);
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        totals.entries += 1;
        if totals.entries > limits.max_entries {
            return Err(UnpackError::TooLarge(format!(
                "{} entries",
                limits.max_entries
            )));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        totals.bytes = totals.bytes.saturating_add(size);
        if totals.bytes > limits.max_bytes {
            return Err(UnpackError::TooLarge(format!("{} bytes", limits.max_bytes)));
        }
        let raw = entry
            .path()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?
            .into_owned();
        let mut comps = normalise(&raw)?;
        let Some(name) = comps.pop() else {
            continue; // the root directory itself
        };
        let parent = resolve_dir(root, &comps, true)?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE_WHITEOUT {
            for child in fs::read_dir(&parent).map_err(io_at(&parent))? {
                let child = child.map_err(io_at(&parent))?.path();
                if !created.contains(&child) {
                    remove_any(&child).map_err(io_at(&child))?;
                }
            }
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::Escape {
                    path: raw.display().to_string(),
                    why: "bad whiteout",
                });
            }
            let victim = parent.join(hidden);
            remove_any(&victim).map_err(io_at(&victim))?;
            continue;
        }
        let target = parent.join(&name);
        let kind = entry.header().entry_type();
        let existing = fs::symlink_metadata(&target).ok();
        let keep_dir =
            kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            remove_any(&target).map_err(io_at(&target))?;
        }
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        let gid = header
            .gid()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        let mtime = header.mtime().unwrap_or(0);
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(io_at(&target))?;
                }
                lchown(&target, uid, gid).map_err(io_at(&target))?;
                dirs.push((target.clone(), mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f: File = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_at(&target))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut f)
                    .map_err(|e| UnpackError::Corrupt(format!("{}: {e}", raw.display())))?;
                if copied != size {
                    return Err(UnpackError::Corrupt(format!(
                        "{}: truncated",
                        raw.display()
                    )));
                }
                drop(f);
                // chown first: it clears setuid bits that chmod then restores.
                lchown(&target, uid, gid).map_err(io_at(&target))?;
                chmod(&target, mode).map_err(io_at(&target))?;
                set_mtime(&target, mtime).map_err(io_at(&target))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    .ok_or_else(|| {
                        UnpackError::Corrupt(format!("{}: symlink without target", raw.display()))
                    })?;
                // The target text is kept as is: only the guest follows it, inside its root.
                std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
                lchown(&target, uid, gid).map_err(io_at(&target))?;
                set_mtime(&target, mtime).map_err(io_at(&target))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    .ok_or_else(|| {
                        UnpackError::Corrupt(format!("{}: hard link without target", raw.display()))
                    })?
                    .into_owned();
                let mut lcomps = normalise(&link)?;
                let lname = lcomps.pop().ok_or_else(|| UnpackError::Escape {
                    path: raw.display().to_string(),
                    why: "hard link to the root",
                })?;
                let lparent = resolve_dir(root, &lcomps, false)?;
                let source = lparent.join(lname);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(UnpackError::Corrupt(format!(
                            "{}: hard link target {} is missing or a directory",
                            raw.display(),
                            link.display()
                        )));
                    }
                }
                fs::hard_link(&source, &target).map_err(io_at(&target))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let k = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                match mknod(&target, k, mode, major, minor) {
                    Ok(()) => {
                        lchown(&target, uid, gid).map_err(io_at(&target))?;
                        chmod(&target, mode).map_err(io_at(&target))?;
                    }
                    // Without CAP_MKNOD (rootless), device nodes are skipped as rootless
                    // runtimes do; the guest's devtmpfs provides the real ones.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        tracing::debug!("skipping device node {}: {e}", raw.display());
                    }
                    Err(e) => return Err(io_at(&target)(e)),
                }
            }
            other => {
                tracing::debug!("skipping tar entry {} of type {other:?}", raw.display());
                continue;
            }
        }
        created.insert(target);
    }
    // Directory modes and times last: adding children changed their mtime, and a read-only
    // directory mode would have stopped us writing into it.
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        chmod(&dir, mode).map_err(io_at(&dir))?;
        set_mtime(&dir, mtime).map_err(io_at(&dir))?;
    }
    Ok(())
}

/// Checks that `name` is a plain file name (no separators, not `.` or `..`).
pub fn is_plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mvm-unpack-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A tar with raw control over every header (tar::Builder refuses `..`).
    struct Tar(Vec<u8>);
    impl Tar {
        fn new() -> Self {
            Tar(Vec::new())
        }
        fn entry(
            mut self,
            path: &str,
            kind: EntryType,
            data: &[u8],
            link: Option<&str>,
            mode: u32,
        ) -> Self {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }
        fn file(self, path: &str, data: &[u8]) -> Self {
            self.entry(path, EntryType::Regular, data, None, 0o644)
        }
        fn dir(self, path: &str) -> Self {
            self.entry(path, EntryType::Directory, b"", None, 0o755)
        }
        fn symlink(self, path: &str, to: &str) -> Self {
            self.entry(path, EntryType::Symlink, b"", Some(to), 0o777)
        }
        fn hardlink(self, path: &str, to: &str) -> Self {
            self.entry(path, EntryType::Link, b"", Some(to), 0o644)
        }
        fn done(mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0u8, 1024));
            self.0
        }
    }

    fn apply(root: &Path, tar: Vec<u8>) -> Result<Totals, UnpackError> {
        let mut t = Totals::default();
        apply_layer(root, &tar[..], &Limits::default(), &mut t)?;
        Ok(t)
    }

    #[test]
    fn unpacks_files_dirs_links_and_modes() {
        let root = tmpdir("basic");
        let tar = Tar::new()
            .dir("bin/")
            .file("bin/busybox", b"ELF")
            .entry("bin/su", EntryType::Regular, b"x", None, 0o4755)
            .symlink("bin/sh", "busybox")
            .hardlink("bin/ash", "bin/busybox")
            .file("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
            .done();
        let t = apply(&root, tar).unwrap();
        assert_eq!(t.entries, 6);
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"ELF");
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        let a = fs::metadata(root.join("bin/ash")).unwrap();
        assert_eq!(
            a.ino(),
            fs::metadata(root.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(root.join("bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::metadata(root.join("bin/busybox")).unwrap().mtime(),
            1_700_000_000
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn refuses_dotdot_paths() {
        let root = tmpdir("dotdot");
        let inner = root.join("r");
        fs::create_dir(&inner).unwrap();
        let err = apply(&inner, Tar::new().file("../evil", b"x").done()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
        assert!(!root.join("evil").exists());
        let err = apply(&inner, Tar::new().file("a/../../evil", b"x").done()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn absolute_paths_stay_inside() {
        let root = tmpdir("abs");
        apply(&root, Tar::new().file("/etc/x", b"x").done()).unwrap();
        assert!(root.join("etc/x").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn symlinked_parent_cannot_escape() {
        let base = tmpdir("symparent");
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // An absolute link and a climbing link, both pointing "outside".
        let tar = Tar::new()
            .symlink("abs", outside.to_str().unwrap())
            .symlink("up", "../../../../outside")
            .file("abs/pwned", b"x")
            .file("up/pwned2", b"x")
            .done();
        apply(&root, tar).unwrap();
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing written outside"
        );
        // Both landed inside the root, where the guest would see them.
        let inside_abs = root.join(outside.strip_prefix("/").unwrap()).join("pwned");
        assert!(inside_abs.exists());
        assert!(root.join("outside/pwned2").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn file_over_existing_symlink_replaces_the_link() {
        let base = tmpdir("overlink");
        let root = base.join("root");
        fs::create_dir_all(&root).unwrap();
        let victim = base.join("victim");
        fs::write(&victim, b"safe").unwrap();
        let tar = Tar::new()
            .symlink("f", victim.to_str().unwrap())
            .file("f", b"evil")
            .done();
        apply(&root, tar).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"safe");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"evil");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn hard_link_outside_is_refused() {
        let base = tmpdir("hardlink");
        let root = base.join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(base.join("secret"), b"s").unwrap();
        let err = apply(&root, Tar::new().hardlink("x", "../secret").done()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
        // Through a symlink: resolves inside the root, where there is no such file.
        let tar = Tar::new()
            .symlink("l", "/")
            .hardlink("y", "l/../secret")
            .done();
        assert!(apply(&root, tar).is_err());
        assert!(!root.join("y").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let root = tmpdir("wh");
        apply(
            &root,
            Tar::new()
                .dir("d/")
                .file("d/a", b"1")
                .file("d/b", b"2")
                .file("keep", b"k")
                .file("gone", b"g")
                .done(),
        )
        .unwrap();
        apply(
            &root,
            Tar::new()
                .file("d/new", b"n")
                .file("d/.wh..wh..opq", b"")
                .file(".wh.gone", b"")
                .done(),
        )
        .unwrap();
        assert!(!root.join("gone").exists());
        assert!(root.join("keep").exists());
        assert!(!root.join("d/a").exists());
        assert!(!root.join("d/b").exists());
        assert!(
            root.join("d/new").exists(),
            "same-layer entries survive the opaque marker"
        );
        let err = apply(&root, Tar::new().file(".wh...", b"").done()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn limits_stop_a_layer_bomb() {
        let root = tmpdir("bomb");
        let mut tar = Tar::new();
        for i in 0..20 {
            tar = tar.file(&format!("f{i}"), b"x");
        }
        let mut t = Totals::default();
        let lim = Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        };
        let err = apply_layer(&root, &tar.done()[..], &lim, &mut t).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge(_)));
        // A header claiming a huge size is refused before any data is read.
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_size(1 << 40);
        h.set_cksum();
        let mut t = Totals::default();
        let err =
            apply_layer(&root, h.as_bytes().as_slice(), &Limits::default(), &mut t).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let root = tmpdir("garbage");
        let mut junk = vec![0x42u8; 4096];
        junk[0] = b'a';
        assert!(apply(&root, junk).is_err());
        // Truncated file data.
        let mut tar = Tar::new().file("f", &[7u8; 2000]).done();
        tar.truncate(1024);
        assert!(apply(&root, tar).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}

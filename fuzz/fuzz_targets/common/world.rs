//! What the filesystem fuzz targets share: a per-iteration base directory with a canary tree
//! in it, a snapshot of everything observable about a tree (never opening a fifo or a
//! device), the host paths an escape would most likely write, and path components drawn from
//! a small alphabet an attacker would use.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Where the base directories go: `$MVM_FUZZ_DIR`, else `/dev/shm` (a tmpfs: ten times the
/// runs per second of the ext4 `/tmp` here), else the temporary directory.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("MVM_FUZZ_DIR") {
            return PathBuf::from(d);
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// A fresh, empty base directory for one iteration, its name short (`/dev/shm/mvmfz-T-PID-N`)
/// so that absolute paths built from it mostly fit a tar header's 100 bytes.
pub fn base_dir(tag: &str) -> PathBuf {
    let b = scratch().join(format!(
        "mvmfz-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&b);
    std::fs::create_dir_all(&b).expect("creating the fuzz base directory");
    b
}

/// Canary names beside the root (and in the alphabet, so entries can collide with them).
pub const VICTIM: &str = "victim";
pub const VICTIMDIR: &str = "victimdir";
pub const VICTIM_FILE: &str = "file";
pub const VLINK: &str = "vlink";

fn set_times(p: &Path) {
    let t = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// The canary tree in `base`: `victim` (a 0600 file), `victimdir/` (0700) with `file` in it,
/// and `vlink -> victimdir`, all with fixed times. Every file holds `marker`.
pub fn make_canary(base: &Path, marker: &str) {
    let victim = base.join(VICTIM);
    std::fs::write(&victim, format!("{marker} victim")).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vdir = base.join(VICTIMDIR);
    std::fs::create_dir(&vdir).unwrap();
    let vfile = vdir.join(VICTIM_FILE);
    std::fs::write(&vfile, format!("{marker} victimdir/file")).unwrap();
    std::fs::set_permissions(&vfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let vlink = base.join(VLINK);
    std::os::unix::fs::symlink(VICTIMDIR, &vlink).unwrap();
    for p in [&vfile, &vdir, &victim, &vlink] {
        set_times(p);
    }
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: llistxattr writes at most the buffer's length; `c` is a valid path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    names.truncate(n.max(0) as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let k = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        // SAFETY: lgetxattr writes at most v.len() bytes; both strings are valid.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(m.max(0) as usize);
        out.push((name.to_vec(), v));
    }
    out
}

/// Everything observable about the tree at `top` (itself included), by path: type and mode,
/// owner, link count, inode, size, device number, mtime and ctime to the nanosecond (ctime
/// catches chmod, chown, xattrs and new hard links; atime is left out, reading changes it),
/// xattr names and values, a link's target, a regular file's content. Fifos and devices are
/// never opened. `skip` (and everything under it) is left out.
pub fn snapshot(top: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        if skip.is_some_and(|s| p == s) {
            continue;
        }
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                out.insert(p, format!("lstat error {e}"));
                continue;
            }
        };
        let ft = m.file_type();
        let body = if ft.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        stack.push(e.path());
                    }
                    String::new()
                }
                Err(e) => format!("readdir error {e}"),
            }
        } else if ft.is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).ok())
        } else if ft.is_file() {
            // Single-threaded and lstat just said regular: opening it cannot block.
            format!(
                "{:?}",
                std::fs::read(&p).map(|d| String::from_utf8_lossy(&d).into_owned())
            )
        } else {
            format!("node {:x}", m.rdev())
        };
        let x = xattrs(&p);
        out.insert(
            p,
            format!(
                "mode {:o} owner {}:{} nlink {} ino {} size {} mtime {}.{} ctime {}.{} xattrs {:?} {body}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                x
            ),
        );
    }
    out
}

/// Fails with every entry that changed, appeared or went between two [`snapshot`]s.
pub fn assert_unchanged(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    what: &str,
) {
    if before == after {
        return;
    }
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| format!("{}: {v}\n   was {:?}", k.display(), before.get(k)))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{} removed", k.display())),
        )
        .collect();
    panic!("{what}:\n{}", changed.join("\n"));
}

/// Host paths an escape through the alphabet below would most likely create: every name of
/// it in the scratch directory and each of its ancestors up to `/`, and in the temporary
/// directory. Whether each existed when the process started.
pub fn host_probe() -> &'static Vec<(PathBuf, bool)> {
    static PROBE: OnceLock<Vec<(PathBuf, bool)>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut v = Vec::new();
        let mut dirs: Vec<PathBuf> = scratch().ancestors().map(Path::to_path_buf).collect();
        dirs.push(std::env::temp_dir());
        for dir in dirs {
            for n in Comp::NAMES {
                for n in [n.to_string(), format!(".wh.{n}")] {
                    let p = dir.join(&n);
                    let exists = std::fs::symlink_metadata(&p).is_ok();
                    v.push((p, exists));
                }
            }
        }
        v
    })
}

/// Panics if a probed host path appeared.
pub fn check_host() {
    for (p, existed) in host_probe() {
        if !existed {
            assert!(
                std::fs::symlink_metadata(p).is_err(),
                "{} appeared on the host",
                p.display()
            );
        }
    }
}

/// One path component.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    Empty,
    Dot,
    DotDot,
    A,
    B,
    X,
    /// The root's own name (`../root`).
    Root,
    Victim,
    Victimdir,
    File,
    Vlink,
    /// The base directory's absolute path (without its leading `/`): `/` + this + `victim`
    /// is the canary's absolute path.
    Base,
    Tmp,
    Proc,
    SelfC,
    Cwd,
    Fd,
    WhA,
    Opaque,
    /// A 60-byte name (paths past a header's 100 bytes).
    Long,
}

impl Comp {
    /// The plain names (not `.`, `..`, empty or the base).
    pub const NAMES: [&'static str; 14] = [
        "a",
        "b",
        "x",
        "root",
        VICTIM,
        VICTIMDIR,
        VICTIM_FILE,
        VLINK,
        "tmp",
        "proc",
        "self",
        "cwd",
        "fd",
        ".wh.a",
    ];

    pub fn render(self, base_rel: &str) -> String {
        match self {
            Comp::Empty => String::new(),
            Comp::Dot => ".".into(),
            Comp::DotDot => "..".into(),
            Comp::A => "a".into(),
            Comp::B => "b".into(),
            Comp::X => "x".into(),
            Comp::Root => "root".into(),
            Comp::Victim => VICTIM.into(),
            Comp::Victimdir => VICTIMDIR.into(),
            Comp::File => VICTIM_FILE.into(),
            Comp::Vlink => VLINK.into(),
            Comp::Base => base_rel.into(),
            Comp::Tmp => "tmp".into(),
            Comp::Proc => "proc".into(),
            Comp::SelfC => "self".into(),
            Comp::Cwd => "cwd".into(),
            Comp::Fd => "fd".into(),
            Comp::WhA => ".wh.a".into(),
            Comp::Opaque => ".wh..wh..opq".into(),
            Comp::Long => "l".repeat(60),
        }
    }

    /// Whether this is a single plain name (what a context tree can be made of).
    pub fn is_plain(self) -> bool {
        !matches!(self, Comp::Empty | Comp::Dot | Comp::DotDot | Comp::Base)
    }
}

/// A path of 1..6 components, absolute or not.
#[derive(Arbitrary, Debug, Clone)]
pub struct PathSpec {
    pub absolute: bool,
    pub first: Comp,
    pub rest: Vec<Comp>,
}

impl PathSpec {
    pub fn comps(&self) -> impl Iterator<Item = Comp> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().copied().take(5))
    }

    /// As text; `base_rel` is the base directory's path without its leading `/`.
    pub fn render(&self, base_rel: &str) -> String {
        let parts: Vec<String> = self.comps().map(|c| c.render(base_rel)).collect();
        let s = parts.join("/");
        if self.absolute { format!("/{s}") } else { s }
    }
}

/// `base` as an absolute path's text without its leading `/`.
pub fn base_rel(base: &Path) -> String {
    base.to_string_lossy().trim_start_matches('/').to_string()
}

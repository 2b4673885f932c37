//! Layers as an attacker would write them. Each attack checks the host side afterwards: a
//! canary tree beside the root keeps its modes, owners, times, contents and entries.

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
pub(super) struct Tar(Vec<u8>);

impl Tar {
    pub(super) fn new() -> Self {
        Tar(Vec::new())
    }

    fn header(
        path: &str,
        kind: EntryType,
        size: usize,
        link: Option<&str>,
        mode: u32,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(size as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    pub(super) fn entry(
        mut self,
        path: &str,
        kind: EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Self {
        let h = Self::header(path, kind, data.len(), link, mode);
        self.push(h, data);
        self
    }

    /// An entry with its owner set.
    fn owned(
        mut self,
        path: &str,
        kind: EntryType,
        link: Option<&str>,
        mode: u32,
        uid: u64,
    ) -> Self {
        let mut h = Self::header(path, kind, 0, link, mode);
        h.set_uid(uid);
        h.set_gid(uid);
        self.push(h, b"");
        self
    }

    /// A PAX header with `SCHILY.xattr.KEY=VALUE` records for the next entry.
    fn xattr(mut self, key: &str, value: &str) -> Self {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let data = rec(&format!("SCHILY.xattr.{key}"), value);
        let h = Self::header("pax", EntryType::XHeader, data.len(), None, 0o644);
        self.push(h, data.as_bytes());
        self
    }

    pub(super) fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, EntryType::Regular, data, None, 0o644)
    }

    pub(super) fn dir(self, path: &str) -> Self {
        self.entry(path, EntryType::Directory, b"", None, 0o755)
    }

    pub(super) fn symlink(self, path: &str, to: &str) -> Self {
        self.entry(path, EntryType::Symlink, b"", Some(to), 0o777)
    }

    pub(super) fn hardlink(self, path: &str, to: &str) -> Self {
        self.entry(path, EntryType::Link, b"", Some(to), 0o644)
    }

    pub(super) fn done(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

fn apply(root: &Path, tar: Vec<u8>) -> Result<Totals, UnpackError> {
    let mut t = Totals::default();
    apply_layer(root, &tar[..], &Limits::default(), &mut t)?;
    Ok(t)
}

/// Everything observable about a tree: per path, type+mode, owner, mtime, content or link
/// target, xattr names.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let body = if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            String::new()
        } else if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else if m.is_file() {
            String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
        } else {
            format!("node {}", m.rdev())
        };
        let mut xattr_names = vec![0u8; 1024];
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: llistxattr writes at most the buffer's length into it; `c` is a valid path.
        let n = unsafe { libc::llistxattr(c.as_ptr(), xattr_names.as_mut_ptr().cast(), 1024) };
        xattr_names.truncate(n.max(0) as usize);
        out.insert(
            p.clone(),
            format!(
                "{:o} {}:{} {} {} {body} {:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.ctime_nsec() + m.ctime() * 1_000_000_000,
                String::from_utf8_lossy(&xattr_names)
            ),
        );
    }
    out
}

/// A root with a canary tree beside it: `victim` (a 0600 file), `victimdir/` with a file.
struct World {
    base: PathBuf,
    root: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl World {
    fn new(tag: &str) -> Self {
        let base = tmpdir(tag);
        let root = base.join("root");
        fs::create_dir_all(&root).unwrap();
        let victim = base.join("victim");
        fs::write(&victim, b"host secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir_all(base.join("victimdir")).unwrap();
        fs::write(base.join("victimdir/file"), b"host file").unwrap();
        fs::set_permissions(base.join("victimdir"), fs::Permissions::from_mode(0o700)).unwrap();
        let t = libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        for p in [
            &victim,
            &base.join("victimdir"),
            &base.join("victimdir/file"),
        ] {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: valid path and a two-element timespec array.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
        }
        let before = Self::outside(&base);
        World { base, root, before }
    }

    fn outside(base: &Path) -> BTreeMap<PathBuf, String> {
        let mut s = snapshot(base);
        s.retain(|p, _| !p.starts_with(base.join("root")));
        s
    }

    fn victim(&self) -> String {
        self.base.join("victim").display().to_string()
    }

    fn victimdir(&self) -> String {
        self.base.join("victimdir").display().to_string()
    }

    /// Nothing outside the root changed, and nothing new appeared there.
    fn check(self) {
        let after = Self::outside(&self.base);
        assert_eq!(self.before, after, "the host outside the root changed");
        fs::remove_dir_all(&self.base).unwrap();
    }
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
        .entry("ro/", EntryType::Directory, b"", None, 0o555)
        .file("ro/inside", b"written before the mode")
        .done();
    let t = apply(&root, tar).unwrap();
    assert_eq!(t.entries, 8);
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
    let ro = fs::metadata(root.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_700_000_000, "directory times are set last");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn file_capabilities_and_user_xattrs_are_kept_others_dropped() {
    let root = tmpdir("xattr");
    let tar = Tar::new()
        .xattr("user.mvm", "yes")
        .file("f", b"x")
        .xattr("trusted.overlay.opaque", "y")
        .dir("d/")
        .done();
    apply(&root, tar).unwrap();
    let get = |p: &Path, k: &str| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let k = std::ffi::CString::new(k).unwrap();
        let mut buf = [0u8; 16];
        // SAFETY: lgetxattr writes at most buf.len() bytes into buf; both strings valid.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), 16) };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    // tmpfs (Linux 6.6+) and ext4 both keep user xattrs: a missing one is a failure here.
    assert_eq!(
        get(&root.join("f"), "user.mvm").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(get(&root.join("d"), "trusted.overlay.opaque"), None);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn attack_directory_mode_through_a_later_symlink() {
    // The registry attack: `x/` mode 4777, then `x -> /host/file`. The deferred chmod (and
    // utimes) went through the path and so through the link.
    let w = World::new("attack-chmod");
    let tar = Tar::new()
        .entry("x/", EntryType::Directory, b"", None, 0o4777)
        .symlink("x", &w.victim())
        .entry("y/", EntryType::Directory, b"", None, 0o777)
        .symlink("y", &w.victimdir())
        .done();
    apply(&w.root, tar).unwrap();
    assert_eq!(
        fs::read_link(w.root.join("x")).unwrap(),
        PathBuf::from(w.victim())
    );
    w.check();
}

#[test]
fn attack_directory_mode_through_a_later_symlink_past_the_descriptor_budget() {
    // With no descriptors kept, directories are re-opened by real path and inode.
    let w = World::new("attack-chmod-spill");
    let tar = Tar::new()
        .entry("keep/", EntryType::Directory, b"", None, 0o751)
        .entry("x/", EntryType::Directory, b"", None, 0o4777)
        .symlink("x", &w.victim())
        .entry("y/", EntryType::Directory, b"", None, 0o777)
        .file("y/f", b"")
        .symlink("y", &w.victimdir())
        .done();
    let mut t = Totals::default();
    apply_layer_with_budget(&w.root, &tar[..], &Limits::default(), &mut t, 0).unwrap();
    assert_eq!(
        fs::metadata(w.root.join("keep")).unwrap().mode() & 0o7777,
        0o751
    );
    w.check();
}

#[test]
fn attack_symlinked_parent_before_a_file() {
    let w = World::new("attack-parent");
    let tar = Tar::new()
        .symlink("abs", &w.victimdir())
        .symlink("up", "../../../../../../victimdir")
        .file("abs/file", b"overwritten")
        .file("up/pwned", b"x")
        .entry("abs/sub/", EntryType::Directory, b"", None, 0o4777)
        .done();
    apply(&w.root, tar).unwrap();
    // Both landed inside the root, where the guest would see them.
    let inside = w
        .root
        .join(w.base.strip_prefix("/").unwrap())
        .join("victimdir/file");
    assert_eq!(fs::read(inside).unwrap(), b"overwritten");
    assert!(w.root.join("victimdir/pwned").exists());
    w.check();
}

#[test]
fn attack_metadata_through_links_in_one_and_across_layers() {
    // Layer 1 plants links; layer 2 names them as directories, files and nodes with owners,
    // modes, times and xattrs.
    let w = World::new("attack-meta");
    let l1 = Tar::new()
        .symlink("f", &w.victim())
        .symlink("d", &w.victimdir())
        .symlink("n", &w.victim())
        .done();
    apply(&w.root, l1).unwrap();
    let l2 = Tar::new()
        .xattr("user.pwn", "1")
        .owned("f", EntryType::Regular, None, 0o6777, 4242)
        .xattr("user.pwn", "1")
        .owned("d/", EntryType::Directory, None, 0o6777, 4242)
        .owned("d/file", EntryType::Regular, None, 0o6777, 4242)
        .entry("n", EntryType::Fifo, b"", None, 0o666)
        .done();
    apply(&w.root, l2).unwrap();
    assert!(fs::symlink_metadata(w.root.join("d")).unwrap().is_dir());
    assert_eq!(
        fs::metadata(w.root.join("f")).unwrap().mode() & 0o7777,
        0o6777
    );
    w.check();
}

#[test]
fn attack_hard_link_outside_and_to_setuid_of_another_owner() {
    let w = World::new("attack-hardlink");
    let err = apply(&w.root, Tar::new().hardlink("x", "../victim").done()).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    // Through a symlink: resolves inside the root, where there is no such file.
    let tar = Tar::new()
        .symlink("l", "/")
        .hardlink("y", "l/../victim")
        .done();
    assert!(apply(&w.root, tar).is_err());
    let abs = format!("{}/victim", w.base.display());
    assert!(apply(&w.root, Tar::new().hardlink("z", &abs).done()).is_err());
    assert!(!w.root.join("y").exists() && !w.root.join("z").exists());
    // A setuid-root file of an earlier layer, linked by an entry of another owner.
    apply(
        &w.root,
        Tar::new()
            .owned("su", EntryType::Regular, None, 0o4755, 0)
            .done(),
    )
    .unwrap();
    let err = apply(
        &w.root,
        Tar::new()
            .owned("mine", EntryType::Link, Some("su"), 0o4755, 1000)
            .done(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("setuid"), "{err}");
    // The same owner may link it (tar writes a link's header from the file's own stat).
    apply(
        &w.root,
        Tar::new()
            .owned("su2", EntryType::Link, Some("su"), 0o4755, 0)
            .done(),
    )
    .unwrap();
    w.check();
}

#[test]
fn attack_whiteouts_and_opaque_markers_through_links() {
    let w = World::new("attack-whiteout");
    let tar = Tar::new()
        .symlink("d", &w.victimdir())
        .file("d/.wh.file", b"")
        .file("d/.wh..wh..opq", b"")
        .symlink("e", "../../victimdir")
        .file("e/.wh..wh..opq", b"")
        .file(".wh.victim", b"")
        .done();
    apply(&w.root, tar).unwrap();
    w.check();
}

#[test]
fn refuses_dotdot_paths() {
    let w = World::new("dotdot");
    let err = apply(&w.root, Tar::new().file("../evil", b"x").done()).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    let err = apply(&w.root, Tar::new().file("a/../../evil", b"x").done()).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }));
    w.check();
}

#[test]
fn absolute_paths_stay_inside() {
    let root = tmpdir("abs");
    apply(&root, Tar::new().file("/etc/x", b"x").done()).unwrap();
    assert!(root.join("etc/x").exists());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn file_over_existing_symlink_replaces_the_link() {
    let w = World::new("overlink");
    let tar = Tar::new()
        .symlink("f", &w.victim())
        .file("f", b"evil")
        .done();
    apply(&w.root, tar).unwrap();
    assert_eq!(fs::read(w.root.join("f")).unwrap(), b"evil");
    w.check();
}

#[test]
fn link_loops_are_refused() {
    let w = World::new("loop");
    let tar = Tar::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x")
        .done();
    let err = apply(&w.root, tar).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    w.check();
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
    let err = apply_layer(&root, h.as_bytes().as_slice(), &Limits::default(), &mut t).unwrap_err();
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

// `cp` out of a container: the guest's tree written into a directory of the user's.

fn copy_into(dest: &Path, tar: Vec<u8>, top: copy::Top) -> Result<copy::CopyOutcome, UnpackError> {
    let dest = dest.to_path_buf();
    copy::extract_copy(&tar[..], &Limits::default(), move |_| Ok((dest, top)))
}

#[test]
fn copy_places_the_tree_by_its_top() {
    let w = World::new("copy-top");
    let tree = || {
        Tar::new()
            .dir("d/")
            .dir("d/e/")
            .file("d/e/f", b"one")
            .symlink("d/l", "/etc/passwd")
            .done()
    };
    copy_into(&w.root, tree(), copy::Top::Keep).unwrap();
    assert_eq!(fs::read(w.root.join("d/e/f")).unwrap(), b"one");
    assert_eq!(
        fs::read_link(w.root.join("d/l")).unwrap(),
        Path::new("/etc/passwd")
    );
    copy_into(&w.root, tree(), copy::Top::Rename("out".into())).unwrap();
    assert_eq!(fs::read(w.root.join("out/e/f")).unwrap(), b"one");
    fs::create_dir(w.root.join("into")).unwrap();
    copy_into(&w.root.join("into"), tree(), copy::Top::Contents).unwrap();
    assert_eq!(fs::read(w.root.join("into/e/f")).unwrap(), b"one");
    assert!(!w.root.join("into/d").exists());
    // A file over an existing one replaces it; a hard link to a file the copy wrote is kept.
    let t = Tar::new().file("f", b"new").hardlink("f2", "f").done();
    fs::write(w.root.join("f"), b"old").unwrap();
    let err = copy_into(&w.root, t, copy::Top::Keep).unwrap_err();
    assert!(err.to_string().contains("outside the copied path"), "{err}");
    copy_into(
        &w.root,
        Tar::new().file("f", b"new").done(),
        copy::Top::Keep,
    )
    .unwrap();
    assert_eq!(fs::read(w.root.join("f")).unwrap(), b"new");
    let t = Tar::new()
        .dir("h/")
        .file("h/a", b"x")
        .hardlink("h/b", "h/a")
        .done();
    copy_into(&w.root, t, copy::Top::Keep).unwrap();
    assert_eq!(
        fs::metadata(w.root.join("h/a")).unwrap().ino(),
        fs::metadata(w.root.join("h/b")).unwrap().ino()
    );
    w.check();
}

#[test]
fn attack_copy_writes_beside_the_path_asked_for() {
    let w = World::new("copy-beside");
    let t = Tar::new().file("d", b"ok").file("victim", b"pwned").done();
    let err = copy_into(&w.root, t, copy::Top::Keep).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    assert!(!w.root.join("victim").exists());
    for bad in ["d/../victim", "../victim"] {
        let t = Tar::new()
            .dir("d/")
            .entry(bad, EntryType::Regular, b"x", None, 0o644)
            .done();
        assert!(copy_into(&w.root, t, copy::Top::Keep).is_err(), "{bad}");
    }
    w.check();
}

#[test]
fn attack_copy_through_a_symlink_it_made_or_found() {
    let w = World::new("copy-links");
    // A link the tree made, then a file through it.
    let t = Tar::new()
        .dir("d/")
        .symlink("d/l", &w.victimdir())
        .file("d/l/file", b"pwned")
        .done();
    let err = copy_into(&w.root, t, copy::Top::Keep).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // A link already in the destination (the user's, or an earlier copy's) under the top
    // name: replaced by the tree's directory, never written through.
    std::os::unix::fs::symlink(w.victimdir(), w.root.join("e")).unwrap();
    let t = Tar::new().dir("e/").file("e/file", b"pwned").done();
    copy_into(&w.root, t, copy::Top::Keep).unwrap();
    assert_eq!(fs::read(w.root.join("e/file")).unwrap(), b"pwned");
    // ... and without the directory entry first, refused.
    std::os::unix::fs::symlink(w.victimdir(), w.root.join("g")).unwrap();
    let t = Tar::new().file("g/file", b"pwned").done();
    assert!(copy_into(&w.root, t, copy::Top::Keep).is_err());
    // A hard link to a host file, by absolute path or to a file the copy did not write.
    let t = Tar::new().dir("k/").hardlink("k/h", &w.victim()).done();
    assert!(copy_into(&w.root, t, copy::Top::Keep).is_err());
    fs::write(w.root.join("k2"), b"user's").unwrap();
    let t = Tar::new().dir("k/").hardlink("k/h", "k/../k2").done();
    assert!(copy_into(&w.root, t, copy::Top::Keep).is_err());
    w.check();
}

#[test]
fn attack_copy_plants_setuid_files_and_devices() {
    let w = World::new("copy-modes");
    let t = Tar::new()
        .dir("d/")
        .entry("d/suid", EntryType::Regular, b"#!/bin/sh\n", None, 0o6755)
        .entry("d/sticky", EntryType::Directory, b"", None, 0o1777)
        .entry("d/mem", EntryType::Char, b"", None, 0o666)
        .entry("d/disk", EntryType::Block, b"", None, 0o666)
        .entry("d/fifo", EntryType::Fifo, b"", None, 0o666)
        .done();
    let out = copy_into(&w.root, t, copy::Top::Keep).unwrap();
    assert_eq!((out.skipped, out.unprivileged), (3, 1));
    let mode = |p: &str| {
        fs::symlink_metadata(w.root.join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("d/suid") & 0o7777, 0o755);
    assert_eq!(mode("d/sticky") & 0o7777, 0o1777);
    for p in ["d/mem", "d/disk", "d/fifo"] {
        assert!(!w.root.join(p).exists(), "{p}");
    }
    // Owners are not the tree's: whoever copies owns what is written.
    let t = Tar::new()
        .owned("o", EntryType::Directory, None, 0o755, 4242)
        .done();
    copy_into(&w.root, t, copy::Top::Keep).unwrap();
    assert_eq!(
        fs::metadata(w.root.join("o")).unwrap().uid(),
        nix::unistd::getuid().as_raw()
    );
    // Bounds hold.
    let t = Tar::new()
        .dir("b/")
        .file("b/1", b"1")
        .file("b/2", b"2")
        .done();
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 2,
    };
    let dest = w.root.clone();
    let err =
        copy::extract_copy(&t[..], &limits, move |_| Ok((dest, copy::Top::Keep))).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
    w.check();
}

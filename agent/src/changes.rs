//! The container's changes to its image, read in the guest: the overlay's upper directory
//! walked from a descriptor kept before `pivot_root`, written as an OCI layer tar or as
//! Docker's `diff` lines. The host never mounts the writable disk; it gets this stream and
//! treats it as it treats a registry layer.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mvm_agent_protocol::ExportKind;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// The overlay's layers, opened at boot while they were still reachable by path.
struct Layers {
    upper: OwnedFd,
    lower: OwnedFd,
}

static LAYERS: OnceLock<Layers> = OnceLock::new();

/// Files the agent writes for every container (Docker bind-mounts them): never part of a
/// container's changes.
const RUNTIME_FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Keeps descriptors of the upper directory and the lower layer's root for later exports
/// (close-on-exec: the container's processes never see them).
pub fn keep(upper: &Path, lower: &Path) -> nix::Result<()> {
    let open = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let layers = Layers {
        upper: open(upper)?,
        lower: open(lower)?,
    };
    let _ = LAYERS.set(layers);
    Ok(())
}

/// Writes the changes as `what` asks to `out`.
pub fn export(what: ExportKind, out: impl Write) -> io::Result<()> {
    let layers = || {
        LAYERS
            .get()
            .ok_or_else(|| io::Error::other("this VM has no overlay to export"))
    };
    match what {
        ExportKind::Layer => write_layer(layers()?.upper.as_fd(), out),
        ExportKind::Diff => {
            let l = layers()?;
            write_diff(l.upper.as_fd(), l.lower.as_fd(), out)
        }
        ExportKind::Rootfs => crate::copy::export_rootfs(out),
    }
}

fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let own = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(own)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(OsString::from(OsStr::from_bytes(&n)));
        }
    }
    out.sort();
    Ok(out)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// An overlay whiteout: a character device 0:0.
fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// An opaque directory (its lower contents hidden).
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: fgetxattr writes at most buf.len() bytes into buf; the name is a NUL-terminated
    // literal and the descriptor is open for the call.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Extended attributes a layer carries, as the host's unpacker keeps them: file
/// capabilities and `user.*` (`trusted.*` is overlayfs' own, security labels are the host's).
fn kept_xattr(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"user.")
}

/// Most bytes of extended attributes written for one file.
const XATTR_BUDGET: usize = 64 << 10;

/// The kept extended attributes of an open file or directory, names sorted.
fn xattrs_of(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    // SAFETY: flistxattr writes at most names.len() bytes into names; the descriptor is open.
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    let mut total = 0;
    for name in names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && kept_xattr(n))
    {
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 4096];
        // SAFETY: fgetxattr writes at most value.len() bytes into value; the name is a
        // NUL-terminated string that lives across the call.
        let len = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        total += name.len() + value.len();
        if total > XATTR_BUDGET {
            break;
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// One PAX record, `LEN KEY=VALUE\n`, whose length counts its own digits.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn is_runtime_file(rel: &Path) -> bool {
    RUNTIME_FILES.iter().any(|f| rel == Path::new(f))
}

fn header_for(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Which directories a walk goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Boundary {
    /// Every one (the upper directory is one file system).
    None,
    /// Those on this device only (`export`: the root file system, not what is mounted on
    /// it); a mount point itself is written as an empty directory.
    Device(u64),
    /// Not the kernel's own file systems (`cp`: /proc, /sys, cgroups...), whose mount points
    /// are written as empty directories; volumes and tmpfs mounts are gone into.
    KernelFs,
}

/// A tar of a tree walked from descriptors: a layer of the upper directory (whiteouts and
/// opaque markers, the runtime's files left out) or a plain copy of the container's files.
pub(crate) struct LayerWalk<W: Write> {
    tar: tar::Builder<W>,
    /// (dev, ino) of files with several links, and the first path written for each.
    links: HashMap<(u64, u64), PathBuf>,
    /// Overlay semantics (whiteouts, opaque directories, runtime files).
    layer: bool,
    boundary: Boundary,
}

/// File system magic numbers of the kernel's own file systems.
const KERNEL_FS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x6367_7270, // cgroup2
    0x0027_e0eb, // cgroup
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x7363_6673, // securityfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0xcafe_4a11, // bpf
    0x6165_676c, // pstore
    0x6265_6570, // configfs
    0x4249_4e4d, // binfmt_misc
];

fn is_kernel_fs(dir: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(dir).is_ok_and(|fs| KERNEL_FS.contains(&fs.filesystem_type().0))
}

impl<W: Write> LayerWalk<W> {
    /// A walk that writes `out`.
    pub(crate) fn new(out: W, layer: bool, boundary: Boundary) -> LayerWalk<W> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        LayerWalk {
            tar,
            links: HashMap::new(),
            layer,
            boundary,
        }
    }

    /// Ends the tar and flushes `out`.
    pub(crate) fn finish(self) -> io::Result<()> {
        self.tar.into_inner()?.flush()
    }
    /// A PAX extended header with `SCHILY.xattr.NAME` records for the entry that follows
    /// (what the host's unpacker and Docker's read back as the file's xattrs).
    fn xattrs_for_next(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let attrs = xattrs_of(fd);
        if attrs.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for (k, v) in &attrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            body.extend(pax_record(&key, v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        self.tar.append_data(&mut h, "PaxHeader", &body[..])
    }

    /// Writes the entries of `dir`, at `rel` in the tar.
    pub(crate) fn dir(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
        for name in names(dir)? {
            let path = rel.join(&name);
            if self.layer && is_runtime_file(&path) {
                continue;
            }
            let st = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            self.entry(dir, &name, &path, &st)?;
        }
        Ok(())
    }

    /// Writes `name` in `dir` (whose `lstat` is `st`) at `path` in the tar, and all it holds.
    pub(crate) fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
    ) -> io::Result<()> {
        let k = kind(st);
        if self.layer && is_whiteout(st) {
            let mut wh = OsString::from(".wh.");
            wh.push(name);
            let mut h = header_for(st, tar::EntryType::Regular);
            h.set_mode(0o644);
            return self
                .tar
                .append_data(&mut h, path.with_file_name(wh), io::empty());
        }
        if k == SFlag::S_IFDIR {
            let sub = open_dir_at(dir, name)?;
            self.xattrs_for_next(sub.as_fd())?;
            let mut h = header_for(st, tar::EntryType::Directory);
            self.tar.append_data(&mut h, path, io::empty())?;
            let descend = match self.boundary {
                Boundary::None => true,
                Boundary::Device(dev) => st.st_dev == dev,
                Boundary::KernelFs => !is_kernel_fs(sub.as_fd()),
            };
            if !descend {
                return Ok(());
            }
            if self.layer && is_opaque(sub.as_fd()) {
                let mut o = header_for(st, tar::EntryType::Regular);
                o.set_mode(0o644);
                self.tar
                    .append_data(&mut o, path.join(".wh..wh..opq"), io::empty())?;
            }
            return self.dir(sub.as_fd(), path);
        }
        if k == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(dir, name)?;
            let mut h = header_for(st, tar::EntryType::Symlink);
            return self.tar.append_link(&mut h, path, target);
        }
        if k == SFlag::S_IFREG {
            let key = (st.st_dev, st.st_ino);
            if st.st_nlink > 1 {
                if let Some(first) = self.links.get(&key) {
                    let mut h = header_for(st, tar::EntryType::Link);
                    let first = first.clone();
                    return self.tar.append_link(&mut h, path, first);
                }
                self.links.insert(key, path.to_path_buf());
            }
            let fd = nix::fcntl::openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            self.xattrs_for_next(fd.as_fd())?;
            let file = std::fs::File::from(fd);
            let mut h = header_for(st, tar::EntryType::Regular);
            // The size the header promises is what is read: a file that grows meanwhile
            // (commit without --pause) is cut there, one that shrinks is refused by tar.
            h.set_size(st.st_size.max(0) as u64);
            return self.tar.append_data(
                &mut h,
                path,
                io::Read::take(file, st.st_size.max(0) as u64),
            );
        }
        let entry = match k {
            SFlag::S_IFIFO => tar::EntryType::Fifo,
            SFlag::S_IFCHR => tar::EntryType::Char,
            SFlag::S_IFBLK => tar::EntryType::Block,
            // Sockets have no place in a layer.
            _ => return Ok(()),
        };
        let mut h = header_for(st, entry);
        h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32)?;
        h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32)?;
        self.tar.append_data(&mut h, path, io::empty())
    }
}

/// The upper directory as an OCI layer tar: whiteouts become `.wh.` files, opaque
/// directories get `.wh..wh..opq`, hard links stay links.
pub fn write_layer(upper: BorrowedFd<'_>, out: impl Write) -> io::Result<()> {
    let mut walk = LayerWalk::new(out, true, Boundary::None);
    walk.dir(upper, Path::new(""))?;
    walk.finish()
}

/// Docker's `diff` lines (`A /x`, `C /y`, `D /z`) for the upper directory over `lower`.
pub fn write_diff(
    upper: BorrowedFd<'_>,
    lower: BorrowedFd<'_>,
    mut out: impl Write,
) -> io::Result<()> {
    // (line, path, is a directory that only shows because of its children)
    let mut lines: Vec<(String, String, bool)> = Vec::new();
    diff_dir(upper, lower, Path::new(""), &mut lines)?;
    for (i, (line, shown, dir)) in lines.iter().enumerate() {
        // A copied-up directory whose only changes were runtime files is no change.
        let prefix = format!("{shown}/");
        if *dir
            && !lines[i + 1..]
                .iter()
                .any(|(_, q, _)| q.starts_with(&prefix))
        {
            continue;
        }
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn diff_dir(
    dir: BorrowedFd<'_>,
    lower: BorrowedFd<'_>,
    rel: &Path,
    lines: &mut Vec<(String, String, bool)>,
) -> io::Result<()> {
    for name in names(dir)? {
        let path = rel.join(&name);
        if is_runtime_file(&path) {
            continue;
        }
        let shown = format!("/{}", path.display());
        let st = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if is_whiteout(&st) {
            lines.push((format!("D {shown}"), shown, false));
            continue;
        }
        let in_lower =
            nix::sys::stat::fstatat(lower, path.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
        let is_dir = kind(&st) == SFlag::S_IFDIR;
        let tag = if in_lower { "C" } else { "A" };
        lines.push((format!("{tag} {shown}"), shown, in_lower && is_dir));
        if is_dir {
            let sub = open_dir_at(dir, &name)?;
            diff_dir(sub.as_fd(), lower, &path, lines)?;
        }
    }
    Ok(())
}

/// Freezes the writable disk's file system (FIFREEZE) right before the VM ends: ext4 then
/// checkpoints its journal and clears its needs-recovery flag, so a later export VM can mount
/// the disk read-only and see every write. A tmpfs upper layer cannot be frozen; that is fine.
pub fn freeze_upper_fs() {
    const FIFREEZE: libc::c_ulong = 0xC004_5877; // _IOWR('X', 119, int)
    if let Some(layers) = LAYERS.get() {
        // SAFETY: an ioctl without an argument buffer on a descriptor we own.
        let rc = unsafe { libc::ioctl(layers.upper.as_raw_fd(), FIFREEZE as _, 0) };
        if rc != 0 {
            crate::log_debug!("freezing the writable disk: {}", io::Error::last_os_error());
        }
    }
}

/// Stops every process but this one (`kill(-1)` from PID 1) until the guard is dropped.
pub struct Frozen(bool);

impl Frozen {
    /// Freezes when `freeze` is set.
    pub fn new(freeze: bool) -> Frozen {
        if freeze {
            // SAFETY: kill(2) with integers; -1 reaches every process but PID 1 itself.
            unsafe { libc::kill(-1, libc::SIGSTOP) };
        }
        Frozen(freeze)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(-1, libc::SIGCONT) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for (k, v) in [
            (&b"a"[..], &b"b"[..]),
            (b"SCHILY.xattr.user.x", &[7u8; 90][..]),
            (b"k", &[0u8; 994][..]),
        ] {
            let r = pax_record(k, v);
            let (len, _) = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
                .map(|s| (s.parse::<usize>().unwrap(), ()))
                .unwrap();
            assert_eq!(len, r.len(), "{:?}", String::from_utf8_lossy(&r));
        }
    }

    fn open(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn layer_tar_has_whiteouts_links_and_modes_and_diff_lines() {
        let root = std::env::temp_dir().join(format!("mvm-changes-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let upper = root.join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/new"), "n").unwrap();
        // A file's capabilities and user xattrs go into the layer (PAX SCHILY.xattr.*).
        std::fs::write(upper.join("etc/caps"), "c").unwrap();
        let set = |p: &Path, k: &std::ffi::CStr, v: &[u8]| {
            let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: setxattr with NUL-terminated strings and a live buffer.
            let r =
                unsafe { libc::setxattr(cp.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            assert_eq!(r, 0, "setxattr {k:?}: {}", std::io::Error::last_os_error());
        };
        set(&upper.join("etc/caps"), c"user.mvm-test", b"v1");
        set(&upper.join("etc"), c"user.dir-attr", b"d");
        std::fs::write(upper.join("etc/hostname"), "runtime").unwrap();
        std::fs::hard_link(upper.join("etc/new"), upper.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("new", upper.join("etc/sym")).unwrap();
        std::fs::create_dir_all(upper.join("onlyruntime/etc")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        let mut tar = Vec::new();
        write_layer(open(&upper).as_fd(), &mut tar).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        let mut attrs = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            if let Ok(Some(exts)) = e.pax_extensions() {
                for x in exts {
                    let x = x.unwrap();
                    attrs.push((
                        path.clone(),
                        x.key().unwrap().to_string(),
                        x.value_bytes().to_vec(),
                    ));
                }
            }
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        assert!(
            names.contains(&(".wh.gone".into(), tar::EntryType::Regular)),
            "{names:?}"
        );
        assert!(names.contains(&("etc/sym".into(), tar::EntryType::Symlink)));
        assert!(
            attrs.contains(&(
                "etc/caps".into(),
                "SCHILY.xattr.user.mvm-test".into(),
                b"v1".to_vec()
            )),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&(
                "etc".into(),
                "SCHILY.xattr.user.dir-attr".into(),
                b"d".to_vec()
            )),
            "{attrs:?}"
        );
        assert!(
            !names.iter().any(|(n, _)| n.contains("PaxHeader")),
            "{names:?}"
        );
        assert!(!names.iter().any(|(n, _)| n == "etc/hostname"), "{names:?}");
        let links = names
            .iter()
            .filter(|(_, t)| *t == tar::EntryType::Link)
            .count();
        assert_eq!(links, 1, "{names:?}");
        let lower = root.join("lower");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("onlyruntime")).unwrap();
        let mut d = Vec::new();
        write_diff(open(&upper).as_fd(), open(&lower).as_fd(), &mut d).unwrap();
        let d = String::from_utf8(d).unwrap();
        let d: Vec<&str> = d.lines().collect();
        assert!(d.contains(&"C /etc"), "{d:?}");
        assert!(d.contains(&"A /etc/new"), "{d:?}");
        assert!(d.contains(&"D /gone"), "{d:?}");
        assert!(d.contains(&"A /onlyruntime/etc"), "{d:?}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

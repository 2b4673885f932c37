//! A container's changes as the host sees them: its writable disk (ext4, with the overlay's
//! `upper/` directory) and its image's disk (erofs) mounted read-only in a private mount
//! namespace of one thread, then read as an OCI layer (`commit`, a build's RUN) or as Docker's
//! A/C/D list (`diff`).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A disk to mount read-only.
pub struct DiskMount<'a> {
    /// The image file.
    pub path: &'a Path,
    /// `ext4` or `erofs`.
    pub fstype: &'a str,
}

/// Runs `f` with `disks` mounted read-only (in the same order), in a mount namespace private
/// to one thread, so that nothing shows on the host and everything is gone afterwards.
pub fn with_mounted<R: Send>(
    disks: &[DiskMount<'_>],
    f: impl FnOnce(&[PathBuf]) -> R + Send,
) -> Result<R, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("cannot make a private mount namespace: {e}"))?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("cannot make mounts private: {e}"))?;
            let base = std::env::temp_dir().join(format!(
                "mvm-layer-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let mut dirs = Vec::new();
            for (i, d) in disks.iter().enumerate() {
                let dir = base.join(i.to_string());
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                // noload: never replay the journal of a disk a guest may still have open.
                let opts = if d.fstype == "ext4" {
                    "loop,ro,noload"
                } else {
                    "loop,ro"
                };
                let out = Command::new("mount")
                    .args(["-t", d.fstype, "-o", opts])
                    .arg(d.path)
                    .arg(&dir)
                    .output()
                    .map_err(|e| format!("cannot run mount: {e}"))?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    return Err(format!(
                        "cannot mount {}: {}",
                        d.path.display(),
                        err.lines().next().unwrap_or("failed")
                    ));
                }
                dirs.push(dir);
            }
            let result = f(&dirs);
            for d in dirs.iter().rev() {
                let _ = Command::new("umount").arg(d).output();
            }
            let _ = std::fs::remove_dir_all(&base);
            Ok(result)
        })
        .join()
        .map_err(|_| "the mount thread panicked".to_string())?
    })
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: lgetxattr writes at most buf.len() bytes into buf; both strings are
    // NUL-terminated and outlive the call.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// Files the agent writes for every container (Docker bind-mounts them): never part of a
/// container's changes.
const RUNTIME_FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

fn is_runtime_file(rel: &Path) -> bool {
    RUNTIME_FILES.iter().any(|f| rel == Path::new(f))
}

/// An overlay whiteout: a character device 0:0.
fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// An opaque directory: its lower contents are hidden.
fn is_opaque(path: &Path) -> bool {
    lgetxattr(path, "trusted.overlay.opaque").is_some_and(|v| v == b"y")
}

fn sorted_children(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

fn header_for(meta: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

/// Writes the overlay upper directory `upper` as an OCI layer tar: whiteouts become `.wh.`
/// files, opaque directories get `.wh..wh..opq`, hard links stay links.
pub fn write_layer(upper: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack: Vec<PathBuf> = sorted_children(upper)?.into_iter().rev().collect();
    while let Some(path) = stack.pop() {
        let rel = path
            .strip_prefix(upper)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .to_path_buf();
        if is_runtime_file(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            let name = rel
                .file_name()
                .map(|n| format!(".wh.{}", n.to_string_lossy()))
                .unwrap_or_default();
            let mut h = header_for(&meta);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            b.append_data(&mut h, rel.with_file_name(name), std::io::empty())?;
        } else if ft.is_dir() {
            let mut h = header_for(&meta);
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, &rel, std::io::empty())?;
            if is_opaque(&path) {
                let mut o = header_for(&meta);
                o.set_entry_type(tar::EntryType::Regular);
                o.set_mode(0o644);
                b.append_data(&mut o, rel.join(".wh..wh..opq"), std::io::empty())?;
            }
            stack.extend(sorted_children(&path)?.into_iter().rev());
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let mut h = header_for(&meta);
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &rel, &target)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1
                && let Some(first) = links.get(&key)
            {
                let mut h = header_for(&meta);
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &rel, first)?;
                continue;
            }
            if meta.nlink() > 1 {
                links.insert(key, rel.clone());
            }
            let mut h = header_for(&meta);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            b.append_data(&mut h, &rel, std::fs::File::open(&path)?)?;
        } else {
            let mut h = header_for(&meta);
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                // Sockets have no place in a layer.
                continue;
            };
            h.set_entry_type(kind);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
            b.append_data(&mut h, &rel, std::io::empty())?;
        }
    }
    b.finish()
}

/// Docker's `diff` lines (`A /x`, `C /y`, `D /z`) for an upper directory over `lower`.
pub fn diff_lines(upper: &Path, lower: &Path) -> std::io::Result<Vec<String>> {
    // (line, path, is a directory that only exists in the diff because of its children)
    let mut out: Vec<(String, String, bool)> = Vec::new();
    let mut stack: Vec<PathBuf> = sorted_children(upper)?.into_iter().rev().collect();
    while let Some(path) = stack.pop() {
        let rel = path
            .strip_prefix(upper)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if is_runtime_file(rel) {
            continue;
        }
        let shown = format!("/{}", rel.display());
        let meta = std::fs::symlink_metadata(&path)?;
        if is_whiteout(&meta) {
            out.push((format!("D {shown}"), shown, false));
            continue;
        }
        let in_lower = std::fs::symlink_metadata(lower.join(rel)).is_ok();
        let kind = if in_lower { "C" } else { "A" };
        out.push((format!("{kind} {shown}"), shown, in_lower && meta.is_dir()));
        if meta.is_dir() {
            stack.extend(sorted_children(&path)?.into_iter().rev());
        }
    }
    // A copied-up directory whose only changes were runtime files is no change.
    let kept: Vec<String> = out
        .iter()
        .filter(|(_, p, dir)| !*dir || out.iter().any(|(_, q, _)| q.starts_with(&format!("{p}/"))))
        .map(|(l, _, _)| l.clone())
        .collect();
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_tar_has_whiteouts_links_and_modes() {
        let root = std::env::temp_dir().join(format!("mvm-layer-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let upper = root.join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/new"), "n").unwrap();
        std::fs::hard_link(upper.join("etc/new"), upper.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("new", upper.join("etc/sym")).unwrap();
        // A whiteout is a 0:0 character device.
        let wh = CString::new(upper.join("gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod with a valid NUL-terminated path (tests run as root).
        assert_eq!(
            unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) },
            0
        );
        let mut tar = Vec::new();
        write_layer(&upper, &mut tar).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
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
        let links = names
            .iter()
            .filter(|(_, t)| *t == tar::EntryType::Link)
            .count();
        assert_eq!(links, 1, "{names:?}");
        let lower = root.join("lower");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        let d = diff_lines(&upper, &lower).unwrap();
        assert!(d.contains(&"C /etc".to_string()), "{d:?}");
        assert!(d.contains(&"A /etc/new".to_string()), "{d:?}");
        assert!(d.contains(&"D /gone".to_string()), "{d:?}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

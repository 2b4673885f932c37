//! Seeding a new volume from the image (`mvm.mount=...,seed`), as Docker fills an empty volume
//! with what the image has at the mount point: a recursive copy that keeps file types, modes
//! (with setuid/setgid/sticky bits), owners, and access and modification times.
//!
//! Symbolic links are copied as links and never followed, so a link in the image that points
//! outside the directory (`/etc/passwd`, `../..`) copies no data from there. Sockets, fifos and
//! device nodes are skipped: they mean nothing on a shared host directory. Not kept: hard
//! links (each name gets its own copy), holes in sparse files, extended attributes.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::log_debug;

/// A step of the copy that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path:?}: {source}")]
pub struct SeedError {
    /// What was being done.
    pub step: &'static str,
    /// The entry, relative to the copied directory (empty for the directory itself).
    pub path: PathBuf,
    /// Why it failed.
    pub source: io::Error,
}

/// Copies the content of directory `src` into the existing directory `dst`, then gives `dst`
/// the owner, mode and times of `src` (Docker gives a seeded volume's root the image
/// directory's owner and mode too). `src` itself is followed if it is a link: it may be a
/// `/proc/self/fd/N` path. Entries already in `dst` make the copy fail rather than be
/// overwritten.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SeedError> {
    let root = Path::new("");
    let meta = fs::metadata(src).map_err(fail("reading", root))?;
    copy_dir(src, dst, root)?;
    set_attributes(dst, &meta, root)
}

fn fail(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SeedError {
    let path = path.to_path_buf();
    move |source| SeedError { step, path, source }
}

fn copy_dir(src: &Path, dst: &Path, rel: &Path) -> Result<(), SeedError> {
    for entry in fs::read_dir(src).map_err(fail("listing", rel))? {
        let entry = entry.map_err(fail("listing", rel))?;
        let name = entry.file_name();
        let (from, to, rel) = (src.join(&name), dst.join(&name), rel.join(&name));
        let meta = fs::symlink_metadata(&from).map_err(fail("reading", &rel))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            // Owner-only until the content is in, whatever the final mode (0555 would stop
            // the copy, 0777 would be open meanwhile).
            DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(fail("creating directory", &rel))?;
            copy_dir(&from, &to, &rel)?;
        } else if kind.is_file() {
            copy_file(&from, &to).map_err(fail("copying", &rel))?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(fail("reading link", &rel))?;
            std::os::unix::fs::symlink(&target, &to).map_err(fail("creating link", &rel))?;
        } else {
            log_debug!(
                "seeding: skipping {} (a socket, fifo or device)",
                rel.display()
            );
            continue;
        }
        // After the content, so that the directory's times are the image's, not the copy's.
        set_attributes(&to, &meta, &rel)?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let mut output: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    io::copy(&mut input, &mut output)?;
    Ok(())
}

/// Owner, then mode (chown clears setuid and setgid), then times; a link's own owner and
/// times, and no mode (links have none).
fn set_attributes(path: &Path, meta: &Metadata, rel: &Path) -> Result<(), SeedError> {
    lchown(path, Some(meta.uid()), Some(meta.gid())).map_err(fail("changing the owner of", rel))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(fail("changing the mode of", rel))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| fail("setting the times of", rel)(io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, symlink};

    use super::*;
    use crate::test_util::TempDir;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
        let t = TimeSpec::new(secs, nsecs);
        utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    /// The image side: every kind of entry the copy must handle.
    fn image_tree(src: &Path, outside: &Path) {
        fs::write(src.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
        lchown(src.join("script.sh"), Some(1000), Some(1001)).unwrap();
        chmod(&src.join("script.sh"), 0o4755);
        fs::write(src.join("secret"), "s3cret").unwrap();
        chmod(&src.join("secret"), 0o600);
        fs::write(src.join("empty"), "").unwrap();
        chmod(&src.join("empty"), 0o644);
        symlink(outside, src.join("escape")).unwrap();
        symlink("../../etc/passwd", src.join("relative")).unwrap();
        lchown(src.join("relative"), Some(7), Some(8)).unwrap();
        fs::create_dir_all(src.join("nested/deeper")).unwrap();
        fs::write(src.join("nested/deeper/file"), vec![7u8; 200_000]).unwrap();
        chmod(&src.join("nested/deeper"), 0o555);
        chmod(&src.join("nested"), 0o2775);
        lchown(src.join("nested"), Some(33), Some(44)).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        set_mtime(&src.join("script.sh"), 1_000_000_000, 123_456_789);
        set_mtime(&src.join("relative"), 1_100_000_000, 5);
        set_mtime(&src.join("nested/deeper"), 1_200_000_000, 0);
        set_mtime(&src.join("nested"), 1_300_000_000, 0);
        chmod(src, 0o750);
        lchown(src, Some(5), Some(6)).unwrap();
        set_mtime(src, 1_400_000_000, 0);
    }

    fn same_attributes(a: &Path, b: &Path) {
        let (x, y) = (
            fs::symlink_metadata(a).unwrap(),
            fs::symlink_metadata(b).unwrap(),
        );
        assert_eq!(x.file_type(), y.file_type(), "{}", b.display());
        assert_eq!(x.mode(), y.mode(), "mode of {}", b.display());
        assert_eq!((x.uid(), x.gid()), (y.uid(), y.gid()), "{}", b.display());
        assert_eq!(
            (x.mtime(), x.mtime_nsec()),
            (y.mtime(), y.mtime_nsec()),
            "mtime of {}",
            b.display()
        );
    }

    #[test]
    fn copies_a_tree_keeping_types_modes_owners_times() {
        let tmp = TempDir::new("seed");
        let (src, dst) = (tmp.path().join("image"), tmp.path().join("volume"));
        let outside = tmp.path().join("outside");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(&outside, "not to be copied").unwrap();
        image_tree(&src, &outside);

        copy_tree(&src, &dst).unwrap();

        for name in [
            "",
            "script.sh",
            "secret",
            "empty",
            "escape",
            "relative",
            "nested",
            "nested/deeper",
            "nested/deeper/file",
        ] {
            same_attributes(&src.join(name), &dst.join(name));
        }
        assert_eq!(
            fs::symlink_metadata(dst.join("script.sh")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::read(dst.join("script.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(fs::read(dst.join("secret")).unwrap(), b"s3cret");
        assert_eq!(fs::read(dst.join("empty")).unwrap(), b"");
        assert_eq!(
            fs::read(dst.join("nested/deeper/file")).unwrap(),
            vec![7u8; 200_000]
        );
        // Links stay links, with the same text, and nothing was read through them.
        assert_eq!(fs::read_link(dst.join("escape")).unwrap(), outside);
        assert_eq!(
            fs::read_link(dst.join("relative")).unwrap(),
            Path::new("../../etc/passwd")
        );
        assert_eq!(fs::read(&outside).unwrap(), b"not to be copied");
        let entries: Vec<_> = fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!entries.contains(&"fifo".to_string()), "{entries:?}");
        assert_eq!(entries.len(), 6, "{entries:?}");
        assert!(
            fs::symlink_metadata(src.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn refuses_to_overwrite_and_names_the_entry() {
        let tmp = TempDir::new("seed-clash");
        let (src, dst) = (tmp.path().join("image"), tmp.path().join("volume"));
        fs::create_dir_all(src.join("dir")).unwrap();
        fs::write(src.join("dir/file"), "new").unwrap();
        fs::create_dir_all(dst.join("dir")).unwrap();
        let err = copy_tree(&src, &dst).unwrap_err();
        assert_eq!(err.path, Path::new("dir"));
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            err.to_string().contains("creating directory \"dir\""),
            "{err}"
        );

        let err = copy_tree(&tmp.path().join("missing"), &dst).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    }
}

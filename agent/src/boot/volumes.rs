//! The container's volumes (virtio-fs shares, `mvm.mount`) and tmpfs mounts (`mvm.tmpfs`),
//! made in command-line order once the container root has its kernel file systems, so that a
//! mount nested in an earlier one lands inside it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::seed::copy_tree;
use super::{BootError, io_err, sys};
use crate::log_debug;
use mvm_agent_protocol::boot::{
    ContainerMount, FileMount, SHARED_FILE_NAME, TmpfsMount, VirtiofsMount, in_kernel_dir,
};

/// Mounts `mounts` in the container whose root directory is `root` (`/` at boot).
pub(crate) fn mount_all(root: &Path, mounts: &[ContainerMount]) -> Result<(), BootError> {
    for m in mounts {
        match m {
            ContainerMount::Virtiofs(v) => mount_virtiofs(root, v)?,
            ContainerMount::Tmpfs(t) => mount_tmpfs(root, t)?,
        }
        log_debug!("mounted {m:?}");
    }
    Ok(())
}

fn mount_virtiofs(root: &Path, v: &VirtiofsMount) -> Result<(), BootError> {
    if v.file {
        return mount_shared_file(root, v);
    }
    let flags = if v.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let label = format!("virtio-fs tag {}", v.tag);
    mount_over(root, &v.target, v.seed, &label, |path| {
        mount(
            Some(v.tag.as_str()),
            path,
            Some("virtiofs"),
            flags,
            None::<&str>,
        )
    })
}

/// A single-file bind mount: the share (which holds only that file, the host staged it) is
/// mounted on a scratch directory of the root, its file bound at the target, and the scratch
/// mount detached and its directory removed: the container sees the file alone.
fn mount_shared_file(root: &Path, v: &VirtiofsMount) -> Result<(), BootError> {
    let scratch = root.join(format!(".mvm-file-{}", v.tag));
    fs::create_dir(&scratch).map_err(io_err(format!("creating {}", scratch.display())))?;
    let flags = if v.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let bound = mount(
        Some(v.tag.as_str()),
        &scratch,
        Some("virtiofs"),
        flags,
        None::<&str>,
    )
    .map_err(sys(format!(
        "mounting virtio-fs tag {} for {}",
        v.tag, v.target
    )))
    .and_then(|()| {
        let f = FileMount {
            name: SHARED_FILE_NAME.to_string(),
            target: v.target.clone(),
            read_only: v.read_only,
        };
        let r = bind_file(root, &scratch.join(SHARED_FILE_NAME), &f);
        let _ = umount2(&scratch, MntFlags::MNT_DETACH);
        r
    });
    let _ = fs::remove_dir(&scratch);
    bound
}

/// The mount options of a tmpfs: the root's mode, then the size when given.
fn tmpfs_data(t: &TmpfsMount) -> String {
    match t.size {
        Some(size) => format!("mode={:o},size={size}", t.mode),
        None => format!("mode={:o}", t.mode),
    }
}

fn mount_tmpfs(root: &Path, t: &TmpfsMount) -> Result<(), BootError> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if t.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = tmpfs_data(t);
    mount_over(root, &t.target, false, "tmpfs", |path| {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            flags,
            Some(data.as_str()),
        )
    })
}

/// Makes the mount point of `target` (`mkdir -p`, mode 0755) and calls `mount` on it. With
/// `seed`, when the new mount is empty and the image had content there, copies that content
/// into the mount.
///
/// The image's directory is opened before the mount covers it: through that descriptor
/// (`/proc/self/fd/N`) it stays readable under the new mount, so the copy needs no temporary
/// mount point, and nothing of the container's is ever touched besides the volume.
fn mount_over(
    root: &Path,
    target: &str,
    seed: bool,
    label: &str,
    mount: impl FnOnce(&Path) -> nix::Result<()>,
) -> Result<(), BootError> {
    let path = root.join(target.trim_start_matches('/'));
    let image_dir = if seed {
        open_if_not_empty(&path, target)?
    } else {
        None
    };
    make_mount_point(root, &path, target)?;
    mount(&path).map_err(sys(format!("mounting {label} on {target}")))?;
    let Some(image_dir) = image_dir else {
        return Ok(());
    };
    if !is_empty(&path).map_err(io_err(format!("listing {label} at {target}")))? {
        log_debug!("{label} at {target} is not empty: not seeded from the image");
        return Ok(());
    }
    let src = PathBuf::from(format!("/proc/self/fd/{}", image_dir.as_raw_fd()));
    copy_tree(&src, &path).map_err(|e| BootError::Io {
        what: format!(
            "seeding {label} at {target} from the image: {} {:?}",
            e.step, e.path
        ),
        source: e.source,
    })?;
    log_debug!("seeded {label} at {target} from the image");
    Ok(())
}

/// Binds the regular file `source` at `f.target` in the container whose root directory is
/// `root`, read-only when `f.read_only`. A missing target is made as an empty file (its
/// parents as directories), checked like a mount point.
pub(crate) fn bind_file(root: &Path, source: &Path, f: &FileMount) -> Result<(), BootError> {
    let meta = fs::symlink_metadata(source).map_err(io_err(format!("reading {source:?}")))?;
    if !meta.is_file() {
        return Err(BootError::MountTarget {
            target: f.target.clone(),
            reason: "its source in the files share is not a regular file",
        });
    }
    let path = root.join(f.target.trim_start_matches('/'));
    let parent = path.parent().unwrap_or(root);
    let parent_target = Path::new(&f.target)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/");
    if parent != root {
        make_mount_point(root, parent, parent_target)?;
    }
    let real_root = fs::canonicalize(root).map_err(io_err("resolving the container root"))?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(BootError::MountTarget {
                target: f.target.clone(),
                reason: "a file cannot be bound on a directory",
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&path)
                .map_err(io_err(format!("creating mount point {}", f.target)))?;
        }
        Err(e) => return Err(io_err(format!("reading {}", f.target))(e)),
    }
    check_inside(&real_root, &path, &f.target)?;
    mount(
        Some(source),
        &path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(format!("binding {} on {}", f.name, f.target)))?;
    if f.read_only {
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys(format!("making {} read-only", f.target)))?;
    }
    log_debug!("bound {} on {}", f.name, f.target);
    Ok(())
}

/// The image's directory at `path`, if it exists and has entries.
fn open_if_not_empty(path: &Path, target: &str) -> Result<Option<File>, BootError> {
    let dir = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
    {
        Ok(dir) => dir,
        // Nothing to seed from; a file in the way fails at the mount point.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(io_err(format!("opening {target} in the image"))(e)),
    };
    let fd_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let empty =
        is_empty(Path::new(&fd_path)).map_err(io_err(format!("listing {target} in the image")))?;
    Ok((!empty).then_some(dir))
}

fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// Creates `path` and its parents (mode 0755) when missing, but first checks where it
/// really is: a link in the image must not lead the mount point, or the mount, out of the
/// root or into /proc, /sys or /dev.
fn make_mount_point(root: &Path, path: &Path, target: &str) -> Result<(), BootError> {
    let real_root = fs::canonicalize(root).map_err(io_err("resolving the container root"))?;
    // The missing components are made by mkdir, which follows no link: checking the deepest
    // one that exists is enough before, and the whole path is checked again after.
    let mut existing = path;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    check_inside(&real_root, existing, target)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io_err(format!("creating mount point {target}")))?;
    check_inside(&real_root, path, target)
}

fn check_inside(real_root: &Path, path: &Path, target: &str) -> Result<(), BootError> {
    let real = fs::canonicalize(path).map_err(io_err(format!("resolving {target}")))?;
    let inside = real
        .strip_prefix(real_root)
        .ok()
        .and_then(|rel| rel.to_str())
        .map(|rel| format!("/{rel}"));
    match inside {
        Some(rel) if !in_kernel_dir(&rel) => Ok(()),
        _ => Err(BootError::MountTarget {
            target: target.to_string(),
            reason: "it resolves (through a link) into /proc, /sys, /dev or out of the root",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use nix::errno::Errno;
    use nix::sched::{CloneFlags, unshare};

    use super::*;
    use crate::test_util::TempDir;
    use mvm_agent_protocol::boot::parse_cmdline;

    /// The mount points of the mount namespace of `/proc/<who>`.
    fn mount_points(who: &str) -> Vec<String> {
        let path = format!("/proc/{who}/mountinfo");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        text.lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect()
    }

    /// Runs `f` on a thread of its own in a new mount namespace where every mount is private:
    /// what `f` mounts goes away with the thread and never shows on the host.
    fn in_private_mount_ns(f: impl FnOnce() + Send + 'static) {
        let thread = std::thread::spawn(move || {
            let ns = |p| fs::read_link(p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
            let before = ns("/proc/thread-self/ns/mnt");
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
                panic!("this test must run as root: unshare(CLONE_NEWNS) failed: {e}");
            }
            let after = ns("/proc/thread-self/ns/mnt");
            assert_ne!(before, after, "unshare did not give a new mount namespace");
            assert_ne!(after, ns("/proc/self/ns/mnt"), "the whole process moved");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("making / private in the test's mount namespace");
            f();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn dev(path: &Path) -> u64 {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .dev()
    }

    #[test]
    fn tmpfs_data_options() {
        let t = |s| match &parse_cmdline(s).unwrap().mounts[0] {
            ContainerMount::Tmpfs(t) => tmpfs_data(t),
            m => panic!("{m:?}"),
        };
        assert_eq!(t("mvm.tmpfs=/run"), "mode=1777");
        assert_eq!(
            t("mvm.tmpfs=/run,size=64m,mode=755"),
            "mode=755,size=67108864"
        );
        assert_eq!(t("mvm.tmpfs=/run,mode=0"), "mode=0");
    }

    #[test]
    fn mounts_tmpfs_in_order_in_a_private_namespace() {
        let tmp = TempDir::new("volumes");
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("srv")).unwrap();
        let root_str = root.to_str().unwrap().to_string();
        in_private_mount_ns(move || {
            let config = parse_cmdline(
                "mvm.tmpfs=/srv/cache,size=1m,mode=750 mvm.tmpfs=/srv/cache/inner/x \
                 mvm.tmpfs=/ro,ro",
            )
            .unwrap();
            mount_all(&root, &config.mounts).unwrap();

            let cache = root.join("srv/cache");
            let inner = root.join("srv/cache/inner/x");
            assert_ne!(
                dev(&cache),
                dev(&root.join("srv")),
                "no mount on /srv/cache"
            );
            assert_ne!(dev(&inner), dev(&cache), "no mount on /srv/cache/inner/x");
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&cache), 0o750);
            assert_eq!(mode(&inner), 0o1777);
            // The nested mount point was made inside the first tmpfs, mode 0755.
            assert_eq!(mode(&root.join("srv/cache/inner")), 0o755);
            assert_eq!(dev(&root.join("srv/cache/inner")), dev(&cache));
            let stat = nix::sys::statvfs::statvfs(&cache).unwrap();
            assert_eq!(stat.blocks() * stat.fragment_size(), 1 << 20);
            let err = fs::write(root.join("ro/file"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));

            let here = mount_points("thread-self");
            let on_host = mount_points("self");
            for p in [&cache, &inner] {
                let p = p.to_str().unwrap();
                assert!(here.iter().any(|m| m == p), "{p} not in {here:?}");
                assert!(!on_host.iter().any(|m| m == p), "{p} leaked to the host");
            }
        });
        // The namespace died with the thread: the directories are plain again.
        assert!(
            !mount_points("self")
                .iter()
                .any(|m| m.starts_with(&root_str))
        );
    }

    #[test]
    fn seeds_an_empty_mount_from_the_covered_image_directory() {
        let tmp = TempDir::new("volumes-seed");
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("data/sub")).unwrap();
        fs::write(root.join("data/sub/file"), "from the image").unwrap();
        fs::set_permissions(root.join("data"), fs::Permissions::from_mode(0o711)).unwrap();
        fs::create_dir_all(root.join("full")).unwrap();
        fs::write(root.join("full/image-file"), "image").unwrap();
        in_private_mount_ns(move || {
            let tmpfs = |p: &Path| {
                mount(
                    Some("tmpfs"),
                    p,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("mode=755"),
                )
            };
            // An empty volume takes the image's content and its root's mode.
            mount_over(&root, "/data", true, "test volume", tmpfs).unwrap();
            assert_ne!(dev(&root.join("data")), dev(&root));
            assert_eq!(
                fs::read_to_string(root.join("data/sub/file")).unwrap(),
                "from the image"
            );
            assert_eq!(
                fs::metadata(root.join("data"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777,
                0o711
            );
            // A volume with content stays as it is.
            let mount_with_content = |p: &Path| {
                tmpfs(p)?;
                fs::write(p.join("volume-file"), "volume").map_err(|_| Errno::EIO)
            };
            mount_over(&root, "/full", true, "test volume", mount_with_content).unwrap();
            let names: Vec<_> = fs::read_dir(root.join("full"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec!["volume-file"]);
            // Nothing in the image: the mount point is made, nothing is copied.
            mount_over(&root, "/new/dir", true, "test volume", tmpfs).unwrap();
            assert!(is_empty(&root.join("new/dir")).unwrap());
        });
    }

    #[test]
    fn errors_name_the_mount_and_the_errno() {
        let tmp = TempDir::new("volumes-err");
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/file"), "").unwrap();
        symlink("/proc", root.join("procfs")).unwrap();
        symlink("../..", root.join("up")).unwrap();

        let err = mount_over(&root, "/data", false, "virtio-fs tag vol0", |_| {
            Err(Errno::ENOENT)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mounting virtio-fs tag vol0 on /data: ENOENT: No such file or directory"
        );
        let err = mount_over(&root, "/etc/file", false, "tmpfs", |_| Ok(())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("creating mount point /etc/file:"),
            "{err}"
        );
        // A link in the image does not take a mount into /proc or out of the root, and
        // `mount` is never called.
        let escape = format!("mvm-agent-escape-{}", std::process::id());
        for target in [format!("/procfs/{escape}"), format!("/up/{escape}/x")] {
            let err =
                mount_over(&root, &target, false, "tmpfs", |_| panic!("mounted")).unwrap_err();
            assert!(
                err.to_string()
                    .contains("/proc, /sys, /dev or out of the root"),
                "{err}"
            );
        }
        let up = fs::canonicalize(root.join("up")).unwrap();
        assert!(
            !up.join(&escape).exists(),
            "a directory was made outside the root"
        );
    }

    #[test]
    fn files_are_bound_read_only_or_not_and_links_do_not_lead_them_out() {
        let tmp = TempDir::new("volumes-files");
        let (root, files) = (tmp.path().join("root"), tmp.path().join("files"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&files).unwrap();
        fs::write(root.join("etc/hosts"), "image's\n").unwrap();
        fs::write(files.join("0"), "engine's hosts\n").unwrap();
        fs::write(files.join("1"), "engine's env\n").unwrap();
        fs::create_dir(files.join("dir")).unwrap();
        symlink("/etc/passwd", files.join("link")).unwrap();
        symlink("/tmp", root.join("escape")).unwrap();
        fs::create_dir(root.join("adir")).unwrap();
        let file = |name: &str, target: &str, read_only| FileMount {
            name: name.into(),
            target: target.into(),
            read_only,
        };
        in_private_mount_ns(move || {
            bind_file(&root, &files.join("0"), &file("0", "/etc/hosts", true)).unwrap();
            assert_eq!(
                fs::read_to_string(root.join("etc/hosts")).unwrap(),
                "engine's hosts\n"
            );
            assert!(fs::write(root.join("etc/hosts"), "x").is_err(), "writable");
            // A missing target and its parents are made.
            bind_file(&root, &files.join("1"), &file("1", "/run/.env", false)).unwrap();
            assert_eq!(
                fs::read_to_string(root.join("run/.env")).unwrap(),
                "engine's env\n"
            );
            let escape = format!("mvm-agent-file-{}", std::process::id());
            for (source, target, why) in [
                ("dir", "/x".to_string(), "not a regular file"),
                ("link", "/y".to_string(), "not a regular file"),
                ("0", "/adir".to_string(), "on a directory"),
                ("0", format!("/escape/{escape}"), "out of the root"),
            ] {
                let err = bind_file(&root, &files.join(source), &file(source, &target, true))
                    .unwrap_err();
                assert!(err.to_string().contains(why), "{target}: {err}");
            }
            assert!(
                !Path::new("/tmp").join(&escape).exists(),
                "made outside the root"
            );
        });
    }
}

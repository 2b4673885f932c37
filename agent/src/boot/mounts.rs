//! The kernel file systems, first for the agent, then inside the container root.

use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use super::{BootError, io_err, sys};
use crate::log_debug;

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts `fstype` at `target`.
pub(crate) fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), BootError> {
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(sys(format!("mounting {fstype} {source} on {target}")))
}

/// /proc, /sys and /dev on the agent's own (read-only) root, where their directories exist.
pub(crate) fn mount_early() -> Result<(), BootError> {
    mount_fs("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount_fs("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    match mount(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    ) {
        // CONFIG_DEVTMPFS_MOUNT already put it there.
        Ok(()) | Err(Errno::EBUSY) => {}
        Err(e) => return Err(sys("mounting devtmpfs on /dev")(e)),
    }
    // pivot_root refuses shared mounts; nothing here needs propagation.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;
    Ok(())
}

fn mkdir(path: &str, mode: u32) -> Result<(), BootError> {
    if Path::new(path).is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err(format!("creating {path}")))
}

/// Inside the container root (after pivot_root): /proc, /sys, /dev with /dev/pts, /dev/shm
/// (of `shm_size` bytes, Docker's 64 MiB by default) and the usual /dev links, creating mount
/// points the image lacks. /tmp stays the
/// container's own disk, as in Docker: an image's files there are seen, and `diff`, `commit`
/// and a restart keep what the container wrote.
pub(crate) fn mount_container_fs(shm_size: Option<u64>) -> Result<(), BootError> {
    mkdir("/proc", 0o555)?;
    mount_fs("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mkdir("/sys", 0o555)?;
    mount_fs("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mkdir("/dev", 0o755)?;
    // Every device of a VM is the container's own: the whole devtmpfs is fine here.
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mkdir("/dev/pts", 0o755)?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    // /dev/ptmx must reach this devpts instance's ptmx.
    replace_with_symlink("pts/ptmx", "/dev/ptmx")?;
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        if std::fs::symlink_metadata(link).is_err() {
            symlink(target, link).map_err(io_err(format!("linking {link}")))?;
        }
    }
    mkdir("/dev/shm", 0o1777)?;
    mount_fs(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20)).as_str()),
    )?;
    // As in a Docker container: POSIX message queues, and the cgroup tree read-only (the VM's
    // own kernel's: the container sees its VM's cgroups, nothing of the host's). Best effort:
    // a kernel without them still runs the container.
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (source, target, fstype, flags) in [
        ("mqueue", "/dev/mqueue", "mqueue", nosuid_nodev_noexec),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        ),
    ] {
        if let Err(e) =
            mkdir(target, 0o755).and_then(|()| mount_fs(source, target, fstype, flags, None))
        {
            log_debug!("{target} not mounted: {e}");
        }
    }
    log_debug!("container file systems mounted");
    Ok(())
}

fn replace_with_symlink(target: &str, link: &str) -> Result<(), BootError> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("removing {link}"))(e)),
    }
    symlink(target, link).map_err(io_err(format!("linking {link} to {target}")))
}

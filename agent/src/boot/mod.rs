//! PID 1's boot: from the kernel's hand-over to a container root, ready to serve the host.
//!
//! The agent's own disk (root=/dev/vda, read-only) must hold `/mvm-agent` and the empty
//! directories `/proc`, `/sys`, `/dev` and `/run`; everything else lives on a tmpfs at /run.

pub mod etc_files;
mod mounts;
mod rootfs;
mod seed;
mod volumes;
mod warm;

use std::io;

pub use etc_files::{hosts_content, resolv_content, write_etc_files};

use crate::netdev::{self, NetError};
use crate::{console, log_debug, log_error};
use mvm_agent_protocol::boot::{BootConfig, CmdlineError, RootSource, parse_cmdline};

/// A boot step that failed; the agent logs it and powers off.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A mount, pivot_root or similar system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The step, with its paths.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The step, with its paths.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// A mount point that leads somewhere a mount must not go.
    #[error("mount target {target}: {reason}")]
    MountTarget {
        /// The target as the command line gave it.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The kernel command line has a bad `mvm.*` value.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// A network interface of an `mvm.net` key could not be configured.
    #[error("network: {0}")]
    Net(#[from] NetError),
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Sys { what, source }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Io { what, source }
}

/// Mounts the kernel file systems, reads the command line, builds the container root and
/// pivots into it. On success the process's root and working directory are the container's.
pub fn boot() -> Result<BootConfig, BootError> {
    mounts::mount_early()?;
    if let Err(e) = console::attach(std::path::Path::new("/dev/console")) {
        // Nothing else to log to; keep whatever stderr the kernel gave.
        log_error!("cannot open /dev/console: {e}");
    }
    let cmdline =
        std::fs::read_to_string("/proc/cmdline").map_err(io_err("reading /proc/cmdline"))?;
    let mut config = parse_cmdline(&cmdline)?;
    console::set_debug(config.debug);
    if config.template {
        // A template VM: snapshotted here, before any container disk is touched; each VM
        // restored from it learns its container now.
        config = warm::wait_for_container()?;
        console::set_debug(config.debug);
    }
    log_debug!("boot config: {config:?}");

    if config.export {
        // A helper VM for a stopped container's files: its root, and for `cp` its volumes.
        rootfs::mount_for_export(&config)?;
        volumes::mount_all(std::path::Path::new("/"), &config.mounts)?;
        return Ok(config);
    }
    let shared_root = config.root != RootSource::Overlay;
    rootfs::build_and_enter(&config)?;
    mounts::mount_container_fs(config.shm_size)?;
    // Volumes and tmpfs mounts before the network, and a failure is fatal: the container
    // must not run without the data it was given. The /etc files below are written into
    // whatever is mounted by then.
    volumes::mount_all(std::path::Path::new("/"), &config.mounts)?;

    // A container without the network it was given must not start: this failure is fatal,
    // unlike the best-effort steps below.
    let ifaces = netdev::configure(&config.net)?;
    log_debug!("network interfaces configured: {ifaces:?}");

    // An OCI engine gives its own /etc/hosts, resolv.conf and hostname (mvm.file) and sees
    // the root's files: nothing is written into it behind the engine's back.
    if !shared_root && let Err(e) = write_etc_files(std::path::Path::new("/"), &config) {
        log_error!("{e}");
    }
    if let Some(name) = &config.hostname
        && let Err(e) = nix::unistd::sethostname(name)
    {
        log_error!("sethostname {name}: {e}");
    }
    if let Err(e) = netdev::set_up("lo") {
        log_error!("bringing up lo: {e}");
    }
    Ok(config)
}

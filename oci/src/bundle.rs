//! Reading and checking an OCI bundle: `config.json` parsed with oci-spec's runtime types and
//! reduced to what a microVM runtime needs, with every field that cannot apply to a VM either
//! refused (an error) or listed in [`Bundle::unsupported`] for the debug log.
//!
//! The bundle is hostile input: config.json is opened with O_NOFOLLOW and read only up to
//! [`MAX_CONFIG_BYTES`]; a `root.path` that is a symlink is refused.
//!
//! `root.path` policy: runc accepts any path. A *symlink* as the root is refused, since a bundle
//! (or whatever can write into it) could then point the container at any host directory. A
//! plain relative path, even one that climbs out of the bundle (`../../../etc`), is the engine's
//! own choice of directory: it is accepted and resolved to an absolute canonical path, so later
//! steps never resolve it again.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook as SpecHook, LinuxNamespaceType, Spec};

use crate::error::BundleError;
use crate::mount::{self, Mount};
use crate::resources::{self, Resources};

/// The largest config.json read. Real ones are a few tens of KiB (Docker's default seccomp
/// profile makes most of it); anything near this is not a bundle an engine wrote.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A bundle's config, checked and typed for a microVM runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle directory, canonical.
    pub dir: PathBuf,
    /// `ociVersion`.
    pub oci_version: String,
    /// `process`.
    pub process: Process,
    /// `root`.
    pub root: Root,
    /// `mounts`, classified, in order.
    pub mounts: Vec<Mount>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `domainname`.
    pub domainname: Option<String>,
    /// `annotations`.
    pub annotations: HashMap<String, String>,
    /// `hooks`.
    pub hooks: Hooks,
    /// `linux` (defaults when absent).
    pub linux: Linux,
    /// Fields accepted but with no effect in a microVM, one human line each, for the debug log.
    pub unsupported: Vec<String>,
}

/// `process`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// `args`, never empty.
    pub args: Vec<String>,
    /// `env`, `KEY=value` strings.
    pub env: Vec<String>,
    /// `cwd`, absolute.
    pub cwd: PathBuf,
    /// `user`.
    pub user: User,
    /// `terminal`.
    pub terminal: bool,
    /// `consoleSize` as (height, width).
    pub console_size: Option<(u64, u64)>,
    /// `rlimits`.
    pub rlimits: Vec<Rlimit>,
    /// `capabilities`, as names such as `CAP_CHOWN`, sorted; `None` when absent (the process
    /// keeps what it has, as under runc).
    pub capabilities: Option<Capabilities>,
    /// `noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
}

/// `process.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// `uid`.
    pub uid: u32,
    /// `gid`.
    pub gid: u32,
    /// `additionalGids`.
    pub additional_gids: Vec<u32>,
    /// `umask`.
    pub umask: Option<u32>,
}

/// One of `process.rlimits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// The type as the spec spells it, such as `RLIMIT_NOFILE`.
    pub typ: String,
    /// `soft`.
    pub soft: u64,
    /// `hard`.
    pub hard: u64,
}

/// `process.capabilities`, each set as sorted names (`CAP_...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `bounding`.
    pub bounding: Vec<String>,
    /// `effective`.
    pub effective: Vec<String>,
    /// `inheritable`.
    pub inheritable: Vec<String>,
    /// `permitted`.
    pub permitted: Vec<String>,
    /// `ambient`.
    pub ambient: Vec<String>,
}

/// `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The root directory: absolute, canonical, not a symlink.
    pub path: PathBuf,
    /// `readonly`.
    pub readonly: bool,
}

/// `hooks`, each list in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `prestart` (deprecated by the spec, still what dockerd uses for libnetwork).
    pub prestart: Vec<Hook>,
    /// `createRuntime`.
    pub create_runtime: Vec<Hook>,
    /// `createContainer`.
    pub create_container: Vec<Hook>,
    /// `startContainer`.
    pub start_container: Vec<Hook>,
    /// `poststart`.
    pub poststart: Vec<Hook>,
    /// `poststop`.
    pub poststop: Vec<Hook>,
}

/// One hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `path`, absolute.
    pub path: PathBuf,
    /// `args` (argv, including argv\[0\]).
    pub args: Vec<String>,
    /// `env`.
    pub env: Vec<String>,
    /// `timeout` in seconds, above zero.
    pub timeout: Option<u32>,
}

/// `linux`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linux {
    /// `resources`, as the VM's size.
    pub resources: Resources,
    /// `cgroupsPath`.
    pub cgroups_path: Option<PathBuf>,
    /// `namespaces`, each path checked to exist.
    pub namespaces: Vec<Namespace>,
    /// `sysctl`.
    pub sysctl: HashMap<String, String>,
    /// `maskedPaths`.
    pub masked_paths: Vec<String>,
    /// `readonlyPaths`.
    pub readonly_paths: Vec<String>,
}

impl Linux {
    /// Where the container's network comes from.
    pub fn network(&self) -> Network {
        match self
            .namespaces
            .iter()
            .find(|n| n.typ == LinuxNamespaceType::Network)
        {
            Some(Namespace { path: Some(p), .. }) => Network::Join(p.clone()),
            Some(_) => Network::New,
            None => Network::Host,
        }
    }
}

/// One of `linux.namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `type`.
    pub typ: LinuxNamespaceType,
    /// `path`: join this namespace instead of making one.
    pub path: Option<PathBuf>,
}

/// The network a container gets, from its `network` namespace entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The engine made a network namespace (podman with netavark, CNI): the VM's tap lives there.
    Join(PathBuf),
    /// A namespace without a path: the runtime makes one (Docker's `--network none` and its
    /// libnetwork prestart hook that configures it).
    New,
    /// No network namespace listed: the host's network.
    Host,
}

impl Bundle {
    /// Reads `dir/config.json` and checks it; see the module doc for the policy.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let config = dir.join("config.json");
        let bytes = read_config(&config)?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| BundleError::BadJson {
            path: config.clone(),
            detail: e.to_string(),
            source: e.into(),
        })?;
        let dir = fs::canonicalize(dir).map_err(|source| BundleError::ConfigUnreadable {
            path: config.clone(),
            source,
        })?;
        from_spec(&config, dir, &spec)
    }
}

/// Opens config.json without following a symlink (nor blocking on a FIFO) and reads at most
/// [`MAX_CONFIG_BYTES`].
pub(crate) fn read_config(config: &Path) -> Result<Vec<u8>, BundleError> {
    let unreadable = |source| BundleError::ConfigUnreadable {
        path: config.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(config)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                BundleError::ConfigSymlink {
                    path: config.to_path_buf(),
                }
            } else {
                unreadable(e)
            }
        })?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(BundleError::ConfigNotFile {
            path: config.to_path_buf(),
        });
    }
    let too_large = || BundleError::ConfigTooLarge {
        path: config.to_path_buf(),
        max: MAX_CONFIG_BYTES,
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    // The file may grow between fstat and read: the limit holds for what is read, too.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn from_spec(config: &Path, dir: PathBuf, spec: &Spec) -> Result<Bundle, BundleError> {
    let path = || config.to_path_buf();
    let version = spec.version();
    if version.split('.').next() != Some("1") {
        return Err(BundleError::UnsupportedVersion {
            path: path(),
            version: version.clone(),
        });
    }
    let mut unsupported = Vec::new();

    let p = spec.process().as_ref().ok_or(BundleError::Missing {
        path: path(),
        field: "process",
    })?;
    let process = process(config, p, &mut unsupported)?;

    let r = spec.root().as_ref().ok_or(BundleError::Missing {
        path: path(),
        field: "root.path",
    })?;
    let root = Root {
        path: root_path(config, &dir, r.path())?,
        readonly: r.readonly().unwrap_or(false),
    };

    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            unsupported.push(format!(
                "mounts[{i}] on {}: idmapped mounts (uidMappings/gidMappings) are ignored",
                m.destination().display()
            ));
        }
        mounts.push(mount::classify(config, &dir, i, m)?);
    }

    let hooks = match spec.hooks() {
        Some(h) => Hooks {
            prestart: hooks(config, "prestart", h.prestart())?,
            create_runtime: hooks(config, "createRuntime", h.create_runtime())?,
            create_container: hooks(config, "createContainer", h.create_container())?,
            start_container: hooks(config, "startContainer", h.start_container())?,
            poststart: hooks(config, "poststart", h.poststart())?,
            poststop: hooks(config, "poststop", h.poststop())?,
        },
        None => Hooks::default(),
    };

    let linux = match spec.linux() {
        Some(l) => linux(config, l, &mut unsupported)?,
        None => Linux::default(),
    };
    for (present, what) in [
        (spec.solaris().is_some(), "solaris"),
        (spec.windows().is_some(), "windows"),
        (spec.vm().is_some(), "vm"),
        (spec.zos().is_some(), "zos"),
    ] {
        if present {
            unsupported.push(format!(
                "{what}: platform section ignored on Linux microVMs"
            ));
        }
    }

    Ok(Bundle {
        dir,
        oci_version: version.clone(),
        process,
        root,
        mounts,
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        annotations: spec.annotations().clone().unwrap_or_default(),
        hooks,
        linux,
        unsupported,
    })
}

pub(crate) fn process(
    config: &Path,
    p: &oci_spec::runtime::Process,
    unsupported: &mut Vec<String>,
) -> Result<Process, BundleError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(BundleError::Missing {
            path: config.to_path_buf(),
            field: "process.args",
        });
    }
    if !p.cwd().is_absolute() {
        return Err(BundleError::NotAbsolute {
            path: config.to_path_buf(),
            field: "process.cwd".into(),
            value: p.cwd().clone(),
        });
    }
    let u = p.user();
    let user = User {
        uid: u.uid(),
        gid: u.gid(),
        additional_gids: u.additional_gids().clone().unwrap_or_default(),
        umask: u.umask(),
    };
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            typ: r.typ().to_string(),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    let names = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut v: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
        v.sort();
        v
    };
    let capabilities = p.capabilities().as_ref().map(|c| Capabilities {
        bounding: names(c.bounding()),
        effective: names(c.effective()),
        inheritable: names(c.inheritable()),
        permitted: names(c.permitted()),
        ambient: names(c.ambient()),
    });
    if let Some(a) = p.apparmor_profile().as_deref().filter(|a| !a.is_empty()) {
        unsupported.push(format!(
            "process.apparmorProfile {a:?}: AppArmor is not applied in the guest"
        ));
    }
    if let Some(l) = p.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        unsupported.push(format!(
            "process.selinuxLabel {l:?}: SELinux labels are not applied in the guest"
        ));
    }
    if p.io_priority().is_some() {
        unsupported.push("process.ioPriority: I/O priority is not applied".into());
    }
    if p.scheduler().is_some() {
        unsupported.push("process.scheduler: the scheduling policy is not applied".into());
    }
    if p.exec_cpu_affinity().is_some() {
        unsupported.push("process.execCPUAffinity: CPU affinity is not applied".into());
    }
    Ok(Process {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().clone(),
        user,
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| (b.height(), b.width())),
        rlimits,
        capabilities,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
    })
}

/// Resolves `root.path` against the bundle directory, refuses a symlink or a non-directory and
/// returns the canonical path.
fn root_path(config: &Path, dir: &Path, given: &Path) -> Result<PathBuf, BundleError> {
    if given.as_os_str().is_empty() {
        return Err(BundleError::Missing {
            path: config.to_path_buf(),
            field: "root.path",
        });
    }
    let root = if given.is_absolute() {
        given.to_path_buf()
    } else {
        dir.join(given)
    };
    // Opened with O_NOFOLLOW|O_DIRECTORY, so the check and the path returned are about the
    // same directory: a symlink swapped in after an lstat would not be followed. Symlinks in
    // the components before the last are resolved here, once (the engine's own layout).
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&root);
    let dir_fd = match opened {
        Ok(f) => f,
        Err(source) => {
            // Only to name the problem: the open above already refused it.
            return Err(match fs::symlink_metadata(&root) {
                Ok(m) if m.file_type().is_symlink() => BundleError::RootSymlink {
                    path: config.to_path_buf(),
                    root,
                },
                Ok(m) if !m.is_dir() => BundleError::RootNotDirectory {
                    path: config.to_path_buf(),
                    root,
                },
                _ => BundleError::RootMissing {
                    path: config.to_path_buf(),
                    root,
                    source,
                },
            });
        }
    };
    let fd_link = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
    match fs::read_link(&fd_link) {
        Ok(p) if p.is_absolute() => Ok(p),
        // No /proc: resolve by path instead.
        _ => fs::canonicalize(&root).map_err(|source| BundleError::RootMissing {
            path: config.to_path_buf(),
            root: root.clone(),
            source,
        }),
    }
}

fn hooks(
    config: &Path,
    kind: &'static str,
    list: &Option<Vec<SpecHook>>,
) -> Result<Vec<Hook>, BundleError> {
    let bad = |index, problem| BundleError::BadHook {
        path: config.to_path_buf(),
        kind,
        index,
        problem,
    };
    let mut out = Vec::new();
    for (i, h) in list.iter().flatten().enumerate() {
        if !h.path().is_absolute() {
            return Err(bad(i, format!("path {:?} is not absolute", h.path())));
        }
        let timeout = match h.timeout() {
            None => None,
            Some(t) => Some(u32::try_from(t).ok().filter(|t| *t > 0).ok_or_else(|| {
                bad(
                    i,
                    format!("timeout {t} is not a positive number of seconds"),
                )
            })?),
        };
        out.push(Hook {
            path: h.path().clone(),
            args: h.args().clone().unwrap_or_default(),
            env: h.env().clone().unwrap_or_default(),
            timeout,
        });
    }
    Ok(out)
}

fn linux(
    config: &Path,
    l: &oci_spec::runtime::Linux,
    unsupported: &mut Vec<String>,
) -> Result<Linux, BundleError> {
    let mut res = Resources::default();
    if let Some(r) = l.resources() {
        resource_notes(r, unsupported);
        if let Some(m) = r.memory() {
            res.memory_mib = m.limit().and_then(resources::memory_mib);
        }
        if let Some(c) = r.cpu() {
            if let (Some(q), Some(p)) = (c.quota(), c.period()) {
                res.quota_vcpus = resources::quota_vcpus(q, p);
            }
            if let Some(cpus) = c.cpus() {
                res.cpuset_cpus =
                    resources::cpuset_count(cpus).map_err(|problem| BundleError::BadResource {
                        path: config.to_path_buf(),
                        field: "linux.resources.cpu.cpus",
                        problem,
                    })?;
            }
        }
    }

    let mut namespaces = Vec::new();
    for (i, n) in l.namespaces().iter().flatten().enumerate() {
        if let Some(p) = n.path() {
            // stat follows the link: /proc/<pid>/ns/net is one, and it is the target that
            // must exist.
            if fs::metadata(p).is_err() {
                return Err(BundleError::NamespacePathMissing {
                    path: config.to_path_buf(),
                    index: i,
                    typ: n.typ().to_string(),
                    ns_path: p.clone(),
                });
            }
        }
        if n.typ() == LinuxNamespaceType::User {
            unsupported.push(
                "linux.namespaces: a user namespace is not made; the VM is the boundary".into(),
            );
        }
        namespaces.push(Namespace {
            typ: n.typ(),
            path: n.path().clone(),
        });
    }

    let notes = [
        (
            l.seccomp().is_some(),
            "linux.seccomp: the seccomp profile is not applied in the guest; the VM is the boundary",
        ),
        (
            l.mount_label().as_deref().is_some_and(|s| !s.is_empty()),
            "linux.mountLabel: SELinux mount labels are not applied",
        ),
        (
            l.intel_rdt().is_some(),
            "linux.intelRdt: Intel RDT is not applied",
        ),
        (
            l.uid_mappings().is_some() || l.gid_mappings().is_some(),
            "linux.uidMappings/gidMappings: ID mappings are not applied",
        ),
        (
            l.devices().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.devices: host devices are not created in the guest",
        ),
        (
            l.personality().is_some(),
            "linux.personality: the execution domain is not applied",
        ),
        (
            l.memory_policy().is_some(),
            "linux.memoryPolicy: the NUMA policy is not applied",
        ),
        (
            l.time_offsets().is_some(),
            "linux.timeOffsets: time namespace offsets are not applied",
        ),
        (
            l.net_devices().is_some(),
            "linux.netDevices: host network devices are not moved into the VM",
        ),
        (
            l.rootfs_propagation()
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
            "linux.rootfsPropagation: mount propagation does not cross the VM",
        ),
    ];
    for (present, line) in notes {
        if present {
            unsupported.push(line.to_string());
        }
    }

    Ok(Linux {
        resources: res,
        cgroups_path: l.cgroups_path().clone(),
        namespaces,
        sysctl: l.sysctl().clone().unwrap_or_default(),
        masked_paths: l.masked_paths().clone().unwrap_or_default(),
        readonly_paths: l.readonly_paths().clone().unwrap_or_default(),
    })
}

/// Notes the cgroup controls a VM's size does not express.
fn resource_notes(r: &oci_spec::runtime::LinuxResources, unsupported: &mut Vec<String>) {
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        unsupported.push(
            "linux.resources.devices: device cgroup rules are not applied; the guest has only its own devices".into(),
        );
    }
    if let Some(p) = r.pids().as_ref().filter(|p| p.limit() > 0) {
        unsupported.push(format!(
            "linux.resources.pids.limit {}: not applied",
            p.limit()
        ));
    }
    if r.memory()
        .as_ref()
        .is_some_and(|m| m.reservation().is_some_and(|v| v > 0) || m.swap().is_some_and(|v| v > 0))
    {
        unsupported.push(
            "linux.resources.memory: reservation and swap are not applied, only the limit".into(),
        );
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some_and(|s| s > 0) {
            unsupported.push("linux.resources.cpu.shares: CPU weight is not applied".into());
        }
        if c.realtime_runtime().is_some_and(|v| v > 0) {
            unsupported.push("linux.resources.cpu: realtime limits are not applied".into());
        }
        if c.mems().as_deref().is_some_and(|m| !m.is_empty()) {
            unsupported.push("linux.resources.cpu.mems: memory nodes are not applied".into());
        }
    }
    if let Some(b) = r.block_io() {
        let weighted = b.weight().is_some_and(|w| w > 0) || b.leaf_weight().is_some_and(|w| w > 0);
        let per_device = b.weight_device().is_some()
            || b.throttle_read_bps_device().is_some()
            || b.throttle_write_bps_device().is_some()
            || b.throttle_read_iops_device().is_some()
            || b.throttle_write_iops_device().is_some();
        if weighted || per_device {
            unsupported
                .push("linux.resources.blockIO: I/O weights and throttles are not applied".into());
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        unsupported.push("linux.resources.hugepageLimits: not applied".into());
    }
    if r.network().is_some() {
        unsupported
            .push("linux.resources.network: class IDs and priorities are not applied".into());
    }
    if r.rdma().is_some() {
        unsupported.push("linux.resources.rdma: not applied".into());
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        unsupported.push("linux.resources.unified: cgroup v2 files are not applied".into());
    }
}

#[cfg(test)]
mod tests;

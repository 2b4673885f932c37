//! A microVM whose container root is a host directory (an OCI bundle's `root.path`, which the
//! calling engine has already mounted), shared into the guest with virtio-fs, writable, so the
//! engine's own `diff`, `commit` and `cp` see what the container changed.
//!
//! This is the engine half of the OCI runtime and of the containerd shim: they own the process
//! model their callers expect (a pid file, a console socket, hooks, a network namespace); the
//! VM, its helpers and the session with the agent are here, built from the same pieces as
//! `mvm run`'s containers.
//!
//! The host never mounts anything of the guest's: the root is served by virtiofsd from the
//! engine's directory, sandboxed to it; single files (Docker's `/etc/hosts`, `resolv.conf`,
//! `hostname`) are *copied* into a read-only share of their own, so the guest sees neither
//! their neighbours nor a way to write back to the engine's files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvm_agent_protocol::boot::{self, BootConfig, ContainerMount, FileMount, RootSource};
use mvm_agent_protocol::{DEFAULT_CALLBACK_PORT, DEFAULT_VSOCK_PORT, ProcessSpec};

use crate::backend::{self, Disk, Kind, Nic, Share, VmHandle, VmSpec};
use crate::error::EngineError;
use crate::session::{self, SessionError, Stdio};
use crate::volume::virtiofsd;
use crate::{agent_disk, paths};

/// How long the agent may take to answer after the VM starts (TCG is slow; CI is busy).
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the VM may take to power off after the process exits.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest file copied into the files share: Docker's and podman's are a few hundred
/// bytes; anything this big is not an /etc file an engine wrote.
pub const MAX_SHARED_FILE_BYTES: u64 = 1 << 20;

/// A host file the container sees at `target` (a copy, made at boot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFile {
    /// The host file; a regular file, not a symlink.
    pub source: PathBuf,
    /// The absolute path in the container.
    pub target: String,
    /// Bound read-only in the guest.
    pub read_only: bool,
}

/// A host directory the container sees at `target`, served by its own virtiofsd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedDir {
    /// The host directory.
    pub source: PathBuf,
    /// The absolute path in the container.
    pub target: String,
    /// Shared and mounted read-only.
    pub read_only: bool,
}

/// A network interface of the VM: a TAP the caller made, and the guest's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxNic {
    /// The TAP device (in the caller's network namespace) and the guest's MAC.
    pub nic: Nic,
    /// Address, gateway and MTU for the guest's interface.
    pub config: boot::NetConfig,
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// The backend.
    pub kind: Kind,
    /// A short directory for the VM's sockets and logs (unix socket paths are short).
    pub run_dir: PathBuf,
    /// Where the agent's disk is built and kept.
    pub cache: PathBuf,
    /// The container root, a host directory.
    pub root: PathBuf,
    /// The root is read-only (host- and guest-side).
    pub root_read_only: bool,
    /// Single files bound into the root.
    pub files: Vec<SharedFile>,
    /// Directories mounted into the root, in order.
    pub dirs: Vec<SharedDir>,
    /// tmpfs mounts made in the guest, after the directories.
    pub tmpfs: Vec<boot::TmpfsMount>,
    /// The guest's hostname.
    pub hostname: Option<String>,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Network interfaces.
    pub nics: Vec<SandboxNic>,
    /// A cgroup (relative to each hierarchy's root) the VM's processes join, with the VM's
    /// limits set on it; the caller has joined it itself and removes it.
    pub cgroup_parent: Option<PathBuf>,
    /// A resolver in this process's network namespace that the guest reaches at
    /// 127.0.0.11:53 through the DNS relay (Docker's embedded DNS).
    pub dns_upstream: Option<std::net::SocketAddr>,
    /// The guest's console and the agent's log on.
    pub debug: bool,
}

impl SandboxSpec {
    /// The VM's hybrid-vsock socket, for [`exec`] from another process.
    pub fn vsock_path(&self) -> PathBuf {
        crate::container::vm_dir(&self.run_dir).join("vsock.sock")
    }
}

/// A booted VM whose agent is ready and has started nothing yet.
pub struct Sandbox {
    vm: VmHandle,
    daemons: Vec<virtiofsd::Daemon>,
    stream: UnixStream,
    watch: backend::watch::Watch,
    console: PathBuf,
}

/// Copies `source` (a regular file, not followed if a link, at most
/// [`MAX_SHARED_FILE_BYTES`]) to `dest`.
fn copy_file(source: &Path, dest: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = source.display();
    let mut from = open_source(source).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = from
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_SHARED_FILE_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_SHARED_FILE_BYTES} bytes"
        ));
    }
    let mut to =
        File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    io::copy(
        &mut io::Read::take(&mut from, MAX_SHARED_FILE_BYTES),
        &mut to,
    )
    .map_err(|e| format!("cannot copy {shown}: {e}"))?;
    // Executable stays executable (Docker's --init binds docker-init); no setuid or setgid,
    // nothing writable but by the owner.
    to.set_permissions(std::fs::Permissions::from_mode(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o755,
    ))
    .map_err(|e| format!("cannot set the mode of {}: {e}", dest.display()))?;
    Ok(())
}

/// Host system directories that no VM is given to write: a link there (such as
/// /usr/bin/docker-init -> tini-static, which Docker's `--init` binds) is the host's own.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64"];

/// Opens a shared file's source without following a link, except a link in [`SYSTEM_DIRS`]
/// to a file in them: a link anywhere else may be one a guest made in a directory shared
/// with it, and following it would copy whatever it points at into a guest.
fn open_source(source: &Path) -> io::Result<File> {
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p)
    };
    match open(source) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let system = |p: &Path| SYSTEM_DIRS.iter().any(|d| p.starts_with(d));
            let target = fs::canonicalize(source)?;
            if system(source) && system(&target) {
                open(&target)
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// The agent's boot configuration for `spec`: shares are tagged in the order
/// [`start_daemons`] starts them (root, files, then the directories).
fn boot_config(spec: &SandboxSpec) -> BootConfig {
    let mut c = BootConfig {
        root: RootSource::Share {
            read_only: spec.root_read_only,
        },
        upper: None,
        hostname: spec.hostname.clone(),
        callback: Some(DEFAULT_CALLBACK_PORT),
        dns_relay: spec.dns_upstream.is_some(),
        debug: spec.debug,
        net: spec.nics.iter().map(|n| n.config.clone()).collect(),
        ..BootConfig::default()
    };
    for (i, f) in spec.files.iter().enumerate() {
        c.files.push(FileMount {
            name: i.to_string(),
            target: f.target.clone(),
            read_only: f.read_only,
        });
    }
    for (i, d) in spec.dirs.iter().enumerate() {
        c.mounts.push(ContainerMount::Virtiofs(boot::VirtiofsMount {
            tag: boot::share_tag(i),
            target: d.target.clone(),
            read_only: d.read_only,
            seed: false,
            file: false,
        }));
    }
    c.mounts
        .extend(spec.tmpfs.iter().cloned().map(ContainerMount::Tmpfs));
    c
}

/// Starts the virtiofsd of the root, of the files (copied first) and of each directory.
fn start_daemons(spec: &SandboxSpec) -> Result<(Vec<virtiofsd::Daemon>, Vec<Share>), String> {
    let mut daemons = Vec::new();
    let mut shares = Vec::new();
    let mut share = |dir: &Path, read_only: bool, name: &str, tag: String| {
        let socket = spec.run_dir.join(format!("{name}.sock"));
        let log = spec.run_dir.join(format!("virtiofsd-{name}.log"));
        let d = virtiofsd::start(dir, &socket, read_only, &log)?;
        shares.push(Share {
            socket: d.socket.clone(),
            tag,
        });
        daemons.push(d);
        Ok::<(), String>(())
    };
    share(
        &spec.root,
        spec.root_read_only,
        "root",
        boot::ROOT_SHARE_TAG.into(),
    )?;
    if !spec.files.is_empty() {
        let files = spec.run_dir.join("files");
        let _ = fs::remove_dir_all(&files);
        fs::create_dir_all(&files)
            .map_err(|e| format!("cannot create {}: {e}", files.display()))?;
        for (i, f) in spec.files.iter().enumerate() {
            copy_file(&f.source, &files.join(i.to_string()))
                .map_err(|e| format!("cannot share {} at {}: {e}", f.source.display(), f.target))?;
        }
        share(&files, true, "files", boot::FILES_SHARE_TAG.into())?;
    }
    for (i, d) in spec.dirs.iter().enumerate() {
        if !d.source.is_dir() {
            return Err(format!(
                "cannot mount {} at {}: not a directory",
                d.source.display(),
                d.target
            ));
        }
        share(
            &d.source,
            d.read_only,
            &format!("fs{i}"),
            boot::share_tag(i),
        )?;
    }
    Ok((daemons, shares))
}

impl Sandbox {
    /// Boots the VM of `spec` and waits for its agent. Blocks the signals
    /// [`session::forwarded_signals`] forwards in the calling thread: call it before any other
    /// thread exists, so that [`Sandbox::run`] receives them.
    pub fn boot(spec: &SandboxSpec) -> Result<Sandbox, EngineError> {
        if !spec.root.is_dir() {
            return Err(EngineError::runtime(format!(
                "the container root {} is not a directory",
                spec.root.display()
            )));
        }
        // The agent's disk, the vsock device, the NICs, and the root, files and directory shares.
        let devices =
            2 + spec.nics.len() + 1 + usize::from(!spec.files.is_empty()) + spec.dirs.len();
        if devices > spec.kind.virtio_slots() {
            return Err(EngineError::runtime(format!(
                "the container needs {devices} virtio devices ({} network interfaces, {} shared directories), and a microVM on the {} backend has {}",
                spec.nics.len(),
                spec.dirs.len() + 1 + usize::from(!spec.files.is_empty()),
                spec.kind.name(),
                spec.kind.virtio_slots()
            )));
        }
        session::forwarded_signals()
            .thread_block()
            .map_err(|e| EngineError::runtime(format!("cannot block signals: {e}")))?;
        let kernel = paths::kernel().map_err(EngineError::runtime)?;
        let agent = paths::agent().map_err(EngineError::runtime)?;
        let agent_disk = agent_disk::ensure(&agent, &spec.cache).map_err(EngineError::runtime)?;
        let cmdline = crate::run::kernel_cmdline(&boot_config(spec), spec.debug)
            .map_err(EngineError::runtime)?;
        let _ = fs::remove_dir_all(&spec.run_dir);
        let vm_spec = VmSpec {
            kernel,
            cmdline,
            vcpus: spec.vcpus,
            mem_mib: spec.memory_mib,
            disks: vec![Disk {
                path: agent_disk,
                read_only: true,
                id: "mvm-agent".into(),
            }],
            run_dir: spec.run_dir.clone(),
            nics: spec.nics.iter().map(|n| n.nic.clone()).collect(),
            shares: Vec::new(),
            cgroup_parent: spec.cgroup_parent.clone(),
        };
        fs::create_dir_all(vm_spec.vm_dir()).map_err(EngineError::runtime)?;
        let callback = vm_spec
            .vsock_path()
            .with_file_name(format!("vsock.sock_{DEFAULT_CALLBACK_PORT}"));
        let listener = UnixListener::bind(&callback).map_err(|e| {
            EngineError::runtime(format!("cannot listen on {}: {e}", callback.display()))
        })?;
        if let Some(upstream) = spec.dns_upstream {
            // Bound before the VM starts: the backend hands its directory to the VM's uid.
            let path = vm_spec.vsock_path().with_file_name(format!(
                "vsock.sock_{}",
                mvm_agent_protocol::dns::DNS_RELAY_PORT
            ));
            let relay = UnixListener::bind(&path).map_err(|e| {
                EngineError::runtime(format!("cannot listen on {}: {e}", path.display()))
            })?;
            crate::network::dns_relay::serve(relay, upstream);
        }
        let (daemons, shares) = start_daemons(spec).map_err(EngineError::runtime)?;
        let vm_spec = VmSpec { shares, ..vm_spec };
        let mut vm = backend::start(spec.kind, &vm_spec).map_err(EngineError::runtime)?;
        for d in &daemons {
            vm.adopt(d.watched().pid);
        }
        let stream =
            session::accept_agent(&mut vm, &listener, AGENT_TIMEOUT, &vm_spec.console_path())
                .map_err(EngineError::runtime)?;
        // From here the death of any of the VM's processes ends the session at once.
        let watch = crate::run::watch_session(&vm, &daemons, &stream)?;
        Ok(Sandbox {
            vm,
            daemons,
            stream,
            watch,
            console: vm_spec.console_path(),
        })
    }

    /// The host processes of the VM (hypervisor first, then its helpers and the virtiofsd
    /// daemons), for pause and resume.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.vm.pids();
        pids.extend(self.daemons.iter().map(|d| d.watched().pid));
        pids
    }

    /// Runs the container's process to its end and powers the VM off; the process's exit
    /// code (128+N when a signal ended it). `control`, if given, serves `signal N` and
    /// `attach` requests (see [`session::request`]) while it runs; `started` is called once
    /// the agent reports the process running.
    pub fn run(
        mut self,
        process: ProcessSpec,
        stdio: Stdio,
        control: Option<UnixListener>,
        started: impl FnOnce(),
    ) -> Result<i32, EngineError> {
        let control = control.map(|l| {
            let hook: session::NetworksHook =
                Box::new(|| Err("this container's networks are its engine's".into()));
            (l, hook)
        });
        let stream = self.stream.try_clone().map_err(EngineError::runtime)?;
        let result = session::run_process(stream, process, stdio, None, control, started);
        let died = if result.is_err() {
            self.watch.wait_death(Duration::from_millis(500))
        } else {
            self.watch.death()
        };
        if result.is_ok() && died.is_none() {
            self.vm.finish(POWEROFF_TIMEOUT);
        } else {
            self.vm.kill();
        }
        drop(self.daemons);
        match result {
            Ok(code) => Ok(code),
            Err(_) if let Some(why) = died => Err(EngineError::with_code(
                137,
                format!("the microVM ended: {why}"),
            )),
            Err(SessionError::StartFailed { code, message }) => {
                Err(EngineError::with_code(code, message))
            }
            Err(SessionError::Protocol(_)) if backend::console_panic(&self.console).is_some() => {
                Err(EngineError::runtime(format!(
                    "the guest kernel panicked: {}",
                    backend::console_panic(&self.console).unwrap_or_default()
                )))
            }
            Err(e) => Err(EngineError::runtime(e)),
        }
    }

    /// Ends the VM without running anything (a container deleted before its start).
    pub fn kill(mut self) {
        self.vm.kill();
    }
}

/// Runs one more process in the VM whose hybrid-vsock socket is `vsock` (another process's
/// [`Sandbox`]), until it ends; its exit code. Blocks the forwarded signals in the calling
/// thread, as [`Sandbox::boot`].
pub fn exec(
    vsock: &Path,
    process: ProcessSpec,
    stdio: Stdio,
    started: impl FnOnce(),
) -> Result<i32, EngineError> {
    session::forwarded_signals()
        .thread_block()
        .map_err(|e| EngineError::runtime(format!("cannot block signals: {e}")))?;
    let stream = session::connect_guest(vsock, DEFAULT_VSOCK_PORT, Duration::from_secs(10))
        .map_err(|e| EngineError::runtime(format!("cannot reach the container's VM: {e}")))?;
    match session::run_process(stream, process, stdio, None, None, started) {
        Ok(code) => Ok(code),
        Err(SessionError::StartFailed { code, message }) => {
            Err(EngineError::with_code(code, message))
        }
        Err(e) => Err(EngineError::runtime(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the test's own, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let dir =
                std::env::temp_dir().join(format!("mvm-sandbox-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn spec(dir: &Path) -> SandboxSpec {
        SandboxSpec {
            kind: Kind::QemuTcg,
            run_dir: dir.join("run"),
            cache: dir.join("cache"),
            root: dir.to_path_buf(),
            root_read_only: false,
            files: Vec::new(),
            dirs: Vec::new(),
            tmpfs: Vec::new(),
            hostname: Some("c1".into()),
            vcpus: 1,
            memory_mib: 256,
            nics: Vec::new(),
            dns_upstream: None,
            cgroup_parent: None,
            debug: false,
        }
    }

    #[test]
    fn the_boot_configuration_names_the_shares_in_their_daemons_order() {
        let dir = TestDir::new("names");
        let mut s = spec(dir.path());
        s.files = vec![
            SharedFile {
                source: "/x/hosts".into(),
                target: "/etc/hosts".into(),
                read_only: false,
            },
            SharedFile {
                source: "/x/hostname".into(),
                target: "/etc/hostname".into(),
                read_only: true,
            },
        ];
        s.dirs = vec![SharedDir {
            source: "/data".into(),
            target: "/srv".into(),
            read_only: true,
        }];
        let c = boot_config(&s);
        assert_eq!(c.root, RootSource::Share { read_only: false });
        assert_eq!(c.upper, None);
        assert_eq!(
            c.files
                .iter()
                .map(|f| (f.name.as_str(), f.target.as_str()))
                .collect::<Vec<_>>(),
            [("0", "/etc/hosts"), ("1", "/etc/hostname")]
        );
        assert_eq!(
            c.mounts,
            [ContainerMount::Virtiofs(boot::VirtiofsMount {
                tag: boot::share_tag(0),
                target: "/srv".into(),
                read_only: true,
                seed: false,
                file: false
            })]
        );
        // What the kernel gets reads back the same.
        let line = crate::run::kernel_cmdline(&c, false).unwrap();
        assert_eq!(boot::parse_cmdline(&line).unwrap(), c);
    }

    #[test]
    fn shared_files_are_copied_not_followed_and_bounded() {
        let dir = TestDir::new("copy");
        let d = dir.path();
        fs::write(d.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        copy_file(&d.join("hosts"), &d.join("copy")).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("copy")).unwrap(),
            "127.0.0.1 localhost\n"
        );
        std::os::unix::fs::symlink("/etc/shadow", d.join("link")).unwrap();
        assert!(
            copy_file(&d.join("link"), &d.join("c2"))
                .unwrap_err()
                .contains("cannot open")
        );
        assert!(
            copy_file(d, &d.join("c3"))
                .unwrap_err()
                .contains("not a regular file")
        );
        let big = File::create(d.join("big")).unwrap();
        big.set_len(MAX_SHARED_FILE_BYTES + 1).unwrap();
        assert!(
            copy_file(&d.join("big"), &d.join("c4"))
                .unwrap_err()
                .contains("larger")
        );
        // A link of the host's system directories (Docker's /usr/bin/docker-init) is followed,
        // and an executable stays executable.
        let system_link = std::fs::read_dir("/usr/bin")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_symlink()
                    && std::fs::canonicalize(p).is_ok_and(|t| {
                        t.starts_with("/usr")
                            && t.metadata()
                                .is_ok_and(|m| m.is_file() && m.len() <= MAX_SHARED_FILE_BYTES)
                    })
            })
            .expect("no link to a small file in /usr/bin to try");
        copy_file(&system_link, &d.join("sys")).unwrap();
        assert_eq!(
            fs::read(d.join("sys")).unwrap(),
            fs::read(fs::canonicalize(&system_link).unwrap()).unwrap()
        );
        std::os::unix::fs::symlink(&system_link, d.join("to-system")).unwrap();
        assert!(copy_file(&d.join("to-system"), &d.join("c6")).is_err());
        fs::write(d.join("tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            d.join("tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4777),
        )
        .unwrap();
        copy_file(&d.join("tool"), &d.join("c7")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(d.join("c7")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o7777, 0o755);
        // A FIFO does not block the copy.
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            copy_file(&d.join("fifo"), &d.join("c5"))
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn a_root_that_is_not_a_directory_or_too_many_devices_are_refused_before_anything_starts() {
        let dir = TestDir::new("refused");
        let mut s = spec(dir.path());
        s.root = dir.path().join("missing");
        let e = Sandbox::boot(&s).err().unwrap();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let mut s = spec(dir.path());
        s.dirs = (0..6)
            .map(|i| SharedDir {
                source: dir.path().into(),
                target: format!("/d{i}"),
                read_only: false,
            })
            .collect();
        let e = Sandbox::boot(&s).err().unwrap();
        assert!(e.to_string().contains("needs 9 virtio devices"), "{e}");
        assert!(!s.run_dir.exists());
    }
}

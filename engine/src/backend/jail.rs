//! Starting a VM's processes (QEMU, vhost-device-vsock) confined, as Firecracker's jailer
//! starts Firecracker: each VM gets a uid/gid of its own from a range (so two VMs can never
//! signal or ptrace each other), and each process is cloned straight into new PID, mount,
//! IPC, UTS and network namespaces, pivots into a tmpfs root that holds only what it needs
//! (read-only binds of /usr, its kernel, its sockets' directory, private device nodes), joins
//! the VM's cgroups, gets rlimits, an empty bounding set, `no_new_privs`, a clean environment
//! and only the descriptors it is given, and is killed if its owner dies.
//!
//! The child is made with a raw `clone` (fork semantics plus the namespaces) so that the
//! confined process is the monitor's direct child: `PR_SET_PDEATHSIG`, `waitpid` and pidfds
//! work as for any child. Between `clone` and `execve` the child only makes system calls on
//! memory prepared before the clone (no allocation: the monitor has other threads).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// First uid (and gid) of the range VMs get theirs from: far above any real account's and
/// the usual subordinate ranges.
pub const UID_BASE: u32 = 2_000_000_000;
/// How many VMs can run at once on a host (each holds one slot).
const UID_SLOTS: u32 = 1 << 16;
/// Where the slots are held (flock), host-wide so that separate state roots never share one.
const SLOT_DIR: &str = "/run/mvm/uid-slots";

/// A uid/gid of the range, held (by an flock on its slot file) while the VM runs.
pub struct UidSlot {
    /// The VM's uid, which is also its gid.
    pub uid: u32,
    _lock: fs::File,
}

/// Takes a free slot, starting from one derived from `seed` (the container's ID).
pub fn take_uid(seed: &str) -> Result<UidSlot, String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(SLOT_DIR)
        .map_err(|e| format!("cannot create {SLOT_DIR}: {e}"))?;
    let start = seed
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % UID_SLOTS;
    for i in 0..UID_SLOTS {
        let slot = (start + i) % UID_SLOTS;
        let path = Path::new(SLOT_DIR).join(slot.to_string());
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; the lock lives as long as the file.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(UidSlot {
                uid: UID_BASE + slot,
                _lock: f,
            });
        }
    }
    Err("no free uid for a microVM: too many VMs on this host".into())
}

/// Gives `path` (not what a link there points to) to the VM's uid and gid.
pub fn chown(path: &Path, uid: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .map_err(|e| format!("cannot hand {} to the VM's uid: {e}", path.display()))
}

/// Gives the VM's socket directory to the VM's uid, with what the monitor put there (the
/// callback socket the agent dials, which the VM's vsock side connects to).
pub fn hand_vm_dir(vm_dir: &Path, uid: u32) -> Result<(), String> {
    chown(vm_dir, uid)?;
    std::fs::set_permissions(vm_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", vm_dir.display()))?;
    for e in std::fs::read_dir(vm_dir)
        .map_err(|e| format!("cannot read {}: {e}", vm_dir.display()))?
        .flatten()
    {
        chown(&e.path(), uid)?;
    }
    Ok(())
}

/// A bind mount into the jail.
#[derive(Clone, Debug)]
pub struct Bind {
    /// On the host.
    pub src: PathBuf,
    /// Inside the jail (absolute).
    pub dst: String,
    /// Writable (else read-only).
    pub writable: bool,
}

/// A character device node made in the jail's /dev, owned by the VM's uid.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    /// Its name under /dev.
    pub name: &'static str,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// /dev/null and /dev/urandom, which every jailed process may open.
pub const BASIC_DEVICES: [Device; 2] = [
    Device {
        name: "null",
        major: 1,
        minor: 3,
    },
    Device {
        name: "urandom",
        major: 1,
        minor: 9,
    },
];
/// /dev/kvm, for QEMU with KVM.
pub const KVM_DEVICE: Device = Device {
    name: "kvm",
    major: 10,
    minor: 232,
};

/// What to start and how to confine it.
pub struct JailSpec {
    /// Its name in errors and logs.
    pub name: &'static str,
    /// The program, on the host. Under /usr it runs from the jail's /usr; elsewhere it is
    /// bound at the jail's root under its file name.
    pub program: PathBuf,
    /// Its arguments (paths as the jail sees them).
    pub args: Vec<String>,
    /// An empty directory on the host whose tmpfs becomes the process's `/`; `None` keeps
    /// the host's filesystem (a program that jails itself once it has opened its files).
    pub root: Option<PathBuf>,
    /// Binds into the jail (besides /usr).
    pub binds: Vec<Bind>,
    /// Device nodes for the jail's /dev.
    pub devices: Vec<Device>,
    /// The uid and gid to run as; `None` keeps root and its capabilities (for a program that
    /// drops them itself, as our VMM does, after opening what it needs).
    pub uid: Option<u32>,
    /// Also a new network namespace (not for a program that opens TAPs by name).
    pub new_net: bool,
    /// rlimits to set (resource, soft = hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// Descriptors handed over at the same numbers (everything else is closed on exec).
    pub keep_fds: Vec<RawFd>,
    /// The process's stdout and stderr.
    pub stdout: OwnedFd,
    /// See `stdout`.
    pub stderr: OwnedFd,
    /// `cgroup.procs` files the process joins.
    pub cgroup_procs: Vec<PathBuf>,
}

fn cstr(p: impl AsRef<[u8]>) -> Result<CString, String> {
    CString::new(p.as_ref()).map_err(|_| "a path with a NUL byte".to_string())
}

/// Steps of the child's set-up, reported back with the errno when one fails.
const STEPS: [&str; 16] = [
    "make the mounts private",
    "mount the jail's tmpfs",
    "make a directory in the jail",
    "make a symlink in the jail",
    "bind a path into the jail",
    "make a bound path read-only",
    "make a device node",
    "join the VM's cgroup",
    "pivot_root into the jail",
    "make the jail's root read-only",
    "set an rlimit",
    "set up stdio",
    "drop capabilities",
    "change uid/gid",
    "set no_new_privs",
    "execute the program",
];

/// Everything the child needs, made before the clone.
struct Prepared {
    root: CString,
    dirs: Vec<CString>,
    symlinks: Vec<(CString, CString)>,
    /// (source, target, is a file, writable)
    binds: Vec<(CString, CString, bool, bool)>,
    devices: Vec<(CString, libc::dev_t)>,
    cgroups: Vec<CString>,
    dot: CString,
    slash: CString,
    tmpfs: CString,
    tmpfs_opts: CString,
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn prepare(spec: &JailSpec) -> Result<Prepared, String> {
    let mut argv = vec![cstr(spec.name)?];
    for a in &spec.args {
        argv.push(cstr(a)?);
    }
    // What every start needs; the jail's filesystem is filled in below when there is one.
    let mut p = Prepared {
        root: cstr("/")?,
        dirs: Vec::new(),
        symlinks: Vec::new(),
        binds: Vec::new(),
        devices: Vec::new(),
        cgroups: spec
            .cgroup_procs
            .iter()
            .map(|p| cstr(p.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()?,
        dot: cstr(".")?,
        slash: cstr("/")?,
        tmpfs: cstr("tmpfs")?,
        tmpfs_opts: cstr("mode=0755,size=1m,nr_inodes=256")?,
        program: cstr(spec.program.as_os_str().as_bytes())?,
        argv,
        envp: vec![cstr("PATH=/usr/bin")?],
    };
    let Some(root) = &spec.root else {
        return Ok(p);
    };
    let root = root.as_os_str().as_bytes().to_vec();
    let inside = |p: &str| -> Result<CString, String> {
        let mut v = root.clone();
        v.extend_from_slice(p.as_bytes());
        cstr(v)
    };
    let in_usr = spec.program.starts_with("/usr/");
    // Elsewhere than /usr, the program is bound at the jail's root under its own name (which
    // `ps` and /proc/PID/comm then show).
    let program_in_jail = if in_usr {
        spec.program.to_string_lossy().into_owned()
    } else {
        let name = spec
            .program
            .file_name()
            .ok_or_else(|| format!("{}: not a program", spec.program.display()))?;
        format!("/{}", name.to_string_lossy())
    };
    let mut binds: Vec<Bind> = Vec::new();
    if Path::new("/usr").is_dir() {
        binds.push(Bind {
            src: "/usr".into(),
            dst: "/usr".into(),
            writable: false,
        });
    }
    if Path::new("/etc/ld.so.cache").exists() {
        binds.push(Bind {
            src: "/etc/ld.so.cache".into(),
            dst: "/etc/ld.so.cache".into(),
            writable: false,
        });
    }
    if !in_usr {
        binds.push(Bind {
            src: spec.program.clone(),
            dst: program_in_jail.clone(),
            writable: false,
        });
    }
    binds.extend(spec.binds.iter().cloned());
    // Every directory a bind or device needs, parents first.
    let mut dirs: Vec<String> = vec!["/dev".into(), "/etc".into()];
    let mut devices_wanted = BASIC_DEVICES.to_vec();
    devices_wanted.extend(spec.devices.iter().copied());
    let mut b = Vec::new();
    for bind in &binds {
        let meta = fs::metadata(&bind.src).map_err(|e| format!("{}: {e}", bind.src.display()))?;
        let mut parent = Path::new(&bind.dst).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        if meta.is_dir() && !dirs.contains(&bind.dst) {
            dirs.push(bind.dst.clone());
        }
        b.push((
            cstr(bind.src.as_os_str().as_bytes())?,
            inside(&bind.dst)?,
            !meta.is_dir(),
            bind.writable,
        ));
    }
    // /bin, /lib, /lib64 and /sbin as the host has them: links into /usr on a merged-/usr
    // host (the same links in the jail), directories elsewhere (bound read-only), so that the
    // program's loader and libraries are found either way.
    let mut symlinks = Vec::new();
    for top in ["/bin", "/lib", "/lib64", "/sbin"] {
        match fs::symlink_metadata(top) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(top).map_err(|e| format!("{top}: {e}"))?;
                symlinks.push((cstr(target.as_os_str().as_bytes())?, inside(top)?));
            }
            Ok(m) if m.is_dir() => {
                dirs.push(top.to_string());
                b.push((cstr(top)?, inside(top)?, false, false));
            }
            _ => {}
        }
    }
    let devices = devices_wanted
        .iter()
        .map(|d| {
            Ok((
                inside(&format!("/dev/{}", d.name))?,
                libc::makedev(d.major, d.minor),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    p.root = cstr(&root)?;
    p.dirs = dirs.iter().map(|d| inside(d)).collect::<Result<_, _>>()?;
    p.symlinks = symlinks;
    p.binds = b;
    p.devices = devices;
    p.program = cstr(program_in_jail)?;
    Ok(p)
}

/// A process started by [`spawn`]: the monitor's child, reaped by [`Proc::wait`].
#[derive(Debug)]
pub struct Proc {
    pid: i32,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    /// Its PID.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    fn reap(&mut self, flags: libc::c_int) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if self.status.is_some() {
            return self.status;
        }
        let mut st = 0;
        // SAFETY: waitpid on our own child with a valid pointer to a local.
        let r = unsafe { libc::waitpid(self.pid, &mut st, flags) };
        if r == self.pid {
            self.status = Some(std::process::ExitStatus::from_raw(st));
        } else if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // Reaped elsewhere: it is gone all the same.
            self.status = Some(std::process::ExitStatus::from_raw(0));
        }
        self.status
    }

    /// Its status if it has ended (without blocking).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.reap(0) {
                return Some(s);
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return None;
            }
        }
    }

    /// SIGKILL unless it has been reaped.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped (so its PID is not reused).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// The errno of the last call, without allocating.
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Starts `spec.program` confined; returns once it has executed (or why it could not).
pub fn spawn(spec: JailSpec) -> Result<Proc, String> {
    let p = prepare(&spec)?;
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot start {}: {e}", spec.name))?;
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if spec.new_net {
        flags |= libc::CLONE_NEWNET;
    }
    let jailed = spec.root.is_some();
    let uid = spec.uid;
    let (out_fd, err_fd, report) = (
        spec.stdout.as_raw_fd(),
        spec.stderr.as_raw_fd(),
        err_w.as_raw_fd(),
    );
    // SAFETY: a clone with fork semantics (no CLONE_VM, no new stack): the child gets a copy
    // of our memory and runs only the set-up below, which makes system calls on memory
    // prepared above and never allocates, then executes or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(format!(
            "cannot start {} in new namespaces: {}",
            spec.name,
            io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: in the cloned child; see `child`.
        unsafe {
            child(
                &p,
                &spec,
                jailed,
                argv.as_ptr(),
                envp.as_ptr(),
                out_fd,
                err_fd,
                report,
                uid,
            )
        }
    }
    drop(err_w);
    let mut proc = Proc {
        pid: pid as i32,
        status: None,
    };
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut f = fs::File::from(err_r);
    while got < 8 {
        use std::io::Read;
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(proc);
    }
    proc.wait();
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let code = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Err(format!(
        "cannot start {} confined: {}: {}",
        spec.name,
        STEPS.get(step).copied().unwrap_or("set-up"),
        io::Error::from_raw_os_error(code)
    ))
}

/// The cloned child: sets up the jail and executes the program; never returns.
///
/// # Safety
/// Only in the child of [`spawn`]'s clone.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    p: &Prepared,
    spec: &JailSpec,
    jailed: bool,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    out_fd: RawFd,
    err_fd: RawFd,
    report: RawFd,
    uid: Option<u32>,
) -> ! {
    let fail = |step: usize| -> ! {
        let e = errno();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&e.to_ne_bytes());
        // SAFETY: write(2) of a local buffer to our report pipe, then _exit(2).
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: (whole body): plain system calls on NUL-terminated strings and arrays prepared
    // before the clone, in a process that is ours alone.
    unsafe {
        if libc::mount(
            null,
            p.slash.as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(0);
        }
        if jailed
            && libc::mount(
                p.tmpfs.as_ptr(),
                p.root.as_ptr(),
                p.tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                p.tmpfs_opts.as_ptr().cast(),
            ) != 0
        {
            fail(1);
        }
        for d in &p.dirs {
            if libc::mkdir(d.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                fail(2);
            }
        }
        for (target, link) in &p.symlinks {
            if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 {
                fail(3);
            }
        }
        for (src, dst, is_file, writable) in &p.binds {
            if *is_file {
                let fd = libc::open(
                    dst.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    fail(4);
                }
                libc::close(fd);
            }
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                fail(4);
            }
            let mut f = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
            if !*writable {
                f |= libc::MS_RDONLY;
            }
            if libc::mount(null, dst.as_ptr(), null, f, std::ptr::null()) != 0 {
                fail(5);
            }
        }
        let owner = uid.unwrap_or(0);
        for (path, dev) in &p.devices {
            if libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, *dev) != 0
                || libc::chown(path.as_ptr(), owner, owner) != 0
            {
                fail(6);
            }
        }
        for c in &p.cgroups {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                fail(7);
            }
            libc::close(fd);
        }
        if jailed
            && (libc::chdir(p.root.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()) != 0
                || libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(p.slash.as_ptr()) != 0)
        {
            fail(8);
        }
        if jailed
            && libc::mount(
                null,
                p.slash.as_ptr(),
                null,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID,
                std::ptr::null(),
            ) != 0
        {
            fail(9);
        }
        for (res, v) in &spec.rlimits {
            let lim = libc::rlimit {
                rlim_cur: *v,
                rlim_max: *v,
            };
            if libc::setrlimit(*res, &lim) != 0 {
                fail(10);
            }
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if devnull < 0
            || libc::dup2(devnull, 0) < 0
            || libc::dup2(out_fd, 1) < 0
            || libc::dup2(err_fd, 2) < 0
        {
            fail(11);
        }
        // Everything but stdio, the report pipe and the handed-over descriptors closes on
        // exec (the report pipe and std's own descriptors already do).
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            fail(11);
        }
        for fd in &spec.keep_fds {
            if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                fail(11);
            }
        }
        if let Some(id) = uid {
            // No capability can come back: the bounding set is emptied while we still may.
            for cap in 0..=63 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno() != libc::EINVAL
                {
                    fail(12);
                }
            }
            // Raw system calls: glibc's wrappers would try to change the credentials of the
            // parent's other threads too, which this child does not have.
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
            {
                fail(13);
            }
        }
        // Set after the uid change, which clears it; the owner's death kills the VM.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        {
            fail(14);
        }
        // Its own process group: a Ctrl-C at `mvm run`'s terminal is the container's (mvm
        // forwards it), never the hypervisor's.
        libc::setpgid(0, 0);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(p.program.as_ptr(), argv, envp);
        fail(15)
    }
}

/// The VM's cgroups (v1 memory and pids, or v2), made where the host's cgroups allow it:
/// memory bounded by the guest's size plus the hypervisor's overhead, and a cap on tasks.
/// Removed on drop (once the processes in them have ended), unless they are a caller's
/// (an OCI bundle's `cgroupsPath`), which the caller removes.
pub struct Cgroups {
    dirs: Vec<PathBuf>,
    owned: bool,
}

/// Tasks of the caller that shares a VM's cgroup (`cgroup_parent`): the OCI runtime's relay
/// and its threads (session, signals, the DNS relay's bounded workers).
const CALLER_TASKS: u64 = 128;

/// A cgroup path relative to a hierarchy's root, as an OCI bundle's `cgroupsPath` gives it
/// (`/docker/ID`): normalized, with no `..`, `.` or empty component; `None` for one that would
/// leave the hierarchy.
pub fn relative_cgroup(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let ok = !parts.is_empty()
        && parts.iter().all(|c| {
            *c != "." && *c != ".." && c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        });
    ok.then(|| parts.iter().collect())
}

/// Removes the cgroups of VMs whose owner died without cleaning up (a monitor killed with -9):
/// each is named `<container>-<uid>`, and a uid whose slot nobody holds has no VM running.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(uid) = name
            .rsplit_once('-')
            .and_then(|(_, u)| u.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(slot) = uid.checked_sub(UID_BASE).filter(|s| *s < UID_SLOTS) else {
            continue;
        };
        let Ok(f) = fs::File::open(Path::new(SLOT_DIR).join(slot.to_string())) else {
            continue;
        };
        // SAFETY: flock(2) on a descriptor we own; the lock goes with it below.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = fs::remove_dir(e.path());
        }
    }
}

impl Cgroups {
    /// Makes the cgroups of a VM named `name` with `mem_bytes` of memory and at most `tasks`
    /// tasks; hosts without writable cgroups get none (and a debug line).
    ///
    /// With `parent` (a path relative to each hierarchy's root, see [`relative_cgroup`]) the
    /// VM's processes go into that cgroup itself, which its caller is in too, and the limits
    /// are set there with room for the caller's tasks.
    pub fn make(name: &str, mem_bytes: u64, tasks: u64, parent: Option<&Path>) -> Self {
        let mut dirs = Vec::new();
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let (at, tasks) = match parent {
            Some(p) => (p.to_path_buf(), tasks + CALLER_TASKS),
            None => (Path::new("mvm").join(name), tasks),
        };
        let wanted: Vec<(PathBuf, Vec<(&str, String)>)> = if v2 {
            vec![(
                PathBuf::from("/sys/fs/cgroup").join(&at),
                vec![
                    ("memory.max", mem_bytes.to_string()),
                    ("pids.max", tasks.to_string()),
                ],
            )]
        } else {
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/memory").join(&at),
                    vec![("memory.limit_in_bytes", mem_bytes.to_string())],
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/pids").join(&at),
                    vec![("pids.max", tasks.to_string())],
                ),
            ]
        };
        for (dir, settings) in wanted {
            if parent.is_none()
                && let Some(up) = dir.parent()
            {
                sweep_stale(up);
            }
            let made = fs::create_dir_all(&dir).and_then(|()| {
                for (file, value) in &settings {
                    fs::write(dir.join(file), value)?;
                }
                Ok(())
            });
            match made {
                Ok(()) => dirs.push(dir),
                Err(e) => {
                    tracing::debug!("no cgroup {}: {e}", dir.display());
                    let _ = fs::remove_dir(&dir);
                }
            }
        }
        Self {
            dirs,
            owned: parent.is_none(),
        }
    }

    /// Moves a process started elsewhere (a virtiofsd of the VM) and its children into the
    /// VM's cgroups.
    pub fn adopt(&self, pid: u32) {
        let mut pids = vec![pid];
        let mut i = 0;
        while i < pids.len() && pids.len() < 64 {
            let p = pids[i];
            if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
                for t in tasks.flatten() {
                    let children =
                        fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    pids.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
            i += 1;
        }
        for f in self.procs_files() {
            for p in &pids {
                if let Err(e) = fs::write(&f, p.to_string()) {
                    tracing::debug!("cannot move {p} into {}: {e}", f.display());
                }
            }
        }
    }

    /// The `cgroup.procs` files a process of the VM joins.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for d in &self.dirs {
            // Empty once the VM's processes are reaped; a moment's retry covers their exit.
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Opens the persistent TAP `name` for a jailed QEMU (`-netdev tap,fd=N`): attaching needs
/// CAP_NET_ADMIN, which the jailed process does not have.
pub fn open_tap(name: &str) -> Result<OwnedFd, String> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("TAP name {name:?} is too long"));
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a struct ifreq, which `req` lays out (name, flags, padding to
    // its 40 bytes), from memory that lives across the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
        return Err(format!(
            "cannot attach to TAP {name}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is ours; the File gives it up.
    Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(f)) })
}

#[cfg(test)]
mod tests {

    #[test]
    fn bundle_cgroup_paths_stay_inside_the_hierarchy() {
        assert_eq!(
            relative_cgroup("/docker/abc").unwrap(),
            Path::new("docker/abc")
        );
        assert_eq!(
            relative_cgroup("machine.slice//libpod-1.scope/").unwrap(),
            Path::new("machine.slice/libpod-1.scope")
        );
        for bad in ["", "/", "/docker/../../etc", "..", "a/./b", "a b", "x\\y"] {
            assert_eq!(relative_cgroup(bad), None, "{bad}");
        }
    }

    use super::*;

    fn null() -> OwnedFd {
        OwnedFd::from(fs::File::open("/dev/null").unwrap())
    }

    fn jailed(
        name: &'static str,
        program: &str,
        args: &[&str],
        uid: u32,
        root: &Path,
    ) -> Result<Proc, String> {
        fs::create_dir_all(root).unwrap();
        spawn(JailSpec {
            name,
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            root: Some(root.to_path_buf()),
            binds: Vec::new(),
            devices: Vec::new(),
            uid: Some(uid),
            new_net: true,
            rlimits: vec![(libc::RLIMIT_NOFILE, 64)],
            keep_fds: Vec::new(),
            stdout: null(),
            stderr: null(),
            cgroup_procs: Vec::new(),
        })
    }

    #[test]
    fn a_jailed_process_cannot_signal_another_vms_process() {
        let dir = std::env::temp_dir().join(format!("mvm-jail-unit-{}", std::process::id()));
        let a = take_uid("unit-a").unwrap();
        let b = take_uid("unit-b").unwrap();
        assert_ne!(a.uid, b.uid);
        let mut victim = jailed("sleep", "/usr/bin/sleep", &["30"], a.uid, &dir.join("a")).unwrap();
        // From inside another VM's confinement, by its host PID (not even visible there: its
        // own PID namespace) and by PID 1 of its own namespace (itself only).
        let pid = victim.id().to_string();
        let mut killer = jailed(
            "kill",
            "/usr/bin/kill",
            &["-9", &pid],
            b.uid,
            &dir.join("b"),
        )
        .unwrap();
        let st = killer.wait().unwrap();
        assert!(!st.success(), "kill of another VM's process succeeded");
        assert!(victim.try_wait().is_none(), "the other VM's process died");
        // Even as the same uid, another jail's PID namespace hides it.
        let mut same = jailed(
            "kill",
            "/usr/bin/kill",
            &["-9", &pid],
            a.uid,
            &dir.join("c"),
        )
        .unwrap();
        assert!(!same.wait().unwrap().success());
        assert!(victim.try_wait().is_none());
        victim.kill();
        victim.wait();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_set_up_says_which_step() {
        let dir = std::env::temp_dir().join(format!("mvm-jail-unit2-{}", std::process::id()));
        let e = jailed(
            "nothing",
            "/usr/bin/no-such-program-here",
            &[],
            UID_BASE + UID_SLOTS - 1,
            &dir,
        )
        .unwrap_err();
        assert!(
            e.contains("execute the program") && e.contains("No such file"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}

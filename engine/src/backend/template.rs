//! Warm starts on our VMM: a template VM per shape, booted once to "agent ready", snapshotted,
//! and restored for every VM of that shape instead of a kernel boot.
//!
//! A shape is what the guest's kernel saw at boot: the kernel and its command line (without
//! the agent's `mvm.*` words), the agent disk, the VMM build, vCPUs, memory and the disks'
//! number and modes. The template boots with empty files in the container's disk slots and
//! `mvm.template=1`; its agent waits on [`TEMPLATE_PORT`]. A VM restored from it is told its
//! container by a warm boot (agent-protocol's `warm`): the container's command line, fresh
//! entropy and the time; its disks are the container's (the restored VMM announces their
//! sizes), and from then on it is what a cold-booted VM would be.
//!
//! Network interfaces are slots too: the template boots with TAP devices of its own (deleted
//! once it is snapshotted) and MACs of its own; a warm boot names the container's MACs and the
//! agent sets them before it configures the interfaces.
//!
//! Templates live in the cache (`<cache>/templates/<key>`), keyed by all of the above, so
//! a new kernel, agent or VMM makes a new one by itself. VMs with shared directories boot cold
//! (a virtio-fs device's state lives in its vhost-user daemon). `MVM_WARM_START=off` turns
//! warm starts off.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mvm_agent_protocol::warm::{TEMPLATE_PORT, WarmAnswer, WarmBoot, WarmReady};
use mvm_agent_protocol::{Frame, FrameReader, FrameWriter, boot};
use mvm_vmm_config::api::{ApiClient, ApiRequest};
use mvm_vmm_config::{RestoreSource, SerialOutput};
use sha2::{Digest, Sha256};

use super::VmSpec;
use crate::session::connect_guest;

/// How long a template's kernel and agent may take to be ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restored VM's agent may take to answer.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(20);
/// Random bytes each warm boot carries.
const ENTROPY_BYTES: usize = 64;
/// Templates kept in the cache; the least recently used beyond this are removed when a new
/// one is made (a new kernel, agent or VMM build makes new ones).
const MAX_TEMPLATES: usize = 8;

/// A template's two snapshot files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Its directory.
    pub dir: PathBuf,
    /// The snapshot's state file.
    pub state: PathBuf,
    /// The snapshot's memory file.
    pub memory: PathBuf,
}

/// Whether warm starts are on: `MVM_WARM_START` unset or `on`/`1`/`yes`/`true`; off with
/// `off`/`0`/`no`/`false`; any other value is an error.
pub fn enabled() -> Result<bool, String> {
    match std::env::var("MVM_WARM_START") {
        Err(_) => Ok(true),
        Ok(v) => match v.trim() {
            "" | "on" | "1" | "yes" | "true" => Ok(true),
            "off" | "0" | "no" | "false" => Ok(false),
            other => Err(format!("MVM_WARM_START={other:?}: expected on or off")),
        },
    }
}

/// What `mvm info` says of warm starts on `kind`.
pub fn describe(kind: super::Kind) -> String {
    match kind {
        super::Kind::Mvm => match enabled() {
            Ok(true) => format!(
                "on (templates in {})",
                crate::paths::cache_dir().join("templates").display()
            ),
            Ok(false) => "off (MVM_WARM_START)".into(),
            Err(e) => e,
        },
        _ => "not on this backend (QEMU cannot save a VM whose vsock is vhost-user)".into(),
    }
}

/// Why `spec` cannot be warm-started, if it cannot.
pub fn unsuitable(spec: &VmSpec) -> Option<&'static str> {
    if !spec.shares.is_empty() {
        return Some("it has shared directories");
    }
    if spec.disks.is_empty() {
        return Some("it has no agent disk");
    }
    None
}

/// A file's identity for a key: path, size and modification time.
fn file_id(path: &Path) -> Result<String, String> {
    let m = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "{}:{}:{}.{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// The kernel command line of `spec` as the template boots it: the kernel's words only.
fn template_cmdline(spec: &VmSpec) -> String {
    format!("{} mvm.template=1", boot::kernel_words(&spec.cmdline))
}

/// The key of `spec`'s shape (hex).
pub fn key(spec: &VmSpec, vmm: &Path) -> Result<String, String> {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    put("mvm-template-1");
    put(&file_id(vmm)?);
    put(&file_id(&spec.kernel)?);
    put(&template_cmdline(spec));
    put(&format!("{} {}", spec.vcpus, spec.mem_mib));
    // The agent disk is named by its content's hash; the other disks are slots.
    put(&file_id(&spec.disks[0].path)?);
    for d in &spec.disks {
        put(&format!("{}:{}", d.read_only, d.id));
    }
    put(&format!("nics {}", spec.nics.len()));
    let sum = h.finalize();
    Ok(sum[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The template for `spec`'s shape, made now if there is none.
pub fn ensure(spec: &VmSpec, vmm: &Path, cache: &Path) -> Result<Template, String> {
    let key = key(spec, vmm)?;
    let root = cache.join("templates");
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let dir = root.join(&key);
    let template = Template {
        state: dir.join("state"),
        memory: dir.join("memory"),
        dir: dir.clone(),
    };
    if template.state.is_file() {
        touch(&dir);
        return Ok(template);
    }
    // One maker per shape: the others wait for it and take its template.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(root.join(format!("{key}.lock")))
        .map_err(|e| format!("template lock: {e}"))?;
    // SAFETY: flock on a descriptor we own; released when it is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(format!(
            "template lock: {}",
            std::io::Error::last_os_error()
        ));
    }
    if template.state.is_file() {
        return Ok(template);
    }
    let work = root.join(format!("{key}.new"));
    let _ = fs::remove_dir_all(&work);
    let made = make(spec, vmm, &work, &key);
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&work);
        return Err(e);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&work, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The rename on disk too: a template named by its key is whole.
    if let Ok(d) = File::open(&root) {
        let _ = d.sync_all();
    }
    prune(&root, MAX_TEMPLATES);
    Ok(template)
}

/// Marks a template as just used (its directory's modification time).
fn touch(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.set_modified(SystemTime::now());
    }
}

/// Removes all but the `keep` most recently used templates under `root` (with their lock
/// files). A VM restored from a removed one keeps running: its memory file stays mapped.
fn prune(root: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut templates: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.path().join("state").is_file())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    templates.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (_, dir) in templates.into_iter().skip(keep) {
        let _ = fs::remove_dir_all(&dir);
        if let Some(name) = dir.file_name() {
            let _ = fs::remove_file(root.join(format!("{}.lock", name.to_string_lossy())));
        }
    }
}

/// Forgets a template that failed to restore (it is made again next time).
pub fn discard(t: &Template) {
    let _ = fs::remove_dir_all(&t.dir);
}

/// Kills the template VM when making it fails halfway.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The template's own TAP devices, deleted when it has been snapshotted (or failed).
struct Taps(Vec<String>);

impl Drop for Taps {
    fn drop(&mut self) {
        for t in &self.0 {
            crate::network::host::delete_tap(t);
        }
    }
}

/// Boots the template VM in `work`, waits for its agent and snapshots it there.
fn make(spec: &VmSpec, vmm: &Path, work: &Path, key: &str) -> Result<(), String> {
    let mut template = VmSpec {
        kernel: spec.kernel.clone(),
        cmdline: template_cmdline(spec),
        vcpus: spec.vcpus,
        mem_mib: spec.mem_mib,
        disks: Vec::with_capacity(spec.disks.len()),
        run_dir: work.to_path_buf(),
        nics: Vec::with_capacity(spec.nics.len()),
        shares: Vec::new(),
        cgroup_parent: None,
    };
    let vm_dir = template.vm_dir();
    fs::create_dir_all(&vm_dir).map_err(|e| format!("{}: {e}", vm_dir.display()))?;
    let vsock = template.vsock_path();
    if vsock.as_os_str().len() + 11 > 107 {
        return Err(format!(
            "the cache path {} is too long for the template's sockets",
            work.display()
        ));
    }
    for (i, d) in spec.disks.iter().enumerate() {
        // The agent's own disk; an empty file in each of the container's slots: the guest's
        // kernel reads nothing from it at boot, so nothing of it is in the template's page
        // cache when the container's disk takes its place.
        let path = if i == 0 {
            d.path.clone()
        } else {
            let slot = work.join(format!("slot{i}.img"));
            File::create(&slot).map_err(|e| format!("{}: {e}", slot.display()))?;
            slot
        };
        template.disks.push(super::Disk { path, ..d.clone() });
    }
    let mut taps = Taps(Vec::new());
    for i in 0..spec.nics.len() {
        // At most 15 bytes, and apart from the containers' `mvt...` names.
        let tap = format!("tmv{}n{i}", &key[..8]);
        crate::network::host::create_spare_tap(&tap).map_err(|e| e.to_string())?;
        taps.0.push(tap.clone());
        template.nics.push(super::Nic {
            tap,
            mac: boot::MacAddr([2, 0, 0, 0, 0, i as u8]),
        });
    }
    // The containers' VMM config, so that the template has their devices exactly; but run by
    // root without a uid of its own, its console in its directory, no exit record.
    let mut config = super::mvm::vmm_config(&template, &vm_dir, 0);
    config.serial = SerialOutput::File(work.join("console.log"));
    config.exit_record = None;
    config.jail_uid = None;
    config.jail_gid = None;
    let api = config
        .api_socket
        .clone()
        .ok_or("the VMM config has no control socket")?;
    let config_path = work.join("vmm.json");
    let text = serde_json::to_string(&config).map_err(|e| e.to_string())?;
    fs::write(&config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let log = File::create(work.join("vmm.log")).map_err(|e| format!("template log: {e}"))?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours. The template VM dies
    // with the engine thread that makes it: a killed engine leaves no VM behind.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    let mut vm = Reaped(child);
    let deadline = Instant::now() + BOOT_TIMEOUT;
    // The agent is ready when it answers on the template port; this connection is left open
    // (the agent waits on it) and is reset in every restored VM.
    let _conn = loop {
        if let Some(status) = vm.0.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the template VM ended ({status}) before its agent was ready: {}",
                super::log_tail(&work.join("vmm.log"))
            ));
        }
        match ready(&vsock, Duration::from_secs(2)) {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("the template VM's agent never became ready: {e}")),
        }
    };
    let mut ctl = ApiClient::connect(&api, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    ctl.ask(&ApiRequest::Pause, &[])
        .map_err(|e| e.to_string())?;
    let state = create(&work.join("state.new"))?;
    let memory = create(&work.join("memory"))?;
    ctl.ask(&ApiRequest::Snapshot, &[&state, &memory])
        .map_err(|e| e.to_string())?;
    drop(vm);
    drop(taps);
    // The state file appears last: a template with one is whole.
    fs::rename(work.join("state.new"), work.join("state")).map_err(|e| e.to_string())?;
    for f in ["memory", "state"] {
        let _ = fs::set_permissions(
            work.join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o400),
        );
    }
    Ok(())
}

fn create(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Connects to the template port and reads the agent's [`WarmReady`].
fn ready(vsock: &Path, timeout: Duration) -> Result<UnixStream, String> {
    let mut conn = connect_guest(vsock, TEMPLATE_PORT, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    match FrameReader::new(&mut conn).read_frame::<WarmReady>() {
        Ok(Some(Frame::Control(r))) => {
            mvm_agent_protocol::check_version(r.version).map_err(|e| e.to_string())?;
            Ok(conn)
        }
        Ok(_) => Err("the agent did not say it was ready".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a warm boot failed, and whether the template is to blame.
#[derive(Debug)]
pub struct WarmFailure {
    /// What happened, in one line.
    pub message: String,
    /// The restored VM never answered (its VMM ended, or its agent stayed silent): the
    /// template is suspect (another VMM build, a damaged file) and is made again. A warm boot
    /// the agent refused is the container's doing, not the template's.
    pub template_suspect: bool,
}

/// Tells the agent of a VM restored from a template which container it is (`cmdline`,
/// `macs`), with fresh entropy and the time; returns once it is booting the container.
/// `vmm_alive` says whether the restored VMM still runs (a dead one is not waited for).
pub fn warm_boot(
    vsock: &Path,
    cmdline: &str,
    macs: &[boot::MacAddr],
    vmm_alive: &mut dyn FnMut() -> bool,
) -> Result<(), WarmFailure> {
    let suspect = |message: String| WarmFailure {
        message,
        template_suspect: true,
    };
    let refused = |message: String| WarmFailure {
        message,
        template_suspect: false,
    };
    let mut entropy = vec![0u8; ENTROPY_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut entropy))
        .map_err(|e| refused(format!("cannot read /dev/urandom: {e}")))?;
    let unix_time_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut msg = Vec::new();
    FrameWriter::new(&mut msg)
        .write_control(&WarmBoot {
            cmdline: cmdline.to_string(),
            entropy,
            unix_time_ns,
            macs: macs.to_vec(),
        })
        .map_err(|e| refused(e.to_string()))?;
    // A connection made in the restored VM's first moments can be reset by the guest's own
    // handling of the transport reset (it drops every socket connected when it runs): the
    // agent then waits for the next one, so a broken exchange is tried again until it answers.
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    loop {
        if !vmm_alive() {
            return Err(suspect(
                "the restored VMM ended before its agent answered".into(),
            ));
        }
        match exchange(vsock, &msg) {
            Ok(WarmAnswer::Booting) => return Ok(()),
            Ok(WarmAnswer::Refused { message }) => {
                return Err(refused(format!(
                    "the agent refused the warm boot: {message}"
                )));
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(suspect(format!(
                    "the restored VM's agent did not answer the warm boot: {e}"
                )));
            }
        }
    }
}

/// One try: connect to the template port, read [`WarmReady`], send the warm boot `msg`, read
/// the answer.
fn exchange(vsock: &Path, msg: &[u8]) -> Result<WarmAnswer, String> {
    let mut conn = ready(vsock, Duration::from_secs(2))?;
    conn.write_all(msg).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(RESTORE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    match FrameReader::new(&mut conn).read_frame::<WarmAnswer>() {
        Ok(Some(Frame::Control(answer))) => Ok(answer),
        Ok(_) => Err("the agent did not answer the warm boot".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The restore source of `t`.
pub fn restore_source(t: &Template) -> RestoreSource {
    RestoreSource {
        state: t.state.clone(),
        memory: t.memory.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Disk, Nic};

    fn spec(dir: &Path) -> VmSpec {
        let kernel = dir.join("vmlinux");
        let agent = dir.join("agent.erofs");
        for f in [&kernel, &agent] {
            if !f.exists() {
                fs::write(f, b"x").unwrap();
            }
        }
        VmSpec {
            kernel,
            cmdline: "console=ttyS0 quiet mvm.lower=/dev/vdb mvm.callback=1025".into(),
            vcpus: 1,
            mem_mib: 128,
            disks: vec![
                Disk {
                    path: agent,
                    read_only: true,
                    id: "mvm-agent".into(),
                },
                Disk {
                    path: "/containers/a/image.erofs".into(),
                    read_only: true,
                    id: "mvm-image".into(),
                },
            ],
            run_dir: "/run/mvm/abc".into(),
            nics: Vec::new(),
            shares: Vec::new(),
            cgroup_parent: None,
        }
    }

    #[test]
    fn the_key_is_the_shape_not_the_container() {
        let dir = std::env::temp_dir().join(format!("mvm-tplkey-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let vmm = dir.join("mvm-vmm");
        fs::write(&vmm, b"v").unwrap();
        let a = spec(&dir);
        let k = key(&a, &vmm).unwrap();
        // Another container of the same shape: its own disks and agent words.
        let mut b = spec(&dir);
        b.disks[1].path = "/containers/b/image.erofs".into();
        b.cmdline = "console=ttyS0 quiet mvm.lower=/dev/vdb mvm.hostname=b".into();
        b.run_dir = "/run/mvm/def".into();
        assert_eq!(key(&b, &vmm).unwrap(), k);
        assert_eq!(template_cmdline(&b), "console=ttyS0 quiet mvm.template=1");
        // Another shape.
        for change in [
            |s: &mut VmSpec| s.mem_mib = 256,
            |s: &mut VmSpec| s.vcpus = 2,
            |s: &mut VmSpec| s.cmdline = "console=ttyS0 loglevel=7".into(),
            |s: &mut VmSpec| s.disks[1].read_only = false,
            |s: &mut VmSpec| s.disks.truncate(1),
            |s: &mut VmSpec| {
                s.nics.push(Nic {
                    tap: "t".into(),
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                })
            },
        ] {
            let mut c = spec(&dir);
            change(&mut c);
            assert_ne!(key(&c, &vmm).unwrap(), k);
        }
        // A new VMM binary.
        std::thread::sleep(Duration::from_millis(10));
        fs::write(&vmm, b"v2").unwrap();
        assert_ne!(key(&a, &vmm).unwrap(), k);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_most_recently_used_templates_are_kept() {
        let root = std::env::temp_dir().join(format!("mvm-tplprune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let d = root.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("state"), b"s").unwrap();
            fs::write(root.join(format!("{name}.lock")), b"").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
            File::open(&d).unwrap().set_modified(t).unwrap();
        }
        // Half made (no state file): not a template, left to its maker.
        fs::create_dir_all(root.join("d.new")).unwrap();
        touch(&root.join("a"));
        prune(&root, 2);
        assert!(root.join("a/state").is_file(), "just used");
        assert!(root.join("c/state").is_file(), "newest");
        assert!(!root.join("b").exists() && !root.join("b.lock").exists());
        assert!(root.join("d.new").is_dir());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn vms_with_shares_boot_cold() {
        let dir = std::env::temp_dir().join(format!("mvm-tplfit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut s = spec(&dir);
        s.nics.push(Nic {
            tap: "t".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
        });
        assert_eq!(unsuitable(&s), None);
        s.shares.push(crate::backend::Share {
            socket: "/s".into(),
            tag: "t".into(),
        });
        assert_eq!(unsuitable(&s), Some("it has shared directories"));
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! `mvm run`: an image's process in its own microVM, attached to the user's terminal.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvm_agent_protocol::boot::{self, BootConfig};
use mvm_agent_protocol::{DEFAULT_CALLBACK_PORT, ProcessSpec};
use mvm_rootfs::{ImageRecord, Store};

use crate::backend::{self, Disk, Selection, VmSpec};
use crate::container::{self, ContainerDirs, ContainerRecord, ContainerSpec, NetworkMode};
use crate::error::EngineError;
use crate::report::Reporter;
use crate::session::{self, Stdio};
use crate::{agent_disk, network, paths, volume};

/// Writable disk size (sparse: only what is written takes space).
pub const UPPER_DISK_BYTES: u64 = 8 << 30;
/// How long the agent may take to answer after the VM starts (TCG is slow; CI is busy).
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the VM may take to power off after the process exits.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before a restart policy brings a container back; it doubles each time.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Merges environment lists, later keys replacing earlier ones.
fn merge_env(layers: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for layer in layers {
        for kv in layer {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            out.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            out.push(kv.clone());
        }
    }
    out
}

/// The process's argv from the image's Entrypoint/Cmd and the user's overrides.
pub fn process_args(
    image: &ImageRecord,
    entrypoint: Option<&[String]>,
    command: &[String],
) -> Vec<String> {
    let cfg = &image.config.config;
    let entry: Vec<String> = match entrypoint {
        Some(e) => e.to_vec(),
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    // As Docker: a new entrypoint drops the image's Cmd.
    let cmd: Vec<String> = if !command.is_empty() {
        command.to_vec()
    } else if entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    entry.into_iter().chain(cmd).collect()
}

/// The boot configuration every VM of a container starts from (its own or a helper that
/// reads its disk): the image disk and the writable disk where [`container_disks`] attaches
/// them, and the callback port the agent dials once ready.
pub fn boot_config(debug: bool) -> BootConfig {
    BootConfig {
        lower: boot::DISK_IMAGE.to_string(),
        lower_fs: boot::LowerFs::Erofs,
        upper: Some(boot::DISK_UPPER.to_string()),
        callback: Some(DEFAULT_CALLBACK_PORT),
        debug,
        ..BootConfig::default()
    }
}

/// The guest kernel's command line: the kernel's own words, then `boot` encoded by
/// agent-protocol. `verbose` is the kernel's log level (the helper VM keeps a quiet kernel
/// even when its agent logs).
pub fn kernel_cmdline(boot: &BootConfig, verbose: bool) -> Result<String, boot::EncodeError> {
    let quiet = if verbose {
        "loglevel=7"
    } else {
        "quiet loglevel=1"
    };
    // no_timer_check: the kernel's IO-APIC timer check counts ticks against a busy loop and
    // panics ("IO-APIC + timer doesn't work!") when a starved host runs the guest late; the
    // timer is QEMU's or ours and known to work, so a loaded host must not fail the boot.
    Ok(format!(
        "console=ttyS0 panic=-1 {quiet} no_timer_check 8250.nr_uarts=1 root={} ro \
         rootfstype=erofs init=/mvm-agent {}",
        boot::DISK_AGENT,
        boot.encode()?
    ))
}

/// The disks of a container's VM, in agent-protocol's [`boot::DISK_ORDER`]: the agent's, the
/// image's (both read-only) and the container's writable disk `upper`.
pub fn container_disks(rec: &ContainerRecord, upper: PathBuf, upper_read_only: bool) -> Vec<Disk> {
    vec![
        Disk {
            path: rec.vm.agent_disk.clone(),
            read_only: true,
            id: "mvm-agent".into(),
        },
        Disk {
            path: rec.vm.image_disk.clone(),
            read_only: true,
            id: "mvm-image".into(),
        },
        Disk {
            path: upper,
            read_only: upper_read_only,
            id: "mvm-upper".into(),
        },
    ]
}

/// The boot configuration of a container's own VM.
fn container_boot_config(
    hostname: &str,
    debug: bool,
    endpoints: &[network::Endpoint],
    mounts: &[volume::mounts::MountSpec],
    spec: &container::spec::ContainerSpec,
) -> Result<BootConfig, EngineError> {
    let bad = |what: &str, value: &str, why: &str| {
        EngineError::runtime(format!("the container's {what} {value:?}: {why}"))
    };
    let mut c = boot_config(debug);
    c.hostname = Some(hostname.to_string());
    // Interfaces by MAC, address, gateway (the first one's is the default route) and MTU;
    // the gateway also serves DNS.
    for (i, e) in endpoints.iter().enumerate() {
        c.net.push(boot::NetConfig {
            mac: e.mac,
            addr: e.ip,
            prefix: e.prefix,
            gateway: (i == 0).then_some(e.gateway),
            mtu: Some(network::MTU),
        });
    }
    if let Some(first) = endpoints.first() {
        c.dns = vec![first.gateway.into()];
    }
    // --dns, --dns-search, --dns-option, --shm-size and --add-host, checked when the spec
    // was made.
    if !spec.dns.is_empty() {
        c.dns = spec.dns.clone();
    }
    c.dns_search = spec.dns_search.clone();
    c.dns_options = spec.dns_options.clone();
    c.shm_size = spec.shm_size;
    for h in &spec.extra_hosts {
        c.extra_hosts
            .extend(boot::parse_hosts(h).map_err(|why| bad("--add-host", h, why))?);
    }
    // Shares are numbered in mount order, as start_shares starts their daemons.
    let mut share = 0;
    for m in mounts {
        match m.kind {
            volume::mounts::Kind::Tmpfs => {
                let options = m.tmpfs.unwrap_or_default();
                let target = boot::check_target(&m.target)
                    .map_err(|why| bad("tmpfs target", &m.target, why))?;
                c.mounts.push(boot::ContainerMount::Tmpfs(boot::TmpfsMount {
                    target,
                    size: options.size,
                    mode: options.mode,
                    read_only: m.read_only,
                }));
            }
            kind => {
                c.mounts
                    .push(boot::ContainerMount::Virtiofs(boot::VirtiofsMount {
                        tag: boot::share_tag(share),
                        target: m.target.clone(),
                        read_only: m.read_only,
                        // A new volume takes the image's files at its target (the agent copies
                        // only into an empty volume); a read-only one cannot be written, so it is
                        // not seeded.
                        seed: kind == volume::mounts::Kind::Volume && !m.read_only,
                        file: is_file_bind(m),
                    }));
                share += 1;
            }
        }
    }
    Ok(c)
}

/// The boot mounts of a stopped container's volumes and bind mounts for a helper VM (`cp`):
/// the shares [`start_shares`] serves, in its order, none seeded; tmpfs mounts hold nothing
/// while the container is stopped.
pub(crate) fn helper_mounts(mounts: &[volume::mounts::MountSpec]) -> Vec<boot::ContainerMount> {
    mounts
        .iter()
        .filter(|m| m.kind != volume::mounts::Kind::Tmpfs)
        .enumerate()
        .map(|(i, m)| {
            boot::ContainerMount::Virtiofs(boot::VirtiofsMount {
                tag: boot::share_tag(i),
                target: m.target.clone(),
                read_only: m.read_only,
                seed: false,
                file: is_file_bind(m),
            })
        })
        .collect()
}

/// How [`run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// `create`: the container (this ID) exists and has not started.
    Created(String),
    /// `run -d`: the container (this ID) runs under its monitor.
    Detached(String),
    /// The process ran attached and ended with this code.
    Exited(i32),
}

/// What [`run`] does once the container exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Nothing more (`create`).
    Create,
    /// Start it under a monitor that outlives the caller (`run -d`).
    Detach,
    /// Run it attached to the caller's standard streams until it ends.
    Attach,
}

/// Creates the container `spec` describes, resolved against its image (pulled first when
/// the store lacks it): its record, name, network endpoint and volumes. `export_layer`
/// makes it a build step's container. Returns its directories.
pub fn create(
    root: &Path,
    selection: &Selection,
    spec: ContainerSpec,
    export_layer: Option<PathBuf>,
    debug: bool,
    report: &dyn Reporter,
) -> Result<ContainerDirs, EngineError> {
    // Validate everything the caller gave before creating anything.
    spec.validate()
        .map_err(|e| EngineError::usage(e.to_string()))?;
    let kernel = paths::kernel().map_err(EngineError::runtime)?;
    let agent = paths::agent().map_err(EngineError::runtime)?;

    let store = Store::open(&root.join("images")).map_err(EngineError::runtime)?;
    let image = crate::image::resolve_or_pull(root, &store, &spec.image, report)?;
    let mut ports = spec.ports.clone();
    if spec.publish_all {
        for key in image
            .config
            .config
            .exposed_ports
            .iter()
            .flat_map(|m| m.keys())
        {
            let m = network::ports::parse_exposed(key).map_err(EngineError::runtime)?;
            if !ports.iter().any(|p| p.key() == m.key()) {
                ports.push(m);
            }
        }
    }
    let mut mounts = spec.mounts.clone();
    // The image's VOLUMEs get anonymous volumes, unless the user mounted something there.
    for target in image.config.config.volumes.iter().flat_map(|m| m.keys()) {
        let target = target.trim_end_matches('/');
        if !mounts.iter().any(|m| m.target == target)
            && volume::mounts::check_target(target).is_ok()
        {
            mounts.push(volume::mounts::MountSpec {
                kind: volume::mounts::Kind::Volume,
                source: String::new(),
                target: target.to_string(),
                read_only: false,
                tmpfs: None,
                anonymous: true,
            });
        }
    }
    let args = process_args(&image, spec.entrypoint.as_deref(), &spec.command);
    if args.is_empty() {
        return Err(EngineError::runtime("No command specified".to_string()));
    }
    let cfg = &image.config.config;
    let mut base_env = cfg.env.clone().unwrap_or_default();
    if !base_env.iter().any(|e| e.starts_with("PATH=")) {
        base_env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let mut env = merge_env(&[base_env, spec.env.clone()]);
    if spec.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }

    let image_disk =
        mvm_rootfs::disk::ensure_image_disk(&store, &image).map_err(EngineError::runtime)?;
    let agent_disk =
        agent_disk::ensure(&agent, &root.join("cache")).map_err(EngineError::runtime)?;

    // Claim an ID and a name under the containers lock, then build the container's disk.
    std::fs::create_dir_all(root.join("containers")).map_err(EngineError::runtime)?;
    let _lock = mvm_rootfs::fsutil::LockFile::acquire(&root.join("containers/.lock"))
        .map_err(EngineError::runtime)?;
    let taken: Vec<String> = container::list(root).into_iter().map(|c| c.name).collect();
    let id = container::new_id().map_err(EngineError::runtime)?;
    let name = match &spec.name {
        Some(n) if taken.contains(n) => {
            return Err(EngineError::runtime(format!(
                "Conflict. The container name \"/{n}\" is already in use. Remove it or pick another name."
            )));
        }
        Some(n) => n.clone(),
        None => container::generate_name(&id, &taken),
    };
    let endpoints = if spec.network == NetworkMode::None {
        Vec::new()
    } else {
        let _net_lock = network::lock(root).map_err(EngineError::runtime)?;
        let net = match &spec.network {
            NetworkMode::Named(n) => network::find(root, n),
            _ => network::default_locked(root),
        }
        .map_err(EngineError::runtime)?;
        vec![
            network::allocate_locked(root, &net, &id, 0, spec.network_aliases.clone(), &[])
                .map_err(EngineError::runtime)?,
        ]
    };
    // Volumes named here are made now (as `docker run` does); bind sources too.
    {
        let _vol_lock = volume::lock(root).map_err(EngineError::runtime)?;
        for m in &mut mounts {
            match m.kind {
                volume::mounts::Kind::Volume => {
                    let name = (!m.source.is_empty()).then_some(m.source.as_str());
                    let v = volume::create_locked(root, name, Default::default(), m.anonymous)
                        .map_err(EngineError::runtime)?;
                    m.source = v.name;
                }
                // A missing source is made a directory, as Docker's -v does; a file stays
                // one (a single-file bind mount).
                volume::mounts::Kind::Bind if Path::new(&m.source).is_file() => {}
                volume::mounts::Kind::Bind => {
                    std::fs::create_dir_all(&m.source).map_err(|e| {
                        EngineError::runtime(format!("cannot create bind source {}: {e}", m.source))
                    })?;
                }
                volume::mounts::Kind::Tmpfs => {}
            }
        }
    }
    let dirs = ContainerDirs::new(root, &id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dirs.dir)
        .map_err(EngineError::runtime)?;
    let record = ContainerRecord {
        id: id.clone(),
        name,
        created: mvm_rootfs::time::now(),
        image_id: image.id.to_string(),
        process: container::Process {
            args,
            env,
            cwd: spec
                .workdir
                .clone()
                .unwrap_or_else(|| cfg.working_dir.clone()),
            user: spec.user.clone().unwrap_or_else(|| cfg.user.clone()),
            hostname: spec
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string()),
            stop_signal: spec
                .stop_signal
                .as_deref()
                .and_then(container::spec::parse_signal)
                .or_else(|| container::spec::parse_signal(&cfg.stop_signal)),
        },
        vm: container::VmSetup {
            backend: selection.kind,
            kernel,
            image_disk,
            agent_disk,
            debug,
        },
        ports,
        mounts,
        endpoints,
        nics: Vec::new(),
        export_layer,
        spec,
        state: container::State::default(),
    };
    if let Err(e) = dirs.save(&record) {
        dirs.remove();
        return Err(EngineError::runtime(e));
    }
    tracing::debug!("container {id} ({})", record.name);
    Ok(dirs)
}

/// Creates a container and, as `mode` says, starts it: detached under a monitor or attached
/// to the caller's standard streams until it ends.
pub fn run(
    root: &Path,
    selection: &Selection,
    spec: ContainerSpec,
    mode: RunMode,
    export_layer: Option<PathBuf>,
    debug: bool,
    report: &dyn Reporter,
) -> Result<RunOutcome, EngineError> {
    let started = std::time::Instant::now();
    let (interactive, rm) = (spec.interactive, spec.auto_remove);
    let dirs = create(root, selection, spec, export_layer, debug, report)?;
    let id = dirs.id.clone();
    match mode {
        RunMode::Create => return Ok(RunOutcome::Created(id)),
        RunMode::Detach => {
            start_monitor(root, &dirs, Start::New)?;
            return Ok(RunOutcome::Detached(id));
        }
        RunMode::Attach => {}
    }
    // Until it runs, no other command may start or remove it.
    let lock = dirs.command_lock().map_err(EngineError::runtime)?;
    let result = run_container(
        started,
        selection.kind,
        &dirs,
        true,
        interactive,
        Some(lock),
    );
    let code = result.as_ref().map_or_else(|e| e.code(), |c| *c);
    // A process that ran and whose policy brings it back is handed to a monitor, as
    // Docker's daemon would take over after an attached `run`.
    if !hand_to_monitor(root, &dirs, code) {
        finish(&dirs, rm, &result);
    }
    result.map(RunOutcome::Exited)
}

/// After an attached run whose process ran and ended with `code`: if the restart policy brings
/// it back, hands the container to a monitor (as Docker's daemon takes over after an attached
/// `run`) and returns true; false when the caller is to finish the container itself.
fn hand_to_monitor(root: &Path, dirs: &ContainerDirs, code: i32) -> bool {
    let restarts = dirs.load().is_ok_and(|rec| {
        rec.state.ran()
            && rec
                .spec
                .restart
                .should_restart(code, rec.state.restart_count, rec.state.manual_stop)
    });
    if !restarts {
        return false;
    }
    mark_restarting(dirs, code);
    match spawn_monitor(root, dirs) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot restart the container: {e}");
            false
        }
    }
}

/// Resets a container's record for a new start: no error, not stopped by the user, not
/// paused, not started yet.
fn prepare_start(dirs: &ContainerDirs) -> Result<ContainerRecord, EngineError> {
    dirs.update(|r| r.state.prepare_start())
        .map_err(EngineError::runtime)
}

/// Records that the policy restarts the container after its process ended with `code`.
fn mark_restarting(dirs: &ContainerDirs, code: i32) {
    let _ = dirs.update(|r| r.state.restarting(code, mvm_rootfs::time::now()));
}

/// Records how a container ended, or removes it (`--rm`, or it never ran).
fn finish(dirs: &ContainerDirs, auto_remove: bool, result: &Result<i32, EngineError>) {
    let rec = dirs.load().ok();
    let ran = rec.as_ref().is_some_and(|r| r.state.ran());
    if auto_remove || !ran {
        // With --rm, or when the container never ran, nothing is left behind: not even the
        // anonymous volumes made for it.
        dirs.remove();
        if let Some(rec) = rec {
            volume::remove_anonymous(&dirs.root, &rec.mounts);
        }
        return;
    }
    let (code, error) = match result {
        Ok(code) => (*code, None),
        Err(e) => (e.code(), Some(e.to_string())),
    };
    let _ = dirs.update(|rec| rec.state.exited(code, error, mvm_rootfs::time::now()));
    let _ = std::fs::remove_dir_all(&dirs.run);
}

/// Whether `start_monitor` starts a container just created by `run -d` (removed if it cannot
/// start) or an existing one (`start`, `restart`: kept, with the error recorded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Made by this command.
    New,
    /// Created or exited before.
    Existing,
}

/// Spawns the container's monitor, detached from our session so it outlives this command.
fn spawn_monitor(root: &Path, dirs: &ContainerDirs) -> Result<std::process::Child, EngineError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(EngineError::runtime)?;
    let id = dirs.load().map_err(EngineError::runtime)?.id;
    let log = std::fs::File::create(dirs.dir.join("monitor.log")).map_err(EngineError::runtime)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg("__monitor")
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the monitor from our terminal and
    // session so it survives this command.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| EngineError::runtime(format!("cannot start the monitor: {e}")))
}

/// `run -d`, `start`: hands the container to a monitor process that outlives this command,
/// and returns once the container runs (or failed to start).
pub fn start_monitor(root: &Path, dirs: &ContainerDirs, kind: Start) -> Result<i32, EngineError> {
    prepare_start(dirs)?;
    let gave_up = |err: EngineError| {
        match kind {
            Start::New => dirs.remove(),
            Start::Existing => {
                let msg = err.to_string();
                let _ = dirs.update(|r| {
                    r.state
                        .exited(err.code(), Some(msg), mvm_rootfs::time::now())
                });
                let _ = std::fs::remove_dir_all(&dirs.run);
            }
        }
        Err(err)
    };
    let mut child = spawn_monitor(root, dirs)?;
    let deadline = std::time::Instant::now() + AGENT_TIMEOUT + Duration::from_secs(10);
    loop {
        let rec = dirs.load().map_err(EngineError::runtime)?;
        if let Some(err) = rec.state.error {
            let _ = child.wait();
            return gave_up(EngineError::with_code(
                rec.state.exit_code.unwrap_or(125),
                err,
            ));
        }
        if rec.state.status != container::Status::Created {
            // The monitor is reaped by init once we exit.
            return Ok(0);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let why = backend::log_tail(&dirs.dir.join("monitor.log"));
            return gave_up(EngineError::runtime(format!(
                "the container's monitor exited ({status}): {why}"
            )));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return gave_up(EngineError::runtime("timed out starting the container"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `start -a`: runs an existing container attached to this terminal (`-i`: with stdin).
/// `lock` is held until the container runs.
pub fn start_attached(
    root: &Path,
    dirs: &ContainerDirs,
    interactive: bool,
    lock: container::CommandLock,
) -> Result<i32, EngineError> {
    let rec = prepare_start(dirs)?;
    let kind = rec.vm.backend;
    let result = run_container(
        std::time::Instant::now(),
        kind,
        dirs,
        true,
        interactive,
        Some(lock),
    );
    let code = result.as_ref().map_or_else(|e| e.code(), |c| *c);
    if hand_to_monitor(root, dirs, code) {
        return result;
    }
    if dirs.load().is_ok_and(|r| !r.state.ran()) {
        // It never ran: keep the container (it existed before this command), record why.
        let (code, msg) = match &result {
            Ok(c) => (*c, None),
            Err(e) => (e.code(), Some(e.to_string())),
        };
        let _ = dirs.update(|r| {
            r.state.exited(code, msg, mvm_rootfs::time::now());
        });
        let _ = std::fs::remove_dir_all(&dirs.run);
        return result;
    }
    finish(dirs, rec.spec.auto_remove, &result);
    result
}

/// The hidden `__monitor ID` command: runs a detached container to its end, restarting it
/// as its policy says.
pub fn monitor(root: &Path, id: &str) -> i32 {
    let dirs = ContainerDirs::new(root, id);
    let Ok(rec) = dirs.load() else {
        return 125;
    };
    let kind = rec.vm.backend;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let t0 = std::time::Instant::now();
        let result = run_container(t0, kind, &dirs, false, false, None);
        let rec = match dirs.load() {
            Ok(r) => r,
            Err(_) => return 125,
        };
        if let Err(e) = &result
            && rec.state.status == container::Status::Created
        {
            // It never started: tell the waiting command why; it decides what stays.
            let (msg, code) = (e.to_string(), e.code());
            let _ = dirs.update(|r| {
                r.state.error = Some(msg);
                r.state.exit_code = Some(code);
            });
            return code;
        }
        let code = result.as_ref().map_or_else(|e| e.code(), |c| *c);
        if !rec
            .spec
            .restart
            .should_restart(code, rec.state.restart_count, rec.state.manual_stop)
        {
            finish(&dirs, rec.spec.auto_remove, &result);
            return code;
        }
        mark_restarting(&dirs, code);
        // Docker's back-off: doubling from 100 ms, reset once a run lasted 10 s.
        if t0.elapsed() > Duration::from_secs(10) {
            backoff = RESTART_BACKOFF_MIN;
        }
        let wake = std::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        while std::time::Instant::now() < wake {
            if dirs.load().is_ok_and(|r| r.state.manual_stop) {
                finish(&dirs, rec.spec.auto_remove, &result);
                return code;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The container's writable disk, made the first time it is needed and kept across restarts,
/// as a container's layer is.
pub(crate) fn ensure_upper_disk(dirs: &ContainerDirs) -> Result<PathBuf, String> {
    let upper = crate::changes::upper_disk(dirs);
    if !upper.exists() {
        let tmp = dirs.dir.join("upper.ext4.tmp");
        mvm_rootfs::disk::create_writable_disk(&tmp, UPPER_DISK_BYTES)
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &upper).map_err(|e| e.to_string())?;
    }
    Ok(upper)
}

/// Boots the container's VM, runs its process and returns its exit code. `attached` copies
/// the output to our terminal and forwards our stdin; the log always gets it. `lock` (the
/// container's command lock) is released once the process runs.
fn run_container(
    started: std::time::Instant,
    kind: backend::Kind,
    dirs: &ContainerDirs,
    attached: bool,
    interactive: bool,
    lock: Option<container::CommandLock>,
) -> Result<i32, EngineError> {
    let rec = dirs.load().map_err(EngineError::runtime)?;
    if attached {
        crate::events::container(&dirs.root, &rec, "attach", &[]);
    }
    raise_nofile();
    let upper = ensure_upper_disk(dirs).map_err(EngineError::runtime)?;
    let spec = VmSpec {
        kernel: rec.vm.kernel.clone(),
        cmdline: kernel_cmdline(
            &container_boot_config(
                &rec.process.hostname,
                rec.vm.debug,
                &rec.endpoints,
                &rec.mounts,
                &rec.spec,
            )?,
            rec.vm.debug,
        )
        .map_err(EngineError::runtime)?,
        vcpus: rec.spec.resources.vcpus,
        mem_mib: rec.spec.resources.memory_mib,
        disks: container_disks(&rec, upper, false),
        run_dir: dirs.run.clone(),
        // Filled in once the TAPs exist.
        nics: Vec::new(),
        shares: Vec::new(),
        cgroup_parent: None,
    };
    // Block the forwarded signals before any thread or child exists, so the session's
    // forwarding thread receives them (children unblock them in pre_exec).
    session::forwarded_signals()
        .thread_block()
        .map_err(|e| EngineError::runtime(format!("cannot block signals: {e}")))?;
    tracing::debug!("phase prepared {:?}", started.elapsed());
    let t0 = std::time::Instant::now();
    // Sockets of an earlier run of this container are stale: start from an empty directory.
    let _ = std::fs::remove_dir_all(&spec.run_dir);
    std::fs::create_dir_all(spec.vm_dir()).map_err(EngineError::runtime)?;
    let callback = spec
        .vsock_path()
        .with_file_name(format!("vsock.sock_{DEFAULT_CALLBACK_PORT}"));
    let listener = std::os::unix::net::UnixListener::bind(&callback).map_err(|e| {
        EngineError::runtime(format!("cannot listen on {}: {e}", callback.display()))
    })?;
    let control = std::os::unix::net::UnixListener::bind(dirs.control_path())
        .map_err(|e| EngineError::runtime(format!("cannot create the control socket: {e}")))?;
    let spares = spare_nics(kind, &rec)?;
    let net = NetworkUp::bring_up(dirs, &rec, spares)?;
    let (daemons, shares) = start_shares(dirs, &rec)?;
    let spec = VmSpec {
        shares,
        nics: net.nics.clone(),
        ..spec
    };
    let mut vm = backend::start(kind, &spec).map_err(EngineError::runtime)?;
    for d in &daemons {
        vm.adopt(d.watched().pid);
    }
    tracing::debug!("phase vm_started {:?}", t0.elapsed());
    let stream = session::accept_agent(&mut vm, &listener, AGENT_TIMEOUT, &spec.console_path())
        .map_err(EngineError::runtime)?;
    tracing::debug!("phase agent_ready {:?}", t0.elapsed());
    // From here, the death of any of the VM's processes ends the session at once (its reason
    // goes to the record) rather than leaving an "Up" container nobody can reach.
    let watch = watch_session(&vm, &daemons, &stream)?;
    let vm_pids = vm.pids();
    let mark_running = move || {
        if let Err(e) = dirs.update(|r| {
            r.state
                .started(std::process::id(), vm_pids, mvm_rootfs::time::now())
        }) {
            tracing::warn!("cannot record the container as running: {e}");
        }
        drop(lock);
    };
    let mut process = ProcessSpec {
        args: rec.process.args.clone(),
        env: rec.process.env.clone(),
        cwd: rec.process.cwd.clone(),
        user: rec.process.user.clone(),
        // PID 1 of its own namespace, as under runc: no SIGTERM handler, no stop by SIGTERM.
        pid_namespace: true,
        terminal: rec.spec.tty,
        // Created with -i, the process's stdin stays open for whoever attaches, as Docker's.
        stdin: rec.spec.interactive || (attached && interactive),
        ..ProcessSpec::default()
    };
    container::process_opts::apply(&rec.spec, &mut process);
    let raw = if attached && rec.spec.tty && interactive && crate::terminal::is_tty(0) {
        crate::terminal::RawMode::enable()
    } else {
        None
    };
    let log = rec
        .log()
        .map(|opts| {
            crate::logs::LogWriter::open(&dirs.log_path(), opts).map(|w| {
                w.with_attrs(crate::logs::attrs(
                    &rec.spec.log_opts,
                    &rec.spec.labels,
                    &rec.process.env,
                ))
            })
        })
        .transpose()
        .map_err(|e| EngineError::runtime(format!("cannot open the container log: {e}")))?;
    // `network connect`/`disconnect` ask us, through the control socket, to follow the record.
    let net = std::sync::Arc::new(std::sync::Mutex::new(Some(net.start_proxies())));
    let on_networks: session::NetworksHook = {
        let net = net.clone();
        let dirs = ContainerDirs::new(&dirs.root, &rec.id);
        Box::new(move || {
            let mut net = net.lock().unwrap_or_else(|e| e.into_inner());
            match net.as_mut() {
                Some(up) => up.follow_record(&dirs),
                None => Err("the container has stopped".into()),
            }
        })
    };
    let result = session::run_process(
        stream,
        process,
        Stdio {
            stdin: attached && interactive,
            open_stdin: rec.spec.interactive || (attached && interactive),
            tty: rec.spec.tty,
            attached,
            export_layer: rec.export_layer.clone(),
        },
        log,
        Some((control, on_networks)),
        mark_running,
    );
    drop(raw);
    tracing::debug!("phase process_exited {:?}", t0.elapsed());
    let died = if result.is_err() {
        watch.wait_death(Duration::from_millis(500))
    } else {
        watch.death()
    };
    drop(watch);
    if result.is_ok() && died.is_none() {
        vm.finish(POWEROFF_TIMEOUT);
    } else {
        // The session broke (a process of the VM died, or the agent went away): nothing will
        // power the VM off cleanly; end it now.
        vm.kill();
    }
    // Taken out: the control thread's hook still holds the mutex's Arc.
    drop(net.lock().unwrap_or_else(|e| e.into_inner()).take());
    drop(daemons);
    tracing::debug!("phase vm_ended {:?}", t0.elapsed());
    if rec.vm.debug {
        let _ = std::fs::copy(spec.console_path(), dirs.root.join("last-console.log"));
    }
    match result {
        Ok(code) => Ok(code),
        // As a container whose processes were killed: 137, with the reason.
        Err(_) if let Some(why) = died => Err(EngineError::with_code(
            137,
            format!("the microVM ended: {why}"),
        )),
        Err(session::SessionError::StartFailed { code, message }) => {
            Err(EngineError::with_code(code, message))
        }
        Err(e) => Err(EngineError::runtime(e)),
    }
}

/// Watches the VM's processes (the hypervisor, its helpers, the virtiofsd daemons): the first
/// death cuts the session's `stream`, so a session never waits on a VM that is gone.
pub(crate) fn watch_session(
    vm: &backend::VmHandle,
    daemons: &[volume::virtiofsd::Daemon],
    stream: &std::os::unix::net::UnixStream,
) -> Result<backend::watch::Watch, EngineError> {
    let cut = stream.try_clone().map_err(EngineError::runtime)?;
    let mut watched = vm.watched();
    watched.extend(daemons.iter().map(|d| d.watched()));
    backend::watch::start(watched, move || {
        let _ = cut.shutdown(std::net::Shutdown::Both);
    })
    .map_err(|e| EngineError::runtime(format!("cannot watch the VM's processes: {e}")))
}

/// Raises the soft limit on open files to the hard one (at most 65536): the published-port
/// proxies hold two descriptors per connection up to their cap (1024 per port), more than a
/// default soft limit of 1024 allows. Nothing else in the monitor is bounded by it.
fn raise_nofile() {
    if let Err(e) = mvm_rootfs::fsutil::raise_nofile(65536) {
        tracing::debug!("cannot raise the open-file limit: {e}");
    }
}

/// How many spare interfaces the container's VM gets for `network connect`: what
/// `MVM_SPARE_NICS` asks, as far as the backend's virtio devices go once the disks, vsock,
/// networks and shares have theirs; an error when even those do not fit.
fn spare_nics(kind: backend::Kind, rec: &ContainerRecord) -> Result<usize, EngineError> {
    let shares = rec
        .mounts
        .iter()
        .filter(|m| m.kind != volume::mounts::Kind::Tmpfs)
        .count();
    // The agent's, the image's and the writable disk, and vsock.
    let fixed = 4 + rec.endpoints.len() + shares;
    let slots = kind.virtio_slots();
    if fixed > slots {
        return Err(EngineError::runtime(format!(
            "the container needs {fixed} virtio devices ({} networks, {shares} volumes or bind mounts, 3 disks and vsock), and a microVM on the {} backend has {slots}",
            rec.endpoints.len(),
            kind.name()
        )));
    }
    Ok(network::spare_nic_count().min(slots - fixed))
}

/// A bind mount of one regular file (`-v /host/file:/etc/file`), shared alone.
fn is_file_bind(m: &volume::mounts::MountSpec) -> bool {
    m.kind == volume::mounts::Kind::Bind && Path::new(&m.source).is_file()
}

/// Starts a virtiofsd for each volume and bind mount of the container (host-side read-only
/// for `:ro`), in mount order.
pub(crate) fn start_shares(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
) -> Result<(Vec<volume::virtiofsd::Daemon>, Vec<backend::Share>), EngineError> {
    let root = dirs.root.as_path();
    let mut daemons = Vec::new();
    let mut shares = Vec::new();
    for m in rec
        .mounts
        .iter()
        .filter(|m| m.kind != volume::mounts::Kind::Tmpfs)
    {
        let i = shares.len();
        let dir = match m.kind {
            volume::mounts::Kind::Volume => volume::data_dir(root, &m.source),
            _ => PathBuf::from(&m.source),
        };
        if !dir.is_dir() && !is_file_bind(m) {
            return Err(EngineError::runtime(format!(
                "cannot mount {} at {}: {} is not a directory",
                m.source,
                m.target,
                dir.display()
            )));
        }
        let socket = dirs.run.join(format!("fs{i}.sock"));
        let log = dirs.run.join(format!("virtiofsd-{i}.log"));
        let d = if is_file_bind(m) {
            volume::virtiofsd::start_file(
                &dir,
                &dirs.run.join(format!("file{i}")),
                &socket,
                m.read_only,
                &log,
            )
        } else {
            volume::virtiofsd::start(&dir, &socket, m.read_only, &log)
        }
        .map_err(|e| {
            EngineError::runtime(format!("cannot mount {} at {}: {e}", m.source, m.target))
        })?;
        shares.push(backend::Share {
            socket: d.socket.clone(),
            tag: boot::share_tag(i),
        });
        daemons.push(d);
    }
    Ok((daemons, shares))
}

/// The host side of a container's network while its VM runs: TAPs on their bridges, the DNS
/// servers of its networks and the bound published ports; all released on drop.
struct NetworkUp {
    taps: Vec<String>,
    /// The VM's interfaces: the endpoints' and the spares.
    nics: Vec<backend::Nic>,
    /// The DNS server of each network the container is on, by network ID.
    dns: Vec<(String, network::dns::Server)>,
    bound: Vec<network::ports::Bound>,
    ports: Vec<network::ports::PortMapping>,
    guest: Option<std::net::Ipv4Addr>,
    proxies: Option<network::ports::Proxies>,
}

impl NetworkUp {
    /// Before the VM starts: bridges, TAPs, DNS, and the published ports bound (so a port in
    /// use fails the start with Docker's message).
    fn bring_up(
        dirs: &ContainerDirs,
        rec: &ContainerRecord,
        spares: usize,
    ) -> Result<Self, EngineError> {
        let mut up = NetworkUp {
            taps: Vec::new(),
            nics: Vec::new(),
            dns: Vec::new(),
            bound: Vec::new(),
            ports: rec.ports.clone(),
            guest: rec.endpoints.first().map(|e| e.ip),
            proxies: None,
        };
        let root = dirs.root.as_path();
        for e in &rec.endpoints {
            {
                let _lock = network::lock(root).map_err(EngineError::runtime)?;
                let all = network::list(root);
                let net = all.iter().find(|n| n.id == e.network_id).ok_or_else(|| {
                    EngineError::runtime(format!("network {} not found", e.network))
                })?;
                network::host::ensure_bridge(root, net, &all).map_err(EngineError::runtime)?;
                network::host::create_tap(&e.tap, &net.bridge).map_err(EngineError::runtime)?;
                up.taps.push(e.tap.clone());
                let names = network::dns::Names::new(root, &net.id);
                up.dns.push((
                    net.id.clone(),
                    network::dns::serve(net.gateway, names).map_err(EngineError::runtime)?,
                ));
            }
        }
        // Spare interfaces for `network connect` while the VM runs.
        let nics = network::vm_nics(rec, spares);
        for n in &nics {
            if !up.taps.contains(&n.tap) {
                network::host::create_spare_tap(&n.tap).map_err(EngineError::runtime)?;
                up.taps.push(n.tap.clone());
            }
        }
        up.nics = nics.clone();
        dirs.update(|r| r.nics = nics)
            .map_err(EngineError::runtime)?;
        up.bound = network::ports::bind_all(&mut up.ports).map_err(EngineError::runtime)?;
        if !up.ports.is_empty() {
            let ports = up.ports.clone();
            dirs.update(|r| r.ports = ports)
                .map_err(EngineError::runtime)?;
        }
        Ok(up)
    }

    /// After `network connect` or `disconnect`: a DNS server for each network the record
    /// lists, none for the others, and the published ports proxied to the (maybe new) first
    /// network's address.
    fn follow_record(&mut self, dirs: &ContainerDirs) -> Result<(), String> {
        let rec = dirs.load()?;
        let root = dirs.root.as_path();
        if let (Some(proxies), Some(first)) = (&self.proxies, rec.endpoints.first()) {
            proxies.set_guest(first.ip);
        }
        // A server stops within its poll interval (200 ms): let that happen off this path.
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dns)
            .into_iter()
            .partition(|(id, _)| rec.endpoints.iter().any(|e| &e.network_id == id));
        self.dns = keep;
        if !gone.is_empty() {
            std::thread::spawn(move || drop(gone));
        }
        for e in &rec.endpoints {
            if self.dns.iter().any(|(id, _)| *id == e.network_id) {
                continue;
            }
            let names = network::dns::Names::new(root, &e.network_id);
            self.dns
                .push((e.network_id.clone(), network::dns::serve(e.gateway, names)?));
        }
        Ok(())
    }

    /// Once the guest runs: proxies from the published ports to its first address.
    fn start_proxies(mut self) -> Self {
        if let Some(guest) = self.guest {
            let bound = std::mem::take(&mut self.bound);
            self.proxies = Some(network::ports::start(bound, &self.ports, guest));
        }
        self
    }
}

impl Drop for NetworkUp {
    fn drop(&mut self) {
        self.proxies = None;
        self.dns.clear();
        for t in &self.taps {
            network::host::delete_tap(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line a container boots with: the same words as before the boot
    /// configuration moved to agent-protocol (a tmpfs size now in bytes), and the agent's
    /// parser reads back what the runtime built.
    #[test]
    fn container_command_line() {
        use volume::mounts::{Kind, MountSpec};
        let ep = |ip: &str, gw: &str, mac: &str| network::Endpoint {
            network: String::new(),
            network_id: String::new(),
            ip: ip.parse().unwrap(),
            prefix: 16,
            gateway: gw.parse().unwrap(),
            mac: mac.parse().unwrap(),
            tap: String::new(),
            bridge: String::new(),
            aliases: Vec::new(),
        };
        let mount = |kind, target: &str, read_only, options: &str| MountSpec {
            kind,
            source: "src".into(),
            target: target.into(),
            read_only,
            tmpfs: (kind == Kind::Tmpfs).then(|| {
                volume::mounts::parse_tmpfs(&format!("{target}:{options}"))
                    .unwrap()
                    .tmpfs
                    .unwrap()
            }),
            anonymous: false,
        };
        let boot = container_boot_config(
            "web",
            true,
            &[
                ep("10.88.0.2", "10.88.0.1", "02:42:0a:58:00:02"),
                ep("10.89.0.2", "10.89.0.1", "02:42:0a:59:00:02"),
            ],
            &[
                mount(Kind::Volume, "/data", false, ""),
                mount(Kind::Tmpfs, "/data/tmp", false, "size=64m,mode=755"),
                mount(Kind::Bind, "/conf", true, ""),
                mount(Kind::Volume, "/ro", true, ""),
                mount(Kind::Tmpfs, "/run", false, ""),
            ],
            &Default::default(),
        )
        .unwrap();
        let line = kernel_cmdline(&boot, true).unwrap();
        assert_eq!(
            line,
            "console=ttyS0 panic=-1 loglevel=7 no_timer_check 8250.nr_uarts=1 root=/dev/vda ro \
             rootfstype=erofs init=/mvm-agent mvm.lower=/dev/vdb mvm.lowerfs=erofs \
             mvm.upper=/dev/vdc mvm.callback=1025 mvm.hostname=web \
             mvm.net=02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1,1500 \
             mvm.net=02:42:0a:59:00:02,10.89.0.2/16,-,1500 mvm.dns=10.88.0.1 \
             mvm.mount=mvmfs0,/data,rw,seed mvm.tmpfs=/data/tmp,size=67108864,mode=755 \
             mvm.mount=mvmfs1,/conf,ro mvm.mount=mvmfs2,/ro,ro mvm.tmpfs=/run mvm.debug=1"
        );
        assert_eq!(boot::parse_cmdline(&line).unwrap(), boot);

        let helper = BootConfig {
            export: true,
            ..boot_config(false)
        };
        assert_eq!(
            kernel_cmdline(&helper, false).unwrap(),
            "console=ttyS0 panic=-1 quiet loglevel=1 no_timer_check 8250.nr_uarts=1 \
             root=/dev/vda ro rootfstype=erofs init=/mvm-agent mvm.lower=/dev/vdb \
             mvm.lowerfs=erofs mvm.upper=/dev/vdc mvm.callback=1025 mvm.export=1"
        );

        // What the agent would refuse fails on the host, before a VM boots.
        assert!(
            container_boot_config("a b", false, &[], &[], &Default::default())
                .and_then(|c| { kernel_cmdline(&c, false).map_err(EngineError::runtime) })
                .is_err()
        );
        // A bad MAC or address cannot get this far: a record holding one does not load
        // (network::tests::records_round_trip_as_text).
    }

    #[test]
    fn env_merging() {
        let m = merge_env(&[
            vec!["PATH=/bin".into(), "A=1".into()],
            vec!["A=2".into(), "B=3".into()],
        ]);
        assert_eq!(m, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}

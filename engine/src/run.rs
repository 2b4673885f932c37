//! `mvm run`: an image's process in its own microVM, attached to the user's terminal.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvm_agent_protocol::boot::{self, BootConfig};
use mvm_agent_protocol::{DEFAULT_CALLBACK_PORT, ProcessSpec};
use mvm_rootfs::{ImageRecord, Store};

use crate::backend::{self, Disk, Selection, VmSpec};
use crate::container::{self, ContainerDirs, ContainerRecord};
use crate::error::CliError;
use crate::report::Reporter;
use crate::session::{self, Stdio};
use crate::{agent_disk, network, paths, volume};

/// Default guest memory: enough for the agent and a small service; `-m` changes it.
pub const DEFAULT_MEM_MIB: u64 = 512;
/// Smallest memory a guest kernel and agent boot in.
pub const MIN_MEM_MIB: u64 = 64;
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

/// Options of `mvm run`, already parsed.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Remove the container when it exits.
    pub rm: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// `-e` values.
    pub env: Vec<String>,
    /// `--env-file` paths.
    pub env_files: Vec<PathBuf>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-m`.
    pub memory: Option<String>,
    /// `--cpus`.
    pub cpus: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `-d`: run in the background under a monitor process.
    pub detach: bool,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--log-driver`.
    pub log_driver: Option<String>,
    /// `--log-opt`.
    pub log_opts: Vec<String>,
    /// `mvm create`: make the container and stop there.
    pub create_only: bool,
    /// `--network`.
    pub network: Option<String>,
    /// `--network-alias`.
    pub network_aliases: Vec<String>,
    /// `-p`.
    pub publish: Vec<String>,
    /// `-P`.
    pub publish_all: bool,
    /// `-v`.
    pub volumes: Vec<String>,
    /// `--mount`.
    pub mounts: Vec<String>,
    /// `--tmpfs`.
    pub tmpfs: Vec<String>,
    /// Image.
    pub image: String,
    /// Command and arguments.
    pub command: Vec<String>,
    /// A build step: the layer of the container's changes, written here by its agent when
    /// the process exits with 0.
    pub export_layer: Option<PathBuf>,
}

/// Parses Docker's memory syntax (`512m`, `1g`, `1073741824`) into MiB.
pub fn parse_memory(s: &str) -> Result<u64, CliError> {
    let bad = || CliError::usage(format!("invalid memory size {s:?}: use e.g. 512m or 2g"));
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (lower, 1),
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mib = n.checked_mul(mult).ok_or_else(bad)? >> 20;
    if mib < MIN_MEM_MIB {
        return Err(CliError::usage(format!(
            "minimum memory for a microVM is {MIN_MEM_MIB}m, got {s}"
        )));
    }
    if mib > 1 << 20 {
        return Err(bad());
    }
    Ok(mib)
}

/// Parses `--cpus` (a decimal, rounded up to whole vCPUs).
pub fn parse_cpus(s: &str) -> Result<u8, CliError> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| CliError::usage(format!("invalid --cpus {s:?}: expected a number")))?;
    if !(n > 0.0 && n <= 32.0) {
        return Err(CliError::usage(format!(
            "--cpus must be between 0.01 and 32, got {s}"
        )));
    }
    Ok(n.ceil() as u8)
}

fn read_env_file(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("open {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(resolve_env_word)
        .collect())
}

/// `K=V` as is; a bare `K` takes the host's value, or is dropped when unset (as Docker).
fn resolve_env_word(w: &str) -> Option<String> {
    if w.contains('=') {
        Some(w.to_string())
    } else {
        std::env::var(w).ok().map(|v| format!("{w}={v}"))
    }
}

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
    entrypoint: Option<&str>,
    command: &[String],
) -> Vec<String> {
    let cfg = &image.config.config;
    let entry: Vec<String> = match entrypoint {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
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
            path: rec.agent_disk.clone(),
            read_only: true,
            id: "mvm-agent".into(),
        },
        Disk {
            path: rec.image_disk.clone(),
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
) -> Result<BootConfig, CliError> {
    let bad = |what: &str, value: &str, why: &str| {
        CliError::runtime(format!("the container's {what} {value:?}: {why}"))
    };
    let mut c = boot_config(debug);
    c.hostname = Some(hostname.to_string());
    // Interfaces by MAC, address, gateway (the first one's is the default route) and MTU;
    // the gateway also serves DNS.
    for (i, e) in endpoints.iter().enumerate() {
        let mac = boot::MacAddr::parse(&e.mac).map_err(|why| bad("MAC address", &e.mac, why))?;
        let addr =
            e.ip.parse()
                .map_err(|_| bad("address", &e.ip, "not an IPv4 address"))?;
        let gateway = if i == 0 {
            Some(
                e.gateway
                    .parse()
                    .map_err(|_| bad("gateway", &e.gateway, "not an IPv4 address"))?,
            )
        } else {
            None
        };
        c.net.push(boot::NetConfig {
            mac,
            addr,
            prefix: e.prefix,
            gateway,
            mtu: Some(network::MTU),
        });
    }
    if let Some(first) = endpoints.first() {
        c.dns = vec![
            first
                .gateway
                .parse()
                .map_err(|_| bad("gateway", &first.gateway, "not an IP address"))?,
        ];
    }
    // Shares are numbered in mount order, as start_shares starts their daemons.
    let mut share = 0;
    for m in mounts {
        match m.kind {
            volume::mounts::Kind::Tmpfs => {
                let value = if m.options.is_empty() {
                    m.target.clone()
                } else {
                    format!("{},{}", m.target, m.options)
                };
                let tmpfs = boot::parse_tmpfs(&value).map_err(|why| bad("tmpfs", &value, why))?;
                c.mounts.push(boot::ContainerMount::Tmpfs(tmpfs));
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
                    }));
                share += 1;
            }
        }
    }
    Ok(c)
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

/// Creates a container and, unless `opts.create_only`, runs it: detached under a monitor
/// (`opts.detach`) or attached to the caller's standard streams until it ends.
pub fn run(
    root: &Path,
    selection: &Selection,
    opts: RunOptions,
    debug: bool,
    report: &dyn Reporter,
) -> Result<RunOutcome, CliError> {
    let started = std::time::Instant::now();
    // Validate everything the user gave before creating anything.
    let mem_mib = opts
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()?
        .unwrap_or(DEFAULT_MEM_MIB);
    let vcpus = opts
        .cpus
        .as_deref()
        .map(parse_cpus)
        .transpose()?
        .unwrap_or(1);
    let restart_policy = opts
        .restart
        .as_deref()
        .map(container::RestartPolicy::parse)
        .transpose()
        .map_err(CliError::usage)?
        .unwrap_or_default();
    let log_opts = match opts.log_driver.as_deref() {
        None | Some("json-file") => {
            Some(crate::logs::LogOptions::parse(&opts.log_opts).map_err(CliError::usage)?)
        }
        Some("none") if opts.log_opts.is_empty() => None,
        Some("none") => {
            return Err(CliError::usage(
                "the none log driver takes no --log-opt".into(),
            ));
        }
        Some(other) => {
            return Err(CliError::usage(format!(
                "unknown log driver {other:?}: use json-file or none"
            )));
        }
    };
    let network_mode = opts
        .network
        .clone()
        .unwrap_or_else(|| network::DEFAULT_NETWORK.to_string());
    match network_mode.as_str() {
        "host" => {
            return Err(CliError::usage(
                "--network host cannot share the host's network stack with a microVM (it has its own kernel): publish ports with -p instead".into(),
            ));
        }
        "none" if !opts.publish.is_empty() || opts.publish_all => {
            return Err(CliError::usage(
                "published ports need a network: --network none has none".into(),
            ));
        }
        "none" | network::DEFAULT_NETWORK if !opts.network_aliases.is_empty() => {
            return Err(CliError::usage(
                "network-scoped aliases are supported only for containers in user-defined networks"
                    .into(),
            ));
        }
        _ => {}
    }
    for a in &opts.network_aliases {
        if !container::valid_name(a) {
            return Err(CliError::usage(format!("invalid network alias {a:?}")));
        }
    }
    let mut ports = opts
        .publish
        .iter()
        .map(|p| network::ports::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::usage)?;
    let mut mounts = Vec::new();
    for v in &opts.volumes {
        mounts.push(volume::mounts::parse_volume(v).map_err(CliError::usage)?);
    }
    for m in &opts.mounts {
        mounts.push(volume::mounts::parse_mount(m).map_err(CliError::usage)?);
    }
    for t in &opts.tmpfs {
        mounts.push(volume::mounts::parse_tmpfs(t).map_err(CliError::usage)?);
    }
    volume::mounts::check_duplicates(&mounts).map_err(CliError::usage)?;
    if opts.rm && !restart_policy.is_none() {
        return Err(CliError::usage(
            "Conflicting options: --restart and --rm".to_string(),
        ));
    }
    if let Some(n) = &opts.name
        && !container::valid_name(n)
    {
        return Err(CliError::usage(format!(
            "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if let Some(h) = &opts.hostname
        && (h.is_empty()
            || h.len() > 63
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(CliError::usage(format!("invalid hostname {h:?}")));
    }
    let mut env_layers = Vec::new();
    for f in &opts.env_files {
        env_layers.push(read_env_file(f)?);
    }
    let kernel = paths::kernel().map_err(CliError::runtime)?;
    let agent = paths::agent().map_err(CliError::runtime)?;

    let store = Store::open(&root.join("images")).map_err(CliError::runtime)?;
    let image = crate::image::resolve_or_pull(root, &store, &opts.image, report)?;
    if opts.publish_all {
        for key in image
            .config
            .config
            .exposed_ports
            .iter()
            .flat_map(|m| m.keys())
        {
            let m = network::ports::parse_exposed(key).map_err(CliError::runtime)?;
            if !ports.iter().any(|p| p.key() == m.key()) {
                ports.push(m);
            }
        }
    }
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
                options: String::new(),
                anonymous: true,
            });
        }
    }
    let args = process_args(&image, opts.entrypoint.as_deref(), &opts.command);
    if args.is_empty() {
        return Err(CliError::runtime("No command specified".to_string()));
    }
    let cfg = &image.config.config;
    let mut base_env = cfg.env.clone().unwrap_or_default();
    if !base_env.iter().any(|e| e.starts_with("PATH=")) {
        base_env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let cli_env: Vec<String> = opts
        .env
        .iter()
        .filter_map(|w| resolve_env_word(w))
        .collect();
    let mut layers = vec![base_env];
    layers.extend(env_layers);
    layers.push(cli_env);
    let mut env = merge_env(&layers);
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }

    let image_disk =
        mvm_rootfs::disk::ensure_image_disk(&store, &image).map_err(CliError::runtime)?;
    let agent_disk = agent_disk::ensure(&agent, &root.join("cache")).map_err(CliError::runtime)?;

    // Claim an ID and a name under the containers lock, then build the container's disk.
    std::fs::create_dir_all(root.join("containers")).map_err(CliError::runtime)?;
    let (id, name, dirs) = {
        let _lock = mvm_rootfs::fsutil::LockFile::acquire(&root.join("containers/.lock"))
            .map_err(CliError::runtime)?;
        let taken: Vec<String> = container::list(root).into_iter().map(|c| c.name).collect();
        let id = container::new_id().map_err(CliError::runtime)?;
        let name = match &opts.name {
            Some(n) if taken.contains(n) => {
                return Err(CliError::runtime(format!(
                    "Conflict. The container name \"/{n}\" is already in use. Remove it or pick another name."
                )));
            }
            Some(n) => n.clone(),
            None => container::generate_name(&id, &taken),
        };
        let endpoints = if network_mode == "none" {
            Vec::new()
        } else {
            let _net_lock = network::lock(root).map_err(CliError::runtime)?;
            let net = if network_mode == network::DEFAULT_NETWORK {
                network::default_locked(root)
            } else {
                network::find(root, &network_mode)
            }
            .map_err(CliError::runtime)?;
            vec![
                network::allocate_locked(root, &net, &id, 0, opts.network_aliases.clone(), &[])
                    .map_err(CliError::runtime)?,
            ]
        };
        // Volumes named here are made now (as `docker run` does); bind sources too.
        {
            let _vol_lock = volume::lock(root).map_err(CliError::runtime)?;
            for m in &mut mounts {
                match m.kind {
                    volume::mounts::Kind::Volume => {
                        let name = (!m.source.is_empty()).then_some(m.source.as_str());
                        let v = volume::create_locked(root, name, Default::default(), m.anonymous)
                            .map_err(CliError::runtime)?;
                        m.source = v.name;
                    }
                    volume::mounts::Kind::Bind => {
                        std::fs::create_dir_all(&m.source).map_err(|e| {
                            CliError::runtime(format!(
                                "cannot create bind source {}: {e}",
                                m.source
                            ))
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
            .map_err(CliError::runtime)?;
        let record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            image: opts.image.clone(),
            image_id: image.id.to_string(),
            created: mvm_rootfs::time::now(),
            args: args.clone(),
            env: env.clone(),
            cwd: opts
                .workdir
                .clone()
                .unwrap_or_else(|| cfg.working_dir.clone()),
            user: opts.user.clone().unwrap_or_else(|| cfg.user.clone()),
            hostname: opts
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string()),
            tty: opts.tty,
            mem_mib,
            vcpus,
            auto_remove: opts.rm,
            status: "created".into(),
            exit_code: None,
            backend: selection.kind.name().into(),
            interactive: opts.interactive,
            pid: None,
            started_at: None,
            finished_at: None,
            error: None,
            stop_signal: parse_signal(&cfg.stop_signal),
            kernel: kernel.clone(),
            image_disk: image_disk.clone(),
            agent_disk: agent_disk.clone(),
            debug,
            restart_policy,
            log: log_opts,
            restart_count: 0,
            manual_stop: false,
            paused: false,
            vm_pids: Vec::new(),
            network_mode: network_mode.clone(),
            endpoints,
            nics: Vec::new(),
            ports: ports.clone(),
            mounts: mounts.clone(),
            export_layer: opts.export_layer.clone(),
        };
        if let Err(e) = dirs.save(&record) {
            dirs.remove();
            return Err(CliError::runtime(e));
        }
        (id, name, dirs)
    };
    tracing::debug!("container {id} ({name})");
    if opts.create_only {
        return Ok(RunOutcome::Created(id));
    }
    if opts.detach {
        start_monitor(root, &dirs, Start::New)?;
        return Ok(RunOutcome::Detached(id));
    }
    // Until it runs, no other command may start or remove it.
    let lock = dirs.command_lock().map_err(CliError::runtime)?;
    let result = run_container(
        started,
        selection.kind,
        &dirs,
        true,
        opts.interactive,
        Some(lock),
    );
    let code = result.as_ref().map_or_else(|e| e.code, |c| *c);
    // A process that ran and whose policy brings it back is handed to a monitor, as
    // Docker's daemon would take over after an attached `run`.
    if !hand_to_monitor(root, &dirs, code) {
        finish(&dirs, opts.rm, &result);
    }
    result.map(RunOutcome::Exited)
}

/// After an attached run whose process ran and ended with `code`: if the restart policy brings
/// it back, hands the container to a monitor (as Docker's daemon takes over after an attached
/// `run`) and returns true; false when the caller is to finish the container itself.
fn hand_to_monitor(root: &Path, dirs: &ContainerDirs, code: i32) -> bool {
    let restarts = dirs.load().is_ok_and(|rec| {
        rec.started_at.is_some()
            && rec
                .restart_policy
                .should_restart(code, rec.restart_count, rec.manual_stop)
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
fn prepare_start(dirs: &ContainerDirs) -> Result<ContainerRecord, CliError> {
    dirs.update(|r| {
        r.status = "created".into();
        r.error = None;
        r.manual_stop = false;
        r.paused = false;
        r.vm_pids.clear();
        r.started_at = None;
    })
    .map_err(CliError::runtime)
}

/// Records that the policy restarts the container after its process ended with `code`.
fn mark_restarting(dirs: &ContainerDirs, code: i32) {
    let _ = dirs.update(|r| {
        r.status = "restarting".into();
        r.exit_code = Some(code);
        r.restart_count += 1;
        r.finished_at = Some(mvm_rootfs::time::now());
        r.paused = false;
        r.vm_pids.clear();
    });
}

/// Records how a container ended, or removes it (`--rm`, or it never ran).
fn finish(dirs: &ContainerDirs, auto_remove: bool, result: &Result<i32, CliError>) {
    let rec = dirs.load().ok();
    let ran = rec.as_ref().is_some_and(|r| r.started_at.is_some());
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
        Err(e) => (e.code, Some(e.to_string())),
    };
    let _ = dirs.update(|rec| {
        rec.status = "exited".into();
        rec.exit_code = Some(code);
        rec.finished_at = Some(mvm_rootfs::time::now());
        rec.error = error;
        rec.paused = false;
        rec.vm_pids.clear();
    });
    let _ = std::fs::remove_dir_all(&dirs.run);
}

/// Parses a signal as images and users write it: `SIGTERM`, `TERM` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return None,
    };
    Some(n)
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
fn spawn_monitor(root: &Path, dirs: &ContainerDirs) -> Result<std::process::Child, CliError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(CliError::runtime)?;
    let id = dirs.load().map_err(CliError::runtime)?.id;
    let log = std::fs::File::create(dirs.dir.join("monitor.log")).map_err(CliError::runtime)?;
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
        .map_err(|e| CliError::runtime(format!("cannot start the monitor: {e}")))
}

/// `run -d`, `start`: hands the container to a monitor process that outlives this command,
/// and returns once the container runs (or failed to start).
pub fn start_monitor(root: &Path, dirs: &ContainerDirs, kind: Start) -> Result<i32, CliError> {
    prepare_start(dirs)?;
    let gave_up = |err: CliError| {
        match kind {
            Start::New => dirs.remove(),
            Start::Existing => {
                let msg = err.to_string();
                let _ = dirs.update(|r| {
                    r.status = "exited".into();
                    r.error = Some(msg);
                    r.exit_code = Some(err.code);
                    r.finished_at = Some(mvm_rootfs::time::now());
                });
                let _ = std::fs::remove_dir_all(&dirs.run);
            }
        }
        Err(err)
    };
    let mut child = spawn_monitor(root, dirs)?;
    let deadline = std::time::Instant::now() + AGENT_TIMEOUT + Duration::from_secs(10);
    loop {
        let rec = dirs.load().map_err(CliError::runtime)?;
        if let Some(err) = rec.error {
            let _ = child.wait();
            return gave_up(CliError::with_code(rec.exit_code.unwrap_or(125), err));
        }
        if rec.status != "created" {
            // The monitor is reaped by init once we exit.
            return Ok(0);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let why = backend::log_tail(&dirs.dir.join("monitor.log"));
            return gave_up(CliError::runtime(format!(
                "the container's monitor exited ({status}): {why}"
            )));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return gave_up(CliError::runtime("timed out starting the container"));
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
) -> Result<i32, CliError> {
    let rec = prepare_start(dirs)?;
    let kind = backend::Kind::from_name(&rec.backend).unwrap_or(backend::Kind::QemuTcg);
    let result = run_container(
        std::time::Instant::now(),
        kind,
        dirs,
        true,
        interactive,
        Some(lock),
    );
    let code = result.as_ref().map_or_else(|e| e.code, |c| *c);
    if hand_to_monitor(root, dirs, code) {
        return result;
    }
    if dirs.load().is_ok_and(|r| r.started_at.is_none()) {
        // It never ran: keep the container (it existed before this command), record why.
        let (code, msg) = match &result {
            Ok(c) => (*c, None),
            Err(e) => (e.code, Some(e.to_string())),
        };
        let _ = dirs.update(|r| {
            r.status = "exited".into();
            r.exit_code = Some(code);
            r.error = msg;
            r.finished_at = Some(mvm_rootfs::time::now());
        });
        let _ = std::fs::remove_dir_all(&dirs.run);
        return result;
    }
    finish(dirs, rec.auto_remove, &result);
    result
}

/// The hidden `__monitor ID` command: runs a detached container to its end, restarting it
/// as its policy says.
pub fn monitor(root: &Path, id: &str) -> i32 {
    let dirs = ContainerDirs::new(root, id);
    let Ok(rec) = dirs.load() else {
        return 125;
    };
    let kind = backend::Kind::from_name(&rec.backend).unwrap_or(backend::Kind::QemuTcg);
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let t0 = std::time::Instant::now();
        let result = run_container(t0, kind, &dirs, false, false, None);
        let rec = match dirs.load() {
            Ok(r) => r,
            Err(_) => return 125,
        };
        if let Err(e) = &result
            && rec.status == "created"
        {
            // It never started: tell the waiting command why; it decides what stays.
            let (msg, code) = (e.to_string(), e.code);
            let _ = dirs.update(|r| {
                r.error = Some(msg);
                r.exit_code = Some(code);
            });
            return code;
        }
        let code = result.as_ref().map_or_else(|e| e.code, |c| *c);
        if !rec
            .restart_policy
            .should_restart(code, rec.restart_count, rec.manual_stop)
        {
            finish(&dirs, rec.auto_remove, &result);
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
            if dirs.load().is_ok_and(|r| r.manual_stop) {
                finish(&dirs, rec.auto_remove, &result);
                return code;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
) -> Result<i32, CliError> {
    let rec = dirs.load().map_err(CliError::runtime)?;
    raise_nofile();
    // The writable disk is made once and kept across restarts, as a container's layer is.
    let upper = dirs.dir.join("upper.ext4");
    if !upper.exists() {
        let tmp = dirs.dir.join("upper.ext4.tmp");
        mvm_rootfs::disk::create_writable_disk(&tmp, UPPER_DISK_BYTES)
            .map_err(CliError::runtime)?;
        std::fs::rename(&tmp, &upper).map_err(CliError::runtime)?;
    }
    let spec = VmSpec {
        kernel: rec.kernel.clone(),
        cmdline: kernel_cmdline(
            &container_boot_config(&rec.hostname, rec.debug, &rec.endpoints, &rec.mounts)?,
            rec.debug,
        )
        .map_err(CliError::runtime)?,
        vcpus: rec.vcpus,
        mem_mib: rec.mem_mib,
        disks: container_disks(&rec, upper, false),
        run_dir: dirs.run.clone(),
        // Filled in once the TAPs exist.
        nics: Vec::new(),
        shares: Vec::new(),
    };
    // Block the forwarded signals before any thread or child exists, so the session's
    // forwarding thread receives them (children unblock them in pre_exec).
    session::forwarded_signals()
        .thread_block()
        .map_err(|e| CliError::runtime(format!("cannot block signals: {e}")))?;
    tracing::debug!("phase prepared {:?}", started.elapsed());
    let t0 = std::time::Instant::now();
    // Sockets of an earlier run of this container are stale: start from an empty directory.
    let _ = std::fs::remove_dir_all(&spec.run_dir);
    std::fs::create_dir_all(spec.vm_dir()).map_err(CliError::runtime)?;
    let callback = spec
        .vsock_path()
        .with_file_name(format!("vsock.sock_{DEFAULT_CALLBACK_PORT}"));
    let listener = std::os::unix::net::UnixListener::bind(&callback)
        .map_err(|e| CliError::runtime(format!("cannot listen on {}: {e}", callback.display())))?;
    let control = std::os::unix::net::UnixListener::bind(dirs.control_path())
        .map_err(|e| CliError::runtime(format!("cannot create the control socket: {e}")))?;
    let spares = spare_nics(kind, &rec)?;
    let net = NetworkUp::bring_up(dirs, &rec, spares)?;
    let (daemons, shares) = start_shares(dirs, &rec)?;
    let spec = VmSpec {
        shares,
        nics: net.nics.clone(),
        ..spec
    };
    let mut vm = backend::start(kind, &spec).map_err(CliError::runtime)?;
    for d in &daemons {
        vm.adopt(d.watched().pid);
    }
    tracing::debug!("phase vm_started {:?}", t0.elapsed());
    let stream = session::accept_agent(&mut vm, &listener, AGENT_TIMEOUT, &spec.console_path())
        .map_err(CliError::runtime)?;
    tracing::debug!("phase agent_ready {:?}", t0.elapsed());
    // From here, the death of any of the VM's processes ends the session at once (its reason
    // goes to the record) rather than leaving an "Up" container nobody can reach.
    let cut = stream.try_clone().map_err(CliError::runtime)?;
    let mut watched = vm.watched();
    watched.extend(daemons.iter().map(|d| d.watched()));
    let watch = backend::watch::start(watched, move || {
        let _ = cut.shutdown(std::net::Shutdown::Both);
    })
    .map_err(|e| CliError::runtime(format!("cannot watch the VM's processes: {e}")))?;
    let vm_pids = vm.pids();
    let mark_running = move || {
        if let Err(e) = dirs.update(|r| {
            r.status = "running".into();
            r.pid = Some(std::process::id());
            r.started_at = Some(mvm_rootfs::time::now());
            r.vm_pids = vm_pids;
        }) {
            tracing::warn!("cannot record the container as running: {e}");
        }
        drop(lock);
    };
    let process = ProcessSpec {
        args: rec.args.clone(),
        env: rec.env.clone(),
        cwd: rec.cwd.clone(),
        user: rec.user.clone(),
        terminal: rec.tty,
        // Created with -i, the process's stdin stays open for whoever attaches, as Docker's.
        stdin: rec.interactive || (attached && interactive),
        rlimits: Vec::new(),
    };
    let raw = if attached && rec.tty && interactive && crate::terminal::is_tty(0) {
        crate::terminal::RawMode::enable()
    } else {
        None
    };
    let log = rec
        .log
        .map(|opts| crate::logs::LogWriter::open(&dirs.log_path(), opts))
        .transpose()
        .map_err(|e| CliError::runtime(format!("cannot open the container log: {e}")))?;
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
            open_stdin: rec.interactive || (attached && interactive),
            tty: rec.tty,
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
    if rec.debug {
        let _ = std::fs::copy(spec.console_path(), dirs.root.join("last-console.log"));
    }
    match result {
        Ok(code) => Ok(code),
        // As a container whose processes were killed: 137, with the reason.
        Err(_) if let Some(why) = died => Err(CliError::with_code(
            137,
            format!("the microVM ended: {why}"),
        )),
        Err(session::SessionError::StartFailed { code, message }) => {
            Err(CliError::with_code(code, message))
        }
        Err(e) => Err(CliError::runtime(e)),
    }
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
fn spare_nics(kind: backend::Kind, rec: &ContainerRecord) -> Result<usize, CliError> {
    let shares = rec
        .mounts
        .iter()
        .filter(|m| m.kind != volume::mounts::Kind::Tmpfs)
        .count();
    // The agent's, the image's and the writable disk, and vsock.
    let fixed = 4 + rec.endpoints.len() + shares;
    let slots = kind.virtio_slots();
    if fixed > slots {
        return Err(CliError::runtime(format!(
            "the container needs {fixed} virtio devices ({} networks, {shares} volumes or bind mounts, 3 disks and vsock), and a microVM on the {} backend has {slots}",
            rec.endpoints.len(),
            kind.name()
        )));
    }
    Ok(network::spare_nic_count().min(slots - fixed))
}

/// Starts a virtiofsd for each volume and bind mount of the container (host-side read-only
/// for `:ro`), in mount order.
fn start_shares(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
) -> Result<(Vec<volume::virtiofsd::Daemon>, Vec<backend::Share>), CliError> {
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
        if !dir.is_dir() {
            return Err(CliError::runtime(format!(
                "cannot mount {} at {}: {} is not a directory",
                m.source,
                m.target,
                dir.display()
            )));
        }
        let socket = dirs.run.join(format!("fs{i}.sock"));
        let log = dirs.run.join(format!("virtiofsd-{i}.log"));
        let d = volume::virtiofsd::start(&dir, &socket, m.read_only, &log)
            .map_err(CliError::runtime)?;
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
    ) -> Result<Self, CliError> {
        let mut up = NetworkUp {
            taps: Vec::new(),
            nics: Vec::new(),
            dns: Vec::new(),
            bound: Vec::new(),
            ports: rec.ports.clone(),
            guest: rec.endpoints.first().and_then(|e| e.ip.parse().ok()),
            proxies: None,
        };
        let root = dirs.root.as_path();
        for e in &rec.endpoints {
            {
                let _lock = network::lock(root).map_err(CliError::runtime)?;
                let all = network::list(root);
                let net = all
                    .iter()
                    .find(|n| n.id == e.network_id)
                    .ok_or_else(|| CliError::runtime(format!("network {} not found", e.network)))?;
                network::host::ensure_bridge(net, &all).map_err(CliError::runtime)?;
                network::host::create_tap(&e.tap, &net.bridge).map_err(CliError::runtime)?;
                up.taps.push(e.tap.clone());
                let gw: std::net::Ipv4Addr = net.gateway.parse().map_err(|_| {
                    CliError::runtime(format!("network {} has a bad gateway", net.name))
                })?;
                let names = network::dns::Names::new(root, &net.id);
                up.dns.push((
                    net.id.clone(),
                    network::dns::serve(gw, names).map_err(CliError::runtime)?,
                ));
            }
        }
        // Spare interfaces for `network connect` while the VM runs.
        let nics = network::vm_nics(rec, spares);
        for n in &nics {
            if !up.taps.contains(&n.tap) {
                network::host::create_spare_tap(&n.tap).map_err(CliError::runtime)?;
                up.taps.push(n.tap.clone());
            }
        }
        up.nics = nics.clone();
        dirs.update(|r| r.nics = nics).map_err(CliError::runtime)?;
        up.bound = network::ports::bind_all(&mut up.ports).map_err(CliError::runtime)?;
        if !up.ports.is_empty() {
            let ports = up.ports.clone();
            dirs.update(|r| r.ports = ports)
                .map_err(CliError::runtime)?;
        }
        Ok(up)
    }

    /// After `network connect` or `disconnect`: a DNS server for each network the record
    /// lists, none for the others, and the published ports proxied to the (maybe new) first
    /// network's address.
    fn follow_record(&mut self, dirs: &ContainerDirs) -> Result<(), String> {
        let rec = dirs.load()?;
        let root = dirs.root.as_path();
        if let (Some(proxies), Some(first)) = (&self.proxies, rec.endpoints.first())
            && let Ok(ip) = first.ip.parse()
        {
            proxies.set_guest(ip);
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
            let gw: std::net::Ipv4Addr = e
                .gateway
                .parse()
                .map_err(|_| format!("network {} has a bad gateway", e.network))?;
            let names = network::dns::Names::new(root, &e.network_id);
            self.dns
                .push((e.network_id.clone(), network::dns::serve(gw, names)?));
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
            ip: ip.into(),
            prefix: 16,
            gateway: gw.into(),
            mac: mac.into(),
            ..network::Endpoint::default()
        };
        let mount = |kind, target: &str, read_only, options: &str| MountSpec {
            kind,
            source: "src".into(),
            target: target.into(),
            read_only,
            options: options.into(),
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
            container_boot_config("a b", false, &[], &[])
                .and_then(|c| { kernel_cmdline(&c, false).map_err(CliError::runtime) })
                .is_err()
        );
        assert!(
            container_boot_config("w", false, &[ep("10.88.0.2", "10.88.0.1", "x")], &[]).is_err()
        );
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m").unwrap(), 512);
        assert_eq!(parse_memory("1g").unwrap(), 1024);
        assert_eq!(parse_memory("1GB").unwrap(), 1024);
        assert_eq!(parse_memory("134217728").unwrap(), 128);
        assert!(parse_memory("10m").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999999g").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 2);
        assert_eq!(parse_cpus("2").unwrap(), 2);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("64").is_err());
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

//! `mvm run` and `mvm create`'s flags, and the one [`ContainerSpec`] they make.

use std::path::{Path, PathBuf};

use clap::Args;
use mvm_engine::Engine;
use mvm_engine::container::process_opts;
use mvm_engine::container::spec::{self, ContainerSpec, LogConfig, Resources, SpecError};
use mvm_engine::network::ports;

use crate::error::CliError;
use mvm_engine::run::{RunMode, RunOutcome};
use mvm_engine::volume::mounts;

/// The flags `run` and `create` share. `-h` is `--hostname`, as in Docker; help is `--help`.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true, disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Memory of the microVM (e.g. 512m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs (rounded up to whole vCPUs).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Logging driver: json-file (the default and only one with `logs`) or none.
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options: max-size=SIZE (default 20m), max-file=N (default 5).
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Connect a container to a network (bridge, none, or a network's name).
    #[arg(long = "network", visible_alias = "net")]
    pub network: Option<String>,
    /// Add network-scoped alias for the container.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Publish a container's port(s) to the host: [IP:][HOST:]CONTAINER[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Bind mount a volume: [NAME|/HOST/DIR:]/CONTAINER/PATH[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=..,target=..[,readonly].
    #[arg(long = "mount")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory: /PATH[:size=64m,mode=1777].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Set metadata on a container (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Read in a line delimited file of labels.
    #[arg(long = "label-file")]
    pub label_file: Vec<PathBuf>,
    /// Signal to stop the container (SIGTERM by default, or the image's).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the container to stop before it is killed (10 by default).
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    /// Add Linux capabilities.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges (every capability) to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem as read only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Ulimit options: NAME=SOFT[:HARD].
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Sysctl options: KEY=VALUE (the VM's own kernel: any parameter).
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Add a custom host-to-IP mapping (NAME:IP).
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// Size of /dev/shm (64m by default).
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Add a host device (refused: a microVM's kernel has its own devices).
    #[arg(long)]
    pub device: Vec<String>,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// A bad flag: the spec's own errors, and files the flags name.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A value the spec refuses.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `--env-file` cannot be read.
    #[error("open {path}: {source}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RunArgs {
    /// The container these flags describe; every value is checked here, before anything is
    /// created.
    pub fn spec(&self) -> Result<ContainerSpec, FlagError> {
        let mut resources = Resources::default();
        if let Some(m) = &self.memory {
            resources.memory_mib = spec::parse_memory(m)?;
        }
        if let Some(c) = &self.cpus {
            resources.vcpus = spec::parse_cpus(c)?;
        }
        let restart = self
            .restart
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let log = LogConfig::parse(self.log_driver.as_deref(), &self.log_opt)?;
        let network = self
            .network
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let ports = self
            .publish
            .iter()
            .map(|p| ports::parse(p).map_err(SpecError::Port))
            .collect::<Result<Vec<_>, _>>()?;
        let mut all_mounts = Vec::new();
        for v in &self.volume {
            all_mounts.push(mounts::parse_volume(v).map_err(SpecError::Mount)?);
        }
        for m in &self.mount {
            all_mounts.push(mounts::parse_mount(m).map_err(SpecError::Mount)?);
        }
        for t in &self.tmpfs {
            all_mounts.push(mounts::parse_tmpfs(t).map_err(SpecError::Mount)?);
        }
        // `--env-file`s first, then `-e`: later keys win, as Docker.
        let mut env = Vec::new();
        for f in &self.env_file {
            env.extend(read_env_file(f)?);
        }
        env.extend(self.env.iter().filter_map(|w| resolve_env_word(w)));
        // `--label-file`s first, then `-l`: later keys win. A bare key has an empty value.
        let mut labels = std::collections::BTreeMap::new();
        let mut label_words = Vec::new();
        for f in &self.label_file {
            label_words.extend(read_env_file_lines(f)?);
        }
        label_words.extend(self.label.iter().cloned());
        for w in label_words {
            let (k, v) = w.split_once('=').unwrap_or((&w, ""));
            labels.insert(k.to_string(), v.to_string());
        }
        let spec = ContainerSpec {
            image: self.image.clone(),
            name: self.name.clone(),
            // Docker's --entrypoint is one word; an empty one clears the image's.
            entrypoint: self.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    Vec::new()
                } else {
                    vec![e.clone()]
                }
            }),
            command: self.command.clone(),
            env,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            tty: self.tty,
            interactive: self.interactive,
            resources,
            restart,
            auto_remove: self.rm,
            log,
            log_opts: self.log_opt.clone(),
            network,
            network_aliases: self.network_alias.clone(),
            ports,
            publish_all: self.publish_all,
            mounts: all_mounts,
            labels,
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            cap_add: capabilities(&self.cap_add)?,
            cap_drop: capabilities(&self.cap_drop)?,
            privileged: self.privileged,
            read_only: self.read_only,
            init: self.init,
            ulimits: self
                .ulimit
                .iter()
                .map(|u| process_opts::parse_ulimit(u))
                .collect::<Result<_, _>>()?,
            sysctls: self
                .sysctl
                .iter()
                .map(|s| process_opts::parse_sysctl(s))
                .collect::<Result<_, _>>()?,
            extra_hosts: self
                .add_host
                .iter()
                .map(|h| process_opts::parse_host(h))
                .collect::<Result<_, _>>()?,
            dns: self
                .dns
                .iter()
                .map(|d| d.parse().map_err(|_| SpecError::Dns(d.clone())))
                .collect::<Result<_, _>>()?,
            dns_search: self.dns_search.clone(),
            dns_options: self.dns_option.clone(),
            shm_size: self
                .shm_size
                .as_deref()
                .map(|s| {
                    // Docker's size words (`64m`, `1g`, bytes) as the agent's tmpfs reads them.
                    let lower = s.to_ascii_lowercase();
                    let word = lower.strip_suffix('b').unwrap_or(&lower);
                    mvm_agent_protocol::boot::parse_tmpfs_size(word)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| SpecError::ShmSize(s.to_string()))
                })
                .transpose()?,
        };
        if let Some(d) = self.device.first() {
            return Err(SpecError::Device(d.clone()).into());
        }
        for d in self.dns_search.iter().chain(&self.dns_option) {
            if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == ',') {
                return Err(SpecError::Dns(d.clone()).into());
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// `mvm run` and `mvm create`, which take the same options.
pub fn run_or_create(engine: &Engine, a: &RunArgs, create_only: bool) -> Result<i32, CliError> {
    if create_only && a.detach {
        return Err(CliError::usage("unknown shorthand flag: 'd' in -d".into()));
    }
    // As Docker's CLI: -it needs a terminal to read (a pipe would never end the session).
    if !create_only && !a.detach && a.tty && a.interactive && !mvm_engine::terminal::is_tty(0) {
        return Err(CliError::with_code(
            1,
            "the input device is not a TTY".into(),
        ));
    }
    let spec = a.spec().map_err(|e| match e {
        // The daemon's check in Docker: `create` exits 1 for it, `run` 125.
        FlagError::Spec(SpecError::Name(_)) if create_only => CliError::with_code(1, e.to_string()),
        e => CliError::usage(e.to_string()),
    })?;
    if let Some(w) = &engine.backend()?.warning {
        eprintln!("mvm: warning: {w}");
    }
    let mode = match (create_only, a.detach) {
        (true, _) => RunMode::Create,
        (false, true) => RunMode::Detach,
        (false, false) => RunMode::Attach,
    };
    let outcome = engine.run(spec, mode, &crate::cli::Terminal).map_err(|e| {
        let mut e = CliError::from(e);
        // Docker's `create` exits 1 for what the daemon refuses (`run` keeps 125).
        if create_only && e.code == crate::error::EXIT_RUNTIME {
            e.code = 1;
        }
        e
    })?;
    match outcome {
        RunOutcome::Created(id) | RunOutcome::Detached(id) => {
            println!("{id}");
            Ok(0)
        }
        RunOutcome::Exited(code) => Ok(code),
    }
}

/// `--cap-add`/`--cap-drop` values in the kernel's spelling.
fn capabilities(words: &[String]) -> Result<Vec<String>, SpecError> {
    words
        .iter()
        .map(|w| process_opts::capability_name(w).ok_or_else(|| SpecError::Capability(w.clone())))
        .collect()
}

fn read_env_file(path: &Path) -> Result<Vec<String>, FlagError> {
    Ok(read_env_file_lines(path)?
        .iter()
        .filter_map(|w| resolve_env_word(w))
        .collect())
}

/// The lines of an `--env-file` or `--label-file` without blanks and comments.
fn read_env_file_lines(path: &Path) -> Result<Vec<String>, FlagError> {
    let text = std::fs::read_to_string(path).map_err(|source| FlagError::EnvFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mvm_engine::container::{NetworkMode, RestartPolicy};

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        run: RunArgs,
    }

    fn spec_of(args: &[&str]) -> Result<ContainerSpec, String> {
        let cmd = Cmd::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cmd.run.spec().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_make_one_spec() {
        let s = spec_of(&[
            "--rm",
            "-i",
            "-t",
            "-e",
            "A=1",
            "-w",
            "/w",
            "-u",
            "1:2",
            "--entrypoint",
            "",
            "--hostname",
            "h",
            "-m",
            "1g",
            "--cpus",
            "1.5",
            "--name",
            "n1",
            "-l",
            "a=b",
            "--label",
            "bare",
            "--stop-signal",
            "SIGUSR1",
            "--stop-timeout",
            "3",
            "--log-opt",
            "max-file=2",
            "--network",
            "web",
            "--network-alias",
            "db",
            "-p",
            "8080:80",
            "-P",
            "-v",
            "/src:/dst:ro",
            "--tmpfs",
            "/t",
            "busybox",
            "sh",
            "-c",
            "true",
        ])
        .unwrap();
        assert_eq!(s.image, "busybox");
        assert_eq!(s.command, ["sh", "-c", "true"]);
        assert_eq!(s.entrypoint, Some(vec![]));
        assert_eq!(s.env, ["A=1"]);
        assert_eq!(s.workdir.as_deref(), Some("/w"));
        assert_eq!(s.user.as_deref(), Some("1:2"));
        assert_eq!(s.hostname.as_deref(), Some("h"));
        assert!(s.auto_remove && s.interactive && s.tty && s.publish_all);
        assert_eq!(
            s.resources,
            Resources {
                memory_mib: 1024,
                vcpus: 2
            }
        );
        assert_eq!(s.restart, RestartPolicy::No);
        assert_eq!(s.log.json_file().map(|o| o.max_file), Some(2));
        assert_eq!(s.network, NetworkMode::Named("web".into()));
        assert_eq!(s.network_aliases, ["db"]);
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[0].container_port, 80);
        assert_eq!(s.mounts.len(), 2);
        assert!(s.mounts[0].read_only);
        assert_eq!(
            s.labels,
            [
                ("a".to_string(), "b".to_string()),
                ("bare".into(), String::new())
            ]
            .into()
        );
        assert_eq!(
            (s.stop_signal.as_deref(), s.stop_timeout),
            (Some("SIGUSR1"), Some(3))
        );
        // Docker's names: two characters at least; a signal must be one.
        assert!(spec_of(&["--name", "n", "busybox"]).is_err());
        assert!(spec_of(&["--stop-signal", "SIGNOPE", "busybox"]).is_err());
    }

    #[test]
    fn defaults() {
        let s = spec_of(&["busybox"]).unwrap();
        assert_eq!(s.resources, Resources::default());
        assert_eq!(s.network, NetworkMode::Bridge);
        assert_eq!(s.log, LogConfig::default());
        assert_eq!(s.entrypoint, None);
        assert!(s.command.is_empty() && s.env.is_empty() && s.mounts.is_empty());
    }

    #[test]
    fn every_bad_flag_is_refused_with_its_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["-m", "lots"], "invalid memory size \"lots\""),
            (&["-m", "1m"], "minimum memory for a microVM is 64m"),
            (&["--cpus", "two"], "invalid --cpus \"two\""),
            (&["--cpus", "0"], "--cpus must be between"),
            (&["--restart", "sometimes"], "invalid restart policy"),
            (
                &["--restart", "always:2"],
                "can only be used with 'on-failure'",
            ),
            (&["--restart", "on-failure:x"], "must be a number"),
            (&["--log-driver", "syslog"], "unknown log driver"),
            (
                &["--log-driver", "none", "--log-opt", "max-file=2"],
                "takes no --log-opt",
            ),
            (&["--log-opt", "max-size=huge"], "max-size"),
            (&["--log-opt", "colour=blue"], "colour"),
            (&["--network", "host"], "--network host cannot share"),
            (
                &["--network", "none", "-p", "80"],
                "published ports need a network",
            ),
            (
                &["--network", "none", "-P"],
                "published ports need a network",
            ),
            (
                &["--network-alias", "db"],
                "only for containers in user-defined networks",
            ),
            (
                &["--network", "web", "--network-alias=-x"],
                "invalid network alias",
            ),
            (
                &["--rm", "--restart", "always"],
                "Conflicting options: --restart and --rm",
            ),
            (&["--name", "a b"], "invalid container name"),
            (&["--hostname", "a_b"], "invalid hostname"),
            (&["-p", "80000"], "80000"),
            (&["-p", "1-2:3"], "range"),
            (&["-v", "/a:relative"], "relative"),
            (&["-v", "/a:/b", "-v", "/c:/b"], "/b"),
            (&["--mount", "type=nfs,target=/x"], "nfs"),
            (&["--tmpfs", "/proc"], "/proc"),
            (&["--env-file", "/nonexistent/env"], "open /nonexistent/env"),
        ];
        for (flags, want) in cases {
            let mut args = flags.to_vec();
            args.push("busybox");
            let err = spec_of(&args).expect_err(&format!("{flags:?} was accepted"));
            assert!(
                err.contains(want),
                "{flags:?}: {err:?} does not say {want:?}"
            );
            assert!(
                !err.contains('\n'),
                "{flags:?}: more than one line: {err:?}"
            );
        }
    }

    #[test]
    fn env_files_come_before_e_and_bare_names_take_the_hosts_value() {
        let dir = std::env::temp_dir().join(format!("mvm-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        std::fs::write(&f, "# comment\n\nA=file\nB=file\nMVM_TEST_SURELY_UNSET\n").unwrap();
        let s = spec_of(&[
            "--env-file",
            f.to_str().unwrap(),
            "-e",
            "A=flag",
            "-e",
            "PATH",
            "busybox",
        ])
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            s.env,
            ["A=file", "B=file", "A=flag", &format!("PATH={path}")]
        );
    }
}

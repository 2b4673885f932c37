//! `mvm build`: a Dockerfile's stages built into images, each RUN inside a microVM on the
//! current root (image disk + writable disk, the same agent as `run`), each COPY and ADD as a
//! layer made on the host, each metadata instruction as a config-only step. A cache keyed by
//! parent image, instruction, build arguments and COPY contents skips steps (and VM boots)
//! that were done before.

mod cache;
/// Public so that the fuzz target (`fuzz/fuzz_targets/build_context.rs`) drives the real
/// COPY on hostile contexts rather than a copy of its walk.
pub mod copy;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use mvm_rootfs::dockerfile::{
    self, DockerIgnore, Dockerfile, Healthcheck, Instruction, InstructionKind, ShellOrExec,
};
use mvm_rootfs::image::ContainerConfig;
use mvm_rootfs::{ImageRecord, Reference, Store};
use serde_json::{Value, json};

use crate::backend::Selection;
use crate::error::EngineError;
use crate::report::Reporter;

fn failed(msg: impl std::fmt::Display) -> EngineError {
    EngineError::Build(msg.to_string())
}

/// Options of `mvm build`.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// `-t`, repeatable.
    pub tags: Vec<String>,
    /// `-f` (default CONTEXT/Dockerfile).
    pub file: Option<PathBuf>,
    /// `--build-arg K=V` (or `K`, taken from our environment).
    pub build_args: Vec<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--target`.
    pub target: Option<String>,
    /// `-q`: report no steps (the front end prints only the image ID).
    pub quiet: bool,
    /// The build context directory.
    pub context: PathBuf,
    /// `--network` for RUN instructions.
    pub network: crate::container::NetworkMode,
}

/// One stage's state while it builds.
struct StageState {
    image: Option<ImageRecord>,
    config: ContainerConfig,
    shell: Vec<String>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
}

impl StageState {
    fn env_value(&self, name: &str) -> Option<String> {
        // ENV wins over ARG, as in Docker.
        self.config
            .env
            .iter()
            .flatten()
            .rev()
            .find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
            .or_else(|| self.args.get(name).cloned())
    }
}

struct Builder<'a> {
    root: &'a Path,
    report: &'a dyn Reporter,
    selection: &'a Selection,
    store: Store,
    opts: &'a BuildOptions,
    debug: bool,
    escape: char,
    build_args: BTreeMap<String, String>,
    ignore: Option<DockerIgnore>,
    /// The context, opened once: every COPY resolves its sources under this descriptor.
    context: std::os::fd::OwnedFd,
    /// Results of finished stages, by index and by name.
    stages: Vec<(Option<String>, Option<ImageRecord>)>,
    step: usize,
    total: usize,
    /// `(/etc/passwd, /etc/group)` of the images `--chown` looked names up in, by image ID:
    /// each is unpacked once per build, not once per COPY.
    id_files: HashMap<String, (String, String)>,
}

/// What a build made.
#[derive(Debug)]
pub struct Built {
    /// The image's ID.
    pub id: mvm_rootfs::Digest,
    /// The tags it was given (`-t`), as normalised names.
    pub tags: Vec<String>,
}

/// Builds the Dockerfile of `opts.context`; steps go to `report` unless `opts.quiet`.
pub fn build(
    root: &Path,
    selection: &Selection,
    opts: &BuildOptions,
    debug: bool,
    report: &dyn Reporter,
) -> Result<Built, EngineError> {
    let context = opts.context.canonicalize().map_err(|e| {
        EngineError::usage(format!(
            "unable to prepare context: path {:?} not found: {e}",
            opts.context
        ))
    })?;
    if !context.is_dir() {
        return Err(EngineError::usage(format!(
            "unable to prepare context: {} is not a directory",
            context.display()
        )));
    }
    // The context is hostile: its Dockerfile and .dockerignore are read inside it, links
    // followed only within it. A `-f` file is the user's own choice of host path.
    let ctx_root = mvm_rootfs::beneath::open_root(&context).map_err(|e| {
        EngineError::usage(format!(
            "unable to prepare context: {}: {e}",
            context.display()
        ))
    })?;
    let file = opts
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let text = match &opts.file {
        Some(f) => std::fs::read(f),
        None => mvm_rootfs::beneath::read_file(ctx_root.as_fd(), Path::new("Dockerfile"))
            .and_then(|d| d.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))),
    }
    .and_then(|d| {
        String::from_utf8(d).map_err(|_| std::io::Error::other("the Dockerfile is not UTF-8 text"))
    })
    .map_err(|e| failed(format!("failed to read {}: {e}", file.display())))?;
    let df = dockerfile::parse(&text).map_err(|e| failed(format!("{}: {e}", file.display())))?;
    let ignore = mvm_rootfs::beneath::read_file(ctx_root.as_fd(), Path::new(".dockerignore"))
        .map_err(|e| failed(format!("failed to read .dockerignore: {e}")))?
        .map(|t| DockerIgnore::parse(&String::from_utf8_lossy(&t)));
    let mut build_args = BTreeMap::new();
    for a in &opts.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => std::env::var(a)
                .ok()
                .and_then(|v| build_args.insert(a.clone(), v)),
        };
    }
    let tags: Vec<String> = opts
        .tags
        .iter()
        .map(|t| {
            Reference::parse(t)
                .ok()
                .and_then(|r| r.tagged_name())
                .ok_or_else(|| EngineError::usage(format!("invalid tag {t:?}: use NAME[:TAG]")))
        })
        .collect::<Result<_, _>>()?;
    let last = match &opts.target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| failed(format!("failed to reach build target {t} in Dockerfile")))?,
        None => df.stages.len().saturating_sub(1),
    };
    let store = Store::open(&root.join("images")).map_err(EngineError::runtime)?;
    let mut b = Builder {
        root,
        report,
        selection,
        store,
        opts,
        debug,
        escape: df.directives.escape,
        build_args,
        ignore,
        context: ctx_root,
        stages: Vec::new(),
        step: 0,
        id_files: HashMap::new(),
        total: df.stages[..=last]
            .iter()
            .map(|s| s.instructions.len() + 1)
            .sum(),
    };
    let mut result = None;
    for stage in &df.stages[..=last] {
        let image = b.build_stage(&df, stage)?;
        result = image.clone();
        b.stages.push((stage.name.clone(), image));
    }
    let Some(image) = result else {
        return Err(failed(
            "the build produced no image (FROM scratch with no instructions)",
        ));
    };
    {
        let _lock = b.store.lock().map_err(EngineError::runtime)?;
        // The result is an image of its own, listed by `images` even without a tag.
        mvm_rootfs::catalog::set_intermediate(&b.store, &image.manifest_digest, false)
            .map_err(EngineError::runtime)?;
    }
    for t in &tags {
        b.store
            .set_tag(t, &image.manifest_digest)
            .map_err(EngineError::runtime)?;
    }
    Ok(Built { id: image.id, tags })
}

impl Builder<'_> {
    fn say(&self, line: &str) {
        if !self.opts.quiet {
            self.report.output(line);
        }
    }

    fn expand(&self, st: &StageState, word: &str, line: usize) -> Result<String, EngineError> {
        dockerfile::expand(word, &|n| st.env_value(n), self.escape)
            .map_err(|e| failed(format!("Dockerfile:{line}: {e}")))
    }

    fn build_stage(
        &mut self,
        df: &Dockerfile,
        stage: &dockerfile::Stage,
    ) -> Result<Option<ImageRecord>, EngineError> {
        // FROM sees the global ARGs (defaults overridden by --build-arg).
        let mut globals = BTreeMap::new();
        for a in &df.global_args {
            let v = self
                .build_args
                .get(&a.name)
                .cloned()
                .or_else(|| a.default.clone())
                .unwrap_or_default();
            globals.insert(a.name.clone(), v);
        }
        let from = dockerfile::expand(&stage.from, &|n| globals.get(n).cloned(), self.escape)
            .map_err(|e| failed(format!("Dockerfile:{}: {e}", stage.from_line)))?;
        self.step += 1;
        self.say(&format!(
            "Step {}/{} : FROM {from}{}",
            self.step,
            self.total,
            stage
                .name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default()
        ));
        let base = if from == "scratch" {
            None
        } else if let Some(img) = self.stage_image(&from) {
            img
        } else {
            Some(
                crate::image::resolve_or_pull(self.root, &self.store, &from, self.report)
                    .map_err(|e| failed(e.to_string()))?,
            )
        };
        if let Some(b) = &base {
            self.say(&format!(" ---> {}", &b.id.hex()[..12]));
        }
        let mut st = StageState {
            config: base
                .as_ref()
                .map(|b| b.config.config.clone())
                .unwrap_or_default(),
            image: base,
            shell: vec!["/bin/sh".into(), "-c".into()],
            args: BTreeMap::new(),
        };
        for ins in &stage.instructions {
            self.step += 1;
            self.say(&format!(
                "Step {}/{} : {}",
                self.step, self.total, ins.original
            ));
            self.instruction(&mut st, ins, &globals)?;
        }
        Ok(st.image)
    }

    /// An earlier stage by name or index.
    fn stage_image(&self, key: &str) -> Option<Option<ImageRecord>> {
        let key = key.to_ascii_lowercase();
        if let Some((_, img)) = self
            .stages
            .iter()
            .find(|(n, _)| n.as_deref() == Some(key.as_str()))
        {
            return Some(img.clone());
        }
        key.parse::<usize>()
            .ok()
            .and_then(|i| self.stages.get(i))
            .map(|(_, img)| img.clone())
    }

    fn cache_key(&self, st: &StageState, ins: &str, extra: &str) -> String {
        let parent = st
            .image
            .as_ref()
            .map(|i| i.id.to_string())
            .unwrap_or_else(|| "scratch".into());
        let cfg = serde_json::to_string(&st.config).unwrap_or_default();
        cache::key(&[&parent, &cfg, ins, extra])
    }

    /// The cached result of a step, if any.
    fn cached(&self, key: &str) -> Option<ImageRecord> {
        if self.opts.no_cache {
            return None;
        }
        cache::lookup(self.root, &self.store, key)
    }

    /// Records a step's image as the stage's new state.
    /// Makes a step's image from the stage's: `config`, and the layer tarball at `layer` (removed
    /// afterwards) if there is one; then commits it under `key`.
    fn derive_step(
        &self,
        st: &mut StageState,
        key: &str,
        config: ContainerConfig,
        layer: Option<&Path>,
        created_by: &str,
    ) -> Result<(), EngineError> {
        let step = mvm_rootfs::derive::Step {
            config,
            created_by,
            comment: None,
            author: None,
            created: &mvm_rootfs::time::now(),
            tags: &[],
            intermediate: true,
        };
        let image = match layer {
            Some(tmp) => {
                let image = std::fs::File::open(tmp)
                    .map_err(EngineError::runtime)
                    .and_then(|mut f| {
                        mvm_rootfs::derive::derive(
                            &self.store,
                            st.image.as_ref(),
                            Some(&mut f),
                            &step,
                        )
                        .map_err(EngineError::runtime)
                    });
                let _ = std::fs::remove_file(tmp);
                image?
            }
            None => mvm_rootfs::derive::derive(&self.store, st.image.as_ref(), None, &step)
                .map_err(EngineError::runtime)?,
        };
        self.commit_step(st, key, image);
        Ok(())
    }

    fn commit_step(&self, st: &mut StageState, key: &str, image: ImageRecord) {
        cache::store(self.root, key, &image);
        self.say(&format!(" ---> {}", &image.id.hex()[..12]));
        st.config = image.config.config.clone();
        st.image = Some(image);
    }

    fn instruction(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        globals: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let line = ins.line;
        let mut cfg = st.config.clone();
        match &ins.kind {
            InstructionKind::Arg(decls) => {
                for d in decls {
                    let default = match &d.default {
                        Some(v) => Some(self.expand(st, v, line)?),
                        None => globals.get(&d.name).cloned().filter(|v| !v.is_empty()),
                    };
                    let v = self
                        .build_args
                        .get(&d.name)
                        .cloned()
                        .or(default)
                        .unwrap_or_default();
                    st.args.insert(d.name.clone(), v);
                }
                return Ok(());
            }
            InstructionKind::Run { cmd } => return self.run(st, ins, cmd),
            InstructionKind::Copy {
                sources,
                dest,
                from,
                chown,
                chmod,
                ..
            } => {
                return self.copy(
                    st,
                    ins,
                    sources,
                    dest,
                    from.as_deref(),
                    chown.as_deref(),
                    chmod.as_deref(),
                    false,
                );
            }
            InstructionKind::Add {
                sources,
                dest,
                chown,
                chmod,
                ..
            } => {
                return self.copy(
                    st,
                    ins,
                    sources,
                    dest,
                    None,
                    chown.as_deref(),
                    chmod.as_deref(),
                    true,
                );
            }
            InstructionKind::Env(pairs) => {
                let mut env = cfg.env.clone().unwrap_or_default();
                for (k, v) in pairs {
                    let k = self.expand(st, k, line)?;
                    // Later pairs see earlier ones, as Docker expands them in order.
                    let tmp = StageState {
                        config: ContainerConfig {
                            env: Some(env.clone()),
                            ..cfg.clone()
                        },
                        image: None,
                        shell: Vec::new(),
                        args: st.args.clone(),
                    };
                    let v = self.expand(&tmp, v, line)?;
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(a, _)| a) != k);
                    env.push(format!("{k}={v}"));
                }
                cfg.env = Some(env);
            }
            InstructionKind::Label(pairs) => {
                let labels = cfg.labels.get_or_insert_with(Default::default);
                for (k, v) in pairs {
                    labels.insert(self.expand(st, k, line)?, self.expand(st, v, line)?);
                }
            }
            InstructionKind::Workdir(w) => {
                let w = self.expand(st, w, line)?;
                cfg.working_dir = if w.starts_with('/') {
                    w
                } else {
                    format!(
                        "{}/{w}",
                        if cfg.working_dir.is_empty() {
                            ""
                        } else {
                            cfg.working_dir.trim_end_matches('/')
                        }
                    )
                };
            }
            InstructionKind::User(u) => cfg.user = self.expand(st, u, line)?,
            InstructionKind::Expose(ports) => {
                let map = cfg.exposed_ports.get_or_insert_with(Default::default);
                for p in ports {
                    let p = self.expand(st, p, line)?;
                    let key = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    let (num, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
                    if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(failed(format!(
                            "Dockerfile:{line}: invalid EXPOSE port {p:?}"
                        )));
                    }
                    map.insert(key, json!({}));
                }
            }
            InstructionKind::Volume(paths) => {
                let map = cfg.volumes.get_or_insert_with(Default::default);
                for p in paths {
                    map.insert(self.expand(st, p, line)?, json!({}));
                }
            }
            InstructionKind::Cmd(c) => cfg.cmd = Some(self.command(st, c)),
            InstructionKind::Entrypoint(c) => {
                cfg.entrypoint = Some(self.command(st, c));
                // As Docker: a new ENTRYPOINT resets a CMD inherited from the base.
                if st
                    .image
                    .as_ref()
                    .is_some_and(|i| i.config.config.cmd == cfg.cmd)
                {
                    cfg.cmd = None;
                }
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(st, s, line)?;
                if crate::container::spec::parse_signal(&s).is_none() {
                    return Err(failed(format!(
                        "Dockerfile:{line}: invalid STOPSIGNAL {s:?}"
                    )));
                }
                cfg.stop_signal = s;
            }
            InstructionKind::Shell(sh) => {
                st.shell = sh.clone();
                cfg.extra.insert("Shell".into(), json!(sh));
            }
            InstructionKind::Healthcheck(h) => {
                let v = match h {
                    Healthcheck::None => json!({ "Test": ["NONE"] }),
                    Healthcheck::Cmd(c) => {
                        let test: Vec<String> = match &c.test {
                            ShellOrExec::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                            ShellOrExec::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut m = serde_json::Map::new();
                        m.insert("Test".into(), json!(test));
                        for (k, d) in [
                            ("Interval", c.interval),
                            ("Timeout", c.timeout),
                            ("StartPeriod", c.start_period),
                            ("StartInterval", c.start_interval),
                        ] {
                            if let Some(d) = d {
                                m.insert(k.into(), json!(d.as_nanos() as u64));
                            }
                        }
                        if let Some(r) = c.retries {
                            m.insert("Retries".into(), json!(r));
                        }
                        Value::Object(m)
                    }
                };
                cfg.extra.insert("Healthcheck".into(), v);
            }
            InstructionKind::Onbuild(inner) => {
                let mut list: Vec<Value> = cfg
                    .extra
                    .get("OnBuild")
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default();
                list.push(json!(inner.original));
                cfg.extra.insert("OnBuild".into(), Value::Array(list));
            }
            InstructionKind::Maintainer(_) => {}
        }
        // A metadata step: a new config on the same layers.
        let key = self.cache_key(
            st,
            &ins.original,
            &serde_json::to_string(&cfg).unwrap_or_default(),
        );
        if let Some(img) = self.cached(&key) {
            self.say(" ---> Using cache");
            self.commit_step(st, &key, img);
            return Ok(());
        }
        let created_by = format!("/bin/sh -c #(nop) {}", ins.original);
        self.derive_step(st, &key, cfg, None, &created_by)
    }

    /// CMD/ENTRYPOINT/RUN argv: the exec form as is, the shell form through the SHELL.
    fn command(&self, st: &StageState, c: &ShellOrExec) -> Vec<String> {
        match c {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(s) => st
                .shell
                .iter()
                .cloned()
                .chain(std::iter::once(s.clone()))
                .collect(),
        }
    }

    fn run(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        cmd: &ShellOrExec,
    ) -> Result<(), EngineError> {
        let Some(base) = st.image.clone() else {
            return Err(failed(format!(
                "Dockerfile:{}: RUN needs a base image with a shell (the stage is FROM scratch with no files)",
                ins.line
            )));
        };
        let argv = self.command(st, cmd);
        // ARG values are in RUN's environment, and in its cache key.
        let env: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = self.cache_key(st, &ins.original, &env.join("\n"));
        if let Some(img) = self.cached(&key) {
            self.say(" ---> Using cache");
            self.commit_step(st, &key, img);
            return Ok(());
        }
        let name = format!(
            "mvm-build-{}",
            &crate::container::new_id().map_err(EngineError::runtime)?[..16]
        );
        self.say(&format!(" ---> Running in {name}"));
        let spec = crate::container::ContainerSpec {
            name: Some(name.clone()),
            image: base.id.to_string(),
            entrypoint: Some(Vec::new()),
            command: argv.clone(),
            env,
            network: self.opts.network.clone(),
            ..Default::default()
        };
        let layer = self.store.temp_path("build-layer");
        let quiet = self.opts.quiet.then(crate::terminal::SilenceStdout::start);
        let result = crate::run::run(
            self.root,
            self.selection,
            spec,
            crate::run::RunMode::Attach,
            Some(layer.clone()),
            self.debug,
            self.report,
        );
        drop(quiet);
        let shown = argv.join(" ");
        let found = crate::container::resolve(self.root, &name);
        let cleanup = || {
            if let Ok((dirs, _)) = crate::container::resolve(self.root, &name) {
                dirs.remove();
            }
        };
        let code = match result {
            Ok(crate::run::RunOutcome::Exited(c)) => c,
            Ok(other) => {
                cleanup();
                return Err(EngineError::runtime(format!(
                    "the step's container did not run attached: {other:?}"
                )));
            }
            Err(e) => {
                cleanup();
                return Err(failed(format!("The command '{shown}' could not run: {e}")));
            }
        };
        if code != 0 {
            cleanup();
            // Docker's builder ends with the step's own exit code.
            return Err(EngineError::with_code(
                code,
                format!("The command '{shown}' returned a non-zero code: {code}"),
            ));
        }
        let (dirs, _) = found.map_err(|e| failed(format!("the build container is gone: {e}")))?;
        dirs.remove();
        // The agent wrote the step's changes before its VM ended (no disk is mounted here).
        let tmp = layer;
        if !tmp.exists() {
            return Err(failed(format!(
                "The command '{shown}' ran but its changes were not handed over"
            )));
        }
        let created_by = format!(
            "/bin/sh -c {}",
            match cmd {
                ShellOrExec::Shell(s) => s.clone(),
                ShellOrExec::Exec(v) => format!("{v:?}"),
            }
        );
        let config = st.config.clone();
        self.derive_step(st, &key, config, Some(&tmp), &created_by)
    }

    /// `--chown` as numbers: names are looked up in the stage's own /etc/passwd and /etc/group,
    /// read inside its unpacked root (links followed only there), never through a mount.
    fn resolve_chown(
        &mut self,
        st: &StageState,
        spec: &str,
    ) -> Result<(u32, u32), copy::CopyError> {
        if let Ok(ids) = copy::parse_chown(spec) {
            return Ok(ids);
        }
        let img = st
            .image
            .as_ref()
            .ok_or_else(|| copy::CopyError::ChownNeedsImage {
                spec: spec.to_string(),
            })?;
        let key = img.id.to_string();
        if !self.id_files.contains_key(&key) {
            let root = copy::StageRoot::unpack(&self.store, img)?;
            let read = |file: &'static str| {
                mvm_rootfs::beneath::read_file(root.fd(), Path::new(file))
                    .map(|d| d.map(|d| String::from_utf8_lossy(&d).into_owned()))
                    .map(Option::unwrap_or_default)
                    .map_err(|source| copy::CopyError::IdFile {
                        spec: spec.to_string(),
                        file,
                        source,
                    })
            };
            let files = (read("/etc/passwd")?, read("/etc/group")?);
            self.id_files.insert(key.clone(), files);
        }
        let (passwd, group) = &self.id_files[&key];
        copy::parse_chown_names(spec, passwd, group)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        sources: &[String],
        dest: &str,
        from: Option<&str>,
        chown: Option<&str>,
        chmod: Option<&str>,
        add: bool,
    ) -> Result<(), EngineError> {
        let line = ins.line;
        let what = if add { "ADD" } else { "COPY" };
        let sources: Vec<String> = sources
            .iter()
            .map(|s| self.expand(st, s, line))
            .collect::<Result<_, _>>()?;
        let dest = self.expand(st, dest, line)?;
        let chown = match chown.map(|c| self.expand(st, c, line)).transpose()? {
            Some(c) => Some(
                self.resolve_chown(st, &c)
                    .map_err(|e| failed(format!("Dockerfile:{line}: {e}")))?,
            ),
            None => None,
        };
        let chmod = chmod
            .map(copy::parse_chmod)
            .transpose()
            .map_err(|e| failed(format!("Dockerfile:{line}: {e}")))?;
        let workdir = if st.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.config.working_dir.clone()
        };
        let req = copy::CopyRequest {
            sources: &sources,
            dest: &dest,
            workdir: &workdir,
            chown,
            chmod,
            extract_archives: add,
            what,
        };
        let tmp = self.store.temp_path("copy-layer");
        let digest = match from {
            None => copy::copy_layer(self.context.as_fd(), &req, self.ignore.as_ref(), &tmp),
            Some(f) => {
                let f = self.expand(st, f, line)?;
                let src = match self.stage_image(&f) {
                    Some(Some(img)) => img,
                    Some(None) => {
                        return Err(failed(format!(
                            "Dockerfile:{line}: COPY --from={f}: that stage is empty (FROM scratch)"
                        )));
                    }
                    None => crate::image::resolve_or_pull(self.root, &self.store, &f, self.report)
                        .map_err(|e| failed(format!("Dockerfile:{line}: COPY --from={f}: {e}")))?,
                };
                // The image's files, unpacked privately and read under its own root: its
                // links cannot reach the host, and no mount is made. Removed on return.
                let root = copy::StageRoot::unpack(&self.store, &src)
                    .map_err(|e| failed(format!("Dockerfile:{line}: COPY --from={f}: {e}")))?;
                copy::copy_layer(root.fd(), &req, None, &tmp)
            }
        }
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            failed(format!("Dockerfile:{line}: {e}"))
        })?;
        let key = self.cache_key(st, &ins.original, &digest);
        if let Some(img) = self.cached(&key) {
            let _ = std::fs::remove_file(&tmp);
            self.say(" ---> Using cache");
            self.commit_step(st, &key, img);
            return Ok(());
        }
        let created_by = format!("/bin/sh -c #(nop) {what} file:{digest} in {dest}");
        let config = st.config.clone();
        self.derive_step(st, &key, config, Some(&tmp), &created_by)
    }
}

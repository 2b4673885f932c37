//! The typed Dockerfile the build engine consumes.

use std::time::Duration;

use super::Directives;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// `ARG`s before the first `FROM`: usable in `FROM` lines, and in a stage after it
    /// re-declares them with a bare `ARG NAME`.
    pub global_args: Vec<ArgDecl>,
    /// Build stages in file order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the file, from 0 (what `COPY --from=0` names).
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The image reference as written, variables not yet expanded.
    pub from: String,
    /// Line of the `FROM`.
    pub from_line: usize,
    /// `--platform=`, as written.
    pub platform: Option<String>,
    /// The stage's instructions, `FROM` excluded.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// The instruction with its continuations joined and outer blanks trimmed: the text
    /// for the build cache key and the history's `created_by`.
    pub original: String,
    /// What it says.
    pub kind: InstructionKind,
}

/// An `ARG` declaration; the default is raw (quotes kept), for [`super::expand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// Variable name.
    pub name: String,
    /// `=default`, when given.
    pub default: Option<String>,
}

/// The shell form (a string for `/bin/sh -c`) or the exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// As written after the instruction and its flags.
    Shell(String),
    /// The JSON array's strings.
    Exec(Vec<String>),
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disables any health check inherited from the base image.
    None,
    /// A check command with its timings.
    Cmd(HealthcheckCmd),
}

/// The check of `HEALTHCHECK CMD`; a `None` timing means Docker's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCmd {
    /// The command.
    pub test: ShellOrExec,
    /// `--interval` (default 30s).
    pub interval: Option<Duration>,
    /// `--timeout` (default 30s).
    pub timeout: Option<Duration>,
    /// `--start-period` (default 0s).
    pub start_period: Option<Duration>,
    /// `--start-interval` (default 5s).
    pub start_interval: Option<Duration>,
    /// `--retries` (default 3).
    pub retries: Option<u32>,
}

/// What an instruction does. Strings are raw words, see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `RUN`. `--mount`, `--network` and `--security` are refused at parse time.
    Run {
        /// The command.
        cmd: ShellOrExec,
    },
    /// `COPY [--from=] [--chown=] [--chmod=] [--link] src... dest`.
    Copy {
        /// One or more sources.
        sources: Vec<String>,
        /// Destination.
        dest: String,
        /// `--from=` stage name, index or image.
        from: Option<String>,
        /// `--chown=`.
        chown: Option<String>,
        /// `--chmod=`.
        chmod: Option<String>,
        /// `--link`.
        link: bool,
    },
    /// `ADD [--chown=] [--chmod=] [--checksum=] [--link] [--keep-git-dir] src... dest`.
    Add {
        /// One or more sources (paths or URLs).
        sources: Vec<String>,
        /// Destination.
        dest: String,
        /// `--chown=`.
        chown: Option<String>,
        /// `--chmod=`.
        chmod: Option<String>,
        /// `--checksum=`, kept for the engine to verify.
        checksum: Option<String>,
        /// `--link`.
        link: bool,
        /// `--keep-git-dir`.
        keep_git_dir: bool,
    },
    /// `ENV k=v ...` or the legacy `ENV k v`; raw key and value words.
    Env(Vec<(String, String)>),
    /// `ARG name[=default] ...` (Docker allows several in one instruction).
    Arg(Vec<ArgDecl>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `VOLUME` paths, JSON or space-separated.
    Volume(Vec<String>),
    /// `LABEL k=v ...`; raw words.
    Label(Vec<(String, String)>),
    /// `CMD`.
    Cmd(ShellOrExec),
    /// `ENTRYPOINT`.
    Entrypoint(ShellOrExec),
    /// `STOPSIGNAL signal`.
    StopSignal(String),
    /// `SHELL ["exe", "arg"...]` (JSON only).
    Shell(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`: kept for the image config, not run.
    Onbuild(Box<Instruction>),
    /// `MAINTAINER name` (deprecated in Docker, still accepted).
    Maintainer(String),
}

impl InstructionKind {
    /// The instruction's keyword, uppercase.
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::Run { .. } => "RUN",
            InstructionKind::Copy { .. } => "COPY",
            InstructionKind::Add { .. } => "ADD",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether Docker applies [`super::expand`] to this instruction's words (the list in
    /// the Dockerfile reference, plus `ARG` defaults). `RUN`, `CMD`, `ENTRYPOINT`,
    /// `SHELL`, `HEALTHCHECK` and `MAINTAINER` are left as written.
    pub fn expands_variables(&self) -> bool {
        !matches!(
            self,
            InstructionKind::Run { .. }
                | InstructionKind::Cmd(_)
                | InstructionKind::Entrypoint(_)
                | InstructionKind::Shell(_)
                | InstructionKind::Healthcheck(_)
                | InstructionKind::Onbuild(_)
                | InstructionKind::Maintainer(_)
        )
    }
}

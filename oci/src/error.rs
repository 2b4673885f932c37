//! Why a bundle was refused: one variant per check, each naming the bundle file and field.

use std::io;
use std::path::PathBuf;

/// A bundle's `config.json` could not be read or does not describe something a microVM can run.
///
/// Every message is one line that names the config file (or bundle path) and the field, since
/// the engines show it as is: containerd's shim from `--log`, podman from stderr.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// `config.json` is missing or could not be opened or read.
    #[error("{path}: cannot read the bundle config: {source}")]
    ConfigUnreadable {
        /// The config file.
        path: PathBuf,
        /// What the open or read returned.
        #[source]
        source: io::Error,
    },
    /// `config.json` is a symlink; it is opened with O_NOFOLLOW so a bundle cannot point the
    /// runtime at another file of the host.
    #[error("{path}: the bundle config is a symlink; refused")]
    ConfigSymlink {
        /// The config file.
        path: PathBuf,
    },
    /// `config.json` is not a regular file (a directory, FIFO, device, socket).
    #[error("{path}: the bundle config is not a regular file")]
    ConfigNotFile {
        /// The config file.
        path: PathBuf,
    },
    /// `config.json` is larger than the runtime will parse.
    #[error("{path}: the bundle config is larger than {max} bytes; refused before parsing")]
    ConfigTooLarge {
        /// The config file.
        path: PathBuf,
        /// The limit in bytes.
        max: u64,
    },
    /// `config.json` is not JSON or does not match the runtime spec's types.
    #[error("{path}: invalid bundle config: {detail}")]
    BadJson {
        /// The config file.
        path: PathBuf,
        /// serde's one-line message (with line and column).
        detail: String,
        /// oci-spec's error, wrapping serde's.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// `ociVersion` is not a 1.x version.
    #[error("{path}: ociVersion {version:?} is not supported (only 1.x)")]
    UnsupportedVersion {
        /// The config file.
        path: PathBuf,
        /// The version given.
        version: String,
    },
    /// A field the runtime needs is absent (`process`, `process.args`, `root`).
    #[error("{path}: {field} is missing or empty")]
    Missing {
        /// The config file.
        path: PathBuf,
        /// The JSON path of the field, such as `process.args`.
        field: &'static str,
    },
    /// A field that must hold an absolute path holds a relative one.
    #[error("{path}: {field} {value:?} is not an absolute path")]
    NotAbsolute {
        /// The config file.
        path: PathBuf,
        /// The JSON path of the field, such as `process.cwd` or `mounts[2].destination`.
        field: String,
        /// The value given.
        value: PathBuf,
    },
    /// `root.path` does not exist or cannot be examined.
    #[error("{path}: root.path {root} cannot be used: {source}")]
    RootMissing {
        /// The config file.
        path: PathBuf,
        /// The root path, resolved against the bundle directory.
        root: PathBuf,
        /// What lstat or canonicalize returned.
        #[source]
        source: io::Error,
    },
    /// `root.path` is a symlink.
    #[error("{path}: root.path {root} is a symlink; refused")]
    RootSymlink {
        /// The config file.
        path: PathBuf,
        /// The root path, resolved against the bundle directory.
        root: PathBuf,
    },
    /// `root.path` is not a directory.
    #[error("{path}: root.path {root} is not a directory")]
    RootNotDirectory {
        /// The config file.
        path: PathBuf,
        /// The root path, resolved against the bundle directory.
        root: PathBuf,
    },
    /// A mount is neither a bind mount nor a kernel filesystem the guest can make.
    #[error(
        "{path}: mounts[{index}] on {destination:?}: mount type {typ:?} is not supported in a microVM"
    )]
    UnknownMountType {
        /// The config file.
        path: PathBuf,
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: PathBuf,
        /// The type given, `(none)` when absent.
        typ: String,
    },
    /// A mount carries an option value the runtime cannot read (a tmpfs `size=` or `mode=`),
    /// or a bind mount has no source.
    #[error("{path}: mounts[{index}] on {destination:?}: {problem}")]
    BadMount {
        /// The config file.
        path: PathBuf,
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: PathBuf,
        /// What is wrong, such as `bad tmpfs size "12q"`.
        problem: String,
    },
    /// A namespace names a path that does not exist.
    #[error("{path}: linux.namespaces[{index}] ({typ}) path {ns_path} does not exist")]
    NamespacePathMissing {
        /// The config file.
        path: PathBuf,
        /// Index in `linux.namespaces`.
        index: usize,
        /// The namespace type as the spec spells it.
        typ: String,
        /// The path given.
        ns_path: PathBuf,
    },
    /// A hook is malformed (relative path, timeout not above zero).
    #[error("{path}: hooks.{kind}[{index}]: {problem}")]
    BadHook {
        /// The config file.
        path: PathBuf,
        /// The hook list, such as `prestart`.
        kind: &'static str,
        /// Index in that list.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// A resource value is malformed (a cpuset list that does not parse).
    #[error("{path}: {field}: {problem}")]
    BadResource {
        /// The config file.
        path: PathBuf,
        /// The JSON path of the field, such as `linux.resources.cpu.cpus`.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Why a runtime command failed: one line each, as the engines show it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bundle was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A container ID runc would refuse.
    #[error("invalid container ID {0:?}: use letters, digits, '_', '+', '-' and '.'")]
    BadId(String),
    /// `create` of an ID in use.
    #[error("container with id exists: {0}")]
    Exists(String),
    /// No container of that ID.
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    /// A command that needs another status.
    #[error("container {id} is {status}: {action}")]
    WrongStatus {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
        /// What could not be done.
        action: &'static str,
    },
    /// A state file that does not parse.
    #[error("{path}: corrupt container state: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// A file operation on the runtime's own files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A signal that is neither a number nor a name.
    #[error("unknown signal {0:?}")]
    BadSignal(String),
    /// A hook that failed.
    #[error("{hook} hook {path}: {detail}")]
    Hook {
        /// Which list.
        hook: &'static str,
        /// The program.
        path: PathBuf,
        /// How it failed.
        detail: String,
    },
    /// A request the runtime cannot honour (a flag, a network mode, ...).
    #[error("{0}")]
    Unsupported(String),
    /// The engine failed (the VM, its helpers, the agent).
    #[error(transparent)]
    Engine(#[from] mvm_engine::EngineError),
    /// Anything else, said in one line.
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

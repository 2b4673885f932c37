//! The engine's typed API: a handle on one state root with an operation per verb. Front ends
//! (the `mvm` CLI, the OCI runtime, the containerd shim) hold an [`Engine`] and print what it
//! returns; the free functions under [`crate::container`] are what it is made of.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{self, Selection};
use crate::build::{BuildOptions, Built};
use crate::container::exec::ExecSpec;
use crate::container::logs::{LogError, LogReader, Window};
use crate::container::prune::Pruned;
use crate::container::{self, ContainerError, ContainerRecord, ContainerSpec};
use crate::error::EngineError;
use crate::report::Reporter;
use crate::run::{self, RunMode, RunOutcome};

/// How an [`Engine`] is opened.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// The state root (images, containers, networks, volumes).
    pub root: PathBuf,
    /// The hypervisor backend by name (`mvm`, `qemu`); chosen for this host when `None`.
    pub vmm: Option<String>,
    /// Boot guests with their console and the agent's log on.
    pub debug: bool,
}

/// `rm`'s options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Kill a running container first.
    pub force: bool,
    /// Remove its anonymous volumes too.
    pub volumes: bool,
}

/// The container engine on one state root.
#[derive(Clone, Debug)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// Opens the state root, making it (private to its owner) if it is not there.
    pub fn open(opts: EngineOptions) -> Result<Self, EngineError> {
        crate::paths::private_root(&opts.root).map_err(|e| {
            EngineError::runtime(format!("state root {}: {e}", opts.root.display()))
        })?;
        Ok(Self { opts })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    /// The backend new VMs use on this host, and why.
    pub fn backend(&self) -> Result<Selection, EngineError> {
        backend::select(self.opts.vmm.as_deref()).map_err(EngineError::usage)
    }

    /// Creates the container `spec` describes (pulling its image when the store lacks it);
    /// its ID.
    pub fn create(
        &self,
        spec: ContainerSpec,
        report: &dyn Reporter,
    ) -> Result<String, EngineError> {
        let sel = self.backend()?;
        run::create(self.root(), &sel, spec, None, self.opts.debug, report).map(|d| d.id)
    }

    /// Creates a container and starts it as `mode` says.
    pub fn run(
        &self,
        spec: ContainerSpec,
        mode: RunMode,
        report: &dyn Reporter,
    ) -> Result<RunOutcome, EngineError> {
        let sel = self.backend()?;
        run::run(self.root(), &sel, spec, mode, None, self.opts.debug, report)
    }

    /// Starts a created or exited container under its monitor; a running one is left as is.
    pub fn start(&self, key: &str) -> Result<(), ContainerError> {
        container::start::start(self.root(), key)
    }

    /// Runs a created or exited container attached to the caller's standard streams; its
    /// exit code.
    pub fn start_attached(&self, key: &str, interactive: bool) -> Result<i32, EngineError> {
        container::start::start_attached(self.root(), key, interactive)
    }

    /// Stops a container: its stop signal, SIGKILL after `timeout` (its own
    /// `--stop-timeout`, else 10 s, when `None`).
    pub fn stop(&self, key: &str, timeout: Option<Duration>) -> Result<(), ContainerError> {
        container::stop::stop(self.root(), key, timeout)
    }

    /// Stops, then starts a container.
    pub fn restart(&self, key: &str, timeout: Option<Duration>) -> Result<(), ContainerError> {
        container::start::restart(self.root(), key, timeout)
    }

    /// Sends `signal` to a container's process.
    pub fn kill(&self, key: &str, signal: i32) -> Result<(), ContainerError> {
        container::signal::kill(self.root(), key, signal)
    }

    /// Stops a container's vCPUs.
    pub fn pause(&self, key: &str) -> Result<(), ContainerError> {
        container::signal::pause(self.root(), key)
    }

    /// Lets a paused container run again.
    pub fn unpause(&self, key: &str) -> Result<(), ContainerError> {
        container::signal::unpause(self.root(), key)
    }

    /// Removes a container.
    pub fn remove(&self, key: &str, opts: RemoveOptions) -> Result<(), ContainerError> {
        container::stop::remove(self.root(), key, opts.force, opts.volumes)
    }

    /// Waits for a container to stop; its exit code.
    pub fn wait(&self, key: &str) -> Result<i32, ContainerError> {
        container::stop::wait(self.root(), key)
    }

    /// A container's record: its spec, what it resolved to, and its state.
    pub fn inspect(&self, key: &str) -> Result<ContainerRecord, ContainerError> {
        container::resolve(self.root(), key).map(|(_, rec)| rec)
    }

    /// Every container.
    pub fn list(&self) -> Vec<ContainerRecord> {
        container::list(self.root())
    }

    /// Renames a container.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), ContainerError> {
        container::rename::rename(self.root(), key, new_name)
    }

    /// Removes every container that is not running.
    pub fn prune(&self) -> Pruned {
        container::prune::prune(self.root())
    }

    /// Runs one more process in a running container; its exit code (see
    /// [`container::exec::exec`]).
    pub fn exec(
        &self,
        key: &str,
        spec: &ExecSpec,
        attached: bool,
        started: impl FnOnce(),
    ) -> Result<i32, EngineError> {
        container::exec::exec(self.root(), key, spec, attached, started)
    }

    /// An attach session on a running container: the container as it was, and the stream its
    /// owner serves (see [`container::attach`]).
    pub fn attach(
        &self,
        key: &str,
    ) -> Result<(ContainerRecord, std::os::unix::net::UnixStream), ContainerError> {
        container::attach::open(self.root(), key).map(|(_, rec, stream)| (rec, stream))
    }

    /// An image of a container's changes (see [`container::commit::commit`]).
    pub fn commit(
        &self,
        key: &str,
        opts: &container::commit::CommitOptions<'_>,
    ) -> Result<mvm_rootfs::ImageRecord, EngineError> {
        container::commit::commit(self.root(), key, opts)
    }

    /// A container's changed paths (see [`container::commit::diff`]).
    pub fn diff(&self, key: &str) -> Result<Vec<u8>, EngineError> {
        container::commit::diff(self.root(), key)
    }

    /// A container's log.
    pub fn logs(&self, key: &str, window: Window) -> Result<LogReader, LogError> {
        LogReader::open(self.root(), key, window)
    }

    /// Builds an image from a Dockerfile.
    pub fn build(&self, opts: &BuildOptions, report: &dyn Reporter) -> Result<Built, EngineError> {
        let sel = self.backend()?;
        crate::build::build(self.root(), &sel, opts, self.opts.debug, report)
    }

    /// The monitor of container `id`: runs it to its end, restarting it as its policy says;
    /// the exit code. Every front end runs this for its hidden `__monitor ID` command, which
    /// is how `run -d` and `start` spawn a monitor from the front end's own executable.
    pub fn monitor(&self, id: &str) -> i32 {
        run::monitor(self.root(), id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Status;

    struct Root(PathBuf);

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn engine(tag: &str) -> (Root, Engine) {
        let root = std::env::temp_dir().join(format!("mvm-api-{tag}-{}", std::process::id()));
        let engine = Engine::open(EngineOptions {
            root: root.clone(),
            ..Default::default()
        })
        .unwrap();
        (Root(root), engine)
    }

    /// A container's record as `create` leaves it, written where the engine keeps it.
    fn made(engine: &Engine, name: &str) -> String {
        let id = container::new_id().unwrap();
        let rec = ContainerRecord::for_tests(&id, name);
        let dirs = container::ContainerDirs::new(engine.root(), &id);
        std::fs::create_dir_all(&dirs.dir).unwrap();
        dirs.save(&rec).unwrap();
        id
    }

    #[test]
    fn the_state_root_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_root, engine) = engine("private");
        let mode = std::fs::metadata(engine.root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(engine.list().is_empty());
    }

    #[test]
    fn operations_on_no_container_say_so() {
        let (_root, engine) = engine("missing");
        let gone = |r: Result<(), ContainerError>| {
            assert!(
                matches!(r, Err(ContainerError::NotFound(ref k)) if k == "nope"),
                "{r:?}"
            );
        };
        gone(engine.stop("nope", Some(Duration::ZERO)));
        gone(engine.kill("nope", libc::SIGTERM));
        gone(engine.pause("nope"));
        gone(engine.unpause("nope"));
        gone(engine.start("nope"));
        gone(engine.restart("nope", Some(Duration::ZERO)));
        gone(engine.remove("nope", RemoveOptions::default()));
        gone(engine.rename("nope", "other"));
        assert!(matches!(
            engine.wait("nope"),
            Err(ContainerError::NotFound(_))
        ));
        assert!(matches!(
            engine.inspect("nope"),
            Err(ContainerError::NotFound(_))
        ));
        assert!(matches!(
            engine.logs("nope", Window::default()),
            Err(LogError::Container(ContainerError::NotFound(_)))
        ));
        let e = engine
            .exec("nope", &ExecSpec::default(), false, || {})
            .unwrap_err();
        assert_eq!(e.code(), 125, "an empty command is the caller's error: {e}");
    }

    #[test]
    fn a_created_container_through_the_api() {
        let (_root, engine) = engine("created");
        let id = made(&engine, "web");
        let other = made(&engine, "db");
        // By name, by full ID and by unique prefix.
        assert_eq!(engine.inspect("web").unwrap().id, id);
        assert_eq!(engine.inspect(&id).unwrap().name, "web");
        assert_eq!(engine.inspect(&id[..12]).unwrap().name, "web");
        assert_eq!(engine.list().len(), 2);
        // Not running: these are refused with Docker's words, and nothing changes.
        assert!(matches!(
            engine.kill("web", libc::SIGTERM),
            Err(ContainerError::NotRunning(_))
        ));
        assert!(matches!(
            engine.pause("web"),
            Err(ContainerError::NotRunning(_))
        ));
        assert!(matches!(
            engine.unpause("web"),
            Err(ContainerError::NotPaused(_))
        ));
        let e = engine
            .exec(
                "web",
                &ExecSpec {
                    args: vec!["true".into()],
                    ..Default::default()
                },
                false,
                || {},
            )
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Container(ContainerError::NotRunning(_))),
            "{e}"
        );
        assert_eq!(e.code(), 1);
        // Stopping what does not run is not an error; it stays created.
        engine.stop("web", Some(Duration::ZERO)).unwrap();
        assert_eq!(
            engine.inspect("web").unwrap().effective().0,
            Status::Created
        );
        assert_eq!(engine.wait("web").unwrap(), 0);
        // Names are unique and valid.
        assert!(matches!(
            engine.rename("web", "db"),
            Err(ContainerError::NameInUse(_))
        ));
        assert!(matches!(
            engine.rename("web", "web"),
            Err(ContainerError::SameName(_))
        ));
        assert!(matches!(
            engine.rename("web", "a b"),
            Err(ContainerError::InvalidName(_))
        ));
        engine.rename("web", "/front").unwrap();
        assert_eq!(engine.inspect("front").unwrap().id, id);
        // The log is read from the start; none written yet.
        let mut log = engine.logs("front", Window::default()).unwrap();
        assert!(log.backlog(None).unwrap().is_empty());
        log.follow(|_| panic!("nothing to follow")).unwrap();
        // rm, then prune takes the rest.
        engine.remove("front", RemoveOptions::default()).unwrap();
        assert!(matches!(
            engine.inspect(&id),
            Err(ContainerError::NotFound(_))
        ));
        let pruned = engine.prune();
        assert_eq!(pruned.ids, [other]);
        assert!(engine.list().is_empty());
    }

    #[test]
    fn a_dead_container_does_not_start_and_rm_takes_it() {
        let (_root, engine) = engine("dead");
        let id = made(&engine, "half");
        let dirs = container::ContainerDirs::new(engine.root(), &id);
        dirs.update(|r| r.state.dead()).unwrap();
        assert_eq!(engine.inspect("half").unwrap().effective().0, Status::Dead);
        assert!(matches!(engine.start("half"), Err(ContainerError::Dead(_))));
        assert!(matches!(
            engine.restart("half", Some(Duration::ZERO)),
            Err(ContainerError::Dead(_))
        ));
        assert!(matches!(
            engine.start_attached("half", false),
            Err(EngineError::Container(ContainerError::Dead(_)))
        ));
        engine.remove("half", RemoveOptions::default()).unwrap();
        assert!(engine.list().is_empty());
    }

    #[test]
    fn a_container_without_a_kept_log() {
        let (_root, engine) = engine("nolog");
        let id = made(&engine, "quiet");
        let dirs = container::ContainerDirs::new(engine.root(), &id);
        dirs.update(|r| r.spec.log = container::LogConfig::None)
            .unwrap();
        assert!(matches!(
            engine.logs("quiet", Window::default()),
            Err(LogError::NotKept)
        ));
    }
}

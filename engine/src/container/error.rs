//! Why an operation on an existing container failed, worded as Docker words it.

/// An operation on a container that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has this ID, ID prefix or name.
    #[error("No such container: {0}")]
    NotFound(String),
    /// The ID prefix matches several containers.
    #[error("Multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
    /// The operation needs a running container.
    #[error("Container {0} is not running")]
    NotRunning(String),
    /// A signal to a paused container.
    #[error("Container {0} is paused. Unpause the container before sending a signal")]
    PausedSignal(String),
    /// `exec` in a paused container.
    #[error("Container {0} is paused, unpause the container before exec")]
    PausedExec(String),
    /// `exec` while the policy restarts it.
    #[error("Container {0} is restarting, wait until the container is running")]
    Restarting(String),
    /// `pause` twice.
    #[error("Container {0} is already paused")]
    AlreadyPaused(String),
    /// `unpause` of a container that is not paused.
    #[error("Container {0} is not paused")]
    NotPaused(String),
    /// `start` of a container whose removal failed half-way.
    #[error("Container {0} is dead (its removal failed): remove it with rm -f")]
    Dead(String),
    /// `start -a` of a running container.
    #[error("Container {0} is already running; use mvm attach")]
    AlreadyRunning(String),
    /// `rm` of a running container without `-f`.
    #[error(
        "You cannot remove a running container {0}. Stop the container before attempting removal or force remove"
    )]
    RemoveRunning(String),
    /// A name another container has.
    #[error(
        "Conflict. The container name \"/{0}\" is already in use. Remove it or pick another name."
    )]
    NameInUse(String),
    /// `rename` to the same name.
    #[error("Renaming a container with the same name as its current name: {0}")]
    SameName(String),
    /// Not a valid container name.
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    /// The container's VM could not be found or signalled.
    #[error("{0}")]
    Vm(String),
    /// `attach` to a container that is not running, with Docker's reason.
    #[error("{0}")]
    CannotAttach(&'static str),
    /// The container's owner did not take a request (a signal, a network change, an attach).
    #[error("{0}")]
    Owner(String),
    /// It could not be started.
    #[error("Error response: failed to start container {key}: {reason}")]
    Start {
        /// The container as the caller named it.
        key: String,
        /// Why.
        reason: String,
    },
    /// Its record or directory could not be read or written.
    #[error("{0}")]
    Record(String),
}

//! The engine's errors, each with the exit code Docker's CLI gives for it.

use std::fmt;

use crate::container::{ContainerError, SpecError};

/// Exit code when the runtime itself fails (Docker's 125).
pub const EXIT_RUNTIME: i32 = 125;

/// Exit code of a failed operation on an existing container or a failed build (Docker's
/// CLI gives 1).
pub const EXIT_FAILED: i32 = 1;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A value the caller gave is refused before anything was done.
    #[error("{0}")]
    Invalid(String),
    /// The container's description is refused.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The engine itself failed: the store, a disk, the VM, the agent.
    #[error("{0}")]
    Runtime(String),
    /// An operation on an existing container failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A build failed.
    #[error("{0}")]
    Build(String),
    /// The operation does not fit the state of what it acts on (a network the container is
    /// already on, a container with no interface left).
    #[error("{0}")]
    Conflict(String),
    /// The container's process could not start (the agent's 126 for not executable, 127
    /// for not found), or its run ended with a code the monitor recorded.
    #[error("{message}")]
    Exit {
        /// The exit code.
        code: i32,
        /// What happened.
        message: String,
    },
}

impl EngineError {
    /// A failure of the engine itself.
    pub fn runtime(e: impl fmt::Display) -> Self {
        Self::Runtime(e.to_string())
    }

    /// A bad value from the caller.
    pub fn usage(message: String) -> Self {
        Self::Invalid(message)
    }

    /// An error with a specific exit code.
    pub fn with_code(code: i32, message: String) -> Self {
        Self::Exit { code, message }
    }

    /// The exit code Docker's CLI gives for this error.
    pub fn code(&self) -> i32 {
        match self {
            Self::Invalid(_) | Self::Spec(_) | Self::Runtime(_) => EXIT_RUNTIME,
            Self::Container(_) | Self::Build(_) | Self::Conflict(_) => EXIT_FAILED,
            Self::Exit { code, .. } => *code,
        }
    }
}

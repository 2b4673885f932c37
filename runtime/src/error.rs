//! The CLI's errors: one line for the user and Docker's exit codes.

use std::fmt;

/// Exit code when mvm itself fails (Docker's 125).
pub const EXIT_RUNTIME: i32 = 125;

/// An error ending the command.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// One line for the user.
    pub message: String,
    /// A bad flag or value the CLI itself refused (Docker's 125 for every command), as
    /// opposed to a failure of the work (125 only for `run`; Docker's other commands exit 1).
    pub usage: bool,
}

impl CliError {
    /// A failure of mvm itself (exit 125).
    pub fn runtime(e: impl fmt::Display) -> Self {
        Self {
            code: EXIT_RUNTIME,
            message: e.to_string(),
            usage: false,
        }
    }

    /// A bad flag or value (exit 125, as Docker).
    pub fn usage(message: String) -> Self {
        Self {
            code: EXIT_RUNTIME,
            message,
            usage: true,
        }
    }

    /// An error with a specific exit code (126/127 from the agent).
    pub fn with_code(code: i32, message: String) -> Self {
        Self {
            code,
            message,
            usage: false,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the source said.
        let line = self
            .message
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        f.write_str(&line)
    }
}

impl From<mvm_engine::EngineError> for CliError {
    fn from(e: mvm_engine::EngineError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
            usage: false,
        }
    }
}

impl From<mvm_engine::container::ContainerError> for CliError {
    /// A failed operation on an existing container: Docker's CLI exits 1.
    fn from(e: mvm_engine::container::ContainerError) -> Self {
        Self::with_code(1, e.to_string())
    }
}

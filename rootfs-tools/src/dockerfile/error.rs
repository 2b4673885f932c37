//! The one error type of the Dockerfile parser and of variable expansion.

/// A Dockerfile that cannot be parsed, or a word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A syntax or validation error at a line of the Dockerfile (1-based).
    #[error("Dockerfile:{line}: {message}")]
    Syntax {
        /// Line where the offending instruction starts.
        line: usize,
        /// One line, in Docker's wording where Docker has one.
        message: String,
    },
    /// `expand` refused a word (bad substitution, missing `}`, unterminated quote, `${X?}`).
    #[error("failed to process {word:?}: {message}")]
    Expand {
        /// The word as written.
        word: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ParseError {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        ParseError::Syntax {
            line,
            message: message.into(),
        }
    }

    /// The line the error points at, when it comes from parsing a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Syntax { line, .. } => Some(*line),
            ParseError::Expand { .. } => None,
        }
    }

    /// Attaches a line to an expansion error, for callers that expand instruction by
    /// instruction and want the same `Dockerfile:N: ...` form.
    pub fn with_line(self, line: usize) -> Self {
        match self {
            ParseError::Expand { word, message } => {
                ParseError::at(line, format!("failed to process {word:?}: {message}"))
            }
            other => other,
        }
    }
}

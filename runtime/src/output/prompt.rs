//! Questions to the person at the terminal: Docker's `WARNING! ... [y/N]` before a prune, and
//! a line of input for `login`.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::CliError;

/// Docker's `WARNING! {warning}` / `Are you sure you want to continue? [y/N]` question, on
/// stdout as Docker asks it. Asked only when stdin is a terminal and `--force` was not given
/// (so scripts and tests that pipe stdin go on); true to go on.
pub fn confirm(force: bool, warning: &str) -> bool {
    if force || !std::io::stdin().is_terminal() {
        return true;
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", question(warning));
    let _ = out.flush();
    drop(out);
    answer_is_yes(std::io::stdin().lock())
}

fn question(warning: &str) -> String {
    format!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ")
}

/// Whether the first line of `input` says yes. Docker takes `y` in either case; `yes` is
/// taken too, as mvm always has. Anything else, an empty line or a read error is no.
fn answer_is_yes(mut input: impl BufRead) -> bool {
    let mut line = String::new();
    if input.read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// A line from stdin without its line ending, with `prompt` on stderr first when stdin is a
/// terminal (`login`'s username and password).
pub fn read_line(prompt: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::runtime(format!("read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_as_docker() {
        assert_eq!(
            question("This will remove all dangling images."),
            "WARNING! This will remove all dangling images.\n\
             Are you sure you want to continue? [y/N] "
        );
    }

    #[test]
    fn answers() {
        for yes in ["y\n", "Y\n", "yes\n", "  y  \r\n", "y"] {
            assert!(answer_is_yes(yes.as_bytes()), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "N\n", "no\n", "yy\n", "\ny\n", "sure\n"] {
            assert!(!answer_is_yes(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn forced_never_asks() {
        assert!(confirm(true, "anything"));
    }
}

//! Finding the program to execute, as execvp(3) would, but before forking so that a missing
//! or non-executable command is reported with Docker's exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a command cannot be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such file, or not in any `PATH` directory.
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    NotInPath(String),
    /// A path (with a `/`) that does not exist.
    #[error("exec: \"{0}\": no such file or directory")]
    NoSuchFile(String),
    /// Found, but a directory or without execute permission.
    #[error("exec: \"{0}\": permission denied")]
    NotExecutable(String),
}

/// Resolves `program` to the file to execute.
///
/// With a `/` it is a path, relative to `cwd` unless absolute. Without, it is looked up in
/// `path_var` (empty entries mean `cwd`, as in the shell); a match that exists but cannot be
/// executed is remembered and reported only if no later entry is executable, as execvp does.
pub fn find_executable(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, LookupError> {
    if program.is_empty() {
        return Err(LookupError::NotInPath(String::new()));
    }
    if program.contains('/') {
        let path = cwd.join(program);
        return match check(&path) {
            Check::Executable => Ok(path),
            Check::Missing => Err(LookupError::NoSuchFile(program.to_string())),
            Check::NotExecutable => Err(LookupError::NotExecutable(program.to_string())),
        };
    }
    let mut denied = false;
    for dir in path_var.split(':') {
        let candidate = if dir.is_empty() {
            cwd.join(program)
        } else {
            cwd.join(dir).join(program)
        };
        match check(&candidate) {
            Check::Executable => return Ok(candidate),
            Check::NotExecutable => denied = true,
            Check::Missing => {}
        }
    }
    if denied {
        Err(LookupError::NotExecutable(program.to_string()))
    } else {
        Err(LookupError::NotInPath(program.to_string()))
    }
}

enum Check {
    Executable,
    NotExecutable,
    Missing,
}

fn check(path: &Path) -> Check {
    match std::fs::metadata(path) {
        // Any execute bit: the agent is root, and whether the target user may execute it is
        // for execve to say (its EACCES comes back through the spawn error).
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Check::Executable,
        Ok(_) => Check::NotExecutable,
        Err(_) => Check::Missing,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_util::TempDir;

    fn file(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn lookup() {
        let dir = TempDir::new("path");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        file(&a.join("tool"), 0o644);
        file(&b.join("tool"), 0o755);
        file(&a.join("noexec"), 0o644);
        fs::create_dir_all(a.join("isdir")).unwrap();
        file(&dir.path().join("here"), 0o755);
        let path = format!("{}:{}", a.display(), b.display());
        let cwd = dir.path();

        assert_eq!(find_executable("tool", &path, cwd), Ok(b.join("tool")));
        assert_eq!(
            find_executable("noexec", &path, cwd),
            Err(LookupError::NotExecutable("noexec".into()))
        );
        assert_eq!(
            find_executable("isdir", &path, cwd),
            Err(LookupError::NotExecutable("isdir".into()))
        );
        assert_eq!(
            find_executable("missing", &path, cwd),
            Err(LookupError::NotInPath("missing".into()))
        );
        assert_eq!(
            find_executable("", &path, cwd),
            Err(LookupError::NotInPath("".into()))
        );
        // Empty PATH entries and relative paths are relative to cwd.
        assert_eq!(
            find_executable("here", &format!("{path}:"), cwd),
            Ok(cwd.join("here"))
        );
        assert!(find_executable("here", &path, cwd).is_err());
        assert_eq!(find_executable("./here", "", cwd), Ok(cwd.join("./here")));
        assert_eq!(find_executable("b/tool", "", cwd), Ok(cwd.join("b/tool")));
        assert_eq!(
            find_executable("./nope", &path, cwd),
            Err(LookupError::NoSuchFile("./nope".into()))
        );
        assert_eq!(
            find_executable("a/noexec", &path, cwd),
            Err(LookupError::NotExecutable("a/noexec".into()))
        );
        let abs = b.join("tool");
        assert_eq!(
            find_executable(abs.to_str().unwrap(), "", Path::new("/")),
            Ok(abs)
        );
    }
}

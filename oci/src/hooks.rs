//! Running a bundle's hooks as the runtime spec says: the program at `path` with `args` as its
//! argv (argv\[0\] included) and exactly `env`, the container's state JSON on stdin, killed
//! after `timeout` seconds. A failing hook fails the step it belongs to (poststart and
//! poststop failures are only logged, by the caller).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bundle::Hook;
use crate::error::RuntimeError;

/// How long a hook without a timeout may run: runc waits forever; a runtime that a stuck hook
/// holds forever holds its caller (dockerd) too.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a failed hook's stderr is quoted.
const QUOTED_STDERR: usize = 512;

/// Runs `hooks` in order with `state` on stdin; the first failure is returned.
pub fn run_all(kind: &'static str, hooks: &[Hook], state: &str) -> Result<(), RuntimeError> {
    for h in hooks {
        run(kind, h, state)?;
    }
    Ok(())
}

/// Runs one hook.
pub fn run(kind: &'static str, hook: &Hook, state: &str) -> Result<(), RuntimeError> {
    let fail = |detail: String| RuntimeError::Hook {
        hook: kind,
        path: hook.path.clone(),
        detail,
    };
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(&mut std::io::Read::take(s, 64 << 10), &mut buf);
        }
        buf
    });
    let timeout = hook
        .timeout
        .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(u64::from(s)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("timed out after {}s", timeout.as_secs())));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&stderr);
    let said = said.trim();
    let said: String = said.chars().take(QUOTED_STDERR).collect();
    Err(fail(if said.is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {}", said.replace('\n', " "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u32>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["HOOKVAR=x y".into()],
            timeout,
        }
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_and_exactly_its_env() {
        let dir = std::env::temp_dir().join(format!("mvm-oci-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!(
            "cat > {0}; echo \"$HOOKVAR|$HOME|$0\" >> {0}",
            out.display()
        );
        run("prestart", &sh(&script, None), "{\"id\":\"c\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"}x y||sh\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failures_say_which_hook_and_why() {
        let e = run(
            "createRuntime",
            &sh("echo no network >&2; exit 3", None),
            "{}",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "createRuntime hook /bin/sh: exit status: 3: no network");
        let e = run("prestart", &sh("sleep 5", Some(1)), "{}")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("timed out after 1s"), "{e}");
        let missing = Hook {
            path: "/nonexistent/hook".into(),
            args: vec![],
            env: vec![],
            timeout: None,
        };
        let e = run("poststop", &missing, "{}").unwrap_err().to_string();
        assert!(
            e.starts_with("poststop hook /nonexistent/hook: cannot start:"),
            "{e}"
        );
    }
}

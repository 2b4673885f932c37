//! How one command's results through `docker` and through `mvm` are compared: exit codes,
//! stdout with IDs, times, sizes, addresses and padding normalised, the first line of stderr
//! by meaning, and JSON by key sets.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::LazyLock;

use regex::Regex;

/// What a step compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Must succeed through both; nothing compared (preparing a case).
    Setup,
    /// Run through both, nothing compared (cleaning up).
    Quiet,
    /// Exit code, normalised stdout, stderr (a CLI error's first line by meaning).
    Same,
    /// Exit code and whether stderr is empty.
    Rc,
    /// Exit code only (where Docker prints its error on stdout and mvm on stderr).
    Exit,
    /// Exit code and the key sets of the JSON on stdout (every key Docker prints must be there).
    Keys,
    /// Exit code and the number of stdout lines.
    Lines,
}

/// One command's result.
pub struct Ran {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<&Output> for Ran {
    fn from(o: &Output) -> Ran {
        Ran {
            rc: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn re(s: &str) -> Regex {
    Regex::new(s).expect("a valid pattern")
}

static DIGEST: LazyLock<Regex> = LazyLock::new(|| re(r"sha256:[0-9a-f]{64}"));
static LONG_ID: LazyLock<Regex> = LazyLock::new(|| re(r"\b[0-9a-f]{64}\b"));
static SHORT_ID: LazyLock<Regex> = LazyLock::new(|| re(r"\b[0-9a-f]{12}\b"));
static RFC3339: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?( [+-]\d{4} \w+)?")
});
static AGO: LazyLock<Regex> =
    LazyLock::new(|| re(r"(Less than a second|About an? \w+|\d+ \w+?s?|an? \w+) ago"));
static UP: LazyLock<Regex> = LazyLock::new(|| re(r"Up (Less than a second|About an? \w+|\d+ \w+)"));
static SIZE: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b\d+(\.\d+)?\s?(B|kB|KB|MB|GB|KiB|MiB|GiB)\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"));
static PAD: LazyLock<Regex> = LazyLock::new(|| re(r" {2,}"));

/// Output with what legitimately differs between two engines replaced by placeholders.
pub fn normalise(text: &str) -> String {
    let t = DIGEST.replace_all(text, "<DIGEST>");
    let t = LONG_ID.replace_all(&t, "<ID>");
    let t = SHORT_ID.replace_all(&t, "<ID>");
    let t = RFC3339.replace_all(&t, "<TIME>");
    let t = AGO.replace_all(&t, "<AGO>");
    let t = UP.replace_all(&t, "Up <T>");
    let t = SIZE.replace_all(&t, "<SIZE>");
    let t = IPV4.replace_all(&t, |c: &regex::Captures| match &c[0] {
        "0.0.0.0" | "127.0.0.1" => c[0].to_string(),
        _ => "<IP>".to_string(),
    });
    t.lines()
        .map(|l| PAD.replace_all(l.trim_end(), "  ").into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a stderr line is the CLI's own error (compared by meaning) rather than a
/// container's output (compared as text).
fn is_cli_error(line: &str) -> bool {
    let l = line.trim_start();
    [
        "Error",
        "docker:",
        "mvm:",
        "unknown ",
        "invalid ",
        "\"docker",
        "flag ",
        "accepts ",
        "requires ",
        "the input device",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// The first line of a CLI error without the program's own prefix, lower case.
pub fn meaning(stderr: &str) -> String {
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut l = first.trim();
    for prefix in [
        "Error response from daemon: ",
        "Error: ",
        "docker: ",
        "mvm: ",
    ] {
        l = l.strip_prefix(prefix).unwrap_or(l);
    }
    l.to_lowercase()
}

/// Every key path of a JSON document (arrays are looked into, their indexes left out), to
/// `depth` levels: `.HostConfig.Binds`.
fn key_paths(v: &serde_json::Value, prefix: &str, depth: usize, out: &mut BTreeSet<String>) {
    if depth == 0 {
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                // Maps keyed by data (labels, networks by name, ports) are not shapes.
                if !matches!(
                    k.as_str(),
                    "Labels" | "Networks" | "Ports" | "ExposedPorts" | "Volumes" | "Options"
                ) {
                    key_paths(v, &p, depth - 1, out);
                }
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                key_paths(v, prefix, depth, out);
            }
        }
        _ => {}
    }
}

/// The key paths of stdout read as one JSON document or as JSON lines.
pub fn json_keys(stdout: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    match serde_json::from_str::<serde_json::Value>(stdout) {
        Ok(v) => key_paths(&v, "", 3, &mut out),
        Err(_) => {
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
                key_paths(&v, "", 3, &mut out);
            }
        }
    }
    Ok(out)
}

/// What differs between Docker's result `d` and mvm's `m` under `check`; empty when they
/// behave the same.
pub fn differences(check: Check, d: &Ran, m: &Ran, meaning_words: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    if matches!(check, Check::Quiet) {
        return diffs;
    }
    if d.rc != m.rc {
        diffs.push(format!("exit code: docker {} mvm {}", d.rc, m.rc));
    }
    match check {
        Check::Setup | Check::Quiet | Check::Exit => {}
        Check::Rc => {
            if d.stderr.trim().is_empty() != m.stderr.trim().is_empty() {
                diffs.push(format!(
                    "stderr: docker {:?} mvm {:?}",
                    first_line(&d.stderr),
                    first_line(&m.stderr)
                ));
            }
        }
        Check::Lines => {
            if d.stdout.lines().count() != m.stdout.lines().count() {
                diffs.push(format!(
                    "stdout lines: docker {} mvm {}\n--- docker\n{}--- mvm\n{}",
                    d.stdout.lines().count(),
                    m.stdout.lines().count(),
                    d.stdout,
                    m.stdout
                ));
            }
        }
        Check::Keys => match (json_keys(&d.stdout), json_keys(&m.stdout)) {
            (Ok(dk), Ok(mk)) => {
                let missing: Vec<_> = dk.difference(&mk).cloned().collect();
                if !missing.is_empty() {
                    diffs.push(format!(
                        "JSON keys missing in mvm ({} of {}): {}",
                        missing.len(),
                        dk.len(),
                        missing.join(" ")
                    ));
                }
            }
            (Err(e), _) => diffs.push(format!("docker's stdout {e}")),
            (_, Err(e)) => diffs.push(format!("mvm's stdout {e}")),
        },
        Check::Same => {
            let (ds, ms) = (normalise(&d.stdout), normalise(&m.stdout));
            if ds != ms {
                diffs.push(format!("stdout:\n--- docker\n{ds}\n--- mvm\n{ms}"));
            }
            diffs.extend(stderr_difference(d, m, meaning_words));
        }
    }
    if matches!(check, Check::Rc | Check::Keys | Check::Lines) {
        diffs.extend(
            stderr_difference(d, m, meaning_words)
                .into_iter()
                .filter(|_| !meaning_words.is_empty()),
        );
    }
    diffs
}

/// Compares stderr: lines before a CLI error (a container's output, "Unable to find image")
/// as text, the CLI error line by meaning (both present, with `words`).
fn stderr_difference(d: &Ran, m: &Ran, words: &[&str]) -> Option<String> {
    let split = |s: &str| -> (String, Option<String>) {
        let lines: Vec<&str> = s.lines().collect();
        match lines.iter().position(|l| is_cli_error(l)) {
            Some(i) => (normalise(&lines[..i].join("\n")), Some(meaning(lines[i]))),
            None => (normalise(s), None),
        }
    };
    let ((dt, de), (mt, me)) = (split(&d.stderr), split(&m.stderr));
    if dt != mt {
        return Some(format!(
            "stderr:\n--- docker\n{}\n--- mvm\n{}",
            d.stderr, m.stderr
        ));
    }
    let (dm, mm) = (de.unwrap_or_default(), me.unwrap_or_default());
    let missing: Vec<_> = words
        .iter()
        .filter(|w| !dm.contains(&w.to_lowercase()) || !mm.contains(&w.to_lowercase()))
        .collect();
    if dm.is_empty() != mm.is_empty() || !missing.is_empty() {
        return Some(format!(
            "stderr by meaning {missing:?}: docker {:?} mvm {:?}",
            first_line(&d.stderr),
            first_line(&m.stderr)
        ));
    }
    None
}

pub fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[test]
fn normalising_leaves_only_what_engines_share() {
    let d = "CONTAINER ID   IMAGE     COMMAND   CREATED          STATUS                     NAMES\n\
             0123456789ab   busybox   \"sh\"      2 seconds ago    Exited (3) 1 second ago    p1\n";
    let m = "CONTAINER ID   IMAGE     COMMAND   CREATED                  STATUS                              NAMES\n\
             ba9876543210   busybox   \"sh\"      Less than a second ago   Exited (3) Less than a second ago   p1\n";
    assert_eq!(normalise(d), normalise(m));
    assert_eq!(
        normalise("Up About a minute 1.98MB 172.17.0.2 127.0.0.1 2026-12-07T15:39:01.123456789Z"),
        "Up <T> <SIZE> <IP> 127.0.0.1 <TIME>"
    );
    assert_ne!(normalise("Exited (3)"), normalise("Exited (1)"));
    assert_eq!(
        normalise("Up 2 seconds (Paused)"),
        normalise("Up 1 second (Paused)")
    );
    assert_eq!(
        meaning("Error response from daemon: No such container: x"),
        "no such container: x"
    );
    assert_eq!(meaning("mvm: No such container: x"), "no such container: x");
}

#[test]
fn json_keys_look_into_arrays_and_lines() {
    let k = json_keys(
        r#"[{"Id":"1","State":{"Status":"running","Pid":1},"Config":{"Labels":{"a":"b"}}}]"#,
    )
    .unwrap();
    let k: Vec<_> = k.into_iter().collect();
    assert_eq!(
        k,
        [
            ".Config",
            ".Config.Labels",
            ".Id",
            ".State",
            ".State.Pid",
            ".State.Status"
        ]
    );
    let k = json_keys("{\"A\":1}\n{\"B\":2}\n").unwrap();
    assert_eq!(k.len(), 2);
    assert!(json_keys("not json").is_err());
}

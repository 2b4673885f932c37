//! The differential tier: each case's command lines run through `docker` (a dockerd of the
//! test's own, with runc, in a network namespace the test made) and through `mvm` (a state root
//! of the test's, in the same namespace), compared by exit code, normalised stdout, the first
//! line of stderr by meaning and JSON key sets (compare.rs). Every case says what it expects
//! (cases.rs): the same behaviour, a known gap still to close, or a deliberate difference with
//! mvm's message. The tier fails when a case expected to match differs, when a gap has closed
//! (so the list stays true), or when a deliberate difference lacks its message; it prints and
//! writes (target/parity-report.txt) the counts README quotes.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/docker.rs"]
mod docker;

mod cases;
mod compare;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cases::{Case, Expect, Step};
use common::TestRoot;
use compare::{Check, Ran, differences};
use docker::{Dockerd, Netns};

/// The two engines of the tier, each in a network namespace of the test's (published ports
/// of the same number must not collide).
struct Pair {
    d: Dockerd,
    m: TestRoot,
    mns: Netns,
    /// Scratch directories for files a case uses: `{w}` in a step.
    scratch: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Docker,
    Mvm,
}

/// The longest a command may take before the tier calls it hung.
const TIMEOUT: Duration = Duration::from_secs(120);

impl Pair {
    fn start() -> Pair {
        let d = Dockerd::start_with("parity", None, "busybox");
        let mns = Netns::new("parity-mvm");
        let _ = mns.run(&["ip", "link", "set", "lo", "up"]);
        let m = TestRoot::with_busybox(env!("CARGO_BIN_EXE_mvm")).in_netns(Path::new(&mns.path()));
        let scratch = d.dir.join("scratch");
        for side in ["docker", "mvm"] {
            std::fs::create_dir_all(scratch.join(side)).unwrap();
        }
        Pair { d, m, mns, scratch }
    }

    fn dir(&self, side: Side) -> PathBuf {
        self.scratch.join(match side {
            Side::Docker => "docker",
            Side::Mvm => "mvm",
        })
    }

    /// The whole argv of `args` through one engine.
    fn argv(&self, side: Side, args: &[String]) -> Vec<String> {
        let mut v = match side {
            Side::Docker => vec!["docker".to_string()],
            Side::Mvm => vec![
                "nsenter".into(),
                format!("--net={}", self.mns.path()),
                self.m.bin.display().to_string(),
                "--root".into(),
                self.m.path.display().to_string(),
            ],
        };
        v.extend(args.iter().cloned());
        v
    }

    fn run(&self, side: Side, step: &Step) -> Ran {
        let dir = self.dir(side);
        let args: Vec<String> = cases::split(&step.line)
            .into_iter()
            .map(|a| a.replace("{w}", &dir.display().to_string()))
            .collect();
        let argv = self.argv(side, &args);
        let mut cmd = if step.tty {
            // On a terminal, as a user types it: `script` gives the command a pty.
            let line = argv
                .iter()
                .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
                .collect::<Vec<_>>()
                .join(" ");
            let mut c = Command::new("script");
            c.args(["-qec", &line, "/dev/null"]);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", self.d.dir.display()),
        )
        .env("HOME", &dir)
        .current_dir(&dir)
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        run_bounded(cmd, step.stdin)
    }

    /// Removes what a case made on both sides: containers, images but busybox, volumes,
    /// networks but the predefined ones, and the scratch files.
    fn clean(&self) {
        for side in [Side::Docker, Side::Mvm] {
            let list = |line: &str| {
                let r = self.run(side, &Step::new(line, Check::Quiet));
                r.stdout
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            let ids = list("ps -aq");
            if !ids.is_empty() {
                self.run(
                    side,
                    &Step::new(&format!("rm -f {}", ids.join(" ")), Check::Quiet),
                );
            }
            for image in list("images -a --format {{.Repository}}:{{.Tag}}@{{.ID}}") {
                let (tag, id) = image.split_once('@').unwrap_or((&image, ""));
                if tag != "busybox:latest" {
                    let target = if tag.contains("<none>") { id } else { tag };
                    self.run(side, &Step::new(&format!("rmi -f {target}"), Check::Quiet));
                }
            }
            for v in list("volume ls -q") {
                self.run(side, &Step::new(&format!("volume rm -f {v}"), Check::Quiet));
            }
            for n in list("network ls --format {{.Name}}") {
                if !matches!(n.as_str(), "bridge" | "host" | "none") {
                    self.run(side, &Step::new(&format!("network rm {n}"), Check::Quiet));
                }
            }
            let dir = self.dir(side);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
        }
    }

    /// Runs one case through both engines: what differed, and mvm's output of its compared
    /// steps (for deliberate differences).
    fn case(&self, case: &Case) -> (Vec<String>, String) {
        self.clean();
        for side in [Side::Docker, Side::Mvm] {
            for (name, content) in &case.files {
                let p = self.dir(side).join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, content).unwrap();
            }
        }
        let mut diffs = Vec::new();
        let mut mvm_err = String::new();
        for step in &case.steps {
            let d = self.run(Side::Docker, step);
            let m = self.run(Side::Mvm, step);
            if step.check == Check::Setup {
                for (side, r) in [("docker", &d), ("mvm", &m)] {
                    if r.rc != 0 {
                        diffs.push(format!(
                            "set-up `{}` failed through {side} ({}): {}",
                            step.line,
                            r.rc,
                            compare::first_line(&r.stderr)
                        ));
                    }
                }
            }
            if !matches!(step.check, Check::Setup | Check::Quiet) {
                mvm_err += &format!("{}{}", m.stdout, m.stderr);
            }
            for diff in differences(step.check, &d, &m, &step.meaning) {
                diffs.push(format!("`{}`: {diff}", step.line));
            }
        }
        (diffs, mvm_err)
    }
}

/// Runs `cmd` with `stdin` written to it, killed after TIMEOUT (exit code -2 then).
fn run_bounded(mut cmd: Command, stdin: Option<&'static str>) -> Ran {
    let mut child = cmd.spawn().expect("spawn");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let rc = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -2;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        rc,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

#[test]
fn the_same_command_lines_through_docker_and_mvm() {
    let pair = Pair::start();
    let only = std::env::var("PARITY_ONLY").ok();
    let mut report = String::new();
    let mut failures = Vec::new();
    let (mut same, mut gaps, mut deliberate) = (0, 0, 0);
    for case in cases::all() {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let started = Instant::now();
        let (diffs, mvm_err) = pair.case(&case);
        let took = started.elapsed().as_secs_f64();
        let verdict = match (&case.expect, diffs.is_empty()) {
            (Expect::Same, true) => {
                same += 1;
                "same".to_string()
            }
            (Expect::Same, false) => {
                failures.push(format!("{}: differs:\n  {}", case.name, diffs.join("\n  ")));
                "DIFFERS".to_string()
            }
            (Expect::Gap(what), false) => {
                gaps += 1;
                format!("gap: {what}\n    {}", diffs.join("\n    "))
            }
            (Expect::Gap(_), true) => {
                failures.push(format!(
                    "{}: now behaves as Docker: mark it Expect::Same in cases.rs",
                    case.name
                ));
                "GAP CLOSED".to_string()
            }
            (Expect::Deliberate { why, says }, _) => {
                deliberate += 1;
                if !mvm_err.contains(says) {
                    failures.push(format!(
                        "{}: deliberately different, but mvm does not say {says:?}: {mvm_err}",
                        case.name
                    ));
                }
                format!("deliberately different: {why}")
            }
        };
        report += &format!("{:<44} {took:>5.1}s  {verdict}\n", case.name);
    }
    pair.clean();
    let total = same + gaps + deliberate;
    report += &format!(
        "\n{total} cases: {same} the same, {gaps} different (known gaps), {deliberate} deliberately different\n"
    );
    eprintln!("{report}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/parity-report.txt");
    let _ = std::fs::write(target, &report);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

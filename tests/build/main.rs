//! `mvm build`, `commit` and `diff` through the real binary: every instruction, multi-stage
//! builds, the cache, whiteouts, and the errors a user makes.

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::{TestRoot, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn ok(r: &TestRoot, args: &[&str]) -> String {
    r.ok(args)
}

/// A build context directory, removed on drop.
struct Context(PathBuf);

impl Context {
    fn new(name: &str, dockerfile: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/mvm-bt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("Dockerfile"), dockerfile).unwrap();
        Self(p)
    }
    fn write(&self, rel: &str, data: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inspect_image(r: &TestRoot, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(r, &["image", "inspect", name])).unwrap();
    v[0].clone()
}

/// Names of the entries of a stored (uncompressed) layer.
fn layer_entries(r: &TestRoot, digest: &str) -> Vec<String> {
    let hex = digest.trim_start_matches("sha256:");
    let path = r.path.join("images/blobs/sha256").join(hex);
    let f = std::fs::File::open(&path).unwrap();
    let mut a = tar::Archive::new(f);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

const EVERYTHING: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS base
ARG GREETING=hi
ENV APP=/app \
    MODE="build mode"
WORKDIR $APP
COPY files/ ./data/
ADD archive.tar /unpacked/
RUN echo "$GREETING from $MODE" > built.txt && rm -f /bin/vi
LABEL org.example.name="demo" version=1
EXPOSE 8080 53/udp
VOLUME /cache
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD true
SHELL ["/bin/sh", "-c"]
ONBUILD RUN echo later
MAINTAINER someone

FROM busybox
COPY --from=base /app/built.txt /out/
COPY --chown=5:6 --chmod=700 files/a.txt /out/a
COPY --chown=user:root files/a.txt /out/named
ENTRYPOINT ["cat"]
CMD ["/out/built.txt"]
"#;

fn archive(ctx: &Context) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, "inner/x.txt", &b"xyz"[..]).unwrap();
    std::fs::write(ctx.0.join("archive.tar"), b.into_inner().unwrap()).unwrap();
}

#[test]
fn every_instruction_multi_stage_and_the_cache() {
    let r = TestRoot::with_busybox(MVM);
    let ctx = Context::new("all", EVERYTHING);
    ctx.write("files/a.txt", "a\n");
    ctx.write("files/sub/b.txt", "b\n");
    ctx.write("files/skip.log", "no\n");
    ctx.write(".dockerignore", "**/*.log\n");
    archive(&ctx);
    let out = ok(
        &r,
        &[
            "build",
            "-t",
            "demo:1",
            "--target",
            "base",
            "--build-arg",
            "GREETING=hey",
            ctx.s(),
        ],
    );
    assert!(out.contains("Successfully tagged demo:1"), "{out}");
    assert!(out.contains("Running in"), "{out}");
    // Intermediate images are listed with -a only, as Docker lists them.
    let listed = ok(&r, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!listed.contains("<none>"), "{listed}");
    let all = ok(
        &r,
        &["images", "-a", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(all.contains("<none>"), "{all}");
    let cfg = inspect_image(&r, "demo:1");
    let c = &cfg["Config"];
    let env = c["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "APP=/app"), "{c}");
    assert!(env.iter().any(|e| e == "MODE=build mode"), "{c}");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert!(c["Volumes"]["/cache"].is_object(), "{c}");
    assert_eq!(c["Labels"]["org.example.name"], "demo");
    assert_eq!(c["Labels"]["version"], "1");
    assert_eq!(c["Healthcheck"]["Retries"], 2, "{c}");
    assert_eq!(c["Healthcheck"]["Test"][0], "CMD-SHELL");
    // The RUN saw the build argument and ENV; its deletion is a whiteout in its layer.
    let o = r.mvm(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        "demo:1",
        "-c",
        "cat built.txt; ls data data/sub /unpacked/inner; ls /bin/vi",
    ]);
    let s = stdout(&o);
    assert!(s.starts_with("hey from build mode\n"), "{s}{}", stderr(&o));
    assert!(
        s.contains("a.txt") && s.contains("b.txt") && s.contains("x.txt"),
        "{s}"
    );
    assert!(!s.contains("skip.log"), ".dockerignore: {s}");
    assert!(
        stderr(&o).contains("/bin/vi: No such file"),
        "{}",
        stderr(&o)
    );
    let layers = cfg["RootFS"]["Layers"].as_array().unwrap().clone();
    let run_layer = layers.last().unwrap().as_str().unwrap();
    let entries = layer_entries(&r, run_layer);
    assert!(entries.iter().any(|e| e == "bin/.wh.vi"), "{entries:?}");
    assert!(entries.iter().any(|e| e == "app/built.txt"), "{entries:?}");
    // The whole file: the final stage copies from the first.
    let out = ok(
        &r,
        &[
            "build",
            "-t",
            "demo:final",
            "--build-arg",
            "GREETING=hey",
            ctx.s(),
        ],
    );
    assert!(out.contains("Using cache"), "{out}");
    assert_eq!(
        ok(&r, &["run", "--rm", "--network", "none", "demo:final"]),
        "hey from build mode\n"
    );
    let ls = ok(
        &r,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "ls",
            "demo:final",
            "-ln",
            "/out/a",
        ],
    );
    assert!(
        ls.starts_with("-rwx------") && ls.contains(" 5 ") && ls.contains(" 6 "),
        "{ls}"
    );
    let named = ok(
        &r,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "stat",
            "demo:final",
            "-c",
            "%u:%g",
            "/out/named",
        ],
    );
    assert_eq!(
        named, "1000:0\n",
        "--chown with names from the image's passwd and group"
    );
    let fin = inspect_image(&r, "demo:final");
    assert_eq!(fin["Config"]["Entrypoint"][0], "cat");
    assert_eq!(fin["Config"]["Cmd"][0], "/out/built.txt");
    // Unchanged: no VM boots at all.
    let again = ok(
        &r,
        &[
            "build",
            "-t",
            "demo:final",
            "--build-arg",
            "GREETING=hey",
            ctx.s(),
        ],
    );
    assert!(!again.contains("Running in"), "{again}");
    // A changed COPY source rebuilds from that line on (the RUN after it runs again).
    ctx.write("files/a.txt", "changed\n");
    let changed = ok(
        &r,
        &[
            "build",
            "-t",
            "demo:final",
            "--build-arg",
            "GREETING=hey",
            ctx.s(),
        ],
    );
    let before_copy = changed.split("COPY files/").next().unwrap();
    assert!(before_copy.contains("Using cache"), "{changed}");
    assert!(changed.contains("Running in"), "{changed}");
    // --no-cache runs everything; -q prints only the ID.
    let q = ok(
        &r,
        &[
            "build",
            "-q",
            "--no-cache",
            "--build-arg",
            "GREETING=hey",
            ctx.s(),
        ],
    );
    assert!(
        q.trim().starts_with("sha256:") && q.lines().count() == 1,
        "{q}"
    );
}

#[test]
fn build_errors_are_one_clear_line_and_leave_no_image() {
    let r = TestRoot::with_busybox(MVM);
    let cases: &[(&str, &str, &str)] = &[
        ("unknown", "FROM busybox\nFORM x\n", "Dockerfile:2"),
        (
            "outside",
            "FROM busybox\nCOPY ../secret /x\n",
            "outside the build context",
        ),
        (
            "missing",
            "FROM busybox\nCOPY nothere /x\n",
            "file not found",
        ),
        (
            "chown",
            "FROM busybox\nCOPY --chown=nosuchuser Dockerfile /y\n",
            "unable to find user nosuchuser",
        ),
        (
            "runfails",
            "FROM busybox\nRUN echo visible-output; exit 3\n",
            "returned a non-zero code: 3",
        ),
        ("noimage", "FROM 127.0.0.1:9/none\n", "127.0.0.1:9"),
        ("empty", "", "no instructions"),
    ];
    for (name, text, want) in cases {
        let ctx = Context::new(name, text);
        let o = r.mvm(&["build", "-t", "broken:1", ctx.s()]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{name}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let err = stderr(&o);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(want), "{name}: {err}");
        if *name == "runfails" {
            assert!(
                stdout(&o).contains("visible-output"),
                "the RUN's output is shown"
            );
        }
    }
    let images = ok(&r, &["images", "--format", "{{.Repository}}"]);
    assert!(!images.contains("broken"), "{images}");
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
    let o = r.mvm(&["build", "/nonexistent-context-dir"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn commit_and_diff_of_a_container() {
    let r = TestRoot::with_busybox(MVM);
    ok(
        &r,
        &[
            "run",
            "--name",
            "c",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "mkdir /data && echo d > /data/f && rm /bin/vi && echo x >> /etc/passwd",
        ],
    );
    let diff = ok(&r, &["diff", "c"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "A /data",
        "A /data/f",
        "C /bin",
        "D /bin/vi",
        "C /etc",
        "C /etc/passwd",
    ] {
        assert!(lines.contains(&want), "{want} in {diff}");
    }
    assert!(
        !diff.contains("/etc/hostname"),
        "runtime files are not changes: {diff}"
    );
    let id = ok(
        &r,
        &[
            "commit",
            "-c",
            "CMD [\"cat\", \"/data/f\"]",
            "-m",
            "snapshot",
            "c",
            "snap:v1",
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        ok(&r, &["run", "--rm", "--network", "none", "snap:v1"]),
        "d\n"
    );
    let o = r.mvm(&[
        "run",
        "--rm",
        "--network",
        "none",
        "snap:v1",
        "ls",
        "/bin/vi",
    ]);
    assert_ne!(o.status.code(), Some(0));
    let hist = ok(&r, &["history", "snap:v1"]);
    assert!(hist.contains("snapshot"), "{hist}");
    // A running container commits too (paused meanwhile).
    ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "live",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo live > /live; sleep 600",
        ],
    );
    let mut committed = false;
    for _ in 0..100 {
        if r.mvm(&["exec", "live", "cat", "/live"]).status.success() {
            ok(&r, &["commit", "live", "live:v1"]);
            committed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(committed);
    assert_eq!(
        ok(
            &r,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "live:v1",
                "cat",
                "/live"
            ]
        ),
        "live\n"
    );
    assert_eq!(r.mvm(&["diff", "nosuch"]).status.code(), Some(1));
    assert_eq!(r.mvm(&["commit", "nosuch"]).status.code(), Some(1));
    ok(&r, &["rm", "-f", "c", "live"]);
}

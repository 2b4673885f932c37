//! `mvm build`, `commit` and `diff` through the real binary: every instruction, multi-stage
//! builds, the cache, whiteouts, and the errors a user makes.

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

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
        // Docker's builder: a failing RUN's own code, 1 for anything else.
        let want_code = if *name == "runfails" { 3 } else { 1 };
        assert_eq!(
            o.status.code(),
            Some(want_code),
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
    assert_eq!(o.status.code(), Some(1));
}

/// Waits (up to 20 s) until the detached container `name` has written `file`.
fn wait_for_file(r: &TestRoot, name: &str, file: &str) {
    for _ in 0..100 {
        if r.mvm(&["exec", name, "cat", file]).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("container {name} never wrote {file}");
}

#[test]
fn commit_and_diff_of_a_container() {
    let r = TestRoot::with_busybox(MVM);
    ok(
        &r,
        &[
            "run",
            "--name",
            "c1",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "mkdir /data && echo d > /data/f && rm /bin/vi && echo x >> /etc/passwd",
        ],
    );
    let diff = ok(&r, &["diff", "c1"]);
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
            "c1",
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
    wait_for_file(&r, "live", "/live");
    ok(&r, &["commit", "live", "live:v1"]);
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
    ok(&r, &["rm", "-f", "c1", "live"]);
}

// ---- A hostile build context or image never reaches the host -----------------------------

/// A directory outside every build context, holding a file with a marker no image may ever
/// contain; removed on drop.
struct HostSecret {
    dir: PathBuf,
    marker: String,
}

impl HostSecret {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/mvm-bt-{}-{name}-host", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let marker = format!("MVM-HOST-SECRET-{}-{name}-{nanos}", std::process::id());
        std::fs::write(dir.join("secret"), &marker).unwrap();
        Self { dir, marker }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    fn s(&self) -> &str {
        self.dir.to_str().unwrap()
    }
    /// The marker file is as it was.
    fn assert_unchanged(&self) {
        assert_eq!(
            std::fs::read_to_string(self.path("secret")).unwrap(),
            self.marker,
            "the host file changed"
        );
    }
}

impl Drop for HostSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails if `needle` is in any file under the test's state root: its blobs (layers, configs),
/// image disks, caches and temporary files.
fn assert_not_in_store(r: &TestRoot, needle: &str) {
    fn walk(dir: &std::path::Path, needle: &[u8], hits: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&e.path(), needle, hits);
            } else if ft.is_file()
                && let Ok(data) = std::fs::read(e.path())
                && data.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(e.path());
            }
        }
    }
    let mut hits = Vec::new();
    walk(&r.path, needle.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "host bytes {needle:?} in {hits:?}");
}

/// Fails if a build left anything in the store's scratch area (an unpacked stage root, a
/// half-made layer): those go also when the step fails.
fn assert_no_scratch(r: &TestRoot) {
    let left: Vec<_> = std::fs::read_dir(r.path.join("images/tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the store: {left:?}");
}

/// One tar entry with its name and link name written as raw bytes (`..` and absolute paths
/// included, which the tar crate's builder refuses to make).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        raw_entry(&mut out, name, *kind, link, data);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Imports a root filesystem made of `entries` as the image `name`.
fn import_entries(
    r: &TestRoot,
    host: &HostSecret,
    name: &str,
    entries: &[(&str, tar::EntryType, &str, &[u8])],
) {
    let tar = host.path(&format!("{name}.tar"));
    std::fs::write(&tar, raw_tar(entries)).unwrap();
    ok(r, &["import", tar.to_str().unwrap(), name]);
}

/// `(path, uid, gid, content)` of the entries of every layer of `image`.
fn image_files(r: &TestRoot, image: &str) -> Vec<(String, u64, u64, Vec<u8>)> {
    use std::io::Read;
    let cfg = inspect_image(r, image);
    let mut out = Vec::new();
    for layer in cfg["RootFS"]["Layers"].as_array().unwrap() {
        let hex = layer.as_str().unwrap().trim_start_matches("sha256:");
        let f = std::fs::File::open(r.path.join("images/blobs/sha256").join(hex)).unwrap();
        let mut a = tar::Archive::new(f);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let (uid, gid) = (e.header().uid().unwrap(), e.header().gid().unwrap());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, uid, gid, data));
        }
    }
    out
}

/// Builds `ctx` as `tag` and returns the last line of stderr of a failed build.
fn build_fails(r: &TestRoot, ctx: &Context, tag: &str) -> String {
    let o = r.mvm(&["build", "-t", tag, ctx.s()]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the build should fail: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o).lines().last().unwrap_or_default().to_string()
}

const NOT_FOUND: &str = "file not found in build context or excluded by .dockerignore";

#[test]
fn context_links_to_the_host_resolve_inside_the_context() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("abslink");
    // A directory link, a file link and a link to the whole host directory, all absolute.
    let cases: &[(&str, &str, &str)] = &[
        ("dirlink", "COPY data/secret /leak\n", "stat data/secret"),
        ("filelink", "COPY leak /leak\n", "stat leak"),
        ("globlink", "COPY data/sec* /leak/\n", "stat data/sec*"),
    ];
    for (name, copy, want) in cases {
        let ctx = Context::new(&format!("abs-{name}"), &format!("FROM scratch\n{copy}"));
        std::os::unix::fs::symlink(&host.dir, ctx.0.join("data")).unwrap();
        std::os::unix::fs::symlink(host.path("secret"), ctx.0.join("leak")).unwrap();
        let last = build_fails(&r, &ctx, &format!("leak-{name}:1"));
        assert!(
            last.contains(&format!(
                "COPY failed: {NOT_FOUND}: {want}: file does not exist"
            )),
            "{name}: {last}"
        );
        assert_not_in_store(&r, &host.marker);
    }
    // Links inside a copied directory are copied as links (their text), never followed.
    let ctx = Context::new("abs-tree", "FROM scratch\nCOPY . /all/\n");
    ctx.write("plain.txt", "plain\n");
    std::os::unix::fs::symlink(&host.dir, ctx.0.join("data")).unwrap();
    ok(&r, &["build", "-t", "tree:1", ctx.s()]);
    let files = image_files(&r, "tree:1");
    assert!(
        files.iter().any(|(p, ..)| p == "all/plain.txt"),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|(p, ..)| p.starts_with("all/data/")),
        "a directory link was followed: {files:?}"
    );
    assert_not_in_store(&r, &host.marker);
    host.assert_unchanged();
}

#[test]
fn context_links_climbing_out_stay_in_the_context() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("uplink");
    let through = format!("up{}", host.s());
    let cases = [
        format!("COPY {through}/secret /leak\n"),
        format!("COPY {through}/sec* /leak/\n"),
        format!(
            "COPY up/tmp/mvm-bt-{}-uplink-h*/secret /leak/\n",
            std::process::id()
        ),
        "COPY deep/secret /leak\n".to_string(),
    ];
    for (i, copy) in cases.iter().enumerate() {
        let ctx = Context::new(&format!("up-{i}"), &format!("FROM scratch\n{copy}"));
        std::os::unix::fs::symlink("../../..", ctx.0.join("up")).unwrap();
        ctx.write("sub/keep", "k\n");
        // A link deeper in the context climbing past its root.
        std::os::unix::fs::symlink(
            format!("../../../../..{}", host.s()),
            ctx.0.join("sub/deep"),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/deep", ctx.0.join("deep")).unwrap();
        let last = build_fails(&r, &ctx, &format!("up-{i}:1"));
        assert!(
            last.contains(&format!("COPY failed: {NOT_FOUND}")),
            "{copy}: {last}"
        );
        assert_not_in_store(&r, &host.marker);
    }
    // Links that stay inside the context are followed there, as Docker follows them: an
    // absolute target is read as if the context were /.
    let ctx = Context::new(
        "up-inside",
        "FROM scratch\nCOPY alias/a.txt /one\nCOPY abs /two\nCOPY alias /three/\nCOPY up/files/a.txt /four\n",
    );
    ctx.write("files/a.txt", "inside\n");
    std::os::unix::fs::symlink("files", ctx.0.join("alias")).unwrap();
    std::os::unix::fs::symlink("/files/a.txt", ctx.0.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../..", ctx.0.join("up")).unwrap();
    ok(&r, &["build", "-t", "inside:1", ctx.s()]);
    let files = image_files(&r, "inside:1");
    for want in ["one", "two", "three/a.txt", "four"] {
        assert!(
            files
                .iter()
                .any(|(p, _, _, d)| p == want && d == b"inside\n"),
            "{want} in {files:?}"
        );
    }
    assert_not_in_store(&r, &host.marker);
    host.assert_unchanged();
}

#[test]
fn copy_from_an_image_does_not_follow_its_links_to_the_host() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("fromimg");
    use tar::EntryType::{Directory, Regular, Symlink};
    import_entries(
        &r,
        &host,
        "evil",
        &[
            ("opt", Symlink, "/", b""),
            ("up", Symlink, "../../../..", b""),
            ("data/", Directory, "", b""),
            ("data/ok", Regular, "", b"image-own\n"),
            ("okl", Symlink, "/data/ok", b""),
        ],
    );
    for (i, src) in [
        format!("/opt{}/secret", host.s()),
        format!("/up{}/secret", host.s()),
        format!("/opt{}/sec*", host.s()),
    ]
    .iter()
    .enumerate()
    {
        let ctx = Context::new(
            &format!("from-{i}"),
            &format!("FROM scratch\nCOPY --from=evil {src} /x\n"),
        );
        let last = build_fails(&r, &ctx, &format!("from-{i}:1"));
        assert!(
            last.contains(&format!("COPY failed: {NOT_FOUND}")),
            "{src}: {last}"
        );
        assert_not_in_store(&r, &host.marker);
        assert_no_scratch(&r);
    }
    // The image's own links are followed inside its root.
    let ctx = Context::new(
        "from-ok",
        "FROM scratch\nCOPY --from=evil /okl /y\nCOPY --from=evil /opt/data/ /z/\n",
    );
    ok(&r, &["build", "-t", "fromok:1", ctx.s()]);
    let files = image_files(&r, "fromok:1");
    for want in ["y", "z/ok"] {
        assert!(
            files
                .iter()
                .any(|(p, _, _, d)| p == want && d == b"image-own\n"),
            "{want} in {files:?}"
        );
    }
    assert_not_in_store(&r, &host.marker);
    assert_no_scratch(&r);
    host.assert_unchanged();
    assert!(
        r.leftover_containers().is_empty(),
        "{:?}",
        r.leftover_containers()
    );
}

#[test]
fn chown_names_are_looked_up_inside_the_stage() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("chown");
    std::fs::write(host.path("passwd"), "someuser:x:4242:4242::/:/bin/sh\n").unwrap();
    std::fs::write(host.path("group"), "somegroup:x:4243:\n").unwrap();
    let passwd = host.path("passwd");
    let group_up = format!("../../../..{}/group", host.s());
    use tar::EntryType::{Directory, Regular, Symlink};
    import_entries(
        &r,
        &host,
        "evilpw",
        &[
            ("etc/", Directory, "", b""),
            ("etc/passwd", Symlink, passwd.to_str().unwrap(), b""),
            ("etc/group", Symlink, &group_up, b""),
        ],
    );
    import_entries(
        &r,
        &host,
        "goodpw",
        &[
            ("etc/", Directory, "", b""),
            (
                "etc/passwd",
                Regular,
                "",
                b"root:x:0:0::/:/bin/sh\nsomeuser:x:4242:4242::/:/bin/sh\n",
            ),
            ("etc/group", Regular, "", b"root:x:0:\nsomegroup:x:4243:\n"),
        ],
    );
    for (name, spec, want) in [
        ("user", "someuser", "unable to find user someuser"),
        ("group", "0:somegroup", "unable to find group somegroup"),
    ] {
        let ctx = Context::new(
            &format!("chown-{name}"),
            &format!("FROM evilpw\nCOPY --chown={spec} Dockerfile /f\n"),
        );
        let last = build_fails(&r, &ctx, &format!("chown-{name}:1"));
        assert!(last.contains(want), "{spec}: {last}");
        assert_no_scratch(&r);
    }
    // The stage's own files name the user; two COPYs with names (the second looks them up
    // again for the new image).
    let ctx = Context::new(
        "chown-good",
        "FROM goodpw\nCOPY --chown=someuser:somegroup Dockerfile /f\nCOPY --chown=someuser Dockerfile /g\n",
    );
    ok(&r, &["build", "-t", "chowned:1", ctx.s()]);
    let files = image_files(&r, "chowned:1");
    assert!(
        files
            .iter()
            .any(|(p, u, g, _)| p == "f" && *u == 4242 && *g == 4243),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|(p, u, g, _)| p == "g" && *u == 4242 && *g == 4242),
        "{files:?}"
    );
    // Again, from the cache.
    let again = ok(&r, &["build", "-t", "chowned:1", ctx.s()]);
    assert!(again.contains("Using cache"), "{again}");
    assert_no_scratch(&r);
    host.assert_unchanged();
}

#[test]
fn add_of_a_hostile_archive_stays_in_its_destination() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("addtar");
    use tar::EntryType::{Link, Regular, Symlink};
    let escape = format!("mvm-escape-{}", std::process::id());
    let outside = [
        PathBuf::from(format!("/{escape}")),
        PathBuf::from(format!("/tmp/{escape}")),
        PathBuf::from(format!("/abs/{escape}")),
    ];
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let up = format!("../../{escape}");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "dotdot",
            raw_tar(&[("../x", Regular, "", b"x\n")]),
            "outside",
        ),
        (
            "climb",
            raw_tar(&[
                ("ok", Regular, "", b"ok\n"),
                (&up, Regular, "", b"escaped\n"),
            ]),
            "outside",
        ),
        (
            "hardlink",
            raw_tar(&[("hl", Link, "../../etc/passwd", b"")]),
            "invalid hardlink",
        ),
    ];
    for (name, tar, want) in &cases {
        let ctx = Context::new(&format!("add-{name}"), "FROM scratch\nADD a.tar /dest/\n");
        std::fs::write(ctx.0.join("a.tar"), tar).unwrap();
        let last = build_fails(&r, &ctx, &format!("add-{name}:1"));
        assert!(
            last.contains("ADD failed") && last.contains(want),
            "{name}: {last}"
        );
    }
    // Absolute names land under the destination; links are kept as links.
    let ctx = Context::new("add-abs", "FROM scratch\nADD a.tar /dest/\n");
    let abs = format!("/abs/{escape}");
    std::fs::write(
        ctx.0.join("a.tar"),
        raw_tar(&[
            (&abs, Regular, "", b"abs\n"),
            ("sl", Symlink, "/etc/passwd", b""),
            ("hl", Link, &abs, b""),
        ]),
    )
    .unwrap();
    ok(&r, &["build", "-t", "addabs:1", ctx.s()]);
    let files = image_files(&r, "addabs:1");
    let names: Vec<&str> = files.iter().map(|(p, ..)| p.as_str()).collect();
    for want in [
        format!("dest/abs/{escape}"),
        "dest/sl".to_string(),
        "dest/hl".to_string(),
    ] {
        assert!(names.contains(&want.as_str()), "{want} in {names:?}");
    }
    assert!(
        names.iter().all(|n| n.starts_with("dest")),
        "entries outside the destination: {names:?}"
    );
    // An archive that is a link out of the context is not read.
    std::fs::write(
        host.path("host.tar"),
        raw_tar(&[("leak", Regular, "", host.marker.as_bytes())]),
    )
    .unwrap();
    let ctx = Context::new("add-link", "FROM scratch\nADD a.tar /dest/\n");
    std::os::unix::fs::symlink(host.path("host.tar"), ctx.0.join("a.tar")).unwrap();
    let last = build_fails(&r, &ctx, "add-link:1");
    assert!(
        last.contains(&format!("ADD failed: {NOT_FOUND}: stat a.tar")),
        "{last}"
    );
    assert_not_in_store(&r, &host.marker);
    for p in &outside {
        assert!(!p.exists(), "{} was written", p.display());
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    host.assert_unchanged();
}

#[test]
fn dockerfile_and_dockerignore_links_are_not_read_from_the_host() {
    let r = TestRoot::empty(MVM);
    let host = HostSecret::new("ignore");
    // A host .dockerignore that would exclude the file the build copies.
    std::fs::write(host.path("ignore"), "kept.txt\n").unwrap();
    let ctx = Context::new("ignore-link", "FROM scratch\nCOPY kept.txt /kept\n");
    ctx.write("kept.txt", "kept\n");
    std::os::unix::fs::symlink(host.path("ignore"), ctx.0.join(".dockerignore")).unwrap();
    ok(&r, &["build", "-t", "ignore:1", ctx.s()]);
    let files = image_files(&r, "ignore:1");
    assert!(
        files
            .iter()
            .any(|(p, _, _, d)| p == "kept" && d == b"kept\n"),
        "{files:?}"
    );
    // A Dockerfile that is a link to a host file is not read either.
    std::fs::write(
        host.path("Dockerfile"),
        format!("FROM scratch\nLABEL leak={}\n", host.marker),
    )
    .unwrap();
    let ctx = Context::new("dockerfile-link", "");
    std::fs::remove_file(ctx.0.join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink(host.path("Dockerfile"), ctx.0.join("Dockerfile")).unwrap();
    let last = build_fails(&r, &ctx, "dflink:1");
    assert!(last.contains("failed to read"), "{last}");
    assert_not_in_store(&r, &host.marker);
    // Inside the context, the links are followed there.
    let ctx = Context::new("dockerfile-inside", "");
    std::fs::remove_file(ctx.0.join("Dockerfile")).unwrap();
    ctx.write(
        "real/Dockerfile",
        "FROM scratch\nCOPY kept.txt skipped.txt /\n",
    );
    ctx.write("real/ignore", "skipped.txt\n");
    ctx.write("kept.txt", "kept\n");
    ctx.write("skipped.txt", "no\n");
    std::os::unix::fs::symlink("/real/Dockerfile", ctx.0.join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink("real/ignore", ctx.0.join(".dockerignore")).unwrap();
    let last = build_fails(&r, &ctx, "dfinside:1");
    assert!(last.contains("stat skipped.txt"), "{last}");
    host.assert_unchanged();
}

// ---- No filesystem a guest wrote is mounted by the host kernel ------------------------------

/// Runs `mvm args` under strace (children included) and returns every mount-family system
/// call it or its children made (none is the only good answer).
fn mount_calls(r: &TestRoot, args: &[&str]) -> Vec<String> {
    let trace = r.path.join(format!("strace-{}.log", args[0]));
    let cmd = r.cmd(args);
    let o = Command::new("strace")
        .args([
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-e",
            "trace=mount,umount2,fsopen,fsmount,move_mount,open_tree,mount_setattr",
            "-o",
        ])
        .arg(&trace)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .output()
        .expect("strace is installed by scripts/setup.sh");
    assert_eq!(
        o.status.code(),
        Some(0),
        "strace mvm {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    log.lines()
        .filter(|l| !l.contains("+++") && !l.contains("---"))
        .filter(|l| parses_a_filesystem(l))
        .map(str::to_string)
        .collect()
}

/// Whether a traced call makes the kernel read a filesystem: any `fsopen`, or a `mount` with
/// a filesystem type other than the jail's own `tmpfs` (binds and remounts, which the
/// hypervisors' jails make of host paths in their private mount namespaces, read none).
fn parses_a_filesystem(line: &str) -> bool {
    if line.contains("fsopen(") {
        return true;
    }
    let Some(args) = line.split_once("mount(").map(|(_, a)| a) else {
        return false;
    };
    if line.contains("umount2(") {
        return false;
    }
    // mount(SOURCE, TARGET, FSTYPE, ...): each of the first three is NULL or "quoted".
    let mut rest = args;
    let mut fields = Vec::new();
    for _ in 0..3 {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("NULL") {
            fields.push(None);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            fields.push(Some(&r[..end]));
            rest = &r[end.saturating_add(1).min(r.len())..];
        } else {
            return true; // not understood: count it
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    !matches!(fields[2], None | Some("tmpfs"))
}

#[test]
fn the_mount_filter_tells_a_filesystem_from_a_bind() {
    for (line, parses) in [
        (
            r#"1 mount("/dev/loop3", "/tmp/x", "ext4", MS_RDONLY, NULL) = 0"#,
            true,
        ),
        (
            r#"1 mount("/tmp/d.ext4", "/tmp/x", "ext4", 0, NULL) = -1 EPERM"#,
            true,
        ),
        (r#"1 fsopen("erofs", 0) = 3"#, true),
        (
            r#"1 mount("tmpfs", "/r/jail", "tmpfs", MS_NOSUID, "mode=0755") = 0"#,
            false,
        ),
        (
            r#"1 mount("/usr", "/r/jail/usr", NULL, MS_BIND|MS_REC, NULL) = 0"#,
            false,
        ),
        (
            r#"1 mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL) = 0"#,
            false,
        ),
        (r#"1 umount2(".", MNT_DETACH) = 0"#, false),
    ] {
        assert_eq!(parses_a_filesystem(line), parses, "{line}");
    }
}

/// Loop devices bound to a file, and the filesystems mounted in every mount namespace (device,
/// type and source), as one string. A tmpfs is left out: the hypervisors' jails each mount one
/// as their root in a private namespace, with binds of host paths (whose device, type and
/// source are the host's own, already in the set); a guest's disk would show up as a new
/// device.
fn host_mounts() -> String {
    let mut seen = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(m) = std::fs::read_to_string(e.path().join("mountinfo")) {
            seen.extend(m.lines().filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let dev = left.split(' ').nth(2)?;
                let mut r = right.split(' ');
                let (fstype, source) = (r.next()?, r.next()?);
                (fstype != "tmpfs").then(|| format!("{dev} {fstype} {source}"))
            }));
        }
    }
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(f) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            seen.insert(format!("loop {f}"));
        }
    }
    seen.into_iter().collect::<Vec<_>>().join("\n")
}

#[test]
fn commit_diff_and_build_make_no_mount_on_the_host() {
    let r = TestRoot::with_busybox(MVM);
    let before = host_mounts();
    ok(
        &r,
        &[
            "run",
            "--name",
            "c1",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo x > /f",
        ],
    );
    // State is no other local user's: the root 0700, a container's directory 0700, its
    // writable disk and log 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&r.path), 0o700);
    for c in std::fs::read_dir(r.path.join("containers"))
        .unwrap()
        .flatten()
        .filter(|c| c.path().is_dir())
    {
        assert_eq!(mode(&c.path()), 0o700, "{}", c.path().display());
        for f in std::fs::read_dir(c.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name == "upper.ext4" || name.ends_with(".log") {
                assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
            }
        }
    }
    // A stopped container (helper VM) and a running one (its agent).
    assert_eq!(mount_calls(&r, &["diff", "c1"]), Vec::<String>::new());
    assert_eq!(
        mount_calls(&r, &["commit", "c1", "nomount:v1"]),
        Vec::<String>::new()
    );
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
            "echo y > /g; sleep 600",
        ],
    );
    wait_for_file(&r, "live", "/g");
    let during = host_mounts();
    assert_eq!(mount_calls(&r, &["diff", "live"]), Vec::<String>::new());
    assert_eq!(
        mount_calls(&r, &["commit", "live", "nomount:v2"]),
        Vec::<String>::new()
    );
    // A build with RUN, COPY --from and a --chown name.
    let ctx = r.path.join("ctx-nomount");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "f").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\nCOPY --chown=nobody f /f\nCOPY --from=nomount:v1 /f /from\n",
    )
    .unwrap();
    let ctx_s = ctx.to_str().unwrap();
    assert_eq!(
        mount_calls(
            &r,
            &["build", "-q", "--network", "none", "-t", "nomount:b", ctx_s]
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        ok(
            &r,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "nomount:b",
                "cat",
                "/built",
                "/from"
            ]
        ),
        "built\nx\n"
    );
    ok(&r, &["rm", "-f", "c1", "live"]);
    // Nothing of ours was mounted anywhere meanwhile, and nothing is left.
    assert_eq!(before, during);
    assert_eq!(before, host_mounts());
}

//! Image tests: push and pull through Debian's `docker-registry` on loopback, gzip and zstd
//! layers made by skopeo, corrupt blobs, `images`/`tag`/`rmi`/`inspect`/`history`, and
//! `save`/`load` (checked against skopeo) and `image prune`.

#[path = "../common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{TestRoot, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{tool} is missing: run scripts/setup.sh (apt-get install docker-registry skopeo)"
            )
        })
}

/// A `docker-registry` on a free loopback port, stopped by PID on drop.
struct Registry {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Registry {
    fn start() -> Self {
        let bin = require("docker-registry");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = PathBuf::from(format!("/tmp/mvm-reg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("127.0.0.1:{port}");
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nhealth:\n  storagedriver:\n    enabled: false\n",
            dir.display()
        );
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The data file of a blob in the registry's storage.
    fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir.join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

/// Pushes the busybox image as `<registry>/busybox:v1` from a fresh root.
fn push_busybox(reg: &Registry) -> (TestRoot, String) {
    let r = TestRoot::with_busybox(MVM).on_host_network();
    let name = format!("{}/busybox:v1", reg.addr);
    ok(&r.mvm(&["tag", "busybox", &name]));
    ok(&r.mvm(&["push", &name]));
    (r, name)
}

fn skopeo(args: &[&str]) {
    let o = Command::new(require("skopeo")).args(args).output().unwrap();
    assert!(o.status.success(), "skopeo {args:?}: {}", stderr(&o));
}

fn blob_magic(root: &Path) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let data = std::fs::read(e.path()).unwrap();
        if data.len() >= 4 {
            out.push([data[0], data[1], data[2], data[3]]);
        }
    }
    out
}

#[test]
fn push_then_pull_into_another_root_and_run() {
    let reg = Registry::start();
    let (_src, name) = push_busybox(&reg);
    let again = ok(&_src.mvm(&["push", &name]));
    assert!(again.contains("Layer already exists"), "{again}");
    let dst = TestRoot::empty(MVM).on_host_network();
    let out = ok(&dst.mvm(&["pull", &name]));
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");
    let out = ok(&dst.mvm(&["pull", &name]));
    assert!(out.contains("Image is up to date"), "{out}");
    let o = dst.mvm(&["run", "--rm", "--network", "none", &name, "echo", "hello"]);
    assert_eq!(stdout(&o), "hello\n", "stderr: {}", stderr(&o));
    // By digest too.
    let digest = ok(&dst.mvm(&["images", "--digests", "--format", "{{.Digest}}"]));
    let by_digest = format!("{}/busybox@{}", reg.addr, digest.trim());
    let other = TestRoot::empty(MVM).on_host_network();
    ok(&other.mvm(&["pull", &by_digest]));
    let listed = ok(&other.mvm(&["images", "--format", "{{.Repository}} {{.Tag}}"]));
    assert_eq!(listed, format!("{}/busybox <none>\n", reg.addr));
}

#[test]
fn run_pulls_a_missing_image_first() {
    let reg = Registry::start();
    let (_src, name) = push_busybox(&reg);
    let dst = TestRoot::empty(MVM).on_host_network();
    let o = dst.mvm(&["run", "--rm", "--network", "none", &name, "echo", "pulled"]);
    assert_eq!(stdout(&o), "pulled\n", "stderr: {}", stderr(&o));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("Unable to find image"),
        "stderr: {}",
        stderr(&o)
    );
    // Now it is local: a second run does not pull.
    let o = dst.mvm(&["run", "--rm", "--network", "none", &name, "true"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(
        !stderr(&o).contains("Unable to find image"),
        "{}",
        stderr(&o)
    );
    // A name no registry has: one line, 125, nothing stored.
    let missing = format!("{}/nothere:v1", reg.addr);
    let o = dst.mvm(&["run", "--rm", "--network", "none", &missing, "true"]);
    assert_eq!(o.status.code(), Some(125), "stderr: {}", stderr(&o));
    let listed = ok(&dst.mvm(&["images", "-q"]));
    assert_eq!(listed.lines().count(), 1, "{listed}");
}

#[test]
fn gzip_and_zstd_layers_from_skopeo() {
    let reg = Registry::start();
    let (src, name) = push_busybox(&reg);
    for (fmt, magic) in [("gzip", [0x1f, 0x8b]), ("zstd", [0x28, 0xb5])] {
        let layout = src.path.join(format!("oci-{fmt}"));
        let layout_ref = format!("oci:{}:busybox", layout.display());
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-compress",
            "--dest-compress-format",
            fmt,
            &format!("docker://{name}"),
            &layout_ref,
        ]);
        // A second, empty registry: skopeo would otherwise reuse the uncompressed layer the
        // first one has instead of uploading the compressed one.
        let reg2 = Registry::start();
        let target = format!("{}/busybox-{fmt}:v1", reg2.addr);
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &layout_ref,
            &format!("docker://{target}"),
        ]);
        let dst = TestRoot::empty(MVM).on_host_network();
        ok(&dst.mvm(&["pull", &target]));
        assert!(
            blob_magic(&dst.path).iter().any(|m| m[..2] == magic),
            "no {fmt} layer was stored"
        );
        let o = dst.mvm(&["run", "--rm", "--network", "none", &target, "echo", "hello"]);
        assert_eq!(stdout(&o), "hello\n", "{fmt}: stderr: {}", stderr(&o));
    }
}

#[test]
fn corrupt_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let (src, name) = push_busybox(&reg);
    // The layer: the biggest blob of the source root.
    let layer = std::fs::read_dir(src.path.join("images/blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap();
    let hex = layer.file_name().to_string_lossy().into_owned();
    let data = reg.blob_data(&hex);
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, vec![b'x'; len]).unwrap();
    let dst = TestRoot::empty(MVM).on_host_network();
    let o = dst.mvm(&["pull", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("digest"), "{err}");
    assert!(!dst.path.join("images/blobs/sha256").join(&hex).exists());
    assert_eq!(ok(&dst.mvm(&["images", "-q"])), "");
}

#[test]
fn missing_image_is_one_line_and_exit_1_as_docker_pull() {
    let reg = Registry::start();
    let r = TestRoot::empty(MVM).on_host_network();
    let o = r.mvm(&["pull", &format!("{}/nope:latest", reg.addr)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    // Nothing listens: still one line.
    let o = r.mvm(&["pull", "127.0.0.1:1/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn login_saves_credentials_0600_and_logout_removes_them() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start();
    let r = TestRoot::empty(MVM).on_host_network();
    let o = r.mvm_stdin(
        &["login", "-u", "me", "--password-stdin", &reg.addr],
        b"secret\n",
    );
    assert!(stdout(&o).contains("Login Succeeded"), "{}", stderr(&o));
    // Docker's own file, so `docker login` and `mvm login` share it.
    let auth = r.path.join("docker-config/config.json");
    assert_eq!(
        std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&auth).unwrap().contains(&reg.addr));
    assert!(ok(&r.mvm(&["logout", &reg.addr])).contains("Removing login credentials"));
    assert!(!std::fs::read_to_string(&auth).unwrap().contains(&reg.addr));
}

#[test]
fn images_tag_rmi_history_inspect() {
    let r = TestRoot::with_busybox(MVM).on_host_network();
    let out = ok(&r.mvm(&["images"]));
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        // Docker's padding: at least 10 columns a cell (Go's tabwriter minwidth).
        header.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{header}"
    );
    let row = lines.next().unwrap();
    assert!(row.contains("busybox") && row.contains("ago"), "{row}");
    ok(&r.mvm(&["tag", "busybox", "other:v2"]));
    assert_eq!(
        ok(&r.mvm(&["images", "--format", "{{.Repository}}:{{.Tag}}"])),
        "busybox:latest\nother:v2\n"
    );
    let json = ok(&r.mvm(&["images", "--format", "json"]));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["Repository"], "busybox");
    let ids = ok(&r.mvm(&["images", "-q"]));
    assert_eq!(ids.lines().count(), 1);
    let id = ids.trim().to_string();
    assert_eq!(id.len(), 12);
    let full = ok(&r.mvm(&["images", "-q", "--no-trunc"]));
    assert!(full.starts_with("sha256:") && full.trim().len() == 71);

    let inspect = ok(&r.mvm(&["image", "inspect", "other:v2"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"], full.trim());
    assert_eq!(v[0]["Os"], "linux");
    assert_eq!(v[0]["RepoTags"].as_array().unwrap().len(), 2);
    assert!(v[0]["RootFS"]["Layers"].as_array().is_some());
    let o = r.mvm(&["image", "inspect", "nope"]);
    assert_eq!(o.status.code(), Some(1));

    let hist = ok(&r.mvm(&["history", "busybox"]));
    assert!(hist.starts_with("IMAGE"), "{hist}");
    assert!(hist.lines().nth(1).unwrap().starts_with(&id), "{hist}");

    // By ID with two repositories: refused without -f.
    let o = r.mvm(&["rmi", &id]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("must be forced"), "{}", stderr(&o));
    // A container uses it: the last tag cannot go without -f.
    let cdir = r.path.join("containers/abcdef0123456789");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(
        cdir.join("config.json"),
        format!("{{\"image_id\":\"{}\"}}", full.trim()),
    )
    .unwrap();
    assert_eq!(ok(&r.mvm(&["rmi", "other:v2"])), "Untagged: other:v2\n");
    let o = r.mvm(&["rmi", "busybox"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("abcdef012345"), "{}", stderr(&o));
    std::fs::remove_dir_all(r.path.join("containers")).unwrap();
    let out = ok(&r.mvm(&["rmi", "busybox"]));
    assert!(
        out.starts_with("Untagged: busybox:latest\nDeleted: sha256:"),
        "{out}"
    );
    assert_eq!(ok(&r.mvm(&["images", "-q"])), "");
    let left = std::fs::read_dir(r.path.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "blobs left behind");
    let o = r.mvm(&["rmi", "busybox"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No such image"));
}

// ---------------------------------------------------------------------------------------------
// save, load, image prune

/// Byte offset and size of the data of the tar entry `name` (a plain ustar/GNU tar, as `save`
/// writes it).
fn tar_entry(tar: &[u8], name: &str) -> Option<(usize, usize)> {
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            return None;
        }
        let end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let path = std::str::from_utf8(&h[..end]).unwrap();
        let size_field = std::str::from_utf8(&h[124..136]).unwrap();
        let size =
            usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .unwrap_or(0);
        if path.trim_start_matches("./") == name {
            return Some((off + 512, size));
        }
        off += 512 + size.div_ceil(512) * 512;
    }
    None
}

fn blob_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("images/blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn save_then_load_into_an_empty_root_and_run() {
    let src = TestRoot::with_busybox(MVM).on_host_network();
    let tar = src.path.join("x.tar");
    assert_eq!(
        ok(&src.mvm(&["save", "busybox", "-o", tar.to_str().unwrap()])),
        ""
    );
    // To stdout: the same bytes.
    let o = src.cmd(&["save", "busybox"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&tar).unwrap());

    let dst = TestRoot::empty(MVM).on_host_network();
    let out = ok(&dst.mvm(&["load", "-i", tar.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: busybox:latest\n");
    assert_eq!(
        ok(&dst.mvm(&["images", "-q", "--no-trunc"])),
        ok(&src.mvm(&["images", "-q", "--no-trunc"]))
    );
    assert_eq!(blob_files(&dst.path), blob_files(&src.path));
    let o = dst.mvm(&["run", "--rm", "--network", "none", "busybox", "echo", "hi"]);
    assert_eq!(stdout(&o), "hi\n", "stderr: {}", stderr(&o));

    // From stdin, and -q: same result, nothing new stored.
    let other = TestRoot::empty(MVM).on_host_network();
    let o = other.mvm_stdin(&["load", "-q"], &std::fs::read(&tar).unwrap());
    assert_eq!(ok(&o), "Loaded image: busybox:latest\n");
    assert_eq!(blob_files(&other.path), blob_files(&src.path));
}

#[test]
fn skopeo_reads_saved_archives_and_mvm_loads_skopeo_layouts() {
    let src = TestRoot::with_busybox(MVM).on_host_network();
    let tar = src.path.join("x.tar");
    let tar_s = tar.to_str().unwrap();
    ok(&src.mvm(&["image", "save", "busybox", "-o", tar_s]));
    skopeo(&["inspect", &format!("docker-archive:{tar_s}")]);
    skopeo(&["inspect", &format!("oci-archive:{tar_s}")]);
    skopeo(&["inspect", &format!("oci-archive:{tar_s}:latest")]);
    let id = ok(&src.mvm(&["images", "-q", "--no-trunc"]));

    let dst = TestRoot::empty(MVM).on_host_network();
    // An OCI layout as skopeo writes it, tarred; gzip (skopeo's default) and zstd layers.
    for (fmt, magic) in [("gzip", [0x1f, 0x8b]), ("zstd", [0x28, 0xb5])] {
        let dir = src.path.join(format!("oci-{fmt}"));
        skopeo(&[
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            fmt,
            &format!("docker-archive:{tar_s}"),
            &format!("oci:{}:busybox:{fmt}", dir.display()),
        ]);
        let layout_tar = src.path.join(format!("oci-{fmt}.tar"));
        let t = Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&layout_tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(t.success());
        let out = ok(&dst.mvm(&["image", "load", "-i", layout_tar.to_str().unwrap()]));
        assert_eq!(out, format!("Loaded image: busybox:{fmt}\n"));
        assert!(
            blob_magic(&dst.path).iter().any(|m| m[..2] == magic),
            "no {fmt} layer was stored"
        );
        let o = dst.mvm(&[
            "run",
            "--rm",
            "--network",
            "none",
            &format!("busybox:{fmt}"),
            "echo",
            "hi",
        ]);
        assert_eq!(stdout(&o), "hi\n", "{fmt}: stderr: {}", stderr(&o));
    }
    // The same image ID whatever the layer compression.
    assert_eq!(ok(&dst.mvm(&["images", "-q", "--no-trunc"])), id);

    // oci-archive, and a layout whose ref name is a bare tag: loaded, without a name.
    let oa = src.path.join("oa.tar");
    skopeo(&[
        "copy",
        &format!("docker-archive:{tar_s}"),
        &format!("oci-archive:{}:busybox:oa", oa.display()),
    ]);
    let out = ok(&dst.mvm(&["image", "load", "-i", oa.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: busybox:oa\n");
    let bare = src.path.join("bare");
    skopeo(&[
        "copy",
        &format!("docker-archive:{tar_s}"),
        &format!("oci:{}:tag", bare.display()),
    ]);
    let bare_tar = src.path.join("bare.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&bare)
            .arg("-cf")
            .arg(&bare_tar)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let fresh = TestRoot::empty(MVM).on_host_network();
    let out = ok(&fresh.mvm(&["image", "load", "-i", bare_tar.to_str().unwrap()]));
    assert_eq!(out, format!("Loaded image ID: {id}"));
    let listed = ok(&fresh.mvm(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(listed, "<none>:<none>\n");
    // And skopeo's Docker archive (plain layers, `<id>/layer.tar` links) loads too.
    let da = src.path.join("da.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:tag", bare.display()),
        &format!("docker-archive:{}:busybox:da", da.display()),
    ]);
    let out = ok(&fresh.mvm(&["image", "load", "-i", da.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: busybox:da\n");
}

#[test]
fn corrupt_archive_is_refused_and_nothing_changes() {
    let src = TestRoot::with_busybox(MVM).on_host_network();
    let tar = src.path.join("x.tar");
    ok(&src.mvm(&["image", "save", "busybox", "-o", tar.to_str().unwrap()]));
    let mut bytes = std::fs::read(&tar).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&src.mvm(&["image", "inspect", "busybox"]))).unwrap();
    let layer = inspect[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    // busybox was imported: its layer is stored uncompressed, so its digest is the diff ID.
    let (off, size) = tar_entry(&bytes, &format!("blobs/sha256/{}", &layer[7..]))
        .expect("layer entry in the archive");
    bytes[off + size / 2] ^= 0x55;
    let bad = src.path.join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();

    for root in [
        TestRoot::empty(MVM).on_host_network(),
        TestRoot::with_busybox(MVM).on_host_network(),
    ] {
        let before = ok(&root.mvm(&["images", "-q"]));
        let blobs = blob_files(&root.path);
        let o = root.mvm(&["image", "load", "-i", bad.to_str().unwrap()]);
        assert_ne!(o.status.code(), Some(0));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("digest"), "{err}");
        assert_eq!(stdout(&o), "");
        assert_eq!(ok(&root.mvm(&["images", "-q"])), before);
        assert_eq!(blob_files(&root.path), blobs);
    }
    // Not an image archive at all.
    let r = TestRoot::empty(MVM).on_host_network();
    let o = r.mvm_stdin(&["image", "load"], b"hello");
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn image_prune_removes_dangling_images_but_not_shared_or_used_ones() {
    let r = TestRoot::with_busybox(MVM).on_host_network();
    let busybox = ok(&r.mvm(&["images", "-q", "--no-trunc"]))
        .trim()
        .to_string();
    let busybox_blobs = blob_files(&r.path);
    // Two unnamed images sharing busybox's layer (import stores it uncompressed).
    let tar = common::busybox_tar();
    let dangling = ok(&r.mvm(&["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap()]));
    let dangling = dangling.trim().to_string();
    let used = ok(&r.mvm(&["import", "-c", "CMD [\"ls\"]", tar.to_str().unwrap()]));
    let used = used.trim().to_string();
    let listed = ok(&r.mvm(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(listed.matches("<none>:<none>").count(), 2, "{listed}");
    // A container (created, never started) uses the second one.
    ok(&r.mvm(&["create", "--network", "none", &used, "true"]));

    let out = ok(&r.mvm(&["image", "prune", "-f"]));
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(out.contains(&format!("deleted: {dangling}\n")), "{out}");
    assert!(!out.contains(&used), "{out}");
    assert!(
        out.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("Total reclaimed space: ")
    );
    let ids = ok(&r.mvm(&["images", "-q", "--no-trunc"]));
    assert!(!ids.contains(&dangling) && ids.contains(&used) && ids.contains(&busybox));
    // busybox's blobs, the shared layer among them, are all still there.
    let left = blob_files(&r.path);
    assert!(busybox_blobs.iter().all(|b| left.contains(b)), "{left:?}");
    assert!(!left.contains(&dangling[7..].to_string()));
    let o = r.mvm(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "still",
    ]);
    assert_eq!(stdout(&o), "still\n", "stderr: {}", stderr(&o));
    // Nothing dangling left.
    assert_eq!(
        ok(&r.mvm(&["image", "prune", "--force"])),
        "Total reclaimed space: 0B\n"
    );
    // -a: busybox goes, the image in use stays.
    let out = ok(&r.mvm(&["image", "prune", "-a", "-f"]));
    assert!(out.contains("untagged: busybox:latest\n"), "{out}");
    assert!(out.contains(&format!("deleted: {busybox}\n")), "{out}");
    assert_eq!(
        ok(&r.mvm(&["images", "-q", "--no-trunc"])),
        format!("{used}\n")
    );
    std::fs::remove_dir_all(r.path.join("containers")).unwrap();
    ok(&r.mvm(&["image", "prune", "-a", "-f"]));
    assert_eq!(ok(&r.mvm(&["images", "-q"])), "");
    assert_eq!(blob_files(&r.path), Vec::<String>::new());
}

/// Runs `mvm` under `script`, so its stdin and stdout are a terminal; `input` is typed in.
fn on_a_terminal(r: &TestRoot, args: &str, input: &str) -> std::process::Output {
    use std::io::Write;
    let cmdline = format!("{} --root {} {args}", r.bin.display(), r.path.display());
    let mut child = Command::new(require("script"))
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn save_refuses_a_terminal_and_prune_asks_on_one() {
    let r = TestRoot::with_busybox(MVM).on_host_network();
    let o = on_a_terminal(&r, "image save busybox", "");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("cowardly refusing to save to a terminal. Use the -o flag or redirect"),
        "{}",
        stdout(&o)
    );
    let tar = common::busybox_tar();
    let id = ok(&r.mvm(&["import", tar.to_str().unwrap()]));
    let o = on_a_terminal(&r, "image prune", "n\n");
    // The terminal echoes the typed answer whenever it arrives, which may be between the two
    // lines: each is checked on its own.
    for line in [
        "WARNING! This will remove all dangling images.\r\n",
        "Are you sure you want to continue? [y/N] ",
    ] {
        assert!(stdout(&o).contains(line), "{line:?} in {}", stdout(&o));
    }
    assert!(!stdout(&o).contains("Deleted"), "{}", stdout(&o));
    assert!(ok(&r.mvm(&["images", "-q", "--no-trunc"])).contains(id.trim()));
    let o = on_a_terminal(&r, "image prune", "y\n");
    assert!(
        stdout(&o).contains(&format!("deleted: {}", id.trim())),
        "{}",
        stdout(&o)
    );
    assert!(!ok(&r.mvm(&["images", "-q", "--no-trunc"])).contains(id.trim()));
}

// ---------------------------------------------------------------------------------------------
// Real Debian images (scripts/make-debian-images.sh, a step of scripts/setup.sh)

/// A Debian bookworm rootfs tarball the set-up makes with debootstrap: `debian-bookworm` or
/// `debian-bookworm-nginx`.
fn debian_tar(name: &str) -> PathBuf {
    let cache = std::env::var_os("MVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/mvm".into());
    let p = cache.join(format!("images/{name}-rootfs.tar"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh (scripts/make-debian-images.sh makes it with debootstrap)",
        p.display()
    );
    p
}

/// `mvm run --rm --network none IMAGE ARGS...` that must succeed; returns stdout and stderr.
fn run_in(r: &TestRoot, image: &str, args: &[&str]) -> (String, String) {
    let mut a = vec!["run", "--rm", "--network", "none", image];
    a.extend_from_slice(args);
    let o = r.mvm(&a);
    assert!(
        o.status.success(),
        "run {image} {args:?}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    (stdout(&o), stderr(&o))
}

#[test]
fn debian_bookworm_runs_its_dynamically_linked_programs() {
    let tar = debian_tar("debian-bookworm");
    let r = TestRoot::empty(MVM).on_host_network();
    ok(&r.mvm(&["import", tar.to_str().unwrap(), "debian:bookworm"]));
    let (version, _) = run_in(&r, "debian:bookworm", &["cat", "/etc/debian_version"]);
    assert!(
        version.starts_with("12."),
        "/etc/debian_version: {version:?}"
    );
    // coreutils' ls is linked against glibc: the dynamic loader and libc.so.6 work in the guest.
    let (ls, _) = run_in(&r, "debian:bookworm", &["ls", "--version"]);
    assert!(ls.contains("(GNU coreutils)"), "{ls}");
    let (ldd, _) = run_in(&r, "debian:bookworm", &["ldd", "/usr/bin/ls"]);
    assert!(
        ldd.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"),
        "{ldd}"
    );
    // A shell pipeline and the image's users, as Debian ships them.
    let (who, _) = run_in(
        &r,
        "debian:bookworm",
        &["sh", "-c", "id -un; getent passwd nobody | cut -d: -f1"],
    );
    assert_eq!(who, "root\nnobody\n");
}

#[test]
fn debian_nginx_with_extra_layers_is_pushed_pulled_and_runs() {
    let tar = debian_tar("debian-bookworm-nginx");
    let reg = Registry::start();
    let src = TestRoot::empty(MVM).on_host_network();
    ok(&src.mvm(&["import", tar.to_str().unwrap(), "debian-nginx:bookworm"]));
    // Two more layers on top of the imported one.
    let ctx = src.path.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("one.txt"), "one\n").unwrap();
    std::fs::write(ctx.join("index.html"), "<p>mvm</p>\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian-nginx:bookworm\nCOPY one.txt /opt/one.txt\nCOPY index.html /var/www/html/\n",
    )
    .unwrap();
    let name = format!("{}/debian-nginx:layers", reg.addr);
    ok(&src.mvm(&[
        "build",
        "-q",
        "--network",
        "none",
        "-t",
        &name,
        ctx.to_str().unwrap(),
    ]));
    let pushed = ok(&src.mvm(&["push", &name]));
    assert_eq!(pushed.matches("Pushed").count(), 4, "{pushed}"); // 3 layers + config

    let dst = TestRoot::empty(MVM).on_host_network();
    let out = ok(&dst.mvm(&["pull", &name]));
    assert!(out.contains("Downloaded newer image"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&dst.mvm(&["image", "inspect", &name]))).unwrap();
    let layers = inspect[0]["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(layers, 3, "{inspect}");
    assert_eq!(
        ok(&dst.mvm(&["images", "-q", "--no-trunc"])),
        ok(&src.mvm(&["images", "-q", "--no-trunc", &name]))
    );

    let (_, err) = run_in(&dst, &name, &["nginx", "-v"]);
    assert!(err.contains("nginx version: nginx/1.22"), "{err}");
    let (files, _) = run_in(
        &dst,
        &name,
        &[
            "sh",
            "-c",
            "cat /etc/debian_version /opt/one.txt /var/www/html/index.html && nginx -t 2>&1",
        ],
    );
    let mut lines = files.lines();
    assert!(lines.next().unwrap_or("").starts_with("12."), "{files}");
    assert_eq!(lines.next(), Some("one"), "{files}");
    assert_eq!(lines.next(), Some("<p>mvm</p>"), "{files}");
    assert!(files.contains("test is successful"), "{files}");
}

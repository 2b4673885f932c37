//! Volumes, bind mounts and tmpfs through the real `mvm` binary and real microVMs: data that
//! outlives containers, sharing between running containers, host changes seen inside, `:ro`
//! enforced by the host, and the guest kept inside the shared directory.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{TestRoot, eventually, stderr, stdout};

const MVM: &str = env!("CARGO_BIN_EXE_mvm");

fn root() -> TestRoot {
    TestRoot::with_busybox(MVM)
}

fn ok(r: &TestRoot, args: &[&str]) -> String {
    r.ok(args)
}

/// A host directory for bind mounts, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(name: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/mvm-vt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn volumes(r: &TestRoot) -> Vec<String> {
    ok(r, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_clean(r: &TestRoot) {
    r.assert_clean();
}

#[test]
fn named_volume_outlives_its_container_and_is_refused_removal_in_use() {
    let r = root();
    ok(
        &r,
        &[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            "echo kept > /data/f",
        ],
    );
    assert_eq!(volumes(&r), ["data"]);
    let out = ok(
        &r,
        &[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "cat",
            "/data/f",
        ],
    );
    assert_eq!(out, "kept\n");
    // On the host, under the state root, as Docker lays volumes out.
    let v: serde_json::Value =
        serde_json::from_str(&ok(&r, &["volume", "inspect", "data"])).unwrap();
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "kept\n"
    );
    // In use by a container (even a stopped one): refused.
    ok(
        &r,
        &[
            "create",
            "--name",
            "user",
            "-v",
            "data:/data",
            "busybox",
            "true",
        ],
    );
    let o = r.mvm(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("volume is in use"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let insp: serde_json::Value = serde_json::from_str(&ok(&r, &["inspect", "user"])).unwrap();
    assert_eq!(insp[0]["Mounts"][0]["Type"], "volume");
    assert_eq!(insp[0]["Mounts"][0]["Name"], "data");
    assert_eq!(insp[0]["Mounts"][0]["Destination"], "/data");
    ok(&r, &["rm", "user"]);
    assert_eq!(ok(&r, &["volume", "rm", "data"]), "data\n");
    assert!(volumes(&r).is_empty());
    let o = r.mvm(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        r.mvm(&["volume", "rm", "-f", "data"]).status.code(),
        Some(0)
    );
    let o = r.mvm(&["volume", "create", "bad/name"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_clean(&r);
}

#[test]
fn two_running_containers_share_a_volume() {
    let r = root();
    ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "reader",
            "-v",
            "shared:/s",
            "busybox",
            "sleep",
            "600",
        ],
    );
    ok(
        &r,
        &[
            "run",
            "-d",
            "--name",
            "writer",
            "-v",
            "shared:/s",
            "busybox",
            "sh",
            "-c",
            "echo from-writer > /s/msg; sleep 600",
        ],
    );
    // The file may be seen created but still empty (the shell opens it before it writes, and
    // virtio-fs with cache=auto revalidates a file's size within a second), so wait for the
    // content, not for the file.
    eventually("the reader sees the writer's file", || {
        let o = r.mvm(&["exec", "reader", "cat", "/s/msg"]);
        (stdout(&o) == "from-writer\n").then_some(())
    });
    ok(&r, &["exec", "reader", "sh", "-c", "echo reply > /s/reply"]);
    eventually("the writer sees the reply", || {
        let o = r.mvm(&["exec", "writer", "cat", "/s/reply"]);
        (stdout(&o) == "reply\n").then_some(())
    });
    ok(&r, &["rm", "-f", "reader", "writer"]);
    assert_clean(&r);
}

#[test]
fn bind_mount_shows_host_files_and_host_changes() {
    let r = root();
    let d = HostDir::new("bind");
    std::fs::write(d.path().join("hello"), "from-host\n").unwrap();
    let spec = format!("{}:/h", d.s());
    ok(
        &r,
        &[
            "run", "-d", "--name", "b1", "-v", &spec, "busybox", "sleep", "600",
        ],
    );
    assert_eq!(ok(&r, &["exec", "b1", "cat", "/h/hello"]), "from-host\n");
    std::fs::write(d.path().join("hello"), "changed\n").unwrap();
    std::fs::write(d.path().join("new"), "new-file\n").unwrap();
    eventually("the guest sees the host's change", || {
        let o = r.mvm(&["exec", "b1", "cat", "/h/hello", "/h/new"]);
        (stdout(&o) == "changed\nnew-file\n").then_some(())
    });
    ok(&r, &["exec", "b1", "sh", "-c", "echo from-guest > /h/back"]);
    assert_eq!(
        std::fs::read_to_string(d.path().join("back")).unwrap(),
        "from-guest\n"
    );
    ok(&r, &["rm", "-f", "b1"]);
    // The host directory and its files are the user's: rm leaves them.
    assert!(d.path().join("hello").exists());
    assert_clean(&r);
}

#[test]
fn read_only_mounts_refuse_writes_and_tmpfs_works() {
    let r = root();
    let d = HostDir::new("ro");
    std::fs::write(d.path().join("f"), "x\n").unwrap();
    let spec = format!("{}:/h:ro", d.s());
    let o = r.mvm(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /h/f && echo y > /h/g",
    ]);
    assert_eq!(stdout(&o), "x\n");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!d.path().join("g").exists());
    let o = r.mvm(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=rov,target=/v,readonly",
        "busybox",
        "touch",
        "/v/x",
    ]);
    assert_ne!(o.status.code(), Some(0));
    // tmpfs, with its options.
    let out = ok(
        &r,
        &[
            "run",
            "--rm",
            "--tmpfs",
            "/scratch:size=2m,mode=1777",
            "busybox",
            "sh",
            "-c",
            "grep ' /scratch ' /proc/mounts; echo t > /scratch/t && cat /scratch/t",
        ],
    );
    assert!(out.contains("tmpfs /scratch tmpfs"), "{out}");
    assert!(out.contains("size=2048k"), "{out}");
    assert!(out.ends_with("t\n"), "{out}");
    // A read-only tmpfs is mounted read-only in the guest (it once was only recorded).
    let o = r.mvm(&[
        "run",
        "--rm",
        "--tmpfs",
        "/rot:ro,size=1m",
        "busybox",
        "sh",
        "-c",
        "grep ' /rot ' /proc/mounts; touch /rot/x",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("tmpfs /rot tmpfs ro,"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    // Bad mount specifications are usage errors and create nothing.
    for bad in [
        vec!["run", "--rm", "-v", "data:relative", "busybox", "true"],
        vec!["run", "--rm", "-v", "/x:/y:rx", "busybox", "true"],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/nonexistent-mvm-dir,target=/x",
            "busybox",
            "true",
        ],
        vec!["run", "--rm", "--tmpfs", "/t:size=lots", "busybox", "true"],
        vec![
            "run", "--rm", "-v", "a1:/x", "-v", "b1:/x", "busybox", "true",
        ],
    ] {
        let o = r.mvm(&bad);
        assert_eq!(o.status.code(), Some(125), "{bad:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{bad:?}: {}", stderr(&o));
    }
    // More shares than a microVM has virtio devices for (either backend): one clear line.
    let targets: Vec<String> = (0..16).map(|i| format!("/tmp:/m{i}")).collect();
    let mut many = vec!["run", "--rm", "--network", "none"];
    for t in &targets {
        many.extend(["-v", t.as_str()]);
    }
    many.extend(["busybox", "true"]);
    let o = r.mvm(&many);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("virtio devices"), "{}", stderr(&o));
    assert_eq!(volumes(&r), ["rov"]);
    assert_clean(&r);
}

#[test]
fn the_guest_cannot_reach_outside_a_shared_directory() {
    let r = root();
    let outside = HostDir::new("outside");
    std::fs::write(outside.path().join("secret"), "host-secret\n").unwrap();
    let d = HostDir::new("jail");
    // A host symlink in the share that points out of it.
    std::os::unix::fs::symlink(outside.path(), d.path().join("out")).unwrap();
    let spec = format!("{}:/h", d.s());
    let script = format!(
        "cat /h/out/secret; cat /h/../{o}/secret; cd /h && cat ../../{o}/secret; \
         ln /etc/passwd /h/hardlink && echo LINKED; \
         ln -s {o}/secret /h/sym && echo pwned > /h/sym; \
         mkdir -p {o} && echo guest > {o}/secret; \
         echo done",
        o = outside.s()
    );
    let o = r.mvm(&["run", "--rm", "-v", &spec, "busybox", "sh", "-c", &script]);
    let out = stdout(&o);
    assert!(
        !out.contains("host-secret"),
        "the guest read a host file outside the share: {out}"
    );
    assert!(
        !out.contains("LINKED"),
        "a hard link into the share from outside worked"
    );
    assert!(out.ends_with("done\n"), "{out}{}", stderr(&o));
    // On the host nothing outside the share changed.
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "host-secret\n"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(!d.path().join("hardlink").exists());
    assert_clean(&r);
}

#[test]
fn a_single_file_bind_mount_shares_that_file_alone() {
    let r = root();
    let d = HostDir::new("onefile");
    std::fs::write(d.path().join("app.conf"), "setting=1\n").unwrap();
    std::fs::write(d.path().join("sibling-secret"), "host-secret\n").unwrap();
    let spec = format!("{}/app.conf:/etc/app.conf", d.s());
    // The guest's kernel is the attacker's: it mounts the file's share itself and looks
    // beside the file, and writes through the file.
    let script = "cat /etc/app.conf; echo setting=2 >> /etc/app.conf; \
                  mkdir /m && mount -t virtiofs mvmfs0 /m && ls -a /m; \
                  cat /m/sibling-secret /m/../sibling-secret; echo done";
    let o = r.mvm(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let out = stdout(&o);
    assert!(out.starts_with("setting=1\n"), "{out}{}", stderr(&o));
    assert!(
        !out.contains("host-secret"),
        "the guest read a sibling: {out}"
    );
    assert!(
        out.contains("file"),
        "the share was not mounted: {out}{}",
        stderr(&o)
    );
    assert!(out.ends_with("done\n"), "{out}{}", stderr(&o));
    // Writes reach the host file; nothing else there changed, and no mount is left behind.
    assert_eq!(
        std::fs::read_to_string(d.path().join("app.conf")).unwrap(),
        "setting=1\nsetting=2\n"
    );
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("app.conf"),
        "a host mount was left: {mounts}"
    );
    assert_clean(&r);
}

#[test]
fn anonymous_volumes_are_seeded_from_the_image_and_go_with_rm_v() {
    let r = root();
    let tar = common::busybox_tar();
    ok(
        &r,
        &[
            "import",
            "-c",
            "VOLUME /etc",
            tar.to_str().unwrap(),
            "withvol",
        ],
    );
    // The image's VOLUME gets a fresh volume seeded with the image's /etc.
    ok(
        &r,
        &["run", "-d", "--name", "a1", "withvol", "sleep", "600"],
    );
    let out = ok(
        &r,
        &[
            "exec",
            "a1",
            "sh",
            "-c",
            "grep -c root /etc/passwd; grep ' /etc ' /proc/mounts",
        ],
    );
    assert!(out.starts_with("1\n"), "{out}");
    assert!(out.contains("virtiofs"), "{out}");
    let anon = volumes(&r);
    assert_eq!(anon.len(), 1);
    assert_eq!(anon[0].len(), 64);
    // -v /path: another anonymous volume.
    ok(&r, &["run", "--rm", "-v", "/cache", "busybox", "true"]);
    assert_eq!(volumes(&r), anon, "--rm removes its anonymous volume");
    ok(&r, &["rm", "-f", "-v", "a1"]);
    assert!(volumes(&r).is_empty(), "rm -v removes anonymous volumes");
    // Without -v they stay, and prune removes them (named ones only with -a).
    ok(
        &r,
        &[
            "run", "--name", "b1", "-v", "/keep", "-v", "named:/n", "busybox", "true",
        ],
    );
    ok(&r, &["rm", "b1"]);
    assert_eq!(volumes(&r).len(), 2);
    let out = ok(&r, &["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:"), "{out}");
    assert_eq!(volumes(&r), ["named"]);
    ok(&r, &["volume", "prune", "-f", "-a"]);
    assert!(volumes(&r).is_empty());
    assert_clean(&r);
}

//! Bundles as hostile input first (symlinks, sizes, FIFOs, malformed fields), then the two
//! bundles captured from dockerd and podman on this machine.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::mount::{GuestFs, TmpfsSize};

const DOCKER: &str = include_str!("../../tests/data/docker-bundle-config.json");
const PODMAN: &str = include_str!("../../tests/data/podman-bundle-config-tty.json");

/// A scratch directory removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "mvm-oci-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(fs::canonicalize(&p).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn minimal() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}
    })
}

/// Writes `config` into `<tmp>/bundle` with a `rootfs` directory beside it and loads it.
fn load_value(config: &Value) -> (TempDir, Result<Bundle, BundleError>) {
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(b.join("rootfs")).unwrap();
    fs::write(b.join("config.json"), config.to_string()).unwrap();
    let r = Bundle::load(&b);
    (t, r)
}

fn load_with(edit: impl FnOnce(&mut Value)) -> (TempDir, Result<Bundle, BundleError>) {
    let mut v = minimal();
    edit(&mut v);
    load_value(&v)
}

fn err(r: Result<Bundle, BundleError>) -> BundleError {
    let e = r.expect_err("the bundle must be refused");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains("config.json"),
        "the message names the bundle file: {msg}"
    );
    e
}

/// A captured bundle with WORKDIR replaced by a scratch directory and its root created.
fn captured(text: &str, root_rel: &str) -> (TempDir, Result<Bundle, BundleError>) {
    let t = TempDir::new();
    let work = t.0.to_str().unwrap();
    fs::create_dir_all(t.0.join(root_rel)).unwrap();
    let b = t.0.join("bundle");
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("config.json"), text.replace("WORKDIR", work)).unwrap();
    let r = Bundle::load(&b);
    (t, r)
}

// ---- attacks -------------------------------------------------------------------------------

#[test]
fn root_symlink_to_etc_is_refused() {
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(&b).unwrap();
    symlink("/etc", b.join("rootfs")).unwrap();
    fs::write(b.join("config.json"), minimal().to_string()).unwrap();
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::RootSymlink { .. }
    ));
    // Also when given as an absolute path.
    let mut v = minimal();
    v["root"]["path"] = json!(b.join("rootfs"));
    fs::write(b.join("config.json"), v.to_string()).unwrap();
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::RootSymlink { .. }
    ));
}

#[test]
fn relative_root_climbing_out_is_resolved_not_refused() {
    // The engine chose this directory: accepted, and made absolute and canonical so nothing
    // later resolves the relative path again.
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(&b).unwrap();
    let depth = b.components().count() - 1; // components after "/"
    let up = "../".repeat(depth + 3); // more ".." than needed stays at "/"
    let mut v = minimal();
    v["root"]["path"] = json!(format!("{up}etc"));
    fs::write(b.join("config.json"), v.to_string()).unwrap();
    let bundle = Bundle::load(&b).unwrap();
    assert_eq!(bundle.root.path, fs::canonicalize("/etc").unwrap());
    assert!(bundle.root.path.is_absolute());

    // The literal "../../../etc" of the brief, from a bundle three levels down the temp dir.
    let deep = t.0.join("a/b/bundle");
    fs::create_dir_all(&deep).unwrap();
    fs::create_dir_all(t.0.join("etc")).unwrap();
    v["root"]["path"] = json!("../../../etc");
    fs::write(deep.join("config.json"), v.to_string()).unwrap();
    assert_eq!(Bundle::load(&deep).unwrap().root.path, t.0.join("etc"));
}

#[test]
fn symlink_before_the_last_root_component_is_the_engines_layout() {
    // Only the last component is refused as a symlink; a linked parent (an engine's data root
    // on another disk) resolves once, to the canonical path.
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(t.0.join("real/rootfs")).unwrap();
    fs::create_dir_all(&b).unwrap();
    symlink(t.0.join("real"), b.join("data")).unwrap();
    let mut v = minimal();
    v["root"]["path"] = json!("data/rootfs");
    fs::write(b.join("config.json"), v.to_string()).unwrap();
    assert_eq!(Bundle::load(&b).unwrap().root.path, t.0.join("real/rootfs"));
}

#[test]
fn root_missing_or_not_a_directory() {
    let (_t, r) = load_with(|v| v["root"]["path"] = json!("nope"));
    assert!(matches!(err(r), BundleError::RootMissing { .. }));
    let (_t, r) = load_with(|v| v["root"]["path"] = json!("config.json"));
    assert!(matches!(err(r), BundleError::RootNotDirectory { .. }));
    let (_t, r) = load_with(|v| v["root"]["path"] = json!(""));
    assert!(matches!(
        err(r),
        BundleError::Missing {
            field: "root.path",
            ..
        }
    ));
    let (_t, r) = load_with(|v| {
        v.as_object_mut().unwrap().remove("root");
    });
    assert!(matches!(err(r), BundleError::Missing { .. }));
}

#[test]
fn config_symlink_is_refused() {
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(b.join("rootfs")).unwrap();
    // A perfectly good config elsewhere: the link itself is the problem.
    fs::write(t.0.join("real.json"), minimal().to_string()).unwrap();
    symlink(t.0.join("real.json"), b.join("config.json")).unwrap();
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::ConfigSymlink { .. }
    ));
}

#[test]
fn config_that_is_not_a_file_is_refused_without_blocking() {
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(b.join("config.json")).unwrap();
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::ConfigNotFile { .. } | BundleError::ConfigUnreadable { .. }
    ));
    fs::remove_dir(b.join("config.json")).unwrap();
    let fifo = CString::new(b.join("config.json").as_os_str().as_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // O_NONBLOCK: a FIFO with no writer would otherwise hang the runtime here.
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::ConfigNotFile { .. }
    ));
}

#[test]
fn missing_config_is_unreadable() {
    let t = TempDir::new();
    assert!(matches!(
        err(Bundle::load(&t.0)),
        BundleError::ConfigUnreadable { .. }
    ));
}

#[test]
fn huge_config_is_refused_before_parsing() {
    let t = TempDir::new();
    let b = t.0.join("bundle");
    fs::create_dir_all(b.join("rootfs")).unwrap();
    // Valid JSON padded with whitespace: only the size can refuse it.
    let mut text = minimal().to_string();
    text.push_str(&" ".repeat(MAX_CONFIG_BYTES as usize + 1 - text.len()));
    fs::write(b.join("config.json"), &text).unwrap();
    assert!(matches!(
        err(Bundle::load(&b)),
        BundleError::ConfigTooLarge { .. }
    ));
    // Exactly at the limit is read.
    text.pop();
    fs::write(b.join("config.json"), &text).unwrap();
    Bundle::load(&b).unwrap();
}

#[test]
fn bad_json() {
    for text in [
        "",
        "{",
        "not json",
        "null",
        "\"spec\"",
        r#"{"ociVersion": 1}"#,
        r#"{"process": {"args": "sh"}}"#,
    ] {
        let t = TempDir::new();
        fs::write(t.0.join("config.json"), text).unwrap();
        let e = err(Bundle::load(&t.0));
        assert!(matches!(e, BundleError::BadJson { .. }), "{text}: {e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}

#[test]
fn unsupported_oci_versions() {
    for version in ["2.0.0", "0.9", "", "10.0.0", "1x"] {
        let (_t, r) = load_with(|v| v["ociVersion"] = json!(version));
        assert!(
            matches!(err(r), BundleError::UnsupportedVersion { .. }),
            "{version}"
        );
    }
    for version in ["1.0.0", "1.0.2-dev", "1.2.1"] {
        let (_t, r) = load_with(|v| v["ociVersion"] = json!(version));
        r.unwrap();
    }
}

#[test]
fn missing_process_or_args() {
    let (_t, r) = load_with(|v| {
        v.as_object_mut().unwrap().remove("process");
    });
    assert!(matches!(
        err(r),
        BundleError::Missing {
            field: "process",
            ..
        }
    ));
    let (_t, r) = load_with(|v| {
        v["process"].as_object_mut().unwrap().remove("args");
    });
    assert!(matches!(
        err(r),
        BundleError::Missing {
            field: "process.args",
            ..
        }
    ));
    let (_t, r) = load_with(|v| v["process"]["args"] = json!([]));
    assert!(matches!(
        err(r),
        BundleError::Missing {
            field: "process.args",
            ..
        }
    ));
}

#[test]
fn relative_cwd_is_refused() {
    for cwd in ["tmp", "./", "../.."] {
        let (_t, r) = load_with(|v| v["process"]["cwd"] = json!(cwd));
        let e = err(r);
        assert!(e.to_string().contains("process.cwd"), "{e}");
    }
}

#[test]
fn unknown_mount_types_are_named() {
    for typ in [
        json!("overlay"),
        json!("nfs"),
        json!("ext4"),
        json!("9p"),
        json!("fuse.sshfs"),
        json!("none"),
        Value::Null,
    ] {
        let (_t, r) = load_with(|v| {
            let mut m = json!({"destination": "/data", "source": "/dev/sda1", "options": ["rw"]});
            if !typ.is_null() {
                m["type"] = typ.clone();
            }
            v["mounts"] = json!([{"destination": "/proc", "type": "proc", "source": "proc"}, m]);
        });
        let e = err(r);
        let msg = e.to_string();
        assert!(
            matches!(e, BundleError::UnknownMountType { index: 1, .. }),
            "{msg}"
        );
        assert!(msg.contains("/data") && msg.contains("mounts[1]"), "{msg}");
    }
}

#[test]
fn malformed_mounts() {
    let cases = [
        json!({"destination": "/x", "type": "bind"}),
        json!({"destination": "/x", "type": "none", "source": "", "options": ["rbind"]}),
        json!({"destination": "/x", "type": "tmpfs", "options": ["size=12q"]}),
        json!({"destination": "/x", "type": "tmpfs", "options": ["mode=999"]}),
        json!({"destination": "/x", "type": "tmpfs", "options": ["size=99999999999999999999g"]}),
    ];
    for m in cases {
        let (_t, r) = load_with(|v| v["mounts"] = json!([m]));
        assert!(matches!(err(r), BundleError::BadMount { .. }), "{m}");
    }
    let (_t, r) = load_with(|v| {
        v["mounts"] = json!([{"destination": "etc/hosts", "type": "bind", "source": "/etc/hosts"}])
    });
    assert!(matches!(err(r), BundleError::NotAbsolute { .. }));
}

#[test]
fn mounts_are_classified() {
    let (t, r) = load_with(|v| {
        v["mounts"] = json!([
            {"destination": "/data", "type": "none", "source": "vol", "options": ["rbind", "ro", "nosuid"]},
            {"destination": "/shm", "type": "shm", "source": "shm", "options": ["size=1m"]},
            {"destination": "/c2", "type": "cgroup2", "source": "cgroup2", "options": ["ro", "rw"]},
            {"destination": "/t", "type": "tmpfs", "options": ["size=50%"]}
        ]);
    });
    let b = r.unwrap();
    assert_eq!(
        b.mounts[0],
        Mount::Bind(mount::BindMount {
            source: t.0.join("bundle/vol"),
            destination: "/data".into(),
            readonly: true,
            recursive: true,
            options: vec!["nosuid".into()],
        })
    );
    let Mount::Guest(g) = &b.mounts[1] else {
        panic!("{:?}", b.mounts[1])
    };
    assert_eq!(
        g.fs,
        GuestFs::Tmpfs {
            size: Some(TmpfsSize::Bytes(1 << 20)),
            mode: None
        }
    );
    let Mount::Guest(g) = &b.mounts[2] else {
        panic!()
    };
    assert_eq!((g.fs.clone(), g.readonly), (GuestFs::Cgroup2, false));
    let Mount::Guest(g) = &b.mounts[3] else {
        panic!()
    };
    assert_eq!(
        g.fs,
        GuestFs::Tmpfs {
            size: Some(TmpfsSize::Percent(50)),
            mode: None
        }
    );
}

#[test]
fn namespace_paths_must_exist() {
    let (_t, r) = load_with(|v| {
        v["linux"] = json!({"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/0/ns/net-nope"}]});
    });
    let e = err(r);
    assert!(
        matches!(e, BundleError::NamespacePathMissing { index: 1, .. }),
        "{e}"
    );
    let (_t, r) = load_with(|v| {
        v["linux"] = json!({"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}]});
    });
    assert_eq!(
        r.unwrap().linux.network(),
        Network::Join("/proc/self/ns/net".into())
    );
    let (_t, r) = load_with(|v| v["linux"] = json!({"namespaces": [{"type": "pid"}]}));
    assert_eq!(r.unwrap().linux.network(), Network::Host);
}

#[test]
fn hooks_are_checked() {
    let (_t, r) = load_with(|v| v["hooks"] = json!({"poststop": [{"path": "bin/true"}]}));
    let e = err(r);
    assert!(e.to_string().contains("hooks.poststop[0]"), "{e}");
    for timeout in [0, -5, 1i64 << 40] {
        let (_t, r) = load_with(|v| {
            v["hooks"] = json!({"createRuntime": [{"path": "/bin/true", "timeout": timeout}]})
        });
        assert!(matches!(
            err(r),
            BundleError::BadHook {
                kind: "createRuntime",
                ..
            }
        ));
    }
    let (_t, r) = load_with(
        |v| v["hooks"] = json!({"startContainer": [{"path": "/bin/true", "args": ["true", "x"], "env": ["A=b"], "timeout": 5}]}),
    );
    assert_eq!(
        r.unwrap().hooks.start_container,
        vec![Hook {
            path: "/bin/true".into(),
            args: vec!["true".into(), "x".into()],
            env: vec!["A=b".into()],
            timeout: Some(5),
        }]
    );
}

#[test]
fn bad_cpuset_is_refused() {
    let (_t, r) = load_with(|v| v["linux"] = json!({"resources": {"cpu": {"cpus": "3-1"}}}));
    let e = err(r);
    assert!(e.to_string().contains("linux.resources.cpu.cpus"), "{e}");
}

// ---- sizes ---------------------------------------------------------------------------------

fn resources_of(res: Value) -> Resources {
    let (_t, r) = load_with(|v| v["linux"] = json!({"resources": res}));
    r.unwrap().linux.resources
}

#[test]
fn memory_and_cpu_become_the_vm_size() {
    assert_eq!(
        resources_of(json!({"memory": {"limit": 100 << 20}})).memory_mib,
        Some(100)
    );
    assert_eq!(
        resources_of(json!({"memory": {"limit": 10 << 20}})).memory_mib,
        Some(64)
    );
    assert_eq!(
        resources_of(json!({"memory": {"limit": -1}})).memory_mib,
        None
    );
    let r = resources_of(json!({"cpu": {"quota": 150000, "period": 100000}}));
    assert_eq!((r.quota_vcpus, r.vcpus()), (Some(2), Some(2)));
    let r = resources_of(json!({"cpu": {"quota": 350000, "period": 100000, "cpus": "0-1"}}));
    assert_eq!(
        (r.quota_vcpus, r.cpuset_cpus, r.vcpus()),
        (Some(4), Some(2), Some(2))
    );
    assert_eq!(resources_of(json!({})), Resources::default());
}

// ---- captured bundles ----------------------------------------------------------------------

const DOCKER_ROOT: &str =
    "docker/overlay2/fe8af19e4a651d82ca9550d08184ac706da13d51a597eb25fadb06f3ffcbd5af/merged";
const DOCKER_CTR: &str =
    "docker/containers/bfc58179fd502d724d4ec8f4944e21692ee000d86d46c809c6604ff2cf06d06c";

#[test]
fn docker_bundle() {
    let (t, r) = captured(DOCKER, DOCKER_ROOT);
    let b = r.unwrap();
    assert_eq!(b.oci_version, "1.0.2-dev");
    assert_eq!(b.process.args, ["echo", "hi"]);
    assert_eq!(b.process.cwd, Path::new("/"));
    assert!(!b.process.terminal);
    assert_eq!(b.process.user.additional_gids, [0]);
    assert_eq!(b.process.oom_score_adj, Some(0));
    assert_eq!(b.process.capabilities.as_ref().unwrap().bounding.len(), 14);
    assert!(
        b.process
            .capabilities
            .as_ref()
            .unwrap()
            .effective
            .contains(&"CAP_NET_BIND_SERVICE".to_string())
    );
    assert!(b.process.capabilities.as_ref().unwrap().ambient.is_empty());
    assert_eq!(b.root.path, t.0.join(DOCKER_ROOT));
    assert!(!b.root.readonly);
    assert_eq!(b.hostname.as_deref(), Some("bfc58179fd50"));

    let binds: Vec<_> = b
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind(b) => Some(b),
            Mount::Guest(_) => None,
        })
        .collect();
    let dests: Vec<_> = binds
        .iter()
        .map(|b| b.destination.to_str().unwrap())
        .collect();
    assert_eq!(dests, ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]);
    assert_eq!(binds[2].source, t.0.join(DOCKER_CTR).join("hosts"));
    assert!(binds.iter().all(|b| b.recursive && !b.readonly));

    let fs_of = |dest: &str| match b.mounts.iter().find(|m| m.destination() == Path::new(dest)) {
        Some(Mount::Guest(g)) => (g.fs.clone(), g.readonly),
        other => panic!("{dest}: {other:?}"),
    };
    assert_eq!(fs_of("/proc"), (GuestFs::Proc, false));
    assert_eq!(fs_of("/sys"), (GuestFs::Sysfs, true));
    assert_eq!(fs_of("/sys/fs/cgroup"), (GuestFs::Cgroup, true));
    assert_eq!(fs_of("/dev/pts"), (GuestFs::Devpts, false));
    assert_eq!(fs_of("/dev/mqueue"), (GuestFs::Mqueue, false));
    let mib64 = Some(TmpfsSize::Bytes(64 << 20));
    assert_eq!(
        fs_of("/dev"),
        (
            GuestFs::Tmpfs {
                size: mib64,
                mode: Some(0o755)
            },
            false
        )
    );
    assert_eq!(
        fs_of("/dev/shm"),
        (
            GuestFs::Tmpfs {
                size: mib64,
                mode: Some(0o1777)
            },
            false
        )
    );

    assert_eq!(b.hooks.prestart.len(), 1);
    let h = &b.hooks.prestart[0];
    assert_eq!(h.path, Path::new("/proc/DOCKERD_PID/exe"));
    assert_eq!(h.args[0], "libnetwork-setkey");
    assert_eq!(h.timeout, None);
    assert!(b.hooks.poststop.is_empty());

    assert_eq!(b.linux.resources, Resources::default());
    assert_eq!(b.linux.resources.memory_mib, None);
    assert_eq!(
        b.linux.cgroups_path.as_deref(),
        Some(Path::new(
            "/docker/bfc58179fd502d724d4ec8f4944e21692ee000d86d46c809c6604ff2cf06d06c"
        ))
    );
    assert_eq!(b.linux.namespaces.len(), 5);
    assert_eq!(b.linux.network(), Network::New);
    assert_eq!(b.linux.sysctl["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(b.linux.masked_paths.len(), 10);
    assert!(b.linux.masked_paths.contains(&"/proc/kcore".to_string()));
    assert_eq!(b.linux.readonly_paths.len(), 5);

    assert!(
        b.unsupported.iter().any(|u| u.contains("seccomp")),
        "{:?}",
        b.unsupported
    );
    assert!(
        b.unsupported
            .iter()
            .any(|u| u.contains("linux.resources.devices"))
    );
    // cpu.shares 0 and blockIO.weight 0 are Docker's "unset".
    assert!(
        !b.unsupported
            .iter()
            .any(|u| u.contains("shares") || u.contains("blockIO")),
        "{:?}",
        b.unsupported
    );
    assert!(b.unsupported.iter().all(|u| !u.contains('\n')));
}

#[test]
fn podman_tty_bundle() {
    let root = "podman/storage/overlay/6965a96bbbd2da4ea891406b2786146e508ba04c4a8f0f34b3956f3dcc576fc5/merged";
    let (t, r) = captured(PODMAN, root);
    let b = r.unwrap();
    assert!(b.process.terminal);
    assert_eq!(b.process.console_size, None);
    assert_eq!(b.process.args, ["sh", "-c", "tty; echo ttyok"]);
    assert!(b.process.env.contains(&"TERM=xterm".to_string()));
    assert_eq!(b.process.user.umask, Some(18));
    assert_eq!(
        b.process.rlimits,
        [
            Rlimit {
                typ: "RLIMIT_NOFILE".into(),
                soft: 20000,
                hard: 20000
            },
            Rlimit {
                typ: "RLIMIT_NPROC".into(),
                soft: 32768,
                hard: 32768
            },
        ]
    );
    assert_eq!(b.root.path, t.0.join(root));
    // podman's /dev/shm is a bind of its own shm directory, not a tmpfs.
    let shm = b
        .mounts
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .unwrap();
    assert!(
        matches!(shm, Mount::Bind(m) if !m.recursive && m.options.contains(&"nodev".to_string()))
    );
    let binds = b
        .mounts
        .iter()
        .filter(|m| matches!(m, Mount::Bind(_)))
        .count();
    assert_eq!(binds, 4);
    assert_eq!(b.annotations["io.container.manager"], "libpod");
    assert_eq!(b.linux.network(), Network::New);
    assert!(b.linux.sysctl.is_empty());
    assert!(b.unsupported.iter().any(|u| u.contains("seccomp")));
    assert!(b.unsupported.iter().any(|u| u.contains("pids.limit 2048")));
}

#[test]
fn security_fields_land_in_unsupported() {
    let (_t, r) = load_with(|v| {
        v["process"]["apparmorProfile"] = json!("docker-default");
        v["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
        v["linux"] = json!({"intelRdt": {"closID": "x"}, "mountLabel": "system_u:object_r:container_file_t:s0"});
    });
    let u = r.unwrap().unsupported;
    for word in ["apparmorProfile", "selinuxLabel", "intelRdt", "mountLabel"] {
        assert!(u.iter().any(|l| l.contains(word)), "{word}: {u:?}");
    }
}

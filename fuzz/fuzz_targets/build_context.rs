//! COPY and ADD on a hostile build context: the engine's own `copy_layer`
//! (`mvm_engine::build::copy`, `engine/src/build/copy.rs`) writes a layer tar from a context
//! that holds files, directories, fifos, small tar archives and symlinks whose targets are
//! absolute, climb with `..`, or name the canary's absolute path outside the context. The
//! sources are patterns of names and globs (`*`, `?`, `[..]`), the destination and working
//! directory paths of the same alphabet, with an optional `.dockerignore`, `--chown`,
//! `--chmod` and ADD's archive extraction; every link of the context is also copied as a
//! source of its own.
//!
//! The oracle, after each `copy_layer` (an error is a fine answer to hostile input, a panic
//! is not): nothing in the base directory (canary and context) changed; no file outside the
//! context, and no fifo of the context, was opened (inotify `IN_OPEN`, which the `O_PATH`
//! looks of `beneath` do not raise; the fifos' held write ends keep a wrongful open from
//! blocking, so the finding is a report and not a hang), and nothing was read from a fifo;
//! the layer holds neither the canary's marker nor a fifo's; a layer that was written reads
//! back as a tar whose entries are relative, without `..`, on the destination's path, only
//! files, directories and links (ADD's archives aside), each file with the content of a file
//! of the context (or of a member of its archives); the same request gives the same digest.
#![no_main]

#[path = "common/world.rs"]
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use arbitrary::Arbitrary;
use mvm_engine::build::copy::{CopyRequest, copy_layer};
use mvm_rootfs::beneath;
use mvm_rootfs::dockerfile::DockerIgnore;
use world::{Comp, PathSpec};

#[derive(Arbitrary, Debug)]
struct Input {
    nodes: Vec<Node>,
    first: Pattern,
    more: Vec<Pattern>,
    dest: PathSpec,
    /// `COPY src dest/`: the destination is a directory.
    dest_slash: bool,
    workdir: PathSpec,
    ignore: Vec<IgnoreLine>,
    /// ADD: local tar archives are extracted.
    add: bool,
    chown: Option<(u32, u32)>,
    chmod: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum NodeKind {
    File(Vec<u8>),
    Dir,
    Symlink(PathSpec),
    Fifo,
    /// A tar of a few members, for ADD to extract (or COPY to copy as a file).
    Archive(Vec<Member>),
}

#[derive(Arbitrary, Debug)]
struct Node {
    kind: NodeKind,
    first: Comp,
    rest: Vec<Comp>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MemberKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct Member {
    kind: MemberKind,
    path: PathSpec,
    link: PathSpec,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pat {
    Name(Comp),
    Star,
    Question,
    /// The name's first byte then `*`.
    Prefix(Comp),
    /// `*` then the name's last byte.
    Suffix(Comp),
    /// `?` then the name without its first byte.
    Skip1(Comp),
    /// `[c]` (or `[!c]`) for the name's first byte, then the rest of the name.
    Class(Comp, bool),
}

#[derive(Arbitrary, Debug)]
struct Pattern {
    absolute: bool,
    first: Pat,
    rest: Vec<Pat>,
}

#[derive(Arbitrary, Debug)]
struct IgnoreLine {
    /// `!`: an exception.
    negate: bool,
    /// `**/` in front.
    any_depth: bool,
    pattern: Pattern,
}

impl Pattern {
    /// As written in the Dockerfile: `..` and all, for COPY to clean or refuse.
    fn render(&self, base_rel: &str) -> String {
        let parts: Vec<String> = std::iter::once(self.first)
            .chain(self.rest.iter().copied().take(5))
            .map(|p| match p {
                Pat::Name(c) => c.render(base_rel),
                Pat::Star => "*".into(),
                Pat::Question => "?".into(),
                Pat::Prefix(c) => {
                    let n = c.render(base_rel);
                    format!("{}*", n.chars().next().unwrap_or('a'))
                }
                Pat::Suffix(c) => {
                    let n = c.render(base_rel);
                    format!("*{}", n.chars().last().unwrap_or('a'))
                }
                Pat::Skip1(c) => {
                    let n = c.render(base_rel);
                    format!("?{}", n.get(1..).unwrap_or(""))
                }
                Pat::Class(c, neg) => {
                    let n = c.render(base_rel);
                    let first = n.chars().next().unwrap_or('a');
                    let bang = if neg { "!" } else { "" };
                    format!("[{bang}{first}]{}", n.get(1..).unwrap_or(""))
                }
            })
            .collect();
        let s = parts.join("/");
        if self.absolute { format!("/{s}") } else { s }
    }
}

/// A tar of the members, from raw GNU headers (`tar::Builder` refuses `..` in names).
fn archive(members: &[Member], base_rel: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    let mut contents = Vec::new();
    for m in members.iter().take(6) {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().expect("a GNU header");
            let name = m.path.render(base_rel);
            let n = name.len().min(99);
            g.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            let link = m.link.render(base_rel);
            let l = link.len().min(99);
            g.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
        }
        let (kind, data) = match m.kind {
            MemberKind::File => (tar::EntryType::Regular, &m.data[..m.data.len().min(32)]),
            MemberKind::Dir => (tar::EntryType::Directory, &[][..]),
            MemberKind::Symlink => (tar::EntryType::Symlink, &[][..]),
            MemberKind::Hardlink => (tar::EntryType::Link, &[][..]),
            MemberKind::Fifo => (tar::EntryType::Fifo, &[][..]),
        };
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        contents.push(data.to_vec());
    }
    out.resize(out.len() + 1024, 0);
    (out, contents)
}

/// As COPY cleans a path: relative, `.` dropped, `..` popping; `None` if it climbs out.
fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// What the context holds, recorded when it was made.
struct Context {
    /// Every regular file's content, and every archive member's.
    contents: BTreeSet<Vec<u8>>,
    marker: String,
    fifo_marker: String,
}

/// Makes the context tree under `ctx`: each node's parents must be real directories (made as
/// needed), so that nothing here follows a link the input made. Returns the fifos' held
/// read-write ends with the fifo marker written into each (a reader would neither block
/// nor find the fifo empty), the fifos' paths and the links made (relative to `ctx`).
fn make_context(
    ctx: &Path,
    nodes: &[Node],
    base_rel: &str,
    context: &mut Context,
) -> (Vec<(std::fs::File, PathBuf)>, Vec<PathBuf>) {
    let mut held = Vec::new();
    let mut links = Vec::new();
    'node: for node in nodes.iter().take(24) {
        let comps: Vec<OsString> = std::iter::once(node.first)
            .chain(node.rest.iter().copied().take(3))
            .filter(|c| c.is_plain())
            .map(|c| OsString::from(c.render(base_rel)))
            .collect();
        let Some((name, parents)) = comps.split_last() else {
            continue;
        };
        let mut dir = ctx.to_path_buf();
        for c in parents {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'node,
                Err(_) => std::fs::create_dir(&dir).unwrap(),
            }
        }
        let p = dir.join(name);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match &node.kind {
            NodeKind::File(data) => {
                let data = &data[..data.len().min(32)];
                std::fs::write(&p, data).unwrap();
                context.contents.insert(data.to_vec());
            }
            NodeKind::Archive(members) => {
                let (bytes, members) = archive(members, base_rel);
                std::fs::write(&p, &bytes).unwrap();
                context.contents.insert(bytes);
                context.contents.extend(members);
            }
            NodeKind::Dir => std::fs::create_dir(&p).unwrap(),
            NodeKind::Symlink(t) => {
                // An empty target is refused (ENOENT); anything else is made as written.
                let t = t.render(base_rel);
                if !t.is_empty() {
                    std::os::unix::fs::symlink(t, &p).unwrap();
                    links.push(p.strip_prefix(ctx).unwrap().to_path_buf());
                }
            }
            NodeKind::Fifo => {
                let c = CString::new(p.as_os_str().as_bytes()).unwrap();
                // SAFETY: a valid path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&p)
                    .unwrap();
                std::io::Write::write_all(&mut f, context.fifo_marker.as_bytes()).unwrap();
                held.push((f, p.clone()));
            }
        }
    }
    (held, links)
}

/// Bytes waiting in the fifo `f` holds.
fn pending(f: &std::fs::File) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer; `f` is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD on a held fifo");
    n
}

/// Opens (`IN_OPEN`) and reads (`IN_ACCESS`) of watched paths, by inotify: a watch on the
/// base directory sees those of its children (the canary's files and directory, the
/// context's root), one on `victimdir` those of the canary's inner file, one on each fifo
/// those of the fifo.
struct Watch {
    fd: OwnedFd,
    /// Each watch descriptor, what it watches, and the child names that may be opened.
    watches: BTreeMap<i32, (PathBuf, Vec<&'static str>)>,
}

impl Watch {
    fn new() -> Self {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        Self {
            // SAFETY: a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            watches: BTreeMap::new(),
        }
    }

    fn add(&mut self, p: &Path, allowed: Vec<&'static str>) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid descriptor and path.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::IN_OPEN | libc::IN_ACCESS | libc::IN_DONT_FOLLOW,
            )
        };
        assert!(wd >= 0, "inotify_add_watch {}", p.display());
        self.watches.insert(wd, (p.to_path_buf(), allowed));
    }

    /// Panics on any open or read of a watched path but the allowed children.
    fn check(&self, what: &str) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut bad = Vec::new();
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut i = 0;
            let n = n as usize;
            while i + 16 <= n {
                let word = |k: usize| u32::from_ne_bytes(buf[i + k..i + k + 4].try_into().unwrap());
                let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
                let name_bytes = &buf[i + 16..i + 16 + len];
                let name = String::from_utf8_lossy(
                    &name_bytes[..name_bytes.iter().position(|b| *b == 0).unwrap_or(len)],
                )
                .into_owned();
                i += 16 + len;
                assert_eq!(mask & libc::IN_Q_OVERFLOW, 0, "inotify queue overflow");
                let Some((path, allowed)) = self.watches.get(&wd) else {
                    continue;
                };
                if mask & libc::IN_IGNORED != 0 || (!name.is_empty() && allowed.contains(&&*name)) {
                    continue;
                }
                bad.push(format!("{} {name:?} mask {mask:#x}", path.display()));
            }
        }
        assert!(
            bad.is_empty(),
            "{what}: opened or read outside the context or a fifo:\n{}",
            bad.join("\n")
        );
    }
}

/// The checks on one `copy_layer`'s layer at `out`.
fn check_layer(ctx: &Context, out: &Path, ok: bool, add: bool, dest: Option<&Path>, what: &str) {
    let Ok(bytes) = std::fs::read(out) else {
        assert!(!ok, "{what}: copy_layer succeeded without a layer");
        return;
    };
    for (m, name) in [(&ctx.marker, "canary"), (&ctx.fifo_marker, "fifo")] {
        let m = m.as_bytes();
        assert!(
            !bytes.windows(m.len()).any(|w| w == m),
            "{what}: the layer holds the {name}'s marker"
        );
    }
    if !ok {
        return; // a layer left half-written by a refusal is not used
    }
    let dest = dest.expect("a layer written for a destination that climbs out");
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().expect("the layer reads as a tar") {
        let mut e = e.expect("the layer's entries read");
        let raw = e.path_bytes().into_owned();
        let path = Path::new(std::ffi::OsStr::from_bytes(&raw)).to_path_buf();
        let shown = path.display().to_string();
        assert!(
            !raw.starts_with(b"/") && path.components().all(|c| matches!(c, Component::Normal(_))),
            "{what}: entry {shown:?} is absolute or climbs"
        );
        assert!(
            path.starts_with(dest) || dest.starts_with(&path),
            "{what}: entry {shown:?} is outside the destination {}",
            dest.display()
        );
        let kind = e.header().entry_type();
        match kind {
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("an entry's data");
                assert!(
                    ctx.contents.contains(&data),
                    "{what}: entry {shown:?} holds {data:?}, no file of the context"
                );
            }
            tar::EntryType::Directory | tar::EntryType::Symlink => {}
            tar::EntryType::Link | tar::EntryType::Fifo if add => {
                if kind == tar::EntryType::Link {
                    let l = e
                        .link_name_bytes()
                        .expect("a hard link's target")
                        .into_owned();
                    let l = Path::new(std::ffi::OsStr::from_bytes(&l));
                    assert!(
                        l.components().all(|c| matches!(c, Component::Normal(_)))
                            && l.starts_with(dest),
                        "{what}: hard link {shown:?} -> {} leaves the destination",
                        l.display()
                    );
                }
            }
            other => panic!("{what}: entry {shown:?} of type {other:?}"),
        }
    }
}

/// `MVM_FUZZ_TRACE` set: each request and its outcome on stderr, for replaying a corpus.
fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("MVM_FUZZ_TRACE").is_some())
}

fn layer_entries(out: &Path) -> usize {
    let bytes = std::fs::read(out).unwrap_or_default();
    tar::Archive::new(&bytes[..])
        .entries()
        .map(|e| e.count())
        .unwrap_or(0)
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    world::host_probe();
    let base = world::base_dir("c");
    let base_rel = world::base_rel(&base);
    let marker = format!("MVM-CANARY-{}", base_rel.replace('/', "_"));
    world::make_canary(&base, &marker);
    let ctx_path = base.join("ctx");
    std::fs::create_dir(&ctx_path).unwrap();
    let out_dir = base.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("layer.tar");
    let mut ctx = Context {
        contents: BTreeSet::new(),
        fifo_marker: format!("MVM-FIFO-{}", base_rel.replace('/', "_")),
        marker,
    };
    let (held, links) = make_context(&ctx_path, &input.nodes, &base_rel, &mut ctx);
    let before = world::snapshot(&base, Some(&out_dir));

    let ignore_text: String = input
        .ignore
        .iter()
        .take(3)
        .map(|l| {
            format!(
                "{}{}{}\n",
                if l.negate { "!" } else { "" },
                if l.any_depth { "**/" } else { "" },
                l.pattern.render(&base_rel)
            )
        })
        .collect();
    let ignore = (!ignore_text.is_empty()).then(|| DockerIgnore::parse(&ignore_text));
    let mut dest = input.dest.render(&base_rel);
    if input.dest_slash {
        dest.push('/');
    }
    let workdir = format!("/{}", input.workdir.render(&base_rel));
    let dest_abs = if dest.starts_with('/') {
        dest.clone()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    let dest_clean = clean_path(Path::new(&dest_abs));
    let patterns: Vec<String> = std::iter::once(&input.first)
        .chain(input.more.iter().take(3))
        .map(|p| p.render(&base_rel))
        .collect();
    // One COPY of all the patterns, each pattern alone when there are several, each link
    // of the context alone.
    let mut requests: Vec<Vec<String>> = vec![patterns.clone()];
    if patterns.len() > 1 {
        requests.extend(patterns.iter().map(|p| vec![p.clone()]));
    }
    requests.extend(
        links
            .iter()
            .take(8)
            .map(|l| vec![l.to_string_lossy().into_owned()]),
    );

    let root = beneath::open_root(&ctx_path).unwrap();
    let mut watch = Watch::new();
    watch.add(&base, vec!["ctx", "out"]);
    watch.add(&base.join(world::VICTIMDIR), vec![]);
    for (_, p) in &held {
        watch.add(p, vec![]);
    }
    for (i, sources) in requests.iter().enumerate() {
        let req = CopyRequest {
            sources,
            dest: &dest,
            workdir: &workdir,
            chown: input.chown,
            chmod: input.chmod.map(|m| u32::from(m) & 0o7777),
            extract_archives: input.add,
            what: if input.add { "ADD" } else { "COPY" },
        };
        let what = format!("{} {sources:?} {dest:?} (workdir {workdir:?})", req.what);
        let _ = std::fs::remove_file(&out);
        let r = copy_layer(root.as_fd(), &req, ignore.as_ref(), &out);
        watch.check(&what);
        if trace() {
            match &r {
                Ok(_) => eprintln!("{what}: ok, {} entries", layer_entries(&out)),
                Err(e) => eprintln!("{what}: {e}"),
            }
        }
        check_layer(
            &ctx,
            &out,
            r.is_ok(),
            input.add,
            dest_clean.as_deref(),
            &what,
        );
        if i == 0
            && let Ok(d1) = &r
        {
            let d2 = copy_layer(root.as_fd(), &req, ignore.as_ref(), &out)
                .expect("the same COPY again, on the same context");
            assert_eq!(d1, &d2, "{what}: the same COPY gave another digest");
            watch.check(&what);
        }
    }
    drop(root);
    for (f, p) in &held {
        assert_eq!(
            pending(f) as usize,
            ctx.fifo_marker.len(),
            "{}: something read from the fifo",
            p.display()
        );
    }
    drop(held);

    let after = world::snapshot(&base, Some(&out_dir));
    world::assert_unchanged(&before, &after, "COPY changed the base directory");
    world::check_host();
    std::fs::remove_dir_all(&base).expect("removing the fuzz base directory");
});

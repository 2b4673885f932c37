//! A hostile build context walked the way COPY walks it (`engine/src/build/copy.rs`, whose
//! crate has no library target): every source pattern's components resolved under the context
//! with `mvm_rootfs::beneath` (`open_dir` + `list_dir` and a glob matcher for `*` and `?`,
//! `open(.., false)` for literal names), each match then looked at before it is opened (a fifo
//! is never opened for reading by a match that names it), directories walked by descriptor
//! (`list_dir`, `stat_at`), their links read, never followed.
//!
//! The context is structured: files, directories, fifos and symlinks whose targets are
//! absolute, climb with `..`, or name the canary's absolute path outside the context; every
//! link is also followed as a source of its own. The oracle: every descriptor the walk opens is an inode of the context, every byte read is that
//! file's content as written and never the canary's marker, and nothing in the base directory
//! (canary and context alike: the walk only reads) changes.
#![no_main]

#[path = "common/world.rs"]
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use arbitrary::Arbitrary;
use mvm_rootfs::beneath;
use world::{Comp, PathSpec};

#[derive(Arbitrary, Debug)]
struct Input {
    nodes: Vec<Node>,
    first: Pattern,
    more: Vec<Pattern>,
}

#[derive(Arbitrary, Debug)]
enum NodeKind {
    File(Vec<u8>),
    Dir,
    Symlink(PathSpec),
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct Node {
    kind: NodeKind,
    first: Comp,
    rest: Vec<Comp>,
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
}

#[derive(Arbitrary, Debug)]
struct Pattern {
    absolute: bool,
    /// Passed to `beneath` as written, `..` included, rather than cleaned first as COPY does.
    raw: bool,
    first: Pat,
    rest: Vec<Pat>,
}

impl Pattern {
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
            })
            .collect();
        let s = parts.join("/");
        if self.absolute { format!("/{s}") } else { s }
    }
}

/// `*` and `?` in one path segment.
fn wildcard(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pat[1..], name) || (!name.is_empty() && wildcard(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pat[1..], &name[1..]),
        (Some(p), Some(c)) => p == c && wildcard(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// As COPY cleans a source: relative, `.` dropped, `..` popping; `None` if it climbs out.
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

fn fstat(fd: BorrowedFd<'_>) -> libc::stat {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call; `st` is a valid out pointer.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert_eq!(r, 0, "fstat of a descriptor the walk holds");
    st
}

fn readlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
    let c = CString::new(name.as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: writes at most buf.len() bytes; `c` is a valid name.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), 4096) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

const S_IFMT: u32 = libc::S_IFMT;

/// What the context holds, by inode, recorded when it was made.
struct Context {
    /// (dev, ino) of every directory in the context, its root included.
    dirs: BTreeSet<(u64, u64)>,
    /// (dev, ino) of every regular file and its content.
    files: BTreeMap<(u64, u64), Vec<u8>>,
    /// (dev, ino) of every fifo.
    fifos: BTreeSet<(u64, u64)>,
    marker: String,
    /// Bytes read, for the report.
    read: u64,
}

impl Context {
    fn check_dir(&self, fd: BorrowedFd<'_>, what: &Path) {
        let st = fstat(fd);
        assert!(
            self.dirs.contains(&(st.st_dev, st.st_ino)),
            "{}: the walk opened a directory outside the context (ino {})",
            what.display(),
            st.st_ino
        );
    }

    /// Reads the file `fd` (already known to be regular) and checks it.
    fn read_file(&mut self, fd: OwnedFd, what: &Path) {
        let st = fstat(fd.as_fd());
        assert_eq!(st.st_mode & S_IFMT, libc::S_IFREG, "{}", what.display());
        let key = (st.st_dev, st.st_ino);
        let Some(want) = self.files.get(&key) else {
            panic!(
                "{}: the walk opened a file outside the context (ino {})",
                what.display(),
                st.st_ino
            );
        };
        let mut data = Vec::new();
        beneath::reopen_file(fd.as_fd(), &st)
            .expect("reopening a context file")
            .take(1 << 16)
            .read_to_end(&mut data)
            .expect("reading a context file");
        self.check_bytes(&data, what);
        assert_eq!(
            &data,
            want,
            "{}: read other bytes than the file holds",
            what.display()
        );
        self.read += data.len() as u64;
    }

    fn check_bytes(&self, data: &[u8], what: &Path) {
        let m = self.marker.as_bytes();
        assert!(
            !data.windows(m.len()).any(|w| w == m),
            "{}: read the canary's bytes from outside the context",
            what.display()
        );
    }
}

/// The regular file or directory `rel` under `root` names, followed inside the root only.
/// A fifo it names is never opened for reading: the kind is looked at first (`open(.., false)`
/// and fstat); a link is followed with `open_dir` (which a fifo fails with ENOTDIR) and only
/// then with `open(.., true)`, which the fifos' held write ends keep from blocking.
fn visit(ctx: &mut Context, root: BorrowedFd<'_>, rel: &Path) {
    let Ok(pfd) = beneath::open(root, rel, false) else {
        return;
    };
    let st = fstat(pfd.as_fd());
    match st.st_mode & S_IFMT {
        libc::S_IFDIR => {
            let dir =
                beneath::open_dir(root, rel).expect("open_dir of what fstat calls a directory");
            let again = fstat(dir.as_fd());
            assert_eq!((again.st_dev, again.st_ino), (st.st_dev, st.st_ino));
            walk(ctx, dir.as_fd(), rel, 0);
        }
        libc::S_IFREG => {
            let fd = beneath::open(root, rel, true).expect("open of what fstat calls a file");
            let again = fstat(fd.as_fd());
            assert_eq!((again.st_dev, again.st_ino), (st.st_dev, st.st_ino));
            ctx.read_file(fd, rel);
            let via = beneath::read_file(root, rel)
                .expect("beneath::read_file of a regular file")
                .expect("beneath::read_file found it");
            ctx.check_bytes(&via, rel);
        }
        libc::S_IFLNK => {
            // Followed, as COPY follows a source that is a link, inside the root only.
            match beneath::open_dir(root, rel) {
                Ok(dir) => {
                    walk(ctx, dir.as_fd(), rel, 0);
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(_) => return,
            }
            let Ok(fd) = beneath::open(root, rel, true) else {
                return;
            };
            let st = fstat(fd.as_fd());
            match st.st_mode & S_IFMT {
                libc::S_IFREG => ctx.read_file(fd, rel),
                libc::S_IFIFO => assert!(
                    ctx.fifos.contains(&(st.st_dev, st.st_ino)),
                    "{}: a link led to a fifo outside the context",
                    rel.display()
                ),
                other => panic!("{}: a link led to a node of type {other:o}", rel.display()),
            }
        }
        _ => {} // a fifo: skipped, as COPY skips it
    }
}

/// The directory `dir` (at `rel`) by descriptor: children looked at with `stat_at`, opened
/// through `beneath` with the directory as the root, links read and never followed.
fn walk(ctx: &mut Context, dir: BorrowedFd<'_>, rel: &Path, depth: u32) {
    ctx.check_dir(dir, rel);
    assert!(depth < 64, "{}: the walk went in circles", rel.display());
    let names = beneath::list_dir(dir).expect("list_dir of a context directory");
    for n in names {
        let p = rel.join(&n);
        let Ok(st) = beneath::stat_at(dir, &n) else {
            continue;
        };
        match st.st_mode & S_IFMT {
            libc::S_IFDIR => {
                let sub = beneath::open_dir(dir, Path::new(&n)).expect("open_dir of a child dir");
                let s2 = fstat(sub.as_fd());
                assert_eq!(
                    (s2.st_dev, s2.st_ino),
                    (st.st_dev, st.st_ino),
                    "{}",
                    p.display()
                );
                walk(ctx, sub.as_fd(), &p, depth + 1);
            }
            libc::S_IFREG => {
                let look = beneath::open(dir, Path::new(&n), false).expect("O_PATH of a child");
                let s1 = fstat(look.as_fd());
                assert_eq!(s1.st_mode & S_IFMT, libc::S_IFREG);
                let fd = beneath::open(dir, Path::new(&n), true).expect("open of a child file");
                ctx.read_file(fd, &p);
            }
            libc::S_IFLNK => {
                let _target = readlinkat(dir, &n).expect("readlinkat of a child link");
            }
            _ => {}
        }
    }
}

/// COPY's expansion of a pattern: globbed segments list directories under the root, literal
/// ones only have to exist there.
fn expand(root: BorrowedFd<'_>, pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for seg in pattern.components() {
        let seg = seg.as_os_str().as_bytes();
        let glob = seg.iter().any(|b| matches!(b, b'*' | b'?'));
        let mut next = Vec::new();
        for base in &found {
            if glob {
                let Ok(dir) = beneath::open_dir(root, base) else {
                    continue;
                };
                for n in beneath::list_dir(dir.as_fd()).expect("list_dir of an opened directory") {
                    if wildcard(seg, n.as_bytes()) {
                        next.push(base.join(n));
                    }
                }
            } else {
                let p = base.join(OsStr::from_bytes(seg));
                if beneath::open(root, &p, false).is_ok() {
                    next.push(p);
                }
            }
        }
        found = next;
        found.truncate(64);
    }
    found
}

/// Makes the context tree under `ctx`: each node's parents must be real directories (made as
/// needed), so that nothing here follows a link the input made. Returns the fifos' held
/// read-write ends (opening a fifo that has a writer does not block) and the links made
/// (relative to `ctx`).
fn make_context(ctx: &Path, nodes: &[Node], base_rel: &str) -> (Vec<std::fs::File>, Vec<PathBuf>) {
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
            NodeKind::File(data) => std::fs::write(&p, &data[..data.len().min(32)]).unwrap(),
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
                held.push(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&p)
                        .unwrap(),
                );
            }
        }
    }
    (held, links)
}

/// Records the context's inodes (not following links).
fn record(ctx: &mut Context, dir: &Path) {
    let m = std::fs::symlink_metadata(dir).unwrap();
    ctx.dirs.insert((m.dev(), m.ino()));
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            record(ctx, &e.path());
        } else if m.is_file() {
            ctx.files
                .insert((m.dev(), m.ino()), std::fs::read(e.path()).unwrap());
        } else if m.file_type().is_fifo() {
            ctx.fifos.insert((m.dev(), m.ino()));
        }
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    world::host_probe();
    let base = world::base_dir("c");
    let base_rel = world::base_rel(&base);
    let marker = format!("MVM-CANARY-{}", base_rel.replace('/', "_"));
    world::make_canary(&base, &marker);
    let ctx_path = base.join("ctx");
    std::fs::create_dir(&ctx_path).unwrap();
    let (held, links) = make_context(&ctx_path, &input.nodes, &base_rel);
    let mut ctx = Context {
        dirs: BTreeSet::new(),
        files: BTreeMap::new(),
        fifos: BTreeSet::new(),
        marker,
        read: 0,
    };
    record(&mut ctx, &ctx_path);
    let before = world::snapshot(&base, None);

    let root = beneath::open_root(&ctx_path).unwrap();
    for pat in std::iter::once(&input.first).chain(input.more.iter().take(3)) {
        let text = pat.render(&base_rel);
        let pattern = if pat.raw {
            // Leading `/` dropped as COPY does, `..` kept for beneath to clamp.
            PathBuf::from(text.trim_start_matches('/'))
        } else {
            match clean_path(Path::new(&text)) {
                Some(p) => p,
                None => continue, // COPY refuses a source that climbs out
            }
        };
        for m in expand(root.as_fd(), &pattern) {
            visit(&mut ctx, root.as_fd(), &m);
        }
    }
    // Every link of the context named as a source (`COPY link /dst`): followed, inside the
    // context only, whatever the patterns matched.
    for l in &links {
        visit(&mut ctx, root.as_fd(), l);
    }
    drop(root);
    drop(held);

    let after = world::snapshot(&base, None);
    world::assert_unchanged(&before, &after, "walking the context changed the host");
    world::check_host();
    std::fs::remove_dir_all(&base).expect("removing the fuzz base directory");
});

//! COPY and ADD: the files they name, from the build context or another stage's root, made
//! into a layer tar on the host (no VM), with a digest of their contents for the build cache.
//!
//! Both roots are hostile: a context can hold `data -> /etc`, an image `/opt -> /`. Every
//! source is therefore resolved by the kernel inside its root (`openat2` with
//! `RESOLVE_IN_ROOT`, as [`mvm_rootfs::beneath`] does), so a link is followed only as if the
//! root were `/`, the way Docker's builder scopes them; a directory is then walked from its
//! descriptor (`openat(O_NOFOLLOW)`), its links copied as links. No host path below the root
//! is ever opened by name, and no mount is made.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use mvm_rootfs::dockerfile::DockerIgnore;
use mvm_rootfs::{ImageRecord, Store, beneath};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};
use sha2::{Digest as _, Sha256};

/// What a COPY or ADD can fail on, each one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source climbs out of its root by its own `..` (links are scoped, this is refused).
    #[error("{what} failed: forbidden path outside the build context: {path}")]
    Outside {
        /// The instruction (`COPY`, `ADD`).
        what: &'static str,
        /// The source as written.
        path: String,
    },
    /// Nothing of that name in the root (a link resolving to nothing inside it included).
    #[error(
        "{what} failed: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist"
    )]
    NotFound {
        /// The instruction (`COPY`, `ADD`).
        what: &'static str,
        /// The source as written, or the glob's match.
        path: String,
    },
    /// `ADD https://...`.
    #[error("{what} failed: sources from URLs are not supported: {url}")]
    Url {
        /// The instruction (`ADD`).
        what: &'static str,
        /// The source as written.
        url: String,
    },
    /// A source that could not be read, or the layer that could not be written.
    #[error("{what} failed: {path}: {source}")]
    Io {
        /// The instruction (`COPY`, `ADD`, or `build` for a stage root).
        what: &'static str,
        /// The path relative to the root (or the layer's or stage root's host path).
        path: String,
        /// What the system said.
        source: io::Error,
    },
    /// An ADD archive entry whose name leaves the destination (as Docker refuses it).
    #[error("{what} failed: {archive}: {entry:?} is outside of the destination")]
    EntryOutside {
        /// The instruction (`ADD`).
        what: &'static str,
        /// The archive, relative to the root.
        archive: String,
        /// The entry's name as the archive has it.
        entry: String,
    },
    /// An ADD archive hard link to a file outside the destination.
    #[error("{what} failed: {archive}: invalid hardlink {entry:?} -> {link:?}")]
    Hardlink {
        /// The instruction (`ADD`).
        what: &'static str,
        /// The archive, relative to the root.
        archive: String,
        /// The entry's name as the archive has it.
        entry: String,
        /// The link's target as the archive has it.
        link: String,
    },
    /// `--chown=name` where only numbers can do (no image to look names up in).
    #[error("--chown={spec}: only numeric uid[:gid] (or root) is supported")]
    ChownNotNumeric {
        /// The flag's value.
        spec: String,
    },
    /// `--chown=name` on a stage without a base image to look the name up in.
    #[error("--chown={spec}: names need a base image with /etc/passwd")]
    ChownNeedsImage {
        /// The flag's value.
        spec: String,
    },
    /// A user or group name the image's files do not have.
    #[error("unable to find {kind} {name}: no matching entries in {kind} file")]
    NoSuchName {
        /// `user` or `group`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },
    /// The image's /etc/passwd or /etc/group exists but cannot be read as a small file.
    #[error("--chown={spec}: {file} of the image: {source}")]
    IdFile {
        /// The flag's value.
        spec: String,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
        /// What reading it failed on.
        source: io::Error,
    },
    /// `--chmod` that is not an octal mode.
    #[error("--chmod={spec}: expected an octal mode such as 755")]
    Chmod {
        /// The flag's value.
        spec: String,
    },
    /// The image a `--from` or `--chown` reads could not be unpacked.
    #[error("unpacking image {image}: {source}")]
    Unpack {
        /// The image's short ID.
        image: String,
        /// What the unpack failed on.
        source: mvm_rootfs::disk::DiskError,
    },
}

/// What a COPY or ADD asks for, its words already expanded.
pub struct CopyRequest<'a> {
    /// Sources, relative to the source root.
    pub sources: &'a [String],
    /// Destination (relative ones are under the working directory).
    pub dest: &'a str,
    /// The stage's working directory.
    pub workdir: &'a str,
    /// `--chown`, numeric.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<u32>,
    /// ADD: local tar archives are extracted at the destination.
    pub extract_archives: bool,
    /// The instruction's name, for messages.
    pub what: &'static str,
}

/// `uid[:gid]` as numbers (`root` is 0).
pub fn parse_chown(s: &str) -> Result<(u32, u32), CopyError> {
    let num = |v: &str| -> Result<u32, CopyError> {
        match v {
            "root" => Ok(0),
            _ => v.parse().map_err(|_| CopyError::ChownNotNumeric {
                spec: s.to_string(),
            }),
        }
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, num(g)?)),
        None => {
            let u = num(s)?;
            Ok((u, u))
        }
    }
}

/// `--chown=user[:group]` with names looked up in the image's /etc/passwd and /etc/group
/// (numbers as they are). Without a group, the GID is the UID, as Docker documents.
pub fn parse_chown_names(s: &str, passwd: &str, group: &str) -> Result<(u32, u32), CopyError> {
    let lookup = |file: &str, kind: &'static str, name: &str| -> Result<u32, CopyError> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        file.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(2).and_then(|id| id.parse().ok()))
            .ok_or_else(|| CopyError::NoSuchName {
                kind,
                name: name.to_string(),
            })
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((lookup(passwd, "user", u)?, lookup(group, "group", g)?)),
        None => {
            let u = lookup(passwd, "user", s)?;
            Ok((u, u))
        }
    }
}

/// `--chmod` as octal.
pub fn parse_chmod(s: &str) -> Result<u32, CopyError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CopyError::Chmod {
            spec: s.to_string(),
        })
}
/// Matches one path segment against a pattern with `*`, `?` and `[...]`.
fn wildcard(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pat[1..], name) || (!name.is_empty() && wildcard(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pat[1..], &name[1..]),
        (Some(b'['), Some(c)) => match pat.iter().position(|b| *b == b']') {
            Some(end) if end > 1 => {
                let set = &pat[1..end];
                let (neg, set) = match set.first() {
                    Some(b'!' | b'^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= (set[i]..=set[i + 2]).contains(c);
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && wildcard(&pat[end + 1..], &name[1..])
            }
            _ => *c == b'[' && wildcard(&pat[1..], &name[1..]),
        },
        (Some(p), Some(c)) => p == c && wildcard(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// A path made relative and normalised; `None` if its `..` climbs above its start.
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

/// A source path made relative and normalised; `..` may not climb out of the root.
fn clean_source(src: &str, what: &'static str) -> Result<PathBuf, CopyError> {
    clean_path(Path::new(src)).ok_or_else(|| CopyError::Outside {
        what,
        path: src.to_string(),
    })
}

/// A failure reading `path` (relative to the source root) as the user's one line.
fn io_at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source: io::Error| CopyError::Io {
        what,
        path: shown(path),
        // RESOLVE_NO_XDEV's refusal reads as a puzzle ("Invalid cross-device link").
        source: if source.raw_os_error() == Some(libc::EXDEV) {
            io::Error::other("it is on another mount, which a build does not cross")
        } else {
            source
        },
    }
}

fn shown(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

/// Nothing there: no such name, or a name below something that is not a directory.
fn absent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    /// Fifos, sockets and devices: never opened, never copied (as Docker skips them).
    Other,
}

fn kind(st: &FileStat) -> Kind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    }
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    nix::sys::stat::fstat(fd).map_err(io::Error::from)
}

/// The directory an `O_PATH` descriptor holds, opened for listing (`.` resolves to itself).
fn reopen_dir(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The child `name` of `dir`, never through a link (`O_NOFOLLOW`), with `extra` flags.
fn open_child(dir: BorrowedFd<'_>, name: &OsStr, extra: OFlag) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | extra,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Where `fd` is below `root`, relative to it: the name a file reached through links has in
/// the root. `.dockerignore` is matched against it, as Docker matches the context it was
/// sent, so a link cannot reach what the context leaves out.
fn path_in_root(root: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    let at = |fd: BorrowedFd<'_>| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let (r, p) = (at(root)?, at(fd)?);
    p.strip_prefix(&r)
        .map(Path::to_path_buf)
        .map_err(|_| io::Error::other("it left the build context while it was being read"))
}

/// The paths (relative to `root`, as written, globs expanded) a source pattern names. Globs
/// list directories resolved inside the root; a literal name only has to exist there (a
/// link that resolves to nothing fails later, when the source is opened).
fn expand_source(
    root: BorrowedFd<'_>,
    pattern: &Path,
    what: &'static str,
) -> Result<Vec<PathBuf>, CopyError> {
    let mut found = vec![PathBuf::new()];
    for seg in pattern.components() {
        let seg = seg.as_os_str().as_bytes();
        let glob = seg.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        let mut next = Vec::new();
        for base in &found {
            if glob {
                let dir = match beneath::open_dir(root, base) {
                    Ok(d) => d,
                    Err(e) if absent(&e) => continue,
                    Err(e) => return Err(io_at(what, base)(e)),
                };
                for n in beneath::list_dir(dir.as_fd()).map_err(io_at(what, base))? {
                    if wildcard(seg, n.as_bytes()) {
                        next.push(base.join(n));
                    }
                }
            } else {
                let p = base.join(OsStr::from_bytes(seg));
                match beneath::open(root, &p, false) {
                    Ok(_) => next.push(p),
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(io_at(what, &p)(e)),
                }
            }
        }
        found = next;
    }
    Ok(found)
}

/// A reader of exactly `left` bytes that hashes them: a layer entry's data must be as long
/// as its header says, or the tar would be misread from there on.
struct Hashed<'h, R> {
    inner: R,
    left: u64,
    hash: &'h mut Sha256,
}

impl<R: Read> Read for Hashed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being read",
            ));
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes tar entries and hashes what they hold.
struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
    hash: Sha256,
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    written: std::collections::BTreeSet<PathBuf>,
    what: &'static str,
}

impl<W: Write> LayerWriter<W> {
    fn header(&self, st: &FileStat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let mode = match (self.chmod, kind) {
            (Some(m), tar::EntryType::Regular | tar::EntryType::Directory) => m,
            _ => st.st_mode & 0o7777,
        };
        h.set_mode(mode);
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    fn note(&mut self, path: &Path, h: &tar::Header) {
        self.hash.update(path.as_os_str().as_encoded_bytes());
        self.hash.update([0]);
        self.hash.update(h.as_bytes());
    }

    /// Directory entries for every ancestor of `dest` (mode 0755, as Docker makes them).
    fn parents(&mut self, dest: &Path) -> io::Result<()> {
        let mut p = PathBuf::new();
        let comps: Vec<_> = dest.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            p.push(c);
            if self.written.insert(p.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                h.set_mtime(0);
                self.note(&p, &h);
                self.tar.append_data(&mut h, &p, io::empty())?;
            }
        }
        Ok(())
    }

    fn directory(&mut self, dest: &Path, st: &FileStat) -> io::Result<()> {
        if !dest.as_os_str().is_empty() && self.written.insert(dest.to_path_buf()) {
            let mut h = self.header(st, tar::EntryType::Directory);
            self.note(dest, &h);
            self.tar.append_data(&mut h, dest, io::empty())?;
        }
        Ok(())
    }

    /// A regular file, read from its descriptor.
    fn file(&mut self, dest: &Path, st: &FileStat, file: File) -> io::Result<()> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let mut h = self.header(st, tar::EntryType::Regular);
        h.set_size(size);
        self.note(dest, &h);
        let data = Hashed {
            inner: io::BufReader::new(file),
            left: size,
            hash: &mut self.hash,
        };
        self.tar.append_data(&mut h, dest, data)?;
        self.written.insert(dest.to_path_buf());
        Ok(())
    }

    /// A link inside a copied directory: copied as a link, its text kept, never followed.
    fn symlink(&mut self, dest: &Path, st: &FileStat, target: &OsStr) -> io::Result<()> {
        let mut h = self.header(st, tar::EntryType::Symlink);
        self.note(dest, &h);
        self.hash.update(target.as_bytes());
        self.tar.append_link(&mut h, dest, target)?;
        self.written.insert(dest.to_path_buf());
        Ok(())
    }

    /// The contents of the directory `dir` (at `rel` in the root) under `dest`.
    fn tree(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        dest: &Path,
        ignore: Option<&DockerIgnore>,
    ) -> Result<(), CopyError> {
        for n in beneath::list_dir(dir).map_err(io_at(self.what, rel))? {
            self.child(dir, &n, &rel.join(&n), &dest.join(&n), ignore)?;
        }
        Ok(())
    }

    /// The entry `name` of `dir` (at `rel` in the root), by descriptor, never through a link.
    fn child(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        dest: &Path,
        ignore: Option<&DockerIgnore>,
    ) -> Result<(), CopyError> {
        if ignore.is_some_and(|ig| ig.is_excluded(&rel.to_string_lossy())) {
            return Ok(());
        }
        let what = self.what;
        let st = beneath::stat_at(dir, name).map_err(io_at(what, rel))?;
        self.parents(dest).map_err(io_at(what, rel))?;
        match kind(&st) {
            Kind::Dir => {
                self.directory(dest, &st).map_err(io_at(what, rel))?;
                let sub = open_child(dir, name, OFlag::O_DIRECTORY).map_err(io_at(what, rel))?;
                self.tree(sub.as_fd(), rel, dest, ignore)
            }
            Kind::Link => {
                let target = nix::fcntl::readlinkat(dir, name)
                    .map_err(io::Error::from)
                    .map_err(io_at(what, rel))?;
                self.symlink(dest, &st, &target).map_err(io_at(what, rel))
            }
            Kind::File => {
                // O_NONBLOCK: should a fifo have been swapped in since the stat, the open
                // returns at once and the check below refuses it.
                let f = open_child(dir, name, OFlag::O_NONBLOCK)
                    .map(File::from)
                    .map_err(io_at(what, rel))?;
                beneath::same_file(&f, &st).map_err(io_at(what, rel))?;
                self.file(dest, &st, f).map_err(io_at(what, rel))
            }
            Kind::Other => Ok(()),
        }
    }

    /// ADD of a local archive: its entries under `dest`, each name and hard link kept inside
    /// it (an entry leaving it fails the step, as Docker's untar does). Headers are made anew
    /// from the entry's fields, and only file types are passed on, so nothing in the archive
    /// can change how the layer tar itself is read.
    fn extract(&mut self, file: File, archive: &Path, dest: &Path) -> Result<(), CopyError> {
        use std::io::BufRead;
        let what = self.what;
        let name = shown(archive);
        let io = |source: io::Error| CopyError::Io {
            what,
            path: name.clone(),
            source,
        };
        let mut head = io::BufReader::new(file);
        let gzip = head.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(head))
        } else {
            Box::new(head)
        };
        let mut a = tar::Archive::new(reader);
        self.parents(&dest.join("x")).map_err(io)?;
        for e in a.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let raw = e.path_bytes().into_owned();
            let entry = || String::from_utf8_lossy(&raw).into_owned();
            let clean = clean_path(Path::new(OsStr::from_bytes(&raw))).ok_or_else(|| {
                CopyError::EntryOutside {
                    what,
                    archive: name.clone(),
                    entry: entry(),
                }
            })?;
            if clean.as_os_str().is_empty() {
                continue;
            }
            let target = dest.join(&clean);
            let src = e.header();
            let kind = src.entry_type();
            // An empty or garbled number is 0, as Go's archive/tar (Docker's) reads it.
            let mut h = tar::Header::new_gnu();
            h.set_mode(src.mode().unwrap_or(0) & 0o7777);
            let (uid, gid) = match self.chown {
                Some((u, g)) => (u64::from(u), u64::from(g)),
                None => (src.uid().unwrap_or(0), src.gid().unwrap_or(0)),
            };
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(src.mtime().unwrap_or(0));
            h.set_size(0);
            let link = e
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            match kind {
                tar::EntryType::Link => {
                    let to = clean_path(Path::new(OsStr::from_bytes(&link)))
                        .filter(|l| !l.as_os_str().is_empty())
                        .ok_or_else(|| CopyError::Hardlink {
                            what,
                            archive: name.clone(),
                            entry: entry(),
                            link: String::from_utf8_lossy(&link).into_owned(),
                        })?;
                    let to = dest.join(to);
                    h.set_entry_type(kind);
                    self.note(&target, &h);
                    self.hash.update(to.as_os_str().as_bytes());
                    self.tar.append_link(&mut h, &target, &to).map_err(io)?;
                }
                tar::EntryType::Symlink => {
                    // A link's text is only text here; the hardened unpack resolves it in the
                    // image's root.
                    h.set_entry_type(kind);
                    self.note(&target, &h);
                    self.hash.update(&link);
                    self.tar
                        .append_link(&mut h, &target, OsStr::from_bytes(&link))
                        .map_err(io)?;
                }
                tar::EntryType::Directory | tar::EntryType::Fifo => {
                    h.set_entry_type(kind);
                    self.note(&target, &h);
                    self.tar
                        .append_data(&mut h, &target, io::empty())
                        .map_err(io)?;
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    h.set_entry_type(kind);
                    h.set_device_major(src.device_major().ok().flatten().unwrap_or(0))
                        .map_err(io)?;
                    h.set_device_minor(src.device_minor().ok().flatten().unwrap_or(0))
                        .map_err(io)?;
                    self.note(&target, &h);
                    self.tar
                        .append_data(&mut h, &target, io::empty())
                        .map_err(io)?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    // `size()` is the file's real length (a sparse file's expanded one).
                    let size = e.size();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(size);
                    self.note(&target, &h);
                    let data = Hashed {
                        inner: &mut e,
                        left: size,
                        hash: &mut self.hash,
                    };
                    self.tar.append_data(&mut h, &target, data).map_err(io)?;
                }
                // PAX global headers and the like: no file.
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether `f` starts as a gzip stream or a tar (left at its start again).
fn is_archive(f: &mut File) -> io::Result<bool> {
    let mut head = Vec::with_capacity(262);
    Read::by_ref(f).take(262).read_to_end(&mut head)?;
    f.rewind()?;
    let n = head.len();
    Ok((n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar"))
}

/// An image's root filesystem, unpacked by the hardened unpack into a private directory of
/// the store, for `COPY --from` and `--chown` look-ups to read under [`beneath`] rules; no
/// mount is made. Removed on drop, whatever happened.
pub struct StageRoot {
    fd: OwnedFd,
    _tree: Tree,
}

/// A temporary directory tree, removed on drop (also when the unpack into it failed).
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        // std's remove_dir_all does not follow links (it walks by descriptor), so the
        // image's own links cannot make it delete host files.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl StageRoot {
    /// Unpacks `image`'s layers.
    pub fn unpack(store: &Store, image: &ImageRecord) -> Result<Self, CopyError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = store.temp_path("stage-root");
        let io = |source| CopyError::Io {
            what: "build",
            path: dir.display().to_string(),
            source,
        };
        // 0700: the tree holds the image's files with their owners and modes (setuid ones
        // included), which no other host user may reach while it exists.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        let tree = Tree(dir.clone());
        mvm_rootfs::disk::unpack_image(
            store,
            &image.manifest,
            &dir,
            &mvm_rootfs::unpack::Limits::default(),
        )
        .map_err(|source| CopyError::Unpack {
            image: image.id.hex()[..12].to_string(),
            source,
        })?;
        let fd = beneath::open_root(&dir).map_err(io)?;
        Ok(Self { fd, _tree: tree })
    }

    /// The root, to resolve under.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Writes the layer for `req` from the files under `root` into `out`; returns the digest of
/// its contents. `ignore` is the context's `.dockerignore` (none for another stage's root).
pub fn copy_layer(
    root: BorrowedFd<'_>,
    req: &CopyRequest<'_>,
    ignore: Option<&DockerIgnore>,
    out: &Path,
) -> Result<String, CopyError> {
    let what = req.what;
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.to_string()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let dest_is_dir = dest_abs.ends_with('/') || dest_abs.ends_with("/.") || req.sources.len() > 1;
    let dest = clean_source(&dest_abs, what)?;
    // Each match with the name a "not found" reports: the source as written, or the match
    // of a glob.
    let mut matched: Vec<(PathBuf, String)> = Vec::new();
    for s in req.sources {
        if s.contains("://") {
            return Err(CopyError::Url {
                what,
                url: s.clone(),
            });
        }
        let pattern = clean_source(s, what)?;
        let glob = s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['));
        let found: Vec<PathBuf> = expand_source(root, &pattern, what)?
            .into_iter()
            .filter(|p| {
                ignore.is_none_or(|ig| {
                    p.as_os_str().is_empty() || !ig.is_excluded(&p.to_string_lossy())
                })
            })
            .collect();
        if found.is_empty() {
            return Err(CopyError::NotFound {
                what,
                path: s.clone(),
            });
        }
        matched.extend(found.into_iter().map(|p| {
            let name = if glob { shown(&p) } else { s.clone() };
            (p, name)
        }));
    }
    let dest_is_dir = dest_is_dir || matched.len() > 1;
    let file = File::create(out).map_err(io_at(what, out))?;
    let mut w = LayerWriter {
        tar: tar::Builder::new(io::BufWriter::new(file)),
        hash: Sha256::new(),
        chown: req.chown,
        chmod: req.chmod,
        written: Default::default(),
        what,
    };
    let target_of = |rel: &Path| match rel.file_name() {
        Some(base) if dest_is_dir => dest.join(base),
        _ => dest.clone(),
    };
    for (rel, name) in &matched {
        // The source itself is followed (Docker copies what a linked source names), but only
        // inside the root.
        let fd = match beneath::open(root, rel, true) {
            Ok(fd) => fd,
            Err(e) if absent(&e) => {
                return Err(CopyError::NotFound {
                    what,
                    path: name.clone(),
                });
            }
            Err(e) => return Err(io_at(what, rel)(e)),
        };
        let st = fstat(fd.as_fd()).map_err(io_at(what, rel))?;
        // Where the links led, for .dockerignore: what it leaves out is not in the context,
        // whatever name reaches it.
        let real = match ignore {
            Some(ig) => {
                let real = path_in_root(root, fd.as_fd()).map_err(io_at(what, rel))?;
                if !real.as_os_str().is_empty() && ig.is_excluded(&real.to_string_lossy()) {
                    return Err(CopyError::NotFound {
                        what,
                        path: name.clone(),
                    });
                }
                real
            }
            None => rel.clone(),
        };
        match kind(&st) {
            Kind::Dir => {
                // A directory's contents, not the directory itself, as Docker copies.
                let dir = reopen_dir(fd.as_fd()).map_err(io_at(what, rel))?;
                w.tree(dir.as_fd(), &real, &dest, ignore)?;
            }
            Kind::File => {
                let mut f = beneath::reopen_file(fd.as_fd(), &st).map_err(io_at(what, rel))?;
                if req.extract_archives && is_archive(&mut f).map_err(io_at(what, rel))? {
                    w.extract(f, rel, &dest)?;
                    continue;
                }
                let target = target_of(rel);
                w.parents(&target).map_err(io_at(what, rel))?;
                w.file(&target, &st, f).map_err(io_at(what, rel))?;
            }
            // Fifos, sockets and devices are skipped, as Docker does.
            Kind::Link | Kind::Other => w.parents(&target_of(rel)).map_err(io_at(what, rel))?,
        }
    }
    let digest: String = w
        .hash
        .clone()
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    w.tar
        .into_inner()
        .and_then(|mut b| b.flush())
        .map_err(io_at(what, out))?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_paths() {
        assert!(wildcard(b"*.txt", b"a.txt"));
        assert!(!wildcard(b"*.txt", b"a.md"));
        assert!(wildcard(b"fil?[0-9]", b"file7"));
        assert!(!wildcard(b"[!a]x", b"ax"));
        assert_eq!(
            clean_source("./a/../b", "COPY").unwrap(),
            PathBuf::from("b")
        );
        assert!(clean_source("../etc/passwd", "COPY").is_err());
        assert_eq!(parse_chown("1000:100").unwrap(), (1000, 100));
        assert_eq!(parse_chown("root").unwrap(), (0, 0));
        assert!(parse_chown("www-data").is_err());
        assert_eq!(parse_chmod("755").unwrap(), 0o755);
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(parse_chown_names("www", passwd, group).unwrap(), (33, 33));
        assert_eq!(
            parse_chown_names("www:staff", passwd, group).unwrap(),
            (33, 50)
        );
        assert_eq!(
            parse_chown_names("7:staff", passwd, group).unwrap(),
            (7, 50)
        );
        assert!(
            parse_chown_names("nobody", passwd, group)
                .unwrap_err()
                .to_string()
                .contains("unable to find user nobody")
        );
        assert!(parse_chmod("999").is_err());
    }

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("mvm-copy-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn request<'a>(sources: &'a [String], dest: &'a str) -> CopyRequest<'a> {
        CopyRequest {
            sources,
            dest,
            workdir: "/",
            chown: None,
            chmod: None,
            extract_archives: false,
            what: "COPY",
        }
    }

    /// `(path, type, link name, content)` of each entry of a layer.
    fn entries(tar: &Path) -> Vec<(String, tar::EntryType, String, Vec<u8>)> {
        let data = std::fs::read(tar).unwrap();
        let mut a = tar::Archive::new(&data[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                (path, kind, link, body)
            })
            .collect()
    }

    #[test]
    fn copies_files_dirs_and_globs() {
        let s = Scratch::new("globs");
        let ctx = s.0.join("ctx");
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::write(ctx.join("a.txt"), "a").unwrap();
        std::fs::write(ctx.join("b.txt"), "b").unwrap();
        std::fs::write(ctx.join("dir/sub/c"), "c").unwrap();
        std::fs::write(ctx.join("dir/skip.log"), "x").unwrap();
        let root = beneath::open_root(&ctx).unwrap();
        let out = s.0.join("layer.tar");
        let ig = DockerIgnore::parse("**/*.log\n");
        let srcs = vec!["*.txt".to_string(), "dir".to_string()];
        let req = CopyRequest {
            sources: &srcs,
            dest: "app/",
            workdir: "/srv",
            chown: Some((5, 6)),
            chmod: None,
            extract_archives: false,
            what: "COPY",
        };
        let d1 = copy_layer(root.as_fd(), &req, Some(&ig), &out).unwrap();
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
        for want in [
            "srv",
            "srv/app",
            "srv/app/a.txt",
            "srv/app/b.txt",
            "srv/app/sub/c",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.ends_with("skip.log")), "{names:?}");
        // Same content, same digest; a change changes it.
        assert_eq!(copy_layer(root.as_fd(), &req, Some(&ig), &out).unwrap(), d1);
        std::fs::write(ctx.join("a.txt"), "A").unwrap();
        assert_ne!(copy_layer(root.as_fd(), &req, Some(&ig), &out).unwrap(), d1);
        let missing = vec!["nothere".to_string()];
        let bad = CopyRequest {
            sources: &missing,
            ..req
        };
        assert_eq!(
            copy_layer(root.as_fd(), &bad, None, &out)
                .unwrap_err()
                .to_string(),
            "COPY failed: file not found in build context or excluded by .dockerignore: stat nothere: file does not exist"
        );
    }

    #[test]
    fn sources_resolve_inside_their_root_only() {
        let s = Scratch::new("links");
        let (ctx, host) = (s.0.join("ctx"), s.0.join("host"));
        std::fs::create_dir_all(ctx.join("files")).unwrap();
        std::fs::create_dir_all(ctx.join("tree")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("secret"), "HOST-SECRET").unwrap();
        std::fs::write(ctx.join("files/a.txt"), "inside").unwrap();
        std::fs::write(ctx.join("tree/f"), "f").unwrap();
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, ctx.join(at));
        link(&host, "abs").unwrap();
        link(&host.join("secret"), "leak").unwrap();
        link(Path::new("../../../../../../.."), "up").unwrap();
        link(Path::new("files"), "alias").unwrap();
        link(Path::new("/files/a.txt"), "absin").unwrap();
        link(&host.join("secret"), "tree/l").unwrap();
        nix::unistd::mkfifo(&ctx.join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        nix::unistd::mkfifo(&ctx.join("tree/pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        let root = beneath::open_root(&ctx).unwrap();
        let out = s.0.join("layer.tar");
        let through_up = format!("up{}/secret", host.display());
        let through_up_glob = format!("up{}/sec*", host.display());
        for src in ["abs/secret", "abs/*", "leak", &through_up, &through_up_glob] {
            let srcs = vec![src.to_string()];
            let err = copy_layer(root.as_fd(), &request(&srcs, "/x"), None, &out).unwrap_err();
            assert!(matches!(err, CopyError::NotFound { .. }), "{src}: {err}");
        }
        // Links that stay inside are followed there; a linked source is copied as what it
        // names.
        for src in ["alias/a.txt", "absin", "up/files/a.txt"] {
            let srcs = vec![src.to_string()];
            copy_layer(root.as_fd(), &request(&srcs, "/x"), None, &out).unwrap();
            let e = entries(&out);
            assert!(
                e.iter().any(|(p, k, _, d)| p == "x"
                    && *k == tar::EntryType::Regular
                    && d == b"inside"),
                "{src}: {e:?}"
            );
        }
        // Inside a copied directory, a link is a link; fifos are skipped, never opened.
        let srcs = vec!["tree".to_string(), "pipe".to_string()];
        copy_layer(root.as_fd(), &request(&srcs, "/t/"), None, &out).unwrap();
        let e = entries(&out);
        assert!(
            e.iter().any(|(p, k, l, _)| p == "t/l"
                && *k == tar::EntryType::Symlink
                && *l == host.join("secret").display().to_string()),
            "{e:?}"
        );
        assert!(e.iter().any(|(p, ..)| p == "t/f"), "{e:?}");
        assert!(!e.iter().any(|(p, ..)| p.contains("pipe")), "{e:?}");
        let bytes = std::fs::read(&out).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"HOST-SECRET"));
        // .dockerignore applies to where a link leads, not only to its name.
        let ig = DockerIgnore::parse("files\n");
        for src in ["alias/a.txt", "alias", "absin"] {
            let srcs = vec![src.to_string()];
            let err = copy_layer(root.as_fd(), &request(&srcs, "/x"), Some(&ig), &out).unwrap_err();
            assert!(matches!(err, CopyError::NotFound { .. }), "{src}: {err}");
        }
        // Small files: through links inside the root only, never a fifo.
        assert_eq!(
            beneath::read_file(root.as_fd(), Path::new("leak")).unwrap(),
            None
        );
        assert_eq!(
            beneath::read_file(root.as_fd(), Path::new("absin"))
                .unwrap()
                .unwrap(),
            b"inside"
        );
        assert!(beneath::read_file(root.as_fd(), Path::new("pipe")).is_err());
        assert!(beneath::read_file(root.as_fd(), Path::new("files")).is_err());
        assert_eq!(std::fs::read(host.join("secret")).unwrap(), b"HOST-SECRET");
    }

    /// One tar entry with raw name and link name bytes.
    fn raw_entry(
        out: &mut Vec<u8>,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        size: u64,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn add(ctx: &Path, root: BorrowedFd<'_>, tar: &[u8], out: &Path) -> Result<String, CopyError> {
        std::fs::write(ctx.join("a.tar"), tar).unwrap();
        let srcs = vec!["a.tar".to_string()];
        let req = CopyRequest {
            extract_archives: true,
            what: "ADD",
            ..request(&srcs, "/dest/")
        };
        copy_layer(root, &req, None, out)
    }

    #[test]
    fn archive_entries_stay_in_their_destination() {
        use tar::EntryType::{Link, Regular, Symlink, XGlobalHeader};
        let s = Scratch::new("archive");
        let ctx = s.0.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        let root = beneath::open_root(&ctx).unwrap();
        let out = s.0.join("layer.tar");
        let finish = |mut t: Vec<u8>| {
            t.resize(t.len() + 1024, 0);
            t
        };
        let mut t = Vec::new();
        raw_entry(&mut t, "ok", Regular, "", 2, b"ok");
        raw_entry(&mut t, "a/../../x", Regular, "", 1, b"x");
        let err = add(&ctx, root.as_fd(), &finish(t), &out).unwrap_err();
        assert!(matches!(err, CopyError::EntryOutside { .. }), "{err}");
        assert!(
            err.to_string().contains("\"a/../../x\" is outside"),
            "{err}"
        );
        let mut t = Vec::new();
        raw_entry(&mut t, "hl", Link, "../../etc/passwd", 0, b"");
        let err = add(&ctx, root.as_fd(), &finish(t), &out).unwrap_err();
        assert!(err.to_string().contains("invalid hardlink"), "{err}");
        // Absolute names land under the destination; a link's text is kept; a hard link
        // that claims a size cannot hide a forged header in the layer; a pax global
        // header is not passed on.
        let mut forged = Vec::new();
        raw_entry(&mut forged, "../../forged", Regular, "", 0, b"");
        let mut t = Vec::new();
        raw_entry(&mut t, "/abs/e", Regular, "", 3, b"abs");
        raw_entry(&mut t, "sl", Symlink, "/etc/passwd", 0, b"");
        raw_entry(&mut t, "hl", Link, "/abs/e", 512, &forged);
        raw_entry(&mut t, "pax_global_header", XGlobalHeader, "", 0, b"");
        let t = finish(t);
        let d1 = add(&ctx, root.as_fd(), &t, &out).unwrap();
        let e = entries(&out);
        let names: Vec<&str> = e.iter().map(|(p, ..)| p.as_str()).collect();
        assert_eq!(names, ["dest", "dest/abs/e", "dest/sl", "dest/hl"], "{e:?}");
        assert_eq!(e[2].2, "/etc/passwd");
        assert_eq!(e[3].2, "dest/abs/e");
        assert_eq!(add(&ctx, root.as_fd(), &t, &out).unwrap(), d1);
        // An archive that is a link out of the root is not read.
        std::fs::write(s.0.join("host.tar"), &t).unwrap();
        std::fs::remove_file(ctx.join("a.tar")).unwrap();
        std::os::unix::fs::symlink(s.0.join("host.tar"), ctx.join("a.tar")).unwrap();
        let srcs = vec!["a.tar".to_string()];
        let req = CopyRequest {
            extract_archives: true,
            what: "ADD",
            ..request(&srcs, "/dest/")
        };
        let err = copy_layer(root.as_fd(), &req, None, &out).unwrap_err();
        assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
    }

    #[test]
    fn stage_roots_are_private_scoped_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let s = Scratch::new("stage");
        let store = Store::open(&s.0.join("images")).unwrap();
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        t.append_link(&mut h, "opt", "/").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(9);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        t.append_data(&mut h, "data/own", &b"image-own"[..])
            .unwrap();
        let tar = t.into_inner().unwrap();
        let image = mvm_rootfs::import::import(
            &store,
            &mut &tar[..],
            None,
            &[],
            None,
            "1970-01-01T00:00:00Z",
        )
        .unwrap();
        let scratch = || -> Vec<PathBuf> {
            std::fs::read_dir(s.0.join("images/tmp"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        {
            let root = StageRoot::unpack(&store, &image).unwrap();
            let dirs = scratch();
            assert_eq!(dirs.len(), 1, "{dirs:?}");
            let mode = std::fs::metadata(&dirs[0]).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o700);
            assert_eq!(
                beneath::read_file(root.fd(), Path::new("/opt/data/own"))
                    .unwrap()
                    .unwrap(),
                b"image-own"
            );
            assert_eq!(
                beneath::read_file(root.fd(), Path::new("/opt/etc/passwd")).unwrap(),
                None
            );
        }
        assert!(scratch().is_empty(), "{:?}", scratch());
        // A layer that cannot be read: an error, and nothing left behind.
        let mut broken = image.clone();
        broken.manifest.layers[0].digest = mvm_rootfs::Digest::of(b"no such layer");
        let err = StageRoot::unpack(&store, &broken).err().unwrap();
        assert!(matches!(err, CopyError::Unpack { .. }), "{err}");
        assert!(scratch().is_empty(), "{:?}", scratch());
    }
}

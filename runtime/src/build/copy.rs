//! COPY and ADD: the files they name, from the build context or another stage's root, made
//! into a layer tar on the host (no VM), with a digest of their contents for the build cache.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use mvm_rootfs::dockerfile::DockerIgnore;
use sha2::{Digest as _, Sha256};

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
    pub what: &'a str,
}

/// `uid[:gid]` as numbers (`root` is 0).
pub fn parse_chown(s: &str) -> Result<(u32, u32), String> {
    let num = |v: &str| -> Result<u32, String> {
        match v {
            "root" => Ok(0),
            _ => v
                .parse()
                .map_err(|_| format!("--chown={s}: only numeric uid[:gid] (or root) is supported")),
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
pub fn parse_chown_names(s: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let lookup = |file: &str, what: &str, name: &str| -> Result<u32, String> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        file.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(2).and_then(|id| id.parse().ok()))
            .ok_or_else(|| {
                format!("unable to find {what} {name}: no matching entries in {what} file")
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
pub fn parse_chmod(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("--chmod={s}: expected an octal mode such as 755"))
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

/// A source path made relative and normalised; `..` may not climb out of the root.
fn clean_source(src: &str, what: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!(
                        "{what} failed: forbidden path outside the build context: {src}"
                    ));
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The paths (relative to `root`) a source pattern names.
fn expand_source(root: &Path, pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for seg in pattern.components() {
        let seg = seg.as_os_str().as_encoded_bytes();
        let glob = seg.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        let mut next = Vec::new();
        for base in &found {
            if glob {
                let Ok(rd) = std::fs::read_dir(root.join(base)) else {
                    continue;
                };
                let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
                names.sort();
                for n in names {
                    if wildcard(seg, n.as_encoded_bytes()) {
                        next.push(base.join(n));
                    }
                }
            } else {
                let p = base.join(std::ffi::OsStr::from_bytes(seg));
                if std::fs::symlink_metadata(root.join(&p)).is_ok() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found
}

/// Writes tar entries and hashes what they hold.
struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
    hash: Sha256,
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    written: std::collections::BTreeSet<PathBuf>,
}

impl<W: Write> LayerWriter<W> {
    fn header(&self, meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let mode = match (self.chmod, kind) {
            (Some(m), tar::EntryType::Regular | tar::EntryType::Directory) => m,
            _ => meta.mode() & 0o7777,
        };
        h.set_mode(mode);
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn note(&mut self, path: &Path, h: &tar::Header) {
        self.hash.update(path.as_os_str().as_encoded_bytes());
        self.hash.update([0]);
        self.hash.update(h.as_bytes());
    }

    /// Directory entries for every ancestor of `dest` (mode 0755, as Docker makes them).
    fn parents(&mut self, dest: &Path) -> std::io::Result<()> {
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
                self.tar.append_data(&mut h, &p, std::io::empty())?;
            }
        }
        Ok(())
    }

    /// Copies `src` (file, symlink or directory tree) to `dest` in the layer.
    fn copy(
        &mut self,
        root: &Path,
        rel: &Path,
        dest: &Path,
        ignore: Option<&DockerIgnore>,
    ) -> std::io::Result<()> {
        if let Some(ig) = ignore
            && !rel.as_os_str().is_empty()
            && ig.is_excluded(&rel.to_string_lossy())
        {
            return Ok(());
        }
        let src = root.join(rel);
        let meta = std::fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        self.parents(dest)?;
        if ft.is_dir() {
            if !dest.as_os_str().is_empty() && self.written.insert(dest.to_path_buf()) {
                let mut h = self.header(&meta, tar::EntryType::Directory);
                self.note(dest, &h);
                self.tar.append_data(&mut h, dest, std::io::empty())?;
            }
            let mut names: Vec<_> = std::fs::read_dir(&src)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                self.copy(root, &rel.join(&n), &dest.join(&n), ignore)?;
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src)?;
            let mut h = self.header(&meta, tar::EntryType::Symlink);
            self.note(dest, &h);
            self.hash.update(target.as_os_str().as_encoded_bytes());
            self.tar.append_link(&mut h, dest, &target)?;
            self.written.insert(dest.to_path_buf());
        } else if ft.is_file() {
            let mut h = self.header(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            self.note(dest, &h);
            let mut data = Vec::with_capacity(meta.len() as usize);
            std::fs::File::open(&src)?.read_to_end(&mut data)?;
            self.hash.update(&data);
            self.tar.append_data(&mut h, dest, &data[..])?;
            self.written.insert(dest.to_path_buf());
        }
        // Sockets, fifos and devices in a build context are skipped, as Docker does.
        Ok(())
    }

    /// ADD of a local archive: its entries under `dest`, paths kept inside it.
    fn extract(&mut self, archive: &Path, dest: &Path) -> std::io::Result<()> {
        let f = std::io::BufReader::new(std::fs::File::open(archive)?);
        let mut head = std::io::BufReader::new(f);
        let reader: Box<dyn Read> = {
            use std::io::BufRead;
            let buf = head.fill_buf()?;
            if buf.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::GzDecoder::new(head))
            } else {
                Box::new(head)
            }
        };
        let mut a = tar::Archive::new(reader);
        self.parents(&dest.join("x"))?;
        for e in a.entries()? {
            let mut e = e?;
            let path = e.path()?.into_owned();
            let Ok(clean) = clean_source(&path.to_string_lossy(), "ADD") else {
                continue;
            };
            if clean.as_os_str().is_empty() {
                continue;
            }
            let target = dest.join(&clean);
            let mut h = e.header().clone();
            if let Some((u, g)) = self.chown {
                h.set_uid(u64::from(u));
                h.set_gid(u64::from(g));
            }
            self.note(&target, &h);
            if let Some(link) = e.link_name()? {
                let link = link.into_owned();
                let link = if h.entry_type() == tar::EntryType::Link {
                    match clean_source(&link.to_string_lossy(), "ADD") {
                        Ok(l) => dest.join(l),
                        Err(_) => continue,
                    }
                } else {
                    link
                };
                self.tar.append_link(&mut h, &target, &link)?;
            } else {
                let mut data = Vec::new();
                e.read_to_end(&mut data)?;
                self.hash.update(&data);
                self.tar.append_data(&mut h, &target, &data[..])?;
            }
        }
        Ok(())
    }
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar")
}

/// Writes the layer for `req` from `root` into `out`; returns the digest of its contents.
pub fn copy_layer(
    root: &Path,
    req: &CopyRequest<'_>,
    ignore: Option<&DockerIgnore>,
    out: &Path,
) -> Result<String, String> {
    let what = req.what;
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.to_string()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let dest_is_dir = dest_abs.ends_with('/') || dest_abs.ends_with("/.") || req.sources.len() > 1;
    let dest = clean_source(&dest_abs, what)?;
    let mut matched: Vec<PathBuf> = Vec::new();
    for s in req.sources {
        if s.contains("://") {
            return Err(format!(
                "{what} failed: sources from URLs are not supported: {s}"
            ));
        }
        let pattern = clean_source(s, what)?;
        let found: Vec<PathBuf> = expand_source(root, &pattern)
            .into_iter()
            .filter(|p| {
                ignore.is_none_or(|ig| {
                    p.as_os_str().is_empty() || !ig.is_excluded(&p.to_string_lossy())
                })
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{what} failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist"
            ));
        }
        matched.extend(found);
    }
    let dest_is_dir = dest_is_dir || matched.len() > 1;
    let file = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let mut w = LayerWriter {
        tar: tar::Builder::new(std::io::BufWriter::new(file)),
        hash: Sha256::new(),
        chown: req.chown,
        chmod: req.chmod,
        written: Default::default(),
    };
    let io = |e: std::io::Error| format!("{what} failed: {e}");
    for rel in &matched {
        let src = root.join(rel);
        let meta = std::fs::metadata(&src).map_err(io)?;
        if meta.is_dir() {
            // A directory's contents, not the directory itself, as Docker copies.
            let mut names: Vec<_> = std::fs::read_dir(&src)
                .map_err(io)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                w.copy(root, &rel.join(&n), &dest.join(&n), ignore)
                    .map_err(io)?;
            }
        } else if req.extract_archives && is_archive(&src) {
            w.extract(&src, &dest).map_err(io)?;
        } else {
            let name = rel.file_name().map(PathBuf::from).unwrap_or_default();
            let target = if dest_is_dir {
                dest.join(name)
            } else {
                dest.clone()
            };
            w.copy(root, rel, &target, None).map_err(io)?;
        }
    }
    let digest: String = w
        .hash
        .clone()
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    w.tar.into_inner().and_then(|mut b| b.flush()).map_err(io)?;
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
                .contains("unable to find user nobody")
        );
        assert!(parse_chmod("999").is_err());
    }

    #[test]
    fn copies_files_dirs_and_globs() {
        let ctx = std::env::temp_dir().join(format!("mvm-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&ctx);
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::write(ctx.join("a.txt"), "a").unwrap();
        std::fs::write(ctx.join("b.txt"), "b").unwrap();
        std::fs::write(ctx.join("dir/sub/c"), "c").unwrap();
        std::fs::write(ctx.join("dir/skip.log"), "x").unwrap();
        let out = ctx.join("layer.tar");
        let ig = DockerIgnore::parse("**/*.log\nlayer.tar\n");
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
        let d1 = copy_layer(&ctx, &req, Some(&ig), &out).unwrap();
        let data = std::fs::read(&out).unwrap();
        let mut a = tar::Archive::new(&data[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
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
        assert_eq!(copy_layer(&ctx, &req, Some(&ig), &out).unwrap(), d1);
        std::fs::write(ctx.join("a.txt"), "A").unwrap();
        assert_ne!(copy_layer(&ctx, &req, Some(&ig), &out).unwrap(), d1);
        let missing = vec!["nothere".to_string()];
        let bad = CopyRequest {
            sources: &missing,
            ..req
        };
        assert!(
            copy_layer(&ctx, &bad, None, &out)
                .unwrap_err()
                .contains("file not found")
        );
        let _ = std::fs::remove_dir_all(&ctx);
    }
}

//! `cp` between a container and the host, and `export` of its root file system, as Docker's
//! CLI does them (the destination rules of `docker cp`). The container's files are read and
//! written by an agent in the guest (its own while it runs, a helper VM's over its disks when
//! it is stopped); the host never mounts them. What comes out is a tar the guest made: it is
//! written only through [`mvm_rootfs::unpack::copy`], under the one name asked for, without
//! owners, setuid bits, device nodes or any symlink followed.

use std::ffi::OsString;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use mvm_agent_protocol::{CopyFailedKind, CopyIn, CopyInHow, CopyOut, Export, ExportKind, Stream};
use mvm_rootfs::unpack::copy::{CopyOutcome, Top, TopEntry, extract_copy};
use mvm_rootfs::unpack::{Limits, UnpackError};

use super::{ContainerRecord, Status, resolve_locked};
use crate::changes::{AgentReader, AgentWriter, ChangesError, MAX_LAYER_BYTES};
use crate::error::{EXIT_FAILED, EngineError};

/// Where `cp` out writes.
pub enum CopyOutTo<'a> {
    /// The tar itself (`cp c1:/x -`).
    Archive(&'a mut dyn Write),
    /// A host path, as `docker cp` places it.
    Host(&'a Path),
}

/// What `cp` in reads.
pub enum CopyInFrom<'a> {
    /// A tar (`cp - c1:/dir`), extracted into the destination directory.
    Archive(&'a mut dyn Read),
    /// A host path; its last symlink followed when `follow_link` (`-L`).
    Host {
        /// The path as given (a trailing `/.` copies a directory's contents).
        path: &'a str,
        /// `-L`.
        follow_link: bool,
    },
}

fn failed(message: String) -> EngineError {
    EngineError::with_code(EXIT_FAILED, message)
}

/// An agent's copy error in Docker's words.
fn copy_error(e: ChangesError, path: &str, container: &str) -> EngineError {
    match e {
        ChangesError::Copy {
            kind: CopyFailedKind::NotFound,
            ..
        } => failed(format!(
            "Could not find the file {path} in container {container}"
        )),
        other => failed(other.to_string()),
    }
}

/// Whether a path asks for a directory's contents (`dir/.`) rather than the directory.
fn wants_contents(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// `cp CONTAINER:SRC DEST`: the file or tree at `src` in the container, to `to`. Returns what
/// was written on the host (nothing for an archive).
pub fn copy_out(
    root: &Path,
    key: &str,
    src: &str,
    follow_link: bool,
    to: CopyOutTo<'_>,
) -> Result<CopyOutcome, EngineError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    let src_abs = absolute(src);
    let req = CopyOut {
        path: src_abs.clone(),
        follow_link,
    };
    let run = |out: &mut dyn Write| -> Result<u64, ChangesError> {
        with_files(&dirs, &rec, false, |r, w| {
            w.write_control(&mvm_agent_protocol::HostMessage::CopyOut(req.clone()))
                .and_then(|()| w.flush())
                .map_err(|e| ChangesError::Protocol(e.to_string()))?;
            crate::changes::read_export(r, &mut WriteRef(out), MAX_LAYER_BYTES)
        })
    };
    match to {
        CopyOutTo::Archive(out) => {
            run(out).map_err(|e| copy_error(e, src, key))?;
            Ok(CopyOutcome::default())
        }
        CopyOutTo::Host(dest) => {
            let contents = wants_contents(src) || src_abs == "/";
            let (reader, writer) = std::io::pipe().map_err(EngineError::runtime)?;
            std::thread::scope(|s| {
                // The connection feeds the pipe; the extractor reads it here.
                let feeder = s.spawn(move || {
                    let mut w = BufWriter::new(writer);
                    run(&mut w).and_then(|n| w.flush().map(|()| n).map_err(Into::into))
                });
                let extracted = extract_copy(reader, &Limits::default(), |top| {
                    place_on_host(dest, contents, top)
                });
                match (feeder.join(), extracted) {
                    (Err(_), _) => Err(EngineError::runtime("the copy's reader panicked")),
                    // The agent's own failure (a missing path) says more than the empty or
                    // cut stream the extractor saw.
                    (Ok(Err(e @ (ChangesError::Copy { .. } | ChangesError::Agent(_)))), _) => {
                        Err(copy_error(e, src, key))
                    }
                    // The extractor stopped reading first (a refused place, a hostile entry).
                    (_, Err(e)) => Err(failed(e.to_string())),
                    (Ok(Err(e)), Ok(_)) => Err(copy_error(e, src, key)),
                    (Ok(Ok(_)), Ok(outcome)) => Ok(outcome),
                }
            })
        }
    }
}

/// Where a copied tree lands on the host, by `docker cp`'s rules: into an existing
/// directory under its own name (or its contents, for `SRC/.`), else as `dest` itself, whose
/// parent must exist.
fn place_on_host(
    dest: &Path,
    contents: bool,
    top: &TopEntry,
) -> Result<(PathBuf, Top), UnpackError> {
    let refused = |m: String| UnpackError::Refused(m);
    let shown = dest.display();
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() && contents && top.is_dir => Ok((dest.to_path_buf(), Top::Contents)),
        Ok(m) if m.is_dir() => Ok((dest.to_path_buf(), Top::Keep)),
        Ok(_) if top.is_dir => Err(refused(format!(
            "cannot copy a directory to the file {shown}"
        ))),
        Ok(_) => as_new_name(dest),
        Err(_) if dest.as_os_str().as_encoded_bytes().ends_with(b"/") && !top.is_dir => Err(
            refused(format!("destination directory {shown} does not exist")),
        ),
        Err(_) => as_new_name(dest),
    }
}

fn as_new_name(dest: &Path) -> Result<(PathBuf, Top), UnpackError> {
    let name = dest
        .file_name()
        .ok_or_else(|| UnpackError::Refused(format!("cannot copy to {}", dest.display())))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(UnpackError::Refused(format!(
            "the directory {} does not exist",
            parent.display()
        )));
    }
    Ok((parent, Top::Rename(name.to_os_string())))
}

/// `cp SRC CONTAINER:DEST`: the host's file or tree (or a tar) into the container at `dest`.
/// Everything written belongs to root unless `keep_owners` (`-a`).
pub fn copy_in(
    root: &Path,
    key: &str,
    from: CopyInFrom<'_>,
    dest: &str,
    keep_owners: bool,
) -> Result<(), EngineError> {
    // The host side first: a missing source fails before any VM is touched.
    let source = match &from {
        CopyInFrom::Host { path, follow_link } => Some(host_source(path, *follow_link)?),
        CopyInFrom::Archive(_) => None,
    };
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    writable_at(&rec, &absolute(dest))?;
    if rec.effective().0 != Status::Running {
        crate::run::ensure_upper_disk(&dirs).map_err(EngineError::runtime)?;
    }
    let how = match (&from, &source) {
        (CopyInFrom::Archive(_), _) => CopyInHow::Archive,
        (_, Some(s)) if s.contents => CopyInHow::Contents,
        _ => CopyInHow::Named,
    };
    let req = CopyIn {
        path: absolute_keep_slash(dest),
        how,
        keep_owners,
    };
    let result = with_files(&dirs, &rec, true, |r, w| {
        w.write_control(&mvm_agent_protocol::HostMessage::CopyIn(req.clone()))
            .map_err(|e| ChangesError::Protocol(e.to_string()))?;
        {
            let mut sink = StdinFrames { w: &mut *w };
            let sent = match (from, &source) {
                (CopyInFrom::Archive(input), _) => std::io::copy(input, &mut sink).map(|_| ()),
                (CopyInFrom::Host { .. }, Some(s)) => s.write_tar(&mut sink),
                (CopyInFrom::Host { .. }, None) => Ok(()),
            };
            // A broken connection: the agent's answer (read below) says why.
            if let Err(e) = sent {
                tracing::debug!("sending the copy: {e}");
            }
        }
        let _ = w.write_eof(Stream::Stdin).and_then(|()| w.flush());
        crate::changes::read_answer(r)
    });
    result.map_err(|e| copy_error(e, dest, key))
}

/// Refuses `cp` into what the container has read-only, as Docker's: a `:ro` mount, or the
/// root of a `--read-only` container outside its writable mounts. The deepest mount that
/// holds `path` decides.
fn writable_at(rec: &ContainerRecord, path: &str) -> Result<(), EngineError> {
    let under = |target: &str| {
        let t = target.trim_end_matches('/');
        path == t || path.starts_with(&format!("{t}/")) || t.is_empty()
    };
    let mount = rec
        .mounts
        .iter()
        .filter(|m| under(&m.target))
        .max_by_key(|m| m.target.len());
    match mount {
        Some(m) if m.read_only => Err(failed("mounted volume is marked read-only".into())),
        Some(_) => Ok(()),
        None if rec.spec.read_only => Err(failed("container rootfs is marked read-only".into())),
        None => Ok(()),
    }
}

/// `export`: the container's root file system (its image with its changes, no volumes) as a
/// tar into `out`.
pub fn export(root: &Path, key: &str, out: &mut dyn Write) -> Result<u64, EngineError> {
    let (dirs, rec, _lock) = resolve_locked(root, key)?;
    let export = Export {
        what: ExportKind::Rootfs,
        freeze: false,
    };
    super::signal::while_awake(&dirs, &rec, |rec| {
        crate::changes::export(&dirs, rec, export, &mut WriteRef(out))
    })
    .map_err(|e| failed(format!("exporting the container: {e}")))
}

/// Runs `f` on a connection to an agent that sees the container's files (a paused VM is
/// resumed for the duration).
fn with_files<R>(
    dirs: &super::ContainerDirs,
    rec: &ContainerRecord,
    writable: bool,
    f: impl FnOnce(&mut AgentReader, &mut AgentWriter) -> Result<R, ChangesError>,
) -> Result<R, ChangesError> {
    super::signal::while_awake(dirs, rec, |rec| {
        crate::changes::with_agent(dirs, rec, (writable, true), f)
    })
}

/// `p` as an absolute path in the container (Docker takes a relative one from `/`).
fn absolute(p: &str) -> String {
    let trimmed = p.trim_end_matches("/.");
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Like [`absolute`], keeping a trailing `/` (it says the destination must be a directory).
fn absolute_keep_slash(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// A host path to copy in, checked before the VM is reached.
struct HostSource {
    /// The file or directory read (the link's target for `-L`).
    path: PathBuf,
    /// The tar's top name.
    name: OsString,
    /// `SRC/.`.
    contents: bool,
}

fn host_source(raw: &str, follow_link: bool) -> Result<HostSource, EngineError> {
    let contents = wants_contents(raw);
    let given = Path::new(raw);
    let meta = std::fs::symlink_metadata(given)
        .map_err(|e| failed(format!("lstat {raw}: {}", io_words(&e))))?;
    let path = if follow_link && meta.file_type().is_symlink() {
        std::fs::canonicalize(given).map_err(|e| failed(format!("stat {raw}: {}", io_words(&e))))?
    } else {
        given.to_path_buf()
    };
    let name = Path::new(raw.trim_end_matches("/."))
        .file_name()
        .map(|n| n.to_os_string())
        .or_else(|| {
            std::fs::canonicalize(given)
                .ok()?
                .file_name()
                .map(|n| n.to_os_string())
        })
        .unwrap_or_else(|| OsString::from("rootfs"));
    Ok(HostSource {
        path,
        name,
        contents,
    })
}

/// An I/O error as Go words it (`no such file or directory`).
fn io_words(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl HostSource {
    /// The tar of the source: one top entry named after it (links stored as links).
    fn write_tar(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let meta = std::fs::symlink_metadata(&self.path)?;
        if meta.is_dir() {
            b.append_dir_all(&self.name, &self.path)?;
        } else {
            b.append_path_with_name(&self.path, &self.name)?;
        }
        b.into_inner()?.flush()
    }
}

/// Writes into `Stdin` data frames.
struct StdinFrames<'a> {
    w: &'a mut AgentWriter,
}

impl Write for StdinFrames<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        const CHUNK: usize = 64 << 10;
        let n = data.len().min(CHUNK);
        if n > 0 {
            self.w
                .write_data(Stream::Stdin, &data[..n])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w
            .flush()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// A `&mut dyn Write` as a sized writer.
struct WriteRef<'a>(&'a mut dyn Write);

impl Write for WriteRef<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

//! The two files of a snapshot and how they are read back.
//!
//! State file:
//! ```text
//! 0   8  magic "MVMSNAP\0"
//! 8   4  format version (LE)
//! 12  4  header length H (LE), at most 64 KiB
//! 16  8  body length B (LE), at most 64 MiB
//! 24 32  SHA-256 of the header and the body
//! 56  H  header (JSON): this VMM's build, the host CPU, the memory file's size and ID
//! 56+H B body (JSON): the VM's state (`VmSnapshot`)
//! ```
//! Memory file: guest RAM, region after region (as the VM's memory map lays it out), pages
//! the guest never wrote left as holes, then one 4 KiB trailer ("MVMMEM\0\0", the ID the
//! state file names, the RAM's size), so that a state file is never paired with another
//! snapshot's memory.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::{
    Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};

use super::VmSnapshot;
use super::identity::{BUILD_ID, CpuIdentity};

const MAGIC: &[u8; 8] = b"MVMSNAP\0";
const MEMORY_MAGIC: &[u8; 8] = b"MVMMEM\0\0";
/// Bumped whenever the layout above changes.
pub const FORMAT_VERSION: u32 = 1;
const PREFIX_BYTES: usize = 56;
const MAX_HEADER_BYTES: u32 = 64 << 10;
const MAX_BODY_BYTES: u64 = 64 << 20;
/// The memory file's trailer.
pub const TRAILER_BYTES: u64 = 4096;
const PAGE: usize = 4096;
/// Guest memory is copied out this much at a time.
const CHUNK: usize = 1 << 20;

/// A snapshot could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a snapshot state file, or one this VMM cannot read.
    #[error("{path} is not an mvm snapshot: {why}")]
    NotASnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file is shorter than its header says.
    #[error("{path} is truncated: {got} of {want} bytes")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        got: u64,
        /// Bytes needed.
        want: u64,
    },
    /// The file's bytes are not the ones its checksum was made of.
    #[error("{0} is corrupted: its checksum does not match")]
    Corrupted(PathBuf),
    /// Written by another build of the VMM.
    #[error("the snapshot was written by VMM build {theirs}, this is {ours}")]
    OtherBuild {
        /// The writer's build.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Taken on another kind of CPU.
    #[error("{0}")]
    OtherCpu(String),
    /// The memory file is not the one of this state file.
    #[error("{path} is not the memory of this snapshot: {why}")]
    WrongMemory {
        /// The memory file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The state does not fit the VM, or cannot be a real VM's.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    /// A KVM call.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Its error.
        source: kvm_ioctls::Error,
    },
    /// Reading guest memory.
    #[error("guest memory: {0}")]
    Memory(String),
}

/// What the state file says before its body.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The VMM build that wrote it ([`BUILD_ID`]).
    pub build: String,
    /// The host CPU.
    pub cpu: CpuIdentity,
    /// Guest RAM in bytes (the memory file holds this plus its trailer).
    pub memory_bytes: u64,
    /// The memory file's ID (in its trailer).
    pub memory_id: [u8; 16],
}

impl Header {
    /// A header for a snapshot taken now, on this host, of `memory_bytes` of RAM.
    pub fn new(cpu: CpuIdentity, memory_bytes: u64) -> Self {
        let mut memory_id = [0u8; 16];
        // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(memory_id.as_mut_ptr().cast(), memory_id.len(), 0) };
        if n != memory_id.len() as isize {
            // Not secret, only distinct: the time will do.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            memory_id = t.to_le_bytes();
        }
        Self {
            build: BUILD_ID.to_string(),
            cpu,
            memory_bytes,
            memory_id,
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// The path a snapshot file given as a descriptor is named by in errors.
fn given(what: &str) -> PathBuf {
    PathBuf::from(format!("(the {what} descriptor)"))
}

/// Writes the state file (from its start, cut to its new length); returns its size.
pub fn write_state(file: &File, header: &Header, state: &VmSnapshot) -> Result<u64, SnapshotError> {
    let path = &given("state");
    let invalid = |e: serde_json::Error| SnapshotError::Invalid(e.to_string());
    let head = serde_json::to_vec(header).map_err(invalid)?;
    let body = serde_json::to_vec(state).map_err(invalid)?;
    let out = frame(&head, &body);
    file.set_len(0)
        .and_then(|()| file.write_all_at(&out, 0))
        .and_then(|()| file.sync_data())
        .map_err(io("snapshot state", path))?;
    Ok(out.len() as u64)
}

/// Reads and checks a state file: its header (this build, this CPU), its length and
/// checksum, and parses its body. The body still has to be checked against the VM
/// ([`VmSnapshot::check`]). Reads never more than the format's bounds.
pub fn read_state(path: &Path, host: &CpuIdentity) -> Result<(Header, VmSnapshot), SnapshotError> {
    let file = File::open(path).map_err(io("snapshot state", path))?;
    // The largest state file there can be, and one byte more, so that trailing bytes are seen.
    let limit = PREFIX_BYTES as u64 + u64::from(MAX_HEADER_BYTES) + MAX_BODY_BYTES + 1;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(io("snapshot state", path))?;
    parse_state(path, &bytes, host)
}

/// The header and body lengths of a state file's fixed prefix, checked against the bounds.
fn prefix(path: &Path, bytes: &[u8]) -> Result<(u32, u64), SnapshotError> {
    let not = |why: String| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < MAGIC.len() || &bytes[..8] != MAGIC {
        return Err(not("no snapshot magic at its start".into()));
    }
    if bytes.len() < PREFIX_BYTES {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            got: bytes.len() as u64,
            want: PREFIX_BYTES as u64,
        });
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(not(format!(
            "format version {version}, this VMM reads version {FORMAT_VERSION}"
        )));
    }
    let head_len = word(12);
    let mut body_len = [0u8; 8];
    body_len.copy_from_slice(&bytes[16..24]);
    let body_len = u64::from_le_bytes(body_len);
    if head_len > MAX_HEADER_BYTES || body_len > MAX_BODY_BYTES {
        return Err(not(format!(
            "a header of {head_len} bytes and a body of {body_len} (at most {MAX_HEADER_BYTES} \
             and {MAX_BODY_BYTES})"
        )));
    }
    Ok((head_len, body_len))
}

/// Parses a whole state file held in memory (what [`read_state`] read; the fuzz target's
/// input). `path` only names it in errors.
pub fn parse_state(
    path: &Path,
    bytes: &[u8],
    host: &CpuIdentity,
) -> Result<(Header, VmSnapshot), SnapshotError> {
    let not = |why: String| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        why,
    };
    let (head_len, body_len) = prefix(path, bytes)?;
    let want = PREFIX_BYTES + head_len as usize + body_len as usize;
    if bytes.len() < want {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            got: bytes.len() as u64,
            want: want as u64,
        });
    }
    if bytes.len() > want {
        return Err(not("bytes after its body".into()));
    }
    let rest = &bytes[PREFIX_BYTES..];
    if Sha256::digest(rest)[..] != bytes[24..56] {
        return Err(SnapshotError::Corrupted(path.to_path_buf()));
    }
    let (head, body) = rest.split_at(head_len as usize);
    let header: Header =
        serde_json::from_slice(head).map_err(|e| not(format!("its header: {e}")))?;
    if header.build != BUILD_ID {
        return Err(SnapshotError::OtherBuild {
            theirs: header.build,
            ours: BUILD_ID.into(),
        });
    }
    header.cpu.check_same(host)?;
    let state: VmSnapshot =
        serde_json::from_slice(body).map_err(|e| not(format!("its state: {e}")))?;
    Ok((header, state))
}

/// A state file around `body` with a valid prefix and header for `host` (for the fuzz target,
/// so that its input reaches the body's parser).
#[doc(hidden)]
pub fn frame_state(body: &[u8], host: &CpuIdentity) -> Vec<u8> {
    let header = Header {
        build: BUILD_ID.into(),
        cpu: host.clone(),
        memory_bytes: 0,
        memory_id: [0; 16],
    };
    frame(&serde_json::to_vec(&header).unwrap_or_default(), body)
}

/// A state file of `head` and `body`: the fixed prefix (magic, version, lengths, SHA-256 of
/// both), then both.
fn frame(head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut sum = Sha256::new();
    sum.update(head);
    sum.update(body);
    let mut out = Vec::with_capacity(PREFIX_BYTES + head.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&sum.finalize());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    out
}

/// The total RAM of `mem` in bytes.
pub fn memory_bytes(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Writes guest RAM and the trailer to the memory file; pages that read as zero are left as
/// holes. Returns the bytes of RAM actually written.
pub fn write_memory(
    file: &File,
    mem: &GuestMemoryMmap,
    header: &Header,
) -> Result<u64, SnapshotError> {
    let path = &given("memory");
    let total = memory_bytes(mem);
    // Cut to nothing first, so that no page of an older snapshot survives as a non-hole.
    file.set_len(0)
        .and_then(|()| file.set_len(total + TRAILER_BYTES))
        .map_err(io("snapshot memory", path))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut at = 0usize;
        while at < len {
            let n = CHUNK.min(len - at);
            region
                .read_slice(&mut buf[..n], MemoryRegionAddress(at as u64))
                .map_err(|e| SnapshotError::Memory(e.to_string()))?;
            written += write_nonzero(file, &buf[..n], offset + at as u64)
                .map_err(io("snapshot memory", path))?;
            at += n;
        }
        offset += len as u64;
    }
    let mut trailer = vec![0u8; TRAILER_BYTES as usize];
    trailer[..8].copy_from_slice(MEMORY_MAGIC);
    trailer[8..24].copy_from_slice(&header.memory_id);
    trailer[24..32].copy_from_slice(&total.to_le_bytes());
    // On disk before the state file that names it is.
    file.write_all_at(&trailer, total)
        .and_then(|()| file.sync_data())
        .map_err(io("snapshot memory", path))?;
    Ok(written)
}

/// Writes the runs of non-zero pages of `buf` at `offset`; returns the bytes written.
fn write_nonzero(file: &File, buf: &[u8], offset: u64) -> std::io::Result<u64> {
    let mut written = 0;
    let mut run: Option<usize> = None;
    let pages = buf.len().div_ceil(PAGE);
    for p in 0..=pages {
        let page = (p < pages).then(|| &buf[p * PAGE..((p + 1) * PAGE).min(buf.len())]);
        let zero = page.is_none_or(|pg| pg.iter().all(|&b| b == 0));
        match (run, zero) {
            (None, false) => run = Some(p * PAGE),
            (Some(start), true) => {
                let end = (p * PAGE).min(buf.len());
                file.write_all_at(&buf[start..end], offset + start as u64)?;
                written += (end - start) as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

/// Opens the memory file of `header`'s snapshot and checks its size and trailer.
pub fn open_memory(path: &Path, header: &Header) -> Result<File, SnapshotError> {
    let wrong = |why: String| SnapshotError::WrongMemory {
        path: path.to_path_buf(),
        why,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io("snapshot memory", path))?;
    let want = header
        .memory_bytes
        .checked_add(TRAILER_BYTES)
        .ok_or_else(|| wrong(format!("a memory of {} bytes", header.memory_bytes)))?;
    let len = file.metadata().map_err(io("snapshot memory", path))?.len();
    if len < want {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            got: len,
            want,
        });
    }
    if len > want {
        return Err(wrong(format!(
            "{len} bytes, the snapshot's memory is {want}"
        )));
    }
    let mut trailer = [0u8; 32];
    file.read_exact_at(&mut trailer, header.memory_bytes)
        .map_err(io("snapshot memory", path))?;
    if &trailer[..8] != MEMORY_MAGIC {
        return Err(wrong("no memory trailer".into()));
    }
    if trailer[8..24] != header.memory_id {
        return Err(wrong("it belongs to another snapshot".into()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_runs_only() {
        let dir = std::env::temp_dir().join(format!("mvm-snapfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m");
        let f = File::create(&path).unwrap();
        let mut buf = vec![0u8; PAGE * 5 + 100];
        buf[PAGE + 3] = 7;
        buf[PAGE * 2 + 1] = 8;
        buf[PAGE * 5 + 99] = 9;
        let n = write_nonzero(&f, &buf, 0).unwrap();
        assert_eq!(n, (2 * PAGE + 100) as u64);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), buf.len());
        assert_eq!(back, buf);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

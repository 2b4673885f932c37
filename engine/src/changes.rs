//! A container's changes as the host gets them: never by mounting its writable disk (every
//! block of it came from a guest kernel the tenant may control), but as a stream the agent
//! writes in the guest: an OCI layer tar (`commit`, a build's RUN) or Docker's `diff` lines.
//! A running container's agent is asked over a connection of its own; a stopped container's
//! disk is read by a short-lived helper VM (same kernel and agent, `mvm.export=1`, the disk
//! attached read-only). The bytes that come back are untrusted: capped here, and a layer is
//! applied later with the hardened unpack, as a registry's would be.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvm_agent_protocol::boot::BootConfig;
use mvm_agent_protocol::{
    AgentMessage, CopyFailedKind, DEFAULT_CALLBACK_PORT, DEFAULT_VSOCK_PORT, Export, ExportKind,
    Frame, FrameReader, FrameWriter, HostMessage, Stream, host_handshake,
};

use crate::backend::{self, VmSpec};
use crate::container::{ContainerDirs, ContainerRecord};

/// The most bytes of layer a container may hand over (as much as an image layer may unpack
/// to).
pub const MAX_LAYER_BYTES: u64 = 32 << 30;
/// The most bytes of `diff` lines.
pub const MAX_DIFF_BYTES: u64 = 256 << 20;
/// How long a helper VM may take to boot and hand over its changes before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);
/// Helper VM size: the walk needs little.
const HELPER_MEM_MIB: u64 = 256;

/// Why the changes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// The agent refused or failed.
    #[error("the container's agent: {0}")]
    Agent(String),
    /// More than the cap.
    #[error("the container's changes exceed {0} bytes")]
    TooLarge(u64),
    /// The connection broke the protocol or ended early.
    #[error("reading the container's changes: {0}")]
    Protocol(String),
    /// The helper VM failed.
    #[error("the helper microVM: {0}")]
    Helper(String),
    /// A `cp` the agent could not carry out.
    #[error("{message}")]
    Copy {
        /// Why, coarsely.
        kind: CopyFailedKind,
        /// The agent's words.
        message: String,
    },
    /// Host-side I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn protocol(e: impl std::fmt::Display) -> ChangesError {
    ChangesError::Protocol(e.to_string())
}

/// Reads an export's answer (`Changes` frames, their EOF, `Done`) into `out`, at most `cap`
/// bytes. Anything else the agent says is an error: the stream is the guest's to forge.
pub fn read_export(
    reader: &mut FrameReader<impl Read>,
    out: &mut impl Write,
    cap: u64,
) -> Result<u64, ChangesError> {
    let mut total = 0u64;
    let mut ended = false;
    loop {
        match reader.read_frame::<AgentMessage>().map_err(protocol)? {
            Some(Frame::Data {
                stream: Stream::Changes,
                data,
            }) if !ended => {
                if data.is_empty() {
                    ended = true;
                    continue;
                }
                total += data.len() as u64;
                if total > cap {
                    return Err(ChangesError::TooLarge(cap));
                }
                out.write_all(&data)?;
            }
            Some(Frame::Control(AgentMessage::Done)) if ended => {
                out.flush()?;
                return Ok(total);
            }
            Some(Frame::Control(AgentMessage::Error { message })) => {
                return Err(ChangesError::Agent(message));
            }
            Some(Frame::Control(AgentMessage::CopyFailed { kind, message })) => {
                return Err(ChangesError::Copy { kind, message });
            }
            Some(other) => {
                return Err(ChangesError::Protocol(format!(
                    "unexpected {} in the changes",
                    describe(&other)
                )));
            }
            None => return Err(ChangesError::Protocol("the connection ended early".into())),
        }
    }
}

/// Reads the answer to a request that streams nothing back (`copy_in`): `Done`, or the
/// agent's error.
pub fn read_answer(reader: &mut FrameReader<impl Read>) -> Result<(), ChangesError> {
    match read_reply(reader)? {
        AgentMessage::Done => Ok(()),
        other => Err(unexpected(&Frame::Control(other))),
    }
}

/// Reads the one control message that answers a request; the agent's refusals (`error`,
/// `copy_failed`) are errors, and so is anything that is no control message.
pub fn read_reply(reader: &mut FrameReader<impl Read>) -> Result<AgentMessage, ChangesError> {
    match reader.read_frame::<AgentMessage>().map_err(protocol)? {
        Some(Frame::Control(AgentMessage::Error { message })) => Err(ChangesError::Agent(message)),
        Some(Frame::Control(AgentMessage::CopyFailed { kind, message })) => {
            Err(ChangesError::Copy { kind, message })
        }
        Some(Frame::Control(m)) => Ok(m),
        Some(other) => Err(unexpected(&other)),
        None => Err(ChangesError::Protocol("the connection ended early".into())),
    }
}

fn unexpected(frame: &Frame<AgentMessage>) -> ChangesError {
    ChangesError::Protocol(format!("unexpected {} in the answer", describe(frame)))
}

fn describe(frame: &Frame<AgentMessage>) -> String {
    match frame {
        Frame::Control(m) => format!("{m:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("message")
            .to_string(),
        Frame::Data { stream, .. } => format!("{stream:?} data"),
    }
}

/// Sends `Export` on a connection whose handshake is done and reads the answer.
pub fn request_export(
    reader: &mut FrameReader<impl Read>,
    writer: &mut FrameWriter<impl Write>,
    export: Export,
    out: &mut impl Write,
) -> Result<u64, ChangesError> {
    writer
        .write_control(&HostMessage::Export(export))
        .and_then(|()| writer.flush())
        .map_err(protocol)?;
    let cap = match export.what {
        ExportKind::Layer | ExportKind::Rootfs => MAX_LAYER_BYTES,
        ExportKind::Diff => MAX_DIFF_BYTES,
    };
    read_export(reader, out, cap)
}

/// A connection to the agent whose handshake is done.
pub type AgentReader = FrameReader<BufReader<UnixStream>>;
/// Its writing half.
pub type AgentWriter = FrameWriter<UnixStream>;

/// Runs `f` on a connection of its own to a running (or paused, resumed by the caller)
/// container's agent.
pub fn with_running<R>(
    dirs: &ContainerDirs,
    f: impl FnOnce(&mut AgentReader, &mut AgentWriter) -> Result<R, ChangesError>,
) -> Result<R, ChangesError> {
    let stream = crate::session::connect_guest(
        &dirs.vsock_path(),
        DEFAULT_VSOCK_PORT,
        Duration::from_secs(10),
    )?;
    let mut reader = FrameReader::new(BufReader::new(stream.try_clone()?));
    let mut writer = FrameWriter::new(stream);
    host_handshake(&mut reader, &mut writer).map_err(protocol)?;
    f(&mut reader, &mut writer)
}

/// Runs `f` on the connection of a helper VM that mounts a stopped container's disks as its
/// root: read-only, or the writable disk read-write when `writable` (`cp` into it); with
/// `volumes`, its volumes and bind mounts too (served by their virtiofsd, as when it runs).
fn with_helper<R>(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    (writable, volumes): (bool, bool),
    f: impl FnOnce(&mut AgentReader, &mut AgentWriter) -> Result<R, ChangesError>,
) -> Result<R, ChangesError> {
    // Beside the container's own run directory (a short path: unix sockets live in it), so
    // a `start` meanwhile does not meet it.
    let mut name = dirs.run.file_name().unwrap_or_default().to_os_string();
    name.push(".export");
    let run_dir = dirs.run.with_file_name(name);
    let _ = std::fs::remove_dir_all(&run_dir);
    // The volumes' daemons keep their sockets in the helper's directory, where its jail
    // sees them.
    let (daemons, shares) = if volumes && !rec.mounts.is_empty() {
        std::fs::create_dir_all(&run_dir)?;
        let helper_dirs = ContainerDirs {
            id: dirs.id.clone(),
            root: dirs.root.clone(),
            dir: dirs.dir.clone(),
            run: run_dir.clone(),
        };
        crate::run::start_shares(&helper_dirs, rec)
            .map_err(|e| ChangesError::Helper(e.to_string()))?
    } else {
        (Vec::new(), Vec::new())
    };
    let spec = VmSpec {
        kernel: rec.vm.kernel.clone(),
        // The kernel stays quiet even when the agent logs (`verbose` false).
        cmdline: crate::run::kernel_cmdline(
            &BootConfig {
                export: true,
                export_writable: writable,
                mounts: if volumes {
                    crate::run::helper_mounts(&rec.mounts)
                } else {
                    Vec::new()
                },
                ..crate::run::boot_config(rec.vm.debug)
            },
            false,
        )
        .map_err(|e| ChangesError::Helper(e.to_string()))?,
        vcpus: 1,
        mem_mib: HELPER_MEM_MIB,
        disks: crate::run::container_disks(rec, upper_disk(dirs), !writable),
        run_dir: run_dir.clone(),
        nics: Vec::new(),
        shares,
        cgroup_parent: None,
    };
    std::fs::create_dir_all(spec.vm_dir())?;
    let callback = spec
        .vsock_path()
        .with_file_name(format!("vsock.sock_{DEFAULT_CALLBACK_PORT}"));
    let listener = UnixListener::bind(&callback)?;
    let result = (|| {
        let mut vm = backend::start(rec.vm.backend, &spec).map_err(ChangesError::Helper)?;
        let stream =
            crate::session::accept_agent(&mut vm, &listener, HELPER_TIMEOUT, &spec.console_path())
                .map_err(|e| ChangesError::Helper(e.to_string()))?;
        stream.set_read_timeout(Some(HELPER_TIMEOUT))?;
        let mut reader = FrameReader::new(BufReader::new(stream.try_clone()?));
        let mut writer = FrameWriter::new(stream.try_clone()?);
        host_handshake(&mut reader, &mut writer).map_err(protocol)?;
        let r = f(&mut reader, &mut writer);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        // A writable helper must end cleanly: its power-off flushes the disk.
        vm.finish(Duration::from_secs(if writable { 30 } else { 5 }));
        r
    })();
    drop(daemons);
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

/// Runs `f` on a connection to an agent that sees the container's files: its own when it
/// runs, else a helper VM's over its disks (and, with `volumes`, its volumes: `cp`).
pub fn with_agent<R>(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    (writable, volumes): (bool, bool),
    f: impl FnOnce(&mut AgentReader, &mut AgentWriter) -> Result<R, ChangesError>,
) -> Result<R, ChangesError> {
    if rec.effective().0 == crate::container::Status::Running {
        with_running(dirs, f)
    } else {
        with_helper(dirs, rec, (writable, volumes), f)
    }
}

/// The container's writable disk.
pub fn upper_disk(dirs: &ContainerDirs) -> PathBuf {
    dirs.dir.join("upper.ext4")
}

/// Writes the container's changes as `export` asks into `out`, from its agent if it runs,
/// else through a helper VM; a container that never ran has none.
pub fn export(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    export: Export,
    out: &mut impl Write,
) -> Result<u64, ChangesError> {
    match export.what {
        ExportKind::Layer | ExportKind::Diff if !upper_disk(dirs).exists() => {
            if export.what == ExportKind::Layer {
                tar::Builder::new(&mut *out).finish()?;
            }
            return Ok(0);
        }
        // The whole root needs a helper even for a container that never ran.
        ExportKind::Rootfs => {
            crate::run::ensure_upper_disk(dirs).map_err(ChangesError::Helper)?;
        }
        _ => {}
    }
    with_agent(dirs, rec, (false, false), |r, w| {
        request_export(r, w, export, out)
    })
}

/// Writes the container's layer (an OCI layer tar) to the file `path`.
pub fn layer_to_file(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    freeze: bool,
    path: &Path,
) -> Result<u64, ChangesError> {
    let f = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::new(f);
    let n = export(
        dirs,
        rec,
        Export {
            what: ExportKind::Layer,
            freeze,
        },
        &mut w,
    )?;
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvm_agent_protocol::{encode_control, encode_data, encode_eof};

    fn answer(frames: &[(Option<&[u8]>, Option<AgentMessage>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (data, msg) in frames {
            match (data, msg) {
                (Some([]), _) => encode_eof(Stream::Changes, &mut out),
                (Some(d), _) => encode_data(Stream::Changes, d, &mut out),
                (None, Some(m)) => encode_control(m, &mut out).unwrap(),
                (None, None) => {}
            }
        }
        out
    }

    #[test]
    fn a_hostile_export_stream_is_capped_and_checked() {
        let good = answer(&[
            (Some(b"abc"), None),
            (Some(b"def"), None),
            (Some(b""), None),
            (None, Some(AgentMessage::Done)),
        ]);
        let mut out = Vec::new();
        let n = read_export(&mut FrameReader::new(&good[..]), &mut out, 100).unwrap();
        assert_eq!((n, &out[..]), (6, &b"abcdef"[..]));
        // Over the cap.
        let err = read_export(&mut FrameReader::new(&good[..]), &mut Vec::new(), 4).unwrap_err();
        assert!(matches!(err, ChangesError::TooLarge(4)), "{err}");
        // Done before the stream's end, data after it, stdout, a cut connection, an error.
        for bad in [
            answer(&[(Some(b"a"), None), (None, Some(AgentMessage::Done))]),
            answer(&[(Some(b""), None), (Some(b"late"), None)]),
            {
                let mut v = Vec::new();
                encode_data(Stream::Stdout, b"x", &mut v);
                v
            },
            answer(&[(Some(b"abc"), None)]),
            answer(&[(
                None,
                Some(AgentMessage::Error {
                    message: "no".into(),
                }),
            )]),
        ] {
            assert!(read_export(&mut FrameReader::new(&bad[..]), &mut Vec::new(), 100).is_err());
        }
    }
}

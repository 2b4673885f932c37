//! One host connection: handshake, wait for `Start`, run the process, forward its stdio and
//! signals, report its exit.
//!
//! Works over any byte stream so that tests can drive it through a socketpair; the PID-1
//! code hands it the vsock connection.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mvm_agent_protocol::{
    AgentMessage, Frame, FrameDecoder, HostFrame, HostMessage, PROTOCOL_VERSION, ProtocolError,
    Stream, encode_control, encode_data, encode_eof,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use crate::pty::set_window_size;
use crate::reaper::{ExitInfo, Reaper, pidfd_open};
use crate::spawn::{SpawnContext, Spawned, spawn};
use crate::{log_debug, log_error};
use mvm_agent_protocol::boot::{MAX_MTU, MIN_MTU, MacAddr, NetConfig};

/// How much stdin the agent holds for a process that is not reading it before it stops
/// reading the connection (back-pressure on the host).
const STDIN_HIGH_WATER: usize = 1 << 20;

/// Read size for the connection and the process's output.
const CHUNK: usize = 64 * 1024;

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The container's root, where `cp` resolves paths.
    pub root: PathBuf,
    /// The container's `/etc`.
    pub etc_dir: PathBuf,
    /// The container's hostname.
    pub hostname: Option<String>,
    /// After the process exits, how long to keep forwarding output that its children still
    /// write to the inherited pipes before giving up on EOF.
    pub exit_grace: Duration,
    /// After the last message, how long to wait for the host to close the connection (so that
    /// powering off does not drop bytes still in flight).
    pub close_timeout: Duration,
    /// How long a new connection may wait before `hello` and `start`; `None` waits forever.
    pub handshake_timeout: Option<Duration>,
    /// The agent-side PID of the container's PID 1, shared by every session of the agent
    /// (see [`crate::pidns`]); 0 until it starts.
    pub container_init: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl SessionConfig {
    /// The settings for the guest, after pivot_root.
    pub fn guest(hostname: Option<String>) -> SessionConfig {
        SessionConfig {
            root: PathBuf::from("/"),
            etc_dir: PathBuf::from("/etc"),
            hostname,
            exit_grace: Duration::from_millis(100),
            close_timeout: Duration::from_secs(5),
            handshake_timeout: Some(Duration::from_secs(10)),
            container_init: Default::default(),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The host left, or was refused, before starting a process: accept the next connection.
    NoProcess,
    /// The process could not start; `StartFailed` was sent.
    StartFailed,
    /// The process ran and ended; `Exited` was sent.
    Exited(ExitInfo),
    /// The host went away while the process ran; the process group was killed.
    HostGone,
}

/// A failure that ends the session. If a process was running it has been killed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection broke the protocol or failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A system call the session depends on failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> SessionError {
        SessionError::Protocol(ProtocolError::Io(e))
    }
}

/// Sets (or with `None` clears) SO_RCVTIMEO; a stream that is not a socket ignores it.
fn set_recv_timeout<S: AsFd>(stream: &S, timeout: Option<Duration>) {
    use nix::sys::socket::{setsockopt, sockopt};
    use nix::sys::time::TimeVal;
    let tv = timeout.map_or(TimeVal::new(0, 0), |d| {
        TimeVal::new(
            d.as_secs() as libc::time_t,
            d.subsec_micros() as libc::suseconds_t,
        )
    });
    let _ = setsockopt(stream, sockopt::ReceiveTimeout, &tv);
}

/// Serves one connection to its end.
pub fn serve<S: Read + Write + AsFd>(
    stream: S,
    config: &SessionConfig,
    reaper: &Reaper,
) -> Result<SessionOutcome, SessionError> {
    // A host that connects and then says nothing (or vanishes unseen: vhost-device-vsock does
    // not always report a host close) must not keep the agent from the next connection.
    set_recv_timeout(&stream, config.handshake_timeout);
    let mut conn = Conn::new(stream);
    match conn.recv() {
        Ok(Some(Frame::Control(HostMessage::Hello { version }))) if version == PROTOCOL_VERSION => {
            conn.send(&AgentMessage::Hello {
                version: PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
            })?;
        }
        Ok(Some(Frame::Control(HostMessage::Hello { version }))) => {
            return refuse(
                &mut conn,
                format!(
                    "unsupported protocol version {version}; this agent speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        Ok(Some(other)) => {
            return refuse(
                &mut conn,
                format!("expected hello, got {}", describe(&other)),
            );
        }
        Ok(None) => return Ok(SessionOutcome::NoProcess),
        Err(e) => return refuse(&mut conn, e.to_string()),
    }

    let mut window = None;
    let spec = loop {
        match conn.recv() {
            Ok(Some(Frame::Control(HostMessage::Start(spec)))) => break spec,
            Ok(Some(Frame::Control(HostMessage::NetworkUp(up)))) => {
                let answer = match network_up(&up, &config.etc_dir) {
                    Ok(()) => AgentMessage::Done,
                    Err(message) => AgentMessage::Error { message },
                };
                conn.send(&answer)?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::Export(req)))) => {
                export_changes(&mut conn, req)?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::Processes))) => {
                let processes = crate::procs::list(
                    std::path::Path::new("/proc"),
                    config
                        .container_init
                        .load(std::sync::atomic::Ordering::Relaxed),
                    &config.etc_dir,
                );
                conn.send(&AgentMessage::Processes { processes })?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::CopyOut(req)))) => {
                copy_out(&mut conn, &config.root, &req)?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::CopyIn(req)))) => {
                copy_in(&mut conn, &config.root, &req)?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::NetworkDown { mac }))) => {
                let answer = match MacAddr::parse(&mac)
                    .map_err(|e| format!("network_down: {e}"))
                    .and_then(|mac| crate::netdev::disconnect(mac).map_err(|e| e.to_string()))
                {
                    Ok(iface) => {
                        log_debug!("network down on {iface}");
                        AgentMessage::Done
                    }
                    Err(message) => AgentMessage::Error { message },
                };
                conn.send(&answer)?;
                conn.close(config.close_timeout);
                return Ok(SessionOutcome::NoProcess);
            }
            Ok(Some(Frame::Control(HostMessage::Resize { rows, cols }))) => {
                window = Some((rows, cols))
            }
            Ok(Some(other)) => {
                conn.send(&AgentMessage::Error {
                    message: format!("no process yet: {} ignored", describe(&other)),
                })?;
            }
            Ok(None) => return Ok(SessionOutcome::NoProcess),
            Err(e) => return refuse(&mut conn, e.to_string()),
        }
    };

    set_recv_timeout(&conn.stream, None);
    log_debug!("starting {:?} as user {:?}", spec.args, spec.user);
    let ctx = SpawnContext {
        etc_dir: &config.etc_dir,
        hostname: config.hostname.as_deref(),
        window,
        container_init: &config.container_init,
    };
    let spawned = match reaper.spawn_watched(|| spawn(&spec, &ctx), |s| s.pid) {
        Ok(spawned) => spawned,
        Err(e) => {
            log_debug!("start failed: {e}");
            conn.send(&AgentMessage::StartFailed {
                kind: e.kind(),
                message: e.to_string(),
            })?;
            conn.close(config.close_timeout);
            return Ok(SessionOutcome::StartFailed);
        }
    };
    let mut run = Running::new(spawned, spec.stdin);
    let started = conn.send(&AgentMessage::Started {
        pid: run.pid.as_raw(),
    });
    let result = match started.and_then(|()| run.forward(&mut conn, config, reaper)) {
        // Writing to a host that has gone is how a dead host shows up when the transport
        // did not report the close itself.
        Err(SessionError::Protocol(ProtocolError::Io(e)))
            if matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
            ) =>
        {
            log_debug!("host connection lost: {e}");
            Ok(SessionOutcome::HostGone)
        }
        other => other,
    };
    if !matches!(result, Ok(SessionOutcome::Exited(_))) {
        run.kill_and_wait(reaper);
    }
    result
}

/// Carries out a `network_up`: the interface, and the nameserver in `etc`/resolv.conf.
fn network_up(up: &mvm_agent_protocol::NetworkUp, etc: &std::path::Path) -> Result<(), String> {
    let mac = MacAddr::parse(&up.mac).map_err(|e| format!("network_up: {e}"))?;
    if !(1..=32).contains(&up.prefix) {
        return Err(format!("network_up: bad prefix length {}", up.prefix));
    }
    if let Some(mtu) = up.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(format!("network_up: bad MTU {mtu}"));
    }
    let iface = crate::netdev::connect(&NetConfig {
        mac,
        addr: up.address,
        prefix: up.prefix,
        gateway: up.gateway,
        mtu: up.mtu,
    })
    .map_err(|e| e.to_string())?;
    log_debug!("network up on {iface}: {}/{}", up.address, up.prefix);
    if let Some(dns) = up.dns {
        let path = etc.join("resolv.conf");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(
            &path,
            crate::boot::etc_files::replace_nameservers(&old, dns),
        )
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Streams the container's changes as `req` asks, then `Done`; or `Error` (the host drops
/// what it got).
fn export_changes<S: Read + Write + AsFd>(
    conn: &mut Conn<S>,
    req: mvm_agent_protocol::Export,
) -> Result<(), SessionError> {
    let frozen = crate::changes::Frozen::new(req.freeze);
    let result = {
        let mut sink = ChangesSink {
            conn: &mut *conn,
            buf: Vec::with_capacity(CHUNK),
        };
        crate::changes::export(req.what, &mut sink).and_then(|()| sink.flush())
    };
    drop(frozen);
    match result {
        Ok(()) => {
            conn.send_eof(Stream::Changes)?;
            conn.send(&AgentMessage::Done)
        }
        Err(e) => conn.send(&AgentMessage::Error {
            message: format!("exporting the container's changes: {e}"),
        }),
    }
}

/// `cp` out: the tar on `Changes` frames, their EOF and `Done`; or `CopyFailed`. A failure
/// after bytes went out is still `CopyFailed` (the host drops what it got).
fn copy_out<S: Read + Write + AsFd>(
    conn: &mut Conn<S>,
    root: &std::path::Path,
    req: &mvm_agent_protocol::CopyOut,
) -> Result<(), SessionError> {
    let result = {
        let mut sink = ChangesSink {
            conn: &mut *conn,
            buf: Vec::with_capacity(CHUNK),
        };
        crate::copy::copy_out(root, req, &mut sink).and_then(|()| sink.flush().map_err(Into::into))
    };
    match result {
        Ok(()) => {
            conn.send_eof(Stream::Changes)?;
            conn.send(&AgentMessage::Done)
        }
        Err(e) => conn.send(&AgentMessage::CopyFailed {
            kind: e.kind,
            message: e.message,
        }),
    }
}

/// `cp` in: the tar from `Stdin` frames until their EOF, then `Done` or `CopyFailed`.
fn copy_in<S: Read + Write + AsFd>(
    conn: &mut Conn<S>,
    root: &std::path::Path,
    req: &mvm_agent_protocol::CopyIn,
) -> Result<(), SessionError> {
    let result = {
        let input = StdinSource {
            conn: &mut *conn,
            buf: Vec::new(),
            pos: 0,
            ended: false,
        };
        crate::copy::copy_in(root, req, input)
    };
    match result {
        Ok(()) => conn.send(&AgentMessage::Done),
        Err(e) => conn.send(&AgentMessage::CopyFailed {
            kind: e.kind,
            message: e.message,
        }),
    }
}

/// Reads the bytes of `Stdin` data frames up to their EOF frame; anything else the host
/// sends meanwhile is an error.
struct StdinSource<'a, S> {
    conn: &'a mut Conn<S>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl<S: Read + Write + AsFd> Read for StdinSource<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self
                .conn
                .recv()
                .map_err(|e| io::Error::other(e.to_string()))?
            {
                Some(Frame::Data {
                    stream: Stream::Stdin,
                    data,
                }) => {
                    self.ended = data.is_empty();
                    self.buf = data;
                    self.pos = 0;
                }
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "unexpected {} in the copied archive",
                        describe(&other)
                    )));
                }
                None => return Err(io::Error::other("the host left mid-copy")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes into `Changes` data frames of up to [`CHUNK`] bytes.
struct ChangesSink<'a, S> {
    conn: &'a mut Conn<S>,
    buf: Vec<u8>,
}

impl<S: Read + Write + AsFd> Write for ChangesSink<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.conn
                .send_data(Stream::Changes, &self.buf)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Answers with an `Error`, lets the host read it, and gives up on this connection.
fn refuse<S: Read + Write + AsFd>(
    conn: &mut Conn<S>,
    message: String,
) -> Result<SessionOutcome, SessionError> {
    log_debug!("refusing connection: {message}");
    // Best effort: the host may already be gone.
    let _ = conn.send(&AgentMessage::Error { message });
    conn.close(Duration::from_secs(1));
    Ok(SessionOutcome::NoProcess)
}

fn describe(frame: &HostFrame) -> String {
    match frame {
        Frame::Control(HostMessage::Hello { .. }) => "hello".into(),
        Frame::Control(HostMessage::Start(_)) => "start".into(),
        Frame::Control(HostMessage::Signal { .. }) => "signal".into(),
        Frame::Control(HostMessage::Resize { .. }) => "resize".into(),
        Frame::Control(HostMessage::NetworkUp(_)) => "network_up".into(),
        Frame::Control(HostMessage::NetworkDown { .. }) => "network_down".into(),
        Frame::Control(HostMessage::Export(_)) => "export".into(),
        Frame::Control(HostMessage::CopyOut(_)) => "copy_out".into(),
        Frame::Control(HostMessage::CopyIn(_)) => "copy_in".into(),
        Frame::Control(HostMessage::Processes) => "processes".into(),
        Frame::Control(HostMessage::Unknown) => "a message of unknown type".into(),
        Frame::Data { stream, .. } => format!("{stream:?} data"),
    }
}

/// The connection: frames in through a decoder, frames out with blocking writes.
///
/// Writes block on purpose: a host that does not read makes the agent stop reading the
/// process's output, which makes the process block on its writes.
struct Conn<S> {
    stream: S,
    decoder: FrameDecoder,
    out: Vec<u8>,
    eof: bool,
}

impl<S: Read + Write + AsFd> Conn<S> {
    fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            decoder: FrameDecoder::new(),
            out: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, msg: &AgentMessage) -> Result<(), SessionError> {
        self.out.clear();
        encode_control(msg, &mut self.out)?;
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    fn send_data(&mut self, stream: Stream, data: &[u8]) -> Result<(), SessionError> {
        self.out.clear();
        encode_data(stream, data, &mut self.out);
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    fn send_eof(&mut self, stream: Stream) -> Result<(), SessionError> {
        self.out.clear();
        encode_eof(stream, &mut self.out);
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    /// One read from the stream into the decoder. Call only when it is readable (or when
    /// blocking is fine).
    fn fill(&mut self) -> Result<(), SessionError> {
        let mut buf = [0u8; CHUNK];
        match self.stream.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.decoder.push(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The next frame, blocking; `None` when the host closed the connection. A malformed
    /// control message is answered with `Error` and skipped.
    fn recv(&mut self) -> Result<Option<HostFrame>, SessionError> {
        loop {
            match self.decoder.next_frame::<HostMessage>() {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) if e.is_recoverable() => {
                    self.send(&AgentMessage::Error {
                        message: e.to_string(),
                    })?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if self.eof {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// After `Exited`: serves an `Export` if the host sends one before closing (within
    /// `timeout`), then closes.
    fn after_exit(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.next_frame::<HostMessage>() {
                Ok(Some(Frame::Control(HostMessage::Export(req)))) => {
                    export_changes(self, req)?;
                    break;
                }
                // Stdin, signals and resizes for a process that is gone.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => break,
            }
            if self.eof {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout_ms(left)) {
                Ok(0) => {}
                Ok(_) => self.fill()?,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        self.close(timeout);
        Ok(())
    }

    /// Ends our side: no more frames from us, then wait (bounded) for the host to close its
    /// side, discarding whatever it still sends.
    fn close(&mut self, timeout: Duration) {
        let _ = self.stream.flush();
        // SAFETY: shutdown on a descriptor the stream owns; on a non-socket it fails with
        // ENOTSOCK, which is fine to ignore.
        unsafe { libc::shutdown(self.stream.as_fd().as_raw_fd(), libc::SHUT_WR) };
        let deadline = Instant::now() + timeout;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log_debug!("host did not close the connection in time");
                return;
            }
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout_ms(left)) {
                Ok(0) => {}
                Ok(_) => {
                    if self.fill().is_err() {
                        return;
                    }
                    // Nothing more is acted on; keep the buffer from growing.
                    self.decoder = FrameDecoder::new();
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// One output stream of the process.
struct Output {
    fd: Option<OwnedFd>,
    stream: Stream,
    eof_sent: bool,
}

/// The running process and its stdio.
struct Running {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    exit: Option<(ExitInfo, Instant)>,
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    stdin_eof: bool,
    pty: Option<OwnedFd>,
    outputs: [Output; 2],
}

impl Running {
    fn new(spawned: Spawned, stdin_attached: bool) -> Running {
        let pidfd = match pidfd_open(spawned.pid) {
            Ok(fd) => Some(fd),
            Err(e) => {
                // An old kernel: fall back to polling with a timeout.
                log_debug!("pidfd_open: {e}");
                None
            }
        };
        Running {
            pid: spawned.pid,
            pidfd,
            exit: None,
            stdin: if stdin_attached { spawned.stdin } else { None },
            stdin_pending: Vec::new(),
            stdin_eof: false,
            pty: spawned.pty,
            outputs: [
                Output {
                    eof_sent: spawned.stdout.is_none(),
                    fd: spawned.stdout,
                    stream: Stream::Stdout,
                },
                Output {
                    eof_sent: false,
                    fd: spawned.stderr,
                    stream: Stream::Stderr,
                },
            ],
        }
    }

    fn forward<S: Read + Write + AsFd>(
        &mut self,
        conn: &mut Conn<S>,
        config: &SessionConfig,
        reaper: &Reaper,
    ) -> Result<SessionOutcome, SessionError> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Frames already received, unless the process is not taking its stdin.
            while self.stdin_pending.len() < STDIN_HIGH_WATER {
                match conn.decoder.next_frame::<HostMessage>() {
                    Ok(Some(frame)) => self.handle_frame(frame, conn)?,
                    Ok(None) => break,
                    Err(e) if e.is_recoverable() => conn.send(&AgentMessage::Error {
                        message: e.to_string(),
                    })?,
                    Err(e) => return Err(e.into()),
                }
            }
            if conn.eof {
                log_debug!("host closed the connection while the process ran");
                return Ok(SessionOutcome::HostGone);
            }
            self.write_stdin();

            if self.exit.is_none()
                && let Some(info) = reaper.reap(self.pid)
            {
                log_debug!("process {} exited: {info:?}", self.pid);
                self.exit = Some((info, Instant::now()));
            }
            let mut timeout = PollTimeout::NONE;
            if let Some((info, at)) = self.exit {
                let left = (at + config.exit_grace).saturating_duration_since(Instant::now());
                if self.outputs.iter().all(|o| o.fd.is_none()) || left.is_zero() {
                    return self.finish(conn, info, config);
                }
                timeout = timeout_ms(left);
            } else if self.pidfd.is_none() && reaper.wake_fd().is_none() {
                timeout = PollTimeout::from(50u16);
            }

            // Poll, then act on the readiness once the borrows of the descriptors are over.
            let (conn_ready, out_ready, stdin_ready, wake_ready) = {
                let mut fds = Vec::with_capacity(6);
                let want_conn = self.stdin_pending.len() < STDIN_HIGH_WATER;
                let conn_idx = want_conn.then(|| {
                    fds.push(PollFd::new(conn.stream.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                let mut out_idx = [None, None];
                for (i, out) in self.outputs.iter().enumerate() {
                    if let Some(fd) = &out.fd {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                        out_idx[i] = Some(fds.len() - 1);
                    }
                }
                let stdin_idx = match &self.stdin {
                    Some(fd) if !self.stdin_pending.is_empty() => {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                        Some(fds.len() - 1)
                    }
                    _ => None,
                };
                let mut wake_fds: Vec<BorrowedFd<'_>> = Vec::new();
                if self.exit.is_none()
                    && let Some(fd) = &self.pidfd
                {
                    wake_fds.push(fd.as_fd());
                }
                if let Some(fd) = reaper.wake_fd() {
                    wake_fds.push(fd);
                }
                let wake_start = fds.len();
                for fd in wake_fds {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        return Err(SessionError::Io {
                            what: "poll",
                            source: e.into(),
                        });
                    }
                }
                let ready = |idx: Option<usize>| {
                    idx.and_then(|i| fds[i].revents())
                        .is_some_and(|r| !r.is_empty())
                };
                (
                    ready(conn_idx),
                    [ready(out_idx[0]), ready(out_idx[1])],
                    ready(stdin_idx),
                    (wake_start..fds.len()).any(|i| ready(Some(i))),
                )
            };

            if wake_ready {
                reaper.drain_wake();
            }
            if conn_ready {
                conn.fill()?;
            }
            for (i, ready) in out_ready.into_iter().enumerate() {
                if ready {
                    self.read_output(i, &mut buf, conn)?;
                }
            }
            if stdin_ready {
                self.write_stdin();
            }
        }
    }

    fn handle_frame<S: Read + Write + AsFd>(
        &mut self,
        frame: HostFrame,
        conn: &mut Conn<S>,
    ) -> Result<(), SessionError> {
        match frame {
            Frame::Data {
                stream: Stream::Stdin,
                data,
            } => {
                if self.stdin.is_none() || self.stdin_eof {
                    // Not attached, or the process closed it: nobody to give it to.
                } else if data.is_empty() {
                    self.stdin_eof = true;
                } else {
                    self.stdin_pending.extend_from_slice(&data);
                }
            }
            Frame::Control(HostMessage::Signal { signal }) => {
                if !(1..=64).contains(&signal) {
                    conn.send(&AgentMessage::Error {
                        message: format!("invalid signal number {signal}"),
                    })?;
                } else if self.exit.is_none() {
                    // SAFETY: kill(2) with integers. The PID is ours and not yet reaped, so it
                    // cannot have been reused.
                    if unsafe { libc::kill(self.pid.as_raw(), signal) } < 0 {
                        log_debug!("kill {signal}: {}", io::Error::last_os_error());
                    }
                }
            }
            Frame::Control(HostMessage::Resize { rows, cols }) => {
                if let Some(pty) = &self.pty
                    && let Err(e) = set_window_size(pty.as_fd(), rows, cols)
                {
                    log_debug!("resize: {e}");
                }
            }
            other => {
                conn.send(&AgentMessage::Error {
                    message: format!("unexpected {} while the process runs", describe(&other)),
                })?;
            }
        }
        Ok(())
    }

    /// Moves pending stdin into the process as far as it takes it without blocking.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        while !self.stdin_pending.is_empty() {
            match nix::unistd::write(fd, &self.stdin_pending) {
                Ok(n) => {
                    self.stdin_pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    // EPIPE: the process closed its stdin; what is left has no reader.
                    log_debug!("stdin: {e}");
                    self.stdin = None;
                    self.stdin_pending.clear();
                    self.stdin_eof = true;
                    return;
                }
            }
        }
        // The end of stdin is closing the pipe. A terminal has no such thing: closing the
        // master would hang up the process, so a terminal's stdin just goes quiet.
        if self.stdin_eof && self.pty.is_none() {
            self.stdin = None;
        }
    }

    fn read_output<S: Read + Write + AsFd>(
        &mut self,
        i: usize,
        buf: &mut [u8],
        conn: &mut Conn<S>,
    ) -> Result<(), SessionError> {
        let out = &mut self.outputs[i];
        let Some(fd) = &out.fd else { return Ok(()) };
        match nix::unistd::read(fd, buf) {
            Ok(0) => {}
            Ok(n) => return conn.send_data(out.stream, &buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(()),
            // EIO: every holder of the PTY slave has closed it, a terminal's EOF.
            Err(Errno::EIO) => {}
            Err(e) => log_error!("reading process {:?}: {e}", out.stream),
        }
        out.fd = None;
        out.eof_sent = true;
        conn.send_eof(out.stream)
    }

    fn finish<S: Read + Write + AsFd>(
        &mut self,
        conn: &mut Conn<S>,
        info: ExitInfo,
        config: &SessionConfig,
    ) -> Result<SessionOutcome, SessionError> {
        // Descendants that kept the pipes open lose their voice here.
        for out in &mut self.outputs {
            out.fd = None;
            if !out.eof_sent {
                out.eof_sent = true;
                conn.send_eof(out.stream)?;
            }
        }
        conn.send(&AgentMessage::Exited {
            code: info.code,
            signal: info.signal,
        })?;
        // The container ends with its main process, as in Docker: the rest of its process
        // group goes too (as PID 1 the agent then kills everything else before powering off).
        self.kill_group();
        // A build step's host asks for the changes now, before the VM ends; any other host
        // just closes.
        conn.after_exit(config.close_timeout)?;
        Ok(SessionOutcome::Exited(info))
    }

    fn kill_group(&self) {
        // SAFETY: kill(2) with integers. A negative PID names the process group the child
        // created with setsid; if it is empty the call fails with ESRCH, which is fine.
        unsafe { libc::kill(-self.pid.as_raw(), libc::SIGKILL) };
    }

    /// Kills the process and its group and waits (bounded) for the process to be reaped, so
    /// that nothing of this session outlives it.
    fn kill_and_wait(&mut self, reaper: &Reaper) {
        self.kill_group();
        if self.exit.is_some() {
            return;
        }
        // SAFETY: as above; the PID is not reaped yet, so it is still our child.
        unsafe { libc::kill(self.pid.as_raw(), libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(info) = reaper.reap(self.pid) {
                self.exit = Some((info, Instant::now()));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log_error!("process {} did not die after SIGKILL", self.pid);
    }
}

fn timeout_ms(d: Duration) -> PollTimeout {
    // Round up so that a sub-millisecond remainder does not spin with a zero timeout.
    PollTimeout::try_from(d.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
}

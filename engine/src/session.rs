//! The host's side of a session with the agent: reach it through the VM's hybrid vsock
//! socket, run one process, and pump its stdio and signals until it exits.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mvm_agent_protocol::{
    AgentMessage, Frame, FrameReader, FrameWriter, HostMessage, ProcessSpec, ProtocolError, Stream,
    container_exit_code, host_handshake,
};
use nix::sys::signal::{SigSet, Signal};

use crate::backend::VmHandle;
use crate::logs::LogWriter;

/// How the session ended or failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The VM ended before the agent answered.
    #[error("the microVM exited before its agent was ready{0}")]
    VmExited(String),
    /// The agent did not answer in time.
    #[error("timed out after {0:?} waiting for the microVM's agent")]
    Timeout(Duration),
    /// Protocol failure.
    #[error("agent: {0}")]
    Protocol(#[from] ProtocolError),
    /// The process could not be started; carries Docker's exit code.
    #[error("{message}")]
    StartFailed {
        /// 125, 126 or 127.
        code: i32,
        /// The agent's reason.
        message: String,
    },
    /// Host-side I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A build step's changes could not be had.
    #[error("cannot read the container's changes: {0}")]
    Changes(String),
}

/// Waits for the agent's own connection to host port `port` (the agent connects once it is
/// ready), until the VM dies or `timeout` passes.
pub fn accept_agent(
    vm: &mut VmHandle,
    listener: &UnixListener,
    timeout: Duration,
    console: &Path,
) -> Result<UnixStream, SessionError> {
    use std::os::fd::AsFd;
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = vm.try_wait() {
            return Err(vm_exited(vm, status, console));
        }
        if let Some(why) = vm.helper_died() {
            vm.kill();
            return Err(SessionError::VmExited(format!(": {why}")));
        }
        if Instant::now() >= deadline {
            return Err(SessionError::Timeout(timeout));
        }
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u8));
    }
}

fn vm_exited(vm: &mut VmHandle, status: std::process::ExitStatus, console: &Path) -> SessionError {
    // Reaps the helpers and waits for the logs' last bytes.
    vm.kill();
    // The guest kernel's own reason first (its panic line is rarely its last line), then the
    // hypervisor's last word, then whatever the console said last.
    let mut why = crate::backend::console_panic(console).unwrap_or_default();
    if why.is_empty() {
        why = vm.log_tail();
    }
    if why.is_empty() {
        why = crate::backend::log_tail(console);
    }
    SessionError::VmExited(if why.is_empty() {
        format!(" ({status})")
    } else {
        format!(": {why}")
    })
}

/// Connects to guest port `port` through the VM's hybrid-vsock socket (`CONNECT`, `OK`).
pub fn connect_guest(uds: &Path, port: u32, timeout: Duration) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let line = read_line_unbuffered(&mut s, 64)?;
    if !line.starts_with(b"OK ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the guest agent refused the connection",
        ));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Reads one line (without its newline) of at most `max` bytes, byte by byte: what follows
/// the newline on the stream (a handshake's data, frames) is left unread for its reader.
/// Stops early at end of stream.
pub fn read_line_unbuffered(s: &mut impl Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8];
    while line.len() < max {
        match s.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(line)
}

/// Signals `mvm run` forwards to the container's process, as Docker's sig-proxy does.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// How the process's stdio is wired.
pub struct Stdio {
    /// Forward our stdin.
    pub stdin: bool,
    /// The process's stdin is open to `mvm attach` clients (created with `-i`).
    pub open_stdin: bool,
    /// A terminal (`-t`).
    pub tty: bool,
    /// Copy the output to our stdout and stderr (`mvm run` without `-d`).
    pub attached: bool,
    /// A build step: when the process exits with 0, ask the agent for the container's
    /// changes as a layer tar and write it to this file before the VM ends.
    pub export_layer: Option<std::path::PathBuf>,
}

type SharedWriter = Arc<Mutex<FrameWriter<UnixStream>>>;

/// What the control socket's `networks` request runs in the container's owner: bring its
/// host side (DNS servers) in line with the record after `network connect`/`disconnect`.
pub type NetworksHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

fn send(writer: &SharedWriter, msg: &HostMessage) -> Result<(), ProtocolError> {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.write_control(msg)?;
    w.flush()
}

/// Runs `spec` over `stream`; returns the container's exit code. The caller has blocked
/// [`forwarded_signals`] in every thread so the forwarding thread can take them with sigwait.
pub fn run_process(
    stream: UnixStream,
    spec: ProcessSpec,
    stdio: Stdio,
    mut log: Option<LogWriter>,
    control: Option<(UnixListener, NetworksHook)>,
    on_started: impl FnOnce(),
) -> Result<i32, SessionError> {
    let control_stream = stream.try_clone()?;
    let mut reader = FrameReader::new(BufReader::new(stream.try_clone()?));
    let mut writer = FrameWriter::new(stream);
    host_handshake(&mut reader, &mut writer)?;
    let writer: SharedWriter = Arc::new(Mutex::new(writer));
    if stdio.tty
        && let Some((rows, cols)) = crate::terminal::size()
    {
        send(&writer, &HostMessage::Resize { rows, cols })?;
    }
    send(&writer, &HostMessage::Start(spec))?;

    // Until Started, nothing else is sent.
    match reader.read_frame::<AgentMessage>()? {
        Some(Frame::Control(AgentMessage::Started { .. })) => on_started(),
        Some(Frame::Control(AgentMessage::StartFailed { kind, message })) => {
            return Err(SessionError::StartFailed {
                code: kind.exit_code(),
                message,
            });
        }
        Some(Frame::Control(AgentMessage::Error { message })) => {
            return Err(SessionError::Protocol(ProtocolError::Rejected(message)));
        }
        Some(other) => {
            return Err(SessionError::Protocol(ProtocolError::Unexpected(format!(
                "{other:?} before the process started"
            ))));
        }
        None => return Err(SessionError::Protocol(ProtocolError::Closed)),
    }

    if stdio.stdin {
        let w = writer.clone();
        std::thread::spawn(move || pump_stdin(&w));
    }
    let stop_signals = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = {
        let w = writer.clone();
        let tty = stdio.tty;
        let stop = stop_signals.clone();
        std::thread::spawn(move || forward_signals(&w, tty, &stop))
    };
    let attachers = Attachers::default();
    let mut cleanup = SessionCleanup {
        signals: Some((signals, stop_signals)),
        control: None,
        attachers: attachers.clone(),
    };
    if let Some((listener, on_networks)) = control {
        cleanup.control = listener.try_clone().ok();
        let ctl = Control {
            writer: writer.clone(),
            attachers: attachers.clone(),
            open_stdin: stdio.open_stdin,
            tty: stdio.tty,
            on_networks,
        };
        std::thread::spawn(move || serve_control(&listener, &ctl));
    }

    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        match reader.read_frame::<AgentMessage>()? {
            Some(Frame::Data {
                stream: Stream::Stdout,
                data,
            }) => {
                if let Some(log) = log.as_mut()
                    && let Err(e) = log.write(false, &data)
                {
                    tracing::warn!("cannot write the container log: {e}");
                }
                if stdio.attached {
                    let mut out = stdout.lock();
                    // A closed stdout (`| head`) must not stop the container's other output.
                    let _ = out.write_all(&data).and_then(|()| out.flush());
                }
                attachers.send(Stream::Stdout, data);
            }
            Some(Frame::Data {
                stream: Stream::Stderr,
                data,
            }) => {
                if let Some(log) = log.as_mut()
                    && let Err(e) = log.write(true, &data)
                {
                    tracing::warn!("cannot write the container log: {e}");
                }
                if stdio.attached {
                    let mut err = stderr.lock();
                    let _ = err.write_all(&data).and_then(|()| err.flush());
                }
                attachers.send(Stream::Stderr, data);
            }
            Some(Frame::Data { .. }) => {}
            Some(Frame::Control(AgentMessage::Exited { code, signal })) => {
                if let Some(log) = log.as_mut() {
                    let _ = log.flush();
                }
                attachers.end(AgentMessage::Exited { code, signal });
                let exit = container_exit_code(code, signal);
                if exit == 0
                    && let Some(path) = &stdio.export_layer
                {
                    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                    export_layer_to(&mut reader, &mut w, path)?;
                }
                // Closing tells the agent we have everything; it then powers the VM off.
                let _ = control_stream.shutdown(std::net::Shutdown::Both);
                return Ok(exit);
            }
            Some(Frame::Control(AgentMessage::Error { message })) => {
                // The agent may be hostile: a line of bounded length (the monitor's log is
                // rate-limited as well).
                tracing::warn!("agent: {}", crate::logfile::clip(&message, 512));
            }
            Some(Frame::Control(other)) => {
                let shown = format!("{other:?}");
                tracing::debug!(
                    "ignoring agent message {}",
                    crate::logfile::clip(&shown, 256)
                );
            }
            None => {
                attachers.end(AgentMessage::Error {
                    message: "the connection to the container's agent was lost".into(),
                });
                return Err(SessionError::Protocol(ProtocolError::Closed));
            }
        }
    }
}

/// Ends what [`run_process`] started for one session, however it returns: a monitor runs
/// one session per restart of its container, and a session that ended (an agent that broke
/// the protocol, say) must not leave its signal-forwarding and control threads behind, each
/// holding a listener and the old connection: a guest that fails its session every few
/// seconds under `--restart always` would grow the monitor's threads and descriptors
/// without bound.
struct SessionCleanup {
    signals: Option<(
        std::thread::JoinHandle<()>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
    /// A handle on the control socket's listener, to wake its accept.
    control: Option<UnixListener>,
    attachers: Attachers,
}

impl Drop for SessionCleanup {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        use std::os::unix::thread::JoinHandleExt;
        // Clients still attached get a last word (after `Exited` this changes nothing).
        self.attachers.end(AgentMessage::Error {
            message: "the session with the container's agent ended".into(),
        });
        if let Some(listener) = &self.control {
            // A listening socket shut down for reading fails its accept (EINVAL), which ends
            // serve_control's loop.
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        }
        if let Some((thread, stop)) = self.signals.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: pthread_kill on a thread we hold the JoinHandle of (not yet joined or
            // detached, so its pthread_t is valid even if it has exited). SIGWINCH is in the
            // set every thread blocks, so it stays pending on that thread until its sigwait
            // takes it, sees `stop` and returns.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGWINCH) };
            // Not joined: the thread may be waiting for the writer's lock behind a write to
            // an agent that does not read; it ends once that write fails.
            drop(thread);
        }
    }
}

/// The changes of a build step's container, asked for after its process exited: to a
/// temporary file, renamed to `path` once the agent said they are complete.
fn export_layer_to(
    reader: &mut FrameReader<BufReader<UnixStream>>,
    writer: &mut FrameWriter<UnixStream>,
    path: &Path,
) -> Result<(), SessionError> {
    let tmp = path.with_extension("part");
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        crate::changes::request_export(
            reader,
            writer,
            mvm_agent_protocol::Export {
                what: mvm_agent_protocol::ExportKind::Layer,
                freeze: false,
            },
            &mut out,
        )?;
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, path)?;
        Ok::<(), crate::changes::ChangesError>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(SessionError::Changes(e.to_string()));
    }
    Ok(())
}

/// Output bytes queued for one `mvm attach` client before it counts as stuck and is
/// dropped: a client that does not read must not hold up the container nor make the monitor
/// hold what the guest writes.
const ATTACH_QUEUE_BYTES: usize = 4 << 20;
/// Frames queued for one client (a bound on small frames, which the byte count does not
/// catch).
const ATTACH_QUEUE_FRAMES: usize = 1024;
/// `mvm attach` clients of one container at a time (two threads each).
const MAX_ATTACHED: usize = 32;

/// The `mvm attach` clients of a running process: each gets its output from the moment it
/// attached, then how it ended.
#[derive(Clone, Default)]
struct Attachers(Arc<Mutex<AttachList>>);

/// One client's queue: its frames and how many output bytes are in it.
struct AttachClient {
    tx: std::sync::mpsc::SyncSender<Frame<AgentMessage>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Its connection, shut down when it is dropped for not reading.
    conn: UnixStream,
}

impl AttachClient {
    /// Drops a client that does not read. Taking it off the list is not enough: its writer
    /// thread sits in a write to the client's full socket, holding up to a queue of frames,
    /// and its reader thread waits for input; both stay as long as the client does, so a
    /// client attaching again and again without reading would pile them up. Shutting the
    /// connection down fails that write and ends that read.
    fn drop_stuck(&self) {
        tracing::warn!("dropping an attached client that does not read its output");
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Default)]
struct AttachList {
    clients: Vec<AttachClient>,
    /// The process ended: no more clients.
    ended: bool,
}

/// Why a client was not added.
enum AttachRefused {
    Ended,
    TooMany,
}

impl Attachers {
    /// Adds a client with its queue's byte count.
    fn add(
        &self,
        tx: std::sync::mpsc::SyncSender<Frame<AgentMessage>>,
        queued: Arc<std::sync::atomic::AtomicUsize>,
        conn: UnixStream,
    ) -> Result<(), AttachRefused> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if list.ended {
            return Err(AttachRefused::Ended);
        }
        if list.clients.len() >= MAX_ATTACHED {
            return Err(AttachRefused::TooMany);
        }
        list.clients.push(AttachClient { tx, queued, conn });
        Ok(())
    }

    fn broadcast(list: &mut AttachList, frame: &Frame<AgentMessage>) {
        use std::sync::atomic::Ordering;
        use std::sync::mpsc::TrySendError;
        let bytes = match frame {
            Frame::Data { data, .. } => data.len(),
            Frame::Control(_) => 0,
        };
        list.clients.retain(|c| {
            if c.queued.load(Ordering::Relaxed) + bytes > ATTACH_QUEUE_BYTES {
                c.drop_stuck();
                return false;
            }
            match c.tx.try_send(frame.clone()) {
                Ok(()) => {
                    c.queued.fetch_add(bytes, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    c.drop_stuck();
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Output for every client.
    fn send(&self, stream: Stream, data: Vec<u8>) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !list.clients.is_empty() {
            Self::broadcast(&mut list, &Frame::Data { stream, data });
        }
    }

    /// The last message for every client; their connections then close.
    fn end(&self, last: AgentMessage) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::broadcast(&mut list, &Frame::Control(last));
        list.clients.clear();
        list.ended = true;
    }
}

/// What the control socket serves.
struct Control {
    writer: SharedWriter,
    attachers: Attachers,
    open_stdin: bool,
    tty: bool,
    on_networks: NetworksHook,
}

/// Serves the control socket: `signal N` lines from `mvm kill` and `mvm stop`, and `attach`
/// from `mvm attach`, after which the connection carries frames: the process's output to the
/// client, its stdin, signals and terminal size from it.
fn serve_control(listener: &UnixListener, ctl: &Control) {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            // The session is over: SessionCleanup shut the listener down.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(_) => continue,
        };
        // A client that never sends its request must not hold up the next one.
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        // After an `attach` line the frames follow on the same stream. A request cut short
        // by the timeout is no request (not a truncated `signal` number).
        let line = read_line_unbuffered(&mut &conn, 64).unwrap_or_default();
        let line = String::from_utf8_lossy(&line);
        let answer = match line.trim().split_once(' ').unwrap_or((line.trim(), "")) {
            ("signal", n) => match n.parse::<i32>() {
                Ok(signal) if (1..=64).contains(&signal) => {
                    match send(&ctl.writer, &HostMessage::Signal { signal }) {
                        Ok(()) => "ok\n".to_string(),
                        Err(e) => format!("error {e}\n"),
                    }
                }
                _ => "error bad signal\n".to_string(),
            },
            ("networks", _) => match (ctl.on_networks)() {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!("error {e}\n"),
            },
            ("attach", _) => match attach_client(conn.try_clone(), ctl) {
                Ok(()) => continue,
                Err(e) => format!("error {e}\n"),
            },
            _ => "error unknown request\n".to_string(),
        };
        let _ = (&conn).write_all(answer.as_bytes());
    }
}

/// Takes on one `mvm attach` client: a thread writes it the output, another reads its input.
fn attach_client(conn: std::io::Result<UnixStream>, ctl: &Control) -> Result<(), String> {
    let conn = conn.map_err(|e| e.to_string())?;
    let out = conn.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Frame<AgentMessage>>(ATTACH_QUEUE_FRAMES);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Registered before the answer: nothing written after `ok` can be lost, and a process
    // that has ended is refused with an `error` line instead.
    let handle = conn.try_clone().map_err(|e| e.to_string())?;
    match ctl.attachers.add(tx, queued.clone(), handle) {
        Ok(()) => {}
        Err(AttachRefused::Ended) => return Err("the container's process has ended".into()),
        Err(AttachRefused::TooMany) => {
            return Err(format!(
                "too many clients attached ({MAX_ATTACHED}): detach one first"
            ));
        }
    }
    (&conn)
        .write_all(b"ok\n")
        .map_err(|e| format!("cannot answer: {e}"))?;
    std::thread::spawn(move || {
        let mut w = FrameWriter::new(std::io::BufWriter::new(&out));
        // Ends when the process ended (after its last message) or the client was dropped.
        for frame in rx {
            if let Frame::Data { data, .. } = &frame {
                queued.fetch_sub(data.len(), std::sync::atomic::Ordering::Relaxed);
            }
            if w.write_frame(&frame).and_then(|()| w.flush()).is_err() {
                break;
            }
        }
        drop(w);
        let _ = out.shutdown(std::net::Shutdown::Write);
    });
    let writer = ctl.writer.clone();
    let (open_stdin, tty) = (ctl.open_stdin, ctl.tty);
    std::thread::spawn(move || {
        let _ = conn.set_read_timeout(None);
        let mut r = FrameReader::new(BufReader::new(&conn));
        loop {
            let forwarded = match r.read_frame::<HostMessage>() {
                Ok(Some(Frame::Data {
                    stream: Stream::Stdin,
                    data,
                })) if open_stdin && !data.is_empty() => {
                    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                    w.write_data(Stream::Stdin, &data).and_then(|()| w.flush())
                }
                // As Docker's detached `-i` containers: one client's end of input does not
                // close the process's stdin for the next.
                Ok(Some(Frame::Data { .. })) => Ok(()),
                Ok(Some(Frame::Control(HostMessage::Signal { signal })))
                    if (1..=64).contains(&signal) =>
                {
                    send(&writer, &HostMessage::Signal { signal })
                }
                Ok(Some(Frame::Control(HostMessage::Resize { rows, cols }))) if tty => {
                    send(&writer, &HostMessage::Resize { rows, cols })
                }
                Ok(Some(Frame::Control(_))) => Ok(()),
                Ok(None) | Err(_) => return,
            };
            if forwarded.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Asks the process owning a container to signal it, through its control socket.
pub fn request_signal(control: &Path, signal: i32) -> Result<(), String> {
    request(control, &format!("signal {signal}"))
}

/// Sends one request line to the container's owner and returns when it answered `ok`.
pub fn request(control: &Path, line: &str) -> Result<(), String> {
    use std::io::BufRead;
    let mut s =
        UnixStream::connect(control).map_err(|e| format!("cannot reach the container: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.trim() == "ok" {
        Ok(())
    } else {
        Err(answer.trim().trim_start_matches("error ").to_string())
    }
}

fn pump_stdin(writer: &SharedWriter) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        let result = if n == 0 {
            w.write_eof(Stream::Stdin)
        } else {
            w.write_data(Stream::Stdin, &buf[..n])
        };
        if result.and_then(|()| w.flush()).is_err() || n == 0 {
            return;
        }
    }
}

fn forward_signals(writer: &SharedWriter, tty: bool, stop: &std::sync::atomic::AtomicBool) {
    let set = forwarded_signals();
    while let Ok(sig) = set.wait() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let msg = if sig == Signal::SIGWINCH {
            if !tty {
                continue;
            }
            match crate::terminal::size() {
                Some((rows, cols)) => HostMessage::Resize { rows, cols },
                None => continue,
            }
        } else {
            HostMessage::Signal { signal: sig as i32 }
        };
        if send(writer, &msg).is_err() {
            return;
        }
    }
}

//! `mvm attach`: a running container's output from now on, and, for a container created with
//! `-i`, its stdin; signals (`--sig-proxy`) and the terminal's size go along. It talks to the
//! container's owner (monitor or attached `run`) through the control socket: an `attach`
//! line, `ok`, then frames of the agent protocol both ways (session.rs serves it).

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mvm_agent_protocol::{
    AgentMessage, Frame, FrameReader, FrameWriter, HostMessage, Stream, container_exit_code,
};
use nix::sys::signal::{SigSet, Signal};

use crate::error::CliError;
use mvm_engine::container::{self, Status};

/// Docker's default sequence that detaches a client and leaves the container running.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// `mvm attach`'s flags.
pub struct AttachOptions {
    /// Forward the signals we receive to the process (not with a terminal: there ^C is a key).
    pub sig_proxy: bool,
    /// Do not forward our stdin.
    pub no_stdin: bool,
    /// The detach sequence, Docker's notation.
    pub detach_keys: Option<String>,
}

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError::with_code(1, msg.to_string())
}

/// Parses Docker's detach-key notation: comma-separated single characters or `ctrl-X` with X
/// one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    let bad = |k: &str| {
        format!("invalid detach keys {spec:?}: {k:?} is not a key (use e.g. ctrl-p,ctrl-q)")
    };
    let mut keys = Vec::new();
    for k in spec.split(',') {
        let b = k.as_bytes();
        match b {
            [c] if c.is_ascii() => keys.push(*c),
            _ => {
                let Some(rest) = k.strip_prefix("ctrl-") else {
                    return Err(bad(k));
                };
                match rest.as_bytes() {
                    [c @ b'a'..=b'z'] => keys.push(c - b'a' + 1),
                    [c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => keys.push(c & 0x1f),
                    _ => return Err(bad(k)),
                }
            }
        }
    }
    if keys.is_empty() {
        return Err(bad(""));
    }
    Ok(keys)
}

/// Finds the detach sequence in a stream of input, across reads.
struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// The bytes of `input` to forward; `true` when the sequence is complete (what followed it
    /// is dropped, as Docker does).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
            } else {
                // A partial match that broke off was input after all.
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        false
    }
}

type Writer = Arc<Mutex<FrameWriter<UnixStream>>>;

fn send(
    w: &Writer,
    f: impl FnOnce(&mut FrameWriter<UnixStream>) -> Result<(), mvm_agent_protocol::ProtocolError>,
) -> bool {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut w).and_then(|()| w.flush()).is_ok()
}

/// `mvm attach CONTAINER`.
pub fn attach(root: &Path, key: &str, opts: &AttachOptions) -> Result<i32, CliError> {
    let keys = parse_detach_keys(opts.detach_keys.as_deref().unwrap_or(DEFAULT_DETACH_KEYS))
        .map_err(CliError::usage)?;
    let (dirs, rec, conn) = container::attach::open(root, key)?;
    let writer: Writer = Arc::new(Mutex::new(FrameWriter::new(
        conn.try_clone().map_err(failed)?,
    )));
    let stdin_on = rec.spec.interactive && !opts.no_stdin;
    let tty = rec.spec.tty;

    // With a terminal, ^C is a key for the process; without, --sig-proxy forwards signals.
    let proxy = opts.sig_proxy && !tty;
    let mut set = if proxy {
        mvm_engine::session::forwarded_signals()
    } else {
        SigSet::empty()
    };
    set.add(Signal::SIGWINCH);
    set.thread_block()
        .map_err(|e| failed(format!("cannot block signals: {e}")))?;
    {
        let w = writer.clone();
        std::thread::spawn(move || {
            while let Ok(sig) = set.wait() {
                let ok = if sig == Signal::SIGWINCH {
                    match mvm_engine::terminal::size() {
                        Some((rows, cols)) if tty => {
                            send(&w, |w| w.write_control(&HostMessage::Resize { rows, cols }))
                        }
                        _ => true,
                    }
                } else {
                    send(&w, |w| {
                        w.write_control(&HostMessage::Signal { signal: sig as i32 })
                    })
                };
                if !ok {
                    return;
                }
            }
        });
    }
    if tty && let Some((rows, cols)) = mvm_engine::terminal::size() {
        send(&writer, |w| {
            w.write_control(&HostMessage::Resize { rows, cols })
        });
    }
    let raw = if tty && stdin_on && mvm_engine::terminal::is_tty(0) {
        mvm_engine::terminal::RawMode::enable()
    } else {
        None
    };
    let detached = Arc::new(AtomicBool::new(false));
    if stdin_on {
        let w = writer.clone();
        let detached = detached.clone();
        let conn = conn.try_clone().map_err(failed)?;
        std::thread::spawn(move || {
            let mut scanner = DetachScanner { keys, matched: 0 };
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            let mut out = Vec::with_capacity(buf.len());
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        // Our input ended; the process's stdin stays open for the next client.
                        send(&w, |w| w.write_eof(Stream::Stdin));
                        return;
                    }
                    Ok(n) => n,
                };
                out.clear();
                let detach = scanner.feed(&buf[..n], &mut out);
                if !out.is_empty() && !send(&w, |w| w.write_data(Stream::Stdin, &out)) {
                    return;
                }
                if detach {
                    detached.store(true, Ordering::SeqCst);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }

    let mut reader = FrameReader::new(BufReader::new(conn));
    let mut exit = None;
    let mut lost = None;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        match reader.read_frame::<AgentMessage>() {
            Ok(Some(Frame::Data {
                stream: Stream::Stdout,
                data,
            })) => {
                let mut o = stdout.lock();
                let _ = o.write_all(&data).and_then(|()| o.flush());
            }
            Ok(Some(Frame::Data {
                stream: Stream::Stderr,
                data,
            })) => {
                let mut e = stderr.lock();
                let _ = e.write_all(&data).and_then(|()| e.flush());
            }
            Ok(Some(Frame::Control(AgentMessage::Exited { code, signal }))) => {
                exit = Some(container_exit_code(code, signal));
            }
            Ok(Some(Frame::Control(AgentMessage::Error { message }))) => lost = Some(message),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    drop(raw);
    if detached.load(Ordering::SeqCst) {
        eprintln!("read escape sequence");
        return Ok(0);
    }
    // As `docker attach`, return once the container has stopped (its VM is gone and its
    // record says so), so that an `rm` right after works. Without the process's end on the
    // connection (its owner was killed, say) the record has the exit code.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match dirs.load() {
            Ok(r)
                if r.effective().0 == Status::Running
                    && r.state.started_at == rec.state.started_at =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(r) => return Ok(exit.or(r.effective().1).unwrap_or(0)),
            Err(_) => break,
        }
    }
    if let Some(code) = exit {
        return Ok(code);
    }
    Err(failed(format!(
        "lost the connection to container {}{}",
        rec.id,
        lost.map(|m| format!(": {m}")).unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_notation() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(
            parse_detach_keys("a,ctrl-@,ctrl-[,ctrl-_").unwrap(),
            [b'a', 0, 27, 31]
        );
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-pq", "p,,q", "é"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn detach_sequence_across_reads_and_broken_prefixes() {
        let mut s = DetachScanner {
            keys: vec![16, 17],
            matched: 0,
        };
        let mut out = Vec::new();
        assert!(!s.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        out.clear();
        // The held ^P was input after all.
        assert!(!s.feed(b"c\x10\x10", &mut out));
        assert_eq!(out, b"\x10c\x10");
        out.clear();
        assert!(s.feed(b"\x11after", &mut out));
        assert!(out.is_empty());
    }
}

/// `attach`'s flags.
#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Proxy all received signals to the process (not with a terminal).
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Do not attach STDIN.
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// Container.
    pub container: String,
}

impl AttachArgs {
    /// `mvm attach` with these flags.
    pub fn run(&self, root: &Path) -> Result<i32, CliError> {
        attach(
            root,
            &self.container,
            &AttachOptions {
                sig_proxy: self.sig_proxy,
                no_stdin: self.no_stdin,
                detach_keys: self.detach_keys.clone(),
            },
        )
    }
}

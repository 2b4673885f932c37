//! A hostile guest agent, for the host's bound tests (tests/bounds): it boots as the real
//! agent does (the library's `boot`), connects to the host's callback port and answers the
//! handshake, then misbehaves in the way the container's first argument names. The guest
//! kernel and agent belong to whoever controls the guest, so this is what the host must
//! survive: a test runs `mvm` with `MVM_AGENT=<this binary, static>` and `mvm run IMAGE MODE`.
//!
//! An example target, not a `[[bin]]`: it is never built into the real agent, nor reachable
//! from it. scripts/build-hostile-agent.sh builds it as a static-pie.
//!
//! Modes (the `Start` message's `args[0]`):
//! - `error-flood`: `Error` messages as large as a frame may be, without end;
//! - `data-flood`: stdout and stderr data frames of the maximal size, without end;
//! - `oversize`: a frame header whose length is beyond the protocol's cap;
//! - `bad-kind`: a frame of a kind that does not exist;
//! - `garbage`: random bytes;
//! - `bad-json`: a control frame whose payload is not JSON;
//! - `stall`: half a data frame, then silence with the connection open;
//! - `exit-signal`: `Exited { code: None, signal: Some(i32::MAX) }`;
//! - `exit-negative`: `Exited { code: Some(-5), signal: None }`;
//! - `exit-both`: `Exited { code: Some(300), signal: Some(-9) }`.
//!
//! After a finite attack it waits for the host to close the connection (as the real agent
//! does), then powers off; the floods end when the host stops reading.

use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use mvm_agent::vsock::VsockStream;
use mvm_agent::{log_debug, log_error};
use mvm_agent_protocol::{
    AgentMessage, Frame, FrameReader, FrameWriter, HEADER_LEN, HostMessage, MAX_PAYLOAD_LEN,
    PROTOCOL_VERSION, ProtocolError, Stream, encode_control, encode_data,
};

fn main() {
    if std::process::id() != 1 {
        let _ = writeln!(
            io::stderr(),
            "hostile-agent: a test guest agent; runs only as PID 1 of an mvm microVM"
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| log_error!("hostile agent panic: {info}")));
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log_error!("hostile agent: {e}"),
        Err(_) => log_error!("hostile agent: panicked"),
    }
    mvm_agent::shutdown::power_off()
}

fn run() -> Result<(), String> {
    let config = mvm_agent::boot::boot().map_err(|e| format!("boot: {e}"))?;
    let port = config
        .callback
        .ok_or("no mvm.callback port on the kernel command line")?;
    let mut conn = connect_with_retry(port).map_err(|e| format!("connect to host: {e}"))?;
    let args = handshake(&mut conn).map_err(|e| format!("handshake: {e}"))?;
    let mode = args.first().cloned().unwrap_or_default();
    log_debug!("hostile mode {mode:?}");
    send(&mut conn, &AgentMessage::Started { pid: 1 })?;
    match mode.as_str() {
        "error-flood" => error_flood(&mut conn),
        "data-flood" => data_flood(&mut conn),
        "oversize" => {
            // 4 GiB announced: the host must refuse the header, not reserve or wait for it.
            let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 3];
            bytes.extend_from_slice(&[b'x'; 64]);
            write_then_hold(&mut conn, &bytes)
        }
        "bad-kind" => {
            let mut bytes = vec![16, 0, 0, 0, 0x7f];
            bytes.extend_from_slice(&[b'k'; 16]);
            write_then_hold(&mut conn, &bytes)
        }
        "garbage" => write_then_hold(&mut conn, &pseudo_random(64 * 1024)),
        "bad-json" => {
            let payload = b"{\"type\":\"exited\",\"code\":0,";
            let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
            bytes.push(1);
            bytes.extend_from_slice(payload);
            write_then_hold(&mut conn, &bytes)
        }
        "stall" => {
            // A stdout frame announcing 1000 bytes, of which 10 come.
            let mut bytes = 1000u32.to_le_bytes().to_vec();
            bytes.push(3);
            bytes.extend_from_slice(b"0123456789");
            write_then_hold(&mut conn, &bytes)
        }
        "exit-signal" => exit_then_hold(&mut conn, None, Some(i32::MAX)),
        "exit-negative" => exit_then_hold(&mut conn, Some(-5), None),
        "exit-both" => exit_then_hold(&mut conn, Some(300), Some(-9)),
        other => {
            send(
                &mut conn,
                &AgentMessage::Exited {
                    code: Some(2),
                    signal: None,
                },
            )?;
            Err(format!("unknown hostile mode {other:?}"))
        }
    }
}

/// As the real agent: the host's socket exists before the VM starts, so a refusal is
/// transient.
fn connect_with_retry(port: u32) -> io::Result<VsockStream> {
    let mut last = None;
    for attempt in 0..50u64 {
        match VsockStream::connect_host(port) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20 + attempt * 10));
            }
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::TimedOut.into()))
}

/// Answers the host's `Hello` correctly and waits for `Start`; returns its arguments.
fn handshake(conn: &mut VsockStream) -> Result<Vec<String>, String> {
    loop {
        let frame = FrameReader::new(&mut *conn)
            .read_frame::<HostMessage>()
            .map_err(|e| e.to_string())?;
        match frame {
            Some(Frame::Control(HostMessage::Hello { .. })) => send(
                conn,
                &AgentMessage::Hello {
                    version: PROTOCOL_VERSION,
                    agent_version: "hostile".into(),
                },
            )?,
            Some(Frame::Control(HostMessage::Start(spec))) => return Ok(spec.args),
            Some(_) => {}
            None => return Err("the host closed the connection before start".into()),
        }
    }
}

fn send(conn: &mut VsockStream, msg: &AgentMessage) -> Result<(), String> {
    FrameWriter::new(&mut *conn)
        .write_control(msg)
        .map_err(|e| e.to_string())
}

/// Writes the same bytes until the host stops taking them.
fn flood(conn: &mut VsockStream, bytes: &[u8]) -> Result<(), String> {
    let mut frames = 0u64;
    loop {
        if let Err(e) = conn.write_all(bytes) {
            log_debug!("flood over after {frames} frames: {e}");
            return Ok(());
        }
        frames += 1;
    }
}

/// `Error` messages whose JSON fills a frame to the cap, with forged log lines in them.
fn error_flood(conn: &mut VsockStream) -> Result<(), String> {
    let forged = "\n2099-01-01T00:00:00Z  INFO mvm: container exited 0\n\x1b[2J";
    let overhead = {
        let mut probe = Vec::new();
        encode_control(
            &AgentMessage::Error {
                message: forged.into(),
            },
            &mut probe,
        )
        .map_err(|e| e.to_string())?;
        probe.len() - HEADER_LEN
    };
    let message = format!("{forged}{}", "A".repeat(MAX_PAYLOAD_LEN - overhead));
    let mut frame = Vec::new();
    encode_control(&AgentMessage::Error { message }, &mut frame).map_err(|e| e.to_string())?;
    debug_assert_eq!(frame.len(), HEADER_LEN + MAX_PAYLOAD_LEN);
    flood(conn, &frame)
}

/// Stdout and stderr frames of the maximal size, each line far longer than a log line.
fn data_flood(conn: &mut VsockStream) -> Result<(), String> {
    let mut data = Vec::with_capacity(MAX_PAYLOAD_LEN);
    while data.len() < MAX_PAYLOAD_LEN {
        data.extend_from_slice(b"flood ");
        if data.len() % 40_000 < 6 {
            data.push(b'\n');
        }
    }
    data.truncate(MAX_PAYLOAD_LEN);
    let mut frames = Vec::new();
    encode_data(Stream::Stdout, &data, &mut frames);
    encode_data(Stream::Stderr, &data, &mut frames);
    flood(conn, &frames)
}

fn exit_then_hold(
    conn: &mut VsockStream,
    code: Option<i32>,
    signal: Option<i32>,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        mvm_agent_protocol::encode_eof(stream, &mut bytes);
    }
    encode_control(&AgentMessage::Exited { code, signal }, &mut bytes)
        .map_err(|e: ProtocolError| e.to_string())?;
    write_then_hold(conn, &bytes)
}

/// Sends `bytes`, then keeps the connection open, reading and discarding, until the host
/// closes it: whether the host ends the session is the host's to decide.
fn write_then_hold(conn: &mut VsockStream, bytes: &[u8]) -> Result<(), String> {
    conn.write_all(bytes).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the host: {e}")),
        }
    }
}

/// Deterministic noise (xorshift). Its fourth byte is forced high so that the first
/// "header" announces a length far beyond the cap, whatever the seed.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out[3] = 0xf0;
    out
}

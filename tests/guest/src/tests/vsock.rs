//! vsock checks: accept from the host and echo, or connect to the host and check its echo.

use crate::report::{Bytes, Check, Msg};
use crate::time::{Deadline, delay_ms};
use crate::vsock::{
    HOST_CID, OP_REQUEST, OP_RESPONSE, OP_RST, SHUT_RCV, SHUT_SEND, Stream, TYPE_STREAM, Vsock,
};

/// How long the host has to connect after `VSOCK listening` is printed.
const ACCEPT_MS: u64 = 30_000;
/// How long a connection may make no progress.
const IDLE_MS: u64 = 10_000;
/// First local port for guest-initiated connections (one more per retry).
const LOCAL_PORT: u32 = 49152;

/// Waits for the host's connection request on `port` and accepts it.
fn accept(v: &mut Vsock, port: u32) -> Result<Stream, Msg> {
    let mut deadline = Deadline::after_ms(ACCEPT_MS);
    loop {
        while let Some(pkt) = v.recv()? {
            let h = pkt.hdr;
            v.repost(&pkt);
            if h.op == OP_REQUEST
                && h.kind == TYPE_STREAM
                && h.dst_cid == v.cid
                && h.dst_port == port
                && h.src_cid == HOST_CID
            {
                let mut s = Stream::new(port, h.src_cid, h.src_port);
                s.update_credit(&h);
                s.connected = true;
                v.send_ctrl(&mut s, OP_RESPONSE, 0)?;
                return Ok(s);
            }
            v.reject(&h)?;
        }
        if deadline.expired() {
            fail!("no connection request within {} s", ACCEPT_MS / 1000);
        }
        core::hint::spin_loop();
    }
}

/// `mvmtest.vsock_listen=PORT`: accept one connection from the host and echo everything
/// it sends until it closes. The guest never closes first: after the echo it waits for the
/// host's SHUTDOWN (answered with RST, or with SHUTDOWN then RST if the host only shut its
/// sending side) or RST.
/// Without `bytes`, the data must end in '\n'; with `bytes` (`mvmtest.vsock_bytes=N`)
/// exactly N bytes must arrive. Either way every byte must have been echoed.
pub fn listen(v: &mut Vsock, port: u32, bytes: Option<u64>) -> Check {
    println!("VSOCK listening port={}", port);
    let mut s = accept(v, port)?;
    println!("VSOCK accepted cid={} port={}", s.peer_cid, s.peer_port);
    let result = echo(v, &mut s, bytes);
    // Close even after a failure, so the host side is not left hanging.
    let closed = v.close(&mut s);
    result?;
    closed?;
    println!("VSOCK echoed {} bytes", s.total_tx);
    if let Some(n) = bytes {
        if s.total_rx != n {
            fail!("received {} bytes, want {}", s.total_rx, n);
        }
    } else if s.total_rx == 0 || s.last_byte != b'\n' {
        fail!("no newline-terminated line received ({} bytes)", s.total_rx);
    }
    if s.total_tx != s.total_rx {
        fail!(
            "echoed {} of {} bytes before the peer closed",
            s.total_tx,
            s.total_rx
        );
    }
    Ok(())
}

fn echo(v: &mut Vsock, s: &mut Stream, bytes: Option<u64>) -> Check {
    let mut idle = Deadline::after_ms(IDLE_MS);
    loop {
        let mut progress = v.poll(s)?;
        if s.reset {
            return Ok(());
        }
        if s.pending() > 0 {
            if s.peer_shutdown & SHUT_RCV != 0 {
                fail!(
                    "peer stopped receiving with {} bytes not echoed",
                    s.pending()
                );
            }
            progress |= v.echo_some(s)? > 0;
        } else if s.peer_shutdown & (SHUT_RCV | SHUT_SEND) != 0 {
            return Ok(());
        }
        if progress {
            idle = Deadline::after_ms(IDLE_MS);
        } else if idle.expired() {
            let line_done = bytes.is_none() && s.last_byte == b'\n' && s.pending() == 0;
            if line_done {
                fail!(
                    "line echoed but the peer did not close within {} s",
                    IDLE_MS / 1000
                );
            }
            fail!(
                "no progress for {} s: received {} echoed {} pending {} peer credit {}",
                IDLE_MS / 1000,
                s.total_rx,
                s.total_tx,
                s.pending(),
                s.peer_credit()
            );
        }
        core::hint::spin_loop();
    }
}

/// `mvmtest.vsock_connect=PORT`: connect to the host (CID 2) on PORT, send
/// `hello from guest <cid>\n`, expect the same line back, then close (SHUTDOWN, and RST
/// once the host answers or after 2 s). Refused connections are retried for 10 s.
pub fn connect(v: &mut Vsock, port: u32) -> Check {
    let mut overall = Deadline::after_ms(IDLE_MS);
    let mut attempt = 0u32;
    let mut s = loop {
        let mut s = Stream::new(LOCAL_PORT + attempt % 16384, HOST_CID, port);
        attempt += 1;
        v.send_ctrl(&mut s, OP_REQUEST, 0)?;
        let mut d = Deadline::after_ms(2_000);
        while !s.connected && !s.reset && !d.expired() {
            v.poll(&mut s)?;
            core::hint::spin_loop();
        }
        if s.connected {
            break s;
        }
        if overall.expired() {
            if s.reset {
                fail!(
                    "connection refused (RST) for {} s, {} attempts",
                    IDLE_MS / 1000,
                    attempt
                );
            }
            fail!("no answer to the connection request");
        }
        if !s.reset {
            // Give up this half-open attempt before trying another port.
            v.send_ctrl(&mut s, OP_RST, 0)?;
        }
        delay_ms(100);
    };
    println!(
        "VSOCK connected local_port={} peer_port={}",
        s.local_port, s.peer_port
    );
    let result = exchange(v, &mut s);
    let closed = v.close(&mut s);
    result?;
    closed
}

fn exchange(v: &mut Vsock, s: &mut Stream) -> Check {
    let text = Msg::new(format_args!("hello from guest {}", v.cid));
    let mut line = [0u8; 130];
    let n = text.as_str().len().min(128);
    line[..n].copy_from_slice(&text.as_str().as_bytes()[..n]);
    line[n] = b'\n';
    let line = &line[..n + 1];

    let mut sent = 0;
    let mut deadline = Deadline::after_ms(IDLE_MS);
    while sent < line.len() {
        v.poll(s)?;
        if s.reset {
            fail!("connection reset while sending");
        }
        sent += v.try_send_data(s, &line[sent..])?;
        if deadline.expired() {
            fail!(
                "timeout sending {} bytes (peer credit {})",
                line.len() - sent,
                s.peer_credit()
            );
        }
    }

    let mut got = [0u8; 130];
    let mut len = 0;
    let mut deadline = Deadline::after_ms(IDLE_MS);
    loop {
        v.poll(s)?;
        len += v.read(s, &mut got[len..])?;
        if got[..len].contains(&b'\n') {
            break;
        }
        if len == got.len() {
            fail!("no newline in the first {} bytes", len);
        }
        if s.reset || s.peer_shutdown & SHUT_SEND != 0 {
            fail!("peer closed after {} bytes: {}", len, Bytes(&got[..len]));
        }
        if deadline.expired() {
            fail!("timeout waiting for the echo ({} bytes so far)", len);
        }
        core::hint::spin_loop();
    }
    if &got[..len] != line {
        fail!("echo {} differs from {}", Bytes(&got[..len]), Bytes(line));
    }
    println!("VSOCK echo matched");
    Ok(())
}

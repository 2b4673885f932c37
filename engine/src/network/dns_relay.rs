//! The host half of the DNS relay (see `mvm_agent_protocol::dns`): the guest's queries arrive
//! over vsock and are sent, from this process's network namespace, to one fixed resolver (an
//! OCI engine's embedded DNS, Docker's 127.0.0.11:53). The guest chooses nothing but the bytes
//! of its queries; what it can make the host hold is bounded: one connection at a time,
//! [`MAX_IN_FLIGHT`] queries waiting, each for at most [`QUERY_TIMEOUT`].

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mvm_agent_protocol::dns::{MAX_DNS_MESSAGE, read_frame, write_frame};

/// Queries waiting for the resolver at once; more are dropped (the client retries).
pub const MAX_IN_FLIGHT: usize = 32;
/// How long the resolver may take to answer one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the relay on `listener` (the VM's hybrid-vsock socket for the relay port) for the
/// life of the process, forwarding to `upstream`.
pub fn serve(listener: UnixListener, upstream: SocketAddr) {
    std::thread::spawn(move || {
        // One connection at a time: the agent makes one.
        for conn in listener.incoming() {
            match conn {
                Ok(conn) => relay(conn, upstream),
                Err(e) => tracing::debug!("DNS relay: accept: {e}"),
            }
        }
    });
}

/// Forwards the frames of one connection until it ends or breaks the format.
fn relay(conn: UnixStream, upstream: SocketAddr) {
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut reader = std::io::BufReader::new(conn);
    loop {
        let (tag, query) = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("DNS relay: the guest broke the frame format: {e}");
                return;
            }
        };
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("DNS relay: {MAX_IN_FLIGHT} queries waiting; one dropped");
            continue;
        }
        let (writer, in_flight) = (writer.clone(), in_flight.clone());
        std::thread::spawn(move || {
            if let Some(answer) = ask(upstream, &query) {
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                let _ = write_frame(&mut *w, tag, &answer).and_then(|()| w.flush());
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// One query to `upstream` over UDP; its answer, or `None` after the timeout.
fn ask(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let any: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(upstream).ok()?;
    s.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; MAX_DNS_MESSAGE];
    let n = s.recv(&mut buf).ok()?;
    (n > 0).then(|| {
        buf.truncate(n);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn queries_go_to_the_upstream_and_answers_come_back_tagged() {
        // A fake resolver on loopback that answers "A:" + the query.
        let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream = resolver.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = resolver.recv_from(&mut buf) {
                let mut answer = b"A:".to_vec();
                answer.extend_from_slice(&buf[..n]);
                let _ = resolver.send_to(&answer, from);
            }
        });
        let dir = std::env::temp_dir().join(format!("mvm-dns-relay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sock");
        serve(UnixListener::bind(&path).unwrap(), upstream);
        let mut guest = UnixStream::connect(&path).unwrap();
        write_frame(&mut guest, 1, b"one").unwrap();
        write_frame(&mut guest, 2, b"two").unwrap();
        let mut got = vec![
            read_frame(&mut guest).unwrap().unwrap(),
            read_frame(&mut guest).unwrap().unwrap(),
        ];
        got.sort();
        assert_eq!(got, [(1, b"A:one".to_vec()), (2, b"A:two".to_vec())]);
        // A frame that breaks the format ends the connection.
        guest.write_all(&[0xff, 0xff, 0, 0]).unwrap();
        let mut rest = Vec::new();
        guest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(guest.read_to_end(&mut rest).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

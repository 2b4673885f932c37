//! The guest half of the DNS relay (see `mvm_agent_protocol::dns`): UDP queries to
//! 127.0.0.11:53 go over one vsock connection to the host, which asks the resolver of the
//! container's network namespace; answers come back to the client that asked.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use mvm_agent_protocol::dns::{
    DNS_RELAY_PORT, GUEST_RESOLVER, MAX_DNS_MESSAGE, read_frame, write_frame,
};

use crate::vsock::VsockStream;
use crate::{log_debug, log_error};

/// Queries waiting for an answer; an older one is forgotten when the map is full (its client
/// retries, as a DNS client does after a timeout).
const MAX_PENDING: usize = 256;

/// Starts the forwarder's threads; errors are logged (DNS through the relay is then absent,
/// the rest of the container is not affected).
pub fn start() {
    let socket = match UdpSocket::bind(GUEST_RESOLVER) {
        Ok(s) => s,
        Err(e) => {
            log_error!("DNS relay: cannot listen on {GUEST_RESOLVER}: {e}");
            return;
        }
    };
    let conn = match VsockStream::connect_host(DNS_RELAY_PORT) {
        Ok(c) => c,
        Err(e) => {
            log_error!("DNS relay: cannot reach the host: {e}");
            return;
        }
    };
    let (Ok(mut reader), Ok(answers)) = (conn.try_clone(), socket.try_clone()) else {
        log_error!("DNS relay: cannot duplicate its descriptors");
        return;
    };
    let pending: Arc<Mutex<HashMap<u32, SocketAddr>>> = Arc::default();
    let waiting = pending.clone();
    std::thread::spawn(move || {
        while let Ok(Some((tag, answer))) = read_frame(&mut reader) {
            let client = waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tag);
            if let Some(client) = client {
                let _ = answers.send_to(&answer, client);
            }
        }
        log_debug!("DNS relay: the host closed the connection");
    });
    std::thread::spawn(move || {
        let mut conn = conn;
        let mut buf = vec![0u8; MAX_DNS_MESSAGE];
        let mut next: u32 = 0;
        loop {
            let Ok((n, client)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            next = next.wrapping_add(1);
            {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.len() >= MAX_PENDING
                    && let Some(oldest) = p.keys().max_by_key(|t| next.wrapping_sub(**t)).copied()
                {
                    p.remove(&oldest);
                }
                p.insert(next, client);
            }
            if write_frame(&mut conn, next, &buf[..n])
                .and_then(|()| conn.flush())
                .is_err()
            {
                log_debug!("DNS relay: the host connection is gone");
                return;
            }
        }
    });
    log_debug!("DNS relay: answering on {GUEST_RESOLVER}");
}

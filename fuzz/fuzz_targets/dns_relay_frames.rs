//! Bytes a hostile guest sends the host's DNS relay (agent-protocol's `dns` frames) on its
//! vsock connection.
//!
//! Oracle, besides never panicking or allocating past the frame bound: every frame read
//! carries 1 to MAX_DNS_MESSAGE bytes, and writing it back yields the bytes it was read from.
#![no_main]

use mvm_agent_protocol::dns::{MAX_DNS_MESSAGE, read_frame, write_frame};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = data;
    loop {
        let before = r;
        match read_frame(&mut r) {
            Ok(Some((tag, msg))) => {
                assert!(!msg.is_empty() && msg.len() <= MAX_DNS_MESSAGE);
                let mut again = Vec::new();
                write_frame(&mut again, tag, &msg).expect("a frame read is one that can be written");
                assert_eq!(&again[..], &before[..before.len() - r.len()]);
            }
            Ok(None) | Err(_) => return,
        }
    }
});

//! Bytes from a (possibly hostile or broken) peer on the host-agent connection.
#![no_main]
use mvm_agent_protocol::{AgentMessage, FrameDecoder, HostMessage};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut host_side = FrameDecoder::new();
    host_side.push(data);
    while let Ok(Some(_)) = host_side.next_frame::<AgentMessage>() {}
    let mut agent_side = FrameDecoder::new();
    agent_side.push(data);
    while let Ok(Some(_)) = agent_side.next_frame::<HostMessage>() {}
});

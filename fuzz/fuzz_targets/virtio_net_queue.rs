//! Guest-controlled virtio-net queues: descriptors, rings, buffers and host frames are fuzz
//! input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mvm_vmm::devices::virtio::net::fuzzing::fuzz_queues(data);
});

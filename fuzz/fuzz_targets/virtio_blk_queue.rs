//! A guest-controlled virtio-blk queue: descriptors, rings and buffers are fuzz input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mvm_vmm::devices::virtio::block::fuzzing::fuzz_request_queue(data);
});

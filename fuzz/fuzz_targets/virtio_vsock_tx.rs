//! A guest-controlled virtio-vsock tx and rx queue.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mvm_vmm::devices::virtio::vsock::fuzzing::fuzz_tx_chain(data);
});

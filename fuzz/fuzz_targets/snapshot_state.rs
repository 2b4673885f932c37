//! A snapshot state file is untrusted input: whole files (the prefix, header and checksum
//! checks), and bodies framed with a valid header (the state's parser and its checks against
//! a VM's shape), must give an error, never a panic or an unbounded allocation.
#![no_main]
use mvm_vmm::snapshot::file::{frame_state, parse_state};
use mvm_vmm::snapshot::identity::CpuIdentity;
use mvm_vmm::snapshot::{DeviceKind, Shape};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let host = CpuIdentity {
        vendor: "AuthenticAMD".into(),
        signature: 0x00a1_0f11,
        kvm_features: 1,
    };
    let path = std::path::Path::new("fuzz.state");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        frame_state(rest, &host)
    };
    if let Ok((_, snap)) = parse_state(path, &bytes, &host) {
        let shape = Shape {
            vcpus: 1,
            mem_mib: 128,
            devices: vec![DeviceKind::Block, DeviceKind::Vsock, DeviceKind::Net],
            guest_cid: Some(3),
        };
        let _ = snap.check(&shape);
    }
});

//! Dockerfiles and `.dockerignore` files from a build context (possibly hostile): parsing
//! and expanding must never panic, and errors must point inside the file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mvm_rootfs::dockerfile::fuzz_parse(data);
});

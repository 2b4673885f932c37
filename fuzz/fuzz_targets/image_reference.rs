//! Image references typed by users or found in manifests.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(r) = mvm_rootfs::Reference::parse(s)
    {
        // A parsed reference prints back to something that parses the same way.
        let again = mvm_rootfs::Reference::parse(&r.to_string()).expect("round trip");
        assert_eq!(again, r);
    }
});

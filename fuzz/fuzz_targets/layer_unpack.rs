//! An image layer from an untrusted registry, unpacked into a scratch directory: it must never
//! write outside it or panic.
#![no_main]
use std::sync::atomic::{AtomicU64, Ordering};

use mvm_rootfs::unpack::{Limits, Totals, apply_layer};

static SEQ: AtomicU64 = AtomicU64::new(0);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!(
        "mvm-fuzz-unpack-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let root = base.join("root");
    if std::fs::create_dir_all(&root).is_err() {
        return;
    }
    let limits = Limits { max_bytes: 1 << 20, max_entries: 1000 };
    let _ = apply_layer(&root, data, &limits, &mut Totals::default());
    // Nothing may appear beside the root.
    let escaped: Vec<_> = std::fs::read_dir(&base)
        .map(|rd| rd.flatten().map(|e| e.file_name()).filter(|n| n != "root").collect())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&base);
    assert!(escaped.is_empty(), "layer wrote outside its root: {escaped:?}");
});

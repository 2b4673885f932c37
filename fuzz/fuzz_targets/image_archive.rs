//! An archive given to `mvm load` (a Docker archive or an OCI layout, possibly hostile): it
//! must never panic, and when it is refused the store must hold nothing new.
#![no_main]
use std::sync::atomic::{AtomicU64, Ordering};

use mvm_rootfs::Store;
use mvm_rootfs::archive::load;

static SEQ: AtomicU64 = AtomicU64::new(0);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!(
        "mvm-fuzz-load-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let Ok(store) = Store::open(&root) else {
        return;
    };
    let result = load(&store, &mut &data[..]);
    let blobs = std::fs::read_dir(root.join("blobs/sha256")).map_or(0, |rd| rd.count());
    let spool = std::fs::read_dir(root.join("tmp")).map_or(0, |rd| rd.count());
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(spool, 0, "load left its spool behind");
    if result.is_err() {
        assert_eq!(blobs, 0, "a refused archive left blobs in the store");
    }
});

//! Gives the VMM a build identity: a hash of its sources and its config crate's, so that a
//! snapshot written by one build is refused by another (the state's layout is the code's).

use std::path::Path;

/// FNV-1a, 64 bits: stable across Rust versions, unlike std's hasher.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [root.join("src"), root.join("../vmm-config/src")];
    let mut files = Vec::new();
    for d in &dirs {
        println!("cargo:rerun-if-changed={}", d.display());
        walk(d, &mut files);
    }
    files.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for f in &files {
        let rel = f.strip_prefix(root).unwrap_or(f);
        fnv(&mut hash, rel.to_string_lossy().as_bytes());
        fnv(&mut hash, &std::fs::read(f).unwrap_or_default());
    }
    println!(
        "cargo:rustc-env=MVM_VMM_BUILD_ID={}-{hash:016x}",
        env!("CARGO_PKG_VERSION")
    );
}

//! The agent's own small read-only disk: the static agent binary as `/mvm-agent` plus the
//! empty directories it mounts on. Built once per agent binary (keyed by its hash) and shared
//! by every container; the image's disk is never touched.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Mount points the agent needs on its root before /run is a tmpfs.
const AGENT_DIRS: &[&str] = &["proc", "sys", "dev", "run", "tmp", "newroot"];

fn hash_file(path: &Path) -> Result<String, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Refuses a dynamically linked agent: it would die as PID 1 with no loader in its disk.
fn check_static(path: &Path) -> Result<(), String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(format!("{} is not an ELF binary", path.display()));
    }
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap_or_default()) as usize;
    let phentsize = u16::from_le_bytes([data[54], data[55]]) as usize;
    let phnum = u16::from_le_bytes([data[56], data[57]]) as usize;
    for i in 0..phnum {
        let off = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(ph) = data.get(off..off + 4) else {
            break;
        };
        // PT_INTERP = 3: a dynamic loader is required.
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            return Err(format!(
                "{} is dynamically linked; build it with scripts/build-agent.sh (static-pie)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Returns the agent disk for `agent`, building it under `cache` if needed.
pub fn ensure(agent: &Path, cache: &Path) -> Result<PathBuf, String> {
    let hash = hash_file(agent)?;
    let disk = cache.join(format!("agent-{}.erofs", &hash[..16]));
    if disk.exists() {
        return Ok(disk);
    }
    check_static(agent)?;
    fs::create_dir_all(cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let work = cache.join(format!(".agent-root-{}", std::process::id()));
    let tmp = cache.join(format!(".agent-{}.erofs.tmp", std::process::id()));
    let result = (|| {
        let _ = fs::remove_dir_all(&work);
        for d in AGENT_DIRS {
            fs::create_dir_all(work.join(d)).map_err(|e| format!("agent disk: {e}"))?;
        }
        fs::copy(agent, work.join("mvm-agent")).map_err(|e| format!("agent disk: {e}"))?;
        mvm_rootfs::disk::erofs_from_dir(&work, &tmp).map_err(|e| e.to_string())?;
        fs::rename(&tmp, &disk).map_err(|e| format!("agent disk: {e}"))
    })();
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_file(&tmp);
    result.map(|()| disk)
}

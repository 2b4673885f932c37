//! Containers on disk: IDs, names, and their directories under the state root.
//!
//! ```text
//! <root>/containers/<64-hex id>/config.json   what was asked for, and the state
//! <root>/containers/<64-hex id>/upper.ext4    the writable disk
//! <root>/run/<12-hex id>/                     sockets and logs (short: unix socket paths)
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A container's record, written atomically to `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The process.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// TTY.
    pub tty: bool,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// `created`, `running` or `exited`.
    pub status: String,
    /// Exit code once exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The backend that ran it.
    #[serde(default)]
    pub backend: String,
}

/// Paths of one container.
pub struct ContainerDirs {
    /// Persistent directory.
    pub dir: PathBuf,
    /// Runtime directory (sockets, logs).
    pub run: PathBuf,
}

impl ContainerDirs {
    /// Directories of container `id` under `root`.
    pub fn new(root: &Path, id: &str) -> Self {
        Self {
            dir: root.join("containers").join(id),
            run: root.join("run").join(&id[..12]),
        }
    }

    /// Removes everything the container had on disk.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.run);
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The record file.
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Writes the record atomically.
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), String> {
        let data = serde_json::to_vec_pretty(rec).map_err(|e| e.to_string())?;
        mvm_rootfs::fsutil::atomic_write(&self.record_path(), &data)
            .map_err(|e| format!("cannot write {}: {e}", self.record_path().display()))
    }
}

/// A new random 64-hex container ID.
pub fn new_id() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Docker avoids all-digit short IDs, which would read as numbers.
    if id[..12].bytes().all(|b| b.is_ascii_digit()) {
        return new_id();
    }
    Ok(id)
}

/// Every container record under `root`.
pub fn list(root: &Path) -> Vec<ContainerRecord> {
    let Ok(rd) = fs::read_dir(root.join("containers")) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| fs::read(e.path().join("config.json")).ok())
        .filter_map(|d| serde_json::from_slice(&d).ok())
        .collect()
}

/// Checks a user-given name as Docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && name.len() <= 128
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble",
    "quiet", "sharp", "swift", "tender", "vivid", "witty", "bold", "clever", "daring", "jolly",
];
const NOUNS: &[&str] = &[
    "turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "torvalds", "liskov",
    "dijkstra", "hamilton", "babbage", "shannon", "noether", "curie", "euler", "gauss",
];

/// A free generated name like `brave_turing`, derived from the ID.
pub fn generate_name(id: &str, taken: &[String]) -> String {
    let seed = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    for attempt in 0u64.. {
        let n = seed.wrapping_add(attempt.wrapping_mul(7919));
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize],
            NOUNS[((n / 97) % NOUNS.len() as u64) as usize]
        );
        if attempt >= (ADJECTIVES.len() * NOUNS.len()) as u64 {
            name.push_str(&format!("{attempt}"));
        }
        if !taken.contains(&name) {
            return name;
        }
    }
    unreachable!("the loop only ends by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        let a = generate_name(&id, &[]);
        let b = generate_name(&id, std::slice::from_ref(&a));
        assert_ne!(a, b);
    }
}

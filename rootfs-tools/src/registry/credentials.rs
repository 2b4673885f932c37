//! Registry credentials saved by `mvm login`: `<state root>/auth.json`, mode 0600, in the
//! shape of Docker's `config.json` (`{"auths": {"registry": {"auth": base64("user:pass")}}}`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::temp_sibling;

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Serialize, Deserialize)]
struct AuthEntry {
    auth: String,
}

fn read(path: &Path) -> io::Result<AuthFile> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(e),
    }
}

fn write(path: &Path, file: &AuthFile) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    let tmp = temp_sibling(path);
    let result = (|| {
        // Created 0600 from the start: the secret is never readable by others, not even briefly.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The saved user and password for `registry`, if any.
pub fn lookup(path: &Path, registry: &str) -> io::Result<Option<(String, String)>> {
    let file = read(path)?;
    let Some(entry) = file.auths.get(registry) else {
        return Ok(None);
    };
    let decoded = base64_decode(&entry.auth)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad credentials for {registry}", path.display()),
            )
        })?;
    Ok(decoded
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string())))
}

/// Saves credentials for `registry`.
pub fn store(path: &Path, registry: &str, user: &str, password: &str) -> io::Result<()> {
    let mut file = read(path)?;
    file.auths.insert(
        registry.to_string(),
        AuthEntry {
            auth: base64_encode(format!("{user}:{password}").as_bytes()),
        },
    );
    write(path, &file)
}

/// Forgets the credentials for `registry`; false when there were none.
pub fn remove(path: &Path, registry: &str) -> io::Result<bool> {
    let mut file = read(path)?;
    if file.auths.remove(registry).is_none() {
        return Ok(false);
    }
    write(path, &file)?;
    Ok(true)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (a dozen lines; not worth a dependency).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; None on malformed input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base64_round_trips() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pa:ss", "dXNlcjpwYTpzcw=="),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn saved_with_mode_0600_and_removed() {
        let dir = std::env::temp_dir().join(format!("mvm-cred-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.json");
        store(&path, "127.0.0.1:5000", "me", "s:cret").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            lookup(&path, "127.0.0.1:5000").unwrap(),
            Some(("me".into(), "s:cret".into()))
        );
        assert_eq!(lookup(&path, "other").unwrap(), None);
        assert!(remove(&path, "127.0.0.1:5000").unwrap());
        assert!(!remove(&path, "127.0.0.1:5000").unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}

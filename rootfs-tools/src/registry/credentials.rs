//! Registry credentials, in Docker's own `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), so `docker login` and `mvm login` share them: `auths` entries
//! (`{"auth": base64("user:pass")}`), and the credential helpers Docker's CLI honours
//! (`credHelpers` per registry, else `credsStore`: `docker-credential-NAME get|store|erase`).
//! Every other key of the file is kept as it was. A file this code creates is mode 0600.
//! Credentials an older mvm saved under the state root (`<root>/auth.json`) are still read.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fsutil::temp_sibling;

/// Docker Hub's key in `config.json`.
const HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(
        rename = "credsStore",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    creds_store: Option<String>,
    #[serde(
        rename = "credHelpers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    cred_helpers: BTreeMap<String, String>,
    /// Everything else Docker's CLI keeps there (formats, proxies, plugins...).
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`;
/// `None` with neither set.
pub fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The key Docker files `registry`'s credentials under.
fn key_for(registry: &str) -> String {
    if registry == super::name::DEFAULT_REGISTRY || registry == "index.docker.io" {
        HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// A key's host (`https://reg:5000/v2/` is `reg:5000`), as Docker's CLI matches keys.
fn host_of(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn read(path: &Path) -> io::Result<AuthFile> {
    match fs::read(path) {
        Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(AuthFile::default()),
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
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
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

/// The credential helper configured for `key`, if any.
fn helper<'a>(file: &'a AuthFile, key: &str) -> Option<&'a str> {
    file.cred_helpers
        .iter()
        .find(|(k, _)| host_of(k) == host_of(key))
        .map(|(_, h)| h.as_str())
        .or(file.creds_store.as_deref())
        .filter(|h| !h.is_empty())
}

/// Runs `docker-credential-NAME action` with `input` on its stdin; its stdout, or `None`
/// when it says it has no credentials.
fn run_helper(name: &str, action: &str, input: &[u8]) -> io::Result<Option<Vec<u8>>> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(io::Error::other(format!(
            "bad credential helper name {name:?}"
        )));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(helper_program(&program))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("{program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(Some(out.stdout));
    }
    let said = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    if said.contains("credentials not found") {
        return Ok(None);
    }
    Err(io::Error::other(format!("{program} {action}: {said}")))
}

/// A helper program as Docker's CLI finds it: on `PATH` (tests point at their own).
fn helper_program(program: &str) -> PathBuf {
    #[cfg(test)]
    if let Some(dir) = tests::HELPER_DIR.with(|d| d.borrow().clone()) {
        return dir.join(program);
    }
    PathBuf::from(program)
}

/// The saved user and password for `registry`, if any: from its credential helper, else
/// from the file's `auths`.
pub fn lookup(path: &Path, registry: &str) -> io::Result<Option<(String, String)>> {
    let file = read(path)?;
    let key = key_for(registry);
    if let Some(h) = helper(&file, &key) {
        let Some(out) = run_helper(h, "get", key.as_bytes())? else {
            return Ok(None);
        };
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| io::Error::other(format!("docker-credential-{h} get: {e}")))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Some((field("Username"), field("Secret"))));
    }
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| host_of(k) == host_of(&key))
        .map(|(_, e)| e)
    else {
        return Ok(None);
    };
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64_decode(auth)
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

/// Saves credentials for `registry`: through its credential helper when one is configured,
/// else in the file.
pub fn store(path: &Path, registry: &str, user: &str, password: &str) -> io::Result<()> {
    let mut file = read(path)?;
    let key = key_for(registry);
    if let Some(h) = helper(&file, &key) {
        let input = serde_json::json!({ "ServerURL": key, "Username": user, "Secret": password });
        run_helper(h, "store", input.to_string().as_bytes())?
            .ok_or_else(|| io::Error::other(format!("docker-credential-{h} store failed")))?;
        return Ok(());
    }
    file.auths.entry(key).or_default().auth =
        Some(base64_encode(format!("{user}:{password}").as_bytes()));
    write(path, &file)
}

/// Forgets the credentials for `registry` (in its helper and in the file); false when there
/// were none.
pub fn remove(path: &Path, registry: &str) -> io::Result<bool> {
    let mut file = read(path)?;
    let key = key_for(registry);
    let mut found = false;
    if let Some(h) = helper(&file, &key) {
        found |= run_helper(h, "erase", key.as_bytes())?.is_some();
    }
    let before = file.auths.len();
    file.auths.retain(|k, _| host_of(k) != host_of(&key));
    if file.auths.len() != before {
        write(path, &file)?;
        found = true;
    }
    Ok(found)
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

    thread_local! {
        /// Where this thread's test keeps its credential helpers.
        pub(super) static HELPER_DIR: std::cell::RefCell<Option<PathBuf>> =
            const { std::cell::RefCell::new(None) };
    }

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
    fn docker_s_file_keeps_its_other_keys_and_hub_has_docker_s_key() {
        let dir = std::env::temp_dir().join(format!("mvm-cred-docker-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        fs::write(
            &path,
            r#"{"auths":{"https://reg.example:5000/v2/":{"auth":"dTpw","email":"x@y"}},"psFormat":"table {{.ID}}","proxies":{"default":{"httpProxy":"p"}}}"#,
        )
        .unwrap();
        assert_eq!(
            lookup(&path, "reg.example:5000").unwrap(),
            Some(("u".into(), "p".into()))
        );
        store(&path, "docker.io", "me", "pw").unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table {{.ID}}");
        assert_eq!(v["proxies"]["default"]["httpProxy"], "p");
        assert_eq!(v["auths"]["https://reg.example:5000/v2/"]["email"], "x@y");
        assert_eq!(v["auths"][HUB_KEY]["auth"], base64_encode(b"me:pw"));
        assert_eq!(
            lookup(&path, "docker.io").unwrap(),
            Some(("me".into(), "pw".into()))
        );
        assert!(remove(&path, "reg.example:5000").unwrap());
        assert_eq!(lookup(&path, "reg.example:5000").unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_credential_helper_is_asked_and_told() {
        let dir = std::env::temp_dir().join(format!("mvm-cred-helper-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // A helper that keeps one secret in a file beside it, as a keychain would.
        let store_file = dir.join("kept");
        let helper = dir.join("docker-credential-mvmtest");
        fs::write(
            &helper,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n\
                 get) read key; [ -f {k} ] && cat {k} || {{ echo 'credentials not found in native keychain'; exit 1; }};;\n\
                 store) cat > {k};;\n\
                 erase) read key; rm {k};;\n\
                 esac\n",
                k = store_file.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("config.json");
        fs::write(&path, r#"{"credHelpers":{"127.0.0.1:5000":"mvmtest"}}"#).unwrap();
        // Found in this directory rather than on PATH (which other tests' threads read).
        HELPER_DIR.with(|d| *d.borrow_mut() = Some(dir.clone()));
        assert_eq!(lookup(&path, "127.0.0.1:5000").unwrap(), None);
        store(&path, "127.0.0.1:5000", "me", "s3cret").unwrap();
        assert_eq!(
            lookup(&path, "127.0.0.1:5000").unwrap(),
            Some(("me".into(), "s3cret".into()))
        );
        // The secret never went into the file.
        assert!(!fs::read_to_string(&path).unwrap().contains("s3cret"));
        assert!(remove(&path, "127.0.0.1:5000").unwrap());
        assert_eq!(lookup(&path, "127.0.0.1:5000").unwrap(), None);
        HELPER_DIR.with(|d| *d.borrow_mut() = None);
        fs::remove_dir_all(&dir).unwrap();
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

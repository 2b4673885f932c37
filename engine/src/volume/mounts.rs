//! What a container mounts: `-v`, `--mount` and `--tmpfs` parsed as Docker reads them.

use serde::{Deserialize, Serialize};

/// The kind of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A host directory.
    Bind,
    /// A named or anonymous volume.
    Volume,
    /// A tmpfs in the guest.
    Tmpfs,
}

impl Kind {
    /// Docker's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Volume => "volume",
            Kind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Bind, volume or tmpfs.
    pub kind: Kind,
    /// Host directory (bind), volume name (volume; empty until an anonymous volume is made),
    /// empty for tmpfs.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// tmpfs options (`size=64m,mode=1777`).
    #[serde(default)]
    pub options: String,
    /// An anonymous volume (removed with the container by `rm -v` and `--rm`).
    #[serde(default)]
    pub anonymous: bool,
}

/// Checks a container path: absolute, normalised, not `/`, not a kernel file system, and free
/// of characters the kernel command line cannot carry.
pub fn check_target(t: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid mount target {t:?}: {why}"));
    if !t.starts_with('/') {
        return bad("it must be an absolute path");
    }
    if t == "/" {
        return bad("the container's root cannot be a mount point");
    }
    if t.contains("//") || t.ends_with('/') || t.split('/').any(|c| c == "." || c == "..") {
        return bad("use a normalised path (no //, . or ..)");
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c == ',' || c == ':' || c == '"' || c.is_control())
    {
        return bad("spaces, commas, colons and quotes are not supported in mount targets");
    }
    for k in ["/proc", "/sys", "/dev"] {
        if t == k || t.starts_with(&format!("{k}/")) {
            return bad("it is inside a kernel file system");
        }
    }
    Ok(())
}

fn parse_mode(opts: &str, spec: &str) -> Result<bool, String> {
    let mut ro = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => ro = true,
            "rw" => ro = false,
            // SELinux relabelling and propagation modes mean nothing in a VM.
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "nocopy" => {}
            other => {
                return Err(format!(
                    "invalid mode {other:?} in volume specification {spec:?}"
                ));
            }
        }
    }
    Ok(ro)
}

/// Parses `-v SRC:DST[:OPTS]` or `-v DST`.
pub fn parse_volume(spec: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => ("", *t, ""),
        [s, t] if t.starts_with('/') => (*s, *t, ""),
        [t, o] if t.starts_with('/') && !o.starts_with('/') => ("", *t, *o),
        [s, t, o] => (*s, *t, *o),
        _ => return Err(format!("invalid volume specification: {spec:?}")),
    };
    if source.is_empty() && parts.len() > 1 && parts[0].is_empty() {
        return Err(format!("invalid volume specification: {spec:?}"));
    }
    check_target(target)?;
    let read_only = parse_mode(opts, spec)?;
    let kind = if source.starts_with('/') {
        Kind::Bind
    } else {
        if !source.is_empty() && !super::valid_name(source) {
            return Err(format!(
                "{source:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; a host directory must be an absolute path"
            ));
        }
        Kind::Volume
    };
    Ok(MountSpec {
        kind,
        source: source.to_string(),
        target: target.to_string(),
        read_only,
        options: String::new(),
        anonymous: kind == Kind::Volume && source.is_empty(),
    })
}

/// Parses `--mount type=...,source=...,target=...[,readonly]`.
pub fn parse_mount(spec: &str) -> Result<MountSpec, String> {
    let mut kind = Kind::Volume;
    let mut source = String::new();
    let mut target = String::new();
    let mut read_only = false;
    let mut tmpfs = Vec::new();
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (k, v) {
            ("type", Some("bind")) => kind = Kind::Bind,
            ("type", Some("volume")) => kind = Kind::Volume,
            ("type", Some("tmpfs")) => kind = Kind::Tmpfs,
            ("type", Some(t)) => {
                return Err(format!(
                    "invalid mount type {t:?}: use bind, volume or tmpfs"
                ));
            }
            ("source" | "src", Some(s)) => source = s.to_string(),
            ("target" | "destination" | "dst", Some(t)) => target = t.to_string(),
            ("readonly" | "ro", None | Some("true") | Some("1")) => read_only = true,
            ("readonly" | "ro", Some("false") | Some("0")) => read_only = false,
            ("tmpfs-size", Some(s)) => tmpfs.push(format!("size={}", check_size(s)?)),
            ("tmpfs-mode", Some(m)) => tmpfs.push(format!("mode={}", check_mode(m)?)),
            ("consistency" | "bind-propagation" | "volume-nocopy", _) => {}
            _ => return Err(format!("invalid field {field:?} in --mount {spec:?}")),
        }
    }
    if target.is_empty() {
        return Err(format!("--mount {spec:?}: target is required"));
    }
    check_target(&target)?;
    match kind {
        Kind::Bind if !source.starts_with('/') => {
            return Err(format!(
                "--mount {spec:?}: a bind mount needs an absolute source path"
            ));
        }
        Kind::Bind if !std::path::Path::new(&source).is_dir() => {
            return Err(format!(
                "invalid mount config for type \"bind\": bind source path does not exist or is not a directory: {source}"
            ));
        }
        Kind::Volume if !source.is_empty() && !super::valid_name(&source) => {
            return Err(format!("--mount {spec:?}: invalid volume name {source:?}"));
        }
        Kind::Tmpfs if !source.is_empty() => {
            return Err(format!("--mount {spec:?}: a tmpfs has no source"));
        }
        _ => {}
    }
    Ok(MountSpec {
        anonymous: kind == Kind::Volume && source.is_empty(),
        kind,
        source,
        target,
        read_only,
        options: tmpfs.join(","),
    })
}

fn check_size(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || s.len() - digits.len() > 1
    {
        return Err(format!("invalid tmpfs size {s:?}: use e.g. 64m"));
    }
    Ok(s.to_ascii_lowercase())
}

fn check_mode(m: &str) -> Result<String, String> {
    if m.is_empty() || m.len() > 4 || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("invalid tmpfs mode {m:?}: use octal, e.g. 1777"));
    }
    Ok(m.to_string())
}

/// Parses `--tmpfs /path[:size=64m,mode=1777]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, String> {
    let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_target(target)?;
    let mut out = Vec::new();
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", s)) => out.push(format!("size={}", check_size(s)?)),
            Some(("mode", m)) => out.push(format!("mode={}", check_mode(m)?)),
            None if o == "ro" => read_only = true,
            None if matches!(
                o,
                "rw" | "noexec" | "exec" | "nosuid" | "suid" | "nodev" | "dev"
            ) => {}
            _ => {
                return Err(format!(
                    "invalid tmpfs option {o:?} in {spec:?}: size=, mode=, ro"
                ));
            }
        }
    }
    Ok(MountSpec {
        kind: Kind::Tmpfs,
        source: String::new(),
        target: target.to_string(),
        read_only,
        options: out.join(","),
        anonymous: false,
    })
}

/// Refuses two mounts on one target, as Docker does.
pub fn check_duplicates(mounts: &[MountSpec]) -> Result<(), String> {
    for (i, m) in mounts.iter().enumerate() {
        if mounts[..i].iter().any(|o| o.target == m.target) {
            return Err(format!("Duplicate mount point: {}", m.target));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let m = parse_volume("data:/var/lib/data").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.read_only),
            (Kind::Volume, "data", false)
        );
        let m = parse_volume("/srv:/srv:ro").unwrap();
        assert_eq!((m.kind, m.read_only), (Kind::Bind, true));
        let m = parse_volume("/cache").unwrap();
        assert!(m.anonymous && m.kind == Kind::Volume);
        let m = parse_volume("/cache:ro").unwrap();
        assert!(m.anonymous && m.read_only);
        for bad in [
            "",
            "data:",
            "data:rel",
            "a b:/x",
            "data:/x:rx",
            "data:/",
            "data:/proc/x",
            "data:/a/../b",
            ":/x",
            "data:/x,y",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_and_tmpfs() {
        let m = parse_mount("type=bind,source=/tmp,target=/t,readonly").unwrap();
        assert_eq!((m.kind, m.read_only), (Kind::Bind, true));
        let m = parse_mount("type=volume,src=v1,dst=/v").unwrap();
        assert_eq!(m.source, "v1");
        let m = parse_mount("type=tmpfs,target=/scratch,tmpfs-size=64m,tmpfs-mode=1700").unwrap();
        assert_eq!(m.options, "size=64m,mode=1700");
        for bad in [
            "type=bind,source=rel,target=/x",
            "type=bind,source=/nonexistent-mvm,target=/x",
            "type=nfs,target=/x",
            "target=/x,colour=red",
            "type=tmpfs,source=a,target=/x",
            "type=volume",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
        let t = parse_tmpfs("/run:size=64m,mode=755").unwrap();
        assert_eq!(t.options, "size=64m,mode=755");
        assert!(parse_tmpfs("/run:size=lots").is_err());
        assert!(parse_tmpfs("/run:uid=0").is_err());
        assert!(
            check_duplicates(&[parse_tmpfs("/a").unwrap(), parse_volume("/a").unwrap()]).is_err()
        );
    }
}

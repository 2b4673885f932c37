//! What a container mounts: `-v`, `--mount` and `--tmpfs` parsed as Docker reads them.

use mvm_agent_protocol::boot;
use serde::{Deserialize, Deserializer, Serialize};

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
    /// A tmpfs's size and mode; `None` for binds and volumes (and, in a record, for a tmpfs
    /// with the defaults).
    #[serde(
        default,
        alias = "options",
        deserialize_with = "tmpfs_field",
        skip_serializing_if = "Option::is_none"
    )]
    pub tmpfs: Option<TmpfsOptions>,
    /// An anonymous volume (removed with the container by `rm -v` and `--rm`).
    #[serde(default)]
    pub anonymous: bool,
}

/// A tmpfs's options, parsed once at the flag (`--tmpfs /x:size=64m,mode=1777`, or
/// `--mount type=tmpfs,tmpfs-size=64m,tmpfs-mode=1777`) with the agent's own value parsers,
/// so what the flag takes the guest takes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    /// The size limit in bytes; `None` keeps the kernel's default (half the guest's RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The mode of the tmpfs root (in JSON as a number: 1023 is 0o1777).
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    boot::DEFAULT_TMPFS_MODE
}

impl Default for TmpfsOptions {
    fn default() -> Self {
        TmpfsOptions {
            size: None,
            mode: boot::DEFAULT_TMPFS_MODE,
        }
    }
}

/// Reads the typed options, or the text a record written before them holds
/// (`"options": "size=64m,mode=1777"`, empty for binds and volumes).
fn tmpfs_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TmpfsOptions>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Field {
        Typed(Option<TmpfsOptions>),
        Text(String),
    }
    match Field::deserialize(d)? {
        Field::Typed(t) => Ok(t),
        Field::Text(text) if text.is_empty() => Ok(None),
        Field::Text(text) => boot::parse_tmpfs(&format!("/x,{text}"))
            .map(|t| {
                Some(TmpfsOptions {
                    size: t.size,
                    mode: t.mode,
                })
            })
            .map_err(serde::de::Error::custom),
    }
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
        tmpfs: None,
        anonymous: kind == Kind::Volume && source.is_empty(),
    })
}

/// Parses `--mount type=...,source=...,target=...[,readonly]`.
pub fn parse_mount(spec: &str) -> Result<MountSpec, String> {
    let mut kind = Kind::Volume;
    let mut source = String::new();
    let mut target = String::new();
    let mut read_only = false;
    let mut size = None;
    let mut mode = None;
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
            ("tmpfs-size", Some(s)) => set_once(&mut size, tmpfs_size(s)?, field)?,
            ("tmpfs-mode", Some(m)) => set_once(&mut mode, tmpfs_mode(m)?, field)?,
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
        tmpfs: (kind == Kind::Tmpfs).then(|| tmpfs_options(size, mode)),
    })
}

fn tmpfs_options(size: Option<u64>, mode: Option<u32>) -> TmpfsOptions {
    TmpfsOptions {
        size,
        mode: mode.unwrap_or(boot::DEFAULT_TMPFS_MODE),
    }
}

/// Sets an option given at most once (the guest would refuse it twice).
fn set_once<T>(slot: &mut Option<T>, value: T, option: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("tmpfs option {option:?} is given twice"));
    }
    Ok(())
}

/// A tmpfs size in bytes, by the agent's parser.
fn tmpfs_size(s: &str) -> Result<u64, String> {
    boot::parse_tmpfs_size(s).map_err(|why| {
        // The agent's syntax message names its own key (size=); the flag's is shorter.
        if why.starts_with("expected") {
            format!("invalid tmpfs size {s:?}: use e.g. 64m")
        } else {
            format!("invalid tmpfs size {s:?}: {why}")
        }
    })
}

/// A tmpfs mode, by the agent's parser.
fn tmpfs_mode(m: &str) -> Result<u32, String> {
    boot::parse_tmpfs_mode(m).map_err(|_| format!("invalid tmpfs mode {m:?}: use octal, e.g. 1777"))
}

/// Parses `--tmpfs /path[:size=64m,mode=1777]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, String> {
    let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_target(target)?;
    let mut size = None;
    let mut mode = None;
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", s)) => set_once(&mut size, tmpfs_size(s)?, o)?,
            Some(("mode", m)) => set_once(&mut mode, tmpfs_mode(m)?, o)?,
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
        tmpfs: Some(tmpfs_options(size, mode)),
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
        assert_eq!(
            m.tmpfs,
            Some(TmpfsOptions {
                size: Some(64 << 20),
                mode: 0o1700
            })
        );
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
        assert_eq!(
            t.tmpfs,
            Some(TmpfsOptions {
                size: Some(64 << 20),
                mode: 0o755
            })
        );
        assert!(parse_tmpfs("/run:size=lots").is_err());
        assert!(parse_tmpfs("/run:uid=0").is_err());
        assert!(
            check_duplicates(&[parse_tmpfs("/a").unwrap(), parse_volume("/a").unwrap()]).is_err()
        );
    }

    /// `--tmpfs` and `--mount type=tmpfs` give the same typed value, by the agent's parsers.
    #[test]
    fn tmpfs_options_parse_once() {
        for (flag, mount, size, mode) in [
            ("/t", "type=tmpfs,dst=/t", None, 0o1777),
            (
                "/t:size=64m",
                "type=tmpfs,dst=/t,tmpfs-size=64m",
                Some(64 << 20),
                0o1777,
            ),
            (
                "/t:size=2G,mode=0700",
                "type=tmpfs,dst=/t,tmpfs-mode=0700,tmpfs-size=2G",
                Some(2 << 30),
                0o700,
            ),
            (
                "/t:size=100,mode=755,noexec",
                "type=tmpfs,dst=/t,tmpfs-size=100,tmpfs-mode=755",
                Some(100),
                0o755,
            ),
            (
                "/t:size=0",
                "type=tmpfs,dst=/t,tmpfs-size=0",
                Some(0),
                0o1777,
            ),
        ] {
            let want = Some(TmpfsOptions { size, mode });
            assert_eq!(parse_tmpfs(flag).unwrap().tmpfs, want, "{flag}");
            assert_eq!(parse_mount(mount).unwrap().tmpfs, want, "{mount}");
        }
        // Binds and volumes have none, even when tmpfs options are given.
        assert_eq!(parse_volume("data:/x").unwrap().tmpfs, None);
        assert_eq!(
            parse_mount("type=volume,dst=/x,tmpfs-size=1m")
                .unwrap()
                .tmpfs,
            None
        );

        for (bad, why) in [
            ("/t:size=lots", "invalid tmpfs size \"lots\": use e.g. 64m"),
            ("/t:size=1t", "use e.g. 64m"),
            ("/t:size=1mb", "use e.g. 64m"),
            ("/t:size=", "use e.g. 64m"),
            ("/t:size=17179869184g", "64 bits"),
            ("/t:size=18446744073709551616", "use e.g. 64m"),
            (
                "/t:mode=8",
                "invalid tmpfs mode \"8\": use octal, e.g. 1777",
            ),
            ("/t:mode=17777", "use octal"),
            ("/t:size=1m,size=2m", "given twice"),
            ("/t:mode=755,mode=700", "given twice"),
            ("/t:uid=0", "invalid tmpfs option"),
        ] {
            let err = parse_tmpfs(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
            assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        }
        for (bad, why) in [
            ("type=tmpfs,dst=/t,tmpfs-size=lots", "use e.g. 64m"),
            ("type=tmpfs,dst=/t,tmpfs-size=17179869184g", "64 bits"),
            ("type=tmpfs,dst=/t,tmpfs-mode=9", "use octal"),
            (
                "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-size=1m",
                "given twice",
            ),
        ] {
            let err = parse_mount(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// A record keeps the typed options, and still reads the text of a record written before.
    #[test]
    fn mounts_round_trip_through_json() {
        for m in [
            parse_tmpfs("/run:size=64m,mode=755").unwrap(),
            parse_tmpfs("/run").unwrap(),
            parse_volume("data:/var/lib/data:ro").unwrap(),
            parse_volume("/cache").unwrap(),
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<MountSpec>(&json).unwrap(),
                m,
                "{json}"
            );
        }
        let json = serde_json::to_value(parse_tmpfs("/run:size=64m,mode=755").unwrap()).unwrap();
        assert_eq!(
            json["tmpfs"],
            serde_json::json!({"size": 67108864, "mode": 0o755})
        );
        let json = serde_json::to_value(parse_volume("data:/d").unwrap()).unwrap();
        assert!(json.get("tmpfs").is_none(), "{json}");

        let old = |kind: &str, options: &str| {
            serde_json::from_value::<MountSpec>(serde_json::json!({
                "kind": kind, "source": "", "target": "/run", "read_only": false,
                "options": options, "anonymous": false,
            }))
        };
        assert_eq!(
            old("tmpfs", "size=64m,mode=1700").unwrap().tmpfs,
            Some(TmpfsOptions {
                size: Some(64 << 20),
                mode: 0o1700
            })
        );
        assert_eq!(old("tmpfs", "").unwrap().tmpfs, None);
        assert_eq!(old("volume", "").unwrap().tmpfs, None);
        assert!(old("tmpfs", "size=lots").is_err());
        let no_field = serde_json::json!({
            "kind": "bind", "source": "/srv", "target": "/srv", "read_only": true,
        });
        assert_eq!(
            serde_json::from_value::<MountSpec>(no_field).unwrap().tmpfs,
            None
        );
    }
}

//! A bundle's mounts, sorted by what a microVM does with them: host directories and files
//! shared into the guest (bind mounts, later virtio-fs), and kernel filesystems the guest makes
//! itself. Anything else cannot be reproduced inside a VM and refuses the bundle.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount as SpecMount;

use crate::error::BundleError;

/// One entry of `mounts`, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A host path shared into the guest.
    Bind(BindMount),
    /// A filesystem the guest kernel makes.
    Guest(GuestMount),
}

impl Mount {
    /// Where the mount appears in the container.
    pub fn destination(&self) -> &Path {
        match self {
            Mount::Bind(b) => &b.destination,
            Mount::Guest(g) => &g.destination,
        }
    }
}

/// A bind mount (type `bind`, or options with `bind`/`rbind`): Docker's and podman's
/// /etc/hosts, /etc/resolv.conf, /etc/hostname, volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path; a relative source is resolved against the bundle directory, as the spec says.
    /// Not checked here: whether it exists is found when it is shared.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: PathBuf,
    /// `ro` given (the last of `ro`/`rw` wins).
    pub readonly: bool,
    /// `rbind` rather than `bind`.
    pub recursive: bool,
    /// The remaining options (nosuid, nodev, propagation...), kept for the guest side.
    pub options: Vec<String>,
}

/// A kernel filesystem the guest mounts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    /// Which filesystem.
    pub fs: GuestFs,
    /// Absolute path in the container.
    pub destination: PathBuf,
    /// `ro` given (the last of `ro`/`rw` wins).
    pub readonly: bool,
    /// The options as given except ro/rw and, for tmpfs, size/mode (parsed into [`GuestFs`]).
    pub options: Vec<String>,
}

/// The kernel filesystems a guest can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFs {
    /// `proc`.
    Proc,
    /// `sysfs`.
    Sysfs,
    /// `tmpfs` (also type `shm`), with its parsed size and mode.
    Tmpfs {
        /// `size=`.
        size: Option<TmpfsSize>,
        /// `mode=` (octal permission bits).
        mode: Option<u32>,
    },
    /// `devpts`.
    Devpts,
    /// `mqueue`.
    Mqueue,
    /// `cgroup` (v1).
    Cgroup,
    /// `cgroup2`.
    Cgroup2,
}

/// A tmpfs `size=` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsSize {
    /// An absolute size in bytes (k/m/g suffixes applied).
    Bytes(u64),
    /// A percentage of the (guest's) memory.
    Percent(u32),
}

/// Classifies `mounts[index]`; `bundle` resolves relative bind sources.
pub(crate) fn classify(
    config: &Path,
    bundle: &Path,
    index: usize,
    m: &SpecMount,
) -> Result<Mount, BundleError> {
    let destination = m.destination().clone();
    if !destination.is_absolute() {
        return Err(BundleError::NotAbsolute {
            path: config.to_path_buf(),
            field: format!("mounts[{index}].destination"),
            value: destination,
        });
    }
    let bad = |problem: String| BundleError::BadMount {
        path: config.to_path_buf(),
        index,
        destination: destination.clone(),
        problem,
    };
    let given: &[String] = m.options().as_deref().unwrap_or(&[]);
    let mut readonly = false;
    let mut options = Vec::new();
    let mut bind = false;
    let mut recursive = false;
    for o in given {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                recursive = true;
            }
            _ => options.push(o.clone()),
        }
    }
    let typ = m.typ().as_deref();
    if bind || typ == Some("bind") {
        let source = match m.source() {
            Some(s) if !s.as_os_str().is_empty() => s,
            _ => return Err(bad("a bind mount without a source".into())),
        };
        let source = if source.is_absolute() {
            source.clone()
        } else {
            bundle.join(source)
        };
        return Ok(Mount::Bind(BindMount {
            source,
            destination,
            readonly,
            recursive,
            options,
        }));
    }
    let fs = match typ {
        Some("proc") => GuestFs::Proc,
        Some("sysfs") => GuestFs::Sysfs,
        Some("devpts") => GuestFs::Devpts,
        Some("mqueue") => GuestFs::Mqueue,
        Some("cgroup") => GuestFs::Cgroup,
        Some("cgroup2") => GuestFs::Cgroup2,
        Some("tmpfs") | Some("shm") => {
            let mut size = None;
            let mut mode = None;
            let mut rest = Vec::new();
            for o in options {
                if let Some(v) = o.strip_prefix("size=") {
                    size = Some(parse_size(v).ok_or_else(|| bad(format!("bad tmpfs size {v:?}")))?);
                } else if let Some(v) = o.strip_prefix("mode=") {
                    mode = Some(parse_mode(v).ok_or_else(|| bad(format!("bad tmpfs mode {v:?}")))?);
                } else {
                    rest.push(o);
                }
            }
            options = rest;
            GuestFs::Tmpfs { size, mode }
        }
        other => {
            return Err(BundleError::UnknownMountType {
                path: config.to_path_buf(),
                index,
                destination,
                typ: other.unwrap_or("(none)").to_string(),
            });
        }
    };
    Ok(Mount::Guest(GuestMount {
        fs,
        destination,
        readonly,
        options,
    }))
}

/// tmpfs's `size=`: bytes with an optional k/m/g/t suffix (either case), or a percentage.
fn parse_size(v: &str) -> Option<TmpfsSize> {
    if let Some(p) = v.strip_suffix('%') {
        let p: u32 = p.parse().ok()?;
        return (p > 0 && p <= 100).then_some(TmpfsSize::Percent(p));
    }
    let (digits, shift) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 10),
        b'm' | b'M' => (&v[..v.len() - 1], 20),
        b'g' | b'G' => (&v[..v.len() - 1], 30),
        b't' | b'T' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift).map(TmpfsSize::Bytes)
}

/// tmpfs's `mode=`: octal permission bits, at most 07777.
fn parse_mode(v: &str) -> Option<u32> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536k"), Some(TmpfsSize::Bytes(64 << 20)));
        assert_eq!(parse_size("67108864"), Some(TmpfsSize::Bytes(64 << 20)));
        assert_eq!(parse_size("1G"), Some(TmpfsSize::Bytes(1 << 30)));
        assert_eq!(parse_size("50%"), Some(TmpfsSize::Percent(50)));
        for bad in [
            "",
            "k",
            "-1",
            "1.5m",
            "12q",
            "101%",
            "0%",
            "99999999999999999999",
            "18446744073709551615k",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("1777"), Some(0o1777));
        assert_eq!(parse_mode("755"), Some(0o755));
        for bad in ["", "8", "17777", "-1", "rwx"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }
}

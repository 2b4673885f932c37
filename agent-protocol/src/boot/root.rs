//! Where the container root comes from (`mvm.root`) and the single files bound into it
//! (`mvm.file`), for a VM whose root is a host directory shared with virtio-fs (the OCI
//! runtime's bundles) rather than the image and writable disks.

use super::volume::check_target;

/// The virtio-fs tag of the container root when [`RootSource::Share`] is used.
pub const ROOT_SHARE_TAG: &str = "mvmroot";
/// The virtio-fs tag of the read-only directory holding copies of the files `mvm.file` binds
/// (a bundle's `/etc/hosts`, `/etc/resolv.conf`, ...): virtio-fs shares directories, and
/// sharing a file's own directory would show the guest its neighbours.
pub const FILES_SHARE_TAG: &str = "mvmfiles";
/// The longest name of a file in the files share.
pub const MAX_FILE_NAME: usize = 32;

/// The container root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RootSource {
    /// Overlayfs of the image disk and the writable disk (the default).
    #[default]
    Overlay,
    /// The virtio-fs share [`ROOT_SHARE_TAG`] (`mvm.root=share`, or `share-ro` read-only).
    Share {
        /// Mounted with `MS_RDONLY` (the host enforces it too).
        read_only: bool,
    },
}

impl RootSource {
    /// The `mvm.root` value, `None` for the default.
    pub fn encode(self) -> Option<&'static str> {
        match self {
            RootSource::Overlay => None,
            RootSource::Share { read_only: false } => Some("share"),
            RootSource::Share { read_only: true } => Some("share-ro"),
        }
    }

    /// Parses an `mvm.root` value.
    pub fn parse(value: &str) -> Result<RootSource, &'static str> {
        match value {
            "overlay" => Ok(RootSource::Overlay),
            "share" => Ok(RootSource::Share { read_only: false }),
            "share-ro" => Ok(RootSource::Share { read_only: true }),
            _ => Err("expected overlay, share or share-ro"),
        }
    }
}

/// `mvm.file=NAME,/TARGET,ro|rw`: the file NAME of the files share bound at TARGET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    /// 1 to [`MAX_FILE_NAME`] bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
    pub name: String,
    /// The absolute, normalized path in the container.
    pub target: String,
    /// Bound read-only. The share itself is read-only on the host, so a writable bind only
    /// lets the process open the file for writing; what it writes does not reach the host.
    pub read_only: bool,
}

impl FileMount {
    /// Parses an `mvm.file` value.
    pub fn parse(value: &str) -> Result<FileMount, &'static str> {
        let fields: Vec<&str> = value.split(',').collect();
        let [name, target, mode] = fields[..] else {
            return Err("expected NAME,/TARGET,ro|rw");
        };
        if !valid_name(name) {
            return Err("expected a file name of 1 to 32 letters, digits, '_', '.', '-'");
        }
        let target = check_target(target)?;
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err("expected ro or rw after the target"),
        };
        Ok(FileMount {
            name: name.to_string(),
            target,
            read_only,
        })
    }

    /// The `mvm.file` value.
    pub fn encode(&self) -> String {
        format!(
            "{},{},{}",
            self.name,
            self.target,
            if self.read_only { "ro" } else { "rw" }
        )
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_values() {
        for r in [
            RootSource::Share { read_only: false },
            RootSource::Share { read_only: true },
        ] {
            assert_eq!(RootSource::parse(r.encode().unwrap()), Ok(r));
        }
        assert_eq!(RootSource::Overlay.encode(), None);
        assert_eq!(RootSource::parse("overlay"), Ok(RootSource::Overlay));
        assert!(RootSource::parse("disk").is_err());
        assert!(RootSource::parse("").is_err());
    }

    #[test]
    fn file_mounts() {
        let f = FileMount::parse("0,/etc/hosts,rw").unwrap();
        assert_eq!(
            f,
            FileMount {
                name: "0".into(),
                target: "/etc/hosts".into(),
                read_only: false
            }
        );
        assert_eq!(FileMount::parse(&f.encode()), Ok(f));
        for bad in [
            "",
            "0,/etc/hosts",
            "0,/etc/hosts,rw,x",
            "..,/etc/hosts,ro",
            ".,/etc/hosts,ro",
            "a/b,/etc/hosts,ro",
            "0,etc/hosts,ro",
            "0,/etc/../../hosts,ro",
            "0,/etc/hosts,rx",
            "0123456789012345678901234567890123,/x,ro",
        ] {
            assert!(FileMount::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The mount keys of the kernel command line: `mvm.mount` (a virtio-fs share) and `mvm.tmpfs`.
//! Each parser returns the reason a value is bad; `parse_cmdline` turns it into a
//! [`CmdlineError`](super::CmdlineError) naming the key.
//!
//! Both keys are repeatable and land in one list in command-line order, so a mount nested in
//! an earlier one (a tmpfs inside a volume) is made after it.

/// One mount the agent makes in the container root, after /proc, /dev, ... and before the
/// network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerMount {
    /// A virtio-fs share (`mvm.mount`).
    Virtiofs(VirtiofsMount),
    /// A tmpfs (`mvm.tmpfs`).
    Tmpfs(TmpfsMount),
}

impl ContainerMount {
    /// The absolute path in the container.
    pub fn target(&self) -> &str {
        match self {
            ContainerMount::Virtiofs(m) => &m.target,
            ContainerMount::Tmpfs(m) => &m.target,
        }
    }
}

/// `mvm.mount=TAG,/TARGET,ro|rw[,seed|file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtiofsMount {
    /// The virtio-fs device's tag: 1 to 36 bytes of `[A-Za-z0-9_.-]`.
    pub tag: String,
    /// The absolute, normalized path in the container.
    pub target: String,
    /// Mounted with `MS_RDONLY` (the host enforces it too).
    pub read_only: bool,
    /// Copy the image's content at `target` into the share when the share is empty, as
    /// Docker fills a new volume.
    pub seed: bool,
    /// The share holds one regular file, [`SHARED_FILE_NAME`], bound at `target` (a
    /// single-file bind mount, `-v /host/file:/etc/file`).
    pub file: bool,
}

/// The name of the file in a share of [`VirtiofsMount::file`].
pub const SHARED_FILE_NAME: &str = "file";

/// `mvm.tmpfs=/TARGET[,size=SIZE][,mode=OCTAL][,ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// The absolute, normalized path in the container.
    pub target: String,
    /// The size limit in bytes; `None` keeps the kernel's default (half the RAM). 0 is the
    /// kernel's "no limit".
    pub size: Option<u64>,
    /// The mode of the tmpfs root, at most 0o7777; default 0o1777.
    pub mode: u32,
    /// Mounted with `MS_RDONLY`.
    pub read_only: bool,
}

/// The longest virtio-fs tag: the size of `tag` in `struct virtio_fs_config`.
pub const MAX_TAG_LEN: usize = 36;

/// The default mode of a tmpfs root, as Docker's `--tmpfs`.
pub const DEFAULT_TMPFS_MODE: u32 = 0o1777;

/// Parses the value of one `mvm.mount` key.
pub fn parse_mount(value: &str) -> Result<VirtiofsMount, &'static str> {
    const SYNTAX: &str = "expected TAG,/TARGET,ro|rw[,seed|file]";
    let fields: Vec<&str> = value.split(',').collect();
    if !(3..=4).contains(&fields.len()) {
        return Err(SYNTAX);
    }
    let tag = fields[0];
    if !valid_tag(tag) {
        return Err("expected a tag of 1 to 36 letters, digits, '_', '.', '-'");
    }
    let target = check_target(fields[1])?;
    let read_only = match fields[2] {
        "ro" => true,
        "rw" => false,
        _ => return Err("expected ro or rw after the target"),
    };
    let (seed, file) = match fields.get(3) {
        None => (false, false),
        Some(&"seed") => (true, false),
        Some(&"file") => (false, true),
        Some(_) => return Err(SYNTAX),
    };
    if read_only && seed {
        // The host shares a read-only volume read-only: the agent could not write the copy.
        return Err("a read-only volume cannot be seeded in the guest");
    }
    Ok(VirtiofsMount {
        tag: tag.to_string(),
        target,
        read_only,
        seed,
        file,
    })
}

/// Parses the value of one `mvm.tmpfs` key.
pub fn parse_tmpfs(value: &str) -> Result<TmpfsMount, &'static str> {
    let mut fields = value.split(',');
    let target = check_target(fields.next().unwrap_or(""))?;
    let mut size = None;
    let mut mode = None;
    let mut read_only = false;
    for option in fields {
        let (name, arg) = match option.split_once('=') {
            Some((name, arg)) => (name, Some(arg)),
            None => (option, None),
        };
        let repeated = match (name, arg) {
            ("size", Some(s)) => size.replace(parse_tmpfs_size(s)?).is_some(),
            ("mode", Some(m)) => mode.replace(parse_tmpfs_mode(m)?).is_some(),
            ("ro", None) => std::mem::replace(&mut read_only, true),
            _ => return Err("expected /TARGET[,size=SIZE][,mode=OCTAL][,ro]"),
        };
        if repeated {
            return Err("an option is given twice");
        }
    }
    Ok(TmpfsMount {
        target,
        size,
        mode: mode.unwrap_or(DEFAULT_TMPFS_MODE),
        read_only,
    })
}

fn valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Directories whose content the kernel owns: nothing may be mounted in them.
pub const KERNEL_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Whether `path` (absolute, normalized) is one of [`KERNEL_DIRS`] or inside one.
pub fn in_kernel_dir(path: &str) -> bool {
    KERNEL_DIRS.iter().any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A mount target: absolute, normalized (no `.` or `..` component, no `//`, no trailing
/// `/`), not `/`, not in a kernel file system, without commas, whitespace, control characters
/// or quotes, shorter than `PATH_MAX`.
pub fn check_target(target: &str) -> Result<String, &'static str> {
    if !target.starts_with('/') {
        return Err("expected an absolute target path");
    }
    if target == "/" {
        return Err("the container's root cannot be a mount target");
    }
    if target.len() >= 4096 {
        return Err("the target path is too long");
    }
    if target
        .chars()
        .any(|c| c == ',' || c == '"' || c.is_whitespace() || c.is_control())
    {
        return Err("the target has a comma, a quote, whitespace or a control character");
    }
    if target[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("expected a normalized target (no '.', '..', '//' or trailing '/')");
    }
    if in_kernel_dir(target) {
        return Err("the target is in /proc, /sys or /dev");
    }
    Ok(target.to_string())
}

/// A tmpfs size: decimal digits with an optional `k`, `m` or `g` suffix (either case; powers
/// of 1024), in bytes. The host's `--tmpfs` and `--mount` flags use it too, so a size is
/// refused at the flag exactly when the agent would refuse it.
pub fn parse_tmpfs_size(s: &str) -> Result<u64, &'static str> {
    const SYNTAX: &str = "expected size=DIGITS[k|m|g]";
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SYNTAX);
    }
    let n: u64 = digits.parse().map_err(|_| SYNTAX)?;
    n.checked_mul(1u64 << shift)
        .ok_or("the size does not fit in 64 bits")
}

/// A tmpfs mode: 1 to 4 octal digits, at most 7777 (shared with the host's flags, as
/// [`parse_tmpfs_size`]).
pub fn parse_tmpfs_mode(m: &str) -> Result<u32, &'static str> {
    const SYNTAX: &str = "expected mode=OCTAL, e.g. mode=1777";
    if m.is_empty() || m.len() > 4 || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(SYNTAX);
    }
    u32::from_str_radix(m, 8).map_err(|_| SYNTAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_good() {
        let m = parse_mount("vol0,/data,rw").unwrap();
        assert_eq!(
            m,
            VirtiofsMount {
                tag: "vol0".into(),
                target: "/data".into(),
                read_only: false,
                seed: false,
                file: false
            }
        );
        let m = parse_mount("a.B_c-9,/srv/www/html,ro").unwrap();
        assert!(m.read_only && !m.seed);
        let f = parse_mount("f0,/etc/app.conf,ro,file").unwrap();
        assert!(f.read_only && f.file && !f.seed);
        assert_eq!(m.target, "/srv/www/html");
        let m = parse_mount("v1,/var/lib/mysql,rw,seed").unwrap();
        assert!(!m.read_only && m.seed);
        let tag = "t".repeat(MAX_TAG_LEN);
        assert_eq!(parse_mount(&format!("{tag},/x,rw")).unwrap().tag, tag);
        // Names that merely start like a kernel directory are fine.
        assert_eq!(parse_mount("v,/devices,rw").unwrap().target, "/devices");
        assert_eq!(parse_mount("v,/proc2/x,rw").unwrap().target, "/proc2/x");
        assert_eq!(parse_mount("v,/a:b/...x,rw").unwrap().target, "/a:b/...x");
    }

    #[test]
    fn mount_bad() {
        let long_tag = format!("{},/x,rw", "t".repeat(MAX_TAG_LEN + 1));
        for (bad, why) in [
            ("", "TAG,/TARGET"),
            ("vol", "TAG,/TARGET"),
            ("vol,/data", "TAG,/TARGET"),
            ("vol,/data,rw,seed,x", "TAG,/TARGET"),
            ("vol,/data,rw,", "TAG,/TARGET"),
            ("vol,/data,rw,Seed", "TAG,/TARGET"),
            (",/data,rw", "tag"),
            ("v/l,/data,rw", "tag"),
            ("v l,/data,rw", "tag"),
            ("völ,/data,rw", "tag"),
            (&long_tag, "tag"),
            ("vol,data,rw", "absolute"),
            ("vol,,rw", "absolute"),
            ("vol,/,rw", "root"),
            ("vol,/data/,rw", "normalized"),
            ("vol,//data,rw", "normalized"),
            ("vol,/a//b,rw", "normalized"),
            ("vol,/a/./b,rw", "normalized"),
            ("vol,/a/../b,rw", "normalized"),
            ("vol,/..,rw", "normalized"),
            ("vol,/.,rw", "normalized"),
            ("vol,/proc,rw", "/proc"),
            ("vol,/proc/sys,rw", "/proc"),
            ("vol,/sys/fs/cgroup,rw", "/proc"),
            ("vol,/dev,rw", "/proc"),
            ("vol,/dev/shm,rw", "/proc"),
            ("vol,/a b,rw", "whitespace"),
            ("vol,/a\tb,rw", "whitespace"),
            ("vol,/a\"b,rw", "quote"),
            ("vol,/a\u{1}b,rw", "control"),
            ("vol,/data,RW", "ro or rw"),
            ("vol,/data,", "ro or rw"),
            ("vol,/data,readonly", "ro or rw"),
            ("vol,/data,ro,seed", "read-only"),
        ] {
            let err = parse_mount(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = format!("vol,/{},rw", "a".repeat(4096));
        assert!(parse_mount(&long).unwrap_err().contains("too long"));
    }

    #[test]
    fn tmpfs_good() {
        let t = parse_tmpfs("/run").unwrap();
        assert_eq!(
            t,
            TmpfsMount {
                target: "/run".into(),
                size: None,
                mode: 0o1777,
                read_only: false
            }
        );
        let t = parse_tmpfs("/run,size=64m,mode=755").unwrap();
        assert_eq!((t.size, t.mode), (Some(64 << 20), 0o755));
        let t = parse_tmpfs("/x/y,mode=0700,size=100").unwrap();
        assert_eq!(
            (t.size, t.mode, t.target.as_str()),
            (Some(100), 0o700, "/x/y")
        );
        for (size, bytes) in [
            ("0", 0),
            ("1k", 1024),
            ("2K", 2048),
            ("3M", 3 << 20),
            ("4g", 4 << 30),
            ("5G", 5 << 30),
            ("18446744073709551615", u64::MAX),
            ("17179869183g", 17179869183 << 30),
        ] {
            let t = parse_tmpfs(&format!("/t,size={size}")).unwrap();
            assert_eq!(t.size, Some(bytes), "{size}");
        }
        for (mode, bits) in [("0", 0), ("7", 7), ("1777", 0o1777), ("7777", 0o7777)] {
            assert_eq!(parse_tmpfs(&format!("/t,mode={mode}")).unwrap().mode, bits);
        }
        assert!(parse_tmpfs("/t,ro").unwrap().read_only);
    }

    #[test]
    fn tmpfs_bad() {
        for (bad, why) in [
            ("", "absolute"),
            ("run", "absolute"),
            ("/", "root"),
            ("/run/", "normalized"),
            ("/run/../etc", "normalized"),
            ("/dev/shm", "/proc"),
            ("/run,", "expected /TARGET"),
            ("/run,,size=1m", "expected /TARGET"),
            ("/run,size", "expected /TARGET"),
            ("/run,rw", "expected /TARGET"),
            ("/run,exec", "expected /TARGET"),
            ("/run,uid=0", "expected /TARGET"),
            ("/run,Size=1m", "expected /TARGET"),
            ("/run,size=", "size="),
            ("/run,size=m", "size="),
            ("/run,size=1t", "size="),
            ("/run,size=1mb", "size="),
            ("/run,size=-1", "size="),
            ("/run,size=+1", "size="),
            ("/run,size=1.5m", "size="),
            ("/run,size= 1", "size="),
            ("/run,size=18446744073709551616", "size="),
            ("/run,size=17179869184g", "64 bits"),
            ("/run,size=1m,size=2m", "twice"),
            ("/run,mode=", "mode="),
            ("/run,mode=8", "mode="),
            ("/run,mode=17777", "mode="),
            ("/run,mode=0x1ff", "mode="),
            ("/run,mode=+755", "mode="),
            ("/run,mode=755,mode=700", "twice"),
            ("/run,ro,ro", "twice"),
        ] {
            let err = parse_tmpfs(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}

//! /etc/hostname, /etc/hosts and /etc/resolv.conf in the container.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use super::{BootError, io_err};
use crate::cmdline::BootConfig;

/// The container's /etc/hosts.
pub fn hosts_content(hostname: Option<&str>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(name) = hostname {
        // Until the container has a network address, its name resolves to loopback (the
        // Debian convention), so `hostname -i` and self-connections work.
        let _ = writeln!(s, "127.0.1.1\t{name}");
    }
    s
}

/// The container's /etc/resolv.conf for the given servers.
pub fn resolv_content(dns: &[IpAddr]) -> String {
    let mut s = String::new();
    for server in dns {
        let _ = writeln!(s, "nameserver {server}");
    }
    s
}

/// Writes the files under `root` (`/` in the guest, after pivot_root, so that links in the
/// image resolve inside the container). resolv.conf is left alone unless DNS servers are
/// configured.
pub fn write_etc_files(root: &Path, config: &BootConfig) -> Result<(), BootError> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(io_err(format!("creating {}", etc.display())))?;
    let write = |name: &str, content: String| {
        let path = etc.join(name);
        std::fs::write(&path, content).map_err(io_err(format!("writing {}", path.display())))
    };
    if let Some(name) = &config.hostname {
        write("hostname", format!("{name}\n"))?;
    }
    write("hosts", hosts_content(config.hostname.as_deref()))?;
    if !config.dns.is_empty() {
        write("resolv.conf", resolv_content(&config.dns))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn files() {
        let dir = TempDir::new("etc");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
        let mut config = BootConfig {
            hostname: Some("box".into()),
            ..Default::default()
        };
        write_etc_files(dir.path(), &config).unwrap();
        let read = |n: &str| std::fs::read_to_string(etc.join(n)).unwrap();
        assert_eq!(read("hostname"), "box\n");
        assert!(read("hosts").contains("127.0.0.1\tlocalhost\n"));
        assert!(read("hosts").contains("::1\tlocalhost"));
        assert!(read("hosts").ends_with("127.0.1.1\tbox\n"));
        assert_eq!(read("resolv.conf"), "nameserver 9.9.9.9\n");

        config.dns = vec!["1.1.1.1".parse().unwrap(), "::1".parse().unwrap()];
        write_etc_files(dir.path(), &config).unwrap();
        assert_eq!(read("resolv.conf"), "nameserver 1.1.1.1\nnameserver ::1\n");

        let empty = TempDir::new("etc-empty");
        write_etc_files(empty.path(), &BootConfig::default()).unwrap();
        assert!(!empty.path().join("etc/hostname").exists());
        assert!(!hosts_content(None).contains("127.0.1.1"));
    }
}

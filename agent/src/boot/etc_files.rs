//! /etc/hostname, /etc/hosts and /etc/resolv.conf in the container.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::{BootError, io_err};
use mvm_agent_protocol::boot::{BootConfig, HostEntry};

/// The container's /etc/hosts: localhost, the container's own name on its first address (on
/// loopback without a network), then the extra entries (`mvm.hosts`).
pub fn hosts_content(
    hostname: Option<&str>,
    addr: Option<Ipv4Addr>,
    extra: &[HostEntry],
) -> String {
    // Docker's lines, in Docker's order.
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(name) = hostname {
        match addr {
            Some(addr) => {
                let _ = writeln!(s, "{addr}\t{name}");
            }
            // Without a network address, the name resolves to loopback (the Debian
            // convention), so `hostname -i` and self-connections work.
            None => {
                let _ = writeln!(s, "127.0.1.1\t{name}");
            }
        }
    }
    for entry in extra {
        let _ = writeln!(s, "{}\t{}", entry.addr, entry.name);
    }
    s
}

/// The container's /etc/resolv.conf as Docker writes it: `search`, `nameserver` lines for
/// `dns`, `options`, each only when there are any.
pub fn resolv_content(dns: &[IpAddr], search: &[String], options: &[String]) -> String {
    let servers: Vec<String> = dns.iter().map(|d| format!("nameserver {d}")).collect();
    resolv_lines(&servers, search, options)
}

/// Docker's order: `search`, the `nameserver` lines, `options`.
fn resolv_lines(servers: &[String], search: &[String], options: &[String]) -> String {
    let mut s = String::new();
    if !search.is_empty() {
        let _ = writeln!(s, "search {}", search.join(" "));
    }
    for line in servers {
        let _ = writeln!(s, "{line}");
    }
    if !options.is_empty() {
        let _ = writeln!(s, "options {}", options.join(" "));
    }
    s
}

/// `resolv` with its `nameserver` lines replaced by one for `dns` (search and options kept).
pub fn replace_nameservers(resolv: &str, dns: std::net::Ipv4Addr) -> String {
    let mut s = format!("nameserver {dns}\n");
    for line in resolv.lines() {
        if line.split_whitespace().next() != Some("nameserver") {
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

/// What to write to resolv.conf, if anything: nothing when no DNS key was given (the image's
/// file stays); the image's `nameserver` lines when only `mvm.search` or `mvm.dnsopt` was
/// (as Docker keeps the host's servers for `--dns-search` alone).
fn resolv_for(config: &BootConfig, existing: Option<&str>) -> Option<String> {
    if !config.dns.is_empty() {
        return Some(resolv_content(
            &config.dns,
            &config.dns_search,
            &config.dns_options,
        ));
    }
    if config.dns_search.is_empty() && config.dns_options.is_empty() {
        return None;
    }
    let servers: Vec<String> = existing
        .unwrap_or("")
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .map(|l| l.trim().to_string())
        .collect();
    Some(resolv_lines(
        &servers,
        &config.dns_search,
        &config.dns_options,
    ))
}

/// Writes the files under `root` (`/` in the guest, after pivot_root, so that links in the
/// image resolve inside the container). resolv.conf is left alone unless a DNS key
/// (`mvm.dns`, `mvm.search`, `mvm.dnsopt`) is given.
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
    write(
        "hosts",
        hosts_content(
            config.hostname.as_deref(),
            config.net.first().map(|n| n.addr),
            &config.extra_hosts,
        ),
    )?;
    // An image without the file, or with a dangling link, simply has no servers to keep.
    let existing = std::fs::read_to_string(etc.join("resolv.conf")).ok();
    if let Some(content) = resolv_for(config, existing.as_deref()) {
        write("resolv.conf", content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use mvm_agent_protocol::boot::parse_cmdline;

    const DOCKER_LINES: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
        fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
        ff02::2\tip6-allrouters\n";

    #[test]
    fn nameservers_replaced_search_kept() {
        let dns = std::net::Ipv4Addr::new(10, 90, 0, 1);
        assert_eq!(
            replace_nameservers(
                "nameserver 10.89.0.1\nsearch a.example\noptions ndots:2\n",
                dns
            ),
            "nameserver 10.90.0.1\nsearch a.example\noptions ndots:2\n"
        );
        assert_eq!(replace_nameservers("", dns), "nameserver 10.90.0.1\n");
    }

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
        assert_eq!(read("hosts"), format!("{DOCKER_LINES}127.0.1.1\tbox\n"));
        assert_eq!(read("resolv.conf"), "nameserver 9.9.9.9\n");

        config.dns = vec!["1.1.1.1".parse().unwrap(), "::1".parse().unwrap()];
        write_etc_files(dir.path(), &config).unwrap();
        assert_eq!(read("resolv.conf"), "nameserver 1.1.1.1\nnameserver ::1\n");

        let empty = TempDir::new("etc-empty");
        write_etc_files(empty.path(), &BootConfig::default()).unwrap();
        assert!(!empty.path().join("etc/hostname").exists());
        assert!(!empty.path().join("etc/resolv.conf").exists());
        assert!(!hosts_content(None, None, &[]).contains("127.0.1.1"));
    }

    #[test]
    fn files_with_a_network() {
        let config = parse_cmdline(
            "mvm.hostname=web mvm.net=02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1,1500 \
             mvm.net=02:42:0a:59:00:02,10.89.0.2/16,- mvm.dns=10.88.0.1,1.1.1.1 \
             mvm.search=example.com,corp mvm.dnsopt=ndots:0,rotate \
             mvm.hosts=db:10.88.0.5,v6:fd00::5",
        )
        .unwrap();
        let dir = TempDir::new("etc-net");
        write_etc_files(dir.path(), &config).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.path().join("etc").join(n)).unwrap();
        assert_eq!(
            read("hosts"),
            format!(
                "{DOCKER_LINES}10.88.0.2\tweb\n\
             10.88.0.5\tdb\n\
             fd00::5\tv6\n"
            )
        );
        assert_eq!(
            read("resolv.conf"),
            "search example.com corp\nnameserver 10.88.0.1\nnameserver 1.1.1.1\n\
             options ndots:0 rotate\n"
        );
        assert_eq!(read("hostname"), "web\n");

        // Without a hostname, the address has no name to carry; the extra entries still come.
        let hosts = hosts_content(None, Some(Ipv4Addr::new(10, 88, 0, 2)), &config.extra_hosts);
        assert_eq!(hosts, format!("{DOCKER_LINES}10.88.0.5\tdb\nfd00::5\tv6\n"));
    }

    #[test]
    fn search_and_options_keep_the_images_servers() {
        let dir = TempDir::new("etc-search");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "# from the image\nnameserver 9.9.9.9\n  nameserver\t8.8.8.8\nsearch old\noptions edns0\n",
        )
        .unwrap();
        let config = parse_cmdline("mvm.search=new.example mvm.dnsopt=ndots:1").unwrap();
        write_etc_files(dir.path(), &config).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("resolv.conf")).unwrap(),
            "search new.example\nnameserver 9.9.9.9\nnameserver\t8.8.8.8\noptions ndots:1\n"
        );

        // No image file: just the search line.
        let dir = TempDir::new("etc-search-none");
        let config = parse_cmdline("mvm.search=a.example").unwrap();
        write_etc_files(dir.path(), &config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/resolv.conf")).unwrap(),
            "search a.example\n"
        );
        assert_eq!(
            resolv_content(&[], &[], &["rotate".to_string()]),
            "options rotate\n"
        );
    }
}

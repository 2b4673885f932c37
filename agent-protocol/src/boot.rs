//! The agent's boot configuration, which the host passes on the guest kernel's command line
//! as `mvm.*` words: the typed [`BootConfig`], its one encoder ([`BootConfig::encode`]) and
//! its one parser ([`parse_cmdline`]), with the disk order and the virtio-fs tag scheme both
//! ends rely on.
//!
//! The parser is strict: the words come from the host, but every value ends up in a mount, an
//! ioctl or a file of the container, so a value that would need guessing is refused with the
//! key, the value and the reason. The encoder checks its output with the parser, so the host
//! never boots a VM whose agent would refuse (or misread) its configuration.

mod net;
mod root;
mod volume;

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::DEFAULT_VSOCK_PORT;

pub use net::{HostEntry, MAX_MTU, MIN_MTU, MacAddr, NetConfig, parse_hosts};
pub use root::{FILES_SHARE_TAG, FileMount, MAX_FILE_NAME, ROOT_SHARE_TAG, RootSource};
pub use volume::{
    ContainerMount, DEFAULT_TMPFS_MODE, KERNEL_DIRS, MAX_TAG_LEN, SHARED_FILE_NAME, TmpfsMount,
    VirtiofsMount, check_target, in_kernel_dir, parse_mount, parse_tmpfs, parse_tmpfs_mode,
    parse_tmpfs_size,
};

/// The agent's disk, the guest's read-only EROFS root holding `/mvm-agent`: the VM's first
/// virtio-blk device.
pub const DISK_AGENT: &str = "/dev/vda";
/// The image disk (`mvm.lower`), the overlay's read-only layer: the second virtio-blk device.
pub const DISK_IMAGE: &str = "/dev/vdb";
/// The container's writable ext4 disk (`mvm.upper`): the third virtio-blk device.
pub const DISK_UPPER: &str = "/dev/vdc";
/// The guest's device names in the order the host attaches the disks: the kernel names
/// virtio-blk devices `vda`, `vdb`, ... in probe order, which is the order the VMM adds them.
pub const DISK_ORDER: [&str; 3] = [DISK_AGENT, DISK_IMAGE, DISK_UPPER];

/// The virtio-fs tag of the container's `i`th share (volume or bind mount, counted in mount
/// order, tmpfs mounts skipped): the host gives the device this tag and names it in
/// `mvm.mount`. At most 25 bytes, within [`MAX_TAG_LEN`].
pub fn share_tag(i: usize) -> String {
    format!("mvmfs{i}")
}

/// File system types the image disk may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerFs {
    /// ext4, mounted read-only.
    Ext4,
    /// EROFS.
    Erofs,
}

impl LowerFs {
    /// The name `mount(2)` wants.
    pub fn fstype(self) -> &'static str {
        match self {
            LowerFs::Ext4 => "ext4",
            LowerFs::Erofs => "erofs",
        }
    }
}

/// What the agent needs to know before the host connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The container root (`mvm.root`): the overlay of the disks below (default) or a
    /// virtio-fs share of a host directory.
    pub root: RootSource,
    /// Files of the files share bound into the container (`mvm.file`, repeatable), made
    /// before the mounts.
    pub files: Vec<FileMount>,
    /// The image disk (`mvm.lower`, default `/dev/vdb`), the overlay's read-only layer.
    pub lower: String,
    /// The image disk's file system (`mvm.lowerfs`, default ext4).
    pub lower_fs: LowerFs,
    /// The container's writable ext4 disk (`mvm.upper`); without it the writable layer is a
    /// tmpfs and vanishes with the VM.
    pub upper: Option<String>,
    /// The container's hostname (`mvm.hostname`).
    pub hostname: Option<String>,
    /// DNS servers for `/etc/resolv.conf` (`mvm.dns=IP[,IP...]`).
    pub dns: Vec<IpAddr>,
    /// DNS search domains, resolv.conf's `search` line (`mvm.search=DOMAIN[,DOMAIN...]`).
    pub dns_search: Vec<String>,
    /// Resolver options, resolv.conf's `options` line (`mvm.dnsopt=OPT[,OPT...]`).
    pub dns_options: Vec<String>,
    /// The network interfaces, in the order of their `mvm.net` keys (one key per NIC).
    pub net: Vec<NetConfig>,
    /// Extra /etc/hosts entries (`mvm.hosts=NAME:IP[,NAME:IP...]`, repeatable).
    pub extra_hosts: Vec<HostEntry>,
    /// Volumes and tmpfs mounts (`mvm.mount`, `mvm.tmpfs`, repeatable), in command-line order.
    pub mounts: Vec<ContainerMount>,
    /// The vsock port to listen on (`mvm.port`).
    pub port: u32,
    /// A host port to connect to once ready (`mvm.callback`): the first session runs over
    /// that connection, so the host never has to poll for the agent while the guest boots.
    pub callback: Option<u32>,
    /// Answer DNS on 127.0.0.11:53 in the guest through the host's relay
    /// (`mvm.dnsrelay=1`, see [`crate::dns`]).
    pub dns_relay: bool,
    /// The size of /dev/shm in bytes (`mvm.shm=SIZE`, `--shm-size`); Docker's 64 MiB when
    /// `None`.
    pub shm_size: Option<u64>,
    /// Log to the console (`mvm.debug=1`).
    pub debug: bool,
    /// Export mode (`mvm.export=1`): a helper VM that reads a stopped container's changes
    /// or files. The image and writable disks are mounted read-only, their overlay is the
    /// root, and nothing is run; the requests served are `export` and `copy_out`.
    pub export: bool,
    /// With `export`, the writable disk mounted read-write (`mvm.export=rw`): the helper
    /// also serves `copy_in`, into a stopped container.
    pub export_writable: bool,
    /// A template VM (`mvm.template=1`, see [`crate::warm`]): the agent touches no disk and
    /// waits for a warm boot to learn its container.
    pub template: bool,
}

impl Default for BootConfig {
    fn default() -> BootConfig {
        BootConfig {
            root: RootSource::Overlay,
            files: Vec::new(),
            lower: DISK_IMAGE.to_string(),
            lower_fs: LowerFs::Ext4,
            upper: None,
            hostname: None,
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            net: Vec::new(),
            extra_hosts: Vec::new(),
            mounts: Vec::new(),
            port: DEFAULT_VSOCK_PORT,
            callback: None,
            dns_relay: false,
            shm_size: None,
            debug: false,
            export: false,
            export_writable: false,
            template: false,
        }
    }
}

/// A `mvm.*` key with a value the agent cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad kernel command line value {key}={value:?}: {reason}")]
pub struct CmdlineError {
    /// The key, with its `mvm.` prefix.
    pub key: String,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A boolean key: bare or `1`/`true`/`yes`/`on`, or `0`/`false`/`no`/`off`.
fn flag(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("1") | Some("true") | Some("yes") | Some("on") => Some(true),
        Some("0") | Some("false") | Some("no") | Some("off") => Some(false),
        _ => None,
    }
}

/// Parses `/proc/cmdline`. Keys other than `mvm.*` belong to the kernel and are ignored, as
/// are unknown `mvm.*` keys (a newer host may pass more). A later key overrides an earlier one,
/// except `mvm.net`, `mvm.hosts`, `mvm.file`, `mvm.mount` and `mvm.tmpfs`, whose values accumulate.
pub fn parse_cmdline(cmdline: &str) -> Result<BootConfig, CmdlineError> {
    let mut config = BootConfig::default();
    for word in split_words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        let Some(name) = key.strip_prefix("mvm.") else {
            continue;
        };
        let bad = |reason| CmdlineError {
            key: key.to_string(),
            value: value.unwrap_or("").to_string(),
            reason,
        };
        match name {
            "root" => {
                config.root = RootSource::parse(value.unwrap_or("")).map_err(bad)?;
            }
            "file" => {
                let file =
                    FileMount::parse(value.ok_or_else(|| bad("expected NAME,/TARGET,ro|rw"))?)
                        .map_err(bad)?;
                if config.files.iter().any(|f| f.target == file.target) {
                    return Err(bad("the target is in an earlier mvm.file"));
                }
                config.files.push(file);
            }
            "lower" => config.lower = device(value).ok_or_else(|| bad(DEVICE))?,
            "upper" => config.upper = Some(device(value).ok_or_else(|| bad(DEVICE))?),
            "lowerfs" => {
                config.lower_fs = match value {
                    Some("ext4") => LowerFs::Ext4,
                    Some("erofs") => LowerFs::Erofs,
                    _ => return Err(bad("expected ext4 or erofs")),
                }
            }
            "hostname" => {
                let name = value.unwrap_or("");
                if !valid_hostname(name) {
                    return Err(bad(
                        "expected 1 to 64 characters of letters, digits, '-', '.', '_'",
                    ));
                }
                config.hostname = Some(name.to_string());
            }
            "dns" => {
                config.dns = value
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<IpAddr>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("expected comma-separated IP addresses"))?;
            }
            "search" => {
                config.dns_search =
                    net::parse_search(value.ok_or_else(|| bad("expected DOMAIN[,DOMAIN...]"))?)
                        .map_err(bad)?;
            }
            "dnsopt" => {
                config.dns_options = net::parse_dns_options(
                    value.ok_or_else(|| bad("expected OPTION[,OPTION...]"))?,
                )
                .map_err(bad)?;
            }
            "hosts" => {
                let entries =
                    net::parse_hosts(value.ok_or_else(|| bad("expected NAME:IP[,NAME:IP...]"))?)
                        .map_err(bad)?;
                config.extra_hosts.extend(entries);
            }
            "net" => {
                let nic = NetConfig::parse(
                    value.ok_or_else(|| bad("expected MAC,ADDR/PREFIX,GATEWAY[,MTU]"))?,
                )
                .map_err(bad)?;
                if config.net.iter().any(|n| n.mac == nic.mac) {
                    return Err(bad("the MAC address is in an earlier mvm.net"));
                }
                config.net.push(nic);
            }
            "mount" => {
                let mount = volume::parse_mount(
                    value.ok_or_else(|| bad("expected TAG,/TARGET,ro|rw[,seed]"))?,
                )
                .map_err(bad)?;
                check_new_mount(&config.mounts, &mount.target).map_err(bad)?;
                // One tag may be mounted at several targets (`-v vol:/a -v vol:/b`): the
                // mounts share one virtio-fs superblock.
                config.mounts.push(ContainerMount::Virtiofs(mount));
            }
            "tmpfs" => {
                let tmpfs = volume::parse_tmpfs(
                    value.ok_or_else(|| bad("expected /TARGET[,size=SIZE][,mode=OCTAL][,ro]"))?,
                )
                .map_err(bad)?;
                check_new_mount(&config.mounts, &tmpfs.target).map_err(bad)?;
                config.mounts.push(ContainerMount::Tmpfs(tmpfs));
            }
            "port" => {
                config.port = value
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|p| *p != 0 && *p != u32::MAX)
                    .ok_or_else(|| bad("expected a vsock port number"))?;
            }
            "callback" => {
                config.callback = Some(
                    value
                        .and_then(|v| v.parse::<u32>().ok())
                        .filter(|p| *p != 0 && *p != u32::MAX)
                        .ok_or_else(|| bad("expected a vsock port number"))?,
                );
            }
            "debug" => config.debug = flag(value).ok_or_else(|| bad("expected 0 or 1"))?,
            "dnsrelay" => config.dns_relay = flag(value).ok_or_else(|| bad("expected 0 or 1"))?,
            "shm" => {
                config.shm_size = Some(
                    value
                        .and_then(|v| parse_tmpfs_size(v).ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("expected a size, DIGITS[k|m|g]"))?,
                );
            }
            "export" if value == Some("rw") => {
                config.export = true;
                config.export_writable = true;
            }
            "export" => config.export = flag(value).ok_or_else(|| bad("expected 0, 1 or rw"))?,
            "template" => config.template = flag(value).ok_or_else(|| bad("expected 0 or 1"))?,
            _ => {}
        }
    }
    Ok(config)
}

/// A [`BootConfig`] that cannot be passed to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A value the agent's parser refuses.
    #[error("the agent would refuse its boot configuration: {0}")]
    Refused(#[from] CmdlineError),
    /// A value that reads back differently, e.g. one with whitespace or a quote, which would
    /// split into other words.
    #[error("the boot configuration does not survive the kernel command line: {0:?}")]
    Changed(String),
}

impl BootConfig {
    /// The `mvm.*` words of the kernel command line that [`parse_cmdline`] reads back as this
    /// configuration, separated by spaces. Keys at their default value are left out, except
    /// the disks, which are always written down.
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut words = vec![
            format!("mvm.lower={}", self.lower),
            format!("mvm.lowerfs={}", self.lower_fs.fstype()),
        ];
        if let Some(upper) = &self.upper {
            words.push(format!("mvm.upper={upper}"));
        }
        if let Some(root) = self.root.encode() {
            words.push(format!("mvm.root={root}"));
        }
        for file in &self.files {
            words.push(format!("mvm.file={}", file.encode()));
        }
        if self.port != DEFAULT_VSOCK_PORT {
            words.push(format!("mvm.port={}", self.port));
        }
        if let Some(callback) = self.callback {
            words.push(format!("mvm.callback={callback}"));
        }
        if let Some(hostname) = &self.hostname {
            words.push(format!("mvm.hostname={hostname}"));
        }
        for nic in &self.net {
            let mut w = format!("mvm.net={},{}/{},", nic.mac, nic.addr, nic.prefix);
            match nic.gateway {
                Some(gw) => write!(w, "{gw}"),
                None => write!(w, "-"),
            }
            .ok();
            if let Some(mtu) = nic.mtu {
                write!(w, ",{mtu}").ok();
            }
            words.push(w);
        }
        let join = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        if !self.dns.is_empty() {
            words.push(format!(
                "mvm.dns={}",
                join(&mut self.dns.iter().map(IpAddr::to_string))
            ));
        }
        if !self.dns_search.is_empty() {
            words.push(format!("mvm.search={}", self.dns_search.join(",")));
        }
        if !self.dns_options.is_empty() {
            words.push(format!("mvm.dnsopt={}", self.dns_options.join(",")));
        }
        if !self.extra_hosts.is_empty() {
            words.push(format!(
                "mvm.hosts={}",
                join(
                    &mut self
                        .extra_hosts
                        .iter()
                        .map(|h| format!("{}:{}", h.name, h.addr))
                )
            ));
        }
        for mount in &self.mounts {
            words.push(match mount {
                ContainerMount::Virtiofs(m) => format!(
                    "mvm.mount={},{},{}{}",
                    m.tag,
                    m.target,
                    if m.read_only { "ro" } else { "rw" },
                    if m.seed {
                        ",seed"
                    } else if m.file {
                        ",file"
                    } else {
                        ""
                    }
                ),
                ContainerMount::Tmpfs(t) => {
                    let mut w = format!("mvm.tmpfs={}", t.target);
                    if let Some(size) = t.size {
                        write!(w, ",size={size}").ok();
                    }
                    if t.mode != DEFAULT_TMPFS_MODE {
                        write!(w, ",mode={:o}", t.mode).ok();
                    }
                    if t.read_only {
                        w.push_str(",ro");
                    }
                    w
                }
            });
        }
        if self.dns_relay {
            words.push("mvm.dnsrelay=1".to_string());
        }
        if let Some(size) = self.shm_size {
            words.push(format!("mvm.shm={size}"));
        }
        if self.debug {
            words.push("mvm.debug=1".to_string());
        }
        if self.export {
            let mode = if self.export_writable { "rw" } else { "1" };
            words.push(format!("mvm.export={mode}"));
        }
        if self.template {
            words.push("mvm.template=1".to_string());
        }
        let line = words.join(" ");
        if parse_cmdline(&line)? != *self {
            return Err(EncodeError::Changed(line));
        }
        Ok(line)
    }
}

/// A second mount on the same target would hide the first: that is a mistake of the host's.
fn check_new_mount(earlier: &[ContainerMount], target: &str) -> Result<(), &'static str> {
    if earlier.iter().any(|m| m.target() == target) {
        return Err("the target is in an earlier mvm.mount or mvm.tmpfs");
    }
    Ok(())
}

const DEVICE: &str = "expected an absolute path without whitespace or control characters";

/// An absolute device path. Whitespace can only come from quotes (e.g. an unterminated one
/// that swallows the rest of the line, `mvm.*` words included) and the encoder could not write
/// it back; control characters are refused as in mount targets. No disk the host attaches has
/// either.
fn device(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| v.starts_with('/') && !v.chars().any(|c| c.is_whitespace() || c.is_control()))
        .map(str::to_string)
}

fn valid_hostname(name: &str) -> bool {
    // The kernel's limit is 64 bytes; the character set is what RFC 1123 allows plus '_',
    // which Docker accepts in container names used as hostnames.
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Splits like the kernel does: on spaces, with double quotes grouping (and removed).
/// The words of `cmdline` that are the kernel's (every word but the `mvm.*` ones), joined by
/// one space: what a template VM and the VMs restored from it must have in common.
pub fn kernel_words(cmdline: &str) -> String {
    split_words(cmdline)
        .into_iter()
        .filter(|w| !w.starts_with("mvm."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = parse_cmdline("console=ttyS0 reboot=k panic=-1 root=/dev/vda ro init=/mvm-agent\n")
            .unwrap();
        assert_eq!(c, BootConfig::default());
        assert_eq!(c.port, 1024);
    }

    #[test]
    fn all_keys() {
        let c = parse_cmdline(
            "console=ttyS0 mvm.lower=/dev/vdb mvm.lowerfs=erofs mvm.upper=/dev/vdc \
             mvm.hostname=web-1 mvm.port=2000 mvm.debug=1 mvm.dns=1.1.1.1,2606:4700::1111 \
             mvm.future=whatever",
        )
        .unwrap();
        assert_eq!(c.lower, "/dev/vdb");
        assert_eq!(c.lower_fs, LowerFs::Erofs);
        assert_eq!(c.upper.as_deref(), Some("/dev/vdc"));
        assert_eq!(c.hostname.as_deref(), Some("web-1"));
        assert_eq!(c.port, 2000);
        assert!(c.debug);
        assert_eq!(c.dns.len(), 2);
    }

    #[test]
    fn bare_debug_and_overrides_and_quotes() {
        let c = parse_cmdline("mvm.debug mvm.port=5 mvm.port=6 \"mvm.hostname=a\"").unwrap();
        assert!(c.debug);
        assert_eq!(c.port, 6);
        assert_eq!(c.hostname.as_deref(), Some("a"));
        assert!(!parse_cmdline("mvm.debug=0").unwrap().debug);
        let c = parse_cmdline("mvm.callback=1025").unwrap();
        assert_eq!(c.callback, Some(1025));
        assert!(parse_cmdline("mvm.callback=x").is_err());
    }

    #[test]
    fn bad_values() {
        for bad in [
            "mvm.port=abc",
            "mvm.port=0",
            "mvm.port=",
            "mvm.port",
            "mvm.lowerfs=xfs",
            "mvm.lower=vdb",
            "mvm.upper",
            "mvm.root",
            "mvm.root=disk",
            "mvm.file",
            "mvm.file=0,/etc/hosts",
            "mvm.file=0,/etc/hosts,ro mvm.file=1,/etc/hosts,ro",
            // Found by the boot_cmdline fuzz target: an unterminated quote made the rest of
            // the line, `mvm.*` words included, the upper disk's path, which did not encode.
            "mvm.upper=\"/dev/vdc mvm.export=1",
            "mvm.lower=\"/dev/vd b\"",
            "mvm.lower=\"/dev/vdb\u{85}\"",
            "mvm.upper=/dev/vdc\u{1}",
            "mvm.hostname=",
            "mvm.hostname=a/b",
            "mvm.dns=1.2.3",
            "mvm.debug=maybe",
            "mvm.net",
            "mvm.net=",
            "mvm.net=02:42:0a:58:00:02,10.88.0.2/16",
            "mvm.net=02:42:0a:58:00:02,fd00::2/64,-",
            "mvm.search",
            "mvm.search=a,,b",
            "mvm.dnsopt",
            "mvm.dnsopt=ndots:x",
            "mvm.hosts",
            "mvm.hosts=db",
        ] {
            let err = parse_cmdline(bad).unwrap_err();
            assert!(bad.starts_with(&err.key), "{bad}: {err}");
        }
        let long = format!("mvm.hostname={}", "a".repeat(65));
        assert!(parse_cmdline(&long).is_err());
    }

    #[test]
    fn network_keys() {
        let c = parse_cmdline(
            "mvm.net=02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1,1500 \
             mvm.net=02:42:0a:59:00:02,10.89.0.2/24,- mvm.dns=10.88.0.1 \
             mvm.search=example.com,corp mvm.dnsopt=ndots:0,rotate \
             mvm.hosts=db:10.88.0.5,cache:10.88.0.6 mvm.hosts=v6:fd00::1",
        )
        .unwrap();
        assert_eq!(c.net.len(), 2);
        assert_eq!(c.net[0].mac.to_string(), "02:42:0a:58:00:02");
        assert_eq!(c.net[0].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(c.net[0].mtu, Some(1500));
        assert_eq!(c.net[1].addr, std::net::Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(c.net[1].gateway, None);
        assert_eq!(c.dns_search, vec!["example.com", "corp"]);
        assert_eq!(c.dns_options, vec!["ndots:0", "rotate"]);
        let names: Vec<&str> = c.extra_hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["db", "cache", "v6"]);

        // search and dnsopt override like other keys; an empty value clears them.
        let c = parse_cmdline("mvm.search=a mvm.search= mvm.dnsopt=rotate mvm.dnsopt=").unwrap();
        assert!(c.dns_search.is_empty() && c.dns_options.is_empty());

        let err = parse_cmdline(
            "mvm.net=02:42:0a:58:00:02,10.88.0.2/16,- mvm.net=02:42:0A:58:00:02,10.89.0.2/16,-",
        )
        .unwrap_err();
        assert_eq!(err.key, "mvm.net");
        assert_eq!(err.value, "02:42:0A:58:00:02,10.89.0.2/16,-");
        assert!(err.reason.contains("earlier mvm.net"), "{err}");

        let err = parse_cmdline("mvm.net=02:42:0a:58:00:02,fd00::2/64,fd00::1").unwrap_err();
        assert!(err.to_string().contains("IPv6 is not supported"), "{err}");
    }

    #[test]
    fn mount_keys_keep_command_line_order() {
        let c = parse_cmdline(
            "mvm.mount=vol0,/data,rw,seed mvm.tmpfs=/data/tmp,size=64m,mode=755 \
             mvm.mount=bind1,/srv/conf,ro mvm.tmpfs=/run mvm.mount=vol0,/data2,rw",
        )
        .unwrap();
        let targets: Vec<&str> = c.mounts.iter().map(ContainerMount::target).collect();
        assert_eq!(
            targets,
            vec!["/data", "/data/tmp", "/srv/conf", "/run", "/data2"]
        );
        assert_eq!(
            c.mounts[0],
            ContainerMount::Virtiofs(VirtiofsMount {
                tag: "vol0".into(),
                target: "/data".into(),
                read_only: false,
                seed: true,
                file: false,
            })
        );
        assert_eq!(
            c.mounts[1],
            ContainerMount::Tmpfs(TmpfsMount {
                target: "/data/tmp".into(),
                size: Some(64 << 20),
                mode: 0o755,
                read_only: false,
            })
        );
        assert!(matches!(&c.mounts[2], ContainerMount::Virtiofs(v) if v.read_only && !v.seed));
        assert!(matches!(&c.mounts[3], ContainerMount::Tmpfs(t) if t.mode == DEFAULT_TMPFS_MODE));
    }

    #[test]
    fn bad_mount_keys() {
        for (bad, key, why) in [
            ("mvm.mount", "mvm.mount", "TAG,/TARGET"),
            ("mvm.mount=", "mvm.mount", "TAG,/TARGET"),
            ("mvm.mount=v,/data", "mvm.mount", "TAG,/TARGET"),
            ("mvm.mount=v,/proc/x,rw", "mvm.mount", "/proc"),
            ("mvm.mount=v,/data,ro,seed", "mvm.mount", "read-only"),
            ("mvm.tmpfs", "mvm.tmpfs", "/TARGET"),
            ("mvm.tmpfs=", "mvm.tmpfs", "absolute"),
            ("mvm.tmpfs=/run,size=1x", "mvm.tmpfs", "size="),
            (
                "mvm.mount=v,/data,rw mvm.tmpfs=/data",
                "mvm.tmpfs",
                "earlier mvm.mount",
            ),
            (
                "mvm.tmpfs=/data mvm.mount=w,/data,rw",
                "mvm.mount",
                "earlier mvm.mount",
            ),
        ] {
            let err = parse_cmdline(bad).unwrap_err();
            assert_eq!(err.key, key, "{bad}");
            assert!(err.reason.contains(why), "{bad}: {err}");
        }
    }

    fn nic(
        mac: [u8; 6],
        addr: [u8; 4],
        prefix: u8,
        gw: Option<[u8; 4]>,
        mtu: Option<u32>,
    ) -> NetConfig {
        NetConfig {
            mac: MacAddr(mac),
            addr: addr.into(),
            prefix,
            gateway: gw.map(Into::into),
            mtu,
        }
    }

    fn round_trip(c: &BootConfig) {
        let line = c.encode().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert!(line.split(' ').all(|w| w.starts_with("mvm.")), "{line}");
        // Surrounded by the kernel's own words, as in /proc/cmdline.
        let full = format!("console=ttyS0 root={DISK_AGENT} ro {line} quiet\n");
        assert_eq!(parse_cmdline(&full).as_ref(), Ok(c), "{line}");
    }

    #[test]
    fn encode_round_trips() {
        round_trip(&BootConfig::default());
        // A container's VM as the host boots it, with two networks, volumes, binds and tmpfs.
        round_trip(&BootConfig {
            lower: DISK_IMAGE.into(),
            lower_fs: LowerFs::Erofs,
            upper: Some(DISK_UPPER.into()),
            hostname: Some("web-1.example_x".into()),
            dns: vec![
                "10.88.0.1".parse().unwrap(),
                "2606:4700::1111".parse().unwrap(),
            ],
            dns_search: vec!["example.com".into(), "corp".into()],
            dns_options: vec!["ndots:0".into(), "rotate".into()],
            net: vec![
                nic(
                    [2, 0x42, 10, 88, 0, 2],
                    [10, 88, 0, 2],
                    16,
                    Some([10, 88, 0, 1]),
                    Some(1500),
                ),
                nic([2, 0x42, 10, 89, 0, 2], [10, 89, 0, 2], 24, None, None),
                nic(
                    [0xfe, 0, 0, 0, 0, 1],
                    [192, 168, 1, 7],
                    32,
                    None,
                    Some(MAX_MTU),
                ),
            ],
            extra_hosts: vec![
                HostEntry {
                    name: "db".into(),
                    addr: "10.88.0.5".parse().unwrap(),
                },
                HostEntry {
                    name: "v6".into(),
                    addr: "fd00::1".parse().unwrap(),
                },
            ],
            mounts: vec![
                ContainerMount::Virtiofs(VirtiofsMount {
                    tag: share_tag(0),
                    target: "/data".into(),
                    read_only: false,
                    seed: true,
                    file: false,
                }),
                ContainerMount::Tmpfs(TmpfsMount {
                    target: "/data/tmp".into(),
                    size: Some(64 << 20),
                    mode: 0o755,
                    read_only: true,
                }),
                ContainerMount::Virtiofs(VirtiofsMount {
                    tag: share_tag(1),
                    target: "/srv/conf".into(),
                    read_only: true,
                    seed: false,
                    file: true,
                }),
                ContainerMount::Tmpfs(TmpfsMount {
                    target: "/run".into(),
                    size: None,
                    mode: DEFAULT_TMPFS_MODE,
                    read_only: false,
                }),
                ContainerMount::Tmpfs(TmpfsMount {
                    target: "/t0".into(),
                    size: Some(0),
                    mode: 0,
                    read_only: false,
                }),
                ContainerMount::Virtiofs(VirtiofsMount {
                    tag: share_tag(0),
                    target: "/data2".into(),
                    read_only: false,
                    seed: false,
                    file: false,
                }),
            ],
            port: 2000,
            callback: Some(crate::DEFAULT_CALLBACK_PORT),
            debug: true,
            export: false,
            ..BootConfig::default()
        });
        // An OCI bundle's VM: the root and Docker's /etc files from shares.
        round_trip(&BootConfig {
            root: RootSource::Share { read_only: false },
            files: vec![
                FileMount {
                    name: "0".into(),
                    target: "/etc/resolv.conf".into(),
                    read_only: false,
                },
                FileMount {
                    name: "1".into(),
                    target: "/etc/hosts".into(),
                    read_only: true,
                },
            ],
            upper: None,
            hostname: Some("bfc58179fd50".into()),
            callback: Some(crate::DEFAULT_CALLBACK_PORT),
            dns_relay: true,
            shm_size: Some(8 << 20),
            ..BootConfig::default()
        });
        round_trip(&BootConfig {
            root: RootSource::Share { read_only: true },
            ..BootConfig::default()
        });
        // The export helper: no network, no mounts.
        round_trip(&BootConfig {
            lower_fs: LowerFs::Erofs,
            upper: Some(DISK_UPPER.into()),
            callback: Some(crate::DEFAULT_CALLBACK_PORT),
            export: true,
            ..BootConfig::default()
        });
        // ... and the one that copies into a stopped container.
        round_trip(&BootConfig {
            upper: Some(DISK_UPPER.into()),
            callback: Some(crate::DEFAULT_CALLBACK_PORT),
            export: true,
            export_writable: true,
            ..BootConfig::default()
        });
        // A template VM.
        round_trip(&BootConfig {
            template: true,
            ..BootConfig::default()
        });
    }

    #[test]
    fn kernel_words_leave_the_agents_out() {
        assert_eq!(
            kernel_words("console=ttyS0  mvm.lower=/dev/vdb quiet mvm.template=1 root=/dev/vda"),
            "console=ttyS0 quiet root=/dev/vda"
        );
    }

    #[test]
    fn encode_refuses_what_the_agent_would_refuse_or_misread() {
        let refused = |c: BootConfig| match c.encode() {
            Err(EncodeError::Refused(e)) => e,
            other => panic!("{c:?}: {other:?}"),
        };
        let e = refused(BootConfig {
            hostname: Some("a/b".into()),
            ..BootConfig::default()
        });
        assert_eq!(e.key, "mvm.hostname");
        let e = refused(BootConfig {
            lower: "vdb".into(),
            ..BootConfig::default()
        });
        assert_eq!(e.key, "mvm.lower");
        let e = refused(BootConfig {
            port: 0,
            ..BootConfig::default()
        });
        assert_eq!(e.key, "mvm.port");
        let e = refused(BootConfig {
            mounts: vec![ContainerMount::Tmpfs(TmpfsMount {
                target: "/run".into(),
                size: None,
                mode: 0o10000,
                read_only: false,
            })],
            ..BootConfig::default()
        });
        assert_eq!(e.key, "mvm.tmpfs");
        let e = refused(BootConfig {
            net: vec![nic([1, 0, 0, 0, 0, 1], [10, 0, 0, 2], 8, None, None)],
            ..BootConfig::default()
        });
        assert!(e.reason.contains("multicast"), "{e}");
        // A value with a space would smuggle in another key.
        let c = BootConfig {
            upper: Some("/dev/vdc mvm.export=1".into()),
            ..BootConfig::default()
        };
        assert!(matches!(c.encode(), Err(EncodeError::Changed(_))), "{c:?}");
        let c = BootConfig {
            lower: "/dev/\"vdb\"".into(),
            ..BootConfig::default()
        };
        assert!(matches!(c.encode(), Err(EncodeError::Changed(_))), "{c:?}");
        // An empty search domain list entry, or a repeated MAC.
        assert!(
            BootConfig {
                dns_search: vec![String::new()],
                ..BootConfig::default()
            }
            .encode()
            .is_err()
        );
        let n = nic([2, 0, 0, 0, 0, 1], [10, 0, 0, 2], 8, None, None);
        assert!(
            BootConfig {
                net: vec![n.clone(), n],
                ..BootConfig::default()
            }
            .encode()
            .is_err()
        );
    }

    /// Generated configurations (a fixed-seed xorshift, so a failure reproduces) all survive
    /// the round trip.
    #[test]
    fn encode_round_trips_generated() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..2000 {
            let mut c = BootConfig {
                lower_fs: if next(2) == 0 {
                    LowerFs::Ext4
                } else {
                    LowerFs::Erofs
                },
                upper: (next(2) == 0).then(|| DISK_UPPER.to_string()),
                hostname: (next(2) == 0).then(|| format!("h-{}.x_y", next(1000))),
                port: 1 + next(u64::from(u32::MAX) - 2) as u32,
                callback: (next(2) == 0).then(|| 1 + next(100_000) as u32),
                debug: next(2) == 0,
                export: next(2) == 0,
                ..BootConfig::default()
            };
            for i in 0..next(4) {
                let prefix = 8 + next(23) as u8;
                let gw = (next(2) == 0).then_some([10, i as u8, 0, 1]);
                c.net.push(nic(
                    [2, 0, 0, 0, 0, i as u8],
                    [10, i as u8, 0, 2],
                    prefix,
                    gw,
                    (next(2) == 0).then(|| MIN_MTU + next(u64::from(MAX_MTU - MIN_MTU + 1)) as u32),
                ));
            }
            for _ in 0..next(3) {
                c.dns.push(IpAddr::from([10, next(256) as u8, 0, 1]));
            }
            if next(4) == 0 {
                c.dns.push("fd00::53".parse().unwrap());
            }
            for i in 0..next(3) {
                c.dns_search.push(format!("d{i}.example"));
                c.dns_options.push(format!("ndots:{}", next(16)));
                c.extra_hosts.push(HostEntry {
                    name: format!("host{i}"),
                    addr: IpAddr::from([192, 168, 0, next(256) as u8]),
                });
            }
            for i in 0..next(6) {
                let target = format!("/m{i}/x");
                c.mounts.push(if next(2) == 0 {
                    let read_only = next(2) == 0;
                    ContainerMount::Virtiofs(VirtiofsMount {
                        tag: share_tag(next(40) as usize),
                        target,
                        read_only,
                        seed: !read_only && next(2) == 0,
                        file: false,
                    })
                } else {
                    ContainerMount::Tmpfs(TmpfsMount {
                        target,
                        size: (next(2) == 0).then(|| next(u64::MAX)),
                        mode: next(0o10000) as u32,
                        read_only: next(2) == 0,
                    })
                });
            }
            round_trip(&c);
        }
    }

    #[test]
    fn share_tags_are_valid_tags() {
        for i in [0, 1, 9, 10, usize::MAX] {
            let tag = share_tag(i);
            assert!(parse_mount(&format!("{tag},/x,rw")).is_ok(), "{tag}");
        }
        assert_eq!(share_tag(3), "mvmfs3");
    }

    #[test]
    fn word_splitting() {
        assert_eq!(
            split_words("  a  b=\"c d\" \"e f\"g\t"),
            vec!["a", "b=c d", "e fg"]
        );
        assert!(split_words("").is_empty());
    }
}

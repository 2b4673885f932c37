//! The network keys of the kernel command line: `mvm.net`, `mvm.hosts`, `mvm.search` and
//! `mvm.dnsopt`. Each parser returns the reason a value is bad; `parse_cmdline` turns it into a
//! [`CmdlineError`](super::CmdlineError) naming the key.
//!
//! Everything parsed here ends up in an ioctl or in /etc/hosts and /etc/resolv.conf, so the
//! parsers are strict: a value that would need guessing is refused, and names are limited to
//! characters that cannot break a line of those files.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

// The boot config is logged with `{:?}`: six decimal bytes would be unreadable there.
impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl MacAddr {
    /// Parses `xx:xx:xx:xx:xx:xx` (hex digits of either case); a NIC's address can be neither
    /// all zeros nor multicast.
    pub fn parse(s: &str) -> Result<MacAddr, &'static str> {
        const SYNTAX: &str = "expected a MAC address like 02:42:0a:58:00:02";
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or(SYNTAX)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SYNTAX);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| SYNTAX)?;
        }
        if parts.next().is_some() {
            return Err(SYNTAX);
        }
        if mac == [0; 6] {
            return Err("the MAC address is all zeros");
        }
        if mac[0] & 1 != 0 {
            return Err("the MAC address is a multicast address");
        }
        Ok(MacAddr(mac))
    }
}

impl std::str::FromStr for MacAddr {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<MacAddr, &'static str> {
        MacAddr::parse(s)
    }
}

// Records on the host keep a MAC in its text form, so they stay readable JSON.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        MacAddr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One network interface's configuration (`mvm.net=MAC,ADDR/PREFIX,GATEWAY[,MTU]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The MAC address that identifies the interface.
    pub mac: MacAddr,
    /// The interface's IPv4 address.
    pub addr: Ipv4Addr,
    /// The prefix length of the interface's subnet, 1 to 32.
    pub prefix: u8,
    /// The gateway for the default route, on the interface's subnet; `None` for `-`.
    pub gateway: Option<Ipv4Addr>,
    /// The MTU; `None` keeps the kernel's (the device's) default.
    pub mtu: Option<u32>,
}

/// Lowest MTU an IPv4 interface may have (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Highest MTU the kernel accepts on any device.
pub const MAX_MTU: u32 = 65535;

const IPV6: &str = "IPv6 is not supported yet: expected an IPv4 address";

impl NetConfig {
    /// The netmask of `prefix`.
    pub fn netmask(&self) -> Ipv4Addr {
        netmask(self.prefix)
    }

    /// Parses the value of one `mvm.net` key.
    pub fn parse(value: &str) -> Result<NetConfig, &'static str> {
        let fields: Vec<&str> = value.split(',').collect();
        if !(3..=4).contains(&fields.len()) {
            return Err("expected MAC,ADDR/PREFIX,GATEWAY[,MTU]");
        }
        let mac = MacAddr::parse(fields[0])?;
        let (addr, prefix) = fields[1]
            .split_once('/')
            .ok_or("expected the address as ADDR/PREFIX, e.g. 10.88.0.2/16")?;
        let addr = ipv4(addr)?;
        let prefix = decimal(prefix)
            .filter(|p| (1..=32).contains(p))
            .ok_or("expected a prefix length from 1 to 32")? as u8;
        check_unicast(addr).map_err(|_| "the address is not a unicast address")?;
        let mask = u32::from(netmask(prefix));
        let network = u32::from(addr) & mask;
        if prefix <= 30 && (u32::from(addr) == network || u32::from(addr) == network | !mask) {
            return Err("the address is its subnet's network or broadcast address");
        }
        let gateway = match fields[2] {
            "-" => None,
            gw => {
                let gw = ipv4(gw)?;
                check_unicast(gw).map_err(|_| "the gateway is not a unicast address")?;
                if u32::from(gw) & mask != network {
                    return Err("the gateway is not on the address's subnet");
                }
                if gw == addr {
                    return Err("the gateway is the interface's own address");
                }
                Some(gw)
            }
        };
        let mtu = match fields.get(3) {
            None => None,
            Some(mtu) => Some(
                decimal(mtu)
                    .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
                    .ok_or("expected an MTU from 68 to 65535")?,
            ),
        };
        Ok(NetConfig {
            mac,
            addr,
            prefix,
            gateway,
            mtu,
        })
    }
}

fn netmask(prefix: u8) -> Ipv4Addr {
    // prefix is 1..=32, so the shift is at most 31.
    Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix.clamp(1, 32))))
}

fn ipv4(s: &str) -> Result<Ipv4Addr, &'static str> {
    if s.contains(':') {
        return Err(IPV6);
    }
    // std's parser is already strict: four decimal octets, no leading zeros.
    s.parse()
        .map_err(|_| "expected an IPv4 address like 10.88.0.2")
}

fn check_unicast(addr: Ipv4Addr) -> Result<(), ()> {
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.is_broadcast() {
        return Err(());
    }
    Ok(())
}

/// A decimal number of at most 5 digits: `u32::from_str` would also take `+1`.
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An extra /etc/hosts entry (`mvm.hosts=NAME:IP`), as Docker's `--add-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The host name.
    pub name: String,
    /// Its address, IPv4 or IPv6.
    pub addr: IpAddr,
}

/// Parses `NAME:IP[,NAME:IP...]`; an IPv6 address may be in brackets (`name:[::1]`). Empty
/// is no entries.
pub fn parse_hosts(value: &str) -> Result<Vec<HostEntry>, &'static str> {
    const SYNTAX: &str = "expected NAME:IP[,NAME:IP...]";
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|entry| {
            // Names have no ':', so the first one ends the name even before an IPv6 address.
            let (name, addr) = entry.split_once(':').ok_or(SYNTAX)?;
            if !valid_domain(name) {
                return Err("expected a host name of letters, digits, '-', '.', '_'");
            }
            let addr = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            let addr = addr
                .parse::<IpAddr>()
                .map_err(|_| "expected NAME:IP with an IPv4 or IPv6 address")?;
            Ok(HostEntry {
                name: name.to_string(),
                addr,
            })
        })
        .collect()
}

/// Parses the search domains of `mvm.search=dom1,dom2`. Empty is none.
pub fn parse_search(value: &str) -> Result<Vec<String>, &'static str> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|d| {
            if valid_domain(d) {
                Ok(d.to_string())
            } else {
                Err("expected comma-separated domains of letters, digits, '-', '.', '_'")
            }
        })
        .collect()
}

/// Parses the resolver options of `mvm.dnsopt=ndots:0,rotate`: each is a name of letters,
/// digits and '-', with an optional `:NUMBER`. Empty is none.
pub fn parse_dns_options(value: &str) -> Result<Vec<String>, &'static str> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|opt| {
            let (name, arg) = match opt.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (opt, None),
            };
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            let arg_ok = arg.is_none_or(|a| decimal(a).is_some());
            if name_ok && arg_ok {
                Ok(opt.to_string())
            } else {
                Err("expected comma-separated resolver options like ndots:0 or rotate")
            }
        })
        .collect()
}

/// A DNS name as resolv.conf and /etc/hosts take it: 1 to 253 characters of letters, digits,
/// '-', '.' and '_', not starting with '-' or '.'.
fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_json_is_its_text() {
        let mac = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, r#""02:42:0a:58:00:02""#);
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        for bad in [
            r#""02:42:0a:58:00""#,
            r#""01:00:5e:00:00:01""#,
            "[2,66,10,88,0,2]",
            "7",
        ] {
            assert!(serde_json::from_str::<MacAddr>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mac() {
        let mac = MacAddr::parse("02:42:0A:58:00:02").unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "02:42:0a:58:00:02");
        assert_eq!(format!("{mac:?}"), "MacAddr(02:42:0a:58:00:02)");
        assert_eq!("02:42:0a:58:00:02".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "02:42:0a:58:00",
            "02:42:0a:58:00:02:03",
            "02:42:0a:58:00:2",
            "02:42:0a:58:00:002",
            "02-42-0a-58-00-02",
            "02:42:0a:58:00:0g",
            "02:42:0a:58:00:+2",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "02:42:0a:58:00:02:",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn net_good() {
        let n = NetConfig::parse("02:42:0a:58:00:02,10.88.0.2/16,10.88.0.1,1500").unwrap();
        assert_eq!(n.mac.to_string(), "02:42:0a:58:00:02");
        assert_eq!(n.addr, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(n.prefix, 16);
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!(n.mtu, Some(1500));

        let n = NetConfig::parse("02:42:0a:58:00:03,192.168.1.7/24,-").unwrap();
        assert_eq!(n.gateway, None);
        assert_eq!(n.mtu, None);
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));

        // Point-to-point and host prefixes have no network or broadcast address to avoid.
        let n = NetConfig::parse("02:00:00:00:00:01,10.0.0.0/31,10.0.0.1,68").unwrap();
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 254));
        let n = NetConfig::parse("02:00:00:00:00:01,10.0.0.5/32,-,65535").unwrap();
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 255));
        let n = NetConfig::parse("02:00:00:00:00:01,10.0.0.5/1,-").unwrap();
        assert_eq!(n.netmask(), Ipv4Addr::new(128, 0, 0, 0));
    }

    #[test]
    fn net_bad() {
        for (bad, why) in [
            ("", "MAC,ADDR"),
            ("02:42:0a:58:00:02", "MAC,ADDR"),
            ("02:42:0a:58:00:02,10.88.0.2/16", "MAC,ADDR"),
            ("02:42:0a:58:00:02,10.88.0.2/16,-,1500,x", "MAC,ADDR"),
            ("02:42:0a:58:00:0,10.88.0.2/16,-", "MAC address"),
            ("03:42:0a:58:00:02,10.88.0.2/16,-", "multicast"),
            ("02:42:0a:58:00:02,10.88.0.2,-", "ADDR/PREFIX"),
            ("02:42:0a:58:00:02,10.88.0.2/,-", "prefix"),
            ("02:42:0a:58:00:02,10.88.0.2/0,-", "prefix"),
            ("02:42:0a:58:00:02,10.88.0.2/33,-", "prefix"),
            ("02:42:0a:58:00:02,10.88.0.2/+16,-", "prefix"),
            ("02:42:0a:58:00:02,10.88.0.02/16,-", "IPv4"),
            ("02:42:0a:58:00:02,10.88.0/16,-", "IPv4"),
            ("02:42:0a:58:00:02,fd00::2/64,-", "IPv6"),
            ("02:42:0a:58:00:02,10.88.0.2/16,fd00::1", "IPv6"),
            ("02:42:0a:58:00:02,0.0.0.0/16,-", "unicast"),
            ("02:42:0a:58:00:02,127.0.0.2/8,-", "unicast"),
            ("02:42:0a:58:00:02,224.0.0.1/4,-", "unicast"),
            ("02:42:0a:58:00:02,10.88.0.0/16,-", "network or broadcast"),
            (
                "02:42:0a:58:00:02,10.88.255.255/16,-",
                "network or broadcast",
            ),
            (
                "02:42:0a:58:00:02,10.88.0.2/16,10.89.0.1",
                "not on the address's subnet",
            ),
            ("02:42:0a:58:00:02,10.88.0.2/16,10.88.0.2", "own address"),
            (
                "02:42:0a:58:00:02,10.88.0.2/16,0.0.0.0",
                "gateway is not a unicast",
            ),
            ("02:42:0a:58:00:02,10.88.0.2/16,", "IPv4"),
            ("02:42:0a:58:00:02,10.88.0.2/16,-,67", "MTU"),
            ("02:42:0a:58:00:02,10.88.0.2/16,-,65536", "MTU"),
            ("02:42:0a:58:00:02,10.88.0.2/16,-,", "MTU"),
            ("02:42:0a:58:00:02,10.88.0.2/16,-,1e3", "MTU"),
        ] {
            let err = NetConfig::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn hosts() {
        let h = parse_hosts("db:10.88.0.5,v6.example:fd00::5,br:[::1]").unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].name, "db");
        assert_eq!(h[0].addr, "10.88.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(h[1].name, "v6.example");
        assert_eq!(h[1].addr, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(h[2].addr, "::1".parse::<IpAddr>().unwrap());
        assert!(parse_hosts("").unwrap().is_empty());
        for bad in [
            "db",
            "db:",
            ":10.0.0.1",
            "db:10.0.0",
            "db:10.0.0.1,",
            "d b:10.0.0.1",
            "db\n1.2.3.4 evil:10.0.0.1",
            "-db:10.0.0.1",
            "db:[10.0.0.1",
        ] {
            assert!(parse_hosts(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn search_and_options() {
        assert_eq!(
            parse_search("example.com,svc.cluster.local").unwrap(),
            vec!["example.com", "svc.cluster.local"]
        );
        assert!(parse_search("").unwrap().is_empty());
        for bad in ["a,,b", "a,", "a b", ".example.com", "ex/ample"] {
            assert!(parse_search(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_dns_options("ndots:0,rotate,single-request-reopen,timeout:2").unwrap(),
            vec!["ndots:0", "rotate", "single-request-reopen", "timeout:2"]
        );
        assert!(parse_dns_options("").unwrap().is_empty());
        for bad in [
            "ndots:",
            "ndots:x",
            ":1",
            "a,,b",
            "nd ots",
            "ndots:1:2",
            "a;b",
        ] {
            assert!(parse_dns_options(bad).is_err(), "{bad:?}");
        }
    }
}

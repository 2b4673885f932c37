//! IPv4 ranges in CIDR notation.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network: its base address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub base: Ipv4Addr,
    /// Prefix length, 0-32.
    pub prefix: u8,
}

impl Subnet {
    /// A subnet from an address (its host bits are cleared) and a prefix (at most 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            base: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// Parses `A.B.C.D/N`; the address must be the network's own (host bits zero).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid subnet {s:?}: expected CIDR such as 10.1.0.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let net = Self::new(addr, prefix);
        if net.base != addr {
            return Err(format!(
                "invalid subnet {s}: it should be {net} (the host bits must be zero)"
            ));
        }
        Ok(net)
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether the two ranges share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u32::from(self.base) & mask(shorter) == u32::from(other.base) & mask(shorter)
    }

    /// Whether `ip` is a host address in the range (not the network or broadcast address).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        if u32::from(ip) & mask(self.prefix) != u32::from(self.base) {
            return false;
        }
        let offset = u64::from(u32::from(ip) - u32::from(self.base));
        let (first, last) = self.host_bounds();
        (first..last).contains(&offset)
    }

    /// The `n`th address of the range (`host(1)` is the first host address).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n))
    }

    /// Host addresses in order: without the network and broadcast addresses.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let (first, last) = self.host_bounds();
        (first..last).map(move |i| self.host(i as u32))
    }

    /// Offsets of the first host address and one past the last.
    fn host_bounds(&self) -> (u64, u64) {
        let size = self.size();
        if size <= 2 { (0, size) } else { (1, size - 1) }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

// A network's record keeps its range as CIDR text (`"10.89.0.0/16"`).
impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Subnet, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Subnet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_cidr_text() {
        let net = Subnet::parse("10.89.0.0/16").unwrap();
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, r#""10.89.0.0/16""#);
        assert_eq!(serde_json::from_str::<Subnet>(&json).unwrap(), net);
        for bad in [
            r#""10.89.0.1/16""#,
            r#""10.89.0.0""#,
            r#""10.89.0.0/33""#,
            "16",
        ] {
            assert!(serde_json::from_str::<Subnet>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_and_ranges() {
        let s = Subnet::parse("10.1.0.0/24").unwrap();
        assert_eq!(s.to_string(), "10.1.0.0/24");
        assert_eq!(s.hosts().count(), 254);
        assert_eq!(s.hosts().next(), Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert!(s.contains_host(Ipv4Addr::new(10, 1, 0, 254)));
        assert!(!s.contains_host(Ipv4Addr::new(10, 1, 0, 255)));
        assert!(!s.contains_host(Ipv4Addr::new(10, 1, 1, 1)));
        assert!(Subnet::parse("10.1.0.5/24").is_err());
        assert!(Subnet::parse("10.1.0.0/33").is_err());
        assert!(Subnet::parse("10.1.0.0").is_err());
        assert!(Subnet::parse("fd00::/64").is_err());
        let big = Subnet::parse("10.0.0.0/8").unwrap();
        assert!(big.overlaps(&s) && s.overlaps(&big));
        assert!(!s.overlaps(&Subnet::parse("10.1.1.0/24").unwrap()));
        assert_eq!(
            Subnet::parse("0.0.0.0/0").unwrap().hosts().next(),
            Some(Ipv4Addr::new(0, 0, 0, 1))
        );
    }
}

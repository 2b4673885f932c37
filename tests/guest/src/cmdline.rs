//! Kernel-style command line parsing: space separated `key=value` words.

/// Iterates over the words of a command line.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// Splits `key=value`; a word without '=' has an empty value.
pub fn split_word(word: &[u8]) -> (&[u8], &[u8]) {
    match word.iter().position(|&b| b == b'=') {
        Some(i) => (&word[..i], &word[i + 1..]),
        None => (word, &[]),
    }
}

/// The first value of `key`, if present.
pub fn value<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    words(cmdline)
        .map(split_word)
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Parses a decimal or 0x-prefixed hexadecimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}

/// Parses a size like Linux's memparse: a number with an optional K, M or G suffix.
pub fn parse_size(s: &[u8]) -> Option<u64> {
    let (num, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_u64(num)?.checked_mul(1 << shift)
}

/// One `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` device.
#[derive(Clone, Copy)]
pub struct MmioDevice {
    pub size: u64,
    pub base: u64,
    pub irq: u32,
}

/// Parses the value of a `virtio_mmio.device=` word.
pub fn parse_mmio_device(v: &[u8]) -> Option<MmioDevice> {
    let at = v.iter().position(|&b| b == b'@')?;
    let size = parse_size(&v[..at])?;
    let rest = &v[at + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let base = parse_u64(&rest[..colon])?;
    let irq_part = &rest[colon + 1..];
    // Linux allows a trailing ":<platform device id>"; it does not matter here.
    let irq_end = irq_part
        .iter()
        .position(|&b| b == b':')
        .unwrap_or(irq_part.len());
    let irq = u32::try_from(parse_u64(&irq_part[..irq_end])?).ok()?;
    Some(MmioDevice { size, base, irq })
}

/// Parses a disk name `vda`..`vdz` into its index among block devices.
pub fn parse_disk(v: &[u8]) -> Option<usize> {
    match v {
        [b'v', b'd', c @ b'a'..=b'z'] => Some((c - b'a') as usize),
        _ => None,
    }
}

/// A disk name for printing (`vda`, ...).
pub struct Disk(pub usize);

impl core::fmt::Display for Disk {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "vd{}", (b'a' + (self.0 % 26) as u8) as char)
    }
}

//! The guest kernel's command line as the agent reads it from `/proc/cmdline`: the `mvm.*`
//! words of its boot configuration among the kernel's own.
//!
//! An input is either text (the command line itself, so real command lines are seeds), or,
//! after a first byte of 0xff (never in UTF-8), structured: words built from the `mvm.*` keys
//! (and a few of the kernel's) with values glued from pieces of valid ones (MACs, addresses,
//! prefixes, paths, `ro`/`rw`, `size=`, `mode=`, numbers, commas, colons, quotes, spaces...),
//! so most words reach the value parsers rather than stop at an unknown key.
//!
//! Oracle, besides never panicking: a refusal names a `mvm.*` key; words that are not `mvm.*`
//! change nothing; and a configuration that parses encodes (`BootConfig::encode`) to plain
//! `mvm.*` words (no quotes), which parse back to an equal configuration, alone or among the
//! kernel's words, and encode again to the same line.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use mvm_agent_protocol::boot::parse_cmdline;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xff, rest)) => {
            if let Ok(words) = Vec::<Word>::arbitrary_take_rest(Unstructured::new(rest)) {
                check(&render(&words));
            }
        }
        _ => {
            if let Ok(line) = std::str::from_utf8(data) {
                check(line);
            }
        }
    }
});

fn check(line: &str) {
    let parsed = parse_cmdline(line);
    // The kernel's words before ours change nothing (a prefix ending in a space outside quotes
    // cannot change how the rest splits).
    let prefixed = parse_cmdline(&format!("console=ttyS0 root=/dev/vda ro {line}"));
    assert_eq!(prefixed, parsed, "{line:?}");
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            assert!(e.key.starts_with("mvm."), "{line:?}: {e}");
            return;
        }
    };
    let encoded = match config.encode() {
        Ok(encoded) => encoded,
        Err(e) => panic!("{line:?} parses as {config:?}, which does not encode: {e}"),
    };
    assert!(
        encoded
            .split(' ')
            .all(|w| w.starts_with("mvm.") && !w.contains('"')),
        "{encoded:?}"
    );
    assert_eq!(parse_cmdline(&encoded).as_ref(), Ok(&config), "{encoded:?}");
    let full = format!("console=ttyS0 root=/dev/vda ro {encoded} quiet\n");
    let again = parse_cmdline(&full).expect("the encoding among kernel words parses");
    assert_eq!(again, config, "{full:?}");
    assert_eq!(again.encode().as_deref(), Ok(encoded.as_str()), "{line:?}");
}

#[derive(Arbitrary, Debug)]
struct Word {
    key: Key,
    /// `None`: a bare key (`mvm.debug`).
    value: Option<Vec<Piece>>,
    quote: Quote,
    sep: Sep,
}

#[derive(Arbitrary, Debug)]
enum Key {
    Lower,
    Upper,
    LowerFs,
    Hostname,
    Dns,
    Search,
    DnsOpt,
    Hosts,
    Net,
    Mount,
    Tmpfs,
    Port,
    Callback,
    Debug,
    Export,
    /// A key a newer host may pass.
    Future,
    /// One of the kernel's own (`console`, `root`, ...).
    Kernel,
    /// `mvm.` and any name.
    Other(String),
    /// Anything, without the `mvm.` prefix.
    Raw(String),
}

impl Key {
    fn text(&self) -> String {
        let name = match self {
            Key::Lower => "lower",
            Key::Upper => "upper",
            Key::LowerFs => "lowerfs",
            Key::Hostname => "hostname",
            Key::Dns => "dns",
            Key::Search => "search",
            Key::DnsOpt => "dnsopt",
            Key::Hosts => "hosts",
            Key::Net => "net",
            Key::Mount => "mount",
            Key::Tmpfs => "tmpfs",
            Key::Port => "port",
            Key::Callback => "callback",
            Key::Debug => "debug",
            Key::Export => "export",
            Key::Future => "future",
            Key::Kernel => return "console".to_string(),
            Key::Other(s) => return format!("mvm.{s}"),
            Key::Raw(s) => return s.clone(),
        };
        format!("mvm.{name}")
    }
}

#[derive(Arbitrary, Debug)]
enum Quote {
    None,
    /// `"mvm.key=value"`.
    Word,
    /// `mvm.key="value"`.
    Value,
    /// `"mvm.key=value`, quoting what follows.
    Open,
}

#[derive(Arbitrary, Debug)]
enum Sep {
    Space,
    Spaces,
    Tab,
    Newline,
    /// No separator: glued to the next word.
    None,
}

/// A piece of a value: fragments of valid values, numbers, and anything.
#[derive(Arbitrary, Debug)]
enum Piece {
    Frag(Frag),
    /// A decimal number of any size (ports, MTUs, sizes).
    Num(u64),
    /// A small decimal number (octets, prefixes, tag numbers).
    Small(u8),
    /// Two hex digits (a MAC's byte).
    Hex(u8),
    /// An octal number (modes).
    Octal(u16),
    Char(char),
    Text(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Frag {
    DevVdb,
    DevVdc,
    Slash,
    Comma,
    Colon,
    Equals,
    Dot,
    DotDot,
    Dash,
    Underscore,
    Plus,
    Ro,
    Rw,
    Seed,
    SizeEq,
    ModeEq,
    Mac,
    Addr,
    Gateway,
    Prefix,
    NoGateway,
    Mtu,
    Ipv6,
    Open,
    Close,
    Ext4,
    Erofs,
    Zero,
    One,
    Yes,
    Off,
    Space,
    Quote,
    Tab,
    Nbsp,
    Proc,
    Data,
    Tag,
    Kilo,
    Mega,
    Giga,
    Domain,
    Ndots,
}

impl Frag {
    fn text(self) -> &'static str {
        match self {
            Frag::DevVdb => "/dev/vdb",
            Frag::DevVdc => "/dev/vdc",
            Frag::Slash => "/",
            Frag::Comma => ",",
            Frag::Colon => ":",
            Frag::Equals => "=",
            Frag::Dot => ".",
            Frag::DotDot => "..",
            Frag::Dash => "-",
            Frag::Underscore => "_",
            Frag::Plus => "+",
            Frag::Ro => "ro",
            Frag::Rw => "rw",
            Frag::Seed => "seed",
            Frag::SizeEq => "size=",
            Frag::ModeEq => "mode=",
            Frag::Mac => "02:42:0a:58:00:02",
            Frag::Addr => "10.88.0.2",
            Frag::Gateway => "10.88.0.1",
            Frag::Prefix => "/16",
            Frag::NoGateway => "-",
            Frag::Mtu => "1500",
            Frag::Ipv6 => "fd00::1",
            Frag::Open => "[",
            Frag::Close => "]",
            Frag::Ext4 => "ext4",
            Frag::Erofs => "erofs",
            Frag::Zero => "0",
            Frag::One => "1",
            Frag::Yes => "yes",
            Frag::Off => "off",
            Frag::Space => " ",
            Frag::Quote => "\"",
            Frag::Tab => "\t",
            Frag::Nbsp => "\u{a0}",
            Frag::Proc => "/proc",
            Frag::Data => "/data",
            Frag::Tag => "mvmfs0",
            Frag::Kilo => "k",
            Frag::Mega => "m",
            Frag::Giga => "G",
            Frag::Domain => "example.com",
            Frag::Ndots => "ndots",
        }
    }
}

fn render(words: &[Word]) -> String {
    let mut line = String::new();
    for w in words {
        let key = w.key.text();
        let value = w.value.as_ref().map(|pieces| {
            pieces
                .iter()
                .map(|p| match p {
                    Piece::Frag(f) => f.text().to_string(),
                    Piece::Num(n) => n.to_string(),
                    Piece::Small(n) => n.to_string(),
                    Piece::Hex(n) => format!("{n:02x}"),
                    Piece::Octal(n) => format!("{n:o}"),
                    Piece::Char(c) => c.to_string(),
                    Piece::Text(s) => s.clone(),
                })
                .collect::<String>()
        });
        let word = match (&w.quote, value) {
            (_, None) => key,
            (Quote::None, Some(v)) => format!("{key}={v}"),
            (Quote::Word, Some(v)) => format!("\"{key}={v}\""),
            (Quote::Value, Some(v)) => format!("{key}=\"{v}\""),
            (Quote::Open, Some(v)) => format!("\"{key}={v}"),
        };
        line.push_str(&word);
        line.push_str(match w.sep {
            Sep::Space => " ",
            Sep::Spaces => "   ",
            Sep::Tab => "\t",
            Sep::Newline => "\n",
            Sep::None => "",
        });
    }
    line
}

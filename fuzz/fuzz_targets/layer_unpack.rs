//! Image layers from an untrusted registry, unpacked one after the other into a scratch root:
//! they must never change, or add, anything outside it.
//!
//! The input is structured (1..3 layers of entries: type, a path of components such as `..`,
//! `.`, empty, `a`, the canary's names and its absolute path, mode with setuid bits, owner,
//! link target, small contents, PAX records) and serialised here into raw GNU tar headers
//! (`tar::Builder` would refuse `..`), so that inputs reach the unpack logic rather than stop
//! at the tar header checksum. The oracle is a canary tree beside the root (`victim`,
//! `victimdir/file`, `vlink`): its modes, owners, link counts, times, xattrs and contents must
//! not change and no new entry may appear anywhere outside the root (nor at the alphabet's
//! names in `/` and the temporary directory).
#![no_main]

#[path = "common/world.rs"]
mod world;

use arbitrary::Arbitrary;
use mvm_rootfs::unpack::{Limits, Totals, apply_layer};
use tar::EntryType;
use world::PathSpec;

#[derive(Arbitrary, Debug)]
struct Input {
    first: Layer,
    more: Vec<Layer>,
}

#[derive(Arbitrary, Debug)]
struct Layer {
    entries: Vec<Entry>,
    /// Leave out the two zero blocks that end an archive.
    unterminated: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// `.wh.NAME`: the entry's last component, prefixed.
    Whiteout,
    /// `PATH/.wh..wh..opq`.
    Opaque,
    Continuous,
    /// Any other type byte (PAX global, GNU sparse, volume label, ...).
    Raw(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Owner {
    Root,
    User,
    Nobody,
    Raw(u32),
}

impl Owner {
    fn id(self) -> u64 {
        match self {
            Owner::Root => 0,
            Owner::User => 1000,
            Owner::Nobody => 65534,
            Owner::Raw(n) => u64::from(n),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dev {
    Null,
    Zero,
    None,
    Loop0,
}

impl Dev {
    fn numbers(self) -> (u32, u32) {
        match self {
            Dev::Null => (1, 3),
            Dev::Zero => (1, 5),
            Dev::None => (0, 0),
            Dev::Loop0 => (7, 0),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Pax {
    UserX(Vec<u8>),
    /// A well-formed `vfs_cap_data` (revision 2, effective, CAP_SYS_ADMIN permitted).
    CapValid,
    CapRaw(Vec<u8>),
    TrustedOverlayOpaque,
    SecuritySelinux,
    /// `path=`: overrides the header's name.
    Path(PathSpec),
    /// `linkpath=`: overrides the header's link target.
    Linkpath(PathSpec),
    Size(u16),
    Uid(Owner),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SizeLie {
    Exact,
    /// The header claims more than the data holds.
    More(u8),
    /// The header claims less than the data holds.
    Less(u8),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    kind: Kind,
    path: PathSpec,
    /// Type bits included: the unpack masks them.
    mode: u16,
    uid: Owner,
    gid: Owner,
    target: PathSpec,
    data: Vec<u8>,
    dev: Dev,
    mtime: u32,
    pax: Vec<Pax>,
    size: SizeLie,
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1; // " key=value\n"
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len += 1;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn push(out: &mut Vec<u8>, mut h: tar::Header, data: &[u8]) {
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn gnu_header(name: &[u8], kind: EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let n = name.len().min(100);
    h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&name[..n]);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A GNU long name (`L`) or long link (`K`) entry when `text` does not fit 100 bytes.
fn long(out: &mut Vec<u8>, text: &[u8], kind: EntryType) {
    if text.len() > 100 {
        let mut data = text.to_vec();
        data.push(0);
        let h = gnu_header(b"././@LongLink", kind, data.len() as u64);
        push(out, h, &data);
    }
}

fn serialise(layer: &Layer, base_rel: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in layer.entries.iter().take(24) {
        let mut path = e.path.render(base_rel);
        match e.kind {
            Kind::Whiteout => {
                let (dir, last) = match path.rfind('/') {
                    Some(i) => (&path[..=i], &path[i + 1..]),
                    None => ("", path.as_str()),
                };
                path = format!("{dir}.wh.{last}");
            }
            Kind::Opaque => path = format!("{path}/.wh..wh..opq"),
            _ => {}
        }
        let target = e.target.render(base_rel);
        let kind = match e.kind {
            Kind::File | Kind::Whiteout | Kind::Opaque => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
            Kind::Continuous => EntryType::Continuous,
            Kind::Raw(b) => EntryType::new(b),
        };
        let has_link = matches!(kind, EntryType::Symlink | EntryType::Link);
        let data: &[u8] = match e.kind {
            Kind::File | Kind::Continuous | Kind::Raw(_) => &e.data[..e.data.len().min(64)],
            _ => b"",
        };
        let pax: Vec<u8> = e
            .pax
            .iter()
            .take(3)
            .flat_map(|p| match p {
                Pax::UserX(v) => pax_record(b"SCHILY.xattr.user.x", &v[..v.len().min(16)]),
                Pax::CapValid => {
                    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
                    v.extend_from_slice(&(1u32 << 21).to_le_bytes()); // permitted lo
                    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable lo
                    v.extend_from_slice(&0u32.to_le_bytes()); // permitted hi
                    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable hi
                    pax_record(b"SCHILY.xattr.security.capability", &v)
                }
                Pax::CapRaw(v) => {
                    pax_record(b"SCHILY.xattr.security.capability", &v[..v.len().min(24)])
                }
                Pax::TrustedOverlayOpaque => {
                    pax_record(b"SCHILY.xattr.trusted.overlay.opaque", b"y")
                }
                Pax::SecuritySelinux => pax_record(
                    b"SCHILY.xattr.security.selinux",
                    b"system_u:object_r:shadow_t:s0",
                ),
                Pax::Path(p) => pax_record(b"path", p.render(base_rel).as_bytes()),
                Pax::Linkpath(p) => pax_record(b"linkpath", p.render(base_rel).as_bytes()),
                Pax::Size(n) => pax_record(b"size", n.to_string().as_bytes()),
                Pax::Uid(o) => pax_record(b"uid", o.id().to_string().as_bytes()),
            })
            .collect();
        if !pax.is_empty() {
            let h = gnu_header(b"PaxHeaders/x", EntryType::XHeader, pax.len() as u64);
            push(&mut out, h, &pax);
        }
        long(&mut out, path.as_bytes(), EntryType::GNULongName);
        if has_link {
            long(&mut out, target.as_bytes(), EntryType::GNULongLink);
        }
        let size = match e.size {
            SizeLie::Exact => data.len() as u64,
            SizeLie::More(n) => data.len() as u64 + u64::from(n),
            SizeLie::Less(n) => (data.len() as u64).saturating_sub(u64::from(n)),
        };
        let mut h = gnu_header(path.as_bytes(), kind, size);
        h.set_mode(u32::from(e.mode));
        h.set_uid(e.uid.id());
        h.set_gid(e.gid.id());
        h.set_mtime(u64::from(e.mtime));
        if has_link {
            let t = target.as_bytes();
            let n = t.len().min(100);
            h.as_gnu_mut().unwrap().linkname[..n].copy_from_slice(&t[..n]);
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let (maj, min) = e.dev.numbers();
            let _ = h.set_device_major(maj);
            let _ = h.set_device_minor(min);
        }
        push(&mut out, h, data);
    }
    if !layer.unterminated {
        out.extend(std::iter::repeat_n(0u8, 1024));
    }
    out
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    world::host_probe();
    let base = world::base_dir("u");
    let root = base.join("root");
    std::fs::create_dir(&root).unwrap();
    world::make_canary(&base, "MVM-CANARY");
    let before = world::snapshot(&base, Some(&root));
    let base_rel = world::base_rel(&base);
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let mut totals = Totals::default();
    for layer in std::iter::once(&input.first).chain(input.more.iter().take(2)) {
        let bytes = serialise(layer, &base_rel);
        let _ = apply_layer(&root, &bytes[..], &limits, &mut totals);
    }
    let after = world::snapshot(&base, Some(&root));
    world::assert_unchanged(&before, &after, "a layer changed the host outside its root");
    world::check_host();
    std::fs::remove_dir_all(&base).expect("removing the fuzz base directory");
});

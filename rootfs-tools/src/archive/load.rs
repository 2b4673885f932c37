//! `load`: images from a tar in the OCI layout (`index.json`, nested indexes resolved to
//! linux/amd64) or Docker's archive format (`manifest.json`). Every blob is checked before use:
//! OCI blobs against their digest, Docker archive layers against the config's diff IDs. The
//! blobs enter the store only once every image of the archive checked out, and the names last,
//! under the store lock; on error nothing new is left in the store.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};

use serde::Deserialize;
use serde_json::Value;

use super::spool::{Spool, SpooledFile};
use super::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ArchiveError, MAX_METADATA_BYTES, io_err};
use crate::catalog;
use crate::digest::{Digest, HashingReader};
use crate::image::{
    Descriptor, ImageConfig, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_TAR, Manifest,
};
use crate::reference::Reference;
use crate::registry::{
    MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_ZSTD, familiar,
};
use crate::store::{ImageRecord, Store};
use crate::zstd::ZstdReader;

/// Layer media types mvm can unpack.
const LAYER_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];
/// Indexes nested deeper than this are refused.
const MAX_INDEX_DEPTH: usize = 4;

/// One image `load` put in the store.
#[derive(Debug)]
pub struct Loaded {
    /// The image, as stored.
    pub image: ImageRecord,
    /// Its names from the archive (`repo:tag`); empty when it has none.
    pub names: Vec<String>,
    /// Names that pointed at another image before, with that image's ID (Docker's "renaming
    /// the old one").
    pub replaced: Vec<(String, Digest)>,
}

/// An image checked and ready to enter the store.
struct Prepared {
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    config_bytes: Vec<u8>,
    /// Layers: digest, and the spooled file holding it.
    layers: Vec<(Digest, usize)>,
    names: Vec<String>,
}

/// A Docker archive's `manifest.json` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn format_err(what: &str, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Format(format!("{what}: {e}"))
}

/// `repo:tag` as the store keys it, from a name in an archive.
fn store_name(name: &str) -> Result<String, ArchiveError> {
    let r = Reference::parse(name).map_err(|e| format_err("image name", e))?;
    match (&r.tag, &r.digest) {
        (Some(t), None) => Ok(format!("{}:{t}", familiar(&r.repository))),
        _ => Err(ArchiveError::Format(format!(
            "image name {name:?} is not NAME:TAG"
        ))),
    }
}

/// Loads every image of the archive read from `input` into `store`.
/// The archive may be gzip- or zstd-compressed as a whole, as `docker load` accepts it.
pub fn load(store: &Store, input: &mut dyn Read) -> Result<Vec<Loaded>, ArchiveError> {
    let mut buffered = BufReader::new(input);
    let head = buffered.fill_buf().map_err(io_err("read the archive"))?;
    let mut plain: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ZstdReader::new(buffered))
    } else {
        Box::new(buffered)
    };
    let spool = Spool::read(store.temp_path("load"), &mut plain)?;
    let mut spooled = Vec::new();
    let prepared = if spool.metadata("index.json").is_some() {
        prepare_oci(&spool, &mut spooled)?
    } else if spool.metadata("manifest.json").is_some() {
        prepare_docker(&spool, &mut spooled)?
    } else {
        return Err(ArchiveError::Format(
            "neither manifest.json nor index.json found (not made by `save` or an OCI layout)"
                .into(),
        ));
    };
    if prepared.is_empty() {
        return Err(ArchiveError::Format("the archive holds no image".into()));
    }
    commit(store, &spooled, prepared)
}

/// Moves the blobs into the store, then sets the names under the lock. A failure while the
/// blobs move removes those this load added; the names are set only once all are in place.
fn commit(
    store: &Store,
    spooled: &[&SpooledFile],
    prepared: Vec<Prepared>,
) -> Result<Vec<Loaded>, ArchiveError> {
    let mut added: Vec<Digest> = Vec::new();
    let moved = move_blobs(store, spooled, &prepared, &mut added);
    if let Err(e) = moved {
        for d in &added {
            let _ = fs::remove_file(store.blob_path(d));
        }
        return Err(e);
    }
    let _lock = store.lock()?;
    let mut out = Vec::new();
    for p in prepared {
        let mut replaced = Vec::new();
        for n in &p.names {
            if let Some(old) = catalog::retag(store, n, &p.manifest_digest)? {
                let old_id = store.load(&old)?.id;
                replaced.push((n.clone(), old_id));
            }
        }
        if p.names.is_empty() {
            catalog::keep_untagged(store, &p.manifest_digest)?;
        } else {
            catalog::forget_untagged(store, &p.manifest_digest)?;
        }
        out.push(Loaded {
            image: store.load(&p.manifest_digest)?,
            names: p.names,
            replaced,
        });
    }
    Ok(out)
}

/// Puts every blob of `prepared` in the store, recording in `added` those that were new.
fn move_blobs(
    store: &Store,
    spooled: &[&SpooledFile],
    prepared: &[Prepared],
    added: &mut Vec<Digest>,
) -> Result<(), ArchiveError> {
    for p in prepared {
        for (digest, i) in &p.layers {
            let dest = store.blob_path(digest);
            if dest.exists() {
                continue;
            }
            // Same filesystem: the spooled file moves in whole or not at all.
            fs::rename(&spooled[*i].path, &dest)
                .map_err(io_err(format!("store layer {digest}")))?;
            added.push(digest.clone());
        }
        for bytes in [&p.config_bytes, &p.manifest_bytes] {
            let d = Digest::of(bytes);
            if !store.blob_path(&d).exists() {
                store.put_blob(bytes)?;
                added.push(d);
            }
        }
    }
    Ok(())
}

/// Index of `f` in `spooled`, adding it if new.
fn remember<'a>(spooled: &mut Vec<&'a SpooledFile>, f: &'a SpooledFile) -> usize {
    match spooled.iter().position(|s| std::ptr::eq(*s, f)) {
        Some(i) => i,
        None => {
            spooled.push(f);
            spooled.len() - 1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OCI layout

fn is_index(media_type: Option<&str>, doc: &Value) -> bool {
    matches!(
        media_type,
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST)
    ) || (doc.get("manifests").is_some() && doc.get("layers").is_none())
}

fn platform_of(desc: &Value) -> Option<(&str, &str)> {
    let p = desc.get("platform")?;
    Some((
        p.get("os").and_then(Value::as_str).unwrap_or(""),
        p.get("architecture").and_then(Value::as_str).unwrap_or(""),
    ))
}

/// The names a descriptor of `index.json` gives its image: Docker's full-name annotation, or
/// an OCI ref name that is a whole reference (a bare tag such as `latest` names no
/// repository, so it gives none).
fn oci_names(desc: &Value) -> Result<Vec<String>, ArchiveError> {
    let ann = |k: &str| {
        desc.get("annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
    };
    if let Some(full) = ann(ANNOTATION_IMAGE_NAME) {
        return Ok(vec![store_name(full)?]);
    }
    match ann(ANNOTATION_REF_NAME) {
        Some(r) if r.contains(['/', ':']) && Reference::parse(r).is_ok() => {
            Ok(vec![store_name(r)?])
        }
        _ => Ok(Vec::new()),
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|e| format_err(what, e))
}

fn descriptor_digest(desc: &Value, what: &str) -> Result<Digest, ArchiveError> {
    let d = desc.get("digest").and_then(Value::as_str).unwrap_or("");
    Digest::parse(d).map_err(|e| format_err(what, e))
}

fn prepare_oci<'a>(
    spool: &'a Spool,
    spooled: &mut Vec<&'a SpooledFile>,
) -> Result<Vec<Prepared>, ArchiveError> {
    if let Some(layout) = spool.metadata("oci-layout") {
        let v = parse_json(layout, "oci-layout")?;
        let version = v.get("imageLayoutVersion").and_then(Value::as_str);
        if version.is_none_or(|s| !s.starts_with("1.")) {
            return Err(ArchiveError::Unsupported(format!(
                "OCI layout version {version:?} is not supported"
            )));
        }
    }
    let index = parse_json(spool.metadata("index.json").unwrap_or(b"{}"), "index.json")?;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| ArchiveError::Format("index.json has no manifests".into()))?;
    // Docker archive names for the same configs, when manifest.json is there too.
    let docker: Vec<DockerEntry> = match spool.metadata("manifest.json") {
        Some(m) => serde_json::from_slice(m).map_err(|e| format_err("manifest.json", e))?,
        None => Vec::new(),
    };
    let mut out: Vec<Prepared> = Vec::new();
    let mut other_platforms = 0;
    for desc in entries {
        if platform_of(desc).is_some_and(|p| p != ("linux", "amd64")) {
            other_platforms += 1;
            continue;
        }
        let names = oci_names(desc)?;
        let digest = descriptor_digest(desc, "index.json")?;
        let mut p = prepare_oci_manifest(spool, spooled, desc, digest, 0)?;
        for e in &docker {
            if let Ok(f) = spool.file(&e.config)
                && f.digest == Digest::of(&p.config_bytes)
            {
                for t in e.repo_tags.iter().flatten() {
                    let n = store_name(t)?;
                    if !p.names.contains(&n) && !names.contains(&n) {
                        p.names.push(n);
                    }
                }
            }
        }
        for n in names {
            if !p.names.contains(&n) {
                p.names.insert(0, n);
            }
        }
        match out
            .iter_mut()
            .find(|o| o.manifest_digest == p.manifest_digest)
        {
            Some(o) => {
                for n in p.names {
                    if !o.names.contains(&n) {
                        o.names.push(n);
                    }
                }
            }
            None => out.push(p),
        }
    }
    if out.is_empty() && other_platforms > 0 {
        return Err(ArchiveError::Unsupported(
            "no linux/amd64 image in the archive".into(),
        ));
    }
    Ok(out)
}

/// Follows `desc` (through nested indexes, to linux/amd64) to an image manifest and checks
/// everything it references.
fn prepare_oci_manifest<'a>(
    spool: &'a Spool,
    spooled: &mut Vec<&'a SpooledFile>,
    desc: &Value,
    digest: Digest,
    depth: usize,
) -> Result<Prepared, ArchiveError> {
    let f = spool.blob(&digest)?;
    let bytes = spool.read_small(f, &format!("manifest {digest}"))?;
    let doc = parse_json(&bytes, &format!("manifest {digest}"))?;
    let media_type = desc
        .get("mediaType")
        .and_then(Value::as_str)
        .or_else(|| doc.get("mediaType").and_then(Value::as_str));
    if is_index(media_type, &doc) {
        if depth >= MAX_INDEX_DEPTH {
            return Err(ArchiveError::Unsupported(
                "image indexes nested too deeply".into(),
            ));
        }
        let entries = doc
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| ArchiveError::Format(format!("index {digest} has no manifests")))?;
        let child = entries
            .iter()
            .find(|e| platform_of(e) == Some(("linux", "amd64")))
            .or_else(|| (entries.len() == 1).then(|| &entries[0]))
            .ok_or_else(|| {
                ArchiveError::Unsupported(format!(
                    "no matching manifest for linux/amd64 in index {digest}"
                ))
            })?;
        let child_digest = descriptor_digest(child, &format!("index {digest}"))?;
        return prepare_oci_manifest(spool, spooled, child, child_digest, depth + 1);
    }
    let manifest = check_manifest(&bytes)?;
    let config_file = spool.blob(&manifest.config.digest)?;
    let config_bytes = spool.read_small(config_file, "image config")?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| format_err("image config", e))?;
    check_config(&config, manifest.layers.len())?;
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let f = spool.blob(&l.digest)?;
        if f.size != l.size {
            return Err(ArchiveError::Format(format!(
                "layer {} has {} bytes, its manifest says {}",
                l.digest, f.size, l.size
            )));
        }
        layers.push((l.digest.clone(), remember(spooled, f)));
    }
    Ok(Prepared {
        manifest_bytes: bytes,
        manifest_digest: digest,
        config_bytes,
        layers,
        names: Vec::new(),
    })
}

/// Checks a manifest is an image mvm can run.
fn check_manifest(bytes: &[u8]) -> Result<Manifest, ArchiveError> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format_err("image manifest", e))?;
    if m.schema_version != 2 {
        return Err(ArchiveError::Unsupported(format!(
            "manifest schema version {} is not supported",
            m.schema_version
        )));
    }
    if ![MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG].contains(&m.config.media_type.as_str()) {
        return Err(ArchiveError::Unsupported(format!(
            "not a container image (config media type {})",
            m.config.media_type
        )));
    }
    if m.config.size > MAX_METADATA_BYTES {
        return Err(ArchiveError::TooLarge("image config".into()));
    }
    if let Some(l) = m
        .layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Err(ArchiveError::Unsupported(format!(
            "layer {} has unsupported media type {}",
            l.digest, l.media_type
        )));
    }
    Ok(m)
}

fn check_config(config: &ImageConfig, layers: usize) -> Result<(), ArchiveError> {
    if config.rootfs.diff_ids.len() != layers {
        return Err(ArchiveError::Format(format!(
            "image config lists {} layers, the manifest {layers}",
            config.rootfs.diff_ids.len()
        )));
    }
    if config.os != "linux" || config.architecture != "amd64" {
        tracing::warn!(os = %config.os, arch = %config.architecture, "image is not linux/amd64");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Docker archive

/// A layer file's compression, from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff(path: &std::path::Path) -> Result<Compression, ArchiveError> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(io_err("open a spooled layer"))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(io_err("read a spooled layer")(e)),
        }
    }
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

/// sha256 of a layer's uncompressed tar (its diff ID).
fn diff_id(f: &SpooledFile, compression: Compression) -> Result<Digest, ArchiveError> {
    if compression == Compression::None {
        return Ok(f.digest.clone());
    }
    let file = File::open(&f.path).map_err(io_err("open a spooled layer"))?;
    let buffered = BufReader::new(file);
    let mut plain: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        _ => Box::new(ZstdReader::new(buffered)),
    };
    let mut h = HashingReader::new(&mut plain);
    io::copy(&mut h, &mut io::sink()).map_err(|e| {
        ArchiveError::Format(format!(
            "layer with digest {} does not decompress: {e}",
            f.digest
        ))
    })?;
    Ok(h.finish().0)
}

fn prepare_docker<'a>(
    spool: &'a Spool,
    spooled: &mut Vec<&'a SpooledFile>,
) -> Result<Vec<Prepared>, ArchiveError> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(spool.metadata("manifest.json").unwrap_or(b"[]"))
            .map_err(|e| format_err("manifest.json", e))?;
    let mut out: Vec<Prepared> = Vec::new();
    for e in entries {
        let config_file = spool.file(&e.config)?;
        spool.check_named(&e.config, config_file)?;
        let config_bytes = spool.read_small(config_file, &e.config)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|err| format_err(&e.config, err))?;
        check_config(&config, e.layers.len())?;
        let mut descriptors = Vec::new();
        let mut layers = Vec::new();
        for (path, expected) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let f = spool.file(path)?;
            spool.check_named(path, f)?;
            let compression = sniff(&f.path)?;
            let actual = diff_id(f, compression)?;
            if actual != *expected {
                return Err(ArchiveError::DigestMismatch {
                    what: "layer",
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            let media_type = match compression {
                Compression::None => MEDIA_TYPE_OCI_LAYER_TAR,
                Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
                Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
            };
            descriptors.push(Descriptor {
                media_type: media_type.into(),
                digest: f.digest.clone(),
                size: f.size,
                annotations: None,
            });
            layers.push((f.digest.clone(), remember(spooled, f)));
        }
        // The archive has no manifest of its own: one is made from the config and layers, the
        // same bytes for the same archive.
        let manifest = Manifest::oci(&config_bytes, descriptors);
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|err| format_err("manifest", err))?;
        let mut names = Vec::new();
        for t in e.repo_tags.iter().flatten() {
            let n = store_name(t)?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let manifest_digest = Digest::of(&manifest_bytes);
        match out
            .iter_mut()
            .find(|o| o.manifest_digest == manifest_digest)
        {
            Some(o) => {
                for n in names {
                    if !o.names.contains(&n) {
                        o.names.push(n);
                    }
                }
            }
            None => out.push(Prepared {
                manifest_bytes,
                manifest_digest,
                config_bytes,
                layers,
                names,
            }),
        }
    }
    Ok(out)
}

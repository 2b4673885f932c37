//! Round trips through `save` and `load`, archives made by hand in each format, and bad
//! archives that must be refused without touching the store.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use super::*;
use crate::catalog;
use crate::digest::Digest;
use crate::image::{
    ContainerConfig, Descriptor, ImageConfig, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_TAR, MEDIA_TYPE_OCI_MANIFEST, Manifest, RootFs,
};
use crate::registry::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_ZSTD};
use crate::store::Store;

struct TempStore {
    store: Store,
    dir: PathBuf,
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn temp_store(name: &str) -> TempStore {
    let dir = std::env::temp_dir().join(format!("mvm-archive-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    TempStore {
        store: Store::open(&dir).unwrap(),
        dir,
    }
}

/// A layer tar holding one file.
fn layer_tar(name: &str, body: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, body).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn config_for(diff_ids: Vec<Digest>, cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&ImageConfig {
        created: Some("2026-01-01T00:00:00Z".into()),
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            cmd: Some(vec![cmd.into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: vec![],
        extra: Default::default(),
    })
    .unwrap()
}

/// Stores an image with gzip layers (from `files`) in `s`.
fn stored_image(s: &Store, files: &[(&str, &[u8])], tag: Option<&str>) -> crate::ImageRecord {
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for (name, body) in files {
        let tar = layer_tar(name, body);
        diff_ids.push(Digest::of(&tar));
        let gz = gzip(&tar);
        let d = s.put_blob(&gz).unwrap();
        layers.push(Descriptor {
            media_type: MEDIA_TYPE_OCI_LAYER_GZIP.into(),
            digest: d,
            size: gz.len() as u64,
            annotations: None,
        });
    }
    let config = config_for(diff_ids, files[0].0);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: MEDIA_TYPE_OCI_CONFIG.into(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            annotations: None,
        },
        layers,
        annotations: None,
    };
    let tags: Vec<String> = tag.into_iter().map(String::from).collect();
    s.add_image(&manifest, &config, &tags).unwrap()
}

/// An archive made of `(path, bytes)` entries, in order.
fn archive(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Entries of a tar, path → bytes.
fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((p, data));
    }
    out
}

fn file_count(s: &Store) -> usize {
    fs::read_dir(s.root().join("blobs/sha256")).unwrap().count()
}

#[test]
fn save_writes_both_formats_and_load_round_trips() {
    let src = temp_store("rt-src");
    let a = stored_image(&src.store, &[("a", b"1"), ("shared", b"s")], Some("a:v1"));
    let b = stored_image(&src.store, &[("shared", b"s")], None);
    let mut out = Vec::new();
    save(
        &src.store,
        &[
            SaveItem {
                image: a.clone(),
                names: vec!["a:v1".into()],
            },
            SaveItem {
                image: b.clone(),
                names: vec![],
            },
            SaveItem {
                image: a.clone(),
                names: vec!["a:v2".into()],
            },
        ],
        &mut out,
    )
    .unwrap();
    let ents = entries(&out);
    let names: Vec<&str> = ents.iter().map(|(p, _)| p.as_str()).collect();
    for n in [
        "blobs/",
        "index.json",
        "manifest.json",
        "oci-layout",
        "repositories",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // The shared layer is written once.
    let shared = format!("blobs/sha256/{}", a.manifest.layers[1].digest.hex());
    assert_eq!(names.iter().filter(|n| **n == shared).count(), 1);
    let get = |n: &str| &ents.iter().find(|(p, _)| p == n).unwrap().1;
    let m: serde_json::Value = serde_json::from_slice(get("manifest.json")).unwrap();
    assert_eq!(m.as_array().unwrap().len(), 2);
    assert_eq!(m[0]["RepoTags"], json!(["a:v1", "a:v2"]));
    assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", a.id.hex()));
    assert!(m[1]["RepoTags"].is_null());
    let idx: serde_json::Value = serde_json::from_slice(get("index.json")).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 3);
    assert_eq!(
        idx["manifests"][0]["annotations"][ANNOTATION_IMAGE_NAME],
        "docker.io/library/a:v1"
    );
    assert_eq!(
        idx["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
        "v1"
    );

    let dst = temp_store("rt-dst");
    let loaded = load(&dst.store, &mut &out[..]).unwrap();
    assert_eq!(loaded.len(), 2);
    let la = loaded.iter().find(|l| l.image.id == a.id).unwrap();
    assert_eq!(la.image.manifest_digest, a.manifest_digest);
    assert_eq!(la.names, vec!["a:v1".to_string(), "a:v2".into()]);
    let lb = loaded.iter().find(|l| l.image.id == b.id).unwrap();
    assert!(lb.names.is_empty());
    // The untagged one is present, by ID.
    assert_eq!(catalog::list(&dst.store).unwrap().len(), 2);
    assert_eq!(
        catalog::resolve(&dst.store, &b.id.hex()[..12]).unwrap().id,
        b.id
    );
    assert_eq!(file_count(&src.store), file_count(&dst.store));
    // Loading again changes nothing.
    let again = load(&dst.store, &mut &out[..]).unwrap();
    assert!(again.iter().all(|l| l.replaced.is_empty()));
    assert_eq!(file_count(&src.store), file_count(&dst.store));
    // The spool directory is gone.
    assert_eq!(
        fs::read_dir(dst.store.root().join("tmp")).unwrap().count(),
        0
    );

    // Only the Docker half: the manifest is rebuilt, the image ID is the same.
    let docker_only: Vec<(&str, Vec<u8>)> = ents
        .iter()
        .filter(|(p, _)| p != "index.json" && p != "oci-layout" && !p.ends_with('/'))
        .map(|(p, d)| (p.as_str(), d.clone()))
        .collect();
    let dst2 = temp_store("rt-docker");
    let loaded = load(&dst2.store, &mut &archive(&docker_only)[..]).unwrap();
    let la = loaded.iter().find(|l| l.image.id == a.id).unwrap();
    assert_eq!(la.names, vec!["a:v1".to_string(), "a:v2".into()]);
    assert_eq!(la.image.manifest.layers, a.manifest.layers);
}

#[test]
fn legacy_docker_archive_with_plain_layers_and_links() {
    let l1 = layer_tar("bin/sh", b"#!");
    let l2 = layer_tar("etc/hostname", b"x");
    let diff_ids = vec![Digest::of(&l1), Digest::of(&l2), Digest::of(&l1)];
    let config = config_for(diff_ids, "sh");
    let cfg_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = json!([{
        "Config": cfg_name,
        "RepoTags": ["docker.io/library/legacy:1", "legacy:2"],
        "Layers": ["one/layer.tar", "two/layer.tar", "three/layer.tar"],
    }]);
    // Old Docker links a repeated layer to the first copy.
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in [
        (cfg_name.as_str(), config.clone()),
        ("one/layer.tar", l1.clone()),
        ("two/layer.tar", l2.clone()),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &d[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "three/layer.tar", "../one/layer.tar")
        .unwrap();
    let tar_bytes = gzip(&b.into_inner().unwrap());

    let s = temp_store("legacy");
    let loaded = load(&s.store, &mut &tar_bytes[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].names,
        vec!["legacy:1".to_string(), "legacy:2".into()]
    );
    assert_eq!(loaded[0].image.id, Digest::of(&config));
    let layers = &loaded[0].image.manifest.layers;
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[0].media_type, MEDIA_TYPE_OCI_LAYER_TAR);
    assert_eq!(layers[0].digest, Digest::of(&l1));
    assert_eq!(layers[2].digest, Digest::of(&l1));
    assert!(s.store.blob_path(&Digest::of(&l2)).exists());
}

/// An OCI layout whose index.json points at an index that holds an arm64 and an amd64 image
/// with a zstd layer.
fn nested_oci_layout(corrupt_layer: bool) -> (Vec<u8>, Digest) {
    let tar = layer_tar("hello", b"zstd world");
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let config = config_for(vec![Digest::of(&tar)], "hello");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": Digest::of(&config), "size": config.len()},
        "layers": [{"mediaType": MEDIA_TYPE_OCI_LAYER_ZSTD, "digest": Digest::of(&zst), "size": zst.len()}],
    }))
    .unwrap();
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [
            {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": Digest::of(b"arm"), "size": 3,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": Digest::of(&manifest),
             "size": manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MEDIA_TYPE_OCI_INDEX, "digest": Digest::of(&inner),
                       "size": inner.len(),
                       "annotations": {ANNOTATION_REF_NAME: "example.com/nested:v1"}}],
    }))
    .unwrap();
    let blob = |d: &[u8]| format!("./blobs/sha256/{}", Digest::of(d).hex());
    let mut layer_bytes = zst.clone();
    if corrupt_layer {
        let mid = layer_bytes.len() / 2;
        layer_bytes[mid] ^= 0xff;
    }
    let entries = [
        (blob(&zst), layer_bytes),
        (blob(&config), config.clone()),
        (blob(&manifest), manifest.clone()),
        (blob(&inner), inner.clone()),
        ("./index.json".to_string(), index),
        (
            "./oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
    ];
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.clone()))
        .collect();
    (archive(&refs), Digest::of(&config))
}

#[test]
fn oci_layout_with_nested_index_and_zstd_layer() {
    let (tar_bytes, id) = nested_oci_layout(false);
    let s = temp_store("nested");
    let loaded = load(&s.store, &mut &tar_bytes[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].image.id, id);
    assert_eq!(loaded[0].names, vec!["example.com/nested:v1".to_string()]);
    assert_eq!(
        catalog::resolve(&s.store, "example.com/nested:v1")
            .unwrap()
            .id,
        id
    );
}

#[test]
fn corrupt_blob_is_refused_and_nothing_is_stored() {
    let (tar_bytes, _) = nested_oci_layout(true);
    let s = temp_store("corrupt");
    let err = load(&s.store, &mut &tar_bytes[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("nothing was loaded"));
    assert_eq!(file_count(&s.store), 0);
    assert!(catalog::list(&s.store).unwrap().is_empty());
    assert_eq!(fs::read_dir(s.store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_bad_diff_id_in_a_docker_archive_is_refused() {
    let l1 = layer_tar("a", b"1");
    let config = config_for(vec![Digest::of(b"something else")], "a");
    let manifest = json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
    let tar_bytes = archive(&[
        ("c.json", config),
        ("l/layer.tar", gzip(&l1)),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ]);
    let s = temp_store("diffid");
    let err = load(&s.store, &mut &tar_bytes[..]).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DigestMismatch { what: "layer", .. }),
        "{err}"
    );
    assert_eq!(file_count(&s.store), 0);
}

/// A tar entry whose name is written raw, bypassing the tar crate's path checks.
fn raw_entry(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn bad_archives_are_refused() {
    let s = temp_store("bad");
    for name in [&b"../evil"[..], b"/etc/passwd", b"blobs/../../x"] {
        let err = load(&s.store, &mut &raw_entry(name, b"x")[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
    }
    let big = vec![b' '; (MAX_METADATA_BYTES + 1) as usize];
    let err = load(&s.store, &mut &archive(&[("manifest.json", big)])[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge(_)), "{err}");
    let err = load(&s.store, &mut &archive(&[("hello", b"x".to_vec())])[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::Format(_)), "{err}");
    let err = load(&s.store, &mut &b"not a tar at all, clearly"[..]).unwrap_err();
    assert!(!err.to_string().is_empty());
    let err = load(
        &s.store,
        &mut &archive(&[("manifest.json", b"{nope".to_vec())])[..],
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Format(_)), "{err}");
    // A manifest.json naming a file the archive lacks.
    let m = json!([{"Config": "c.json", "RepoTags": null, "Layers": []}]);
    let err = load(
        &s.store,
        &mut &archive(&[("manifest.json", serde_json::to_vec(&m).unwrap())])[..],
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Missing(_)), "{err}");
    // An index pointing at a blob that is not there.
    let idx = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": Digest::of(b"gone"), "size": 4}]});
    let err = load(
        &s.store,
        &mut &archive(&[("index.json", serde_json::to_vec(&idx).unwrap())])[..],
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Missing(_)), "{err}");
    assert_eq!(file_count(&s.store), 0);
    assert_eq!(fs::read_dir(s.store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn loading_a_name_over_another_image_leaves_the_old_one_untagged() {
    let s = temp_store("rename");
    let old = stored_image(&s.store, &[("old", b"o")], Some("app:latest"));
    let src = temp_store("rename-src");
    let new = stored_image(&src.store, &[("new", b"n")], Some("app:latest"));
    let mut out = Vec::new();
    save(
        &src.store,
        &[SaveItem {
            image: new.clone(),
            names: vec!["app:latest".into()],
        }],
        &mut out,
    )
    .unwrap();
    let loaded = load(&s.store, &mut &out[..]).unwrap();
    assert_eq!(
        loaded[0].replaced,
        vec![("app:latest".to_string(), old.id.clone())]
    );
    let list = catalog::list(&s.store).unwrap();
    assert_eq!(list.len(), 2);
    let o = list.iter().find(|i| i.id == old.id).unwrap();
    assert!(o.tags.is_empty());
}

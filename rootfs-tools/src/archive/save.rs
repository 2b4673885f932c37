//! `save`: images from the store into one tar that Docker, skopeo and `load` read as a Docker
//! archive (`manifest.json`) and as an OCI layout (`index.json`). Blobs go in as stored (layers
//! keep their compression) under `blobs/sha256/<hex>`, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;

use serde_json::{Value, json};

use super::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ArchiveError, io_err};
use crate::digest::Digest;
use crate::image::MEDIA_TYPE_OCI_MANIFEST;
use crate::registry::{MEDIA_TYPE_OCI_INDEX, canonical};
use crate::store::{ImageRecord, Store, StoreError};

/// One image to save, with the names (`repo:tag`) to record for it.
#[derive(Clone, Debug)]
pub struct SaveItem {
    /// The image.
    pub image: ImageRecord,
    /// Its names in the archive; none saves it by ID (Docker's `RepoTags: null`).
    pub names: Vec<String>,
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    if dir {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
    } else {
        h.set_mode(0o644);
    }
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn tar_write_err(e: std::io::Error) -> ArchiveError {
    io_err("write the archive")(e)
}

fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = header(data.len() as u64, false);
    b.append_data(&mut h, path, data).map_err(tar_write_err)
}

/// The `repo` and `tag` of a stored name (`repo:tag`).
fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, "latest"),
    }
}

/// Writes `items` as one archive to `out`. Images named twice are written once, with every
/// name.
pub fn save(store: &Store, items: &[SaveItem], out: &mut dyn Write) -> Result<(), ArchiveError> {
    // Merge the names of one image, keeping the order of first mention.
    let mut images: Vec<SaveItem> = Vec::new();
    for item in items {
        match images
            .iter_mut()
            .find(|i| i.image.manifest_digest == item.image.manifest_digest)
        {
            Some(i) => {
                for n in &item.names {
                    if !i.names.contains(n) {
                        i.names.push(n.clone());
                    }
                }
            }
            None => images.push(item.clone()),
        }
    }

    let mut b = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, true);
        b.append_data(&mut h, dir, std::io::empty())
            .map_err(tar_write_err)?;
    }
    let mut written = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for SaveItem { image, names } in &images {
        let mut blobs: Vec<&Digest> = image.manifest.layers.iter().map(|l| &l.digest).collect();
        blobs.push(&image.id);
        blobs.push(&image.manifest_digest);
        for d in blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            let path = store.blob_path(d);
            let mut f = File::open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ArchiveError::Store(StoreError::Corrupt(format!(
                        "blob {d} of image {} is missing",
                        image.id
                    )))
                } else {
                    io_err(format!("open blob {d}"))(e)
                }
            })?;
            let size = f
                .metadata()
                .map_err(io_err(format!("stat blob {d}")))?
                .len();
            let name = format!("blobs/sha256/{}", d.hex());
            let mut h = header(size, false);
            b.append_data(&mut h, &name, &mut f)
                .map_err(tar_write_err)?;
        }

        let manifest_size = std::fs::metadata(store.blob_path(&image.manifest_digest))
            .map_err(io_err("stat a manifest"))?
            .len();
        let media_type = image
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_string());
        let descriptor = |annotations: Option<Value>| {
            let mut d = json!({
                "mediaType": media_type,
                "digest": image.manifest_digest.to_string(),
                "size": manifest_size,
            });
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if names.is_empty() {
            index_entries.push(descriptor(None));
        }
        for n in names {
            let (repo, tag) = split_name(n);
            index_entries.push(descriptor(Some(json!({
                ANNOTATION_IMAGE_NAME: format!("{}:{tag}", canonical(repo)),
                ANNOTATION_REF_NAME: tag,
            }))));
            let top = image.manifest.layers.last().map_or_else(
                || image.id.hex().to_string(),
                |l| l.digest.hex().to_string(),
            );
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), top);
        }
        docker_entries.push(json!({
            "Config": format!("blobs/sha256/{}", image.id.hex()),
            "RepoTags": if names.is_empty() { Value::Null } else { json!(names) },
            "Layers": image.manifest.layers.iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect::<Vec<_>>(),
        }));
    }

    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": index_entries,
    });
    let to_vec = |v: &Value| serde_json::to_vec(v).map_err(|e| ArchiveError::Format(e.to_string()));
    append_bytes(&mut b, "index.json", &to_vec(&index)?)?;
    append_bytes(&mut b, "manifest.json", &to_vec(&json!(docker_entries))?)?;
    append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !repositories.is_empty() {
        append_bytes(&mut b, "repositories", &to_vec(&json!(repositories))?)?;
    }
    let out = b.into_inner().map_err(tar_write_err)?;
    out.flush().map_err(tar_write_err)
}

//! The set of images in a store beyond the tag table: repository digests (`busybox@sha256:...`,
//! recorded by pull and push), images kept without any name (`<none>`, as `load` and `import`
//! make them), untagging, deleting an image, and removing the blobs and disks that no remaining
//! image uses.
//!
//! ```text
//! images/repodigests.json      {"busybox@sha256:<digest pulled>": "sha256:<image manifest>"}
//! images/untagged.json         ["sha256:<image manifest>", ...]
//! ```
//! The digest pulled is the index's when the registry served one, as Docker records it.
//! An image stays listed while a tag, a repo digest or an `untagged.json` entry names it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::fsutil::atomic_write;
use crate::reference::Reference;
use crate::registry::name::familiar;
use crate::store::{ImageRecord, Store, StoreError};

fn io_err(what: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        what: what.to_string(),
        source,
    }
}

fn repo_digests_path(store: &Store) -> PathBuf {
    store.root().join("repodigests.json")
}

/// Every recorded `repo@digest`, with the manifest of the image it names.
pub fn repo_digests(store: &Store) -> Result<BTreeMap<String, Digest>, StoreError> {
    match fs::read(repo_digests_path(store)) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| StoreError::Corrupt(format!("repodigests.json: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io_err("read repodigests.json")(e)),
    }
}

fn write_repo_digests(store: &Store, set: &BTreeMap<String, Digest>) -> Result<(), StoreError> {
    let data = serde_json::to_vec_pretty(set).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    atomic_write(&repo_digests_path(store), &data).map_err(io_err("write repodigests.json"))
}

/// Records that `repository` holds `digest` (what was pulled or pushed: an index or the
/// manifest itself), naming the image whose manifest is `manifest`; the caller holds the store
/// lock.
pub fn add_repo_digest(
    store: &Store,
    repository: &str,
    digest: &Digest,
    manifest: &Digest,
) -> Result<(), StoreError> {
    let mut set = repo_digests(store)?;
    let key = format!("{}@{digest}", familiar(repository));
    if set.get(&key) != Some(manifest) {
        // One digest per repository and image, as Docker keeps it.
        let repo = familiar(repository);
        set.retain(|k, m| {
            !(m == manifest && k.rsplit_once('@').map(|(r, _)| r) == Some(repo.as_str()))
        });
        set.insert(key, manifest.clone());
        write_repo_digests(store, &set)?;
    }
    Ok(())
}

fn untagged_path(store: &Store) -> PathBuf {
    store.root().join("untagged.json")
}

/// Manifests of the images kept without a name.
pub fn untagged(store: &Store) -> Result<BTreeSet<Digest>, StoreError> {
    match fs::read(untagged_path(store)) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| StoreError::Corrupt(format!("untagged.json: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io_err("read untagged.json")(e)),
    }
}

fn write_untagged(store: &Store, set: &BTreeSet<Digest>) -> Result<(), StoreError> {
    let data = serde_json::to_vec_pretty(set).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    atomic_write(&untagged_path(store), &data).map_err(io_err("write untagged.json"))
}

/// Keeps the image whose manifest is `manifest` listed even with no name (Docker's dangling
/// `<none>:<none>` image); the caller holds the store lock.
pub fn keep_untagged(store: &Store, manifest: &Digest) -> Result<(), StoreError> {
    let mut set = untagged(store)?;
    if set.insert(manifest.clone()) {
        write_untagged(store, &set)?;
    }
    Ok(())
}

/// Drops the image whose manifest is `manifest` from the untagged set (it has a name now, or
/// is gone); the caller holds the store lock.
pub fn forget_untagged(store: &Store, manifest: &Digest) -> Result<(), StoreError> {
    let mut set = untagged(store)?;
    if set.remove(manifest) {
        write_untagged(store, &set)?;
    }
    Ok(())
}

fn intermediate_path(store: &Store) -> std::path::PathBuf {
    store.root().join("intermediate.json")
}

/// Images made by a build's steps before its last one: listed by `images -a` only, as Docker
/// lists intermediate images.
pub fn intermediates(store: &Store) -> Result<BTreeSet<Digest>, StoreError> {
    match fs::read(intermediate_path(store)) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| StoreError::Corrupt(format!("intermediate.json: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io_err("read intermediate.json")(e)),
    }
}

/// Marks (or unmarks) the image whose manifest is `manifest` as a build's intermediate image;
/// the caller holds the store lock.
pub fn set_intermediate(store: &Store, manifest: &Digest, yes: bool) -> Result<(), StoreError> {
    let mut set = intermediates(store)?;
    let changed = if yes {
        set.insert(manifest.clone())
    } else {
        set.remove(manifest)
    };
    if changed {
        let data =
            serde_json::to_vec_pretty(&set).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        atomic_write(&intermediate_path(store), &data)
            .map_err(io_err("write intermediate.json"))?;
    }
    Ok(())
}

/// Points `name` (`repo:tag`) at `manifest` as `Store::set_tag` does; an image the tag leaves
/// with no name stays as a `<none>` image, as Docker keeps it. Returns that image's manifest.
/// The caller holds the store lock.
pub fn retag(store: &Store, name: &str, manifest: &Digest) -> Result<Option<Digest>, StoreError> {
    let old = store.tags()?.get(name).cloned();
    store.set_tag(name, manifest)?;
    match old {
        Some(old) if old != *manifest && !is_referenced(store, &old)? => {
            keep_untagged(store, &old)?;
            Ok(Some(old))
        }
        _ => Ok(None),
    }
}

/// The `repo@digest` names of an image.
pub fn repo_digests_of(set: &BTreeMap<String, Digest>, manifest: &Digest) -> Vec<String> {
    set.iter()
        .filter(|(_, m)| *m == manifest)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Every image: tagged ones, and those known only by a `repo@digest` (shown as `<none>`).
pub fn list(store: &Store) -> Result<Vec<ImageRecord>, StoreError> {
    let mut out = store.list()?;
    let mut seen: BTreeSet<Digest> = out.iter().map(|i| i.manifest_digest.clone()).collect();
    let named = repo_digests(store)?.into_values();
    for d in named.chain(untagged(store)?) {
        if seen.insert(d.clone()) && store.blob_path(&d).exists() {
            out.push(store.load(&d)?);
        }
    }
    Ok(out)
}

/// Finds an image as `Store::resolve` does, and also by `name@digest` and by Docker's long
/// names (`docker.io/library/busybox:latest` is `busybox:latest`).
pub fn resolve(store: &Store, name: &str) -> Result<ImageRecord, StoreError> {
    match store.resolve(name) {
        Err(StoreError::NotFound(n)) => {
            let reference = Reference::parse(name)?;
            let repo = familiar(&reference.repository);
            if let Some(d) = &reference.digest {
                if let Some(m) = repo_digests(store)?.get(&format!("{repo}@{d}"))
                    && store.blob_path(m).exists()
                {
                    return store.load(m);
                }
            } else if let Some(tag) = &reference.tag
                && let Some(d) = store.tags()?.get(&format!("{repo}:{tag}"))
            {
                return store.load(d);
            }
            resolve_id(store, name)?.ok_or(StoreError::NotFound(n))
        }
        other => other,
    }
}

/// An image known only by a repo digest or kept untagged, by (a prefix of) its ID.
fn resolve_id(store: &Store, name: &str) -> Result<Option<ImageRecord>, StoreError> {
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut matches: Vec<ImageRecord> = list(store)?
        .into_iter()
        .filter(|img| img.id.hex().starts_with(prefix))
        .collect();
    matches.sort_by(|a, b| a.id.cmp(&b.id));
    matches.dedup_by(|a, b| a.id == b.id);
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => Err(StoreError::Ambiguous(name.to_string())),
    }
}

/// Points `name` (a reference; `latest` when untagged) at the image `target` names.
pub fn tag(store: &Store, target: &str, name: &str) -> Result<ImageRecord, StoreError> {
    let image = resolve(store, target)?;
    let reference = Reference::parse(name)?;
    if reference.digest.is_some() {
        return Err(StoreError::Reference(crate::reference::InvalidReference(
            format!("{name} (a tag cannot contain a digest)"),
        )));
    }
    let tagged = format!(
        "{}:{}",
        familiar(&reference.repository),
        reference.tag.as_deref().unwrap_or("latest")
    );
    let _lock = store.lock()?;
    store.set_tag(&tagged, &image.manifest_digest)?;
    forget_untagged(store, &image.manifest_digest)?;
    store.load(&image.manifest_digest)
}

/// Removes one tag (`repo:tag`) or `repo@digest` name; false when it did not exist. The caller
/// holds the store lock.
pub fn untag(store: &Store, name: &str) -> Result<bool, StoreError> {
    let mut tags: BTreeMap<String, Digest> = store.tags()?;
    if tags.remove(name).is_some() {
        let data =
            serde_json::to_vec_pretty(&tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        atomic_write(&store.root().join("tags.json"), &data).map_err(io_err("write tags.json"))?;
        return Ok(true);
    }
    let mut set = repo_digests(store)?;
    if set.remove(name).is_some() {
        write_repo_digests(store, &set)?;
        return Ok(true);
    }
    Ok(false)
}

/// True while some tag or repo digest still points at the manifest (an `untagged.json` entry
/// does not count: it is no name).
pub fn is_referenced(store: &Store, manifest: &Digest) -> Result<bool, StoreError> {
    Ok(store.tags()?.values().any(|d| d == manifest)
        || !repo_digests_of(&repo_digests(store)?, manifest).is_empty())
}

/// What `delete` removed.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Names untagged.
    pub untagged: Vec<String>,
    /// Blobs removed (manifest, config, layers).
    pub blobs: Vec<Digest>,
}

/// Deletes an image: every name pointing at its manifest, then the blobs and the cached disk
/// that no remaining image uses. Only this image's blobs are candidates, so a pull writing new
/// blobs meanwhile loses nothing. The caller holds the store lock.
pub fn delete(store: &Store, image: &ImageRecord) -> Result<Deleted, StoreError> {
    let mut deleted = Deleted::default();
    for t in &image.tags {
        if untag(store, t)? {
            deleted.untagged.push(t.clone());
        }
    }
    let mut indexes = Vec::new();
    for rd in repo_digests_of(&repo_digests(store)?, &image.manifest_digest) {
        if untag(store, &rd)? {
            if let Some(d) = rd.rsplit_once('@').and_then(|(_, d)| Digest::parse(d).ok())
                && d != image.manifest_digest
            {
                indexes.push(d);
            }
            deleted.untagged.push(rd);
        }
    }
    forget_untagged(store, &image.manifest_digest)?;
    deleted.blobs = remove_unused(store, image)?;
    // Index blobs kept for repo digests go with the last name that used them.
    let left = repo_digests(store)?;
    for d in indexes {
        let suffix = format!("@{d}");
        if !left.keys().any(|k| k.ends_with(&suffix))
            && fs::remove_file(store.blob_path(&d)).is_ok()
        {
            deleted.blobs.push(d);
        }
    }
    Ok(deleted)
}

/// Removes the blobs and disk of `image` that no image still listed uses.
pub fn remove_unused(store: &Store, image: &ImageRecord) -> Result<Vec<Digest>, StoreError> {
    let remaining = list(store)?;
    if remaining
        .iter()
        .any(|i| i.manifest_digest == image.manifest_digest)
    {
        return Ok(Vec::new());
    }
    let mut used = BTreeSet::new();
    for i in &remaining {
        used.insert(i.manifest_digest.clone());
        used.insert(i.id.clone());
        used.extend(i.manifest.layers.iter().map(|l| l.digest.clone()));
    }
    let mut candidates = vec![image.manifest_digest.clone(), image.id.clone()];
    candidates.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
    let mut removed = Vec::new();
    for d in candidates {
        if !used.contains(&d) && !removed.contains(&d) {
            match fs::remove_file(store.blob_path(&d)) {
                Ok(()) => removed.push(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove blob")(e)),
            }
        }
    }
    if !remaining.iter().any(|i| i.id == image.id) {
        // Any cached disk of this image ID, whatever its filesystem suffix.
        if let Ok(rd) = fs::read_dir(store.root().join("disks")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(image.id.hex()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ContainerConfig, Descriptor, ImageConfig, Manifest, RootFs};

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "mvm-catalog-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    fn image(store: &Store, layer: &[u8], cmd: &str, tags: &[String]) -> ImageRecord {
        let layer_digest = store.put_blob(layer).unwrap();
        let config = ImageConfig {
            created: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                cmd: Some(vec![cmd.into()]),
                ..Default::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer_digest.clone()],
            },
            history: vec![],
            extra: Default::default(),
        };
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: None,
            config: Descriptor {
                media_type: crate::image::MEDIA_TYPE_OCI_CONFIG.into(),
                digest: Digest::of(&config_bytes),
                size: config_bytes.len() as u64,
                annotations: None,
            },
            layers: vec![Descriptor {
                media_type: crate::image::MEDIA_TYPE_OCI_LAYER_TAR.into(),
                digest: layer_digest,
                size: layer.len() as u64,
                annotations: None,
            }],
            annotations: None,
        };
        store.add_image(&manifest, &config_bytes, tags).unwrap()
    }

    #[test]
    fn shared_layers_survive_deleting_one_image() {
        let (s, dir) = store();
        let a = image(&s, b"shared", "a", &["a:latest".into()]);
        let b = image(&s, b"shared", "b", &["b:latest".into()]);
        let t = tag(&s, "a", "docker.io/library/c:v1").unwrap();
        assert!(t.tags.contains(&"c:v1".to_string()));
        let _l = s.lock().unwrap();
        assert!(untag(&s, "a:latest").unwrap());
        assert!(is_referenced(&s, &a.manifest_digest).unwrap());
        let del = delete(&s, &s.load(&a.manifest_digest).unwrap()).unwrap();
        assert_eq!(del.untagged, vec!["c:v1".to_string()]);
        assert!(!s.blob_path(&a.id).exists());
        assert!(s.blob_path(&b.manifest.layers[0].digest).exists());
        delete(&s, &b).unwrap();
        assert!(!s.blob_path(&b.manifest.layers[0].digest).exists());
        assert!(list(&s).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn digest_references_resolve() {
        let (s, dir) = store();
        let a = image(&s, b"x", "a", &[]);
        add_repo_digest(
            &s,
            "docker.io/library/busybox",
            &a.manifest_digest,
            &a.manifest_digest,
        )
        .unwrap();
        let r = resolve(&s, &format!("busybox@{}", a.manifest_digest)).unwrap();
        assert_eq!(r.id, a.id);
        assert_eq!(list(&s).unwrap().len(), 1);
        assert!(resolve(&s, &format!("other@{}", a.manifest_digest)).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}

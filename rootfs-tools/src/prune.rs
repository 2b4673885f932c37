//! `image prune`: deletes dangling images (no tag), or with `all` every image, that no
//! container uses, then every blob and cached disk no remaining image references, and the
//! leftovers of killed pulls and loads under `tmp/`.
//!
//! Pull and load write blobs before they take the store lock to name the image, so a blob
//! that no image references yet may belong to one in flight: such orphans are removed only
//! once they are older than [`ORPHAN_GRACE`]. The blobs of the images pruned here go at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::catalog;
use crate::digest::Digest;
use crate::store::{Store, StoreError};

/// How old an unreferenced blob or disk must be before prune removes it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// What to prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Every unused image, not only the dangling ones.
    pub all: bool,
    /// IDs (config digests) of the images containers use; never pruned.
    pub in_use: BTreeSet<Digest>,
}

/// What prune removed, in Docker's terms.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Names removed (`repo:tag`, `repo@digest`).
    pub untagged: Vec<String>,
    /// Image IDs deleted, each followed by the other blobs that went with it.
    pub deleted: Vec<Digest>,
    /// Bytes freed (blobs and cached disks).
    pub reclaimed: u64,
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        what: what.to_string(),
        source,
    }
}

/// Sizes of the files in `dir`, by name (hidden temporaries left out).
fn sizes(dir: &Path) -> Result<BTreeMap<String, (u64, SystemTime)>, StoreError> {
    let mut out = BTreeMap::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("list the image store")(e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(m) = e.metadata()
            && m.is_file()
        {
            let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.insert(name, (m.len(), mtime));
        }
    }
    Ok(out)
}

fn old_enough(mtime: SystemTime, now: SystemTime) -> bool {
    now.duration_since(mtime).unwrap_or_default() >= ORPHAN_GRACE
}

/// Prunes images as `docker image prune` does.
pub fn prune(store: &Store, opts: &PruneOptions) -> Result<PruneReport, StoreError> {
    let _lock = store.lock()?;
    let blob_dir = store.root().join("blobs/sha256");
    let disk_dir = store.root().join("disks");
    let blob_sizes = sizes(&blob_dir)?;
    let disk_sizes = sizes(&disk_dir)?;
    let mut report = PruneReport::default();

    for image in catalog::list(store)? {
        if opts.in_use.contains(&image.id) || (!opts.all && !image.tags.is_empty()) {
            continue;
        }
        let deleted = catalog::delete(store, &image)?;
        report.untagged.extend(deleted.untagged);
        if !deleted.blobs.is_empty() {
            report.deleted.push(image.id.clone());
        }
        for b in &deleted.blobs {
            report.reclaimed += blob_sizes.get(b.hex()).map_or(0, |s| s.0);
            if *b != image.id {
                report.deleted.push(b.clone());
            }
        }
    }

    // Orphans: blobs and disks of no remaining image (old tag moves, interrupted loads).
    let remaining = catalog::list(store)?;
    let mut used: BTreeSet<String> = BTreeSet::new();
    for i in &remaining {
        used.insert(i.manifest_digest.hex().to_string());
        used.insert(i.id.hex().to_string());
        used.extend(i.manifest.layers.iter().map(|l| l.digest.hex().to_string()));
    }
    // Index blobs kept for repo digests.
    for key in catalog::repo_digests(store)?.keys() {
        if let Some(d) = key
            .rsplit_once('@')
            .and_then(|(_, d)| Digest::parse(d).ok())
        {
            used.insert(d.hex().to_string());
        }
    }
    let now = SystemTime::now();
    for (name, (size, mtime)) in &blob_sizes {
        if used.contains(name) || !old_enough(*mtime, now) {
            continue;
        }
        match fs::remove_file(blob_dir.join(name)) {
            Ok(()) => {
                report.reclaimed += size;
                if let Ok(d) = Digest::from_hex(name) {
                    report.deleted.push(d);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove an unused blob")(e)),
        }
    }
    for (name, (size, mtime)) in &disk_sizes {
        let Some(hex) = name.get(..64) else { continue };
        if !disk_dir.join(name).exists() {
            // catalog::delete removed it with its image.
            report.reclaimed += size;
            continue;
        }
        if remaining.iter().any(|i| i.id.hex() == hex) || !old_enough(*mtime, now) {
            continue;
        }
        if fs::remove_file(disk_dir.join(name)).is_ok() {
            report.reclaimed += size;
        }
    }
    // Partial writes of killed pulls and loads.
    if let Ok(rd) = fs::read_dir(store.root().join("tmp")) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !old_enough(m.modified().unwrap_or(SystemTime::UNIX_EPOCH), now) {
                continue;
            }
            let removed = if m.is_dir() {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            };
            if removed.is_ok() && m.is_file() {
                report.reclaimed += m.len();
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ContainerConfig, Descriptor, ImageConfig, Manifest, RootFs};
    use std::path::PathBuf;

    fn store(name: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("mvm-prune-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    fn image(s: &Store, layers: &[&[u8]], cmd: &str, tags: &[String]) -> crate::ImageRecord {
        let digests: Vec<Digest> = layers.iter().map(|l| s.put_blob(l).unwrap()).collect();
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
                diff_ids: digests.clone(),
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
            layers: digests
                .iter()
                .zip(layers)
                .map(|(d, l)| Descriptor {
                    media_type: crate::image::MEDIA_TYPE_OCI_LAYER_TAR.into(),
                    digest: d.clone(),
                    size: l.len() as u64,
                    annotations: None,
                })
                .collect(),
            annotations: None,
        };
        let img = s.add_image(&manifest, &config_bytes, tags).unwrap();
        if tags.is_empty() {
            let _l = s.lock().unwrap();
            catalog::keep_untagged(s, &img.manifest_digest).unwrap();
        }
        img
    }

    #[test]
    fn dangling_images_go_and_shared_layers_stay() {
        let (s, dir) = store("dangling");
        let tagged = image(&s, &[b"shared"], "a", &["a:latest".into()]);
        let dangling = image(&s, &[b"shared", b"own"], "b", &[]);
        let used = image(&s, &[b"used"], "c", &[]);
        assert_eq!(catalog::list(&s).unwrap().len(), 3);
        // By ID, an untagged image resolves.
        assert_eq!(
            catalog::resolve(&s, dangling.id.hex()).unwrap().id,
            dangling.id
        );
        let opts = PruneOptions {
            all: false,
            in_use: [used.id.clone()].into(),
        };
        let r = prune(&s, &opts).unwrap();
        assert_eq!(r.deleted.first(), Some(&dangling.id));
        assert!(r.deleted.contains(&Digest::of(b"own")));
        assert!(!r.deleted.contains(&Digest::of(b"shared")));
        assert!(r.reclaimed >= 3);
        assert!(s.blob_path(&Digest::of(b"shared")).exists());
        assert!(!s.blob_path(&Digest::of(b"own")).exists());
        let left: Vec<Digest> = catalog::list(&s)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&tagged.id) && left.contains(&used.id));
        // Nothing more to do.
        assert_eq!(prune(&s, &opts).unwrap(), PruneReport::default());
        // -a: the tagged one too, not the one in use.
        let r = prune(
            &s,
            &PruneOptions {
                all: true,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(r.untagged, vec!["a:latest".to_string()]);
        assert!(!s.blob_path(&Digest::of(b"shared")).exists());
        let left: Vec<Digest> = catalog::list(&s)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left, vec![used.id.clone()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn young_orphans_are_kept_old_ones_removed() {
        let (s, dir) = store("orphans");
        let young = s.put_blob(b"in flight").unwrap();
        let old = s.put_blob(b"left over").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(s.blob_path(&old))
            .unwrap();
        f.set_modified(SystemTime::now() - ORPHAN_GRACE * 2)
            .unwrap();
        let spool = s.root().join("tmp/.load.tmp-1-2");
        fs::create_dir(&spool).unwrap();
        fs::File::open(&spool)
            .unwrap()
            .set_modified(SystemTime::now() - ORPHAN_GRACE * 2)
            .unwrap();
        let r = prune(&s, &PruneOptions::default()).unwrap();
        assert_eq!(r.deleted, vec![old.clone()]);
        assert!(!spool.exists());
        assert!(s.blob_path(&young).exists());
        assert!(!s.blob_path(&old).exists());
        fs::remove_dir_all(dir).unwrap();
    }
}

//! Images made from other images: one more layer (`commit`, a build's RUN, COPY and ADD), or a
//! new configuration only (a build's ENV, CMD, ...). The result is an ordinary image in the
//! store, untagged unless names are given.

use std::io::Read;

use crate::image::{
    ContainerConfig, Descriptor, History, ImageConfig, MEDIA_TYPE_OCI_LAYER_TAR, Manifest, RootFs,
};
use crate::{ImageRecord, Store, StoreError, catalog};

/// What a new image says about its last step.
pub struct Step<'a> {
    /// The image's runtime defaults.
    pub config: ContainerConfig,
    /// History's `created_by` (the instruction, or `mvm commit`).
    pub created_by: &'a str,
    /// History's comment (`commit -m`), also the image's `comment`.
    pub comment: Option<&'a str>,
    /// The image's `author` (`commit -a`).
    pub author: Option<&'a str>,
    /// Creation time (RFC 3339).
    pub created: &'a str,
    /// Names (`repo:tag`) to give it.
    pub tags: &'a [String],
    /// A build step's image that is not the build's result (hidden by `images` without -a).
    pub intermediate: bool,
}

/// An empty base, for `FROM scratch`.
pub fn scratch_config() -> ImageConfig {
    ImageConfig {
        created: None,
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig::default(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        history: Vec::new(),
        extra: Default::default(),
    }
}

/// `base` plus the uncompressed layer tar read from `layer` (None: a metadata-only step).
/// `base` None is scratch.
pub fn derive(
    store: &Store,
    base: Option<&ImageRecord>,
    layer: Option<&mut dyn Read>,
    step: &Step<'_>,
) -> Result<ImageRecord, StoreError> {
    let (mut image, mut layers) = match base {
        Some(b) => (b.config.clone(), b.manifest.layers.clone()),
        None => (scratch_config(), Vec::new()),
    };
    image.created = Some(step.created.to_string());
    for (key, value) in [("comment", step.comment), ("author", step.author)] {
        if let Some(v) = value {
            image
                .extra
                .insert(key.to_string(), serde_json::Value::String(v.to_string()));
        }
    }
    image.config = step.config.clone();
    let empty_layer = layer.is_none();
    if let Some(reader) = layer {
        // Stored uncompressed: its digest is its diff ID.
        let (digest, size) = store.put_blob_from(reader, None)?;
        image.rootfs.diff_ids.push(digest.clone());
        layers.push(Descriptor {
            media_type: MEDIA_TYPE_OCI_LAYER_TAR.into(),
            digest,
            size,
            annotations: None,
        });
    }
    image.history.push(History {
        created: Some(step.created.to_string()),
        created_by: Some(step.created_by.to_string()),
        comment: step.comment.map(str::to_string),
        empty_layer,
    });
    let config_bytes =
        serde_json::to_vec(&image).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let manifest = Manifest::oci(&config_bytes, layers);
    let record = store.add_image(&manifest, &config_bytes, step.tags)?;
    if step.tags.is_empty() {
        let _lock = store.lock()?;
        catalog::keep_untagged(store, &record.manifest_digest)?;
        if step.intermediate {
            catalog::set_intermediate(store, &record.manifest_digest, true)?;
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file_tar(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_and_metadata_steps_stack() {
        let root = std::env::temp_dir().join(format!("mvm-derive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::open(&root).unwrap();
        let now = "2026-12-01T00:00:00Z";
        let t1 = one_file_tar("a", b"1");
        let step = Step {
            config: ContainerConfig::default(),
            created_by: "COPY a /",
            comment: None,
            author: None,
            created: now,
            tags: &[],
            intermediate: false,
        };
        let first = derive(&store, None, Some(&mut &t1[..]), &step).unwrap();
        assert_eq!(first.manifest.layers.len(), 1);
        let cfg = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let tags = vec!["built:latest".to_string()];
        let second = derive(
            &store,
            Some(&first),
            None,
            &Step {
                config: cfg,
                created_by: "CMD [\"sh\"]",
                comment: None,
                author: None,
                created: now,
                tags: &tags,
                intermediate: false,
            },
        )
        .unwrap();
        assert_eq!(second.manifest.layers, first.manifest.layers);
        assert_eq!(second.config.history.len(), 2);
        assert!(second.config.history[1].empty_layer);
        assert_eq!(store.resolve("built").unwrap().id, second.id);
        // The untagged intermediate stays listed, as Docker's <none> images.
        assert!(
            catalog::list(&store)
                .unwrap()
                .iter()
                .any(|i| i.id == first.id)
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

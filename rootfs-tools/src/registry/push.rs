//! `push`: the blobs the registry lacks (asked with HEAD first), then the manifest, byte for
//! byte as stored so its digest does not change.

use super::{
    PullOptions, RegistryError, auth_for, client, familiar, map_err, oci_reference, remote_name,
    runtime,
};
use crate::catalog;
use crate::digest::Digest;
use crate::image::MEDIA_TYPE_OCI_MANIFEST;
use crate::reference::Reference;
use crate::store::Store;

/// What a push did.
#[derive(Debug)]
pub struct PushReport {
    /// `registry/path` pushed to.
    pub repository: String,
    /// The tag pushed.
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// Every blob (layers, then config), true when the registry had it already.
    pub blobs: Vec<(Digest, bool)>,
}

/// Pushes the image tagged `reference` (which names the registry; `docker.io` otherwise).
pub fn push(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PushReport, RegistryError> {
    if reference.digest.is_some() {
        return Err(RegistryError::Unsupported(format!(
            "cannot push {reference}: push a tag, not a digest"
        )));
    }
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    let image = catalog::resolve(store, &format!("{}:{tag}", reference.repository))?;
    let remote = remote_name(&reference.repository);
    let shown = format!("{}/{}", remote.registry, remote.path);
    let client = client(&remote.registry);
    let auth = auth_for(opts, &remote.registry)?;
    let oref = oci_reference(&remote, Some(&tag), None);
    let err = |e| map_err(e, &remote.registry, &shown, true);
    let manifest_bytes = store.read_metadata_blob(&image.manifest_digest)?;
    let content_type = image
        .manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_string());

    let mut blobs: Vec<Digest> = image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    blobs.push(image.manifest.config.digest.clone());
    let mut report = Vec::new();
    runtime()?.block_on(async {
        client
            .auth(&oref, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(err)?;
        for d in blobs {
            if report.iter().any(|(seen, _)| *seen == d) {
                continue;
            }
            let exists = client
                .blob_exists(&oref, &d.to_string())
                .await
                .map_err(err)?;
            if !exists {
                // The whole blob in memory: oci-client's streaming upload wants a `Stream`
                // of `bytes::Bytes`, which would add two crates for the sake of big layers.
                let path = store.blob_path(&d);
                let data = std::fs::read(&path)
                    .map_err(|e| RegistryError::Io(format!("read blob {d}: {e}")))?;
                let actual = Digest::of(&data);
                if actual != d {
                    return Err(RegistryError::DigestMismatch {
                        what: "stored blob",
                        expected: d.to_string(),
                        actual: actual.to_string(),
                    });
                }
                client
                    .push_blob(&oref, data, &d.to_string())
                    .await
                    .map_err(err)?;
            }
            report.push((d, exists));
        }
        let ct = content_type
            .parse()
            .map_err(|_| RegistryError::Unsupported(format!("bad media type {content_type:?}")))?;
        client
            .push_manifest_raw(&oref, manifest_bytes.clone(), ct)
            .await
            .map_err(err)?;
        Ok::<(), RegistryError>(())
    })?;
    {
        let _lock = store.lock()?;
        catalog::add_repo_digest(
            store,
            &familiar(&reference.repository),
            &image.manifest_digest,
            &image.manifest_digest,
        )?;
    }
    Ok(PushReport {
        repository: shown,
        tag,
        digest: image.manifest_digest,
        size: manifest_bytes.len() as u64,
        blobs: report,
    })
}

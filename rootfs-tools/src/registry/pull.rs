//! `pull`: manifest (through an index to linux/amd64 if need be), config, then the missing
//! layers several at once, each verified against its digest before it enters the store.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use indicatif::ProgressBar;
use serde_json::Value;

use super::progress::Progress;
use super::{
    MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_ZSTD, PullOptions,
    RegistryError, auth_for, client, familiar, map_err, oci_reference, remote_name, runtime,
};
use crate::catalog;
use crate::digest::{Digest, HashingWriter};
use crate::image::{
    ImageConfig, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_MANIFEST, Manifest,
};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// Manifests and configs are small; anything bigger is refused before it is read.
const MAX_METADATA: u64 = 4 << 20;
/// Layers fetched at once.
const CONCURRENT_LAYERS: usize = 3;

const ACCEPT: &[&str] = &[
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_LIST,
];

/// Layer media types mvm can unpack (disk.rs recognises the compression by its magic too).
const LAYER_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// Pulls `reference` into `store` and returns the image. The tag (if the reference has one and
/// no digest) is set, under the store lock, only once every blob is in place, so an
/// interrupted pull leaves no half-visible image; blobs already stored are not fetched again.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, RegistryError> {
    runtime()?.block_on(pull_async(store, reference, opts))
}

fn mismatch(what: &'static str, expected: &Digest, actual: &Digest) -> RegistryError {
    RegistryError::DigestMismatch {
        what,
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// True for an image index or Docker manifest list.
fn is_index(v: &Value) -> bool {
    matches!(
        v.get("mediaType").and_then(Value::as_str),
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST)
    ) || (v.get("manifests").is_some() && v.get("layers").is_none())
}

/// Picks the linux/amd64 manifest of an index.
pub(crate) fn select_platform(index: &Value) -> Result<Digest, RegistryError> {
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| RegistryError::Unsupported("image index without manifests".into()))?;
    for e in entries {
        let p = e.get("platform");
        let os = p.and_then(|p| p.get("os")).and_then(Value::as_str);
        let arch = p
            .and_then(|p| p.get("architecture"))
            .and_then(Value::as_str);
        if os == Some("linux") && arch == Some("amd64") {
            let d = e.get("digest").and_then(Value::as_str).unwrap_or("");
            return Digest::parse(d).map_err(|_| {
                RegistryError::Unsupported(format!("image index entry has a bad digest {d:?}"))
            });
        }
    }
    Err(RegistryError::Unsupported(
        "no matching manifest for linux/amd64 in the manifest list entries".into(),
    ))
}

/// Checks a manifest is an image mvm can run.
pub(crate) fn check_manifest(bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Unsupported(format!("unreadable image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(RegistryError::Unsupported(format!(
            "manifest schema version {} is not supported",
            m.schema_version
        )));
    }
    if ![MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG].contains(&m.config.media_type.as_str()) {
        return Err(RegistryError::Unsupported(format!(
            "not a container image (config media type {})",
            m.config.media_type
        )));
    }
    if m.config.size > MAX_METADATA {
        return Err(RegistryError::Unsupported(
            "image config is too large".into(),
        ));
    }
    for l in &m.layers {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(RegistryError::Unsupported(format!(
                "layer {} has unsupported media type {}",
                l.digest, l.media_type
            )));
        }
    }
    Ok(m)
}

async fn pull_async(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, RegistryError> {
    let remote = remote_name(&reference.repository);
    let fam = familiar(&reference.repository);
    let shown = reference.to_string();
    let client = client(&remote.registry);
    let auth = auth_for(opts, &remote.registry)?;
    let digest_str = reference.digest.as_ref().map(Digest::to_string);
    let oref = oci_reference(&remote, reference.tag.as_deref(), digest_str.as_deref());
    let err = |e| map_err(e, &remote.registry, &shown, false);

    let (bytes, _) = client
        .pull_manifest_raw(&oref, &auth, ACCEPT)
        .await
        .map_err(err)?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(RegistryError::Unsupported("manifest is too large".into()));
    }
    let pulled_digest = Digest::of(&bytes);
    if let Some(d) = &reference.digest
        && *d != pulled_digest
    {
        return Err(mismatch("manifest", d, &pulled_digest));
    }
    let top: Value = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Unsupported(format!("unreadable manifest: {e}")))?;
    let (manifest_bytes, manifest_digest) = if is_index(&top) {
        let child = select_platform(&top)?;
        let cref = oci_reference(&remote, None, Some(&child.to_string()));
        let (b, _) = client
            .pull_manifest_raw(&cref, &auth, ACCEPT)
            .await
            .map_err(err)?;
        let got = Digest::of(&b);
        if got != child {
            return Err(mismatch("manifest", &child, &got));
        }
        (b.to_vec(), child)
    } else {
        (bytes.to_vec(), pulled_digest.clone())
    };
    let manifest = check_manifest(&manifest_bytes)?;

    // The config: small, fetched into memory and checked.
    let mut config_bytes = Vec::new();
    client
        .pull_blob(
            &oref,
            manifest.config.digest.to_string().as_str(),
            &mut config_bytes,
        )
        .await
        .map_err(|e| match e {
            oci_client::errors::OciDistributionError::DigestError(_) => {
                RegistryError::DigestMismatch {
                    what: "config",
                    expected: manifest.config.digest.to_string(),
                    actual: Digest::of(&config_bytes).to_string(),
                }
            }
            e => err(e),
        })?;
    let got = Digest::of(&config_bytes);
    if got != manifest.config.digest {
        return Err(mismatch("config", &manifest.config.digest, &got));
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::Unsupported(format!("unreadable image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Unsupported(format!(
            "image config lists {} layers, the manifest {}",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    if config.os != "linux" || config.architecture != "amd64" {
        tracing::warn!(os = %config.os, arch = %config.architecture, "image is not linux/amd64");
    }

    // The layers, CONCURRENT_LAYERS at a time on this one thread.
    let progress = Progress::new(opts.progress);
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LAYERS));
    let mut tasks = tokio::task::JoinSet::new();
    let mut queued = std::collections::BTreeSet::new();
    for layer in &manifest.layers {
        let label = layer.digest.short().to_string();
        if store.blob_path(&layer.digest).exists() {
            progress.note(&label, "Already exists");
            continue;
        }
        if !queued.insert(layer.digest.clone()) {
            continue;
        }
        let job = BlobJob {
            client: client.clone(),
            oref: oref.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            tmp: store.temp_path(&format!("layer-{label}")),
            dest: store.blob_path(&layer.digest),
            bar: progress.bar(&label, layer.size),
        };
        let sem = sem.clone();
        let registry = remote.registry.clone();
        let shown = shown.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            job.run(&registry, &shown).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(|e| RegistryError::Io(format!("layer download: {e}")))?;
        if let Err(e) = result {
            tasks.abort_all();
            return Err(e);
        }
    }

    // Everything is here: make the image visible in one step under the lock.
    let _lock = store.lock()?;
    store.put_blob(&config_bytes)?;
    store.put_blob(&manifest_bytes)?;
    if let Some(top_bytes) = (pulled_digest != manifest_digest).then_some(&bytes) {
        // Keep the index too, so the repo digest names stored content.
        store.put_blob(top_bytes)?;
    }
    if reference.digest.is_none()
        && let Some(tag) = &reference.tag
    {
        store.set_tag(&format!("{fam}:{tag}"), &manifest_digest)?;
    }
    catalog::add_repo_digest(store, &fam, &pulled_digest, &manifest_digest)?;
    Ok(store.load(&manifest_digest)?)
}

/// One layer to fetch into the store.
struct BlobJob {
    client: oci_client::Client,
    oref: oci_client::Reference,
    digest: Digest,
    size: u64,
    tmp: PathBuf,
    dest: PathBuf,
    bar: Option<ProgressBar>,
}

impl BlobJob {
    async fn run(self, registry: &str, shown: &str) -> Result<(), RegistryError> {
        let result = self.fetch(registry, shown).await;
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        if let Some(bar) = &self.bar {
            bar.finish_with_message(if result.is_ok() {
                "Pull complete"
            } else {
                "Failed"
            });
        }
        result
    }

    async fn fetch(&self, registry: &str, shown: &str) -> Result<(), RegistryError> {
        let file = File::create(&self.tmp)
            .map_err(|e| RegistryError::Io(format!("create {}: {e}", self.tmp.display())))?;
        let mut sink = BlobSink {
            writer: Some(HashingWriter::new(file)),
            limit: self.size,
            written: 0,
            bar: self.bar.clone(),
        };
        let digest = self.digest.to_string();
        let pulled = self
            .client
            .pull_blob(&self.oref, digest.as_str(), &mut sink)
            .await;
        let Some(writer) = sink.writer.take() else {
            return Err(RegistryError::Io("layer writer lost".into()));
        };
        let (actual, size, file) = writer.finish();
        match pulled {
            Ok(()) => {}
            Err(oci_client::errors::OciDistributionError::DigestError(_)) => {
                return Err(mismatch("layer", &self.digest, &actual));
            }
            Err(oci_client::errors::OciDistributionError::IoError(e))
                if e.kind() == io::ErrorKind::FileTooLarge =>
            {
                return Err(RegistryError::DigestMismatch {
                    what: "layer",
                    expected: self.digest.to_string(),
                    actual: format!("(more than the {} bytes announced)", self.size),
                });
            }
            Err(e) => return Err(map_err(e, registry, shown, false)),
        }
        if actual != self.digest {
            return Err(mismatch("layer", &self.digest, &actual));
        }
        if size != self.size {
            return Err(RegistryError::Unsupported(format!(
                "layer {}: {size} bytes received, the manifest says {}",
                self.digest, self.size
            )));
        }
        file.sync_all()
            .and_then(|()| fs::rename(&self.tmp, &self.dest))
            .map_err(|e| RegistryError::Io(format!("store layer {}: {e}", self.digest)))
    }
}

/// Hashes and writes a blob as it arrives; refuses more bytes than the descriptor announced.
struct BlobSink {
    writer: Option<HashingWriter<File>>,
    limit: u64,
    written: u64,
    bar: Option<ProgressBar>,
}

impl tokio::io::AsyncWrite for BlobSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.written += buf.len() as u64;
        if this.written > this.limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob is larger than its descriptor says",
            )));
        }
        // A local file write: brief enough to do inline on the runtime's thread.
        let result = match this.writer.as_mut() {
            Some(w) => w.write_all(buf),
            None => Err(io::Error::other("blob writer closed")),
        };
        if let Some(bar) = &this.bar {
            bar.inc(buf.len() as u64);
        }
        Poll::Ready(result.map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_resolves_to_linux_amd64() {
        let d1 = Digest::of(b"arm");
        let d2 = Digest::of(b"amd");
        let index: Value = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": d1.to_string(), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": d2.to_string(), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        });
        assert!(is_index(&index));
        assert_eq!(select_platform(&index).unwrap(), d2);
        let only_arm: Value = serde_json::json!({"manifests": [
            {"digest": d1.to_string(), "platform": {"os": "linux", "architecture": "arm64"}}]});
        assert!(
            select_platform(&only_arm)
                .unwrap_err()
                .to_string()
                .contains("linux/amd64")
        );
    }

    #[test]
    fn manifests_checked() {
        let d = Digest::of(b"c");
        let good = serde_json::json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_DOCKER_CONFIG, "digest": d.to_string(), "size": 10},
            "layers": [{"mediaType": MEDIA_TYPE_DOCKER_LAYER_GZIP, "digest": d.to_string(), "size": 10},
                       {"mediaType": MEDIA_TYPE_OCI_LAYER_ZSTD, "digest": d.to_string(), "size": 10}]
        });
        assert!(check_manifest(good.to_string().as_bytes()).is_ok());
        let mut helm = good.clone();
        helm["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
        assert!(check_manifest(helm.to_string().as_bytes()).is_err());
        let mut odd = good.clone();
        odd["layers"][0]["mediaType"] = "application/x-wasm".into();
        assert!(check_manifest(odd.to_string().as_bytes()).is_err());
        assert!(check_manifest(b"{").is_err());
    }
}

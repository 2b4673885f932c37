//! The image store under `<state root>/images`: content-addressed blobs, a tag table, and the
//! cached disks built from each image.
//!
//! ```text
//! images/blobs/sha256/<hex>    layers (as stored), configs, manifests
//! images/tags.json             {"busybox:latest": "sha256:<manifest digest>"}
//! images/disks/<config hex>.erofs
//! images/tmp/                  partial writes; a crash leaves only garbage here
//! images/.lock                 serialises tag-table updates and disk builds
//! ```
//! An image's ID is its config digest, as in Docker.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{LockFile, atomic_write, temp_sibling};
use crate::image::{ImageConfig, Manifest};
use crate::reference::{InvalidReference, Reference};

/// Largest manifest or config accepted: they are small JSON documents.
const MAX_METADATA_BYTES: u64 = 4 << 20;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem error.
    #[error("image store: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// No image matches.
    #[error("No such image: {0}")]
    NotFound(String),
    /// An ID prefix matches several images.
    #[error("image ID prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// A reference is malformed.
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    /// Stored metadata is not what it should be (corrupt store).
    #[error("corrupt image store: {0}")]
    Corrupt(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

/// An image as the store knows it.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// Image ID (config digest).
    pub id: Digest,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// Tags pointing at it (`repo:tag`).
    pub tags: Vec<String>,
}

/// The image store.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `root` (`<state root>/images`).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["blobs/sha256", "disks", "tmp"] {
            fs::create_dir_all(root.join(dir))
                .map_err(io_err(format!("create {}", root.join(dir).display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// A scratch path under the store (same filesystem as the blobs).
    pub fn temp_path(&self, name: &str) -> PathBuf {
        temp_sibling(&self.root.join("tmp").join(name))
    }

    /// Takes the store's lock.
    pub fn lock(&self) -> Result<LockFile, StoreError> {
        LockFile::acquire(&self.root.join(".lock")).map_err(io_err("lock the image store"))
    }

    /// Stores bytes as a blob.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(data);
        let path = self.blob_path(&digest);
        if !path.exists() {
            atomic_write(&path, data).map_err(io_err(format!("write blob {digest}")))?;
        }
        Ok(digest)
    }

    /// Streams a blob in, hashing it; returns its digest and size. When `expected` is given
    /// and does not match, nothing is stored.
    pub fn put_blob_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let tmp = self.temp_path("blob");
        let result = (|| {
            let file = File::create(&tmp).map_err(io_err("create temporary blob"))?;
            let mut w = HashingWriter::new(file);
            io::copy(reader, &mut w).map_err(io_err("write blob"))?;
            let (digest, size, file) = w.finish();
            if let Some(exp) = expected
                && *exp != digest
            {
                return Err(StoreError::Corrupt(format!(
                    "content digest {digest} does not match the expected {exp}"
                )));
            }
            file.sync_all().map_err(io_err("sync blob"))?;
            fs::rename(&tmp, self.blob_path(&digest)).map_err(io_err("store blob"))?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a small metadata blob (manifest, config), checking its digest.
    pub fn read_metadata_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(io_err(format!("open blob {digest}")))?;
        let mut data = Vec::new();
        f.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(io_err(format!("read blob {digest}")))?;
        if data.len() as u64 > MAX_METADATA_BYTES || Digest::of(&data) != *digest {
            return Err(StoreError::Corrupt(format!("blob {digest} is damaged")));
        }
        Ok(data)
    }

    fn tags_path(&self) -> PathBuf {
        self.root.join("tags.json")
    }

    /// The tag table.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        match fs::read(self.tags_path()) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| StoreError::Corrupt(format!("tags.json: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err("read tags.json")(e)),
        }
    }

    /// Points `name` (`repo:tag`) at a manifest; the caller holds the store lock.
    pub fn set_tag(&self, name: &str, manifest: &Digest) -> Result<(), StoreError> {
        let mut tags = self.tags()?;
        tags.insert(name.to_string(), manifest.clone());
        let data =
            serde_json::to_vec_pretty(&tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        atomic_write(&self.tags_path(), &data).map_err(io_err("write tags.json"))
    }

    /// Stores a config and a manifest for already-stored layers and tags the result.
    pub fn add_image(
        &self,
        manifest: &Manifest,
        config_bytes: &[u8],
        tags: &[String],
    ) -> Result<ImageRecord, StoreError> {
        let _lock = self.lock()?;
        for layer in &manifest.layers {
            if !self.blob_path(&layer.digest).exists() {
                return Err(StoreError::Corrupt(format!(
                    "layer {} is missing",
                    layer.digest
                )));
            }
        }
        self.put_blob(config_bytes)?;
        let manifest_bytes =
            serde_json::to_vec(manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let manifest_digest = self.put_blob(&manifest_bytes)?;
        for t in tags {
            self.set_tag(t, &manifest_digest)?;
        }
        self.load(&manifest_digest)
    }

    /// Loads an image by manifest digest.
    pub fn load(&self, manifest_digest: &Digest) -> Result<ImageRecord, StoreError> {
        let manifest: Manifest = serde_json::from_slice(&self.read_metadata_blob(manifest_digest)?)
            .map_err(|e| StoreError::Corrupt(format!("manifest {manifest_digest}: {e}")))?;
        let config: ImageConfig = serde_json::from_slice(
            &self.read_metadata_blob(&manifest.config.digest)?,
        )
        .map_err(|e| StoreError::Corrupt(format!("config {}: {e}", manifest.config.digest)))?;
        let tags = self
            .tags()?
            .into_iter()
            .filter(|(_, d)| d == manifest_digest)
            .map(|(t, _)| t)
            .collect();
        Ok(ImageRecord {
            id: manifest.config.digest.clone(),
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
            tags,
        })
    }

    /// Every tagged image, once each.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (_, digest) in self.tags()? {
            if seen.insert(digest.clone()) {
                out.push(self.load(&digest)?);
            }
        }
        Ok(out)
    }

    /// Finds an image by `name[:tag]`, full ID, `sha256:` ID or unique ID prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let tags = self.tags()?;
        if let Ok(reference) = Reference::parse(name)
            && let Some(tagged) = reference.tagged_name()
            && let Some(d) = tags.get(&tagged)
        {
            return self.load(d);
        }
        let prefix = name.strip_prefix("sha256:").unwrap_or(name);
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches: Vec<ImageRecord> = self
                .list()?
                .into_iter()
                .filter(|img| img.id.hex().starts_with(prefix))
                .collect();
            matches.dedup_by(|a, b| a.id == b.id);
            match matches.len() {
                1 => return Ok(matches.remove(0)),
                0 => {}
                _ => return Err(StoreError::Ambiguous(name.to_string())),
            }
        }
        // Validate the reference last so a malformed name gets the precise error.
        let reference = Reference::parse(name)?;
        Err(StoreError::NotFound(reference.to_string()))
    }

    /// Path of an image's cached read-only disk (which may not be built yet).
    pub fn disk_path(&self, image: &ImageRecord) -> PathBuf {
        self.root
            .join("disks")
            .join(format!("{}.ext4", image.id.hex()))
    }
}

//! `save` and `load`: images to and from one tar that is at once a Docker archive
//! (`manifest.json`, `repositories`) and an OCI image layout (`oci-layout`, `index.json`), as
//! Docker 25 and later write it: the `blobs/sha256/<hex>` files serve both.
//!
//! `load` reads either format (and the older Docker layout with `<id>/layer.tar`), checks
//! every blob's sha256 before it is used, and makes the images visible only once all of their
//! blobs are in the store.

mod load;
mod save;
mod spool;

use std::io;

pub use load::{Loaded, load};
pub use save::{SaveItem, save};

use crate::store::StoreError;

/// Largest `manifest.json`, `index.json`, manifest or config read from an archive.
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// Docker's annotation with an image's full name, in `index.json`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in `index.json` (Docker writes the tag alone).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Saving or loading failed; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The input is not a readable tar.
    #[error("invalid tar archive: {0}")]
    Tar(String),
    /// A tar entry's path is absolute or climbs out with `..`.
    #[error("refusing archive entry {0:?}: absolute or escaping path")]
    UnsafePath(String),
    /// A metadata file is larger than anything sane.
    #[error("{0} in the archive is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge(String),
    /// Too many entries.
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// Content does not match its digest.
    #[error(
        "{what} {expected} in the archive has digest {actual} (corrupt or tampered with); nothing was loaded"
    )]
    DigestMismatch {
        /// `blob`, `layer`.
        what: &'static str,
        /// The digest the archive promised.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// A file the archive's metadata names is not in it.
    #[error("{0} is missing from the archive")]
    Missing(String),
    /// Neither a Docker archive nor an OCI layout, or its metadata is malformed.
    #[error("invalid image archive: {0}")]
    Format(String),
    /// An image mvm cannot use (media types, platforms).
    #[error("{0}")]
    Unsupported(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

#[cfg(test)]
mod tests;

//! Images as the engine sees them: found in the store, or pulled first.

use std::path::Path;

use mvm_rootfs::registry::{self, PullOptions};
use mvm_rootfs::{ImageRecord, Reference, Store, StoreError, catalog};

use crate::error::EngineError;
use crate::report::Reporter;

/// An image's size as Docker reports it: the sum of its layers (compressed, as stored).
pub fn size(img: &ImageRecord) -> u64 {
    img.manifest.layers.iter().map(|l| l.size).sum()
}

/// The image `name`, pulled first when the store lacks it (as `docker run` does).
pub fn resolve_or_pull(
    root: &Path,
    store: &Store,
    name: &str,
    report: &dyn Reporter,
) -> Result<ImageRecord, EngineError> {
    match catalog::resolve(store, name) {
        Ok(img) => Ok(img),
        Err(StoreError::NotFound(_)) => {
            let reference = Reference::parse(name).map_err(EngineError::runtime)?;
            report.notice(&format!("Unable to find image '{reference}' locally"));
            let image = registry::pull(store, &reference, &PullOptions::for_root(root))
                .map_err(EngineError::runtime)?;
            report.notice(&format!("Digest: {}", image.manifest_digest));
            Ok(image)
        }
        Err(e) => Err(EngineError::runtime(e)),
    }
}

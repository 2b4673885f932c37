//! Images for mvm: a content-addressed store close to the OCI image layout, safe layer
//! unpacking, the disks a microVM boots from, and a registry client. Nothing here knows about
//! KVM.

pub mod archive;
pub mod beneath;
pub mod catalog;
pub mod derive;
pub mod digest;
pub mod disk;
pub mod dockerfile;
pub mod fsutil;
pub mod image;
pub mod import;
pub mod prune;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod zstd;

pub use digest::Digest;
pub use image::{ContainerConfig, ImageConfig};
pub use reference::Reference;
pub use store::{ImageRecord, Store, StoreError};

/// Time formatting for image and container metadata.
pub mod time {
    /// Formats seconds (and nanoseconds) since the epoch as RFC 3339 UTC, as Docker does.
    pub fn rfc3339(secs: u64, nanos: u32) -> String {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Go's RFC3339Nano, as Docker and skopeo write times: trailing zeros of the fraction
        // dropped (and the dot with them), so configs re-serialised by those tools keep
        // their bytes and their digests.
        let frac = if nanos == 0 {
            String::new()
        } else {
            format!(".{nanos:09}").trim_end_matches('0').to_string()
        };
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }

    /// Now, as RFC 3339 UTC.
    pub fn now() -> String {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        rfc3339(d.as_secs(), d.subsec_nanos())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn formats() {
            assert_eq!(
                super::rfc3339(951_782_400, 5),
                "2000-02-29T00:00:00.000000005Z"
            );
            assert_eq!(
                super::rfc3339(951_782_400, 120_000_000),
                "2000-02-29T00:00:00.12Z"
            );
            assert_eq!(super::rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        }
    }
}

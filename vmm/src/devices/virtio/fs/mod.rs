//! virtio-fs (virtio 1.2 section 5.11) served by an external vhost-user backend (virtiofsd).
//!
//! The monitor emulates only the transport side: feature bits, the configuration space (the
//! tag the guest mounts by and the number of request queues) and the interrupt. The FUSE
//! requests in the queues are read and answered by the backend in its own process, on guest
//! memory it maps from the memfd the monitor shares with it.

mod device;

pub use device::{Fs, FsError};

/// Request queues offered besides the high-priority queue.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Queues: the high-priority queue (0), then the request queues.
pub const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;
/// Largest queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 1024;
/// Length of the configuration space: the tag, then `num_request_queues` (le32).
pub const CONFIG_SIZE: usize = TAG_BYTES + 4;

/// The tag's limits, defined with the config they check.
pub use mvm_vmm_config::{TAG_BYTES, TagError, check_tag};

/// The device's configuration space for `tag` (checked with [`check_tag`]).
pub fn config_space(tag: &str) -> Result<[u8; CONFIG_SIZE], TagError> {
    check_tag(tag)?;
    let mut config = [0u8; CONFIG_SIZE];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[TAG_BYTES..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_layout() {
        let c = config_space("vol0").unwrap();
        assert_eq!(&c[..4], b"vol0");
        assert!(c[4..TAG_BYTES].iter().all(|&b| b == 0), "NUL padded");
        assert_eq!(u32::from_le_bytes(c[36..40].try_into().unwrap()), 1);
        let full = "a".repeat(TAG_BYTES);
        let c = config_space(&full).unwrap();
        assert_eq!(&c[..TAG_BYTES], full.as_bytes(), "a 36-byte tag has no NUL");
    }

    #[test]
    fn bad_tags() {
        assert_eq!(check_tag(""), Err(TagError::Empty));
        assert!(matches!(
            check_tag(&"a".repeat(TAG_BYTES + 1)),
            Err(TagError::TooLong(_))
        ));
        assert!(matches!(check_tag("a\0b"), Err(TagError::Nul(_))));
        // Length is in bytes, not characters.
        assert!(check_tag(&"é".repeat(18)).is_ok());
        assert!(check_tag(&"é".repeat(19)).is_err());
    }
}

//! What the devices accept from a config, as pure checks: the VMM's device code and the
//! config's validation both use these, so a config that validates is one the devices take.

/// The IOAPIC has 24 pins; virtio devices use 5..=23 (vmm/src/arch/x86_64/layout.rs).
pub const MAX_VIRTIO_DEVICES: usize = 19;

/// Length of the virtio-blk serial returned to GET_ID.
pub const BLOCK_ID_BYTES: usize = 20;

/// Longest virtio-fs tag, in bytes (the config space field is 36 bytes, NUL-padded).
pub const TAG_BYTES: usize = 36;

/// Why a virtio-fs tag cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// Empty.
    #[error("fs tag is empty")]
    Empty,
    /// Longer than the config space field.
    #[error("fs tag {0:?} is longer than {TAG_BYTES} bytes")]
    TooLong(String),
    /// Contains a NUL byte (the guest reads the tag up to the first NUL).
    #[error("fs tag {0:?} contains a NUL byte")]
    Nul(String),
}

/// Checks that a virtio-fs `tag` fits the configuration space and reads back the same.
pub fn check_tag(tag: &str) -> Result<(), TagError> {
    if tag.is_empty() {
        Err(TagError::Empty)
    } else if tag.len() > TAG_BYTES {
        Err(TagError::TooLong(tag.to_string()))
    } else if tag.contains('\0') {
        Err(TagError::Nul(tag.to_string()))
    } else {
        Ok(())
    }
}

/// Whether `name` is a valid Linux interface name (the kernel's `dev_valid_name`).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

//! virtio-blk over a raw file.

mod device;
#[doc(hidden)]
pub mod fuzzing;
mod request;

pub use device::Block;
pub use request::{Request, RequestError, RequestType};

/// Bytes in a virtio-blk sector (fixed by the specification, independent of the disk).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial returned to GET_ID (defined with the config it limits).
pub use mvm_vmm_config::BLOCK_ID_BYTES;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

/// Request types (virtio 1.x section 5.2.6).
pub mod req {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush to stable storage.
    pub const FLUSH: u32 = 4;
    /// Read the device's serial.
    pub const GET_ID: u32 = 8;
}

/// Request status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed (I/O error, out of range, read-only disk).
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// Feature: the disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: the device supports FLUSH.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

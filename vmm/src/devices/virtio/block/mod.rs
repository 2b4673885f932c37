//! virtio-blk over a raw file.

mod device;
#[doc(hidden)]
pub mod fuzzing;
mod request;

pub use device::{Block, BlockError};
pub use request::{Request, RequestError, RequestType};

/// Bytes in a virtio-blk sector (fixed by the specification, independent of the disk).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial returned to GET_ID (defined with the config it limits).
pub use mvm_vmm_config::BLOCK_ID_BYTES;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

use virtio_bindings::virtio_blk;

/// Request types (virtio 1.x section 5.2.6).
pub mod req {
    use super::virtio_blk;

    /// Read.
    pub const IN: u32 = virtio_blk::VIRTIO_BLK_T_IN;
    /// Write.
    pub const OUT: u32 = virtio_blk::VIRTIO_BLK_T_OUT;
    /// Flush to stable storage.
    pub const FLUSH: u32 = virtio_blk::VIRTIO_BLK_T_FLUSH;
    /// Read the device's serial.
    pub const GET_ID: u32 = virtio_blk::VIRTIO_BLK_T_GET_ID;
}

/// Request status byte values (the bindings define them as u32; the status is one byte).
pub mod status {
    use super::virtio_blk;

    /// Success.
    pub const OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
    /// The request failed (I/O error, out of range, read-only disk).
    pub const IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
    /// The request type is not supported.
    pub const UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;
}

/// Feature: the disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << virtio_blk::VIRTIO_BLK_F_RO;
/// Feature: the device supports FLUSH.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << virtio_blk::VIRTIO_BLK_F_FLUSH;

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
pub mod time;
pub mod unpack;
pub mod zstd;

pub use digest::Digest;
pub use image::{ContainerConfig, ImageConfig};
pub use reference::Reference;
pub use store::{ImageRecord, Store, StoreError};

//! The virtio-blk device: configuration, activation and the queue handler run by the event
//! loop.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::request::Request;
use super::{BLOCK_ID_BYTES, QUEUE_SIZE, SECTOR_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, status};
use crate::devices::virtio::{
    ActivateError, IrqTrigger, TYPE_BLOCK, VIRTIO_F_VERSION_1, VirtioCommon, VirtioDevice,
    read_config_bytes,
};

/// Opening the backing file failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file could not be opened.
    #[error("cannot open disk {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Creating the queue eventfd failed.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio-blk device backed by a raw disk image.
pub struct Block {
    disk: File,
    read_only: bool,
    capacity: u64,
    id: [u8; BLOCK_ID_BYTES],
    config: [u8; 8],
    common: VirtioCommon,
}

impl Block {
    /// Opens `path` (read-only when asked) as a disk whose serial is `id`.
    pub fn new(path: &Path, read_only: bool, id: Option<&str>) -> Result<Self, BlockError> {
        let disk = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_file(disk, read_only, id).map_err(|e| match e {
            BlockError::Open { source, .. } => BlockError::Open {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// A disk over an already open file.
    pub fn from_file(disk: File, read_only: bool, id: Option<&str>) -> Result<Self, BlockError> {
        let len = disk
            .metadata()
            .map_err(|source| BlockError::Open {
                path: "(open file)".into(),
                source,
            })?
            .len();
        // A trailing partial sector is not addressable (reads of it return zero-filled).
        let capacity = len / SECTOR_SIZE;
        let mut serial = [0u8; BLOCK_ID_BYTES];
        if let Some(id) = id {
            let n = id.len().min(BLOCK_ID_BYTES);
            serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        }
        let mut features = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
        if read_only {
            features |= VIRTIO_BLK_F_RO;
        }
        Ok(Self {
            disk,
            read_only,
            capacity,
            id: serial,
            config: capacity.to_le_bytes(),
            common: VirtioCommon::new(TYPE_BLOCK, features, &[QUEUE_SIZE], &[0])
                .map_err(BlockError::EventFd)?,
        })
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Flushes the backing file (on monitor exit).
    pub fn flush(&self) {
        if !self.read_only {
            let _ = self.disk.sync_data();
        }
    }

    /// Processes every available request; returns whether the guest must be notified.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = self.common.active_mut() else {
            return false;
        };
        let queue = &mut active.queues[0];
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            let parsed = Request::parse(chain, self.capacity);
            let used_len = match (parsed.status_addr, parsed.request) {
                (Some(status_addr), Ok(request)) => {
                    let (st, written) =
                        request.execute(&active.mem, &self.disk, self.read_only, &self.id);
                    match active.mem.write_obj(st, status_addr) {
                        Ok(()) => written + 1,
                        Err(_) => 0,
                    }
                }
                (Some(status_addr), Err(e)) => {
                    tracing::debug!("virtio-blk refused a request: {e}");
                    match active.mem.write_obj(status::IOERR, status_addr) {
                        Ok(()) => 1,
                        Err(_) => 0,
                    }
                }
                (None, _) => {
                    tracing::debug!("virtio-blk: chain without status descriptor");
                    0
                }
            };
            if let Err(e) = queue.add_used(&active.mem, head, used_len) {
                tracing::warn!("virtio-blk: cannot add used descriptor: {e}");
                break;
            }
            used_any = true;
        }
        if used_any {
            // When in doubt (a broken ring), interrupt: a spurious interrupt is harmless.
            !matches!(queue.needs_notification(&active.mem), Ok(false))
        } else {
            false
        }
    }
}

impl VirtioDevice for Block {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    // The block config space has no driver-writable fields we offer (no writeback toggle):
    // the default write_config ignores writes.

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        self.common.activate(mem, queues, irq, |_, _| Ok(()))?;
        // Requests queued before activation would otherwise wait for the next notify.
        self.common.kick(0);
        Ok(())
    }

    fn reset(&mut self) {
        self.common.reset();
    }

    /// The restoring VMM may have been given another file (a template's empty placeholder
    /// replaced by a container's disk): the guest must read the capacity again.
    fn restored(&mut self) -> bool {
        true
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.common.queue_events()[0], EventSet::IN)) {
            tracing::error!("virtio-blk: cannot register queue event: {e:?}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let evt = &self.common.queue_events()[0];
        if events.fd() != std::os::fd::AsRawFd::as_raw_fd(evt) {
            return;
        }
        // Drain the counter; a spurious wakeup just finds an empty queue.
        let _ = evt.read();
        if self.process_queue() {
            self.common.signal_used();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(read_only: bool) -> Block {
        let file = tempfile_in_tmp();
        Block::from_file(file, read_only, None).unwrap()
    }

    fn tempfile_in_tmp() -> File {
        let path = std::env::temp_dir().join(format!(
            "mvm-vmm-block-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file.set_len(4096).unwrap();
        file
    }

    #[test]
    fn the_driver_gets_only_offered_features() {
        for read_only in [false, true] {
            let mut d = disk(read_only);
            d.set_acked_features(u64::MAX);
            assert_eq!(d.acked_features(), d.avail_features());
            let mut want = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
            if read_only {
                want |= VIRTIO_BLK_F_RO;
            }
            assert_eq!(d.acked_features(), want);
            d.reset();
            assert_eq!(d.acked_features(), 0);
        }
    }

    #[test]
    fn identity() {
        let d = disk(false);
        assert_eq!(d.device_type(), TYPE_BLOCK);
        assert_eq!(d.queue_max_sizes(), &[QUEUE_SIZE]);
        assert_eq!(d.queue_events().len(), 1);
        assert_eq!(d.capacity(), 8);
    }
}

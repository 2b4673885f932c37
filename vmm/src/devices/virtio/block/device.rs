//! The virtio-blk device: configuration, activation and the queue handler run by the event
//! loop.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::request::Request;
use super::{BLOCK_ID_BYTES, QUEUE_SIZE, SECTOR_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, status};
use crate::devices::virtio::{
    ActivateError, IrqTrigger, TYPE_BLOCK, VIRTIO_F_VERSION_1, VirtioDevice, read_config_bytes,
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

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: Arc<IrqTrigger>,
}

/// A virtio-blk device backed by a raw disk image.
pub struct Block {
    disk: File,
    read_only: bool,
    capacity: u64,
    id: [u8; BLOCK_ID_BYTES],
    config: [u8; 8],
    acked_features: u64,
    queue_evts: [EventFd; 1],
    active: Option<Active>,
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
        Ok(Self {
            disk,
            read_only,
            capacity,
            id: serial,
            config: capacity.to_le_bytes(),
            acked_features: 0,
            queue_evts: [EventFd::new(libc::EFD_NONBLOCK).map_err(BlockError::EventFd)?],
            active: None,
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
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used_any = false;
        while let Some(chain) = active.queue.pop_descriptor_chain(&active.mem) {
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
            if let Err(e) = active.queue.add_used(&active.mem, head, used_len) {
                tracing::warn!("virtio-blk: cannot add used descriptor: {e}");
                break;
            }
            used_any = true;
        }
        if used_any {
            // When in doubt (a broken ring), interrupt: a spurious interrupt is harmless.
            !matches!(active.queue.needs_notification(&active.mem), Ok(false))
        } else {
            false
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn avail_features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The block config space has no driver-writable fields we offer (no writeback toggle).
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        let queue = queues
            .into_iter()
            .next()
            .filter(|q| q.ready())
            .ok_or(ActivateError::QueueNotReady(0))?;
        self.active = Some(Active { mem, queue, irq });
        // Requests queued before activation would otherwise wait for the next notify.
        let _ = self.queue_evts[0].write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.queue_evts[0], EventSet::IN)) {
            tracing::error!("virtio-blk: cannot register queue event: {e:?}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() != std::os::fd::AsRawFd::as_raw_fd(&self.queue_evts[0]) {
            return;
        }
        // Drain the counter; a spurious wakeup just finds an empty queue.
        let _ = self.queue_evts[0].read();
        if self.process_queue()
            && let Some(active) = &self.active
        {
            active.irq.trigger_vring();
        }
    }
}

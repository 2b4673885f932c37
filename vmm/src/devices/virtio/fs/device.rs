//! The virtio-fs device: the transport-facing half of a vhost-user-fs device.
//!
//! The backend signals used buffers on a per-queue "call" eventfd. On virtio-mmio an interrupt
//! must come with a bit in the InterruptStatus register, which the backend cannot set, so the
//! call eventfds are not KVM irqfds: the event loop reads them and raises the interrupt through
//! the [`IrqTrigger`], which sets the bit and then signals the irqfd. The "kick" eventfds are
//! the queue-notify eventfds KVM signals on QueueNotify writes; the backend waits on them
//! directly, so guest notifications never pass through the monitor.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{CONFIG_SIZE, NUM_QUEUES, QUEUE_SIZE, TagError, config_space};
use crate::devices::virtio::vhost_user::{self, Connection, VhostUserError};
use crate::devices::virtio::{
    ActivateError, IrqTrigger, TYPE_FS, VIRTIO_F_VERSION_1, VirtioCommon, VirtioDevice,
    read_config_bytes,
};

/// Virtio features passed through from the backend to the driver. The rings are the
/// backend's business, so it decides on indirect descriptors and event indices; the packed
/// ring is left out because the transport only sets up split rings.
const PASSTHROUGH_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;

/// The device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag does not fit.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// Talking to the backend failed.
    #[error("virtio-fs {tag}: {source}")]
    Backend {
        /// The device's tag.
        tag: String,
        /// What failed.
        source: VhostUserError,
    },
    /// Creating an eventfd failed.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio-fs device whose queues an external vhost-user backend serves.
pub struct Fs {
    tag: String,
    config: [u8; CONFIG_SIZE],
    conn: Connection,
    /// Its queue eventfds are the "kick" eventfds the backend waits on.
    common: VirtioCommon,
    call_evts: Vec<EventFd>,
    /// The rings the backend serves (stopped on reset).
    started: Vec<usize>,
    /// The backend went away: the device cannot work until the monitor is restarted.
    failed: bool,
}

impl Fs {
    /// Connects to the backend listening on `socket`, shares `mem` (which must be
    /// memfd-backed, see [`crate::vm::create_shared_guest_memory`]) with it, and exposes it
    /// to the guest under `tag`.
    pub fn new(socket: &Path, tag: &str, mem: &GuestMemoryMmap) -> Result<Self, FsError> {
        let config = config_space(tag)?;
        let backend = |source| FsError::Backend {
            tag: tag.to_string(),
            source,
        };
        let conn = Connection::connect(socket, NUM_QUEUES).map_err(backend)?;
        if conn.virtio_features() & VIRTIO_F_VERSION_1 == 0 {
            return Err(backend(VhostUserError::Unsupported(
                "does not offer VIRTIO_F_VERSION_1".into(),
            )));
        }
        conn.set_mem_table(mem).map_err(backend)?;
        let call_evts = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FsError::EventFd)?;
        // The request queue is what the driver sends FUSE requests on; the high-priority
        // queue may stay off.
        let common = VirtioCommon::new(
            TYPE_FS,
            conn.virtio_features() & PASSTHROUGH_FEATURES,
            &[QUEUE_SIZE; NUM_QUEUES],
            &[1],
        )
        .map_err(FsError::EventFd)?;
        Ok(Self {
            tag: tag.to_string(),
            config,
            conn,
            common,
            call_evts,
            started: Vec::new(),
            failed: false,
        })
    }

    /// The tag the guest mounts the file system by.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Marks the device failed after its backend went away; a running driver is told
    /// through DEVICE_NEEDS_RESET and a configuration-change interrupt.
    fn fail(&mut self, why: &str) {
        if self.failed {
            return;
        }
        self.failed = true;
        tracing::error!(
            "virtio-fs {}: vhost-user backend {why}; the device needs a reset and stays failed",
            self.tag
        );
        self.common.signal_config();
    }
}

impl VirtioDevice for Fs {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    // Both fields are read-only for the driver: the default write_config ignores writes.

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        if self.failed {
            return Err(ActivateError::BackendGone {
                tag: self.tag.clone(),
            });
        }
        let acked = self.common.acked_features();
        let (conn, call_evts, tag) = (&mut self.conn, &self.call_evts, &self.tag);
        let mut started = Vec::new();
        self.common
            .activate(mem, queues, irq, |active, kick_evts| {
                started = conn
                    .start_vrings(acked, &active.mem, &active.queues, kick_evts, call_evts)
                    .map_err(|source| ActivateError::VhostUser {
                        tag: tag.clone(),
                        source,
                    })?;
                Ok(())
            })?;
        self.started = started;
        Ok(())
    }

    fn reset(&mut self) {
        if self.common.reset().is_some() && !self.failed {
            self.conn.stop_vrings(&self.started);
        }
        self.started.clear();
        for evt in &self.call_evts {
            let _ = evt.read();
        }
    }

    fn needs_reset(&self) -> bool {
        self.failed
    }
}

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in &self.call_evts {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                tracing::error!("virtio-fs {}: cannot watch call event: {e:?}", self.tag);
            }
        }
        if let Err(e) = ops.add(Events::new(&self.conn, EventSet::IN)) {
            tracing::error!("virtio-fs {}: cannot watch backend socket: {e:?}", self.tag);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.conn.as_raw_fd() {
            if vhost_user::socket_gone(fd) {
                // Level-triggered: a closed socket would wake the loop for ever.
                if let Err(e) = ops.remove(events) {
                    tracing::debug!("virtio-fs {}: unwatching socket: {e:?}", self.tag);
                }
                self.fail("disconnected");
            }
            return;
        }
        let Some(evt) = self.call_evts.iter().find(|e| e.as_raw_fd() == fd) else {
            return;
        };
        // Drain the counter whether or not the device runs; a call after a reset is stale.
        let _ = evt.read();
        self.common.signal_used();
    }
}

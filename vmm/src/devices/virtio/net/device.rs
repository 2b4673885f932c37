//! The virtio-net device: features, configuration space, activation and the event-loop glue.
//!
//! The backend's descriptor is watched only while the device can take a frame: when the guest
//! has no receive buffers, the frame already read waits in the device and the descriptor is
//! taken out of the epoll set (level-triggered epoll would otherwise wake the loop for the
//! same unread frames forever); the guest's next receive-queue notification puts it back.
//!
//! UDP fragmentation/segmentation offloads (UFO, USO) are not offered: Linux no longer
//! produces UFO and USO needs newer TAP flags; TCP segmentation and checksum offloads cover
//! the traffic that matters.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::backend::Backend;
use super::rx::{self, RxOutcome};
use super::tap::{Tap, TapError};
use super::{
    ETH_HDR_LEN, F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_TSO4, F_HOST_TSO6, F_MAC,
    F_MRG_RXBUF, F_STATUS, MAX_FRAME_LEN, MacAddr, NUM_QUEUES, QUEUE_SIZE, RXQ, S_LINK_UP, TXQ,
    VNET_HDR_LEN, tx,
};
use crate::devices::virtio::{
    ActivateError, IrqTrigger, TYPE_NET, VIRTIO_F_VERSION_1, VirtioCommon, VirtioDevice,
    read_config_bytes,
};

/// Setting the device up failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP could not be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// Creating a queue eventfd failed.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
}

/// Counters of what the device did (frames and bytes exclude the vnet header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames from the backend that could not be delivered (too short, too large).
    pub rx_dropped: u64,
    /// Frames the guest sent that reached the backend.
    pub tx_frames: u64,
    /// Bytes the guest sent that reached the backend.
    pub tx_bytes: u64,
    /// Frames the guest sent that were refused or that the backend dropped.
    pub tx_dropped: u64,
    /// Descriptor chains refused as malformed (returned with used length 0).
    pub bad_chains: u64,
}

/// A virtio-net device over a [`Backend`] (normally a [`Tap`]).
///
/// Register it with the event loop (`MutEventSubscriber`): it watches its two queue eventfds
/// and, while it can receive, the backend's descriptor.
pub struct Net {
    backend: Box<dyn Backend>,
    config: [u8; 8],
    common: VirtioCommon,
    /// A frame read from the backend and not yet delivered (`rx_len` bytes of it).
    rx_frame: Vec<u8>,
    rx_len: usize,
    /// The backend failed with something other than "nothing to read": stop watching it
    /// until the guest next touches the receive queue, rather than spin on the error.
    rx_error: bool,
    tx_buf: Vec<u8>,
    backend_watched: bool,
    stats: NetStats,
}

impl Net {
    /// A device with MAC `mac` over `backend`.
    pub fn new(backend: Box<dyn Backend>, mac: MacAddr) -> Result<Self, NetError> {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        config[6..].copy_from_slice(&S_LINK_UP.to_le_bytes());
        let features = Self::features_for(backend.supported_offloads());
        let common = VirtioCommon::new(TYPE_NET, features, &[QUEUE_SIZE; NUM_QUEUES], &[RXQ, TXQ])
            .map_err(NetError::EventFd)?;
        Ok(Self {
            backend,
            config,
            common,
            rx_frame: vec![0u8; MAX_FRAME_LEN],
            rx_len: 0,
            rx_error: false,
            tx_buf: Vec::with_capacity(MAX_FRAME_LEN),
            backend_watched: false,
            stats: NetStats::default(),
        })
    }

    /// A device over the existing TAP `tap`.
    pub fn with_tap(tap: &str, mac: MacAddr) -> Result<Self, NetError> {
        Self::new(Box::new(Tap::open(tap)?), mac)
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }

    /// What the device has done so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend (to read its offload state in tests).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Whether the backend's descriptor should be in the epoll set: the device is running
    /// and has room for the next frame.
    pub fn wants_backend_events(&self) -> bool {
        self.common.is_activated() && self.rx_len == 0 && !self.rx_error
    }

    /// Handles a notification on queue `idx` (what the event loop calls for a queue eventfd).
    pub fn handle_queue_event(&mut self, idx: usize) {
        if let Some(evt) = self.common.queue_events().get(idx) {
            // Drain the counter; a spurious wakeup finds nothing to do.
            let _ = evt.read();
        }
        let tx_used = idx == TXQ && self.process_tx();
        if idx == RXQ {
            self.rx_error = false;
        }
        // New rx buffers, or a tx frame that may have produced an answer: try receiving.
        let rx_used = self.process_rx();
        self.notify(rx_used || tx_used);
    }

    /// Handles readiness of the backend's descriptor.
    pub fn handle_backend_event(&mut self) {
        let used = self.process_rx();
        self.notify(used);
    }

    fn process_tx(&mut self) -> bool {
        let acked = self.common.acked_features();
        let Some(active) = self.common.active_mut() else {
            return false;
        };
        tx::process(
            &mut active.queues[TXQ],
            &active.mem,
            self.backend.as_mut(),
            &mut self.tx_buf,
            acked,
            &mut self.stats,
        )
    }

    /// Moves frames from the backend to the guest until the backend is empty or the guest
    /// is out of buffers; returns whether the used ring changed.
    fn process_rx(&mut self) -> bool {
        let acked = self.common.acked_features();
        let Some(active) = self.common.active_mut() else {
            return false;
        };
        let mut used = false;
        loop {
            if self.rx_len == 0 {
                match self.backend.recv(&mut self.rx_frame) {
                    Ok(n) if n < VNET_HDR_LEN + ETH_HDR_LEN => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => self.rx_len = n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("virtio-net: backend read failed: {e}");
                        self.rx_error = true;
                        break;
                    }
                }
            }
            let frame = &mut self.rx_frame[..self.rx_len];
            let outcome = rx::deliver(&mut active.queues[RXQ], &active.mem, frame, acked);
            used |= outcome.used_changed();
            match outcome {
                RxOutcome::Delivered { bad_chains, .. } => {
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += (self.rx_len - VNET_HDR_LEN) as u64;
                    self.stats.bad_chains += bad_chains as u64;
                    self.rx_len = 0;
                }
                RxOutcome::Dropped { bad_chains, .. } => {
                    self.stats.rx_dropped += 1;
                    self.stats.bad_chains += bad_chains as u64;
                    self.rx_len = 0;
                }
                RxOutcome::NoBuffers { bad_chains } => {
                    // Keep the frame; the backend is unwatched until buffers arrive.
                    self.stats.bad_chains += bad_chains as u64;
                    break;
                }
            }
        }
        used
    }

    fn notify(&mut self, used: bool) {
        // Without VIRTIO_RING_F_EVENT_IDX (not offered) every used buffer is worth an
        // interrupt, so there is no suppression state to consult.
        if used {
            self.common.signal_used();
        }
    }

    /// Adds or removes the backend's descriptor in the epoll set to match
    /// [`Self::wants_backend_events`].
    fn sync_backend_watch(&mut self, ops: &mut EventOps) {
        let want = self.wants_backend_events();
        if want == self.backend_watched {
            return;
        }
        let ev = Events::new_raw(self.backend.as_raw_fd(), EventSet::IN);
        let result = if want { ops.add(ev) } else { ops.remove(ev) };
        match result {
            Ok(()) => self.backend_watched = want,
            Err(e) => tracing::error!("virtio-net: cannot update the backend watch: {e:?}"),
        }
    }

    /// The features offered over a backend that can deliver the `TUN_F_*` offloads
    /// `supported`. The backend accepts offloaded frames from the guest whatever it can
    /// deliver.
    fn features_for(supported: u32) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | F_MAC
            | F_STATUS
            | F_MRG_RXBUF
            | F_CSUM
            | F_HOST_TSO4
            | F_HOST_TSO6;
        if supported & libc::TUN_F_CSUM != 0 {
            f |= F_GUEST_CSUM;
            if supported & libc::TUN_F_TSO4 != 0 {
                f |= F_GUEST_TSO4;
            }
            if supported & libc::TUN_F_TSO6 != 0 {
                f |= F_GUEST_TSO6;
            }
        }
        f
    }

    /// The `TUN_F_*` offloads matching the guest's receive features.
    fn offloads_for(acked: u64) -> u32 {
        let mut f = 0;
        if acked & F_GUEST_CSUM != 0 {
            f |= libc::TUN_F_CSUM;
            if acked & F_GUEST_TSO4 != 0 {
                f |= libc::TUN_F_TSO4;
            }
            if acked & F_GUEST_TSO6 != 0 {
                f |= libc::TUN_F_TSO6;
            }
        }
        f
    }
}

impl VirtioDevice for Net {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    // The MAC is only writable through the legacy interface and status is read-only: the
    // default write_config ignores writes.

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        // The backend must not hand the guest offloaded frames it did not agree to.
        let offloads = Self::offloads_for(self.common.acked_features());
        let backend = &mut self.backend;
        self.common.activate(mem, queues, irq, |_, _| {
            backend
                .set_offloads(offloads)
                .map_err(ActivateError::TapOffloads)
        })?;
        self.rx_len = 0;
        self.rx_error = false;
        // Chains posted before activation would otherwise wait for the next notification,
        // and the event loop starts watching the backend from this wakeup on.
        self.common.kick(RXQ);
        self.common.kick(TXQ);
        Ok(())
    }

    fn reset(&mut self) {
        self.common.reset();
        self.rx_len = 0;
        self.rx_error = false;
        if let Err(e) = self.backend.set_offloads(0) {
            tracing::warn!("virtio-net: cannot clear TAP offloads: {e}");
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in self.common.queue_events() {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                tracing::error!("virtio-net: cannot register queue event: {e:?}");
            }
        }
        self.sync_backend_watch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.backend.as_raw_fd() {
            self.handle_backend_event();
        } else if let Some(idx) = self
            .common
            .queue_events()
            .iter()
            .position(|e| e.as_raw_fd() == fd)
        {
            self.handle_queue_event(idx);
        }
        self.sync_backend_watch(ops);
    }
}

//! The virtio-vsock device: configuration, activation, the queue handlers and the event-loop
//! glue around the muxer.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::muxer::Muxer;
use super::packet::Header;
use super::{EVQ, MAX_PKT_DATA, NUM_QUEUES, QUEUE_SIZE, RXQ, TXQ};
use crate::devices::virtio::{
    ActivateError, IrqTrigger, TYPE_VSOCK, VIRTIO_F_VERSION_1, VirtioCommon, VirtioDevice,
    read_config_bytes,
};

/// Rounds of "tx, then rx" per event while the tx queue waits for the rx queue to drain;
/// past this the device re-queues itself instead of monopolising the event loop.
const MAX_ROUNDS: usize = 8;

/// Setting the device up failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host socket could not be bound (missing directory, permissions, path too long).
    #[error("cannot bind vsock socket {path}: {source}")]
    Bind {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Something other than a socket is in the way at the socket path.
    #[error("{0} exists and is not a socket")]
    NotASocket(String),
    /// Creating a queue eventfd failed.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
    /// Creating the epoll set failed.
    #[error("cannot create epoll: {0}")]
    Epoll(std::io::Error),
    /// Creating the timer failed.
    #[error("cannot create timer: {0}")]
    Timer(std::io::Error),
}

/// A virtio-vsock device whose host side is unix sockets (see the module documentation).
///
/// Register it with the event loop (`MutEventSubscriber`): it watches its three queue
/// eventfds and one epoll descriptor covering every host socket.
pub struct Vsock {
    guest_cid: u64,
    config: [u8; 8],
    common: VirtioCommon,
    muxer: Muxer,
    /// The tx queue was left unprocessed because too many resets wait for rx buffers.
    tx_stalled: bool,
}

impl Vsock {
    /// A device for a guest with CID `guest_cid`, listening for host connections at
    /// `uds_path` (a stale socket there is replaced; the directory must exist).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        // The event queue carries only the transport reset after a restore: the driver may
        // leave it off.
        let common = VirtioCommon::new(
            TYPE_VSOCK,
            VIRTIO_F_VERSION_1,
            &[QUEUE_SIZE; NUM_QUEUES],
            &[RXQ, TXQ],
        )
        .map_err(VsockError::EventFd)?;
        Ok(Self {
            guest_cid,
            config: guest_cid.to_le_bytes(),
            common,
            muxer: Muxer::new(guest_cid, uds_path)?,
            tx_stalled: false,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host socket path.
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// See [`Muxer::set_uds_path`].
    pub fn set_uds_path(&mut self, path: std::path::PathBuf) {
        self.muxer.set_uds_path(path);
    }

    /// Handles a notification on queue `idx` (what the event loop calls for a queue eventfd).
    pub(crate) fn handle_queue_event(&mut self, idx: usize) {
        if let Some(evt) = self.common.queue_events().get(idx) {
            // Drain the counter; a spurious wakeup finds nothing to do.
            let _ = evt.read();
        }
        self.run(Instant::now());
    }

    /// Handles readiness of the host sockets (the muxer's epoll descriptor).
    pub(crate) fn handle_backend_event(&mut self) {
        let now = Instant::now();
        self.muxer.process_events(now);
        self.run(now);
    }

    /// Moves packets both ways, signals the guest, and keeps the timer in step.
    fn run(&mut self, now: Instant) {
        if self.common.is_activated() {
            let (rx_used, tx_used) = self.run_queues(now);
            self.notify(rx_used, tx_used);
        }
        self.muxer.update_timer();
    }

    /// Returns whether rx / tx buffers were used.
    fn run_queues(&mut self, now: Instant) -> (bool, bool) {
        // Pending packets first: a tx stall may be waiting for exactly this.
        let mut rx_used = self.process_rx(now);
        let mut tx_used = false;
        for round in 0.. {
            tx_used |= self.process_tx();
            let more = self.process_rx(now);
            rx_used |= more;
            // Go round again only while the tx queue is throttled and rx just made room.
            if !(self.tx_stalled && more) {
                break;
            }
            if round + 1 == MAX_ROUNDS {
                // Let other devices run; come back through our own tx eventfd.
                self.common.kick(TXQ);
                break;
            }
        }
        (rx_used, tx_used)
    }

    /// Fills guest rx buffers with pending packets; returns whether any was used.
    fn process_rx(&mut self, now: Instant) -> bool {
        let Some(active) = self.common.active_mut() else {
            return false;
        };
        let mut used = false;
        while self.muxer.has_pending_rx() {
            let Some(mut chain) = active.queues[RXQ].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match VsockPacket::from_rx_virtq_chain(&active.mem, &mut chain, MAX_PKT_DATA)
            {
                Ok(mut pkt) => {
                    let mut hdr = Header::default();
                    let Some(data_len) = self.muxer.fill_rx(&mut hdr, pkt.data_slice(), now) else {
                        // Nothing could be produced after all: leave the buffer to the guest.
                        active.queues[RXQ].go_to_previous_position();
                        break;
                    };
                    match hdr.write_to(&mut pkt) {
                        Ok(()) => PKT_HEADER_SIZE as u32 + data_len,
                        Err(e) => {
                            tracing::warn!("vsock: cannot write an rx header: {e}");
                            0
                        }
                    }
                }
                Err(e) => {
                    // Unusable buffer: hand it back empty rather than keep it forever.
                    tracing::debug!("vsock: bad rx buffer: {e}");
                    0
                }
            };
            if let Err(e) = active.queues[RXQ].add_used(&active.mem, head, len) {
                tracing::warn!("vsock: cannot add used rx descriptor: {e}");
                break;
            }
            used = true;
        }
        used
    }

    /// Hands guest packets to the muxer; returns whether any tx buffer was used.
    fn process_tx(&mut self) -> bool {
        let Some(active) = self.common.active_mut() else {
            return false;
        };
        self.tx_stalled = false;
        let mut used = false;
        loop {
            if self.muxer.rx_congested() {
                // Answers would be lost: wait for the guest to take some.
                self.tx_stalled = true;
                break;
            }
            let Some(mut chain) = active.queues[TXQ].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let first = chain.clone().next();
            match VsockPacket::from_tx_virtq_chain(&active.mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => {
                    let hdr = Header::from_packet(&pkt);
                    self.muxer.on_guest_packet(&hdr, pkt.data_slice());
                }
                Err(e) => {
                    tracing::debug!("vsock: bad tx packet: {e}");
                    if let Some(hdr) = first.and_then(|d| read_raw_header(&active.mem, &d)) {
                        self.muxer.on_bad_packet(&hdr);
                    }
                }
            }
            if let Err(e) = active.queues[TXQ].add_used(&active.mem, head, 0) {
                tracing::warn!("vsock: cannot add used tx descriptor: {e}");
                break;
            }
            used = true;
        }
        used
    }

    fn notify(&mut self, rx_used: bool, tx_used: bool) {
        let Some(active) = self.common.active_mut() else {
            return;
        };
        let mut needed = false;
        for (q, used) in [(RXQ, rx_used), (TXQ, tx_used)] {
            if used {
                // On error, interrupt: a spurious interrupt is harmless, a lost one is not.
                needed |= active.queues[q]
                    .needs_notification(&active.mem)
                    .unwrap_or(true);
            }
        }
        if needed {
            active.irq.trigger_vring();
        }
    }

    #[cfg(test)]
    pub(crate) fn muxer(&mut self) -> &mut Muxer {
        &mut self.muxer
    }

    /// Test hook: gives up every wait that expired by `now`, as the timer would.
    #[cfg(test)]
    pub(crate) fn sweep_at(&mut self, now: Instant) {
        self.muxer.sweep(now);
        self.run(now);
    }
}

/// The header of a chain virtio-vsock refused, when its first descriptor is a readable,
/// complete header (so that the sender can be told).
fn read_raw_header(mem: &GuestMemoryMmap, desc: &SplitDescriptor) -> Option<Header> {
    if desc.is_write_only() || (desc.len() as usize) < PKT_HEADER_SIZE {
        return None;
    }
    let mut raw = [0u8; PKT_HEADER_SIZE];
    mem.read_slice(&mut raw, desc.addr()).ok()?;
    Some(Header::from_bytes(&raw))
}

impl VirtioDevice for Vsock {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    // guest_cid is read-only: the default write_config ignores writes.

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        self.common.activate(mem, queues, irq, |_, _| Ok(()))?;
        self.tx_stalled = false;
        // Packets queued before activation (host connections waiting for the guest, tx
        // buffers posted early) would otherwise wait for the next notification.
        self.common.kick(RXQ);
        self.common.kick(TXQ);
        Ok(())
    }

    fn reset(&mut self) {
        self.common.reset();
        self.tx_stalled = false;
        self.muxer.reset();
    }

    /// The guest's connections were to sockets of the VMM that was snapshotted: tell it they
    /// are gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, as Firecracker does), so that it drops
    /// them and its listeners take new ones.
    fn restored(&mut self) -> bool {
        self.send_transport_reset();
        false
    }
}

impl Vsock {
    /// Puts one TRANSPORT_RESET event in the event queue, if the driver left a buffer there.
    fn send_transport_reset(&mut self) {
        /// `struct virtio_vsock_event { le32 id; }` with id VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
        const TRANSPORT_RESET: u32 = 0;
        let Some(active) = self.common.active_mut() else {
            return;
        };
        let mem = active.mem.clone();
        let Some(queue) = active.queues.get_mut(EVQ) else {
            return;
        };
        let Some(chain) = queue.pop_descriptor_chain(&mem) else {
            tracing::warn!("vsock: no event buffer for the transport reset");
            return;
        };
        let head = chain.head_index();
        let mut used = 0;
        if let Some(desc) = chain.writable().next()
            && desc.len() >= 4
            && mem.write_obj(TRANSPORT_RESET.to_le(), desc.addr()).is_ok()
        {
            used = 4;
        }
        if let Err(e) = queue.add_used(&mem, head, used) {
            tracing::warn!("vsock: cannot return the event buffer: {e}");
            return;
        }
        self.common.signal_used();
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in self.common.queue_events() {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                tracing::error!("vsock: cannot register queue event: {e:?}");
            }
        }
        if let Err(e) = ops.add(Events::new(self.muxer.epoll(), EventSet::IN)) {
            tracing::error!("vsock: cannot register the host sockets: {e:?}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.muxer.epoll().as_raw_fd() {
            self.handle_backend_event();
        } else if let Some(idx) = self
            .common
            .queue_events()
            .iter()
            .position(|e| e.as_raw_fd() == fd)
        {
            self.handle_queue_event(idx);
        }
    }
}

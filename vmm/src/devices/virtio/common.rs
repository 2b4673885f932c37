//! What every virtio device shares: the features it offers and the ones the driver accepted,
//! its queues' sizes and notification eventfds, and whether (and with what) it runs.
//!
//! Cloud Hypervisor's `VirtioCommon` showed the way: the negotiation and activation rules are
//! written once here, so that no device can get them subtly different (before this, two of
//! our four devices kept acknowledged feature bits they had never offered).

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateError, IrqTrigger};

/// What a running device works with: the guest's memory, the queues the driver set up and the
/// interrupt it signals.
pub struct ActiveState {
    /// Guest memory the queues live in.
    pub mem: GuestMemoryMmap,
    /// The queues, indexed as the device numbers them.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub irq: Arc<IrqTrigger>,
}

/// The state every virtio device embeds (see the module documentation).
pub struct VirtioCommon {
    device_type: u32,
    avail_features: u64,
    acked_features: u64,
    queue_max_sizes: Vec<u16>,
    queue_evts: Vec<EventFd>,
    /// Queues the device cannot work without; the others may stay disabled.
    required_queues: &'static [usize],
    active: Option<ActiveState>,
}

impl VirtioCommon {
    /// A device of type `device_type` offering `avail_features`, with one queue (and one
    /// notification eventfd) per entry of `queue_max_sizes`, that refuses to start unless the
    /// queues in `required_queues` are ready.
    pub fn new(
        device_type: u32,
        avail_features: u64,
        queue_max_sizes: &[u16],
        required_queues: &'static [usize],
    ) -> std::io::Result<Self> {
        let queue_evts = queue_max_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device_type,
            avail_features,
            acked_features: 0,
            queue_max_sizes: queue_max_sizes.to_vec(),
            queue_evts,
            required_queues,
            active: None,
        })
    }

    /// The virtio device ID.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Feature bits the device offers.
    pub fn avail_features(&self) -> u64 {
        self.avail_features
    }

    /// Feature bits the driver accepted, never more than were offered.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the driver accepted every bit of `feature`.
    pub fn has_feature(&self, feature: u64) -> bool {
        self.acked_features & feature == feature
    }

    /// Records what the driver accepted. Bits the device did not offer are dropped: a driver
    /// must not switch on behaviour the device never promised.
    pub fn ack_features(&mut self, features: u64) {
        let unoffered = features & !self.avail_features;
        if unoffered != 0 {
            tracing::debug!(
                "virtio device {}: driver acked unoffered features {unoffered:#x}",
                self.device_type
            );
        }
        self.acked_features = features & self.avail_features;
    }

    /// Largest size of each queue.
    pub fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    /// One eventfd per queue, signalled when the driver notifies it.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Signals queue `idx`'s eventfd, so that the event loop looks at the queue (used after
    /// activation: buffers posted before it would otherwise wait for the next notification).
    pub fn kick(&self, idx: usize) {
        if let Some(evt) = self.queue_evts.get(idx)
            && let Err(e) = evt.write(1)
        {
            tracing::warn!(
                "virtio device {}: cannot kick queue {idx}: {e}",
                self.device_type
            );
        }
    }

    /// Starts the device: checks that the required queues are ready, runs the device's own
    /// start-up `start` on the would-be state (and the queue eventfds, which a vhost-user
    /// device hands to its backend), and keeps the state when `start` succeeds. On any
    /// failure the device stays inactive.
    pub fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
        start: impl FnOnce(&ActiveState, &[EventFd]) -> Result<(), ActivateError>,
    ) -> Result<(), ActivateError> {
        for &q in self.required_queues {
            if !queues.get(q).is_some_and(|q| q.ready()) {
                return Err(ActivateError::QueueNotReady(q));
            }
        }
        let state = ActiveState { mem, queues, irq };
        start(&state, &self.queue_evts)?;
        self.active = Some(state);
        Ok(())
    }

    /// Stops the device and forgets what the driver negotiated; returns the state it ran
    /// with, if it ran.
    pub fn reset(&mut self) -> Option<ActiveState> {
        self.acked_features = 0;
        self.active.take()
    }

    /// Whether the device is running.
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The running device's state.
    pub fn active(&self) -> Option<&ActiveState> {
        self.active.as_ref()
    }

    /// The running device's state, to move buffers.
    pub fn active_mut(&mut self) -> Option<&mut ActiveState> {
        self.active.as_mut()
    }

    /// Raises the used-buffer interrupt if the device runs.
    pub fn signal_used(&self) {
        if let Some(active) = &self.active {
            active.irq.trigger_vring();
        }
    }

    /// Raises the configuration-change interrupt if the device runs.
    pub fn signal_config(&self) {
        if let Some(active) = &self.active {
            active.irq.trigger_config();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap()
    }

    fn irq() -> Arc<IrqTrigger> {
        Arc::new(IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()))
    }

    fn ready_queue() -> Queue {
        let mut q = Queue::new(16).unwrap();
        q.set_ready(true);
        q
    }

    #[test]
    fn acked_features_are_masked_with_the_offer() {
        let mut c = VirtioCommon::new(1, 0b1010, &[16], &[0]).unwrap();
        c.ack_features(u64::MAX);
        assert_eq!(c.acked_features(), 0b1010);
        assert!(c.has_feature(0b10));
        assert!(!c.has_feature(0b1));
        c.reset();
        assert_eq!(c.acked_features(), 0);
    }

    #[test]
    fn one_eventfd_per_queue() {
        let c = VirtioCommon::new(1, 0, &[16, 32, 64], &[]).unwrap();
        assert_eq!(c.queue_max_sizes(), &[16, 32, 64]);
        assert_eq!(c.queue_events().len(), 3);
        c.kick(1);
        c.kick(99); // no such queue: ignored
        assert_eq!(c.queue_events()[1].read().unwrap(), 1);
    }

    #[test]
    fn activation_needs_the_required_queues() {
        let mut c = VirtioCommon::new(1, 0, &[16, 16, 16], &[0, 1]).unwrap();
        let r = c.activate(mem(), vec![ready_queue()], irq(), |_, _| Ok(()));
        assert!(matches!(r, Err(ActivateError::QueueNotReady(1))));
        let r = c.activate(
            mem(),
            vec![Queue::new(16).unwrap(), ready_queue()],
            irq(),
            |_, _| Ok(()),
        );
        assert!(matches!(r, Err(ActivateError::QueueNotReady(0))));
        assert!(!c.is_activated());
        // The third queue is optional.
        let q3 = Queue::new(16).unwrap();
        c.activate(
            mem(),
            vec![ready_queue(), ready_queue(), q3],
            irq(),
            |_, _| Ok(()),
        )
        .unwrap();
        assert!(c.is_activated());
        assert!(c.reset().is_some());
        assert!(!c.is_activated());
    }

    #[test]
    fn a_failed_start_leaves_the_device_inactive() {
        let mut c = VirtioCommon::new(1, 0, &[16], &[0]).unwrap();
        let r = c.activate(mem(), vec![ready_queue()], irq(), |_, _| {
            Err(ActivateError::QueueNotReady(7))
        });
        assert!(r.is_err());
        assert!(!c.is_activated());
    }
}

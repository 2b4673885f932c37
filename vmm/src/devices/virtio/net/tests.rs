//! Device-level tests: a mock driver posts chains on real virtqueues in guest memory, the
//! backend is one end of a unix datagram socket pair (the other end plays the host network),
//! and the device is driven through its event handlers. One test uses a real TAP inside a
//! network namespace it creates.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::header::{FLAG_NEEDS_CSUM, GSO_TCPV4};
use super::*;
use crate::devices::virtio::{IrqTrigger, TYPE_NET, VIRTIO_F_VERSION_1, VirtioDevice};

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const MEM_SIZE: u64 = 0x100_0000;
const MAC: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const ALL_OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// Driver side of one queue. The used ring is placed apart from MockSplitQueue's because the
/// mock lays it out right after `len` bytes of the available ring, which overlaps the ring's
/// second half for a 256-entry queue.
struct Ring<'a> {
    mem: &'a GuestMemoryMmap,
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    used_addr: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl<'a> Ring<'a> {
    fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        let used_addr = base + 0x2000;
        mem.write_slice(&[0u8; 4 + 8 * 256 + 2], GuestAddress(used_addr))
            .unwrap();
        Self {
            mem,
            mock: MockSplitQueue::create(mem, GuestAddress(base), QUEUE_SIZE),
            used_addr,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Publishes a chain of (addr, len, flags); NEXT links are filled in here.
    fn push(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let base = self.next_desc;
        let raw: Vec<_> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let idx = (base + i as u16) % QUEUE_SIZE;
                if i + 1 < descs.len() {
                    (addr, len, flags | F_NEXT, (idx + 1) % QUEUE_SIZE)
                } else {
                    (addr, len, flags & !F_NEXT, 0)
                }
            })
            .collect();
        self.push_raw(&raw)
    }

    /// Publishes descriptors exactly as given (addr, len, flags, next), stored at the next
    /// table slots; the head is the first.
    fn push_raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc;
        for &(addr, len, flags, next) in descs {
            self.mock
                .desc_table()
                .store(
                    self.next_desc,
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
                )
                .unwrap();
            self.next_desc = (self.next_desc + 1) % QUEUE_SIZE;
        }
        self.publish_head(head);
        head
    }

    /// Puts `head` in the available ring, whatever it is.
    fn publish_head(&mut self, head: u16) {
        let slot = usize::from(self.avail_idx % QUEUE_SIZE);
        self.mock.avail().ring().ref_at(slot).unwrap().store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mock.avail().idx().store(self.avail_idx);
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used_addr + 2)).unwrap()
    }

    /// New used entries: (head, len).
    fn used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.used_idx();
        let mut v = Vec::new();
        while self.used_seen != idx {
            let at = self.used_addr + 4 + 8 * u64::from(self.used_seen % QUEUE_SIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            v.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        v
    }

    fn queue(&self) -> Queue {
        let mut q: Queue = self.mock.create_queue().unwrap();
        q.set_used_ring_address(
            Some(self.used_addr as u32),
            Some((self.used_addr >> 32) as u32),
        );
        q
    }
}

/// A device with a mock driver and the host end of its backend.
struct H<'a> {
    mem: &'a GuestMemoryMmap,
    rx: Ring<'a>,
    tx: Ring<'a>,
    dev: Net,
    peer: UnixDatagram,
    irq: Arc<IrqTrigger>,
    next_buf: u64,
}

impl<'a> H<'a> {
    fn new(mem: &'a GuestMemoryMmap, offloads: u32) -> Self {
        let (backend, peer) = DatagramBackend::pair(offloads).unwrap();
        peer.set_nonblocking(true).unwrap();
        Self {
            mem,
            rx: Ring::new(mem, 0x0),
            tx: Ring::new(mem, 0x1_0000),
            dev: Net::new(Box::new(backend), MAC).unwrap(),
            peer,
            irq: Arc::new(IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            next_buf: 0x10_0000,
        }
    }

    /// Negotiates `extra` on top of VERSION_1 and activates.
    fn activated(mem: &'a GuestMemoryMmap, offloads: u32, extra: u64) -> Self {
        let mut h = Self::new(mem, offloads);
        h.activate(extra);
        h
    }

    fn activate(&mut self, extra: u64) {
        self.dev.set_acked_features(VIRTIO_F_VERSION_1 | extra);
        let queues = vec![self.rx.queue(), self.tx.queue()];
        self.dev
            .activate(self.mem.clone(), queues, self.irq.clone())
            .unwrap();
        assert!(self.dev.is_activated());
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next_buf;
        self.next_buf += (len + 0xfff) & !0xfff;
        assert!(self.next_buf < MEM_SIZE, "test ran out of guest memory");
        a
    }

    /// Posts one rx chain of writable descriptors of the given lengths; returns (head,
    /// addresses).
    fn add_rx_chain(&mut self, lens: &[u32]) -> (u16, Vec<u64>) {
        let addrs: Vec<u64> = lens.iter().map(|&l| self.alloc(u64::from(l))).collect();
        let descs: Vec<_> = addrs
            .iter()
            .zip(lens)
            .map(|(&a, &l)| (a, l, F_WRITE))
            .collect();
        (self.rx.push(&descs), addrs)
    }

    /// Sends a frame from the guest: vnet header and frame in two descriptors.
    fn send(&mut self, hdr: [u8; VNET_HDR_LEN], frame: &[u8]) -> u16 {
        let a = self.alloc(VNET_HDR_LEN as u64);
        let b = self.alloc(frame.len() as u64);
        self.mem.write_slice(&hdr, GuestAddress(a)).unwrap();
        self.mem.write_slice(frame, GuestAddress(b)).unwrap();
        let head = self
            .tx
            .push(&[(a, VNET_HDR_LEN as u32, 0), (b, frame.len() as u32, 0)]);
        self.dev.handle_queue_event(TXQ);
        head
    }

    /// The next frame the host side received, if any.
    fn host_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_FRAME_LEN + 100];
        match self.peer.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }

    fn irq_count(&self) -> u64 {
        self.irq.eventfd().read().unwrap_or(0)
    }

    /// Reads `len` bytes of guest memory.
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// A frame as the host network sends it: vnet header (all zero) and `len` payload bytes
/// numbered so misplaced bytes show.
fn host_frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(tag)));
    f
}

fn eth_frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn identity_features_and_config() {
    let (backend, _peer) = DatagramBackend::pair(ALL_OFFLOADS).unwrap();
    let dev = Net::new(Box::new(backend), MAC).unwrap();
    assert_eq!(dev.device_type(), TYPE_NET);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let f = dev.avail_features();
    for bit in [
        VIRTIO_F_VERSION_1,
        F_MAC,
        F_STATUS,
        F_MRG_RXBUF,
        F_CSUM,
        F_HOST_TSO4,
        F_HOST_TSO6,
        F_GUEST_CSUM,
        F_GUEST_TSO4,
        F_GUEST_TSO6,
    ] {
        assert_ne!(f & bit, 0, "feature {bit:#x} missing");
    }
    let mut cfg = [0u8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), S_LINK_UP);
    assert_eq!(dev.mac(), MAC);

    // A backend that cannot deliver offloaded frames: no GUEST_* offloads offered.
    let (backend, _peer) = DatagramBackend::pair(0).unwrap();
    let dev = Net::new(Box::new(backend), MAC).unwrap();
    let f = dev.avail_features();
    assert_eq!(f & (F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6), 0);
    assert_ne!(f & F_HOST_TSO4, 0);
}

#[test]
fn activation_sets_backend_offloads_and_reset_clears_them() {
    let m = mem();
    let mut h = H::activated(&m, ALL_OFFLOADS, F_GUEST_CSUM | F_GUEST_TSO4);
    assert_eq!(
        h.dev.backend().offloads(),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4
    );
    h.dev.reset();
    assert!(!h.dev.is_activated());
    assert_eq!(h.dev.backend().offloads(), 0);
    // TSO without GUEST_CSUM is not a valid combination: no offload at all.
    h.activate(F_GUEST_TSO4);
    assert_eq!(h.dev.backend().offloads(), 0);
}

#[test]
fn activation_needs_both_queues() {
    let m = mem();
    let mut h = H::new(&m, 0);
    let mut tx = h.tx.queue();
    tx.set_ready(false);
    let r = h
        .dev
        .activate(m.clone(), vec![h.rx.queue(), tx], h.irq.clone());
    assert!(r.is_err());
    assert!(
        h.dev
            .activate(m.clone(), vec![h.rx.queue()], h.irq.clone())
            .is_err()
    );
    assert!(!h.dev.is_activated());
}

#[test]
fn tx_frame_reaches_the_backend() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    h.irq_count();
    let frame = eth_frame(1514);
    let head = h.send([0; VNET_HDR_LEN], &frame);
    let got = h.host_recv().expect("frame on the host side");
    assert_eq!(&got[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
    assert_eq!(&got[VNET_HDR_LEN..], &frame[..]);
    assert_eq!(h.tx.used(), vec![(head, 0)]);
    assert!(h.irq_count() > 0, "guest interrupted for the used tx chain");
    let s = h.dev.stats();
    assert_eq!((s.tx_frames, s.tx_bytes, s.tx_dropped), (1, 1514, 0));
}

#[test]
fn tx_frame_split_over_many_descriptors_and_one_of_maximum_size() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_CSUM | F_HOST_TSO4);
    // Header and frame cut into 10 pieces, header itself split.
    let mut bytes = vec![0u8; VNET_HDR_LEN];
    bytes.extend(eth_frame(990));
    let pieces: Vec<(u64, u32, u16)> = bytes
        .chunks(100)
        .map(|c| {
            let a = h.alloc(c.len() as u64);
            m.write_slice(c, GuestAddress(a)).unwrap();
            (a, c.len() as u32, 0)
        })
        .collect();
    h.tx.push(&pieces);
    h.dev.handle_queue_event(TXQ);
    assert_eq!(h.host_recv().unwrap(), bytes);

    // A TSO frame of the largest size the device takes.
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = FLAG_NEEDS_CSUM;
    hdr[1] = GSO_TCPV4;
    hdr[4..6].copy_from_slice(&1448u16.to_le_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    let big = eth_frame(MAX_FRAME_LEN - VNET_HDR_LEN);
    h.send(hdr, &big);
    let got = h.host_recv().expect("64 KiB TSO frame");
    assert_eq!(got.len(), MAX_FRAME_LEN);
    assert_eq!(h.dev.stats().tx_frames, 2);
}

#[test]
fn tx_offloads_need_negotiation() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = FLAG_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    let head = h.send(hdr, &eth_frame(100));
    assert!(
        h.host_recv().is_none(),
        "NEEDS_CSUM without F_CSUM is refused"
    );
    assert_eq!(h.tx.used(), vec![(head, 0)], "the chain is still returned");
    assert_eq!(h.dev.stats().tx_dropped, 1);
}

#[test]
fn rx_frame_into_a_single_buffer() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    let (head, addrs) = h.add_rx_chain(&[1526]);
    h.dev.handle_queue_event(RXQ);
    h.irq_count();
    let frame = host_frame(1000, 1);
    h.peer.send(&frame).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.rx.used(), vec![(head, frame.len() as u32)]);
    let got = h.read(addrs[0], frame.len());
    assert_eq!(&got[VNET_HDR_LEN..], &frame[VNET_HDR_LEN..]);
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers is 1");
    assert!(h.irq_count() > 0);
    assert_eq!(h.dev.stats().rx_frames, 1);
}

#[test]
fn rx_mergeable_frame_spans_several_chains() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    let mut chains = Vec::new();
    for _ in 0..4 {
        chains.push(h.add_rx_chain(&[1024]));
    }
    let frame = host_frame(3000 - VNET_HDR_LEN, 9);
    h.peer.send(&frame).unwrap();
    h.dev.handle_backend_event();
    let used = h.rx.used();
    assert_eq!(
        used,
        vec![(chains[0].0, 1024), (chains[1].0, 1024), (chains[2].0, 952)]
    );
    let mut got = Vec::new();
    for (i, len) in [1024usize, 1024, 952].into_iter().enumerate() {
        got.extend(h.read(chains[i].1[0], len));
    }
    assert_eq!(&got[10..12], &3u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &frame[VNET_HDR_LEN..]);
    assert_eq!(
        h.rx.used_idx(),
        3,
        "one used-index update for the whole frame"
    );

    // The fourth chain takes the next frame alone.
    let small = host_frame(100, 3);
    h.peer.send(&small).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.rx.used(), vec![(chains[3].0, small.len() as u32)]);
}

#[test]
fn rx_mergeable_waits_for_enough_buffers() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    let a = h.add_rx_chain(&[1024]);
    let b = h.add_rx_chain(&[1024]);
    let frame = host_frame(2500, 5);
    h.peer.send(&frame).unwrap();
    h.dev.handle_backend_event();
    assert!(
        h.rx.used().is_empty(),
        "2 KiB of buffers cannot take 2.5 KiB"
    );
    assert!(!h.dev.wants_backend_events(), "stalled: backend unwatched");
    let c = h.add_rx_chain(&[1024]);
    h.dev.handle_queue_event(RXQ);
    assert_eq!(
        h.rx.used(),
        vec![(a.0, 1024), (b.0, 1024), (c.0, frame.len() as u32 - 2048)]
    );
    assert!(h.dev.wants_backend_events());
}

#[test]
fn rx_without_buffers_then_buffers_added() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    let frames: Vec<_> = (0..3).map(|i| host_frame(200 + i * 10, i as u8)).collect();
    for f in &frames {
        h.peer.send(f).unwrap();
    }
    h.dev.handle_backend_event();
    assert!(h.rx.used().is_empty());
    assert!(!h.dev.wants_backend_events());
    // A tx notification in the meantime does not lose the waiting frame.
    h.send([0; VNET_HDR_LEN], &eth_frame(60));
    assert!(h.rx.used().is_empty());

    let heads: Vec<u16> = (0..3).map(|_| h.add_rx_chain(&[4096]).0).collect();
    h.dev.handle_queue_event(RXQ);
    let used = h.rx.used();
    assert_eq!(used.len(), 3);
    for (i, (head, len)) in used.into_iter().enumerate() {
        assert_eq!(head, heads[i]);
        assert_eq!(len as usize, frames[i].len(), "frames stay in order");
    }
    assert!(h.dev.wants_backend_events());
    assert_eq!(h.dev.stats().rx_frames, 3);
}

#[test]
fn rx_frame_too_large_for_a_non_mergeable_buffer_is_dropped_and_the_buffer_kept() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    let (head, _) = h.add_rx_chain(&[1526]);
    h.peer.send(&host_frame(4000, 1)).unwrap();
    h.peer.send(&host_frame(500, 2)).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.rx.used(), vec![(head, 512)]);
    assert_eq!(h.dev.stats().rx_dropped, 1);
}

#[test]
fn rx_offload_flags_are_cleared_unless_negotiated() {
    let m = mem();
    let mut h = H::activated(&m, ALL_OFFLOADS, 0);
    let (_, addrs) = h.add_rx_chain(&[2048]);
    let mut frame = host_frame(100, 0);
    frame[0] = header::FLAG_DATA_VALID;
    h.peer.send(&frame).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.read(addrs[0], 1)[0], 0);
}

#[test]
fn short_backend_frames_are_dropped() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    let (head, _) = h.add_rx_chain(&[1526]);
    h.peer.send(&[0u8; 5]).unwrap();
    h.peer.send(&[]).unwrap();
    h.peer.send(&host_frame(60, 0)).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.rx.used(), vec![(head, 72)]);
    assert_eq!(h.dev.stats().rx_dropped, 2);
}

/// Chains a hostile driver may post on the tx queue; none may reach the backend, each is
/// returned with length 0 (when its head can be named), and the queue keeps working.
#[test]
fn hostile_tx_chains_are_returned_and_dropped() {
    let m = mem();
    let mut h = H::activated(&m, 0, 0);
    let a = h.alloc(4096);
    m.write_slice(&eth_frame(200), GuestAddress(a)).unwrap();
    let hostile: Vec<Vec<(u64, u32, u16, u16)>> = vec![
        // Write-only where the device must read.
        vec![(a, 100, F_WRITE, 0)],
        // Zero-length descriptor.
        vec![(a, 12, F_NEXT, h.tx.next_desc + 1), (a, 0, 0, 0)],
        // Outside guest memory, and wrapping the address space.
        vec![(MEM_SIZE - 10, 100, 0, 0)],
        vec![(u64::MAX - 10, 100, 0, 0)],
        // Shorter than a vnet header plus an Ethernet header.
        vec![(a, 20, 0, 0)],
        // Too many bytes for one frame.
        vec![(a, MAX_FRAME_LEN as u32 + 1, 0, 0)],
    ];
    let mut heads = Vec::new();
    for d in &hostile {
        // Fix up `next` of the zero-length case to the slot that follows its head.
        let base = h.tx.next_desc;
        let d: Vec<_> = d
            .iter()
            .enumerate()
            .map(|(i, &(ad, l, f, _))| {
                let next = if f & F_NEXT != 0 {
                    base + i as u16 + 1
                } else {
                    0
                };
                (ad, l, f, next)
            })
            .collect();
        heads.push(h.tx.push_raw(&d));
    }
    // A loop: the descriptor points to itself.
    let slot = h.tx.next_desc;
    heads.push(h.tx.push_raw(&[(a, 100, F_NEXT, slot)]));
    // A next index outside the table.
    heads.push(h.tx.push_raw(&[(a, 100, F_NEXT, 999)]));
    // Too many descriptors: MAX_CHAIN_DESCS + 1 pieces of 30 bytes.
    let n = MAX_CHAIN_DESCS + 1;
    let long: Vec<(u64, u32, u16)> = (0..n).map(|i| (a + i as u64 * 30, 30, 0)).collect();
    heads.push(h.tx.push(&long));
    h.dev.handle_queue_event(TXQ);
    // A head outside the table cannot be returned, but must not stop the queue.
    h.tx.publish_head(QUEUE_SIZE + 7);
    h.dev.handle_queue_event(TXQ);

    assert!(h.host_recv().is_none(), "no hostile chain reaches the host");
    let used = h.tx.used();
    assert_eq!(used, heads.iter().map(|&hd| (hd, 0)).collect::<Vec<_>>());
    assert_eq!(
        h.dev.stats().bad_chains,
        10,
        "the unnameable head counts too"
    );

    // The queue still works.
    let frame = eth_frame(64);
    h.send([0; VNET_HDR_LEN], &frame);
    assert_eq!(h.host_recv().unwrap()[VNET_HDR_LEN..], frame[..]);
}

/// Hostile chains among rx buffers are returned empty and skipped; the frame lands in the
/// good ones, whose used entries stay together.
#[test]
fn hostile_rx_chains_are_returned_empty_and_skipped() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    let a = h.alloc(4096);
    let g1 = h.add_rx_chain(&[1024]);
    let bad_ro = h.rx.push(&[(a, 1024, 0)]);
    let bad_zero = h.rx.push(&[(a, 12, F_WRITE), (a, 0, F_WRITE)]);
    let bad_oob = h.rx.push(&[(MEM_SIZE - 100, 1024, F_WRITE)]);
    let bad_small = h.rx.push(&[(a, 8, F_WRITE)]);
    let slot = h.rx.next_desc;
    let bad_loop = h.rx.push_raw(&[(a, 100, F_WRITE | F_NEXT, slot)]);
    let g2 = h.add_rx_chain(&[1024]);
    let frame = host_frame(1500, 4);
    h.peer.send(&frame).unwrap();
    h.dev.handle_backend_event();
    let used = h.rx.used();
    assert_eq!(
        used,
        vec![
            (bad_ro, 0),
            (bad_zero, 0),
            (bad_oob, 0),
            (bad_small, 0),
            (bad_loop, 0),
            (g1.0, 1024),
            (g2.0, frame.len() as u32 - 1024),
        ]
    );
    assert_eq!(&h.read(g1.1[0], 12)[10..12], &2u16.to_le_bytes());
    assert_eq!(h.dev.stats().bad_chains, 5);
}

#[test]
fn rx_ring_full_of_hostile_chains_does_not_spin() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    let a = h.alloc(4096);
    for _ in 0..QUEUE_SIZE {
        h.rx.push(&[(a, 1024, 0)]); // read-only: unusable for rx
    }
    h.peer.send(&host_frame(100, 0)).unwrap();
    h.dev.handle_backend_event();
    assert_eq!(h.rx.used().len(), usize::from(QUEUE_SIZE));
    assert!(
        !h.dev.wants_backend_events(),
        "frame waits for usable buffers"
    );
    let g = h.add_rx_chain(&[2048]);
    h.dev.handle_queue_event(RXQ);
    assert_eq!(h.rx.used(), vec![(g.0, 112)]);
}

#[test]
fn rx_frame_larger_than_the_whole_ring_is_dropped() {
    let m = mem();
    let mut h = H::activated(&m, 0, F_MRG_RXBUF);
    // 256 buffers of 64 bytes: 16 KiB in all, less than the frame.
    for _ in 0..QUEUE_SIZE {
        h.add_rx_chain(&[64]);
    }
    h.peer.send(&host_frame(20_000, 0)).unwrap();
    h.dev.handle_backend_event();
    let used = h.rx.used();
    assert_eq!(used.len(), usize::from(QUEUE_SIZE));
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(h.dev.stats().rx_dropped, 1);
    assert!(h.dev.wants_backend_events());
}

#[test]
fn nothing_moves_before_activation_or_after_reset() {
    let m = mem();
    let mut h = H::new(&m, 0);
    h.peer.send(&host_frame(100, 0)).unwrap();
    h.dev.handle_backend_event();
    h.dev.handle_queue_event(TXQ);
    assert!(!h.dev.wants_backend_events());
    h.activate(0);
    let (head, _) = h.add_rx_chain(&[1526]);
    h.dev.handle_queue_event(RXQ);
    assert_eq!(h.rx.used(), vec![(head, 112)]);
    h.dev.reset();
    h.peer.send(&host_frame(100, 0)).unwrap();
    h.dev.handle_backend_event();
    assert!(!h.dev.wants_backend_events());
}

/// Through the real event manager: the backend's descriptor leaves the epoll set while the
/// guest has no buffers (a level-triggered wakeup would otherwise repeat forever) and comes
/// back with the guest's next rx notification.
#[test]
fn event_loop_stops_watching_the_backend_without_buffers() {
    let m = mem();
    let h = H::new(&m, 0);
    let H {
        rx: mut rx_ring,
        tx: tx_ring,
        dev,
        peer,
        irq,
        ..
    } = h;
    let dev = Arc::new(Mutex::new(dev));
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(dev.clone());
    {
        let mut d = dev.lock().unwrap();
        d.set_acked_features(VIRTIO_F_VERSION_1 | F_MRG_RXBUF);
        d.activate(m.clone(), vec![rx_ring.queue(), tx_ring.queue()], irq)
            .unwrap();
    }
    // The activation kick registers the backend.
    while em.run_with_timeout(0).unwrap() > 0 {}
    peer.send(&host_frame(100, 0)).unwrap();
    peer.send(&host_frame(100, 1)).unwrap();
    assert!(
        em.run_with_timeout(100).unwrap() > 0,
        "frame wakes the loop"
    );
    // Stalled: the frames wait, and the loop stays quiet although the socket is readable.
    for _ in 0..5 {
        assert_eq!(em.run_with_timeout(10).unwrap(), 0, "no busy loop");
    }
    assert!(rx_ring.used().is_empty());

    let buf = 0x10_0000;
    rx_ring.push(&[(buf, 4096, F_WRITE)]);
    rx_ring.push(&[(buf + 0x1000, 4096, F_WRITE)]);
    dev.lock().unwrap().queue_events()[RXQ].write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx_ring.used_idx() < 2 {
        em.run_with_timeout(10).unwrap();
        assert!(Instant::now() < deadline, "frames not delivered");
    }
    assert_eq!(rx_ring.used().len(), 2);
    assert!(dev.lock().unwrap().wants_backend_events());
}

mod real_tap {
    //! A real TAP inside a network namespace this test creates (on its own thread, so the
    //! rest of the test process keeps the host's namespace): the kernel answers an ARP
    //! request the guest sends, and UDP crosses in both directions with checksum offload.

    use std::net::UdpSocket;
    use std::process::Command;

    use super::*;

    const TAP: &str = "mvmtest0";
    const HOST_IP: [u8; 4] = [10, 77, 0, 1];
    const GUEST_IP: [u8; 4] = [10, 77, 0, 2];

    fn ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn checksum(data: &[u8], initial: u32) -> u16 {
        let mut sum = initial;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(dst);
        f.extend(src);
        f.extend(ethertype.to_be_bytes());
        f.extend(payload);
        f
    }

    fn arp_request() -> Vec<u8> {
        let mut a = Vec::new();
        a.extend([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        a.extend(MAC);
        a.extend(GUEST_IP);
        a.extend([0; 6]);
        a.extend(HOST_IP);
        eth([0xff; 6], MAC, 0x0806, &a)
    }

    /// An IPv4/UDP frame from the guest; with `partial`, the UDP checksum holds only the
    /// pseudo-header sum (what a driver using checksum offload sends).
    fn udp_frame(dst_mac: [u8; 6], dport: u16, payload: &[u8], partial: bool) -> Vec<u8> {
        let udp_len = 8 + payload.len() as u16;
        let mut ip = vec![0x45, 0];
        ip.extend((20 + udp_len).to_be_bytes());
        ip.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
        ip.extend(GUEST_IP);
        ip.extend(HOST_IP);
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut udp = Vec::new();
        udp.extend(4000u16.to_be_bytes());
        udp.extend(dport.to_be_bytes());
        udp.extend(udp_len.to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(payload);
        if partial {
            let mut pseudo = Vec::new();
            pseudo.extend(GUEST_IP);
            pseudo.extend(HOST_IP);
            pseudo.extend([0, 17]);
            pseudo.extend(udp_len.to_be_bytes());
            // The field holds the folded, non-inverted pseudo-header sum.
            let c = !checksum(&pseudo, 0);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        ip.extend(udp);
        eth(dst_mac, MAC, 0x0800, &ip)
    }

    fn wait_for(h: &mut H, what: &str, mut f: impl FnMut(&mut H) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            h.dev.handle_backend_event();
            if f(h) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn in_own_netns() {
        // SAFETY: unshare only changes this thread's namespaces; the flag is a constant.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "cannot create a network namespace (CAP_SYS_ADMIN is needed): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
        ip(&["addr", "add", "10.77.0.1/24", "dev", TAP]);
        // Attach before bringing the link up: the carrier is then already on when the link
        // opens, so its queue is active at once instead of after the kernel's deferred
        // link-state work (until which transmitted frames, like an ARP reply, are dropped).
        let tap = Tap::open(TAP).expect("open the TAP");
        ip(&["link", "set", TAP, "up"]);
        let neigh = "neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev";
        let mut args: Vec<&str> = neigh.split(' ').collect();
        args.push(TAP);
        ip(&args);

        let m = mem();
        assert_eq!(tap.name(), TAP);
        assert_ne!(
            tap.supported_offloads() & libc::TUN_F_CSUM,
            0,
            "TAP offers checksum offload"
        );
        let (_unused, peer) = UnixDatagram::pair().unwrap();
        let mut h = H {
            mem: &m,
            rx: Ring::new(&m, 0x0),
            tx: Ring::new(&m, 0x1_0000),
            dev: Net::new(Box::new(tap), MAC).unwrap(),
            peer,
            irq: Arc::new(IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            next_buf: 0x10_0000,
        };
        let acked = F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_GUEST_TSO4;
        h.activate(acked);
        assert_eq!(
            h.dev.backend().offloads(),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4
        );
        let mut bufs = Vec::new();
        // Plenty: bringing the link up also sends IPv6 neighbour discovery to the guest.
        for _ in 0..128 {
            bufs.push(h.add_rx_chain(&[2048]));
        }
        h.dev.handle_queue_event(RXQ);

        // Guest → host: an ARP request; the kernel's reply comes back through rx. Resent
        // now and then, as a guest would, in case the first one met a link still settling.
        let mut reply = None;
        let mut last_sent: Option<Instant> = None;
        wait_for(&mut h, "the ARP reply", |h| {
            if last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(300)) {
                h.send([0; VNET_HDR_LEN], &arp_request());
                last_sent = Some(Instant::now());
            }
            for (head, len) in h.rx.used() {
                let (_, addrs) = bufs.iter().find(|b| b.0 == head).unwrap();
                let f = h.read(addrs[0], len as usize);
                // Ethertype ARP, opcode reply, sender 10.77.0.1.
                if f.len() >= VNET_HDR_LEN + 42
                    && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [8, 6]
                    && f[VNET_HDR_LEN + 20..VNET_HDR_LEN + 22] == [0, 2]
                {
                    reply = Some(f);
                }
            }
            reply.is_some()
        });
        let reply = reply.unwrap();
        let host_mac: [u8; 6] = reply[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12]
            .try_into()
            .unwrap();
        assert_eq!(&reply[VNET_HDR_LEN + 28..VNET_HDR_LEN + 32], &HOST_IP);

        // Guest → host: UDP with a partial checksum the host completes (CSUM offload).
        let sock = UdpSocket::bind("10.77.0.1:5000").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let frame = udp_frame(host_mac, 5000, b"hello from the guest", true);
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = FLAG_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
        h.send(hdr, &frame);
        let mut got = [0u8; 64];
        let (n, from) = sock.recv_from(&mut got).expect("UDP from the guest");
        assert_eq!(&got[..n], b"hello from the guest");
        assert_eq!(from.to_string(), "10.77.0.2:4000");
        assert_eq!(h.dev.stats().tx_dropped, 0);

        // Host → guest: UDP; with GUEST_CSUM the TAP may leave the checksum to the guest.
        let payload = vec![0x5a; 1200];
        sock.send_to(&payload, "10.77.0.2:4000").unwrap();
        let mut udp = None;
        wait_for(&mut h, "the host's UDP datagram", |h| {
            for (head, len) in h.rx.used() {
                let (_, addrs) = bufs.iter().find(|b| b.0 == head).unwrap();
                let f = h.read(addrs[0], len as usize);
                if f.len() > VNET_HDR_LEN + 34
                    && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [8, 0]
                    && f[VNET_HDR_LEN + 23] == 17
                {
                    udp = Some(f);
                }
            }
            udp.is_some()
        });
        let udp = udp.unwrap();
        assert_eq!(udp.len(), VNET_HDR_LEN + 14 + 20 + 8 + payload.len());
        assert_eq!(&udp[udp.len() - payload.len()..], &payload[..]);
        assert_eq!(&udp[10..12], &1u16.to_le_bytes(), "num_buffers");
        if udp[0] & FLAG_NEEDS_CSUM != 0 {
            assert_eq!(u16::from_le_bytes([udp[6], udp[7]]), 34, "csum_start");
        }
        // Detach, then delete the TAP; the namespace itself ends with this thread.
        drop(h);
        drop(sock);
        ip(&["tuntap", "del", "dev", TAP, "mode", "tap"]);
    }

    #[test]
    fn real_tap_in_own_network_namespace() {
        std::thread::spawn(in_own_netns)
            .join()
            .expect("real TAP test failed (see above)");
    }
}

#[test]
fn the_driver_gets_only_offered_features() {
    // A backend without offloads offers no GUEST_* receive offloads; a driver acking every
    // bit must not get them (nor anything else we never offered).
    let (backend, _peer) = DatagramBackend::pair(0).unwrap();
    let mut dev = Net::new(Box::new(backend), MAC).unwrap();
    dev.set_acked_features(u64::MAX);
    assert_eq!(dev.acked_features(), dev.avail_features());
    assert_eq!(
        dev.acked_features() & (F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6),
        0
    );
    dev.reset();
    assert_eq!(dev.acked_features(), 0);
}

//! virtio-vsock driver and a single stream connection with credit-based flow control.
//!
//! Buffer layout (the classic Linux one, which every device implementation accepts):
//! each rx buffer is a chain of two device-writable descriptors, a 44-byte header then a
//! 4 KiB payload area; each tx packet is a 44-byte header descriptor followed, when there
//! is payload, by one device-readable payload descriptor. Slot `i` of a queue always uses
//! descriptors 2i and 2i+1, so a used id maps straight back to its slot.

use crate::report::Msg;
use crate::time::Deadline;
use crate::virtio::mmio::Mmio;
use crate::virtio::queue::{DESC_F_NEXT, DESC_F_WRITE, Queue};

pub const HDR_LEN: usize = 44;
pub const DATA_LEN: usize = 4096;
/// Receive buffer space we advertise (buf_alloc); also the size of the echo ring, so a
/// peer that respects our credit can never overflow it.
pub const BUF_ALLOC: u32 = 64 * 1024;

pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: the sender will receive / send no more.
pub const SHUT_RCV: u32 = 1;
pub const SHUT_SEND: u32 = 2;

pub const HOST_CID: u64 = 2;
/// VIRTIO_VSOCK_F_STREAM (newer devices offer it; older ones imply stream support).
const F_STREAM: u64 = 1 << 0;

const MAX_SLOTS: usize = 8;
const HDR_STRIDE: usize = 64;
const EVENT_BUFS: u16 = 4;
/// How long a control packet may wait for a free tx slot.
const TX_WAIT_MS: u64 = 2_000;

/// struct virtio_vsock_hdr (packed, little endian).
#[derive(Clone, Copy, Default)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    fn read(p: *const u8) -> Hdr {
        // SAFETY: callers pass a 44-byte header area of ours that the device has returned.
        unsafe {
            Hdr {
                src_cid: (p as *const u64).read_unaligned(),
                dst_cid: (p.add(8) as *const u64).read_unaligned(),
                src_port: (p.add(16) as *const u32).read_unaligned(),
                dst_port: (p.add(20) as *const u32).read_unaligned(),
                len: (p.add(24) as *const u32).read_unaligned(),
                kind: (p.add(28) as *const u16).read_unaligned(),
                op: (p.add(30) as *const u16).read_unaligned(),
                flags: (p.add(32) as *const u32).read_unaligned(),
                buf_alloc: (p.add(36) as *const u32).read_unaligned(),
                fwd_cnt: (p.add(40) as *const u32).read_unaligned(),
            }
        }
    }

    fn write(&self, p: *mut u8) {
        // SAFETY: callers pass a free tx header area of ours (44 bytes).
        unsafe {
            (p as *mut u64).write_unaligned(self.src_cid);
            (p.add(8) as *mut u64).write_unaligned(self.dst_cid);
            (p.add(16) as *mut u32).write_unaligned(self.src_port);
            (p.add(20) as *mut u32).write_unaligned(self.dst_port);
            (p.add(24) as *mut u32).write_unaligned(self.len);
            (p.add(28) as *mut u16).write_unaligned(self.kind);
            (p.add(30) as *mut u16).write_unaligned(self.op);
            (p.add(32) as *mut u32).write_unaligned(self.flags);
            (p.add(36) as *mut u32).write_unaligned(self.buf_alloc);
            (p.add(40) as *mut u32).write_unaligned(self.fwd_cnt);
        }
    }
}

/// One connection, identified by (local port, peer cid, peer port).
pub struct Stream {
    pub local_port: u32,
    pub peer_cid: u64,
    pub peer_port: u32,
    /// Peer's receive buffer and how much of it it has consumed (from every header).
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes we have sent (wrapping, as in the protocol).
    tx_cnt: u32,
    /// Payload bytes we have taken out of our receive ring.
    fwd_cnt: u32,
    /// fwd_cnt as last told to the peer.
    fwd_cnt_sent: u32,
    /// SHUTDOWN flags the peer has sent.
    pub peer_shutdown: u32,
    pub reset: bool,
    pub connected: bool,
    /// Received payload not yet consumed: ring[head..head+len] (mod BUF_ALLOC).
    head: usize,
    len: usize,
    pub total_rx: u64,
    pub total_tx: u64,
    pub last_byte: u8,
    last_credit_request: Option<u64>,
}

impl Stream {
    pub fn new(local_port: u32, peer_cid: u64, peer_port: u32) -> Stream {
        Stream {
            local_port,
            peer_cid,
            peer_port,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_shutdown: 0,
            reset: false,
            connected: false,
            head: 0,
            len: 0,
            total_rx: 0,
            total_tx: 0,
            last_byte: 0,
            last_credit_request: None,
        }
    }

    /// Bytes the peer can still take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Received bytes waiting in our ring.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Takes the peer's credit from a header it sent.
    pub fn update_credit(&mut self, h: &Hdr) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
    }

    fn matches(&self, h: &Hdr, cid: u64) -> bool {
        h.dst_cid == cid
            && h.dst_port == self.local_port
            && h.src_cid == self.peer_cid
            && h.src_port == self.peer_port
    }
}

pub struct Vsock {
    pub mmio: Mmio,
    rx: Queue,
    tx: Queue,
    /// Event queue: buffers stay posted so the device can deliver; events are ignored.
    ev: Queue,
    pub cid: u64,
    rx_slots: usize,
    rx_hdr: *mut u8,
    rx_data: *mut u8,
    tx_slots: usize,
    tx_hdr: *mut u8,
    tx_data: *mut u8,
    tx_busy: [bool; MAX_SLOTS],
    /// The stream's receive ring (BUF_ALLOC bytes).
    ring: *mut u8,
}

/// A received packet still occupying rx slot `slot` until `Vsock::repost`.
pub struct Packet {
    pub hdr: Hdr,
    slot: usize,
}

/// Packet buffers need no zeroing: the device or we fill them before anyone reads them.
fn alloc(size: usize, align: usize) -> Result<*mut u8, Msg> {
    match crate::arena::alloc(size, align, false) {
        Some(p) => Ok(p),
        None => fail!("out of memory"),
    }
}

impl Vsock {
    pub fn init(mmio: Mmio) -> Result<Vsock, Msg> {
        mmio.negotiate(F_STREAM)?;
        let rx = mmio.queue(0, 2 * MAX_SLOTS as u16)?;
        let tx = mmio.queue(1, 2 * MAX_SLOTS as u16)?;
        let ev = mmio.queue(2, EVENT_BUFS)?;
        let rx_slots = (rx.size() as usize / 2).min(MAX_SLOTS);
        let tx_slots = (tx.size() as usize / 2).min(MAX_SLOTS);
        if rx_slots == 0 || tx_slots == 0 {
            fail!("queues too small (rx {}, tx {})", rx.size(), tx.size());
        }
        let rx_hdr = alloc(MAX_SLOTS * HDR_STRIDE, 64)?;
        let rx_data = alloc(MAX_SLOTS * DATA_LEN, 4096)?;
        let evbuf = alloc(8 * ev.size() as usize, 8)?;
        let mut v = Vsock {
            mmio,
            rx,
            tx,
            ev,
            cid: 0,
            rx_slots,
            tx_slots,
            rx_hdr,
            rx_data,
            tx_hdr: alloc(MAX_SLOTS * HDR_STRIDE, 64)?,
            tx_data: alloc(MAX_SLOTS * DATA_LEN, 4096)?,
            tx_busy: [false; MAX_SLOTS],
            ring: alloc(BUF_ALLOC as usize, 4096)?,
        };
        // Buffers go in after DRIVER_OK: a device may only start looking at its queues
        // once it is activated, and notifications before that can be lost.
        mmio.driver_ok()?;
        v.cid = mmio.config_u64(0);
        for slot in 0..rx_slots {
            let d = 2 * slot as u16;
            // SAFETY (address arithmetic only): slot < MAX_SLOTS, inside the allocations.
            let (h, b) = unsafe { (rx_hdr.add(slot * HDR_STRIDE), rx_data.add(slot * DATA_LEN)) };
            v.rx.set_desc(
                d,
                h as u64,
                HDR_LEN as u32,
                DESC_F_WRITE | DESC_F_NEXT,
                d + 1,
            );
            v.rx.set_desc(d + 1, b as u64, DATA_LEN as u32, DESC_F_WRITE, 0);
            v.rx.push(d);
        }
        v.rx.notify();
        for i in 0..v.ev.size() {
            // SAFETY (address arithmetic only): i < size, inside evbuf.
            let p = unsafe { evbuf.add(8 * i as usize) };
            v.ev.set_desc(i, p as u64, 8, DESC_F_WRITE, 0);
            v.ev.push(i);
        }
        v.ev.notify();
        Ok(v)
    }

    /// Pops one received packet, validating what the device returned.
    pub fn recv(&mut self) -> Result<Option<Packet>, Msg> {
        let Some((id, used_len)) = self.rx.pop_used() else {
            return Ok(None);
        };
        let id = id as usize;
        if !id.is_multiple_of(2) || id / 2 >= self.rx_slots {
            fail!("rx used id {} is not a buffer head we posted", id);
        }
        let slot = id / 2;
        // SAFETY (address arithmetic only): slot < rx_slots.
        let hdr = Hdr::read(unsafe { self.rx_hdr.add(slot * HDR_STRIDE) });
        let pkt = Packet { hdr, slot };
        if (used_len as usize) < HDR_LEN {
            self.repost(&pkt);
            fail!("rx used len {} shorter than a header", used_len);
        }
        // As Linux does: the device must have written at least header + payload.
        if hdr.len as usize > DATA_LEN || (used_len as usize) < HDR_LEN + hdr.len as usize {
            self.repost(&pkt);
            fail!(
                "rx used len {} shorter than header + payload len {}",
                used_len,
                hdr.len
            );
        }
        Ok(Some(pkt))
    }

    /// The payload of a received packet.
    pub fn payload(&self, pkt: &Packet) -> &[u8] {
        // SAFETY: the slot's data area (DATA_LEN bytes) is ours until repost; hdr.len was
        // checked against DATA_LEN in recv().
        unsafe {
            core::slice::from_raw_parts(self.rx_data.add(pkt.slot * DATA_LEN), pkt.hdr.len as usize)
        }
    }

    /// Gives a packet's buffer back to the device.
    pub fn repost(&mut self, pkt: &Packet) {
        // The descriptors still describe the slot; only the ring entry is new.
        self.rx.submit(2 * pkt.slot as u16);
    }

    fn reap_tx(&mut self) -> Result<(), Msg> {
        while let Some((id, _)) = self.tx.pop_used() {
            let id = id as usize;
            if !id.is_multiple_of(2) || id / 2 >= self.tx_slots || !self.tx_busy[id / 2] {
                fail!("tx used id {} is not a packet in flight", id);
            }
            self.tx_busy[id / 2] = false;
        }
        Ok(())
    }

    fn free_tx_slot(&mut self) -> Result<Option<usize>, Msg> {
        self.reap_tx()?;
        Ok(self.tx_busy[..self.tx_slots].iter().position(|b| !b))
    }

    /// Queues one packet in tx slot `slot` (which must be free).
    fn send_in(&mut self, slot: usize, hdr: &Hdr, payload: &[u8]) {
        let d = 2 * slot as u16;
        // SAFETY (address arithmetic only): slot < tx_slots.
        let (h, b) = unsafe {
            (
                self.tx_hdr.add(slot * HDR_STRIDE),
                self.tx_data.add(slot * DATA_LEN),
            )
        };
        hdr.write(h);
        if payload.is_empty() {
            self.tx.set_desc(d, h as u64, HDR_LEN as u32, 0, 0);
        } else {
            // SAFETY: the slot is free (not owned by the device) and payload ≤ DATA_LEN.
            unsafe {
                core::ptr::copy_nonoverlapping(payload.as_ptr(), b, payload.len().min(DATA_LEN))
            };
            self.tx
                .set_desc(d, h as u64, HDR_LEN as u32, DESC_F_NEXT, d + 1);
            self.tx
                .set_desc(d + 1, b as u64, payload.len().min(DATA_LEN) as u32, 0, 0);
        }
        self.tx_busy[slot] = true;
        self.tx.submit(d);
    }

    /// Sends a packet, waiting a bounded time for a free tx slot.
    pub fn send(&mut self, hdr: &Hdr, payload: &[u8]) -> Result<(), Msg> {
        let mut deadline = Deadline::after_ms(TX_WAIT_MS);
        loop {
            if let Some(slot) = self.free_tx_slot()? {
                self.send_in(slot, hdr, payload);
                return Ok(());
            }
            if deadline.expired() {
                fail!("timeout waiting for the device to consume tx packets");
            }
            core::hint::spin_loop();
        }
    }

    /// A header from us to the stream's peer, carrying our current credit.
    pub fn hdr(&self, s: &mut Stream, op: u16, len: u32, flags: u32) -> Hdr {
        s.fwd_cnt_sent = s.fwd_cnt;
        Hdr {
            src_cid: self.cid,
            dst_cid: s.peer_cid,
            src_port: s.local_port,
            dst_port: s.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: s.fwd_cnt,
        }
    }

    /// Sends a payload-less packet on the stream.
    pub fn send_ctrl(&mut self, s: &mut Stream, op: u16, flags: u32) -> Result<(), Msg> {
        let h = self.hdr(s, op, 0, flags);
        self.send(&h, &[])
    }

    /// Answers a packet that belongs to no connection with RST (never an RST to an RST).
    pub fn reject(&mut self, h: &Hdr) -> Result<(), Msg> {
        if h.op == OP_RST {
            return Ok(());
        }
        println!(
            "VSOCK RST to unexpected packet op={} type={} src={}:{} dst={}:{}",
            h.op, h.kind, h.src_cid, h.src_port, h.dst_cid, h.dst_port
        );
        let r = Hdr {
            src_cid: self.cid,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            kind: TYPE_STREAM,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        };
        self.send(&r, &[])
    }

    /// Handles every packet received so far for stream `s` (others are rejected).
    /// Returns whether anything arrived.
    pub fn poll(&mut self, s: &mut Stream) -> Result<bool, Msg> {
        let mut progress = false;
        while let Some(pkt) = self.recv()? {
            progress = true;
            let h = pkt.hdr;
            if !s.matches(&h, self.cid) || h.kind != TYPE_STREAM {
                self.repost(&pkt);
                self.reject(&h)?;
                continue;
            }
            // Every header carries the peer's current credit.
            s.update_credit(&h);
            let result = match h.op {
                OP_RW => self.take_payload(s, &pkt),
                OP_RESPONSE => {
                    s.connected = true;
                    Ok(())
                }
                OP_CREDIT_UPDATE => Ok(()),
                OP_CREDIT_REQUEST => self.send_ctrl(s, OP_CREDIT_UPDATE, 0),
                OP_SHUTDOWN => {
                    s.peer_shutdown |= h.flags & (SHUT_RCV | SHUT_SEND);
                    Ok(())
                }
                OP_RST => {
                    s.reset = true;
                    Ok(())
                }
                // A second REQUEST on an open connection: nothing sensible to do.
                _ => Ok(()),
            };
            self.repost(&pkt);
            result?;
        }
        if progress {
            // Interrupts are off; acknowledging keeps the device's state as a driver's
            // interrupt handler would leave it.
            self.mmio.ack_interrupts();
        }
        self.reap_tx()?;
        Ok(progress)
    }

    fn take_payload(&mut self, s: &mut Stream, pkt: &Packet) -> Result<(), Msg> {
        let data = self.payload(pkt);
        if data.is_empty() {
            return Ok(());
        }
        if s.len + data.len() > BUF_ALLOC as usize {
            fail!(
                "peer sent {} bytes with {} of {} buffered: it ignored our credit",
                data.len(),
                s.len,
                BUF_ALLOC
            );
        }
        let cap = BUF_ALLOC as usize;
        let tail = (s.head + s.len) % cap;
        // At most two pieces: up to the end of the ring, then from its start.
        let first = data.len().min(cap - tail);
        // SAFETY: tail + first ≤ cap and data.len() - first ≤ cap - len, all inside the
        // ring; the packet buffer does not overlap the ring.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.ring.add(tail), first);
            core::ptr::copy_nonoverlapping(data.as_ptr().add(first), self.ring, data.len() - first);
        }
        s.len += data.len();
        s.total_rx += data.len() as u64;
        s.last_byte = data[data.len() - 1];
        Ok(())
    }

    /// Sends `data` (one packet, at most 4 KiB) if the peer has credit and a tx slot is
    /// free; returns how many bytes went out (0 = try again later).
    pub fn try_send_data(&mut self, s: &mut Stream, data: &[u8]) -> Result<usize, Msg> {
        let n = data.len().min(DATA_LEN).min(s.peer_credit() as usize);
        if n == 0 {
            self.request_credit_if_stalled(s, !data.is_empty())?;
            return Ok(0);
        }
        let Some(slot) = self.free_tx_slot()? else {
            return Ok(0);
        };
        let h = self.hdr(s, OP_RW, n as u32, 0);
        self.send_in(slot, &h, &data[..n]);
        s.tx_cnt = s.tx_cnt.wrapping_add(n as u32);
        s.total_tx += n as u64;
        Ok(n)
    }

    /// Echoes up to one packet's worth of received data back to the peer.
    pub fn echo_some(&mut self, s: &mut Stream) -> Result<usize, Msg> {
        let cap = BUF_ALLOC as usize;
        let n = s
            .len
            .min(cap - s.head)
            .min(DATA_LEN)
            .min(s.peer_credit() as usize);
        if n == 0 {
            self.request_credit_if_stalled(s, s.len > 0)?;
            return Ok(0);
        }
        let Some(slot) = self.free_tx_slot()? else {
            return Ok(0);
        };
        // Consume first so the echo's header already returns the credit.
        s.head = (s.head + n) % cap;
        s.len -= n;
        s.fwd_cnt = s.fwd_cnt.wrapping_add(n as u32);
        let h = self.hdr(s, OP_RW, n as u32, 0);
        let start = (s.head + cap - n) % cap;
        // SAFETY: start..start+n is inside the ring (n ≤ cap - old head, start = old head).
        let chunk = unsafe { core::slice::from_raw_parts(self.ring.add(start), n) };
        self.send_in(slot, &h, chunk);
        s.tx_cnt = s.tx_cnt.wrapping_add(n as u32);
        s.total_tx += n as u64;
        Ok(n)
    }

    /// Moves up to `out.len()` received bytes out of the ring.
    pub fn read(&mut self, s: &mut Stream, out: &mut [u8]) -> Result<usize, Msg> {
        let cap = BUF_ALLOC as usize;
        let n = s.len.min(out.len());
        let first = n.min(cap - s.head);
        // SAFETY: head + first ≤ cap and n - first < head: both pieces lie in the ring,
        // which `out` does not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ring.add(s.head), out.as_mut_ptr(), first);
            core::ptr::copy_nonoverlapping(self.ring, out.as_mut_ptr().add(first), n - first);
        }
        s.head = (s.head + n) % cap;
        s.len -= n;
        s.fwd_cnt = s.fwd_cnt.wrapping_add(n as u32);
        // Without an echo to carry it, tell the peer about freed space once it matters.
        if s.fwd_cnt.wrapping_sub(s.fwd_cnt_sent) >= BUF_ALLOC / 4 {
            self.send_ctrl(s, OP_CREDIT_UPDATE, 0)?;
        }
        Ok(n)
    }

    /// When we have data but the peer has no credit, ask for an update every 100 ms in
    /// case the peer's update got lost or it only sends them on request.
    fn request_credit_if_stalled(&mut self, s: &mut Stream, want: bool) -> Result<(), Msg> {
        if !want || s.peer_shutdown & SHUT_RCV != 0 {
            return Ok(());
        }
        let now = crate::arch::rdtsc();
        let interval = crate::time::tsc_hz() / 10;
        match s.last_credit_request {
            Some(t) if now.wrapping_sub(t) < interval => Ok(()),
            Some(_) => {
                s.last_credit_request = Some(now);
                self.send_ctrl(s, OP_CREDIT_REQUEST, 0)
            }
            // First stall: give the peer's own CREDIT_UPDATE a chance.
            None => {
                s.last_credit_request = Some(now);
                Ok(())
            }
        }
    }

    /// Ends the stream: RST if the peer already shut down both ways, else SHUTDOWN(both)
    /// and wait up to 2 s for the peer's RST (or SHUTDOWN, which we answer with RST).
    pub fn close(&mut self, s: &mut Stream) -> Result<(), Msg> {
        if s.reset {
            return Ok(());
        }
        if s.peer_shutdown == SHUT_RCV | SHUT_SEND {
            return self.send_ctrl(s, OP_RST, 0);
        }
        self.send_ctrl(s, OP_SHUTDOWN, SHUT_RCV | SHUT_SEND)?;
        let mut deadline = Deadline::after_ms(2_000);
        while !deadline.expired() {
            self.poll(s)?;
            // Data still arriving after our shutdown is dropped: we said we won't read.
            s.len = 0;
            if s.reset {
                return Ok(());
            }
            if s.peer_shutdown == SHUT_RCV | SHUT_SEND {
                return self.send_ctrl(s, OP_RST, 0);
            }
            core::hint::spin_loop();
        }
        self.send_ctrl(s, OP_RST, 0)
    }
}

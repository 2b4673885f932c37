//! Device-level tests: a mock driver posts buffers on real virtqueues in guest memory, host
//! processes talk over real unix sockets, and the device is driven through its event
//! handlers (no KVM, and no event manager except where that glue itself is tested).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
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
use vmm_sys_util::tempdir::TempDir;

use super::packet::Header;
use super::*;
use crate::devices::virtio::{IrqTrigger, TYPE_VSOCK, VIRTIO_F_VERSION_1, VirtioDevice};

const GUEST_CID: u64 = 3;
const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const RX_BUF: u32 = 4096;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Driver side of one queue.
///
/// The descriptor table and available ring are MockSplitQueue's; the used ring is placed
/// separately because the mock lays it out right after `len` *bytes* of the available ring,
/// which overlaps the ring's second half for a 256-entry queue.
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
        // A driver starts with a zeroed used ring.
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

    /// Publishes a chain; `descs` are (addr, len, flags) with NEXT links filled in here.
    fn push(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = self.next_desc;
            self.next_desc = (self.next_desc + 1) % QUEUE_SIZE;
            let (flags, next) = if i + 1 < descs.len() {
                (flags | F_NEXT, self.next_desc)
            } else {
                (flags & !F_NEXT, 0)
            };
            self.mock
                .desc_table()
                .store(idx, raw(addr, len, flags, next))
                .unwrap();
        }
        let slot = usize::from(self.avail_idx % QUEUE_SIZE);
        self.mock.avail().ring().ref_at(slot).unwrap().store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mock.avail().idx().store(self.avail_idx);
        head
    }

    fn used_total(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used_addr + 2)).unwrap()
    }

    /// New used entries: (head, len).
    fn used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.used_total();
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

/// A device with a mock driver.
struct H<'a> {
    mem: &'a GuestMemoryMmap,
    rx: Ring<'a>,
    tx: Ring<'a>,
    ev: Ring<'a>,
    dev: Vsock,
    irq: Arc<IrqTrigger>,
    _dir: TempDir,
    uds: PathBuf,
    /// rx head → (header address, data address).
    rx_bufs: HashMap<u16, (u64, u64)>,
    rx_log: VecDeque<(Header, Vec<u8>)>,
    next_buf: u64,
}

impl<'a> H<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let dir = TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
        let uds = dir.as_path().join("v.sock");
        Self {
            mem,
            rx: Ring::new(mem, 0x0),
            tx: Ring::new(mem, 0x1_0000),
            ev: Ring::new(mem, 0x2_0000),
            dev: Vsock::new(GUEST_CID, &uds).unwrap(),
            irq: Arc::new(IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            _dir: dir,
            uds,
            rx_bufs: HashMap::new(),
            rx_log: VecDeque::new(),
            next_buf: 0x10_0000,
        }
    }

    fn activated(mem: &'a GuestMemoryMmap) -> Self {
        let mut h = Self::new(mem);
        h.activate();
        h
    }

    fn activate(&mut self) {
        let queues = vec![self.rx.queue(), self.tx.queue(), self.ev.queue()];
        self.dev
            .activate(self.mem.clone(), queues, self.irq.clone())
            .unwrap();
        assert!(self.dev.is_activated());
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next_buf;
        self.next_buf += (len + 0xfff) & !0xfff;
        assert!(self.next_buf < 0x100_0000, "test ran out of guest memory");
        a
    }

    /// Posts `n` rx buffers, alternating the two layouts Linux uses (one descriptor for
    /// header and data, or two).
    fn add_rx(&mut self, n: usize) {
        for i in 0..n {
            let a = self.alloc(u64::from(RX_BUF) + 64);
            if i % 2 == 0 {
                let h = self.rx.push(&[(a, 44 + RX_BUF, F_WRITE)]);
                self.rx_bufs.insert(h, (a, a + 44));
            } else {
                let h = self.rx.push(&[(a, 44, F_WRITE), (a + 64, RX_BUF, F_WRITE)]);
                self.rx_bufs.insert(h, (a, a + 64));
            }
        }
        self.dev.handle_queue_event(RXQ);
    }

    /// Sends a packet from the guest (header and payload in separate descriptors).
    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let hdr = Header {
            len: payload.len() as u32,
            ..hdr
        };
        let a = self.alloc(44 + payload.len() as u64 + 64);
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(a))
            .unwrap();
        if payload.is_empty() {
            self.tx.push(&[(a, 44, 0)]);
        } else {
            self.mem.write_slice(payload, GuestAddress(a + 64)).unwrap();
            self.tx
                .push(&[(a, 44, 0), (a + 64, payload.len() as u32, 0)]);
        }
        self.dev.handle_queue_event(TXQ);
    }

    /// Sends raw descriptors on the tx queue.
    fn send_raw(&mut self, descs: &[(u64, u32, u16)]) {
        self.tx.push(descs);
        self.dev.handle_queue_event(TXQ);
    }

    fn collect_rx(&mut self) {
        for (head, len) in self.rx.used() {
            let buf = self.rx_bufs.remove(&head);
            if len == 0 {
                // A buffer the device could not use.
                continue;
            }
            let (ha, da) = buf.expect("used head was posted by add_rx");
            assert!(len >= 44, "used length {len} shorter than a header");
            let mut hb = [0u8; 44];
            self.mem.read_slice(&mut hb, GuestAddress(ha)).unwrap();
            let hdr = Header::from_bytes(&hb);
            assert_eq!(hdr.len, len - 44, "used length disagrees with the header");
            let mut data = vec![0u8; hdr.len as usize];
            self.mem.read_slice(&mut data, GuestAddress(da)).unwrap();
            self.rx_log.push_back((hdr, data));
        }
    }

    fn pump(&mut self) {
        self.dev.handle_backend_event();
        self.collect_rx();
    }

    /// Pumps the host side until `f` holds.
    fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.pump();
            if let Some(t) = f(self) {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn wait_rx(&mut self) -> (Header, Vec<u8>) {
        self.wait("an rx packet", |h| h.rx_log.pop_front())
    }

    /// Asserts that nothing reaches the guest for a little while.
    fn assert_no_rx(&mut self) {
        for _ in 0..20 {
            self.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(self.rx_log.is_empty(), "unexpected rx: {:?}", self.rx_log);
    }

    fn host_connect(&self, line: &[u8]) -> UnixStream {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line).unwrap();
        s
    }

    fn wait_closed(&mut self, s: &mut UnixStream) {
        s.set_nonblocking(true).unwrap();
        self.wait("the host stream to close", |_| {
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(0) => Some(()),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(()),
                Ok(_) | Err(_) => None,
            }
        });
    }

    /// Host connects with `CONNECT port`; the guest accepts. Returns the stream (after the
    /// OK line) and the host-side port.
    fn establish_from_host(&mut self, port: u32, guest_buf_alloc: u32) -> (UnixStream, u32) {
        let mut host = self.host_connect(format!("CONNECT {port}\n").as_bytes());
        let (req, _) = self.wait_rx();
        assert_eq!(req.op, uapi::OP_REQUEST);
        self.send(
            Header {
                buf_alloc: guest_buf_alloc,
                ..guest(uapi::OP_RESPONSE, port, req.src_port)
            },
            &[],
        );
        let expect = format!("OK {}\n", req.src_port);
        let mut line = vec![0u8; expect.len()];
        host.read_exact(&mut line).unwrap();
        assert_eq!(String::from_utf8(line).unwrap(), expect);
        (host, req.src_port)
    }
}

/// A header from the guest.
fn guest(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: uapi::TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 0,
    }
}

#[test]
fn device_identity_and_config() {
    let m = mem();
    let h = H::new(&m);
    assert_eq!(h.dev.device_type(), TYPE_VSOCK);
    assert_eq!(h.dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(h.dev.queue_events().len(), 3);
    assert_eq!(h.dev.avail_features(), VIRTIO_F_VERSION_1);
    let mut cfg = [0u8; 8];
    h.dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), GUEST_CID);
    let mut tail = [0xffu8; 4];
    h.dev.read_config(6, &mut tail);
    assert_eq!(tail, [0, 0, 0, 0]);
    assert_eq!(h.dev.guest_cid(), GUEST_CID);
    assert_eq!(h.dev.uds_path(), h.uds.as_path());
}

#[test]
fn new_fails_without_a_directory() {
    let dir = TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
    let r = Vsock::new(3, &dir.as_path().join("missing/v.sock"));
    assert!(matches!(r, Err(VsockError::Bind { .. })));
}

#[test]
fn activation_needs_rx_and_tx_queues() {
    let m = mem();
    let mut h = H::new(&m);
    let irq = h.irq.clone();
    let r = h.dev.activate(m.clone(), vec![h.rx.queue()], irq.clone());
    assert!(r.is_err());
    let r = h.dev.activate(
        m.clone(),
        vec![
            h.rx.queue(),
            Queue::new(256).unwrap(),
            Queue::new(256).unwrap(),
        ],
        irq,
    );
    assert!(r.is_err());
    assert!(!h.dev.is_activated());
}

#[test]
fn host_initiated_connection_carries_data_both_ways() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(16);
    let mut host = h.host_connect(b"CONNECT 1234\n");
    let (req, data) = h.wait_rx();
    assert!(data.is_empty());
    assert_eq!(req.op, uapi::OP_REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, GUEST_CID, 1234)
    );
    assert!(req.src_port >= LOCAL_PORT_BASE);
    assert_eq!(
        (req.type_, req.buf_alloc),
        (uapi::TYPE_STREAM, CONN_BUF_ALLOC)
    );
    assert_ne!(h.irq.status() & 1, 0, "the guest was not interrupted");

    h.send(guest(uapi::OP_RESPONSE, 1234, req.src_port), &[]);
    let mut line = vec![0u8; format!("OK {}\n", req.src_port).len()];
    host.read_exact(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port).as_bytes());

    host.write_all(b"ping").unwrap();
    let (p, d) = h.wait_rx();
    assert_eq!(
        (p.op, p.src_port, p.dst_port),
        (uapi::OP_RW, req.src_port, 1234)
    );
    assert_eq!(d, b"ping");

    h.send(guest(uapi::OP_RW, 1234, req.src_port), b"pong");
    let mut got = [0u8; 4];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    assert_eq!(h.tx.used_total(), 2);

    // The host closes: the guest is told both directions are shut, and its RST ends it.
    drop(host);
    let (p, _) = h.wait_rx();
    assert_eq!(
        (p.op, p.flags),
        (uapi::OP_SHUTDOWN, uapi::SHUTDOWN_RCV | uapi::SHUTDOWN_SEND)
    );
    h.send(guest(uapi::OP_RST, 1234, req.src_port), &[]);
    assert_eq!(h.dev.muxer().connection_count(), 0);
    h.assert_no_rx();
}

#[test]
fn data_sent_right_after_the_connect_line_is_kept() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    let host = h.host_connect(b"CONNECT 7\nearly");
    let (req, _) = h.wait_rx();
    h.send(guest(uapi::OP_RESPONSE, 7, req.src_port), &[]);
    let (p, d) = h.wait_rx();
    assert_eq!((p.op, d.as_slice()), (uapi::OP_RW, &b"early"[..]));
    drop(host);
}

#[test]
fn the_guest_credit_is_respected() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(16);
    let (mut host, local) = h.establish_from_host(1234, 8);
    host.write_all(&[5u8; 100]).unwrap();
    let (p, d) = h.wait_rx();
    assert_eq!((p.op, d.len()), (uapi::OP_RW, 8));
    let (p, _) = h.wait_rx();
    assert_eq!(p.op, uapi::OP_CREDIT_REQUEST);
    h.assert_no_rx();
    // The guest read the 8 bytes and says so.
    h.send(
        Header {
            buf_alloc: 8,
            fwd_cnt: 8,
            ..guest(uapi::OP_CREDIT_UPDATE, 1234, local)
        },
        &[],
    );
    let (p, d) = h.wait_rx();
    assert_eq!((p.op, d.len()), (uapi::OP_RW, 8));
    // Then a big window: the rest arrives.
    h.send(
        Header {
            buf_alloc: 1 << 20,
            fwd_cnt: 16,
            ..guest(uapi::OP_CREDIT_UPDATE, 1234, local)
        },
        &[],
    );
    let mut total = 16;
    while total < 100 {
        let (p, d) = h.wait_rx();
        if p.op == uapi::OP_RW {
            total += d.len();
        }
    }
    assert_eq!(total, 100);
}

#[test]
fn guest_credit_requests_are_answered() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    let (_host, local) = h.establish_from_host(9, 4096);
    h.send(guest(uapi::OP_CREDIT_REQUEST, 9, local), &[]);
    let (p, _) = h.wait_rx();
    assert_eq!(
        (p.op, p.buf_alloc, p.fwd_cnt),
        (uapi::OP_CREDIT_UPDATE, CONN_BUF_ALLOC, 0)
    );
}

#[test]
fn guest_initiated_connection_reaches_the_port_socket() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    let mut port_path = h.uds.clone().into_os_string();
    port_path.push("_5000");
    let listener = UnixListener::bind(&port_path).unwrap();
    h.send(guest(uapi::OP_REQUEST, 777, 5000), &[]);
    let (p, _) = h.wait_rx();
    assert_eq!(p.op, uapi::OP_RESPONSE);
    assert_eq!((p.src_port, p.dst_port, p.dst_cid), (5000, 777, GUEST_CID));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h.send(guest(uapi::OP_RW, 777, 5000), b"abc");
    let mut got = [0u8; 3];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abc");
    s.write_all(b"xyz").unwrap();
    let (p, d) = h.wait_rx();
    assert_eq!((p.op, d.as_slice()), (uapi::OP_RW, &b"xyz"[..]));
    // The guest shuts down its sending side: the host sees EOF but can still answer.
    h.send(
        Header {
            flags: uapi::SHUTDOWN_SEND,
            ..guest(uapi::OP_SHUTDOWN, 777, 5000)
        },
        &[],
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    s.write_all(b"last").unwrap();
    let (p, d) = h.wait_rx();
    assert_eq!((p.op, d.as_slice()), (uapi::OP_RW, &b"last"[..]));
}

#[test]
fn guest_connect_without_listener_is_reset() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    h.send(guest(uapi::OP_REQUEST, 777, 5001), &[]);
    let (p, _) = h.wait_rx();
    assert_eq!(
        (p.op, p.src_port, p.dst_port, p.src_cid),
        (uapi::OP_RST, 5001, 777, HOST_CID)
    );
    assert_eq!(h.dev.muxer().connection_count(), 0);
}

#[test]
fn the_guest_refusing_a_host_connection_closes_the_stream() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    let mut host = h.host_connect(b"CONNECT 80\n");
    let (req, _) = h.wait_rx();
    h.send(guest(uapi::OP_RST, 80, req.src_port), &[]);
    h.wait_closed(&mut host);
    assert_eq!(h.dev.muxer().connection_count(), 0);
}

#[test]
fn bad_handshakes_close_the_stream() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    for line in [
        &b"HELLO\n"[..],
        b"CONNECT\n",
        b"CONNECT x\n",
        b"CONNECT 99999999999\n",
        &[b'A'; 40][..],
        b"\xff\xfe\n",
    ] {
        let mut s = h.host_connect(line);
        h.wait_closed(&mut s);
    }
    // An incomplete line is given up after the timeout.
    let mut s = h.host_connect(b"CONN");
    h.wait("the handshake", |h| {
        (h.dev.muxer().handshake_count() == 1).then_some(())
    });
    h.dev.sweep_at(Instant::now() + HANDSHAKE_TIMEOUT);
    h.wait_closed(&mut s);
    assert_eq!(h.dev.muxer().handshake_count(), 0);
    assert_eq!(h.dev.muxer().connection_count(), 0);
    h.assert_no_rx();
}

#[test]
fn unanswered_requests_time_out() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    let mut host = h.host_connect(b"CONNECT 80\n");
    let (req, _) = h.wait_rx();
    h.dev.sweep_at(Instant::now() + RESPONSE_TIMEOUT);
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.src_port), (uapi::OP_RST, req.src_port));
    h.wait_closed(&mut host);
}

#[test]
fn host_connections_wait_for_activation() {
    let m = mem();
    let mut h = H::new(&m);
    let _host = h.host_connect(b"CONNECT 1234\n");
    h.wait("the connection", |h| {
        (h.dev.muxer().connection_count() == 1).then_some(())
    });
    // Queue notifications before activation are ignored.
    h.dev.handle_queue_event(TXQ);
    h.activate();
    h.add_rx(2);
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.dst_port), (uapi::OP_REQUEST, 1234));
}

#[test]
fn reset_closes_connections_and_keeps_listening() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    let (mut host, _) = h.establish_from_host(1234, 4096);
    h.dev.reset();
    assert!(!h.dev.is_activated());
    assert_eq!(h.dev.muxer().connection_count(), 0);
    h.wait_closed(&mut host);
    let _again = h.host_connect(b"CONNECT 1\n");
    h.wait("a new connection", |h| {
        (h.dev.muxer().connection_count() == 1).then_some(())
    });
}

#[test]
fn hostile_chains_are_answered_or_dropped() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(16);
    let a = h.alloc(0x2000);

    // Header descriptor too short, write-only, or outside memory: nothing to answer.
    m.write_slice(&guest(uapi::OP_REQUEST, 1, 2).to_bytes(), GuestAddress(a))
        .unwrap();
    h.send_raw(&[(a, 10, 0)]);
    h.send_raw(&[(a, 44, F_WRITE)]);
    h.send_raw(&[(0xffff_0000_0000, 44, 0)]);
    h.send_raw(&[(0xff_fff0, 44, 0)]);
    h.assert_no_rx();

    // Payload length beyond its descriptor, or payload outside memory: reset.
    let hdr = Header {
        len: 5000,
        ..guest(uapi::OP_RW, 10, 20)
    };
    m.write_slice(&hdr.to_bytes(), GuestAddress(a)).unwrap();
    h.send_raw(&[(a, 44, 0), (a + 0x100, 16, 0)]);
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.src_port, p.dst_port), (uapi::OP_RST, 20, 10));
    let hdr = Header {
        len: 16,
        ..guest(uapi::OP_RW, 11, 20)
    };
    m.write_slice(&hdr.to_bytes(), GuestAddress(a)).unwrap();
    h.send_raw(&[(a, 44, 0), (0xffff_0000_0000, 16, 0)]);
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.dst_port), (uapi::OP_RST, 11));

    // Unknown operation, unknown CID, wrong type, packets for no connection: reset.
    h.send(guest(99, 12, 20), &[]);
    assert_eq!(h.wait_rx().0.dst_port, 12);
    h.send(
        Header {
            dst_cid: 7,
            ..guest(uapi::OP_REQUEST, 13, 20)
        },
        &[],
    );
    let (p, _) = h.wait_rx();
    assert_eq!(
        (p.op, p.src_cid, p.dst_cid, p.dst_port),
        (uapi::OP_RST, 7, GUEST_CID, 13)
    );
    h.send(
        Header {
            type_: 2,
            ..guest(uapi::OP_REQUEST, 14, 20)
        },
        &[],
    );
    assert_eq!(h.wait_rx().0.dst_port, 14);
    h.send(guest(uapi::OP_RW, 15, 20), b"data");
    assert_eq!(h.wait_rx().0.dst_port, 15);
    // ...but a reset is never answered.
    h.send(guest(uapi::OP_RST, 16, 20), &[]);
    h.assert_no_rx();
    assert_eq!(h.tx.used_total(), 11);
}

#[test]
fn bad_rx_buffers_are_returned_unused() {
    let m = mem();
    let mut h = H::activated(&m);
    let b = h.alloc(0x1000);
    h.rx.push(&[(b, 44, 0)]); // read-only
    h.rx.push(&[(b, 10, F_WRITE)]); // too short for a header
    h.rx.push(&[(0xffff_0000_0000, 4096, F_WRITE)]); // outside memory
    h.rx.push(&[(b, 44, F_WRITE), (b + 64, 0x10_0000, F_WRITE)]); // data larger than allowed
    h.add_rx(1);
    h.send(guest(uapi::OP_RW, 17, 20), b"x");
    // The reset skipped the four bad buffers and landed in the good one.
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.dst_port), (uapi::OP_RST, 17));
    assert_eq!(h.rx.used_total(), 5);
}

#[test]
fn a_lying_payload_length_resets_a_live_connection() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    let (mut host, local) = h.establish_from_host(1234, 4096);
    let a = h.alloc(0x1000);
    let hdr = Header {
        len: 100,
        ..guest(uapi::OP_RW, 1234, local)
    };
    m.write_slice(&hdr.to_bytes(), GuestAddress(a)).unwrap();
    h.send_raw(&[(a, 44, 0), (a + 0x100, 50, 0)]);
    let (p, _) = h.wait_rx();
    assert_eq!((p.op, p.src_port), (uapi::OP_RST, local));
    h.wait_closed(&mut host);
}

#[test]
fn the_guest_cannot_overrun_our_buffer() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(8);
    // The host never reads.
    let (host, local) = h.establish_from_host(1234, 4096);
    let chunk = vec![9u8; MAX_PKT_DATA as usize];
    // Far more than the 256 KiB we advertised (plus what the socket buffer takes).
    let mut reset = false;
    for _ in 0..64 {
        h.send(guest(uapi::OP_RW, 1234, local), &chunk);
        h.collect_rx();
        // Credit updates come while the host's socket buffer still takes data.
        while let Some((p, _)) = h.rx_log.pop_front() {
            assert!(
                matches!(p.op, uapi::OP_CREDIT_UPDATE | uapi::OP_RST),
                "op {}",
                p.op
            );
            reset |= p.op == uapi::OP_RST;
        }
        if reset {
            break;
        }
    }
    assert!(reset, "a guest ignoring our credit was not reset");
    drop(host);
}

#[test]
fn tx_waits_while_resets_cannot_be_delivered() {
    let m = mem();
    let mut h = H::activated(&m);
    let a = h.alloc(0x1000);
    m.write_slice(
        &guest(uapi::OP_CREDIT_UPDATE, 1, 2).to_bytes(),
        GuestAddress(a),
    )
    .unwrap();
    for _ in 0..QUEUE_SIZE {
        h.tx.push(&[(a, 44, 0)]);
    }
    h.dev.handle_queue_event(TXQ);
    assert_eq!(h.tx.used_total(), QUEUE_SIZE);
    h.tx.used();
    for _ in 0..44 {
        h.tx.push(&[(a, 44, 0)]);
    }
    h.dev.handle_queue_event(TXQ);
    // 256 resets wait for rx buffers: tx stops.
    assert_eq!(h.tx.used_total(), QUEUE_SIZE);
    h.add_rx(100);
    // Room was made: tx resumed.
    assert_eq!(h.tx.used_total(), QUEUE_SIZE.wrapping_add(44));
    h.collect_rx();
    assert_eq!(h.rx_log.len(), 100);
    assert!(h.rx_log.iter().all(|(p, _)| p.op == uapi::OP_RST));
}

#[test]
fn many_host_connections_are_served_round_robin() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(64);
    let mut hosts = Vec::new();
    for port in 0..8 {
        hosts.push(h.host_connect(format!("CONNECT {port}\n").as_bytes()));
    }
    let mut locals = HashMap::new();
    while locals.len() < 8 {
        let (p, _) = h.wait_rx();
        assert_eq!(p.op, uapi::OP_REQUEST);
        locals.insert(p.dst_port, p.src_port);
    }
    let ports: std::collections::HashSet<u32> = locals.values().copied().collect();
    assert_eq!(ports.len(), 8, "local ports must be distinct");
    for (port, local) in &locals {
        h.send(guest(uapi::OP_RESPONSE, *port, *local), &[]);
    }
    for (i, s) in hosts.iter_mut().enumerate() {
        let mut line = String::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            s.read_exact(&mut b).unwrap();
            line.push(b[0] as char);
        }
        assert!(line.starts_with("OK "), "host {i}: {line:?}");
    }
}

#[test]
fn the_event_manager_drives_the_device() {
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    let uds = h.uds.clone();
    // Move the device into an event manager; the mock driver keeps the guest memory.
    let dir = TempDir::new_with_prefix("/tmp/mvm-vsock-").unwrap();
    let placeholder = Vsock::new(GUEST_CID, &dir.as_path().join("p.sock")).unwrap();
    let dev = Arc::new(Mutex::new(std::mem::replace(&mut h.dev, placeholder)));
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(dev.clone() as Arc<Mutex<dyn MutEventSubscriber + Send>>);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 42\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.rx.used_total() == 0 {
        assert!(
            Instant::now() < deadline,
            "no REQUEST through the event loop"
        );
        em.run_with_timeout(50).unwrap();
    }
    // Swap back so the harness can read the rx buffer it posted.
    std::mem::swap(&mut h.dev, &mut *dev.lock().unwrap());
    h.collect_rx();
    let (p, _) = h.rx_log.pop_front().unwrap();
    assert_eq!((p.op, p.dst_port), (uapi::OP_REQUEST, 42));
}

#[test]
fn bulk_transfers_follow_credit_both_ways() {
    const TOTAL: usize = 512 * 1024;
    const GUEST_BUF: u32 = 64 * 1024;
    let m = mem();
    let mut h = H::activated(&m);
    h.add_rx(4);
    let (host, local) = h.establish_from_host(1234, GUEST_BUF);
    let pattern = |i: usize| (i % 251) as u8;

    // Host → guest: the guest acknowledges what it consumed, as Linux does.
    let mut writer = host.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
        writer.write_all(&data).unwrap();
    });
    let mut got = Vec::with_capacity(TOTAL);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "host → guest stalled at {}",
            got.len()
        );
        h.pump();
        while let Some((p, d)) = h.rx_log.pop_front() {
            match p.op {
                uapi::OP_RW => {
                    got.extend_from_slice(&d);
                    // Never more in flight than the guest's buffer.
                    assert!(d.len() <= GUEST_BUF as usize);
                }
                uapi::OP_CREDIT_REQUEST | uapi::OP_CREDIT_UPDATE => {}
                op => panic!("unexpected op {op}"),
            }
            h.send(
                Header {
                    buf_alloc: GUEST_BUF,
                    fwd_cnt: got.len() as u32,
                    ..guest(uapi::OP_CREDIT_UPDATE, 1234, local)
                },
                &[],
            );
            h.add_rx(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    w.join().unwrap();
    assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)));

    // Guest → host: the guest sends within the credit we advertise.
    let mut reader = host.try_clone().unwrap();
    let r = std::thread::spawn(move || {
        let mut v = vec![0u8; TOTAL];
        reader.read_exact(&mut v).unwrap();
        v
    });
    let mut sent = 0usize;
    let (mut peer_alloc, mut peer_fwd) = (CONN_BUF_ALLOC, 0u32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < TOTAL {
        assert!(Instant::now() < deadline, "guest → host stalled at {sent}");
        let credit = peer_alloc as usize - (sent - peer_fwd as usize);
        let n = credit.min(MAX_PKT_DATA as usize).min(TOTAL - sent);
        if n > 0 {
            let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
            h.send(
                Header {
                    fwd_cnt: got.len() as u32,
                    ..guest(uapi::OP_RW, 1234, local)
                },
                &chunk,
            );
            sent += n;
        } else {
            h.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        h.collect_rx();
        while let Some((p, _)) = h.rx_log.pop_front() {
            assert_eq!(p.op, uapi::OP_CREDIT_UPDATE);
            peer_alloc = p.buf_alloc;
            peer_fwd = p.fwd_cnt;
            h.add_rx(1);
        }
    }
    // What the host socket did not take yet is written as it drains.
    while !r.is_finished() {
        assert!(
            Instant::now() < deadline,
            "guest → host data stuck in the device"
        );
        h.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    let v = r.join().unwrap();
    assert!(v.iter().enumerate().all(|(i, &b)| b == pattern(i)));
}

#[test]
fn the_driver_gets_only_offered_features() {
    let m = mem();
    let mut h = H::new(&m);
    h.dev.set_acked_features(u64::MAX);
    assert_eq!(h.dev.acked_features(), VIRTIO_F_VERSION_1);
    h.dev.reset();
    assert_eq!(h.dev.acked_features(), 0);
}

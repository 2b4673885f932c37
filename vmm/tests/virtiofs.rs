//! The virtio-fs device against a real virtiofsd: the vhost-user handshake, SET_MEM_TABLE
//! with memfd-backed guest memory and the vring setup of both queues, driven through the
//! virtio-mmio registers as a guest driver would; then a FUSE_INIT request placed in the
//! request queue by hand, answered by virtiofsd through shared memory and signalled back
//! through the monitor's event loop. And the device's behaviour when virtiofsd is killed.
//!
//! Needs `virtiofsd` in ~/.cargo/bin or on PATH (`cargo install virtiofsd --locked`); the
//! tests fail, never skip, without it.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use mvm_vmm::devices::bus::BusDevice;
use mvm_vmm::devices::virtio::fs::Fs;
use mvm_vmm::devices::virtio::mmio::{MmioTransport, status};
use mvm_vmm::devices::virtio::{
    IrqTrigger, TYPE_FS, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
    VirtioDevice,
};
use virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const QUEUE_SIZE: u16 = 16;
/// Guest-physical layout of the hand-made driver: rings of queue q at 0x10000 * (q + 1).
fn ring_base(q: u64) -> u64 {
    0x10000 * (q + 1)
}
const REQUEST_BUF: u64 = 0x40000;
const REPLY_BUF: u64 = 0x41000;
const REPLY_LEN: u32 = 4096;

const FUSE_INIT: u32 = 26;
const FUSE_IN_HEADER_LEN: u32 = 40;
const FUSE_INIT_IN_LEN: u32 = 16;
const UNIQUE: u64 = 0x1234;

fn virtiofsd() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/virtiofsd"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("virtiofsd")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "virtiofsd not found in ~/.cargo/bin or on PATH: these tests need it \
             (cargo install virtiofsd --locked; needs libseccomp-dev and libcap-ng-dev)"
            )
        })
}

/// A virtiofsd sharing a fresh directory; killed and cleaned up on drop, also on failure.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mvm-vfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let shared = dir.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("hello.txt"), b"hello\n").unwrap();
        let socket = dir.join("vfs.sock");
        let log = std::fs::File::create(dir.join("virtiofsd.log")).unwrap();
        let child = Command::new(virtiofsd())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&shared)
            .args(["--sandbox", "none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start virtiofsd");
        let daemon = Daemon { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::metadata(&daemon.socket).is_ok_and(|m| m.file_type().is_socket()) {
            assert!(
                Instant::now() < deadline,
                "virtiofsd did not create its socket in 10 s: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("virtiofsd.log")).unwrap_or_default()
    }

    /// Kills virtiofsd (the process this test started, by its PID) and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Loop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A guest's view of one virtio-fs device: its register page, its memory, its event loop
/// and the irqfd the interrupt would be injected from.
struct Guest {
    mem: GuestMemoryMmap,
    transport: MmioTransport,
    irq_evt: EventFd,
    event_loop: Loop,
}

impl Guest {
    fn new(daemon: &Daemon, tag: &str) -> Self {
        let mem = mvm_vmm::vm::create_shared_guest_memory(16).unwrap();
        let fs = Fs::new(&daemon.socket, tag, &mem)
            .unwrap_or_else(|e| panic!("{e}; virtiofsd says: {}", daemon.log()));
        let fs = Arc::new(Mutex::new(fs));
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = Arc::new(IrqTrigger::new(irq_evt.try_clone().unwrap()));
        let transport =
            MmioTransport::new(fs.clone() as Arc<Mutex<dyn VirtioDevice>>, mem.clone(), irq);
        let mut event_loop = Loop::new().unwrap();
        event_loop.add_subscriber(fs as Arc<Mutex<dyn MutEventSubscriber + Send>>);
        Guest {
            mem,
            transport,
            irq_evt,
            event_loop,
        }
    }

    fn r(&mut self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        self.transport.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.transport.write(off, &v.to_le_bytes());
    }

    /// The driver's initialisation sequence up to DRIVER_OK, with both queues set up.
    fn initialise(&mut self) {
        self.w(0x70, status::ACKNOWLEDGE);
        self.w(0x70, status::ACKNOWLEDGE | status::DRIVER);
        self.w(0x14, 1);
        let high = self.r(0x10);
        assert_eq!(high & 1, 1, "VERSION_1 offered");
        self.w(0x24, 1);
        self.w(0x20, (VIRTIO_F_VERSION_1 >> 32) as u32);
        self.w(0x24, 0);
        self.w(0x20, 0);
        self.w(
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(self.r(0x70) & status::FEATURES_OK, 0);
        for q in 0..2u32 {
            self.w(0x30, q);
            assert_eq!(self.r(0x34), 1024, "queue {q} max size");
            self.w(0x38, u32::from(QUEUE_SIZE));
            let base = ring_base(u64::from(q));
            for (reg, addr) in [(0x80, base), (0x90, base + 0x1000), (0xa0, base + 0x2000)] {
                self.w(reg, addr as u32);
                self.w(reg + 4, (addr >> 32) as u32);
            }
            self.w(0x44, 1);
        }
        self.w(0x70, 0xf);
    }

    /// Runs the event loop until `done` or 10 s have passed.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.event_loop.run_with_timeout(50).unwrap();
        }
    }
}

fn read_u16(mem: &GuestMemoryMmap, addr: u64) -> u16 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}
fn read_u32(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

/// Puts a FUSE_INIT (protocol 7.31) into the request queue: one descriptor for the request,
/// one writable descriptor for the reply.
fn queue_fuse_init(mem: &GuestMemoryMmap) {
    let len = FUSE_IN_HEADER_LEN + FUSE_INIT_IN_LEN;
    let mut req = Vec::new();
    req.extend(len.to_le_bytes()); // fuse_in_header.len
    req.extend(FUSE_INIT.to_le_bytes()); // opcode
    req.extend(UNIQUE.to_le_bytes()); // unique
    req.extend(0u64.to_le_bytes()); // nodeid
    req.extend(0u32.to_le_bytes()); // uid
    req.extend(0u32.to_le_bytes()); // gid
    req.extend(0u32.to_le_bytes()); // pid
    req.extend(0u16.to_le_bytes()); // total_extlen
    req.extend(0u16.to_le_bytes()); // padding
    req.extend(7u32.to_le_bytes()); // fuse_init_in.major
    req.extend(31u32.to_le_bytes()); // minor
    req.extend(0x2_0000u32.to_le_bytes()); // max_readahead
    req.extend(0u32.to_le_bytes()); // flags
    assert_eq!(req.len() as u32, len);
    mem.write_slice(&req, GuestAddress(REQUEST_BUF)).unwrap();

    let desc = ring_base(1);
    let mut table = Vec::new();
    // VRING_DESC_F_NEXT = 1, VRING_DESC_F_WRITE = 2.
    for (addr, len, flags, next) in [(REQUEST_BUF, len, 1u16, 1u16), (REPLY_BUF, REPLY_LEN, 2, 0)] {
        table.extend(addr.to_le_bytes());
        table.extend(len.to_le_bytes());
        table.extend(flags.to_le_bytes());
        table.extend(next.to_le_bytes());
    }
    mem.write_slice(&table, GuestAddress(desc)).unwrap();
    let avail = desc + 0x1000;
    mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap(); // ring[0] = head 0
    mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap(); // idx = 1
}

#[test]
fn the_driver_gets_only_offered_features() {
    let daemon = Daemon::start();
    let mem = mvm_vmm::vm::create_shared_guest_memory(16).unwrap();
    let mut fs = Fs::new(&daemon.socket, "vol0", &mem)
        .unwrap_or_else(|e| panic!("{e}; virtiofsd says: {}", daemon.log()));
    let offered = fs.avail_features();
    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    // Only the ring features passed through from the backend, never e.g. the packed ring.
    assert_eq!(offered & (1 << VIRTIO_F_RING_PACKED), 0);
    fs.set_acked_features(u64::MAX);
    assert_eq!(fs.acked_features(), offered);
    fs.reset();
    assert_eq!(fs.acked_features(), 0);
}

#[test]
fn fuse_init_round_trip_through_virtiofsd() {
    let daemon = Daemon::start();
    let mut g = Guest::new(&daemon, "vol0");
    assert_eq!(g.r(0x08), TYPE_FS);
    let mut cfg = [0u8; 40];
    for (i, chunk) in cfg.chunks_mut(4).enumerate() {
        g.transport.read(0x100 + 4 * i as u64, chunk);
    }
    assert_eq!(&cfg[..5], b"vol0\0");
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);

    g.initialise();
    assert_eq!(
        g.r(0x70),
        0xf,
        "DRIVER_OK without DEVICE_NEEDS_RESET; virtiofsd says: {}",
        daemon.log()
    );

    queue_fuse_init(&g.mem);
    g.w(0x50, 1); // QueueNotify(request queue), forwarded to the kick eventfd
    g.run_until("the used-buffer interrupt", |g| g.irq_evt.read().is_ok());
    assert_ne!(g.r(0x60) & VIRTIO_MMIO_INT_VRING, 0);
    g.w(0x64, VIRTIO_MMIO_INT_VRING);

    let used = ring_base(1) + 0x2000;
    assert_eq!(read_u16(&g.mem, used + 2), 1, "one used element");
    assert_eq!(read_u32(&g.mem, used + 4), 0, "head of the FUSE_INIT chain");
    let used_len = read_u32(&g.mem, used + 8);
    let reply_len = read_u32(&g.mem, REPLY_BUF);
    let error: i32 = g.mem.read_obj(GuestAddress(REPLY_BUF + 4)).unwrap();
    let unique: u64 = g.mem.read_obj(GuestAddress(REPLY_BUF + 8)).unwrap();
    assert_eq!(
        error,
        0,
        "FUSE_INIT error; virtiofsd says: {}",
        daemon.log()
    );
    assert_eq!(unique, UNIQUE);
    assert_eq!(used_len, reply_len, "used length is the reply's length");
    assert!(reply_len >= 16 + 24, "a fuse_init_out follows the header");
    assert_eq!(read_u32(&g.mem, REPLY_BUF + 16), 7, "FUSE major version");
    assert!(read_u32(&g.mem, REPLY_BUF + 20) >= 31, "FUSE minor version");

    // A driver reset stops both rings (GET_VRING_BASE) and the device can start again.
    g.w(0x70, 0);
    assert_eq!(g.r(0x70), 0);
    g.initialise();
    assert_eq!(
        g.r(0x70),
        0xf,
        "restarted; virtiofsd says: {}",
        daemon.log()
    );
}

#[test]
fn killed_virtiofsd_fails_the_device_not_the_monitor() {
    let mut daemon = Daemon::start();
    let mut g = Guest::new(&daemon, "vol1");
    g.initialise();
    assert_eq!(g.r(0x70), 0xf);

    daemon.kill();
    g.run_until("DEVICE_NEEDS_RESET", |g| {
        g.r(0x70) & status::DEVICE_NEEDS_RESET != 0
    });
    assert_ne!(
        g.r(0x60) & VIRTIO_MMIO_INT_CONFIG,
        0,
        "config interrupt raised"
    );
    assert!(g.irq_evt.read().is_ok());
    // The closed socket was unwatched: the loop does not spin on it.
    assert_eq!(g.event_loop.run_with_timeout(50).unwrap(), 0);

    // A notify on the dead device and a reset are harmless; starting again is refused with
    // DEVICE_NEEDS_RESET rather than anything worse.
    g.w(0x50, 1);
    g.w(0x70, 0);
    assert_eq!(g.r(0x70), 0, "a reset reads back as 0");
    g.initialise();
    assert_ne!(g.r(0x70) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(g.event_loop.run_with_timeout(50).unwrap(), 0);
}

//! virtio-blk driver: one synchronous request at a time on fixed descriptors 0..=2.

use crate::report::Msg;
use crate::time::Deadline;
use crate::virtio::mmio::Mmio;
use crate::virtio::queue::{DESC_F_NEXT, DESC_F_WRITE, Queue};

pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const SECTOR: usize = 512;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

/// How long one request may take before the device counts as hung.
const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Data direction of a request's buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The device writes the buffer (IN, GET_ID).
    FromDevice,
    /// The device reads the buffer (OUT).
    ToDevice,
}

pub struct Blk {
    pub mmio: Mmio,
    queue: Queue,
    pub capacity: u64,
    pub features: u64,
    /// 16-byte request header followed (at +16) by the status byte.
    req: *mut u8,
    /// Set when a request timed out: its descriptors still belong to the device.
    hung: bool,
}

impl Blk {
    pub fn init(mmio: Mmio) -> Result<Blk, Msg> {
        let features = mmio.negotiate(F_RO | F_FLUSH)?;
        let queue = mmio.queue(0, 16)?;
        if queue.size() < 4 {
            fail!("queue size {} too small", queue.size());
        }
        mmio.driver_ok()?;
        let capacity = mmio.config_u64(0);
        let req = match crate::arena::alloc(32, 16, true) {
            Some(p) => p,
            None => fail!("out of memory"),
        };
        Ok(Blk {
            mmio,
            queue,
            capacity,
            features,
            req,
            hung: false,
        })
    }

    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
    }

    /// Sends one request and waits for it; returns the status byte. Does not acknowledge
    /// the interrupt (the interrupt check needs to see it pending).
    ///
    /// `data` is (address, length, direction) of a buffer the caller owns and does not
    /// touch until this returns.
    pub fn request_noack(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(*mut u8, usize, Dir)>,
    ) -> Result<u8, Msg> {
        if self.hung {
            fail!("device stopped answering earlier");
        }
        let hdr = self.req;
        // SAFETY: req is our 32-byte allocation; the device does not own it between
        // requests (the previous one completed, or `hung` is set and we bailed above).
        let status = unsafe {
            (hdr as *mut u32).write_volatile(kind);
            (hdr.add(4) as *mut u32).write_volatile(0);
            (hdr.add(8) as *mut u64).write_volatile(sector);
            let status = hdr.add(16);
            // Not a valid status: tells "device never wrote it" apart from any answer.
            status.write_volatile(0xff);
            status
        };
        self.queue.set_desc(0, hdr as u64, 16, DESC_F_NEXT, 1);
        match data {
            Some((addr, len, dir)) => {
                let flags = if dir == Dir::FromDevice {
                    DESC_F_WRITE
                } else {
                    0
                };
                self.queue
                    .set_desc(1, addr as u64, len as u32, flags | DESC_F_NEXT, 2);
                self.queue.set_desc(2, status as u64, 1, DESC_F_WRITE, 0);
            }
            None => self.queue.set_desc(1, status as u64, 1, DESC_F_WRITE, 0),
        }
        self.queue.submit(0);
        let mut deadline = Deadline::after_ms(REQUEST_TIMEOUT_MS);
        loop {
            if let Some((id, _len)) = self.queue.pop_used() {
                if id != 0 {
                    self.hung = true;
                    fail!("used ring returned id {} (submitted 0)", id);
                }
                break;
            }
            if deadline.expired() {
                self.hung = true;
                fail!(
                    "timeout waiting for request type {} sector {}",
                    kind,
                    sector
                );
            }
            core::hint::spin_loop();
        }
        // SAFETY: the device gave the chain back, so the status byte is ours again.
        Ok(unsafe { status.read_volatile() })
    }

    /// `request_noack` followed by acknowledging the interrupt, as a driver would.
    pub fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(*mut u8, usize, Dir)>,
    ) -> Result<u8, Msg> {
        let s = self.request_noack(kind, sector, data);
        self.mmio.ack_interrupts();
        s
    }

    /// Reads `len` bytes (a multiple of 512) at `sector` into `buf`; Err unless status OK.
    pub fn read(&mut self, sector: u64, buf: *mut u8, len: usize) -> Result<(), Msg> {
        match self.request(T_IN, sector, Some((buf, len, Dir::FromDevice)))? {
            S_OK => Ok(()),
            s => fail!("read of {} bytes at sector {}: status {}", len, sector, s),
        }
    }

    /// Writes `len` bytes (a multiple of 512) at `sector` from `buf`; Err unless status OK.
    pub fn write(&mut self, sector: u64, buf: *mut u8, len: usize) -> Result<(), Msg> {
        match self.request(T_OUT, sector, Some((buf, len, Dir::ToDevice)))? {
            S_OK => Ok(()),
            s => fail!("write of {} bytes at sector {}: status {}", len, sector, s),
        }
    }
}

//! Parsing and executing one virtio-blk request from a descriptor chain.
//!
//! The chain comes from the guest and is trusted for nothing: every descriptor's direction and
//! length is checked, the data range is checked against the disk, and every guest address is
//! resolved through vm-memory, which refuses anything outside guest RAM.

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap,
    VolatileSlice,
};

use super::{BLOCK_ID_BYTES, SECTOR_SIZE, req, status};

/// Upper bound on the data of one request; larger chains are refused rather than trusted.
const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into guest buffers.
    In,
    /// Write guest buffers to sectors.
    Out,
    /// Flush the file.
    Flush,
    /// Return the disk's serial.
    GetId,
    /// Anything else (answered with UNSUPP).
    Unsupported(u32),
}

/// A request whose header could be read but which cannot be executed: it is answered with
/// IOERR or UNSUPP in its status byte.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain has no device-writable status descriptor at its end: nothing can be answered.
    #[error("descriptor chain has no status descriptor")]
    NoStatus,
    /// The header descriptor is missing, write-only or too short.
    #[error("bad request header")]
    BadHeader,
    /// A data descriptor points the wrong way for the request type.
    #[error("data descriptor has the wrong direction")]
    WrongDirection,
    /// Data length is not a whole number of sectors or is too large.
    #[error("bad data length {0}")]
    BadLength(u64),
    /// The request reaches past the end of the disk.
    #[error("sector {sector} + {len} bytes is beyond the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Bytes of data.
        len: u64,
    },
    /// A guest buffer is not inside guest memory.
    #[error("buffer outside guest memory")]
    BadAddress,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    _reserved: u32,
    sector: u64,
}
// SAFETY: plain old data of three integers with no padding; any byte pattern is valid.
unsafe impl ByteValued for RequestHeader {}

/// A validated request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Its type.
    pub request_type: RequestType,
    /// First sector (IN/OUT).
    pub sector: u64,
    /// Data buffers (guest address, length), in order.
    pub data: Vec<(GuestAddress, u32)>,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
}

/// The outcome of parsing: either a request, or an error that can still be answered.
pub struct Parsed {
    /// Where to write the status, if the chain has a usable status descriptor.
    pub status_addr: Option<GuestAddress>,
    /// The request or why it is refused.
    pub request: Result<Request, RequestError>,
}

impl Request {
    /// Parses and validates a chain against a disk of `capacity` sectors.
    pub fn parse<M>(chain: DescriptorChain<M>, capacity: u64) -> Parsed
    where
        M: std::ops::Deref + Clone,
        M::Target: GuestMemory,
    {
        let mem = chain.memory();
        let descs: Vec<SplitDescriptor> = chain.clone().collect();
        // The status descriptor is the last one and must be writable by the device.
        let status_addr = match descs.last() {
            Some(d) if descs.len() >= 2 && d.is_write_only() && d.len() >= 1 => Some(d.addr()),
            _ => None,
        };
        let Some(status_addr) = status_addr else {
            return Parsed {
                status_addr: None,
                request: Err(RequestError::NoStatus),
            };
        };
        let request = (|| {
            let head = descs[0];
            if head.is_write_only() || (head.len() as usize) < std::mem::size_of::<RequestHeader>()
            {
                return Err(RequestError::BadHeader);
            }
            let header: RequestHeader = mem
                .read_obj(head.addr())
                .map_err(|_| RequestError::BadHeader)?;
            let request_type = match u32::from_le(header.request_type) {
                req::IN => RequestType::In,
                req::OUT => RequestType::Out,
                req::FLUSH => RequestType::Flush,
                req::GET_ID => RequestType::GetId,
                other => RequestType::Unsupported(other),
            };
            let sector = u64::from_le(header.sector);
            let data_descs = &descs[1..descs.len() - 1];
            let device_writes = matches!(request_type, RequestType::In | RequestType::GetId);
            let mut total: u64 = 0;
            let mut data = Vec::with_capacity(data_descs.len());
            for d in data_descs {
                if matches!(
                    request_type,
                    RequestType::In | RequestType::Out | RequestType::GetId
                ) && d.is_write_only() != device_writes
                {
                    return Err(RequestError::WrongDirection);
                }
                if !mem.check_range(
                    d.addr(),
                    d.len() as usize,
                    vm_memory::Permissions::ReadWrite,
                ) {
                    return Err(RequestError::BadAddress);
                }
                total += u64::from(d.len());
                if total > MAX_REQUEST_BYTES {
                    return Err(RequestError::BadLength(total));
                }
                data.push((d.addr(), d.len()));
            }
            match request_type {
                RequestType::In | RequestType::Out => {
                    if total == 0 || !total.is_multiple_of(SECTOR_SIZE) {
                        return Err(RequestError::BadLength(total));
                    }
                    let end = sector.checked_add(total / SECTOR_SIZE);
                    if end.is_none_or(|end| end > capacity) {
                        return Err(RequestError::OutOfRange { sector, len: total });
                    }
                }
                RequestType::GetId => {
                    if total < BLOCK_ID_BYTES as u64 {
                        return Err(RequestError::BadLength(total));
                    }
                }
                RequestType::Flush | RequestType::Unsupported(_) => {}
            }
            Ok(Request {
                request_type,
                sector,
                data,
                status_addr,
            })
        })();
        Parsed {
            status_addr: Some(status_addr),
            request,
        }
    }

    /// Executes the request against `disk`; returns (status byte, bytes written to the guest's
    /// data buffers).
    pub fn execute(
        &self,
        mem: &GuestMemoryMmap,
        disk: &File,
        read_only: bool,
        id: &[u8; BLOCK_ID_BYTES],
    ) -> (u8, u32) {
        match self.request_type {
            RequestType::In => match self.transfer(mem, disk, false) {
                Ok(n) => (status::OK, n),
                Err(e) => {
                    tracing::warn!("virtio-blk read at sector {} failed: {e}", self.sector);
                    (status::IOERR, 0)
                }
            },
            RequestType::Out if read_only => (status::IOERR, 0),
            RequestType::Out => match self.transfer(mem, disk, true) {
                Ok(_) => (status::OK, 0),
                Err(e) => {
                    tracing::warn!("virtio-blk write at sector {} failed: {e}", self.sector);
                    (status::IOERR, 0)
                }
            },
            RequestType::Flush if read_only => (status::OK, 0),
            RequestType::Flush => match disk.sync_data() {
                Ok(()) => (status::OK, 0),
                Err(_) => (status::IOERR, 0),
            },
            RequestType::GetId => {
                let Some(&(addr, _)) = self.data.first() else {
                    return (status::IOERR, 0);
                };
                match mem.write_slice(id, addr) {
                    Ok(()) => (status::OK, BLOCK_ID_BYTES as u32),
                    Err(_) => (status::IOERR, 0),
                }
            }
            RequestType::Unsupported(_) => (status::UNSUPP, 0),
        }
    }

    /// Moves data between the file and guest memory without an intermediate copy.
    fn transfer(&self, mem: &GuestMemoryMmap, disk: &File, write: bool) -> std::io::Result<u32> {
        let mut offset = self.sector * SECTOR_SIZE;
        let mut done: u32 = 0;
        for &(addr, len) in &self.data {
            for slice in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
                let slice = slice.map_err(|e| std::io::Error::other(e.to_string()))?;
                let n = if write {
                    write_all_at(disk, &slice, offset)?
                } else {
                    read_exact_at(disk, &slice, offset)?
                };
                offset += n as u64;
                done += n as u32;
            }
        }
        Ok(done)
    }
}

fn read_exact_at<B: vm_memory::bitmap::BitmapSlice>(
    disk: &File,
    slice: &VolatileSlice<B>,
    offset: u64,
) -> std::io::Result<usize> {
    let guard = slice.ptr_guard_mut();
    // SAFETY: the slice was produced by vm-memory from a guest-memory mapping that stays
    // mapped for the VM's lifetime and covers exactly `slice.len()` bytes; the guest may change
    // the bytes concurrently, which is fine for a byte buffer the kernel writes into.
    let buf = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), slice.len()) };
    let mut filled = 0;
    while filled < buf.len() {
        match disk.read_at(&mut buf[filled..], offset + filled as u64) {
            // Past the end of a file whose size is not a multiple of 512: zeros, like a disk.
            Ok(0) => {
                buf[filled..].fill(0);
                filled = buf.len();
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    slice.bitmap().mark_dirty(0, slice.len());
    Ok(filled)
}

fn write_all_at<B: vm_memory::bitmap::BitmapSlice>(
    disk: &File,
    slice: &VolatileSlice<B>,
    offset: u64,
) -> std::io::Result<usize> {
    let guard = slice.ptr_guard();
    // SAFETY: as in `read_exact_at`; the kernel only reads these bytes.
    let buf = unsafe { std::slice::from_raw_parts(guard.as_ptr(), slice.len()) };
    disk.write_all_at(buf, offset)?;
    Ok(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    fn header(m: &GuestMemoryMmap, addr: u64, t: u32, sector: u64) {
        m.write_obj(
            RequestHeader {
                request_type: t.to_le(),
                _reserved: 0,
                sector: sector.to_le(),
            },
            GuestAddress(addr),
        )
        .unwrap();
    }

    fn parse(m: &GuestMemoryMmap, descs: &[RawDescriptor], capacity: u64) -> Parsed {
        let q = MockSplitQueue::new(m, 16);
        let chain = q.build_desc_chain(descs).unwrap();
        Request::parse(chain, capacity)
    }

    #[test]
    fn parses_a_read() {
        let m = mem();
        header(&m, 0x10_0000, req::IN, 2);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 1024, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        let r = p.request.unwrap();
        assert_eq!(r.request_type, RequestType::In);
        assert_eq!(r.sector, 2);
        assert_eq!(r.data, vec![(GuestAddress(0x20_0000), 1024)]);
    }

    #[test]
    fn refuses_out_of_range_and_overflowing_sectors() {
        let m = mem();
        header(&m, 0x10_0000, req::IN, 7);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 1024, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        assert!(matches!(p.request, Err(RequestError::OutOfRange { .. })));
        header(&m, 0x10_0000, req::IN, u64::MAX);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 512, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        assert!(matches!(p.request, Err(RequestError::OutOfRange { .. })));
    }

    #[test]
    fn refuses_wrong_direction_and_bad_lengths() {
        let m = mem();
        header(&m, 0x10_0000, req::IN, 0);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 512, 0),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        assert_eq!(p.request, Err(RequestError::WrongDirection));
        header(&m, 0x10_0000, req::OUT, 0);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 100, 0),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        assert_eq!(p.request, Err(RequestError::BadLength(100)));
    }

    #[test]
    fn refuses_buffers_outside_memory() {
        let m = mem();
        header(&m, 0x10_0000, req::IN, 0);
        let p = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0xff_ff00, 512, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        );
        assert_eq!(p.request, Err(RequestError::BadAddress));
        // Header outside memory.
        let p = parse(
            &m,
            &[desc(0x7fff_0000, 16, 0), desc(0x30_0000, 1, F_WRITE)],
            8,
        );
        assert_eq!(p.request, Err(RequestError::BadHeader));
    }

    #[test]
    fn chain_without_writable_status_cannot_be_answered() {
        let m = mem();
        header(&m, 0x10_0000, req::FLUSH, 0);
        let p = parse(&m, &[desc(0x10_0000, 16, 0), desc(0x30_0000, 1, 0)], 8);
        assert!(p.status_addr.is_none());
        let p = parse(&m, &[desc(0x10_0000, 16, F_WRITE)], 8);
        assert!(p.status_addr.is_none());
    }

    #[test]
    fn short_or_writable_header_is_refused() {
        let m = mem();
        let p = parse(&m, &[desc(0x10_0000, 8, 0), desc(0x30_0000, 1, F_WRITE)], 8);
        assert_eq!(p.request, Err(RequestError::BadHeader));
        let p = parse(
            &m,
            &[desc(0x10_0000, 16, F_WRITE), desc(0x30_0000, 1, F_WRITE)],
            8,
        );
        assert_eq!(p.request, Err(RequestError::BadHeader));
    }

    #[test]
    fn unknown_type_is_unsupported() {
        let m = mem();
        header(&m, 0x10_0000, 0x55, 0);
        let p = parse(
            &m,
            &[desc(0x10_0000, 16, 0), desc(0x30_0000, 1, F_WRITE)],
            8,
        );
        let r = p.request.unwrap();
        let file = tempfile();
        assert_eq!(r.execute(&m, &file, false, &[0; 20]), (status::UNSUPP, 0));
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "mvm-blk-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.set_len(8 * 512).unwrap();
        f
    }

    #[test]
    fn write_then_read_round_trips_and_read_only_refuses_writes() {
        let m = mem();
        let file = tempfile();
        m.write_slice(&[0xab; 1024], GuestAddress(0x20_0000))
            .unwrap();
        header(&m, 0x10_0000, req::OUT, 3);
        let w = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 1024, 0),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        )
        .request
        .unwrap();
        assert_eq!(w.execute(&m, &file, true, &[0; 20]).0, status::IOERR);
        let mut on_disk = [0u8; 1024];
        file.read_exact_at(&mut on_disk, 3 * 512).unwrap();
        assert_eq!(on_disk, [0; 1024]);
        assert_eq!(w.execute(&m, &file, false, &[0; 20]).0, status::OK);
        file.read_exact_at(&mut on_disk, 3 * 512).unwrap();
        assert_eq!(on_disk, [0xab; 1024]);

        header(&m, 0x10_0000, req::IN, 3);
        let r = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x40_0000, 512, F_WRITE),
                desc(0x40_1000, 512, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        )
        .request
        .unwrap();
        assert_eq!(r.execute(&m, &file, false, &[0; 20]), (status::OK, 1024));
        let mut back = [0u8; 512];
        m.read_slice(&mut back, GuestAddress(0x40_1000)).unwrap();
        assert_eq!(back, [0xab; 512]);
    }

    #[test]
    fn get_id_returns_the_serial() {
        let m = mem();
        header(&m, 0x10_0000, req::GET_ID, 0);
        let r = parse(
            &m,
            &[
                desc(0x10_0000, 16, 0),
                desc(0x20_0000, 20, F_WRITE),
                desc(0x30_0000, 1, F_WRITE),
            ],
            8,
        )
        .request
        .unwrap();
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(b"root");
        assert_eq!(r.execute(&m, &tempfile(), false, &id), (status::OK, 20));
        let mut back = [0u8; 4];
        m.read_slice(&mut back, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&back, b"root");
    }
}

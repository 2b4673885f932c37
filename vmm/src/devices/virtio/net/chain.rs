//! Validating one guest descriptor chain before any byte of it is used.
//!
//! virtio-queue's chain iterator already stops at loops (after `queue size` descriptors), at
//! next indices outside the table and at unreadable descriptors, but it stops silently. Here
//! a chain only counts when it ended on a descriptor without NEXT, every descriptor points the
//! expected way, has a non-zero length and lies inside guest memory, and the chain is within
//! the descriptor and byte bounds.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// Why a chain was refused.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The head index is outside the descriptor table, or its descriptor is unreadable.
    #[error("empty or unreadable descriptor chain")]
    Empty,
    /// The chain ends on a descriptor that still has NEXT: a loop, a next index outside the
    /// table, or an unreadable descriptor.
    #[error("descriptor chain is cut short (loop or bad next index)")]
    Truncated,
    /// More descriptors than [`super::MAX_CHAIN_DESCS`].
    #[error("descriptor chain longer than {0} descriptors")]
    TooManyDescriptors(usize),
    /// A descriptor the device must read is write-only, or the other way round.
    #[error("descriptor has the wrong direction")]
    WrongDirection,
    /// A descriptor of length zero.
    #[error("zero-length descriptor")]
    ZeroLength,
    /// A buffer not entirely inside guest memory.
    #[error("buffer outside guest memory")]
    BadAddress,
    /// More bytes than the device accepts in one chain.
    #[error("descriptor chain holds more than {0} bytes")]
    TooLarge(usize),
    /// Fewer bytes than the device needs in one chain.
    #[error("descriptor chain holds {0} bytes, too few")]
    TooSmall(usize),
}

/// Which way the device moves data through a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Transmit: the device reads, every descriptor must be device-readable.
    DeviceReads,
    /// Receive: the device writes, every descriptor must be device-writable.
    DeviceWrites,
}

/// A validated chain: its head and its buffers in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Head index, for the used ring.
    pub head: u16,
    /// (guest address, length) of each descriptor.
    pub segments: Vec<(GuestAddress, u32)>,
    /// Total bytes.
    pub len: usize,
}

/// Checks `chain` for `dir`, allowing between `min_len` and `max_len` bytes in total.
pub fn validate<M>(
    chain: DescriptorChain<M>,
    dir: Direction,
    min_len: usize,
    max_len: usize,
) -> Result<Buffers, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mem = chain.memory();
    let mut out = Buffers {
        head,
        segments: Vec::new(),
        len: 0,
    };
    let mut last_has_next = false;
    // Clone: the chain borrows memory through M, and iterating consumes it.
    for desc in chain.clone() {
        if out.segments.len() == super::MAX_CHAIN_DESCS {
            return Err(ChainError::TooManyDescriptors(super::MAX_CHAIN_DESCS));
        }
        let writable = desc.is_write_only();
        if writable != (dir == Direction::DeviceWrites) {
            return Err(ChainError::WrongDirection);
        }
        if desc.len() == 0 {
            return Err(ChainError::ZeroLength);
        }
        let access = match dir {
            Direction::DeviceReads => Permissions::Read,
            Direction::DeviceWrites => Permissions::ReadWrite,
        };
        if !GuestMemory::check_range(mem, desc.addr(), desc.len() as usize, access) {
            return Err(ChainError::BadAddress);
        }
        out.len = out.len.saturating_add(desc.len() as usize);
        if out.len > max_len {
            return Err(ChainError::TooLarge(max_len));
        }
        out.segments.push((desc.addr(), desc.len()));
        last_has_next = desc.has_next();
    }
    if out.segments.is_empty() {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Truncated);
    }
    if out.len < min_len {
        return Err(ChainError::TooSmall(out.len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestMemoryMmap;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Validates the chain whose descriptors are `descs` (flags and next as given, table
    /// index = position), head 0.
    fn check(
        m: &GuestMemoryMmap,
        descs: &[(u64, u32, u16, u16)],
        dir: Direction,
    ) -> Result<Buffers, ChainError> {
        let vq = MockSplitQueue::new(m, 16);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            vq.desc_table()
                .store(
                    i as u16,
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
                )
                .unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.pop_descriptor_chain(m).unwrap();
        validate(chain, dir, 12, 65562)
    }

    #[test]
    fn accepts_a_well_formed_chain() {
        let m = mem();
        let b = check(
            &m,
            &[(0x1000, 12, N, 1), (0x2000, 100, 0, 0)],
            Direction::DeviceReads,
        )
        .unwrap();
        assert_eq!(b.len, 112);
        assert_eq!(b.segments.len(), 2);
        let b = check(&m, &[(0x1000, 4096, W, 0)], Direction::DeviceWrites).unwrap();
        assert_eq!(b.len, 4096);
    }

    #[test]
    fn refuses_hostile_chains() {
        let m = mem();
        let r = Direction::DeviceReads;
        let w = Direction::DeviceWrites;
        assert_eq!(
            check(&m, &[(0x1000, 12, W, 0)], r),
            Err(ChainError::WrongDirection)
        );
        assert_eq!(
            check(&m, &[(0x1000, 12, 0, 0)], w),
            Err(ChainError::WrongDirection)
        );
        assert_eq!(
            check(&m, &[(0x1000, 12, N, 1), (0x2000, 0, 0, 0)], r),
            Err(ChainError::ZeroLength)
        );
        assert_eq!(
            check(&m, &[(0x10_0000 - 8, 12, 0, 0)], r),
            Err(ChainError::BadAddress)
        );
        assert_eq!(
            check(&m, &[(u64::MAX - 4, 12, 0, 0)], r),
            Err(ChainError::BadAddress)
        );
        // A loop: 0 -> 1 -> 0 -> ...; cut by the iterator after 16 descriptors.
        assert_eq!(
            check(&m, &[(0x1000, 12, N, 1), (0x2000, 12, N, 0)], r),
            Err(ChainError::Truncated)
        );
        // Next index outside the 16-entry table.
        assert_eq!(
            check(&m, &[(0x1000, 12, N, 99)], r),
            Err(ChainError::Truncated)
        );
        assert_eq!(
            check(&m, &[(0x1000, 8, 0, 0)], r),
            Err(ChainError::TooSmall(8))
        );
        assert_eq!(
            check(&m, &[(0x1000, 65_000, N, 1), (0x2_0000, 1000, 0, 0)], r),
            Err(ChainError::TooLarge(65562))
        );
    }

    #[test]
    fn refuses_chains_with_too_many_descriptors() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 128);
        for i in 0..100u16 {
            let flags = if i == 99 { 0 } else { N };
            vq.desc_table()
                .store(
                    i,
                    RawDescriptor::from(SplitDescriptor::new(
                        0x1_0000 + u64::from(i) * 16,
                        16,
                        flags,
                        i + 1,
                    )),
                )
                .unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.pop_descriptor_chain(&m).unwrap();
        assert_eq!(
            validate(chain, Direction::DeviceReads, 12, 65562),
            Err(ChainError::TooManyDescriptors(
                super::super::MAX_CHAIN_DESCS
            ))
        );
    }

    #[test]
    fn out_of_range_head_is_empty() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.avail().ring().ref_at(0).unwrap().store(200);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.pop_descriptor_chain(&m).unwrap();
        assert_eq!(
            validate(chain, Direction::DeviceWrites, 12, 65562),
            Err(ChainError::Empty)
        );
    }
}

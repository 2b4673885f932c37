//! An address bus: ranges of port-I/O or MMIO space mapped to devices.
//!
//! vm-device has no maintained release, so this is the small bus of our own that
//! DEPENDENCIES.md expects. The bus is built before the vCPUs start and is then only read, so
//! vCPU threads share it without a lock; each device carries its own mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the base of the range it was inserted at.
pub trait BusDevice: Send {
    /// Handles a guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else drives it (the event loop).
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

/// Inserting a range failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Range {
    len: u64,
    device: SharedBusDevice,
}

/// A map from address ranges to devices.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let before = self.ranges.range(..end).next_back();
        if let Some((b, r)) = before
            && b + r.len > base
        {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedBusDevice)> {
        let (base, range) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the range.
        if offset.checked_add(size as u64)? <= range.len {
            Some((offset, &range.device))
        } else {
            None
        }
    }

    /// Dispatches a read; returns false when nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a panic in one vCPU thread must not wedge
/// every other thread, and device state stays consistent at register granularity.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offsets() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 5);
        assert!(bus.write(0x3f8, &[7]));
        assert_eq!(dev.lock().unwrap().0, vec![(0, vec![7])]);
        assert!(!bus.read(0x400, &mut b));
        assert!(!bus.read(0x3f7, &mut b));
    }

    #[test]
    fn refuses_overlaps_and_bad_ranges() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x1000, 0x1000).unwrap();
        assert!(bus.insert(dev.clone(), 0x1fff, 2).is_err());
        assert!(bus.insert(dev.clone(), 0xfff, 2).is_err());
        assert!(bus.insert(dev.clone(), 0x0, 0).is_err());
        assert!(bus.insert(dev.clone(), u64::MAX, 2).is_err());
        bus.insert(dev, 0x2000, 0x10).unwrap();
    }

    #[test]
    fn access_straddling_the_end_is_unmapped() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = Bus::new();
        bus.insert(dev, 0x1000, 4).unwrap();
        let mut b = [0u8; 4];
        assert!(bus.read(0x1000, &mut b));
        assert!(!bus.read(0x1002, &mut b));
    }
}

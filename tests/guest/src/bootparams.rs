//! Reading the Linux "zero page" (struct boot_params) the VMM prepared.
//!
//! Fields are read at their documented offsets with unaligned volatile loads instead of
//! through a struct: the layout is packed and only a handful of fields matter.

/// Offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h).
const E820_ENTRIES: usize = 0x1e8;
const HDR_MAGIC: usize = 0x202;
const CMD_LINE_PTR: usize = 0x228;
const E820_TABLE: usize = 0x2d0;
const E820_MAX: usize = 128;
const E820_ENTRY_SIZE: usize = 20;

/// "HdrS", the setup header signature.
pub const HDRS: u32 = 0x5372_6448;
pub const E820_RAM: u32 = 1;
/// Longest command line we scan for its NUL.
pub const CMDLINE_MAX: usize = 4096;

#[derive(Clone, Copy)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The boot_params page at a physical (= virtual) address.
pub struct BootParams {
    base: usize,
}

impl BootParams {
    /// None for a null pointer or one outside the identity-mapped 4 GiB.
    pub fn new(addr: u64) -> Option<BootParams> {
        if addr == 0 || addr >= (1 << 32) - 4096 {
            return None;
        }
        Some(BootParams {
            base: addr as usize,
        })
    }

    fn read<T: Copy>(&self, off: usize) -> T {
        // SAFETY: base..base+4096 is guest RAM the VMM filled (identity mapped, checked in
        // new()); the VMM no longer writes it; offsets are within the 4 KiB page.
        unsafe { ((self.base + off) as *const T).read_unaligned() }
    }

    pub fn header_magic(&self) -> u32 {
        self.read(HDR_MAGIC)
    }

    pub fn e820_count(&self) -> usize {
        self.read::<u8>(E820_ENTRIES) as usize
    }

    /// Entry `i`, for i below min(e820_count, 128).
    pub fn e820(&self, i: usize) -> Option<E820Entry> {
        if i >= self.e820_count().min(E820_MAX) {
            return None;
        }
        let off = E820_TABLE + i * E820_ENTRY_SIZE;
        Some(E820Entry {
            addr: self.read(off),
            size: self.read(off + 8),
            kind: self.read(off + 16),
        })
    }

    pub fn cmd_line_ptr(&self) -> u32 {
        self.read(CMD_LINE_PTR)
    }

    /// The command line up to (not including) its NUL, or Err with why it is unusable.
    pub fn cmdline(&self) -> Result<&'static [u8], &'static str> {
        let ptr = self.cmd_line_ptr() as usize;
        if ptr == 0 {
            return Err("cmd_line_ptr is 0");
        }
        let mut len = 0;
        loop {
            if len == CMDLINE_MAX {
                return Err("no NUL within 4096 bytes");
            }
            // SAFETY: a 32-bit address is identity mapped; we read RAM the VMM wrote.
            if unsafe { ((ptr + len) as *const u8).read_volatile() } == 0 {
                break;
            }
            len += 1;
        }
        // SAFETY: ptr..ptr+len was just read byte by byte; nothing writes it afterwards
        // (the guest's own memory starts at 1 MiB, the command line lives below or beside
        // it in memory the VMM reserved for it).
        Ok(unsafe { core::slice::from_raw_parts(ptr as *const u8, len) })
    }
}

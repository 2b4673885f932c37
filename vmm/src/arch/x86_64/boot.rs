//! Direct kernel boot without firmware: load the kernel (ELF `vmlinux` or `bzImage`) and the
//! initrd with linux-loader, then write the command line and either `boot_params` (Linux
//! 64-bit boot) or `hvm_start_info` (PVH) with the guest's memory map.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{
    self, BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability, load_cmdline,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout::*;
use super::regs::BootProtocol;

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Loading the kernel or writing the boot structures failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel is neither a loadable ELF nor a bzImage.
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel {
        /// The path.
        path: String,
        /// linux-loader's error.
        source: loader::Error,
    },
    /// The initrd could not be read or does not fit in guest memory.
    #[error("cannot load initrd {path}: {reason}")]
    Initrd {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// The boot structures could not be written.
    #[error("cannot write boot parameters: {0}")]
    BootParams(String),
}

/// Where and how the loaded kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    /// Guest-physical entry point.
    pub entry: GuestAddress,
    /// Boot protocol the entry point expects.
    pub protocol: BootProtocol,
}

/// A kernel loaded into guest memory, before its boot structures are written.
pub struct LoadedKernel {
    /// Entry point and protocol.
    pub entry: KernelEntry,
    result: KernelLoaderResult,
}

/// Loads an ELF (preferring its PVH entry when it has one) or a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let display = path.display().to_string();
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: display.clone(),
        source,
    })?;
    let high = Some(GuestAddress(HIGH_RAM_START));
    let result = match Elf::load(mem, None, &mut file, high) {
        Ok(r) => r,
        Err(loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber)) => {
            BzImage::load(mem, None, &mut file, high).map_err(|source| BootError::LoadKernel {
                path: display.clone(),
                source,
            })?
        }
        Err(source) => {
            return Err(BootError::LoadKernel {
                path: display,
                source,
            });
        }
    };
    let entry = match (result.setup_header, result.pvh_boot_cap) {
        (Some(_), _) => KernelEntry {
            entry: result
                .kernel_load
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .ok_or_else(|| BootError::BootParams("bzImage entry overflows".into()))?,
            protocol: BootProtocol::Linux,
        },
        (None, PvhBootCapability::PvhEntryPresent(addr)) => KernelEntry {
            entry: addr,
            protocol: BootProtocol::Pvh,
        },
        (None, _) => KernelEntry {
            entry: result.kernel_load,
            protocol: BootProtocol::Linux,
        },
    };
    Ok(LoadedKernel { entry, result })
}

/// Loads the initrd at the top of low RAM, page aligned, returning (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(GuestAddress, u64), BootError> {
    let err = |reason: String| BootError::Initrd {
        path: path.display().to_string(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
    let size = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let low_end = mem
        .iter()
        .next()
        .map(|r| {
            use vm_memory::GuestMemoryRegion;
            r.start_addr().raw_value() + r.len()
        })
        .unwrap_or(0);
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or_else(|| err(format!("{size} bytes do not fit in guest memory")))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| err(e.to_string()))?;
    Ok((GuestAddress(addr), size))
}

/// The e820 RAM ranges the guest is told about: low RAM up to the EBDA, then from 1 MiB.
pub fn e820_ram_ranges(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    use vm_memory::GuestMemoryRegion;
    let mut out = vec![(0, EBDA_START)];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIGH_RAM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            out.push((start, end - start));
        }
    }
    out
}

/// Writes the command line and the boot structures for the loaded kernel.
pub fn configure_boot(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<(GuestAddress, u64)>,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();
    let ram = e820_ram_ranges(mem);
    match kernel.entry.protocol {
        BootProtocol::Linux => {
            let mut params = boot_params::default();
            if let Some(hdr) = kernel.result.setup_header {
                params.hdr = hdr;
            } else {
                params.hdr = setup_header {
                    boot_flag: KERNEL_BOOT_FLAG_MAGIC,
                    header: KERNEL_HDR_MAGIC,
                    kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
                    ..Default::default()
                };
            }
            params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
            params.hdr.cmd_line_ptr = CMDLINE_START as u32;
            params.hdr.cmdline_size = cmdline_len as u32;
            if let Some((addr, size)) = initrd {
                params.hdr.ramdisk_image = addr.raw_value() as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            if ram.len() > params.e820_table.len() {
                return Err(BootError::BootParams("too many e820 entries".into()));
            }
            for (i, (addr, size)) in ram.iter().enumerate() {
                params.e820_table[i].addr = *addr;
                params.e820_table[i].size = *size;
                params.e820_table[i].r#type = E820_RAM;
            }
            params.e820_entries = ram.len() as u8;
            LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
                &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
                mem,
            )
            .map_err(|e| BootError::BootParams(e.to_string()))
        }
        BootProtocol::Pvh => {
            let mut info = hvm_start_info {
                magic: XEN_HVM_START_MAGIC_VALUE,
                version: 1,
                cmdline_paddr: CMDLINE_START,
                memmap_paddr: PVH_MEMMAP_START,
                memmap_entries: ram.len() as u32,
                ..Default::default()
            };
            let memmap: Vec<hvm_memmap_table_entry> = ram
                .iter()
                .map(|(addr, size)| hvm_memmap_table_entry {
                    addr: *addr,
                    size: *size,
                    type_: E820_RAM,
                    reserved: 0,
                })
                .collect();
            let mut modules = Vec::new();
            if let Some((addr, size)) = initrd {
                info.nr_modules = 1;
                info.modlist_paddr = PVH_MODLIST_START;
                modules.push(hvm_modlist_entry {
                    paddr: addr.raw_value(),
                    size,
                    ..Default::default()
                });
            }
            let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_START));
            params.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(PVH_MEMMAP_START));
            if !modules.is_empty() {
                params.set_modules::<hvm_modlist_entry>(&modules, GuestAddress(PVH_MODLIST_START));
            }
            PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
                .map_err(|e| BootError::BootParams(e.to_string()))
        }
    }
}

/// End of the loaded kernel image (where an initrd may start at the earliest).
pub fn kernel_end(kernel: &LoadedKernel) -> u64 {
    kernel.result.kernel_end
}

/// Reads back a `boot_params` (tests and diagnostics).
pub fn read_boot_params(mem: &GuestMemoryMmap) -> Option<boot_params> {
    mem.read_obj(GuestAddress(ZERO_PAGE_START)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_skips_legacy_hole_and_mmio_gap() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        assert_eq!(
            e820_ram_ranges(&mem),
            vec![
                (0, EBDA_START),
                (HIGH_RAM_START, (64 << 20) - HIGH_RAM_START)
            ]
        );
    }

    #[test]
    fn rejects_a_file_that_is_no_kernel() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let dir = std::env::temp_dir().join(format!("mvm-boot-test-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 8192]).unwrap();
        let err = load_kernel(&mem, &dir).err().unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.to_string().starts_with("cannot load kernel"));
    }

    #[test]
    fn boot_params_carry_cmdline_and_e820() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        let kernel = LoadedKernel {
            entry: KernelEntry {
                entry: GuestAddress(HIGH_RAM_START),
                protocol: BootProtocol::Linux,
            },
            result: KernelLoaderResult::default(),
        };
        let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0").unwrap();
        configure_boot(&mem, &kernel, &cmdline, None).unwrap();
        let params = read_boot_params(&mem).unwrap();
        assert_eq!({ params.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!(params.e820_entries, 2);
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
    }
}

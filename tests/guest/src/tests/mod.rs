//! The test run: boot checks, device discovery, then the `mvmtest.*` actions in the order
//! they appear on the command line.

mod blk;
mod vsock;
mod work;

use crate::blk::Blk;
use crate::bootparams::{BootParams, E820_RAM, HDRS};
use crate::cmdline::{self, Disk, MmioDevice};
use crate::exit::{self, Mode};
use crate::report::{Bytes, Check, Msg, report};
use crate::virtio::mmio::Mmio;
use crate::virtio::{DEVICE_ID_BLOCK, DEVICE_ID_VSOCK};
use crate::vsock::Vsock;

const MAX_DEVICES: usize = 32;
const MAX_DISKS: usize = 26;

/// Everything discovered at boot.
struct Devices {
    /// Block devices by disk index (vda = 0); None where init failed.
    disks: [Option<Blk>; MAX_DISKS],
    n_disks: usize,
    vsock: Option<Vsock>,
    /// A vsock device was found (its init may have failed).
    vsock_found: bool,
}

pub fn run(boot_params: u64) -> ! {
    println!("MVMTEST START");
    let bp = BootParams::new(boot_params);
    report(
        format_args!("boot_params"),
        check_boot_params(bp.as_ref(), boot_params),
    );

    let line = bp.as_ref().map(|b| b.cmdline());
    let cmdline: &[u8] = match line {
        Some(Ok(c)) => c,
        _ => &[],
    };
    // The exit mode first, so every later path (even a panic) ends as asked.
    let exit_ok = match cmdline::value(cmdline, b"mvmtest.exit") {
        None | Some(b"reset") => Ok(()),
        Some(b"triple") => {
            exit::set_mode(Mode::Triple);
            Ok(())
        }
        Some(b"hlt") => {
            exit::set_mode(Mode::Hlt);
            Ok(())
        }
        Some(v) => Err(v),
    };
    println!("CMDLINE {}", Bytes(cmdline));
    report(
        format_args!("cmdline"),
        match line {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Msg::new(format_args!("{}", e))),
            None => Err(Msg::new(format_args!("no boot_params"))),
        },
    );
    if let Err(v) = exit_ok {
        report(
            format_args!("exit"),
            Err(Msg::new(format_args!("unknown mode {}", Bytes(v)))),
        );
    }

    if let Some(v) = cmdline::value(cmdline, b"mvmtest.mem_mib") {
        report(format_args!("mem"), check_mem(bp.as_ref(), v));
    }

    let mut devs = Devices {
        disks: [const { None }; MAX_DISKS],
        n_disks: 0,
        vsock: None,
        vsock_found: false,
    };
    probe_devices(cmdline, &mut devs);

    let vsock_bytes = cmdline::value(cmdline, b"mvmtest.vsock_bytes");
    for (key, val) in cmdline::words(cmdline).map(cmdline::split_word) {
        let Some(test) = key.strip_prefix(b"mvmtest.") else {
            continue;
        };
        match test {
            // Modifiers, handled above or by the tests that use them.
            b"exit" | b"mem_mib" | b"vsock_bytes" => {}
            b"blk_pattern" => report(
                format_args!("blk_pattern_{}", Bytes(val)),
                with_disk(&mut devs, val, blk::pattern),
            ),
            b"blk_write" => report(
                format_args!("blk_write_{}", Bytes(val)),
                with_disk(&mut devs, val, blk::write),
            ),
            b"blk_ro" => report(
                format_args!("blk_ro_{}", Bytes(val)),
                with_disk(&mut devs, val, blk::read_only),
            ),
            b"blk_oob" => report(
                format_args!("blk_oob_{}", Bytes(val)),
                with_disk(&mut devs, val, blk::out_of_bounds),
            ),
            b"bench_blk" => report(format_args!("bench_blk"), bench(&mut devs, val)),
            b"work" => report(
                format_args!("work"),
                match cmdline::parse_u64(val) {
                    Some(n) => work::run(n, devs.disks[0].as_mut()),
                    None => Err(Msg::new(format_args!("bad rounds {}", Bytes(val)))),
                },
            ),
            b"vsock_listen" => report(
                format_args!("vsock_listen"),
                with_vsock(&mut devs, val, |v, port| {
                    let bytes = match vsock_bytes.map(cmdline::parse_size) {
                        None => None,
                        Some(Some(n)) => Some(n),
                        Some(None) => fail!("bad mvmtest.vsock_bytes value"),
                    };
                    vsock::listen(v, port, bytes)
                }),
            ),
            b"vsock_connect" => report(
                format_args!("vsock_connect"),
                with_vsock(&mut devs, val, vsock::connect),
            ),
            _ => report(
                format_args!("{}", Bytes(test)),
                Err(Msg::new(format_args!(
                    "unknown parameter mvmtest.{}",
                    Bytes(test)
                ))),
            ),
        }
    }

    println!("MVMTEST DONE {} failures", crate::report::failures());
    exit::exit(exit::mode())
}

fn check_boot_params(bp: Option<&BootParams>, addr: u64) -> Check {
    let Some(bp) = bp else {
        fail!("boot_params pointer {:#x} (RSI) unusable", addr)
    };
    let magic = bp.header_magic();
    if magic != HDRS {
        fail!("setup header magic {:#x}, want {:#x} (HdrS)", magic, HDRS);
    }
    let n = bp.e820_count();
    if n == 0 {
        fail!("e820 table empty");
    }
    if n > 128 {
        fail!("e820_entries {} > 128", n);
    }
    let mut low_ram = false;
    for i in 0..n {
        let Some(e) = bp.e820(i) else { break };
        println!("E820 {:#x} {:#x} {}", e.addr, e.size, e.kind);
        let end = e.addr.saturating_add(e.size);
        if e.kind == E820_RAM && e.addr <= 0x10_0000 && 0x10_0000 < end {
            low_ram = true;
        }
    }
    if !low_ram {
        fail!("no e820 RAM (type 1) entry contains 1 MiB, where this guest is loaded");
    }
    Ok(())
}

fn check_mem(bp: Option<&BootParams>, val: &[u8]) -> Check {
    let Some(bp) = bp else {
        fail!("no boot_params")
    };
    let Some(mib) = cmdline::parse_u64(val) else {
        fail!("bad mvmtest.mem_mib value {}", Bytes(val))
    };
    let want = mib << 20;
    let ram: u64 = (0..bp.e820_count())
        .filter_map(|i| bp.e820(i))
        .filter(|e| e.kind == E820_RAM)
        .map(|e| e.size)
        .sum();
    println!("MEM ram={} expected={}", ram, want);
    // Low memory holes (EBDA, VGA, BIOS area) may be left out of the RAM entries.
    if ram > want || ram + (1 << 20) < want {
        fail!(
            "e820 RAM totals {} bytes, want {} MiB minus at most 1 MiB",
            ram,
            mib
        );
    }
    Ok(())
}

/// Parses every `virtio_mmio.device=` word, probes it and initialises block and vsock
/// devices (reported as `virtio_probe`, `blk_*_<disk>` and `vsock_init`).
fn probe_devices(cmdline: &[u8], devs: &mut Devices) {
    let mut found: [Option<(MmioDevice, u32)>; MAX_DEVICES] = [None; MAX_DEVICES];
    let mut probe: Check = Ok(());
    for (i, val) in cmdline::words(cmdline)
        .map(cmdline::split_word)
        .filter(|(k, _)| *k == b"virtio_mmio.device")
        .map(|(_, v)| v)
        .enumerate()
    {
        let Some(d) = cmdline::parse_mmio_device(val) else {
            probe = Err(Msg::new(format_args!(
                "bad virtio_mmio.device={}",
                Bytes(val)
            )));
            continue;
        };
        if d.base >= (1 << 32) - 0x1000 || d.size < 0x200 {
            probe = Err(Msg::new(format_args!(
                "unusable window {:#x}@{:#x}",
                d.size, d.base
            )));
            continue;
        }
        match Mmio::new(d.base).probe() {
            Ok(id) => {
                println!("DEVICE {:#x} id={}", d.base, id);
                if i < MAX_DEVICES {
                    found[i] = Some((d, id));
                }
            }
            Err(m) => probe = Err(m),
        }
    }
    report(format_args!("virtio_probe"), probe);

    for &(d, id) in found.iter().flatten() {
        let mmio = Mmio::new(d.base);
        match id {
            DEVICE_ID_BLOCK => {
                let idx = devs.n_disks;
                devs.n_disks += 1;
                if idx >= MAX_DISKS {
                    continue;
                }
                match Blk::init(mmio) {
                    Ok(b) => {
                        println!(
                            "BLK {} base={:#x} irq={} capacity={} ro={} flush={}",
                            Disk(idx),
                            d.base,
                            d.irq,
                            b.capacity,
                            b.read_only() as u8,
                            (b.features & crate::blk::F_FLUSH != 0) as u8
                        );
                        report(format_args!("blk_init_{}", Disk(idx)), Ok(()));
                        devs.disks[idx] = Some(b);
                        if let Some(b) = devs.disks[idx].as_mut() {
                            blk::basic(b, idx);
                        }
                    }
                    Err(m) => report(format_args!("blk_init_{}", Disk(idx)), Err(m)),
                }
            }
            DEVICE_ID_VSOCK if !devs.vsock_found => {
                devs.vsock_found = true;
                let r = Vsock::init(mmio).and_then(|v| {
                    println!("VSOCK base={:#x} irq={} cid={}", d.base, d.irq, v.cid);
                    if v.cid < 3 || v.cid > u32::MAX as u64 {
                        fail!("guest cid {} is reserved or out of range", v.cid);
                    }
                    devs.vsock = Some(v);
                    Ok(())
                });
                report(format_args!("vsock_init"), r);
            }
            _ => {}
        }
    }
}

fn with_disk(devs: &mut Devices, name: &[u8], f: fn(&mut Blk) -> Check) -> Check {
    let Some(idx) = cmdline::parse_disk(name) else {
        fail!("bad disk name {}", Bytes(name))
    };
    if idx >= devs.n_disks {
        fail!("no such disk ({} block devices)", devs.n_disks);
    }
    match devs.disks.get_mut(idx).and_then(|d| d.as_mut()) {
        Some(b) => f(b),
        None => fail!("disk failed to initialise"),
    }
}

fn with_vsock(devs: &mut Devices, port: &[u8], f: impl FnOnce(&mut Vsock, u32) -> Check) -> Check {
    let Some(port) = cmdline::parse_u64(port).and_then(|p| u32::try_from(p).ok()) else {
        fail!("bad port {}", Bytes(port))
    };
    match devs.vsock.as_mut() {
        Some(v) => f(v, port),
        None if devs.vsock_found => fail!("vsock device failed to initialise"),
        None => fail!("no vsock device"),
    }
}

fn bench(devs: &mut Devices, val: &[u8]) -> Check {
    let Some(n) = cmdline::parse_u64(val).filter(|&n| n > 0) else {
        fail!("bad count {}", Bytes(val))
    };
    let found = devs
        .disks
        .iter_mut()
        .enumerate()
        .find_map(|(i, d)| match d {
            Some(b) if !b.read_only() => Some((i, b)),
            _ => None,
        });
    match found {
        Some((idx, b)) => blk::bench(b, idx, n),
        None => fail!("no writable disk"),
    }
}

//! `mvmtest.work=ROUNDS`: a long, deterministic computation for snapshot tests. Each round
//! fills a work area from the running sum, folds it back in, reads one sector of the first
//! disk (when there is one) through its virtqueue and folds that in too, then prints
//! `WORK <round> <sum>` and waits a little, so that the host can snapshot the guest in the
//! middle. The last line is `WORK DONE <sum>`: a VM restored from a snapshot must print the
//! same one as the VM it was taken from.

use core::mem::MaybeUninit;

use crate::blk::{Blk, SECTOR};
use crate::report::Check;

const WORDS: usize = 8192;
/// Sectors the reads cycle through.
const SECTORS: u64 = 64;
/// Milliseconds each round waits (time does not enter the sum).
const ROUND_MS: u64 = 40;

#[repr(C, align(4096))]
struct Area([u64; WORDS]);
#[repr(C, align(4096))]
struct Sector([u8; SECTOR]);

#[unsafe(link_section = ".bss.noinit.work_area")]
static mut AREA: MaybeUninit<Area> = MaybeUninit::uninit();
#[unsafe(link_section = ".bss.noinit.work_sector")]
static mut SECTOR_BUF: MaybeUninit<Sector> = MaybeUninit::uninit();

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

pub fn run(rounds: u64, mut disk: Option<&mut Blk>) -> Check {
    // SAFETY: AREA is used only here, one round at a time; every word is written before it
    // is read.
    let area = unsafe { &mut *(&raw mut AREA).cast::<[u64; WORDS]>() };
    let sector = (&raw mut SECTOR_BUF).cast::<u8>();
    let mut sum: u64 = 0x6d76_6d5f_776f_726b;
    for round in 0..rounds {
        let mut x = sum ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for w in area.iter_mut() {
            x = xorshift(x);
            *w = x;
        }
        for (i, w) in area.iter().enumerate() {
            sum = sum.rotate_left(5) ^ w.wrapping_add(i as u64);
        }
        if let Some(b) = disk.as_deref_mut() {
            b.read(round % SECTORS, sector, SECTOR)?;
            // SAFETY: the device filled the sector buffer and the request is complete.
            let bytes = unsafe { core::slice::from_raw_parts(sector, SECTOR) };
            for &v in bytes {
                sum = sum.rotate_left(3) ^ u64::from(v);
            }
        }
        println!("WORK {} {:016x}", round, sum);
        crate::time::delay_ms(ROUND_MS);
    }
    println!("WORK DONE {:016x}", sum);
    Ok(())
}

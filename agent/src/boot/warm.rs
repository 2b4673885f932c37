//! A template VM's wait for its container (agent-protocol's `warm`): listen on the template
//! port, say ready, and on a warm boot reseed the RNG from the host's bytes, set the clock,
//! wait for the container's disks to show their real sizes, and hand back the container's
//! boot configuration.
//!
//! A connection that breaks before a warm boot (the host's, while it snapshots the template,
//! is reset when a VM is restored from it) is forgotten and the next one awaited.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use mvm_agent_protocol::boot::{BootConfig, parse_cmdline};
use mvm_agent_protocol::warm::{TEMPLATE_PORT, WarmAnswer, WarmBoot, WarmReady};
use mvm_agent_protocol::{Frame, FrameReader, FrameWriter, PROTOCOL_VERSION};

use super::{BootError, io_err};
use std::os::fd::AsFd;

use crate::vsock::VsockListener;
use crate::{log_debug, log_error};

/// How long the container's disks may take to show their size after a warm boot (the
/// restored VMM announces them with a configuration interrupt the kernel handles in a work
/// queue).
const DISK_WAIT: Duration = Duration::from_secs(5);

/// Waits for a warm boot and returns the container's configuration.
pub fn wait_for_container() -> Result<BootConfig, BootError> {
    let listener = VsockListener::bind(TEMPLATE_PORT)
        .map_err(io_err(format!("listening on vsock port {TEMPLATE_PORT}")))?;
    loop {
        let conn = listener
            .accept()
            .map_err(io_err("accepting the template connection"))?;
        // The host of a restored VM may connect while the template's connection still looks
        // open here (a transport reset the device could not deliver): the newer one wins.
        let conn_fd = std::os::fd::AsRawFd::as_raw_fd(&conn.as_fd());
        let listener_fd = listener.raw_fd();
        match serve(conn, || readable_first(conn_fd, listener_fd)) {
            Ok(Some(config)) => return Ok(config),
            Ok(None) => log_debug!("template connection ended before a warm boot"),
            Err(e) => {
                log_error!("warm boot refused: {e}");
                return Err(BootError::Io {
                    what: "warm boot".into(),
                    source: std::io::Error::other(e),
                });
            }
        }
    }
}

/// Waits until `conn` has bytes (true) or `listener` has a newer connection (false).
fn readable_first(conn: i32, listener: i32) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: conn,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: listener,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfd entries, alive for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n > 0 {
            // A newer connection wins over whatever the older one has.
            return fds[1].revents == 0;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Cannot wait for both: read the connection (its end shows as end of file).
            return true;
        }
    }
}

/// One connection: `Ok(None)` when it ends (or breaks) before a warm boot arrives, or
/// `still_wanted` says a newer connection waits; `Err` for a warm boot that cannot be used
/// (said to the host too).
fn serve<S: Read + Write>(
    mut conn: S,
    still_wanted: impl FnOnce() -> bool,
) -> Result<Option<BootConfig>, String> {
    let mut buf = Vec::new();
    if FrameWriter::new(&mut buf)
        .write_control(&WarmReady {
            version: PROTOCOL_VERSION,
        })
        .is_err()
        || conn.write_all(&buf).is_err()
    {
        return Ok(None);
    }
    if !still_wanted() {
        return Ok(None);
    }
    let boot = match FrameReader::new(&mut conn).read_frame::<WarmBoot>() {
        Ok(Some(Frame::Control(boot))) => boot,
        // The host went away (or the restore reset the connection): wait for the next.
        Ok(None) | Err(_) => return Ok(None),
        Ok(Some(_)) => return Err("expected a warm boot".into()),
    };
    let result = apply(&boot);
    let answer = match &result {
        Ok(_) => WarmAnswer::Booting,
        Err(e) => WarmAnswer::Refused { message: e.clone() },
    };
    let mut buf = Vec::new();
    if FrameWriter::new(&mut buf).write_control(&answer).is_ok() {
        let _ = conn.write_all(&buf);
    }
    result.map(Some)
}

fn apply(boot: &WarmBoot) -> Result<BootConfig, String> {
    boot.check()?;
    let config = parse_cmdline(&boot.cmdline).map_err(|e| e.to_string())?;
    if config.template {
        return Err("a warm boot cannot make another template".into());
    }
    reseed(&boot.entropy).map_err(|e| format!("reseeding the RNG: {e}"))?;
    set_clock(boot.unix_time_ns).map_err(|e| format!("setting the clock: {e}"))?;
    set_macs(&boot.macs)?;
    wait_for_disks(Path::new("/sys/block"), DISK_WAIT)?;
    Ok(config)
}

/// Mixes `entropy` into the kernel's input pool, credited, then makes the CRNG reseed from
/// it at once (RNDADDENTROPY, RNDRESEEDCRNG): the restored VM's random numbers are its own
/// from the next read on.
fn reseed(entropy: &[u8]) -> std::io::Result<()> {
    /// `_IOW('R', 0x03, int[2])`.
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    /// `_IO('R', 0x07)`.
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // Whole u32 words, as the kernel reads them.
    info.resize(8 + entropy.len().div_ceil(4) * 4, 0);
    use std::os::fd::AsRawFd;
    // SAFETY: `info` is a rand_pool_info header followed by buf_size bytes, alive for the
    // call; the kernel only reads it.
    if unsafe { libc::ioctl(file.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: takes no argument.
    if unsafe { libc::ioctl(file.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives eth0, eth1, ... the container's MAC addresses (they are still down: the template's
/// agent configured nothing).
fn set_macs(macs: &[mvm_agent_protocol::boot::MacAddr]) -> Result<(), String> {
    if macs.is_empty() {
        return Ok(());
    }
    let sock = crate::netdev::IfSocket::new().map_err(|e| format!("network: {e}"))?;
    for (i, mac) in macs.iter().enumerate() {
        let name = format!("eth{i}");
        sock.set_hwaddr(&name, mac.0)
            .map_err(|e| format!("setting {name}'s MAC address {mac}: {e}"))?;
    }
    Ok(())
}

fn set_clock(unix_time_ns: u64) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec for the call's duration.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until every virtio disk but the agent's own (vda) has a size: the template had
/// empty files in their places, and the restored VMM announced the container's.
fn wait_for_disks(sys_block: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut empty = Vec::new();
        let entries =
            std::fs::read_dir(sys_block).map_err(|e| format!("{}: {e}", sys_block.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("vd") || name == "vda" {
                continue;
            }
            let size = std::fs::read_to_string(e.path().join("size")).unwrap_or_default();
            if size.trim() == "0" {
                empty.push(name);
            }
        }
        if empty.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the disks {} still have no size", empty.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A connection whose reads come from `input` and whose writes are kept.
    struct Conn {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Conn {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Conn {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_connection_that_ends_before_a_warm_boot_is_not_an_error() {
        let mut conn = Conn {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
        };
        assert_eq!(serve(&mut conn, || true).unwrap(), None);
        let ready = FrameReader::new(&conn.output[..])
            .read_frame::<WarmReady>()
            .unwrap();
        assert_eq!(
            ready,
            Some(Frame::Control(WarmReady {
                version: PROTOCOL_VERSION
            }))
        );
    }

    #[test]
    fn a_newer_connection_wins() {
        let mut input = Vec::new();
        FrameWriter::new(&mut input)
            .write_control(&WarmBoot {
                cmdline: "mvm.lower=/dev/vdb".into(),
                entropy: vec![1; 64],
                unix_time_ns: 0,
                macs: Vec::new(),
            })
            .unwrap();
        let mut conn = Conn {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        // Not read, not applied: the older connection is dropped for the newer.
        assert_eq!(serve(&mut conn, || false).unwrap(), None);
        assert_eq!(conn.input.position(), 0);
    }

    #[test]
    fn a_bad_warm_boot_is_refused_and_said() {
        for (boot, want) in [
            (
                WarmBoot {
                    cmdline: "mvm.lower=/dev/vdb".into(),
                    entropy: vec![1; 4],
                    unix_time_ns: 0,
                    macs: Vec::new(),
                },
                "bytes of entropy",
            ),
            (
                WarmBoot {
                    cmdline: "mvm.template=1".into(),
                    entropy: vec![1; 64],
                    unix_time_ns: 0,
                    macs: Vec::new(),
                },
                "another template",
            ),
            (
                WarmBoot {
                    cmdline: "mvm.port=x".into(),
                    entropy: vec![1; 64],
                    unix_time_ns: 0,
                    macs: Vec::new(),
                },
                "mvm.port",
            ),
        ] {
            let mut input = Vec::new();
            FrameWriter::new(&mut input).write_control(&boot).unwrap();
            let mut conn = Conn {
                input: Cursor::new(input),
                output: Vec::new(),
            };
            let e = serve(&mut conn, || true).unwrap_err();
            assert!(e.contains(want), "{e}");
            let mut r = FrameReader::new(&conn.output[..]);
            let _ready = r.read_frame::<WarmReady>().unwrap();
            match r.read_frame::<WarmAnswer>().unwrap() {
                Some(Frame::Control(WarmAnswer::Refused { message })) => {
                    assert!(message.contains(want), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn disks_are_waited_for_until_they_have_a_size() {
        let tmp = crate::test_util::TempDir::new("warm-disks");
        let dir = tmp.path();
        for (name, size) in [("vda", "0"), ("vdb", "0"), ("loop0", "0")] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("size"), size).unwrap();
        }
        let e = wait_for_disks(dir, Duration::from_millis(20)).unwrap_err();
        assert_eq!(e, "the disks vdb still have no size");
        std::fs::write(dir.join("vdb/size"), "2048\n").unwrap();
        wait_for_disks(dir, Duration::from_millis(20)).unwrap();
    }
}

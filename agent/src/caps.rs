//! A process's capabilities and privileges as an OCI bundle gives them (`capabilities`,
//! `noNewPrivileges`, `oomScoreAdj`): the names turned into the kernel's masks before the fork,
//! applied in the child between its user switch and exec as runc applies them.

use std::io;

// The kernel's capability names, by number (shared with the engine, which checks users'
// `--cap-add` against the same table).
use mvm_agent_protocol::CAPABILITY_NAMES as NAMES;

/// The mask of `names`; a name this table does not know is skipped (a newer engine may name
/// capabilities the guest kernel lacks, as runc skips them).
pub fn mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| {
            let n = n.to_ascii_uppercase();
            let n = if n.starts_with("CAP_") {
                n
            } else {
                format!("CAP_{n}")
            };
            NAMES.iter().position(|k| *k == n)
        })
        .fold(0, |m, i| m | (1 << i))
}

/// What the child applies, as plain values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Capability masks; `None` leaves the process's capabilities as they are (root's all).
    pub caps: Option<Masks>,
    /// `noNewPrivileges`.
    pub no_new_privs: bool,
    /// `oomScoreAdj`, written to /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
}

/// The five sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Masks {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Privileges {
    /// Before the user switch: the bounding set dropped to what is kept, and the permitted
    /// capabilities kept across setuid. Only async-signal-safe system calls.
    pub fn before_user_switch(&self) -> io::Result<()> {
        let Some(m) = self.caps else {
            return Ok(());
        };
        for cap in 0..NAMES.len() {
            if m.bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integers. EINVAL: the kernel does not have this one.
                let r =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        // SAFETY: prctl with integers.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
    }

    /// After the user switch: the capability sets, the ambient ones, no_new_privs and the OOM
    /// score. Only async-signal-safe system calls.
    pub fn after_user_switch(&self) -> io::Result<()> {
        if let Some(m) = self.caps {
            // The kernel's v3 capability header and two 32-bit data words.
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            const VERSION_3: u32 = 0x2008_0522;
            let header = Header {
                version: VERSION_3,
                pid: 0,
            };
            let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
            let data = [0u32, 1].map(|i| Data {
                effective: word(m.effective, i),
                permitted: word(m.permitted, i),
                inheritable: word(m.inheritable, i),
            });
            // SAFETY: capset with a header and two data words laid out as the kernel's
            // __user_cap_header_struct and __user_cap_data_struct[2], alive for the call.
            check(unsafe {
                libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr())
                    as libc::c_int
            })?;
            for cap in 0..NAMES.len() {
                if m.ambient & (1 << cap) != 0 {
                    // SAFETY: prctl with integers.
                    check(unsafe {
                        libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        )
                    })?;
                }
            }
        }
        if self.no_new_privs {
            // SAFETY: prctl with integers.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        }
        if let Some(adj) = self.oom_score_adj {
            write_oom_score_adj(adj)?;
        }
        Ok(())
    }
}

/// Writes `adj` to /proc/self/oom_score_adj without allocating.
fn write_oom_score_adj(adj: i32) -> io::Result<()> {
    let mut buf = [0u8; 12];
    let mut i = buf.len();
    let mut v = i64::from(adj).unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if adj < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    // SAFETY: open/write/close on a literal path and a local buffer.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        check(fd)?;
        let n = libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::close(fd);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_masks() {
        assert_eq!(mask(&["CAP_CHOWN".into()]), 1);
        assert_eq!(
            mask(&["CAP_NET_RAW".into(), "kill".into()]),
            (1 << 13) | (1 << 5)
        );
        assert_eq!(mask(&["CAP_CHECKPOINT_RESTORE".into()]), 1 << 40);
        assert_eq!(mask(&["CAP_FUTURE_THING".into()]), 0);
        assert_eq!(NAMES[21], "CAP_SYS_ADMIN");
    }
}

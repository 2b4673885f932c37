//! The container's processes for `top` and `stats`: those in the PID namespace of the
//! container's PID 1, read from the VM's /proc (the agent's own and the kernel's threads are
//! not the container's), with their PIDs as the container numbers them.

use std::collections::HashMap;
use std::path::Path;

use mvm_agent_protocol::ProcessEntry;

/// The processes of the PID namespace whose init has the agent-side PID `init` (none before
/// it starts), sorted by their PID there. `proc` is the VM's /proc; `etc` the container's
/// /etc, for user names.
pub fn list(proc: &Path, init: i32, etc: &Path) -> Vec<ProcessEntry> {
    if init <= 0 {
        return Vec::new();
    }
    let Ok(ns) = std::fs::read_link(proc.join(format!("{init}/ns/pid"))) else {
        return Vec::new();
    };
    let names: HashMap<u32, String> = std::fs::read_to_string(etc.join("passwd"))
        .map(|t| crate::users::parse_passwd(&t))
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.uid, e.name))
        .collect();
    let boot = boot_time(proc);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    // (agent-side pid, agent-side ppid, entry)
    let mut found = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let base = e.path();
        if std::fs::read_link(base.join("ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(base.join("status")),
            std::fs::read_to_string(base.join("stat")),
        ) else {
            continue; // gone meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let ns_pid = field("NSpid:")
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or(pid);
        let ppid: i32 = field("PPid:")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let uid: u32 = field("Uid:")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // After the command's closing parenthesis: state is field 3; tty_nr 7, utime 14,
        // stime 15, starttime 22.
        let (comm, rest) = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => (&stat[a + 1..b], &stat[b + 1..]),
            _ => continue,
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let cmd = if cmdline.is_empty() {
            format!("[{comm}]")
        } else {
            String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ")
        };
        found.push((
            pid,
            ppid,
            ProcessEntry {
                pid: ns_pid,
                ppid: 0,
                uid,
                user: names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
                tty: tty_name(num(4)),
                started: boot + num(19) / hz,
                cpu_ms: (num(11) + num(12)) * 1000 / hz,
                cmd,
            },
        ));
    }
    let in_ns: HashMap<i32, i32> = found.iter().map(|(p, _, e)| (*p, e.pid)).collect();
    let mut out: Vec<ProcessEntry> = found
        .into_iter()
        .map(|(_, ppid, mut e)| {
            e.ppid = in_ns.get(&ppid).copied().unwrap_or(0);
            e
        })
        .collect();
    out.sort_by_key(|e| e.pid);
    out
}

/// When the VM booted, seconds since the epoch (`btime` of /proc/stat).
fn boot_time(proc: &Path) -> u64 {
    std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A terminal's name from `tty_nr` (major in bits 8-15, minor in 0-7 and 20-31).
fn tty_name(nr: u64) -> String {
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", minor + (major - 136) * 256),
        4 => format!("tty{minor}"),
        5 if minor == 1 => "console".into(),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_named_as_ps_names_them() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(136 << 8), "pts/0");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((5 << 8) | 1), "console");
    }

    #[test]
    fn lists_this_process_namespace_with_names() {
        // The test's own PID namespace: this process is in it.
        let me = std::process::id() as i32;
        let etc = std::env::temp_dir().join(format!("mvm-procs-{me}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let all = list(Path::new("/proc"), me, &etc);
        let mine = all
            .iter()
            .find(|e| e.pid == me)
            .expect("this process is listed");
        assert!(
            mine.cmd.contains("procs") || mine.cmd.contains("mvm_agent"),
            "{mine:?}"
        );
        if mine.uid == 0 {
            assert_eq!(mine.user, "root");
        }
        assert!(all.windows(2).all(|w| w[0].pid < w[1].pid));
        assert!(list(Path::new("/proc"), 0, &etc).is_empty());
        std::fs::remove_dir_all(&etc).unwrap();
    }
}

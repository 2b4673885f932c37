//! What a container costs the host: CPU time, memory and storage I/O of its monitor,
//! hypervisor and helpers, read from /proc (`stats`).

use super::ContainerRecord;

/// Host-side counters of one container's processes (monitor, hypervisor, helpers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// CPU time in clock ticks (user + system).
    pub cpu_ticks: u64,
    /// Resident memory in bytes.
    pub rss: u64,
    /// Bytes read from storage.
    pub read: u64,
    /// Bytes written to storage.
    pub written: u64,
}

/// The counters of `pids`, summed (a process that is gone counts nothing).
pub fn read(pids: &[u32]) -> Counters {
    let mut c = Counters::default();
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            // After the command: state is field 3 of stat; utime and stime are 14 and 15.
            let f: Vec<&str> = rest.split_whitespace().collect();
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            c.cpu_ticks += tick(11) + tick(12);
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            c.rss += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
        }
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            let field = |name: &str| {
                io.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            c.read += field("read_bytes:");
            c.written += field("write_bytes:");
        }
    }
    c
}

/// The processes that make up a running container on the host: its monitor and its VM's.
pub fn host_pids(rec: &ContainerRecord) -> Vec<u32> {
    rec.state
        .pid
        .into_iter()
        .chain(super::signal::vm_pids(rec))
        .collect()
}

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

/// Bytes the container received and sent over its network interfaces: its TAP devices'
/// counters in this network namespace's `/proc/net/dev`, seen from the guest's side (what a
/// TAP transmits, the guest receives).
pub fn net_io(rec: &ContainerRecord) -> (u64, u64) {
    let Ok(dev) = std::fs::read_to_string("/proc/self/net/dev") else {
        return (0, 0);
    };
    net_io_in(&dev, rec.endpoints.iter().map(|e| e.tap.as_str()))
}

/// [`net_io`] over the text of a `/proc/net/dev`.
fn net_io_in<'a>(dev: &str, taps: impl Iterator<Item = &'a str>) -> (u64, u64) {
    let taps: Vec<&str> = taps.collect();
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in dev.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if !taps.contains(&name.trim()) {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // Receive bytes is field 0, transmit bytes field 8 (the TAP's view).
        tx += f.first().copied().unwrap_or(0);
        rx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_io_is_the_taps_counters_turned_around() {
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
mvt0123456789a0:     300       3    0    0    0     0          0         0      700       7    0    0    0     0       0          0
mvt0123456789a1:      30       3    0    0    0     0          0         0       70       7    0    0    0     0       0          0
";
        assert_eq!(
            net_io_in(dev, ["mvt0123456789a0", "mvt0123456789a1"].into_iter()),
            (770, 330)
        );
        assert_eq!(net_io_in(dev, std::iter::empty()), (0, 0));
    }
}

//! `linux.resources` turned into the size of the microVM: a cgroup memory limit becomes the
//! guest's memory, a CPU quota or cpuset its vCPU count.

/// The smallest guest the runtime boots: a kernel, the agent and a small process need it, and a
/// smaller cgroup limit (Docker allows 6 MiB) would not boot at all.
pub const MIN_MEMORY_MIB: u64 = 64;

/// The highest CPU number accepted in a cpuset (Linux's largest NR_CPUS); beyond it a hostile
/// list could only make the count meaningless.
pub const MAX_CPU_INDEX: u32 = 8191;

/// What the bundle asks of the VM's size; `None` when it sets no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// `memory.limit` in MiB, rounded up, at least [`MIN_MEMORY_MIB`].
    pub memory_mib: Option<u64>,
    /// `cpu.quota / cpu.period`, rounded up.
    pub quota_vcpus: Option<u32>,
    /// How many CPUs `cpu.cpus` lists.
    pub cpuset_cpus: Option<u32>,
}

impl Resources {
    /// The vCPU count: the smaller of the quota and the cpuset, `None` when neither is set.
    pub fn vcpus(&self) -> Option<u32> {
        match (self.quota_vcpus, self.cpuset_cpus) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A memory limit in bytes as guest MiB; zero or negative (`-1` is "unlimited") is no limit.
pub fn memory_mib(limit_bytes: i64) -> Option<u64> {
    let bytes = u64::try_from(limit_bytes).ok().filter(|b| *b > 0)?;
    Some(bytes.div_ceil(1 << 20).max(MIN_MEMORY_MIB))
}

/// CFS quota over period as whole vCPUs, rounded up; no limit when either is not positive.
pub fn quota_vcpus(quota: i64, period: u64) -> Option<u32> {
    let quota = u64::try_from(quota).ok().filter(|q| *q > 0)?;
    if period == 0 {
        return None;
    }
    Some(u32::try_from(quota.div_ceil(period)).unwrap_or(u32::MAX))
}

/// Counts the distinct CPUs of a cpuset list such as `0-3,6,8-9`; an empty list is no limit.
pub fn cpuset_count(list: &str) -> Result<Option<u32>, String> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(None);
    }
    let mut seen = vec![false; MAX_CPU_INDEX as usize + 1];
    for part in list.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (cpu_index(a)?, cpu_index(b)?),
            None => {
                let i = cpu_index(part)?;
                (i, i)
            }
        };
        if lo > hi {
            return Err(format!("range {part:?} is reversed"));
        }
        for i in lo..=hi {
            seen[i as usize] = true;
        }
    }
    Ok(Some(seen.iter().filter(|s| **s).count() as u32))
}

fn cpu_index(s: &str) -> Result<u32, String> {
    let i: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a CPU number"))?;
    if i > MAX_CPU_INDEX {
        return Err(format!("CPU {i} is above {MAX_CPU_INDEX}"));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(memory_mib(100 << 20), Some(100));
        assert_eq!(memory_mib(10 << 20), Some(64));
        assert_eq!(memory_mib((100 << 20) + 1), Some(101));
        assert_eq!(memory_mib(0), None);
        assert_eq!(memory_mib(-1), None);
        assert_eq!(memory_mib(i64::MIN), None);
        assert_eq!(
            memory_mib(i64::MAX),
            Some((i64::MAX as u64).div_ceil(1 << 20))
        );
    }

    #[test]
    fn quota() {
        assert_eq!(quota_vcpus(150_000, 100_000), Some(2));
        assert_eq!(quota_vcpus(100_000, 100_000), Some(1));
        assert_eq!(quota_vcpus(1, 100_000), Some(1));
        assert_eq!(quota_vcpus(-1, 100_000), None);
        assert_eq!(quota_vcpus(150_000, 0), None);
        assert_eq!(quota_vcpus(i64::MAX, 1), Some(u32::MAX));
    }

    #[test]
    fn cpusets() {
        assert_eq!(cpuset_count("0-3"), Ok(Some(4)));
        assert_eq!(cpuset_count("0-3,2,7"), Ok(Some(5)));
        assert_eq!(cpuset_count(" 1 , 3-4 "), Ok(Some(3)));
        assert_eq!(cpuset_count(""), Ok(None));
        assert_eq!(cpuset_count("0-8191"), Ok(Some(8192)));
        for bad in ["5-3", "0-4294967295", "a", "1,", "-1", "1-", "0--2", "8192"] {
            assert!(cpuset_count(bad).is_err(), "{bad}");
        }
    }
}

//! Resource limit names as the OCI spec and Docker spell them.

use mvm_agent_protocol::Rlimit;

/// A limit ready for setrlimit(2) in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedRlimit {
    /// The `RLIMIT_*` resource number.
    pub resource: libc::__rlimit_resource_t,
    /// Soft limit (`RLIM_INFINITY` is `u64::MAX`).
    pub soft: libc::rlim_t,
    /// Hard limit.
    pub hard: libc::rlim_t,
}

/// A limit the agent cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlimitError {
    /// Not a resource name Linux has.
    #[error("unknown rlimit type {0:?}")]
    Unknown(String),
    /// Soft above hard.
    #[error("rlimit {0}: soft limit above hard limit")]
    SoftAboveHard(String),
}

/// Maps `RLIMIT_NOFILE`, `rlimit_nofile` or `nofile` to its resource and checks the values.
pub fn parse_rlimit(limit: &Rlimit) -> Result<ParsedRlimit, RlimitError> {
    let upper = limit.kind.to_ascii_uppercase();
    let name = upper.strip_prefix("RLIMIT_").unwrap_or(&upper);
    let resource = match name {
        "AS" => libc::RLIMIT_AS,
        "CORE" => libc::RLIMIT_CORE,
        "CPU" => libc::RLIMIT_CPU,
        "DATA" => libc::RLIMIT_DATA,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "NPROC" => libc::RLIMIT_NPROC,
        "RSS" => libc::RLIMIT_RSS,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "STACK" => libc::RLIMIT_STACK,
        _ => return Err(RlimitError::Unknown(limit.kind.clone())),
    };
    if limit.soft > limit.hard {
        return Err(RlimitError::SoftAboveHard(limit.kind.clone()));
    }
    Ok(ParsedRlimit {
        resource,
        soft: limit.soft,
        hard: limit.hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(kind: &str, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            kind: kind.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn names() {
        for name in ["RLIMIT_NOFILE", "rlimit_nofile", "nofile", "NOFILE"] {
            assert_eq!(
                parse_rlimit(&limit(name, 1, 2)).unwrap().resource,
                libc::RLIMIT_NOFILE
            );
        }
        assert_eq!(
            parse_rlimit(&limit("RLIMIT_CORE", 0, u64::MAX))
                .unwrap()
                .hard,
            libc::RLIM_INFINITY
        );
        assert!(matches!(
            parse_rlimit(&limit("RLIMIT_BOGUS", 1, 1)),
            Err(RlimitError::Unknown(_))
        ));
        assert!(matches!(
            parse_rlimit(&limit("nproc", 5, 1)),
            Err(RlimitError::SoftAboveHard(_))
        ));
    }
}

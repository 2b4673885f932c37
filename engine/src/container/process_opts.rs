//! What `run` flags ask of the container's process and its files, beyond the command itself:
//! Docker's default capability set with `--cap-add`/`--cap-drop`/`--privileged`, `--ulimit`,
//! `--sysctl`, `--read-only`, `--add-host`, `--dns*`. Parsed once at the flag, stored in the
//! spec, turned into the agent's `ProcessSpec` fields for the container's process and every
//! `exec` in it.

use mvm_agent_protocol::{CAPABILITY_NAMES, CapabilitySets, ProcessSpec, Rlimit};

use super::spec::{ContainerSpec, SpecError};

/// Docker's default capabilities (moby's `caps.DefaultCapabilities`).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability name the guest kernel knows.
const ALL_CAPS: &[&str] = &CAPABILITY_NAMES;

/// A capability as users write it (`net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`) in the
/// kernel's spelling; `None` for a name no kernel has.
pub fn capability_name(word: &str) -> Option<String> {
    let upper = word.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPS.contains(&name.as_str()).then_some(name)
}

/// The capability set of the container's processes: Docker's defaults, plus `add`, minus
/// `drop` (`ALL` in either means every capability); `None` for `--privileged` (all of root's).
pub fn capabilities(spec: &ContainerSpec) -> Option<Box<CapabilitySets>> {
    if spec.privileged {
        return None;
    }
    let mut set: Vec<String> = if spec.cap_drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if spec.cap_add.iter().any(|c| c == "ALL") {
        set = ALL_CAPS.iter().map(|c| c.to_string()).collect();
    } else {
        for c in &spec.cap_add {
            if !set.contains(c) {
                set.push(c.clone());
            }
        }
    }
    set.retain(|c| !spec.cap_drop.contains(c));
    Some(Box::new(CapabilitySets {
        bounding: set.clone(),
        effective: set.clone(),
        permitted: set,
        inheritable: Vec::new(),
        ambient: Vec::new(),
    }))
}

/// `--ulimit name=soft[:hard]` (`-1` is unlimited).
pub fn parse_ulimit(s: &str) -> Result<Rlimit, SpecError> {
    const NAMES: &[&str] = &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let bad = || SpecError::Ulimit(s.to_string());
    let (name, values) = s.split_once('=').ok_or_else(bad)?;
    if !NAMES.contains(&name) {
        return Err(bad());
    }
    let value = |v: &str| -> Result<u64, SpecError> {
        if v == "-1" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| bad())
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        return Err(bad());
    }
    Ok(Rlimit {
        kind: name.to_string(),
        soft,
        hard,
    })
}

/// `--sysctl key=value`: any of the VM's own kernel's parameters (it is the container's
/// alone, so Docker's list of namespaced ones does not apply).
pub fn parse_sysctl(s: &str) -> Result<(String, String), SpecError> {
    let bad = || SpecError::Sysctl(s.to_string());
    let (k, v) = s.split_once('=').ok_or_else(bad)?;
    let ok_key = !k.is_empty()
        && !k.starts_with(['.', '/'])
        && !k.contains("..")
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !ok_key || v.contains('\n') {
        return Err(bad());
    }
    Ok((k.to_string(), v.to_string()))
}

/// `--add-host name:ip` (Docker also takes `name=ip`), checked as the agent will read it.
pub fn parse_host(s: &str) -> Result<String, SpecError> {
    let entry = match s.split_once('=') {
        Some((n, ip)) if !n.contains(':') => format!("{n}:{ip}"),
        _ => s.to_string(),
    };
    mvm_agent_protocol::boot::parse_hosts(&entry).map_err(|_| SpecError::Host(s.to_string()))?;
    Ok(entry)
}

/// Sets the process fields these options decide on `p` (the container's process or an exec).
pub fn apply(spec: &ContainerSpec, p: &mut ProcessSpec) {
    p.capabilities = capabilities(spec);
    p.rlimits = spec.ulimits.clone();
    p.sysctl = spec.sysctls.clone();
    p.init = spec.init;
    if spec.read_only {
        p.readonly_paths.push("/".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_with_adds_and_drops() {
        let mut s = ContainerSpec::default();
        let caps = capabilities(&s).unwrap();
        assert_eq!(caps.bounding.len(), 14);
        assert!(caps.inheritable.is_empty() && caps.ambient.is_empty());
        s.cap_add = vec!["CAP_SYS_ADMIN".into()];
        s.cap_drop = vec!["CAP_NET_RAW".into()];
        let caps = capabilities(&s).unwrap();
        assert!(caps.effective.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.effective.contains(&"CAP_NET_RAW".to_string()));
        s.cap_drop = vec!["ALL".into()];
        s.cap_add = vec!["CAP_KILL".into()];
        assert_eq!(capabilities(&s).unwrap().permitted, ["CAP_KILL"]);
        s.privileged = true;
        assert!(capabilities(&s).is_none());
        assert_eq!(
            capability_name("net_admin").as_deref(),
            Some("CAP_NET_ADMIN")
        );
        assert_eq!(capability_name("all").as_deref(), Some("ALL"));
        assert!(capability_name("BOGUS").is_none());
    }

    #[test]
    fn ulimits_sysctls_and_hosts() {
        let r = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((r.kind.as_str(), r.soft, r.hard), ("nofile", 1024, 2048));
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, u64::MAX);
        for bad in ["nofile=x", "nofile", "bogus=1", "nofile=2:1", "nofile=1:"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_sysctl("net.ipv4.ip_forward=1").unwrap(),
            ("net.ipv4.ip_forward".into(), "1".into())
        );
        for bad in ["x", "../etc=1", "/proc=1", "a..b=1", "a b=1", "k=1\n2"] {
            assert!(parse_sysctl(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_host("h1:10.1.2.3").unwrap(), "h1:10.1.2.3");
        assert_eq!(parse_host("h1=10.1.2.3").unwrap(), "h1:10.1.2.3");
        assert_eq!(parse_host("v6:fd00::1").unwrap(), "v6:fd00::1");
        for bad in ["h1", "h1:notanip", "bad name:1.2.3.4", ":1.2.3.4"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}

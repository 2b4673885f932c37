//! Where a repository name lives: Docker's defaults (`busybox` is
//! `docker.io/library/busybox`), the short names the store keeps, and which registries are
//! spoken to over plain HTTP.

use std::net::IpAddr;

/// The registry unqualified names belong to, as Docker has it.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// Environment variable listing extra registries (`host[:port]`, comma-separated) reached over
/// plain HTTP, like dockerd's `--insecure-registry`.
pub const INSECURE_ENV: &str = "MVM_INSECURE_REGISTRIES";

/// A repository split into its registry and its path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteName {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`, ...
    pub registry: String,
    /// `library/busybox`, `org/app`, ...
    pub path: String,
}

/// True when the first component of a repository names a registry (it has a `.` or a `:`, or is
/// `localhost`), as Docker decides it.
fn names_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Splits a repository as users type it into registry and path.
pub fn remote_name(repository: &str) -> RemoteName {
    match repository.split_once('/') {
        Some((first, rest)) if names_registry(first) => {
            let registry = if first == "index.docker.io" {
                DEFAULT_REGISTRY
            } else {
                first
            };
            let path = if registry == DEFAULT_REGISTRY && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            RemoteName {
                registry: registry.to_string(),
                path,
            }
        }
        _ if !repository.contains('/') => RemoteName {
            registry: DEFAULT_REGISTRY.into(),
            path: format!("library/{repository}"),
        },
        _ => RemoteName {
            registry: DEFAULT_REGISTRY.into(),
            path: repository.to_string(),
        },
    }
}

/// The short name the store and `images` use: `docker.io/library/busybox` is `busybox`,
/// `docker.io/org/app` is `org/app`; other registries keep their prefix.
pub fn familiar(repository: &str) -> String {
    let r = remote_name(repository);
    if r.registry == DEFAULT_REGISTRY {
        r.path
            .strip_prefix("library/")
            .filter(|p| !p.contains('/'))
            .unwrap_or(&r.path)
            .to_string()
    } else {
        format!("{}/{}", r.registry, r.path)
    }
}

/// The full name Docker prints after a pull (`docker.io/library/busybox`).
pub fn canonical(repository: &str) -> String {
    let r = remote_name(repository);
    format!("{}/{}", r.registry, r.path)
}

/// The host part of `host[:port]` (with IPv6 brackets removed).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// True when `registry` is reached over plain HTTP: loopback (127.0.0.0/8, `localhost`, `::1`),
/// as Docker treats it, or listed in `MVM_INSECURE_REGISTRIES`.
pub fn is_insecure(registry: &str) -> bool {
    let extra = std::env::var(INSECURE_ENV).unwrap_or_default();
    is_insecure_with(registry, &extra)
}

fn is_insecure_with(registry: &str, extra: &str) -> bool {
    let host = host_of(registry);
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    extra
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|e| e == registry || e == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_defaults() {
        let r = remote_name("busybox");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("docker.io", "library/busybox")
        );
        let r = remote_name("org/app");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("docker.io", "org/app")
        );
        let r = remote_name("docker.io/busybox");
        assert_eq!(r.path, "library/busybox");
        let r = remote_name("index.docker.io/library/busybox");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("docker.io", "library/busybox")
        );
        let r = remote_name("127.0.0.1:5000/busybox");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "busybox")
        );
        let r = remote_name("localhost/a/b");
        assert_eq!((r.registry.as_str(), r.path.as_str()), ("localhost", "a/b"));
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/org/app"), "org/app");
        assert_eq!(familiar("ghcr.io/x/y"), "ghcr.io/x/y");
        assert_eq!(canonical("busybox"), "docker.io/library/busybox");
    }

    #[test]
    fn loopback_is_plain_http() {
        assert!(is_insecure_with("127.0.0.1:5000", ""));
        assert!(is_insecure_with("127.1.2.3", ""));
        assert!(is_insecure_with("localhost:5000", ""));
        assert!(is_insecure_with("[::1]:5000", ""));
        assert!(!is_insecure_with("docker.io", ""));
        assert!(!is_insecure_with("10.0.0.1:5000", ""));
        assert!(is_insecure_with("10.0.0.1:5000", "a.b, 10.0.0.1:5000"));
        assert!(is_insecure_with("reg.lan:5000", "reg.lan"));
    }
}

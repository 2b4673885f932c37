//! The host side of networks: bridges, TAP devices and the nftables rules for outbound NAT
//! and isolation between networks. Done with `ip` and `nft` (iproute2 and nftables), whose
//! errors are passed on in one line.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{MTU, NetworkError, NetworkRecord};

/// The nftables table of the state root `root`'s rules: `mvm` for the default root, and
/// `mvm_<8 hex digits of the root's path hash>` for any other, so that two roots (a user's
/// `--root`, the tests') never flush each other's rules.
pub fn nft_table(root: &std::path::Path) -> String {
    use sha2::Digest;
    if root == std::path::Path::new(crate::paths::DEFAULT_ROOT) {
        return "mvm".into();
    }
    let h = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hex: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("mvm_{hex}")
}

/// The IPv4 destinations routed in this network namespace (`ip -4 route`): ranges a new
/// network must not take, such as another state root's running bridge.
pub fn routed_subnets() -> Vec<super::Subnet> {
    let Ok(out) = Command::new("ip")
        .args(["-j", "-4", "route", "show"])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let Ok(routes) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
        return Vec::new();
    };
    routes
        .iter()
        .filter_map(|r| r.get("dst")?.as_str())
        .filter(|d| *d != "default")
        .filter_map(|d| {
            let d = if d.contains('/') {
                d.to_string()
            } else {
                format!("{d}/32")
            };
            super::Subnet::parse(&d).ok()
        })
        .filter(|s| !s.base.is_loopback())
        .collect()
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), NetworkError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        NetworkError::Host(format!(
            "cannot run {program}: {e} (install iproute2 and nftables: scripts/setup.sh)"
        ))
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Host(format!("{program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed");
    Err(NetworkError::Host(format!(
        "{program} {}: {}",
        args.join(" "),
        first.trim()
    )))
}

fn ip(args: &[&str]) -> Result<(), NetworkError> {
    run("ip", args, None)
}

/// Whether a network interface of that name exists in our network namespace. Asked of the
/// kernel, not of /sys/class/net, which shows the namespace sysfs was mounted in (after a
/// plain `unshare -n`, the host's).
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    !name.is_empty() && unsafe { libc::if_nametoindex(c.as_ptr()) } != 0
}

/// Makes sure the network's bridge exists, has the gateway address, is up, and that the
/// NAT and isolation rules cover it. The caller holds the networks lock.
pub fn ensure_bridge(
    root: &std::path::Path,
    net: &NetworkRecord,
    all: &[NetworkRecord],
) -> Result<(), NetworkError> {
    if !link_exists(&net.bridge) {
        let subnet = net.subnet;
        let mtu = MTU.to_string();
        ip(&[
            "link",
            "add",
            "name",
            &net.bridge,
            "mtu",
            &mtu,
            "type",
            "bridge",
        ])
        .map_err(|e| {
            NetworkError::Host(format!(
                "cannot create the bridge of network {}: {e}",
                net.name
            ))
        })?;
        let addr = format!("{}/{}", net.gateway, subnet.prefix);
        let up = ip(&["addr", "add", &addr, "dev", &net.bridge])
            .and_then(|()| ip(&["link", "set", &net.bridge, "up"]));
        if let Err(e) = up {
            let _ = ip(&["link", "del", &net.bridge]);
            return Err(e);
        }
        // Routing between the bridge and the host's other interfaces (per network namespace),
        // and the rules that cover the new bridge: needed once, when the bridge appears, not
        // on every container start.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetworkError::Host(format!("cannot enable IPv4 forwarding: {e}")))?;
        sync_rules(root, all)?;
    }
    Ok(())
}

/// Removes a network's bridge (its TAPs are gone with their containers) and its rules.
pub fn remove_bridge(net: &NetworkRecord) -> Result<(), NetworkError> {
    if link_exists(&net.bridge) {
        ip(&["link", "del", &net.bridge])?;
    }
    Ok(())
}

/// Rewrites the nftables table of state root `root` ([`nft_table`]) for its bridges that
/// exist: outbound NAT for each range, and no forwarding from one mvm network to another
/// (another root's included).
pub fn sync_rules(root: &std::path::Path, all: &[NetworkRecord]) -> Result<(), NetworkError> {
    let table = nft_table(root);
    let live: Vec<&NetworkRecord> = all.iter().filter(|n| link_exists(&n.bridge)).collect();
    let mut nat = String::new();
    let mut forward = String::new();
    for n in &live {
        nat.push_str(&format!(
            "    ip saddr {} oifname != \"{}\" masquerade\n",
            n.subnet, n.bridge
        ));
        forward.push_str(&format!(
            "    iifname \"{}\" oifname \"mvmbr-*\" oifname != \"{}\" drop\n",
            n.bridge, n.bridge
        ));
    }
    let script = format!(
        "table ip {table} {{}}\nflush table ip {table}\ntable ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{nat}  }}\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}\n}}\n"
    );
    run("nft", &["-f", "-"], Some(&script))
        .map_err(|e| NetworkError::Host(format!("cannot set the network rules: {e}")))
}

/// Creates the container's TAP device on the bridge, up.
pub fn create_tap(tap: &str, bridge: &str) -> Result<(), NetworkError> {
    if link_exists(tap) {
        // Left by a container whose monitor was killed: it is ours by name.
        let _ = ip(&["link", "del", tap]);
    }
    let mtu = MTU.to_string();
    ip(&["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        .map_err(|e| NetworkError::Host(format!("cannot create TAP device {tap}: {e}")))?;
    let attach = ip(&["link", "set", tap, "mtu", &mtu, "master", bridge, "up"]);
    if let Err(e) = attach {
        let _ = ip(&["link", "del", tap]);
        return Err(e);
    }
    Ok(())
}

/// Creates a spare TAP device of a running container: up, on no bridge until `network
/// connect` attaches it.
pub fn create_spare_tap(tap: &str) -> Result<(), NetworkError> {
    if link_exists(tap) {
        let _ = ip(&["link", "del", tap]);
    }
    let mtu = MTU.to_string();
    ip(&["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        .map_err(|e| NetworkError::Host(format!("cannot create TAP device {tap}: {e}")))?;
    if let Err(e) = ip(&["link", "set", tap, "mtu", &mtu, "up"]) {
        let _ = ip(&["link", "del", tap]);
        return Err(e);
    }
    Ok(())
}

/// Puts a running container's TAP device on `bridge` (`network connect`).
pub fn attach_tap(tap: &str, bridge: &str) -> Result<(), NetworkError> {
    ip(&["link", "set", tap, "master", bridge, "up"])
        .map_err(|e| NetworkError::Host(format!("cannot attach {tap} to {bridge}: {e}")))
}

/// Takes a running container's TAP device off its bridge (`network disconnect`).
pub fn detach_tap(tap: &str) -> Result<(), NetworkError> {
    ip(&["link", "set", tap, "nomaster"])
        .map_err(|e| NetworkError::Host(format!("cannot detach {tap}: {e}")))
}

/// Deletes a TAP device if it exists.
pub fn delete_tap(tap: &str) {
    if link_exists(tap)
        && let Err(e) = ip(&["link", "del", tap])
    {
        tracing::warn!("cannot delete TAP device {tap}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn each_state_root_has_a_table_of_its_own() {
        assert_eq!(nft_table(Path::new(crate::paths::DEFAULT_ROOT)), "mvm");
        let (a, b) = (
            nft_table(Path::new("/tmp/a")),
            nft_table(Path::new("/tmp/b")),
        );
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert!(t.starts_with("mvm_") && t.len() == 12, "{t}");
            assert!(
                t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                "{t}"
            );
        }
        assert_eq!(a, nft_table(Path::new("/tmp/a")));
    }
}

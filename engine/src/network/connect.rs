//! `network connect` and `network disconnect`: a container's endpoints, changed in its
//! record and, while it runs, live in its VM.

use std::path::Path;

use crate::container::{self, SpecError};
use crate::error::EngineError;

fn conflict(e: impl std::fmt::Display) -> EngineError {
    EngineError::Conflict(e.to_string())
}

/// Connects container `container_key` to network `net_key` (`aliases`: its extra names
/// there): a running container's VM takes the address on a spare interface at once, a
/// stopped one gets it at its next start.
pub fn connect(
    root: &Path,
    net_key: &str,
    container_key: &str,
    aliases: &[String],
) -> Result<(), EngineError> {
    connect_inner(root, net_key, container_key, aliases)?;
    event(root, net_key, container_key, "connect");
    Ok(())
}

/// The network's `connect` or `disconnect` event.
fn event(root: &Path, net_key: &str, container_key: &str, action: &str) {
    if let (Ok(net), Ok((_, c))) = (
        super::find(root, net_key),
        container::resolve(root, container_key),
    ) {
        let attrs = [
            ("container", c.id.as_str()),
            ("name", net.name.as_str()),
            ("type", "bridge"),
        ];
        crate::events::record(root, "network", action, &net.id, &attrs);
    }
}

fn connect_inner(
    root: &Path,
    net_key: &str,
    container_key: &str,
    aliases: &[String],
) -> Result<(), EngineError> {
    let (dirs, rec, _cmd) = container::resolve_locked(root, container_key)?;
    if rec.spec.network == container::NetworkMode::None {
        return Err(EngineError::Conflict(format!(
            "container {} has --network none: it cannot join a network",
            rec.name
        )));
    }
    let running = rec.is_running();
    if running && rec.effective().0 != container::Status::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is {}: connect it once it runs, or stop it first",
            rec.name,
            rec.effective().0
        )));
    }
    let lock = super::lock(root).map_err(EngineError::runtime)?;
    let net = if net_key == super::DEFAULT_NETWORK {
        super::default_locked(root)
    } else {
        super::find(root, net_key)
    }
    .map_err(conflict)?;
    if rec.endpoints.iter().any(|e| e.network_id == net.id) {
        return Err(EngineError::Conflict(format!(
            "endpoint with name {} already exists in network {}",
            rec.name, net.name
        )));
    }
    if !aliases.is_empty() && !net.has_names() {
        return Err(SpecError::AliasesNeedUserNetwork.into());
    }
    if running {
        // One of the VM's spare interfaces takes the address.
        let Some(nic) = rec
            .nics
            .iter()
            .find(|n| !rec.endpoints.iter().any(|e| e.tap == n.tap))
        else {
            return Err(EngineError::Conflict(format!(
                "container {} has no spare network interface left (a microVM gets up to {} at start, MVM_SPARE_NICS, as far as its virtio devices go): stop it, connect, then start it",
                rec.name,
                super::spare_nic_count()
            )));
        };
        let mut ep = super::allocate_locked(root, &net, &rec.id, 0, aliases.to_vec(), &[])
            .map_err(conflict)?;
        ep.tap = nic.tap.clone();
        ep.mac = nic.mac;
        dirs.update(|r| r.endpoints.push(ep.clone()))
            .map_err(conflict)?;
        let all = super::list(root);
        let result = super::live::connect(&dirs, &rec, &net, &all, &ep);
        drop(lock);
        result.map_err(conflict)?;
        return Ok(());
    }
    let index = (0..super::MAX_NICS).find(|i| {
        !rec.endpoints
            .iter()
            .any(|e| e.tap == super::tap_name(&rec.id, *i))
    });
    let Some(index) = index else {
        return Err(EngineError::Conflict(format!(
            "container {} is on {} networks, the most a microVM can have",
            rec.name,
            rec.endpoints.len()
        )));
    };
    let ep = super::allocate_locked(root, &net, &rec.id, index, aliases.to_vec(), &[])
        .map_err(conflict)?;
    dirs.update(|r| r.endpoints.push(ep)).map_err(conflict)?;
    Ok(())
}

/// Disconnects container `container_key` from network `net_key`.
pub fn disconnect(root: &Path, net_key: &str, container_key: &str) -> Result<(), EngineError> {
    disconnect_inner(root, net_key, container_key)?;
    event(root, net_key, container_key, "disconnect");
    Ok(())
}

fn disconnect_inner(root: &Path, net_key: &str, container_key: &str) -> Result<(), EngineError> {
    let (dirs, rec, _cmd) = container::resolve_locked(root, container_key)?;
    let net = super::find(root, net_key).map_err(conflict)?;
    let Some(ep) = rec
        .endpoints
        .iter()
        .find(|e| e.network_id == net.id)
        .cloned()
    else {
        return Err(EngineError::Conflict(format!(
            "container {} is not connected to network {}",
            rec.name, net.name
        )));
    };
    if rec.is_running() {
        if rec.effective().0 != container::Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is {}: disconnect it once it runs, or stop it first",
                rec.name,
                rec.effective().0
            )));
        }
        let _lock = super::lock(root).map_err(EngineError::runtime)?;
        super::live::disconnect(&dirs, &rec, &ep).map_err(conflict)?;
        return Ok(());
    }
    dirs.update(|r| r.endpoints.retain(|e| e.network_id != net.id))
        .map_err(conflict)?;
    Ok(())
}

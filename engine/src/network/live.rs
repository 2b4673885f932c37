//! `network connect` and `disconnect` of a running container. virtio-mmio has no hotplug, so
//! a running VM has spare interfaces from boot (`vm_nics`): connecting gives one of them an
//! address on the network (its TAP goes on the network's bridge and the agent configures the
//! guest's side); disconnecting undoes that and leaves the interface spare again. The
//! container's owner then follows the record with its DNS servers.

use std::time::Duration;

use mvm_agent_protocol::{
    AgentMessage, DEFAULT_VSOCK_PORT, Frame, FrameReader, FrameWriter, HostMessage, NetworkUp,
    host_handshake,
};

use super::{Endpoint, MTU, NetworkRecord, host};
use crate::container::{ContainerDirs, ContainerRecord};

/// How long the agent has to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one network message to the container's agent and waits for its `done`.
fn tell_agent(dirs: &ContainerDirs, msg: &HostMessage) -> Result<(), String> {
    let reach = |e: &dyn std::fmt::Display| format!("cannot reach the container's agent: {e}");
    let stream =
        crate::session::connect_guest(&dirs.vsock_path(), DEFAULT_VSOCK_PORT, AGENT_TIMEOUT)
            .map_err(|e| reach(&e))?;
    stream
        .set_read_timeout(Some(AGENT_TIMEOUT))
        .map_err(|e| reach(&e))?;
    let mut reader = FrameReader::new(std::io::BufReader::new(
        stream.try_clone().map_err(|e| reach(&e))?,
    ));
    let mut writer = FrameWriter::new(stream);
    host_handshake(&mut reader, &mut writer).map_err(|e| reach(&e))?;
    writer
        .write_control(msg)
        .and_then(|()| writer.flush())
        .map_err(|e| reach(&e))?;
    match reader.read_frame::<AgentMessage>() {
        Ok(Some(Frame::Control(AgentMessage::Done))) => Ok(()),
        Ok(Some(Frame::Control(AgentMessage::Error { message }))) => {
            Err(format!("the container's agent: {message}"))
        }
        Ok(other) => Err(format!("the container's agent answered {other:?}")),
        Err(e) => Err(reach(&e)),
    }
}

/// The agent's message that configures `e` in the guest; the first endpoint also carries the
/// default route and the DNS server (its gateway).
fn up_message(e: &Endpoint, first: bool) -> HostMessage {
    HostMessage::NetworkUp(NetworkUp {
        mac: e.mac.to_string(),
        address: e.ip,
        prefix: e.prefix,
        gateway: first.then_some(e.gateway),
        mtu: Some(MTU),
        dns: first.then_some(e.gateway),
    })
}

/// Asks the container's owner to follow the record (its DNS servers).
fn tell_owner(dirs: &ContainerDirs) -> Result<(), String> {
    crate::session::request(&dirs.control_path(), "networks")
}

/// Connects running container `rec` to `net` with address `ep` (allocated on the interface
/// `ep.tap`/`ep.mac` and already saved in the record): host side, guest side, owner. On
/// failure everything is undone, the endpoint removed from the record.
pub fn connect(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    net: &NetworkRecord,
    all: &[NetworkRecord],
    ep: &Endpoint,
) -> Result<(), String> {
    let first = rec.endpoints.is_empty();
    let result = host::ensure_bridge(&dirs.root, net, all)
        .and_then(|()| host::attach_tap(&ep.tap, &net.bridge))
        .map_err(|e| e.to_string())
        .and_then(|()| tell_agent(dirs, &up_message(ep, first)))
        .and_then(|()| tell_owner(dirs));
    if let Err(e) = result {
        let _ = tell_agent(
            dirs,
            &HostMessage::NetworkDown {
                mac: ep.mac.to_string(),
            },
        );
        let _ = host::detach_tap(&ep.tap);
        let _ = dirs.update(|r| r.endpoints.retain(|x| x.tap != ep.tap));
        let _ = tell_owner(dirs);
        return Err(e);
    }
    Ok(())
}

/// Disconnects running container `rec` from the network of its endpoint `ep`: the guest's
/// interface goes down, the TAP leaves the bridge, the record forgets the address; when that
/// was the first network, the next one takes the default route and DNS.
pub fn disconnect(
    dirs: &ContainerDirs,
    rec: &ContainerRecord,
    ep: &Endpoint,
) -> Result<(), String> {
    tell_agent(
        dirs,
        &HostMessage::NetworkDown {
            mac: ep.mac.to_string(),
        },
    )?;
    host::detach_tap(&ep.tap).map_err(|e| e.to_string())?;
    let updated = dirs.update(|r| r.endpoints.retain(|x| x.tap != ep.tap))?;
    let was_first = rec.endpoints.first().is_some_and(|f| f.tap == ep.tap);
    if was_first && let Some(next) = updated.endpoints.first() {
        tell_agent(dirs, &up_message(next, true))?;
    }
    tell_owner(dirs)
}

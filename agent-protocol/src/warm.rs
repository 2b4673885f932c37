//! Warm starts: how a VM restored from a template snapshot is told which container it is.
//!
//! A template VM boots with `mvm.template=1`: the agent mounts only the kernel's file systems
//! and listens on [`TEMPLATE_PORT`]; the host connects, the agent says [`WarmReady`], and the
//! host snapshots the VM there (touching no container disk). Each VM restored from that
//! snapshot is then connected to again (the restore reset the old connection): the agent says
//! [`WarmReady`] once more, the host sends [`WarmBoot`] (the container's command line, fresh
//! entropy, the time), and the agent answers [`WarmAnswer`] and boots the container as if the
//! kernel had been given that command line. Every message is one control frame.

use serde::{Deserialize, Serialize};

/// The vsock port a template's agent listens on.
pub const TEMPLATE_PORT: u32 = 1026;
/// Fewest random bytes a warm boot carries (the guest's RNG is reseeded from them).
pub const MIN_ENTROPY: usize = 32;
/// Most random bytes a warm boot carries.
pub const MAX_ENTROPY: usize = 512;
/// Longest command line a warm boot carries (the kernel's own limit on x86).
pub const MAX_CMDLINE: usize = 2048;
/// Most network interfaces a warm boot names.
pub const MAX_NICS: usize = 32;

/// The agent is waiting for its container.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct WarmReady {
    /// [`crate::PROTOCOL_VERSION`] of the agent.
    pub version: u32,
}

/// Which container this VM is.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct WarmBoot {
    /// The kernel command line the VM would have booted with (its `mvm.*` words are read).
    pub cmdline: String,
    /// Random bytes from the host, mixed into the guest's RNG, which is then reseeded: no two
    /// VMs restored from one snapshot share their RNG's state.
    pub entropy: Vec<u8>,
    /// The host's wall-clock time (nanoseconds since the epoch), to set the guest's: it stood
    /// still from the snapshot to the restore.
    pub unix_time_ns: u64,
    /// The MAC address of each network interface, in the VM's order (eth0, eth1, ...): the
    /// template's interfaces had the template's; the agent gives each the container's before
    /// it configures them (it finds them by MAC).
    #[serde(default)]
    pub macs: Vec<crate::boot::MacAddr>,
}

/// The agent's answer to a warm boot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum WarmAnswer {
    /// The RNG is reseeded, the clock set, the command line read: the container boots now, as
    /// a cold-booted VM would (its callback follows).
    Booting,
    /// The warm boot was refused; the agent powers off.
    Refused {
        /// Why, in one line.
        message: String,
    },
}

impl WarmBoot {
    /// The checks the agent makes before using a warm boot.
    pub fn check(&self) -> Result<(), String> {
        if !(MIN_ENTROPY..=MAX_ENTROPY).contains(&self.entropy.len()) {
            return Err(format!(
                "{} bytes of entropy, expected {MIN_ENTROPY} to {MAX_ENTROPY}",
                self.entropy.len()
            ));
        }
        if self.cmdline.len() > MAX_CMDLINE {
            return Err(format!("a command line of {} bytes", self.cmdline.len()));
        }
        if self.macs.len() > MAX_NICS {
            return Err(format!("{} network interfaces", self.macs.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameReader, FrameWriter};

    #[test]
    fn a_warm_boot_round_trips_as_a_control_frame() {
        let boot = WarmBoot {
            cmdline: "console=ttyS0 mvm.lower=/dev/vdb".into(),
            entropy: vec![7; 64],
            unix_time_ns: 1_796_680_716_328_000_000,
            macs: vec![crate::boot::MacAddr([2, 0, 0, 0, 0, 9])],
        };
        boot.check().unwrap();
        let mut buf = Vec::new();
        FrameWriter::new(&mut buf).write_control(&boot).unwrap();
        let frame = FrameReader::new(&buf[..])
            .read_frame::<WarmBoot>()
            .unwrap()
            .unwrap();
        assert_eq!(frame, crate::Frame::Control(boot));
    }

    #[test]
    fn too_little_entropy_is_refused() {
        let boot = WarmBoot {
            cmdline: String::new(),
            entropy: vec![1; 8],
            unix_time_ns: 0,
            macs: Vec::new(),
        };
        assert!(boot.check().unwrap_err().contains("8 bytes of entropy"));
    }
}

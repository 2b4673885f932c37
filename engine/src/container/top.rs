//! The container's processes, as its agent lists them from the guest (`top`, and the PIDS
//! column of `stats`).

use std::path::Path;

use mvm_agent_protocol::{AgentMessage, HostMessage, ProcessEntry};

use super::{ContainerError, ContainerRecord, resolve};
use crate::changes::ChangesError;
use crate::error::EngineError;

/// The processes of the running container `key`, by PID (a paused one is resumed for the
/// question).
pub fn processes(root: &Path, key: &str) -> Result<Vec<ProcessEntry>, EngineError> {
    let (dirs, rec) = resolve(root, key)?;
    if !rec.is_running() {
        return Err(ContainerError::NotRunning(rec.id).into());
    }
    super::signal::while_awake(&dirs, &rec, |_| ask(&dirs))
        .map_err(|e| EngineError::runtime(format!("cannot list the container's processes: {e}")))
}

/// How many processes the running container `rec` has; `None` when its agent does not say.
pub fn count(root: &Path, rec: &ContainerRecord) -> Option<usize> {
    let dirs = super::ContainerDirs::new(root, &rec.id);
    ask(&dirs).ok().map(|p| p.len())
}

fn ask(dirs: &super::ContainerDirs) -> Result<Vec<ProcessEntry>, ChangesError> {
    crate::changes::with_running(dirs, |r, w| {
        w.write_control(&HostMessage::Processes)
            .and_then(|()| w.flush())
            .map_err(|e| ChangesError::Protocol(e.to_string()))?;
        match crate::changes::read_reply(r)? {
            AgentMessage::Processes { processes } => Ok(processes),
            _ => Err(ChangesError::Protocol(
                "no process list in the answer".into(),
            )),
        }
    })
}

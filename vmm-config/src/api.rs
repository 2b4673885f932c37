//! The VMM's control socket: one JSON request per line, one JSON response per line.
//!
//! A host program (the runtime, a test) connects to the unix socket named by
//! [`crate::VmConfig::api_socket`] and sends, for example,
//! `{"action":"pause"}` then `{"action":"snapshot","state":"/vm/s.state","memory":"/vm/s.mem"}`
//! then `{"action":"resume"}`; each answer is `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//! Defined here, once, for both ends.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest request line the VMM reads; a longer one is refused and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// What a client asks the VMM to do.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Stop every vCPU (devices stop taking buffers from the guest with them).
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Write the paused VM's state and memory to these files (created, or truncated). Paths
    /// are the host's: with a jail they must lie directly in the jail's root.
    Snapshot {
        /// The state file.
        state: PathBuf,
        /// The guest memory file.
        memory: PathBuf,
    },
    /// Whether the VM runs or is paused.
    Status,
}

/// Whether the vCPUs run.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The vCPUs run.
    Running,
    /// The vCPUs are stopped.
    Paused,
}

/// The VMM's answer to one request.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ApiResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The VM's state after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// A snapshot's state file size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    /// A snapshot's memory file: bytes actually written (pages the guest never touched are
    /// left as holes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes_written: Option<u64>,
    /// How long the request took, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micros: Option<u64>,
}

impl ApiResponse {
    /// A refusal with its reason.
    pub fn error(reason: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(reason.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r: ApiRequest =
            serde_json::from_str(r#"{"action":"snapshot","state":"/a","memory":"/b"}"#).unwrap();
        assert_eq!(
            r,
            ApiRequest::Snapshot {
                state: "/a".into(),
                memory: "/b".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&ApiRequest::Pause).unwrap(),
            r#"{"action":"pause"}"#
        );
        assert!(serde_json::from_str::<ApiRequest>(r#"{"action":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<ApiRequest>(r#"{"action":"pause","x":1}"#).is_err());
    }
}

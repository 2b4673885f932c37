//! The VMM's control socket: one JSON request per line, one JSON response per line.
//!
//! A host program (the runtime, a test) connects to the unix socket named by
//! [`crate::VmConfig::api_socket`] and sends, for example, `{"action":"pause"}`, then
//! `{"action":"snapshot"}` with the two files to write attached to that line as descriptors
//! (`SCM_RIGHTS`: the state file, then the memory file, both open for writing), then
//! `{"action":"resume"}`; each answer is `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//! The VMM never opens a path for a snapshot: its jail lets it open no file at all, and the
//! host decides where the files go. Defined here, once, for both ends.

use serde::{Deserialize, Serialize};

/// The longest request line the VMM reads; a longer one is refused and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Descriptors a snapshot request carries: the state file, then the memory file.
pub const SNAPSHOT_FILES: usize = 2;

/// What a client asks the VMM to do.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Stop every vCPU (devices stop taking buffers from the guest with them).
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Write the paused VM's state and memory to the two files sent with the request
    /// (descriptors, state first; both are truncated and written from their start).
    Snapshot,
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
        let r: ApiRequest = serde_json::from_str(r#"{"action":"snapshot"}"#).unwrap();
        assert_eq!(r, ApiRequest::Snapshot);
        assert_eq!(
            serde_json::to_string(&ApiRequest::Pause).unwrap(),
            r#"{"action":"pause"}"#
        );
        assert!(serde_json::from_str::<ApiRequest>(r#"{"action":"reboot"}"#).is_err());
    }
}

//! The VMM's control socket: one JSON request per line, one JSON response per line.
//!
//! A host program (the runtime, a test) connects to the unix socket named by
//! [`crate::VmConfig::api_socket`] and sends, for example, `{"action":"pause"}`, then
//! `{"action":"snapshot"}` with the two files to write attached to that line as descriptors
//! (`SCM_RIGHTS`: the state file, then the memory file, both open for writing), then
//! `{"action":"resume"}`; each answer is `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//! The VMM never opens a path for a snapshot: its jail lets it open no file at all, and the
//! host decides where the files go. Defined here, once, for both ends.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

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

/// Talking to a VMM's control socket failed (a refusal is an answer, not this error).
#[derive(Debug, thiserror::Error)]
#[error("the VMM's control socket {path}: {reason}")]
pub struct ApiClientError {
    /// The socket.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// The longest answer a client reads: an answer comes from a process that serves a guest.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 10;

/// A client of a VMM's control socket: one request, one answer, at a time.
pub struct ApiClient {
    stream: BufReader<UnixStream>,
    path: String,
    /// An earlier request failed midway: its answer may still come and would be taken for
    /// the next one's, so the client is not used again.
    broken: bool,
}

impl ApiClient {
    /// Connects to the socket at `path`; an answer may take up to `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ApiClientError> {
        let name = path.display().to_string();
        let err = |e: std::io::Error| ApiClientError {
            path: name.clone(),
            reason: e.to_string(),
        };
        let s = UnixStream::connect(path).map_err(err)?;
        s.set_read_timeout(Some(timeout)).map_err(err)?;
        Ok(Self {
            stream: BufReader::new(s),
            path: name,
            broken: false,
        })
    }

    fn fail(&self, reason: impl ToString) -> ApiClientError {
        ApiClientError {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends `req` with `files` attached (a snapshot's two files) and returns the answer,
    /// whether it says `ok` or not.
    pub fn send(
        &mut self,
        req: &ApiRequest,
        files: &[&File],
    ) -> Result<ApiResponse, ApiClientError> {
        if self.broken {
            return Err(self.fail("not used again after an earlier failure"));
        }
        self.broken = true;
        let mut line = serde_json::to_vec(req).map_err(|e| self.fail(e))?;
        line.push(b'\n');
        let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        self.stream
            .get_ref()
            .send_with_fds(&[&line[..]], &fds)
            .map_err(|e| self.fail(e))?;
        let mut answer = String::new();
        std::io::Read::take(&mut self.stream, MAX_RESPONSE_BYTES)
            .read_line(&mut answer)
            .map_err(|e| self.fail(e))?;
        if !answer.ends_with('\n') {
            return Err(self.fail("no whole answer"));
        }
        let resp =
            serde_json::from_str(&answer).map_err(|e| self.fail(format!("not an answer: {e}")))?;
        self.broken = false;
        Ok(resp)
    }

    /// As [`ApiClient::send`], with a refusal as an error (its reason).
    pub fn ask(
        &mut self,
        req: &ApiRequest,
        files: &[&File],
    ) -> Result<ApiResponse, ApiClientError> {
        let resp = self.send(req, files)?;
        if !resp.ok {
            return Err(self.fail(format!(
                "refused: {}",
                resp.error.as_deref().unwrap_or("no reason given")
            )));
        }
        Ok(resp)
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

//! `mvm-vmmctl`: talks to a running `mvm-vmm`'s control socket (`--api-sock`).
//!
//! ```text
//! mvm-vmmctl SOCKET status|pause|resume
//! mvm-vmmctl SOCKET snapshot STATE_FILE MEMORY_FILE
//! ```
//! Prints the VMM's answer (one JSON line) and exits 0 when it says `ok`, 1 otherwise. For a
//! snapshot it creates (or truncates) both files itself, mode 0600, and hands them to the
//! VMM as descriptors: the VMM never opens a path.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mvm_vmm_config::api::{ApiClient, ApiRequest, ApiResponse};

const USAGE: &str = "usage: mvm-vmmctl SOCKET status|pause|resume|snapshot STATE_FILE MEMORY_FILE";

fn create(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))
}

fn run(args: &[String]) -> Result<ApiResponse, String> {
    let (socket, action, rest) = match args {
        [s, a, rest @ ..] => (s, a.as_str(), rest),
        _ => return Err(USAGE.into()),
    };
    let (req, files) = match (action, rest) {
        ("status", []) => (ApiRequest::Status, vec![]),
        ("pause", []) => (ApiRequest::Pause, vec![]),
        ("resume", []) => (ApiRequest::Resume, vec![]),
        ("snapshot", [state, memory]) => {
            (ApiRequest::Snapshot, vec![create(state)?, create(memory)?])
        }
        _ => return Err(USAGE.into()),
    };
    let mut client = ApiClient::connect(Path::new(socket), Duration::from_secs(600))
        .map_err(|e| e.to_string())?;
    let refs: Vec<&File> = files.iter().collect();
    let resp = client.send(&req, &refs).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string(&resp).map_err(|e| e.to_string())?
    );
    Ok(resp)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(resp) if resp.ok => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!(
                "mvm-vmmctl: {}",
                resp.error.unwrap_or_else(|| "refused".into())
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mvm-vmmctl: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Attaching to a running container: its owner (monitor or attached `run`) serves attach
//! sessions on its control socket: an `attach` line, `ok`, then frames of the agent protocol
//! both ways (`session.rs`). A client gets the open stream; what it reads and writes over it
//! (stdin, a terminal, detach keys) is the client's.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ContainerDirs, ContainerError, ContainerRecord, Status, resolve};

/// Container `key`'s attach stream, with the container as it was when it opened.
pub fn open(
    root: &Path,
    key: &str,
) -> Result<(ContainerDirs, ContainerRecord, UnixStream), ContainerError> {
    let (dirs, rec) = resolve(root, key)?;
    let refused = |why: &'static str| Err(ContainerError::CannotAttach(why));
    match rec.effective().0 {
        Status::Running => {}
        Status::Paused => {
            return refused("You cannot attach to a paused container, unpause it first");
        }
        Status::Restarting => {
            return refused(
                "You cannot attach to a restarting container, wait until it is running",
            );
        }
        _ => return refused("You cannot attach to a stopped container, start it first"),
    }
    let conn = connect(&dirs.control_path()).map_err(ContainerError::Owner)?;
    Ok((dirs, rec, conn))
}

/// Opens an attach session on the container's control socket.
fn connect(control: &Path) -> Result<UnixStream, String> {
    let mut s =
        UnixStream::connect(control).map_err(|e| format!("cannot reach the container: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| s.write_all(b"attach\n"))
        .map_err(|e| format!("cannot reach the container: {e}"))?;
    // The frames follow the answer on the same stream.
    let line = crate::session::read_line_unbuffered(&mut s, 256)
        .map_err(|e| format!("cannot reach the container: {e}"))?;
    let answer = String::from_utf8_lossy(&line);
    if answer != "ok" {
        return Err(format!(
            "cannot attach: {}",
            answer.trim_start_matches("error ")
        ));
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}

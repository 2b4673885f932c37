//! Terminals: a pty pair whose master goes to the engine over `--console-socket` (SCM_RIGHTS,
//! as runc sends it) and whose slave becomes the relay's stdio, in raw mode so the guest's own
//! pty is the only line discipline.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use crate::error::RuntimeError;

/// A new pty of `size` (rows, columns); the slave is raw.
pub fn open(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let ws = size.map(|(rows, cols)| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let OpenptyResult { master, slave } = openpty(ws.as_ref(), None)
        .map_err(|e| RuntimeError::Other(format!("cannot open a pty: {e}")))?;
    let mut t = tcgetattr(&slave)
        .map_err(|e| RuntimeError::Other(format!("cannot read the pty's modes: {e}")))?;
    cfmakeraw(&mut t);
    tcsetattr(&slave, SetArg::TCSANOW, &t)
        .map_err(|e| RuntimeError::Other(format!("cannot make the pty raw: {e}")))?;
    Ok((master, slave))
}

/// Sends `master` to the unix socket at `socket`.
pub fn send_master(socket: &Path, master: &OwnedFd) -> Result<(), RuntimeError> {
    let fail = |e: String| {
        RuntimeError::Other(format!(
            "cannot send the terminal to the console socket {}: {e}",
            socket.display()
        ))
    };
    let s = UnixStream::connect(socket).map_err(|e| fail(e.to_string()))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSliceMut, Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_arrives_and_carries_what_the_slave_writes() {
        let dir = std::env::temp_dir().join(format!("mvm-oci-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (master, slave) = open(Some((30, 100))).unwrap();
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = nix::sys::socket::recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let fd = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                })
                .unwrap();
            // SAFETY: the descriptor was just received and is owned by nobody else.
            unsafe { std::fs::File::from_raw_fd(fd) }
        });
        send_master(&sock, &master).unwrap();
        drop(master);
        let mut got = receiver.join().unwrap();
        let mut slave = std::fs::File::from(slave);
        // Raw: "\n" is not turned into "\r\n".
        slave.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 3];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi\n");
        let e = send_master(&dir.join("missing.sock"), &slave.into()).unwrap_err();
        assert!(e.to_string().contains("console socket"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

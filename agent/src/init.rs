//! PID 1's main line: boot, serve the host, power off. Every failure ends in a clean power
//! off, never in a panic (which would be a kernel panic).

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::boot::{BootError, boot};
use crate::reaper::{ReapMode, Reaper};
use crate::session::{SessionConfig, SessionError, SessionOutcome, serve};
use crate::shutdown::power_off;
use crate::vsock::VsockListener;
use crate::{log_debug, log_error};

/// Why the agent gave up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Booting failed.
    #[error("boot: {0}")]
    Boot(#[from] BootError),
    /// Listening or accepting on vsock failed.
    #[error("vsock: {0}")]
    Vsock(#[source] std::io::Error),
    /// Setting up child reaping failed.
    #[error("reaper: {0}")]
    Reaper(#[source] nix::Error),
    /// The session failed.
    #[error("session: {0}")]
    Session(#[from] SessionError),
}

/// Runs the agent as PID 1. Never returns.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        log_error!("panic: {info}");
    }));
    match catch_unwind(AssertUnwindSafe(run_inner)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log_error!("fatal: {e}"),
        Err(_) => log_error!("fatal: panicked"),
    }
    power_off()
}

/// Connects to the host, retrying briefly: the host's socket exists before the VM starts, so
/// a failure here is transient (a busy host) or final (the host gave up).
fn connect_with_retry(port: u32) -> std::io::Result<crate::vsock::VsockStream> {
    let mut last = None;
    for attempt in 0..50u64 {
        match crate::vsock::VsockStream::connect_host(port) {
            Ok(s) => return Ok(s),
            Err(e) => {
                log_debug!("connect to host port {port} failed: {e}");
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20 + attempt * 10));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::TimedOut.into()))
}

/// Serves `exec` connections, each on its own thread, for as long as the VM runs.
fn serve_exec_sessions(
    listener: VsockListener,
    session: &'static SessionConfig,
    reaper: &'static Reaper,
) {
    loop {
        match listener.accept() {
            Ok(conn) => {
                std::thread::spawn(move || match serve(conn, session, reaper) {
                    Ok(outcome) => log_debug!("exec session over: {outcome:?}"),
                    Err(e) => log_error!("exec session failed: {e}"),
                });
            }
            Err(e) => {
                log_error!("accepting an exec connection failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn run_inner() -> Result<(), InitError> {
    let config = boot()?;
    // Before anything could start a thread or a child: SIGCHLD is blocked for the signalfd.
    // PID 1 lives as long as the VM: these are shared with the exec threads for good.
    let reaper: &'static Reaper = Box::leak(Box::new(
        Reaper::new(ReapMode::All).map_err(InitError::Reaper)?,
    ));
    if config.dns_relay {
        crate::dns_forward::start();
    }
    let listener = VsockListener::bind(config.port).map_err(InitError::Vsock)?;
    log_debug!("listening on vsock port {}", config.port);
    let session: &'static SessionConfig =
        Box::leak(Box::new(SessionConfig::guest(config.hostname.clone())));
    if let Some(port) = config.callback {
        // The host waits on its side of this port: connecting tells it the agent is ready.
        let conn = connect_with_retry(port).map_err(InitError::Vsock)?;
        log_debug!("connected to the host on port {port}");
        // While the container's process runs, further connections are `exec` sessions: each
        // runs one more process in the container, and ending it does not end the VM.
        std::thread::spawn(move || serve_exec_sessions(listener, session, reaper));
        // The callback session is the container: when it ends, so does the VM.
        let outcome = serve(conn, session, reaper)?;
        log_debug!("session over: {outcome:?}");
        return Ok(());
    }
    loop {
        let conn = listener.accept().map_err(InitError::Vsock)?;
        log_debug!("host connected");
        match serve(conn, session, reaper)? {
            SessionOutcome::NoProcess => log_debug!("session ended without a process"),
            outcome => {
                log_debug!("session over: {outcome:?}");
                return Ok(());
            }
        }
    }
}

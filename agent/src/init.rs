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

fn run_inner() -> Result<(), InitError> {
    let config = boot()?;
    // Before anything could start a thread or a child: SIGCHLD is blocked for the signalfd.
    let reaper = Reaper::new(ReapMode::All).map_err(InitError::Reaper)?;
    let listener = VsockListener::bind(config.port).map_err(InitError::Vsock)?;
    log_debug!("listening on vsock port {}", config.port);
    let session = SessionConfig::guest(config.hostname.clone());
    loop {
        let conn = listener.accept().map_err(InitError::Vsock)?;
        log_debug!("host connected");
        match serve(conn, &session, &reaper)? {
            SessionOutcome::NoProcess => log_debug!("session ended without a process"),
            outcome => {
                log_debug!("session over: {outcome:?}");
                return Ok(());
            }
        }
    }
}

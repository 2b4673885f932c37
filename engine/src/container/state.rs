//! A container's live state, kept in its record apart from its spec, and the transitions
//! between states. Every change of state goes through one of these methods, so the rules
//! (what a start clears, what an exit records) are written once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Exit code of a container whose VM was killed (as SIGKILL: 128 + 9).
pub const EXIT_KILLED: i32 = 137;

/// Where a container is in its life, as Docker names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started (or reset for a new start).
    #[default]
    Created,
    /// Its VM runs the process.
    Running,
    /// Its vCPUs are stopped (`pause`).
    Paused,
    /// Its process ended and the restart policy is bringing it back.
    Restarting,
    /// Its process ended (or it could not start).
    Exited,
    /// Removing it failed half-way; only `rm` is left to do.
    Dead,
}

impl Status {
    /// The lower-case name Docker shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }

    /// Whether a monitor owns the container: its VM runs, is paused, or is about to be
    /// restarted.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Restarting)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state that does not apply to the state the container is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a container that is {from}")]
pub struct TransitionError {
    /// What was asked.
    pub action: &'static str,
    /// The state it was in.
    pub from: Status,
}

/// The live state of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Where it is.
    pub status: Status,
    /// The last run's exit code (while restarting too).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// PID of the process that owns the VM (the monitor, or `mvm run` when attached).
    #[serde(default)]
    pub pid: Option<u32>,
    /// When the current or last run started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When the last run ended (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Why it could not start, when it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// How often the restart policy brought it back.
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped by `stop` or `kill`: the restart policy does not bring it back.
    #[serde(default)]
    pub manual_stop: bool,
    /// The hypervisor's PID and its helpers' while the VM runs (`pause`, `stats`).
    #[serde(default)]
    pub vm_pids: Vec<u32>,
}

impl State {
    /// Resets for a new start: no error, not stopped by the user, not started yet.
    pub fn prepare_start(&mut self) {
        self.status = Status::Created;
        self.error = None;
        self.manual_stop = false;
        self.vm_pids.clear();
        self.started_at = None;
    }

    /// The VM runs the process; `owner` holds the VM.
    pub fn started(&mut self, owner: u32, vm_pids: Vec<u32>, now: String) {
        self.status = Status::Running;
        self.pid = Some(owner);
        self.started_at = Some(now);
        self.vm_pids = vm_pids;
    }

    /// Whether it ever ran since its last (re)start was prepared.
    pub fn ran(&self) -> bool {
        self.started_at.is_some()
    }

    /// `pause`: only a running container's vCPUs stop.
    pub fn pause(&mut self) -> Result<(), TransitionError> {
        match self.status {
            Status::Running => {
                self.status = Status::Paused;
                Ok(())
            }
            from => Err(TransitionError {
                action: "pause",
                from,
            }),
        }
    }

    /// `unpause`: only a paused container resumes.
    pub fn unpause(&mut self) -> Result<(), TransitionError> {
        match self.status {
            Status::Paused => {
                self.status = Status::Running;
                Ok(())
            }
            from => Err(TransitionError {
                action: "unpause",
                from,
            }),
        }
    }

    /// The process ended with `code` and the policy brings it back.
    pub fn restarting(&mut self, code: i32, now: String) {
        self.status = Status::Restarting;
        self.exit_code = Some(code);
        self.restart_count += 1;
        self.finished_at = Some(now);
        self.vm_pids.clear();
    }

    /// The process ended with `code` (or could not start, saying why in `error`).
    pub fn exited(&mut self, code: i32, error: Option<String>, now: String) {
        self.status = Status::Exited;
        self.exit_code = Some(code);
        self.error = error;
        self.finished_at = Some(now);
        self.vm_pids.clear();
    }

    /// Its owner was killed: a live container is recorded as killed, others stay as they are.
    pub fn killed(&mut self, now: String) {
        if self.status.is_live() {
            self.status = Status::Exited;
            self.exit_code = Some(EXIT_KILLED);
            self.finished_at = Some(now);
        }
        self.vm_pids.clear();
    }

    /// Removal failed half-way.
    pub fn dead(&mut self) {
        self.status = Status::Dead;
        self.vm_pids.clear();
    }

    /// The state as `ps` and `inspect` show it, given whether the owner is alive: a record
    /// that says live but whose owner is gone is reported as exited with 137 (killed), which
    /// is what happened to its VM.
    pub fn effective(&self, owner_alive: bool) -> (Status, Option<i32>) {
        match self.status {
            Status::Running | Status::Paused if owner_alive => (self.status, None),
            Status::Restarting if owner_alive => (Status::Restarting, self.exit_code),
            Status::Running | Status::Paused | Status::Restarting => {
                (Status::Exited, Some(EXIT_KILLED))
            }
            Status::Exited => (Status::Exited, self.exit_code),
            Status::Dead => (Status::Dead, self.exit_code),
            Status::Created => (Status::Created, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> String {
        "2026-12-07T00:00:00Z".into()
    }

    #[test]
    fn a_run_from_created_to_exited() {
        let mut s = State::default();
        assert_eq!(s.effective(false), (Status::Created, None));
        assert!(!s.ran());
        s.started(7, vec![8, 9], now());
        assert!(s.ran());
        assert_eq!(s.effective(true), (Status::Running, None));
        assert_eq!(s.vm_pids, [8, 9]);
        s.exited(3, None, now());
        assert_eq!(s.effective(true), (Status::Exited, Some(3)));
        assert!(s.vm_pids.is_empty());
    }

    #[test]
    fn pause_only_from_running() {
        let mut s = State::default();
        assert_eq!(
            s.pause(),
            Err(TransitionError {
                action: "pause",
                from: Status::Created
            })
        );
        s.started(7, vec![], now());
        s.pause().unwrap();
        assert_eq!(s.effective(true), (Status::Paused, None));
        assert!(s.pause().is_err());
        s.unpause().unwrap();
        assert!(s.unpause().is_err());
        assert_eq!(s.status, Status::Running);
    }

    #[test]
    fn restarts_are_counted_and_a_new_start_clears_the_last_run() {
        let mut s = State::default();
        s.started(7, vec![8], now());
        s.restarting(1, now());
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.effective(true), (Status::Restarting, Some(1)));
        s.manual_stop = true;
        s.error = Some("boom".into());
        s.prepare_start();
        assert_eq!(s.status, Status::Created);
        assert!(!s.manual_stop && s.error.is_none() && !s.ran());
        assert_eq!(s.restart_count, 1, "a new start keeps the count, as Docker");
    }

    #[test]
    fn a_dead_owner_means_killed() {
        for live in [Status::Running, Status::Paused, Status::Restarting] {
            let s = State {
                status: live,
                ..State::default()
            };
            assert_eq!(s.effective(false), (Status::Exited, Some(EXIT_KILLED)));
            assert!(live.is_live());
        }
        let mut s = State::default();
        s.started(7, vec![8], now());
        s.pause().unwrap();
        s.killed(now());
        assert_eq!(s.effective(true), (Status::Exited, Some(EXIT_KILLED)));
        let mut exited = State::default();
        exited.exited(0, None, now());
        exited.killed(now());
        assert_eq!(
            exited.exit_code,
            Some(0),
            "an exited container stays as it was"
        );
    }

    #[test]
    fn statuses_serialise_as_docker_names() {
        for s in [
            Status::Created,
            Status::Running,
            Status::Paused,
            Status::Restarting,
            Status::Exited,
            Status::Dead,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        }
        assert!(serde_json::from_str::<Status>("\"sleeping\"").is_err());
    }
}

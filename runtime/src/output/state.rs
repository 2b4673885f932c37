//! A container's state as `ps` words it: `Up 5 minutes`, `Exited (0) 2 hours ago`.

use mvm_engine::container::{ContainerRecord, Status};

use crate::output::time::{human_duration as human, since};

/// The STATUS column.
pub fn status_text(rec: &ContainerRecord) -> String {
    let st = &rec.state;
    match rec.effective() {
        (Status::Running, _) => format!("Up {}", human(since(st.started_at.as_deref()))),
        (Status::Paused, _) => format!("Up {} (Paused)", human(since(st.started_at.as_deref()))),
        (Status::Restarting, code) => format!(
            "Restarting ({}) {} ago",
            code.unwrap_or(0),
            human(since(st.finished_at.as_deref()))
        ),
        (Status::Exited, code) => format!(
            "Exited ({}) {} ago",
            code.unwrap_or(0),
            human(since(
                st.finished_at.as_deref().or(st.started_at.as_deref())
            ))
        ),
        (Status::Dead, _) => "Dead".into(),
        (Status::Created, _) => "Created".into(),
    }
}

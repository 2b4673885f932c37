//! The container's process as the agent takes it: from the bundle's `process`, or from the
//! `process.json` that `exec --process` names (the same runtime-spec type, read with the same
//! limits as config.json).

use std::path::Path;

use mvm_agent_protocol::{CapabilitySets, ProcessSpec, Rlimit};

use crate::bundle::{self, Process};
use crate::error::{BundleError, RuntimeError};

/// The agent's process spec for `p`; `stdin` says whether the caller gave a stdin worth
/// forwarding (see [`stdin_is_open`]).
pub fn to_agent(p: &Process, stdin: bool) -> ProcessSpec {
    ProcessSpec {
        args: p.args.clone(),
        env: p.env.clone(),
        cwd: p.cwd.to_string_lossy().into_owned(),
        user: format!("{}:{}", p.user.uid, p.user.gid),
        groups: Some(p.user.additional_gids.clone()),
        pid_namespace: true,
        capabilities: p.capabilities.as_ref().map(|c| {
            Box::new(CapabilitySets {
                bounding: c.bounding.clone(),
                effective: c.effective.clone(),
                inheritable: c.inheritable.clone(),
                permitted: c.permitted.clone(),
                ambient: c.ambient.clone(),
            })
        }),
        no_new_privileges: p.no_new_privileges,
        oom_score_adj: p.oom_score_adj,
        terminal: p.terminal,
        stdin: stdin || p.terminal,
        rlimits: p
            .rlimits
            .iter()
            .map(|r| Rlimit {
                kind: r.typ.clone(),
                soft: r.soft,
                hard: r.hard,
            })
            .collect(),
        ..ProcessSpec::default()
    }
}

/// The stdio of a relay running `spec`: its own 0/1/2 are the process's (untouched, or the
/// pty slave), forwarded to and from the agent.
pub fn relay_stdio(spec: &ProcessSpec) -> mvm_engine::session::Stdio {
    mvm_engine::session::Stdio {
        stdin: spec.stdin,
        open_stdin: false,
        tty: spec.terminal,
        attached: true,
        export_layer: None,
    }
}

/// Reads `exec --process FILE`: a runtime-spec `process` object.
pub fn load(path: &Path) -> Result<Process, RuntimeError> {
    let bytes = bundle::read_config(path)?;
    let p: oci_spec::runtime::Process =
        serde_json::from_slice(&bytes).map_err(|e| BundleError::BadJson {
            path: path.to_path_buf(),
            detail: e.to_string(),
            source: e.into(),
        })?;
    let mut ignored = Vec::new();
    Ok(bundle::process(path, &p, &mut ignored)?)
}

/// Whether our stdin is something to forward: not /dev/null (what engines give a container
/// without `-i`) and not closed.
pub fn stdin_is_open() -> bool {
    let stdin = std::io::stdin();
    let Ok(meta) = nix::sys::stat::fstat(&stdin) else {
        return false;
    };
    let Ok(null) = nix::sys::stat::stat("/dev/null") else {
        return true;
    };
    !(meta.st_mode & libc::S_IFMT == libc::S_IFCHR && meta.st_rdev == null.st_rdev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_bundle_process_to_the_agents() {
        let dir = std::env::temp_dir().join(format!("mvm-oci-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("process.json");
        std::fs::write(
            &file,
            r#"{"terminal":false,"user":{"uid":1000,"gid":1000,"additionalGids":[10,1000]},
                "args":["sh","-c","id"],"env":["PATH=/bin","A=b"],"cwd":"/srv",
                "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}]}"#,
        )
        .unwrap();
        let p = load(&file).unwrap();
        let spec = to_agent(&p, false);
        assert_eq!(spec.args, ["sh", "-c", "id"]);
        assert_eq!(spec.user, "1000:1000");
        assert_eq!(spec.groups, Some(vec![10, 1000]));
        assert_eq!(spec.cwd, "/srv");
        assert_eq!(spec.env, ["PATH=/bin", "A=b"]);
        assert_eq!(spec.rlimits[0].soft, 512);
        assert!(!spec.stdin && !spec.terminal);
        std::fs::write(&file, r#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        assert!(
            load(&file)
                .unwrap_err()
                .to_string()
                .contains("process.args")
        );
        std::fs::write(&file, "{").unwrap();
        assert!(load(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

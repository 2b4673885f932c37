//! The bundle's `cgroupsPath`: the relay joins that cgroup in every hierarchy before it boots
//! the VM, the VM's host processes join it too with the VM's limits set on it (the engine's
//! `cgroup_parent`), so the engine's view of the container (`docker stats`, its cgroup-based
//! accounting) is the VM's; `delete` removes it. A host whose cgroups cannot be written runs
//! the container without (a warning says so), as the engine does for its own VMs.

use std::fs;
use std::path::{Path, PathBuf};

use mvm_engine::backend::jail::relative_cgroup;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup, relative to each hierarchy's root, that `cgroups_path` names: a cgroupfs path
/// (`/docker/ID`), or with `--systemd-cgroup` systemd's `slice:prefix:name` (as
/// `slice/prefix-name.scope`). `None` for none or one that would leave the hierarchy.
pub fn parent(cgroups_path: Option<&Path>, systemd: bool) -> Option<PathBuf> {
    let p = cgroups_path?.to_str()?;
    if systemd && let [slice, prefix, name] = p.split(':').collect::<Vec<_>>()[..] {
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return relative_cgroup(&format!("{slice}/{unit}"));
    }
    relative_cgroup(p)
}

/// The hierarchies a process is placed in: the unified root on a v2 host, else every v1
/// controller (and named) hierarchy mounted under /sys/fs/cgroup.
fn hierarchies() -> Vec<PathBuf> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        return vec![PathBuf::from(ROOT)];
    }
    let mut out: Vec<PathBuf> = fs::read_dir(ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists() && !p.is_symlink())
        .collect();
    out.sort();
    out
}

/// Makes `dir` and its parents up to `root`; in a v1 cpuset hierarchy each new level gets its
/// parent's CPUs and memory nodes (an empty cpuset takes no task).
fn make(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let cpuset = root.join("cpuset.cpus").exists();
    let mut dir = root.to_path_buf();
    for c in rel.components() {
        let parent = dir.clone();
        dir.push(c);
        if !dir.exists() {
            fs::create_dir(&dir)?;
        }
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if fs::read_to_string(dir.join(f))?.trim().is_empty() {
                    fs::write(dir.join(f), fs::read_to_string(parent.join(f))?.trim())?;
                }
            }
        }
    }
    Ok(dir)
}

/// Moves this process into `rel` in every hierarchy; the first failure, said in one line.
pub fn join(rel: &Path) -> Result<(), String> {
    let me = std::process::id().to_string();
    for h in hierarchies() {
        let dir = make(&h, rel)
            .map_err(|e| format!("cannot make cgroup {}: {e}", h.join(rel).display()))?;
        fs::write(dir.join("cgroup.procs"), &me)
            .map_err(|e| format!("cannot join cgroup {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Removes `rel` from every hierarchy (once the processes in it have ended); best effort.
pub fn remove(rel: &Path) {
    for h in hierarchies() {
        let dir = h.join(rel);
        for _ in 0..50 {
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_as_runc_reads_them() {
        let p = |s: &str, systemd| parent(Some(Path::new(s)), systemd);
        assert_eq!(p("/docker/abc", false).unwrap(), Path::new("docker/abc"));
        assert_eq!(
            p("system.slice:docker:abc", true).unwrap(),
            Path::new("system.slice/docker-abc.scope")
        );
        assert_eq!(p("/docker/../../etc", false), None);
        assert_eq!(parent(None, false), None);
    }

    #[test]
    fn join_and_remove_a_cgroup_of_our_own() {
        // A child process joins it (the test process must stay where it is).
        let rel = PathBuf::from(format!("mvm-oci-test-{}", std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        for h in hierarchies() {
            let dir = make(&h, &rel).unwrap();
            fs::write(dir.join("cgroup.procs"), &pid).unwrap();
        }
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cg.contains(&format!("/{}", rel.display())), "{cg}");
        child.kill().unwrap();
        child.wait().unwrap();
        remove(&rel);
        for h in hierarchies() {
            assert!(!h.join(&rel).exists(), "{}", h.join(&rel).display());
        }
    }
}

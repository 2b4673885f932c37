//! Users and groups from the container's own `/etc/passwd` and `/etc/group`.
//!
//! Parsed here rather than through glibc's getpwnam: NSS does not work in a static binary,
//! and the files that count are the image's, not the agent's.

use std::io;
use std::path::Path;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group ID.
    pub gid: u32,
    /// Login names of the members (for whom it is a supplementary group).
    pub members: Vec<String>,
}

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary group IDs.
    pub groups: Vec<u32>,
    /// `HOME` for the process when its environment has none.
    pub home: String,
}

/// A user string that cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name absent from `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name absent from `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Parses `/etc/passwd` text. Malformed lines are skipped, as the C library does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Parses `/etc/group` text. Malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves a user string against parsed files, following runc (and so Docker):
/// - `""` is root; `name` must exist; a numeric `uid` need not (then gid 0, HOME `/`);
/// - the primary gid comes from the passwd entry unless `:group` is given; a group name must
///   exist, a numeric gid need not;
/// - supplementary groups are the primary gid (Docker puts it first in `additionalGids`, so
///   `id` shows `groups=0(root)`), then those of `/etc/group` listing the user, unless a group
///   was given.
pub fn resolve_user_in(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let numeric_uid = if user_part.is_empty() {
        Some(0)
    } else {
        user_part.parse::<u32>().ok()
    };
    let entry = passwd
        .iter()
        .find(|e| !user_part.is_empty() && e.name == user_part)
        .or_else(|| numeric_uid.and_then(|uid| passwd.iter().find(|e| e.uid == uid)));
    let (uid, mut gid, home) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone()),
        (None, Some(uid)) => (uid, 0, String::new()),
        (None, None) => return Err(UserError::UnknownUser(user_part.to_string())),
    };
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };

    let mut supplementary = Vec::new();
    match group_part {
        Some(g) => {
            gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => g
                    .parse::<u32>()
                    .map_err(|_| UserError::UnknownGroup(g.to_string()))?,
            };
        }
        None => {
            if let Some(e) = entry {
                for group in groups.iter().filter(|g| g.members.contains(&e.name)) {
                    if !supplementary.contains(&group.gid) {
                        supplementary.push(group.gid);
                    }
                }
            }
        }
    }
    supplementary.retain(|g| *g != gid);
    supplementary.insert(0, gid);
    Ok(ResolvedUser {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

/// Resolves a user string against `etc_dir/passwd` and `etc_dir/group`; a missing file counts
/// as empty (images without `/etc/passwd` still run as root or a numeric uid).
pub fn resolve_user(spec: &str, etc_dir: &Path) -> Result<ResolvedUser, UserError> {
    let passwd = parse_passwd(&read_optional(&etc_dir.join("passwd"))?);
    let groups = parse_group(&read_optional(&etc_dir.join("group"))?);
    resolve_user_in(spec, &passwd, &groups)
}

fn read_optional(path: &Path) -> Result<String, UserError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UserError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
bad:x:notanumber:1::/:
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
nohome:x:1001:1001
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
www-data:x:33:
app:x:1000:
docker:x:999: app , other
dup:x:10:app
";

    fn resolve(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user_in(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn parsing_skips_garbage() {
        let p = parse_passwd(PASSWD);
        assert_eq!(
            p.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["root", "daemon", "www-data", "app", "nohome"]
        );
        let g = parse_group(GROUP);
        assert_eq!(g[5].members, ["app", "other"]);
        assert!(parse_passwd("").is_empty());
        assert!(parse_group(":x:1:\n\n::::").is_empty());
    }

    #[test]
    fn root_by_default() {
        let u = resolve("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, [0, 10]);
    }

    #[test]
    fn by_name_with_supplementary_groups() {
        let u = resolve("app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.groups, [1000, 10, 999]);
    }

    #[test]
    fn by_uid() {
        let u = resolve("33").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        let u = resolve("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.groups, [0]);
        let u = resolve("1001").unwrap();
        assert_eq!(u.home, "/");
    }

    #[test]
    fn explicit_group() {
        let u = resolve("app:www-data").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 33));
        assert_eq!(u.groups, [33]);
        let u = resolve("4242:4343").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        let u = resolve("app:").unwrap();
        assert_eq!(u.gid, 1000);
    }

    #[test]
    fn unknown_names() {
        assert!(matches!(resolve("nobody"), Err(UserError::UnknownUser(n)) if n == "nobody"));
        assert!(
            matches!(resolve("app:nogroup"), Err(UserError::UnknownGroup(g)) if g == "nogroup")
        );
        assert!(matches!(
            resolve("99999999999"),
            Err(UserError::UnknownUser(_))
        ));
    }

    #[test]
    fn files_in_a_directory() {
        let dir = crate::test_util::TempDir::new("users");
        // No files at all: root and numeric users still work.
        let u = resolve_user("", dir.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
        assert!(resolve_user("app", dir.path()).is_err());
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        let u = resolve_user("app", dir.path()).unwrap();
        assert_eq!((u.uid, u.groups.len()), (1000, 3));
    }
}

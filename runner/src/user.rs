//! `USER name[:group]` resolved through the image's own `/etc/passwd` and
//! `/etc/group`, with the rules of runc's `GetExecUser` (what Docker uses).

/// A user resolved to numeric ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` that list the user, only
    /// when no group was given explicitly (as Docker does).
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, `/` when the user has no entry.
    pub home: String,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// A user name that `/etc/passwd` does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    /// A group name that `/etc/group` does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// A numeric id out of range.
    #[error("invalid id {0}: must be between 0 and 2147483647")]
    InvalidId(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

fn numeric(s: &str) -> Option<Result<u32, UserError>> {
    if !s.bytes().all(|b| b.is_ascii_digit()) || s.is_empty() {
        return None;
    }
    Some(
        s.parse::<u32>()
            .ok()
            .filter(|v| *v <= i32::MAX as u32)
            .ok_or_else(|| UserError::InvalidId(s.to_string())),
    )
}

/// Resolve `user` (`name`, `uid`, `name:group`, `uid:gid`, ...; empty means
/// root) against the contents of `/etc/passwd` and `/etc/group` (either may
/// be missing).
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let user_num = numeric(user_arg).transpose()?;
    let entry = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match user_num {
            Some(uid) => e.uid == uid,
            None => e.name == user_arg,
        })
    });
    let (uid, mut gid, home, name) = match (entry, user_num) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name)),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => return Err(UserError::NoSuchUser(user_arg.to_string())),
    };
    let mut additional_gids = Vec::new();
    match group_arg.filter(|g| !g.is_empty()) {
        Some(group_arg) => {
            gid = match numeric(group_arg).transpose()? {
                Some(gid) => gid,
                None => group
                    .and_then(|g| group_entries(g).find(|e| e.name == group_arg))
                    .map(|e| e.gid)
                    .ok_or_else(|| UserError::NoSuchGroup(group_arg.to_string()))?,
            };
        }
        None => {
            if let (Some(name), Some(group)) = (name, group) {
                for e in group_entries(group) {
                    if e.members.contains(&name) && !additional_gids.contains(&e.gid) {
                        additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nsvc:x:1001:1001::/srv:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:app,svc\naudio:x:29:app\napp:x:1000:\nsvc:x:1001:\nstaff:x:50:\n";

    fn r(user: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(user, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_its_home() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 29]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert!(u.additional_gids.is_empty());
        assert_eq!(r("app:4242").unwrap().gid, 4242);
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let u = r("4000:4001").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4000, 4001, "/"));
        let u = r("1000").unwrap();
        assert_eq!((u.gid, u.home.as_str()), (1000, "/home/app"));
        assert_eq!(
            resolve_user("7", None, None).unwrap(),
            ResolvedUser {
                uid: 7,
                gid: 0,
                additional_gids: vec![],
                home: "/".into()
            }
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(r("nobody"), Err(UserError::NoSuchUser("nobody".into())));
        assert_eq!(
            r("app:nogroup"),
            Err(UserError::NoSuchGroup("nogroup".into()))
        );
        assert_eq!(
            r("99999999999"),
            Err(UserError::InvalidId("99999999999".into()))
        );
    }
}

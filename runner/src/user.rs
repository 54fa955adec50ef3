//! `USER name[:group]` resolved through the image's own `/etc/passwd` and
//! `/etc/group`, with the rules of runc's `GetExecUser` (what Docker uses).

use hoist_untrusted::accounts::{numeric_id, split_user_group, Accounts, AccountsError};
use hoist_untrusted::escape;

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
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The image's `/etc/passwd` or `/etc/group` could not be read.
    #[error("failed to read the image's users and groups")]
    Accounts(#[from] AccountsError),
    /// A user name that `/etc/passwd` does not have.
    #[error("unable to find user {}: no matching entries in passwd file", escape(.0))]
    NoSuchUser(String),
    /// A group name that `/etc/group` does not have.
    #[error("unable to find group {}: no matching entries in group file", escape(.0))]
    NoSuchGroup(String),
    /// A numeric id out of range.
    #[error("invalid id {}: must be between 0 and 2147483647", escape(.0))]
    InvalidId(String),
}

/// Resolve `user` (`name`, `uid`, `name:group`, `uid:gid`, ...; empty means
/// root) against an image's accounts (hoist-untrusted's one reader).
///
/// `USER`'s rules (runc's `GetExecUser`): a numeric user unknown to passwd
/// gets group 0 and home `/`, where `COPY --chown` would give gid = uid.
pub fn resolve_user(user: &str, accounts: &Accounts) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = split_user_group(user);
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let user_num = numeric(user_arg)?;
    let entry = match user_num {
        Some(uid) => accounts.user_with_id(uid),
        None => accounts.user_named(user_arg),
    };
    let (uid, mut gid, home, name) = match (entry, user_num) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone(), Some(e.name.as_str())),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => return Err(UserError::NoSuchUser(user_arg.to_string())),
    };
    let mut additional_gids = Vec::new();
    match group_arg.filter(|g| !g.is_empty()) {
        Some(group_arg) => {
            gid = match numeric(group_arg)? {
                Some(gid) => gid,
                None => accounts
                    .group_named(group_arg)
                    .map(|e| e.gid)
                    .ok_or_else(|| UserError::NoSuchGroup(group_arg.to_string()))?,
            };
        }
        None => {
            if let Some(name) = name {
                additional_gids = accounts.groups_of(name);
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

fn numeric(text: &str) -> Result<Option<u32>, UserError> {
    numeric_id(text)
        .transpose()
        .map_err(|e| UserError::InvalidId(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nsvc:x:1001:1001::/srv:/bin/false\n";
    const GROUP: &[u8] =
        b"root:x:0:\nwheel:x:10:app,svc\naudio:x:29:app\napp:x:1000:\nsvc:x:1001:\nstaff:x:50:\n";

    fn r(user: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(user, &Accounts::parse(Some(PASSWD), Some(GROUP)))
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
            resolve_user("7", &Accounts::default()).unwrap(),
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
        assert!(matches!(r("nobody"), Err(UserError::NoSuchUser(n)) if n == "nobody"));
        assert!(matches!(r("app:nogroup"), Err(UserError::NoSuchGroup(n)) if n == "nogroup"));
        assert!(matches!(r("99999999999"), Err(UserError::InvalidId(n)) if n == "99999999999"));
        assert_eq!(
            r("no\x1bbody").unwrap_err().to_string(),
            "unable to find user no\\u{1b}body: no matching entries in passwd file"
        );
    }
}

//! An image's `/etc/passwd` and `/etc/group`: the one reader of the
//! workspace. The builder resolves `COPY --chown` and the runner resolves
//! `USER` with it; the two keep Docker's different rules for ids that are in
//! neither file, at their call sites.
//!
//! The files come from an image, so nothing in them is trusted: a file is
//! read through [`Root`] (symlinks stay inside the image), at most
//! [`MAX_FILE`] bytes of it (a `/etc/passwd -> /dev/zero` must not exhaust
//! memory), and a line that is not UTF-8, has too few fields or a malformed
//! id is skipped, as glibc's `getpwnam` skips it, rather than read as uid 0.

use std::io::{self, Read};
use std::path::Path;

use crate::root::{Error as RootError, Root};
use crate::text::escape;

/// The most of either file that is read. Real ones are a few kilobytes; a
/// directory service with a million users is not in an image.
pub const MAX_FILE: u64 = 16 << 20;

/// The largest id Docker and runc accept (ids are `int` there; `-1` and
/// above-`i32` values mean "unset" to the kernel's `chown`).
pub const MAX_ID: u32 = i32::MAX as u32;

/// Why the accounts of an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The file is larger than [`MAX_FILE`].
    #[error(
        "{}: larger than {limit} bytes, not a passwd or group file",
        escape(path)
    )]
    TooLarge {
        /// The path inside the image.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The root itself could not be opened.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The file exists but could not be read.
    #[error("failed to read {}", escape(path))]
    Read {
        /// The path inside the image.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A numeric id that is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {}: must be between 0 and {MAX_ID}", escape(.0))]
pub struct InvalidId(pub String);

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (empty when the line has none).
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Users listed as members.
    pub members: Vec<String>,
}

/// The users and groups of an image; either file may be missing (then it
/// has no entries, and only numeric ids resolve).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` inside `root`. A file that does
    /// not exist, or is not a regular file, counts as empty.
    pub fn read(root: &Root) -> Result<Accounts, AccountsError> {
        let passwd = read_file(root, "/etc/passwd")?;
        let group = read_file(root, "/etc/group")?;
        Ok(Accounts::parse(passwd.as_deref(), group.as_deref()))
    }

    /// Reads the accounts of the filesystem at `root` (a host directory
    /// holding an image's root).
    pub fn read_dir(root: &Path) -> Result<Accounts, AccountsError> {
        Accounts::read(&Root::new(root)?)
    }

    /// Reads the accounts of the running system: `/` is the root (inside a
    /// container after pivot_root, where symlinks cannot leave it and
    /// `/proc`, which [`Root`] needs, may not be mounted; or the host's).
    pub fn read_system() -> Result<Accounts, AccountsError> {
        // As before this reader existed, a file that cannot be opened is
        // treated as missing (a loop's ELOOP has no stable ErrorKind).
        let open = |path: &str| std::fs::File::open(path).map_err(|e| (e, false));
        let passwd = read_bounded("/etc/passwd", open)?;
        let group = read_bounded("/etc/group", open)?;
        Ok(Accounts::parse(passwd.as_deref(), group.as_deref()))
    }

    /// Parses the contents of the two files.
    pub fn parse(passwd: Option<&[u8]>, group: Option<&[u8]>) -> Accounts {
        Accounts {
            users: passwd.map(parse_passwd).unwrap_or_default(),
            groups: group.map(parse_group).unwrap_or_default(),
        }
    }

    /// The first user called `name`.
    pub fn user_named(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first user with `uid`.
    pub fn user_with_id(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    /// The first group called `name`.
    pub fn group_named(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The ids of the groups that list `user` as a member, in file order,
    /// each once.
    pub fn groups_of(&self, user: &str) -> Vec<u32> {
        let mut gids = Vec::new();
        for g in &self.groups {
            if g.members.iter().any(|m| m == user) && !gids.contains(&g.gid) {
                gids.push(g.gid);
            }
        }
        gids
    }
}

/// Splits a `user[:group]` value (`USER`, `--chown`).
pub fn split_user_group(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    }
}

/// `Some` when `text` is a number (all ASCII digits), with the number or why
/// it is out of range; `None` when it is a name.
pub fn numeric_id(text: &str) -> Option<Result<u32, InvalidId>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u32>()
            .ok()
            .filter(|v| *v <= MAX_ID)
            .ok_or_else(|| InvalidId(text.to_string())),
    )
}

/// Reads one file inside `root`: `None` when there is no such regular file.
fn read_file(root: &Root, path: &str) -> Result<Option<Vec<u8>>, AccountsError> {
    read_bounded(path, |path| {
        root.open_read(path).map_err(|e| match e {
            RootError::Io { source, .. } => (source, true),
            // Missing, a dangling or looping symlink, a file where a
            // directory should be: there are no such accounts.
            other => (io::Error::new(other.kind(), other.to_string()), false),
        })
    })
}

/// Opens `path` with `open` (whose error says whether it is worth
/// reporting) and reads at most [`MAX_FILE`] bytes of it.
fn read_bounded(
    path: &str,
    open: impl Fn(&str) -> Result<std::fs::File, (io::Error, bool)>,
) -> Result<Option<Vec<u8>>, AccountsError> {
    let read_error = |source: io::Error| AccountsError::Read {
        path: path.to_string(),
        source,
    };
    let file = match open(path) {
        Ok(f) => f,
        Err((source, true)) if !missing(source.kind()) => return Err(read_error(source)),
        Err(_) => return Ok(None),
    };
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut text = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE {
        return Err(AccountsError::TooLarge {
            path: path.to_string(),
            limit: MAX_FILE,
        });
    }
    Ok(Some(text))
}

fn missing(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied
    )
}

/// The fields of each line that is an entry: UTF-8, not a comment, not blank.
fn entries(text: &[u8]) -> impl Iterator<Item = Vec<&str>> {
    text.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            return None;
        }
        Some(line.split(':').collect())
    })
}

/// An id field: digits only (no sign, no spaces), in range.
fn id_field(field: Option<&&str>) -> Option<u32> {
    numeric_id(field?)?.ok()
}

fn parse_passwd(text: &[u8]) -> Vec<User> {
    // name:password:uid:gid:gecos:home:shell; what follows gid may be absent.
    entries(text)
        .filter_map(|f| {
            Some(User {
                name: f.first().filter(|n| !n.is_empty())?.to_string(),
                uid: id_field(f.get(2))?,
                gid: id_field(f.get(3))?,
                home: f.get(5).map_or_else(String::new, |h| h.to_string()),
            })
        })
        .collect()
}

fn parse_group(text: &[u8]) -> Vec<Group> {
    // name:password:gid:members; members may be absent.
    entries(text)
        .filter_map(|f| {
            Some(Group {
                name: f.first().filter(|n| !n.is_empty())?.to_string(),
                gid: id_field(f.get(2))?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        # a comment:x:5:5::/c:/bin/sh\n\
        app:x:1000:1001:App:/home/app:/bin/sh\r\n\
        \n\
        short:x:1002:1002\n\
        badid:x:-1:0::/bad:/bin/sh\n\
        bigid:x:4294967295:0::/big:/bin/sh\n\
        spaced:x: 7:0::/s:/bin/sh\n\
        nogid:x:1003\n\
        :x:1004:1004::/anon:/bin/sh\n\
        app:x:2000:2000::/second:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\nwheel:x:10:app, svc\naudio:x:29:app\nnomembers:x:30\nwheel2:x:10:app\nbad:x:x:app\n";

    fn accounts() -> Accounts {
        Accounts::parse(Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn entries_with_all_or_the_first_four_fields_are_read() {
        let a = accounts();
        let app = a.user_named("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1001, "/home/app")
        );
        let short = a.user_named("short").unwrap();
        assert_eq!(
            (short.uid, short.gid, short.home.as_str()),
            (1002, 1002, "")
        );
        assert_eq!(a.user_with_id(0).unwrap().home, "/root");
        assert_eq!(a.group_named("nomembers").unwrap().gid, 30);
    }

    #[test]
    fn malformed_lines_are_skipped_never_read_as_root() {
        let a = accounts();
        for name in ["badid", "bigid", "spaced", "nogid", "# a comment"] {
            assert_eq!(a.user_named(name), None, "{name}");
        }
        assert_eq!(a.user_with_id(1004), None, "a line without a name");
        assert_eq!(a.group_named("bad"), None);
        // The first of two entries with one name wins, as getpwnam.
        assert_eq!(a.user_named("app").unwrap().uid, 1000);
    }

    #[test]
    fn supplementary_groups_are_listed_once_in_file_order() {
        let a = accounts();
        assert_eq!(a.groups_of("app"), vec![10, 29]);
        assert_eq!(a.groups_of("svc"), vec![10]);
        assert!(a.groups_of("nobody").is_empty());
    }

    #[test]
    fn non_utf8_and_huge_lines_do_not_hide_other_entries() {
        let mut text = b"evil\xff:x:5:5::/e:/bin/sh\n".to_vec();
        text.extend(std::iter::repeat_n(b'a', 1 << 20));
        text.extend(b":x:6:6::/long:/bin/sh\nok:x:7:7::/ok:/bin/sh\n");
        let a = Accounts::parse(Some(&text), None);
        assert_eq!(a.user_named("ok").unwrap().uid, 7);
        assert_eq!(a.user_with_id(5), None);
        assert_eq!(a.user_with_id(6).unwrap().home, "/long");
    }

    #[test]
    fn the_running_systems_accounts_are_read_from_slash() {
        // Every Linux system hoist runs on has a root entry.
        let a = Accounts::read_system().unwrap();
        assert_eq!(a.user_with_id(0).map(|u| u.name.as_str()), Some("root"));
    }

    #[test]
    fn numeric_ids_are_digits_in_docker_range() {
        assert_eq!(numeric_id("0"), Some(Ok(0)));
        assert_eq!(numeric_id("2147483647"), Some(Ok(MAX_ID)));
        assert_eq!(
            numeric_id("2147483648"),
            Some(Err(InvalidId("2147483648".into())))
        );
        assert_eq!(
            numeric_id("99999999999999999999").map(|r| r.is_err()),
            Some(true)
        );
        assert_eq!(numeric_id("app"), None);
        assert_eq!(numeric_id("+1"), None);
        assert_eq!(numeric_id(""), None);
        assert_eq!(split_user_group("a:b:c"), ("a", Some("b:c")));
        assert_eq!(split_user_group("a"), ("a", None));
    }

    #[test]
    fn files_are_read_inside_the_root_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        // A symlink that leaves the image names the image's own file.
        std::os::unix::fs::symlink("/../../../../etc/shadow-outside", root.join("etc/passwd"))
            .unwrap();
        fs::write(root.join("etc/shadow-outside"), "in:x:9:9::/in:/bin/sh\n").unwrap();
        fs::create_dir(root.join("etc/group")).unwrap();
        let a = Accounts::read_dir(&root).unwrap();
        assert_eq!(a.user_named("in").unwrap().uid, 9);
        assert!(a.groups_of("in").is_empty(), "a directory is no group file");

        fs::remove_file(root.join("etc/passwd")).unwrap();
        let big = fs::File::create(root.join("etc/passwd")).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        let err = Accounts::read_dir(&root).unwrap_err();
        assert!(
            matches!(err, AccountsError::TooLarge { ref path, .. } if path == "/etc/passwd"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("/etc/passwd: larger than {MAX_FILE} bytes, not a passwd or group file")
        );

        // A FIFO (or device) where the file should be is no passwd file, and
        // is not read: it would block or never end.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("etc/passwd"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        assert_eq!(Accounts::read_dir(&root).unwrap(), Accounts::default());
        // So is a symlink loop.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(Accounts::read_dir(&root).unwrap(), Accounts::default());

        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(Accounts::read_dir(&empty).unwrap(), Accounts::default());
    }
}

//! Rootless runs: the sandbox init is cloned into a new user namespace in
//! which container root is the invoking user, plus the user's subordinate
//! range from /etc/subuid and /etc/subgid when there is one, written with
//! the setuid helpers `newuidmap`/`newgidmap` (Debian's `uidmap`).
//! Without a range, only root is mapped (written directly, as an
//! unprivileged process may map its own id once).

use std::path::Path;
use std::process::Command;

use crate::{sys, RunError};

/// A subordinate id range of the invoking user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Find the first range for `name` or `id` in an /etc/subuid-style file.
pub(crate) fn find_range(text: &str, name: &str, id: u32) -> Option<SubRange> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let owner = f.next()?;
        if owner != name && owner != id.to_string() {
            return None;
        }
        Some(SubRange {
            start: f.next()?.parse().ok()?,
            count: f.next()?.parse().ok()?,
        })
    })
}

fn user_name(uid: u32) -> Option<String> {
    let accounts = hoist_untrusted::Accounts::read_system().ok()?;
    accounts.user_with_id(uid).map(|u| u.name.clone())
}

/// Write the uid and gid maps of `pid`.
pub(crate) fn map_ids(pid: libc::pid_t) -> Result<(), RunError> {
    let uid = sys::geteuid();
    let gid = sys::getegid();
    let name = user_name(uid).unwrap_or_default();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let uid_range = find_range(&read("/etc/subuid"), &name, uid);
    let gid_range = find_range(&read("/etc/subgid"), &name, uid);
    match (uid_range, gid_range) {
        (Some(u), Some(g)) => {
            helper("newuidmap", pid, uid, u)?;
            helper("newgidmap", pid, gid, g)?;
        }
        _ => {
            let proc = Path::new("/proc").join(pid.to_string());
            let write = |file: &str, text: String| {
                let path = proc.join(file);
                std::fs::write(&path, text).map_err(|source| RunError::Io {
                    action: "write",
                    path,
                    source,
                })
            };
            write("uid_map", format!("0 {uid} 1\n"))?;
            write("setgroups", "deny\n".into())?;
            write("gid_map", format!("0 {gid} 1\n"))?;
        }
    }
    Ok(())
}

fn helper(program: &str, pid: libc::pid_t, own: u32, range: SubRange) -> Result<(), RunError> {
    let out = Command::new(program)
        .args([
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .output()
        .map_err(|source| RunError::Io {
            action: "run",
            path: program.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(RunError::IdMap(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:1000\n";
        assert_eq!(
            find_range(text, "alice", 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(find_range(text, "bob", 1001).unwrap().start, 200000);
        assert_eq!(find_range(text, "carol", 1002), None);
    }
}

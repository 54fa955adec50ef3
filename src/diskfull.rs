//! A full disk deserves a message that says which disk and which store:
//! `No space left on device` deep in a chain names neither.

use std::path::Path;

use crate::hint::Hint;
use crate::util::human_size;

/// True when a cause of `error` is a full disk or exhausted quota: an OS
/// error (ENOSPC, EDQUOT), SQLite's SQLITE_FULL, or the text of either in a
/// message that carried it as a string (a RUN step's output, another
/// crate's error).
pub fn is_disk_full(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                return true;
            }
        }
        let text = cause.to_string();
        text.contains("No space left on device")
            || text.contains("Disk quota exceeded")
            || text.contains("database or disk is full")
            || text.contains("the disk was full")
    })
}

/// Adds a hint naming the store and the filesystem it is on, with its free
/// space now, when `error` is a full disk.
pub fn explain(error: anyhow::Error, root: &Path) -> anyhow::Error {
    if !is_disk_full(&error) {
        return error;
    }
    let store = hoist_cache::text::escape_path(root);
    let hint = match hoist_cache::disk::disk_of(root) {
        Ok(disk) => format!(
            "the disk is full: the store `{store}` is on {} `{}` mounted at `{}`, which has {} free of {} now; `hoist prune` removes unused build cache (`-a`: all of it) and `hoist du -v` shows what holds the space",
            if disk.fs_type.is_empty() { "filesystem" } else { &disk.fs_type },
            hoist_cache::text::escape(&disk.source),
            hoist_cache::text::escape_path(&disk.mount_point),
            human_size(disk.free),
            human_size(disk.total),
        ),
        Err(_) => format!(
            "the disk is full: the store is `{store}`; `hoist prune` removes unused build cache (`-a`: all of it) and `hoist du -v` shows what holds the space"
        ),
    };
    error.context(Hint(hint))
}

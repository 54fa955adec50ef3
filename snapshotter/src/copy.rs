//! Copying a tree with everything a layer cares about (the native backend's
//! `prepare`): types, modes, owners, xattrs, times, hardlinks, reflinked data.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{io_err, Result};
use crate::fsutil;

/// Copies the contents of `src` into the existing directory `dst`, and the
/// metadata of `src` onto `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    copy_metadata(src, dst, &meta)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    let entries = fs::read_dir(src).map_err(io_err("read directory", src))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(io_err("create directory", &to))?;
            copy_dir_contents(&from, &to, links)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    fs::hard_link(first, &to).map_err(io_err("hardlink", &to))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            let mut input = File::open(&from).map_err(io_err("open", &from))?;
            let mut output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)
                .map_err(io_err("create", &to))?;
            fsutil::reflink_or_copy(&mut input, &mut output).map_err(io_err("copy into", &to))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("read symlink", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("create symlink", &to))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            let parent = File::open(dst).map_err(io_err("open", dst))?;
            fsutil::mknod_at(
                &parent,
                Path::new(&entry.file_name()),
                meta.mode(),
                meta.rdev(),
            )
            .map_err(io_err("create special file", &to))?;
        }
        copy_metadata(&from, &to, &meta)?;
    }
    Ok(())
}

/// Owner, mode (after chown, which clears setuid bits), xattrs, then times.
fn copy_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    fsutil::lchown(to, meta.uid(), meta.gid()).map_err(io_err("change owner of", to))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(
            to,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )
        .map_err(io_err("change mode of", to))?;
    }
    for (name, value) in fsutil::read_xattrs(from).map_err(io_err("read xattrs of", from))? {
        fsutil::set_xattr(to, &name, &value).map_err(io_err("set xattr on", to))?;
    }
    fsutil::set_times(to, meta.mtime(), meta.mtime_nsec() as u32)
        .map_err(io_err("set times of", to))
}

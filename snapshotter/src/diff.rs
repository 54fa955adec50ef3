//! Diff: the changes of a snapshot as a deterministic OCI layer.
//!
//! Two sources, one output format:
//!
//! * [`DiffSource::OverlayUpper`]: the overlay upper dir holds exactly the
//!   changes, so only it is walked (never the lower layers). A 0/0 character
//!   device is overlay's whiteout and becomes `.wh.NAME`; a directory marked
//!   opaque (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` when
//!   mounted with `userxattr`) gets a `.wh..wh..opq` entry.
//! * [`DiffSource::Trees`]: both trees are walked side by side (the native
//!   backend). An entry is changed when its type, mode, owner, xattrs, size,
//!   symlink target, device number or mtime differ; when both mtimes have no
//!   sub-second part (a filesystem or tool that truncates times) the content is
//!   compared too, as containerd's continuity does. Deleted paths become
//!   `.wh.NAME` at the top of the deleted subtree.
//!
//! Determinism: siblings are written in byte order of their names in the
//! layer (depth first, so a directory always precedes its content); headers
//! carry no atime, ctime, user or group names, and mtimes in whole seconds,
//! clamped to `source_date_epoch` when given. PAX records appear only when
//! needed and in key order. Hardlinks within the layer are written once as a
//! file and then as links to its first path. `security.selinux` and
//! overlay's private xattrs are left out.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use crate::error::{io_err, Error, Result};
use crate::fsutil;
use crate::layer::{
    Compression, CompressionOptions, GzipBlockSource, LayerDescriptor, LayerWriter,
};
use hoist_untrusted::open_to_read;
use hoist_untrusted::tar_writer::{EntryHeader, EntryKind, TarWriter};

/// Where the changes of a snapshot are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffSource {
    /// An overlay upper dir (the snapshot has a parent and the overlay backend).
    OverlayUpper {
        /// The upper dir.
        upper: PathBuf,
    },
    /// A full tree compared with its parent's full tree (`None`: no parent,
    /// everything is new).
    Trees {
        /// The parent's tree.
        lower: Option<PathBuf>,
        /// The changed tree.
        upper: PathBuf,
    },
}

/// How to write a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffOptions {
    /// Compression algorithm (gzip by default).
    pub compression: Compression,
    /// Compression level; `None` for the algorithm's default.
    pub level: Option<u32>,
    /// Compression threads, 0 for one per core; the bytes never depend on it.
    pub threads: usize,
    /// `out` hashes the blob itself: see [`CompressionOptions::skip_blob_digest`].
    pub skip_blob_digest: bool,
    /// SOURCE_DATE_EPOCH: every mtime later than this is written as this.
    pub source_date_epoch: Option<i64>,
}

/// Writes the changes read from `source` as a layer blob into `out`, in one
/// pass (walk, tar, compress, hash), and describes what was written.
pub fn write_layer(
    source: &DiffSource,
    options: &DiffOptions,
    out: &mut dyn Write,
) -> Result<LayerDescriptor> {
    write_with(source, options, out, None)
}

/// [`write_layer`] through [`LayerWriter::reusing`]: a gzip layer lists
/// the blocks it was written in, and takes from `earlier` those it holds.
pub fn write_layer_reusing(
    source: &DiffSource,
    options: &DiffOptions,
    earlier: Option<Arc<dyn GzipBlockSource>>,
    out: &mut dyn Write,
) -> Result<LayerDescriptor> {
    write_with(source, options, out, Some(earlier))
}

fn write_with(
    source: &DiffSource,
    options: &DiffOptions,
    out: &mut dyn Write,
    blocks: Option<Option<Arc<dyn GzipBlockSource>>>,
) -> Result<LayerDescriptor> {
    let compression = CompressionOptions {
        compression: options.compression,
        level: options.level,
        threads: options.threads,
        skip_blob_digest: options.skip_blob_digest,
    };
    let writer = match blocks {
        None => LayerWriter::new(out, &compression),
        Some(earlier) => LayerWriter::reusing(out, &compression, earlier),
    }
    .map_err(|source| Error::Write {
        path: String::new(),
        source,
    })?;
    let mut walker = Walker {
        tar: TarWriter::new(writer),
        epoch: options.source_date_epoch,
        links: HashMap::new(),
        pending: Vec::new(),
    };
    match source {
        DiffSource::OverlayUpper { upper } => walker.walk_upper(upper, b"")?,
        DiffSource::Trees { lower, upper } => walker.walk_trees(lower.as_deref(), upper, b"")?,
    }
    let writer = walker.tar.finish().map_err(|source| Error::Write {
        path: String::new(),
        source,
    })?;
    writer.finish().map_err(|source| Error::Write {
        path: String::new(),
        source,
    })
}

/// A file being copied into the layer; keeps its read error apart from the
/// writer's so each is reported against the right object.
struct SourceFile {
    file: File,
    error: Option<std::io::Error>,
}

impl Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf).inspect_err(|e| {
            self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}

/// A path and its lstat, borrowed from a directory listing.
type Node<'a> = (&'a PathBuf, &'a Metadata);

/// An entry's directory, open, and its name in it.
type At<'a> = (std::os::fd::BorrowedFd<'a>, &'a [u8]);

struct Walker<W: Write> {
    tar: TarWriter<W>,
    epoch: Option<i64>,
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Trees only: directories on the current path that exist in both trees
    /// unchanged, written as soon as anything below them is. An overlay
    /// upper dir holds every ancestor of a change (copy-up), so the native
    /// backend must write the same parents to make the same layer (and
    /// Docker's naive differ adds them too, for their permissions).
    pending: Vec<(PathBuf, Vec<u8>, Metadata)>,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        let mut v = rel.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(Vec<u8>, PathBuf, Metadata)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let path = entry.path();
        // Relative to the listed directory, not a lookup of the whole path.
        let meta = entry.metadata().map_err(io_err("stat", &path))?;
        out.push((entry.file_name().as_bytes().to_vec(), path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn layer_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let x = fsutil::read_xattrs(path).map_err(io_err("read xattrs of", path))?;
    layer_xattrs_of(path, x)
}

/// [`layer_xattrs`] of a file already open for reading: no second lookup of
/// its path (a 20,000-file COPY's diff spent a tenth of its time listing
/// xattrs by path).
fn layer_xattrs_open(path: &Path, file: &File) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let x = fsutil::read_xattrs_fd(file).map_err(io_err("read xattrs of", path))?;
    layer_xattrs_of(path, x)
}

fn layer_xattrs_of(path: &Path, mut x: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // A redirect (renamed lower dir) or metacopy (data still in a lower
    // file) can't be expressed in a layer from the upper dir alone; refuse
    // rather than write a layer that silently misses content.
    for (name, _) in &x {
        for bad in ["overlay.redirect", "overlay.metacopy"] {
            if fsutil::is_overlay_private(name) && name.ends_with(bad.as_bytes()) {
                return Err(Error::UnsupportedOverlay {
                    path: path.to_path_buf(),
                    xattr: String::from_utf8_lossy(name).into_owned(),
                });
            }
        }
    }
    x.retain(|(name, _)| !fsutil::is_overlay_private(name) && name != b"security.selinux");
    Ok(x)
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> Result<bool> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if fsutil::get_xattr(path, name).map_err(io_err("read xattrs of", path))?
            == Some(b"y".to_vec())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

enum Item {
    Node(PathBuf, Metadata),
    Marker,
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).map_err(io_err("open", a))?;
    let mut fb = File::open(b).map_err(io_err("open", b))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = fsutil::read_full(&mut fa, &mut ba).map_err(io_err("read", a))?;
        let m = fsutil::read_full(&mut fb, &mut bb).map_err(io_err("read", b))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// True when `upper` differs from `lower` in anything a layer records.
fn changed(lower: &Path, lm: &Metadata, upper: &Path, um: &Metadata) -> Result<bool> {
    let (lt, ut) = (lm.file_type(), um.file_type());
    if lt != ut
        || lm.mode() != um.mode()
        || lm.uid() != um.uid()
        || lm.gid() != um.gid()
        || layer_xattrs(lower)? != layer_xattrs(upper)?
    {
        return Ok(true);
    }
    if ut.is_dir() {
        // A directory's mtime moves whenever its content does; its content
        // is compared entry by entry instead.
        return Ok(false);
    }
    // A changed link count means a hardlink was made or broken: the file
    // must be in the layer so the new links can refer to it.
    if lm.rdev() != um.rdev()
        || lm.size() != um.size()
        || lm.mtime() != um.mtime()
        || (ut.is_file() && lm.nlink() != um.nlink())
    {
        return Ok(true);
    }
    if ut.is_symlink() {
        let a = fs::read_link(lower).map_err(io_err("read symlink", lower))?;
        let b = fs::read_link(upper).map_err(io_err("read symlink", upper))?;
        return Ok(a != b || lm.mtime_nsec() != um.mtime_nsec());
    }
    if lm.mtime_nsec() != um.mtime_nsec() {
        return Ok(true);
    }
    if lm.mtime_nsec() == 0 && ut.is_file() && um.size() > 0 {
        return Ok(!same_content(lower, upper)?);
    }
    Ok(false)
}

impl<W: Write> Walker<W> {
    fn clamp(&self, mtime: i64) -> i64 {
        match self.epoch {
            Some(e) if mtime > e => e,
            _ => mtime,
        }
    }

    fn write_err(rel: &[u8]) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Write {
            path: String::from_utf8_lossy(rel).into_owned(),
            source,
        }
    }

    /// A whiteout or opaque marker: an empty file with every field zero,
    /// including the mtime (as containerd writes them), so that when the
    /// deletion happened never changes the layer.
    fn marker(&mut self, rel: &[u8]) -> Result<()> {
        self.flush_pending()?;
        let header = EntryHeader {
            path: rel.to_vec(),
            kind: EntryKind::File { size: 0 },
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        };
        self.tar.write_header(&header).map_err(Self::write_err(rel))
    }

    /// Writes the unchanged parent directories a change below them needs.
    fn flush_pending(&mut self) -> Result<()> {
        for (path, rel, meta) in std::mem::take(&mut self.pending) {
            self.write_entry(&path, &rel, &meta, None)?;
        }
        Ok(())
    }

    fn emit(&mut self, path: &Path, rel: &[u8], meta: &Metadata, at: Option<At<'_>>) -> Result<()> {
        self.flush_pending()?;
        self.write_entry(path, rel, meta, at)
    }

    /// Writes the entry of `path`; a regular file is opened by its name in
    /// `at` when given, else by its whole path.
    fn write_entry(
        &mut self,
        path: &Path,
        rel: &[u8],
        meta: &Metadata,
        at: Option<At<'_>>,
    ) -> Result<()> {
        let ft = meta.file_type();
        let (major, minor) = fsutil::split_dev(meta.rdev());
        let mut kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File { size: meta.size() }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err("read symlink", path))?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_char_device() {
            EntryKind::Char { major, minor }
        } else if ft.is_block_device() {
            EntryKind::Block { major, minor }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            // Sockets can't be stored in a tar and are meaningless in an image.
            tracing::debug!(path = %path.display(), "skipping socket");
            return Ok(());
        };
        if ft.is_file() && meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            match self.links.get(&id) {
                Some(first) => {
                    kind = EntryKind::Hardlink {
                        target: first.clone(),
                    }
                }
                None => {
                    self.links.insert(id, rel.to_vec());
                }
            }
        }
        // A file's content is read through the descriptor its xattrs are.
        let file = match kind {
            EntryKind::File { .. } => Some(
                match at {
                    // Not through a symlink, nor touching the atime: the
                    // COPY that made the snapshot gave each file it reused
                    // a new link (a new ctime), so relatime would dirty and
                    // journal every inode read (8 % of such a diff).
                    Some((dir, name)) => open_to_read(dir, std::ffi::OsStr::from_bytes(name)),
                    None => open_to_read(rustix::fs::CWD, path),
                }
                .map_err(io_err("open", path))?,
            ),
            _ => None,
        };
        let header = EntryHeader {
            path: rel.to_vec(),
            kind: kind.clone(),
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: self.clamp(meta.mtime()),
            xattrs: match &file {
                Some(file) => layer_xattrs_open(path, file)?,
                None => layer_xattrs(path)?,
            },
        };
        self.tar
            .write_header(&header)
            .map_err(Self::write_err(rel))?;
        if let (EntryKind::File { size }, Some(file)) = (kind, file) {
            let mut source = SourceFile { file, error: None };
            let written = self.tar.write_data(&mut source, size);
            if let Some(e) = source.error.take() {
                return Err(io_err("read", path)(e));
            }
            let complete = written.map_err(Self::write_err(rel))?;
            if !complete {
                return Err(Error::FileChanged {
                    path: path.to_path_buf(),
                    expected: size,
                });
            }
        }
        Ok(())
    }

    fn walk_upper(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        // Its files are opened by name in it, not by their whole path: a
        // 20,000-file COPY's diff spent a sixth of its time in `open`.
        let dir_fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open directory", dir)(e.into()))?;
        let mut items: Vec<(Vec<u8>, Item)> = Vec::new();
        for (name, path, meta) in read_dir_sorted(dir)? {
            if is_whiteout(&meta) {
                let mut out = b".wh.".to_vec();
                out.extend_from_slice(&name);
                items.push((out, Item::Marker));
            } else {
                items.push((name, Item::Node(path, meta)));
            }
        }
        if !rel.is_empty() && is_opaque(dir)? {
            items.push((b".wh..wh..opq".to_vec(), Item::Marker));
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, item) in items {
            let child = join(rel, &name);
            match item {
                Item::Marker => self.marker(&child)?,
                Item::Node(path, meta) => {
                    self.emit(&path, &child, &meta, Some((dir_fd.as_fd(), &name)))?;
                    if meta.is_dir() {
                        self.walk_upper(&path, &child)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn walk_trees(&mut self, lower: Option<&Path>, upper: &Path, rel: &[u8]) -> Result<()> {
        let uppers = read_dir_sorted(upper)?;
        let lowers = match lower {
            Some(l) => read_dir_sorted(l)?,
            None => Vec::new(),
        };
        let lower_by_name: HashMap<&[u8], (&PathBuf, &Metadata)> = lowers
            .iter()
            .map(|(n, p, m)| (n.as_slice(), (p, m)))
            .collect();
        let upper_names: std::collections::HashSet<&[u8]> =
            uppers.iter().map(|(n, _, _)| n.as_slice()).collect();
        // (name in layer, upper node or None for a whiteout, lower node)
        let mut items: Vec<(Vec<u8>, Option<Node<'_>>, Option<Node<'_>>)> = Vec::new();
        for (name, path, meta) in &uppers {
            items.push((
                name.clone(),
                Some((path, meta)),
                lower_by_name.get(name.as_slice()).copied(),
            ));
        }
        for (name, _, _) in &lowers {
            if !upper_names.contains(name.as_slice()) {
                let mut out = b".wh.".to_vec();
                out.extend_from_slice(name);
                items.push((out, None, None));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, up, low) in items {
            let child = join(rel, &name);
            let Some((path, meta)) = up else {
                self.marker(&child)?;
                continue;
            };
            match low {
                None => {
                    self.emit(path, &child, meta, None)?;
                    if meta.is_dir() {
                        self.walk_trees(None, path, &child)?;
                    }
                }
                Some((lpath, lmeta)) => {
                    let both_dirs = meta.is_dir() && lmeta.is_dir();
                    if changed(lpath, lmeta, path, meta)? {
                        self.emit(path, &child, meta, None)?;
                    } else if both_dirs {
                        self.pending
                            .push((path.clone(), child.clone(), meta.clone()));
                        let depth = self.pending.len();
                        self.walk_trees(Some(lpath), path, &child)?;
                        // Nothing below changed: the directory stays out.
                        if self.pending.len() == depth {
                            self.pending.pop();
                        }
                        continue;
                    }
                    if both_dirs {
                        self.walk_trees(Some(lpath), path, &child)?;
                    } else if meta.is_dir() {
                        self.walk_trees(None, path, &child)?;
                    }
                }
            }
        }
        Ok(())
    }
}

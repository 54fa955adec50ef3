//! Apply: extract an untrusted layer into a snapshot's directory.
//!
//! The layer may be gzip, zstd or plain tar (recognised by its first bytes).
//! Every entry is checked before anything is written:
//!
//! * a path with a `..` component is refused; a leading `/` is dropped (the
//!   path is taken relative to the root, as Docker does);
//! * parent directories are opened with `openat2(RESOLVE_IN_ROOT)`, so a
//!   symlink among them (absolute or relative, planted by this layer or a
//!   lower one) is resolved as if the snapshot root were `/` and can never
//!   lead outside it;
//! * the final component is always created with `*at` calls that do not
//!   follow symlinks (`O_CREAT|O_EXCL|O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`);
//! * hardlink targets are resolved inside the root (or, for the overlay
//!   backend, inside a lower layer, then copied up), never outside;
//! * file data is streamed, so a header claiming a huge size costs no
//!   memory; a layer that ends early is an error naming the entry; PAX and
//!   GNU long-name headers, the only ones held in memory, are limited to
//!   1 MiB each (and the PAX data of one entry to 1 MiB in all);
//! * entry names and link targets quoted in errors and warnings have their
//!   control characters escaped (see `escape`), so a name like `\x1b[2J`
//!   never reaches a terminal raw;
//! * device nodes that cannot be created (no `CAP_MKNOD`) are skipped with a
//!   warning returned in [`ApplyReport::warnings`];
//! * overlay's private xattrs (`trusted.overlay.*`, `user.overlay.*`) are
//!   never taken from a layer.
//!
//! Whiteouts: `.wh.NAME` removes NAME; `.wh..wh..opq` removes what lower
//! layers put in the directory (entries of this layer stay). With
//! [`WhiteoutStyle::Overlay`] the target is an overlay upper dir: a removed
//! path becomes a 0/0 character device and an opaque directory gets
//! `trusted.overlay.opaque=y`, which overlayfs understands at mount time.
//! With [`WhiteoutStyle::Delete`] (a full tree) they are plain deletions.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use hoist_untrusted::Compression;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};

use crate::error::{io_err, Error, Result};
use crate::fsutil;
use crate::tarread::{RawEntry, TarReader};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutStyle {
    /// As overlayfs whiteouts (0/0 char devices) and opaque xattrs, in an
    /// upper dir.
    Overlay,
    /// As deletions, in a full tree.
    Delete,
}

/// Where a layer is extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    /// The directory that receives the entries.
    pub root: PathBuf,
    /// How deletions are recorded.
    pub whiteouts: WhiteoutStyle,
    /// For overlay: the parent chain, nearest first (hardlink targets and
    /// missing parent directories are looked up there).
    pub lowers: Vec<PathBuf>,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Give entries the owner recorded in the layer (needs root or a user
    /// namespace mapping the ids); when false, files keep the applier's ids.
    pub same_owner: bool,
    /// Create device nodes and FIFOs; when false they are skipped with a
    /// warning (a build context holds files, and a device node of the
    /// host's disk in it would be read by whatever reads the context).
    pub special_files: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            same_owner: true,
            special_files: true,
        }
    }
}

/// Something that was not applied as written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyWarning {
    /// The entry's path in the layer.
    pub path: String,
    /// What happened.
    pub message: String,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Number of entries read.
    pub entries: u64,
    /// Entries skipped or changed, with the reason.
    pub warnings: Vec<ApplyWarning>,
}

fn to_io(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// An entry name or link target from the layer, ready for a message: control
/// characters escaped, so an entry name cannot move the cursor, clear the
/// screen or forge log lines.
fn quoted(raw: &[u8]) -> String {
    hoist_untrusted::escape_bytes(raw).into_owned()
}

fn layer_err(path: &[u8]) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Layer {
        path: quoted(path),
        source,
    }
}

fn unsafe_entry(path: &[u8], reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        path: quoted(path),
        reason: reason.into(),
    }
}

/// A uid or gid from a header as the kernel takes it: ids past 32 bits
/// would wrap, and `u32::MAX` means "leave unchanged" to chown.
fn id(value: u64, what: &str, raw: &[u8]) -> Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| unsafe_entry(raw, format!("{what} {value} is out of range")))
}

/// Splits an archive path into components, refusing `..` and dropping `.`,
/// empty components and a leading `/`.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(raw, "the path contains a `..` component")),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// A layer's bytes, decompressed as its magic bytes say.
pub enum Decoded<R: BufRead> {
    /// gzip, any number of members (boxed: its inflate state is large).
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    /// zstd.
    Zstd(zstd::stream::read::Decoder<'static, R>),
    /// A plain tar stream.
    Plain(R),
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
            Decoded::Plain(r) => r.read(buf),
        }
    }
}

/// Opens a decompressing reader on `layer` after looking at its magic bytes.
pub fn decompress<R: Read>(layer: R) -> Result<Decoded<BufReader<R>>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, layer);
    let head = buffered.fill_buf().map_err(layer_err(b""))?;
    Ok(match Compression::sniff(head) {
        Compression::Gzip => {
            Decoded::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
        }
        Compression::Zstd => Decoded::Zstd(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(layer_err(b""))?,
        ),
        Compression::None => Decoded::Plain(buffered),
    })
}

/// How far the inflating thread of [`apply_layer`] may run ahead of the
/// thread writing files: `AHEAD_CHUNKS` chunks of `AHEAD_CHUNK` bytes.
const AHEAD_CHUNK: usize = 256 * 1024;
const AHEAD_CHUNKS: usize = 8;

/// The reading end of [`apply_layer`]'s inflating thread: its chunks in
/// order, then its error or the end of the stream.
struct Ahead {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Read chunks go back to the inflating thread to be filled again.
    spent: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    failed: bool,
}

impl Read for Ahead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other(
                    "the layer could not be read (see the error before)",
                ));
            }
            match self.chunks.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.chunk, next);
                    self.at = 0;
                    let _ = self.spent.send(old);
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // The inflating thread ends after the last chunk.
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Extracts `layer` into `target` (see the module docs for the rules).
///
/// The layer is decompressed and hashed on a thread of its own, a few chunks
/// ahead of this one, which parses the tar stream and writes the files: for
/// a Debian base (200 MB of tar in 70 MB of gzip), inflating and hashing
/// were 0.49 s of the apply's 0.85 s of CPU on one thread (docs/bench.md,
/// session 10).
pub fn apply_layer(
    target: &ApplyTarget,
    layer: &mut (dyn Read + Send),
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let mut decoded = decompress(layer)?;
    std::thread::scope(|scope| {
        let (chunk_tx, chunks) = mpsc::sync_channel(AHEAD_CHUNKS);
        let (spent, spent_rx) = mpsc::channel::<Vec<u8>>();
        let inflating = scope.spawn(move || {
            let mut hash = Sha256::new();
            let mut count = 0u64;
            loop {
                let mut chunk = spent_rx.try_recv().unwrap_or_default();
                chunk.resize(AHEAD_CHUNK, 0);
                match fsutil::read_full(&mut decoded, &mut chunk) {
                    Ok(0) => return Some((hash, count)),
                    Ok(n) => {
                        chunk.truncate(n);
                        hash.update(&chunk);
                        count += n as u64;
                        // The writing thread stopped early: no report.
                        if chunk_tx.send(Ok(chunk)).is_err() {
                            return None;
                        }
                    }
                    Err(e) => {
                        let _ = chunk_tx.send(Err(e));
                        return None;
                    }
                }
            }
        });
        let reader = Ahead {
            chunks,
            spent,
            chunk: Vec::new(),
            at: 0,
            failed: false,
        };
        let applied = apply_decoded(target, reader, options);
        // A panic on the inflating thread is this one's.
        let hashed = inflating
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (mut report, (hash, count)) = match (applied, hashed) {
            (Ok(report), Some(hashed)) => (report, hashed),
            (Err(e), _) => return Err(e),
            // Not seen: the writing thread reads to the end, so it meets
            // whatever stopped the inflating one.
            (Ok(_), None) => {
                return Err(Error::Layer {
                    path: "(end of layer)".into(),
                    source: io::Error::other("decompression stopped before the end of the layer"),
                })
            }
        };
        report.diff_id = format!("sha256:{}", hex::encode(hash.finalize()));
        report.uncompressed_size = count;
        Ok(report)
    })
}

/// [`apply_layer`] on the decompressed stream; the report's `diff_id` and
/// `uncompressed_size` are the caller's to fill in.
fn apply_decoded(
    target: &ApplyTarget,
    mut reader: impl Read,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let open_dir = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)
        .map_err(io_err("open directory", p))
    };
    let root = open_dir(&target.root)?;
    let mut lowers = Vec::new();
    if target.whiteouts == WhiteoutStyle::Overlay {
        for l in &target.lowers {
            lowers.push(open_dir(l)?);
        }
    }
    let mut applier = Applier {
        root,
        root_path: target.root.clone(),
        style: target.whiteouts,
        lowers,
        options: *options,
        written: HashSet::new(),
        dir_times: Vec::new(),
        warnings: Vec::new(),
        entries: 0,
    };
    {
        let mut tar = TarReader::new(&mut reader);
        let mut last: Option<Vec<u8>> = None;
        loop {
            let next = tar.next_entry().map_err(|source| Error::Layer {
                path: match &last {
                    Some(p) => format!("(the header after `{}`)", quoted(p)),
                    None => "(the first header)".to_string(),
                },
                source,
            })?;
            let Some(entry) = next else { break };
            last = Some(entry.path.clone());
            applier.entries += 1;
            applier.apply_entry(&entry, &mut tar)?;
        }
    }
    // Read to the end so the hash covers the whole stream and gzip's
    // trailer (CRC, length) is checked.
    io::copy(&mut reader, &mut io::sink()).map_err(layer_err(b"(end of layer)"))?;
    applier.finish()?;
    Ok(ApplyReport {
        diff_id: String::new(),
        uncompressed_size: 0,
        entries: applier.entries,
        warnings: applier.warnings,
    })
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Applier {
    root: OwnedFd,
    root_path: PathBuf,
    style: WhiteoutStyle,
    lowers: Vec<OwnedFd>,
    options: ApplyOptions,
    written: HashSet<Vec<u8>>,
    dir_times: Vec<(Vec<Vec<u8>>, i64)>,
    warnings: Vec<ApplyWarning>,
    entries: u64,
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn proc_path(dir: &impl AsRawFd, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

fn in_root(dir: impl AsFd, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    rustix::fs::openat2(
        dir,
        OsStr::from_bytes(rel),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

impl Applier {
    fn warn(&mut self, path: &[u8], message: impl Into<String>) {
        self.warnings.push(ApplyWarning {
            path: quoted(path),
            message: message.into(),
        });
    }

    /// The path of `comps` for error messages only (escaped, so it may
    /// differ from the real path when the name has control characters).
    fn display(&self, comps: &[Vec<u8>]) -> PathBuf {
        self.root_path.join(quoted(&join(comps)))
    }

    /// Opens (creating as needed) the directory `comps` inside the root.
    fn resolve_dir(&mut self, comps: &[Vec<u8>], entry: &[u8]) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match in_root(&self.root, &join(comps), flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e == rustix::io::Errno::NOENT => {}
            Err(e) if e == rustix::io::Errno::NOTDIR => {
                return Err(unsafe_entry(entry, "a parent path is not a directory"))
            }
            Err(e) => {
                return Err(io_err("open directory", self.display(comps))(to_io(e)));
            }
        }
        let mut dir = in_root(&self.root, b"", flags)
            .map_err(to_io)
            .map_err(io_err("open directory", &self.root_path))?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match in_root(&self.root, &prefix, flags) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(e) if e == rustix::io::Errno::NOENT => {}
                Err(e) if e == rustix::io::Errno::NOTDIR => {
                    return Err(unsafe_entry(entry, "a parent path is not a directory"))
                }
                Err(e) => {
                    return Err(io_err("open directory", self.display(&comps[..=i]))(to_io(
                        e,
                    )))
                }
            }
            let name = OsStr::from_bytes(&comps[i]);
            // A lower layer's directory keeps its mode and owner when it is
            // recreated in the upper dir (what overlay's copy-up would do).
            let lower_meta = self.lowers.iter().find_map(|l| {
                in_root(l, &prefix, flags)
                    .ok()
                    .and_then(|fd| rustix::fs::fstat(&fd).ok())
            });
            let mode = lower_meta.as_ref().map_or(0o755, |s| s.st_mode & 0o7777);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::EXIST => {
                    return Err(unsafe_entry(
                        entry,
                        format!(
                            "parent `{}` is a symlink to a missing directory",
                            quoted(&prefix)
                        ),
                    ))
                }
                Err(e) => {
                    return Err(io_err("create directory", self.display(&comps[..=i]))(
                        to_io(e),
                    ))
                }
            }
            if let Some(s) = &lower_meta {
                let p = Path::new(name);
                let _ = fsutil::lchown_at(&dir, p, s.st_uid, s.st_gid);
                let _ = rustix::fs::chmodat(&dir, p, Mode::from_raw_mode(mode), AtFlags::empty());
            }
            dir = in_root(&self.root, &prefix, flags)
                .map_err(to_io)
                .map_err(io_err("open directory", self.display(&comps[..=i])))?;
        }
        Ok(dir)
    }

    fn remove_at(&self, dir: &OwnedFd, name: &[u8], comps: &[Vec<u8>]) -> Result<()> {
        let stat = match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(s) => s,
            Err(e) if e == rustix::io::Errno::NOENT => return Ok(()),
            Err(e) => return Err(io_err("stat", self.display(comps))(to_io(e))),
        };
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            // remove_dir_all never follows symlinks below the path it is
            // given; the /proc path pins the already resolved parent.
            std::fs::remove_dir_all(proc_path(dir, name))
                .map_err(io_err("remove directory", self.display(comps)))
        } else {
            rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty())
                .map_err(to_io)
                .map_err(io_err("remove", self.display(comps)))
        }
    }

    fn apply_entry(&mut self, entry: &RawEntry, data: &mut dyn Read) -> Result<()> {
        let raw = entry.path.clone();
        let comps = clean_path(&raw)?;
        let Some((name, parents)) = comps.split_last() else {
            // The root itself ("./"): its metadata belongs to the snapshot.
            return Ok(());
        };
        let name = name.clone();
        let parents = parents.to_vec();

        if name == b".wh..wh..opq" {
            let dir = self.resolve_dir(&parents, &raw)?;
            return self.opaque(&dir, &parents);
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(unsafe_entry(&raw, "whiteout names no file"));
            }
            let dir = self.resolve_dir(&parents, &raw)?;
            let mut target = parents.clone();
            target.push(hidden.to_vec());
            self.remove_at(&dir, hidden, &target)?;
            self.written.remove(&join(&target));
            if self.style == WhiteoutStyle::Overlay {
                fsutil::mknod_at(&dir, Path::new(OsStr::from_bytes(hidden)), libc::S_IFCHR, 0)
                    .map_err(io_err("create whiteout", self.display(&target)))?;
            }
            return Ok(());
        }

        let mut kind = entry.typeflag;
        if (kind == 0 || kind == b'0') && raw.ends_with(b"/") {
            // Old (v7) archives mark directories by a trailing slash only.
            kind = b'5';
        }
        if !matches!(
            kind,
            0 | b'0' | b'7' | b'1' | b'2' | b'3' | b'4' | b'5' | b'6'
        ) {
            // Before anything is created or removed: a skipped entry leaves
            // the tree as it was.
            self.warn(
                &raw,
                format!(
                    "entry of unsupported type `{}` skipped",
                    kind.escape_ascii()
                ),
            );
            return Ok(());
        }
        let mut meta = Meta {
            mode: entry.mode & 0o7777,
            uid: id(entry.uid, "uid", &raw)?,
            gid: id(entry.gid, "gid", &raw)?,
            mtime: entry.mtime,
            xattrs: Vec::new(),
        };
        for (x, value) in &entry.xattrs {
            if fsutil::is_overlay_private(x) {
                self.warn(&raw, format!("dropped overlay xattr `{}`", quoted(x)));
            } else {
                meta.xattrs.push((x.clone(), value.clone()));
            }
        }

        let dir = self.resolve_dir(&parents, &raw)?;
        let name_path = Path::new(OsStr::from_bytes(&name)).to_path_buf();
        let is_dir_entry = kind == b'5';
        let existing = rustix::fs::statat(&dir, &name_path, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing.as_ref().is_some_and(|s| {
            rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Directory
        });
        if existing.is_some() && !(is_dir_entry && existing_is_dir) {
            self.remove_at(&dir, &name, &comps)?;
        }
        let shown = self.display(&comps);

        match kind {
            0 | b'0' | b'7' => {
                let fd = rustix::fs::openat(
                    &dir,
                    &name_path,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(to_io)
                .map_err(io_err("create", &shown))?;
                let mut file = File::from(fd);
                let expected = entry.size;
                let copied = io::copy(data, &mut file).map_err(layer_err(&raw))?;
                if copied != expected {
                    return Err(Error::Layer {
                        path: quoted(&raw),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the layer ends inside this file: its header says {expected} bytes, only {copied} follow"),
                        ),
                    });
                }
                self.set_meta_fd(&file, &meta, &raw, &shown)?;
            }
            b'5' => {
                if !existing_is_dir {
                    rustix::fs::mkdirat(&dir, &name_path, Mode::from_raw_mode(0o700))
                        .map_err(to_io)
                        .map_err(io_err("create directory", &shown))?;
                }
                let fd = rustix::fs::openat(
                    &dir,
                    &name_path,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(to_io)
                .map_err(io_err("open directory", &shown))?;
                let mtime = meta.mtime;
                self.set_meta_fd(&File::from(fd), &meta, &raw, &shown)?;
                self.dir_times.push((comps.clone(), mtime));
            }
            b'2' => {
                if entry.link.is_empty() {
                    return Err(unsafe_entry(&raw, "symlink without a target"));
                }
                let target = entry.link.clone();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, &name_path)
                    .map_err(to_io)
                    .map_err(io_err("create symlink", &shown))?;
                self.set_meta_at(&dir, &name, &meta, false, &raw, &shown)?;
            }
            b'1' => {
                if entry.link.is_empty() {
                    return Err(unsafe_entry(&raw, "hardlink without a target"));
                }
                let target = entry.link.clone();
                self.hardlink(&dir, &name_path, &target, &raw, &shown)?;
            }
            b'3' | b'4' | b'6' if !self.options.special_files => {
                self.warn(&raw, "device node or FIFO skipped: not kept here");
                return Ok(());
            }
            b'3' | b'4' | b'6' => {
                let (ftype, rdev) = match kind {
                    b'3' => (libc::S_IFCHR, true),
                    b'4' => (libc::S_IFBLK, true),
                    _ => (libc::S_IFIFO, false),
                };
                let dev = if rdev {
                    fsutil::makedev(entry.dev_major, entry.dev_minor)
                } else {
                    0
                };
                match fsutil::mknod_at(&dir, &name_path, ftype | meta.mode, dev) {
                    Ok(()) => self.set_meta_at(&dir, &name, &meta, true, &raw, &shown)?,
                    Err(e) if rdev && e.raw_os_error() == Some(libc::EPERM) => {
                        self.warn(
                            &raw,
                            "device node skipped: creating devices is not permitted here",
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(io_err("create special file", &shown)(e)),
                }
            }
            _ => unreachable!("unsupported types are skipped above"),
        }
        self.written.insert(join(&comps));
        Ok(())
    }

    fn set_meta_fd(&mut self, file: &File, meta: &Meta, raw: &[u8], shown: &Path) -> Result<()> {
        if self.options.same_owner {
            rustix::fs::fchown(
                file,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(to_io)
            .map_err(io_err("change owner of", shown))?;
        }
        // After chown, which clears setuid and setgid bits.
        rustix::fs::fchmod(file, Mode::from_raw_mode(meta.mode))
            .map_err(to_io)
            .map_err(io_err("change mode of", shown))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = fsutil::fset_xattr(file, name, value) {
                self.warn(raw, format!("xattr `{}` not set: {e}", quoted(name)));
            }
        }
        fsutil::fset_times(file, meta.mtime, 0).map_err(io_err("set times of", shown))
    }

    fn set_meta_at(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
        raw: &[u8],
        shown: &Path,
    ) -> Result<()> {
        let p = Path::new(OsStr::from_bytes(name));
        if self.options.same_owner {
            fsutil::lchown_at(dir, p, meta.uid, meta.gid)
                .map_err(io_err("change owner of", shown))?;
        }
        if chmod {
            // Only devices and FIFOs this function just created reach here,
            // never a symlink, so following is not a concern.
            rustix::fs::chmodat(dir, p, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(to_io)
                .map_err(io_err("change mode of", shown))?;
        }
        let at = proc_path(dir, name);
        for (xname, value) in &meta.xattrs {
            if let Err(e) = fsutil::set_xattr(&at, xname, value) {
                self.warn(raw, format!("xattr `{}` not set: {e}", quoted(xname)));
            }
        }
        fsutil::set_times_at(dir, p, meta.mtime, 0).map_err(io_err("set times of", shown))
    }

    fn hardlink(
        &mut self,
        dir: &OwnedFd,
        name: &Path,
        target: &[u8],
        raw: &[u8],
        shown: &Path,
    ) -> Result<()> {
        let target_comps = clean_path(target).map_err(|_| {
            unsafe_entry(
                raw,
                format!("hardlink target `{}` contains `..`", quoted(target)),
            )
        })?;
        let rel = join(&target_comps);
        if rel.is_empty() {
            return Err(unsafe_entry(raw, "hardlink to the root directory"));
        }
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        let fd = match in_root(&self.root, &rel, flags) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT && !self.lowers.is_empty() => {
                self.copy_up(&target_comps, raw)?
            }
            Err(e) if e == rustix::io::Errno::NOENT => {
                return Err(unsafe_entry(
                    raw,
                    format!(
                        "hardlink target `{}` does not exist inside the layer root",
                        quoted(target)
                    ),
                ))
            }
            Err(e) => return Err(io_err("open hardlink target for", shown)(to_io(e))),
        };
        let st = rustix::fs::fstat(&fd)
            .map_err(to_io)
            .map_err(io_err("stat hardlink target for", shown))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            return Err(unsafe_entry(raw, "hardlink to a directory"));
        }
        rustix::fs::linkat(&fd, "", dir, name, AtFlags::EMPTY_PATH)
            .map_err(to_io)
            .map_err(io_err("create hardlink", shown))
    }

    /// Copies a lower layer's file into the upper dir so it can be linked.
    fn copy_up(&mut self, comps: &[Vec<u8>], raw: &[u8]) -> Result<OwnedFd> {
        let rel = join(comps);
        // O_PATH: opening a lower's FIFO for reading would block for ever,
        // and opening a device node would open the host's device.
        let found = self
            .lowers
            .iter()
            .find_map(|l| in_root(l, &rel, OFlags::PATH | OFlags::NOFOLLOW).ok());
        let Some(src) = found else {
            return Err(unsafe_entry(
                raw,
                format!(
                    "hardlink target `{}` exists neither in the layer nor in its parents",
                    quoted(&rel)
                ),
            ));
        };
        let st = rustix::fs::fstat(&src)
            .map_err(to_io)
            .map_err(io_err("stat", self.display(comps)))?;
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if kind != rustix::fs::FileType::RegularFile && kind != rustix::fs::FileType::Symlink {
            return Err(unsafe_entry(
                raw,
                "hardlink target in a parent layer is not a regular file or a symlink",
            ));
        }
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| unsafe_entry(raw, "empty hardlink target"))?;
        let dir = self.resolve_dir(parents, raw)?;
        let shown = self.display(comps);
        if kind == rustix::fs::FileType::Symlink {
            // A symlink is copied up as a symlink: its target is text, never
            // followed here.
            let target = rustix::fs::readlinkat(&src, "", Vec::new())
                .map_err(to_io)
                .map_err(io_err("read symlink", &shown))?;
            rustix::fs::symlinkat(target.as_c_str(), &dir, OsStr::from_bytes(name))
                .map_err(to_io)
                .map_err(io_err("copy up", &shown))?;
            let meta = Meta {
                mode: 0,
                uid: st.st_uid,
                gid: st.st_gid,
                mtime: st.st_mtime,
                xattrs: Vec::new(),
            };
            self.set_meta_at(&dir, name, &meta, false, raw, &shown)?;
            return in_root(&self.root, &rel, OFlags::PATH | OFlags::NOFOLLOW)
                .map_err(to_io)
                .map_err(io_err("open", &shown));
        }
        // Reopened for reading through /proc: the same inode, now known to
        // be a regular file.
        let src = rustix::fs::open(
            proc_path(&src, b""),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)
        .map_err(io_err("copy up", &shown))?;
        let dst = rustix::fs::openat(
            &dir,
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(to_io)
        .map_err(io_err("copy up", &shown))?;
        let mut src = File::from(src);
        let mut dst = File::from(dst);
        fsutil::reflink_or_copy(&mut src, &mut dst).map_err(io_err("copy up", &shown))?;
        let xattrs = fsutil::read_xattrs_fd(&src).map_err(io_err("read xattrs of", &shown))?;
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            xattrs: xattrs
                .into_iter()
                .filter(|(n, _)| !fsutil::is_overlay_private(n))
                .collect(),
        };
        self.set_meta_fd(&dst, &meta, raw, &shown)?;
        in_root(&self.root, &rel, OFlags::PATH | OFlags::NOFOLLOW)
            .map_err(to_io)
            .map_err(io_err("open", &shown))
    }

    fn opaque(&mut self, dir: &OwnedFd, comps: &[Vec<u8>]) -> Result<()> {
        let shown = self.display(comps);
        let listing =
            std::fs::read_dir(proc_path(dir, b"")).map_err(io_err("read directory", &shown))?;
        for child in listing {
            let child = child.map_err(io_err("read directory", &shown))?;
            let name = child.file_name().as_bytes().to_vec();
            let mut path = comps.to_vec();
            path.push(name.clone());
            if !self.written.contains(&join(&path)) {
                self.remove_at(dir, &name, &path)?;
            }
        }
        if self.style == WhiteoutStyle::Overlay {
            let fd = rustix::fs::openat(
                dir,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(to_io)
            .map_err(io_err("open directory", &shown))?;
            fsutil::fset_xattr(&fd, b"trusted.overlay.opaque", b"y")
                .map_err(io_err("mark opaque", &shown))?;
        }
        Ok(())
    }

    /// Directory mtimes last: creating their content moved them.
    fn finish(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (comps, mtime) in times.iter().rev() {
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let flags = OFlags::PATH | OFlags::DIRECTORY;
            let Ok(dir) = in_root(&self.root, &join(parents), flags) else {
                continue;
            };
            // The directory may have been removed by a later whiteout.
            let _ = fsutil::set_times_at(&dir, Path::new(OsStr::from_bytes(name)), *mtime, 0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_refuses_dotdot_and_strips_root() {
        assert_eq!(
            clean_path(b"/etc//./passwd").unwrap(),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        let err = clean_path(b"a/../../etc").unwrap_err().to_string();
        assert!(err.contains("`..`"), "{err}");
    }

    #[test]
    fn escape_leaves_no_control_character() {
        assert_eq!(
            quoted(b"\x1b[2J\x07a\tb\r\n\xc2\x9bc\x7f\xc3\xa9\xff"),
            r"\u{1b}[2J\u{7}a\tb\r\n\u{9b}c\u{7f}é\xff"
        );
        let err = clean_path(b"\x1b]0;x\x07/..").unwrap_err().to_string();
        assert_eq!(
            err,
            r"refusing layer entry `\u{1b}]0;x\u{7}/..`: the path contains a `..` component"
        );
    }

    #[test]
    fn ids_that_do_not_fit_uid_t_are_refused() {
        assert_eq!(id(4_294_967_294, "uid", b"f").unwrap(), 4_294_967_294);
        for bad in [u64::from(u32::MAX), 1 << 32, u64::MAX] {
            let err = id(bad, "gid", b"f").unwrap_err().to_string();
            assert_eq!(
                err,
                format!("refusing layer entry `f`: gid {bad} is out of range")
            );
        }
    }
}

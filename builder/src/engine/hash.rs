//! Which paths of a tree a COPY or a context selects, and the digest of their
//! content, mode and ownership (never mtimes).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoist_frontend::dockerignore::Matcher;
use hoist_untrusted::Root;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Whether a path component has wildcard characters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[a-z]`, `[^a]`, `\`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in p, including brackets).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('^') | Some('!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                hi = p[i + 2];
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(p, *n.first().unwrap_or(&'\0'))) {
                (Some(_), Some((true, len))) => go(&p[len..], &n[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

/// Cleans a source path to a relative `/`-separated path (`""` for the root).
pub fn relative(source: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The paths (relative to `root`) a source names: itself, or the matches of
/// its wildcards, sorted. A path that does not exist yields nothing.
///
/// Every directory on the way is resolved inside `root` first (a symlink is
/// followed as if `root` were `/`), so a returned path has no symlink but
/// possibly its last component, and `root.join(path)` never leaves `root`.
pub fn expand(root: &Path, source: &str) -> io::Result<Vec<String>> {
    expand_parts(&Root::new(root).map_err(untrusted_io)?, source, true)
}

/// [`expand`] of a path taken literally (`*`, `?` and `[` are plain characters).
pub fn expand_literal(root: &Path, source: &str) -> io::Result<Vec<String>> {
    expand_parts(&Root::new(root).map_err(untrusted_io)?, source, false)
}

fn expand_parts(scoped: &Root, source: &str, globs: bool) -> io::Result<Vec<String>> {
    let rel = relative(source);
    if rel.is_empty() {
        return Ok(vec![String::new()]);
    }
    let mut found = vec![String::new()];
    for part in rel.split('/') {
        let mut next: Vec<String> = Vec::new();
        for prefix in &found {
            let Some(prefix) = resolved_dir(scoped, prefix)? else {
                continue;
            };
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}/{name}")
                }
            };
            if globs && has_glob(part) {
                // Listed and stat'ed inside the root too: a directory
                // swapped for a symlink since it was resolved names nothing.
                let entries = match scoped.read_dir(&prefix) {
                    Ok(e) => e,
                    Err(_) => continue,
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| glob_match(part, name))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(n)));
            } else if scoped.metadata(join(part), false).is_ok() {
                next.push(join(part));
            }
        }
        // Two symlinks to one directory name the same paths once.
        let mut seen = std::collections::HashSet::new();
        next.retain(|p| seen.insert(p.clone()));
        found = next;
    }
    Ok(found)
}

/// `rel` with its symlinks resolved inside the root, if it is a directory.
fn resolved_dir(scoped: &Root, rel: &str) -> io::Result<Option<String>> {
    if rel.is_empty() {
        return Ok(Some(String::new()));
    }
    match scoped.resolve(rel, true) {
        Ok(host) if host.is_dir() => Ok(host
            .strip_prefix(scoped.path())
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(untrusted_io(e)),
    }
}

fn untrusted_io(e: hoist_untrusted::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Every entry at or below the paths `sources` select, not left out by
/// `ignore`, sorted by path.
pub fn select(
    root: &Path,
    sources: &[String],
    ignore: Option<&Matcher>,
) -> io::Result<BTreeMap<String, Metadata>> {
    select_in(&Root::new(root).map_err(untrusted_io)?, sources, ignore)
}

/// [`select`] in a root already opened.
fn select_in(
    scoped: &Root,
    sources: &[String],
    ignore: Option<&Matcher>,
) -> io::Result<BTreeMap<String, Metadata>> {
    let mut starts = Vec::new();
    for source in sources {
        for path in expand_parts(scoped, source, true)? {
            let meta = scoped.metadata(&path, false).map_err(untrusted_io)?;
            starts.push((path, meta));
        }
    }
    walk(scoped, starts, ignore)
}

/// Every entry at and below `starts` (each stat'ed already, not following a
/// symlink) that `ignore` keeps. Directories are read on every core, each
/// child stat'ed relative to its open directory: stat-ing the 20,000 entries
/// of a context one by one took 60 ms on one core, before any hashing.
fn walk(
    root: &Root,
    starts: Vec<(String, Metadata)>,
    ignore: Option<&Matcher>,
) -> io::Result<BTreeMap<String, Metadata>> {
    let mut found = Vec::new();
    let mut dirs = Vec::new();
    for (rel, meta) in starts {
        visit(rel, meta, ignore, &mut found, &mut dirs);
    }
    if dirs.is_empty() {
        return Ok(found.into_iter().collect());
    }
    let work = std::sync::Mutex::new(WalkWork {
        dirs,
        reading: 0,
        error: None,
    });
    let changed = std::sync::Condvar::new();
    let worker = || -> Vec<(String, Metadata)> {
        let mut found = Vec::new();
        let lock = || work.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = lock();
        loop {
            if state.error.is_some() {
                return found;
            }
            let Some(dir) = state.dirs.pop() else {
                if state.reading == 0 {
                    return found;
                }
                state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            state.reading += 1;
            drop(state);
            let mut below = Vec::new();
            let read = read_children(root, &dir, ignore, &mut found, &mut below);
            state = lock();
            state.reading -= 1;
            match read {
                Ok(()) => state.dirs.extend(below),
                Err(e) => {
                    state.error.get_or_insert(e);
                }
            }
            changed.notify_all();
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        found.extend(worker());
        for other in others {
            // A walker only panics on a bug; its entries are then missing,
            // and the error below says so.
            match other.join() {
                Ok(part) => found.extend(part),
                Err(_) => {
                    let mut state = work.lock().unwrap_or_else(|e| e.into_inner());
                    state
                        .error
                        .get_or_insert_with(|| io::Error::other("a walking thread panicked"));
                }
            }
        }
    });
    let state = work.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = state.error {
        return Err(e);
    }
    Ok(found.into_iter().collect())
}

/// The directories still to read, how many are being read, the first error.
struct WalkWork {
    dirs: Vec<String>,
    reading: usize,
    error: Option<io::Error>,
}

/// Keeps the entry unless `ignore` leaves it out, and queues a directory
/// unless `ignore` leaves out everything below it too.
fn visit(
    rel: String,
    meta: Metadata,
    ignore: Option<&Matcher>,
    found: &mut Vec<(String, Metadata)>,
    dirs: &mut Vec<String>,
) {
    let excluded = !rel.is_empty() && ignore.is_some_and(|m| m.is_excluded(&rel));
    if excluded && ignore.is_some_and(|m| m.can_skip_dir(&rel)) {
        return;
    }
    if meta.is_dir() {
        dirs.push(rel.clone());
    }
    if !excluded {
        found.push((rel, meta));
    }
}

/// The entries of the directory `rel`, opened inside `root` without
/// following a symlink there: a directory swapped for a symlink since it
/// was stat'ed is an error, never a listing of a directory elsewhere.
fn read_children(
    root: &Root,
    rel: &str,
    ignore: Option<&Matcher>,
    found: &mut Vec<(String, Metadata)>,
    dirs: &mut Vec<String>,
) -> io::Result<()> {
    for entry in root.read_dir(rel).map_err(untrusted_io)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = entry.metadata()?;
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        visit(child, meta, ignore, found, dirs);
    }
    Ok(())
}

/// Digests of file contents, remembered by (path, size, mtime, inode, ctime) and
/// persisted between builds, so that an unchanged context costs a walk.
pub struct StatCache {
    file: PathBuf,
    entries: Mutex<StatEntries>,
    /// The thread reading the cache file, until the first access joins it.
    loading: Mutex<Option<std::thread::JoinHandle<StatEntries>>>,
    /// Whole selections hashed in this build (see [`selection_digest`]), by
    /// tree and cleaned, sorted source paths: their digest and entries.
    selections: Mutex<HashMap<SelectionKey, Selection>>,
    /// Whether anything was learned since the load (an unchanged context
    /// must not cost a rewrite of the whole file).
    dirty: std::sync::atomic::AtomicBool,
}

/// Content digests by path, with the stat they were taken at.
type StatEntries = HashMap<PathBuf, (StatKey, [u8; 32])>;

/// The first line of a stat cache file: its entries' digests are
/// [`content_digest`]s. A file without it (an older hoist's, of SHA-256
/// digests) is an empty cache, rewritten by the next save.
const STAT_CACHE_HEADER: &str = "hoist-stat-cache 2 blake3\n";

/// The entries of a stat cache file; lines that do not parse are skipped.
fn read_entries(file: &Path) -> StatEntries {
    let Ok(text) = fs::read_to_string(file) else {
        return HashMap::new();
    };
    let Some(text) = text.strip_prefix(STAT_CACHE_HEADER) else {
        return HashMap::new();
    };
    // Sized up front: growing the map rehashed 20,000 paths several times.
    let mut entries = HashMap::with_capacity(text.bytes().filter(|b| *b == b'\n').count());
    for line in text.lines() {
        let mut fields = line.splitn(8, ' ');
        let mut next = || fields.next();
        let (Some(digest), Some(size), Some(mtime), Some(mtime_nsec), Some(ino)) =
            (next(), next(), next(), next(), next())
        else {
            continue;
        };
        let (Some(ctime), Some(ctime_nsec), Some(path)) = (next(), next(), next()) else {
            continue;
        };
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(digest, &mut bytes).is_err() {
            continue;
        }
        let parse = |s: &str| s.parse::<i64>().ok();
        let (Some(size), Some(mtime), Some(mn), Some(ino), Some(ctime), Some(cn)) = (
            parse(size),
            parse(mtime),
            parse(mtime_nsec),
            parse(ino),
            parse(ctime),
            parse(ctime_nsec),
        ) else {
            continue;
        };
        let key = StatKey {
            size: size as u64,
            mtime,
            mtime_nsec: mn,
            ino: ino as u64,
            ctime,
            ctime_nsec: cn,
        };
        entries.insert(PathBuf::from(path), (key, bytes));
    }
    entries
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct StatKey {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl StatKey {
    /// The stat cache file's line for `path` with this stat (what
    /// [`read_entries`] parses).
    fn write_line(&self, out: &mut String, digest_hex: &str, path: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "{digest_hex} {} {} {} {} {} {} {path}",
            self.size, self.mtime, self.mtime_nsec, self.ino, self.ctime, self.ctime_nsec,
        );
    }

    fn of(meta: &Metadata) -> Self {
        StatKey {
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

impl StatCache {
    /// Loads the cache file (a missing or unreadable file is an empty cache)
    /// on a thread of its own: parsing a 20,000-file context's entries takes
    /// tens of milliseconds, which the build spends walking the context
    /// meanwhile. The first lookup waits for it.
    pub fn load(file: PathBuf) -> Self {
        let reader = file.clone();
        let (entries, loading) = match std::thread::Builder::new()
            .name("stat-cache".into())
            .spawn(move || read_entries(&reader))
        {
            Ok(handle) => (HashMap::new(), Some(handle)),
            Err(_) => (read_entries(&file), None),
        };
        StatCache {
            file,
            entries: Mutex::new(entries),
            loading: Mutex::new(loading),
            selections: Mutex::new(HashMap::new()),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatEntries> {
        // Each critical section is one map operation.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let loading = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = loading {
            // Nothing reached the map before this join (every access comes
            // through here), and a reader that panicked leaves it empty.
            if let Ok(loaded) = handle.join() {
                *entries = loaded;
            }
        }
        entries
    }

    /// The digest of the file at `path` if it was hashed with this stat.
    pub(crate) fn lookup(&self, path: &Path, meta: &Metadata) -> Option<[u8; 32]> {
        let key = StatKey::of(meta);
        match self.lock().get(path) {
            Some((k, digest)) if *k == key => Some(*digest),
            _ => None,
        }
    }

    fn remember(&self, path: PathBuf, meta: &Metadata, digest: [u8; 32]) {
        self.lock().insert(path, (StatKey::of(meta), digest));
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn selection(&self, key: &SelectionKey) -> Option<Selection> {
        self.selections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The entries of `sources` in `root` with their content digests, if
    /// [`selection_digest`] hashed that selection in this build.
    pub fn selected(&self, root: &Path, sources: &[String]) -> Option<Arc<[SelectedEntry]>> {
        self.selection(&selection_key(root, sources))
            .map(|(_, entries)| entries)
    }

    /// Writes the cache file atomically if anything changed; failures only
    /// cost speed next time.
    pub fn save(&self) {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let entries = self.lock();
        // One buffer, no string per line: a 20,000-file context is saved
        // after every build that changed one of its files.
        let mut text = String::with_capacity(entries.len() * 160);
        text.push_str(STAT_CACHE_HEADER);
        let mut hex_digest = [0u8; 64];
        for (path, (k, digest)) in entries.iter() {
            let Some(path) = path.to_str() else { continue };
            if path.contains('\n') {
                continue;
            }
            if hex::encode_to_slice(digest, &mut hex_digest).is_err() {
                continue;
            }
            k.write_line(
                &mut text,
                std::str::from_utf8(&hex_digest).unwrap_or_default(),
                path,
            );
        }
        drop(entries);
        // A name of our own: two builds (processes or engines) saving at
        // once must not write into one temp file and rename a mix of both.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .file
            .with_extension(format!("tmp-{}-{n}", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(error = %e, "could not save the context stat cache");
        }
    }

    /// The [`content_digest`] of the regular file `rel` in `root`, read
    /// through `buf` unless the cache has it for this stat.
    fn file_digest(
        &self,
        root: &Root,
        rel: &str,
        meta: &Metadata,
        buf: &mut [u8],
    ) -> io::Result<[u8; 32]> {
        let path = root.path().join(rel);
        if let Some(d) = self.lookup(&path, meta) {
            return Ok(d);
        }
        let digest = content_digest(root, rel, buf)?;
        self.remember(path, meta, digest);
        Ok(digest)
    }
}

/// The BLAKE3 digest of the regular file `rel` in `root`, read through `buf`; the
/// one digest of a context file's bytes (cache keys, the stat cache, the
/// explainer's preimages). BLAKE3 rather than SHA-256: on this project's
/// machine it hashes 1 GiB in 0.165 s of CPU against SHA-256's 0.598 s with
/// SHA-NI (both crates, 256 KiB updates), and a rebuild whose files were all
/// touched must read and hash every byte (docs/bench.md, "bigcontext").
/// Opened with [`Root::open_to_read`]: resolved inside the context, never
/// through a symlink at the last component, never blocking, and without
/// updating the atime (after a `touch`, atime = mtime, relatime would dirty
/// every inode the rebuild reads, and ext4 journals each).
pub(crate) fn content_digest(root: &Root, rel: &str, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut file = root.open_to_read(rel).map_err(untrusted_io)?;
    let mut hasher = blake3::Hasher::new();
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Read size when hashing: big enough that a 4 MiB file is a few reads, small
/// enough to stay in L2 between the kernel's copy and the hash reading it.
const HASH_BUFFER: usize = 256 << 10;

/// A tree and the cleaned, sorted, deduplicated paths selected in it.
type SelectionKey = (PathBuf, Vec<String>);

/// A selection's digest and its entries.
type Selection = (Digest, Arc<[SelectedEntry]>);

fn selection_key(root: &Path, sources: &[String]) -> SelectionKey {
    let mut cleaned: Vec<String> = sources.iter().map(|s| relative(s)).collect();
    cleaned.sort();
    cleaned.dedup();
    (root.to_path_buf(), cleaned)
}

/// One entry of a selection hashed in this build, with what the build's
/// record of its step (the explainer's preimage) keeps of it, so that the
/// record costs neither a second walk nor a second read of the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedEntry {
    pub path: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    /// [`content_digest`] of a regular file.
    pub content: Option<[u8; 32]>,
    /// A symlink's target, as the digest took it.
    pub link: Option<PathBuf>,
}

/// The digest ([`combine`]) of [`select`]`(root, sources, ignore)`, computed once
/// per build for each tree and set of sources: the context's own key and
/// the COPY that reads all of it select the same files, and a build reads
/// one state of its context. `ignore` must be the same for every call with
/// the same `root` (it is: one `.dockerignore` per context).
pub fn selection_digest(
    root: &Path,
    sources: &[String],
    ignore: Option<&Matcher>,
    cache: &StatCache,
) -> io::Result<Digest> {
    let key = selection_key(root, sources);
    if let Some((d, _)) = cache.selection(&key) {
        return Ok(d);
    }
    // One descriptor of the context for the walk and every read after it.
    let scoped = Root::new(root).map_err(untrusted_io)?;
    let entries = select_in(&scoped, sources, ignore)?;
    let contents = hash_contents(&scoped, &entries, cache)?;
    let mut links = link_targets(&scoped, &entries)?;
    let digest = combine(&entries, &contents, &links);
    // In entry order, so that the paths can move out of `entries` rather
    // than be copied.
    let taken: Vec<(Option<[u8; 32]>, Option<PathBuf>)> = entries
        .keys()
        .map(|path| {
            (
                contents.get(path.as_str()).copied(),
                links.remove(path.as_str()),
            )
        })
        .collect();
    drop((contents, links));
    let selected = entries
        .into_iter()
        .zip(taken)
        .map(|((path, meta), (content, link))| SelectedEntry {
            content,
            link,
            mode: meta.mode(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ino: meta.ino(),
            path,
        })
        .collect();
    cache
        .selections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (digest, selected));
    Ok(digest)
}

/// [`combine`] of `entries` with their contents hashed (the tests' way in).
#[cfg(test)]
fn digest_entries(
    root: &Path,
    entries: &BTreeMap<String, Metadata>,
    cache: &StatCache,
) -> io::Result<Digest> {
    let scoped = Root::new(root).map_err(untrusted_io)?;
    let contents = hash_contents(&scoped, entries, cache)?;
    Ok(combine(
        entries,
        &contents,
        &link_targets(&scoped, entries)?,
    ))
}

/// The target of every symlink among `entries`, by path, read through the
/// root-scoped resolver: a directory on the way swapped for a symlink since
/// the walk leads nowhere outside the context.
fn link_targets<'a>(
    scoped: &Root,
    entries: &'a BTreeMap<String, Metadata>,
) -> io::Result<HashMap<&'a str, PathBuf>> {
    let mut links = entries
        .iter()
        .filter(|(_, meta)| meta.file_type().is_symlink())
        .peekable();
    if links.peek().is_none() {
        return Ok(HashMap::new());
    }
    links
        .map(|(rel, _)| {
            let target = scoped.read_link(rel).map_err(untrusted_io)?;
            Ok((rel.as_str(), target))
        })
        .collect()
}

/// The content digest of every regular file among `entries`, by path.
fn hash_contents<'a>(
    scoped: &Root,
    entries: &'a BTreeMap<String, Metadata>,
    cache: &StatCache,
) -> io::Result<HashMap<&'a str, [u8; 32]>> {
    // Hash file contents on all cores first. Workers take the next file from a
    // shared counter, largest first: split by count, a context of a few big
    // files and many small ones (sorted by path, the big ones together) left one
    // core with nearly all the bytes.
    let mut files: Vec<(&String, &Metadata)> =
        entries.iter().filter(|(_, m)| m.is_file()).collect();
    files.sort_by(|a, b| b.1.size().cmp(&a.1.size()).then_with(|| a.0.cmp(b.0)));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut contents: HashMap<&str, [u8; 32]> = HashMap::with_capacity(files.len());
    std::thread::scope(|scope| -> io::Result<()> {
        let worker = || -> io::Result<Vec<(&str, [u8; 32])>> {
            let mut done = Vec::new();
            let mut buf = vec![0u8; HASH_BUFFER];
            loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(done);
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((rel, meta)) = files.get(i) else {
                    return Ok(done);
                };
                match cache.file_digest(scoped, rel, meta, &mut buf) {
                    Ok(digest) => done.push((rel.as_str(), digest)),
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        };
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mut first_error = None;
        match worker() {
            Ok(part) => contents.extend(part),
            Err(e) => first_error = Some(e),
        }
        for handle in handles {
            match handle.join() {
                Ok(Ok(part)) => contents.extend(part),
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => {
                    first_error =
                        first_error.or(Some(io::Error::other("a hashing thread panicked")))
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    })?;
    Ok(contents)
}

/// Digest of the selected entries: path, type, permission bits, owner, and
/// content (files, from `contents`) or target (symlinks, from `links`);
/// never times.
fn combine(
    entries: &BTreeMap<String, Metadata>,
    contents: &HashMap<&str, [u8; 32]>,
    links: &HashMap<&str, PathBuf>,
) -> Digest {
    let mut hasher = Sha256::new();
    // v2: contents are BLAKE3 digests (v1's were SHA-256), so no key of
    // the one can equal a key of the other.
    hasher.update(b"hoist.selected-content v2\n");
    // One buffer for every entry's line (a 20,000-file context).
    let mut line = String::new();
    for (rel, meta) in entries {
        let kind = if meta.is_dir() {
            'd'
        } else if meta.is_file() {
            'f'
        } else if meta.file_type().is_symlink() {
            'l'
        } else {
            'o'
        };
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            line,
            "{}\0{kind} {:o} {} {}\0",
            rel,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        hasher.update(line.as_bytes());
        if let Some(d) = contents.get(rel.as_str()) {
            hasher.update(d);
        } else if let Some(target) = links.get(rel.as_str()) {
            hasher.update(target.as_os_str().as_encoded_bytes());
        }
        hasher.update(b"\n");
    }
    Digest::from_bytes(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert_eq!(relative("/a/./b/../c/"), "a/c");
    }

    #[test]
    fn a_walk_selects_every_entry_once_and_keeps_dockerignore_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut expected = vec![String::new()];
        // Many directories, some nested.
        for d in 0..40 {
            fs::create_dir_all(root.join(format!("d{d:02}/sub"))).unwrap();
            expected.extend([format!("d{d:02}"), format!("d{d:02}/sub")]);
            for f in 0..10 {
                fs::write(root.join(format!("d{d:02}/f{f}")), "x").unwrap();
                expected.push(format!("d{d:02}/f{f}"));
            }
            fs::write(root.join(format!("d{d:02}/sub/g")), "y").unwrap();
            expected.push(format!("d{d:02}/sub/g"));
        }
        // Left out whole; left out but for one file (so walked into); a
        // pattern below a kept directory.
        fs::create_dir_all(root.join("skip/deep")).unwrap();
        fs::write(root.join("skip/deep/a"), "").unwrap();
        fs::create_dir_all(root.join("keep")).unwrap();
        fs::write(root.join("keep/no"), "").unwrap();
        fs::write(root.join("keep/yes"), "").unwrap();
        expected.push("keep/yes".into());
        fs::write(root.join("d07/sub/g.log"), "").unwrap();
        std::os::unix::fs::symlink("d00", root.join("link")).unwrap();
        expected.push("link".into());
        expected.sort();

        let ignore = Matcher::parse("skip\nkeep\n!keep/yes\n**/*.log\n").unwrap();
        let entries = select(root, &[String::new()], Some(&ignore)).unwrap();
        let paths: Vec<&String> = entries.keys().collect();
        assert_eq!(paths, expected.iter().collect::<Vec<_>>());
        assert!(entries["link"].file_type().is_symlink(), "not followed");
        assert!(entries["d03/sub"].is_dir());
        // The same below one directory.
        let below = select(root, &["d05".into()], Some(&ignore)).unwrap();
        assert_eq!(below.len(), 1 + 10 + 2);
    }

    /// A directory with one file, `a.txt` holding `one`, and its stat.
    fn one_file() -> (tempfile::TempDir, PathBuf, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        fs::write(&file, "one").unwrap();
        let meta = fs::symlink_metadata(&file).unwrap();
        (dir, file, meta)
    }

    #[test]
    fn a_saved_cache_is_read_back_before_its_first_lookup() {
        let (dir, file, meta) = one_file();
        let first = StatCache::load(dir.path().join("cache"));
        let root = Root::new(dir.path()).unwrap();
        let digest = first
            .file_digest(&root, "a.txt", &meta, &mut [0u8; 64])
            .unwrap();
        first.save();
        // Read on its own thread; the lookup must wait for it, not miss.
        let again = StatCache::load(dir.path().join("cache"));
        assert_eq!(again.lookup(&file, &meta), Some(digest));
        assert_eq!(digest, <[u8; 32]>::from(blake3::hash(b"one")));
        // A stat that changed since is a miss.
        fs::write(&file, "two!").unwrap();
        let changed = fs::symlink_metadata(&file).unwrap();
        assert_eq!(
            StatCache::load(dir.path().join("cache")).lookup(&file, &changed),
            None
        );
    }

    #[test]
    fn an_older_hoists_stat_cache_of_sha256_digests_is_not_taken() {
        let (dir, file, meta) = one_file();
        // The format before the header: the SHA-256 of the bytes, with a stat
        // that still matches.
        let mut old = String::new();
        StatKey::of(&meta).write_line(
            &mut old,
            &hex::encode(Sha256::digest(b"one")),
            file.to_str().unwrap(),
        );
        let cache_file = dir.path().join("cache");
        fs::write(&cache_file, &old).unwrap();
        let cache = StatCache::load(cache_file.clone());
        assert_eq!(cache.lookup(&file, &meta), None);
        let root = Root::new(dir.path()).unwrap();
        let digest = cache
            .file_digest(&root, "a.txt", &meta, &mut [0u8; 64])
            .unwrap();
        assert_eq!(digest, <[u8; 32]>::from(blake3::hash(b"one")));
        cache.save();
        let saved = fs::read_to_string(&cache_file).unwrap();
        assert!(saved.starts_with(STAT_CACHE_HEADER), "{saved}");
        assert_eq!(
            StatCache::load(cache_file).lookup(&file, &meta),
            Some(digest)
        );
    }

    #[test]
    fn digest_ignores_mtime_but_not_content_or_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), "one").unwrap();
        fs::write(dir.path().join("b.txt"), "two").unwrap();
        let cache = StatCache::load(dir.path().join("none"));
        let sel = |c: &StatCache| {
            let entries = select(dir.path(), &["*.txt".into()], None).unwrap();
            digest_entries(dir.path(), &entries, c).unwrap()
        };
        let first = sel(&cache);
        let f = File::options()
            .write(true)
            .open(dir.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(sel(&cache), first, "mtime must not matter");
        fs::set_permissions(dir.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(sel(&cache), first, "mode must matter");
        fs::write(dir.path().join("b.txt"), "TWO").unwrap();
        let fresh = StatCache::load(dir.path().join("none"));
        assert_eq!(sel(&cache), sel(&fresh), "changed content must be rehashed");
    }

    #[test]
    fn every_file_of_a_mixed_context_is_hashed_and_a_vanished_one_is_an_error() {
        // Big files first in path order and many small ones after: the shape that
        // left one hashing thread with most of the bytes when files were split by count.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("big")).unwrap();
        fs::create_dir(dir.path().join("small")).unwrap();
        for i in 0..3 {
            fs::write(dir.path().join(format!("big/{i}")), vec![i as u8; 3 << 20]).unwrap();
        }
        for i in 0..200 {
            fs::write(dir.path().join(format!("small/{i}")), format!("file {i}")).unwrap();
        }
        let digest = || {
            let entries = select(dir.path(), &[".".into()], None).unwrap();
            digest_entries(
                dir.path(),
                &entries,
                &StatCache::load(dir.path().join("none")),
            )
        };
        let first = digest().unwrap();
        for changed in ["big/2", "small/0", "small/199"] {
            let path = dir.path().join(changed);
            let before = fs::read(&path).unwrap();
            let mut after = before.clone();
            after[0] ^= 1;
            fs::write(&path, &after).unwrap();
            assert_ne!(
                digest().unwrap(),
                first,
                "a change in {changed} must change the digest"
            );
            fs::write(&path, &before).unwrap();
            assert_eq!(digest().unwrap(), first);
        }

        let entries = select(dir.path(), &[".".into()], None).unwrap();
        fs::remove_file(dir.path().join("small/150")).unwrap();
        let error = digest_entries(
            dir.path(),
            &entries,
            &StatCache::load(dir.path().join("none")),
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn hashing_leaves_atime_alone_and_refuses_a_symlink_swapped_in() {
        let (dir, path, _) = one_file();
        // As `touch` leaves it: atime = mtime, which relatime would update on read.
        let then = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(then).set_modified(then))
            .unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        let root = Root::new(dir.path()).unwrap();
        let cache = StatCache::load(dir.path().join("none"));
        let mut buf = vec![0; 4096];
        let digest = cache.file_digest(&root, "a.txt", &meta, &mut buf).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(blake3::hash(b"one")));
        assert_eq!(fs::metadata(&path).unwrap().accessed().unwrap(), then);

        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let error = StatCache::load(dir.path().join("none"))
            .file_digest(&root, "a.txt", &meta, &mut buf)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/a.txt: too many levels of symbolic links"),
            "{error}"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_walk_leads_nowhere_outside() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("a.txt"), "host secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        fs::write(ctx.join("sub/a.txt"), "context").unwrap();
        let entries = select(&ctx, &[".".into()], None).unwrap();
        let sub = entries["sub"].clone();
        // What a process beside the build could do between the walk and the
        // reads: the directory becomes a symlink to one on the host.
        fs::remove_dir_all(ctx.join("sub")).unwrap();
        std::os::unix::fs::symlink(host.path(), ctx.join("sub")).unwrap();
        let error =
            digest_entries(&ctx, &entries, &StatCache::load(dir.path().join("none"))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        let root = Root::new(&ctx).unwrap();
        let error = walk(&root, vec![("sub".into(), sub)], None).unwrap_err();
        assert!(error.to_string().contains("/sub"), "{error}");
    }
}

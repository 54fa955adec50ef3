//! File actions on a mounted root: COPY/ADD of local files with Docker's rules,
//! mkdir (WORKDIR), mkfile (inline documents), rm.
//!
//! Every path inside the root is resolved with symlinks scoped to the root, so
//! a symlink in an image (`/bin -> usr/bin`, or a hostile `/x -> /etc`) never
//! leads outside it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::SystemTime;

use hoist_frontend::dockerignore::Matcher;
use hoist_untrusted::accounts::{numeric_id, split_user_group};
use hoist_untrusted::{Accounts, Compression, Escaped, Root};

use super::hash::{expand, expand_literal, has_glob, relative};
use super::reuse::Reuse;
use super::{io_error, EngineError};

/// A numeric owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Resolves `path` (absolute inside the root) to a host path under `root`,
/// following symlinks as if `root` were `/` (hoist-untrusted's resolver). The
/// last component is followed only when `follow_last` is set. Missing
/// components are appended as plain names.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, EngineError> {
    // Cleaned first, as Docker cleans a path (`/a/../b` is `/b`, never `a`).
    let path = relative(path);
    Root::new(root)
        .and_then(|r| r.resolve_or_missing(&path, follow_last))
        .map_err(|source| EngineError::Path {
            root: root.to_path_buf(),
            source,
        })
}

/// The text of the file at `path` inside `root` (symlinks resolved as if
/// `root` were `/`); `None` when there is none.
pub fn read_in_root(root: &Path, path: &Path) -> Result<Option<String>, EngineError> {
    let path_error = |source| EngineError::Path {
        root: root.to_path_buf(),
        source,
    };
    let mut file = match Root::new(root).and_then(|r| r.open_read(path)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(path_error(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(io_error("read", &root.join(path)))?;
    Ok(Some(text))
}

/// What a build reads from a context before it starts: the Dockerfile,
/// its ignore file and the context directory.
#[derive(Debug)]
pub struct BuildFiles {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its file name, for messages (`Dockerfile`).
    pub dockerfile_name: String,
    /// `<Dockerfile>.dockerignore`, else the context's `.dockerignore`
    /// (Docker's rule), when there is one.
    pub dockerignore: Option<String>,
    /// The context directory, resolved inside the root.
    pub context_dir: PathBuf,
}

/// Reads the Dockerfile `dockerfile` and context `context` (both relative
/// to `root`: a checkout, an unpacked or fetched context) inside `root`: a
/// symlink in it cannot make the build read, or use as its context, a
/// file of the host.
pub fn read_build_files(
    root: &Path,
    dockerfile: &str,
    context: &str,
) -> Result<BuildFiles, EngineError> {
    let read = |path: &Path| read_in_root(root, path).transpose();
    let dockerfile_path = PathBuf::from(relative(dockerfile));
    let text = read(&dockerfile_path).unwrap_or_else(|| {
        Err(EngineError::Invalid(format!(
            "there is no Dockerfile `{}` in {}",
            hoist_untrusted::escape(dockerfile),
            root.display()
        )))
    })?;
    let context_path = PathBuf::from(relative(context));
    let ignore_beside = PathBuf::from(format!("{}.dockerignore", dockerfile_path.display()));
    let dockerignore = match read(&ignore_beside) {
        Some(text) => Some(text?),
        None => read(&context_path.join(".dockerignore")).transpose()?,
    };
    let context_dir = resolve_in_root(root, context, true)?;
    if !context_dir.is_dir() {
        return Err(EngineError::Invalid(format!(
            "the context `{}` is not a directory",
            hoist_untrusted::escape(context)
        )));
    }
    Ok(BuildFiles {
        dockerfile: text,
        dockerfile_name: dockerfile_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into()),
        dockerignore,
        context_dir,
    })
}

/// The users and groups of the root (hoist-untrusted's one reader).
pub fn accounts(root: &Path) -> Result<Accounts, EngineError> {
    Ok(Accounts::read_dir(root)?)
}

/// Resolves `user[:group]` (names or numbers) against the root's `/etc/passwd`
/// and `/etc/group`, with `--chown`'s rules.
pub fn resolve_owner(root: &Path, spec: &str) -> Result<Owner, EngineError> {
    chown_owner(&accounts(root)?, spec)
}

/// `--chown`'s rules (BuildKit's `chown` lookup): a user without group takes
/// the user's primary group, or, for a numeric user unknown to passwd, the
/// same number (where `USER` would take group 0: the runner's rule).
pub fn chown_owner(accounts: &Accounts, spec: &str) -> Result<Owner, EngineError> {
    let (user, group) = split_user_group(spec);
    let numeric = |text: &str| {
        numeric_id(text).transpose().map_err(|_| {
            EngineError::Invalid(format!(
                "invalid id {text}: must be between 0 and {}",
                hoist_untrusted::accounts::MAX_ID
            ))
        })
    };
    let (uid, primary) = match numeric(user)? {
        Some(uid) => (uid, accounts.user_with_id(uid).map(|u| u.gid)),
        None => {
            let u = accounts.user_named(user).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?;
            (u.uid, Some(u.gid))
        }
    };
    let gid = match group.filter(|g| !g.is_empty()) {
        Some(g) => match numeric(g)? {
            Some(gid) => gid,
            None => {
                accounts
                    .group_named(g)
                    .ok_or_else(|| {
                        EngineError::Invalid(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?
                    .gid
            }
        },
        None => primary.unwrap_or(uid),
    };
    Ok(Owner { uid, gid })
}

/// A `--chmod` mode: octal, or symbolic clauses applied to each file's mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chmod {
    /// `755`.
    Octal(u32),
    /// `u+x,go-w`, `a=rX`: (who mask, op, perms) per clause.
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    /// The mode a file with `current` mode gets (`is_dir` for `X`).
    pub fn apply(&self, current: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = current & 0o7777;
                for (who, op, perms) in clauses {
                    let mut bits = 0;
                    for p in perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    // Who selects rwx columns; setuid/setgid follow u/g, sticky o... as chmod(1).
                    let mut mask = 0;
                    if who & 4 != 0 {
                        mask |= 0o4700;
                    }
                    if who & 2 != 0 {
                        mask |= 0o2070;
                    }
                    if who & 1 != 0 {
                        mask |= 0o1007;
                    }
                    let bits = bits & mask;
                    match op {
                        '+' => mode |= bits,
                        '-' => mode &= !bits,
                        _ => mode = (mode & !(mask & 0o7777)) | bits,
                    }
                }
                mode
            }
        }
    }
}

/// Parses `--chmod`: octal (`0755`) or symbolic (`u+x,g-w`, `a=rX`).
pub fn parse_chmod(spec: &str) -> Result<Chmod, EngineError> {
    let invalid = || {
        EngineError::Invalid(format!(
            "invalid --chmod={spec}: expected an octal mode (755) or symbolic clauses (u+x,go-w)"
        ))
    };
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        return if m <= 0o7777 {
            Ok(Chmod::Octal(m))
        } else {
            Err(invalid())
        };
    }
    let mut clauses = Vec::new();
    for clause in spec.split(',') {
        let split = clause.find(['+', '-', '=']).ok_or_else(invalid)?;
        let (who_text, rest) = clause.split_at(split);
        let mut who = 0;
        for c in who_text.chars() {
            who |= match c {
                'u' => 4,
                'g' => 2,
                'o' => 1,
                'a' => 7,
                _ => return Err(invalid()),
            };
        }
        if who == 0 {
            who = 7;
        }
        let mut chars = rest.chars();
        let op = chars.next().ok_or_else(invalid)?;
        let perms: String = chars.collect();
        if !perms.chars().all(|c| "rwxXst".contains(c)) {
            return Err(invalid());
        }
        clauses.push((who, op, perms));
    }
    Ok(Chmod::Symbolic(clauses))
}

/// Where a COPY reads from.
pub struct Source<'a> {
    /// The tree (a context directory or a mounted stage).
    pub root: &'a Path,
    /// `.dockerignore` of a context.
    pub ignore: Option<&'a Matcher>,
    /// Files from a context belong to root unless `--chown` says otherwise;
    /// files from a stage keep their owner.
    pub reset_owner: bool,
    /// For messages: `build context` or `stage`.
    pub what: &'a str,
    /// Files the previous snapshot of the same COPY holds are linked from
    /// it instead of copied (`reuse.rs`).
    pub reuse: Option<&'a Reuse<'a>>,
}

/// What a COPY action asks for.
pub struct CopyRequest<'a> {
    /// Source path or pattern.
    pub source: &'a str,
    /// Destination, absolute; a trailing `/` means "into this directory".
    pub dest: &'a str,
    /// Owner override.
    pub owner: Option<Owner>,
    /// Mode override.
    pub mode: Option<Chmod>,
    /// `--exclude` patterns.
    pub exclude: Option<&'a Matcher>,
    /// Follow a symlink named as the source.
    pub follow_symlinks: bool,
    /// Copy a directory's contents rather than itself.
    pub dir_contents_only: bool,
    /// ADD: extract local tar archives.
    pub attempt_unpack: bool,
    /// Wildcards allowed.
    pub allow_wildcard: bool,
    /// A wildcard that matches nothing is fine.
    pub allow_empty_wildcard: bool,
}

#[derive(Clone)]
struct Meta {
    /// `--exclude` patterns match paths relative to the source being
    /// copied (BuildKit's rule): this prefix is cut off first.
    exclude_prefix: String,
    owner: Option<Owner>,
    mode: Option<Chmod>,
    reset_owner: bool,
}

/// Copies per Docker's rules into the tree at `root`.
pub fn copy(
    root: &Path,
    source: &Source<'_>,
    request: &CopyRequest<'_>,
) -> Result<(), EngineError> {
    let rel = relative(request.source);
    let wildcard = request.allow_wildcard && has_glob(&rel);
    // Matches name their directories without symlinks (resolved inside the
    // source's root), so joining them to the root never leaves it.
    let matches: Vec<String> = if wildcard {
        expand(source.root, &rel).map_err(io_error("list", source.root))?
    } else {
        expand_literal(source.root, &rel).map_err(io_error("list", source.root))?
    };
    let matches: Vec<String> = matches
        .into_iter()
        .filter(|m| m.is_empty() || !source.ignore.is_some_and(|i| i.is_excluded(m)))
        .collect();
    if matches.is_empty() {
        if wildcard && request.allow_empty_wildcard {
            return Ok(());
        }
        return Err(EngineError::Invalid(format!(
            "\"/{rel}\": not found in the {}",
            source.what
        )));
    }
    let matches: Vec<String> = matches
        .into_iter()
        .filter(|m| m.is_empty() || !request.exclude.is_some_and(|e| e.is_excluded(m)))
        .collect();
    if matches.is_empty() {
        return Ok(());
    }
    let mut meta = Meta {
        exclude_prefix: String::new(),
        owner: request
            .owner
            .or(source.reset_owner.then_some(Owner { uid: 0, gid: 0 })),
        mode: request.mode.clone(),
        reset_owner: source.reset_owner,
    };
    let dir_owner = request.owner.unwrap_or(Owner { uid: 0, gid: 0 });
    let dest_dir_syntax = request.dest.ends_with('/') || matches.len() > 1;
    for m in &matches {
        let src = if request.follow_symlinks {
            // A symlink named as the source is followed, inside the root: one
            // pointing outside it names nothing.
            resolve_in_root(source.root, m, true)?
        } else {
            source.root.join(m)
        };
        let src_meta = match fs::symlink_metadata(&src) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(EngineError::Invalid(format!(
                    "\"/{m}\": not found in the {} (a symlink resolves inside it)",
                    source.what
                )))
            }
            Err(e) => return Err(io_error("stat", &src)(e)),
        };
        meta.exclude_prefix = if src_meta.is_dir() && !m.is_empty() {
            format!("{m}/")
        } else {
            match m.rsplit_once('/') {
                Some((parent, _)) => format!("{parent}/"),
                None => String::new(),
            }
        };
        if src_meta.is_dir() && request.dir_contents_only {
            let target = mkdir_all(root, request.dest, 0o755, dir_owner)?;
            with_workers(true, source.reuse, |sink| {
                copy_children(&src, m, &target, source, request.exclude, &meta, sink)
            })?;
            continue;
        }
        if src_meta.is_file()
            && request.attempt_unpack
            && is_archive(open_source(source.root, &src)?, &src)?
        {
            let target = mkdir_all(root, request.dest, 0o755, dir_owner)?;
            extract(open_source(source.root, &src)?, &src, &target)?;
            continue;
        }
        let existing = resolve_in_root(root, request.dest, true)?;
        let into_dir = dest_dir_syntax || existing.is_dir();
        let target = if into_dir {
            let dir = mkdir_all(root, request.dest, 0o755, dir_owner)?;
            let name = Path::new(m)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default();
            dir.join(name)
        } else {
            let parent = Path::new(request.dest.trim_end_matches('/'))
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            let dir = mkdir_all(root, &parent, 0o755, dir_owner)?;
            let name = Path::new(request.dest.trim_end_matches('/'))
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default();
            dir.join(name)
        };
        let node = Node {
            path: &src,
            // A directory's entries open their own; the root has no parent
            // inside itself.
            dir: match src.parent() {
                Some(parent) if !src_meta.is_dir() => {
                    Some(Arc::new(source_dir(source.root, parent)?))
                }
                _ => None,
            },
            entry: None,
            follow: request.follow_symlinks,
        };
        with_workers(src_meta.is_dir(), source.reuse, |sink| {
            copy_node(node, m, &target, source, request.exclude, &meta, sink)
        })?;
    }
    Ok(())
}

/// `COPY --parents`: each path matching an `include` pattern (relative to
/// `request.source`) is copied to the same relative path under the destination.
pub fn copy_with_parents(
    root: &Path,
    source: &Source<'_>,
    request: &CopyRequest<'_>,
    include: &[String],
) -> Result<(), EngineError> {
    let base = relative(request.source);
    let mut copied = 0;
    for pattern in include {
        let pattern = relative(pattern);
        let full_pattern = if base.is_empty() {
            pattern.clone()
        } else {
            format!("{base}/{pattern}")
        };
        let found = if has_glob(&pattern) {
            expand(source.root, &full_pattern).map_err(io_error("list", source.root))?
        } else {
            expand_literal(source.root, &full_pattern).map_err(io_error("list", source.root))?
        };
        for full in found {
            // The path below the base, kept under the destination. A match
            // whose symlinked directories resolved elsewhere keeps its
            // resolved path.
            let m = match full.strip_prefix(&base) {
                Some(rest) if base.is_empty() => rest.to_owned(),
                Some(rest) if rest.starts_with('/') => rest[1..].to_owned(),
                _ => full.clone(),
            };
            if m.is_empty() || source.ignore.is_some_and(|i| i.is_excluded(&full)) {
                continue;
            }
            let dest = format!("{}/{m}", request.dest.trim_end_matches('/'));
            let sub = CopyRequest {
                source: &full,
                dest: &dest,
                owner: request.owner,
                mode: request.mode.clone(),
                exclude: request.exclude,
                follow_symlinks: request.follow_symlinks,
                dir_contents_only: true,
                attempt_unpack: false,
                allow_wildcard: false,
                allow_empty_wildcard: true,
            };
            copy(root, source, &sub)?;
            copied += 1;
        }
    }
    if copied == 0 && !request.allow_empty_wildcard {
        return Err(EngineError::Invalid(format!(
            "\"/{}\": no source files were specified",
            include.join(" ")
        )));
    }
    Ok(())
}

fn excluded(
    rel: &str,
    source: &Source<'_>,
    exclude: Option<&Matcher>,
    meta: &Meta,
) -> (bool, bool) {
    // (leave out, and may skip the whole directory)
    if let Some(m) = source.ignore {
        if m.is_excluded(rel) {
            return (true, m.can_skip_dir(rel));
        }
    }
    if let Some(m) = exclude {
        let rel = rel.strip_prefix(&meta.exclude_prefix).unwrap_or(rel);
        if !rel.is_empty() && m.is_excluded(rel) {
            return (true, m.can_skip_dir(rel));
        }
    }
    (false, false)
}

/// The directory `dir` (a host path below `root`, its symlinks resolved),
/// opened inside `root` without following a symlink: one put in its place
/// since it was resolved is an error, never a directory elsewhere. What the
/// copy reads in it, it lists, stats and opens through this descriptor.
fn source_dir(root: &Path, dir: &Path) -> Result<OwnedFd, EngineError> {
    let path_error = |source| EngineError::Path {
        root: root.to_path_buf(),
        source,
    };
    let rel = dir.strip_prefix(root).map_err(|_| {
        EngineError::Invalid(format!("{} is outside {}", dir.display(), root.display()))
    })?;
    Root::new(root)
        .and_then(|r| r.open(rel, false))
        .map_err(path_error)
}

/// The regular file `src` (a host path below `root`, its directories'
/// symlinks resolved), opened by name in its directory opened inside `root`.
fn open_source(root: &Path, src: &Path) -> Result<File, EngineError> {
    let dir = source_dir(root, src.parent().unwrap_or(src))?;
    hoist_untrusted::open_to_read(&dir, src.file_name().unwrap_or_default())
        .map_err(io_error("open", src))
}

/// A source entry to copy.
struct Node<'p> {
    /// Its host path (messages, the context's stat cache).
    path: &'p Path,
    /// Its directory, opened inside the source's root ([`source_dir`]).
    dir: Option<Arc<OwnedFd>>,
    /// Its entry in that directory's listing, which stats it there.
    entry: Option<fs::DirEntry>,
    /// A symlink at `path` is followed (`--follow-symlinks`'s named source,
    /// already resolved inside the root).
    follow: bool,
}

impl Node<'_> {
    fn name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    fn stat(&self) -> io::Result<fs::Metadata> {
        match (&self.entry, &self.dir) {
            (Some(entry), _) => entry.metadata(),
            (None, _) if self.follow => fs::metadata(self.path),
            (None, Some(dir)) => stat_in(dir, self.name()),
            (None, None) => fs::symlink_metadata(self.path),
        }
    }
}

/// The stat of `name` in `dir`, a symlink not followed.
fn stat_in(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<fs::Metadata> {
    use rustix::fs::{openat, Mode, OFlags};
    let fd = openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).metadata()
}

fn copy_children(
    src: &Path,
    rel: &str,
    target: &Path,
    source: &Source<'_>,
    exclude: Option<&Matcher>,
    meta: &Meta,
    sink: &mut Sink<'_>,
) -> Result<(), EngineError> {
    let dir = Arc::new(source_dir(source.root, src)?);
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(hoist_untrusted::fd_path(&*dir))
        .map_err(io_error("read directory", src))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let path = src.join(&name);
        let node = Node {
            path: &path,
            dir: Some(dir.clone()),
            entry: Some(entry),
            follow: false,
        };
        copy_node(
            node,
            &child_rel,
            &target.join(&name),
            source,
            exclude,
            meta,
            sink,
        )?;
    }
    Ok(())
}

fn copy_node(
    node: Node<'_>,
    rel: &str,
    dst: &Path,
    source: &Source<'_>,
    exclude: Option<&Matcher>,
    meta: &Meta,
    sink: &mut Sink<'_>,
) -> Result<(), EngineError> {
    sink.check()?;
    let (left_out, skip_dir) = excluded(rel, source, exclude, meta);
    if left_out && skip_dir {
        return Ok(());
    }
    let src = node.path;
    let src_meta = node.stat().map_err(io_error("stat", src))?;
    if left_out && !src_meta.is_dir() {
        return Ok(());
    }
    let owner = meta.owner.unwrap_or(Owner {
        uid: src_meta.uid(),
        gid: src_meta.gid(),
    });
    let _ = meta.reset_owner;
    let ft = src_meta.file_type();
    // The destination is looked at only when creating it fails: into a fresh
    // directory (the common case) that saves a lookup per file.
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let existing = fs::symlink_metadata(dst).map_err(io_error("stat", dst))?;
                if !existing.is_dir() {
                    fs::remove_file(dst).map_err(io_error("replace", dst))?;
                    fs::create_dir(dst).map_err(io_error("create directory", dst))?;
                }
            }
            Err(e) => return Err(io_error("create directory", dst)(e)),
        }
        copy_children(src, rel, dst, source, exclude, meta, sink)?;
        // Owner, mode and mtime once everything inside is written.
        let mode = mode_of(meta, &src_meta, true);
        sink.dirs.push((dst.to_path_buf(), src_meta, owner, mode));
    } else if ft.is_file() {
        let dir = match node.dir {
            Some(dir) => dir,
            None => Arc::new(source_dir(source.root, src.parent().unwrap_or(src))?),
        };
        let job = FileJob {
            src: src.to_path_buf(),
            dir,
            rel: rel.to_owned(),
            dst: dst.to_path_buf(),
            mode: mode_of(meta, &src_meta, false),
            meta: src_meta,
            owner,
        };
        sink.file(job)?;
    } else if ft.is_symlink() {
        if let Ok(e) = fs::symlink_metadata(dst) {
            if e.is_dir() {
                fs::remove_dir_all(dst).map_err(io_error("replace", dst))?;
            } else {
                fs::remove_file(dst).map_err(io_error("replace", dst))?;
            }
        }
        let target = match &node.dir {
            Some(dir) => rustix::fs::readlinkat(&**dir, node.name(), Vec::new())
                .map(|t| {
                    PathBuf::from(
                        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                            t.into_bytes(),
                        ),
                    )
                })
                .map_err(io::Error::from),
            None => fs::read_link(src),
        }
        .map_err(io_error("read link", src))?;
        symlink(&target, dst).map_err(io_error("create symlink", dst))?;
        lchown(dst, Some(owner.uid), Some(owner.gid)).map_err(io_error("chown", dst))?;
    } else {
        tracing::warn!(path = rel, "skipping special file");
    }
    Ok(())
}

/// One regular file to copy.
pub(super) struct FileJob {
    pub(super) src: PathBuf,
    /// `src`'s directory, opened inside the source's root ([`source_dir`]):
    /// the file is opened by its name there.
    dir: Arc<OwnedFd>,
    rel: String,
    pub(super) dst: PathBuf,
    pub(super) meta: fs::Metadata,
    pub(super) owner: Owner,
    pub(super) mode: u32,
}

/// A [`FileJob`] put aside to be linked later ([`Reuse`]), in what copying it
/// after all needs and cannot be had again: a COPY may hold one per file of
/// its context (a whole `FileJob` was 288 bytes plus four strings).
pub(super) struct Deferred {
    src: Box<Path>,
    dir: Arc<OwnedFd>,
    rel: Box<str>,
    owner: Owner,
    mode: u32,
}

impl Deferred {
    /// The job again, writing to `dst`, with the source's metadata read anew.
    pub(super) fn into_job(self, dst: PathBuf) -> Result<FileJob, EngineError> {
        let meta = stat_in(&self.dir, self.src.file_name().unwrap_or_default())
            .map_err(io_error("stat", &self.src))?;
        Ok(FileJob {
            src: self.src.into(),
            dir: self.dir,
            rel: self.rel.into(),
            dst,
            meta,
            owner: self.owner,
            mode: self.mode,
        })
    }
}

impl FileJob {
    /// Puts the job aside (see [`Deferred`]).
    pub(super) fn defer(self) -> Deferred {
        Deferred {
            src: self.src.into_boxed_path(),
            dir: self.dir,
            rel: self.rel.into_boxed_str(),
            owner: self.owner,
            mode: self.mode,
        }
    }

    /// Copies the file, unless `reuse` takes it to link it later.
    pub(super) fn run(self, reuse: Option<&Reuse<'_>>) -> Result<(), EngineError> {
        let job = match reuse {
            Some(r) => match r.offer(self)? {
                Some(job) => job,
                None => return Ok(()),
            },
            None => self,
        };
        let (src, dst, rel) = (&job.src, &job.dst, &job.rel);
        // The walk saw a regular file here (a source named through a symlink
        // was resolved inside its root before): a symlink put in its place
        // since is an error, not a file elsewhere on the host; opened by name
        // in its directory, opened inside the root, so no directory on the
        // way can have become one either. A stage's files were just written,
        // and relatime would journal each one's atime.
        let input = hoist_untrusted::open_to_read(&*job.dir, src.file_name().unwrap_or_default())
            .map_err(io_error("open", src))?;
        let output = match create_private(dst) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let existing = fs::symlink_metadata(dst).map_err(io_error("stat", dst))?;
                if existing.is_dir() {
                    return Err(EngineError::Invalid(format!(
                        "cannot replace directory {} with file {rel}",
                        dst.display()
                    )));
                }
                fs::remove_file(dst).map_err(io_error("replace", dst))?;
                create_private(dst).map_err(io_error("create", dst))?
            }
            Err(e) => return Err(io_error("create", dst)(e)),
        };
        copy_file(&input, &output, rel, dst, &job.meta, job.owner, job.mode)
    }
}

/// Where the walk of a tree puts its work: file copies go to worker
/// threads (creating files through an overlay mount is kernel work that
/// scales with cores), directories are finished after every file is done.
struct Sink<'a> {
    jobs: Option<mpsc::SyncSender<FileJob>>,
    failed: &'a Mutex<Option<EngineError>>,
    dirs: Vec<(PathBuf, fs::Metadata, Owner, u32)>,
    reuse: Option<&'a Reuse<'a>>,
}

impl Sink<'_> {
    fn file(&mut self, job: FileJob) -> Result<(), EngineError> {
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_ok() {
                return Ok(());
            }
            // The workers are gone (one panicked): stop handing out work.
            return Err(EngineError::Invalid("file copy workers stopped".into()));
        }
        job.run(self.reuse)
    }

    /// Stops the walk early once a worker failed.
    fn check(&self) -> Result<(), EngineError> {
        if lock(self.failed).is_some() {
            return Err(EngineError::Invalid("a file copy failed".into()));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a worker panicked; the scope re-raises it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `walk` with file copies spread over the cores, then finishes the
/// directories it made (owner, mode, mtime). The first error wins: a
/// worker's over the walk's "stopped" errors.
fn with_workers<'r>(
    parallel: bool,
    reuse: Option<&'r Reuse<'r>>,
    walk: impl FnOnce(&mut Sink<'_>) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    if !parallel {
        let failed = Mutex::new(None);
        let mut sink = Sink {
            jobs: None,
            failed: &failed,
            dirs: Vec::new(),
            reuse,
        };
        walk(&mut sink)?;
        for (dst, src_meta, owner, mode) in &sink.dirs {
            finish(dst, src_meta, *owner, *mode, reuse)?;
        }
        return Ok(());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let failed = Mutex::new(None);
    let (tx, rx) = mpsc::sync_channel::<FileJob>(1024);
    let rx = Mutex::new(rx);
    let (walked, dirs) = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (rx, failed) = (&rx, &failed);
            scope.spawn(move || loop {
                let job = lock(rx).recv();
                let Ok(job) = job else { return };
                if lock(failed).is_some() {
                    continue;
                }
                if let Err(e) = job.run(reuse) {
                    lock(failed).get_or_insert(e);
                }
            });
        }
        let mut sink = Sink {
            jobs: Some(tx),
            failed: &failed,
            dirs: Vec::new(),
            reuse,
        };
        let walked = walk(&mut sink);
        // Closing the channel lets the workers end once it is drained; the
        // scope waits for them.
        sink.jobs = None;
        (walked, sink.dirs)
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    walked?;
    for (dst, src_meta, owner, mode) in &dirs {
        finish(dst, src_meta, *owner, *mode, reuse)?;
    }
    Ok(())
}

fn mode_of(meta: &Meta, src_meta: &fs::Metadata, is_dir: bool) -> u32 {
    let current = src_meta.mode() & 0o7777;
    meta.mode
        .as_ref()
        .map_or(current, |m| m.apply(current, is_dir))
}

fn finish(
    dst: &Path,
    src_meta: &fs::Metadata,
    owner: Owner,
    mode: u32,
    reuse: Option<&Reuse<'_>>,
) -> Result<(), EngineError> {
    lchown(dst, Some(owner.uid), Some(owner.gid)).map_err(io_error("chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", dst))?;
    if let Ok(mtime) = src_meta.modified() {
        set_mtime(dst, mtime)?;
        if let Some(r) = reuse {
            r.finished_dir(dst, mtime);
        }
    }
    Ok(())
}

/// A new file only its owner can use until chown and chmod are done;
/// `create_new` so an existing name is never written through.
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Copies a regular file's bytes, owner, mode and mtime through the two file
/// descriptors: no path is looked up again (through an overlay mount every
/// lookup costs), and the kernel moves the bytes (`sendfile`, or
/// `copy_file_range` for big files, which can reflink on the same filesystem).
fn copy_file(
    input: &File,
    output: &File,
    rel: &str,
    dst: &Path,
    src_meta: &fs::Metadata,
    owner: Owner,
    mode: u32,
) -> Result<(), EngineError> {
    copy_bytes(input, output, src_meta.len()).map_err(io_error(format!("copy {rel} to"), dst))?;
    rustix::fs::fchown(
        output,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )
    .map_err(|e| io_error("chown", dst)(e.into()))?;
    // After the chown, which clears set-id bits.
    rustix::fs::fchmod(output, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| io_error("chmod", dst)(e.into()))?;
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: src_meta.mtime(),
            tv_nsec: src_meta.mtime_nsec() as _,
        },
    };
    rustix::fs::futimens(output, &times)
        .map_err(|e| io_error("set the modification time of", dst)(e.into()))
}

/// Files from this size on try `copy_file_range` first: it fails across
/// filesystems (a context into an overlay mount), which is one wasted call on
/// a big file but would be one per file on a tree of small ones.
const COPY_RANGE_MIN: u64 = 1 << 20;

/// Copies `len` bytes (more if the file grew) from `input` to `output`.
fn copy_bytes(input: &File, output: &File, len: u64) -> io::Result<()> {
    if len >= COPY_RANGE_MIN {
        let mut copied = 0u64;
        loop {
            match rustix::fs::copy_file_range(input, None, output, None, 1 << 30) {
                Ok(0) => return Ok(()),
                Ok(n) => copied += n as u64,
                // Nothing was copied yet: the kernel can't do it for this
                // pair; fall through to sendfile.
                Err(_) if copied == 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    loop {
        match rustix::fs::sendfile(output, input, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                // A source sendfile can't read (some special filesystems).
                let mut reader = input;
                let mut writer = output;
                io::copy(&mut reader, &mut writer)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn set_mtime(path: &Path, mtime: SystemTime) -> Result<(), EngineError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    file.set_modified(mtime)
        .map_err(io_error("set the modification time of", path))
}

/// `mkdir -p` inside the root; created directories get `mode` and `owner`.
/// Returns the host path of the directory.
pub fn mkdir_all(root: &Path, path: &str, mode: u32, owner: Owner) -> Result<PathBuf, EngineError> {
    let scoped = Root::new(root).map_err(|source| EngineError::Path {
        root: root.to_path_buf(),
        source,
    })?;
    let (_, created) =
        scoped
            .mkdir_all(relative(path), mode)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                    EngineError::Invalid(format!(
                        "cannot create directory {}: a file is in the way",
                        Escaped(path)
                    ))
                }
                _ => EngineError::Path {
                    root: root.to_path_buf(),
                    source,
                },
            })?;
    for dir in &created {
        lchown(dir, Some(owner.uid), Some(owner.gid)).map_err(io_error("chown", dir))?;
    }
    resolve_in_root(root, path, true)
}

/// Writes a file with `data` and `mode`, creating its parents.
pub fn mkfile(root: &Path, path: &str, mode: u32, data: &str) -> Result<(), EngineError> {
    let rel = relative(path);
    let parent = Path::new(&rel)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    mkdir_all(root, &parent, 0o755, Owner { uid: 0, gid: 0 })?;
    let host = resolve_in_root(root, &rel, false)?;
    fs::write(&host, data).map_err(io_error("write", &host))?;
    fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", &host))
}

/// Removes a path (recursively).
pub fn rm(root: &Path, path: &str, allow_not_found: bool) -> Result<(), EngineError> {
    let host = resolve_in_root(root, path, false)?;
    let result = match fs::symlink_metadata(&host) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&host),
        Ok(_) => fs::remove_file(&host),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound && allow_not_found => Ok(()),
        other => other.map_err(io_error("remove", &host)),
    }
}

/// Whether a file is a tar archive ADD extracts (plain or gzip).
fn is_archive(mut file: File, path: &Path) -> Result<bool, EngineError> {
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let read = file.read(&mut head[n..]).map_err(io_error("read", path))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    head.truncate(n);
    if Compression::sniff(&head) == Compression::Gzip {
        // A gzip file is an archive when what it holds is a tar.
        use std::io::Seek as _;
        file.rewind().map_err(io_error("read", path))?;
        let mut decoder = flate2::read::GzDecoder::new(file);
        let mut inner = vec![0u8; 512];
        let mut got = 0;
        while got < inner.len() {
            match decoder.read(&mut inner[got..]) {
                Ok(0) | Err(_) => break,
                Ok(r) => got += r,
            }
        }
        return Ok(got >= 262 && &inner[257..262] == b"ustar");
    }
    Ok(head.len() >= 262 && &head[257..262] == b"ustar")
}

/// ADD's extraction of a local archive into `target`, through the
/// snapshotter's layer apply: every entry is created inside `target` (its
/// `..`, absolute names and symlinks resolved there, hardlinks only to
/// entries inside it), as Docker's chrooted untar does.
fn extract(mut file: File, path: &Path, target: &Path) -> Result<(), EngineError> {
    let into = hoist_snapshotter::ApplyTarget {
        root: target.to_path_buf(),
        whiteouts: hoist_snapshotter::WhiteoutStyle::Delete,
        lowers: Vec::new(),
    };
    let report = hoist_snapshotter::apply_layer(
        &into,
        &mut file,
        &hoist_snapshotter::ApplyOptions::default(),
    )
    .map_err(super::snap_error(format!(
        "extract {}",
        Escaped(&path.file_name().unwrap_or_default().to_string_lossy())
    )))?;
    for w in report.warnings {
        tracing::warn!(entry = %Escaped(&w.path), "{}", w.message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_job_copies_as_the_job_would_have() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.txt");
        fs::write(&src, "content").unwrap();
        let then = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000, 123_456_789);
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let meta = fs::symlink_metadata(&src).unwrap();
        let owner = Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        };
        let job = FileJob {
            src: src.clone(),
            dir: Arc::new(source_dir(dir.path(), dir.path()).unwrap()),
            rel: "src.txt".into(),
            dst: dir.path().join("never-written"),
            meta,
            owner,
            mode: 0o640,
        };
        let dst = dir.path().join("out.txt");
        job.defer()
            .into_job(dst.clone())
            .unwrap()
            .run(None)
            .unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"content");
        let out = fs::symlink_metadata(&dst).unwrap();
        assert_eq!(out.permissions().mode() & 0o7777, 0o640);
        assert_eq!(out.modified().unwrap(), then);
        assert_eq!((out.uid(), out.gid()), (owner.uid, owner.gid));
        assert!(!dir.path().join("never-written").exists());
    }

    #[test]
    fn a_file_copy_leaves_the_atime_alone_and_refuses_a_symlink_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.txt");
        fs::write(&src, "content").unwrap();
        // Older than the file's ctime: relatime would update it on a read.
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(then))
            .unwrap();
        let job = |dst: &str| {
            let meta = fs::symlink_metadata(&src).unwrap();
            FileJob {
                src: src.clone(),
                dir: Arc::new(source_dir(dir.path(), dir.path()).unwrap()),
                rel: "src.txt".into(),
                dst: dir.path().join(dst),
                owner: Owner {
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
                meta,
                mode: 0o644,
            }
        };
        job("copy.txt").run(None).unwrap();
        assert_eq!(fs::read(dir.path().join("copy.txt")).unwrap(), b"content");
        assert_eq!(fs::metadata(&src).unwrap().accessed().unwrap(), then);

        // The walk saw a file; a symlink to a file outside is there now.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host secret").unwrap();
        let swapped = job("swapped.txt");
        fs::remove_file(&src).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), &src).unwrap();
        let error = swapped.run(None).unwrap_err().to_string();
        assert!(error.contains("src.txt"), "{error}");
        assert!(!dir.path().join("swapped.txt").exists());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_walk_opened_it_is_never_left() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("src.txt"), "host secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        let src = ctx.join("sub/src.txt");
        fs::write(&src, "context").unwrap();
        let meta = fs::symlink_metadata(&src).unwrap();
        let job = |dir: Arc<OwnedFd>, dst: &str| FileJob {
            src: src.clone(),
            dir,
            rel: "sub/src.txt".into(),
            dst: ctx.join(dst),
            owner: Owner {
                uid: meta.uid(),
                gid: meta.gid(),
            },
            meta: meta.clone(),
            mode: 0o644,
        };
        // As the walk leaves a file: its directory opened inside the root.
        let opened = job(Arc::new(source_dir(&ctx, &ctx.join("sub")).unwrap()), "a");
        // What a process beside the build could do meanwhile.
        fs::rename(ctx.join("sub"), ctx.join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ctx.join("sub")).unwrap();
        opened.run(None).unwrap();
        // Opened by its host path, this file would now be the host's.
        assert_eq!(fs::read(ctx.join("a")).unwrap(), b"context");
        // A directory the walk is about to list is opened without following.
        let listed = source_dir(&ctx, &ctx.join("sub"))
            .map_err(|e| e.to_string())
            .and_then(|fd| fs::read_dir(hoist_untrusted::fd_path(&fd)).map_err(|e| e.to_string()));
        assert!(listed.is_err(), "a symlink is no directory to list");
    }

    #[test]
    fn paths_are_cleaned_before_they_are_resolved() {
        let root = tempfile::tempdir().unwrap();
        let owner = Owner { uid: 0, gid: 0 };
        let made = mkdir_all(root.path(), "/a/../b/./c", 0o755, owner).unwrap();
        assert_eq!(made, root.path().join("b/c"));
        assert!(!root.path().join("a").exists());
        assert_eq!(
            resolve_in_root(root.path(), "/x/../../b", true).unwrap(),
            root.path().join("b")
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        symlink("usr/bin", root.path().join("bin")).unwrap();
        symlink("/../../etc", root.path().join("evil")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), "/bin/sh", true).unwrap(),
            root.path().join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(root.path(), "/evil/passwd", true).unwrap(),
            root.path().join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root.path(), "/bin", false).unwrap(),
            root.path().join("bin")
        );
    }

    #[test]
    fn tree_copies_keep_modes_and_mtimes_and_replace_what_is_there() {
        use std::os::unix::fs::MetadataExt;
        let set_mtime_of = |p: &Path, secs: u64| {
            let f = File::open(p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        let src = tempfile::tempdir().unwrap();
        let d = src.path().join("d");
        fs::create_dir_all(d.join("sub")).unwrap();
        // Enough files that the workers share them.
        for i in 0..300 {
            fs::write(d.join(format!("f{i:03}")), format!("file {i}\n")).unwrap();
        }
        fs::write(d.join("a"), "a\n").unwrap();
        fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
        set_mtime_of(&d.join("a"), 1000);
        fs::write(d.join("sub/b"), vec![7u8; 3 << 20]).unwrap();
        set_mtime_of(&d.join("sub/b"), 2000);
        symlink("a", d.join("link")).unwrap();
        fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime_of(&d.join("sub"), 3000);

        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out/d");
        fs::create_dir_all(&out).unwrap();
        symlink("/nowhere", out.join("a")).unwrap();
        fs::write(out.join("link"), "was a file\n").unwrap();
        fs::write(out.join("kept"), "kept\n").unwrap();

        let source = Source {
            root: src.path(),
            ignore: None,
            reset_owner: false,
            what: "build context",
            reuse: None,
        };
        let request = CopyRequest {
            source: "d",
            dest: "/out/d",
            owner: None,
            mode: None,
            exclude: None,
            follow_symlinks: false,
            dir_contents_only: true,
            attempt_unpack: false,
            allow_wildcard: true,
            allow_empty_wildcard: false,
        };
        copy(root.path(), &source, &request).unwrap();

        for i in 0..300 {
            assert_eq!(
                fs::read_to_string(out.join(format!("f{i:03}"))).unwrap(),
                format!("file {i}\n")
            );
        }
        let a = fs::symlink_metadata(out.join("a")).unwrap();
        assert!(a.is_file(), "the symlink in the way is replaced");
        assert_eq!(a.mode() & 0o7777, 0o640);
        assert_eq!(a.mtime(), 1000);
        assert_eq!(fs::read(out.join("sub/b")).unwrap(), vec![7u8; 3 << 20]);
        assert_eq!(fs::metadata(out.join("sub/b")).unwrap().mtime(), 2000);
        let sub = fs::metadata(out.join("sub")).unwrap();
        assert_eq!(sub.mode() & 0o7777, 0o555);
        assert_eq!(sub.mtime(), 3000, "set after its content was written");
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("a"));
        assert_eq!(fs::read_to_string(out.join("kept")).unwrap(), "kept\n");

        // A file where the tree has a directory is refused.
        fs::remove_dir_all(root.path().join("out")).unwrap();
        fs::create_dir_all(out.join("a")).unwrap();
        let err = copy(root.path(), &source, &request).unwrap_err();
        assert!(
            err.to_string().contains("cannot replace directory"),
            "{err}"
        );
        // Let the tempdir go: the copied read-only directory is ours.
        fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn chown_rules_differ_from_user_rules_and_resist_hostile_files() {
        // A numeric user unknown to passwd: `--chown` gives gid = uid, the
        // runner's `USER` (also used by the interim sandbox) gives 0; a
        // malformed line is never read as root.
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        let mut passwd = b"evil:x:-1:0::/e:/bin/sh
half:x
"
        .to_vec();
        passwd.extend(std::iter::repeat_n(b'x', 100_000));
        passwd.extend(
            b"
late:x:77:78::/late:/bin/sh
",
        );
        fs::write(root.path().join("etc/passwd"), passwd).unwrap();
        symlink("/../../../etc/group", root.path().join("etc/group")).unwrap();
        let r = |s| resolve_owner(root.path(), s);
        assert_eq!(r("42").unwrap(), Owner { uid: 42, gid: 42 });
        assert_eq!(r("late").unwrap(), Owner { uid: 77, gid: 78 });
        let accounts = accounts(root.path()).unwrap();
        let user = hoist_runner::resolve_user("42", &accounts).unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (42, 0, "/"));
        let user = hoist_runner::resolve_user("late", &accounts).unwrap();
        assert_eq!((user.gid, user.home.as_str()), (78, "/late"));
        assert_eq!(
            r("evil").unwrap_err().to_string(),
            "unable to find user evil: no matching entries in passwd file"
        );
        // The host's /etc/group is outside the image: `root` is no group here.
        assert_eq!(
            r("late:root").unwrap_err().to_string(),
            "unable to find group root: no matching entries in group file"
        );
        assert_eq!(
            r("2147483648").unwrap_err().to_string(),
            "invalid id 2147483648: must be between 0 and 2147483647"
        );
        assert_eq!(
            r("a\x07b").unwrap_err().to_string(),
            "unable to find user a\\u{7}b: no matching entries in passwd file"
        );
    }

    #[test]
    fn owners_resolve_like_docker() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |s| resolve_owner(root.path(), s).unwrap();
        assert_eq!(
            r("app"),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(r("app:staff"), Owner { uid: 1000, gid: 50 });
        assert_eq!(r("42"), Owner { uid: 42, gid: 42 });
        assert_eq!(r("42:7"), Owner { uid: 42, gid: 7 });
        assert_eq!(
            r("1000"),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert!(resolve_owner(root.path(), "nobody").is_err());
        assert_eq!(parse_chmod("755").unwrap(), Chmod::Octal(0o755));
        assert!(parse_chmod("u+q").is_err());
        assert!(parse_chmod("99").is_err());
        let m = |s: &str, cur: u32, dir: bool| parse_chmod(s).unwrap().apply(cur, dir);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-r", 0o644, false), 0o600);
        assert_eq!(m("a=rX", 0o640, false), 0o444);
        assert_eq!(m("a=rX", 0o640, true), 0o555);
        assert_eq!(m("+x,g+w", 0o644, false), 0o775);
        assert_eq!(m("u=rwx,go=", 0o666, false), 0o700);
    }
}

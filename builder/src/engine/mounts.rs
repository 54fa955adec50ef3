//! `RUN --mount`: the frontend's mounts made into the runner's.
//!
//! - `bind`: a path of a stage, an image or the context, bound read-only; with
//!   `rw` a throwaway copy is bound instead, so nothing written there survives.
//! - `cache`: a directory under `<root>/cache-mounts/v1/` that outlives the
//!   build and never reaches a layer (it is a bind over the step's root, and
//!   the runner keeps its mount target out of the upper dir).
//! - `tmpfs`: a fresh tmpfs.
//! - `secret`: a `--secret` file (or variable) bound read-only from a tmpfs the
//!   runner makes, or put into the step's environment with `env=`. Only the id
//!   is part of the op, so the bytes reach no cache key, history or layer.
//! - `ssh`: an ssh-agent socket: `$SSH_AUTH_SOCK` (`--ssh default`), a socket
//!   path, or an agent this build starts for key files (`--ssh id=KEYFILE`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hoist_frontend::graph::{CacheSharing, Mount, MountKind};
use sha2::{Digest as _, Sha256};

use super::artifact::{Artifact, Layer};
use super::files::resolve_in_root;
use super::{io_error, Engine, EngineError};
use crate::op::OpError;

/// Where a `--secret` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host (`src=PATH`).
    File(PathBuf),
    /// An environment variable of the `hoist build` process (`env=VAR`).
    Env(String),
}

/// Parses `--secret id=X[,src=FILE|,env=VAR]` (also `source=`, `type=file|env`).
/// With neither `src` nor `env`, the variable named like the id is used when it
/// is set, else the file named like the id (as buildx does).
pub fn parse_secret_flag(spec: &str) -> Result<(String, SecretSource), EngineError> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            EngineError::Invalid(format!(
                "invalid --secret `{spec}`: expected id=ID,src=FILE or id=ID,env=VAR"
            ))
        })?;
        match k.trim() {
            "id" => id = Some(v.to_owned()),
            "src" | "source" => src = Some(v.to_owned()),
            "env" => env = Some(v.to_owned()),
            "type" => kind = Some(v.to_owned()),
            other => {
                return Err(EngineError::Invalid(format!(
                    "invalid --secret `{spec}`: unknown key `{other}`"
                )))
            }
        }
    }
    let id = id
        .or_else(|| src.clone())
        .or_else(|| env.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            EngineError::Invalid(format!("invalid --secret `{spec}`: id= is required"))
        })?;
    let source = match (kind.as_deref(), src, env) {
        (Some("env"), Some(v), _) | (_, None, Some(v)) => SecretSource::Env(v),
        (_, Some(path), _) => SecretSource::File(PathBuf::from(path)),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (_, None, None) => {
            if std::env::var_os(&id).is_some() {
                SecretSource::Env(id.clone())
            } else {
                SecretSource::File(PathBuf::from(&id))
            }
        }
    };
    Ok((id, source))
}

/// Parses `--ssh default|ID[=PATH[,PATH…]]`.
pub fn parse_ssh_flag(spec: &str) -> Result<(String, Vec<PathBuf>), EngineError> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (
            id.to_owned(),
            paths
                .split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        ),
        None => (spec.to_owned(), vec![]),
    };
    if id.is_empty() {
        return Err(EngineError::Invalid(format!(
            "invalid --ssh `{spec}`: expected default or ID=PATH"
        )));
    }
    Ok((id, paths))
}

/// The secrets and agents of one build, ready to be mounted.
#[derive(Default)]
pub struct Secrets {
    /// id → host file holding the secret.
    files: HashMap<String, PathBuf>,
    /// id → agent socket.
    agents: HashMap<String, PathBuf>,
    /// Agents started for key files, killed when the build ends.
    children: Vec<Child>,
    /// Holds variable-sourced secrets and agent sockets; in `/dev/shm` when
    /// it exists, so secret bytes stay in memory.
    private: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the contents; ids only.
        f.debug_struct("Secrets")
            .field("secrets", &self.files.keys().collect::<Vec<_>>())
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Secrets {
    fn private_dir(&mut self) -> Result<PathBuf, EngineError> {
        if self.private.is_none() {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let dir = tempfile::Builder::new()
                .prefix("hoist-secrets-")
                .tempdir_in(&base)
                .map_err(io_error("create a private directory in", &base))?;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
                .map_err(io_error("chmod", dir.path()))?;
            self.private = Some(dir);
        }
        Ok(self
            .private
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default())
    }

    /// Reads the sources given by `--secret` and `--ssh`; starts an agent for
    /// key files.
    pub fn prepare(
        secrets: &BTreeMap<String, SecretSource>,
        ssh: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<Secrets, EngineError> {
        let mut out = Secrets::default();
        for (id, source) in secrets {
            match source {
                SecretSource::File(path) => {
                    let meta = fs::metadata(path)
                        .map_err(io_error(format!("read secret `{id}` from"), path))?;
                    if !meta.is_file() {
                        return Err(EngineError::Invalid(format!(
                            "secret `{id}`: {} is not a file",
                            path.display()
                        )));
                    }
                    out.files.insert(id.clone(), path.clone());
                }
                SecretSource::Env(var) => {
                    let value = std::env::var_os(var).ok_or_else(|| {
                        EngineError::Invalid(format!(
                            "secret `{id}`: environment variable `{var}` is not set"
                        ))
                    })?;
                    let dir = out.private_dir()?;
                    let file = dir.join(format!("secret-{}", out.files.len()));
                    write_private(&file, value.as_encoded_bytes())?;
                    out.files.insert(id.clone(), file);
                }
            }
        }
        for (id, paths) in ssh {
            let socket = if paths.is_empty() {
                match std::env::var_os("SSH_AUTH_SOCK") {
                    Some(s) if !s.is_empty() => PathBuf::from(s),
                    _ => {
                        return Err(EngineError::Invalid(format!(
                            "--ssh {id}: SSH_AUTH_SOCK is not set (start an agent or give --ssh {id}=KEYFILE)"
                        )))
                    }
                }
            } else if paths.len() == 1
                && fs::metadata(&paths[0]).is_ok_and(|m| m.file_type().is_socket())
            {
                paths[0].clone()
            } else {
                out.start_agent(id, paths)?
            };
            out.agents.insert(id.clone(), socket);
        }
        Ok(out)
    }

    /// The agent socket of `--ssh ID` (`default` is the one git uses).
    pub fn agent(&self, id: &str) -> Option<&Path> {
        self.agents.get(id).map(PathBuf::as_path)
    }

    fn start_agent(&mut self, id: &str, keys: &[PathBuf]) -> Result<PathBuf, EngineError> {
        let dir = self.private_dir()?;
        let socket = dir.join(format!("agent-{}.sock", self.children.len()));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error(
                format!("start ssh-agent for --ssh {id} (is openssh-client installed?) at"),
                &socket,
            ))?;
        self.children.push(child);
        // ssh-agent makes the socket shortly after it starts.
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for key in keys {
            let output = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .stdin(Stdio::null())
                .output()
                .map_err(io_error(format!("run ssh-add for --ssh {id} with"), key))?;
            if !output.status.success() {
                return Err(EngineError::Invalid(format!(
                    "--ssh {id}: ssh-add {} failed: {}",
                    key.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        Ok(socket)
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(data).map_err(io_error("write", path))
}

/// The host directory of a cache mount, held for one step.
pub struct CacheLease {
    /// The directory.
    pub dir: PathBuf,
    _lock: Option<File>,
}

fn cache_root(engine: &Engine) -> PathBuf {
    engine.store().root().join("cache-mounts").join("v1")
}

/// Takes the cache directory of `id` with the mount's sharing mode; a new
/// directory gets `mode`, `uid`, `gid` and is seeded from `seed` if given.
#[allow(clippy::too_many_arguments)]
pub fn lease_cache(
    engine: &Engine,
    id: &str,
    sharing: CacheSharing,
    mode: u32,
    uid: u32,
    gid: u32,
    seed: Option<&Path>,
) -> Result<CacheLease, EngineError> {
    let root = cache_root(engine);
    fs::create_dir_all(&root).map_err(io_error("create", &root))?;
    let name = hex::encode(Sha256::digest(id.as_bytes()));
    let mut instance = 0;
    loop {
        let stem = if instance == 0 {
            name.clone()
        } else {
            format!("{name}-{instance}")
        };
        let lock_path = root.join(format!("{stem}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        use rustix::fs::{flock, FlockOperation};
        let locked = match sharing {
            CacheSharing::Shared => flock(&lock, FlockOperation::LockShared),
            CacheSharing::Locked => flock(&lock, FlockOperation::LockExclusive),
            CacheSharing::Private => flock(&lock, FlockOperation::NonBlockingLockExclusive),
        };
        match locked {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && sharing == CacheSharing::Private => {
                // In use: a private mount gets another instance.
                instance += 1;
                continue;
            }
            Err(e) => return Err(io_error("lock", &lock_path)(e.into())),
        }
        let dir = root.join(&stem);
        if !dir.exists() {
            let staging = root.join(format!("{stem}.new-{}", std::process::id()));
            let _ = fs::remove_dir_all(&staging);
            fs::create_dir(&staging).map_err(io_error("create", &staging))?;
            if let Some(seed) = seed {
                copy_tree(seed, &staging)?;
            } else {
                lchown(&staging, Some(uid), Some(gid)).map_err(io_error("chown", &staging))?;
                fs::set_permissions(&staging, fs::Permissions::from_mode(mode))
                    .map_err(io_error("chmod", &staging))?;
            }
            if let Err(e) = fs::rename(&staging, &dir) {
                // Another build made it first (shared): use theirs.
                let _ = fs::remove_dir_all(&staging);
                if !dir.exists() {
                    return Err(io_error("create", &dir)(e));
                }
            }
        }
        // The directory's mtime is its last use for garbage collection
        // (least recently used first); a step's writes inside it do not
        // always reach it.
        if let Ok(handle) = File::open(&dir) {
            let _ = handle.set_modified(std::time::SystemTime::now());
        }
        return Ok(CacheLease {
            dir,
            _lock: Some(lock),
        });
    }
}

/// Copies a tree (or a single file) keeping modes, owners, symlinks and
/// times; `dst` is the copy of `src` itself (an existing directory is filled).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), EngineError> {
    let meta = fs::symlink_metadata(src).map_err(io_error("stat", src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            fs::create_dir(dst).map_err(io_error("create", dst))?;
        }
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(io_error("read directory", src))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dst.join(&name))?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_error("read link", src))?;
        let _ = fs::remove_file(dst);
        symlink(&target, dst).map_err(io_error("create symlink", dst))?;
        lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_error("chown", dst))?;
        return Ok(());
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(io_error("copy to", dst))?;
    } else {
        // Devices, fifos, sockets: nothing a cache seed or bind copy needs.
        return Ok(());
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_error("chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_error("chmod", dst))?;
    if let Ok(mtime) = meta.modified() {
        if let Ok(f) = File::open(dst) {
            let _ = f.set_modified(mtime);
        }
    }
    Ok(())
}

fn context_selection(
    engine: &Engine,
    context: &super::LocalContext,
    source: &str,
) -> Result<PathBuf, EngineError> {
    let dir = engine.scratch_dir("bind-context")?;
    let from = super::files::Source {
        root: &context.dir,
        ignore: Some(&context.ignore),
        reset_owner: true,
        what: "build context",
        reuse: None,
    };
    let request = super::files::CopyRequest {
        source,
        dest: "/data",
        owner: None,
        mode: None,
        exclude: None,
        follow_symlinks: true,
        dir_contents_only: true,
        attempt_unpack: false,
        allow_wildcard: false,
        allow_empty_wildcard: false,
    };
    super::files::copy(&dir, &from, &request)?;
    Ok(dir.join("data"))
}

/// Inputs of an exec whose filesystem must be mounted for its mounts.
pub fn inputs_to_view(mounts: &[Mount], inputs: &[Artifact]) -> Vec<usize> {
    let mut out = Vec::new();
    for m in mounts {
        let input = match &m.kind {
            MountKind::Bind { input, .. } => Some(*input),
            MountKind::Cache { input, .. } => *input,
            _ => None,
        };
        if let Some(i) = input {
            if matches!(inputs.get(i), Some(Artifact::Fs { .. })) && !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// Host paths of mounted inputs, by input index.
pub type Views = HashMap<usize, PathBuf>;

/// Mounts read-only views of `which` inputs, runs `work` with their host
/// paths, unmounts them.
pub fn with_views<T>(
    engine: &Engine,
    inputs: &[Artifact],
    which: &[usize],
    views: &mut Views,
    work: &mut dyn FnMut(&Views) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let Some((first, rest)) = which.split_first() else {
        return work(views);
    };
    let layers: Vec<Layer> = inputs[*first].layers().to_vec();
    engine.with_view(&layers, |path| {
        views.insert(*first, path.to_path_buf());
        with_views(engine, inputs, rest, views, work)
    })
}

/// What a step's mounts hold on to while it runs.
#[derive(Default)]
pub struct Prepared {
    /// The runner's mounts.
    pub mounts: Vec<hoist_runner::Mount>,
    /// Extra `KEY=value` entries (secrets with `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// Cache directories in use.
    _leases: Vec<CacheLease>,
    /// Agent sockets in use.
    _proxies: Vec<AgentProxy>,
}

/// A unix socket relaying every connection to an ssh agent, for one step.
pub struct AgentProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AgentProxy {
    fn start(
        dir: PathBuf,
        agent: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<AgentProxy, EngineError> {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).map_err(io_error("listen on", &path))?;
        lchown(&path, Some(uid), Some(gid)).map_err(io_error("chown", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error("chmod", &path))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (agent, flag) = (agent.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else {
                    continue;
                };
                let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                let (mut client, mut upstream) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut upstream);
                    let _ = upstream.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(AgentProxy { path, stop })
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and ends.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = fs::remove_file(&self.path);
    }
}

/// Turns the frontend's mounts into the runner's. `views` holds the host paths
/// of mounted inputs (see [`with_views`]).
pub fn prepare(
    engine: &Engine,
    mounts: &[Mount],
    inputs: &[Artifact],
    views: &HashMap<usize, PathBuf>,
    env: &[String],
) -> Result<Prepared, EngineError> {
    let mut out = Prepared::default();
    let input_root = |input: usize| -> Result<PathBuf, EngineError> {
        match inputs.get(input) {
            Some(Artifact::Context { name }) => Ok(engine.context(name)?.dir.clone()),
            Some(Artifact::Fs { .. }) => views
                .get(&input)
                .cloned()
                .ok_or_else(|| EngineError::Invalid(format!("mount input {input} is not mounted"))),
            None => Err(EngineError::Invalid(format!("no mount input {input}"))),
        }
    };
    let mut first_ssh = true;
    for m in mounts {
        let target = m.target.clone();
        match &m.kind {
            MountKind::Bind {
                input,
                source,
                readonly,
            } => {
                let root = input_root(*input)?;
                let mut host = resolve_in_root(&root, source, true)?;
                if fs::symlink_metadata(&host).is_err() {
                    return Err(EngineError::Invalid(format!(
                        "--mount=type=bind,target={target}: source {source} not found"
                    )));
                }
                if let Some(Artifact::Context { name }) = inputs.get(*input) {
                    let context = engine.context(name)?;
                    if !context.ignore.patterns().is_empty() {
                        // The context as the build sees it: without what
                        // `.dockerignore` leaves out.
                        host = context_selection(engine, context, source)?;
                    }
                }
                let source = if *readonly {
                    host
                } else {
                    // rw: writes go to a copy that is thrown away after the step.
                    let dir = engine.scratch_dir("bind-rw")?;
                    let copy = dir.join("data");
                    copy_tree(&host, &copy)?;
                    copy
                };
                out.mounts.push(hoist_runner::Mount::Bind {
                    source,
                    target,
                    readonly: *readonly,
                });
            }
            MountKind::Cache {
                id,
                sharing,
                input,
                source,
                readonly,
                mode,
                uid,
                gid,
            } => {
                let seed = match input {
                    Some(i) => Some(resolve_in_root(&input_root(*i)?, source, true)?),
                    None => None,
                };
                let lease = lease_cache(engine, id, *sharing, *mode, *uid, *gid, seed.as_deref())?;
                out.mounts.push(hoist_runner::Mount::Bind {
                    source: lease.dir.clone(),
                    target,
                    readonly: *readonly,
                });
                out._leases.push(lease);
            }
            MountKind::Tmpfs { size } => out.mounts.push(hoist_runner::Mount::Tmpfs {
                target,
                size: (*size > 0).then_some(*size),
                mode: None,
            }),
            MountKind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
                env: var,
            } => {
                let Some(file) = engine.secrets.files.get(id) else {
                    if *required {
                        return Err(EngineError::Invalid(format!(
                            "secret {id} not found (give it with --secret id={id},src=FILE)"
                        )));
                    }
                    continue;
                };
                if let Some(var) = var {
                    let value = fs::read(file).map_err(io_error("read secret", file))?;
                    out.env
                        .push(format!("{var}={}", String::from_utf8_lossy(&value)));
                }
                if !target.is_empty() {
                    out.mounts.push(hoist_runner::Mount::Secret {
                        source: file.clone(),
                        target,
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    });
                }
            }
            MountKind::Ssh {
                id,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(socket) = engine.secrets.agents.get(id) else {
                    if *required {
                        return Err(EngineError::Invalid(format!(
                            "no SSH key {id:?} forwarded from the client (give --ssh {id})"
                        )));
                    }
                    continue;
                };
                if first_ssh && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                first_ssh = false;
                // A socket of our own with the mount's owner and mode, relaying
                // to the agent (BuildKit does the same).
                let proxy =
                    AgentProxy::start(engine.scratch_dir("ssh")?, socket, *mode, *uid, *gid)?;
                out.mounts.push(hoist_runner::Mount::SshAgent {
                    socket: proxy.path.clone(),
                    target,
                });
                out._proxies.push(proxy);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_proxy_relays_both_ways_with_its_own_mode() {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("real.sock");
        let listener = UnixListener::bind(&agent).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        let proxy_dir = dir.path().join("proxy");
        fs::create_dir(&proxy_dir).unwrap();
        // Our own ids, so that the test needs no root.
        let own = fs::metadata(dir.path()).unwrap();
        let (uid, gid) = (own.uid(), own.gid());
        let proxy = AgentProxy::start(proxy_dir, &agent, 0o640, uid, gid).unwrap();
        assert_eq!(
            fs::metadata(&proxy.path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let mut client = UnixStream::connect(&proxy.path).unwrap();
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        let path = proxy.path.clone();
        drop(proxy);
        assert!(!path.exists());
    }

    #[test]
    fn secret_and_ssh_flags() {
        assert_eq!(
            parse_secret_flag("id=tok,src=/tmp/t").unwrap(),
            ("tok".into(), SecretSource::File("/tmp/t".into()))
        );
        assert_eq!(
            parse_secret_flag("id=tok,env=MY_TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("MY_TOKEN".into()))
        );
        assert_eq!(
            parse_secret_flag("id=tok,type=env,src=V").unwrap(),
            ("tok".into(), SecretSource::Env("V".into()))
        );
        assert!(parse_secret_flag("src").is_err());
        assert_eq!(
            parse_ssh_flag("default").unwrap(),
            ("default".into(), vec![])
        );
        assert_eq!(
            parse_ssh_flag("gh=/k1,/k2").unwrap(),
            ("gh".into(), vec!["/k1".into(), "/k2".into()])
        );
    }
}

//! The frontend's graph ops as solver [`Op`]s over [`Artifact`]s.

use std::sync::Arc;

use super::LayerBlob;
use async_trait::async_trait;
use hoist_frontend::dockerignore::Matcher;
use hoist_frontend::graph::{FileAction, FileOp};

use super::artifact::{Artifact, Layer};
use super::exec::{self, Exit, ProcessSpec};
use super::files::{self, CopyRequest, Owner, Source};
use super::hash;
use super::mounts;
use super::reuse::{self, Record, Reuse};
use super::{Engine, EngineError, LayerBlocks};
use crate::digest::{CanonicalBytes, CanonicalEncoder, Digest};
use crate::op::{Op, OpContext, OpError};

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| -> OpError { Box::new(EngineError::Invalid(format!("step panicked: {e}"))) })?
}

/// `scratch`: an empty filesystem.
pub struct ScratchOp;

#[async_trait]
impl Op<Artifact> for ScratchOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("scratch", 1).finish()
    }

    async fn exec(&self, _: &OpContext, _: Vec<Artifact>) -> Result<Artifact, OpError> {
        Ok(Artifact::Fs { layers: vec![] })
    }
}

/// `COPY --link`: the layers of input 1 stacked on those of input 0.
pub struct MergeOp;

#[async_trait]
impl Op<Artifact> for MergeOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("merge", 1).finish()
    }

    async fn exec(&self, _: &OpContext, inputs: Vec<Artifact>) -> Result<Artifact, OpError> {
        let mut layers = Vec::new();
        for input in &inputs {
            layers.extend(input.layers().iter().cloned());
        }
        Ok(Artifact::Fs { layers })
    }
}

/// An image of the store, by its pinned manifest digest.
pub struct ImageOp {
    /// The reference, `name@sha256:…` as the resolver pinned it.
    pub reference: String,
    /// The engine.
    pub engine: Arc<Engine>,
}

/// The layers of the manifest `digest` (its config's diff_ids paired with the
/// manifest's layers).
pub fn image_layers(engine: &Engine, digest: &str) -> Result<Vec<Layer>, EngineError> {
    let store = engine.store();
    let parsed = digest
        .parse()
        .map_err(|_| EngineError::Invalid(format!("bad manifest digest {digest}")))?;
    let manifest = store
        .read_manifest(&parsed)
        .map_err(|source| EngineError::Store {
            action: format!("read manifest {digest}"),
            source,
        })?;
    let config: serde_json::Value = serde_json::from_slice(
        &store
            .content()
            .read_blob(manifest.config().digest())
            .map_err(|source| EngineError::Store {
                action: format!("read the config of {digest}"),
                source,
            })?,
    )
    .map_err(|e| EngineError::Invalid(format!("bad image config of {digest}: {e}")))?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != manifest.layers().len() {
        return Err(EngineError::Invalid(format!(
            "image {digest} has {} layers but {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    Ok(manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| Layer {
            digest: l.digest().to_string(),
            diff_id,
            size: l.size(),
            media_type: l.media_type().to_string(),
        })
        .collect())
}

#[async_trait]
impl Op<Artifact> for ImageOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("image", 1)
            .str("reference", &self.reference)
            .finish()
    }

    async fn exec(&self, _: &OpContext, _: Vec<Artifact>) -> Result<Artifact, OpError> {
        let Some((_, digest)) = self.reference.split_once('@') else {
            return Err(Box::new(EngineError::Invalid(format!(
                "image {} is not in the store (`hoist pull` or `hoist import` it first)",
                self.reference
            ))));
        };
        let layers = image_layers(&self.engine, digest)?;
        Ok(Artifact::Fs { layers })
    }
}

/// A local context: its key is the digest of its selected files.
pub struct ContextOp {
    /// Context name.
    pub name: String,
    /// Paths the build reads (empty: all).
    pub paths: Vec<String>,
    /// The engine.
    pub engine: Arc<Engine>,
}

#[async_trait]
impl Op<Artifact> for ContextOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("context", 1)
            .str("name", &self.name)
            .str_list("paths", &self.paths)
            .finish()
    }

    async fn source_digest(&self, _: &OpContext) -> Result<Option<Digest>, OpError> {
        let engine = self.engine.clone();
        let name = self.name.clone();
        let paths = if self.paths.is_empty() {
            vec![String::new()]
        } else {
            self.paths.clone()
        };
        blocking(move || {
            let context = engine.context(&name)?;
            let digest =
                hash::selection_digest(&context.dir, &paths, Some(&context.ignore), &engine.hashes)
                    .map_err(super::io_error("hash the build context", &context.dir))?;
            Ok(Some(digest))
        })
        .await
    }

    async fn exec(&self, _: &OpContext, _: Vec<Artifact>) -> Result<Artifact, OpError> {
        Ok(Artifact::Context {
            name: self.name.clone(),
        })
    }
}

/// File actions (COPY, ADD, WORKDIR's mkdir, inline files).
pub struct FileStep {
    /// The frontend's op.
    pub op: FileOp,
    /// The engine.
    pub engine: Arc<Engine>,
    /// What it keeps of its layer besides the snapshot (the build's choice:
    /// no blob for a stage the image does not hold, see
    /// `BuildRequest::intermediate_blob`).
    pub blob: LayerBlob,
}

impl FileStep {
    /// The distinct `chown` values of the actions.
    fn owner_specs(&self) -> Vec<String> {
        let mut specs: Vec<String> = self
            .op
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy { chown, .. } | FileAction::Mkdir { chown, .. } => chown.clone(),
                _ => None,
            })
            .collect();
        specs.sort();
        specs.dedup();
        specs
    }

    fn sources_of(&self, input: usize) -> Vec<String> {
        self.op
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy {
                    input: i, source, ..
                } if *i == input => Some(source.clone()),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl Op<Artifact> for FileStep {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("file", 1)
            .bytes("op", &json(&self.op))
            .finish()
    }

    fn selector(&self, input: usize) -> Option<CanonicalBytes> {
        if Some(input) == self.op.root {
            return None;
        }
        if Some(input) == self.op.owner_from {
            return Some(
                CanonicalEncoder::new("owner-lookup", 1)
                    .str_list("chown", self.owner_specs())
                    .finish(),
            );
        }
        Some(
            CanonicalEncoder::new("file-selector", 1)
                .str_list("sources", self.sources_of(input))
                .finish(),
        )
    }

    fn content_addressed(&self, input: usize) -> bool {
        Some(input) != self.op.root
    }

    async fn content_digest(
        &self,
        _: &OpContext,
        input: usize,
        output: &Artifact,
    ) -> Result<Digest, OpError> {
        if Some(input) == self.op.owner_from {
            // Only the ids the names resolve to matter: a changed base with the
            // same users keeps the linked layer cached.
            let engine = self.engine.clone();
            let specs = self.owner_specs();
            let layers = output.layers().to_vec();
            return blocking(move || {
                let owners = resolve_owners(&engine, &layers, &specs)?;
                let mut e = CanonicalEncoder::new("owners", 1);
                e.str_list(
                    "ids",
                    owners
                        .iter()
                        .map(|(spec, o)| format!("{spec}={}:{}", o.uid, o.gid)),
                );
                Ok(e.finish().digest())
            })
            .await;
        }
        let sources = self.sources_of(input);
        match output {
            Artifact::Context { name } => {
                let engine = self.engine.clone();
                let name = name.clone();
                blocking(move || {
                    let context = engine.context(&name)?;
                    Ok(hash::selection_digest(
                        &context.dir,
                        &sources,
                        Some(&context.ignore),
                        &engine.hashes,
                    )
                    .map_err(super::io_error("hash the build context", &context.dir))?)
                })
                .await
            }
            // A stage's layers stand for its content (a rebuilt stage with equal
            // files has new layers and misses: safe, not yet minimal).
            Artifact::Fs { layers } => {
                let mut e = CanonicalEncoder::new("layers", 1);
                e.str_list("diff_ids", layers.iter().map(|l| l.diff_id.as_str()));
                Ok(e.finish().digest())
            }
        }
    }

    async fn exec(&self, _: &OpContext, inputs: Vec<Artifact>) -> Result<Artifact, OpError> {
        let engine = self.engine.clone();
        let blob = self.blob;
        let op = self.op.clone();
        blocking(move || {
            let base: Vec<Layer> = match op.root {
                Some(r) => inputs[r].layers().to_vec(),
                None => vec![],
            };
            let resolved = match op.owner_from {
                Some(i) => {
                    let specs = FileStep {
                        op: op.clone(),
                        engine: engine.clone(),
                        blob,
                    }
                    .owner_specs();
                    resolve_owners(&engine, inputs[i].layers(), &specs)?
                }
                None => vec![],
            };
            let Some(reuse_key) = reuse_key(&engine, &op, &inputs, &base)? else {
                let layers = engine.with_new_layer(&base, blob, |root| {
                    for action in &op.actions {
                        apply_action(&engine, root, action, &inputs, &resolved, None)?;
                    }
                    Ok(())
                })?;
                return Ok(Artifact::Fs { layers });
            };
            let records = reuse::records_dir(engine.store.root());
            let previous = Record::load(&records, &reuse_key).and_then(|record| {
                let dir = engine.committed_own_dir(&record.snapshot)?;
                Some((record, dir))
            });
            let earlier = previous.as_ref().and_then(|(record, _)| {
                let digest = record.layer.as_deref()?.parse().ok()?;
                let blob = engine.store.content().open_blob(&digest).ok()?;
                Some(Arc::new(reuse::PreviousBlocks::new(record, blob)?))
            });
            let mut blocks = LayerBlocks {
                earlier: earlier
                    .clone()
                    .map(|e| e as Arc<dyn hoist_snapshotter::GzipBlockSource>),
                written: Vec::new(),
            };
            let reuse = Reuse::new(previous, &engine.hashes);
            let layers = engine.with_new_layer_then(
                &base,
                blob,
                |root| {
                    reuse.set_mount(root);
                    for action in &op.actions {
                        apply_action(&engine, root, action, &inputs, &resolved, Some(&reuse))?;
                    }
                    Ok(())
                },
                |upper| {
                    let linked = reuse.link_into(upper)?;
                    tracing::debug!(linked, "files of the previous snapshot reused");
                    Ok(())
                },
                &mut blocks,
            )?;
            tracing::debug!(
                taken = earlier.as_ref().map_or(0, |e| e.taken()),
                blocks = blocks.written.len(),
                "gzip blocks of the previous layer taken"
            );
            let name = super::artifact::snapshot_name(&layers).unwrap_or_default();
            let mut record = reuse.record(name);
            record.layer = layers.last().map(|l| l.digest.clone());
            record.blocks = blocks.written;
            // Only a hint for the next build: failing to write it costs
            // speed, never the step.
            if let Err(e) = record.save(&records, &reuse_key) {
                tracing::debug!(error = %e, "could not record the COPY for reuse");
            }
            Ok(Artifact::Fs { layers })
        })
        .await
    }
}

/// The reuse record key of a file op that may reuse its previous snapshot's
/// files: one COPY from a build context, without `--parents`, on the
/// overlay backend (`reuse.rs`); `None` for every other op.
fn reuse_key(
    engine: &Engine,
    op: &FileOp,
    inputs: &[Artifact],
    base: &[Layer],
) -> Result<Option<crate::digest::Digest>, OpError> {
    let [FileAction::Copy { input, include, .. }] = op.actions.as_slice() else {
        return Ok(None);
    };
    let Artifact::Context { name } = &inputs[*input] else {
        return Ok(None);
    };
    if !include.is_empty() || !engine.reuses_files() {
        return Ok(None);
    }
    let context = engine.context(name)?;
    let base = super::artifact::snapshot_name(base);
    Ok(Some(reuse::key(&json(op), base.as_deref(), &context.dir)))
}

/// `chown` values resolved in the `/etc/passwd` and `/etc/group` of `layers`.
fn resolve_owners(
    engine: &Engine,
    layers: &[Layer],
    specs: &[String],
) -> Result<Vec<(String, Owner)>, OpError> {
    engine.with_view(layers, |view| {
        let accounts = files::accounts(view)?;
        specs
            .iter()
            .map(|spec| Ok((spec.clone(), files::chown_owner(&accounts, spec)?)))
            .collect()
    })
}

/// Resolves a `chown` value: from the names looked up beforehand in another
/// filesystem when there are any, else in `root`.
fn owner_of(
    root: &std::path::Path,
    spec: &str,
    resolved: &[(String, Owner)],
) -> Result<Owner, EngineError> {
    match resolved.iter().find(|(s, _)| s == spec) {
        Some((_, owner)) => Ok(*owner),
        None => files::resolve_owner(root, spec),
    }
}

fn apply_action(
    engine: &Engine,
    root: &std::path::Path,
    action: &FileAction,
    inputs: &[Artifact],
    resolved: &[(String, Owner)],
    reuse: Option<&Reuse<'_>>,
) -> Result<(), OpError> {
    match action {
        FileAction::Copy {
            input,
            source,
            dest,
            chown,
            chmod,
            exclude,
            include,
            follow_symlinks,
            dir_contents_only,
            attempt_unpack,
            create_dest_path: _,
            allow_wildcard,
            allow_empty_wildcard,
        } => {
            let owner = chown
                .as_deref()
                .map(|c| owner_of(root, c, resolved))
                .transpose()?;
            let mode = chmod.as_deref().map(files::parse_chmod).transpose()?;
            let exclude =
                if exclude.is_empty() {
                    None
                } else {
                    Some(Matcher::from_patterns(exclude).map_err(|e| {
                        EngineError::Invalid(format!("invalid --exclude pattern: {e}"))
                    })?)
                };
            let request = CopyRequest {
                source,
                dest,
                owner,
                mode,
                exclude: exclude.as_ref(),
                follow_symlinks: *follow_symlinks,
                dir_contents_only: *dir_contents_only,
                attempt_unpack: *attempt_unpack,
                allow_wildcard: *allow_wildcard,
                allow_empty_wildcard: *allow_empty_wildcard,
            };
            match &inputs[*input] {
                Artifact::Context { name } => {
                    let context = engine.context(name)?;
                    let from = Source {
                        root: &context.dir,
                        ignore: Some(&context.ignore),
                        reset_owner: true,
                        what: "build context",
                        reuse,
                    };
                    copy_one(root, &from, &request, include)?;
                }
                Artifact::Fs { layers } => {
                    engine.with_view(layers, |view| {
                        let from = Source {
                            root: view,
                            ignore: None,
                            reset_owner: false,
                            what: "source stage",
                            reuse: None,
                        };
                        copy_one(root, &from, &request, include)?;
                        Ok(())
                    })?;
                }
            }
        }
        FileAction::Mkdir {
            path,
            mode,
            make_parents: _,
            chown,
        } => {
            let owner = chown
                .as_deref()
                .map(|c| owner_of(root, c, resolved))
                .transpose()?
                .unwrap_or(Owner { uid: 0, gid: 0 });
            files::mkdir_all(root, path, *mode, owner)?;
        }
        FileAction::Mkfile { path, mode, data } => files::mkfile(root, path, *mode, data)?,
        FileAction::Rm {
            path,
            allow_not_found,
        } => files::rm(root, path, *allow_not_found)?,
    }
    Ok(())
}

fn copy_one(
    root: &std::path::Path,
    from: &Source<'_>,
    request: &CopyRequest<'_>,
    include: &[String],
) -> Result<(), EngineError> {
    if include.is_empty() {
        files::copy(root, from, request)
    } else {
        files::copy_with_parents(root, from, request, include)
    }
}

/// Why a RUN failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "process \"{command}\" did not complete successfully: {status}{}",
    if *.disk_full { " (the disk was full: No space left on device)" } else { "" }
)]
pub struct ProcessFailed {
    /// The command line, space-joined as BuildKit shows it.
    pub command: String,
    /// `exit code: N` or `killed by signal N`.
    pub status: String,
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The store's disk was full when it ended: the likely reason, which
    /// the process itself may have reported as anything (overlayfs gives
    /// writers EIO).
    pub disk_full: bool,
}

/// Less free space than this on the store's disk when a step fails, and
/// the disk is taken for the reason.
const FULL_DISK_FREE: u64 = 1 << 20;

/// True when the filesystem of `root` is (nearly) full now.
fn disk_full(root: &std::path::Path) -> bool {
    hoist_cache::disk::disk_of(root).is_ok_and(|d| d.free < FULL_DISK_FREE)
}

/// A RUN step.
pub struct ExecStep {
    /// The frontend's op.
    pub op: hoist_frontend::graph::ExecOp,
    /// The network mode forced by `--network`, if any.
    pub network: Option<hoist_frontend::graph::NetworkMode>,
    /// The platform of the step's stage (emulated when not the host's).
    pub platform: hoist_frontend::graph::Platform,
    /// The engine.
    pub engine: Arc<Engine>,
    /// What it keeps of its layer besides the snapshot (the build's choice:
    /// no blob for a stage the image does not hold, see
    /// `BuildRequest::intermediate_blob`).
    pub blob: LayerBlob,
}

#[async_trait]
impl Op<Artifact> for ExecStep {
    fn definition(&self) -> CanonicalBytes {
        let mut op = self.op.clone();
        // Proxy variables never change what a step means (BuildKit's rule).
        op.proxy_env.clear();
        // The platform is part of what a RUN means: an arm64 result is
        // never reused for amd64 (even from scratch, where no base image's
        // digest tells them apart).
        // What `--add-host`, `--shm-size` and `--ulimit` give a step can
        // change what it makes (BuildKit keys them too); without them the
        // key is the one hoist always made.
        let options = &self.engine.step_options;
        let (op, platform) = (json(&op), self.platform.to_string());
        let mut encoder = CanonicalEncoder::new("exec", 1);
        encoder.bytes("op", &op).str("platform", &platform);
        if !options.is_default() {
            encoder.bytes("options", &json(options));
        }
        encoder.finish()
    }

    async fn exec(&self, context: &OpContext, inputs: Vec<Artifact>) -> Result<Artifact, OpError> {
        super::emulation::check(&super::build::registry_platform(&self.platform))
            .map_err(|m| Box::new(EngineError::Invalid(m)))?;
        let engine = self.engine.clone();
        let blob = self.blob;
        let op = self.op.clone();
        let network = match (op.network, self.network) {
            (hoist_frontend::graph::NetworkMode::Default, Some(n)) => n,
            (n, _) => n,
        };
        if engine.runner.is_none() {
            if !op.mounts.is_empty() {
                return Err(Box::new(EngineError::Invalid(
                    "RUN --mount needs the sandbox runner, which could not be set up (see the log)"
                        .into(),
                )));
            }
            return self.exec_unshare(context, inputs, network).await;
        }
        let cancel = hoist_runner::Cancel::new()?;
        // The runner watches a pipe, the solver a token: bridge them.
        let watcher = {
            let cancel = cancel.clone();
            let token = context.cancellation().clone();
            tokio::spawn(async move {
                token.cancelled().await;
                cancel.cancel();
            })
        };
        let context = context.clone();
        let result = blocking(move || {
            let base = inputs[op.root].layers().to_vec();
            let mut env = op.env.clone();
            env.extend(op.proxy_env.iter().cloned());
            env.extend(inherited_proxy_env(&op, &engine.proxy_env));
            let to_view = mounts::inputs_to_view(&op.mounts, &inputs);
            let mut views = std::collections::HashMap::new();
            let layers =
                mounts::with_views(&engine, &inputs, &to_view, &mut views, &mut |views| {
                    let extra = mounts::prepare(&engine, &op.mounts, &inputs, views, &env)?;
                    let mut env = env.clone();
                    env.extend(extra.env.iter().cloned());
                    engine.with_new_snapshot(&base, blob, None, |_, mounts| {
                        let rootfs = super::rootfs_of(mounts, false);
                        let mut spec = hoist_runner::RunSpec::new(rootfs, op.argv.clone());
                        spec.env = env.clone();
                        spec.mounts = extra.mounts.clone();
                        spec.cwd = if op.cwd.is_empty() {
                            "/".into()
                        } else {
                            op.cwd.clone()
                        };
                        spec.user = op.user.clone();
                        // The step's files are kept through the layer hoist
                        // writes and syncs at commit; a RUN's own flushes
                        // (dpkg's, per file) only cost time (docs/runner.md).
                        spec.discard_syncs = true;
                        spec.network = match network {
                            hoist_frontend::graph::NetworkMode::None => {
                                hoist_runner::NetworkMode::None
                            }
                            hoist_frontend::graph::NetworkMode::Host => {
                                hoist_runner::NetworkMode::Host
                            }
                            hoist_frontend::graph::NetworkMode::Default => {
                                hoist_runner::NetworkMode::Default
                            }
                        };
                        spec.limits = engine.limits;
                        spec.options = engine.step_options.clone();
                        if op.security == hoist_frontend::graph::SecurityMode::Insecure {
                            // BuildKit's security.insecure (`docker run --privileged`): every
                            // capability, no seccomp filter, setuid works. The build
                            // was checked for the entitlement before it started.
                            spec.seccomp = false;
                            spec.no_new_privileges = false;
                            spec.all_capabilities = true;
                        }
                        let runner = engine.runner.as_ref().ok_or_else(|| {
                            EngineError::Invalid("the sandbox runner is unavailable".into())
                        })?;
                        let result = runner.run_with_cancel(
                            &spec,
                            &mut |stream, bytes| {
                                let stream = match stream {
                                    hoist_runner::Stream::Stdout => crate::LogStream::Stdout,
                                    hoist_runner::Stream::Stderr => crate::LogStream::Stderr,
                                };
                                context.log(stream, bytes);
                            },
                            Some(&cancel),
                        )?;
                        context.record_usage(crate::Usage {
                            cpu_time: result.usage.cpu,
                            peak_memory_bytes: result.usage.peak_memory,
                        });
                        if context.is_cancelled() {
                            return Err(Box::new(EngineError::Invalid("cancelled".into())));
                        }
                        match result.failure_message(&spec.limits) {
                            None => Ok(()),
                            Some(message) => {
                                let (status, code) = match result.status {
                                    hoist_runner::ExitStatus::Exited(code)
                                        if !result.oom_killed =>
                                    {
                                        (format!("exit code: {code}"), Some(code))
                                    }
                                    _ => (message, None),
                                };
                                Err(Box::new(ProcessFailed {
                                    command: op.argv.join(" "),
                                    status,
                                    code,
                                    disk_full: disk_full(engine.store.root()),
                                }))
                            }
                        }
                    })
                })?;
            Ok(Artifact::Fs { layers })
        })
        .await;
        watcher.abort();
        result
    }
}

/// The process's proxy variables a RUN step gets on top of its own: those
/// neither `--build-arg` (the op's `proxy_env`) nor the stage's ENV name.
/// Never part of the cache key ([`ExecStep::definition`] clears the op's;
/// these are not in the op at all) nor of the history, as with BuildKit.
fn inherited_proxy_env(
    op: &hoist_frontend::graph::ExecOp,
    inherited: &[(String, String)],
) -> Vec<String> {
    let named = |list: &[String], name: &str| {
        list.iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == name))
    };
    inherited
        .iter()
        .filter(|(k, _)| !named(&op.proxy_env, k) && !named(&op.env, k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

impl ExecStep {
    /// The interim sandbox (util-linux `unshare`), used when the runner cannot
    /// be set up.
    async fn exec_unshare(
        &self,
        context: &OpContext,
        inputs: Vec<Artifact>,
        network: hoist_frontend::graph::NetworkMode,
    ) -> Result<Artifact, OpError> {
        let engine = self.engine.clone();
        let blob = self.blob;
        let op = self.op.clone();
        let context = context.clone();
        blocking(move || {
            let base = inputs[op.root].layers().to_vec();
            let mut env = op.env.clone();
            env.extend(op.proxy_env.iter().cloned());
            env.extend(inherited_proxy_env(&op, &engine.proxy_env));
            let layers = engine.with_new_layer(&base, blob, |root| {
                // `USER`'s rules, the runner's (not `--chown`'s): this
                // interim sandbox must run a step as the runner would.
                let resolved = hoist_runner::resolve_user(&op.user, &files::accounts(root)?)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                let user = (!op.user.is_empty()).then_some(Owner {
                    uid: resolved.uid,
                    gid: resolved.gid,
                });
                if !env.iter().any(|e| e.starts_with("HOME=")) {
                    env.push(format!("HOME={}", resolved.home));
                }
                let cwd = if op.cwd.is_empty() {
                    "/"
                } else {
                    op.cwd.as_str()
                };
                files::mkdir_all(root, cwd, 0o755, user.unwrap_or(Owner { uid: 0, gid: 0 }))?;
                let spec = ProcessSpec {
                    argv: &op.argv,
                    env: &env,
                    cwd,
                    user,
                    network,
                };
                let exit = exec::run(root, &spec, &context)?;
                let failed = |status: String, code| -> OpError {
                    Box::new(ProcessFailed {
                        command: op.argv.join(" "),
                        status,
                        code,
                        disk_full: disk_full(engine.store.root()),
                    })
                };
                match exit {
                    None => Err(Box::new(EngineError::Invalid("cancelled".into()))),
                    Some(Exit::Code(0)) => Ok(()),
                    Some(Exit::Code(code)) => Err(failed(format!("exit code: {code}"), Some(code))),
                    Some(Exit::Signal(sig)) => Err(failed(format!("killed by signal {sig}"), None)),
                }
            })?;
            Ok(Artifact::Fs { layers })
        })
        .await
    }
}

/// `ADD https://…`: the file in a layer of its own, at `/<filename>`, mode
/// 0600 (as BuildKit), its mtime from `Last-Modified`.
pub struct HttpOp {
    /// URL.
    pub url: String,
    /// `--checksum`, if given.
    pub checksum: Option<String>,
    /// File name in the layer.
    pub filename: String,
    /// The engine.
    pub engine: Arc<Engine>,
    /// The download made while computing the cache key, reused by `exec`.
    fetched: std::sync::Mutex<Option<super::fetch::Download>>,
    /// Without a checksum: what the conditional request made for the key got.
    validated: std::sync::Mutex<Option<super::fetch::Fetched>>,
    /// What it keeps of its layer besides the snapshot (the build's choice:
    /// no blob for a stage the image does not hold, see
    /// `BuildRequest::intermediate_blob`).
    pub blob: LayerBlob,
}

impl HttpOp {
    /// An op downloading `url` into a layer kept as `blob` says.
    pub fn new(
        url: String,
        checksum: Option<String>,
        filename: String,
        engine: Arc<Engine>,
        blob: LayerBlob,
    ) -> Self {
        HttpOp {
            url,
            checksum,
            filename,
            engine,
            fetched: std::sync::Mutex::new(None),
            validated: std::sync::Mutex::new(None),
            blob,
        }
    }

    /// Without a checksum: the content, or only its record when the server
    /// says it did not change since the last build that fetched it (a
    /// conditional request on the ETag / `Last-Modified` kept in
    /// `<root>/http-cache/v1/`, as BuildKit's http source does).
    async fn validate(&self) -> Result<super::fetch::Fetched, OpError> {
        use super::fetch::{Fetched, HttpRecord};
        if let Some(f) = self
            .validated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(f);
        }
        let records = self.engine.store().root().join("http-cache").join("v1");
        let dir = self.engine.scratch_dir("http")?;
        let url = self.url.clone();
        let fetched = blocking(move || {
            let known = HttpRecord::load(&records, &url);
            let fetched = super::fetch::download_if_changed_blocking(
                &url,
                &dir.join("data"),
                known.as_ref(),
            )?;
            if let Fetched::Downloaded(_, record) = &fetched {
                if record.etag.is_some() || record.last_modified.is_some() {
                    record.save(&records, &url)?;
                }
            }
            Ok(fetched)
        })
        .await?;
        if let Fetched::Downloaded(download, _) = &fetched {
            *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(download.clone());
        }
        *self.validated.lock().unwrap_or_else(|e| e.into_inner()) = Some(fetched.clone());
        Ok(fetched)
    }

    async fn fetch(&self) -> Result<super::fetch::Download, OpError> {
        if let Some(d) = self
            .fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(d);
        }
        let dir = self.engine.scratch_dir("http")?;
        let (url, checksum) = (self.url.clone(), self.checksum.clone());
        // On a runtime of its own: the build's runtime has no I/O driver.
        let download = blocking(move || {
            Ok(super::fetch::download_blocking(
                &url,
                &dir.join("data"),
                checksum.as_deref(),
            )?)
        })
        .await?;
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(download.clone());
        Ok(download)
    }
}

#[async_trait]
impl Op<Artifact> for HttpOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("http", 1)
            .str("url", &self.url)
            .optional_str("checksum", self.checksum.as_deref())
            .str("filename", &self.filename)
            .finish()
    }

    async fn source_digest(&self, _: &OpContext) -> Result<Option<Digest>, OpError> {
        // With a checksum the content is known without asking the server.
        let (digest, modified) = match &self.checksum {
            Some(c) => (c.clone(), None),
            None => match self.validate().await? {
                super::fetch::Fetched::NotModified(record) => {
                    let modified = record.modified();
                    (record.digest, modified)
                }
                super::fetch::Fetched::Downloaded(d, _) => (d.digest, d.modified),
            },
        };
        let mut e = CanonicalEncoder::new("http-content", 1);
        e.str("digest", &digest);
        if let Some(m) = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()) {
            e.u64("modified", m.as_secs());
        }
        Ok(Some(e.finish().digest()))
    }

    async fn exec(&self, _: &OpContext, _: Vec<Artifact>) -> Result<Artifact, OpError> {
        let download = self.fetch().await?;
        let engine = self.engine.clone();
        let blob = self.blob;
        let filename = self.filename.clone();
        blocking(move || {
            let layers = engine.with_new_layer(&[], blob, |root| {
                // The name comes from the Dockerfile's URL: resolved like any
                // other path of a build.
                let target = files::resolve_in_root(root, &filename, false)?;
                std::fs::copy(&download.path, &target)
                    .map_err(super::io_error("write downloaded file", &target))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
                    .map_err(super::io_error("chmod", &target))?;
                if let Some(m) = download.modified {
                    std::fs::File::open(&target)
                        .and_then(|f| f.set_modified(m))
                        .map_err(super::io_error("set the modification time of", &target))?;
                }
                Ok(())
            })?;
            let _ = std::fs::remove_file(&download.path);
            Ok(Artifact::Fs { layers })
        })
        .await
    }
}

/// `ADD https://….git#ref`: a checkout (through the git CLI) in a layer.
pub struct GitOp {
    /// Repository URL.
    pub url: String,
    /// Branch, tag or commit.
    pub reference: String,
    /// Keep `.git`.
    pub keep_git_dir: bool,
    /// The engine.
    pub engine: Arc<Engine>,
    /// What it keeps of its layer besides the snapshot (the build's choice:
    /// no blob for a stage the image does not hold, see
    /// `BuildRequest::intermediate_blob`).
    pub blob: LayerBlob,
    commit: std::sync::Mutex<Option<String>>,
}

impl GitOp {
    /// An op checking out `reference` of `url` into a layer kept as `blob`
    /// says.
    pub fn new(
        url: String,
        reference: String,
        keep_git_dir: bool,
        engine: Arc<Engine>,
        blob: LayerBlob,
    ) -> Self {
        GitOp {
            url,
            reference,
            keep_git_dir,
            engine,
            blob,
            commit: std::sync::Mutex::new(None),
        }
    }

    async fn commit(&self) -> Result<String, OpError> {
        if let Some(c) = self
            .commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let (url, reference) = (self.url.clone(), self.reference.clone());
        let engine = self.engine.clone();
        let commit = blocking(move || {
            let ssh = super::fetch::GitSsh {
                agent: engine.secrets.agent("default"),
            };
            Ok(super::fetch::resolve_git_ref(&url, &reference, ssh)?)
        })
        .await?;
        *self.commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(commit.clone());
        Ok(commit)
    }
}

#[async_trait]
impl Op<Artifact> for GitOp {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("git", 1)
            .str("url", &self.url)
            .str("reference", &self.reference)
            .str("keep_git_dir", if self.keep_git_dir { "1" } else { "0" })
            .finish()
    }

    async fn source_digest(&self, _: &OpContext) -> Result<Option<Digest>, OpError> {
        let commit = self.commit().await?;
        Ok(Some(
            CanonicalEncoder::new("git-commit", 1)
                .str("commit", &commit)
                .finish()
                .digest(),
        ))
    }

    async fn exec(&self, _: &OpContext, _: Vec<Artifact>) -> Result<Artifact, OpError> {
        let commit = self.commit().await?;
        let engine = self.engine.clone();
        let blob = self.blob;
        let (url, reference, keep) = (self.url.clone(), self.reference.clone(), self.keep_git_dir);
        blocking(move || {
            let dir = engine.scratch_dir("git")?.join("checkout");
            let ssh = super::fetch::GitSsh {
                agent: engine.secrets.agent("default"),
            };
            super::fetch::checkout(&url, &reference, &commit, &dir, keep, ssh)?;
            let layers = engine.with_new_layer(&[], blob, |root| {
                let mut names: Vec<_> = std::fs::read_dir(&dir)
                    .map_err(super::io_error("read", &dir))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect();
                names.sort();
                for name in names {
                    mounts::copy_tree(&dir.join(&name), &root.join(&name))?;
                }
                Ok(())
            })?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(Artifact::Fs { layers })
        })
        .await
    }
}

//! The real build function: base images pulled, `hoist-builder` over the
//! checkout, tags in the store, pushes with the registry crate.
//!
//! [`ImageBuilder`] is what `hoist autobuild serve` plugs into
//! [`GitCheckoutExecutor`]. One build is one run of the builder's pipeline
//! ([`hoist_builder::pipeline::run`], the same as `hoist build`'s):
//!
//! 1. Each base image is resolved in its registry; when the store's name for
//!    it points at another manifest it is pulled and renamed, so a moved tag
//!    (a new base image) is what the build uses. An image the registry does
//!    not know but the store has (`hoist import`ed) is used as it is.
//! 2. The repository's `cache_from` caches are imported, the image is built
//!    under a lease, named with every tag of the matching rules, and its
//!    cache exported to `cache_to`; the store is then brought under
//!    `gc.max-storage`. Progress is written to the build log as `docker
//!    build --progress=plain` does.
//! 3. The image is pushed to the tags that asked, with the credentials of
//!    the docker config file (through the [`Client`] given).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hoist_builder::engine::build::{self as engine_build, BuildError, BuildRequest};
use hoist_builder::engine::rebase;
use hoist_builder::pipeline::{
    self, CacheSpec, Direction, Notice, Output, PipelineError, PullPolicy,
};
use hoist_builder::{BuildOptions, CancellationToken, Event, EventSink, Store, VertexId};
use hoist_registry::{Client, Platform, Reference};

use crate::executor::{BuildFailure, BuildJob, BuildOutcome, GitCheckoutExecutor, LogSink};

/// Builds checked-out commits into images of one store and pushes them.
#[derive(Clone)]
pub struct ImageBuilder {
    store: Arc<Store>,
    client: Client,
}

impl ImageBuilder {
    /// A builder over `store` pushing and pulling with `client` (the CLI
    /// passes `Client::from_environment()`: registry config files and the
    /// docker config file's credentials).
    pub fn new(store: Arc<Store>, client: Client) -> ImageBuilder {
        ImageBuilder { store, client }
    }

    /// The registry client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A [`GitCheckoutExecutor`] whose build function is [`Self::build`].
    pub fn executor(self) -> GitCheckoutExecutor {
        GitCheckoutExecutor::new(Arc::new(move |job, tree, dockerfile, log| {
            self.build(job, tree, dockerfile, log)
        }))
    }

    /// Build `job` from the checkout at `tree` (its Dockerfile's bytes are
    /// `dockerfile`), tag and push. Call it from a blocking thread: registry
    /// transfers run on the current tokio runtime when there is one.
    pub fn build(
        &self,
        job: &BuildJob,
        tree: &Path,
        dockerfile: &[u8],
        log: &LogSink,
    ) -> Result<BuildOutcome, BuildFailure> {
        let started = Instant::now();
        if let Some(base) = job.trigger.strip_prefix("rebase:") {
            // A `rebase:` build that succeeds was rebased (the status page
            // says so); one that cannot be is a failure a retry rebuilds.
            return self.rebase(job, base, log)?.ok_or_else(|| {
                BuildFailure::new(format!(
                    "nothing to rebase onto {}: no image under the tags records it as its \
                     base; retry the build to rebuild",
                    hoist_untrusted::escape(base)
                ))
            });
        }
        let dockerfile = String::from_utf8(dockerfile.to_vec()).map_err(|_| {
            BuildFailure::new(format!("the Dockerfile `{}` is not UTF-8", job.dockerfile))
        })?;
        // Inside the checkout, as the executor read the Dockerfile: the
        // context and ignore file never through a symlink out of it.
        let files = hoist_builder::engine::read_build_files(tree, &job.dockerfile, &job.context)
            .map_err(|e| BuildFailure::new(hoist_untrusted::text::error_chain(&e)))?;
        let (dockerfile_name, context_dir, dockerignore) =
            (files.dockerfile_name, files.context_dir, files.dockerignore);
        let options = BuildOptions {
            build_args: job.build_args.clone(),
            ..Default::default()
        };
        let parse_cache = |spec: &str, direction| {
            CacheSpec::parse(spec, direction)
                .map_err(|e| BuildFailure::new(format!("repository {}: {e}", job.repo)))
        };
        let cache_from = job
            .cache_from
            .iter()
            .map(|spec| parse_cache(spec, Direction::From))
            .collect::<Result<Vec<_>, _>>()?;
        let cache_to = job
            .cache_to
            .as_deref()
            .map(|spec| parse_cache(spec, Direction::To))
            .transpose()?;
        let (tags, push) = job_names(job)?;
        let build = pipeline::Build {
            request: BuildRequest {
                dockerfile,
                dockerfile_name,
                context_dir,
                dockerignore: Some(dockerignore.unwrap_or_default()),
                options,
                ..Default::default()
            },
            // A moved base tag is what the build uses (base watching
            // triggers builds for exactly that).
            pull: PullPolicy::Always,
            cache_from,
            cache_to,
            push,
            tags: tags.clone(),
            outputs: vec![Output::image()],
            client: Some(self.client.clone()),
        };
        let notify = log_notices(log);
        let cancel = CancellationToken::new();
        let result = pipeline::run(
            Arc::clone(&self.store),
            build,
            plain_progress(log.clone()),
            notify,
            &cancel,
        )
        .map_err(|e| build_failure(e, log))?;
        // What the tags name and the registry got: the index with
        // provenance, else the manifest.
        let digest = result.target().digest().to_string();
        log.line(&format!(
            "writing image {} done ({:.1}s)",
            result.built.image.config_digest,
            started.elapsed().as_secs_f64()
        ));
        for name in &tags {
            log.line(&format!("naming to {name}"));
        }
        Ok(BuildOutcome {
            digest,
            pushed_tags: job.push_tags.clone(),
            bases: result.bases,
        })
    }
}

impl ImageBuilder {
    /// `on_base_change = "rebase"`: the image the job's tags name is put on
    /// the newest image of `base` (its recorded base), as `hoist rebase`
    /// does, instead of being built again: the image's own layers are kept
    /// as they are. `None` when there is nothing to rebase (no image under
    /// the tags yet, or one that records another base).
    fn rebase(
        &self,
        job: &BuildJob,
        base: &str,
        log: &LogSink,
    ) -> Result<Option<BuildOutcome>, BuildFailure> {
        let fail = |what: &str, e: &dyn std::error::Error| {
            BuildFailure::new(format!(
                "cannot rebase onto {base}: {what}: {}",
                hoist_untrusted::text::error_chain(e)
            ))
        };
        let (tags, push) = job_names(job)?;
        let store = &self.store;
        let lease = hoist_builder::LeaseGuard::take(store, "rebase")
            .map_err(|e| fail("take a lease on the store", &e))?;
        let Some((tag, current)) = tags
            .iter()
            .find_map(|t| store.get_ref(t).ok().flatten().map(|r| (t.clone(), r)))
        else {
            return Ok(None);
        };
        let recorded = rebase::recorded_base(store, &current.target)
            .map_err(|e| fail("read the image", &e))?;
        let Some((Some(recorded_name), recorded_digest)) = recorded else {
            return Ok(None);
        };
        let reference =
            Reference::parse(&recorded_name).map_err(|e| fail("read the recorded base", &e))?;
        if reference.to_string()
            != Reference::parse(base)
                .map(|r| r.to_string())
                .unwrap_or_default()
        {
            return Ok(None);
        }
        let Some(from_target) = rebase::stored_descriptor(store, &recorded_digest)
            .map_err(|e| fail("read the recorded base", &e))?
        else {
            return Ok(None);
        };
        let platforms = rebase::image_platforms(store, &current.target)
            .map_err(|e| fail("read the image", &e))?;
        let notify = log_notices(log);
        for platform in &platforms {
            pipeline::pull_image(store, &self.client, &reference, platform, &notify)
                .map_err(|e| fail("pull the new base", &e))?;
        }
        let to_target = store
            .get_ref(&reference.to_string())
            .map_err(|e| fail("read the new base", &e))?
            .ok_or_else(|| BuildFailure::new(format!("{base} was pulled but is not named")))?
            .target;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let request = rebase::RebaseRequest {
            image: rebase::Named {
                target: current.target.clone(),
                name: Some(tag),
            },
            from: rebase::Named {
                target: from_target,
                name: Some(recorded_name.clone()),
            },
            to: rebase::Named {
                target: to_target.clone(),
                name: Some(recorded_name.clone()),
            },
            now,
            source_date_epoch: None,
            provenance: None,
        };
        let rebased = rebase::rebase(store, &request).map_err(|e| fail("rebase", &e))?;
        for p in &rebased.platforms {
            log.line(&format!(
                "rebased {}: {} base layer(s) replaced by {}, {} layer(s) of the image kept",
                p.platform, p.old_base_layers, p.new_base_layers, p.kept_layers
            ));
        }
        log.line(&format!(
            "warning: the steps were not run again on the new {}: a program linked against the \
             old one may need a rebuild",
            hoist_untrusted::escape(&recorded_name)
        ));
        for name in &tags {
            store
                .set_ref(name, &rebased.target)
                .map_err(|e| fail("name the image", &e))?;
            log.line(&format!("naming to {name}"));
        }
        for name in &push {
            pipeline::push_image(store, &self.client, name, &rebased.target, &notify)
                .map_err(|e| fail("push", &e))?;
        }
        drop(lease);
        let mut bases = BTreeMap::new();
        if let Ok(Some(manifest)) =
            hoist_registry::stored_manifest(store, &to_target, &Platform::host())
        {
            bases.insert(reference.to_string(), manifest.digest().to_string());
        }
        Ok(Some(BuildOutcome {
            digest: rebased.target.digest().to_string(),
            pushed_tags: job.push_tags.clone(),
            bases,
        }))
    }
}

/// The job's tags and push tags, normalised.
fn job_names(job: &BuildJob) -> Result<(Vec<String>, Vec<String>), BuildFailure> {
    let normalise = |tags: &[String]| {
        tags.iter()
            .map(|tag| {
                Reference::parse(tag)
                    .map(|r| r.to_string())
                    .map_err(|e| BuildFailure::new(format!("invalid tag `{tag}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok((normalise(&job.tags)?, normalise(&job.push_tags)?))
}

/// The pipeline's notices as lines of the build log.
fn log_notices(log: &LogSink) -> pipeline::Notify {
    let log = log.clone();
    Arc::new(move |notice: Notice| {
        let line = notice.to_string();
        if !line.is_empty() {
            log.line(&line);
        }
    })
}

/// The base images the Dockerfile's target needs (the builder's
/// [`engine_build::base_images`]), as a build failure when it does not parse.
pub fn base_images(
    dockerfile: &str,
    name: &str,
    options: &BuildOptions,
) -> Result<Vec<String>, BuildFailure> {
    engine_build::base_images(dockerfile, name, options)
        .map_err(|e| BuildFailure::new(e.to_string()))
}

/// The current manifest digest of `image` in its registry (for base-image
/// watching): the host platform's manifest, as a build would pull it.
pub async fn remote_digest(client: &Client, image: &str) -> Result<String, String> {
    let reference = Reference::parse(image).map_err(|e| e.to_string())?;
    let resolved = client
        .resolve_image(&reference, Some(&Platform::host()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(resolved.manifest.descriptor.digest().to_string())
}

/// Whether `image` in its registry still serves the manifest `known`: as
/// its host-platform manifest, or as any manifest of its index (a build
/// records the manifest of the platform its stage used, which need not be
/// the host's). `Some(new)` (the host manifest's digest) when it moved.
pub async fn moved_digest(
    client: &Client,
    image: &str,
    known: &str,
) -> Result<Option<String>, String> {
    let reference = Reference::parse(image).map_err(|e| e.to_string())?;
    let resolved = client
        .resolve_image(&reference, Some(&Platform::host()))
        .await
        .map_err(|e| e.to_string())?;
    let host = resolved.manifest.descriptor.digest().to_string();
    if host == known || resolved.root.descriptor.digest().as_ref() == known {
        return Ok(None);
    }
    if resolved.root.is_index() {
        let index = hoist_registry::manifest::parse_index(&resolved.root.bytes, image)
            .map_err(|e| e.to_string())?;
        if index
            .manifests()
            .iter()
            .any(|m| m.digest().as_ref() == known)
        {
            return Ok(None);
        }
    }
    Ok(Some(host))
}

fn build_failure(e: PipelineError, log: &LogSink) -> BuildFailure {
    match e {
        PipelineError::Build(BuildError::Step {
            description,
            message,
            log_tail,
            ..
        }) => {
            if !log_tail.is_empty() {
                log.line(&format!("------\n > {description}:"));
                for line in &log_tail {
                    log.line(line);
                }
                log.line("------");
            }
            BuildFailure::new(format!("failed to solve: {description}: {message}"))
        }
        PipelineError::Build(BuildError::Dockerfile(text)) => BuildFailure::new(text),
        other => BuildFailure::new(hoist_untrusted::text::error_chain(&other)),
    }
}

/// Progress as `docker build --progress=plain` writes it, into the log.
fn plain_progress(log: LogSink) -> EventSink {
    struct State {
        numbers: HashMap<VertexId, (usize, Instant)>,
        partial: HashMap<VertexId, Vec<u8>>,
    }
    let state = Mutex::new(State {
        numbers: HashMap::new(),
        partial: HashMap::new(),
    });
    EventSink::new(move |event| {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let number = |s: &mut State, v: VertexId| {
            let next = s.numbers.len() + 1;
            s.numbers.entry(v).or_insert((next, Instant::now())).0
        };
        match &event {
            Event::VertexStarted { vertex, name } => {
                let n = number(&mut s, *vertex);
                log.line(&format!("#{n} {name}"));
            }
            Event::VertexCached { vertex, name } => {
                let n = number(&mut s, *vertex);
                log.line(&format!("#{n} {name}\n#{n} CACHED"));
            }
            Event::Log { vertex, bytes, .. } => {
                let Some((n, start)) = s.numbers.get(vertex).copied() else {
                    return;
                };
                let buffer = s.partial.entry(*vertex).or_default();
                buffer.extend_from_slice(bytes);
                while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=pos).collect();
                    log.line(&format!(
                        "#{n} {:.3} {}",
                        start.elapsed().as_secs_f64(),
                        String::from_utf8_lossy(&line[..line.len() - 1])
                    ));
                }
            }
            Event::VertexCompleted {
                vertex, duration, ..
            } => {
                if let Some((n, _)) = s.numbers.get(vertex).copied() {
                    flush(&mut s.partial, *vertex, n, &log);
                    log.line(&format!("#{n} DONE {:.1}s", duration.as_secs_f64()));
                }
            }
            Event::VertexFailed { vertex, error } => {
                if let Some((n, _)) = s.numbers.get(vertex).copied() {
                    flush(&mut s.partial, *vertex, n, &log);
                    log.line(&format!("#{n} ERROR: {error}"));
                }
            }
            Event::VertexCancelled { vertex } => {
                if let Some((n, _)) = s.numbers.get(vertex).copied() {
                    log.line(&format!("#{n} CANCELED"));
                }
            }
            Event::Warning { message, .. } => log.line(&format!("WARNING: {message}")),
            _ => {}
        }
    })
}

fn flush(partial: &mut HashMap<VertexId, Vec<u8>>, vertex: VertexId, n: usize, log: &LogSink) {
    if let Some(rest) = partial.remove(&vertex) {
        if !rest.is_empty() {
            log.line(&format!("#{n} {}", String::from_utf8_lossy(&rest)));
        }
    }
}

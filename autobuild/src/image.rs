//! The real build function: base images pulled, `hoist-builder` over the
//! checkout, tags in the store, pushes with the registry crate.
//!
//! [`ImageBuilder`] is what `hoist autobuild serve` plugs into
//! [`GitCheckoutExecutor`]. One build:
//!
//! 1. The Dockerfile is lowered once with a resolver that only records the
//!    base images it asks for (stage names, `scratch` and ARGs in `FROM` are
//!    the frontend's business, so this list is exactly what the build needs).
//! 2. Each base image is resolved in its registry; when the store's name for
//!    it points at another manifest it is pulled and renamed, so a moved tag
//!    (a new base image) is what the build uses. An image the registry does
//!    not know but the store has (`hoist import`ed) is used as it is.
//! 3. `hoist_builder::engine::build::build` builds it; its progress events
//!    are written to the build log as `docker build --progress=plain` does.
//! 4. The image is named with every tag of the matching rules and pushed to
//!    the tags that asked, with the credentials of the docker config file
//!    (through the [`Client`] given).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hoist_builder::engine::build::{self as engine_build, BuildError, BuildRequest};
use hoist_builder::{
    BuildOptions, CancellationToken, Descriptor, Event, EventSink, Store, VertexId,
};
use hoist_registry::{CacheBlobStore, Client, Platform, PullOptions, PushEvent, Reference};

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
        let dockerfile = String::from_utf8(dockerfile.to_vec()).map_err(|_| {
            BuildFailure::new(format!("the Dockerfile `{}` is not UTF-8", job.dockerfile))
        })?;
        let dockerfile_path = tree.join(&job.dockerfile);
        let dockerfile_name = dockerfile_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        let context_dir = tree.join(&job.context);
        // Docker's rule: `<Dockerfile>.dockerignore` wins over the context's.
        let dockerignore =
            std::fs::read_to_string(format!("{}.dockerignore", dockerfile_path.display()))
                .ok()
                .or_else(|| std::fs::read_to_string(context_dir.join(".dockerignore")).ok());
        let options = BuildOptions {
            build_args: job.build_args.clone(),
            ..Default::default()
        };

        let images = base_images(&dockerfile, &dockerfile_name, &options)?;
        let mut bases = BTreeMap::new();
        for image in &images {
            let digest = self.fetch_base(image, log)?;
            bases.insert(image.clone(), digest);
        }

        let request = BuildRequest {
            dockerfile,
            dockerfile_name,
            context_dir,
            dockerignore: Some(dockerignore.unwrap_or_default()),
            options,
            ..Default::default()
        };
        let cancel = CancellationToken::new();
        let built = engine_build::build(
            Arc::clone(&self.store),
            &request,
            plain_progress(log.clone()),
            &cancel,
        )
        .map_err(|e| build_failure(e, log))?;
        let manifest = built.image.manifest.clone();
        let digest = manifest.digest().to_string();
        log.line(&format!(
            "writing image {} done ({:.1}s)",
            built.image.config_digest,
            started.elapsed().as_secs_f64()
        ));

        for tag in &job.tags {
            let name = Reference::parse(tag)
                .map_err(|e| BuildFailure::new(format!("invalid tag `{tag}`: {e}")))?
                .to_string();
            self.store
                .set_ref(&name, &manifest)
                .map_err(|e| BuildFailure::new(format!("cannot name the image `{name}`: {e}")))?;
            log.line(&format!("naming to {name}"));
        }

        let mut pushed_tags = Vec::new();
        for tag in &job.push_tags {
            self.push(tag, &manifest, log)?;
            pushed_tags.push(tag.clone());
        }
        Ok(BuildOutcome {
            digest,
            pushed_tags,
            bases,
        })
    }

    /// Make the store's name for `image` point at what its registry serves
    /// now (pulling what is missing); the manifest digest used.
    fn fetch_base(&self, image: &str, log: &LogSink) -> Result<String, BuildFailure> {
        let reference = Reference::parse(image)
            .map_err(|e| BuildFailure::new(format!("invalid base image `{image}`: {e}")))?;
        let name = reference.to_string();
        let local = self
            .store
            .get_ref(image)
            .ok()
            .flatten()
            .or_else(|| self.store.get_ref(&name).ok().flatten());
        // The store's name may point at an index (a `hoist pull` of a
        // multi-platform image): what counts is the host platform's manifest.
        let local_manifest = local.as_ref().and_then(|l| {
            hoist_registry::stored::stored_manifest(&self.store, &l.target, &Platform::host())
                .ok()
                .flatten()
        });
        let resolved = run_async(self.client.resolve_image(&reference, None))?;
        let remote = match resolved {
            Ok(r) => r.manifest.descriptor.digest().to_string(),
            Err(e) => {
                return match local_manifest {
                    Some(local) => {
                        log.line(&format!(
                            "base image {image}: not resolvable in its registry ({e}); using the store's {}",
                            local.digest()
                        ));
                        Ok(local.digest().to_string())
                    }
                    None => Err(BuildFailure::new(format!(
                        "cannot resolve the base image {image}: {e}"
                    ))),
                };
            }
        };
        if local_manifest
            .as_ref()
            .is_some_and(|m| m.digest().to_string() == remote)
        {
            log.line(&format!("base image {image}: {remote} (up to date)"));
            return Ok(remote);
        }
        log.line(&format!("base image {image}: pulling {remote}"));
        let blobs = CacheBlobStore::new(Arc::clone(&self.store))
            .map_err(|e| BuildFailure::new(format!("cannot open the store for a pull: {e}")))?;
        let pulled = run_async(blobs.pull(&self.client, &reference, &PullOptions::default()))?
            .map_err(|e| BuildFailure::new(format!("cannot pull the base image {image}: {e}")))?;
        // A digest reference needs no name: the builder reads it by digest.
        let names: &[&str] = if reference.digest().is_some() {
            &[]
        } else {
            &[image, name.as_str()]
        };
        for n in names {
            // The index when there is one, so other platforms already in
            // the store stay named.
            self.store
                .set_ref(n, pulled.ref_target())
                .map_err(|e| BuildFailure::new(format!("cannot name the base image `{n}`: {e}")))?;
        }
        Ok(pulled.manifest.digest().to_string())
    }

    fn push(&self, tag: &str, manifest: &Descriptor, log: &LogSink) -> Result<(), BuildFailure> {
        let reference = Reference::parse(tag)
            .map_err(|e| BuildFailure::new(format!("invalid tag `{tag}`: {e}")))?;
        let blobs = CacheBlobStore::new(Arc::clone(&self.store))
            .map_err(|e| BuildFailure::new(format!("cannot open the store for a push: {e}")))?;
        log.line(&format!("pushing {reference}"));
        let sink = log.clone();
        let events: hoist_registry::EventSink<PushEvent> =
            Arc::new(move |event: PushEvent| match event {
                PushEvent::BlobExists { descriptor } => {
                    sink.line(&format!("{}: Layer already exists", descriptor.digest()))
                }
                PushEvent::BlobMounted { descriptor, from } => {
                    sink.line(&format!("{}: Mounted from {from}", descriptor.digest()))
                }
                PushEvent::BlobDone { descriptor } => {
                    sink.line(&format!("{}: Pushed", descriptor.digest()))
                }
                PushEvent::Retrying(n) => sink.line(&format!(
                    "retrying {} (attempt {}): {}",
                    n.action,
                    n.attempt + 1,
                    n.error
                )),
                _ => {}
            });
        let pushed = run_async(blobs.push(&self.client, &reference, manifest, Some(events)))?
            .map_err(|e| BuildFailure::new(format!("cannot push {reference}: {e}")))?;
        log.line(&format!(
            "{}: digest: {} size: {}",
            reference.tag().unwrap_or("latest"),
            pushed.descriptor.digest(),
            pushed.descriptor.size()
        ));
        Ok(())
    }
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

/// Run a registry future from a blocking thread: on the current runtime when
/// there is one (the server's), else on a new one.
fn run_async<F: std::future::Future>(future: F) -> Result<F::Output, BuildFailure> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => hoist_registry::block_on(future)
            .map_err(|e| BuildFailure::new(format!("cannot start a runtime: {e}"))),
    }
}

fn build_failure(e: BuildError, log: &LogSink) -> BuildFailure {
    match e {
        BuildError::Step {
            description,
            message,
            log_tail,
            ..
        } => {
            if !log_tail.is_empty() {
                log.line(&format!("------\n > {description}:"));
                for line in &log_tail {
                    log.line(line);
                }
                log.line("------");
            }
            BuildFailure::new(format!("failed to solve: {description}: {message}"))
        }
        BuildError::Dockerfile(text) => BuildFailure::new(text),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            BuildFailure::new(text)
        }
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

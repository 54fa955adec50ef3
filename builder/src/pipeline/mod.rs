//! The one entry point for a build: [`run`] takes a [`Build`] and does
//! everything between the request and the result, for `hoist build` and
//! `hoist autobuild` alike:
//!
//! 1. a lease on the store, held from the first pull to the last tag;
//! 2. the base images resolved and pulled ([`PullPolicy`]);
//! 3. `--cache-from` imported (local directory or registry);
//! 4. the solve ([`crate::engine::build::build`]), its events to the
//!    caller's [`EventSink`];
//! 5. `--cache-to type=inline` written into the image, the outputs
//!    ([`Output`]: names, archives, directories, `docker load`), then
//!    `--cache-to` exported;
//! 6. the lease released and, when the build wrote something, the store
//!    brought under `gc.max-storage`.
//!
//! What happens outside the solve is reported as [`Notice`]s; callers
//! render them (the CLI on its progress display, autobuild in the build
//! log). Nothing here prints.

mod annotation;
mod bases;
mod cache;
mod output;
mod push;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use hoist_cache::{GcReport, LeaseGuard, Store};
use hoist_registry::{Client, PullEvent, PushEvent, RetryNotice};

pub use annotation::parse_annotation;
pub use bases::pull_image;
pub use bases::PullPolicy;
pub use cache::{CacheLocation, CacheSpec, Direction, Moved, INLINE_CACHE_KEY};
pub use output::{familiar, write_file, BoxError, Dest, Output, WriteFileError};
pub use push::{push_event_line, push_image};

use crate::engine::build::{self as engine_build, BuildError, BuildRequest, Built};
use crate::{CancellationToken, EventSink};

/// What to build and where the result goes.
#[derive(Clone, Default)]
pub struct Build {
    /// The Dockerfile, context and build options (its `lease` is the
    /// pipeline's business and is replaced).
    pub request: BuildRequest,
    /// When base images are pulled.
    pub pull: PullPolicy,
    /// Caches imported before the build (`--cache-from`).
    pub cache_from: Vec<CacheSpec>,
    /// Where the build's cache goes (`--cache-to`).
    pub cache_to: Option<CacheSpec>,
    /// Normalised names for the image (`docker.io/library/app:latest`).
    pub tags: Vec<String>,
    /// Names pushed to their registries once named (besides those of an
    /// output with `push=true`).
    pub push: Vec<String>,
    /// Outputs; none (or only [`Output::Load`]) adds [`Output::image`].
    pub outputs: Vec<Output>,
    /// The registry client for pulls and registry caches; `None` makes one
    /// from the environment (registry config files, the docker config's
    /// credentials) when one is first needed.
    pub client: Option<Client>,
}

impl fmt::Debug for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Build")
            .field("request", &self.request)
            .field("pull", &self.pull)
            .field("cache_from", &self.cache_from)
            .field("cache_to", &self.cache_to)
            .field("tags", &self.tags)
            .field("push", &self.push)
            .field("outputs", &self.outputs)
            .field("client", &self.client.as_ref().map(|_| "Client"))
            .finish()
    }
}

/// What [`run`] made.
#[derive(Clone, Debug)]
pub struct BuildResult {
    /// The image (and its index with provenance).
    pub built: Built,
    /// Each base image (normalised name) and the manifest digest it resolved
    /// to, for the platform it was needed for.
    pub bases: BTreeMap<String, String>,
    /// The names pushed, in order.
    pub pushed: Vec<String>,
    /// The collection after the build, when the store was over its cap.
    pub collected: Option<GcReport>,
}

impl BuildResult {
    /// What names point at: the index with provenance, else the manifest.
    pub fn target(&self) -> &hoist_cache::Descriptor {
        self.built.target()
    }
}

/// Something a build did outside the solve, for the user.
#[derive(Clone, Debug)]
pub enum Notice {
    /// A base image is pulled.
    Pulling {
        /// Its normalised name.
        image: String,
        /// For this platform.
        platform: String,
    },
    /// Progress of a base-image pull.
    Pull {
        /// The image.
        image: String,
        /// What happened.
        event: Box<PullEvent>,
    },
    /// A base image was pulled and named.
    Pulled {
        /// The image.
        image: String,
        /// The manifest digest pulled (the platform's).
        digest: String,
    },
    /// The registry's manifest is the store's: nothing pulled
    /// ([`PullPolicy::Always`]).
    BaseUpToDate {
        /// The image.
        image: String,
        /// The manifest digest.
        digest: String,
    },
    /// The registry could not say; the store's image is used (a warning).
    BaseFromStore {
        /// The image.
        image: String,
        /// The store's manifest digest.
        digest: String,
        /// Why the registry could not say.
        error: String,
    },
    /// A base image could not be pulled (a warning: the build then reports
    /// the missing image at its Dockerfile line).
    PullFailed {
        /// The image.
        image: String,
        /// The platform.
        platform: String,
        /// Why.
        error: String,
    },
    /// A `--cache-from` was imported (`None`: an empty registry cache).
    CacheImported {
        /// Where from.
        from: CacheLocation,
        /// What it moved.
        moved: Option<Moved>,
    },
    /// The cache was exported.
    CacheExported {
        /// Where to.
        to: CacheLocation,
        /// What it moved.
        moved: Moved,
    },
    /// The image is pushed to `name`.
    Pushing {
        /// The name.
        name: String,
    },
    /// Progress of a push.
    Push {
        /// The name.
        name: String,
        /// What happened.
        event: Box<PushEvent>,
    },
    /// The registry stored the image under `name`.
    Pushed {
        /// The name.
        name: String,
        /// The digest of what was pushed (manifest or index).
        digest: String,
        /// Its size.
        size: u64,
    },
    /// `docker load` answered (`Loaded image: …`, escaped).
    Loaded(String),
    /// The store was over `gc.max-storage` and was collected.
    Collected(GcReport),
    /// The collection after the build failed; the image is made and named.
    CollectFailed(String),
    /// Something asked for was done otherwise (an output's option
    /// overridden, as BuildKit overrides it).
    Warning(String),
}

impl Notice {
    /// Whether the user should see it even in quiet mode.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Notice::BaseFromStore { .. }
                | Notice::PullFailed { .. }
                | Notice::CollectFailed(_)
                | Notice::Warning(_)
        )
    }
}

impl fmt::Display for Notice {
    /// One line (docker's wording where there is one); a [`Notice::Pull`]
    /// of no interest to a reader (a manifest fetched) is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Pulling { image, .. } => {
                let (repository, tag) = match hoist_registry::Reference::parse(image) {
                    Ok(r) => (
                        r.repository().to_owned(),
                        r.tag().or(r.digest()).unwrap_or("latest").to_owned(),
                    ),
                    Err(_) => (image.clone(), "latest".to_owned()),
                };
                write!(f, "{tag}: Pulling from {repository}")
            }
            Notice::Pull { event, .. } => match pull_event_line(event) {
                Some(line) => f.write_str(&line),
                None => Ok(()),
            },
            Notice::Pulled { image, digest } => {
                write!(f, "base image {}: pulled {digest}", familiar(image))
            }
            Notice::BaseUpToDate { image, digest } => {
                write!(f, "base image {}: {digest} (up to date)", familiar(image))
            }
            Notice::BaseFromStore {
                image,
                digest,
                error,
            } => write!(
                f,
                "warning: base image {}: not resolvable in its registry ({error}); using the \
                 store's {digest}",
                familiar(image)
            ),
            Notice::PullFailed {
                image,
                platform,
                error,
            } => write!(
                f,
                "warning: cannot pull the base image {} for {platform}: {error}",
                familiar(image)
            ),
            Notice::CacheImported { from, moved } => match moved {
                Some(m) => write!(
                    f,
                    "importing cache from {from}: {} records, {} blobs downloaded, {} already here",
                    m.records, m.blobs_transferred, m.blobs_present
                ),
                None => write!(f, "importing cache from {from}: not found (empty cache)"),
            },
            Notice::CacheExported { to, moved } => write!(
                f,
                "exporting cache to {to}: {} records, {} blobs pushed, {} already there",
                moved.records, moved.blobs_transferred, moved.blobs_present
            ),
            Notice::Pushing { name } => write!(f, "pushing {name}"),
            Notice::Push { event, .. } => match push_event_line(event) {
                Some(line) => f.write_str(&line),
                None => Ok(()),
            },
            Notice::Pushed { name, digest, size } => {
                let tag = hoist_registry::Reference::parse(name)
                    .ok()
                    .and_then(|r| r.tag().map(str::to_owned))
                    .unwrap_or_else(|| "latest".to_owned());
                write!(f, "{tag}: digest: {digest} size: {size}")
            }
            Notice::Loaded(text) => f.write_str(text),
            Notice::Collected(report) => write!(
                f,
                "store over gc.max-storage: reclaimed {} ({} now)",
                hoist_untrusted::units::format_size(report.reclaimed),
                hoist_untrusted::units::format_size(report.usage_after)
            ),
            Notice::CollectFailed(error) => write!(f, "warning: {error}"),
            Notice::Warning(message) => write!(f, "warning: {message}"),
        }
    }
}

/// A pull event as `docker pull` shows it (`3f4d90098f5b: Download
/// complete`), for the layers; `None` for what it does not show.
pub fn pull_event_line(event: &PullEvent) -> Option<String> {
    let (descriptor, status) = match event {
        PullEvent::BlobSkipped { descriptor } => (descriptor, "Already exists"),
        PullEvent::BlobStarted { descriptor } => (descriptor, "Pulling fs layer"),
        PullEvent::BlobDone { descriptor } => (descriptor, "Download complete"),
        PullEvent::MirrorFailed { mirror, error } => {
            return Some(format!(
                "mirror {mirror} failed, trying the next source: {error}"
            ))
        }
        PullEvent::Retrying(notice) => return Some(retry_line(notice)),
        _ => return None,
    };
    layer_line(descriptor, status)
}

/// `3f4d90098f5b: STATUS` for a layer; `None` for a config blob (blob events
/// are for the config and the layers; docker shows layers).
fn layer_line(descriptor: &hoist_cache::Descriptor, status: &str) -> Option<String> {
    if descriptor.media_type().to_string().contains("config") {
        return None;
    }
    let digest = descriptor.digest().to_string();
    let hex = digest.split_once(':').map_or(digest.as_str(), |(_, h)| h);
    Some(format!("{}: {status}", &hex[..hex.len().min(12)]))
}

/// A transfer being retried, as pull and push print it.
pub fn retry_line(notice: &RetryNotice) -> String {
    format!(
        "retrying {} (attempt {}) in {:.1}s: {}",
        notice.action,
        notice.attempt + 1,
        notice.delay.as_secs_f64(),
        notice.error
    )
}

/// Why a build pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The solve failed (a Dockerfile error, a failed step, cancelled).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A flag or config value is wrong (escaped, named).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("failed to {action}")]
    Store {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: hoist_cache::Error,
    },
    /// A registry transfer failed.
    #[error("failed to {action}")]
    Registry {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: Box<hoist_registry::RegistryError>,
    },
    /// `--load` failed.
    #[error("--load: {0}")]
    Load(String),
    /// Something else failed (writing an output, opening a store view).
    #[error("failed to {action}")]
    Other {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where notices go; cheap to clone.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// The client of a build, made when first needed.
pub(crate) struct RegistryClient {
    given: Option<Client>,
    made: OnceLock<Result<Client, String>>,
}

impl RegistryClient {
    fn new(given: Option<Client>) -> RegistryClient {
        RegistryClient {
            given,
            made: OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> Result<&Client, PipelineError> {
        if let Some(client) = &self.given {
            return Ok(client);
        }
        self.made
            .get_or_init(|| {
                Client::from_environment().map_err(|e| hoist_untrusted::text::error_chain(&e))
            })
            .as_ref()
            .map_err(|e| {
                PipelineError::Invalid(format!("failed to set up the registry client: {e}"))
            })
    }
}

/// What a multi-platform build (or one written as an index) cannot do,
/// refused before anything runs, as buildx refuses it.
fn check_multi_platform(build: &Build, outputs: &[Output]) -> Result<(), PipelineError> {
    let request = &build.request;
    if request.is_multi_platform() {
        let platforms: Vec<String> = request.platforms.iter().map(|p| p.to_string()).collect();
        let list = platforms.join(", ");
        for output in outputs {
            let what = match output {
                Output::Docker { .. } => "-o type=docker",
                Output::Load => "--load",
                _ => continue,
            };
            // buildx's docker exporter says the same without the containerd
            // image store: a docker archive holds no index.
            return Err(PipelineError::Invalid(format!(
                "{what}: docker exporter does not currently support exporting manifest lists \
                 ({list}); write the index with -o type=oci,dest=FILE or push it with --push, \
                 or build one platform"
            )));
        }
    }
    let inline = matches!(
        build.cache_to,
        Some(CacheSpec {
            location: CacheLocation::Inline,
            ..
        })
    );
    let index = request.is_multi_platform()
        || request.repro.provenance
        || request.annotations.iter().any(|a| a.target.needs_index());
    if inline && index {
        return Err(PipelineError::Invalid(
            "--cache-to type=inline cannot be combined with an image index (a provenance \
             attestation, several platforms, index or descriptor annotations) yet"
                .into(),
        ));
    }
    Ok(())
}

/// Builds `build` into the store: see the module documentation for the
/// steps. `events` receives the solve's events, `notify` the rest.
pub fn run(
    store: Arc<Store>,
    build: Build,
    events: EventSink,
    notify: Notify,
    cancel: &CancellationToken,
) -> Result<BuildResult, PipelineError> {
    // `--load` alone names the image too, as no output at all does.
    let mut outputs = build.outputs.clone();
    if outputs.iter().all(|o| matches!(o, Output::Load)) {
        outputs.insert(0, Output::image());
    }
    // Before `check`: a multi-platform `--load` is refused for what it is,
    // not for a missing daemon.
    check_multi_platform(&build, &outputs)?;
    for output in &outputs {
        output.check()?;
        if let Output::Image {
            names, push: true, ..
        } = output
        {
            if names.is_empty() && build.tags.is_empty() {
                return Err(PipelineError::Invalid(
                    "a name is needed to push to a registry: give -t NAME or -o \
                     type=registry,name=NAME"
                        .into(),
                ));
            }
        }
    }
    let client = RegistryClient::new(build.client.clone());
    // From the first pull to the last name: a concurrent prune keeps what
    // this build pulls, imports and makes.
    let lease = LeaseGuard::take(&store, "build").map_err(|source| PipelineError::Store {
        action: "take a lease on the store".into(),
        source,
    })?;
    let layout_blobs = crate::engine::named::import_layouts(&store, &build.request.named_contexts)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    store
        .lease_blobs(lease.lease(), &layout_blobs)
        .map_err(|source| PipelineError::Store {
            action: "lease the blobs of --build-context oci-layout://".into(),
            source,
        })?;
    let bases = bases::ensure(&store, &client, &build.request, build.pull, &notify)?;
    for spec in &build.cache_from {
        let moved = cache::import(&store, &client, spec)?;
        notify(Notice::CacheImported {
            from: spec.location.clone(),
            moved,
        });
    }
    // Steps write what the image outputs ask for when they all agree, so
    // that a zstd export does not compress twice.
    let layer_compression = crate::engine::convert::step_compression(
        outputs
            .iter()
            .filter(|o| !matches!(o, Output::Local(_) | Output::Tar(_)))
            .map(Output::format),
    );
    // A cache export may take any step's layer (`mode=max`) and sends it
    // as it is: with one, every step writes its blob as the image's do.
    let intermediate_blob = build
        .cache_to
        .is_none()
        .then_some(crate::engine::LayerBlob::Lazy);
    let request = BuildRequest {
        lease: Some(lease.lease().clone()),
        layer_compression,
        intermediate_blob,
        ..build.request
    };
    let built = engine_build::build(Arc::clone(&store), &request, events, cancel)?;
    if cancel.is_cancelled() {
        return Err(BuildError::Cancelled.into());
    }
    let built = match &build.cache_to {
        Some(CacheSpec {
            location: CacheLocation::Inline,
            ..
        }) => cache::inline(&store, built)?,
        _ => built,
    };
    // Each name is pushed what it names in the store: an image output's
    // target is the image in the layer format it asked for.
    let mut push_targets = Vec::new();
    let mut tags_target = None;
    for output in &outputs {
        let named = output.write(&store, &built, &build.tags, &notify, Some(lease.lease()))?;
        if let (Output::Image { names, push, .. }, Some(target)) = (output, named) {
            if *push {
                for name in build.tags.iter().chain(names) {
                    push_targets.push((name.clone(), target.clone()));
                }
            }
            tags_target.get_or_insert(target);
        }
    }
    let tags_target = tags_target.unwrap_or_else(|| built.target().clone());
    let mut all = build
        .push
        .iter()
        .map(|name| (name.clone(), tags_target.clone()))
        .collect::<Vec<_>>();
    all.extend(push_targets);
    let mut pushed: Vec<String> = Vec::new();
    for (name, target) in all {
        if pushed.contains(&name) {
            continue;
        }
        push::push_image(&store, client.get()?, &name, &target, &notify)?;
        pushed.push(name);
    }
    if let Some(spec) = &build.cache_to {
        if let Some(moved) = cache::export(&store, &client, spec, &built)? {
            notify(Notice::CacheExported {
                to: spec.location.clone(),
                moved,
            });
        }
    }
    drop(lease);
    let mut collected = None;
    if built.executed > 0 {
        // The image is made and named: a failed collection is a warning.
        match crate::engine::gc::after_build(&store) {
            Ok(Some(report)) => {
                notify(Notice::Collected(report.clone()));
                collected = Some(report);
            }
            Ok(None) => {}
            Err(e) => notify(Notice::CollectFailed(format!(
                "failed to collect garbage after the build: {}",
                hoist_untrusted::text::error_chain(&e)
            ))),
        }
    }
    Ok(BuildResult {
        built,
        bases,
        pushed,
        collected,
    })
}

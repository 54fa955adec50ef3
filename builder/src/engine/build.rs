//! One `hoist build`: Dockerfile → frontend graph → solver graph → solve →
//! image in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use hoist_cache::Store;
use hoist_frontend::dockerignore::Matcher;
use hoist_frontend::graph::{
    BuildGraph as FrontendGraph, Healthcheck, ImageConfig, NetworkMode, Op as GraphOp, Platform,
};
use hoist_frontend::{BuildOptions, ImageResolver, ResolvedImage};
use serde_json::Value;

use super::artifact::{Artifact, Layer};
use super::assemble::{assemble, Annotation, AnnotationTarget, Assembled};
use super::index::StoreCacheIndex;
use super::ops::{ContextOp, ExecStep, FileStep, ImageOp, ProcessFailed, ScratchOp};
use super::{Engine, EngineError, LayerBlob, LocalContext};
use crate::graph::{BuildGraph, SourceLine, VertexId, VertexMeta};
use crate::op::Op;
use crate::progress::{Event, EventSink};
use crate::solver::{SolveError, Solver, VertexOutcome};
use crate::CancellationToken;

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name in messages (`Dockerfile`).
    pub dockerfile_name: String,
    /// The context directory.
    pub context_dir: PathBuf,
    /// The `.dockerignore` text, if the caller found one; `None` reads
    /// `<context>/.dockerignore` when it exists.
    pub dockerignore: Option<String>,
    /// Build args and target.
    pub options: BuildOptions,
    /// Ignore the cache for every step.
    pub no_cache: bool,
    /// Ignore the cache for these stages' steps.
    pub no_cache_filter: Vec<String>,
    /// `--label` values, over the Dockerfile's.
    pub labels: BTreeMap<String, String>,
    /// `--network`, for steps that do not choose.
    pub network: Option<NetworkMode>,
    /// Steps run at once (default: the number of cores).
    pub jobs: Option<usize>,
    /// Memory limit of RUN steps, in bytes.
    pub memory: Option<u64>,
    /// CPU limit of RUN steps.
    pub cpus: Option<f64>,
    /// `--add-host`, `--shm-size` and `--ulimit` of RUN steps.
    pub step_options: hoist_runner::StepOptions,
    /// `--annotation`s: of the image manifests, the index, their descriptors.
    pub annotations: Vec<super::assemble::Annotation>,
    /// `--platform A,B,…`: with more than one, every platform is built in
    /// one solve (steps that are the same for several platforms run once)
    /// into one image index ([`Built::platforms`]). Empty or one: the
    /// platform of `options`.
    pub platforms: Vec<Platform>,
    /// Creation time of the image, seconds since the epoch (default: now).
    pub created: Option<i64>,
    /// The lease that protects what this build uses and makes from garbage
    /// collection until the caller has tagged the image and released it.
    pub lease: Option<hoist_cache::Lease>,
    /// How steps compress the layers they make: what the outputs ask for
    /// when they agree (`convert::step_compression`), gzip by default.
    pub layer_compression: hoist_snapshotter::Compression,
    /// What steps whose layers the image does not hold (a stage only copied
    /// from or mounted) keep of them besides their snapshots; `None`: a blob
    /// in `layer_compression`. Nothing outside the store reads those layers
    /// unless a cache export takes them, and a later build that puts one in
    /// its image writes and converts it before assembling the image, so the
    /// pipeline asks for no blob at all ([`LayerBlob::Lazy`]) when it
    /// exports no cache.
    pub intermediate_blob: Option<LayerBlob>,
    /// Work out why each step that runs missed the cache, into this (see
    /// [`crate::explain`]).
    pub explain: Option<Arc<crate::explain::Explanations>>,
    /// `--secret` sources by id (for `RUN --mount=type=secret`).
    pub secrets: BTreeMap<String, super::mounts::SecretSource>,
    /// `--ssh` agents or key files by id (for `RUN --mount=type=ssh`).
    pub ssh: BTreeMap<String, Vec<PathBuf>>,
    /// SOURCE_DATE_EPOCH, `--reproducible`, `--provenance`.
    pub repro: super::reproducible::ReproOptions,
    /// Entitlements granted with `--allow` (`security.insecure`, `network.host`).
    pub allow: Vec<String>,
    /// `--build-context NAME=VALUE`, by key (see [`super::named`]).
    pub named_contexts: super::named::NamedContexts,
}

impl BuildRequest {
    /// Whether several platforms are built into one index.
    pub fn is_multi_platform(&self) -> bool {
        self.platforms.len() > 1
    }

    /// The options of each platform built, in order: one per entry of
    /// `platforms`, else `options` alone.
    pub fn platform_options(&self) -> Vec<BuildOptions> {
        if self.platforms.is_empty() {
            return vec![self.options.clone()];
        }
        self.platforms
            .iter()
            .map(|p| BuildOptions {
                platform: Some(p.clone()),
                ..self.options.clone()
            })
            .collect()
    }
}

/// One platform's image of a multi-platform build.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    /// The platform (the target stage's).
    pub platform: Platform,
    /// Its image.
    pub image: Assembled,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
}

/// What a build made.
#[derive(Clone, Debug)]
pub struct Built {
    /// The image (of a multi-platform build, the first platform's).
    pub image: Assembled,
    /// The index holding the image(s), with `--provenance` their
    /// attestations: made for several platforms, provenance, and `index` or
    /// descriptor annotations (what refs should point at).
    pub index: Option<hoist_cache::Descriptor>,
    /// Every platform's image of a multi-platform build, in `--platform`
    /// order; empty for a single platform (`image` is it).
    pub platforms: Vec<PlatformImage>,
    /// The RUN/COPY/ADD steps of a multi-platform build that several
    /// platforms share (a BUILDPLATFORM stage's, COPY on scratch): run or
    /// found in the cache once. Their progress names, in build order.
    pub shared_steps: Vec<String>,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
    /// How many steps ran and how many came from the cache.
    pub executed: usize,
    /// Steps that hit the cache.
    pub cached: usize,
    /// Keys of the cache records this build hit or made (for `--cache-to`).
    pub cache_records: Vec<String>,
    /// Compressed size of the layer each RUN/COPY/ADD step made (or found in
    /// the cache), for the build summary.
    pub layer_sizes: BTreeMap<VertexId, u64>,
}

impl Built {
    /// What refs should point at: the index when there is one, else the manifest.
    pub fn target(&self) -> &hoist_cache::Descriptor {
        self.index.as_ref().unwrap_or(&self.image.manifest)
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong (rendered with file, line and caret).
    #[error("{0}")]
    Dockerfile(String),
    /// A step failed.
    #[error("failed to solve: {description}: {message}")]
    Step {
        /// `Dockerfile:7: RUN make`.
        description: String,
        /// The error and its causes.
        message: String,
        /// The last lines of its output.
        log_tail: Vec<String>,
        /// The exit code of a failed RUN.
        exit_code: Option<i32>,
    },
    /// The build was cancelled.
    #[error("build cancelled")]
    Cancelled,
    /// Something else failed (store, snapshots, solver).
    #[error("failed to build")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<EngineError> for BuildError {
    fn from(e: EngineError) -> Self {
        BuildError::Other(Box::new(e))
    }
}

/// Resolves base images in the local store.
pub struct StoreResolver {
    store: Arc<Store>,
}

impl StoreResolver {
    /// A resolver over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        StoreResolver { store }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

/// The frontend's view of a Docker/OCI config document.
pub fn frontend_config(config: &Value) -> ImageConfig {
    let c = &config["config"];
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    ImageConfig {
        env: strings(&c["Env"]).unwrap_or_default(),
        cmd: strings(&c["Cmd"]),
        entrypoint: strings(&c["Entrypoint"]),
        working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_owned(),
        user: c["User"].as_str().unwrap_or_default().to_owned(),
        labels: c["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        exposed_ports: keys(&c["ExposedPorts"]).into_iter().collect(),
        volumes: keys(&c["Volumes"]).into_iter().collect(),
        stop_signal: c["StopSignal"].as_str().unwrap_or_default().to_owned(),
        healthcheck: c["Healthcheck"].as_object().map(|h| Healthcheck {
            test: strings(&h["Test"]).unwrap_or_default(),
            interval: h["Interval"].as_u64().unwrap_or(0),
            timeout: h["Timeout"].as_u64().unwrap_or(0),
            start_period: h["StartPeriod"].as_u64().unwrap_or(0),
            start_interval: h["StartInterval"].as_u64().unwrap_or(0),
            retries: h["Retries"].as_u64().unwrap_or(0) as u32,
        }),
        shell: strings(&c["Shell"]).unwrap_or_default(),
        on_build: strings(&c["OnBuild"]).unwrap_or_default(),
        args_escaped: c["ArgsEscaped"].as_bool().unwrap_or(false),
        author: config["author"].as_str().unwrap_or_default().to_owned(),
    }
}

impl ImageResolver for StoreResolver {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>> {
        match self.lookup(reference, platform)? {
            Ok(image) => Ok(Some(image)),
            Err(absent) => Err(absent.message.into()),
        }
    }
}

/// Why the store could not give an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    /// For the user, naming the image and what to do.
    pub message: String,
    /// The store holds the name, for other platforms only.
    pub other_platforms: bool,
}

impl StoreResolver {
    /// The image from the store; `Ok(Err(absent))` when the store does not
    /// hold it for the platform (a dry run goes on without it), `Err` when
    /// the store cannot be read.
    pub(crate) fn lookup(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Result<ResolvedImage, Absent>, Box<dyn std::error::Error + Send + Sync>> {
        let wanted = registry_platform(platform);
        let missing = || Absent {
            message: format!(
                "image {reference} is not in the store (`hoist pull` or `hoist import` it first)"
            ),
            other_platforms: false,
        };
        // (name, the manifest for the platform, what the name points at)
        let (name, found, target) = match reference.split_once('@') {
            Some((name, digest)) => {
                let digest = digest.parse()?;
                if !self.store.content().contains(&digest) {
                    return Ok(Err(missing()));
                }
                let found =
                    hoist_registry::stored_manifest_by_digest(&self.store, &digest, &wanted)?;
                (name.to_owned(), found, None)
            }
            None => {
                let Some(r) = self.store.get_ref(reference)? else {
                    return Ok(Err(missing()));
                };
                let found = hoist_registry::stored_manifest(&self.store, &r.target, &wanted)?;
                (reference.to_owned(), found, Some(r.target))
            }
        };
        let Some(manifest_descriptor) = found else {
            let held = target
                .map(|t| hoist_registry::stored_platforms(&self.store, &t))
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            let held = if held.is_empty() {
                String::new()
            } else {
                format!(" (it holds {})", held.join(", "))
            };
            return Ok(Err(Absent {
                message: format!(
                    "the store has no {wanted} image of {reference}{held}: `hoist pull --platform {wanted} {reference}`"
                ),
                other_platforms: true,
            }));
        };
        let manifest_digest = manifest_descriptor.digest().to_string();
        let manifest = self.store.read_manifest(manifest_descriptor.digest())?;
        let config: Value =
            serde_json::from_slice(&self.store.content().read_blob(manifest.config().digest())?)?;
        Ok(Ok(ResolvedImage {
            reference: format!("{name}@{manifest_digest}"),
            config: frontend_config(&config),
            empty: manifest.layers().is_empty(),
        }))
    }
}

/// The frontend's platform with the registry's normalization and matching
/// rules (`arm` means `arm/v7`, arm64's `v8` is its default).
pub fn registry_platform(platform: &Platform) -> hoist_registry::Platform {
    hoist_registry::Platform::new(
        &platform.os,
        &platform.architecture,
        platform.variant.as_deref().unwrap_or(""),
    )
}

/// Parses and lowers the Dockerfile (what `--dry-run` prints), resolving base
/// images in the store.
pub fn plan(store: Arc<Store>, request: &BuildRequest) -> Result<FrontendGraph, BuildError> {
    lower_with(request, &StoreResolver::new(store))
}

/// Parses and lowers the Dockerfile, base images from `resolver`.
pub(crate) fn lower_with(
    request: &BuildRequest,
    resolver: &dyn ImageResolver,
) -> Result<FrontendGraph, BuildError> {
    lower_options(request, &request.options, resolver)
}

/// [`lower_with`] for `options` (one platform of the request).
fn lower_options(
    request: &BuildRequest,
    options: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<FrontendGraph, BuildError> {
    let ast = hoist_frontend::parse(&request.dockerfile)
        .map_err(|e| BuildError::Dockerfile(e.render(&request.dockerfile_name)))?;
    // The request's named contexts, for whichever platform's options.
    let mut options = options.clone();
    options
        .named_contexts
        .extend(super::named::frontend_contexts(&request.named_contexts));
    hoist_frontend::lower(&ast, &options, resolver).map_err(|e| {
        // The causes belong to the message line, above the quoted line and
        // its caret.
        let rendered = e.render(&request.dockerfile_name);
        let (first, rest) = rendered.split_once('\n').unwrap_or((&rendered, ""));
        let mut text = first.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if !rest.is_empty() {
            text.push('\n');
            text.push_str(rest);
        }
        BuildError::Dockerfile(text)
    })
}

/// The frontend's options of `request`: its own with the named contexts.
pub fn frontend_options(request: &BuildRequest) -> BuildOptions {
    let mut options = request.options.clone();
    options
        .named_contexts
        .extend(super::named::frontend_contexts(&request.named_contexts));
    options
}

/// The images the target's stages start from or copy from (normalised
/// references, `docker.io/library/busybox:latest`), in the order the
/// frontend asks for them, without looking in any store: what a caller must
/// pull before [`build`] (stage names and `scratch` are not images).
pub fn base_images(
    dockerfile: &str,
    dockerfile_name: &str,
    options: &BuildOptions,
) -> Result<Vec<String>, BuildError> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in base_images_for_platforms(dockerfile, dockerfile_name, options)? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// [`base_images`] with the platform each is needed for (a stage's `FROM
/// --platform`, else `--platform`, else the host's): one pair per image and
/// platform.
pub fn base_images_for_platforms(
    dockerfile: &str,
    dockerfile_name: &str,
    options: &BuildOptions,
) -> Result<Vec<(String, Platform)>, BuildError> {
    let ast = hoist_frontend::parse(dockerfile)
        .map_err(|e| BuildError::Dockerfile(e.render(dockerfile_name)))?;
    let recorder = Recorder::default();
    hoist_frontend::lower(&ast, options, &recorder)
        .map_err(|e| BuildError::Dockerfile(e.render(dockerfile_name)))?;
    Ok(recorder
        .seen
        .into_inner()
        .unwrap_or_else(|p| p.into_inner()))
}

/// An [`ImageResolver`] that only writes down what it is asked for.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<(String, Platform)>>,
}

impl ImageResolver for Recorder {
    fn resolve(
        &self,
        reference: &str,
        platform: &hoist_frontend::graph::Platform,
    ) -> Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.iter().any(|(s, p)| s == reference && p == platform) {
            seen.push((reference.to_string(), platform.clone()));
        }
        // No configs: only the names are wanted.
        Ok(None)
    }
}

/// Names of the vertices of a stage: the chain of roots from the stage's root
/// down to where another stage or a source begins.
fn stage_vertices(graph: &FrontendGraph, stage_root: usize, stop: &HashSet<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut vertex = stage_root;
    loop {
        out.push(vertex);
        let v = &graph.vertices[vertex];
        let next = match &v.op {
            GraphOp::Exec(e) => Some(v.inputs[e.root]),
            GraphOp::File(f) => f.root.map(|r| v.inputs[r]),
            GraphOp::Merge => v.inputs.first().copied(),
            _ => None,
        };
        match next {
            Some(n) if !stop.contains(&n) => vertex = n,
            _ => return out,
        }
    }
}

/// The platform of each stage's own vertices (those of its chain of roots).
fn vertex_platforms(graph: &FrontendGraph) -> HashMap<usize, Platform> {
    let roots: HashSet<usize> = graph.stages.iter().map(|s| s.root).collect();
    let mut out = HashMap::new();
    for stage in &graph.stages {
        let stop: HashSet<usize> = roots.iter().copied().filter(|r| *r != stage.root).collect();
        for v in stage_vertices(graph, stage.root, &stop) {
            out.entry(v).or_insert_with(|| stage.platform.clone());
        }
    }
    out
}

/// What errors call a vertex: its Dockerfile line and instruction when it
/// has one, else the instruction alone.
fn described(meta: VertexMeta, file: &str, graph: &FrontendGraph, vertex: usize) -> VertexMeta {
    let v = &graph.vertices[vertex];
    let instruction = match v.name.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(v.name.as_str(), |(_, i)| i),
        None => v.name.as_str(),
    };
    match v.span {
        Some(span) => meta.with_source(SourceLine {
            file: file.to_owned(),
            line: span.start.line as u64,
            instruction: instruction.to_owned(),
        }),
        None => meta.with_description(instruction),
    }
}

/// A cache hit does not look at its inputs, so the solver reports nothing for
/// them; users (and `docker build` habits) expect every step of the build to be
/// listed. This sink reports a hit's unreported inputs as cached first, inputs
/// before consumers, except those that ignore the cache (they run on their own).
fn cached_ancestors(
    graph: &BuildGraph<Artifact>,
    ids: &[VertexId],
    ignore_cache: &HashSet<usize>,
    events: EventSink,
) -> EventSink {
    let position: HashMap<VertexId, usize> = ids.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let inputs: HashMap<VertexId, Vec<VertexId>> = ids
        .iter()
        .map(|v| {
            (
                *v,
                graph
                    .vertex(*v)
                    .map(|x| x.inputs().to_vec())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let names: HashMap<VertexId, String> = ids
        .iter()
        .map(|v| {
            (
                *v,
                graph
                    .vertex(*v)
                    .map(|x| x.meta().name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let skip: HashSet<VertexId> = ignore_cache.iter().map(|i| ids[*i]).collect();
    let seen = std::sync::Mutex::new(HashSet::<VertexId>::new());
    EventSink::new(move |event| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        match &event {
            Event::VertexCached { vertex, .. } => {
                let mut todo = vec![*vertex];
                let mut found = Vec::new();
                while let Some(v) = todo.pop() {
                    for input in inputs.get(&v).into_iter().flatten() {
                        if !seen.contains(input) && !skip.contains(input) && !found.contains(input)
                        {
                            found.push(*input);
                            todo.push(*input);
                        }
                    }
                }
                found.sort_by_key(|v| position.get(v).copied().unwrap_or(0));
                for v in found {
                    seen.insert(v);
                    events.emit(Event::VertexCached {
                        vertex: v,
                        name: names.get(&v).cloned().unwrap_or_default(),
                    });
                }
                seen.insert(*vertex);
            }
            Event::VertexStarted { vertex, .. } => {
                seen.insert(*vertex);
            }
            _ => {}
        }
        drop(seen);
        events.emit(event);
    })
}

/// Which vertices ignore the cache, and why (`--no-cache`,
/// `--no-cache-filter build`).
fn ignore_cache_reasons(
    frontend: &FrontendGraph,
    request: &BuildRequest,
) -> HashMap<usize, String> {
    let mut ignore_cache = HashMap::new();
    if request.no_cache {
        for i in 0..frontend.vertices.len() {
            ignore_cache.insert(i, "--no-cache".to_owned());
        }
    } else if !request.no_cache_filter.is_empty() {
        let roots: HashSet<usize> = frontend.stages.iter().map(|s| s.root).collect();
        for stage in &frontend.stages {
            let named = request.no_cache_filter.iter().find(|f| {
                stage.name.as_deref() == Some(f.to_lowercase().as_str())
                    || f.parse::<usize>().ok() == Some(stage.index)
            });
            if let Some(filter) = named {
                let stop: HashSet<usize> =
                    roots.iter().copied().filter(|r| *r != stage.root).collect();
                for v in stage_vertices(frontend, stage.root, &stop) {
                    ignore_cache.insert(v, format!("--no-cache-filter {filter}"));
                }
            }
        }
    }
    ignore_cache
}

fn ignore_matcher(request: &BuildRequest) -> Result<Matcher, BuildError> {
    let ignore_text = match &request.dockerignore {
        Some(text) => text.clone(),
        None => {
            std::fs::read_to_string(request.context_dir.join(".dockerignore")).unwrap_or_default()
        }
    };
    Matcher::parse(&ignore_text).map_err(|e| BuildError::Dockerfile(format!(".dockerignore: {e}")))
}

/// `hoist build --dry-run --explain`: for each step the target needs, in
/// order, `None` when it will likely come from the cache, or why it will run
/// (`dry` is [`super::dryrun::dry_run`]'s plan).
pub fn predict(
    store: Arc<Store>,
    request: &BuildRequest,
    dry: &super::dryrun::DryRun,
) -> Result<Vec<(String, Option<String>)>, BuildError> {
    let unresolved = super::dryrun::on_unresolved(dry);
    let frontend = &dry.graph;
    let explainer = crate::explain::Explainer::new(
        store,
        frontend,
        &request.context_dir,
        dockerfile_name(request),
        ignore_matcher(request)?,
        &[],
        ignore_cache_reasons(frontend, request),
    )
    .with_named_contexts(named_locals(request)?);
    let mut needed = HashSet::new();
    let mut todo = vec![frontend.target_stage().root];
    while let Some(v) = todo.pop() {
        if needed.insert(v) {
            todo.extend(frontend.vertices[v].inputs.iter().copied());
        }
    }
    let mut needed: Vec<usize> = needed.into_iter().collect();
    needed.sort();
    let mut predicted = explainer.predict(&needed);
    // Nothing built on an image the store lacks can come from the cache.
    for (i, p) in needed.iter().zip(predicted.iter_mut()) {
        if unresolved[*i] {
            p.1 = Some("base image unresolved".to_owned());
        }
    }
    Ok(predicted)
}

/// The named directory contexts of `request` with their ignore rules.
fn named_locals(request: &BuildRequest) -> Result<Vec<(String, LocalContext)>, BuildError> {
    super::named::local_contexts(&request.named_contexts)
        .map_err(|e| BuildError::Dockerfile(e.to_string()))
}

fn dockerfile_name(request: &BuildRequest) -> &str {
    if request.dockerfile_name.is_empty() {
        "Dockerfile"
    } else {
        request.dockerfile_name.as_str()
    }
}

/// One platform of a build: its lowered graph and where its vertices are
/// in the solve.
struct PlatformPlan {
    frontend: FrontendGraph,
    /// The solver vertex of each frontend vertex.
    ids: Vec<VertexId>,
    /// Why frontend vertices ignore the cache.
    ignore_reasons: HashMap<usize, String>,
}

/// `[build 2/3] RUN make` of a multi-platform build: `[linux/arm64 build
/// 2/3] RUN make`, as BuildKit names it. A `FROM --platform=$BUILDPLATFORM`
/// stage has the same platform (and name) in every platform's graph, so
/// its steps are one vertex of the solve.
fn platform_name(name: &str, platform: Option<&Platform>) -> String {
    match (name.strip_prefix('['), platform) {
        (Some(rest), Some(platform)) if !name.starts_with("[internal]") => {
            format!("[{platform} {rest}")
        }
        _ => name.to_owned(),
    }
}

/// The vertices whose layers the target stage's image holds: down its
/// root filesystem (a RUN's root, a file op's root, both sides of a
/// `COPY --link` merge) to the base. A stage only copied from or mounted
/// is not among them.
fn image_layer_vertices(frontend: &FrontendGraph) -> HashSet<usize> {
    let mut found = HashSet::new();
    let mut todo = vec![frontend.target_stage().root];
    while let Some(v) = todo.pop() {
        if !found.insert(v) {
            continue;
        }
        let vertex = &frontend.vertices[v];
        match &vertex.op {
            GraphOp::Exec(e) => todo.extend(vertex.inputs.get(e.root)),
            GraphOp::File(f) => todo.extend(f.root.and_then(|r| vertex.inputs.get(r))),
            GraphOp::Merge => todo.extend(&vertex.inputs),
            _ => {}
        }
    }
    found
}

/// The vertices whose layers a `COPY --link` merge stacks on another chain
/// than the one they were made on (every input but the first, which stays
/// the chain's start): that chain's snapshot is made from their blobs, so
/// they cannot be lazy.
fn restacked_vertices(frontend: &FrontendGraph) -> HashSet<usize> {
    frontend
        .vertices
        .iter()
        .filter(|v| matches!(v.op, GraphOp::Merge))
        .flat_map(|v| v.inputs.iter().skip(1).copied())
        .collect()
}

/// What makes two vertices of a build the same vertex: the op's
/// definition, and its inputs (already merged) with what it selects of each
/// (the solver's definition digest, over vertices instead of digests).
type VertexKey = (
    crate::digest::Digest,
    Vec<(VertexId, Option<crate::digest::Digest>)>,
);

/// Adds the vertices of `frontend` to `graph`; returns the solver vertex of
/// each. A vertex the same as one already added (another platform's: a
/// BUILDPLATFORM stage, the context, COPY on scratch) is not added again:
/// `merged` finds it, and the platforms share it.
fn add_vertices(
    graph: &mut BuildGraph<Artifact>,
    merged: &mut HashMap<VertexKey, VertexId>,
    frontend: &FrontendGraph,
    request: &BuildRequest,
    engine: &Arc<Engine>,
    ignore_cache: &HashSet<usize>,
    multi_platform: bool,
) -> Result<Vec<VertexId>, BuildError> {
    let file = dockerfile_name(request);
    let platforms = vertex_platforms(frontend);
    let in_image = image_layer_vertices(frontend);
    let restacked = restacked_vertices(frontend);
    let mut ids: Vec<VertexId> = Vec::with_capacity(frontend.vertices.len());
    for (i, v) in frontend.vertices.iter().enumerate() {
        let blob = match request.intermediate_blob {
            // Its layer goes on another chain, made from the blob.
            Some(LayerBlob::Lazy) if restacked.contains(&i) && !in_image.contains(&i) => {
                LayerBlob::Written(hoist_snapshotter::Compression::Zstd)
            }
            Some(other) if !in_image.contains(&i) => other,
            _ => LayerBlob::Written(request.layer_compression),
        };
        let op: Arc<dyn Op<Artifact>> = match &v.op {
            GraphOp::Scratch => Arc::new(ScratchOp),
            GraphOp::Image { reference, .. } => Arc::new(ImageOp {
                reference: reference.clone(),
                engine: engine.clone(),
            }),
            GraphOp::Context { name, paths } => Arc::new(ContextOp {
                name: name.clone(),
                paths: paths.clone(),
                engine: engine.clone(),
            }),
            GraphOp::File(f) => Arc::new(FileStep {
                op: f.clone(),
                engine: engine.clone(),
                blob,
            }),
            GraphOp::Merge => Arc::new(super::ops::MergeOp),
            GraphOp::Exec(e) => Arc::new(ExecStep {
                op: e.clone(),
                network: request.network,
                platform: platforms.get(&i).cloned().unwrap_or_else(Platform::host),
                engine: engine.clone(),
                blob,
            }),
            GraphOp::Git {
                url,
                reference,
                keep_git_dir,
            } => Arc::new(super::ops::GitOp::new(
                url.clone(),
                reference.clone(),
                *keep_git_dir,
                engine.clone(),
                blob,
            )),
            GraphOp::Http {
                url,
                checksum,
                filename,
            } => Arc::new(super::ops::HttpOp::new(
                url.clone(),
                checksum.clone(),
                filename.clone(),
                engine.clone(),
                blob,
            )),
        };
        // Layers of file ops and RUN get their mtimes clamped: the epoch is
        // part of their result, so of their cache key.
        let op = match (&v.op, request.repro.source_date_epoch) {
            (GraphOp::File(_) | GraphOp::Exec(_), Some(epoch)) => {
                Arc::new(super::reproducible::EpochOp::new(op, epoch))
            }
            _ => op,
        };
        let name = match &v.op {
            GraphOp::Context { name, .. } if name == "context" => {
                "[internal] load build context".to_owned()
            }
            _ if multi_platform => platform_name(&v.name, platforms.get(&i)),
            _ => v.name.clone(),
        };
        let meta = described(VertexMeta::new(name), file, frontend, i)
            .with_ignore_cache(ignore_cache.contains(&i));
        let inputs: Vec<VertexId> = v.inputs.iter().map(|x| ids[*x]).collect();
        let key: VertexKey = (
            op.definition().digest(),
            inputs
                .iter()
                .enumerate()
                .map(|(k, input)| (*input, op.selector(k).map(|s| s.digest())))
                .collect(),
        );
        if let Some(&id) = merged.get(&key).filter(|_| multi_platform) {
            // One copy bypassing the cache bypasses it for all.
            if meta.ignore_cache {
                graph
                    .set_ignore_cache(id, true)
                    .map_err(|e| BuildError::Other(Box::new(e)))?;
            }
            ids.push(id);
            continue;
        }
        let id = graph
            .add_shared(op, &inputs, meta)
            .map_err(|e| BuildError::Other(Box::new(e)))?;
        merged.insert(key, id);
        ids.push(id);
    }
    Ok(ids)
}

/// The explainers of every platform as one: a solver vertex belongs to one
/// platform's graph (a merged vertex to the one whose copy the solver
/// kept).
struct Explainers(Vec<Arc<crate::explain::Explainer>>);

impl Explainers {
    fn explain(&self, vertex: VertexId) -> Option<crate::explain::Explanation> {
        self.0.iter().find_map(|e| e.explain(vertex))
    }
}

impl super::index::StepRecorder for Explainers {
    fn step_of(&self, vertex: VertexId) -> Option<(String, Vec<u8>)> {
        self.0.iter().find_map(|e| e.step_of(vertex))
    }
}

/// A `manifest[PLATFORM]:` annotation for a platform the build does not
/// make is a mistake: refused before anything runs, naming the platforms.
fn check_annotation_platforms(
    request: &BuildRequest,
    plans: &[FrontendGraph],
) -> Result<(), BuildError> {
    let built: Vec<&Platform> = plans.iter().map(|f| &f.target_stage().platform).collect();
    for annotation in &request.annotations {
        let Some(wanted) = &annotation.platform else {
            continue;
        };
        if !built
            .iter()
            .any(|p| super::assemble::same_platform(wanted, p))
        {
            let list: Vec<String> = built.iter().map(ToString::to_string).collect();
            return Err(BuildError::Dockerfile(format!(
                "--annotation {}[{wanted}]:{}: the build makes no {wanted} image (it builds {})",
                annotation.target.name(),
                hoist_untrusted::escape(&annotation.key),
                list.join(", ")
            )));
        }
    }
    Ok(())
}

/// Runs a build; events go to `events`.
pub fn build(
    store: Arc<Store>,
    request: &BuildRequest,
    events: EventSink,
    cancel: &CancellationToken,
) -> Result<Built, BuildError> {
    let started = now();
    let file = dockerfile_name(request).to_owned();
    let multi_platform = request.is_multi_platform();
    let resolver = StoreResolver::new(store.clone());
    let mut frontends = Vec::new();
    for options in request.platform_options() {
        let frontend = lower_options(request, &options, &resolver)?;
        super::exec::check_entitlements(&file, &frontend, request.network, &request.allow)
            .map_err(BuildError::Dockerfile)?;
        frontends.push(frontend);
    }
    // The same Dockerfile lines for every platform: warned about once.
    super::reproducible::check_pinned(request, &frontends[0], &events)?;
    check_annotation_platforms(request, &frontends)?;
    let ignore = ignore_matcher(request)?;
    let mut contexts = HashMap::new();
    contexts.insert(
        "context".to_owned(),
        LocalContext {
            dir: request.context_dir.clone(),
            ignore,
        },
    );
    for (name, context) in named_locals(request)? {
        contexts.insert(name, context);
    }
    let secrets = super::mounts::Secrets::prepare(&request.secrets, &request.ssh)?;
    let engine = Arc::new(
        Engine::new(store.clone(), contexts)?
            .with_limits(request.memory, request.cpus)
            .with_step_options(request.step_options.clone())
            .with_source_date_epoch(request.repro.source_date_epoch)
            // `--no-cache` is also the way out of a store whose files are
            // doubted: nothing of an earlier snapshot is reused either.
            .with_file_reuse(!request.no_cache && request.no_cache_filter.is_empty())
            .with_secrets(secrets),
    );

    // One graph for every platform: the solver runs identical vertices
    // (a BUILDPLATFORM stage, the context, COPY on scratch) once, and the
    // platforms' other steps in parallel within `--jobs`.
    let mut graph: BuildGraph<Artifact> = BuildGraph::new();
    let mut plans = Vec::new();
    let mut all_ids: Vec<VertexId> = Vec::new();
    let mut all_ignored: HashSet<usize> = HashSet::new();
    let mut merged = HashMap::new();
    for frontend in frontends {
        let ignore_reasons = ignore_cache_reasons(&frontend, request);
        let ignore_cache: HashSet<usize> = ignore_reasons.keys().copied().collect();
        let ids = add_vertices(
            &mut graph,
            &mut merged,
            &frontend,
            request,
            &engine,
            &ignore_cache,
            multi_platform,
        )?;
        all_ignored.extend(ignore_cache.iter().map(|i| all_ids.len() + i));
        all_ids.extend(&ids);
        plans.push(PlatformPlan {
            frontend,
            ids,
            ignore_reasons,
        });
    }

    // Without a lease from the caller, one for the build itself: it then
    // protects the image only until this returns.
    let own_lease = match &request.lease {
        Some(_) => None,
        None => Some(
            hoist_cache::LeaseGuard::take(&store, "build")
                .map_err(|e| BuildError::Other(Box::new(e)))?,
        ),
    };
    let lease = request
        .lease
        .as_ref()
        .or(own_lease.as_ref().map(|guard| guard.lease()));
    let mut explainers = Vec::new();
    for plan in &plans {
        // Each platform's steps have their own history ("the last build of
        // this step").
        let name = if multi_platform {
            format!("{file} {}", plan.frontend.target_stage().platform)
        } else {
            file.clone()
        };
        explainers.push(Arc::new(
            crate::explain::Explainer::new(
                store.clone(),
                &plan.frontend,
                &request.context_dir,
                &name,
                ignore_matcher(request)?,
                &plan.ids,
                plan.ignore_reasons.clone(),
            )
            .with_named_contexts(named_locals(request)?)
            .with_engine(engine.clone()),
        ));
    }
    let explainer = Arc::new(Explainers(explainers));
    let index = Arc::new(
        StoreCacheIndex::open(store.clone())
            .map_err(|e| BuildError::Other(Box::new(e)))?
            .with_lease(lease.cloned())
            .with_steps(explainer.clone())
            .with_snapshots({
                let engine = engine.clone();
                Arc::new(move |name: &str| engine.has_committed_snapshot(name))
            }),
    );

    let events = match &request.explain {
        Some(explanations) => {
            let explanations = explanations.clone();
            let inner = events;
            EventSink::new(move |event| {
                if let Event::VertexStarted { vertex, .. } = &event {
                    if let Some(explanation) = explainer.explain(*vertex) {
                        explanations.insert(*vertex, explanation);
                    }
                }
                inner.emit(event);
            })
        }
        None => events,
    };
    let events = cached_ancestors(&graph, &all_ids, &all_ignored, events);
    let used_index = index.clone();
    // Longest known step first when more are ready than there are jobs.
    let history = Arc::new(crate::FileStepHistory::load(
        store.root().join("step-durations"),
    ));
    let mut solver = Solver::new(index)
        .with_events(events)
        .with_history(history.clone());
    if let Some(jobs) = request.jobs {
        solver = solver.with_jobs(jobs);
    }
    let targets: Vec<VertexId> = plans
        .iter()
        .map(|p| p.ids[p.frontend.target_stage().root])
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .map_err(|e| BuildError::Other(Box::new(e)))?;
    let result = runtime.block_on(solver.solve(&graph, &targets, cancel));
    engine.save_stat_cache();
    history.save();
    let solution = match result {
        Ok(s) => s,
        Err(SolveError::Cancelled) => return Err(BuildError::Cancelled),
        Err(SolveError::Op {
            description,
            log_tail,
            source,
            ..
        }) => {
            let exit_code = source.downcast_ref::<ProcessFailed>().and_then(|p| p.code);
            let mut message = source.to_string();
            let mut cause = source.source();
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            return Err(BuildError::Step {
                description,
                message,
                log_tail,
                exit_code,
            });
        }
        Err(e) => return Err(BuildError::Other(Box::new(e))),
    };
    let created = request.created.unwrap_or_else(now);
    let mut images = Vec::new();
    for (plan, output) in plans.iter().zip(&solution.outputs) {
        let stage = plan.frontend.target_stage();
        // A step an earlier build kept no blob of (its stage was only copied
        // from then) has its blob written now, from its snapshot, and then
        // converted below like any layer in another compression.
        let layers = engine
            .write_lazy_blobs(output.layers())
            .map_err(|e| BuildError::Other(Box::new(e)))?;
        let mut image = assemble(
            &store,
            &plan.frontend,
            stage,
            &layers,
            &request.labels,
            created,
            request.repro.source_date_epoch,
        )?;
        let manifest_annotations = Annotation::select(
            &request.annotations,
            AnnotationTarget::Manifest,
            Some(&stage.platform),
        );
        super::assemble::annotate(&store, &mut image, &manifest_annotations)?;
        // A cached step's layer in another compression than this build's
        // steps write (a stage an earlier build only copied from, or an
        // earlier zstd output's step) becomes the blob a step would have
        // written now, before an attestation names the manifest: the image
        // is a cold build's. The base image's layers stay as they are.
        let written: hoist_cache::image::Compression = request.layer_compression.into();
        if layers
            .iter()
            .any(|l| hoist_cache::image::layer_compression(&l.media_type) != Some(written))
        {
            let format = super::convert::LayerFormat {
                compression: request.layer_compression,
                ..Default::default()
            };
            image.manifest = super::convert::convert(&store, &image.manifest, &format, lease)
                .map_err(|e| BuildError::Other(Box::new(e)))?
                .target;
        }
        images.push(PlatformImage {
            platform: stage.platform.clone(),
            image,
            layers,
        });
    }
    let wants_index = multi_platform
        || request.repro.provenance
        || request.annotations.iter().any(|a| a.target.needs_index());
    let index = if wants_index {
        let finished = now();
        let mut entries = Vec::new();
        let mut attestations = Vec::new();
        for (plan, built) in plans.iter().zip(&images) {
            entries.push(super::assemble::index_entry(
                &built.image.manifest,
                &built.platform,
                &Annotation::select(
                    &request.annotations,
                    AnnotationTarget::ManifestDescriptor,
                    Some(&built.platform),
                ),
            ));
            if request.repro.provenance {
                let statement = super::provenance::build_statement(
                    &engine,
                    request,
                    &plan.frontend,
                    &built.image,
                    started,
                    finished,
                )?;
                let attestation = super::provenance::attestation_manifest(&store, &statement)?;
                attestations.push(super::provenance::attestation_entry(
                    &attestation,
                    &built.image.manifest,
                ));
            }
        }
        // BuildKit lists the images first, then their attestations.
        entries.extend(attestations);
        let mut descriptor = super::assemble::write_index(
            &store,
            entries,
            &Annotation::select(&request.annotations, AnnotationTarget::Index, None),
        )?;
        let on_descriptor = Annotation::select(
            &request.annotations,
            AnnotationTarget::IndexDescriptor,
            None,
        );
        if !on_descriptor.is_empty() {
            descriptor.set_annotations(Some(on_descriptor.into_iter().collect()));
        }
        Some(descriptor)
    } else {
        None
    };
    if let Some(lease) = lease {
        let mut blobs = Vec::new();
        for built in &images {
            blobs.push(built.image.manifest.digest().to_string());
            blobs.push(built.image.config_digest.clone());
            blobs.extend(built.layers.iter().map(|l| l.digest.clone()));
        }
        if let Some(index) = &index {
            blobs.push(index.digest().to_string());
        }
        store
            .lease_blobs(lease, &blobs)
            .map_err(|e| BuildError::Other(Box::new(e)))?;
    }
    let cached = solution
        .outcomes
        .values()
        .filter(|o| matches!(o, VertexOutcome::Cached))
        .count();
    let mut steps: HashMap<VertexId, &GraphOp> = HashMap::new();
    for plan in &plans {
        for (i, id) in plan.ids.iter().enumerate() {
            steps.entry(*id).or_insert(&plan.frontend.vertices[i].op);
        }
    }
    let layer_sizes = solution
        .vertex_outputs
        .iter()
        .filter(|(id, _)| {
            steps
                .get(id)
                .is_some_and(|op| matches!(op, GraphOp::Exec(_) | GraphOp::File(_)))
        })
        .filter_map(|(id, output)| Some((*id, output.layers().last()?.size)))
        .collect();
    let mut users: HashMap<VertexId, usize> = HashMap::new();
    for plan in &plans {
        let distinct: HashSet<&VertexId> = plan.ids.iter().collect();
        for id in distinct {
            *users.entry(*id).or_default() += 1;
        }
    }
    let mut shared: Vec<VertexId> = users
        .iter()
        .filter(|(id, n)| {
            **n > 1
                && solution.outcomes.contains_key(id)
                && steps
                    .get(id)
                    .is_some_and(|op| matches!(op, GraphOp::Exec(_) | GraphOp::File(_)))
        })
        .map(|(id, _)| *id)
        .collect();
    shared.sort();
    let shared_steps = shared
        .iter()
        .filter_map(|id| Some(graph.vertex(*id)?.meta().name.clone()))
        .collect();
    let first = images[0].clone();
    Ok(Built {
        shared_steps,
        image: first.image,
        index,
        platforms: if multi_platform { images } else { Vec::new() },
        layers: first.layers,
        executed: solution.outcomes.len() - cached,
        cached,
        cache_records: used_index.touched_keys(),
        layer_sizes,
    })
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

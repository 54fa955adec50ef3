//! `hoist build [OPTIONS] CONTEXT|-`: build an image from a Dockerfile.
//!
//! The builder's one pipeline ([`hoist_builder::pipeline::run`]) does the
//! work: pulls, cache import and export, the solve, outputs, the lease and
//! the collection after it. This module parses the flags, reads the inputs
//! (context directory, stdin, Dockerfile, ignore file) and renders the
//! events (plain as `docker build --progress=plain`, tty, or JSON lines).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use hoist_builder::engine::build::{self as engine_build, BuildError, BuildRequest};
use hoist_builder::pipeline::{
    self, CacheSpec, Direction, Notice, Output, PipelineError, PullPolicy,
};
use hoist_builder::CancellationToken;
use hoist_frontend::graph::NetworkMode;
use hoist_frontend::BuildOptions;

use crate::context::Context;
use crate::interrupt;
use crate::progress::{self as display, Mode as ProgressMode, Status};
use crate::resolve::parse_tag_name;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Progress {
    /// plain when stderr is not a terminal, tty otherwise
    #[default]
    Auto,
    /// numbered steps and prefixed output, as `docker build --progress=plain`
    Plain,
    /// live view: a line per running step with the tail of its output
    Tty,
    /// one JSON event object per line
    Json,
    /// BuildKit's SolveStatus objects, one per line (as buildx --progress=rawjson)
    Rawjson,
    /// no build output; the image ID on success (as -q)
    Quiet,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PlanFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Network {
    Default,
    None,
    Host,
}

/// Build an image from a Dockerfile
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Build context: a directory, or `-` for a tar archive (or a Dockerfile) on stdin
    context: String,
    /// Name and optionally a tag (NAME[:TAG]); repeatable
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<String>,
    /// Build-time variable KEY=VALUE (KEY alone takes it from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Stage to build
    #[arg(long)]
    target: Option<String>,
    /// Platform to build for, os/arch[/variant] (default: this machine's);
    /// sets TARGETPLATFORM and the platform of every FROM without its own
    /// --platform. Several (`linux/amd64,linux/arm64`, or the flag
    /// repeated) build one image index. RUN steps of another architecture
    /// need an emulator (docs/platforms.md)
    #[arg(long, value_name = "PLATFORM")]
    platform: Vec<String>,
    /// Label KEY=VALUE for the image
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Annotation, [TYPE[PLATFORM]:]KEY=VALUE as buildx: TYPE is manifest
    /// (the default), manifest-descriptor, index or index-descriptor
    /// (repeatable)
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    annotations: Vec<String>,
    /// Do not use the cache
    #[arg(long)]
    no_cache: bool,
    /// Always pull the base images from their registries (by default only
    /// images missing from the store are pulled)
    #[arg(long)]
    pull: bool,
    /// Do not use the cache for these stages
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// Network for RUN steps
    #[arg(long, value_enum)]
    network: Option<Network>,
    /// Memory limit of RUN steps (e.g. 512m)
    #[arg(long, value_name = "BYTES")]
    memory: Option<String>,
    /// CPU limit of RUN steps
    #[arg(long, value_name = "N", value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// An /etc/hosts entry of RUN steps, HOST:IP (repeatable)
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = hoist_runner::parse_extra_host)]
    add_hosts: Vec<(String, std::net::IpAddr)>,
    /// Size of /dev/shm in RUN steps (e.g. 128m; default 64m)
    #[arg(long, value_name = "BYTES")]
    shm_size: Option<String>,
    /// A resource limit of RUN steps, NAME=SOFT[:HARD] (e.g. nofile=1024:2048;
    /// repeatable)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = hoist_runner::Ulimit::parse)]
    ulimits: Vec<hoist_runner::Ulimit>,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// Progress output
    #[arg(long, value_enum, default_value_t)]
    progress: Progress,
    /// Output, as buildx: type=image[,name=N][,push=true] | registry[,name=N] |
    /// oci|docker[,dest=PATH|-][,name=N] | local,dest=DIR | tar,dest=PATH|-;
    /// a bare DIR is type=local, `-` a tar on stdout
    #[arg(short, long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Write the image ID to this file
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write build metadata (digests) as JSON to this file
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Print the build plan instead of building (base images from the store
    /// only: nothing is pulled, even with --pull; one it lacks is shown as
    /// unresolved)
    #[arg(long)]
    dry_run: bool,
    /// Run BuildKit's build checks without building (`--call check`); exit 1 when one warns
    #[arg(long)]
    check: bool,
    /// What to do instead of building: check, outline (build args, secrets, ssh of the
    /// target) or targets (the stages), as buildx; `,format=json` for JSON
    #[arg(long, value_name = "METHOD")]
    call: Option<String>,
    /// Format of --dry-run
    #[arg(long, value_enum, default_value_t)]
    format: PlanFormat,
    /// Steps run at once (default: number of cores)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Export build cache: type=local,dest=DIR | type=registry,ref=REF
    /// (either with [,mode=min|max]) | type=inline
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Option<String>,
    /// Import build cache: type=local,src=DIR | type=registry,ref=REF
    /// (a cache ref or an image built with type=inline; repeatable)
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Say why each step that runs missed the cache (with --dry-run: which
    /// steps will run, and why)
    #[arg(long)]
    explain: bool,
    /// Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default, or ID=SOCKET|KEYFILE[,KEYFILE]
    #[arg(long = "ssh", value_name = "SPEC")]
    ssh: Vec<String>,
    /// Grant an entitlement: security.insecure (RUN --security=insecure) or
    /// network.host (RUN --network=host, or --network host)
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Load the image into the local Docker daemon (`docker load`)
    #[arg(long)]
    load: bool,
    /// Push the image to the registry of each tag (`-o type=registry`)
    #[arg(long)]
    push: bool,
    /// A named context for `FROM NAME` / `COPY --from=NAME`: a directory,
    /// docker-image://REF, oci-layout://PATH[:TAG], a git URL or an http(s) URL
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    // Reproducibility and provenance (docs/reproducibility.md).
    /// Timestamp (seconds since 1970) for `created` and the upper bound of
    /// every mtime in the layers the build writes [env: SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<i64>,
    /// Report inputs that are not pinned (FROM without digest, ADD without
    /// --checksum, git branches); `=strict` makes them errors
    #[arg(long, value_name = "MODE", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "warn")]
    reproducible: Option<ReproducibleMode>,
    /// Attach a SLSA provenance attestation (`--provenance=false` to omit)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    provenance: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReproducibleMode {
    /// a warning per unpinned input
    Warn,
    /// unpinned inputs are errors
    Strict,
}

/// SOURCE_DATE_EPOCH from `--source-date-epoch`, else `--build-arg
/// SOURCE_DATE_EPOCH=N` (as BuildKit takes it), else the environment; the
/// value is also passed on as that build arg, so `ARG SOURCE_DATE_EPOCH` sees it.
fn source_date_epoch(
    flag: Option<i64>,
    build_args: &mut BTreeMap<String, String>,
) -> anyhow::Result<Option<i64>> {
    const NAME: &str = "SOURCE_DATE_EPOCH";
    let parse = |text: &str, from: &str| -> anyhow::Result<i64> {
        hoist_cache::units::parse_epoch(text).with_context(|| format!("invalid {NAME} ({from})"))
    };
    let epoch = match flag {
        Some(n) => Some(parse(&n.to_string(), "--source-date-epoch")?),
        None => match build_args.get(NAME).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(parse(v, "--build-arg")?),
            None => match std::env::var(NAME) {
                Ok(v) if !v.trim().is_empty() => Some(parse(&v, "environment")?),
                _ => None,
            },
        },
    };
    if let Some(n) = epoch {
        build_args.insert(NAME.to_owned(), n.to_string());
    }
    Ok(epoch)
}

fn parse_provenance(value: Option<&str>) -> anyhow::Result<bool> {
    match value {
        None => Ok(false),
        Some("true" | "1" | "mode=min" | "mode=max") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => {
            bail!("invalid --provenance `{other}`: expected true, false, mode=min or mode=max")
        }
    }
}

/// `--cpus`: a finite number from 0.01 (Docker's least), so that `nan`,
/// `inf` or `-1` never become a wrapped cgroup quota.
fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && (0.01..=1_000_000.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid value `{}`: expected a number of CPUs from 0.01, e.g. `1.5`",
            hoist_cache::text::escape(text)
        )),
    }
}

fn key_values(
    values: &[String],
    what: &str,
    from_env: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for value in values {
        match value.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None if from_env => {
                if let Ok(v) = std::env::var(value) {
                    out.insert(value.clone(), v);
                }
            }
            None => bail!("invalid {what} `{value}`: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// The context's own `.dockerignore`, read inside it.
fn scoped_ignore(context_dir: &Path) -> anyhow::Result<Option<String>> {
    Ok(hoist_builder::engine::read_in_root(
        context_dir,
        Path::new(".dockerignore"),
    )?)
}

/// Reads stdin: a tar archive (plain or gzip) becomes the context, anything
/// else is a Dockerfile with an empty context.
fn stdin_context(dir: &Path) -> anyhow::Result<Option<String>> {
    // Streamed: a context of any size costs no memory.
    match hoist_builder::engine::fetch::unpack_context(&mut io::stdin(), dir)
        .context("failed to unpack the build context from stdin")?
    {
        Some(dockerfile) => Ok(Some(
            String::from_utf8(dockerfile).context("the Dockerfile on stdin is not UTF-8")?,
        )),
        None => Ok(None),
    }
}

pub fn run(context: &Context, mut args: Args) -> anyhow::Result<()> {
    // buildx's `--progress quiet` is `-q`.
    args.quiet |= args.progress == Progress::Quiet;
    let tags = args
        .tags
        .iter()
        .map(|t| parse_tag_name(t).map(|r| r.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| Output::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    // buildx's shorthands; the pipeline adds the default image output and
    // refuses a push without a name.
    if args.push {
        // As buildx: `--push` sets push=true on the image output when there
        // is one (with its layer format), else adds one.
        match outputs
            .iter_mut()
            .find(|o| matches!(o, Output::Image { .. }))
        {
            Some(Output::Image { push, .. }) => *push = true,
            _ => outputs.push(Output::Image {
                names: Vec::new(),
                push: true,
                format: None,
            }),
        }
    }
    if args.load {
        outputs.push(Output::Load);
    }
    if args.file.as_deref() == Some("-") && args.context == "-" {
        bail!("the Dockerfile and the context cannot both come from stdin");
    }
    // Docker reads --memory with RAMInBytes: `512m` is 512 MiB.
    let memory = args
        .memory
        .as_deref()
        .map(hoist_cache::units::parse_memory_size)
        .transpose()
        .context("invalid --memory")?;

    let stdin_dir;
    let (context_dir, stdin_dockerfile) = if args.context == "-" {
        stdin_dir = tempfile::tempdir().context("failed to create a directory for the context")?;
        let dockerfile = stdin_context(stdin_dir.path())?;
        (stdin_dir.path().to_path_buf(), dockerfile)
    } else if let Some(remote) = exec_flags::remote_context(&args.context, &args.ssh)? {
        stdin_dir = remote.0;
        (stdin_dir.path().join(remote.1), remote.2)
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            bail!("build context `{}` is not a directory", dir.display());
        }
        (dir, None)
    };
    // A context (and a Dockerfile in it) may be anybody's: both are read
    // inside it, never through a symlink out of it. A `-f FILE` the user
    // typed is read where it is.
    let scoped = |dockerfile: &str| {
        hoist_builder::engine::read_build_files(&context_dir, dockerfile, ".")
            .map_err(anyhow::Error::new)
    };
    let (dockerfile, dockerfile_name, dockerignore) = match (&args.file, stdin_dockerfile) {
        (Some(f), _) if f == "-" => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("failed to read the Dockerfile from stdin")?;
            (text, "Dockerfile".to_owned(), scoped_ignore(&context_dir)?)
        }
        (_, Some(text)) => (text, "Dockerfile".to_owned(), scoped_ignore(&context_dir)?),
        (Some(f), None) => {
            let path = PathBuf::from(f);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read the Dockerfile `{}`", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            // Docker's rule: `<Dockerfile>.dockerignore` wins.
            let ignore = match std::fs::read_to_string(format!("{}.dockerignore", path.display())) {
                Ok(text) => Some(text),
                Err(_) => scoped_ignore(&context_dir)?,
            };
            (text, name, ignore)
        }
        (None, None) => {
            let files = scoped("Dockerfile")?;
            (files.dockerfile, files.dockerfile_name, files.dockerignore)
        }
    };

    let mut build_args = key_values(&args.build_args, "--build-arg", true)?;
    let repro = hoist_builder::engine::reproducible::ReproOptions {
        source_date_epoch: source_date_epoch(args.source_date_epoch, &mut build_args)?,
        reproducible: match args.reproducible {
            None => hoist_builder::engine::reproducible::Reproducible::Off,
            Some(ReproducibleMode::Warn) => hoist_builder::engine::reproducible::Reproducible::Warn,
            Some(ReproducibleMode::Strict) => {
                hoist_builder::engine::reproducible::Reproducible::Strict
            }
        },
        provenance: parse_provenance(args.provenance.as_deref())?,
        subject_name: tags.first().cloned(),
    };
    let platforms = target_platforms(&args.platform.join(","))?;
    let request = BuildRequest {
        dockerfile,
        dockerfile_name,
        context_dir,
        dockerignore: Some(dockerignore.unwrap_or_default()),
        options: BuildOptions {
            build_args,
            target: args.target.clone(),
            platform: platforms.first().cloned(),
            ..Default::default()
        },
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        labels: key_values(&args.labels, "--label", false)?,
        network: args.network.map(|n| match n {
            Network::Default => NetworkMode::Default,
            Network::None => NetworkMode::None,
            Network::Host => NetworkMode::Host,
        }),
        jobs: args.jobs,
        memory,
        cpus: args.cpus,
        annotations: args
            .annotations
            .iter()
            .map(|a| pipeline::parse_annotation(a))
            .collect::<Result<_, _>>()?,
        step_options: hoist_runner::StepOptions {
            extra_hosts: args.add_hosts.clone(),
            shm_size: args
                .shm_size
                .as_deref()
                .map(|text| match hoist_cache::units::parse_memory_size(text) {
                    // A tmpfs of size 0 has no limit at all.
                    Ok(0) => Err(anyhow!("invalid --shm-size `0`: it must be larger than 0")),
                    other => other.context("invalid --shm-size"),
                })
                .transpose()?,
            ulimits: args.ulimits.clone(),
        },
        platforms: if platforms.len() > 1 {
            platforms.clone()
        } else {
            Vec::new()
        },
        created: None,
        lease: None,
        // The pipeline sets both from the outputs and the cache export.
        layer_compression: Default::default(),
        intermediate_blob: None,
        explain: args.explain.then(hoist_builder::explain::Explanations::new),
        secrets: exec_flags::secrets(&args.secrets)?,
        ssh: exec_flags::ssh(&args.ssh)?,
        repro,
        allow: exec_flags::allow(&args.allow)?,
        named_contexts: hoist_builder::engine::named::parse_all(&args.build_contexts)?,
    };

    let store = Arc::new(context.store()?);
    let call = super::check::Call::from_flags(args.check, args.call.as_deref())?;
    if call.method != super::check::Method::Build {
        return super::check::run(store, &request, call);
    }
    let check_request = request.clone();
    super::check::refuse_violation(&store, &check_request)?;
    if args.dry_run {
        return dry_run(store, &request, &args);
    }
    let cache_to = args
        .cache_to
        .as_deref()
        .map(|s| CacheSpec::parse(s, Direction::To))
        .transpose()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| CacheSpec::parse(s, Direction::From))
        .collect::<Result<Vec<_>, _>>()?;
    let explanations = request.explain.clone();
    let provenance = request.repro.provenance;
    let build = pipeline::Build {
        request,
        pull: if args.pull {
            PullPolicy::Always
        } else {
            PullPolicy::Missing
        },
        cache_from,
        cache_to,
        push: Vec::new(),
        tags: tags.clone(),
        outputs,
        client: None,
    };

    let progress = display::Progress::new(match (args.quiet, args.progress) {
        (true, _) => ProgressMode::Quiet,
        (false, Progress::Auto) => ProgressMode::auto(),
        (false, Progress::Plain) => ProgressMode::Plain,
        (false, Progress::Tty) => ProgressMode::Tty,
        (false, Progress::Json) => ProgressMode::Json,
        (false, Progress::Rawjson) => ProgressMode::RawJson,
        (_, Progress::Quiet) => ProgressMode::Quiet,
    });
    let cancel = CancellationToken::new();
    let interrupts = interrupt::Guard::install(cancel.clone(), progress.notifier())
        .context("failed to watch for Ctrl-C")?;
    let sink = match (
        &explanations,
        args.progress == Progress::Json && !args.quiet,
    ) {
        // `--progress json --explain`: an `explain` event with the reason
        // comes right before the step's `started` event.
        (Some(explanations), true) => {
            let explanations = explanations.clone();
            let inner = progress.sink();
            hoist_builder::EventSink::new(move |event| {
                if let hoist_builder::Event::VertexStarted { vertex, .. } = &event {
                    if let Some(e) = explanations.get(*vertex) {
                        let line = serde_json::json!({
                            "event": "explain",
                            "vertex": vertex.index(),
                            "step": e.label,
                            "reason": e.reason,
                        });
                        let _ = writeln!(io::stderr().lock(), "{line}");
                    }
                }
                inner.emit(event);
            })
        }
        _ => progress.sink(),
    };
    let notify: pipeline::Notify = {
        let note = progress.notifier();
        let pull = progress.puller();
        let quiet = args.quiet;
        Arc::new(move |notice: Notice| {
            if quiet && !notice.is_warning() {
                return;
            }
            if let Notice::Pull { image, event } = &notice {
                pull(image, event);
                return;
            }
            let line = notice.to_string();
            if !line.is_empty() {
                note(&line);
            }
        })
    };
    let result = pipeline::run(store.clone(), build, sink, notify, &cancel);
    // From here on, Ctrl-C ends the process at once, as it normally would.
    interrupts.release();
    progress.end_live();
    let result = match result {
        Ok(result) if !cancel.is_cancelled() => result,
        Ok(_) | Err(PipelineError::Build(BuildError::Cancelled)) => {
            progress.finish(Status::Cancelled, None);
            return Err(interrupt::Interrupted("build cancelled".into()).into());
        }
        Err(PipelineError::Build(BuildError::Step {
            description,
            message,
            log_tail,
            ..
        })) => {
            let mut err = io::stderr().lock();
            if !log_tail.is_empty() {
                let _ = writeln!(err, "------\n > {description}:");
                for line in &log_tail {
                    let _ = writeln!(err, "{line}");
                }
                let _ = writeln!(err, "------");
            }
            bail!("failed to solve: {description}: {message}");
        }
        Err(PipelineError::Build(BuildError::Dockerfile(text))) => bail!("{text}"),
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let built = &result.built;
    let manifest = result.target();
    // Of several platforms, the index is the image (buildx's image ID then).
    let id = if built.platforms.is_empty() {
        built.image.config_digest.clone()
    } else {
        manifest.digest().to_string()
    };
    if let (Some(explanations), false, false) = (
        &explanations,
        args.quiet,
        matches!(args.progress, Progress::Json | Progress::Rawjson),
    ) {
        let mut err = io::stderr().lock();
        let all = explanations.all();
        if all.is_empty() {
            writeln!(err, "explain: every step came from the cache")?;
        }
        for e in all {
            writeln!(err, "explain: {}: {}", e.label, e.reason)?;
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let mut metadata = serde_json::json!({
            "containerimage.digest": manifest.digest().to_string(),
            "containerimage.descriptor": {
                "mediaType": manifest.media_type().to_string(),
                "digest": manifest.digest().to_string(),
                "size": manifest.size(),
            },
            "image.name": tags.join(","),
        });
        // An index of several platforms has no one config (buildx writes
        // none then).
        if built.platforms.is_empty() {
            metadata["containerimage.config.digest"] = serde_json::json!(id);
        }
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    if args.quiet {
        println!("{id}");
    } else {
        let mut lines = Vec::new();
        if built.platforms.is_empty() {
            lines.push(format!("writing image {id} done"));
        }
        if !built.shared_steps.is_empty() {
            let platforms: Vec<String> = built
                .platforms
                .iter()
                .map(|p| p.platform.to_string())
                .collect();
            for step in &built.shared_steps {
                lines.push(format!(
                    "shared by {} (run once): {}",
                    platforms.join(", "),
                    hoist_cache::text::escape(step)
                ));
            }
        }
        for image in &built.platforms {
            lines.push(format!(
                "writing image {} for {} done (manifest {})",
                image.image.config_digest,
                image.platform,
                image.image.manifest.digest()
            ));
        }
        if let (Some(index), false) = (&built.index, provenance && built.platforms.is_empty()) {
            lines.push(format!("writing image index {} done", index.digest()));
        } else if let Some(index) = &built.index {
            lines.push(format!(
                "writing provenance attestation: image {}, index {}",
                built.image.manifest.digest(),
                index.digest()
            ));
        }
        lines.extend(tags.iter().map(|tag| format!("naming to {tag}")));
        if matches!(args.progress, Progress::Json | Progress::Rawjson) {
            // Every line of a machine-read stream is an object.
            let note = progress.notifier();
            lines.iter().for_each(|line| note(line));
        } else {
            let mut err = io::stderr().lock();
            for line in &lines {
                writeln!(err, "{line}")?;
            }
        }
    }
    progress.result(&display::BuildResult {
        digest: manifest.digest().to_string(),
        id: id.clone(),
        tags: tags.clone(),
    });
    progress.finish(Status::Success, Some(&built.layer_sizes));
    if !args.quiet && !matches!(args.progress, Progress::Json | Progress::Rawjson) {
        super::check::print_after_build(&store, &check_request)?;
    }
    Ok(())
}

/// `--secret` and `--ssh` into the request's maps.
mod exec_flags {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use hoist_builder::engine::mounts::{parse_secret_flag, parse_ssh_flag, SecretSource, Secrets};

    pub(super) fn secrets(specs: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
        let mut out = BTreeMap::new();
        for spec in specs {
            let (id, source) = parse_secret_flag(spec)?;
            out.insert(id, source);
        }
        Ok(out)
    }

    /// A context given as a git URL or an http(s) URL: (its temporary
    /// directory, the context directory relative to it, a Dockerfile downloaded instead of an
    /// archive).
    pub(super) fn remote_context(
        spec: &str,
        ssh_flags: &[String],
    ) -> anyhow::Result<Option<(tempfile::TempDir, PathBuf, Option<String>)>> {
        use anyhow::Context as _;
        use hoist_builder::engine::fetch;
        let is_url = spec.starts_with("http://") || spec.starts_with("https://");
        if !fetch::is_git_context(spec) && !is_url {
            return Ok(None);
        }
        let dir = tempfile::tempdir().context("failed to create a directory for the context")?;
        if fetch::is_git_context(spec) {
            // The `--ssh default` agent (started here for key files) reaches
            // ssh remotes, as for ADD of a git URL.
            let mut agents = ssh(ssh_flags)?;
            agents.retain(|id, _| id == "default");
            let agents = Secrets::prepare(&BTreeMap::new(), &agents)?;
            let context = fetch::git_context(
                spec,
                dir.path(),
                fetch::GitSsh {
                    agent: agents.agent("default"),
                },
            )
            .with_context(|| format!("failed to fetch the build context `{spec}`"))?;
            let relative = context
                .strip_prefix(dir.path())
                .unwrap_or(&context)
                .to_path_buf();
            return Ok(Some((dir, relative, None)));
        }
        let dockerfile = fetch::url_context(spec, dir.path())
            .with_context(|| format!("failed to fetch the build context `{spec}`"))?;
        Ok(Some((dir, PathBuf::new(), dockerfile)))
    }

    pub(super) fn allow(entitlements: &[String]) -> anyhow::Result<Vec<String>> {
        // BuildKit's names; the builder refuses a step that needs one not
        // given (hoist_builder's check_entitlements).
        use hoist_builder::engine::{ENTITLEMENT_INSECURE, ENTITLEMENT_NETWORK_HOST};
        for e in entitlements {
            if e != ENTITLEMENT_INSECURE && e != ENTITLEMENT_NETWORK_HOST {
                anyhow::bail!(
                    "invalid --allow {e:?}: the entitlements are {ENTITLEMENT_INSECURE} and \
                     {ENTITLEMENT_NETWORK_HOST}"
                );
            }
        }
        Ok(entitlements.to_vec())
    }

    pub(super) fn ssh(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
        let mut out = BTreeMap::new();
        for spec in specs {
            let (id, paths) = parse_ssh_flag(spec)?;
            out.insert(id, paths);
        }
        Ok(out)
    }
}

/// `--platform os/arch[/variant][,…]`, each normalized as containerd does
/// (`arm` is `arm/v7`, `aarch64` is `arm64`); a platform given twice is
/// built once.
fn target_platforms(value: &str) -> anyhow::Result<Vec<hoist_frontend::graph::Platform>> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<hoist_frontend::graph::Platform> = Vec::new();
    for part in value.split(',') {
        let p = hoist_registry::Platform::parse(part.trim())
            .map_err(|e| anyhow!("invalid --platform: {e}"))?;
        let p = hoist_frontend::graph::Platform {
            os: p.os,
            architecture: p.architecture,
            variant: (!p.variant.is_empty()).then_some(p.variant),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `--dry-run`: the plan (with `--explain`, the prediction) from the store
/// alone; base images it lacks are not pulled but shown as unresolved.
fn dry_run(
    store: Arc<hoist_cache::Store>,
    request: &BuildRequest,
    args: &Args,
) -> anyhow::Result<()> {
    // Several platforms: a plan each, one after the other.
    if request.is_multi_platform() {
        for options in request.platform_options() {
            let platform = options.platform.clone();
            let one = BuildRequest {
                options,
                platforms: Vec::new(),
                ..request.clone()
            };
            if args.format == PlanFormat::Text || args.explain {
                if let Some(platform) = platform {
                    writeln!(io::stdout().lock(), "# platform {platform}")?;
                }
            }
            dry_run(store.clone(), &one, args)?;
        }
        return Ok(());
    }
    let dry = hoist_builder::engine::dryrun::dry_run(store.clone(), request)
        .map_err(|e| anyhow!("{e}"))?;
    for warning in dry.warnings(&request.dockerfile_name) {
        eprintln!("{warning}");
    }
    let mut out = io::stdout().lock();
    if args.explain {
        let predicted = engine_build::predict(store, request, &dry).map_err(|e| anyhow!("{e}"))?;
        for (label, reason) in predicted {
            match reason {
                Some(reason) => writeln!(out, "{label}: will run: {reason}")?,
                None => writeln!(out, "{label}: cached")?,
            }
        }
        return Ok(());
    }
    match args.format {
        PlanFormat::Json => writeln!(out, "{}", dry.to_json())?,
        PlanFormat::Text => write!(out, "{}", dry.render_text())?,
    }
    Ok(())
}

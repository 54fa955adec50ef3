//! The HTTP server (axum) and the build dispatcher.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hoist_builder::Store;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::config::{Config, RepoConfig, SourceKind};
use crate::executor::{check_ref_format, is_full_sha, BuildExecutor, BuildJob, LogSink};
use crate::queue::{self, Enqueued, NewBuild, Queue, Recovery};
use crate::webhook::{parse_event, Event, Provider, PushedRef};
use crate::{html, Error};

/// How often the dispatcher looks for builds queued by other processes.
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// The header `POST /trigger/NAME` takes the repository's token in
/// (`Authorization: Bearer TOKEN` works too).
pub const TOKEN_HEADER: &str = "x-hoist-token";

/// The autobuild service: config, store, executor and the dispatcher's
/// wake-up. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<Store>,
    /// The store's own queue, or the shared PostgreSQL one.
    queue: Queue,
    executor: Arc<dyn BuildExecutor>,
    wake: Notify,
    /// The registry client base-image watching resolves digests with.
    registry: std::sync::OnceLock<hoist_registry::Client>,
    /// Per-source token buckets of the webhook and trigger endpoints.
    limiter: RateLimiter,
    /// Held (flock) while this service exists: one server per store (a
    /// store's own queue only; PostgreSQL receivers and workers share theirs).
    _lock: Option<std::fs::File>,
}

/// `<store root>/autobuild`.
pub fn autobuild_dir(store_root: &Path) -> PathBuf {
    store_root.join("autobuild")
}

/// The log file of build `id`.
pub fn log_path(store_root: &Path, id: i64) -> PathBuf {
    autobuild_dir(store_root)
        .join("logs")
        .join(format!("{id}.log"))
}

/// Take `<root>/autobuild/server.lock` (flock): one server or worker per
/// store, whose builds' checkouts are its own.
pub(crate) fn lock_store(store_root: &Path) -> Result<std::fs::File, Error> {
    let lock_path = autobuild_dir(store_root).join("server.lock");
    let io = |source| Error::Io {
        action: "open the server lock",
        path: lock_path.clone(),
        source,
    };
    std::fs::create_dir_all(autobuild_dir(store_root)).map_err(io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    if !crate::sys::try_lock_exclusive(&lock).map_err(io)? {
        return Err(Error::AlreadyServing(lock_path));
    }
    Ok(lock)
}

/// Remove the checkouts under `<root>/autobuild/work` (call with the store
/// lock held: no build of ours runs yet).
pub(crate) fn remove_stale_checkouts(store_root: &Path) {
    let work = autobuild_dir(store_root).join("work");
    if let Ok(entries) = std::fs::read_dir(&work) {
        for entry in entries.flatten() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale checkout");
            }
        }
    }
}

/// Why a pushed ref was not queued.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The ref as given.
    pub git_ref: String,
    /// Why.
    pub reason: String,
}

/// The answer to a push or trigger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Queued {
    /// Builds queued.
    pub queued: Vec<Enqueued>,
    /// Refs left out (deleted, no matching rule).
    pub skipped: Vec<Skipped>,
}

impl Service {
    /// Open the store at `store_root`, create the autobuild tables and recover
    /// builds a previous server left running. Only one server may serve a
    /// store at a time (recovery would mark the other's builds interrupted):
    /// a second `open` fails with [`Error::AlreadyServing`] while the first
    /// service lives.
    ///
    /// With `[queue] url` (PostgreSQL) the service is a receiver or a
    /// worker: no store lock and no recovery here; expired leases are
    /// requeued by the workers ([`crate::worker`]).
    pub fn open(
        config: Config,
        store_root: &Path,
        executor: Arc<dyn BuildExecutor>,
    ) -> Result<(Service, Recovery), Error> {
        let store = Arc::new(Store::open(store_root).map_err(|source| Error::Store {
            path: store_root.to_path_buf(),
            source,
        })?);
        if let Some(url) = &config.queue.url {
            let queue = Queue::Postgres(Arc::new(crate::pg::PgQueue::open(url)?));
            let limiter = RateLimiter::new(config.server.rate_limit, config.server.rate_burst);
            let service = Service {
                inner: Arc::new(Inner {
                    config,
                    store,
                    queue,
                    executor,
                    wake: Notify::new(),
                    registry: std::sync::OnceLock::new(),
                    limiter,
                    _lock: None,
                }),
            };
            return Ok((service, Recovery::default()));
        }
        let lock = lock_store(store_root)?;
        let recovery = queue::recover(store.db())?;
        let queue = Queue::Sqlite(Arc::clone(&store));
        // Checkouts of builds a killed server left behind: the lock says no
        // other server uses them.
        remove_stale_checkouts(store_root);
        let limiter = RateLimiter::new(config.server.rate_limit, config.server.rate_burst);
        let service = Service {
            inner: Arc::new(Inner {
                config,
                store,
                queue,
                executor,
                wake: Notify::new(),
                registry: std::sync::OnceLock::new(),
                limiter,
                _lock: Some(lock),
            }),
        };
        Ok((service, recovery))
    }

    /// Enable base-image watching (`watch_base = true` repositories) with
    /// this registry client; [`serve`] then checks their base images every
    /// `poll_interval`. Only the first call counts.
    pub fn watch_bases_with(&self, client: hoist_registry::Client) {
        let _ = self.inner.registry.set(client);
    }

    /// The registry client given to [`Self::watch_bases_with`].
    pub fn registry(&self) -> Option<&hoist_registry::Client> {
        self.inner.registry.get()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Queue builds for the refs a push or trigger named; refs are checked
    /// (`git check-ref-format`, full commit id) and mapped through the rules.
    pub fn enqueue(
        &self,
        repo: &RepoConfig,
        refs: &[PushedRef],
        trigger: &str,
    ) -> Result<Queued, Error> {
        let mut out = Queued::default();
        for r in refs {
            let skip = |reason: &str| Skipped {
                git_ref: r.git_ref.clone(),
                reason: reason.to_string(),
            };
            if SourceKind::split(&r.git_ref).is_none() {
                out.skipped.push(skip("not a branch or tag"));
                continue;
            }
            if !check_ref_format(&r.git_ref) {
                return Err(Error::BadRef(r.git_ref.clone()));
            }
            if !is_full_sha(&r.sha) {
                return Err(Error::BadSha(r.sha.clone()));
            }
            if repo.plan(&r.git_ref, &r.sha).is_none() {
                out.skipped.push(skip("no build rule matches"));
                continue;
            }
            let e = self.inner.queue.enqueue(&NewBuild {
                repo: repo.name.clone(),
                git_ref: r.git_ref.clone(),
                sha: r.sha.to_ascii_lowercase(),
                trigger: trigger.to_string(),
                message: r.message.clone(),
            })?;
            out.queued.push(e);
        }
        if !out.queued.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(out)
    }

    /// Queue a copy of build `id`.
    pub fn retry(&self, id: i64) -> Result<Enqueued, Error> {
        let e = self.inner.queue.retry(id)?;
        self.inner.wake.notify_one();
        Ok(e)
    }

    /// Run builds until `stop` turns true, then wait for the running ones.
    async fn dispatch(self, mut stop: watch::Receiver<bool>) {
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < self.inner.config.concurrency {
                match queue::claim_next(self.inner.store.db()) {
                    Ok(Some(rec)) => {
                        let this = self.clone();
                        running.spawn(async move { this.run(rec, None).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim a build");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                // Builds queued by another process (`hoist autobuild retry`).
                _ = tokio::time::sleep(POLL) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = stop.changed() => break,
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Run `f` with the queue on a blocking thread (SQLite may wait for
    /// another process's write; the PostgreSQL client blocks).
    async fn with_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Queue) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let queue = self.inner.queue.clone();
        tokio::task::spawn_blocking(move || f(&queue))
            .await
            .unwrap_or_else(|e| Err(Error::Task(e.to_string())))
    }

    /// Run one claimed build and record its end. `token` is the worker's
    /// claim on a PostgreSQL queue: the log is streamed into the database
    /// as it grows, and the end is recorded only while the claim holds.
    pub(crate) async fn run(&self, rec: queue::BuildRecord, token: Option<String>) {
        let root = self.inner.store.root();
        let path = log_path(root, rec.id);
        if token.is_some() {
            // A build handed back by a stopping worker runs again under its
            // id; its streamed log starts over, and so does the file.
            let _ = std::fs::remove_file(&path);
        }
        let log = match LogSink::open(&path) {
            Ok(l) => l,
            Err(e) => {
                let message = format!("cannot open the log file: {e}");
                let _ = self
                    .with_queue(move |q| q.finish(rec.id, token.as_deref(), Err(&message)))
                    .await;
                return;
            }
        };
        let shipper = match self.inner.queue.postgres() {
            Some(_) => Some(LogShipper::start(
                self.inner.queue.clone(),
                rec.id,
                path.clone(),
            )),
            None => None,
        };
        log.line(&format!(
            "build #{} of {} {} {} (trigger {}, attempt {}{})",
            rec.id,
            rec.repo,
            rec.git_ref,
            rec.sha,
            rec.trigger,
            rec.attempt,
            rec.worker
                .as_deref()
                .map(|w| format!(", worker {w}"))
                .unwrap_or_default()
        ));
        tracing::info!(id = rec.id, repo = %rec.repo, git_ref = %rec.git_ref, sha = %rec.sha, trigger = %rec.trigger, "build started");
        let result = match self.job(&rec) {
            Err(e) => Err(e),
            Ok(job) => {
                let tags = job.tags.clone();
                if let Err(e) = self.with_queue(move |q| q.set_tags(rec.id, &tags)).await {
                    tracing::warn!(error = %e, "cannot record tags");
                }
                self.inner
                    .executor
                    .build(&job, log.clone())
                    .await
                    // git's messages may quote the repository URL.
                    .map_err(|f| crate::redact::redact_credentials(&f.message))
            }
        };
        match &result {
            Ok(o) => {
                tracing::info!(id = rec.id, digest = %o.digest, "build succeeded");
                log.line(&format!("built {}", o.digest));
                for t in &o.pushed_tags {
                    log.line(&format!("pushed {t}"));
                }
                if !o.bases.is_empty() {
                    let (repo, bases) = (rec.repo.clone(), o.bases.clone());
                    if let Err(e) = self
                        .with_queue(move |q| q.set_bases(&repo, Some(rec.id), &bases))
                        .await
                    {
                        tracing::warn!(error = %e, "cannot record the base images");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(id = rec.id, error = %crate::redact::escape_control(e), "build failed");
                log.line(&format!("build failed: {e}"));
            }
        }
        if let Some(shipper) = shipper {
            // Every line is in the database before the state says "over".
            shipper.finish().await;
        }
        let result = Arc::new(result);
        let token = Arc::new(token);
        let mut recorded;
        loop {
            let (result, t) = (Arc::clone(&result), Arc::clone(&token));
            recorded = self
                .with_queue(move |q| match &*result {
                    Ok(o) => q.finish(rec.id, t.as_deref(), Ok((&o.digest, &o.pushed_tags))),
                    Err(e) => q.finish(rec.id, t.as_deref(), Err(e)),
                })
                .await;
            // A worker keeps trying while the database is away: its
            // heartbeat holds the build until then, and a result it cannot
            // record would leave the build `running` for ever. (Once the
            // lease expired elsewhere, `finish` answers false.)
            match &recorded {
                Err(e) if token.is_some() => {
                    tracing::warn!(id = rec.id, error = %e, "cannot record the end of a build; retrying");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
                _ => break,
            }
        }
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(id = rec.id, "build ended after its lease expired or it was handed back; its result is not recorded")
            }
            Err(e) => tracing::error!(id = rec.id, error = %e, "cannot record the end of a build"),
        }
    }

    pub(crate) fn job(&self, rec: &queue::BuildRecord) -> Result<BuildJob, String> {
        let repo = self
            .inner
            .config
            .repo(&rec.repo)
            .ok_or_else(|| format!("repository `{}` is no longer configured", rec.repo))?;
        let plan = repo
            .plan(&rec.git_ref, &rec.sha)
            .ok_or_else(|| format!("no build rule matches {} any more", rec.git_ref))?;
        // `[cache] shared`: repositories without caches of their own share
        // one in the registry, next to the image.
        let (cache_from, cache_to) = match self.inner.config.cache.shared_ref(&plan.push_tags) {
            Some(r) if repo.cache_from.is_empty() && repo.cache_to.is_none() => (
                vec![format!("type=registry,ref={r}")],
                Some(format!("type=registry,ref={r},mode=max")),
            ),
            _ => (repo.cache_from.clone(), repo.cache_to.clone()),
        };
        Ok(BuildJob {
            id: rec.id,
            repo: repo.name.clone(),
            url: repo.url.clone(),
            git_ref: rec.git_ref.clone(),
            sha: rec.sha.clone(),
            dockerfile: repo.dockerfile.clone(),
            context: repo.context.clone(),
            build_args: plan.build_args,
            tags: plan.tags,
            push_tags: plan.push_tags,
            cache_from,
            cache_to,
            trigger: rec.trigger.clone(),
            work_dir: autobuild_dir(self.inner.store.root()).join("work"),
        })
    }

    /// The axum router (without the dispatcher; see [`serve`]). The pages,
    /// the API and the logs want the read token when one is configured;
    /// webhooks and the trigger URL have their own authentication and a
    /// per-source rate limit; the badge is public.
    pub fn router(&self) -> Router {
        let read = Router::new()
            .route("/", get(status_page))
            .route("/builds/{id}", get(build_page))
            .route("/api/builds", get(api_builds))
            .route("/api/builds/{id}", get(api_build))
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                require_read_token,
            ));
        let write = Router::new()
            .route("/hooks/{provider}/{name}", post(webhook))
            .route("/trigger/{name}", post(trigger))
            .route_layer(middleware::from_fn_with_state(self.clone(), rate_limit));
        Router::new()
            .route("/badge/{file}", get(badge))
            .merge(read)
            .merge(write)
            .with_state(self.clone())
    }
}

/// Serve HTTP on `listener` and run queued builds until `shutdown`
/// completes; then stop accepting requests, start no new build and wait for
/// the running ones (queued builds stay queued for the next start).
pub async fn serve(
    service: Service,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watchers = Vec::new();
    let shared = service.queue().is_shared();
    if let (true, Some(client)) = (shared, service.registry()) {
        if service.config().repos.iter().any(|r| r.watch_base) {
            watchers.push(tokio::spawn(crate::worker::elect_and_watch(
                service.clone(),
                client.clone(),
                stop_rx.clone(),
            )));
        }
    } else if let Some(client) = service.registry() {
        for repo in service.config().repos.iter().filter(|r| r.watch_base) {
            watchers.push(tokio::spawn(crate::watch::watch_repo(
                service.clone(),
                repo.clone(),
                client.clone(),
                stop_rx.clone(),
            )));
        }
    }
    // A receiver of a shared queue builds nothing: workers do.
    let dispatcher = (!shared).then(|| tokio::spawn(service.clone().dispatch(stop_rx)));
    let result = crate::conn::serve_connections(
        listener,
        service.router(),
        &service.config().server,
        shutdown,
    )
    .await
    .map_err(Error::Serve);
    let _ = stop_tx.send(true);
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }
    for w in watchers {
        let _ = w.await;
    }
    result
}

/// Resolves on SIGINT or SIGTERM (for `hoist autobuild serve`).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Run database work on a blocking thread: SQLite may wait up to its busy
/// timeout for another process's write, which must not stall the runtime.
async fn blocking<T: Send + 'static>(
    svc: &Service,
    f: impl FnOnce(&Service) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .unwrap_or_else(|e| Err(Error::Task(e.to_string())))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: Error) -> Response {
    tracing::error!(error = %crate::redact::shown(&e.to_string()), "request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::redact::redact_credentials(&e.to_string()),
    )
}

/// A request body, at most `max_body` bytes (413 above) arriving within
/// `body_timeout` (408 after it).
async fn read_body(svc: &Service, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limits = &svc.config().server;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes", limits.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        limits.body_timeout,
        axum::body::to_bytes(body, limits.max_body),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                cause = c.source();
            }
            Err(error(
                StatusCode::BAD_REQUEST,
                format!("failed to read the request body: {e}"),
            ))
        }
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                limits.body_timeout.as_secs()
            ),
        )),
    }
}

/// Token buckets per source address: `rate` requests per minute, `burst` at
/// once. IPv6 sources count per /64, the block one host usually has.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
}

/// Buckets kept before full ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Default::default(),
        }
    }

    /// Take a token for `ip`, or say how long until one is there.
    fn check(&self, ip: std::net::IpAddr) -> Result<(), std::time::Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let key = match ip {
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut o = v6.octets();
                o[8..].fill(0);
                std::net::IpAddr::from(o)
            }
            std::net::IpAddr::V6(v6) => std::net::IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            v4 => v4,
        };
        let now = std::time::Instant::now();
        let refill = |tokens: f64, last: std::time::Instant| {
            (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, (t, last)| refill(*t, *last) < self.burst);
        }
        let (tokens, last) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = refill(*tokens, *last);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - *tokens) / self.per_second,
            ))
        }
    }
}

/// 429 with `Retry-After` for a source over its rate on the webhook and
/// trigger endpoints (before the body is read).
async fn rate_limit(State(svc): State<Service>, req: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .copied()
    else {
        return next.run(req).await;
    };
    match svc.inner.limiter.check(peer.ip()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            // debug, not warn: a flood must not flood the log as well.
            tracing::debug!(source = %peer.ip(), "webhook rate limit reached");
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from {}; retry in {secs} s", peer.ip()),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            r
        }
    }
}

/// The cookie a valid `?token=` sets, so the page's links work.
const READ_TOKEN_COOKIE: &str = "hoist_read_token";

/// With `[server] read_token`: the token from `Authorization: Bearer`,
/// `?token=` or the cookie, else 401.
async fn require_read_token(State(svc): State<Service>, req: Request, next: Next) -> Response {
    let Some(want) = svc.config().server.read_token.clone() else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let query = Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(q)| q.get("token").cloned());
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(READ_TOKEN_COOKIE)
                .and_then(|c| c.strip_prefix('='))
                .map(str::to_string)
        });
    let ok = |t: &Option<String>| {
        t.as_deref()
            .is_some_and(|t| Provider::GitLab.verify(Some(want.as_str()), Some(t.as_bytes()), &[]))
    };
    if !(ok(&bearer) || ok(&query) || ok(&cookie)) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this server wants its read token (Authorization: Bearer TOKEN or ?token=TOKEN)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hoist autobuild\""),
        );
        return r;
    }
    let set_cookie = ok(&query) && !ok(&cookie);
    let mut r = next.run(req).await;
    if set_cookie {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{READ_TOKEN_COOKIE}={want}; Path=/; HttpOnly; SameSite=Strict"
        )) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

fn queued_response(result: Result<Queued, Error>) -> Response {
    match result {
        Ok(q) if q.queued.is_empty() => (StatusCode::OK, Json(q)).into_response(),
        Ok(q) => (StatusCode::ACCEPTED, Json(q)).into_response(),
        Err(e @ (Error::BadRef(_) | Error::BadSha(_))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => internal(e),
    }
}

async fn webhook(
    State(svc): State<Service>,
    UrlPath((provider, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = Provider::parse(&provider) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown provider `{provider}`"),
        );
    };
    let Some(repo) = svc.config().repo(&name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown repository `{name}`"),
        );
    };
    let body = match read_body(&svc, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The signature is checked before anything parses the body.
    let signature = headers
        .get(provider.signature_header())
        .map(|v| v.as_bytes());
    if !provider.verify(repo.secret.as_deref(), signature, &body) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong signature");
    }
    let event = headers
        .get(provider.event_header())
        .and_then(|v| v.to_str().ok());
    match parse_event(provider, event, &body) {
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Event::Ping) => (StatusCode::OK, Json(json!({ "pong": true }))).into_response(),
        Ok(Event::Ignored(e)) => (
            StatusCode::OK,
            Json(json!({ "ignored": format!("event `{e}` is not handled") })),
        )
            .into_response(),
        Ok(Event::Push(refs)) => {
            let trigger = provider.name().to_string();
            let result = tokio::task::spawn_blocking(move || svc.enqueue(&repo, &refs, &trigger))
                .await
                .unwrap_or_else(|e| Err(Error::Task(e.to_string())));
            queued_response(result)
        }
    }
}

/// The body `POST /trigger/NAME` takes (all optional).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// A branch (`main`), tag or full ref; default: the remote's HEAD branch.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The commit; default: what the ref points at now (`git ls-remote`).
    pub sha: Option<String>,
    /// What to record as the trigger: `trigger` (default) or `hook`.
    pub source: Option<String>,
}

async fn trigger(
    State(svc): State<Service>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(repo) = svc.config().repo(&name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown repository `{name}`"),
        );
    };
    let given = headers.get(TOKEN_HEADER).map(|v| v.as_bytes()).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    });
    if !Provider::GitLab.verify(repo.trigger_token.as_deref(), given, &[]) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let body = match read_body(&svc, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: TriggerRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
        }
    };
    let source = match request.source.as_deref() {
        None | Some("trigger") => "trigger",
        Some("hook") => "hook",
        Some(other) => return error(StatusCode::BAD_REQUEST, format!("unknown source `{other}`")),
    };
    let result = tokio::task::spawn_blocking(move || {
        let pushed = crate::resolve_ref(&repo.url, request.git_ref.as_deref(), request.sha)?;
        svc.enqueue(&repo, &[pushed], source)
    })
    .await
    .unwrap_or_else(|e| Err(Error::Task(e.to_string())));
    match result {
        Err(e @ Error::Resolve { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => queued_response(other),
    }
}

async fn status_page(State(svc): State<Service>) -> Response {
    let page = blocking(&svc, |svc| {
        let latest = svc.queue().latest_per_repo()?;
        let recent = svc.queue().list(None, 100)?;
        Ok(html::status_page(svc.config(), &latest, &recent))
    })
    .await;
    match page {
        Ok(p) => Html(p).into_response(),
        Err(e) => internal(e),
    }
}

async fn build_page(State(svc): State<Service>, UrlPath(id): UrlPath<i64>) -> Response {
    let page = blocking(&svc, move |svc| {
        let Some(b) = svc.queue().get(id)? else {
            return Ok(None);
        };
        let log = svc.queue().read_log(id, 0).unwrap_or_default();
        Ok(Some(html::build_page(&b, &String::from_utf8_lossy(&log))))
    })
    .await;
    match page {
        Ok(Some(p)) => Html(p).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no build #{id}")),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<usize>,
}

async fn api_builds(State(svc): State<Service>, Query(q): Query<ListQuery>) -> Response {
    let list = blocking(&svc, move |svc| {
        svc.queue().list(q.repo.as_deref(), q.limit.unwrap_or(100))
    })
    .await;
    match list {
        Ok(list) => Json(list).into_response(),
        Err(e) => internal(e),
    }
}

async fn api_build(State(svc): State<Service>, UrlPath(id): UrlPath<i64>) -> Response {
    match blocking(&svc, move |svc| svc.queue().get(id)).await {
        Ok(Some(b)) => Json(b).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no build #{id}")),
        Err(e) => internal(e),
    }
}

async fn badge(State(svc): State<Service>, UrlPath(file): UrlPath<String>) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return error(StatusCode::NOT_FOUND, "badges are NAME.svg");
    };
    if svc.config().repo(name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown repository `{name}`"),
        );
    }
    match blocking(&svc, |svc| svc.queue().latest_per_repo()).await {
        Ok(latest) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html::badge(latest.get(name).map(|b| b.state)),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// Streams a growing log file into the PostgreSQL queue, so every receiver
/// shows a running build's output.
struct LogShipper {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a worker waits before trying again to record a build's end
/// (or send its log's end) while the database is away.
const RECORD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the end of a log is tried before the build's end is recorded
/// without it.
const FINAL_SHIP_TRIES: u32 = 60;

/// How often a running build's new log bytes are sent.
const SHIP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl LogShipper {
    fn start(queue: Queue, id: i64, path: PathBuf) -> LogShipper {
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pos = 0u64;
            let mut final_tries = 0;
            loop {
                let last = *rx.borrow_and_update();
                let (q, p) = (queue.clone(), path.clone());
                let (at, done) = tokio::task::spawn_blocking(move || ship(&q, id, &p, pos))
                    .await
                    .unwrap_or((pos, false));
                pos = at;
                if last {
                    // The end of the log is sent before the build's end is
                    // recorded: through a short database outage too.
                    final_tries += 1;
                    if done || final_tries >= FINAL_SHIP_TRIES {
                        return;
                    }
                    tokio::time::sleep(RECORD_RETRY).await;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(SHIP_EVERY) => {}
                    _ = rx.changed() => {}
                }
            }
        });
        LogShipper { stop, task }
    }

    /// Send what is left and stop.
    async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Send the bytes of `path` from `pos` on; the new position (what was
/// stored: a failed insert is sent again next time) and whether the end of
/// the file was reached.
fn ship(queue: &Queue, id: i64, path: &Path, mut pos: u64) -> (u64, bool) {
    use std::io::{Read, Seek, SeekFrom};
    let Some(pg) = queue.postgres() else {
        return (pos, true);
    };
    let Ok(mut f) = std::fs::File::open(path) else {
        return (pos, true);
    };
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return (pos, false);
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return (pos, true),
            Err(_) => return (pos, false),
            Ok(n) => n,
        };
        let at = i64::try_from(pos).unwrap_or(i64::MAX);
        if let Err(e) = pg.append_log(id, at, &buf[..n]) {
            tracing::warn!(id, error = %e, "cannot stream the build log");
            return (pos, false);
        }
        pos += n as u64;
    }
}

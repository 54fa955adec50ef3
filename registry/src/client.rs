//! The HTTP side: endpoints (scheme, TLS, mirrors), authentication
//! (basic, bearer tokens cached per scope), retries with backoff.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use oci_spec::image::Descriptor;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{Anonymous, Challenge, Credential, CredentialProvider};
use crate::config::RegistryConfig;
use crate::error::{describe_error_body, RegistryError};
use crate::events::RetryNotice;

pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

/// How transient failures are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries per request, the first included (default 5).
    pub max_attempts: u32,
    /// Delay before the second try; doubles each time (default 250 ms),
    /// with ±50 % jitter.
    pub base_delay: Duration,
    /// Longest wait between tries, `Retry-After` included (default 10 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1`, honouring a `Retry-After` value.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        // Jitter spreads clients that failed together.
        capped.mul_f64(0.5 + fastrand::f64())
    }
}

/// Everything a [`Client`] is built from.
#[derive(Clone)]
pub struct ClientOptions {
    /// Mirrors and insecure registries.
    pub config: RegistryConfig,
    /// Where credentials come from (an [`crate::AuthFile`] for the CLI).
    pub credentials: Arc<dyn CredentialProvider>,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// TCP + TLS connect timeout (default 30 s).
    pub connect_timeout: Duration,
    /// Longest silence while reading a response (default 60 s; the CLI
    /// takes `HOIST_REGISTRY_TIMEOUT`). A body that stalls this long is
    /// dropped and the download resumes with a `Range` request.
    pub read_timeout: Duration,
    /// Blobs transferred at once (default 6, as containers/image; Docker
    /// pushes 5 at once). Blobs go biggest first: with fewer slots than big
    /// blobs, the last one would run alone at the end while the other
    /// slots (and the registry's other cores) sat idle.
    pub concurrency: usize,
    /// Blobs up to this size are uploaded with one PUT (default 16 MiB);
    /// bigger ones in chunks.
    pub monolithic_limit: u64,
    /// Size of one PATCH of a chunked upload (default 64 MiB).
    pub chunk_size: u64,
    /// Idle connections kept per registry host for reuse (default 16; 0
    /// opens a connection per request).
    pub max_idle_connections: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// HTTP(S) proxies (default: none; [`Client::from_environment`] reads
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`).
    pub proxy: crate::proxy::ProxySettings,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            config: RegistryConfig::default(),
            credentials: Arc::new(Anonymous),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            concurrency: 6,
            monolithic_limit: 16 << 20,
            chunk_size: 64 << 20,
            max_idle_connections: 16,
            user_agent: format!("hoist/{}", env!("CARGO_PKG_VERSION")),
            proxy: crate::proxy::ProxySettings::default(),
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("config", &self.config)
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("concurrency", &self.concurrency)
            .field("monolithic_limit", &self.monolithic_limit)
            .field("chunk_size", &self.chunk_size)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("proxy", &self.proxy.describe())
            .finish_non_exhaustive()
    }
}

/// A registry client. Cheap to clone (shared connection pools, token and
/// endpoint caches).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: ClientOptions,
    http: reqwest::Client,
    http_insecure: reqwest::Client,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Serializes token fetches so parallel transfers that all miss the
    /// cache ask the token endpoint once.
    token_fetch: tokio::sync::Mutex<()>,
    credentials: Mutex<HashMap<String, Option<Credential>>>,
    /// A client per host with a certs.d directory (and insecure flag),
    /// `None` for hosts without one; built once per host.
    tls_clients: Mutex<HashMap<(String, bool), Option<reqwest::Client>>>,
}

/// The variable that sets [`ClientOptions::read_timeout`] for the CLI.
pub const TIMEOUT_ENV: &str = "HOIST_REGISTRY_TIMEOUT";

/// `HOIST_REGISTRY_TIMEOUT`'s value: whole seconds (`60`) or a Go-style
/// duration (`30s`, `500ms`, `2m`, `1m30s`), more than zero.
pub fn parse_timeout(value: &str) -> Result<Duration> {
    let invalid = |reason: String| RegistryError::Setting {
        name: TIMEOUT_ENV,
        value: value.to_string(),
        reason,
    };
    let duration = match value.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => hoist_untrusted::units::parse_duration(value)
            .map_err(|e| invalid(format!("{e}; or whole seconds")))?,
    };
    if duration.is_zero() {
        return Err(invalid(
            "a timeout of zero would fail every transfer".into(),
        ));
    }
    Ok(duration)
}

/// A reqwest client with our timeouts; `tls` adds a certs.d directory's CA
/// roots and client identity.
fn http_client(
    options: &ClientOptions,
    insecure: bool,
    tls: Option<&crate::tls::HostTls>,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .danger_accept_invalid_certs(insecure)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(options.max_idle_connections);
    builder = options.proxy.apply(builder)?;
    if let Some(tls) = tls {
        for root in &tls.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(identity) = &tls.identity {
            builder = builder.identity(identity.clone());
        }
    }
    builder.build().map_err(RegistryError::ClientBuild)
}

struct Token {
    value: String,
    expires: Instant,
}

/// One base URL that speaks the API (the origin or a mirror).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port]`.
    pub(crate) base: Url,
    /// Name used for credentials and token caching (`docker.io` for the
    /// Hub's API host).
    pub(crate) auth_name: String,
    /// Skip TLS verification.
    pub(crate) insecure: bool,
    /// What `/v2/` asked for.
    pub(crate) challenge: Option<Challenge>,
    /// The client for a host with a certs.d directory (else the shared one).
    pub(crate) http: Option<reqwest::Client>,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| RegistryError::Url {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }
}

/// Called on every retry.
pub(crate) type Notify<'a> = &'a (dyn Fn(RetryNotice) + Send + Sync);

pub(crate) fn no_notify(_: RetryNotice) {}

impl Client {
    /// Build a client.
    pub fn new(options: ClientOptions) -> Result<Client> {
        let build = |insecure: bool| http_client(&options, insecure, None);
        Ok(Client {
            inner: Arc::new(Inner {
                http: build(false)?,
                http_insecure: build(true)?,
                options,
                endpoints: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                token_fetch: tokio::sync::Mutex::new(()),
                credentials: Mutex::new(HashMap::new()),
                tls_clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client with the config files, `~/.docker/config.json` (or
    /// `REGISTRY_AUTH_FILE`) and default settings: what the CLI uses.
    pub fn from_environment() -> Result<Client> {
        let config = RegistryConfig::load()?;
        let defaults = ClientOptions::default();
        let read_timeout = match std::env::var(TIMEOUT_ENV) {
            Ok(value) => parse_timeout(&value)?,
            Err(_) => defaults.read_timeout,
        };
        Client::new(ClientOptions {
            config,
            credentials: Arc::new(crate::auth::AuthChain::discover()),
            proxy: crate::proxy::ProxySettings::from_env(),
            read_timeout,
            ..defaults
        })
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn http_for(&self, insecure: bool) -> &reqwest::Client {
        if insecure {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        }
    }

    pub(crate) fn credentials_for(&self, name: &str) -> Result<Option<Credential>> {
        if let Some(c) = lock(&self.inner.credentials).get(name) {
            return Ok(c.clone());
        }
        let found = self.inner.options.credentials.credentials(name)?;
        lock(&self.inner.credentials).insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// The endpoint for an origin registry (`docker.io` → its API host).
    pub(crate) async fn origin(&self, registry: &str, api_host: &str) -> Result<Endpoint> {
        let cfg = &self.inner.options.config;
        let listed = cfg.is_insecure(api_host) || cfg.is_insecure(registry);
        let tls = self.tls_client(&[registry, api_host], listed)?;
        // A certs.d directory says how to trust the host: it is verified
        // with it even on loopback, unless `insecure-registries` lists it.
        let insecure = if tls.is_some() {
            listed
        } else {
            cfg.allows_http(api_host) || cfg.allows_http(registry)
        };
        let mut candidates = vec![(format!("https://{api_host}/"), insecure)];
        if insecure {
            candidates.push((format!("http://{api_host}/"), false));
        }
        self.endpoint(registry, &candidates, tls).await
    }

    /// The client for the first of `hosts` with a certs.d directory.
    fn tls_client(&self, hosts: &[&str], insecure: bool) -> Result<Option<reqwest::Client>> {
        let Some(host) = hosts.first() else {
            return Ok(None);
        };
        let key = (host.to_string(), insecure);
        if let Some(found) = lock(&self.inner.tls_clients).get(&key) {
            return Ok(found.clone());
        }
        let Some((dir, other)) = hosts
            .iter()
            .find_map(|h| crate::tls::certs_dir_for(h).map(|d| (d, *h)))
        else {
            lock(&self.inner.tls_clients).insert(key, None);
            return Ok(None);
        };
        let tls = crate::tls::HostTls::load(&dir)?;
        tracing::debug!(host = other, dir = %dir.display(), files = ?tls.files, "certs.d");
        let client = http_client(&self.inner.options, insecure, Some(&tls))?;
        lock(&self.inner.tls_clients).insert(key, Some(client.clone()));
        Ok(Some(client))
    }

    /// The endpoint for a mirror URL (`https://host[:port]`).
    pub(crate) async fn mirror(&self, url: &str) -> Result<Endpoint> {
        let parsed = Url::parse(url).map_err(|e| RegistryError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let host = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let cfg = &self.inner.options.config;
        let tls = self.tls_client(&[&host], cfg.is_insecure(&host))?;
        let insecure = if tls.is_some() {
            cfg.is_insecure(&host)
        } else {
            cfg.allows_http(&host)
        };
        let candidates = vec![(format!("{}://{host}/", parsed.scheme()), insecure)];
        self.endpoint(&host, &candidates, tls).await
    }

    /// Ping `/v2/` on each candidate base URL in turn (https first, then
    /// plain http for insecure hosts, as Docker does); the first that
    /// answers over HTTP wins and is cached.
    async fn endpoint(
        &self,
        auth_name: &str,
        candidates: &[(String, bool)],
        tls: Option<reqwest::Client>,
    ) -> Result<Endpoint> {
        let key = format!("{auth_name} {}", candidates[0].0);
        if let Some(e) = lock(&self.inner.endpoints).get(&key) {
            return Ok(e.clone());
        }
        let mut last_err = None;
        for (i, (base, insecure)) in candidates.iter().enumerate() {
            let base = Url::parse(base).map_err(|e| RegistryError::Url {
                url: base.clone(),
                reason: e.to_string(),
            })?;
            // Plain http needs no TLS material.
            let http = tls.clone().filter(|_| base.scheme() == "https");
            let mut endpoint = Endpoint {
                base,
                auth_name: auth_name.to_string(),
                insecure: *insecure,
                challenge: None,
                http,
            };
            // A TLS probe of a plain-HTTP registry fails at once; only the
            // last candidate is worth retrying.
            let last = i + 1 == candidates.len();
            let attempts = if last {
                self.inner.options.retry.max_attempts
            } else {
                1
            };
            let url = endpoint.url("v2/")?;
            let probe = endpoint.clone();
            let result = self
                .execute_raw(&probe, None, "ping", attempts, &no_notify, |http| {
                    Ok(http.get(url.clone()))
                })
                .await;
            match result {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        endpoint.challenge = resp
                            .headers()
                            .get_all(WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .filter_map(Challenge::parse)
                            .min_by_key(|c| matches!(c, Challenge::Basic));
                    } else if !status.is_success() && status != StatusCode::NOT_FOUND {
                        let err = status_error(resp, "ping the registry").await;
                        if last {
                            return Err(err);
                        }
                        last_err = Some(err);
                        continue;
                    }
                    lock(&self.inner.endpoints).insert(key, endpoint.clone());
                    return Ok(endpoint);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Url {
            url: auth_name.to_string(),
            reason: "no endpoint to try".into(),
        }))
    }

    /// Send a request with auth and retries. Connection errors, 408, 429
    /// and 5xx are retried up to `attempts` times (honouring
    /// `Retry-After`); a 401 fetches a fresh token once. Any other status
    /// is returned for the caller to judge.
    pub(crate) async fn execute<F>(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        action: &str,
        attempts: u32,
        notify: Notify<'_>,
        build: F,
    ) -> Result<reqwest::Response>
    where
        F: Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder>,
    {
        self.execute_raw(endpoint, Some(scopes), action, attempts, notify, build)
            .await
    }

    async fn execute_raw<F>(
        &self,
        endpoint: &Endpoint,
        scopes: Option<&[String]>,
        action: &str,
        attempts: u32,
        notify: Notify<'_>,
        build: F,
    ) -> Result<reqwest::Response>
    where
        F: Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder>,
    {
        let policy = self.inner.options.retry.clone();
        let attempts = attempts.max(1);
        let mut attempt = 0;
        let mut refreshed = false;
        let mut endpoint = endpoint.clone();
        loop {
            attempt += 1;
            let http = match &endpoint.http {
                Some(http) => http,
                None => self.http_for(endpoint.insecure),
            };
            let mut request = build(http)?
                .build()
                .map_err(|source| RegistryError::Transport {
                    action: action.to_string(),
                    url: endpoint.base.to_string(),
                    source,
                })?;
            if let Some(scopes) = scopes {
                if let Some(header) = self.authorization(&endpoint, scopes, notify).await? {
                    if let Ok(value) = header.parse() {
                        request.headers_mut().insert(AUTHORIZATION, value);
                    }
                }
            }
            let url = request.url().to_string();
            match http.execute(request).await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && scopes.is_some() && !refreshed {
                        // A token may have expired or lack a scope the
                        // registry now names: refresh once.
                        refreshed = true;
                        if let Some(c) = resp
                            .headers()
                            .get_all(WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .filter_map(Challenge::parse)
                            .min_by_key(|c| matches!(c, Challenge::Basic))
                        {
                            endpoint.challenge = Some(c);
                            self.remember_challenge(&endpoint);
                        }
                        self.forget_tokens(&endpoint);
                        attempt -= 1;
                        continue;
                    }
                    if retryable_status(status) && attempt < attempts {
                        let delay = policy.delay(attempt, retry_after(resp.headers()));
                        let (message, _) = read_error(resp).await;
                        notify(RetryNotice {
                            action: action.to_string(),
                            attempt,
                            delay,
                            error: format!("{} {message}", status.as_u16()),
                        });
                        tracing::debug!(%url, %status, ?delay, "retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(source) => {
                    if attempt < attempts {
                        let delay = policy.delay(attempt, None);
                        notify(RetryNotice {
                            action: action.to_string(),
                            attempt,
                            delay,
                            error: error_chain(&source),
                        });
                        tracing::debug!(%url, error = %source, ?delay, "retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(RegistryError::Transport {
                        action: action.to_string(),
                        url,
                        source,
                    });
                }
            }
        }
    }

    fn remember_challenge(&self, endpoint: &Endpoint) {
        for e in lock(&self.inner.endpoints).values_mut() {
            if e.base == endpoint.base {
                e.challenge = endpoint.challenge.clone();
            }
        }
    }

    fn forget_tokens(&self, endpoint: &Endpoint) {
        let prefix = format!("{} ", endpoint.auth_name);
        lock(&self.inner.tokens).retain(|k, _| !k.starts_with(&prefix));
    }

    /// The `Authorization` value for a request to `endpoint` needing
    /// `scopes`, fetching a token when the registry wants one.
    async fn authorization(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        notify: Notify<'_>,
    ) -> Result<Option<String>> {
        match &endpoint.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credentials_for(&endpoint.auth_name)?
                .map(|c| c.basic_header())),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut wanted: Vec<String> = scopes.to_vec();
                if let Some(s) = scope {
                    wanted.extend(s.split(' ').map(str::to_string));
                }
                let wanted = merge_scopes(&wanted);
                // Boxed: fetching a token sends a request too (without
                // auth, but the compiler cannot see the recursion ends).
                let token =
                    Box::pin(self.token(endpoint, realm, service.as_deref(), &wanted, notify))
                        .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        notify: Notify<'_>,
    ) -> Result<String> {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        let key = format!(
            "{} {} {}",
            endpoint.auth_name,
            service.unwrap_or(""),
            sorted.join(" ")
        );
        let cached = || {
            lock(&self.inner.tokens)
                .get(&key)
                .filter(|t| t.expires > Instant::now())
                .map(|t| t.value.clone())
        };
        if let Some(t) = cached() {
            return Ok(t);
        }
        let _fetching = self.inner.token_fetch.lock().await;
        if let Some(t) = cached() {
            return Ok(t);
        }
        // The realm is the registry's text: quoted escaped.
        let shown = hoist_untrusted::escape(realm).into_owned();
        let auth_err = |message: String| RegistryError::Auth {
            registry: endpoint.auth_name.clone(),
            message,
        };
        let mut url = Url::parse(realm)
            .map_err(|e| auth_err(format!("invalid token realm `{shown}`: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &sorted {
                q.append_pair("scope", s);
            }
        }
        let credential = self.credentials_for(&endpoint.auth_name)?;
        // The realm comes from the registry's challenge, so whoever answers
        // for the registry picks where the credentials go. Over https they
        // stay encrypted; an http realm of an https registry would put them
        // on the wire in clear text, so they are not sent (a registry
        // reached over plain http has already shown them to the network).
        if credential.is_some() && endpoint.base.scheme() == "https" && url.scheme() != "https" {
            return Err(auth_err(format!(
                "the registry is reached over https but its token realm `{shown}` is not: \
                 refusing to send the credentials for {} in clear text",
                endpoint.auth_name
            )));
        }
        let realm_host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let realm_endpoint = Endpoint {
            base: url.clone(),
            auth_name: endpoint.auth_name.clone(),
            insecure: self.inner.options.config.is_insecure(&realm_host)
                || crate::config::is_loopback(&realm_host),
            challenge: None,
            http: self.tls_client(
                &[&realm_host],
                self.inner.options.config.is_insecure(&realm_host),
            )?,
        };
        let action = format!("fetch a token from {shown}");
        let resp = self
            .execute_raw(
                &realm_endpoint,
                None,
                &action,
                self.inner.options.retry.max_attempts,
                notify,
                |http| {
                    // An identity token (Docker's `<token>` user) is an
                    // OAuth2 refresh token: POST it (distribution's token
                    // spec, "OAuth2 token" flow).
                    if let Some(c) = credential
                        .as_ref()
                        .filter(|c| c.username == IDENTITY_TOKEN_USER)
                    {
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_string()),
                            ("refresh_token", c.password.clone()),
                            ("client_id", "hoist".to_string()),
                            ("scope", sorted.join(" ")),
                        ];
                        if let Some(s) = service {
                            form.push(("service", s.to_string()));
                        }
                        let mut base = url.clone();
                        base.set_query(None);
                        let body = form
                            .iter()
                            .map(|(k, v)| format!("{k}={}", form_encode(v)))
                            .collect::<Vec<_>>()
                            .join("&");
                        return Ok(http
                            .request(Method::POST, base)
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                "application/x-www-form-urlencoded",
                            )
                            .body(body));
                    }
                    let mut r = http.request(Method::GET, url.clone());
                    if let Some(c) = &credential {
                        r = r.header(AUTHORIZATION, c.basic_header());
                    }
                    Ok(r)
                },
            )
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let (message, _) = read_error(resp).await;
            let hint = if credential.is_none() {
                " (no credentials found; log in first)"
            } else {
                ""
            };
            return Err(auth_err(format!(
                "token endpoint {shown} answered {} {message}{hint}",
                status.as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = read_limited(resp, MAX_TOKEN_BODY)
            .await
            .map_err(|source| RegistryError::Transport {
                action: action.clone(),
                url: shown.clone(),
                source,
            })?
            .ok_or_else(|| {
                auth_err(format!(
                    "the token response from {shown} is longer than {MAX_TOKEN_BODY} bytes"
                ))
            })?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("invalid token response from {shown}: {e}")))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_err(format!("token response from {shown} has no token")))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = parsed.expires_in.unwrap_or(60).max(60);
        let expires = Instant::now() + Duration::from_secs(lifetime.saturating_sub(10));
        lock(&self.inner.tokens).insert(
            key,
            Token {
                value: value.clone(),
                expires,
            },
        );
        Ok(value)
    }

    /// Check `credential` against `registry` (what `hoist login` does
    /// before saving): a token is fetched, or `/v2/` is asked with basic
    /// auth. An open registry accepts anything, as with Docker.
    pub async fn check_login(&self, registry: &str, credential: &Credential) -> Result<()> {
        let reference_host = if registry == crate::reference::DEFAULT_REGISTRY {
            crate::reference::DEFAULT_REGISTRY_API_HOST
        } else {
            registry
        };
        let endpoint = self.origin(registry, reference_host).await?;
        lock(&self.inner.credentials).insert(endpoint.auth_name.clone(), Some(credential.clone()));
        self.forget_tokens(&endpoint);
        let url = endpoint.url("v2/")?;
        let resp = self
            .execute(&endpoint, &[], "log in", 1, &no_notify, |http| {
                Ok(http.get(url.clone()))
            })
            .await;
        let result = match resp {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(status_error(resp, "log in").await),
            Err(e) => Err(e),
        };
        if result.is_err() {
            lock(&self.inner.credentials).remove(&endpoint.auth_name);
        }
        result
    }
}

/// The user name Docker stores with an identity (refresh) token.
pub(crate) const IDENTITY_TOKEN_USER: &str = "<token>";

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The blobs of one transfer, biggest first, handed to a fixed set of
/// workers one at a time (the longest jobs first keep the workers busy
/// until the end, instead of one big blob finishing alone).
pub(crate) struct BlobQueue<T>(Mutex<VecDeque<(Descriptor, T)>>);

impl<T> BlobQueue<T> {
    pub(crate) fn new(mut items: Vec<(Descriptor, T)>) -> BlobQueue<T> {
        items.sort_by_key(|(d, _)| std::cmp::Reverse(d.size()));
        BlobQueue(Mutex::new(items.into()))
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.0).len()
    }

    pub(crate) fn next(&self) -> Option<(Descriptor, T)> {
        lock(&self.0).pop_front()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these caches leaves valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Largest error body read from a registry; a longer one is not read on
/// (the status text stands for it), so a registry streaming an endless
/// error body cannot fill memory.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

/// Largest token endpoint answer read (real tokens are a few KiB).
pub(crate) const MAX_TOKEN_BODY: usize = 1 << 20;

/// Read a whole body, or `None` when it is longer than `limit` (the rest is
/// never read: dropping the response closes the connection).
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The error text of a response body (`denied: …`) and its first code,
/// control characters escaped. At most [`MAX_ERROR_BODY`] bytes are read.
pub(crate) async fn read_error(resp: reqwest::Response) -> (String, Option<String>) {
    let status = resp.status().as_u16();
    let (message, code) = match read_limited(resp, MAX_ERROR_BODY).await {
        Ok(Some(body)) => describe_error_body(status, &body),
        Ok(None) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_ascii_lowercase();
            (
                format!("{reason} (error body longer than {MAX_ERROR_BODY} bytes, not read)"),
                None,
            )
        }
        Err(_) => describe_error_body(status, b""),
    };
    (
        hoist_untrusted::escape(&message).into_owned(),
        code.map(|c| hoist_untrusted::escape(&c).into_owned()),
    )
}

/// Turn an unexpected status into an error quoting the registry.
pub(crate) async fn status_error(resp: reqwest::Response, action: &str) -> RegistryError {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let (message, code) = read_error(resp).await;
    RegistryError::Status {
        action: action.to_string(),
        url,
        status,
        message,
        code,
    }
}

/// A network error with its causes (reqwest hides the useful part in the
/// source chain).
pub(crate) use hoist_untrusted::text::error_chain;

/// Merge scopes naming the same resource (`repository:a:push,pull` and
/// `repository:a:pull` → `repository:a:pull,push`), sorted, so that equal
/// needs share one cached token.
pub(crate) fn merge_scopes(scopes: &[String]) -> Vec<String> {
    let mut merged: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for s in scopes.iter().filter(|s| !s.is_empty()) {
        match s.rsplit_once(':') {
            Some((resource, actions)) => {
                let set = merged.entry(resource.to_string()).or_default();
                set.extend(
                    actions
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string),
                );
            }
            None => {
                merged.entry(s.clone()).or_default();
            }
        }
    }
    merged
        .into_iter()
        .map(|(resource, actions)| {
            if actions.is_empty() {
                resource
            } else {
                format!(
                    "{resource}:{}",
                    actions.into_iter().collect::<Vec<_>>().join(",")
                )
            }
        })
        .collect()
}

/// `repository:NAME:pull` / `repository:NAME:pull,push`.
pub(crate) fn scope(repository: &str, push: bool) -> String {
    if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_timeout_values() {
        use std::time::Duration;
        assert_eq!(super::parse_timeout("60").unwrap(), Duration::from_secs(60));
        assert_eq!(
            super::parse_timeout("30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            super::parse_timeout("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            super::parse_timeout("2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            super::parse_timeout("1m30s").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["", "0", "0s", "-1", "x", "inf", "NaN", "1e9", "1.5"] {
            let e = super::parse_timeout(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid HOIST_REGISTRY_TIMEOUT="),
                "{bad}: {e}"
            );
        }
    }

    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for _ in 0..20 {
            let d1 = p.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150));
            let d3 = p.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(600));
            assert!(p.delay(30, None) <= Duration::from_secs(3));
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(100))),
            Duration::from_secs(2)
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn scopes_merge_per_resource() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_scopes(&s(&[
                "repository:a/b:pull,push",
                "repository:a/b:push,pull",
                "repository:c:pull",
                "",
            ])),
            s(&["repository:a/b:pull,push", "repository:c:pull"])
        );
    }
}

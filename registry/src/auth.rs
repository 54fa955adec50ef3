//! Credentials: Docker's `config.json` (and podman's `REGISTRY_AUTH_FILE`,
//! same format), credential helpers, and the `WWW-Authenticate` challenge.
//!
//! Lookup order for a registry host, as the docker CLI does it:
//! `credHelpers[host]`, then `credsStore`, then `auths[host].auth`
//! (base64 `user:password`). Docker Hub is stored under
//! `https://index.docker.io/v1/`.
//!
//! The file is `REGISTRY_AUTH_FILE` when set (podman), else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A user name and secret (password or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name (`<token>` marks an identity token in Docker's helpers).
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// A credential from its parts.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credential {
        Credential {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `Basic base64(user:password)` for an `Authorization` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// Errors reading or writing credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The auth file exists but cannot be read or written.
    #[error("failed to {action} {path}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The auth file is not valid JSON.
    #[error("failed to parse auth file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("invalid `auth` entry for {registry} in {path}: {reason}")]
    BadEntry {
        /// Registry key.
        registry: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A credential helper failed.
    #[error(
        "credential helper `docker-credential-{helper} {action}` failed for {registry}: {message}"
    )]
    Helper {
        /// Helper name (`pass`, `secretservice`, …).
        helper: String,
        /// `get`, `store` or `erase`.
        action: &'static str,
        /// The registry.
        registry: String,
        /// Its stderr/stdout, or the spawn error.
        message: String,
    },
}

type Result<T> = std::result::Result<T, CredentialError>;

/// Where credentials come from. The client asks once per registry host and
/// caches the answer for its lifetime.
pub trait CredentialProvider: Send + Sync {
    /// Credentials for `registry` (a host such as `docker.io` or
    /// `127.0.0.1:5000`), or `None` for anonymous access.
    fn credentials(&self, registry: &str) -> Result<Option<Credential>>;
}

/// Fixed credentials per registry host (CLI flags, tests).
#[derive(Clone, Debug, Default)]
pub struct StaticCredentials(pub HashMap<String, Credential>);

impl CredentialProvider for StaticCredentials {
    fn credentials(&self, registry: &str) -> Result<Option<Credential>> {
        Ok(self.0.get(registry).cloned())
    }
}

/// No credentials at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anonymous;

impl CredentialProvider for Anonymous {
    fn credentials(&self, _registry: &str) -> Result<Option<Credential>> {
        Ok(None)
    }
}

/// A Docker/podman auth file (`config.json` / `auth.json`) plus the
/// credential helpers it names.
#[derive(Clone, Debug)]
pub struct AuthFile {
    path: PathBuf,
    helper_dirs: Option<Vec<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigJson {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperCredential {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl AuthFile {
    /// The file the environment designates: `REGISTRY_AUTH_FILE` (podman),
    /// else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        Self::path_from_env(|name| std::env::var_os(name))
    }

    /// [`AuthFile::default_path`] with the environment given as a lookup
    /// function (so callers and tests need not touch the process's).
    pub fn path_from_env(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(p) = var("REGISTRY_AUTH_FILE") {
            return PathBuf::from(p);
        }
        if let Some(d) = var("DOCKER_CONFIG") {
            return PathBuf::from(d).join("config.json");
        }
        let home = var("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".docker/config.json")
    }

    /// The auth file at [`AuthFile::default_path`].
    pub fn discover() -> AuthFile {
        AuthFile::at(Self::default_path())
    }

    /// An auth file at an explicit path (need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> AuthFile {
        AuthFile {
            path: path.into(),
            helper_dirs: None,
        }
    }

    /// Look for `docker-credential-*` helpers in these directories instead
    /// of `PATH` (tests; sandboxed callers).
    pub fn with_helper_dirs(mut self, dirs: Vec<PathBuf>) -> AuthFile {
        self.helper_dirs = Some(dirs);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_value(&self) -> Result<serde_json::Value> {
        match std::fs::read(&self.path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| CredentialError::Parse {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
            Err(source) => Err(CredentialError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn read(&self) -> Result<ConfigJson> {
        let value = self.read_value()?;
        serde_json::from_value(value).map_err(|source| CredentialError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// The credential helper that applies to `registry`, if any.
    pub fn helper_for(&self, registry: &str) -> Result<Option<String>> {
        let config = self.read()?;
        Ok(helper_of(&config, registry))
    }

    /// Credentials for `registry`.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        let config = self.read()?;
        if let Some(helper) = helper_of(&config, registry) {
            if let Some(c) = self.helper_get(&helper, registry)? {
                return Ok(Some(c));
            }
        }
        let wanted = normalize_key(registry);
        for (key, entry) in &config.auths {
            if normalize_key(key) != wanted {
                continue;
            }
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let bad = |reason: &str| CredentialError::BadEntry {
                    registry: key.clone(),
                    path: self.path.clone(),
                    reason: reason.to_string(),
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("not base64"))?;
                let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
                let (user, pass) = text
                    .split_once(':')
                    .ok_or_else(|| bad("not user:password"))?;
                return Ok(Some(Credential::new(user, pass)));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Credential::new(u.clone(), p.clone())));
            }
            if let Some(token) = &entry.identitytoken {
                return Ok(Some(Credential::new("<token>", token.clone())));
            }
        }
        Ok(None)
    }

    /// Save credentials for `registry` (what `hoist login` does): through
    /// the credential helper when one applies (leaving an empty `auths`
    /// entry as Docker does), else as `auths.<key>.auth`.
    pub fn store(&self, registry: &str, credential: &Credential) -> Result<()> {
        let config = self.read()?;
        let key = auth_key(registry);
        let mut value = self.read_value()?;
        let entry = if let Some(helper) = helper_of(&config, registry) {
            let input = serde_json::json!({
                "ServerURL": helper_server(registry),
                "Username": credential.username,
                "Secret": credential.password,
            });
            self.run_helper(&helper, "store", registry, input.to_string().as_bytes())?;
            serde_json::json!({})
        } else {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credential.username, credential.password));
            serde_json::json!({ "auth": auth })
        };
        let object = ensure_object(&mut value);
        let auths = ensure_object(
            object
                .entry("auths")
                .or_insert_with(|| serde_json::json!({})),
        );
        // Remove other spellings of the same registry so that only one entry
        // decides.
        let wanted = normalize_key(registry);
        auths.retain(|k, _| normalize_key(k) != wanted);
        auths.insert(key, entry);
        self.write_value(&value)
    }

    /// Forget credentials for `registry` (what `hoist logout` does). Returns
    /// whether anything was removed.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let config = self.read()?;
        let mut removed = false;
        if let Some(helper) = helper_of(&config, registry) {
            match self.run_helper(
                &helper,
                "erase",
                registry,
                helper_server(registry).as_bytes(),
            ) {
                Ok(_) => removed = true,
                Err(CredentialError::Helper { message, .. }) if is_not_found(&message) => {}
                Err(e) => return Err(e),
            }
        }
        let mut value = self.read_value()?;
        let wanted = normalize_key(registry);
        if let Some(auths) = value.get_mut("auths").and_then(|a| a.as_object_mut()) {
            let before = auths.len();
            auths.retain(|k, _| normalize_key(k) != wanted);
            if auths.len() != before {
                removed = true;
                self.write_value(&value)?;
            }
        }
        Ok(removed)
    }

    fn write_value(&self, value: &serde_json::Value) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let io_err = |action, source| CredentialError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err("create the directory of", e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(dir)
            .map_err(|e| io_err("create a temporary file beside", e))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("set permissions of a temporary file beside", e))?;
        let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        tmp.write_all(text.as_bytes())
            .map_err(|e| io_err("write", e))?;
        tmp.as_file().sync_all().map_err(|e| io_err("fsync", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err("replace", e.error))?;
        Ok(())
    }

    fn helper_get(&self, helper: &str, registry: &str) -> Result<Option<Credential>> {
        let out = match self.run_helper(helper, "get", registry, helper_server(registry).as_bytes())
        {
            Ok(out) => out,
            Err(CredentialError::Helper { message, .. }) if is_not_found(&message) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let parsed: HelperCredential =
            serde_json::from_slice(&out).map_err(|e| CredentialError::Helper {
                helper: helper.to_string(),
                action: "get",
                registry: registry.to_string(),
                message: format!("invalid JSON output: {e}"),
            })?;
        if parsed.username.is_empty() && parsed.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential::new(parsed.username, parsed.secret)))
    }

    fn run_helper(
        &self,
        helper: &str,
        action: &'static str,
        registry: &str,
        input: &[u8],
    ) -> Result<Vec<u8>> {
        let fail = |message: String| CredentialError::Helper {
            helper: helper.to_string(),
            action,
            registry: registry.to_string(),
            message,
        };
        let program = format!("docker-credential-{helper}");
        let path = match &self.helper_dirs {
            Some(dirs) => dirs
                .iter()
                .map(|d| d.join(&program))
                .find(|p| p.is_file())
                .ok_or_else(|| fail(format!("`{program}` not found")))?,
            None => PathBuf::from(&program),
        };
        let mut child = Command::new(&path)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run `{program}`: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| fail(format!("cannot write to `{program}`: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("cannot wait for `{program}`: {e}")))?;
        if !out.status.success() {
            let mut message = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !stderr.is_empty() {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&stderr);
            }
            if message.is_empty() {
                message = format!("exited with {}", out.status);
            }
            return Err(fail(message));
        }
        Ok(out.stdout)
    }
}

/// The auth files credentials are read from, in containers/image's order
/// (podman, buildah, skopeo); the first file with an entry for a registry
/// (through its credential helper or `auths`) answers:
///
/// 1. `REGISTRY_AUTH_FILE` when set, and then only it;
/// 2. `$XDG_RUNTIME_DIR/containers/auth.json` (podman login's file; without
///    `XDG_RUNTIME_DIR`, `/run/containers/UID/auth.json`);
/// 3. `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/…`);
/// 4. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
///
/// `hoist login` writes [`AuthFile::default_path`] (Docker's file unless
/// `REGISTRY_AUTH_FILE` names another).
#[derive(Clone, Debug)]
pub struct AuthChain {
    files: Vec<AuthFile>,
}

impl AuthChain {
    /// The paths, in reading order, for an environment given as a lookup.
    pub fn paths_from_env(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(p) = var("REGISTRY_AUTH_FILE") {
            return vec![PathBuf::from(p)];
        }
        let mut paths = Vec::new();
        match hoist_untrusted::xdg::runtime_dir_from(&env) {
            Some(dir) => paths.push(dir.join("containers/auth.json")),
            None => {
                use std::os::unix::fs::MetadataExt;
                if let Ok(meta) = std::fs::metadata("/proc/self") {
                    paths.push(PathBuf::from(format!(
                        "/run/containers/{}/auth.json",
                        meta.uid()
                    )));
                }
            }
        }
        if let Some(config) = hoist_untrusted::xdg::config_home_from(&env) {
            paths.push(config.join("containers/auth.json"));
        }
        paths.push(AuthFile::path_from_env(&env));
        paths
    }

    /// The chain this process's environment designates.
    pub fn discover() -> AuthChain {
        AuthChain::of(Self::paths_from_env(|name| std::env::var_os(name)))
    }

    /// A chain of explicit files (read in this order).
    pub fn of(paths: Vec<PathBuf>) -> AuthChain {
        AuthChain {
            files: paths.into_iter().map(AuthFile::at).collect(),
        }
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[AuthFile] {
        &self.files
    }

    /// The credentials for `registry` and the file that gave them.
    pub fn find(&self, registry: &str) -> Result<Option<(Credential, &AuthFile)>> {
        for file in &self.files {
            if let Some(c) = file.get(registry)? {
                return Ok(Some((c, file)));
            }
        }
        Ok(None)
    }
}

impl CredentialProvider for AuthChain {
    fn credentials(&self, registry: &str) -> Result<Option<Credential>> {
        Ok(self.find(registry)?.map(|(c, file)| {
            tracing::debug!(registry, file = %file.path().display(), "credentials");
            c
        }))
    }
}

impl CredentialProvider for AuthFile {
    fn credentials(&self, registry: &str) -> Result<Option<Credential>> {
        self.get(registry)
    }
}

fn is_not_found(message: &str) -> bool {
    message.contains("credentials not found")
}

fn helper_of(config: &ConfigJson, registry: &str) -> Option<String> {
    let wanted = normalize_key(registry);
    config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_key(k) == wanted)
        .map(|(_, v)| v.clone())
        .or_else(|| config.creds_store.clone())
        .filter(|h| !h.is_empty())
}

fn ensure_object(v: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    if !v.is_object() {
        *v = serde_json::json!({});
    }
    match v.as_object_mut() {
        Some(o) => o,
        None => unreachable!("value was just made an object"),
    }
}

/// The registry host a user typed for `hoist login`/`logout`
/// (`https://index.docker.io/v1/`, `registry-1.docker.io`, `http://h:5000/`)
/// reduced to the form references use (`docker.io`, `h:5000`).
pub fn normalize_registry(input: &str) -> String {
    normalize_key(input)
}

/// The `config.json` key for a registry host.
pub fn auth_key(registry: &str) -> String {
    if normalize_key(registry) == "docker.io" {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// What a credential helper is given as the server URL.
fn helper_server(registry: &str) -> String {
    auth_key(registry)
}

/// Reduce `https://host/v1/`, `host`, `index.docker.io` to one spelling.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host.to_string(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to send back.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parse the first challenge of a `WWW-Authenticate` header value that
    /// we support (Bearer preferred over Basic).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parse_params(rest);
                let realm = params.get("realm")?.clone();
                Some(Challenge::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                })
            }
            _ => None,
        }
    }
}

/// `a="x", b=y, c="q\"uote"` → map (keys lowercased).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_file_location_follows_podman_then_docker() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            AuthFile::path_from_env(env(&[
                ("REGISTRY_AUTH_FILE", "/run/auth.json"),
                ("DOCKER_CONFIG", "/d"),
                ("HOME", "/h"),
            ])),
            PathBuf::from("/run/auth.json")
        );
        assert_eq!(
            AuthFile::path_from_env(env(&[("DOCKER_CONFIG", "/d"), ("HOME", "/h")])),
            PathBuf::from("/d/config.json")
        );
        assert_eq!(
            AuthFile::path_from_env(env(&[("REGISTRY_AUTH_FILE", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.docker/config.json")
        );
    }

    #[test]
    fn credentials_are_read_in_containers_image_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            AuthChain::paths_from_env(env(&[
                ("REGISTRY_AUTH_FILE", "/a.json"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ])),
            [PathBuf::from("/a.json")]
        );
        assert_eq!(
            AuthChain::paths_from_env(env(&[
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("XDG_CONFIG_HOME", "relative"),
                ("DOCKER_CONFIG", "/d"),
                ("HOME", "/h"),
            ])),
            [
                PathBuf::from("/run/user/1000/containers/auth.json"),
                PathBuf::from("/h/.config/containers/auth.json"),
                PathBuf::from("/d/config.json"),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let (podman, docker) = (dir.path().join("auth.json"), dir.path().join("config.json"));
        let chain = AuthChain::of(vec![podman.clone(), docker.clone()]);
        AuthFile::at(&docker)
            .store("r.example", &Credential::new("d", "1"))
            .unwrap();
        let (c, from) = chain.find("r.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), from.path()), ("d", docker.as_path()));
        AuthFile::at(&podman)
            .store("r.example", &Credential::new("p", "2"))
            .unwrap();
        let (c, from) = chain.find("r.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), from.path()), ("p", podman.as_path()));
        assert!(chain.find("other.example").unwrap().is_none());
    }

    #[test]
    fn registry_names_typed_by_users() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_registry("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_registry("quay.io"), "quay.io");
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="hoist-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="http://127.0.0.1:1/t", scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn auth_file_round_trip_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}},"psFormat":"table"}"#,
        )
        .unwrap();
        let file = AuthFile::at(&path);
        assert_eq!(
            file.get("docker.io").unwrap(),
            Some(Credential::new("hub", "secret"))
        );
        file.store("127.0.0.1:5000", &Credential::new("u", "p:w"))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"]["127.0.0.1:5000"]["auth"], "dTpwOnc=");
        assert_eq!(
            file.get("127.0.0.1:5000").unwrap(),
            Some(Credential::new("u", "p:w"))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.erase("127.0.0.1:5000").unwrap());
        assert!(!file.erase("127.0.0.1:5000").unwrap());
        assert_eq!(file.get("127.0.0.1:5000").unwrap(), None);
        assert!(file.get("docker.io").unwrap().is_some());
        file.store("docker.io", &Credential::new("a", "b")).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["auths"].as_object().unwrap().len(), 1);
        assert!(v["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string());
    }

    #[test]
    fn credential_helpers_are_run_with_the_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let store_file = dir.path().join("stored");
        let helper = bin.join("docker-credential-fake");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread -r input || true\ncase \"$1\" in\n get) if [ \"$input\" = \"reg.example:5000\" ]; then echo '{{\"ServerURL\":\"reg.example:5000\",\"Username\":\"helper-user\",\"Secret\":\"helper-pass\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi;;\n store) echo \"$input\" > {0};;\n erase) echo \"erased $input\" > {0};;\nesac\n",
                store_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example:5000":"fake"}}"#).unwrap();
        let file = AuthFile::at(&path).with_helper_dirs(vec![bin.clone()]);
        assert_eq!(
            file.get("reg.example:5000").unwrap(),
            Some(Credential::new("helper-user", "helper-pass"))
        );
        assert_eq!(file.get("other.example").unwrap(), None);
        file.store("reg.example:5000", &Credential::new("x", "y"))
            .unwrap();
        let stored = std::fs::read_to_string(&store_file).unwrap();
        assert!(stored.contains(r#""Secret":"y""#), "{stored}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["auths"]["reg.example:5000"], serde_json::json!({}));
        assert_eq!(v["credHelpers"]["reg.example:5000"], "fake");
        assert!(file.erase("reg.example:5000").unwrap());
        assert_eq!(
            std::fs::read_to_string(&store_file).unwrap().trim(),
            "erased reg.example:5000"
        );
        // A helper that is missing is reported by name.
        std::fs::write(&path, r#"{"credsStore":"missing"}"#).unwrap();
        let err = file.get("x.example").unwrap_err().to_string();
        assert!(err.contains("docker-credential-missing"), "{err}");
    }
}

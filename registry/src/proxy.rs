//! `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case),
//! read once and applied explicitly to every HTTP client hoist builds
//! (registries, `ADD https://…`, tarball contexts) instead of relying on a
//! dependency's defaults.
//!
//! The rules are Go's `net/http/httpproxy` (Docker, containers/image):
//! the upper-case name wins over the lower-case one; https URLs use
//! `HTTPS_PROXY`, http URLs `HTTP_PROXY`; `NO_PROXY` is a comma list of
//! host names (a name also matches its subdomains, `.example.com` likewise),
//! IP addresses, CIDR ranges, or `*`; loopback (`localhost`, 127.0.0.0/8,
//! `::1`) is never proxied. `ALL_PROXY`, curl's, is the fallback for both.

pub use hoist_untrusted::proxy::BUILD_ARG_NAMES;

/// A proxy variable holds something that is not a URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var} `{}`: {message}", hoist_untrusted::text::escape_except(&redact(value), &[]))]
pub struct ProxyError {
    /// The variable.
    pub var: &'static str,
    /// Its value (shown without its password).
    pub value: String,
    /// Why it is unusable.
    pub message: String,
}

/// The proxy settings of an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `(variable, URL)` for http URLs.
    pub http: Option<(&'static str, String)>,
    /// `(variable, URL)` for https URLs.
    pub https: Option<(&'static str, String)>,
    /// `(variable, URL)` for both when the specific one is unset.
    pub all: Option<(&'static str, String)>,
    /// The `NO_PROXY` list as given (without the loopback entries).
    pub no_proxy: String,
}

/// Always direct, as Go's httpproxy decides.
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

impl ProxySettings {
    /// From this process's environment.
    pub fn from_env() -> ProxySettings {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable source (tests, a job's environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ProxySettings {
        let pick = |upper: &'static str, lower: &'static str| {
            [upper, lower].into_iter().find_map(|name| {
                get(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        ProxySettings {
            http: pick("HTTP_PROXY", "http_proxy"),
            https: pick("HTTPS_PROXY", "https_proxy"),
            all: pick("ALL_PROXY", "all_proxy"),
            no_proxy: pick("NO_PROXY", "no_proxy")
                .map(|(_, v)| v)
                .unwrap_or_default(),
        }
    }

    /// True when no proxy is set.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none() && self.all.is_none()
    }

    /// `builder` with exactly these proxies (reqwest's own reading of the
    /// environment turned off).
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, ProxyError> {
        builder = builder.no_proxy();
        let no_proxy = || {
            let list = if self.no_proxy.trim().is_empty() {
                LOOPBACK.to_string()
            } else {
                format!("{},{LOOPBACK}", self.no_proxy)
            };
            reqwest::NoProxy::from_string(&list)
        };
        let make = |(var, url): &(&'static str, String),
                    ctor: fn(&str) -> reqwest::Result<reqwest::Proxy>| {
            ctor(url)
                .map(|p| p.no_proxy(no_proxy()))
                .map_err(|e| ProxyError {
                    var,
                    value: url.clone(),
                    // reqwest says `builder error`; the reason is its source.
                    message: hoist_untrusted::text::error_chain(&e),
                })
        };
        // reqwest tries proxies in the order added: the specific ones first.
        if let Some(http) = &self.http {
            builder = builder.proxy(make(http, |u| reqwest::Proxy::http(u))?);
        }
        if let Some(https) = &self.https {
            builder = builder.proxy(make(https, |u| reqwest::Proxy::https(u))?);
        }
        if let Some(all) = &self.all {
            builder = builder.proxy(make(all, |u| reqwest::Proxy::all(u))?);
        }
        Ok(builder)
    }

    /// One line per setting for `hoist info`, passwords hidden.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (var, url) in [&self.http, &self.https, &self.all].into_iter().flatten() {
            lines.push(format!("{var}={}", redact(url)));
        }
        if !self.no_proxy.is_empty() {
            lines.push(format!("NO_PROXY={}", self.no_proxy));
        }
        lines
    }
}

/// The proxy variables of this process's environment that RUN steps get as
/// Docker's predefined build args (`NAME=value`, in [`BUILD_ARG_NAMES`]
/// order).
pub fn build_args_from_env() -> Vec<(String, String)> {
    BUILD_ARG_NAMES
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), v))
        })
        .collect()
}

/// `http://user:secret@proxy:3128` → `http://user:***@proxy:3128`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_userinfo(url);
    };
    format!("{scheme}://{}", redact_userinfo(rest))
}

fn redact_userinfo(rest: &str) -> String {
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{user}:***{}", &rest[at..])
        }
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> ProxySettings {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxySettings::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn upper_case_wins_and_empty_values_are_unset() {
        let s = settings(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:1"),
            ("HTTPS_PROXY", " "),
            ("https_proxy", "http://lower:2"),
            ("no_proxy", "internal.example"),
        ]);
        assert_eq!(s.http, Some(("HTTP_PROXY", "http://upper:1".to_string())));
        assert_eq!(s.https, Some(("https_proxy", "http://lower:2".to_string())));
        assert_eq!(s.no_proxy, "internal.example");
        assert!(settings(&[]).is_empty());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("http://u:p@proxy:3128/"), "http://u:***@proxy:3128/");
        assert_eq!(redact("u:p@proxy:3128"), "u:***@proxy:3128");
        assert_eq!(redact("http://proxy:3128"), "http://proxy:3128");
        let s = settings(&[("HTTPS_PROXY", "http://me:hunter2@proxy:3128")]);
        assert_eq!(s.describe(), ["HTTPS_PROXY=http://me:***@proxy:3128"]);
        let err = s.apply(reqwest::Client::builder()).map(|_| ()).err();
        assert!(err.is_none());
        let bad = settings(&[("HTTP_PROXY", "http://me:hunter2@[bad")]);
        let err = bad
            .apply(reqwest::Client::builder())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("invalid HTTP_PROXY `http://me:***@[bad`"),
            "{err}"
        );
    }
}

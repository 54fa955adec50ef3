//! The proxy variables Docker and BuildKit treat as predefined build args.

/// The variables Docker passes to RUN steps as predefined build args
/// (usable without an `ARG`, kept out of the image's history and the cache
/// key), in BuildKit's order: upper case, then lower case.
pub const BUILD_ARG_NAMES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `name` is one of [`BUILD_ARG_NAMES`] (exactly: `Http_Proxy` is
/// an ordinary build arg, as in BuildKit).
pub fn is_build_arg(name: &str) -> bool {
    BUILD_ARG_NAMES.contains(&name)
}

//! The bodies of the fuzz targets in `autobuild/fuzz` (cargo-fuzz), shared
//! with the test that replays their corpora in `cargo test`
//! (`tests/it/fuzz_corpus.rs`): a crash found by the fuzzer and saved to the
//! corpus fails `cargo test` too.

use std::path::Path;

use crate::config::{Config, SourceKind};
use crate::webhook::{parse_event, Event, Provider};

const PROVIDERS: [Provider; 4] = [
    Provider::GitHub,
    Provider::Bitbucket,
    Provider::GitLab,
    Provider::Gitea,
];

/// A webhook body as any sender may post it, under every provider's push
/// and ping events: signature checks and parsing never panic, and a push
/// names refs that the queue's ref split takes or skips without panicking.
pub fn webhook(body: &[u8]) {
    for provider in PROVIDERS {
        let signature = provider.sign("secret", body);
        assert!(provider.verify(Some("secret"), Some(signature.as_bytes()), body));
        let _ = provider.verify(Some("secret"), Some(body), body);
        for event in [
            "push",
            "ping",
            "Push Hook",
            "Tag Push Hook",
            "repo:push",
            "diagnostics:ping",
        ] {
            if let Ok(Event::Push(refs)) = parse_event(provider, Some(event), body) {
                for r in refs {
                    let _ = SourceKind::split(&r.git_ref);
                }
            }
        }
    }
}

/// An autobuild config file's text: parsing never panics, and every repo
/// of a config that parses can be asked for the plan of a ref.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("/fuzz/autobuild.toml")) {
        Ok(config) => {
            for repo in &config.repos {
                for git_ref in ["refs/heads/main", "refs/tags/v1.2.3", "refs/pull/1/head"] {
                    let _ = repo.plan(git_ref, "0123456789abcdef0123456789abcdef01234567");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

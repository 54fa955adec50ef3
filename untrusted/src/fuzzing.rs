//! The bodies of the fuzz targets in `untrusted/fuzz` (cargo-fuzz), shared
//! with the test that replays their corpora in `cargo test`
//! (`tests/fuzz_corpus.rs`): a crash found by the fuzzer and saved to the
//! corpus fails `cargo test` too.

use crate::reference::Reference;

/// An image reference as a user, a Dockerfile or a registry gives it:
/// parsing never panics; what parses prints in a form that parses back to
/// the same reference; an error message holds no raw control character.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [Reference::parse(text), Reference::parse_bare(text)] {
        match parsed {
            Ok(r) => {
                let printed = r.to_string();
                let again = Reference::parse_bare(&printed)
                    .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
                assert_eq!(again, r, "{text:?} printed as {printed:?}");
                let _ = (r.familiar(), r.familiar_name(), r.name(), r.api_host());
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    !message.chars().any(char::is_control),
                    "unescaped control character in {message:?}"
                );
            }
        }
    }
}

//! Cache keys: what enters them and what does not, and their stability.

use hoist_builder::{CancellationToken, CanonicalBytes, CanonicalEncoder, Solver, VertexMeta};
use proptest::prelude::*;

use crate::util::Harness;

/// Golden value: pins how cache keys are derived from definitions (the encoding and
/// the key derivation). If this changes, every cache key users have recorded stops
/// matching. Change it only together with `FORMAT_VERSION` (see docs/solver.md).
#[tokio::test]
async fn golden_cache_keys_pin_the_derivation() {
    let mut h = Harness::new();
    let base = h.add(h.fake("base").definition("alpine@sha256:0000"), &[]);
    let run = h.add(h.fake("run").definition("make"), &[base]);
    let copy = h.add(h.fake("copy").content_addressed().selector("/app"), &[run]);
    let solution = h.solve(&[base, run, copy]).await.unwrap();
    let keys: Vec<String> = solution.cache_keys.iter().map(|k| k.0.hex()).collect();
    assert_eq!(
        keys,
        [
            "9036fe5843a0908510d8f8e7c7667d0b8a7bfcf0ec0bf0fcb99a569a815dc56b",
            "047c0481d6f1df07f4a3681e699b2da6cb2ca6b74cec2fb24323307c495b9d97",
            "883718405e8e3f8ae5db6f9bb03b7586a72a74b93494e0826b01dacdc9de136d",
        ]
    );
}

#[tokio::test]
async fn metadata_stays_out_of_the_key() {
    let mut h = Harness::new();
    let plain = h.add(h.fake("a"), &[]);
    let described = h
        .graph
        .add(
            h.fake("a"),
            &[],
            VertexMeta::new("[stage 1/3] RUN a")
                .with_description("Dockerfile:9: RUN a")
                .with_ignore_cache(true),
        )
        .unwrap();
    let solution = h.solve(&[plain, described]).await.unwrap();
    assert_eq!(solution.cache_keys[0], solution.cache_keys[1]);
}

#[tokio::test]
async fn selectors_and_input_order_enter_the_key() {
    let mut h = Harness::new();
    let x = h.add(h.fake("x"), &[]);
    let y = h.add(h.fake("y"), &[]);
    let all = h.add(h.fake("copy"), &[x]);
    let app = h.add(h.fake("copy").selector("/app"), &[x]);
    let lib = h.add(h.fake("copy").selector("/lib"), &[x]);
    let xy = h.add(h.fake("join"), &[x, y]);
    let yx = h.add(h.fake("join"), &[y, x]);
    let keys = h.solve(&[all, app, lib, xy, yx]).await.unwrap().cache_keys;
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i], keys[j], "targets {i} and {j} share a key");
        }
    }
}

fn key_of(definitions: &[String]) -> hoist_builder::CacheKey {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut h = Harness::new();
    let mut previous = Vec::new();
    for definition in definitions {
        let vertex = h.add(h.fake("op").definition(definition), &previous);
        previous = vec![vertex];
    }
    let solver: Solver<String> = h.solver();
    let target = previous[0];
    runtime
        .block_on(solver.solve(&h.graph, &[target], &CancellationToken::new()))
        .unwrap()
        .cache_keys[0]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Chains of ops whose definitions differ anywhere get different target keys.
    #[test]
    fn different_definitions_give_different_keys(
        a in proptest::collection::vec("[ab]{0,2}", 1..4),
        b in proptest::collection::vec("[ab]{0,2}", 1..4),
    ) {
        prop_assert_eq!(a == b, key_of(&a) == key_of(&b));
    }
}

#[test]
fn definitions_are_canonical_bytes_not_hashes() {
    // Two encoders fed the same fields in the same order produce the same bytes:
    // nothing process-dependent (hash seeds, addresses) enters a definition.
    let encode = || -> CanonicalBytes {
        CanonicalEncoder::new("exec", 1)
            .pairs("env", [("A", "1"), ("B", "2")])
            .finish()
    };
    assert_eq!(encode(), encode());
}

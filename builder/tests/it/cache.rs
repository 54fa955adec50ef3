//! Cache hits, misses, content-based keys and the no-cache flags.

use std::sync::{Arc, Mutex};

use hoist_builder::{CacheIndex, VertexOutcome};

use crate::util::Harness;

#[tokio::test]
async fn second_build_runs_zero_execs_and_skips_inputs_of_the_hit() {
    let mut h = Harness::new();
    let build = |h: &mut Harness| {
        let a = h.add(h.fake("a"), &[]);
        let b = h.add(h.fake("b"), &[a]);
        h.add(h.fake("c"), &[b])
    };
    let c = build(&mut h);
    let first = h.solve(&[c]).await.unwrap();
    assert_eq!(first.outputs, ["c(b(a()))"]);
    assert_eq!(
        h.all_execs(),
        [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
    );

    h.next_build();
    let c = build(&mut h);
    let second = h.solve(&[c]).await.unwrap();
    assert_eq!(second.outputs, first.outputs);
    assert_eq!(second.cache_keys, first.cache_keys);
    // Zero new execs; the target hit, so its inputs were not even loaded.
    assert_eq!(
        h.all_execs(),
        [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
    );
    assert_eq!(h.event_lines(), ["cached c"]);
    assert_eq!(second.outcomes.len(), 1);
    assert_eq!(second.outcomes[&c], VertexOutcome::Cached);
}

#[tokio::test]
async fn changing_one_input_reruns_only_its_dependents() {
    let mut h = Harness::new();
    let build = |h: &mut Harness, x_definition: &str| {
        let x = h.add(h.fake("x").definition(x_definition), &[]);
        let y = h.add(h.fake("y"), &[x]);
        let z = h.add(h.fake("z"), &[]);
        let t = h.add(h.fake("t"), &[y, z]);
        (z, t)
    };
    let (_, t) = build(&mut h, "v1");
    h.solve(&[t]).await.unwrap();
    h.reset_counts();

    h.next_build();
    let (z, t) = build(&mut h, "v2");
    let solution = h.solve(&[t]).await.unwrap();
    assert_eq!(solution.outputs, ["t(y(x()),z())"]);
    assert_eq!(
        h.all_execs(),
        [("t".into(), 1), ("x".into(), 1), ("y".into(), 1)]
    );
    assert_eq!(solution.outcomes[&z], VertexOutcome::Cached);
}

#[tokio::test]
async fn content_addressed_input_hits_when_its_content_is_unchanged() {
    let mut h = Harness::new();
    // `s` stands for a stage whose definition changes while the files COPY selects
    // from it stay the same; `copy` addresses `s` by content.
    let build = |h: &mut Harness, s_definition: &str, s_output: &str| {
        let s = h.add(h.fake("s").definition(s_definition).output(s_output), &[]);
        let copy = h.add(h.fake("copy").content_addressed().selector("/app"), &[s]);
        h.add(h.fake("run"), &[copy])
    };
    let run = build(&mut h, "v1", "app-files");
    let first = h.solve(&[run]).await.unwrap();
    assert_eq!(first.outputs, ["run(copy(app-files))"]);

    h.next_build();
    let run = build(&mut h, "v2", "app-files");
    let second = h.solve(&[run]).await.unwrap();
    // `s` changed, so it re-ran (its output was needed to hash the content), but the
    // content was the same: `copy` hit by its content key, and `run`, keyed on
    // `copy`'s content key, hit too.
    assert_eq!(
        h.all_execs(),
        [("copy".into(), 1), ("run".into(), 1), ("s".into(), 2)]
    );
    assert_eq!(h.event_lines(), ["started s", "completed s", "cached run"]);
    assert_eq!(second.cache_keys, first.cache_keys);

    h.next_build();
    let run = build(&mut h, "v3", "other-files");
    let third = h.solve(&[run]).await.unwrap();
    assert_eq!(third.outputs, ["run(copy(other-files))"]);
    assert_eq!(
        h.all_execs(),
        [("copy".into(), 2), ("run".into(), 2), ("s".into(), 3)]
    );
    assert_ne!(third.cache_keys, first.cache_keys);
}

#[tokio::test]
async fn definition_key_hit_skips_hashing_content() {
    let mut h = Harness::new();
    let build = |h: &mut Harness| {
        let s = h.add(h.fake("s"), &[]);
        let copy = h.add(h.fake("copy").content_addressed(), &[s]);
        h.add(h.fake("run"), &[copy])
    };
    let run = build(&mut h);
    let first = h.solve(&[run]).await.unwrap();
    assert_eq!(h.content_digests("copy"), 1);

    h.next_build();
    let run = build(&mut h);
    let second = h.solve(&[run]).await.unwrap();
    // Cache-fast: `copy`'s definition-based key hit and its record carried the
    // content-based key, so `run`'s key was known without hashing or loading `s`.
    assert_eq!(h.content_digests("copy"), 1);
    assert_eq!(h.event_lines(), ["cached run"]);
    assert_eq!(second.cache_keys, first.cache_keys);
    assert_eq!(h.execs("s"), 1);
}

#[tokio::test]
async fn source_digest_decides_whether_a_context_op_hits() {
    let mut h = Harness::new();
    let files = Arc::new(Mutex::new("main.c v1".to_owned()));
    let build = |h: &mut Harness| {
        let context = h.add(h.fake("context").source(files.clone()), &[]);
        let copy = h.add(h.fake("copy"), &[context]);
        h.add(h.fake("make"), &[copy])
    };
    let make = build(&mut h);
    assert_eq!(
        h.solve(&[make]).await.unwrap().outputs,
        ["make(copy(main.c v1))"]
    );

    h.next_build();
    let make = build(&mut h);
    h.solve(&[make]).await.unwrap();
    assert_eq!(h.event_lines(), ["cached make"]);

    *files.lock().unwrap() = "main.c v2".to_owned();
    h.next_build();
    let make = build(&mut h);
    let solution = h.solve(&[make]).await.unwrap();
    assert_eq!(solution.outputs, ["make(copy(main.c v2))"]);
    assert_eq!(
        h.all_execs(),
        [
            ("context".into(), 2),
            ("copy".into(), 2),
            ("make".into(), 2)
        ]
    );
}

#[tokio::test]
async fn no_cache_reruns_everything_and_records_the_new_results() {
    let mut h = Harness::new();
    let build = |h: &mut Harness, a_output: &str, no_cache: bool| {
        let a = h.add(h.fake("a").output(a_output), &[]);
        let b = h.add(h.fake("b"), &[a]);
        h.graph.set_ignore_cache(a, no_cache).unwrap();
        h.graph.set_ignore_cache(b, no_cache).unwrap();
        b
    };
    let b = build(&mut h, "old", false);
    assert_eq!(h.solve(&[b]).await.unwrap().outputs, ["b(old)"]);

    // Same definitions (same keys), but `a` now produces something else: only a
    // re-run can notice.
    h.next_build();
    let b = build(&mut h, "new", true);
    assert_eq!(h.solve(&[b]).await.unwrap().outputs, ["b(new)"]);
    assert_eq!(h.all_execs(), [("a".into(), 2), ("b".into(), 2)]);

    // The re-run's results replaced the old records.
    h.next_build();
    let b = build(&mut h, "ignored", false);
    assert_eq!(h.solve(&[b]).await.unwrap().outputs, ["b(new)"]);
    assert_eq!(h.event_lines(), ["cached b"]);
}

#[tokio::test]
async fn no_cache_filter_reruns_that_stage_even_when_its_consumer_hits() {
    let mut h = Harness::new();
    let build = |h: &mut Harness, filtered: bool| {
        let base = h.add(h.fake("base"), &[]);
        let dep1 = h.add(h.fake("dep1"), &[base]);
        let dep2 = h.add(h.fake("dep2"), &[dep1]);
        let fin = h.add(h.fake("final"), &[dep2]);
        h.graph.set_ignore_cache(dep1, filtered).unwrap();
        h.graph.set_ignore_cache(dep2, filtered).unwrap();
        fin
    };
    let fin = build(&mut h, false);
    h.solve(&[fin]).await.unwrap();
    h.reset_counts();

    h.next_build();
    let fin = build(&mut h, true);
    let solution = h.solve(&[fin]).await.unwrap();
    assert_eq!(solution.outputs, ["final(dep2(dep1(base())))"]);
    assert_eq!(h.all_execs(), [("dep1".into(), 1), ("dep2".into(), 1)]);
    let mut lines = h.event_lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "cached base",
            "cached final",
            "completed dep1",
            "completed dep2",
            "started dep1",
            "started dep2"
        ]
    );
}

#[tokio::test]
async fn a_forgotten_record_is_rebuilt_from_its_inputs() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let b = h.add(h.fake("b"), &[a]);
    let first = h.solve(&[b]).await.unwrap();
    // What garbage collection of b's snapshot amounts to for the index.
    assert!(h.index.remove(&first.cache_keys[0]));
    assert!(h.index.get(&first.cache_keys[0]).unwrap().is_none());

    let second = h.solve(&[b]).await.unwrap();
    assert_eq!(second.outputs, first.outputs);
    assert_eq!(second.outcomes[&a], VertexOutcome::Cached);
    assert!(matches!(
        second.outcomes[&b],
        VertexOutcome::Executed { .. }
    ));
    assert_eq!(h.all_execs(), [("a".into(), 1), ("b".into(), 2)]);
}

#[tokio::test]
async fn identical_vertices_run_once_per_build() {
    let mut h = Harness::new();
    let base = h.add(h.fake("base"), &[]);
    // Two stages that lower to the same op on the same input, as two
    // `RUN apt-get update` after the same FROM would.
    let first = h.add(h.fake("update"), &[base]);
    let second = h.add(h.fake("update"), &[base]);
    let solution = h.solve(&[first, second]).await.unwrap();
    assert_eq!(solution.outputs, ["update(base())", "update(base())"]);
    assert_eq!(solution.cache_keys[0], solution.cache_keys[1]);
    assert_eq!(h.all_execs(), [("base".into(), 1), ("update".into(), 1)]);
}

#[tokio::test]
async fn a_file_index_keeps_the_cache_across_solver_instances() {
    use hoist_builder::{CancellationToken, FileCacheIndex, Solver};

    let root = tempfile::tempdir().unwrap();
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let copy = h.add(h.fake("copy").content_addressed(), &[a]);
    let run = h.add(h.fake("run"), &[copy]);
    // A new index and solver each time, as a new `hoist build` process would.
    let solver = || {
        Solver::new(Arc::new(
            FileCacheIndex::<String>::open(root.path()).unwrap(),
        ))
    };
    let cancel = CancellationToken::new();
    let first = solver().solve(&h.graph, &[run], &cancel).await.unwrap();
    let second = solver().solve(&h.graph, &[run], &cancel).await.unwrap();
    assert_eq!(second.outputs, first.outputs);
    assert_eq!(second.outcomes.len(), 1);
    assert_eq!(second.outcomes[&run], VertexOutcome::Cached);
    assert_eq!(
        h.all_execs(),
        [("a".into(), 1), ("copy".into(), 1), ("run".into(), 1)]
    );
    let _ = (a, copy);
}

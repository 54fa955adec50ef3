//! Failures and cancellation: who stops, what is reported, what is recorded.

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoist_builder::{
    CacheIndex, CacheIndexAction, CacheIndexError, CacheKey, CacheRecord, CancellationToken, Event,
    OpAction, SolveError, Solver,
};
use tokio::sync::Notify;

use crate::hook;
use crate::util::Harness;

const HANG_GUARD: Duration = Duration::from_secs(60);

/// A hook that announces it started, then waits for cancellation and reports that it
/// saw it.
fn wait_for_cancel(started: &Arc<Notify>, observed: &Arc<AtomicBool>) -> impl crate::util::HookFn {
    let started = started.clone();
    let observed = observed.clone();
    hook!(|context| {
        let started = started.clone();
        let observed = observed.clone();
        async move {
            started.notify_one();
            context.cancelled().await;
            observed.store(true, Ordering::SeqCst);
            Err("killed: build cancelled".into())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_a_running_sibling_and_names_the_failing_vertex() {
    let mut h = Harness::new();
    h.jobs = 2;
    let sibling_started = Arc::new(Notify::new());
    let observed = Arc::new(AtomicBool::new(false));
    let long = h.add(
        h.fake("long")
            .hook(wait_for_cancel(&sibling_started, &observed)),
        &[],
    );
    let failing = {
        let sibling_started = sibling_started.clone();
        h.fake("failing").hook(hook!(|context| {
            let sibling_started = sibling_started.clone();
            async move {
                // Fail only once the sibling is surely running.
                sibling_started.notified().await;
                context.log(hoist_builder::LogStream::Stdout, b"cc -c main.c\n");
                context.log(
                    hoist_builder::LogStream::Stderr,
                    b"main.c:1: error: expected ';'",
                );
                Err("exit status 2".into())
            }
        }))
    };
    let failing = h.add(failing, &[]);
    let join = h.add(h.fake("join"), &[failing, long]);

    let error = tokio::time::timeout(HANG_GUARD, h.solve(&[join]))
        .await
        .expect("the sibling was never cancelled")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to execute `Dockerfile:1: failing`"
    );
    assert_eq!(error.source().unwrap().to_string(), "exit status 2");
    assert!(matches!(
        error,
        SolveError::Op { vertex, action: OpAction::Exec, .. } if vertex == failing
    ));
    assert_eq!(error.vertex(), Some(failing));
    assert!(!error.is_cancelled());
    let SolveError::Op { log_tail, .. } = &error else {
        unreachable!()
    };
    assert_eq!(log_tail, &["cc -c main.c", "main.c:1: error: expected ';'"]);
    assert!(
        observed.load(Ordering::SeqCst),
        "the sibling never saw the cancellation"
    );

    let mut lines = h.event_lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "cancelled long",
            "failed failing",
            "started failing",
            "started long"
        ]
    );
    let failed = h.events().into_iter().find_map(|event| match event {
        Event::VertexFailed { error, .. } => Some(error),
        _ => None,
    });
    assert_eq!(failed.as_deref(), Some("exit status 2"));
    assert_eq!(h.execs("join"), 0);
    assert!(
        h.index.is_empty(),
        "a failed or cancelled vertex was recorded"
    );
    let _ = long;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_running_ops_and_records_only_finished_ones() {
    let mut h = Harness::new();
    let started = Arc::new(Notify::new());
    let observed = Arc::new(AtomicBool::new(false));
    let done = h.add(h.fake("done"), &[]);
    let running = h.add(
        h.fake("running").hook(wait_for_cancel(&started, &observed)),
        &[done],
    );
    let after = h.add(h.fake("after"), &[running]);

    let cancel = CancellationToken::new();
    let targets = [after];
    let solve = h.solve_with(&targets, &cancel);
    let ctrl_c = async {
        started.notified().await;
        cancel.cancel();
    };
    let (result, ()) = tokio::time::timeout(HANG_GUARD, async { tokio::join!(solve, ctrl_c) })
        .await
        .expect("the running op never saw the cancellation");
    let error = result.unwrap_err();
    assert!(error.is_cancelled(), "{error:?}");
    assert_eq!(error.to_string(), "build cancelled");
    assert!(observed.load(Ordering::SeqCst));
    assert_eq!(h.execs("after"), 0);
    assert_eq!(
        h.event_lines(),
        [
            "started done",
            "completed done",
            "started running",
            "cancelled running"
        ]
    );
    // Only the vertex that finished before Ctrl-C is in the index.
    assert_eq!(h.index.len(), 1);
    let _ = (done, running);
}

#[tokio::test]
async fn an_already_cancelled_build_runs_nothing() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = h.solve_with(&[a], &cancel).await.unwrap_err();
    assert!(error.is_cancelled());
    assert!(h.all_execs().is_empty());
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn a_panicking_op_fails_the_build_with_its_message() {
    let mut h = Harness::new();
    let a = h.add(
        h.fake("a").hook(hook!(
            |_context| async move { panic!("index out of bounds") }
        )),
        &[],
    );
    let error = h.solve(&[a]).await.unwrap_err();
    assert_eq!(error.to_string(), "failed to execute `Dockerfile:1: a`");
    assert_eq!(
        error.source().unwrap().to_string(),
        "op panicked: index out of bounds"
    );
}

#[tokio::test]
async fn dependents_of_a_failure_never_start() {
    let mut h = Harness::new();
    let a = h.add(
        h.fake("a")
            .hook(hook!(|_context| async { Err("boom".into()) })),
        &[],
    );
    let b = h.add(h.fake("b"), &[a]);
    let c = h.add(h.fake("c"), &[b]);
    let error = h.solve(&[c]).await.unwrap_err();
    assert_eq!(error.vertex(), Some(a));
    assert_eq!(h.all_execs(), [("a".into(), 1)]);
    assert_eq!(h.event_lines(), ["started a", "failed a"]);
}

/// An index whose storage is broken.
struct BrokenIndex;

impl CacheIndex<String> for BrokenIndex {
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<String>>, CacheIndexError> {
        Err(CacheIndexError {
            action: CacheIndexAction::Get,
            key: *key,
            source: "database disk image is malformed".into(),
        })
    }

    fn put(&self, key: &CacheKey, _: &CacheRecord<String>) -> Result<(), CacheIndexError> {
        Err(CacheIndexError {
            action: CacheIndexAction::Put,
            key: *key,
            source: "database disk image is malformed".into(),
        })
    }
}

#[tokio::test]
async fn a_broken_cache_index_fails_the_build_naming_the_vertex() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let solver = Solver::new(Arc::new(BrokenIndex));
    let error = solver
        .solve(&h.graph, &[a], &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to use the cache index for `Dockerfile:1: a`"
    );
    let cause = error.source().unwrap();
    assert!(cause
        .to_string()
        .starts_with("failed to look up cache key sha256:"));
    assert_eq!(
        cause.source().unwrap().to_string(),
        "database disk image is malformed"
    );
    assert!(h.all_execs().is_empty());

    // With lookups skipped (no-cache), the failing record is what is reported.
    h.graph.set_ignore_cache(a, true).unwrap();
    let error = solver
        .solve(&h.graph, &[a], &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error
        .source()
        .unwrap()
        .to_string()
        .starts_with("failed to record cache key sha256:"));
}

#[tokio::test]
async fn a_failing_content_digest_names_the_consumer_and_runs_nothing_after() {
    let mut h = Harness::new();
    let s = h.add(h.fake("s"), &[]);
    let copy = h.add(
        h.fake("copy")
            .content_addressed()
            .digest_error("failed to read /app/main.c"),
        &[s],
    );
    let run = h.add(h.fake("run"), &[copy]);
    let error = h.solve(&[run]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to compute the content digest of an input of `Dockerfile:1: copy`"
    );
    assert_eq!(
        error.source().unwrap().to_string(),
        "failed to read /app/main.c"
    );
    assert!(matches!(
        error,
        SolveError::Op { action: OpAction::ContentDigest, vertex, .. } if vertex == copy
    ));
    // The input had to exist to be hashed; nothing after the failure ran.
    assert_eq!(h.all_execs(), [("s".into(), 1)]);
}

#[tokio::test]
async fn a_failing_source_digest_names_the_source() {
    let mut h = Harness::new();
    let files = Arc::new(std::sync::Mutex::new(String::new()));
    let context = h.add(
        h.fake("context")
            .source(files)
            .digest_error("failed to walk /src: permission denied"),
        &[],
    );
    let copy = h.add(h.fake("copy"), &[context]);
    let error = h.solve(&[copy]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to compute the source digest of `Dockerfile:1: context`"
    );
    assert_eq!(error.vertex(), Some(context));
    assert!(h.all_execs().is_empty());
}

#[tokio::test]
async fn dropping_the_solve_cancels_the_ops_it_started() {
    let mut h = Harness::new();
    let started = Arc::new(Notify::new());
    let stopped = Arc::new(Notify::new());
    let hook = {
        let started = started.clone();
        let stopped = stopped.clone();
        hook!(|context| {
            let started = started.clone();
            let stopped = stopped.clone();
            async move {
                started.notify_one();
                context.cancelled().await;
                stopped.notify_one();
                Err("killed".into())
            }
        })
    };
    let a = h.add(h.fake("a").hook(hook), &[]);
    let targets = [a];
    tokio::select! {
        _ = h.solve(&targets) => panic!("the op cannot finish before it is cancelled"),
        _ = started.notified() => {}
    }
    // The solve future is gone; its op still got the cancellation.
    tokio::time::timeout(HANG_GUARD, stopped.notified())
        .await
        .expect("the op of a dropped solve was never cancelled");
    assert!(h.index.is_empty());
}

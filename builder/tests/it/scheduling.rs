//! What runs, how often, and in parallel or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoist_builder::SolveError;
use tokio::sync::{Barrier, Notify};

use crate::hook;
use crate::util::Harness;

/// Guards tests whose failure mode is a hang (a barrier never reached); it is not a
/// timing assertion, only a way to fail instead of blocking CI.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A hook that waits at `barrier` (until the other op holding it runs too).
fn wait_at(barrier: &Arc<Barrier>) -> impl crate::util::HookFn {
    let barrier = barrier.clone();
    hook!(|_context| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            Ok(())
        }
    })
}

/// A hook that waits until `notify` is notified (once, before or after).
fn wait_for(notify: &Arc<Notify>) -> impl crate::util::HookFn {
    let notify = notify.clone();
    hook!(|_context| {
        let notify = notify.clone();
        async move {
            notify.notified().await;
            Ok(())
        }
    })
}

/// A hook that notifies `notify`.
fn notify_on_run(notify: &Arc<Notify>) -> impl crate::util::HookFn {
    let notify = notify.clone();
    hook!(|_context| {
        let notify = notify.clone();
        async move {
            notify.notify_one();
            Ok(())
        }
    })
}

#[tokio::test]
async fn unused_vertices_never_run() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let b = h.add(h.fake("b"), &[a]);
    let unused = h.add(h.fake("unused-stage"), &[a]);
    h.add(h.fake("unused-child"), &[unused]);
    let solution = h.solve(&[b]).await.unwrap();
    assert_eq!(solution.outputs, ["b(a())"]);
    assert_eq!(h.all_execs(), [("a".into(), 1), ("b".into(), 1)]);
    assert!(!h.event_lines().iter().any(|line| line.contains("unused")));
}

#[tokio::test]
async fn a_shared_input_executes_once() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let b = h.add(h.fake("b"), &[a]);
    let c = h.add(h.fake("c"), &[a]);
    let d = h.add(h.fake("d"), &[b, c, a]);
    let solution = h.solve(&[d, b]).await.unwrap();
    assert_eq!(solution.outputs, ["d(b(a()),c(a()),a())", "b(a())"]);
    assert_eq!(
        h.all_execs(),
        [
            ("a".into(), 1),
            ("b".into(), 1),
            ("c".into(), 1),
            ("d".into(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_at_the_same_time() {
    let mut h = Harness::new();
    h.jobs = 2;
    // Each branch waits until the other one is running too: if the solver ran them
    // one after the other, neither would ever get past the barrier.
    let barrier = Arc::new(Barrier::new(2));
    let left = h.add(h.fake("left").hook(wait_at(&barrier)), &[]);
    let right = h.add(h.fake("right").hook(wait_at(&barrier)), &[]);
    let join = h.add(h.fake("join"), &[left, right]);
    let solution = tokio::time::timeout(HANG_GUARD, h.solve(&[join]))
        .await
        .expect("the two branches never ran at the same time")
        .unwrap();
    assert_eq!(solution.outputs, ["join(left(),right())"]);
    // Both started before either completed: their events interleave.
    let lines = h.event_lines();
    assert_eq!(
        lines[..2]
            .iter()
            .filter(|l| l.starts_with("started"))
            .count(),
        2
    );
    assert_eq!(lines.last().unwrap(), "completed join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_copied_from_in_a_chain_run_at_the_same_time() {
    // `COPY --from=s1` then `COPY --from=s2`: the second copy's key needs the
    // first copy's key (which needs s1's output) and s2's content. s2 must not
    // wait for s1: each stage waits until the other one runs too.
    let mut h = Harness::new();
    h.jobs = 2;
    let barrier = Arc::new(Barrier::new(2));
    let s1 = h.add(h.fake("s1").hook(wait_at(&barrier)), &[]);
    let s2 = h.add(h.fake("s2").hook(wait_at(&barrier)), &[]);
    let copy1 = h.add(h.fake("copy1").content_addressed(), &[s1]);
    let copy2 = h.add(h.fake("copy2").content_addressed(), &[s2, copy1]);
    let solution = tokio::time::timeout(HANG_GUARD, h.solve(&[copy2]))
        .await
        .expect("s2 waited for s1")
        .unwrap();
    assert_eq!(solution.outputs, ["copy2(s2(),copy1(s1()))"]);

    // Nothing runs again when all is cached: the early start is only for
    // inputs that have to run.
    let solution = h.solve(&[copy2]).await.unwrap();
    assert_eq!(solution.outputs, ["copy2(s2(),copy1(s1()))"]);
    assert_eq!(
        h.all_execs(),
        [
            ("copy1".into(), 1),
            ("copy2".into(), 1),
            ("s1".into(), 1),
            ("s2".into(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_never_overlaps_ops() {
    let mut h = Harness::new();
    h.jobs = 1;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let track = || {
        let running = running.clone();
        let most = most.clone();
        hook!(|_context| {
            let running = running.clone();
            let most = most.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Give other tasks every chance to start meanwhile.
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let branches: Vec<_> = (0..6)
        .map(|i| h.add(h.fake(&format!("branch{i}")).hook(track()), &[]))
        .collect();
    let join = h.add(h.fake("join").hook(track()), &branches);
    h.solve(&[join]).await.unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert_eq!(h.all_execs().len(), 7);
    // Strict alternation of start and completion.
    for pair in h.event_lines().chunks(2) {
        let name = pair[0].strip_prefix("started ").unwrap();
        assert_eq!(pair[1], format!("completed {name}"));
    }
}

#[tokio::test]
async fn a_cycle_is_rejected_before_anything_runs() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let b = h.add(h.fake("b"), &[a]);
    h.graph.add_input(a, b).unwrap();
    let error = h.solve(&[b]).await.unwrap_err();
    let SolveError::Cycle { vertex, .. } = &error else {
        panic!("expected a cycle error, got {error:?}");
    };
    assert!(*vertex == a || *vertex == b);
    let message = error.to_string();
    assert!(
        message == "failed to solve: `Dockerfile:1: a` depends on itself through its inputs"
            || message == "failed to solve: `Dockerfile:1: b` depends on itself through its inputs",
        "{message}"
    );
    assert!(h.all_execs().is_empty());
}

#[tokio::test]
async fn a_self_loop_is_a_cycle() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    h.graph.add_input(a, a).unwrap();
    let error = h.solve(&[a]).await.unwrap_err();
    assert!(matches!(error, SolveError::Cycle { vertex, .. } if vertex == a));
}

#[tokio::test]
async fn a_cycle_among_unused_vertices_does_not_matter() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    let c = h.add(h.fake("c"), &[]);
    let d = h.add(h.fake("d"), &[c]);
    h.graph.add_input(c, d).unwrap();
    assert_eq!(h.solve(&[a]).await.unwrap().outputs, ["a()"]);
}

#[tokio::test]
async fn an_unknown_target_is_rejected() {
    let mut h = Harness::new();
    let mut other = Harness::new();
    other.add(other.fake("x"), &[]);
    let foreign = other.add(other.fake("y"), &[]);
    h.add(h.fake("a"), &[]);
    let error = h.solve(&[foreign]).await.unwrap_err();
    assert!(matches!(error, SolveError::UnknownTarget(v) if v == foreign));
    assert_eq!(
        error.to_string(),
        "failed to solve: target #1 is not in the build graph"
    );
}

#[tokio::test]
async fn a_long_chain_solves_then_hits_without_exhausting_the_stack() {
    let mut h = Harness::new();
    let build = |h: &mut Harness| {
        let mut previous = h.add(h.fake("step").definition("0"), &[]);
        for i in 1..CHAIN {
            previous = h.add(h.fake("step").definition(&i.to_string()), &[previous]);
        }
        previous
    };
    let last = build(&mut h);
    h.solve(&[last]).await.unwrap();
    assert_eq!(h.execs("step"), CHAIN);
    h.next_build();
    let last = build(&mut h);
    h.solve(&[last]).await.unwrap();
    assert_eq!(h.event_lines(), ["cached step"]);
}

const CHAIN: usize = 4000;

/// Durations fixed by op definition digest, whatever the solves record.
struct FixedHistory(std::collections::HashMap<hoist_builder::Digest, Duration>);

impl hoist_builder::StepHistory for FixedHistory {
    fn expected(&self, op: &hoist_builder::Digest) -> Option<Duration> {
        self.0.get(op).copied()
    }
    fn record(&self, _: &hoist_builder::Digest, _: Duration) {}
}

fn history(ops: &[(&crate::util::Fake, Duration)]) -> Arc<FixedHistory> {
    use hoist_builder::Op;
    Arc::new(FixedHistory(
        ops.iter()
            .map(|(op, took)| (Op::definition(*op).digest(), *took))
            .collect(),
    ))
}

const SECOND: Duration = Duration::from_secs(1);

fn held_back(solution: &hoist_builder::Solution<String>, vertex: hoist_builder::VertexId) -> bool {
    match &solution.outcomes[&vertex] {
        hoist_builder::VertexOutcome::Executed { held_back, .. } => *held_back,
        other => panic!("expected an execution, got {other:?}"),
    }
}

/// Solves `targets` with `history`, failing with `hang` if the solve does
/// not end (a hook never reached).
async fn solve_with(
    h: &Harness,
    history: Arc<FixedHistory>,
    targets: &[hoist_builder::VertexId],
    hang: &str,
) -> hoist_builder::Solution<String> {
    tokio::time::timeout(
        HANG_GUARD,
        h.solver().with_history(history).solve(
            &h.graph,
            targets,
            &hoist_builder::CancellationToken::new(),
        ),
    )
    .await
    .expect(hang)
    .unwrap()
}

/// `started NAME` event lines, in order.
fn starts(h: &Harness) -> Vec<String> {
    h.event_lines()
        .into_iter()
        .filter(|line| line.starts_with("started "))
        .collect()
}

#[tokio::test]
async fn a_short_op_holds_back_for_a_longer_peer_still_looking_its_keys_up() {
    // `long` is still computing its keys when `short` queues with the only
    // permit free: `short` waits until `long` queues, and `long` runs first.
    let mut h = Harness::new();
    h.jobs = 1;
    let short_keys = Arc::new(Notify::new());
    let long = h.fake("long").key_hook({
        let short_keys = short_keys.clone();
        hook!(|_context| {
            let short_keys = short_keys.clone();
            async move {
                short_keys.notified().await;
                // Well inside the wait's limit (100 ms), long enough for
                // `short` to reach its permit first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        })
    });
    let short = h.fake("short").key_hook(notify_on_run(&short_keys));
    let history = history(&[(&long, 9 * SECOND), (&short, SECOND)]);
    let long = h.add(long, &[]);
    let short = h.add(short, &[]);
    let solution = solve_with(&h, history, &[long, short], "the solve hung").await;
    assert_eq!(solution.outputs, ["long()", "short()"]);
    assert_eq!(starts(&h), ["started long", "started short"]);
    assert!(held_back(&solution, short));
    assert!(!held_back(&solution, long), "long has no longer peer");
}

#[tokio::test]
async fn a_short_op_holds_back_no_longer_than_it_takes_itself() {
    // `long` cannot finish its keys until `short` has run: `short` gives up
    // waiting after its own expected time (50 ms) instead of hanging.
    let mut h = Harness::new();
    h.jobs = 2;
    let short_ran = Arc::new(Notify::new());
    let long = h.fake("long").key_hook(wait_for(&short_ran));
    let short = h.fake("short").hook(notify_on_run(&short_ran));
    let history = history(&[(&long, 9 * SECOND), (&short, Duration::from_millis(50))]);
    let long = h.add(long, &[]);
    let short = h.add(short, &[]);
    let solution = solve_with(&h, history, &[long, short], "short waited for long forever").await;
    assert_eq!(starts(&h), ["started short", "started long"]);
    assert!(held_back(&solution, short));
}

#[tokio::test]
async fn a_short_op_does_not_hold_back_for_a_peer_behind_running_work() {
    // `long` needs `gate`, which is running (and waits for `short` to run):
    // `long` is not looking its keys up but waiting for `gate`, so `short`
    // takes the free permit at once.
    let mut h = Harness::new();
    h.jobs = 2;
    let (gate_running, short_ran) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let gate = h.fake("gate").hook({
        let (gate_running, short_ran) = (gate_running.clone(), short_ran.clone());
        hook!(|_context| {
            let (gate_running, short_ran) = (gate_running.clone(), short_ran.clone());
            async move {
                gate_running.notify_one();
                short_ran.notified().await;
                Ok(())
            }
        })
    });
    let gate = h.add(gate, &[]);
    let long = h.fake("long");
    let short = h
        .fake("short")
        .key_hook(wait_for(&gate_running))
        .hook(notify_on_run(&short_ran));
    let history = history(&[(&long, 9 * SECOND), (&short, SECOND)]);
    let long = h.add(long, &[gate]);
    let short = h.add(short, &[]);
    let solution = solve_with(&h, history, &[long, short], "gate never saw short run").await;
    assert_eq!(solution.outputs, ["long(gate())", "short()"]);
    assert!(!held_back(&solution, short), "long was waiting for gate");
}

// One thread: the tasks run in the order the solve starts them, so `long`
// has found its record before `short` asks for a permit.
#[tokio::test]
async fn a_short_op_does_not_hold_back_for_a_cached_peer() {
    // A stage that did not change is found in the cache: it never asks for
    // a permit, so holding back for it only delays the changed one.
    let mut h = Harness::new();
    h.jobs = 2;
    let long = h.add(h.fake("long"), &[]);
    let short = h.add(h.fake("short"), &[]);
    h.solve(&[long, short]).await.unwrap();

    h.next_build();
    let long = h.fake("long");
    let short = h.fake("short").definition("changed");
    let history = history(&[(&long, 9 * SECOND), (&short, SECOND)]);
    let long = h.add(long, &[]);
    let short = h.add(short, &[]);
    let solution = h
        .solver()
        .with_history(history)
        .solve(
            &h.graph,
            &[long, short],
            &hoist_builder::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        solution.outcomes[&long],
        hoist_builder::VertexOutcome::Cached
    );
    assert!(!held_back(&solution, short));
}

// One thread, as above: no other op's arrival hands the context its permit
// during its own arrival, before it would hold back.
#[tokio::test]
async fn an_op_shorter_than_the_wait_never_holds_back() {
    // The incremental rebuild's shape: the build context's op takes no time
    // and is independent of the RUN before the COPY that needs it. Even
    // with that RUN still on its way, waiting for it would only delay the
    // COPY by the wait.
    let mut h = Harness::new();
    h.jobs = 2;
    let context_ran = Arc::new(Notify::new());
    let gate = h.add(h.fake("gate").hook(wait_for(&context_ran)), &[]);
    let run = h.fake("run");
    let context = h.fake("context").hook(notify_on_run(&context_ran));
    let history = history(&[(&run, 9 * SECOND), (&context, Duration::from_millis(1))]);
    let run = h.add(run, &[gate]);
    let context = h.add(context, &[]);
    let solution = solve_with(
        &h,
        history,
        &[run, context],
        "gate never saw the context run",
    )
    .await;
    assert!(!held_back(&solution, context));
}

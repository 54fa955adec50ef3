//! What ops report through their context, and how it reaches the event sink.

use std::time::Duration;

use hoist_builder::{
    CancellationToken, Event, EventSink, LogStream, OpContext, Usage, VertexOutcome,
};

use crate::hook;
use crate::util::Harness;

#[tokio::test]
async fn logs_progress_warnings_and_usage_come_between_start_and_completion() {
    let mut h = Harness::new();
    let usage = Usage {
        cpu_time: Duration::from_millis(1500),
        peak_memory_bytes: Some(64 << 20),
    };
    let a = h.add(
        h.fake("a").hook(hook!(|context| async move {
            context.log(LogStream::Stdout, b"compiling\n");
            context.log(LogStream::Stderr, b"warning: unused\n");
            context.progress("sha256:abc", 10, Some(20));
            context.warn("apt-get without -y");
            context.record_usage(Usage {
                cpu_time: Duration::from_millis(1500),
                peak_memory_bytes: Some(64 << 20),
            });
            Ok(())
        })),
        &[],
    );
    let solution = h.solve(&[a]).await.unwrap();
    let events = h.events();
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_eq!(
        events[0],
        Event::VertexStarted {
            vertex: a,
            name: "a".into()
        }
    );
    assert_eq!(
        events[1..5],
        [
            Event::Log {
                vertex: a,
                stream: LogStream::Stdout,
                bytes: b"compiling\n".to_vec()
            },
            Event::Log {
                vertex: a,
                stream: LogStream::Stderr,
                bytes: b"warning: unused\n".to_vec()
            },
            Event::Progress {
                vertex: a,
                id: "sha256:abc".into(),
                current: 10,
                total: Some(20)
            },
            Event::Warning {
                vertex: Some(a),
                message: "apt-get without -y".into()
            },
        ]
    );
    let Event::VertexCompleted {
        vertex,
        duration,
        usage: reported,
    } = &events[5]
    else {
        panic!("expected completion, got {:?}", events[5]);
    };
    assert_eq!(*vertex, a);
    assert_eq!(*reported, Some(usage));
    assert_eq!(
        solution.outcomes[&a],
        VertexOutcome::Executed {
            duration: *duration,
            usage: Some(usage),
            held_back: false,
        }
    );
}

#[tokio::test]
async fn an_op_context_works_outside_the_solver() {
    // Real ops' unit tests build their own context.
    let mut h = Harness::new();
    let vertex = h.add(h.fake("a"), &[]);
    let (events, mut receiver) = EventSink::channel();
    let cancellation = CancellationToken::new();
    let context = OpContext::new(vertex, cancellation.clone(), events);
    context.log(LogStream::Stdout, b"hi");
    assert!(!context.is_cancelled());
    cancellation.cancel();
    context.cancelled().await;
    assert!(context.cancellation().is_cancelled());
    assert_eq!(
        receiver.recv().await,
        Some(Event::Log {
            vertex,
            stream: LogStream::Stdout,
            bytes: b"hi".to_vec()
        })
    );
}

#[tokio::test]
async fn a_duplicate_asking_for_no_cache_makes_the_shared_vertex_rerun() {
    let mut h = Harness::new();
    let a = h.add(h.fake("a"), &[]);
    h.solve(&[a]).await.unwrap();

    h.next_build();
    let plain = h.add(h.fake("a"), &[]);
    let fresh = h.add(h.fake("a"), &[]);
    h.graph.set_ignore_cache(fresh, true).unwrap();
    let solution = h.solve(&[plain, fresh]).await.unwrap();
    assert_eq!(h.execs("a"), 2);
    // Reported once, under the first copy.
    assert_eq!(h.event_lines(), ["started a", "completed a"]);
    assert_eq!(
        solution.outcomes.keys().copied().collect::<Vec<_>>(),
        [plain]
    );
}

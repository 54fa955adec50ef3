//! Progress events: small typed values keyed by vertex, emitted by the solver and by
//! ops through their [`OpContext`](crate::OpContext). Rendering them (tty, plain,
//! json) is the CLI's business; this crate never prints.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::graph::VertexId;

/// One thing that happened during a solve.
///
/// Per vertex that the build needs, the solver emits exactly one of: `VertexCached`,
/// or `VertexStarted` followed by one of `VertexCompleted`, `VertexFailed` or
/// `VertexCancelled`. Vertices the build does not need (unused stages, inputs of a
/// cache hit) get no event at all. `Log`, `Progress` and `Warning` come from ops
/// between `VertexStarted` and the end event, or while their cache key is computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The vertex's op began executing (its cache key missed, or it ignores the cache).
    VertexStarted {
        /// The vertex.
        vertex: VertexId,
        /// Its progress name ([`VertexMeta::name`](crate::VertexMeta::name)).
        name: String,
    },
    /// The vertex's result came from the cache index; its op did not run.
    VertexCached {
        /// The vertex.
        vertex: VertexId,
        /// Its progress name.
        name: String,
    },
    /// The vertex's op finished and its result was recorded.
    VertexCompleted {
        /// The vertex.
        vertex: VertexId,
        /// Wall time of the op's `exec`.
        duration: Duration,
        /// Resource usage the op reported, if any.
        usage: Option<Usage>,
    },
    /// The vertex's op (or its cache key computation) failed; the build stops.
    VertexFailed {
        /// The vertex.
        vertex: VertexId,
        /// The op's error and its causes, joined by `: `.
        error: String,
    },
    /// Where a vertex that just failed comes from, emitted right after its
    /// `VertexFailed`: the description errors call it by (`Dockerfile:7:
    /// RUN make`), for renderers that point at the source (CI annotations).
    VertexSource {
        /// The vertex.
        vertex: VertexId,
        /// [`VertexMeta::description`](crate::VertexMeta::description).
        description: String,
        /// [`VertexMeta::source`](crate::VertexMeta::source): the file and
        /// line, for renderers that point at them.
        source: Option<crate::SourceLine>,
    },
    /// The vertex's op stopped because the build was cancelled (Ctrl-C, or another
    /// vertex failed). Nothing was recorded for it.
    VertexCancelled {
        /// The vertex.
        vertex: VertexId,
    },
    /// A chunk of a running op's output.
    Log {
        /// The vertex.
        vertex: VertexId,
        /// Which stream the bytes came from.
        stream: LogStream,
        /// The bytes, as produced (not necessarily whole lines or valid UTF-8).
        bytes: Vec<u8>,
    },
    /// Byte or item progress of a part of an op (e.g. a layer download or the
    /// hashing of the build context).
    Progress {
        /// The vertex.
        vertex: VertexId,
        /// What is progressing, e.g. a layer digest; stable across updates.
        id: String,
        /// Done so far.
        current: u64,
        /// The total, when known.
        total: Option<u64>,
    },
    /// Something the user should know that does not stop the build.
    Warning {
        /// The vertex it concerns, if any.
        vertex: Option<VertexId>,
        /// The message.
        message: String,
    },
}

/// The stream a [`Event::Log`] chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Resource usage an op reports for its execution (e.g. the runner's cgroup stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu_time: Duration,
    /// Peak memory, in bytes, if it was measured.
    pub peak_memory_bytes: Option<u64>,
}

/// Where events go: a cheap-to-clone callback.
///
/// The callback runs on the solver's or the op's task, so it must be quick; for
/// heavy rendering use [`EventSink::channel`] and draw on another task.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(Event) + Send + Sync>);

impl EventSink {
    /// Calls `callback` with every event.
    pub fn new(callback: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(callback))
    }

    /// Drops every event.
    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    /// A sink sending into an unbounded channel, and the receiving end. Events sent
    /// after the receiver is dropped are discarded.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let sink = EventSink::new(move |event| {
            // A closed receiver means nobody is watching any more; not an error.
            let _ = sender.send(event);
        });
        (sink, receiver)
    }

    /// Emits one event.
    pub fn emit(&self, event: Event) {
        (self.0)(event)
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink::discard()
    }
}

/// How a step of the build ended, as the build summary shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Its result came from the cache.
    Cached,
    /// It started and has not ended (the build stopped before it did).
    Running,
    /// It ran and its result was recorded.
    Done,
    /// It failed.
    Failed,
    /// It was stopped because the build was cancelled.
    Cancelled,
}

/// One step of a [`BuildSummary`].
#[derive(Clone, Debug, PartialEq)]
pub struct StepSummary {
    /// The vertex.
    pub vertex: VertexId,
    /// Its progress name.
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
    /// Wall time of its execution (`None` when it did not run to an end).
    pub duration: Option<Duration>,
    /// CPU time and peak memory its op reported.
    pub usage: Option<Usage>,
    /// Compressed size of the layer it made, when the caller knows it.
    pub layer_size: Option<u64>,
}

/// Per-step results of a build, in the order steps were first reported, made
/// from its events by [`SummaryCollector`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildSummary {
    /// The steps.
    pub steps: Vec<StepSummary>,
}

impl BuildSummary {
    /// Steps whose result came from the cache.
    pub fn cached(&self) -> usize {
        self.count(StepStatus::Cached)
    }

    /// Steps that ran to completion.
    pub fn executed(&self) -> usize {
        self.count(StepStatus::Done)
    }

    fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }

    /// CPU time the steps reported, summed.
    pub fn cpu_time(&self) -> Duration {
        self.steps
            .iter()
            .filter_map(|s| s.usage.map(|u| u.cpu_time))
            .sum()
    }

    /// The highest peak memory a step reported.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        self.steps
            .iter()
            .filter_map(|s| s.usage.and_then(|u| u.peak_memory_bytes))
            .max()
    }

    /// Size of the layers the steps made, summed.
    pub fn layer_bytes(&self) -> u64 {
        self.steps.iter().filter_map(|s| s.layer_size).sum()
    }

    /// Sets the layer size of the steps in `sizes` (by vertex).
    pub fn set_layer_sizes(&mut self, sizes: &std::collections::BTreeMap<VertexId, u64>) {
        for step in &mut self.steps {
            if let Some(size) = sizes.get(&step.vertex) {
                step.layer_size = Some(*size);
            }
        }
    }
}

/// Builds a [`BuildSummary`] from a build's events.
#[derive(Debug, Default)]
pub struct SummaryCollector {
    summary: BuildSummary,
    position: std::collections::HashMap<VertexId, usize>,
}

impl SummaryCollector {
    /// An empty collector.
    pub fn new() -> Self {
        SummaryCollector::default()
    }

    fn step(&mut self, vertex: VertexId, name: Option<&str>) -> Option<&mut StepSummary> {
        let steps = &mut self.summary.steps;
        let index = match self.position.get(&vertex) {
            Some(index) => *index,
            None => {
                steps.push(StepSummary {
                    vertex,
                    name: name?.to_owned(),
                    status: StepStatus::Running,
                    duration: None,
                    usage: None,
                    layer_size: None,
                });
                self.position.insert(vertex, steps.len() - 1);
                steps.len() - 1
            }
        };
        steps.get_mut(index)
    }

    /// Takes one event into account.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::VertexStarted { vertex, name } => {
                if let Some(step) = self.step(*vertex, Some(name)) {
                    step.status = StepStatus::Running;
                }
            }
            Event::VertexCached { vertex, name } => {
                if let Some(step) = self.step(*vertex, Some(name)) {
                    step.status = StepStatus::Cached;
                }
            }
            Event::VertexCompleted {
                vertex,
                duration,
                usage,
            } => {
                if let Some(step) = self.step(*vertex, None) {
                    step.status = StepStatus::Done;
                    step.duration = Some(*duration);
                    step.usage = *usage;
                }
            }
            Event::VertexFailed { vertex, .. } => {
                if let Some(step) = self.step(*vertex, None) {
                    step.status = StepStatus::Failed;
                }
            }
            Event::VertexCancelled { vertex } => {
                if let Some(step) = self.step(*vertex, None) {
                    step.status = StepStatus::Cancelled;
                }
            }
            Event::Log { .. }
            | Event::Progress { .. }
            | Event::Warning { .. }
            | Event::VertexSource { .. } => {}
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> &BuildSummary {
        &self.summary
    }

    /// The summary.
    pub fn finish(self) -> BuildSummary {
        self.summary
    }
}

/// Formats an error and its causes on one line, `outer: inner: innermost`.
pub(crate) use hoist_untrusted::text::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_follows_the_events_of_each_step() {
        let id = |n: usize| VertexId(petgraph::graph::NodeIndex::new(n));
        let mut collector = SummaryCollector::new();
        let usage = Usage {
            cpu_time: Duration::from_millis(1500),
            peak_memory_bytes: Some(4 << 20),
        };
        for event in [
            Event::VertexCached {
                vertex: id(0),
                name: "[1/3] FROM busybox".into(),
            },
            Event::VertexStarted {
                vertex: id(1),
                name: "[2/3] RUN make".into(),
            },
            Event::VertexStarted {
                vertex: id(2),
                name: "[3/3] RUN test".into(),
            },
            Event::VertexCompleted {
                vertex: id(1),
                duration: Duration::from_secs(2),
                usage: Some(usage),
            },
            Event::VertexFailed {
                vertex: id(2),
                error: "exit code: 1".into(),
            },
            // An end event of a step never started is ignored.
            Event::VertexCancelled { vertex: id(9) },
        ] {
            collector.observe(&event);
        }
        let mut summary = collector.finish();
        summary.set_layer_sizes(&[(id(1), 1000)].into_iter().collect());
        let statuses: Vec<(&str, StepStatus)> = summary
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("[1/3] FROM busybox", StepStatus::Cached),
                ("[2/3] RUN make", StepStatus::Done),
                ("[3/3] RUN test", StepStatus::Failed),
            ]
        );
        assert_eq!((summary.cached(), summary.executed()), (1, 1));
        assert_eq!(summary.cpu_time(), Duration::from_millis(1500));
        assert_eq!(summary.peak_memory_bytes(), Some(4 << 20));
        assert_eq!(summary.layer_bytes(), 1000);
        assert_eq!(summary.steps[1].duration, Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn channel_sink_delivers_in_order_and_tolerates_a_closed_receiver() {
        let (sink, mut receiver) = EventSink::channel();
        let warning = |message: &str| Event::Warning {
            vertex: None,
            message: message.to_owned(),
        };
        sink.emit(warning("a"));
        sink.emit(warning("b"));
        assert_eq!(receiver.recv().await, Some(warning("a")));
        assert_eq!(receiver.recv().await, Some(warning("b")));
        drop(receiver);
        sink.emit(warning("c"));
    }
}

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

/// Formats an error and its causes on one line, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_causes() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
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

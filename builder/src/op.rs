//! The op interface: what the solver needs from an operation (image pull, context
//! load, exec, file actions …), and the context an op runs with.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::digest::{CanonicalBytes, Digest};
use crate::graph::VertexId;
use crate::progress::{Event, EventSink, LogStream, Usage};

/// The error an op returns. The solver wraps it, naming the vertex, and keeps it as
/// the `source` so the whole chain reaches the user.
pub type OpError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An operation of the build graph, producing one output of type `O` from the
/// outputs of its inputs.
///
/// `O` is whatever the builder passes between ops (for hoist: a committed snapshot
/// name and its layers; in tests: a string). It must be cheap to clone.
///
/// # What goes where
///
/// - [`definition`](Op::definition) encodes exactly what determines the result:
///   argv, env, paths, the *resolved* image digest — written with a
///   [`CanonicalEncoder`](crate::CanonicalEncoder) in a fixed field order. Anything
///   that does not change the result (descriptions, progress names, resource limits,
///   "ignore cache") must stay out of it; such metadata lives in
///   [`VertexMeta`](crate::VertexMeta).
/// - [`selector`](Op::selector) says which part of an input the op reads (e.g. the
///   source paths of a COPY). It enters the cache key next to that input.
/// - [`content_addressed`](Op::content_addressed) marks inputs whose *content*
///   (selected paths: bytes, mode, owner — never mtimes) replaces their cache key in
///   this op's key, computed by [`content_digest`](Op::content_digest) once the input
///   exists. A COPY from a rebuilt stage whose copied files did not change then hits.
/// - [`source_digest`](Op::source_digest) is for ops whose result depends on state
///   outside the graph (a local context directory, a moving git branch): a digest of
///   that state, computed before `exec`.
///
/// # Rules
///
/// - `exec` must be deterministic enough that reusing a recorded result for the same
///   key is correct, and must leave nothing visible when it fails (the snapshotter's
///   active snapshots are removed, not committed).
/// - `exec` must watch [`OpContext::cancelled`] and return an error promptly once it
///   fires (kill the process, remove active snapshots). The solver waits for every
///   started op to return before `solve` returns, so cleanup always completes.
#[async_trait]
pub trait Op<O>: Send + Sync + 'static
where
    O: Send + Sync + 'static,
{
    /// The canonical encoding of everything that determines this op's result, apart
    /// from its inputs.
    fn definition(&self) -> CanonicalBytes;

    /// Which part of input `input` this op reads, if not all of it.
    fn selector(&self, input: usize) -> Option<CanonicalBytes> {
        let _ = input;
        None
    }

    /// Whether input `input` enters the cache key by the digest of its selected
    /// content (see [`content_digest`](Op::content_digest)) rather than by its
    /// cache key.
    fn content_addressed(&self, input: usize) -> bool {
        let _ = input;
        false
    }

    /// Digest of the content this op reads from input `input` (its selected paths:
    /// content, mode, ownership; never mtimes). Called only for inputs
    /// [`content_addressed`](Op::content_addressed) returns true for, after that
    /// input's output exists.
    async fn content_digest(
        &self,
        context: &OpContext,
        input: usize,
        output: &O,
    ) -> Result<Digest, OpError> {
        let _ = (context, output);
        Err(Box::new(NotContentAddressed { input }))
    }

    /// Digest of the outside state this op reads (e.g. the selected files of a local
    /// context directory), or `None` if the result depends only on the definition
    /// and the inputs. An op returning `Some` never gets a definition-only key.
    async fn source_digest(&self, context: &OpContext) -> Result<Option<Digest>, OpError> {
        let _ = context;
        Ok(None)
    }

    /// Produces the output from the inputs' outputs, in input order.
    async fn exec(&self, context: &OpContext, inputs: Vec<O>) -> Result<O, OpError>;
}

/// Returned by the default [`Op::content_digest`]: the op claimed an input was
/// content-addressed without computing its digest.
#[derive(Debug, thiserror::Error)]
#[error("op does not compute a content digest of its input {input}")]
pub struct NotContentAddressed {
    /// Index of the input.
    pub input: usize,
}

/// What an op gets while its key is computed and while it runs: the vertex it
/// belongs to, the build's cancellation, and a way to emit logs and progress.
#[derive(Clone, Debug)]
pub struct OpContext {
    vertex: VertexId,
    cancellation: CancellationToken,
    events: EventSink,
    record: Arc<Mutex<Record>>,
}

/// How many lines of an op's output a failure carries.
pub const LOG_TAIL_LINES: usize = 20;

/// Longest line kept in a log tail; longer ones are cut there.
const LOG_TAIL_LINE_BYTES: usize = 4096;

/// What the solver keeps of an op's run besides its output.
#[derive(Debug, Default)]
struct Record {
    usage: Option<Usage>,
    tail: LogTail,
}

/// The last lines of an op's output, stdout and stderr interleaved as they came.
#[derive(Debug, Default)]
struct LogTail {
    lines: VecDeque<Vec<u8>>,
    /// Unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl LogTail {
    fn push(&mut self, stream: LogStream, bytes: &[u8]) {
        let partial = match stream {
            LogStream::Stdout => &mut self.partial[0],
            LogStream::Stderr => &mut self.partial[1],
        };
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(partial);
                Self::keep(&mut self.lines, line);
            } else if partial.len() < LOG_TAIL_LINE_BYTES {
                partial.push(byte);
            }
        }
    }

    fn keep(lines: &mut VecDeque<Vec<u8>>, line: Vec<u8>) {
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn finish(mut self) -> Vec<String> {
        for partial in std::mem::take(&mut self.partial) {
            if !partial.is_empty() {
                Self::keep(&mut self.lines, partial);
            }
        }
        self.lines
            .into_iter()
            .map(|line| String::from_utf8_lossy(&line).into_owned())
            .collect()
    }
}

impl OpContext {
    /// A context for `vertex`. The solver makes these; ops' own tests can too.
    pub fn new(vertex: VertexId, cancellation: CancellationToken, events: EventSink) -> Self {
        OpContext {
            vertex,
            cancellation,
            events,
            record: Arc::new(Mutex::new(Record::default())),
        }
    }

    /// The vertex this op runs for.
    pub fn vertex(&self) -> VertexId {
        self.vertex
    }

    /// The build's cancellation token (to hand to child tasks).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }

    /// Whether the build was cancelled (Ctrl-C, or another vertex failed).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Resolves once the build is cancelled; `select!` on it next to the real work.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancellation.cancelled()
    }

    /// Emits a chunk of output. The last [`LOG_TAIL_LINES`] lines are kept for the
    /// error if the op fails.
    pub fn log(&self, stream: LogStream, bytes: &[u8]) {
        self.lock_record().tail.push(stream, bytes);
        self.events.emit(Event::Log {
            vertex: self.vertex,
            stream,
            bytes: bytes.to_vec(),
        });
    }

    /// Emits progress of a part of the work named `id`.
    pub fn progress(&self, id: &str, current: u64, total: Option<u64>) {
        self.events.emit(Event::Progress {
            vertex: self.vertex,
            id: id.to_owned(),
            current,
            total,
        });
    }

    /// Emits a warning about this vertex.
    pub fn warn(&self, message: impl Into<String>) {
        self.events.emit(Event::Warning {
            vertex: Some(self.vertex),
            message: message.into(),
        });
    }

    /// Records the resources the op used; reported in
    /// [`Event::VertexCompleted`]. The last call wins.
    pub fn record_usage(&self, usage: Usage) {
        self.lock_record().usage = Some(usage);
    }

    /// The usage the op recorded, and the last lines of its output.
    pub(crate) fn take_record(&self) -> (Option<Usage>, Vec<String>) {
        let record = std::mem::take(&mut *self.lock_record());
        (record.usage, record.tail.finish())
    }

    fn lock_record(&self) -> MutexGuard<'_, Record> {
        // Critical sections only push bytes or store a Copy value, so a lock
        // poisoned by a panicking op still guards consistent data.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines_per_stream_and_the_unfinished_ones() {
        let mut tail = LogTail::default();
        for n in 0..30 {
            tail.push(LogStream::Stdout, format!("line {n}\n").as_bytes());
        }
        tail.push(LogStream::Stdout, b"half of a");
        tail.push(LogStream::Stderr, b"error: \xff");
        tail.push(LogStream::Stdout, b" line");
        let lines = tail.finish();
        assert_eq!(lines.len(), LOG_TAIL_LINES);
        assert_eq!(lines[0], "line 12");
        assert_eq!(lines[17], "line 29");
        assert_eq!(lines[18], "half of a line");
        assert_eq!(lines[19], "error: \u{fffd}");
    }

    #[test]
    fn log_tail_cuts_overlong_lines() {
        let mut tail = LogTail::default();
        tail.push(LogStream::Stderr, &vec![b'x'; 3 * LOG_TAIL_LINE_BYTES]);
        tail.push(LogStream::Stderr, b"\nnext\n");
        let lines = tail.finish();
        assert_eq!(lines[0].len(), LOG_TAIL_LINE_BYTES);
        assert_eq!(lines[1], "next");
    }
}

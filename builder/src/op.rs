//! The op interface: what the solver needs from an operation (image pull, context
//! load, exec, file actions …), and the context an op runs with.

use std::sync::{Arc, Mutex};

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
    usage: Arc<Mutex<Option<Usage>>>,
}

impl OpContext {
    /// A context for `vertex`. The solver makes these; ops' own tests can too.
    pub fn new(vertex: VertexId, cancellation: CancellationToken, events: EventSink) -> Self {
        OpContext {
            vertex,
            cancellation,
            events,
            usage: Arc::new(Mutex::new(None)),
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

    /// Emits a chunk of output.
    pub fn log(&self, stream: LogStream, bytes: &[u8]) {
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
        // A poisoned lock only means another clone panicked mid-store of a Copy
        // value; the data is still a whole `Option<Usage>`.
        let mut slot = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(usage);
    }

    pub(crate) fn take_usage(&self) -> Option<Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

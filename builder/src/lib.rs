//! hoist-builder: the solver that turns a build graph into outputs — cache keys,
//! cache lookups, parallel execution of what missed, progress events, cancellation.
//!
//! It owns the *generic* engine: ops are anything implementing [`Op`], outputs are
//! any cheap-to-clone type, and the cache index is any [`CacheIndex`] (in memory:
//! [`MemoryCacheIndex`]; one file per key: [`FileCacheIndex`]). It does not
//! parse Dockerfiles (the frontend does), run processes (the runner), manage
//! snapshots (the snapshotter) or store blobs (the cache crate): the concrete ops
//! that call those plug in as [`Op`] implementations. It never prints; it reports
//! through [`Event`]s.
//!
//! The keys, states and cancellation rules are described in `docs/solver.md`.
//!
//! ```
//! use std::sync::Arc;
//! use hoist_builder::{
//!     async_trait, BuildGraph, CancellationToken, CanonicalBytes, CanonicalEncoder, EventSink,
//!     MemoryCacheIndex, Op, OpContext, OpError, Solver, VertexMeta, VertexOutcome,
//! };
//!
//! struct Write(&'static str);
//!
//! #[async_trait]
//! impl Op<String> for Write {
//!     fn definition(&self) -> CanonicalBytes {
//!         CanonicalEncoder::new("write", 1).str("text", self.0).finish()
//!     }
//!     async fn exec(&self, _: &OpContext, inputs: Vec<String>) -> Result<String, OpError> {
//!         Ok(inputs.concat() + self.0)
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut graph = BuildGraph::new();
//! let base = graph.add(Write("base"), &[], VertexMeta::new("FROM base")).unwrap();
//! let step = graph.add(Write("step"), &[base], VertexMeta::new("RUN step")).unwrap();
//!
//! let index = Arc::new(MemoryCacheIndex::new());
//! let (events, _receiver) = EventSink::channel();
//! let solver = Solver::new(index.clone()).with_events(events);
//! let cancel = CancellationToken::new();
//!
//! let first = solver.solve(&graph, &[step], &cancel).await.unwrap();
//! assert_eq!(first.outputs, ["basestep"]);
//! // Unchanged graph, same index: the target hits and nothing runs.
//! let second = solver.solve(&graph, &[step], &cancel).await.unwrap();
//! assert_eq!(second.outcomes.get(&step), Some(&VertexOutcome::Cached));
//! assert_eq!(second.outcomes.get(&base), None);
//! # });
//! ```
#![warn(missing_docs)]

mod cache_index;
mod digest;
pub mod engine;
pub mod explain;
mod file_index;
mod graph;
mod op;
pub mod pipeline;
mod progress;
mod solver;

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;

// The store and option types that `engine::build`'s API is made of, so that
// callers of the builder (autobuild) need no dependency on the crates it wires
// (DESIGN: autobuild may use the builder and the registry only).
pub use hoist_cache::{Database, Descriptor, Error as StoreError, Lease, LeaseGuard, Store};
pub use hoist_frontend::BuildOptions;

#[cfg(feature = "conformance")]
pub use cache_index::check_conformance;
pub use cache_index::{
    CacheIndex, CacheIndexAction, CacheIndexError, CacheRecord, MemoryCacheIndex,
};
pub use digest::{
    CacheKey, CanonicalBytes, CanonicalEncoder, DefinitionDigest, Digest, ParseDigestError,
    FORMAT_VERSION,
};
pub use file_index::{CacheOutput, FileCacheIndex, FileIndexError, FileStepHistory};
pub use graph::{BuildGraph, GraphError, SourceLine, Vertex, VertexId, VertexMeta};
pub use op::{NotContentAddressed, Op, OpContext, OpError, LOG_TAIL_LINES};
pub use progress::{
    BuildSummary, Event, EventSink, LogStream, StepStatus, StepSummary, SummaryCollector, Usage,
};
pub use solver::{OpAction, OpPanicked, Solution, SolveError, Solver, StepHistory, VertexOutcome};

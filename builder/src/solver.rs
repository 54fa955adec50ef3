//! The solver: computes cache keys, looks them up, executes what missed — in
//! parallel, each vertex at most once, only what the targets need.
//!
//! See `docs/solver.md` for the states of a vertex and how keys are derived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use petgraph::algo::toposort;
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, NodeFiltered};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache_index::{CacheIndex, CacheIndexError, CacheRecord};
use crate::digest::{CacheKey, CanonicalBytes, CanonicalEncoder, DefinitionDigest, Digest};
use crate::graph::{BuildGraph, VertexId};
use crate::op::{Op, OpContext, OpError};
use crate::progress::{error_chain, Event, EventSink};

/// What failed while solving.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A target is not a vertex of the graph.
    #[error("failed to solve: target {0} is not in the build graph")]
    UnknownTarget(VertexId),
    /// The vertices the targets need form a cycle.
    #[error("failed to solve: `{description}` depends on itself through its inputs")]
    Cycle {
        /// A vertex on the cycle.
        vertex: VertexId,
        /// Its description.
        description: String,
    },
    /// An op failed (its `exec`, or computing a digest for its cache key).
    #[error("failed to {action} `{description}`")]
    Op {
        /// The vertex whose op failed.
        vertex: VertexId,
        /// Its description (e.g. `Dockerfile:7: RUN make`).
        description: String,
        /// What the solver asked the op to do.
        action: OpAction,
        /// The op's error.
        #[source]
        source: OpError,
    },
    /// The cache index failed to look up or record a vertex's key.
    #[error("failed to use the cache index for `{description}`")]
    CacheIndex {
        /// The vertex.
        vertex: VertexId,
        /// Its description.
        description: String,
        /// The index's error.
        #[source]
        source: CacheIndexError,
    },
    /// The caller cancelled the build.
    #[error("build cancelled")]
    Cancelled,
}

impl SolveError {
    /// Whether the caller cancelled the build (exit status 130 for Ctrl-C).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, SolveError::Cancelled)
    }

    /// The vertex the error is about, if any (to find its source span).
    pub fn vertex(&self) -> Option<VertexId> {
        match self {
            SolveError::UnknownTarget(vertex) => Some(*vertex),
            SolveError::Cycle { vertex, .. }
            | SolveError::Op { vertex, .. }
            | SolveError::CacheIndex { vertex, .. } => Some(*vertex),
            SolveError::Cancelled => None,
        }
    }
}

/// What the solver was asking an op to do when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpAction {
    /// [`Op::exec`].
    Exec,
    /// [`Op::content_digest`].
    ContentDigest,
    /// [`Op::source_digest`].
    SourceDigest,
}

impl std::fmt::Display for OpAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpAction::Exec => "execute",
            OpAction::ContentDigest => "compute the content digest of an input of",
            OpAction::SourceDigest => "compute the source digest of",
        })
    }
}

/// An op's `exec` panicked; reported as its error.
#[derive(Debug, thiserror::Error)]
#[error("op panicked: {message}")]
pub struct OpPanicked {
    /// The panic message, if it was a string.
    pub message: String,
}

/// How a vertex's output was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VertexOutcome {
    /// From the cache index.
    Cached,
    /// By running its op.
    Executed {
        /// Wall time of `exec`.
        duration: Duration,
    },
}

/// The result of a successful solve.
#[derive(Clone, Debug)]
pub struct Solution<O> {
    /// One output per target, in the order the targets were given.
    pub outputs: Vec<O>,
    /// The final cache key of each target, in the same order.
    pub cache_keys: Vec<CacheKey>,
    /// Every vertex whose output the build obtained. Vertices the build did not need
    /// (unused stages, inputs of cache hits) and duplicates of identical vertices are
    /// absent.
    pub outcomes: BTreeMap<VertexId, VertexOutcome>,
}

/// Solves build graphs against a cache index.
///
/// ```
/// use std::sync::Arc;
/// use hoist_builder::{
///     async_trait, BuildGraph, CancellationToken, CanonicalBytes, CanonicalEncoder,
///     MemoryCacheIndex, Op,
///     OpContext, OpError, Solver, VertexMeta,
/// };
///
/// struct Echo(&'static str);
///
/// #[async_trait]
/// impl Op<String> for Echo {
///     fn definition(&self) -> CanonicalBytes {
///         CanonicalEncoder::new("echo", 1).str("text", self.0).finish()
///     }
///     async fn exec(&self, _: &OpContext, inputs: Vec<String>) -> Result<String, OpError> {
///         Ok(inputs.concat() + self.0)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut graph = BuildGraph::new();
/// let a = graph.add(Echo("a"), &[], VertexMeta::new("a")).unwrap();
/// let b = graph.add(Echo("b"), &[a], VertexMeta::new("b")).unwrap();
/// let solver = Solver::new(Arc::new(MemoryCacheIndex::new())).with_jobs(2);
/// let solution = solver.solve(&graph, &[b], &CancellationToken::new()).await.unwrap();
/// assert_eq!(solution.outputs, ["ab"]);
/// # });
/// ```
pub struct Solver<O> {
    index: Arc<dyn CacheIndex<O>>,
    jobs: usize,
    events: EventSink,
}

impl<O> Solver<O>
where
    O: Clone + Send + Sync + 'static,
{
    /// A solver over `index`, running as many ops at once as there are cores, and
    /// discarding events.
    pub fn new(index: Arc<dyn CacheIndex<O>>) -> Self {
        Solver {
            index,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            events: EventSink::discard(),
        }
    }

    /// Runs at most `jobs` ops' `exec` at once (at least 1).
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Sends progress events to `events`.
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// The number of ops run at once.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Obtains the outputs of `targets`: from the cache where their keys hit,
    /// otherwise by executing their ops (and, recursively, whatever inputs those
    /// need). Vertices marked `ignore_cache` that the targets depend on are always
    /// executed, and their new results recorded.
    ///
    /// Cancelling `cancellation` stops the build: running ops see it through their
    /// [`OpContext`], no new op starts, and this returns [`SolveError::Cancelled`]
    /// once every started op has returned. The first op failure cancels the others
    /// the same way and is returned.
    pub async fn solve(
        &self,
        graph: &BuildGraph<O>,
        targets: &[VertexId],
        cancellation: &CancellationToken,
    ) -> Result<Solution<O>, SolveError> {
        let plan = Plan::new(graph, targets)?;
        if cancellation.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        let shared = Arc::new(Shared {
            index: self.index.clone(),
            events: self.events.clone(),
            cancellation: cancellation.child_token(),
            failure: Mutex::new(None),
            outcomes: Mutex::new(BTreeMap::new()),
        });
        let run = Run {
            graph,
            shared: shared.clone(),
            semaphore: Arc::new(Semaphore::new(self.jobs)),
            tracker: TaskTracker::new(),
            states: plan.states,
            canonical: plan.canonical,
        };

        let target_nodes: Vec<NodeIndex> = targets.iter().map(|t| run.canonical[&t.0]).collect();
        let roots = target_nodes.iter().copied().chain(plan.forced);
        let result = try_join_all(roots.map(|node| run.output(node))).await;

        if result.is_err() {
            // Whatever the reason, nothing else should start or keep running.
            shared.cancellation.cancel();
        }
        // Started ops may still be running (their waiters were dropped when a sibling
        // failed): wait so that their cleanup is over when we return.
        run.tracker.close();
        run.tracker.wait().await;

        if let Some(error) = shared.take_failure() {
            return Err(error);
        }
        let mut outputs = result.map_err(|Aborted| SolveError::Cancelled)?;
        outputs.truncate(target_nodes.len());
        let mut cache_keys = Vec::with_capacity(target_nodes.len());
        for node in &target_nodes {
            match run.states[node].keys.get() {
                Some(Ok(keys)) => cache_keys.push(keys.final_key),
                // A target's output exists only after its keys were computed.
                _ => return Err(SolveError::Cancelled),
            }
        }
        let outcomes = std::mem::take(&mut *shared.lock_outcomes());
        Ok(Solution {
            outputs,
            cache_keys,
            outcomes,
        })
    }
}

/// The part of a solve decided before anything runs: which vertices are needed, in
/// which order, and which are duplicates of each other.
struct Plan<O> {
    states: HashMap<NodeIndex, VertexState<O>>,
    /// Every needed vertex → the first vertex with the same definition digest.
    canonical: HashMap<NodeIndex, NodeIndex>,
    /// Needed vertices that ignore the cache: they run even if no consumer needs
    /// their output (e.g. the consumer hit the cache).
    forced: Vec<NodeIndex>,
}

impl<O: Send + Sync + 'static> Plan<O> {
    fn new(graph: &BuildGraph<O>, targets: &[VertexId]) -> Result<Self, SolveError> {
        let petgraph = graph.petgraph();
        let mut needed = HashSet::new();
        for target in targets {
            if graph.vertex(*target).is_none() {
                return Err(SolveError::UnknownTarget(*target));
            }
            // Edges point from a vertex to its inputs, so this walks what it needs.
            let mut dfs = Dfs::new(petgraph, target.0);
            while let Some(node) = dfs.next(petgraph) {
                needed.insert(node);
            }
        }
        let needed_graph = NodeFiltered::from_fn(petgraph, |node| needed.contains(&node));
        let mut order = toposort(&needed_graph, None).map_err(|cycle| {
            let vertex = VertexId(cycle.node_id());
            SolveError::Cycle {
                vertex,
                description: petgraph[cycle.node_id()].meta.description.clone(),
            }
        })?;
        // Consumers come first in a topological order of vertex → input edges.
        order.reverse();

        let mut definitions: HashMap<NodeIndex, DefinitionDigest> = HashMap::new();
        let mut first_with: HashMap<DefinitionDigest, NodeIndex> = HashMap::new();
        let mut canonical = HashMap::new();
        let mut states: HashMap<NodeIndex, VertexState<O>> = HashMap::new();
        for node in order {
            let vertex = &petgraph[node];
            let op_digest = vertex.op.definition().digest();
            let mut encoder = CanonicalEncoder::new("definition-digest", 1);
            encoder.digest("op", &op_digest);
            for (position, input) in vertex.inputs.iter().enumerate() {
                // Inputs precede their consumers in `order`.
                let input_definition = definitions[&input.0];
                encoder
                    .digest("input", &input_definition.0)
                    .optional_nested("selector", vertex.op.selector(position).as_ref());
            }
            let definition = DefinitionDigest(encoder.finish().digest());
            definitions.insert(node, definition);
            let first = *first_with.entry(definition).or_insert(node);
            canonical.insert(node, first);
            let state = states.entry(first).or_insert_with(|| VertexState {
                op_digest,
                ignore_cache: false,
                keys: OnceCell::new(),
                output: OnceCell::new(),
            });
            // Duplicates run once; if any copy asks to bypass the cache, it is bypassed.
            state.ignore_cache |= vertex.meta.ignore_cache;
        }
        let mut forced: Vec<NodeIndex> = states
            .iter()
            .filter(|(_, state)| state.ignore_cache)
            .map(|(node, _)| *node)
            .collect();
        forced.sort();
        Ok(Plan {
            states,
            canonical,
            forced,
        })
    }
}

/// Marks a vertex whose output will not come: it or something it needed failed, or
/// the build was cancelled. The reason is in [`Shared::failure`] (or is the caller's
/// cancellation).
#[derive(Clone, Copy, Debug)]
struct Aborted;

#[derive(Clone)]
struct Keys<O> {
    /// The definition-based key (op digest, inputs' keys, selectors); absent for ops
    /// with a source digest, whose result the definition does not determine.
    fast: Option<CacheKey>,
    /// The key consumers derive their keys from and results are recorded under.
    final_key: CacheKey,
    /// A record found while computing the keys (a hit on `fast` for a vertex with
    /// content-addressed inputs).
    hit: Option<O>,
}

struct VertexState<O> {
    op_digest: Digest,
    ignore_cache: bool,
    keys: OnceCell<Result<Keys<O>, Aborted>>,
    output: OnceCell<Result<O, Aborted>>,
}

/// What running ops and the solve share.
struct Shared<O> {
    index: Arc<dyn CacheIndex<O>>,
    events: EventSink,
    /// Cancelled by the caller (parent token) or by the first failure.
    cancellation: CancellationToken,
    failure: Mutex<Option<SolveError>>,
    outcomes: Mutex<BTreeMap<VertexId, VertexOutcome>>,
}

impl<O> Shared<O> {
    /// Records why the build fails, unless it is already failing or being cancelled
    /// (then `error` is a consequence, not the cause), and stops everything else.
    fn fail(&self, error: SolveError) {
        if !self.cancellation.is_cancelled() {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                *failure = Some(error);
            }
        }
        self.cancellation.cancel();
    }

    fn take_failure(&self) -> Option<SolveError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn lock_outcomes(&self) -> std::sync::MutexGuard<'_, BTreeMap<VertexId, VertexOutcome>> {
        // Single inserts only: a poisoned map is still consistent.
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn context(&self, vertex: VertexId) -> OpContext {
        OpContext::new(vertex, self.cancellation.clone(), self.events.clone())
    }
}

struct Run<'g, O> {
    graph: &'g BuildGraph<O>,
    shared: Arc<Shared<O>>,
    semaphore: Arc<Semaphore>,
    tracker: TaskTracker,
    states: HashMap<NodeIndex, VertexState<O>>,
    canonical: HashMap<NodeIndex, NodeIndex>,
}

/// How one input enters a content-based key.
enum KeyInput {
    Key(CacheKey),
    Content(Digest),
}

impl<'g, O> Run<'g, O>
where
    O: Clone + Send + Sync + 'static,
{
    fn inputs(&self, node: NodeIndex) -> Vec<NodeIndex> {
        self.graph.petgraph()[node]
            .inputs
            .iter()
            .map(|input| self.canonical[&input.0])
            .collect()
    }

    fn description(&self, node: NodeIndex) -> String {
        self.graph.petgraph()[node].meta.description.clone()
    }

    /// The vertex's keys, computed once per solve.
    fn keys(&self, node: NodeIndex) -> BoxFuture<'_, Result<Keys<O>, Aborted>> {
        async move {
            self.states[&node]
                .keys
                .get_or_init(|| self.compute_keys(node))
                .await
                .clone()
        }
        .boxed()
    }

    /// The vertex's output, obtained once per solve.
    fn output(&self, node: NodeIndex) -> BoxFuture<'_, Result<O, Aborted>> {
        async move {
            self.states[&node]
                .output
                .get_or_init(|| self.compute_output(node))
                .await
                .clone()
        }
        .boxed()
    }

    fn op_failed(&self, node: NodeIndex, action: OpAction, source: OpError) -> Aborted {
        self.shared.fail(SolveError::Op {
            vertex: VertexId(node),
            description: self.description(node),
            action,
            source,
        });
        Aborted
    }

    fn index_failed(&self, node: NodeIndex, source: CacheIndexError) -> Aborted {
        self.shared.fail(SolveError::CacheIndex {
            vertex: VertexId(node),
            description: self.description(node),
            source,
        });
        Aborted
    }

    fn lookup(&self, node: NodeIndex, key: &CacheKey) -> Result<Option<CacheRecord<O>>, Aborted> {
        self.shared
            .index
            .get(key)
            .map_err(|error| self.index_failed(node, error))
    }

    /// Cache-fast, then cache-slow: the definition-based key from the inputs' keys;
    /// for content-addressed inputs, a lookup of that key (whose record carries the
    /// content-based key), and only on a miss the content digests, which need the
    /// inputs' outputs.
    fn compute_keys(&self, node: NodeIndex) -> BoxFuture<'_, Result<Keys<O>, Aborted>> {
        async move {
            let vertex = &self.graph.petgraph()[node];
            let op = &vertex.op;
            let state = &self.states[&node];
            let inputs = self.inputs(node);
            let input_keys = try_join_all(inputs.iter().map(|input| self.keys(*input))).await?;
            let context = self.shared.context(VertexId(node));

            let source = op
                .source_digest(&context)
                .await
                .map_err(|error| self.op_failed(node, OpAction::SourceDigest, error))?;
            let selectors: Vec<Option<CanonicalBytes>> =
                (0..inputs.len()).map(|i| op.selector(i)).collect();
            let content_addressed: Vec<bool> =
                (0..inputs.len()).map(|i| op.content_addressed(i)).collect();

            let fast = match source {
                Some(_) => None,
                None => {
                    let mut encoder = CanonicalEncoder::new("cache-key", 1);
                    encoder.digest("op", &state.op_digest);
                    for (keys, selector) in input_keys.iter().zip(&selectors) {
                        encoder
                            .digest("input", &keys.final_key.0)
                            .optional_nested("selector", selector.as_ref());
                    }
                    Some(CacheKey(encoder.finish().digest()))
                }
            };
            if let Some(fast) = fast {
                if !content_addressed.contains(&true) {
                    return Ok(Keys {
                        fast: Some(fast),
                        final_key: fast,
                        hit: None,
                    });
                }
                if !state.ignore_cache {
                    if let Some(record) = self.lookup(node, &fast)? {
                        return Ok(Keys {
                            fast: Some(fast),
                            final_key: record.cache_key,
                            hit: Some(record.output),
                        });
                    }
                }
            }

            let key_inputs = try_join_all(inputs.iter().enumerate().map(|(position, input)| {
                let context = &context;
                let input_keys = &input_keys;
                let content_addressed = &content_addressed;
                async move {
                    if !content_addressed[position] {
                        return Ok(KeyInput::Key(input_keys[position].final_key));
                    }
                    let output = self.output(*input).await?;
                    op.content_digest(context, position, &output)
                        .await
                        .map(KeyInput::Content)
                        .map_err(|error| self.op_failed(node, OpAction::ContentDigest, error))
                }
            }))
            .await?;

            let mut encoder = CanonicalEncoder::new("content-cache-key", 1);
            encoder
                .digest("op", &state.op_digest)
                .optional_digest("source", source.as_ref());
            for (key_input, selector) in key_inputs.iter().zip(&selectors) {
                match key_input {
                    KeyInput::Key(key) => encoder.digest("input", &key.0),
                    KeyInput::Content(digest) => encoder.digest("content", digest),
                };
                encoder.optional_nested("selector", selector.as_ref());
            }
            Ok(Keys {
                fast,
                final_key: CacheKey(encoder.finish().digest()),
                hit: None,
            })
        }
        .boxed()
    }

    fn compute_output(&self, node: NodeIndex) -> BoxFuture<'_, Result<O, Aborted>> {
        async move {
            let vertex = &self.graph.petgraph()[node];
            let id = VertexId(node);
            let state = &self.states[&node];
            let keys = self.keys(node).await?;

            if !state.ignore_cache {
                let hit = match keys.hit.clone() {
                    Some(output) => Some(output),
                    None => self
                        .lookup(node, &keys.final_key)?
                        .map(|record| record.output),
                };
                if let Some(output) = hit {
                    self.shared
                        .lock_outcomes()
                        .insert(id, VertexOutcome::Cached);
                    self.shared.events.emit(Event::VertexCached {
                        vertex: id,
                        name: vertex.meta.name.clone(),
                    });
                    return Ok(output);
                }
            }

            let inputs = self.inputs(node);
            let input_outputs =
                try_join_all(inputs.iter().map(|input| self.output(*input))).await?;

            let cancellation = &self.shared.cancellation;
            let permit = tokio::select! {
                biased;
                _ = cancellation.cancelled() => return Err(Aborted),
                permit = self.semaphore.clone().acquire_owned() => permit.map_err(|_| Aborted)?,
            };
            if cancellation.is_cancelled() {
                return Err(Aborted);
            }
            let task = self.tracker.spawn(execute(
                self.shared.clone(),
                vertex.op.clone(),
                Execution {
                    id,
                    name: vertex.meta.name.clone(),
                    description: vertex.meta.description.clone(),
                    keys,
                    inputs: input_outputs,
                    permit,
                },
            ));
            // The task catches panics and is never aborted, so a join error means the
            // runtime is shutting down: nothing will complete.
            task.await.unwrap_or(Err(Aborted))
        }
        .boxed()
    }
}

struct Execution<O> {
    id: VertexId,
    name: String,
    description: String,
    keys: Keys<O>,
    inputs: Vec<O>,
    permit: OwnedSemaphorePermit,
}

/// Runs one op and records its result, on its own task: it finishes (and records,
/// and reports) even if the solve stops waiting for it.
async fn execute<O>(
    shared: Arc<Shared<O>>,
    op: Arc<dyn Op<O>>,
    execution: Execution<O>,
) -> Result<O, Aborted>
where
    O: Clone + Send + Sync + 'static,
{
    let Execution {
        id,
        name,
        description,
        keys,
        inputs,
        permit,
    } = execution;
    let context = shared.context(id);
    shared
        .events
        .emit(Event::VertexStarted { vertex: id, name });
    let started = Instant::now();
    let result = AssertUnwindSafe(op.exec(&context, inputs))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Box::new(OpPanicked { message }))
        });
    let duration = started.elapsed();
    drop(permit);

    let output = match result {
        Ok(output) => output,
        Err(error) => {
            if shared.cancellation.is_cancelled() {
                shared.events.emit(Event::VertexCancelled { vertex: id });
            } else {
                shared.events.emit(Event::VertexFailed {
                    vertex: id,
                    error: error_chain(error.as_ref()),
                });
                shared.fail(SolveError::Op {
                    vertex: id,
                    description,
                    action: OpAction::Exec,
                    source: error,
                });
            }
            return Err(Aborted);
        }
    };

    let record = CacheRecord {
        output: output.clone(),
        cache_key: keys.final_key,
    };
    let mut recorded = shared.index.put(&keys.final_key, &record);
    if let Some(fast) = keys.fast.filter(|fast| *fast != keys.final_key) {
        recorded = recorded.and_then(|()| shared.index.put(&fast, &record));
    }
    if let Err(error) = recorded {
        shared.events.emit(Event::VertexFailed {
            vertex: id,
            error: error_chain(&error),
        });
        shared.fail(SolveError::CacheIndex {
            vertex: id,
            description,
            source: error,
        });
        return Err(Aborted);
    }
    shared
        .lock_outcomes()
        .insert(id, VertexOutcome::Executed { duration });
    shared.events.emit(Event::VertexCompleted {
        vertex: id,
        duration,
        usage: context.take_usage(),
    });
    Ok(output)
}

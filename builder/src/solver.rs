//! The solver: computes cache keys, looks them up, executes what missed — in
//! parallel, each vertex at most once, only what the targets need.
//!
//! See `docs/solver.md` for the states of a vertex and how keys are derived.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use petgraph::algo::toposort;
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, NodeFiltered};
use tokio::sync::{oneshot, Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache_index::{CacheIndex, CacheIndexError, CacheRecord};
use crate::digest::{CacheKey, CanonicalBytes, CanonicalEncoder, DefinitionDigest, Digest};
use crate::graph::{BuildGraph, VertexId};
use crate::op::{Op, OpContext, OpError};
use crate::progress::{error_chain, Event, EventSink, Usage};

/// What failed while solving.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A target is not a vertex of the graph.
    #[error("failed to solve: target {0} is not in the build graph")]
    UnknownTarget(VertexId),
    /// The vertices the targets need form a cycle.
    #[error(
        "failed to solve: `{}` depends on itself through its inputs",
        hoist_cache::text::escape(description)
    )]
    Cycle {
        /// A vertex on the cycle.
        vertex: VertexId,
        /// Its description.
        description: String,
    },
    /// An op failed (its `exec`, or computing a digest for its cache key).
    #[error("failed to {action} `{}`", hoist_cache::text::escape(description))]
    Op {
        /// The vertex whose op failed.
        vertex: VertexId,
        /// Its description (e.g. `Dockerfile:7: RUN make`).
        description: String,
        /// What the solver asked the op to do.
        action: OpAction,
        /// The last lines the op logged (at most [`LOG_TAIL_LINES`]), for the
        /// user to see why it failed; empty if it logged nothing.
        ///
        /// [`LOG_TAIL_LINES`]: crate::LOG_TAIL_LINES
        log_tail: Vec<String>,
        /// The op's error.
        #[source]
        source: OpError,
    },
    /// The cache index failed to look up or record a vertex's key.
    #[error(
        "failed to use the cache index for `{}`",
        hoist_cache::text::escape(description)
    )]
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
        /// Resources the op reported using.
        usage: Option<Usage>,
        /// Whether the op, ready with a permit free, held back a moment
        /// for a longer independent op expected to ask for one (see
        /// [`StepHistory`]).
        held_back: bool,
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
    /// The output of every vertex in `outcomes` (e.g. for the build summary's
    /// layer sizes), keyed the same way.
    pub vertex_outputs: BTreeMap<VertexId, O>,
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
    history: Option<Arc<dyn StepHistory>>,
}

/// How long ops ran in earlier builds, so that the solver starts the longest
/// known op first when more ops are ready than `jobs` allows (longest
/// processing time first: the last op to start is then a short one, and the
/// cores finish together instead of one finishing a long op alone).
///
/// Keyed by the op's own definition digest (the RUN command and its options,
/// not its inputs), so a step whose inputs changed still has its history.
pub trait StepHistory: Send + Sync {
    /// How long the op took when it last ran, if known.
    fn expected(&self, op: &Digest) -> Option<Duration>;
    /// Records how long the op took (its CPU time when measured, else its wall time).
    fn record(&self, op: &Digest, took: Duration);
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
            history: None,
        }
    }

    /// Orders ready ops by how long they took before (see [`StepHistory`]) and
    /// records how long each executed op takes.
    pub fn with_history(mut self, history: Arc<dyn StepHistory>) -> Self {
        self.history = Some(history);
        self
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

    /// Nodes whose recorded duration is shorter than that of other nodes
    /// independent of them (neither needs the other, so both may be ready at
    /// once), with their own duration and those longer peers: such a node
    /// waits before taking a free permit while a longer peer is on its way,
    /// so that the peer can have it (see [`Run::hold_back`]). Without a
    /// history, none; nor nodes that take less than [`WORTH_HOLDING`].
    fn patient_nodes(
        &self,
        graph: &BuildGraph<O>,
        nodes: &HashMap<NodeIndex, Node<O>>,
    ) -> HashMap<NodeIndex, Patience> {
        let Some(history) = &self.history else {
            return HashMap::new();
        };
        let known: Vec<(NodeIndex, Duration)> = nodes
            .iter()
            .filter_map(|(index, node)| Some((*index, history.expected(&node.op_digest)?)))
            .collect();
        // Pairs of walks: kept to graphs of a size where that is instant.
        if known.len() > 256 {
            return HashMap::new();
        }
        let petgraph = graph.petgraph();
        let mut patient = HashMap::new();
        for (a, a_takes) in &known {
            // A build context or an image's config takes no time at all:
            // starting it first costs its peer nothing worth a wait.
            if *a_takes < WORTH_HOLDING {
                continue;
            }
            let longer_peers: Vec<NodeIndex> = known
                .iter()
                .filter(|(b, b_takes)| {
                    b_takes > a_takes
                        && !petgraph::algo::has_path_connecting(petgraph, *a, *b, None)
                        && !petgraph::algo::has_path_connecting(petgraph, *b, *a, None)
                })
                .map(|(b, _)| *b)
                .collect();
            if !longer_peers.is_empty() {
                patient.insert(
                    *a,
                    Patience {
                        at_most: (*a_takes).min(PATIENCE),
                        longer_peers,
                    },
                );
            }
        }
        patient
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
        let patient = self.patient_nodes(graph, &plan.nodes);
        let run = Arc::new(Run {
            patient,
            settled: Mutex::new(HashSet::new()),
            queued: Mutex::new(HashSet::new()),
            arrivals: Notify::new(),
            nodes: plan.nodes,
            index: self.index.clone(),
            events: self.events.clone(),
            cancellation: cancellation.child_token(),
            permits: Arc::new(Permits::new(self.jobs)),
            history: self.history.clone(),
            tracker: TaskTracker::new(),
            failure: Mutex::new(None),
            outcomes: Mutex::new(BTreeMap::new()),
        });

        // If the caller drops this future instead of cancelling, the tasks it
        // started must still stop: cancel them on the way out.
        let _stop_on_drop = run.cancellation.clone().drop_guard();

        let roots = plan.targets.iter().copied().chain(plan.forced);
        let result = try_join_all(roots.map(|node| run.output(node))).await;

        if result.is_err() {
            // Whatever the reason, nothing else should start or keep running.
            run.cancellation.cancel();
        }
        // Tasks may still be running (their waiters were dropped when a sibling
        // failed): wait so that every started op's cleanup is over when we return.
        run.tracker.close();
        run.tracker.wait().await;

        if let Some(error) = run.take_failure() {
            return Err(error);
        }
        let mut outputs = result.map_err(|Aborted| SolveError::Cancelled)?;
        outputs.truncate(plan.targets.len());
        let mut cache_keys = Vec::with_capacity(plan.targets.len());
        for node in &plan.targets {
            match run.nodes[node].keys.get() {
                Some(Ok(keys)) => cache_keys.push(keys.final_key),
                // A target's output exists only after its keys were computed.
                _ => return Err(SolveError::Cancelled),
            }
        }
        let outcomes = std::mem::take(&mut *run.lock_outcomes());
        let vertex_outputs = outcomes
            .keys()
            .filter_map(|id| match run.nodes.get(&id.0)?.output.get() {
                Some(Ok(output)) => Some((*id, output.clone())),
                _ => None,
            })
            .collect();
        Ok(Solution {
            outputs,
            cache_keys,
            outcomes,
            vertex_outputs,
        })
    }
}

/// The part of a solve decided before anything runs: which vertices are needed, in
/// which order, and which are duplicates of each other.
struct Plan<O> {
    /// One node per distinct definition digest among the needed vertices.
    nodes: HashMap<NodeIndex, Node<O>>,
    /// The node of each target, in order.
    targets: Vec<NodeIndex>,
    /// Needed nodes that ignore the cache: they run even if no consumer needs
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
        // Every needed vertex → the first vertex with the same definition digest.
        let mut canonical: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut nodes: HashMap<NodeIndex, Node<O>> = HashMap::new();
        for index in order {
            let vertex = &petgraph[index];
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
            definitions.insert(index, definition);
            let first = *first_with.entry(definition).or_insert(index);
            canonical.insert(index, first);
            let node = nodes.entry(first).or_insert_with(|| Node {
                op: vertex.op.clone(),
                inputs: vertex
                    .inputs
                    .iter()
                    .map(|input| canonical[&input.0])
                    .collect(),
                name: vertex.meta.name.clone(),
                description: vertex.meta.description.clone(),
                source: vertex.meta.source.clone(),
                op_digest,
                ignore_cache: false,
                keys: OnceCell::new(),
                output: OnceCell::new(),
            });
            // Duplicates run once; if any copy asks to bypass the cache, it is bypassed.
            node.ignore_cache |= vertex.meta.ignore_cache;
        }
        let mut forced: Vec<NodeIndex> = nodes
            .iter()
            .filter(|(_, node)| node.ignore_cache)
            .map(|(index, _)| *index)
            .collect();
        forced.sort();
        Ok(Plan {
            nodes,
            targets: targets.iter().map(|target| canonical[&target.0]).collect(),
            forced,
        })
    }
}

/// Marks a vertex whose output will not come: it or something it needed failed, or
/// the build was cancelled. The reason is in [`Run::failure`] (or is the caller's
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

/// A needed vertex, owning what the solve needs of it, so that its work can run on
/// tasks of its own.
struct Node<O> {
    op: Arc<dyn Op<O>>,
    /// Inputs, as nodes (duplicates already replaced by their first copy).
    inputs: Vec<NodeIndex>,
    name: String,
    description: String,
    source: Option<crate::SourceLine>,
    op_digest: Digest,
    ignore_cache: bool,
    keys: OnceCell<Result<Keys<O>, Aborted>>,
    output: OnceCell<Result<O, Aborted>>,
}

/// The state of one solve, shared by its tasks.
///
/// Each node's keys and output are computed at most once, on a task of their own
/// (so that a long chain of vertices is a chain of tasks waiting on each other, not
/// a deep stack of nested futures).
struct Run<O> {
    nodes: HashMap<NodeIndex, Node<O>>,
    index: Arc<dyn CacheIndex<O>>,
    events: EventSink,
    /// Cancelled by the caller (parent token) or by the first failure.
    cancellation: CancellationToken,
    permits: Arc<Permits>,
    history: Option<Arc<dyn StepHistory>>,
    /// Nodes that hold back for a longer op on its way to a free permit, with
    /// those longer ops (see [`Solver::patient_nodes`]).
    patient: HashMap<NodeIndex, Patience>,
    /// Nodes that will not ask for a permit later: found in the cache, or
    /// already asking (or past it). Nobody holds back for them.
    settled: Mutex<HashSet<NodeIndex>>,
    /// Nodes that asked for a permit (waiting, running or done): a node
    /// with one of these among its ancestors, not done, is not on its way.
    queued: Mutex<HashSet<NodeIndex>>,
    /// Woken when a node settles: a node holding back looks again.
    arrivals: Notify,
    tracker: TaskTracker,
    failure: Mutex<Option<SolveError>>,
    outcomes: Mutex<BTreeMap<VertexId, VertexOutcome>>,
}

/// How one input enters a content-based key.
enum KeyInput {
    Key(CacheKey),
    Content(Digest),
}

impl<O> Run<O>
where
    O: Clone + Send + Sync + 'static,
{
    /// Records why the build fails, unless it is already failing or being cancelled
    /// (then `error` is a consequence, not the cause), and stops everything else.
    fn fail(&self, error: SolveError) -> Aborted {
        if !self.cancellation.is_cancelled() {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                *failure = Some(error);
            }
        }
        self.cancellation.cancel();
        Aborted
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

    fn lock_settled(&self) -> std::sync::MutexGuard<'_, HashSet<NodeIndex>> {
        // Single inserts only: a poisoned set is still consistent.
        self.settled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `node` as asking for a permit now (it is queued) or never (a
    /// record of it was found), and wakes the nodes holding back.
    fn settle(&self, node: NodeIndex) {
        self.lock_settled().insert(node);
        self.arrivals.notify_waiters();
    }

    /// Whether a longer peer of a patient node may still ask for a permit
    /// soon: it has not settled, and none of its ancestors has asked for one
    /// and is not done yet (such a peer waits for that work, not for its keys).
    fn peer_on_its_way(&self, peers: &[NodeIndex]) -> bool {
        let settled = self.lock_settled();
        let queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        let busy =
            |node: &NodeIndex| queued.contains(node) && !self.nodes[node].output.initialized();
        peers.iter().any(|peer| {
            if settled.contains(peer) {
                return false;
            }
            let mut seen = HashSet::new();
            let mut stack = self.nodes[peer].inputs.clone();
            while let Some(ancestor) = stack.pop() {
                if !seen.insert(ancestor) {
                    continue;
                }
                if busy(&ancestor) {
                    return false;
                }
                stack.extend_from_slice(&self.nodes[&ancestor].inputs);
            }
            true
        })
    }

    /// Before a patient node takes a free permit: waits while a longer peer
    /// is on its way (it is still looking its keys up), so that the peer gets
    /// the permit; at most [`Patience::at_most`]. Says whether it waited.
    async fn hold_back(&self, node: NodeIndex) -> bool {
        let Some(patience) = self.patient.get(&node) else {
            return false;
        };
        if !self.peer_on_its_way(&patience.longer_peers) {
            return false;
        }
        // Not `tokio::time`: the caller's runtime need not have timers.
        let at_most = patience.at_most;
        let mut give_up = std::pin::pin!(tokio::task::spawn_blocking(move || {
            std::thread::sleep(at_most)
        }));
        loop {
            let arrival = self.arrivals.notified();
            let mut arrival = std::pin::pin!(arrival);
            // Registered before the look, so that no settle falls between.
            arrival.as_mut().enable();
            if !self.peer_on_its_way(&patience.longer_peers) {
                return true;
            }
            tokio::select! {
                _ = arrival => {}
                _ = &mut give_up => return true,
            }
        }
    }

    fn context(&self, node: NodeIndex) -> OpContext {
        OpContext::new(
            VertexId(node),
            self.cancellation.clone(),
            self.events.clone(),
        )
    }

    fn op_failed(&self, node: NodeIndex, action: OpAction, source: OpError) -> Aborted {
        self.op_failed_with_log(node, action, source, Vec::new())
    }

    fn op_failed_with_log(
        &self,
        node: NodeIndex,
        action: OpAction,
        source: OpError,
        log_tail: Vec<String>,
    ) -> Aborted {
        self.fail(SolveError::Op {
            vertex: VertexId(node),
            description: self.nodes[&node].description.clone(),
            action,
            log_tail,
            source,
        })
    }

    fn index_failed(&self, node: NodeIndex, source: CacheIndexError) -> Aborted {
        self.fail(SolveError::CacheIndex {
            vertex: VertexId(node),
            description: self.nodes[&node].description.clone(),
            source,
        })
    }

    fn lookup(&self, node: NodeIndex, key: &CacheKey) -> Result<Option<CacheRecord<O>>, Aborted> {
        self.index
            .get(key)
            .map_err(|error| self.index_failed(node, error))
    }

    /// The node's keys, computed once per solve.
    fn keys(self: &Arc<Self>, node: NodeIndex) -> BoxFuture<'static, Result<Keys<O>, Aborted>> {
        let run = self.clone();
        async move {
            let init = || {
                let task = run.tracker.spawn(run.clone().compute_keys(node));
                // Tasks catch panics of ops and are never aborted: a join error means
                // the runtime is shutting down, and nothing will complete.
                task.map(|joined| joined.unwrap_or(Err(Aborted)))
            };
            run.nodes[&node].keys.get_or_init(init).await.clone()
        }
        .boxed()
    }

    /// Whether the node's op must run to give its output (no cache record).
    /// One that need not will never ask for a permit: it settles.
    fn will_execute(&self, node: NodeIndex, keys: &Keys<O>) -> Result<bool, Aborted> {
        let vertex = &self.nodes[&node];
        let executes = vertex.ignore_cache
            || (keys.hit.is_none() && self.lookup(node, &keys.final_key)?.is_none());
        if !executes {
            self.settle(node);
        }
        Ok(executes)
    }

    /// Starts computing the node's output without waiting for it. A consumer
    /// that digests an input's content needs that output for its key, but
    /// only once the keys of its other inputs are known; in a chain of
    /// `COPY --from=sN` each of those waits for the stage before, so the
    /// stages would run one after the other. An input that must run anyway
    /// starts as soon as its own keys say so (a failure is reported by its
    /// task as any other).
    fn start_output(self: &Arc<Self>, node: NodeIndex) {
        let output = self.output(node);
        drop(self.tracker.spawn(async move {
            let _ = output.await;
        }));
    }

    /// The node's output, obtained once per solve.
    fn output(self: &Arc<Self>, node: NodeIndex) -> BoxFuture<'static, Result<O, Aborted>> {
        let run = self.clone();
        async move {
            // If this waiter is dropped, the cell stays empty while the task runs on;
            // a later waiter would start the work again. That cannot run an op
            // twice: waiters are only dropped after the build is cancelled (a
            // failure, the caller, or the drop of `solve`), and no op starts then.
            let init = || {
                let task = run.tracker.spawn(run.clone().compute_output(node));
                task.map(|joined| joined.unwrap_or(Err(Aborted)))
            };
            run.nodes[&node].output.get_or_init(init).await.clone()
        }
        .boxed()
    }

    /// Cache-fast, then cache-slow: the definition-based key from the inputs' keys;
    /// for content-addressed inputs, a lookup of that key (whose record carries the
    /// content-based key), and only on a miss the content digests, which need the
    /// inputs' outputs.
    async fn compute_keys(self: Arc<Self>, node: NodeIndex) -> Result<Keys<O>, Aborted> {
        let vertex = &self.nodes[&node];
        let op = &vertex.op;
        let input_keys = try_join_all(vertex.inputs.iter().enumerate().map(|(position, input)| {
            let run = &self;
            async move {
                let keys = run.keys(*input).await?;
                if op.content_addressed(position) && run.will_execute(*input, &keys)? {
                    run.start_output(*input);
                }
                Ok::<_, Aborted>(keys)
            }
        }))
        .await?;
        let context = self.context(node);

        let source = catch_panic(op.source_digest(&context))
            .await
            .map_err(|error| self.op_failed(node, OpAction::SourceDigest, error))?;
        let selectors: Vec<Option<CanonicalBytes>> =
            (0..vertex.inputs.len()).map(|i| op.selector(i)).collect();
        let content_addressed: Vec<bool> = (0..vertex.inputs.len())
            .map(|i| op.content_addressed(i))
            .collect();

        let fast = match source {
            Some(_) => None,
            None => {
                let mut encoder = CanonicalEncoder::new("cache-key", 1);
                encoder.digest("op", &vertex.op_digest);
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
            if !vertex.ignore_cache {
                if let Some(record) = self.lookup(node, &fast)? {
                    return Ok(Keys {
                        fast: Some(fast),
                        final_key: record.cache_key,
                        hit: Some(record.output),
                    });
                }
            }
        }

        let key_inputs = try_join_all(vertex.inputs.iter().enumerate().map(|(position, input)| {
            let context = &context;
            let input_keys = &input_keys;
            let content_addressed = &content_addressed;
            let run = &self;
            async move {
                if !content_addressed[position] {
                    return Ok(KeyInput::Key(input_keys[position].final_key));
                }
                let output = run.output(*input).await?;
                catch_panic(op.content_digest(context, position, &output))
                    .await
                    .map(KeyInput::Content)
                    .map_err(|error| run.op_failed(node, OpAction::ContentDigest, error))
            }
        }))
        .await?;

        let mut encoder = CanonicalEncoder::new("content-cache-key", 1);
        encoder
            .digest("op", &vertex.op_digest)
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

    async fn compute_output(self: Arc<Self>, node: NodeIndex) -> Result<O, Aborted> {
        let vertex = &self.nodes[&node];
        let id = VertexId(node);
        let keys = self.keys(node).await?;

        if !vertex.ignore_cache {
            let hit = match keys.hit.clone() {
                Some(output) => Some(output),
                None => self
                    .lookup(node, &keys.final_key)?
                    .map(|record| record.output),
            };
            if let Some(output) = hit {
                self.settle(node);
                self.lock_outcomes().insert(id, VertexOutcome::Cached);
                self.events.emit(Event::VertexCached {
                    vertex: id,
                    name: vertex.name.clone(),
                });
                return Ok(output);
            }
        }

        let inputs = try_join_all(vertex.inputs.iter().map(|input| self.output(*input))).await?;

        // Checked first (biased) so that no op starts once the build is cancelled,
        // even if a permit is free.
        let expected = self
            .history
            .as_ref()
            .and_then(|history| history.expected(&vertex.op_digest));
        let ticket = Permits::queue(&self.permits, expected);
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node);
        self.settle(node);
        let permit = tokio::select! {
            biased;
            _ = self.cancellation.cancelled() => return Err(Aborted),
            permit = ticket.permit(self.hold_back(node)) => permit?,
        };
        self.execute(node, keys, inputs, permit).await
    }

    /// Runs the node's op and records its result. It runs on the node's own task, so
    /// it finishes (records, reports) even if the solve stops waiting for it.
    async fn execute(
        &self,
        node: NodeIndex,
        keys: Keys<O>,
        inputs: Vec<O>,
        permit: Permit,
    ) -> Result<O, Aborted> {
        let vertex = &self.nodes[&node];
        let id = VertexId(node);
        let context = self.context(node);
        self.events.emit(Event::VertexStarted {
            vertex: id,
            name: vertex.name.clone(),
        });
        let started = Instant::now();
        let result = catch_panic(vertex.op.exec(&context, inputs)).await;
        let duration = started.elapsed();
        let (usage, log_tail) = context.take_record();

        let output = match result {
            Ok(output) => output,
            Err(error) => {
                if self.cancellation.is_cancelled() {
                    self.events.emit(Event::VertexCancelled { vertex: id });
                    return Err(Aborted);
                }
                self.events.emit(Event::VertexFailed {
                    vertex: id,
                    error: error_chain(error.as_ref()),
                });
                self.events.emit(Event::VertexSource {
                    vertex: id,
                    description: vertex.description.clone(),
                    source: vertex.source.clone(),
                });
                return Err(self.op_failed_with_log(node, OpAction::Exec, error, log_tail));
            }
        };

        let record = CacheRecord {
            output: output.clone(),
            cache_key: keys.final_key,
        };
        let description = vertex.description.as_str();
        let mut recorded = self
            .index
            .put_vertex(&keys.final_key, &record, id, description);
        if let Some(fast) = keys.fast.filter(|fast| *fast != keys.final_key) {
            recorded =
                recorded.and_then(|()| self.index.put_vertex(&fast, &record, id, description));
        }
        if let Err(error) = recorded {
            self.events.emit(Event::VertexFailed {
                vertex: id,
                error: error_chain(&error),
            });
            self.events.emit(Event::VertexSource {
                vertex: id,
                description: vertex.description.clone(),
                source: vertex.source.clone(),
            });
            return Err(self.index_failed(node, error));
        }
        if let Some(history) = &self.history {
            // The step's CPU time when the runner measured it: its wall time
            // grows with whatever ran beside it, and the order is about the
            // work each step brings.
            let length = usage
                .map(|usage| usage.cpu_time)
                .filter(|cpu| !cpu.is_zero())
                .unwrap_or(duration);
            history.record(&vertex.op_digest, length);
        }
        self.lock_outcomes().insert(
            id,
            VertexOutcome::Executed {
                duration,
                usage,
                held_back: permit.held_back,
            },
        );
        self.events.emit(Event::VertexCompleted {
            vertex: id,
            duration,
            usage,
        });
        Ok(output)
    }
}

/// The longest an op known to be shorter than an independent peer waits for
/// that peer to queue before taking a free permit: nothing next to the
/// seconds such steps run, ample for the peer's key lookups on a busy
/// machine. The wait ends as soon as the peer queues, usually within a
/// millisecond; it is never longer than the op itself takes.
const PATIENCE: Duration = Duration::from_millis(100);

/// Ops known to take less never hold back: starting one first costs a longer
/// peer no more than that.
const WORTH_HOLDING: Duration = Duration::from_millis(20);

/// What a patient node waits for (see [`Solver::patient_nodes`]).
struct Patience {
    /// Its wait's limit: [`PATIENCE`], or its own duration if shorter.
    at_most: Duration,
    /// Independent nodes expected to take longer.
    longer_peers: Vec<NodeIndex>,
}

/// At most `jobs` ops executing at once; when a permit frees, it goes to the
/// waiting op expected to run longest. Ops without a history go first (a new
/// step may be the long one; if it is short, starting it early costs little),
/// then by expected duration, longest first; ties in arrival order.
struct Permits {
    state: Mutex<PermitState>,
}

struct PermitState {
    free: usize,
    arrivals: u64,
    waiting: BinaryHeap<Waiter>,
}

struct Waiter {
    /// (no history, expected duration, earlier arrival): greatest first.
    rank: (bool, Duration, Reverse<u64>),
    /// Receives the permit itself: if the waiter is gone by then (the build
    /// was cancelled), dropping the unreceived permit passes it on.
    grant: oneshot::Sender<Permit>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// A place in the queue for a permit.
struct Ticket {
    permits: Arc<Permits>,
    granted: oneshot::Receiver<Permit>,
}

impl Ticket {
    /// The permit. While one is free, `hold_back` runs first (it says
    /// whether it waited): the holder leaves it to a longer op on its way.
    async fn permit(
        self,
        hold_back: impl std::future::Future<Output = bool>,
    ) -> Result<Permit, Aborted> {
        // Ops become ready in bursts (the stages of one base all wake when it is
        // there): let the others of the burst queue up before a free permit is
        // handed out, or the first to arrive would take it whatever its length.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        let free = self.permits.lock().free > 0;
        let held_back = free && hold_back.await;
        self.permits.dispatch();
        let mut permit = self.granted.await.map_err(|_| Aborted)?;
        permit.held_back = held_back;
        Ok(permit)
    }
}

/// The right to execute one op; released (passed on) when dropped.
struct Permit {
    permits: Option<Arc<Permits>>,
    /// Whether its holder held back for a longer op before asking.
    held_back: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(permits) = self.permits.take() {
            permits.release();
        }
    }
}

impl Permits {
    fn new(jobs: usize) -> Self {
        Permits {
            state: Mutex::new(PermitState {
                free: jobs,
                arrivals: 0,
                waiting: BinaryHeap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PermitState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the queue for a permit; the ticket receives it.
    fn queue(this: &Arc<Self>, expected: Option<Duration>) -> Ticket {
        let mut state = this.lock();
        let (grant, granted) = oneshot::channel();
        let arrival = state.arrivals;
        state.arrivals += 1;
        state.waiting.push(Waiter {
            rank: (
                expected.is_none(),
                expected.unwrap_or_default(),
                Reverse(arrival),
            ),
            grant,
        });
        Ticket {
            permits: this.clone(),
            granted,
        }
    }

    /// Hands the free permits to the best waiters.
    fn dispatch(self: &Arc<Self>) {
        let mut state = self.lock();
        while state.free > 0 {
            let Some(waiter) = state.waiting.pop() else {
                return;
            };
            let permit = Permit {
                permits: Some(self.clone()),
                held_back: false,
            };
            match waiter.grant.send(permit) {
                Ok(()) => state.free -= 1,
                // Gone (the build was cancelled): the next one, without the
                // permit releasing itself (the lock is held here).
                Err(mut permit) => permit.permits = None,
            }
        }
    }

    fn release(self: &Arc<Self>) {
        self.lock().free += 1;
        self.dispatch();
    }
}

/// Turns a panic of an op's future into an error of that op, so that one broken op
/// fails the build like any other failure instead of tearing down the solve.
async fn catch_panic<T>(
    future: impl std::future::Future<Output = Result<T, OpError>>,
) -> Result<T, OpError> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Box::new(OpPanicked { message }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_permit_goes_to_the_longest_expected_op_and_skips_those_gone() {
        let permits = Arc::new(Permits::new(1));
        let held = Permits::queue(&permits, None)
            .permit(async { false })
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let waiters = [
            ("short", Some(1)),
            ("long", Some(9)),
            ("gone", Some(20)),
            ("no history", None),
            ("middle", Some(5)),
            ("long, later", Some(9)),
        ];
        for (name, secs) in waiters {
            let mut acquire = Box::pin(
                Permits::queue(&permits, secs.map(Duration::from_secs)).permit(async { false }),
            );
            // Polled once here, so the waiters queue up in this order.
            assert!(futures::poll!(&mut acquire).is_pending());
            if name == "gone" {
                // A cancelled build drops its waiters; their turn must pass on.
                continue;
            }
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let permit = acquire.await.unwrap();
                order.lock().unwrap().push(name);
                drop(permit);
            }));
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["no history", "long", "long, later", "middle", "short"]
        );
        assert_eq!(permits.lock().free, 1, "every permit came back");
    }
}

//! Fake ops that count their executions, and a harness collecting events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use hoist_builder::{
    async_trait, BuildGraph, CancellationToken, CanonicalBytes, CanonicalEncoder, Digest, Event,
    EventSink, MemoryCacheIndex, Op, OpContext, OpError, Solution, SolveError, Solver, VertexId,
    VertexMeta,
};

/// Runs before a fake op produces its output; may wait, fail, or watch cancellation.
pub type Hook = Arc<dyn Fn(OpContext) -> BoxFuture<'static, Result<(), OpError>> + Send + Sync>;

/// What [`Fake::hook`] takes: the helpers that make hooks return it.
pub trait HookFn:
    Fn(OpContext) -> BoxFuture<'static, Result<(), OpError>> + Send + Sync + 'static
{
}

impl<T> HookFn for T where
    T: Fn(OpContext) -> BoxFuture<'static, Result<(), OpError>> + Send + Sync + 'static
{
}

/// Execution counts by op name, shared by every fake of a harness.
pub type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// A fake op: its output is `name(input,input…)`, or a fixed text, or the current
/// value of an outside "source".
#[derive(Clone)]
pub struct Fake {
    name: String,
    definition: String,
    output: Option<String>,
    selector: Option<String>,
    content_addressed: bool,
    source: Option<Arc<Mutex<String>>>,
    hook: Option<Hook>,
    key_hook: Option<Hook>,
    digest_error: Option<String>,
    counts: Counts,
    content_digests: Counts,
}

impl Fake {
    /// The output, unless a fixed text or a source is set.
    fn computed(&self, inputs: &[String]) -> String {
        if let Some(source) = &self.source {
            return source.lock().unwrap().clone();
        }
        match &self.output {
            Some(text) => text.clone(),
            None => format!("{}({})", self.name, inputs.join(",")),
        }
    }

    /// Changes what enters the definition (and so the keys) without changing the name.
    pub fn definition(mut self, definition: &str) -> Self {
        self.definition = definition.to_owned();
        self
    }

    /// Makes the output a fixed text, whatever the definition and inputs.
    pub fn output(mut self, text: &str) -> Self {
        self.output = Some(text.to_owned());
        self
    }

    /// Gives input 0 a selector.
    pub fn selector(mut self, selector: &str) -> Self {
        self.selector = Some(selector.to_owned());
        self
    }

    /// Makes input 0 enter the key by the digest of its output's text.
    pub fn content_addressed(mut self) -> Self {
        self.content_addressed = true;
        self
    }

    /// Makes the op read outside state: its source digest and output are `state`'s text.
    pub fn source(mut self, state: Arc<Mutex<String>>) -> Self {
        self.source = Some(state);
        self
    }

    /// Makes `content_digest` and `source_digest` fail with `message`.
    pub fn digest_error(mut self, message: &str) -> Self {
        self.digest_error = Some(message.to_owned());
        self
    }

    /// Runs `hook` inside `exec`, before the output is produced.
    pub fn hook(mut self, hook: impl HookFn) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` inside `source_digest`, while the solve computes the
    /// op's keys.
    pub fn key_hook(mut self, hook: impl HookFn) -> Self {
        self.key_hook = Some(Arc::new(hook));
        self
    }
}

#[async_trait]
impl Op<String> for Fake {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("fake", 1)
            .str("name", &self.name)
            .str("definition", &self.definition)
            .finish()
    }

    fn selector(&self, input: usize) -> Option<CanonicalBytes> {
        let selector = self.selector.as_ref().filter(|_| input == 0)?;
        Some(
            CanonicalEncoder::new("fake-selector", 1)
                .str("path", selector)
                .finish(),
        )
    }

    fn content_addressed(&self, input: usize) -> bool {
        self.content_addressed && input == 0
    }

    async fn content_digest(
        &self,
        _: &OpContext,
        _input: usize,
        output: &String,
    ) -> Result<Digest, OpError> {
        *self
            .content_digests
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += 1;
        if let Some(message) = &self.digest_error {
            return Err(message.clone().into());
        }
        Ok(Digest::of(output.as_bytes()))
    }

    async fn source_digest(&self, context: &OpContext) -> Result<Option<Digest>, OpError> {
        if let Some(hook) = &self.key_hook {
            hook(context.clone()).await?;
        }
        if let (Some(message), Some(_)) = (&self.digest_error, &self.source) {
            return Err(message.clone().into());
        }
        Ok(self
            .source
            .as_ref()
            .map(|state| Digest::of(state.lock().unwrap().as_bytes())))
    }

    async fn exec(&self, context: &OpContext, inputs: Vec<String>) -> Result<String, OpError> {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += 1;
        if let Some(hook) = &self.hook {
            hook(context.clone()).await?;
        }
        Ok(self.computed(&inputs))
    }
}

/// A graph of fakes, one shared index, and every event of every solve.
pub struct Harness {
    pub graph: BuildGraph<String>,
    pub index: Arc<MemoryCacheIndex<String>>,
    pub events: Arc<Mutex<Vec<Event>>>,
    counts: Counts,
    content_digests: Counts,
    pub jobs: usize,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            graph: BuildGraph::new(),
            index: Arc::new(MemoryCacheIndex::new()),
            events: Arc::new(Mutex::new(Vec::new())),
            counts: Counts::default(),
            content_digests: Counts::default(),
            jobs: 4,
        }
    }

    /// A fake named `name`, counting into this harness.
    pub fn fake(&self, name: &str) -> Fake {
        Fake {
            name: name.to_owned(),
            definition: String::new(),
            output: None,
            selector: None,
            content_addressed: false,
            source: None,
            hook: None,
            key_hook: None,
            digest_error: None,
            counts: self.counts.clone(),
            content_digests: self.content_digests.clone(),
        }
    }

    /// Adds `op` with `inputs`; its name is the op's name.
    pub fn add(&mut self, op: Fake, inputs: &[VertexId]) -> VertexId {
        let meta =
            VertexMeta::new(op.name.clone()).with_description(format!("Dockerfile:1: {}", op.name));
        self.graph.add(op, inputs, meta).unwrap()
    }

    /// Starts a new graph over the same index and counters (the next build).
    pub fn next_build(&mut self) {
        self.graph = BuildGraph::new();
        self.events.lock().unwrap().clear();
    }

    pub fn solver(&self) -> Solver<String> {
        let events = self.events.clone();
        Solver::new(self.index.clone())
            .with_jobs(self.jobs)
            .with_events(EventSink::new(move |event| {
                events.lock().unwrap().push(event)
            }))
    }

    pub async fn solve(&self, targets: &[VertexId]) -> Result<Solution<String>, SolveError> {
        self.solve_with(targets, &CancellationToken::new()).await
    }

    pub async fn solve_with(
        &self,
        targets: &[VertexId],
        cancel: &CancellationToken,
    ) -> Result<Solution<String>, SolveError> {
        self.solver().solve(&self.graph, targets, cancel).await
    }

    /// Executions of the op named `name` so far, over all builds.
    pub fn execs(&self, name: &str) -> usize {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Executions of all ops so far, sorted by name.
    pub fn all_execs(&self) -> Vec<(String, usize)> {
        let mut all: Vec<_> = self
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect();
        all.sort();
        all
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
        self.content_digests.lock().unwrap().clear();
    }

    pub fn content_digests(&self, name: &str) -> usize {
        self.content_digests
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Events as short strings: `started a`, `cached b`, `completed a`, `failed c`,
    /// `cancelled d`, using vertex names of the current graph.
    pub fn event_lines(&self) -> Vec<String> {
        let name = |vertex: &VertexId| self.graph.vertex(*vertex).unwrap().meta().name.clone();
        self.events()
            .iter()
            .filter_map(|event| match event {
                Event::VertexStarted { vertex, .. } => Some(format!("started {}", name(vertex))),
                Event::VertexCached { vertex, .. } => Some(format!("cached {}", name(vertex))),
                Event::VertexCompleted { vertex, .. } => {
                    Some(format!("completed {}", name(vertex)))
                }
                Event::VertexFailed { vertex, .. } => Some(format!("failed {}", name(vertex))),
                Event::VertexCancelled { vertex } => Some(format!("cancelled {}", name(vertex))),
                _ => None,
            })
            .collect()
    }
}

/// Builds a hook from an async block.
#[macro_export]
macro_rules! hook {
    (|$context:ident| $body:expr) => {
        move |$context: hoist_builder::OpContext| -> futures::future::BoxFuture<
                                                            'static,
                                                            Result<(), hoist_builder::OpError>,
                                                        > { Box::pin($body) }
    };
}

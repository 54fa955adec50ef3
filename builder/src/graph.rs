//! The build graph as the solver sees it: vertices (an op, its inputs, and metadata
//! that never enters a digest).

use std::fmt;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::op::Op;

/// Identifies a vertex of one [`BuildGraph`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VertexId(pub(crate) NodeIndex);

impl VertexId {
    /// Position of the vertex in its graph, in insertion order from 0.
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.index())
    }
}

/// What describes a vertex to people, and per-build flags: none of it enters the
/// definition digest or the cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexMeta {
    /// Progress name, e.g. `[build 2/4] RUN make`.
    pub name: String,
    /// What errors call the vertex, e.g. `Dockerfile:7: RUN make`. Defaults to the name.
    pub description: String,
    /// The Dockerfile line the vertex comes from, when it has one.
    pub source: Option<SourceLine>,
    /// Run the op even if its key is in the cache (`--no-cache`,
    /// `--no-cache-filter`); the new result is still recorded.
    pub ignore_cache: bool,
}

impl VertexMeta {
    /// Metadata with `name` as both progress name and description.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        VertexMeta {
            description: name.clone(),
            name,
            source: None,
            ignore_cache: false,
        }
    }

    /// Sets the description used in errors (typically the source span and the
    /// instruction).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the source line, and the description errors use from it
    /// (`Dockerfile:7: RUN make`).
    pub fn with_source(mut self, source: SourceLine) -> Self {
        self.description = source.to_string();
        self.source = Some(source);
        self
    }

    /// Sets whether the vertex ignores cached results.
    pub fn with_ignore_cache(mut self, ignore_cache: bool) -> Self {
        self.ignore_cache = ignore_cache;
        self
    }
}

/// Where a vertex comes from: a file, a line in it, and the instruction
/// there (`RUN make`). Shown as `Dockerfile:7: RUN make`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    /// The file as the user named it.
    pub file: String,
    /// 1-based.
    pub line: u64,
    /// The instruction, as the progress shows it.
    pub instruction: String,
}

impl fmt::Display for SourceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.instruction)
    }
}

/// One vertex: an op, its inputs in order, and its metadata.
pub struct Vertex<O> {
    pub(crate) op: Arc<dyn Op<O>>,
    pub(crate) inputs: Vec<VertexId>,
    pub(crate) meta: VertexMeta,
}

impl<O> Vertex<O> {
    /// The op.
    pub fn op(&self) -> &Arc<dyn Op<O>> {
        &self.op
    }

    /// The inputs, in the order `exec` receives their outputs.
    pub fn inputs(&self) -> &[VertexId] {
        &self.inputs
    }

    /// The metadata.
    pub fn meta(&self) -> &VertexMeta {
        &self.meta
    }
}

/// An error building a graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A vertex id that is not in this graph.
    #[error("failed to use vertex {0}: it is not in this build graph")]
    UnknownVertex(VertexId),
}

/// A graph of ops; edges go from a vertex to its inputs.
///
/// Vertices can be added with their inputs ([`add`](BuildGraph::add)), which keeps the
/// graph acyclic by construction, or first and wired later
/// ([`add_input`](BuildGraph::add_input)) when a frontend lowers in another order; the
/// solver rejects cycles among the vertices a solve needs.
pub struct BuildGraph<O> {
    graph: DiGraph<Vertex<O>, ()>,
}

impl<O: Send + Sync + 'static> BuildGraph<O> {
    /// An empty graph.
    pub fn new() -> Self {
        BuildGraph {
            graph: DiGraph::new(),
        }
    }

    /// Adds a vertex with its inputs.
    pub fn add(
        &mut self,
        op: impl Op<O>,
        inputs: &[VertexId],
        meta: VertexMeta,
    ) -> Result<VertexId, GraphError> {
        self.add_shared(Arc::new(op), inputs, meta)
    }

    /// Adds a vertex whose op is already shared.
    pub fn add_shared(
        &mut self,
        op: Arc<dyn Op<O>>,
        inputs: &[VertexId],
        meta: VertexMeta,
    ) -> Result<VertexId, GraphError> {
        for input in inputs {
            self.check(*input)?;
        }
        let id = self.add_vertex_shared(op, meta);
        for input in inputs {
            self.add_input(id, *input)?;
        }
        Ok(id)
    }

    /// Adds a vertex without inputs yet.
    pub fn add_vertex(&mut self, op: impl Op<O>, meta: VertexMeta) -> VertexId {
        self.add_vertex_shared(Arc::new(op), meta)
    }

    fn add_vertex_shared(&mut self, op: Arc<dyn Op<O>>, meta: VertexMeta) -> VertexId {
        VertexId(self.graph.add_node(Vertex {
            op,
            inputs: Vec::new(),
            meta,
        }))
    }

    /// Appends `input` to `vertex`'s inputs.
    pub fn add_input(&mut self, vertex: VertexId, input: VertexId) -> Result<(), GraphError> {
        self.check(input)?;
        let node = self
            .graph
            .node_weight_mut(vertex.0)
            .ok_or(GraphError::UnknownVertex(vertex))?;
        node.inputs.push(input);
        self.graph.add_edge(vertex.0, input.0, ());
        Ok(())
    }

    /// Changes whether `vertex` ignores cached results.
    pub fn set_ignore_cache(
        &mut self,
        vertex: VertexId,
        ignore_cache: bool,
    ) -> Result<(), GraphError> {
        let node = self
            .graph
            .node_weight_mut(vertex.0)
            .ok_or(GraphError::UnknownVertex(vertex))?;
        node.meta.ignore_cache = ignore_cache;
        Ok(())
    }

    fn check(&self, vertex: VertexId) -> Result<(), GraphError> {
        match self.graph.node_weight(vertex.0) {
            Some(_) => Ok(()),
            None => Err(GraphError::UnknownVertex(vertex)),
        }
    }
}

impl<O> BuildGraph<O> {
    /// The vertex with this id.
    pub fn vertex(&self, id: VertexId) -> Option<&Vertex<O>> {
        self.graph.node_weight(id.0)
    }

    /// All vertex ids, in insertion order.
    pub fn vertices(&self) -> impl Iterator<Item = VertexId> + '_ {
        self.graph.node_indices().map(VertexId)
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph has no vertex.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub(crate) fn petgraph(&self) -> &DiGraph<Vertex<O>, ()> {
        &self.graph
    }
}

impl<O: Send + Sync + 'static> Default for BuildGraph<O> {
    fn default() -> Self {
        BuildGraph::new()
    }
}

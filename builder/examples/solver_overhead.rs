//! Measures the solver's own cost per vertex with ops that do nothing: a first
//! solve (every op executes and is recorded) and a fully cached second solve.
//!
//! `cargo run --release -p hoist-builder --example solver_overhead [vertices]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::sync::Arc;
use std::time::Instant;

use hoist_builder::{
    async_trait, BuildGraph, CancellationToken, CanonicalBytes, CanonicalEncoder, MemoryCacheIndex,
    Op, OpContext, OpError, Solver, VertexId, VertexMeta,
};

struct Nothing(usize);

#[async_trait]
impl Op<String> for Nothing {
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("nothing", 1)
            .u64("n", self.0 as u64)
            .finish()
    }

    async fn exec(&self, _: &OpContext, _: Vec<String>) -> Result<String, OpError> {
        Ok(format!("snapshot-{}", self.0))
    }
}

/// `width` independent chains of `length` vertices, joined by one final vertex.
fn graph(width: usize, length: usize) -> (BuildGraph<String>, VertexId) {
    let mut graph = BuildGraph::new();
    let mut ends = Vec::new();
    let mut n = 0;
    for _ in 0..width {
        let mut previous: Option<VertexId> = None;
        for _ in 0..length {
            n += 1;
            let inputs: Vec<VertexId> = previous.into_iter().collect();
            let vertex = graph
                .add(Nothing(n), &inputs, VertexMeta::new(format!("step {n}")))
                .expect("inputs were just added");
            previous = Some(vertex);
        }
        ends.extend(previous);
    }
    let last = graph
        .add(Nothing(0), &ends, VertexMeta::new("join"))
        .expect("inputs were just added");
    (graph, last)
}

fn main() {
    let vertices: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10_000);
    let width = 100;
    let length = vertices / width;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let index = Arc::new(MemoryCacheIndex::new());
        let solver = Solver::new(index.clone());
        let cancel = CancellationToken::new();
        let (graph, last) = graph(width, length);

        let started = Instant::now();
        solver.solve(&graph, &[last], &cancel).await.expect("solve");
        let first = started.elapsed();

        let started = Instant::now();
        let second = solver.solve(&graph, &[last], &cancel).await.expect("solve");
        let cached = started.elapsed();
        assert_eq!(second.outcomes.len(), 1);

        let n = graph.len() as f64;
        println!(
            "{} vertices ({width} chains of {length}), jobs {}: first solve {:.1} ms \
             ({:.1} µs/vertex), cached solve {:.1} ms ({:.1} µs/vertex)",
            graph.len(),
            solver.jobs(),
            first.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e6 / n,
            cached.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e6 / n,
        );
    });
}

//! `hoist build --dry-run`: the plan from the Dockerfile and what the store
//! holds, with no network and no base image required. A base image the store
//! does not hold is planned as an empty image and reported as unresolved: its
//! config (ENV, WORKDIR, USER…) and ONBUILD triggers are unknown, so the plan
//! may miss steps or settings the real build gets from it.
//!
//! A dry run does not ask a registry: a plan must come out the same and at
//! once on a laptop offline, in a sandbox with no network, or behind a
//! registry that hangs; `hoist pull` first makes the plan complete.

use std::sync::{Arc, Mutex};

use hoist_cache::Store;
use hoist_frontend::graph::{BuildGraph as FrontendGraph, Op as GraphOp, Platform};
use hoist_frontend::{ImageResolver, ResolvedImage};
use serde_json::{json, Value};

use super::build::{lower_with, Absent, BuildError, BuildRequest, StoreResolver};

/// A base image a dry run planned without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Normalised reference (`docker.io/library/golang:1.22`).
    pub reference: String,
    /// The platform it was wanted for.
    pub platform: Platform,
    /// Its image vertex in the plan.
    pub vertex: usize,
    /// How the Dockerfile names it (`FROM golang:1.22`).
    pub source: String,
    /// Its line in the Dockerfile.
    pub line: Option<usize>,
    /// Why the store could not give it.
    pub reason: Absent,
}

/// What `hoist build --dry-run` shows.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The lowered Dockerfile.
    pub graph: FrontendGraph,
    /// Base images absent from the store, in the order the plan met them.
    pub unresolved: Vec<Unresolved>,
}

impl DryRun {
    /// The plan as text, unresolved images marked.
    pub fn render_text(&self) -> String {
        let marked: Vec<usize> = self.unresolved.iter().map(|u| u.vertex).collect();
        self.graph.render_plan_marking(&marked)
    }

    /// The plan as JSON: the frontend graph with an `unresolved` list and
    /// `"unresolved": true` on those images' vertices.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.graph).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            let unresolved: Vec<Value> = self
                .unresolved
                .iter()
                .map(|u| {
                    json!({
                        "reference": u.reference,
                        "platform": u.platform.to_string(),
                        "vertex": u.vertex,
                        "source": u.source,
                        "line": u.line,
                        "reason": u.reason.message,
                    })
                })
                .collect();
            map.insert("unresolved".to_owned(), Value::Array(unresolved));
            if let Some(Value::Array(vertices)) = map.get_mut("vertices") {
                for u in &self.unresolved {
                    if let Some(Value::Object(v)) = vertices.get_mut(u.vertex) {
                        v.insert("unresolved".to_owned(), Value::Bool(true));
                    }
                }
            }
        }
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// One line per unresolved image, for stderr.
    pub fn warnings(&self, file: &str) -> Vec<String> {
        self.unresolved
            .iter()
            .map(|u| {
                let at = match u.line {
                    Some(line) => format!(" ({file}:{line})"),
                    None => String::new(),
                };
                let why = if u.reason.other_platforms {
                    u.reason.message.clone()
                } else {
                    "not in the store (a dry run does not pull; `hoist pull` it for a complete \
                     plan)"
                        .to_owned()
                };
                format!(
                    "warning: {}{at}: {why}; its config and ONBUILD triggers are unknown",
                    u.source
                )
            })
            .collect()
    }
}

/// Store lookups that note what is absent instead of failing (also what
/// `hoist build --check` resolves base images with: nothing is pulled).
pub struct Lenient {
    store: StoreResolver,
    absent: Mutex<Vec<(String, Platform, Absent)>>,
}

impl Lenient {
    /// A resolver over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Lenient {
            store: StoreResolver::new(store),
            absent: Mutex::new(Vec::new()),
        }
    }
}

impl ImageResolver for Lenient {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>> {
        match self.store.lookup(reference, platform)? {
            Ok(image) => Ok(Some(image)),
            Err(reason) => {
                self.absent.lock().unwrap_or_else(|p| p.into_inner()).push((
                    reference.to_owned(),
                    platform.clone(),
                    reason,
                ));
                // The frontend plans an image it knows nothing of as empty.
                Ok(None)
            }
        }
    }
}

/// Lowers the Dockerfile against the store alone (see the module docs).
pub fn dry_run(store: Arc<Store>, request: &BuildRequest) -> Result<DryRun, BuildError> {
    let resolver = Lenient::new(store);
    let graph = lower_with(request, &resolver)?;
    let absent = resolver
        .absent
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut unresolved = Vec::new();
    for (reference, platform, reason) in absent {
        let found = graph.vertices.iter().position(|v| {
            matches!(&v.op, GraphOp::Image { reference: r, platform: p }
                if *r == reference && *p == platform)
        });
        // Asked for but not in the plan: nothing of it is shown.
        let Some(vertex) = found else { continue };
        let stage = graph
            .stages
            .iter()
            .find(|s| s.base_image == Some(vertex) && s.span.is_some());
        let (source, line) = match stage {
            Some(s) => (
                format!("FROM {}", s.base),
                s.span.map(|span| span.start.line),
            ),
            None => (
                format!("image {reference}"),
                graph.vertices[vertex].span.map(|span| span.start.line),
            ),
        };
        unresolved.push(Unresolved {
            reference,
            platform,
            vertex,
            source,
            line,
            reason,
        });
    }
    Ok(DryRun { graph, unresolved })
}

/// The plan's vertices that stand on an unresolved image (the image vertex
/// itself included).
pub(crate) fn on_unresolved(dry: &DryRun) -> Vec<bool> {
    let mut out = vec![false; dry.graph.vertices.len()];
    for u in &dry.unresolved {
        out[u.vertex] = true;
    }
    // Vertices come in dependency order: inputs before consumers.
    for i in 0..dry.graph.vertices.len() {
        if dry.graph.vertices[i].inputs.iter().any(|input| out[*input]) {
            out[i] = true;
        }
    }
    out
}

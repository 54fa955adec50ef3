//! `--progress rawjson`: BuildKit's `SolveStatus` objects, one per line, as
//! `buildx build --progress=rawjson` and `buildctl --progress=rawjson` print
//! them, so tools that read BuildKit's stream read hoist's.
//!
//! Field names, base64 bytes (`data`, `short`) and RFC 3339 nanosecond times
//! follow the JSON tags of BuildKit's `client.SolveStatus`. A vertex's
//! `digest` identifies it within the stream; hoist has no LLB, so it is the
//! SHA-256 of the vertex's index in the build graph, not an LLB op digest. hoist's own
//! messages (pushes, names, cache export) are vertices that start and
//! complete at once, as BuildKit shows its exporter's steps; base-image
//! pulls are one vertex per image with a status per blob.

use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;

use base64::Engine as _;
use hoist_builder::pipeline::pull_event_line;
use hoist_builder::{BuildSummary, Event, LogStream, VertexId};
use hoist_registry::PullEvent;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::summary::Totals;

/// What a vertex's later objects repeat (BuildKit sends the whole vertex
/// with every change).
struct Vertex {
    digest: String,
    name: String,
    started: String,
}

pub struct RawJson<W> {
    out: W,
    vertices: HashMap<VertexId, Vertex>,
    /// Per pulled image, its vertex.
    pulls: HashMap<String, Vertex>,
    /// Per progress id, when it started.
    statuses: HashMap<(String, String), String>,
    /// Counts messages, each a vertex of its own.
    notes: u64,
}

fn now() -> String {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hoist_cache::units::format_rfc3339_nanos(since.as_secs() as i64, since.subsec_nanos())
}

fn digest_of(kind: &str, key: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("hoist {kind} {key}")))
    )
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl<W: Write> RawJson<W> {
    pub fn new(out: W) -> Self {
        RawJson {
            out,
            vertices: HashMap::new(),
            pulls: HashMap::new(),
            statuses: HashMap::new(),
            notes: 0,
        }
    }

    fn emit(&mut self, key: &str, items: Vec<Value>) {
        let mut status = Map::new();
        status.insert(key.to_string(), Value::Array(items));
        // A closed stderr must not stop the build.
        let _ = writeln!(self.out, "{}", Value::Object(status));
    }

    fn vertex_json(vertex: &Vertex) -> Map<String, Value> {
        let mut v = Map::new();
        v.insert("digest".into(), json!(vertex.digest));
        v.insert("name".into(), json!(vertex.name));
        v.insert("started".into(), json!(vertex.started));
        v
    }

    /// The vertex of `id`, made when first seen (a log or progress may come
    /// before `started` while a cache key is computed).
    fn vertex(&mut self, id: VertexId, name: Option<&str>) -> &Vertex {
        // The digest is fixed at first sight (by the vertex's index, which is
        // unique in the build); a name learned later is still shown.
        let vertex = self.vertices.entry(id).or_insert_with(|| Vertex {
            digest: digest_of("vertex", &id.index().to_string()),
            name: String::new(),
            started: now(),
        });
        if let Some(name) = name {
            if vertex.name.is_empty() {
                vertex.name = name.to_string();
            }
        }
        vertex
    }

    fn ended(&mut self, id: VertexId, extra: &[(&str, Value)]) {
        let mut v = Self::vertex_json(self.vertex(id, None));
        v.insert("completed".into(), json!(now()));
        for (key, value) in extra {
            v.insert((*key).into(), value.clone());
        }
        self.emit("vertexes", vec![Value::Object(v)]);
    }

    fn status(&mut self, vertex: String, id: &str, current: u64, total: Option<u64>) {
        let timestamp = now();
        let started = self
            .statuses
            .entry((vertex.clone(), id.to_string()))
            .or_insert_with(|| timestamp.clone())
            .clone();
        let mut s = Map::new();
        s.insert("id".into(), json!(id));
        s.insert("vertex".into(), json!(vertex));
        s.insert("name".into(), json!(id));
        s.insert("current".into(), json!(current));
        if let Some(total) = total {
            s.insert("total".into(), json!(total));
        }
        s.insert("timestamp".into(), json!(timestamp));
        s.insert("started".into(), json!(started));
        if total == Some(current) {
            s.insert("completed".into(), json!(timestamp));
        }
        self.emit("statuses", vec![Value::Object(s)]);
    }
}

impl<W: Write + Send> super::Render for RawJson<W> {
    fn event(&mut self, event: &Event) {
        match event {
            Event::VertexStarted { vertex, name } => {
                let v = Self::vertex_json(self.vertex(*vertex, Some(name)));
                self.emit("vertexes", vec![Value::Object(v)]);
            }
            Event::VertexCached { vertex, name } => {
                self.vertex(*vertex, Some(name));
                self.ended(*vertex, &[("cached", json!(true))]);
            }
            Event::VertexCompleted { vertex, .. } => self.ended(*vertex, &[]),
            Event::VertexFailed { vertex, error } => {
                self.ended(*vertex, &[("error", json!(error))]);
            }
            // BuildKit's words for a vertex stopped by cancellation.
            Event::VertexCancelled { vertex } => {
                self.ended(*vertex, &[("error", json!("context canceled"))]);
            }
            Event::VertexSource { .. } => {}
            Event::Log {
                vertex,
                stream,
                bytes,
            } => {
                let digest = self.vertex(*vertex, None).digest.clone();
                let log = json!({
                    "vertex": digest,
                    "stream": if *stream == LogStream::Stdout { 1 } else { 2 },
                    "data": base64(bytes),
                    "timestamp": now(),
                });
                self.emit("logs", vec![log]);
            }
            Event::Progress {
                vertex,
                id,
                current,
                total,
            } => {
                let digest = self.vertex(*vertex, None).digest.clone();
                self.status(digest, id, *current, *total);
            }
            Event::Warning { vertex, message } => {
                let mut w = Map::new();
                if let Some(vertex) = vertex {
                    w.insert(
                        "vertex".into(),
                        json!(self.vertex(*vertex, None).digest.clone()),
                    );
                }
                w.insert("level".into(), json!(1));
                w.insert("short".into(), json!(base64(message.as_bytes())));
                self.emit("warnings", vec![Value::Object(w)]);
            }
        }
    }

    fn note(&mut self, text: &str) {
        self.notes += 1;
        let at = now();
        let v = json!({
            "digest": digest_of("note", &self.notes.to_string()),
            "name": text,
            "started": at,
            "completed": at,
        });
        self.emit("vertexes", vec![v]);
    }

    fn pull(&mut self, image: &str, event: &PullEvent) {
        if !self.pulls.contains_key(image) {
            let vertex = Vertex {
                digest: digest_of("pull", image),
                name: format!("pull {image}"),
                started: now(),
            };
            let v = Self::vertex_json(&vertex);
            self.pulls.insert(image.to_string(), vertex);
            self.emit("vertexes", vec![Value::Object(v)]);
        }
        let vertex = self.pulls[image].digest.clone();
        match event {
            PullEvent::BlobStarted { descriptor } => {
                self.status(
                    vertex,
                    descriptor.digest().as_ref(),
                    0,
                    Some(descriptor.size()),
                );
            }
            PullEvent::BlobProgress {
                descriptor,
                done,
                total,
            } => self.status(vertex, descriptor.digest().as_ref(), *done, Some(*total)),
            PullEvent::BlobDone { descriptor } | PullEvent::BlobSkipped { descriptor } => {
                let size = descriptor.size();
                self.status(vertex, descriptor.digest().as_ref(), size, Some(size));
            }
            other => {
                if let Some(line) = pull_event_line(other) {
                    let log = json!({
                        "vertex": vertex,
                        "stream": 2,
                        "data": base64(format!("{line}\n").as_bytes()),
                        "timestamp": now(),
                    });
                    self.emit("logs", vec![log]);
                }
            }
        }
    }

    /// BuildKit's stream has no summary; the pull vertices end with it.
    fn summary(&mut self, _summary: &BuildSummary, _totals: &Totals) {
        let at = now();
        let ended: Vec<Value> = self
            .pulls
            .values()
            .map(|vertex| {
                let mut v = Self::vertex_json(vertex);
                v.insert("completed".into(), json!(at));
                Value::Object(v)
            })
            .collect();
        if !ended.is_empty() {
            self.emit("vertexes", ended);
        }
        let _ = self.out.flush();
    }
}

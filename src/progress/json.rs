//! `--progress json`: one event object per line (started, cached, log,
//! finished with usage, failed, cancelled, progress, warning), then one
//! `summary` object, for CI systems.

use std::io::Write;

use hoist_builder::{BuildSummary, Event, LogStream};
use serde_json::{json, Value};

use super::summary::{render_json, Totals};

pub struct Json<W> {
    out: W,
}

impl<W: Write> Json<W> {
    pub fn new(out: W) -> Self {
        Json { out }
    }

    fn line(&mut self, value: &Value) {
        // A closed stderr must not stop the build.
        let _ = writeln!(self.out, "{value}");
    }
}

pub fn event_json(event: &Event) -> Value {
    match event {
        Event::VertexStarted { vertex, name } => {
            json!({"event": "started", "vertex": vertex.index(), "name": name})
        }
        Event::VertexCached { vertex, name } => {
            json!({"event": "cached", "vertex": vertex.index(), "name": name})
        }
        Event::VertexCompleted {
            vertex,
            duration,
            usage,
        } => json!({
            "event": "finished",
            "vertex": vertex.index(),
            "duration_seconds": duration.as_secs_f64(),
            "cpu_seconds": usage.map(|u| u.cpu_time.as_secs_f64()),
            "peak_memory_bytes": usage.and_then(|u| u.peak_memory_bytes),
        }),
        Event::VertexFailed { vertex, error } => {
            json!({"event": "failed", "vertex": vertex.index(), "error": error})
        }
        Event::VertexCancelled { vertex } => {
            json!({"event": "cancelled", "vertex": vertex.index()})
        }
        Event::VertexSource {
            vertex,
            description,
        } => {
            json!({"event": "source", "vertex": vertex.index(), "description": description})
        }
        Event::Log {
            vertex,
            stream,
            bytes,
        } => json!({
            "event": "log",
            "vertex": vertex.index(),
            "stream": if *stream == LogStream::Stdout { "stdout" } else { "stderr" },
            "data": String::from_utf8_lossy(bytes),
        }),
        Event::Progress {
            vertex,
            id,
            current,
            total,
        } => json!({
            "event": "progress", "vertex": vertex.index(), "id": id, "current": current, "total": total,
        }),
        Event::Warning { vertex, message } => json!({
            "event": "warning", "vertex": vertex.map(|v| v.index()), "message": message,
        }),
    }
}

impl<W: Write + Send> super::Render for Json<W> {
    fn event(&mut self, event: &Event) {
        self.line(&event_json(event));
    }

    fn note(&mut self, text: &str) {
        self.line(&json!({"event": "message", "message": text}));
    }

    fn summary(&mut self, summary: &BuildSummary, totals: &Totals) {
        self.line(&render_json(summary, totals));
        let _ = self.out.flush();
    }
}

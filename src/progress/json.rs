//! `--progress json`: one event object per line (started, cached, log,
//! finished with usage, failed, cancelled, progress, warning, and `pull`
//! for the layers of base images), then one `summary` object, for CI
//! systems.

use std::collections::HashMap;
use std::io::Write;

use hoist_builder::pipeline::pull_event_line;
use hoist_builder::{BuildSummary, Event, LogStream};
use hoist_registry::PullEvent;
use serde_json::{json, Value};

use super::summary::{render_json, Totals};

pub struct Json<W> {
    out: W,
    /// Per blob, the last whole percent a `pull` progress object showed.
    percent: HashMap<String, u64>,
}

impl<W: Write> Json<W> {
    pub fn new(out: W) -> Self {
        Json {
            out,
            percent: HashMap::new(),
        }
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
            source,
        } => {
            let mut event =
                json!({"event": "source", "vertex": vertex.index(), "description": description});
            if let Some(source) = source {
                event["file"] = json!(source.file);
                event["line"] = json!(source.line);
            }
            event
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

/// A `pull` object: `status` is `resolved`, `platform`, `mirror_failed`,
/// `retrying`, `skipped`, `started`, `progress` or `done`; blob objects
/// carry the blob's digest and media type, `progress` its bytes.
pub fn pull_json(image: &str, event: &PullEvent) -> Value {
    let blob = |status: &str, descriptor: &hoist_cache::Descriptor| {
        json!({
            "event": "pull", "image": image, "status": status,
            "digest": descriptor.digest().to_string(),
            "media_type": descriptor.media_type().to_string(),
            "size": descriptor.size(),
        })
    };
    match event {
        PullEvent::Resolved {
            descriptor,
            endpoint,
            ..
        } => {
            let mut value = blob("resolved", descriptor);
            value["endpoint"] = json!(endpoint);
            value
        }
        PullEvent::PlatformSelected {
            platform,
            descriptor,
        } => {
            let mut value = blob("platform", descriptor);
            value["platform"] = json!(platform.to_string());
            value
        }
        PullEvent::BlobSkipped { descriptor } => blob("skipped", descriptor),
        PullEvent::BlobStarted { descriptor } => blob("started", descriptor),
        PullEvent::BlobProgress {
            descriptor,
            done,
            total,
        } => {
            let mut value = blob("progress", descriptor);
            value["current"] = json!(done);
            value["total"] = json!(total);
            value
        }
        PullEvent::BlobDone { descriptor } => blob("done", descriptor),
        PullEvent::MirrorFailed { .. } | PullEvent::Retrying(_) => json!({
            "event": "pull", "image": image,
            "status": if matches!(event, PullEvent::Retrying(_)) { "retrying" } else { "mirror_failed" },
            "message": pull_event_line(event),
        }),
    }
}

impl<W: Write + Send> super::Render for Json<W> {
    fn pull(&mut self, image: &str, event: &PullEvent) {
        match event {
            // A line per whole percent, not per chunk received.
            PullEvent::BlobProgress {
                descriptor,
                done,
                total,
            } => {
                let percent = done.saturating_mul(100) / (*total).max(1);
                let last = self
                    .percent
                    .insert(descriptor.digest().to_string(), percent);
                if last == Some(percent) {
                    return;
                }
            }
            PullEvent::BlobDone { descriptor } => {
                self.percent.remove(&descriptor.digest().to_string());
            }
            _ => {}
        }
        self.line(&pull_json(image, event));
    }

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

//! Rendering a build's progress events: `plain` (numbered steps and prefixed
//! output, as `docker build --progress=plain`), `tty` (a live view with
//! indicatif), `json` (one event object per line), `rawjson` (BuildKit's
//! `SolveStatus` stream), and the build summary that ends every build
//! (but a `rawjson` one).
//!
//! The builder emits [`Event`]s from its tasks; [`Progress::sink`] hands them to
//! the chosen renderer under a lock and feeds a [`SummaryCollector`] at the same
//! time. [`Progress::finish`] (or dropping the `Progress` on an error path)
//! prints the summary.

mod ci;
mod json;
mod plain;
mod rawjson;
mod summary;
pub mod transfer;
mod tty;

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use hoist_builder::pipeline::pull_event_line;
use hoist_builder::{BuildSummary, Event, EventSink, SummaryCollector, VertexId};
use hoist_registry::PullEvent;

pub use summary::Totals;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Numbered steps and prefixed output.
    Plain,
    /// Live view on a terminal.
    Tty,
    /// One JSON object per line.
    Json,
    /// BuildKit's `SolveStatus` objects, one per line.
    RawJson,
    /// Nothing (`-q`).
    Quiet,
}

impl Mode {
    /// `tty` if stderr is a terminal, `plain` otherwise (Docker's `auto`).
    pub fn auto() -> Mode {
        if io::stderr().is_terminal() && tty::usable() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

/// How the build ended, for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The image was made and written.
    Success,
    /// A step or an output failed.
    Failed,
    /// SIGINT/SIGTERM stopped it.
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One way of showing events.
trait Render: Send {
    /// Shows one event.
    fn event(&mut self, event: &Event);
    /// Shows a message of hoist itself (e.g. that the build is being cancelled).
    fn note(&mut self, text: &str);
    /// Shows a step of a base-image pull: Docker's per-layer lines
    /// (`<id>: Pulling fs layer`), unless the renderer draws more.
    fn pull(&mut self, _image: &str, event: &PullEvent) {
        if let Some(line) = pull_event_line(event) {
            self.note(&line);
        }
    }
    /// Takes what the build made, for a renderer that reports it.
    fn result(&mut self, _result: &BuildResult) {}
    /// Ends the live part of the display, if any (before errors are printed).
    fn end_live(&mut self) {}
    /// Shows the summary.
    fn summary(&mut self, summary: &BuildSummary, totals: &Totals);
}

/// Plain lines, with the collapsible groups and annotations of the CI this
/// runs in, if any (`ci.rs`).
fn plain_or_ci() -> Box<dyn Render> {
    match ci::Flavor::detect() {
        Some(flavor) => Box::new(ci::Ci::new(io::stderr(), flavor)),
        None => Box::new(plain::Plain::new(io::stderr())),
    }
}

/// What a successful build made.
#[derive(Clone, Debug)]
pub struct BuildResult {
    /// The manifest (or index) digest, as `--metadata-file` gives it.
    pub digest: String,
    /// The image ID (config digest).
    pub id: String,
    /// The names given to it.
    pub tags: Vec<String>,
}

struct Shared {
    render: Box<dyn Render>,
    collector: SummaryCollector,
}

/// The progress display of one build.
pub struct Progress {
    shared: Option<Arc<Mutex<Shared>>>,
    started: Instant,
    finished: bool,
}

impl Progress {
    /// Starts showing progress in `mode`.
    pub fn new(mode: Mode) -> Progress {
        let render: Option<Box<dyn Render>> = match mode {
            Mode::Plain => Some(plain_or_ci()),
            Mode::Tty if tty::usable() => Some(Box::new(tty::Tty::new())),
            // Asked for a live view without a terminal to draw it on.
            Mode::Tty => Some(plain_or_ci()),
            Mode::Json => Some(Box::new(json::Json::new(io::stderr()))),
            Mode::RawJson => Some(Box::new(rawjson::RawJson::new(io::stderr()))),
            Mode::Quiet => None,
        };
        Progress {
            shared: render.map(|render| {
                Arc::new(Mutex::new(Shared {
                    render,
                    collector: SummaryCollector::new(),
                }))
            }),
            started: Instant::now(),
            finished: false,
        }
    }

    fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
        // A renderer that panicked mid-event leaves at worst a garbled line.
        shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the builder sends its events.
    pub fn sink(&self) -> EventSink {
        match &self.shared {
            None => EventSink::discard(),
            Some(shared) => {
                let shared = shared.clone();
                EventSink::new(move |event| {
                    let mut shared = Self::lock(&shared);
                    shared.collector.observe(&event);
                    shared.render.event(&event);
                })
            }
        }
    }

    /// A handle that shows hoist's own messages (usable from another thread).
    pub fn notifier(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |text: &str| match &shared {
            Some(shared) => Self::lock(shared).render.note(text),
            None => {
                let _ = writeln!(io::stderr().lock(), "{text}");
            }
        }
    }

    /// A handle that shows the steps of base-image pulls (usable from
    /// another thread): bars per layer on a terminal, Docker's lines in
    /// plain mode, `pull` objects in JSON; nothing with `-q`.
    pub fn puller(&self) -> impl Fn(&str, &PullEvent) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |image: &str, event: &PullEvent| {
            if let Some(shared) = &shared {
                Self::lock(shared).render.pull(image, event);
            }
        }
    }

    /// What the build made (before [`Progress::finish`]), for the CI job
    /// summary.
    pub fn result(&self, result: &BuildResult) {
        if let Some(shared) = &self.shared {
            Self::lock(shared).render.result(result);
        }
    }

    /// Ends the live view (call before printing an error).
    pub fn end_live(&self) {
        if let Some(shared) = &self.shared {
            Self::lock(shared).render.end_live();
        }
    }

    /// Ends the display with the build summary. `layer_sizes` come from the
    /// built image (none when the build failed).
    pub fn finish(mut self, status: Status, layer_sizes: Option<&BTreeMap<VertexId, u64>>) {
        self.finish_inner(status, layer_sizes);
    }

    fn finish_inner(&mut self, status: Status, layer_sizes: Option<&BTreeMap<VertexId, u64>>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(shared) = &self.shared else { return };
        let mut shared = Self::lock(shared);
        shared.render.end_live();
        let mut summary = shared.collector.summary().clone();
        if let Some(sizes) = layer_sizes {
            summary.set_layer_sizes(sizes);
        }
        let totals = Totals::measure(status, self.started.elapsed());
        shared.render.summary(&summary, &totals);
    }
}

impl Drop for Progress {
    /// An error path that returned early still ends the display and shows
    /// what ran.
    fn drop(&mut self) {
        self.finish_inner(Status::Failed, None);
    }
}

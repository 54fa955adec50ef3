//! `--progress plain` inside CI: the same lines as [`Plain`], each step
//! folded into a collapsible group of the CI's log viewer, and a failing
//! step pointed at its Dockerfile line.
//!
//! - GitHub Actions (`GITHUB_ACTIONS=true`): `::group::`/`::endgroup::`
//!   around a step; a failure adds `::error file=…,line=…,title=…::…` (an
//!   annotation on the Dockerfile line in the run's summary and the PR diff);
//!   a warning `::warning::…`. With `$GITHUB_STEP_SUMMARY` set, a Markdown
//!   table of the steps and the image's digest, ID and tags are appended
//!   to it, as docker/build-push-action does.
//! - GitLab CI (`GITLAB_CI=true`): `section_start`/`section_end` markers,
//!   collapsed.
//!
//! Groups cannot interleave, but steps run in parallel: the first running
//! step streams inside its group; output of the others is held, in order,
//! and written in their own groups when that group closes. Nothing is
//! dropped or clipped: every line [`Plain`] would print is printed.
//!
//! Workflow commands are only read at the start of a line; every line of a
//! step's output starts with `#N` (as Plain prints it), so a RUN step cannot
//! issue one. The names and messages hoist writes into commands are escaped
//! as the runner expects (`%`, CR, LF, and `:`/`,` in properties).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use hoist_builder::{BuildSummary, Event, SourceLine, StepStatus, VertexId};
use hoist_cache::text::{escape, escape_except};

use super::plain::Plain;
use super::summary::{human_duration, Totals};
use super::{BuildResult, Render};

/// Which CI's markers to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub Actions workflow commands.
    GitHub,
    /// GitLab CI collapsible sections.
    GitLab,
}

impl Flavor {
    /// The CI this process runs in, from the variables the runners set.
    pub fn detect() -> Option<Flavor> {
        let is_true = |name: &str| std::env::var(name).is_ok_and(|v| v == "true");
        if is_true("GITHUB_ACTIONS") {
            Some(Flavor::GitHub)
        } else if is_true("GITLAB_CI") {
            Some(Flavor::GitLab)
        } else {
            None
        }
    }
}

pub struct Ci<W> {
    plain: Plain<W>,
    flavor: Flavor,
    /// The step whose group is open.
    open: Option<VertexId>,
    /// Steps waiting for the open group to close, with their events.
    waiting: VecDeque<(VertexId, Vec<Event>)>,
    /// Error messages of failed steps, until their source arrives.
    failed: HashMap<VertexId, String>,
    /// `$GITHUB_STEP_SUMMARY`.
    step_summary: Option<PathBuf>,
    /// What a successful build made.
    result: Option<BuildResult>,
}

impl<W: Write> Ci<W> {
    pub fn new(out: W, flavor: Flavor) -> Self {
        let step_summary = match flavor {
            Flavor::GitHub => std::env::var_os("GITHUB_STEP_SUMMARY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            Flavor::GitLab => None,
        };
        Ci {
            plain: Plain::new(out),
            flavor,
            open: None,
            waiting: VecDeque::new(),
            failed: HashMap::new(),
            step_summary,
            result: None,
        }
    }

    fn vertex_of(event: &Event) -> Option<VertexId> {
        match event {
            Event::VertexStarted { vertex, .. }
            | Event::VertexCached { vertex, .. }
            | Event::VertexCompleted { vertex, .. }
            | Event::VertexFailed { vertex, .. }
            | Event::VertexSource { vertex, .. }
            | Event::VertexCancelled { vertex }
            | Event::Log { vertex, .. } => Some(*vertex),
            Event::Progress { .. } | Event::Warning { .. } => None,
        }
    }

    fn dispatch(&mut self, event: &Event) {
        let Some(vertex) = Self::vertex_of(event) else {
            self.direct(event);
            return;
        };
        if let Some((_, held)) = self.waiting.iter_mut().find(|(v, _)| *v == vertex) {
            held.push(event.clone());
            return;
        }
        match self.open {
            Some(open) if open == vertex => self.direct(event),
            // A step starting (or cached, or a late source line) while
            // another's group is open waits its turn.
            Some(_) => self.waiting.push_back((vertex, vec![event.clone()])),
            None => self.direct(event),
        }
        self.resume();
    }

    /// Writes `event` now, opening and closing groups around it.
    fn direct(&mut self, event: &Event) {
        match event {
            Event::VertexStarted { vertex, name } => {
                let n = self.plain.number(*vertex);
                self.open = Some(*vertex);
                self.start_group(n, name);
                let _ = self.plain.render(event);
            }
            Event::VertexCompleted { vertex, .. }
            | Event::VertexFailed { vertex, .. }
            | Event::VertexCancelled { vertex } => {
                let _ = self.plain.render(event);
                if let Event::VertexFailed { error, .. } = event {
                    self.failed.insert(*vertex, error.clone());
                }
                if self.open == Some(*vertex) {
                    let n = self.plain.number(*vertex);
                    self.end_group(n);
                    self.open = None;
                }
            }
            Event::VertexSource {
                vertex,
                description,
                source,
            } => {
                if let Some(error) = self.failed.remove(vertex) {
                    self.annotate(description, source.as_ref(), &error);
                }
            }
            Event::Warning { message, .. } if self.flavor == Flavor::GitHub => {
                let _ = self.plain.render(event);
                let _ = writeln!(self.plain.out(), "::warning::{}", data(message));
            }
            _ => {
                let _ = self.plain.render(event);
            }
        }
    }

    /// The open group closed: replay the steps that waited, in order,
    /// until one is still running (its group stays open).
    fn resume(&mut self) {
        while self.open.is_none() {
            let Some((_, events)) = self.waiting.pop_front() else {
                return;
            };
            // Events of this step that arrive later find its group open
            // (or, once it ended, are written directly).
            for event in &events {
                self.direct(event);
            }
        }
    }

    fn start_group(&mut self, n: usize, name: &str) {
        let out = self.plain.out();
        let _ = match self.flavor {
            Flavor::GitHub => writeln!(out, "::group::#{n} {}", data(&escape(name))),
            Flavor::GitLab => writeln!(
                out,
                "\x1b[0Ksection_start:{}:hoist_step_{n}[collapsed=true]\r\x1b[0K#{n} {}",
                unix_now(),
                escape(name)
            ),
        };
    }

    fn end_group(&mut self, n: usize) {
        let out = self.plain.out();
        let _ = match self.flavor {
            Flavor::GitHub => writeln!(out, "::endgroup::"),
            Flavor::GitLab => writeln!(
                out,
                "\x1b[0Ksection_end:{}:hoist_step_{n}\r\x1b[0K",
                unix_now()
            ),
        };
    }

    /// `::error file=F,line=L,title=INSTRUCTION::ERROR` for a step with a
    /// source line; without one, an annotation without position.
    fn annotate(&mut self, description: &str, source: Option<&SourceLine>, error: &str) {
        if self.flavor != Flavor::GitHub {
            return;
        }
        let message = data(&escape_except(error, &['\n']));
        let line = match source {
            Some(source) => format!(
                "::error file={},line={},title={}::{message}",
                property(&escape(&source.file)),
                source.line,
                property(&escape(&source.instruction))
            ),
            None => format!(
                "::error title={}::{message}",
                property(&escape(description))
            ),
        };
        let _ = writeln!(self.plain.out(), "{line}");
    }

    /// Everything still held is written (a failed or cancelled build ends
    /// with steps that never reached their turn) and the open group closed.
    fn drain(&mut self) {
        loop {
            if let Some(open) = self.open.take() {
                let n = self.plain.number(open);
                self.end_group(n);
            }
            self.resume();
            if self.open.is_none() && self.waiting.is_empty() {
                return;
            }
        }
    }

    fn write_step_summary(&self, summary: &BuildSummary, totals: &Totals) {
        let Some(path) = &self.step_summary else {
            return;
        };
        let text = markdown_summary(summary, totals, self.result.as_ref());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not write GITHUB_STEP_SUMMARY");
        }
    }
}

impl<W: Write + Send> Render for Ci<W> {
    fn event(&mut self, event: &Event) {
        self.dispatch(event);
    }

    fn note(&mut self, text: &str) {
        self.plain.note(text);
    }

    fn result(&mut self, result: &BuildResult) {
        self.result = Some(result.clone());
    }

    fn end_live(&mut self) {
        self.drain();
        let _ = self.plain.out().flush();
    }

    fn summary(&mut self, summary: &BuildSummary, totals: &Totals) {
        self.drain();
        self.plain.summary(summary, totals);
        self.write_step_summary(summary, totals);
    }
}

/// The message part of a workflow command.
fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A property value of a workflow command.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The job summary: a table of the steps, the totals, then what was made.
fn markdown_summary(
    summary: &BuildSummary,
    totals: &Totals,
    result: Option<&BuildResult>,
) -> String {
    let cell = |text: &str| escape(text).replace('|', "\\|").replace('`', "'");
    let mut md =
        String::from("### hoist build\n\n| # | step | result | time |\n|---|---|---|---|\n");
    for (i, step) in summary.steps.iter().enumerate() {
        let result = match step.status {
            StepStatus::Cached => "cached",
            StepStatus::Done => "done",
            StepStatus::Failed => "**error**",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Running => "running",
        };
        let time = step
            .duration
            .map(human_duration)
            .unwrap_or_else(|| "-".into());
        md.push_str(&format!(
            "| {} | `{}` | {result} | {time} |\n",
            i + 1,
            cell(&step.name)
        ));
    }
    md.push_str(&format!(
        "\n**{}**: {} steps, {} cached, {} run, {} wall\n\n",
        totals.status.as_str(),
        summary.steps.len(),
        summary.cached(),
        summary.executed(),
        human_duration(totals.wall)
    ));
    if let Some(result) = result {
        md.push_str(&format!(
            "- digest: `{}`\n- image ID: `{}`\n",
            cell(&result.digest),
            cell(&result.id)
        ));
        if !result.tags.is_empty() {
            let tags: Vec<String> = result
                .tags
                .iter()
                .map(|t| format!("`{}`", cell(t)))
                .collect();
            md.push_str(&format!("- tags: {}\n", tags.join(", ")));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_escaped() {
        assert_eq!(data("a%b\r\nc"), "a%25b%0D%0Ac");
        assert_eq!(property("a:b,c"), "a%3Ab%2Cc");
    }
}

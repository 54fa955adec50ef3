//! `--progress tty`: a live view on the terminal. A header line with the
//! build's elapsed time, then one line per running step with a spinner, its
//! elapsed time and the last lines of its live output; a step that ends
//! collapses to one line above the live area, `=> [2/4] RUN make  3.2s`, or
//! `=> CACHED [1/4] FROM busybox`, as BuildKit's tty view shows them.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IsTerminal};
use std::time::Duration;

use console::{strip_ansi_codes, style, Term};
use hoist_builder::pipeline::pull_event_line;
use hoist_builder::{BuildSummary, Event, VertexId};
use hoist_cache::text::{escape, escape_except};
use hoist_registry::PullEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::summary::{human_duration, render_text, truncate, Totals};
use super::transfer::Transfers;
use super::Render;

/// Lines of a running step's output shown under it.
const TAIL_LINES: usize = 4;

/// Whether stderr is a terminal that can show a live view.
pub fn usable() -> bool {
    io::stderr().is_terminal() && !console::is_dumb()
}

struct Running {
    bar: ProgressBar,
    name: String,
    tail: VecDeque<String>,
    /// Output after the last newline.
    partial: Vec<u8>,
}

pub struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    running: HashMap<VertexId, Running>,
    /// Layers of base images being pulled, as `hoist pull` draws them.
    transfers: Transfers,
    finished: usize,
    live: bool,
}

fn seconds(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = write!(out, "{:.1}s", state.elapsed().as_secs_f64());
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        // The templates are constants of this file, checked by the tests.
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", seconds)
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "⠿"])
}

const HEADER: &str = "{spinner:.cyan} Building {secs} {msg}";
const STEP: &str = "  {spinner:.cyan} {prefix} {secs:.dim}{msg:.dim}";

fn width() -> usize {
    let (_, cols) = Term::stderr().size();
    usize::from(cols).max(40)
}

/// Makes one line of a step's output safe to draw: no escape sequences, no
/// control characters, only what follows the last carriage return.
fn clean(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    strip_ansi_codes(text)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect::<String>()
        .replace('\t', "    ")
}

impl Tty {
    pub fn new() -> Tty {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let header = multi.add(ProgressBar::new_spinner().with_style(bar_style(HEADER)));
        header.enable_steady_tick(Duration::from_millis(100));
        Tty {
            transfers: Transfers::within(multi.clone(), "Downloading"),
            multi,
            header,
            running: HashMap::new(),
            finished: 0,
            live: true,
        }
    }

    fn println(&self, line: String) {
        if self.live {
            // Printed above the live area; ignored if the terminal went away.
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// `=> WORD name  time`, the time aligned to the right edge.
    fn done_line(&self, word: Option<String>, name: &str, time: Option<Duration>) -> String {
        let width = width();
        let time = time.map(human_duration).unwrap_or_default();
        let word = word.map(|w| format!("{w} ")).unwrap_or_default();
        let room = width.saturating_sub(4 + console::measure_text_width(&word) + time.len());
        format!("=> {word}{:<room$} {time}", truncate(name, room))
    }

    fn update_header(&self) {
        self.header.set_message(format!(
            "({} finished, {} running)",
            self.finished,
            self.running.len()
        ));
    }

    fn show_tail(running: &Running) {
        let room = width().saturating_sub(8);
        let mut message = String::new();
        let partial = (!running.partial.is_empty()).then(|| clean(&running.partial));
        let skip = (running.tail.len() + usize::from(partial.is_some())).saturating_sub(TAIL_LINES);
        for line in running.tail.iter().chain(partial.as_ref()).skip(skip) {
            message.push_str("\n      ");
            message.push_str(&truncate(line, room));
        }
        running.bar.set_message(message);
    }

    fn end(&mut self, vertex: VertexId) -> Option<Running> {
        let running = self.running.remove(&vertex)?;
        running.bar.finish_and_clear();
        self.multi.remove(&running.bar);
        self.finished += 1;
        self.update_header();
        Some(running)
    }
}

impl Render for Tty {
    fn event(&mut self, event: &Event) {
        match event {
            Event::VertexStarted { vertex, name } => {
                // Step names and messages quote the Dockerfile: escaped.
                let name = escape(name);
                let bar = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(bar_style(STEP))
                        .with_prefix(truncate(&name, width().saturating_sub(16))),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                self.running.insert(
                    *vertex,
                    Running {
                        bar,
                        name: name.into_owned(),
                        tail: VecDeque::new(),
                        partial: Vec::new(),
                    },
                );
                self.update_header();
            }
            Event::VertexCached { name, .. } => {
                self.finished += 1;
                self.update_header();
                let word = style("CACHED").blue().to_string();
                self.println(self.done_line(Some(word), &escape(name), None));
            }
            Event::Log { vertex, bytes, .. } => {
                let Some(running) = self.running.get_mut(vertex) else {
                    return;
                };
                running.partial.extend_from_slice(bytes);
                while let Some(pos) = running.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = running.partial.drain(..=pos).collect();
                    running.tail.push_back(clean(&line[..line.len() - 1]));
                    if running.tail.len() > TAIL_LINES {
                        running.tail.pop_front();
                    }
                }
                Self::show_tail(running);
            }
            Event::VertexCompleted {
                vertex, duration, ..
            } => {
                if let Some(running) = self.end(*vertex) {
                    self.println(self.done_line(None, &running.name, Some(*duration)));
                }
            }
            Event::VertexFailed { vertex, error } => {
                if let Some(running) = self.end(*vertex) {
                    let elapsed = running.bar.elapsed();
                    let word = style("ERROR").red().bold().to_string();
                    self.println(self.done_line(Some(word), &running.name, Some(elapsed)));
                    for line in running.tail.iter() {
                        self.println(format!("   > {line}"));
                    }
                    self.println(format!("   {}", style(escape_except(error, &['\n'])).red()));
                }
            }
            Event::VertexCancelled { vertex } => {
                if let Some(running) = self.end(*vertex) {
                    let elapsed = running.bar.elapsed();
                    let word = style("CANCELED").yellow().to_string();
                    self.println(self.done_line(Some(word), &running.name, Some(elapsed)));
                }
            }
            Event::Warning { message, .. } => {
                let message = escape_except(message, &['\n']);
                self.println(format!("{} {message}", style("WARNING:").yellow()));
            }
            Event::Progress { .. } | Event::VertexSource { .. } => {}
        }
    }

    fn note(&mut self, text: &str) {
        self.println(style(text).yellow().to_string());
    }

    fn pull(&mut self, _image: &str, event: &PullEvent) {
        if !self.live {
            return;
        }
        // `pull_event_line` has a line for a layer and none for the config
        // blob, which therefore gets no bar.
        let line = pull_event_line(event);
        match event {
            PullEvent::BlobStarted { descriptor } if line.is_some() => self.transfers.started(
                &crate::util::short_id(descriptor.digest().as_ref()),
                descriptor.size(),
                None,
            ),
            PullEvent::BlobProgress {
                descriptor,
                done,
                total,
            } => self.transfers.progress(
                &crate::util::short_id(descriptor.digest().as_ref()),
                *done,
                *total,
            ),
            PullEvent::BlobDone { descriptor } => self.transfers.finished(
                &crate::util::short_id(descriptor.digest().as_ref()),
                "Download complete",
                line.as_deref(),
            ),
            _ => {
                if let Some(line) = line {
                    self.transfers.line(&line);
                }
            }
        }
    }

    fn end_live(&mut self) {
        if !self.live {
            return;
        }
        for (_, running) in self.running.drain() {
            running.bar.finish_and_clear();
        }
        self.transfers.end();
        self.header.finish_and_clear();
        let _ = self.multi.clear();
        self.live = false;
    }

    fn summary(&mut self, summary: &BuildSummary, totals: &Totals) {
        self.end_live();
        if summary.steps.is_empty() {
            return;
        }
        for line in render_text(summary, totals) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for template in [HEADER, STEP] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn output_lines_are_cleaned_for_the_terminal() {
        assert_eq!(clean(b"\x1b[31mred\x1b[0m"), "red");
        assert_eq!(clean(b"10%\r50%\r"), "50%");
        assert_eq!(clean(b"a\tb\x07"), "a    b?");
    }
}

//! `--progress plain`: as `docker build --progress=plain` prints, numbered steps
//! (`#3 [2/4] RUN make`), their output prefixed with the step number and the
//! seconds since it started, and `#3 DONE 1.2s` / `#3 CACHED` / `#3 ERROR: …`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Instant;

use hoist_builder::{BuildSummary, Event, VertexId};
use hoist_cache::text::{escape, escape_except};

use super::summary::{render_text, Totals};
use super::Render;

pub struct Plain<W> {
    out: W,
    /// Step number, start of execution, name.
    numbers: HashMap<VertexId, (usize, Instant)>,
    next: usize,
    /// Output of a step that has not ended with a newline yet.
    partial: HashMap<VertexId, Vec<u8>>,
}

impl<W: Write> Plain<W> {
    pub fn new(out: W) -> Self {
        Plain {
            out,
            numbers: HashMap::new(),
            next: 0,
            partial: HashMap::new(),
        }
    }

    /// Where the lines go (CI renderers add their markers in between).
    pub fn out(&mut self) -> &mut W {
        &mut self.out
    }

    /// The step number `vertex` has (or gets now).
    pub fn number(&mut self, vertex: VertexId) -> usize {
        let next = &mut self.next;
        self.numbers
            .entry(vertex)
            .or_insert_with(|| {
                *next += 1;
                (*next, Instant::now())
            })
            .0
    }

    pub fn render(&mut self, event: &Event) -> io::Result<()> {
        match event {
            Event::VertexStarted { vertex, name } => {
                let n = self.number(*vertex);
                if let Some(entry) = self.numbers.get_mut(vertex) {
                    entry.1 = Instant::now();
                }
                // Step names and messages quote the Dockerfile: escaped.
                writeln!(self.out, "#{n} {}", escape(name))?;
            }
            Event::VertexCached { vertex, name } => {
                let n = self.number(*vertex);
                writeln!(self.out, "#{n} {}\n#{n} CACHED\n", escape(name))?;
            }
            Event::Log { vertex, bytes, .. } => {
                let Some((n, start)) = self.numbers.get(vertex).copied() else {
                    return Ok(());
                };
                let buffer = self.partial.entry(*vertex).or_default();
                buffer.extend_from_slice(bytes);
                let mut lines = Vec::new();
                while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=pos).collect();
                    lines.push(line);
                }
                for line in lines {
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    writeln!(self.out, "#{n} {:.3} {text}", start.elapsed().as_secs_f64())?;
                }
            }
            Event::VertexCompleted {
                vertex, duration, ..
            } => {
                if let Some((n, start)) = self.numbers.get(vertex).copied() {
                    self.flush_partial(*vertex, n, start)?;
                    writeln!(self.out, "#{n} DONE {:.1}s\n", duration.as_secs_f64())?;
                }
            }
            Event::VertexFailed { vertex, error } => {
                if let Some((n, start)) = self.numbers.get(vertex).copied() {
                    self.flush_partial(*vertex, n, start)?;
                    writeln!(self.out, "#{n} ERROR: {}\n", escape_except(error, &['\n']))?;
                }
            }
            Event::VertexCancelled { vertex } => {
                if let Some((n, start)) = self.numbers.get(vertex).copied() {
                    self.flush_partial(*vertex, n, start)?;
                    writeln!(self.out, "#{n} CANCELED\n")?;
                }
            }
            Event::Warning { message, .. } => {
                writeln!(self.out, "WARNING: {}", escape_except(message, &['\n']))?
            }
            Event::Progress { .. } | Event::VertexSource { .. } => {}
        }
        Ok(())
    }

    fn flush_partial(&mut self, vertex: VertexId, n: usize, start: Instant) -> io::Result<()> {
        if let Some(rest) = self.partial.remove(&vertex) {
            if !rest.is_empty() {
                writeln!(
                    self.out,
                    "#{n} {:.3} {}",
                    start.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&rest)
                )?;
            }
        }
        Ok(())
    }
}

impl<W: Write + Send> Render for Plain<W> {
    fn event(&mut self, event: &Event) {
        // A closed stderr must not stop the build; its output is lost either way.
        let _ = self.render(event);
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn summary(&mut self, summary: &BuildSummary, totals: &Totals) {
        if summary.steps.is_empty() {
            // Nothing ran (e.g. the Dockerfile was rejected): nothing to sum up.
            return;
        }
        for line in render_text(summary, totals) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}

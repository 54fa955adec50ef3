//! Progress of `hoist pull` and `hoist push`: on a terminal, an indicatif
//! bar per layer (bytes, speed, ETA) under the status lines; elsewhere the
//! plain per-layer lines Docker prints (`<id>: Pulling fs layer`, …, made
//! in one place for pulls, pushes and builds:
//! `hoist_builder::pipeline::{pull_event_line, push_event_line}`); with
//! `-q`, nothing. Inside `hoist build`, the same bars are drawn in the
//! build's live view ([`Transfers::within`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{
    HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle,
};

/// How a transfer is shown.
pub struct Transfers {
    mode: Mode,
}

enum Mode {
    Quiet,
    Plain,
    Tty {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
        /// `Downloading`/`Pushing`: the bar's message while bytes move.
        verb: &'static str,
        /// A finished layer becomes a line above the live area instead of
        /// a full bar that stays (the build's steps keep the live area).
        collapse: bool,
    },
}

impl Transfers {
    /// Bars when stderr is a usable terminal, plain lines otherwise, nothing
    /// when `quiet`. `verb` labels a moving bar (`Downloading`, `Pushing`).
    pub fn new(quiet: bool, verb: &'static str) -> Transfers {
        let mode = if quiet {
            Mode::Quiet
        } else if super::tty::usable() {
            Mode::Tty {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
                bars: Mutex::new(HashMap::new()),
                verb,
                collapse: false,
            }
        } else {
            Mode::Plain
        };
        Transfers { mode }
    }

    /// Bars drawn in `multi`, the live view of a build, where a finished
    /// layer collapses to its line (`<id>: Download complete 2.86 MiB in 1s`).
    pub fn within(multi: MultiProgress, verb: &'static str) -> Transfers {
        Transfers {
            mode: Mode::Tty {
                multi,
                bars: Mutex::new(HashMap::new()),
                verb,
                collapse: true,
            },
        }
    }

    /// A line of its own (a header, a retry, a mirror failing), printed
    /// above the bars on a terminal.
    pub fn line(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{text}"),
            Mode::Tty { multi, .. } => {
                if multi.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
        }
    }

    /// Layer `id` starts moving `total` bytes; `line` is what plain mode
    /// prints for it (`<id>: Pulling fs layer`), if anything.
    pub fn started(&self, id: &str, total: u64, line: Option<&str>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
            Mode::Tty {
                multi,
                bars,
                verb,
                collapse,
            } => {
                // Complete before it is added, so its first drawing (which
                // the rate limit never drops) already shows it all.
                let bar = ProgressBar::new(total)
                    .with_style(bar_style())
                    .with_prefix(id.to_string())
                    .with_message(*verb);
                let bar = multi.add(bar);
                bar.tick();
                if *collapse {
                    // The build's spinners share the terminal's rate limit:
                    // the tick may have been dropped, and a fast layer
                    // would then never be seen. A forced redraw shows it.
                    multi.suspend(|| ());
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                lock(bars).insert(id.to_string(), bar);
            }
        }
    }

    /// `done` of `total` bytes of layer `id` have moved.
    pub fn progress(&self, id: &str, done: u64, total: u64) {
        if let Mode::Tty { bars, .. } = &self.mode {
            if let Some(bar) = lock(bars).get(id) {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                }
                bar.set_position(done);
            }
        }
    }

    /// Layer `id` is done: the bar stays, full, with `status`
    /// (`Download complete`, `Pushed`); plain mode prints `line`.
    pub fn finished(&self, id: &str, status: &str, line: Option<&str>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
            Mode::Tty {
                multi,
                bars,
                collapse,
                ..
            } => match lock(bars).remove(id) {
                Some(bar) if *collapse => {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                    // As `done_style` draws it.
                    let total = HumanBytes(bar.length().unwrap_or(0));
                    let took = HumanDuration(bar.elapsed());
                    self.line(&format!("{id}: {status:<17} {total} in {took:#}"));
                }
                Some(bar) => {
                    if let Some(total) = bar.length() {
                        bar.set_position(total);
                    }
                    bar.set_style(done_style());
                    bar.finish_with_message(status.to_string());
                }
                None => {
                    if let Some(line) = line {
                        self.line(line);
                    }
                }
            },
        }
    }

    /// Stops drawing (before the command's result or an error is printed);
    /// bars of unfinished layers are left where they stopped.
    pub fn end(&self) {
        if let Mode::Tty {
            multi,
            bars,
            collapse,
            ..
        } = &self.mode
        {
            for (_, bar) in lock(bars).drain() {
                if *collapse {
                    // The build's live view is cleared as a whole.
                    bar.finish_and_clear();
                    multi.remove(&bar);
                } else {
                    bar.abandon();
                }
            }
        }
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.end();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}: {msg:<17} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg:<17} {total_bytes} in {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

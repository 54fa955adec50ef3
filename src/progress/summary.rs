//! The build summary: per step cached or not, wall time, CPU seconds, peak
//! memory and layer size, then the totals, as text (plain and tty) or as the
//! final JSON event.

use std::fmt::Write as _;
use std::time::Duration;

use hoist_builder::{BuildSummary, StepStatus, StepSummary};
use serde_json::{json, Value};

use super::Status;

/// What the summary says about the whole build.
#[derive(Clone, Debug)]
pub struct Totals {
    /// How the build ended.
    pub status: Status,
    /// Wall time from the start of progress to the summary.
    pub wall: Duration,
    /// CPU time of the hoist process itself (user + system), if known.
    pub hoist_cpu: Option<Duration>,
    /// Peak resident memory of the hoist process, if known.
    pub hoist_peak_rss: Option<u64>,
}

impl Totals {
    /// Totals of this process, now.
    pub fn measure(status: Status, wall: Duration) -> Totals {
        Totals {
            status,
            wall,
            hoist_cpu: own_cpu_time(),
            hoist_peak_rss: own_peak_rss(),
        }
    }
}

/// User plus system time of this process, from `/proc/self/stat` (fields 14
/// and 15, in USER_HZ ticks, which the kernel fixes at 100 per second for
/// everything it reports in /proc).
fn own_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is at N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `VmHWM` of `/proc/self/status`: the peak resident set size.
fn own_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `1.2 MB`, `340 kB`, `12 B` (decimal units, as `docker images` shows sizes).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// `0.41s`, `12.3s`, `2m05s`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

fn result_word(step: &StepSummary) -> &'static str {
    match step.status {
        // Lower case: the progress lines above use `#3 CACHED`, and scripts
        // that count those must not count the summary's.
        StepStatus::Cached => "cached",
        StepStatus::Done => "done",
        StepStatus::Failed => "error",
        StepStatus::Cancelled => "canceled",
        StepStatus::Running => "stopped",
    }
}

/// Cuts `text` to at most `width` characters, ending with `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

const NAME_WIDTH: usize = 48;

/// The summary as text lines (without trailing newlines).
pub fn render_text(summary: &BuildSummary, totals: &Totals) -> Vec<String> {
    let width = summary
        .steps
        .iter()
        .map(|s| hoist_cache::text::escape(&s.name).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(20, NAME_WIDTH);
    let dash = || "-".to_owned();
    let mut lines = vec![format!("build summary ({}):", totals.status.as_str())];
    lines.push(format!(
        "  {:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}",
        "step", "result", "wall", "cpu", "memory", "layer"
    ));
    for step in &summary.steps {
        let mut line = format!(
            "  {:<width$}  {:>8}",
            truncate(&hoist_cache::text::escape(&step.name), width),
            result_word(step)
        );
        if step.status != StepStatus::Cached || step.layer_size.is_some() {
            let _ = write!(
                line,
                "  {:>8}  {:>8}  {:>9}  {:>9}",
                step.duration.map_or_else(dash, human_duration),
                step.usage.map_or_else(dash, |u| human_duration(u.cpu_time)),
                step.usage
                    .and_then(|u| u.peak_memory_bytes)
                    .map_or_else(dash, human_bytes),
                step.layer_size.map_or_else(dash, human_bytes),
            );
        }
        lines.push(line.trim_end().to_owned());
    }
    let run = summary.steps.len() - summary.cached();
    lines.push(format!(
        "  {:<width$}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}",
        format!(
            "total: {} steps, {} cached, {} run",
            summary.steps.len(),
            summary.cached(),
            run
        ),
        "",
        human_duration(totals.wall),
        human_duration(summary.cpu_time()),
        summary.peak_memory_bytes().map_or_else(dash, human_bytes),
        human_bytes(summary.layer_bytes()),
    ));
    if let (Some(cpu), Some(rss)) = (totals.hoist_cpu, totals.hoist_peak_rss) {
        lines.push(format!(
            "  hoist itself: {} CPU, {} peak RSS",
            human_duration(cpu),
            human_bytes(rss)
        ));
    }
    lines
}

fn step_json(step: &StepSummary) -> Value {
    json!({
        "vertex": step.vertex.index(),
        "name": step.name,
        "cached": step.status == StepStatus::Cached,
        "status": match step.status {
            StepStatus::Cached => "cached",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Running => "stopped",
        },
        "duration_seconds": step.duration.map(|d| d.as_secs_f64()),
        "cpu_seconds": step.usage.map(|u| u.cpu_time.as_secs_f64()),
        "peak_memory_bytes": step.usage.and_then(|u| u.peak_memory_bytes),
        "layer_size_bytes": step.layer_size,
    })
}

/// The summary as the final JSON progress event.
pub fn render_json(summary: &BuildSummary, totals: &Totals) -> Value {
    json!({
        "event": "summary",
        "status": totals.status.as_str(),
        "steps": summary.steps.iter().map(step_json).collect::<Vec<_>>(),
        "total": {
            "steps": summary.steps.len(),
            "cached": summary.cached(),
            "executed": summary.executed(),
            "duration_seconds": totals.wall.as_secs_f64(),
            "cpu_seconds": summary.cpu_time().as_secs_f64(),
            "peak_memory_bytes": summary.peak_memory_bytes(),
            "layer_size_bytes": summary.layer_bytes(),
            "hoist_cpu_seconds": totals.hoist_cpu.map(|d| d.as_secs_f64()),
            "hoist_peak_rss_bytes": totals.hoist_peak_rss,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_docker() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1_234), "1.2 kB");
        assert_eq!(human_bytes(34_000_000), "34 MB");
        assert_eq!(human_duration(Duration::from_millis(410)), "0.41s");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn own_usage_is_readable() {
        assert!(own_peak_rss().is_some_and(|rss| rss > 0));
        assert!(own_cpu_time().is_some());
    }
}

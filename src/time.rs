//! RFC 3339 timestamps (image configs use them) without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now, or `SOURCE_DATE_EPOCH` when set (for
/// reproducible images); one that is not a time an image can carry is an
/// error, not ignored.
pub fn now_or_source_date_epoch() -> anyhow::Result<i64> {
    use anyhow::Context as _;
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            hoist_cache::units::parse_epoch(&v).context("invalid SOURCE_DATE_EPOCH (environment)")
        }
        _ => Ok(now()),
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2024-01-02T03:04:05Z` and its parser, the workspace's one pair: the
/// builder writes image configs with these, and the CLI reads them back.
pub use hoist_cache::units::format_rfc3339;

/// The time an image config carries, or `None` when it is not a valid
/// RFC 3339 time (tables show those as `N/A`, as Docker does).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    hoist_cache::units::parse_rfc3339(text).ok()
}

/// Docker's "CREATED" column: `2 minutes ago`.
pub fn ago(created: Option<&str>) -> String {
    let Some(then) = created.and_then(parse_rfc3339) else {
        return "N/A".to_string();
    };
    let secs = (now() - then).max(0);
    let (n, unit) = match secs {
        0..=59 => return "Less than a minute ago".to_string(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=1_209_599 => (secs / 86_400, "day"),
        1_209_600..=5_183_999 => (secs / 604_800, "week"),
        5_184_000..=63_071_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    if n == 1 {
        let article = if unit == "hour" { "An" } else { "A" };
        format!("{article} {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_reads_like_docker() {
        let t = |secs: i64| format_rfc3339(now() - secs);
        assert_eq!(ago(Some(&t(5))), "Less than a minute ago");
        assert_eq!(ago(Some(&t(150))), "2 minutes ago");
        assert_eq!(ago(Some(&t(3700))), "An hour ago");
        assert_eq!(ago(Some(&t(3 * 86_400))), "3 days ago");
        assert_eq!(ago(None), "N/A");
    }
}

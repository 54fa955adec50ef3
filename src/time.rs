//! RFC 3339 timestamps (image configs use them) without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now, or `SOURCE_DATE_EPOCH` when set (for
/// reproducible images).
pub fn now_or_source_date_epoch() -> i64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        return epoch;
    }
    now()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2024-01-02T03:04:05Z` and its parser: the builder writes image configs
/// with these, and the CLI reads them back the same way.
pub use hoist_builder::engine::assemble::{parse_rfc3339, rfc3339 as format_rfc3339};

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
    fn rfc3339_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05Z"), Some(1_704_164_645));
        assert_eq!(
            parse_rfc3339("2024-01-02T04:04:05.123456789+01:00"),
            Some(1_704_164_645)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        for t in [0, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

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

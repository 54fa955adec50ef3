//! The one parser of each unit hoist reads from users and images: sizes
//! (`512m`, `10GB`, `1.5GiB`), durations (`24h`, `1h30m`) and RFC 3339 times
//! (`2024-01-02T03:04:05.123+01:00`), and the RFC 3339 and size formatters.
//!
//! All arithmetic is checked: a value that does not fit (`99999999999g`,
//! `99999999999999h`, a year past 9999) is an [`UnitError`] naming the
//! value, never a panic or a wrapped number.

use std::fmt;
use std::time::Duration;

/// A value that is not a size, duration or time, or one too large to hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {reason}")]
pub struct UnitError {
    /// `size`, `duration` or `time`.
    pub what: &'static str,
    /// The value, with control characters escaped.
    pub value: String,
    /// Why, with the accepted forms.
    pub reason: String,
}

impl UnitError {
    fn new(what: &'static str, value: &str, reason: impl fmt::Display) -> Self {
        // Escaped here so every message that quotes the value is safe to print.
        UnitError {
            what,
            value: super::text::escape(value).into_owned(),
            reason: reason.to_string(),
        }
    }
}

/// What a unit letter of a size multiplies by when it has no `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SizeBase {
    /// `k` = 1000 (Docker's `units.FromHumanSize`: `10GB`, disk space).
    Decimal,
    /// `k` = 1024 (Docker's `units.RAMInBytes`: `--memory 512m`, tmpfs).
    Binary,
}

/// A size where `k`, `m`, `g`, `t`, `p` (with an optional `b`) are powers of
/// 1000, as Docker's `FromHumanSize` reads disk space: `512`, `10kb`,
/// `1.5GB`, `2g`; `KiB`, `MiB`, `GiB`, `TiB`, `PiB` are powers of 1024.
/// Case does not matter; one space may separate the number and the unit.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    parse_size_in(text, SizeBase::Decimal)
}

/// A size where `k`, `m`, `g`, `t`, `p` are powers of 1024, as Docker's
/// `RAMInBytes` reads memory: `512m`, `1g`, `1048576`, `64k`, `1.5g`.
pub fn parse_memory_size(text: &str) -> Result<u64, UnitError> {
    parse_size_in(text, SizeBase::Binary)
}

/// Digits, then optionally `.` and digits: the integer part and the
/// fraction as (numerator, 10^digits). `None` when it is not that.
fn decimal(number: &str) -> Option<(u128, u128, u128)> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    // Leading zeros cannot make a number large; strip them so a long run of
    // them is not mistaken for an overflow.
    let int = int.trim_start_matches('0');
    // More than 39 digits overflows u128 anyway; the caller reports "too large".
    let int_value = if int.is_empty() {
        0
    } else {
        int.parse::<u128>().unwrap_or(u128::MAX)
    };
    // Digits past the 18th cannot change a whole number of bytes or
    // nanoseconds of any unit here; dropping them keeps 10^n in range.
    let frac = &frac[..frac.len().min(18)];
    let denominator = 10u128.pow(frac.len() as u32);
    let numerator = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()?
    };
    Some((int_value, numerator, denominator))
}

fn parse_size_in(text: &str, base: SizeBase) -> Result<u64, UnitError> {
    const FORMS: &str = "expected a number with an optional unit, e.g. `512m`, `10GB` or `1.5GiB`";
    let err = |reason: &str| UnitError::new("size", text, reason);
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let Some((int, numerator, denominator)) = decimal(number) else {
        return Err(err(FORMS));
    };
    let (letter, rest) = match unit.as_bytes() {
        [] => (None, ""),
        [b'b'] => (None, ""),
        [l, rest @ ..] => (Some(*l), std::str::from_utf8(rest).unwrap_or("?")),
    };
    let binary = match rest {
        "" | "b" => base == SizeBase::Binary,
        "ib" => true,
        _ => return Err(err(FORMS)),
    };
    let power = match letter {
        None => 0,
        Some(b'k') => 1,
        Some(b'm') => 2,
        Some(b'g') => 3,
        Some(b't') => 4,
        Some(b'p') => 5,
        Some(_) => return Err(err(FORMS)),
    };
    let multiplier = if binary { 1024u128 } else { 1000 }.pow(power);
    // Fractions of a byte are dropped, as Docker's conversion to int64 does.
    let bytes = int
        .checked_mul(multiplier)
        .and_then(|b| b.checked_add(numerator * multiplier / denominator));
    match bytes.and_then(|b| u64::try_from(b).ok()) {
        Some(b) => Ok(b),
        None => Err(err("too large (the most is 16EiB)")),
    }
}

/// The longest duration accepted: what Go's `time.Duration` holds (about
/// 292 years), as Docker's filters read durations with `time.ParseDuration`.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// A Go-style duration as Docker's `--filter until=` and HEALTHCHECK's
/// flags take it: a sequence of numbers with units `ns`, `us` (`µs`), `ms`,
/// `s`, `m`, `h`, fractions allowed (`90s`, `30m`, `24h`, `1h30m`, `1.5h`),
/// an optional leading `+`, or `0`. Not negative; at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    const FORMS: &str = "expected e.g. `24h`, `30m` or `1h30m` (units ns, us, ms, s, m, h)";
    let err = |reason: &str| UnitError::new("duration", text, reason);
    // Go takes a leading `+`; a negative duration means nothing here.
    let trimmed = text.trim();
    let mut rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err(FORMS));
    }
    let too_large = || err("too large (the most is 2562047h)");
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err(FORMS))?;
        let (number, tail) = rest.split_at(number_end);
        let (int, numerator, denominator) = decimal(number).ok_or_else(|| err(FORMS))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err(FORMS)),
        };
        let part = int
            .checked_mul(nanos)
            .and_then(|n| n.checked_add(numerator * nanos / denominator))
            .ok_or_else(too_large)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = tail;
    }
    match u64::try_from(total) {
        Ok(n) if n <= i64::MAX as u64 => Ok(Duration::from_nanos(n)),
        _ => Err(too_large()),
    }
}

/// The last second RFC 3339 can write (`9999-12-31T23:59:59Z`): the most a
/// time hoist writes into an image may be, so that it reads back.
pub const MAX_EPOCH: i64 = 253_402_300_799;

/// A `SOURCE_DATE_EPOCH`: whole seconds since 1970, from 0 to
/// [`MAX_EPOCH`] (a later one could not be written as an RFC 3339 time).
pub fn parse_epoch(text: &str) -> Result<i64, UnitError> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::new(
            "time",
            text,
            "expected whole seconds since 1970 (e.g. `1700000000`)",
        ));
    }
    match digits.parse::<i64>() {
        Ok(n) if n <= MAX_EPOCH => Ok(n),
        _ => Err(UnitError::new(
            "time",
            text,
            format!("after 9999-12-31T23:59:59Z (the most is {MAX_EPOCH})"),
        )),
    }
}

/// Sizes as Docker prints them: decimal units, three significant digits
/// (`4.26MB`, `885kB`, `0B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{value:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// Formats seconds since the epoch as RFC 3339 UTC
/// (`2024-01-02T03:04:05Z`), as image configs carry times.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm);
    // i64 seconds are at most ~1.07e14 days, far from overflowing here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Formats a time as RFC 3339 UTC with the fraction of a second Go's
/// `time.RFC3339Nano` gives (trailing zeros dropped, none when whole), as
/// BuildKit's JSON carries times.
pub fn format_rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let whole = format_rfc3339(secs);
    if nanos == 0 {
        return whole;
    }
    let fraction = format!("{nanos:09}");
    format!(
        "{}.{}Z",
        whole.trim_end_matches('Z'),
        fraction.trim_end_matches('0')
    )
}

/// An RFC 3339 time (`2024-01-02T03:04:05Z`, `…05.123456789+01:00`; `t`,
/// `z` and a space for `T` as Go accepts them) as whole seconds since the
/// epoch (fractions dropped). The year has four digits, as RFC 3339 and Go's
/// `time.RFC3339` require, so every value fits.
pub fn parse_rfc3339(text: &str) -> Result<i64, UnitError> {
    let err = |reason: &str| UnitError::new("time", text, reason);
    let forms = "expected an RFC 3339 time such as `2024-01-02T03:04:05Z`";
    // Fixed-width fields: compare bytes, so a multi-byte character (the text
    // comes from image configs of any origin) can never split a slice.
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let field = b.get(range)?;
        field
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| field.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !shape {
        return Err(err(forms));
    }
    let fields = (|| {
        Some((
            digits(0..4)?,
            digits(5..7)?,
            digits(8..10)?,
            digits(11..13)?,
            digits(14..16)?,
            digits(17..19)?,
        ))
    })();
    let Some((y, m, d, hh, mm, ss)) = fields else {
        return Err(err(forms));
    };
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(err(forms));
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (Some(oh), Some(om)) = (two(*h1, *h2), two(*m1, *m2)) else {
                return Err(err(forms));
            };
            if oh > 23 || om > 59 {
                return Err(err("the UTC offset is out of range"));
            }
            let seconds = oh * 3600 + om * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return Err(err(forms)),
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(err("the month is out of range")),
    };
    // 60 seconds: a leap second, as RFC 3339 allows.
    if !(1..=month_days).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(err("the day or time of day is out of range"));
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm);
    // with four-digit years every step is far inside i64.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_docker_prints_them() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(885_000), "885kB");
        assert_eq!(format_size(4_261_000), "4.26MB");
        assert_eq!(format_size(1_200_000), "1.2MB");
        assert_eq!(format_size(12_340_000), "12.3MB");
        assert_eq!(format_size(999), "999B");
    }

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10kb"), Ok(10_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2g"), Ok(2_000_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 3b "), Ok(3));
        assert_eq!(parse_size("10GB"), parse_size("10gb"));
        assert_eq!(parse_memory_size("512m"), Ok(512 << 20));
        assert_eq!(parse_memory_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_memory_size("1.5k"), Ok(1536));
        assert_eq!(parse_memory_size("0.5"), Ok(0));
        assert_eq!(parse_memory_size(".5m"), Ok(512 << 10));
        assert_eq!(parse_memory_size("1p"), Ok(1 << 50));
        assert_eq!(
            parse_memory_size("0000000000000000000000000000000000000000001k"),
            Ok(1024)
        );
    }

    #[test]
    fn sizes_at_the_edges_are_errors_naming_the_value() {
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_memory_size("16777215t"), Ok(u64::MAX - (1 << 40) + 1));
        assert!(parse_memory_size("16777216t").is_err());
        for bad in [
            "",
            " ",
            "ten",
            "5 parsecs",
            "-1",
            "-1g",
            "+1g",
            "1e999",
            "1e3",
            "nan",
            "inf",
            "1..2",
            ".",
            "1.2.3",
            "1kk",
            "1kbb",
            "1gx",
            "1 g b",
            "18446744073709551616",
            "99999999999g",
            "20000p",
            "99999999999999999999999999999999999999999999999",
            "1\u{1b}[2J",
        ] {
            let e = parse_memory_size(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid size `"), "{e}");
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_memory_size("99999999999g").unwrap_err().to_string(),
            "invalid size `99999999999g`: too large (the most is 16EiB)"
        );
        assert_eq!(parse_size("1\u{1b}[2J").unwrap_err().value, "1\\u{1b}[2J");
    }

    #[test]
    fn durations_read_as_go_reads_them() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("24h"), Ok(s(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5_400)));
        assert_eq!(parse_duration("1.5h"), Ok(s(5_400)));
        assert_eq!(parse_duration("90s"), Ok(s(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1ms500us"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2µs3ns"), Ok(Duration::from_nanos(2003)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("+5s"), Ok(s(5)));
        assert_eq!(parse_duration("2562047h"), Ok(s(2_562_047 * 3600)));
    }

    #[test]
    fn durations_at_the_edges_are_errors_naming_the_value() {
        for bad in [
            "",
            "10",
            "3 days",
            "1d",
            "-1h",
            "+-1h",
            "++1h",
            "h",
            "1e999h",
            "1H",
            "1..5h",
            "1h30",
            "99999999999999h",
            "2562048h",
            "9223372036854775808ns",
            "999999999999999999999999999999999999999999h",
            "1h\u{1b}",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid duration `"), "{e}");
        }
        assert_eq!(
            parse_duration("99999999999999h").unwrap_err().to_string(),
            "invalid duration `99999999999999h`: too large (the most is 2562047h)"
        );
    }

    #[test]
    fn epochs_are_whole_seconds_up_to_year_9999() {
        assert_eq!(parse_epoch("0"), Ok(0));
        assert_eq!(parse_epoch(" 1700000000\n"), Ok(1_700_000_000));
        assert_eq!(parse_epoch("253402300799"), Ok(MAX_EPOCH));
        assert_eq!(format_rfc3339(MAX_EPOCH), "9999-12-31T23:59:59Z");
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e9",
            "253402300800",
            "99999999999999999999",
        ] {
            let e = parse_epoch(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid time `"), "{e}");
        }
        assert_eq!(
            parse_epoch("253402300800").unwrap_err().reason,
            "after 9999-12-31T23:59:59Z (the most is 253402300799)"
        );
    }

    #[test]
    fn rfc3339_nanos_drops_trailing_zeros_as_go_does() {
        assert_eq!(format_rfc3339_nanos(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339_nanos(86_401, 120_000_000),
            "1970-01-02T00:00:01.12Z"
        );
        assert_eq!(format_rfc3339_nanos(1, 7), "1970-01-01T00:00:01.000000007Z");
        assert_eq!(
            parse_rfc3339(&format_rfc3339_nanos(1_700_000_000, 5)).unwrap(),
            1_700_000_000
        );
    }

    #[test]
    fn rfc3339_parses_what_it_formats_and_offsets() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for secs in [
            0,
            951_782_400,
            1_700_000_000,
            4_102_444_800,
            -62_135_596_800,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Ok(secs));
        }
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05Z"), Ok(1_704_164_645));
        assert_eq!(parse_rfc3339("2024-01-02t03:04:05z"), Ok(1_704_164_645));
        assert_eq!(parse_rfc3339("2024-01-02 03:04:05Z"), Ok(1_704_164_645));
        assert_eq!(
            parse_rfc3339("2024-01-02T04:04:05.123456789+01:00"),
            Ok(1_704_164_645)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T02:34:05-00:30"),
            Ok(1_704_164_645)
        );
        // Docker's zero time, which images without a date carry.
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Ok(-62_135_596_800));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
        assert_eq!(parse_rfc3339("2016-12-31T23:59:60Z"), Ok(1_483_228_800));
    }

    #[test]
    fn rfc3339_at_the_edges_is_an_error_naming_the_value() {
        for bad in [
            "",
            "yesterday",
            "99999-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:60:00Z",
            "2023-01-01T00:00:61Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+24:00",
            "2023-01-01T00:00:00+0100",
            "2024-01-02Té04:05Z",
            "2024-01-02T03:04:05+0é:00",
            "2024-01-02T03:04:05Zjunk",
            "9999999999999999999-01-01T00:00:00Z",
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid time `"), "{e}");
        }
        assert_eq!(
            parse_rfc3339("99999-01-01T00:00:00Z").unwrap_err().to_string(),
            "invalid time `99999-01-01T00:00:00Z`: expected an RFC 3339 time such as `2024-01-02T03:04:05Z`"
        );
    }
}

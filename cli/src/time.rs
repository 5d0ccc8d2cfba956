//! Instants for `--at` and for output: RFC 3339 in UTC, as the config writes them.

use canary_router::schedule::{civil_from_days, parse_duration, parse_rfc3339};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `--at`: an RFC 3339 time, `now`, or a duration from now (`+90m`, `-1h`).
pub fn parse_at(text: &str, now_ms: i64) -> Result<i64, String> {
    let relative = |sign: i64, rest: &str| {
        parse_duration(rest)
            .ok()
            .and_then(|ms| i64::try_from(ms).ok())
            .map(|ms| now_ms.saturating_add(sign * ms))
    };
    let parsed = match text.as_bytes().first() {
        _ if text == "now" => Some(now_ms),
        Some(b'+') => relative(1, &text[1..]),
        Some(b'-') => relative(-1, &text[1..]),
        _ => parse_rfc3339(text).ok(),
    };
    parsed.ok_or_else(|| {
        format!(
            "--at: `{text}` is not a time: give an RFC 3339 time such as 2026-12-01T09:30:00Z, `now`, or +DURATION / -DURATION from now such as +2h or -30m"
        )
    })
}

/// Unix milliseconds as RFC 3339 in UTC: `2026-12-01T09:00:00Z`, with `.250` when
/// there are milliseconds.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_what_the_filter_parses() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2026-12-01T09:00:00Z",
            "2026-12-01T09:00:00.250Z",
            "2100-03-01T00:00:00Z",
        ] {
            let ms = parse_rfc3339(text).unwrap();
            assert_eq!(format_rfc3339(ms), text);
        }
        assert_eq!(format_rfc3339(1_796_115_600_000), "2026-12-01T09:00:00Z");
    }

    #[test]
    fn at_takes_a_time_now_or_an_offset() {
        let now = 1_796_115_600_000;
        assert_eq!(parse_at("now", now), Ok(now));
        assert_eq!(parse_at("+1h30m", now), Ok(now + 5_400_000));
        assert_eq!(parse_at("-10m", now), Ok(now - 600_000));
        assert_eq!(
            parse_at("2026-12-01T10:00:00+01:00", now),
            Ok(1_796_115_600_000)
        );
        assert!(parse_at("tomorrow", now)
            .unwrap_err()
            .contains("`tomorrow`"));
        assert!(parse_at("+", now).is_err());
        assert!(parse_at("", now).is_err());
    }
}

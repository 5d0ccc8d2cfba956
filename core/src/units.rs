//! The units the config is written in and the core computes with: weights in basis
//! points, durations (`1h30m`) and RFC 3339 instants. Parsed and formatted by hand
//! to keep date-time crates out of the `.wasm`. A leaf: it imports nothing from the
//! crate, so `config`, `schedule` and `guard` all use it without an import circle.

/// Weights are percentages with two decimals: 10000 basis points are 100%.
pub const FULL_WEIGHT_BASIS_POINTS: u32 = 10_000;

/// Converts a percentage to basis points, checking its range, its precision and
/// that it maps to a whole number of buckets.
#[cold]
#[inline(never)]
pub fn weight_to_basis_points(weight: f64, buckets: u32) -> Result<u32, String> {
    if !weight.is_finite() {
        return Err(format!("{} is not a number", format_number(weight)));
    }
    if weight < 0.0 {
        return Err(format!("{} is below 0", format_number(weight)));
    }
    if weight > 100.0 {
        return Err(format!("{} is above 100", format_number(weight)));
    }
    let scaled = weight * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return Err(format!(
            "{} has more than two decimals (0.01 is the smallest step)",
            format_number(weight)
        ));
    }
    // In range 0..=10000 after the checks above, so the cast is exact.
    let bp = bp as u32;
    if (u64::from(bp) * u64::from(buckets)) % u64::from(FULL_WEIGHT_BASIS_POINTS) != 0 {
        let step = format_basis_points(u64::from(FULL_WEIGHT_BASIS_POINTS / buckets));
        return Err(format!(
            "{} is not a whole number of buckets: with hash.buckets = {buckets} weights go in steps of {step}",
            format_number(weight)
        ));
    }
    Ok(bp)
}

/// `1025` -> `"10.25"`, `1000` -> `"10"`: how weights read in messages.
#[cold]
#[inline(never)]
pub fn format_basis_points(bp: u64) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else if bp % 10 == 0 {
        format!("{}.{}", bp / 100, (bp % 100) / 10)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    }
}

/// A number as Rust's `{}` writes an `f64` (`120`, `0.5`, `1.125`, `-0`), without
/// the float formatting code of `core::fmt`, which is about 20 KB of the `.wasm`:
/// from the shortest digits that read back as the same number. The same text as
/// Rust's for every number below 1e22 whose shortest digits end at or above
/// 10^-22, which covers every weight and rate a config can hold; beyond, the
/// last digits may differ.
#[cold]
#[inline(never)]
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let (negative, digits, exponent) = shortest_digits(v);
    let sign = if negative { "-" } else { "" };
    format!("{sign}{}", plain_decimal(&digits, exponent))
}

/// `value` with `decimals` decimals, rounded: (`5.0`, 2) -> `5.00`, for log lines
/// (as `{:.2}` writes, except for exact ties, which round away from zero).
#[cold]
#[inline(never)]
pub fn format_fixed(value: f64, decimals: u32) -> String {
    let scale = pow10(decimals);
    let scaled = (value.abs() * scale).round();
    if !scaled.is_finite() || scaled >= 1e18 {
        return format_number(value);
    }
    let scaled = scaled as u64;
    let sign = if value < 0.0 && scaled != 0 { "-" } else { "" };
    let whole = scaled / scale as u64;
    if decimals == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = scaled % scale as u64;
    format!(
        "{sign}{whole}.{fraction:0width$}",
        width = decimals as usize
    )
}

/// The shortest digits that read back as `v` (finite): `(negative, digits,
/// exponent)` with |v| = digits × 10^exponent, digits without leading or trailing
/// zeros (`"0"` for zero).
#[cold]
#[inline(never)]
pub fn shortest_digits(v: f64) -> (bool, String, i32) {
    let negative = v.is_sign_negative();
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return (negative, "0".to_string(), 0);
    }
    // The exponent of the first digit: 10^first <= a < 10^(first + 1).
    let mut first = 0i32;
    while first < 308 && a >= scale_by_pow10(1.0, first + 1) {
        first += 1;
    }
    while first > -324 && a < scale_by_pow10(1.0, first) {
        first -= 1;
    }
    let mut found = None;
    for significant in 1..=17 {
        let exponent = first - significant + 1;
        let candidate = scale_by_pow10(a, -exponent).round();
        found = Some((candidate, exponent));
        // Only a power of ten up to 10^22 is exact, so only then does the check
        // prove that these digits read back as `a`.
        if exponent.unsigned_abs() <= 22 && scale_by_pow10(candidate, exponent) == a {
            break;
        }
    }
    let (candidate, mut exponent) = found.unwrap_or((0.0, 0));
    let mut digits = (candidate as u64).to_string();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    (negative, digits, exponent)
}

/// `digits` × 10^exponent written out without an exponent: `("15", -1)` ->
/// `1.5`, `("12", 1)` -> `120`, `("5", -3)` -> `0.005`.
#[cold]
#[inline(never)]
pub fn plain_decimal(digits: &str, exponent: i32) -> String {
    if exponent >= 0 {
        let mut out = digits.to_string();
        out.extend(std::iter::repeat_n('0', exponent as usize));
        return out;
    }
    let point = digits.len() as i32 + exponent;
    if point > 0 {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    } else {
        let zeros: String = std::iter::repeat_n('0', point.unsigned_abs() as usize).collect();
        format!("0.{zeros}{digits}")
    }
}

/// `v` × 10^exponent, exact (correctly rounded) for |exponent| <= 22.
fn scale_by_pow10(v: f64, exponent: i32) -> f64 {
    if exponent >= 0 {
        v * pow10(exponent.unsigned_abs())
    } else {
        v / pow10(exponent.unsigned_abs())
    }
}

/// 10^n: exact up to 10^22, the largest power of ten a double holds exactly;
/// above, a few units in the last place off, and infinite above 10^308.
#[cold]
#[inline(never)]
pub fn pow10(n: u32) -> f64 {
    let mut pow = 1.0;
    let mut left = n;
    while left > 22 {
        pow *= 1e22;
        left -= 22;
    }
    let mut small = 1.0;
    for _ in 0..left {
        small *= 10.0;
    }
    pow * small
}

/// `text` escaped for a message, as `str::escape_debug` writes it (`quote`:
/// `'` too) or `{:?}` without its quotes: backslash, quotes, `\t` `\r` `\n` `\0`
/// and the other control characters (`\u{1}`). Other characters are written as
/// they are, where Rust would also escape unprintable and combining ones: that
/// keeps core's Unicode tables (about 5 KB) out of the `.wasm`.
#[cold]
#[inline(never)]
pub fn escape_text(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => out.push_str("\\0"),
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\'' if quote => out.push_str("\\'"),
            '\u{1}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Parses `1h`, `10m`, `30s`, `1h30m`, `365d`, `0s`: whole days (`d`, 24 hours),
/// hours (`h`), minutes (`m`) and seconds (`s`), in that order, at least one.
/// Returns milliseconds.
#[cold]
#[inline(never)]
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{}` is not a duration: use whole days, hours, minutes and seconds such as 30s, 10m, 1h30m or 365d", escape_text(text, true))
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit_ms = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => return Err(bad()),
        };
        // Units appear once each, largest first.
        if unit_ms >= last_unit {
            return Err(bad());
        }
        last_unit = unit_ms;
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(bad)?;
    }
    if number.is_some() {
        return Err(bad());
    }
    Ok(total)
}

/// Formats milliseconds the way durations are written: `1h30m`, `45s`, `0s`,
/// `365d`.
#[cold]
#[inline(never)]
pub fn format_duration(ms: u64) -> String {
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// Parses an RFC 3339 instant (`2026-12-01T09:00:00Z`, `2026-12-01T10:00:00.5+01:00`)
/// into unix milliseconds.
#[cold]
#[inline(never)]
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{}` is not an RFC 3339 time such as 2026-12-01T09:00:00Z",
            escape_text(text, true)
        )
    };
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = b.get(range).ok_or_else(bad)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        // Milliseconds: the first three fractional digits, padded.
        for k in 0..3 {
            let d = b
                .get(start + k)
                .filter(|_| start + k < i)
                .map_or(0, |d| d - b'0');
            millis = millis * 10 + i64::from(d);
        }
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = digits(i + 1..i + 3)? * 60 + digits(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return Err(bad()),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if year < 1970 || day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds, the inverse of
/// [`parse_rfc3339`]: `2026-12-01T09:00:00.000Z`.
#[cold]
#[inline(never)]
pub fn format_rfc3339(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm), the inverse of the day count [`parse_rfc3339`] computes.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_796_115_600_000; // 2026-12-01T09:00:00Z

    #[test]
    fn rfc3339_instants_parse_to_unix_millis() {
        assert_eq!(parse_rfc3339("2026-12-01T09:00:00Z"), Ok(START));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-01T10:00:00+01:00"), Ok(START));
        assert_eq!(parse_rfc3339("2026-12-01T08:30:00-00:30"), Ok(START));
        assert_eq!(parse_rfc3339("2026-12-01T09:00:00.25Z"), Ok(START + 250));
        assert_eq!(
            parse_rfc3339("2026-12-01t09:00:00.123456z"),
            Ok(START + 123)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T09:00:00",
            "2026-12-01T09:00Z",
            "2026-13-01T09:00:00Z",
            "2026-02-29T09:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T09:00:00.Z",
            "2026-12-01T09:00:00+0100",
            "2026-12-01T09:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "２026-12-01T09:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn formatting_is_the_inverse_of_parsing() {
        assert_eq!(format_rfc3339(START), "2026-12-01T09:00:00.000Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        for ms in [
            START + 123,
            1_709_164_800_999,
            951_782_400_000,
            4_102_444_799_000,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }
    }

    #[test]
    fn durations_parse_in_hours_minutes_seconds() {
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1h30m5s"), Ok(5_405_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("365d"), Ok(31_536_000_000));
        assert_eq!(parse_duration("2d12h"), Ok(216_000_000));
        assert_eq!(parse_duration("1d0h0m1s"), Ok(86_401_000));
        for bad in [
            "",
            "5",
            "s",
            "d",
            "1w",
            "1h1d",
            "1d1d",
            "1.5h",
            "30s1m",
            "1m1m",
            "-1s",
            "1 m",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(format_duration(5_405_000), "1h30m5s");
        assert_eq!(format_duration(600_000), "10m");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(31_536_000_000), "365d");
        assert_eq!(format_duration(90_000_000), "1d1h");
        for ms in [
            0,
            1_000,
            59_000,
            3_600_000,
            86_400_000,
            5_405_000,
            31_536_000_000,
        ] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }

    #[test]
    fn basis_points_format_as_percentages() {
        assert_eq!(format_basis_points(1000), "10");
        assert_eq!(format_basis_points(1025), "10.25");
        assert_eq!(format_basis_points(1050), "10.5");
        assert_eq!(format_basis_points(5), "0.05");
        assert_eq!(format_basis_points(0), "0");
    }

    #[test]
    fn numbers_are_written_as_rust_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut cases = vec![
            0.0, -0.0, 1.0, 120.0, 0.5, 1.125, 0.05, 1e-7, 1e21, 33.33, 100.5,
        ];
        for _ in 0..20_000 {
            // Up to 15 digits, scaled up to 1e21 or down to 1e-22 (one rounding
            // each, so that the shortest digits end at or above 10^-22).
            let width = 1 + next(15) as u32;
            let digits = next(10u64.pow(width)) as f64;
            cases.push(digits * pow10(next(7) as u32));
            cases.push(digits / pow10(next(23) as u32));
        }
        for v in cases {
            assert_eq!(format_number(v), format!("{v}"), "{v:e}");
            assert_eq!(format_number(-v), format!("{}", -v), "{v:e}");
        }
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "inf");
    }

    #[test]
    fn fixed_decimals_round_as_format_does_away_from_ties() {
        for (v, d, text) in [
            (5.0, 2, "5.00"),
            (0.0, 1, "0.0"),
            (12.345678, 2, "12.35"),
            (99.999, 1, "100.0"),
            (100.0 * 17.0 / 20.0, 2, "85.00"),
            (-0.004, 2, "0.00"),
            (-1.5, 1, "-1.5"),
            (7.0, 0, "7"),
        ] {
            assert_eq!(format_fixed(v, d), text);
        }
        for i in 0..10_000 {
            let v = f64::from(i) / 7.0;
            assert_eq!(format_fixed(v, 2), format!("{v:.2}"), "{v}");
        }
    }

    #[test]
    fn text_is_escaped_as_escape_debug_escapes_ascii() {
        let text = "a'b\"c\\d\n\t\r\0\u{1}\u{1f}\u{7f}\u{85} caf\u{e9} \u{1F600}";
        assert_eq!(escape_text(text, true), text.escape_debug().to_string());
        assert_eq!(
            format!("\"{}\"", escape_text(text, false)),
            format!("{text:?}")
        );
    }
}

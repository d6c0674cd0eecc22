//! Calendar arithmetic for the fake, hand-written so that `src/fake` depends on nothing else
//! in the crate: RFC 3339 formatting, `YYYY-MM-DD` parsing, and days since the Unix epoch
//! (the unit of the history's date filter; all UTC).

use std::time::{SystemTime, UNIX_EPOCH};

pub(super) const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the Unix epoch (negative before it).
pub(super) fn epoch_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The UTC day (days since 1970-01-01) of an epoch-ms instant.
pub(super) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number.
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DD` (a real calendar date) into its day number.
pub(super) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse::<i64>().ok())?
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `YYYY-MM-DD` of a day number.
pub(super) fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Formats a wall-clock time as RFC 3339 UTC with milliseconds, e.g.
/// `2026-11-22T01:20:00.123Z` (times before 1970 are clamped to the epoch).
pub fn rfc3339_millis(t: SystemTime) -> String {
    rfc3339_ms(epoch_ms(t).max(0))
}

/// RFC 3339 UTC with milliseconds of an epoch-ms instant.
pub(super) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        format_date(secs.div_euclid(86_400)),
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 123); // leap day 2000
        assert_eq!(rfc3339_millis(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_305_600_007);
        assert_eq!(rfc3339_millis(t), "2026-11-22T00:00:00.007Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_199);
        assert_eq!(rfc3339_millis(t), "2023-12-31T23:59:59.000Z");
    }

    #[test]
    fn dates_round_trip_and_reject_nonsense() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400_000 / MS_PER_DAY));
        assert_eq!(parse_date("2026-11-22"), Some(1_795_305_600_000 / MS_PER_DAY));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-10",
            "24-01-10x",
            "2024/01/10",
            "+024-01-10",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        for d in [-1000, 0, 19_000, 20_500] {
            assert_eq!(parse_date(&format_date(d)), Some(d));
        }
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(MS_PER_DAY), 1);
    }
}

//! Wall-clock formatting for humans and exports: RFC 3339 UTC from epoch milliseconds.

/// `2026-11-22T01:20:00.123Z` for `ms` since the Unix epoch.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_and_round_trips_with_the_parser() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        let ms = 1_795_310_400_123;
        let text = super::rfc3339(ms);
        let back = crate::api::error::parse_rfc3339(&text).unwrap();
        assert_eq!(
            back.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
            ms,
            "{text}"
        );
    }
}

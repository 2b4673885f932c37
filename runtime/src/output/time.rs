//! Times for people: RFC 3339 parsing, Docker's human durations ("About a minute"), "... ago",
//! Go's `time.Time.String` and Go duration strings. The civil-date arithmetic itself lives in
//! `mvm_rootfs::time`, which the image store and the engine use to write times.

use mvm_rootfs::time::{civil_from_days, days_from_civil};

/// Seconds since the epoch of an RFC 3339 timestamp (`...Z` or `±hh:mm`; a fraction of a
/// second is ignored), as Go's `time.Parse(time.RFC3339, ...)` reads Docker's times.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let t = s.get(r)?;
        // No sign or blank inside a field: `str::parse` would take "+1".
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse::<i64>().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Offset: skip fractional seconds, then Z or ±hh:mm.
    let rest = &s[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest.as_bytes().first() {
        None | Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Now, in whole seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds from the RFC 3339 time `t` to now: 0 when `t` is missing, unreadable or ahead.
pub fn since(t: Option<&str>) -> u64 {
    t.and_then(parse_rfc3339)
        .map_or(0, |t| u64::try_from(now_secs() - t).unwrap_or(0))
}

/// Docker's `units.HumanDuration`: "Less than a second", "5 seconds", "About a minute",
/// "3 minutes", "About an hour", "5 hours", "3 days", "2 weeks", "3 months", "2 years".
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    // Go rounds the hours (d.Hours() + 0.5) but truncates minutes and years.
    let hours = (secs as f64 / 3600.0 + 0.5) as u64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", secs / 3600 / 24 / 365)
    }
}

/// "5 minutes ago", as Docker's `CREATED` and `Exited (0) ... ago` columns.
pub fn ago(secs: u64) -> String {
    format!("{} ago", human_duration(secs))
}

/// Go's `time.Time.String()` of a UTC time, as Docker's `CreatedAt` columns print it:
/// `2026-12-07 05:31:44 +0000 UTC`.
pub fn go_utc(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A Go-style duration (`1h30m`, `10m`, `45s`, `500ms`, `1.5h`) in seconds; a bare number
/// has no unit and is not one.
pub fn parse_go_duration(v: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A point in time given as Docker's `--since`/`--until` take it: an RFC 3339 time, Unix
/// seconds (`1700000000[.5]`), or a duration before now (`10m`, `1h30m`, `45s`); seconds
/// since the epoch.
pub fn point_in_time(v: &str, flag: &str) -> Result<f64, crate::error::CliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let bad = || {
        crate::error::CliError::usage(format!(
            "invalid value for --{flag}: {v:?} (use e.g. 2026-12-01T10:00:00Z, 1700000000 or 10m)"
        ))
    };
    let secs: f64 = if let Some(d) = parse_go_duration(v) {
        now.as_secs_f64() - d
    } else if let Ok(n) = v.parse::<f64>() {
        n
    } else {
        parse_rfc3339(v).ok_or_else(bad)? as f64
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(secs)
}

/// Go's RFC 3339 with nanoseconds of a UTC time (`2026-12-07T19:20:16.123456789Z`, trailing
/// zeros of the fraction dropped), as `docker events` prints times.
pub fn rfc3339_nano(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let mut f = format!("{frac:09}");
    while f.ends_with('0') {
        f.pop();
    }
    let dot = if f.is_empty() {
        String::new()
    } else {
        format!(".{f}")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{dot}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.000000005Z"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T01:00:00+01:00"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2000-02-28T23:00:00-01:00"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        // The day after a leap day, and a century year that is not a leap year.
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(
            parse_rfc3339("2100-03-01T00:00:00Z").unwrap()
                - parse_rfc3339("2100-02-28T00:00:00Z").unwrap(),
            86_400
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T00:00:00Z").unwrap()
                - parse_rfc3339("2024-02-28T00:00:00Z").unwrap(),
            2 * 86_400
        );
    }

    #[test]
    fn rfc3339_round_trips_with_the_formatter() {
        for secs in [
            0,
            59,
            951_782_399,
            951_782_400,
            1_795_000_000,
            4_107_542_400,
        ] {
            let s = mvm_rootfs::time::rfc3339(secs, 120_000_000);
            assert_eq!(parse_rfc3339(&s), Some(secs as i64), "{s}");
        }
    }

    #[test]
    fn bad_rfc3339_is_refused() {
        for bad in [
            "",
            "nope",
            "2000-02-29",
            "2000-02-29T00:00:00X",
            "2000/02/29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-02-29T24:00:00Z",
            "2000-0+-29T00:00:00Z",
            "2000-02-29T00:00:00+1",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn human_durations_as_docker() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (2, "2 seconds"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (90, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            // Hours round: 1.5 hours is "2 hours" in Docker.
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600 - 1801, "47 hours"),
            (48 * 3600, "2 days"),
            (3 * 86_400, "3 days"),
            (14 * 86_400 - 1801, "13 days"),
            (14 * 86_400, "2 weeks"),
            (20 * 86_400, "2 weeks"),
            (60 * 86_400, "2 months"),
            (730 * 86_400, "2 years"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
        assert_eq!(ago(600), "10 minutes ago");
    }

    #[test]
    fn since_never_goes_negative() {
        assert_eq!(since(None), 0);
        assert_eq!(since(Some("bad")), 0);
        assert_eq!(since(Some("2999-01-01T00:00:00Z")), 0);
        assert!(since(Some("1970-01-01T00:00:00Z")) > 1_700_000_000);
    }

    #[test]
    fn go_time_strings() {
        assert_eq!(go_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_utc(951_782_400 + 3661), "2000-02-29 01:01:01 +0000 UTC");
        assert_eq!(go_utc(-1), "1969-12-31 23:59:59 +0000 UTC");
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_go_duration("45s"), Some(45.0));
        assert_eq!(parse_go_duration("500ms"), Some(0.5));
        assert_eq!(parse_go_duration("1.5h"), Some(5400.0));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("h"), None);
    }
}

//! `HEALTHCHECK` arguments: the type word, the timing flags and Go-style durations.

use std::time::Duration;

use super::ast::{Healthcheck, HealthcheckCmd};
use super::instruction::maybe_json;
use super::words::{FlagKind, Flags};

const FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

/// Parses `HEALTHCHECK`'s flags and arguments; errors are one line, without the line number.
pub(crate) fn parse(raw_flags: &[String], rest: &str) -> Result<Healthcheck, String> {
    let flags = Flags::parse(raw_flags, FLAGS)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let (typ, cmd) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(t, c)| (t, c.trim_start()));
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !cmd.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            if cmd.is_empty() {
                return Err("Missing command after HEALTHCHECK CMD".into());
            }
            let test = maybe_json(cmd)?;
            let interval = |name: &str| -> Result<Option<Duration>, String> {
                flags
                    .string(name)
                    .map(|v| parse_interval(name, &v))
                    .transpose()
            };
            let retries = match flags.string("retries") {
                None => None,
                Some(v) => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid --retries value {v:?}"))?;
                    if n < 0 {
                        return Err("--retries cannot be negative".into());
                    }
                    Some(u32::try_from(n).map_err(|_| format!("--retries {n} is too large"))?)
                }
            };
            Ok(Healthcheck::Cmd(HealthcheckCmd {
                test,
                interval: interval("interval")?,
                timeout: interval("timeout")?,
                start_period: interval("start-period")?,
                start_interval: interval("start-interval")?,
                retries,
            }))
        }
        _ => Err(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)")),
    }
}

/// Docker refuses negative intervals and non-zero ones under a millisecond.
fn parse_interval(flag: &str, value: &str) -> Result<Duration, String> {
    let (negative, d) =
        parse_go_duration(value).ok_or_else(|| format!("invalid --{flag} duration {value:?}"))?;
    if negative && !d.is_zero() {
        return Err(format!("Interval {flag:?} cannot be negative"));
    }
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(format!("Interval {flag:?} cannot be less than 1ms"));
    }
    Ok(d)
}

/// Go's `time.ParseDuration`: `[-+]` then `<decimal><unit>` repeated (`1h30m`, `1.5s`,
/// `250ms`), or a bare `0`. Returns the sign separately.
pub(crate) fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per;
        rest = tail;
    }
    // Go's duration is an int64 of nanoseconds.
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    Some((negative, Duration::from_nanos(total as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s).map(|(n, d)| (n, d.as_millis()));
        assert_eq!(d("30s"), Some((false, 30_000)));
        assert_eq!(d("1m30s"), Some((false, 90_000)));
        assert_eq!(d("1.5h"), Some((false, 5_400_000)));
        assert_eq!(d("250ms"), Some((false, 250)));
        assert_eq!(d("0"), Some((false, 0)));
        assert_eq!(d("-5s"), Some((true, 5_000)));
        assert_eq!(d("5"), None);
        assert_eq!(d("s"), None);
        assert_eq!(d("1.2.3s"), None);
        assert_eq!(d(""), None);
        assert_eq!(d("99999999999999h"), None);
    }

    #[test]
    fn interval_limits() {
        assert_eq!(
            parse_interval("interval", "-1s").unwrap_err(),
            "Interval \"interval\" cannot be negative"
        );
        assert_eq!(
            parse_interval("timeout", "10us").unwrap_err(),
            "Interval \"timeout\" cannot be less than 1ms"
        );
        assert_eq!(parse_interval("timeout", "0").unwrap(), Duration::ZERO);
    }
}

//! Sizes for people, as Docker's `go-units` prints them.

/// Docker's `units.HumanSize`: decimal units, three significant digits (`4.26MB`).
pub fn human_size(bytes: u64) -> String {
    human_size_with_precision(bytes, 3)
}

/// Docker's `units.HumanSizeWithPrecision(size, precision)`: decimal units, `precision`
/// significant digits (`%.<precision>g`).
pub fn human_size_with_precision(bytes: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // %.Ng without an exponent: digits after the point so that N are significant, trailing
    // zeros dropped.
    let int_digits = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let decimals = precision.saturating_sub(int_digits);
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[i])
}

/// Binary units with two decimals, as `docker stats` prints memory: `12.50MiB`, `512B`.
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_sizes_as_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1001), "1kB");
        assert_eq!(human_size(1024), "1.02kB");
        assert_eq!(human_size(862_000), "862kB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(4_000_000), "4MB");
        assert_eq!(human_size(12_340_000), "12.3MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(human_size(u64::MAX), "18.4EB");
    }

    #[test]
    fn decimal_sizes_with_precision() {
        assert_eq!(human_size_with_precision(0, 4), "0B");
        assert_eq!(human_size_with_precision(4_261_000, 4), "4.261MB");
        assert_eq!(human_size_with_precision(12_345_678, 4), "12.35MB");
        assert_eq!(human_size_with_precision(1000, 4), "1kB");
    }

    #[test]
    fn binary_sizes_as_docker_stats() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536 << 10), "1.50MiB");
        assert_eq!(binary_size(1000), "1000B");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(1024), "1.00KiB");
        assert_eq!(binary_size(1536), "1.50KiB");
        assert_eq!(binary_size(512 << 20), "512.00MiB");
        assert_eq!(binary_size((1 << 30) - 1), "1024.00MiB");
        assert_eq!(binary_size(1 << 30), "1.00GiB");
        assert_eq!(binary_size(3 << 40), "3.00TiB");
        assert_eq!(binary_size(2048 << 40), "2048.00TiB");
    }
}

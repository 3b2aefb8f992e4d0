//! Parsing of option values that clap cannot check by itself: `--workload w1..w5|SIZE`,
//! message sizes with unit suffixes, and bounded numbers.

use std::fmt;

use homa_eval::workload::Workload;

/// Largest Homa message (`HOMA_MAX_MESSAGE_LENGTH`).
pub(crate) const MAX_MESSAGE: u32 = homa_proto::wire::MAX_MESSAGE_LENGTH;

/// What the loaded run sends: one of the papers' workloads (capped at 1,000,000 bytes,
/// as the Linux module's benchmark samples it) or every message of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkloadSpec {
    /// W1 … W5.
    Named(Workload),
    /// Every request (and response) has this many bytes.
    Fixed(u32),
}

impl fmt::Display for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadSpec::Named(w) => write!(f, "{w}"),
            WorkloadSpec::Fixed(size) => write!(f, "{size}"),
        }
    }
}

/// Parses `--workload`: `w1` … `w5` (any case) or a message size (see [`parse_size`]).
pub(crate) fn parse_workload(s: &str) -> Result<WorkloadSpec, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with('w') {
        return lower.parse::<Workload>().map(WorkloadSpec::Named).map_err(|_| {
            format!(
                "unknown workload `{t}`: expected w1, w2, w3, w4, w5 or a message size such as 1000 or 64K"
            )
        });
    }
    parse_size(t).map(WorkloadSpec::Fixed)
}

/// Parses a message size in bytes: a positive integer, optionally with a decimal suffix
/// `K`/`KB` (×1000) or `M`/`MB` (×1,000,000), or `KiB` (×1024); at most 1,000,000.
pub(crate) fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        other => {
            return Err(format!(
                "`{t}` is not a message size: unknown unit `{other}` (use B, K, KB, KiB, M or MB)"
            ))
        }
    };
    if digits.is_empty() {
        return Err(format!(
            "`{t}` is not a message size: expected a number of bytes such as 1000 or 64K"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{t}` is not a message size: number too large"))?;
    let bytes = n.saturating_mul(multiplier);
    if bytes == 0 {
        return Err("message size must be at least 1 byte".into());
    }
    if bytes > u64::from(MAX_MESSAGE) {
        return Err(format!(
            "message size {bytes} is too large: Homa messages hold at most {MAX_MESSAGE} bytes"
        ));
    }
    Ok(bytes as u32)
}

/// Parses a load: a fraction of the nominal link rate, `0 < load <= 10`.
pub(crate) fn parse_load(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number (the load is a fraction such as 0.5)"))?;
    if !(v > 0.0 && v <= 10.0) {
        return Err(format!(
            "load {v} is out of range: it is a fraction of the link rate, above 0 and at most 10"
        ));
    }
    Ok(v)
}

/// Parses a positive finite number (seconds, Gbit/s).
pub(crate) fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{v} must be a positive number"));
    }
    if v > 1e6 {
        return Err(format!("{v} is too large"));
    }
    Ok(v)
}

/// Parses a thread count, 1..=64.
pub(crate) fn parse_threads(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if !(1..=64).contains(&v) {
        return Err(format!("{v} is out of range: 1..=64"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_workloads() {
        assert_eq!(parse_workload("w1"), Ok(WorkloadSpec::Named(Workload::W1)));
        assert_eq!(parse_workload("W5"), Ok(WorkloadSpec::Named(Workload::W5)));
        assert_eq!(
            parse_workload(" w4 "),
            Ok(WorkloadSpec::Named(Workload::W4))
        );
        assert!(parse_workload("w6")
            .unwrap_err()
            .contains("unknown workload"));
        assert!(parse_workload("w").is_err());
        assert!(parse_workload("w44").is_err());
    }

    #[test]
    fn fixed_size_workloads() {
        assert_eq!(parse_workload("100"), Ok(WorkloadSpec::Fixed(100)));
        assert_eq!(parse_workload("10K"), Ok(WorkloadSpec::Fixed(10_000)));
        assert_eq!(parse_workload("10kb"), Ok(WorkloadSpec::Fixed(10_000)));
        assert_eq!(parse_workload("64KiB"), Ok(WorkloadSpec::Fixed(65_536)));
        assert_eq!(parse_workload("1M"), Ok(WorkloadSpec::Fixed(1_000_000)));
        assert_eq!(
            parse_workload("1000000"),
            Ok(WorkloadSpec::Fixed(1_000_000))
        );
        assert_eq!(parse_workload("7 B"), Ok(WorkloadSpec::Fixed(7)));
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        for bad in [
            "0",
            "",
            "K",
            "-5",
            "1.5K",
            "2M",
            "1000001",
            "99999999999999999999999",
            "12GB",
            "abc",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("2M").unwrap_err().contains("at most 1000000"));
        assert!(parse_size("18446744073709551615M").is_err());
    }

    #[test]
    fn loads_and_counts() {
        assert_eq!(parse_load("0.5"), Ok(0.5));
        assert!(parse_load("0").is_err());
        assert!(parse_load("-1").is_err());
        assert!(parse_load("NaN").is_err());
        assert!(parse_load("x").is_err());
        assert_eq!(parse_threads("3"), Ok(3));
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("65").is_err());
        assert!(parse_positive("inf").is_err());
        assert_eq!(parse_positive("2.5"), Ok(2.5));
    }
}

//! Message-length distributions: the five workloads of the Homa papers.
//!
//! | workload | source | mean (raw) | mean (capped) |
//! |---|---|---|---|
//! | W1 | Facebook memcached | 189 B | 193 B |
//! | W2 | Google search RPC | 442 B | 441 B |
//! | W3 | Google, all RPCs | 2.93 KB | 2.57 KB |
//! | W4 | Facebook Hadoop | 128 KB | 61 KB |
//! | W5 | DCTCP web search | 2.56 MB | 386 KB |
//!
//! The files (`crates/homa-eval/workloads/wN.txt` and `wN_cp_node.txt`, copied from the
//! Linux module's `util/dist.cc`; see the README there) are embedded with
//! [`include_str!`], so nothing is read at run time. The *raw* files are the papers'
//! distributions (W2–W5 contain messages larger than 1,000,000 bytes, Homa's maximum
//! message length); the *capped* files are those the Linux module's benchmark samples:
//! bucketed, with every length of 1,000,000 bytes or more collapsed to 1,000,000. Runs
//! over real sockets use the capped files; the simulator may use the raw ones.
//!
//! Sampling (as the files' README says): draw `u` uniformly in `[0, 1)` and take the
//! first point whose cdf is `>= u`.
//!
//! ```
//! use homa_eval::workload::{Distribution, Workload};
//!
//! let w: Workload = "W4".parse().unwrap();
//! assert_eq!(w, Workload::W4);
//! assert_eq!(w.to_string(), "w4");
//! let raw = Distribution::of(w, false);
//! let capped = Distribution::of(w, true);
//! assert_eq!(raw.max(), 10_000_000);
//! assert_eq!(capped.max(), 1_000_000);
//! assert!((raw.mean() / 1000.0 - 128.0).abs() < 1.0);
//! assert_eq!(raw.sample(0.0), 53);
//! ```

use core::fmt;
use core::str::FromStr;

/// One of the five workloads of the Homa papers.
///
/// Parsed from `"w1"` … `"w5"` (case-insensitive) and displayed as `"w1"` … `"w5"`.
///
/// ```
/// use homa_eval::workload::Workload;
/// assert_eq!("w3".parse::<Workload>(), Ok(Workload::W3));
/// assert!("w6".parse::<Workload>().is_err());
/// assert_eq!(Workload::ALL.len(), 5);
/// assert_eq!(Workload::W1.description(), "Facebook memcached");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// Facebook memcached (mean 189 B).
    W1,
    /// Google search RPC (mean 442 B).
    W2,
    /// Google, all RPCs (mean 2.93 KB).
    W3,
    /// Facebook Hadoop (mean 128 KB raw, 61 KB capped).
    W4,
    /// DCTCP web search (mean 2.56 MB raw, 386 KB capped).
    W5,
}

impl Workload {
    /// All five workloads, in order.
    pub const ALL: [Workload; 5] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
    ];

    /// The short name, `"w1"` … `"w5"`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
        }
    }

    /// Where the distribution was measured, as the papers name it.
    pub fn description(self) -> &'static str {
        match self {
            Workload::W1 => "Facebook memcached",
            Workload::W2 => "Google search RPC",
            Workload::W3 => "Google, all RPCs",
            Workload::W4 => "Facebook Hadoop",
            Workload::W5 => "DCTCP web search",
        }
    }

    /// The embedded text of the workload's file: `wN.txt` (raw) or `wN_cp_node.txt`
    /// (`capped`).
    pub fn file_text(self, capped: bool) -> &'static str {
        match (self, capped) {
            (Workload::W1, false) => include_str!("../workloads/w1.txt"),
            (Workload::W2, false) => include_str!("../workloads/w2.txt"),
            (Workload::W3, false) => include_str!("../workloads/w3.txt"),
            (Workload::W4, false) => include_str!("../workloads/w4.txt"),
            (Workload::W5, false) => include_str!("../workloads/w5.txt"),
            (Workload::W1, true) => include_str!("../workloads/w1_cp_node.txt"),
            (Workload::W2, true) => include_str!("../workloads/w2_cp_node.txt"),
            (Workload::W3, true) => include_str!("../workloads/w3_cp_node.txt"),
            (Workload::W4, true) => include_str!("../workloads/w4_cp_node.txt"),
            (Workload::W5, true) => include_str!("../workloads/w5_cp_node.txt"),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWorkload(pub String);

impl fmt::Display for UnknownWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown workload {:?} (expected w1, w2, w3, w4 or w5)",
            self.0
        )
    }
}

impl std::error::Error for UnknownWorkload {}

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Workload, UnknownWorkload> {
        match s.trim().to_ascii_lowercase().as_str() {
            "w1" => Ok(Workload::W1),
            "w2" => Ok(Workload::W2),
            "w3" => Ok(Workload::W3),
            "w4" => Ok(Workload::W4),
            "w5" => Ok(Workload::W5),
            _ => Err(UnknownWorkload(s.to_owned())),
        }
    }
}

/// What is wrong with a line of a distribution file.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseErrorKind {
    /// The line does not have exactly two fields, `size_bytes cdf`.
    FieldCount(usize),
    /// The size is not an integer in `1..=u32::MAX`.
    BadSize(String),
    /// The cdf is not a number in `[0, 1]`.
    BadCdf(String),
    /// The size is not larger than the previous line's.
    SizeNotIncreasing {
        /// The previous line's size.
        previous: u32,
    },
    /// The cdf is smaller than the previous line's.
    CdfDecreasing {
        /// The previous line's cdf.
        previous: f64,
    },
    /// The last point's cdf is not 1 (within 1e-6).
    DoesNotReachOne(f64),
    /// The text holds no points.
    Empty,
}

/// A distribution file that could not be parsed: which line (1-based; 0 for problems of
/// the whole text) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line number, or 0 when the problem is not on one line.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        match &self.kind {
            ParseErrorKind::FieldCount(n) => {
                write!(f, "expected 2 fields `size_bytes cdf`, found {n}")
            }
            ParseErrorKind::BadSize(s) => {
                write!(f, "size {s:?} is not an integer in 1..=4294967295")
            }
            ParseErrorKind::BadCdf(s) => write!(f, "cdf {s:?} is not a number in [0, 1]"),
            ParseErrorKind::SizeNotIncreasing { previous } => {
                write!(
                    f,
                    "size is not larger than the previous line's ({previous})"
                )
            }
            ParseErrorKind::CdfDecreasing { previous } => {
                write!(f, "cdf is smaller than the previous line's ({previous})")
            }
            ParseErrorKind::DoesNotReachOne(c) => write!(f, "the last cdf is {c}, not 1"),
            ParseErrorKind::Empty => write!(f, "no `size_bytes cdf` lines"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A message-length distribution: points `(size in bytes, cumulative fraction)` with
/// strictly increasing sizes and non-decreasing cdf ending at 1.
///
/// A point `(s, c)` means: a fraction `c` of messages are at most `s` bytes long, and
/// the messages between the previous point and this one are all exactly `s` bytes long
/// (the distribution is discrete).
///
/// ```
/// use homa_eval::workload::Distribution;
/// let d = Distribution::parse("# comment\n100 0.5\n1000 1.0\n").unwrap();
/// assert_eq!(d.points(), &[(100, 0.5), (1000, 1.0)]);
/// assert_eq!(d.mean(), 550.0);
/// assert_eq!(d.sample(0.5), 100);
/// assert_eq!(d.sample(0.51), 1000);
/// assert_eq!(d.cdf_at(999), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    points: Vec<(u32, f64)>,
}

impl Distribution {
    /// The embedded distribution of `workload`: the raw file, or the file capped at
    /// 1,000,000 bytes (`capped`).
    pub fn of(workload: Workload, capped: bool) -> Distribution {
        Distribution::parse(workload.file_text(capped))
            .expect("embedded workload files are valid (checked by unit tests)")
    }

    /// Every message is `size` bytes long.
    ///
    /// ```
    /// use homa_eval::workload::Distribution;
    /// let d = Distribution::fixed(500);
    /// assert_eq!((d.sample(0.3), d.mean(), d.max()), (500, 500.0, 500));
    /// ```
    pub fn fixed(size: u32) -> Distribution {
        Distribution {
            points: vec![(size, 1.0)],
        }
    }

    /// Builds a distribution from points, checked as [`parse`](Distribution::parse)
    /// checks lines (the error's `line` is the 1-based index of the point).
    pub fn from_points(points: Vec<(u32, f64)>) -> Result<Distribution, ParseError> {
        if points.is_empty() {
            return Err(ParseError {
                line: 0,
                kind: ParseErrorKind::Empty,
            });
        }
        for (i, &(size, cdf)) in points.iter().enumerate() {
            let err = |kind| Err(ParseError { line: i + 1, kind });
            if size == 0 {
                return err(ParseErrorKind::BadSize(size.to_string()));
            }
            if !(0.0..=1.0 + 1e-9).contains(&cdf) {
                return err(ParseErrorKind::BadCdf(cdf.to_string()));
            }
            if i > 0 {
                let (ps, pc) = points[i - 1];
                if size <= ps {
                    return err(ParseErrorKind::SizeNotIncreasing { previous: ps });
                }
                if cdf < pc {
                    return err(ParseErrorKind::CdfDecreasing { previous: pc });
                }
            }
        }
        let last = points[points.len() - 1].1;
        if (last - 1.0).abs() > 1e-6 {
            return Err(ParseError {
                line: 0,
                kind: ParseErrorKind::DoesNotReachOne(last),
            });
        }
        Ok(Distribution { points })
    }

    /// Parses the workload files' format: lines `size_bytes cdf` separated by
    /// whitespace; blank lines and lines starting with `#` are ignored.
    ///
    /// ```
    /// use homa_eval::workload::{Distribution, ParseErrorKind};
    /// let e = Distribution::parse("10 0.5\n5 1.0\n").unwrap_err();
    /// assert_eq!(e.line, 2);
    /// assert_eq!(e.kind, ParseErrorKind::SizeNotIncreasing { previous: 10 });
    /// assert_eq!(e.to_string(), "line 2: size is not larger than the previous line's (10)");
    /// ```
    pub fn parse(text: &str) -> Result<Distribution, ParseError> {
        let mut points: Vec<(u32, f64)> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let err = |kind| ParseError {
                line: line_no,
                kind,
            };
            if fields.len() != 2 {
                return Err(err(ParseErrorKind::FieldCount(fields.len())));
            }
            let size: u32 = match fields[0].parse() {
                Ok(s) if s > 0 => s,
                _ => return Err(err(ParseErrorKind::BadSize(fields[0].to_owned()))),
            };
            let cdf: f64 = match fields[1].parse::<f64>() {
                Ok(c) if (0.0..=1.0 + 1e-9).contains(&c) => c,
                _ => return Err(err(ParseErrorKind::BadCdf(fields[1].to_owned()))),
            };
            points.push((size, cdf));
            lines.push(line_no);
        }
        Distribution::from_points(points).map_err(|mut e| {
            if e.line > 0 {
                e.line = lines[e.line - 1];
            }
            e
        })
    }

    /// The points `(size, cdf)`.
    pub fn points(&self) -> &[(u32, f64)] {
        &self.points
    }

    /// A message length for `u` drawn uniformly from `[0, 1)`: the size of the first
    /// point whose cdf is `>= u` (the largest size if `u` exceeds every cdf).
    pub fn sample(&self, u: f64) -> u32 {
        let i = self.points.partition_point(|&(_, c)| c < u);
        self.points
            .get(i)
            .map_or_else(|| self.max(), |&(size, _)| size)
    }

    /// The mean message length in bytes.
    pub fn mean(&self) -> f64 {
        let mut prev = 0.0;
        let mut sum = 0.0;
        for &(size, cdf) in &self.points {
            sum += f64::from(size) * (cdf - prev);
            prev = cdf;
        }
        sum / prev
    }

    /// The largest message length.
    pub fn max(&self) -> u32 {
        self.points[self.points.len() - 1].0
    }

    /// The smallest message length.
    pub fn min(&self) -> u32 {
        self.points[0].0
    }

    /// The smallest size whose cdf is `>= f` (the largest size if none is).
    ///
    /// ```
    /// use homa_eval::workload::{Distribution, Workload};
    /// let w1 = Distribution::of(Workload::W1, false);
    /// assert_eq!(w1.size_at_fraction(0.1), 8); // 31 % of W1's messages are 8 bytes
    /// assert_eq!(w1.size_at_fraction(1.0), 100_000);
    /// ```
    pub fn size_at_fraction(&self, f: f64) -> u32 {
        self.sample(f)
    }

    /// The fraction of messages at most `size` bytes long.
    pub fn cdf_at(&self, size: u32) -> f64 {
        let i = self.points.partition_point(|&(s, _)| s <= size);
        if i == 0 {
            0.0
        } else {
            self.points[i - 1].1
        }
    }

    /// The upper size of "short messages", BENCHMARKING.md's shortest 10 % of messages:
    /// [`size_at_fraction(0.1)`](Distribution::size_at_fraction). A message is short when
    /// its length is at most this; when many messages share the length at the 10 % point
    /// (W1: 31 % are 8 bytes) all of them count as short, since they cannot be told apart.
    pub fn short_threshold(&self) -> u32 {
        self.size_at_fraction(0.1)
    }

    /// The same distribution with every size above `cap` replaced by `cap` (the
    /// probability mass of the larger sizes moves to `cap`).
    ///
    /// ```
    /// use homa_eval::workload::{Distribution, Workload};
    /// let d = Distribution::of(Workload::W5, false).capped_at(1_000_000);
    /// assert_eq!(d.max(), 1_000_000);
    /// ```
    pub fn capped_at(&self, cap: u32) -> Distribution {
        let mut points: Vec<(u32, f64)> = Vec::new();
        for &(size, cdf) in &self.points {
            if size < cap {
                points.push((size, cdf));
            }
        }
        points.push((cap.max(1), 1.0));
        Distribution { points }
    }

    /// The fraction of messages longer than `size` bytes.
    pub fn fraction_above(&self, size: u32) -> f64 {
        1.0 - self.cdf_at(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_parses_and_means_match_readme() {
        // (workload, raw mean, capped mean) from the workloads' README.
        let expected = [
            (Workload::W1, 189.0, 193.0),
            (Workload::W2, 442.0, 441.0),
            (Workload::W3, 2930.0, 2570.0),
            (Workload::W4, 128e3, 61e3),
            (Workload::W5, 2.56e6, 386e3),
        ];
        for (w, raw, capped) in expected {
            let r = Distribution::of(w, false);
            let c = Distribution::of(w, true);
            assert!(
                (r.mean() - raw).abs() / raw < 0.01,
                "{w} raw mean {}",
                r.mean()
            );
            assert!(
                (c.mean() - capped).abs() / capped < 0.01,
                "{w} capped mean {}",
                c.mean()
            );
            assert!(c.max() <= 1_000_000);
            assert_eq!(r.min(), c.min());
        }
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.to_string().parse::<Workload>().unwrap(), w);
            assert_eq!(w.to_string().to_uppercase().parse::<Workload>().unwrap(), w);
        }
        let e = "x".parse::<Workload>().unwrap_err();
        assert!(e.to_string().contains("\"x\""));
    }

    #[test]
    fn sampling_takes_first_point_with_cdf_at_least_u() {
        let d = Distribution::parse("10 0.25\n20 0.25\n30 0.75\n40 1").unwrap();
        assert_eq!(d.sample(0.0), 10);
        assert_eq!(d.sample(0.25), 10);
        assert_eq!(d.sample(0.2500001), 30);
        assert_eq!(d.sample(0.75), 30);
        assert_eq!(d.sample(0.99), 40);
        assert_eq!(d.sample(1.5), 40);
        assert_eq!(d.cdf_at(9), 0.0);
        assert_eq!(d.cdf_at(25), 0.25);
        assert_eq!(d.cdf_at(40), 1.0);
        assert_eq!(d.fraction_above(30), 0.25);
    }

    #[test]
    fn sampled_mean_approaches_mean() {
        let d = Distribution::of(Workload::W3, true);
        let n = 200_000;
        let sum: f64 = (0..n)
            .map(|i| f64::from(d.sample((f64::from(i) + 0.5) / f64::from(n))))
            .sum();
        let m = sum / f64::from(n);
        assert!(
            (m - d.mean()).abs() / d.mean() < 0.01,
            "{m} vs {}",
            d.mean()
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: [(&str, usize, ParseErrorKind); 7] = [
            ("# c\n\n10 0.5 7\n", 3, ParseErrorKind::FieldCount(3)),
            ("x 0.5\n", 1, ParseErrorKind::BadSize("x".into())),
            ("0 0.5\n", 1, ParseErrorKind::BadSize("0".into())),
            ("10 1.5\n", 1, ParseErrorKind::BadCdf("1.5".into())),
            (
                "10 0.6\n# c\n20 0.5\n",
                3,
                ParseErrorKind::CdfDecreasing { previous: 0.6 },
            ),
            ("10 0.6\n", 0, ParseErrorKind::DoesNotReachOne(0.6)),
            ("# only\n", 0, ParseErrorKind::Empty),
        ];
        for (text, line, kind) in cases {
            let e = Distribution::parse(text).unwrap_err();
            assert_eq!((e.line, e.kind.clone()), (line, kind), "{text:?}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn capping_moves_mass_to_the_cap() {
        let d = Distribution::parse("10 0.5\n100 0.8\n1000 1").unwrap();
        let c = d.capped_at(50);
        assert_eq!(c.points(), &[(10, 0.5), (50, 1.0)]);
        let same = d.capped_at(1000);
        assert_eq!(same, d);
        assert_eq!(Distribution::fixed(7).short_threshold(), 7);
    }
}

//! Percentiles, per-size-bucket latency and slowdown, short-message slowdown.
//!
//! A [`Samples`] collects one `(message size, latency, baseline)` triple per measured
//! message, all in nanoseconds. The *slowdown* of a message is `latency / baseline`,
//! where the caller chooses the baseline (BENCHMARKING.md: `homa bench` uses the
//! unloaded RTT of the same length, `homa sim` the ideal time on an idle network) and
//! says in its report which one it used.
//!
//! Messages are grouped into buckets by size: bucket `i` holds the messages with
//! `edges[i-1] < size <= edges[i]` (its `max_size` is `edges[i]`). [`default_buckets`]
//! picks edges from a distribution so that buckets hold similar fractions of messages.
//!
//! ```
//! use homa_eval::stats::{percentile, Samples};
//!
//! assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
//!
//! let mut s = Samples::new();
//! s.push(100, 3_000.0, 1_000.0); // slowdown 3
//! s.push(100, 1_000.0, 1_000.0); // slowdown 1
//! s.push(5_000, 20_000.0, 10_000.0); // slowdown 2
//! let b = s.buckets(&[1000, 10_000]);
//! assert_eq!(b.len(), 2);
//! assert_eq!((b[0].max_size, b[0].count, b[0].p99_slowdown), (1000, 2, 3.0));
//! assert_eq!((b[1].max_size, b[1].count, b[1].p50_us), (10_000, 1, 20.0));
//! ```

use crate::workload::Distribution;

/// The `p`-th percentile (`p` in percent, 0..=100) of `sorted` (ascending) by the
/// **nearest-rank** method: the value at rank `ceil(p / 100 × n)` (1-based, at least 1).
/// No interpolation, so the result is always one of the samples. Returns NaN for an
/// empty slice.
///
/// ```
/// use homa_eval::stats::percentile;
/// let v: Vec<f64> = (1..=1000).map(f64::from).collect();
/// assert_eq!(percentile(&v, 50.0), 500.0);
/// assert_eq!(percentile(&v, 99.0), 990.0);
/// assert_eq!(percentile(&v, 99.9), 999.0);
/// assert_eq!(percentile(&v, 100.0), 1000.0);
/// assert_eq!(percentile(&v, 0.0), 1.0);
/// assert!(percentile(&[], 50.0).is_nan());
/// ```
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    // Rounding guard: 99.9 % of 1000 must be rank 999, not 1000 because of 999.0000001.
    let rank = (p / 100.0 * n as f64 - 1e-9).ceil();
    let rank = if rank.is_nan() {
        1
    } else {
        (rank as usize).clamp(1, n)
    };
    sorted[rank - 1]
}

/// Latency and slowdown statistics of the messages in one size bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStats {
    /// The largest message length that belongs to the bucket (its upper edge).
    pub max_size: u32,
    /// How many messages are in the bucket.
    pub count: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th-percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th-percentile latency, µs.
    pub p999_us: f64,
    /// Median slowdown (latency / baseline).
    pub p50_slowdown: f64,
    /// 99th-percentile slowdown.
    pub p99_slowdown: f64,
    /// The fraction of all measured messages at most `max_size` bytes long (the x
    /// position of the bucket in the papers' figure).
    pub cumulative_fraction: f64,
}

/// Slowdown statistics of the short messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortStats {
    /// The largest length counted as short.
    pub max_size: u32,
    /// How many short messages were measured.
    pub count: u64,
    /// Median slowdown of short messages.
    pub p50_slowdown: f64,
    /// 99th-percentile slowdown of short messages.
    pub p99_slowdown: f64,
}

/// One measured message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Message length, bytes.
    pub size: u32,
    /// Measured latency, ns.
    pub latency_ns: f64,
    /// Baseline (unloaded or ideal) latency for this size, ns.
    pub baseline_ns: f64,
}

impl Sample {
    /// `latency_ns / baseline_ns`.
    pub fn slowdown(&self) -> f64 {
        self.latency_ns / self.baseline_ns
    }
}

/// A collector of measured messages; see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    samples: Vec<Sample>,
}

impl Samples {
    /// An empty collector.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Records a message of `size` bytes that took `latency_ns`, against a baseline of
    /// `baseline_ns` for its size.
    pub fn push(&mut self, size: u32, latency_ns: f64, baseline_ns: f64) {
        self.samples.push(Sample {
            size,
            latency_ns,
            baseline_ns,
        });
    }

    /// Records a message, taking its baseline from `baseline(size)`.
    pub fn push_with(&mut self, size: u32, latency_ns: f64, baseline: impl Fn(u32) -> f64) {
        self.push(size, latency_ns, baseline(size));
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.samples.extend_from_slice(&other.samples);
    }

    /// The samples, in the order they were pushed.
    pub fn as_slice(&self) -> &[Sample] {
        &self.samples
    }

    /// How many messages were recorded.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no message was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Statistics per bucket for the ascending upper `edges`. Buckets with no message are
    /// left out. Messages longer than the last edge form one more bucket whose
    /// `max_size` is the longest such message. Edges need not be sorted or unique: they
    /// are sorted and deduplicated first.
    pub fn buckets(&self, edges: &[u32]) -> Vec<BucketStats> {
        let mut edges: Vec<u32> = edges.to_vec();
        edges.sort_unstable();
        edges.dedup();
        if let Some(max) = self.samples.iter().map(|s| s.size).max() {
            if edges.last().is_none_or(|&e| e < max) {
                edges.push(max);
            }
        }
        let mut groups: Vec<Vec<Sample>> = vec![Vec::new(); edges.len()];
        for s in &self.samples {
            let i = edges.partition_point(|&e| e < s.size);
            groups[i].push(*s);
        }
        let total = self.samples.len() as f64;
        let mut cumulative = 0usize;
        let mut out = Vec::new();
        for (edge, group) in edges.iter().zip(groups) {
            cumulative += group.len();
            if group.is_empty() {
                continue;
            }
            let (p50_us, p99_us, p999_us, p50_slowdown, p99_slowdown) = summarise(&group);
            out.push(BucketStats {
                max_size: *edge,
                count: group.len() as u64,
                p50_us,
                p99_us,
                p999_us,
                p50_slowdown,
                p99_slowdown,
                cumulative_fraction: cumulative as f64 / total,
            });
        }
        out
    }

    /// Slowdown of the messages at most `threshold` bytes long (use
    /// [`Distribution::short_threshold`] for BENCHMARKING.md's short messages). NaN
    /// percentiles when there are none.
    pub fn short(&self, threshold: u32) -> ShortStats {
        let mut slowdowns: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.size <= threshold)
            .map(Sample::slowdown)
            .collect();
        slowdowns.sort_by(f64::total_cmp);
        ShortStats {
            max_size: threshold,
            count: slowdowns.len() as u64,
            p50_slowdown: percentile(&slowdowns, 50.0),
            p99_slowdown: percentile(&slowdowns, 99.0),
        }
    }

    /// Statistics over every message as one bucket (`max_size` = the longest message;
    /// NaN percentiles when empty).
    pub fn overall(&self) -> BucketStats {
        let (p50_us, p99_us, p999_us, p50_slowdown, p99_slowdown) = summarise(&self.samples);
        BucketStats {
            max_size: self.samples.iter().map(|s| s.size).max().unwrap_or(0),
            count: self.samples.len() as u64,
            p50_us,
            p99_us,
            p999_us,
            p50_slowdown,
            p99_slowdown,
            cumulative_fraction: 1.0,
        }
    }
}

/// (p50 µs, p99 µs, p99.9 µs, p50 slowdown, p99 slowdown) of a group.
fn summarise(group: &[Sample]) -> (f64, f64, f64, f64, f64) {
    let mut lat: Vec<f64> = group.iter().map(|s| s.latency_ns / 1000.0).collect();
    let mut slow: Vec<f64> = group.iter().map(Sample::slowdown).collect();
    lat.sort_by(f64::total_cmp);
    slow.sort_by(f64::total_cmp);
    (
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        percentile(&slow, 50.0),
        percentile(&slow, 99.0),
    )
}

/// Bucket edges for `dist`: the sizes at cumulative fractions 0.1, 0.2, …, 1.0
/// ([`Distribution::size_at_fraction`]), deduplicated, so each bucket holds about 10 %
/// of messages — more when many messages share one length (W1's 8-byte messages, 31 %,
/// fill one bucket), and fewer buckets then.
///
/// ```
/// use homa_eval::stats::default_buckets;
/// use homa_eval::workload::{Distribution, Workload};
/// let edges = default_buckets(&Distribution::of(Workload::W4, false));
/// assert_eq!(edges.len(), 10);
/// assert_eq!(*edges.last().unwrap(), 10_000_000);
/// assert_eq!(default_buckets(&Distribution::fixed(100)), vec![100]);
/// ```
pub fn default_buckets(dist: &Distribution) -> Vec<u32> {
    buckets_by_fraction(dist, 10)
}

/// Like [`default_buckets`] with `n` buckets: edges at fractions `1/n, 2/n, …, 1`,
/// deduplicated; the last edge is always the distribution's maximum.
pub fn buckets_by_fraction(dist: &Distribution, n: usize) -> Vec<u32> {
    let n = n.max(1);
    let mut edges: Vec<u32> = (1..n)
        .map(|k| dist.size_at_fraction(k as f64 / n as f64))
        .collect();
    edges.push(dist.max());
    edges.dedup();
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    #[test]
    fn nearest_rank_small_sets() {
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.1), 2.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 99.9), 100.0);
    }

    #[test]
    fn buckets_split_at_edges_and_add_overflow_bucket() {
        let mut s = Samples::new();
        for size in [1, 10, 11, 100, 101, 5000] {
            s.push(size, f64::from(size) * 2.0, f64::from(size));
        }
        let b = s.buckets(&[100, 10, 10]);
        let got: Vec<(u32, u64)> = b.iter().map(|b| (b.max_size, b.count)).collect();
        assert_eq!(got, vec![(10, 2), (100, 2), (5000, 2)]);
        assert!(b
            .iter()
            .all(|b| b.p50_slowdown == 2.0 && b.p99_slowdown == 2.0));
        assert_eq!(b[0].cumulative_fraction, 2.0 / 6.0);
        assert_eq!(b[2].cumulative_fraction, 1.0);
        // Empty buckets are left out.
        let b = s.buckets(&[1, 2, 3, 10, 100, 5000]);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 6);
        assert!(b.iter().all(|b| b.count > 0));
    }

    #[test]
    fn latency_percentiles_in_microseconds() {
        let mut s = Samples::new();
        for i in 1..=1000 {
            s.push(50, f64::from(i) * 1000.0, 1000.0);
        }
        let b = &s.buckets(&[100])[0];
        assert_eq!((b.p50_us, b.p99_us, b.p999_us), (500.0, 990.0, 999.0));
        assert_eq!((b.p50_slowdown, b.p99_slowdown), (500.0, 990.0));
        let o = s.overall();
        assert_eq!((o.count, o.max_size, o.p50_us), (1000, 50, 500.0));
    }

    #[test]
    fn short_messages_use_threshold() {
        let mut s = Samples::new();
        s.push_with(8, 30.0, |_| 10.0);
        s.push_with(9, 1000.0, |_| 10.0);
        let sh = s.short(8);
        assert_eq!((sh.count, sh.p50_slowdown, sh.p99_slowdown), (1, 3.0, 3.0));
        assert!(Samples::new().short(8).p50_slowdown.is_nan());
    }

    #[test]
    fn default_buckets_cover_every_workload() {
        for w in Workload::ALL {
            for capped in [false, true] {
                let d = Distribution::of(w, capped);
                let e = default_buckets(&d);
                assert!(e.windows(2).all(|p| p[0] < p[1]), "{w}: {e:?}");
                assert_eq!(*e.last().unwrap(), d.max());
                assert!(e.len() >= 5 && e.len() <= 10, "{w}: {e:?}");
                assert_eq!(e[0], d.short_threshold());
            }
        }
    }
}

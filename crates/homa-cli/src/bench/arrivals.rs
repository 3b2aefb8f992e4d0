//! Seeded randomness for the loaded run: open-loop Poisson arrival times, message sizes
//! and destinations, reproducible from `--seed`.

/// SplitMix64: a small, fast, seedable generator (Steele, Lea, Flood 2014). Statistical
/// quality is ample for arrival times and workload sampling.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of seed `seed` (each client thread uses its own
    /// stream, so adding threads does not change what the others draw).
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Decorrelate neighbouring seeds.
        r.next_u64();
        r
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Open-loop Poisson arrivals: exponentially distributed gaps of mean `1 / rate`.
#[derive(Debug, Clone)]
pub(crate) struct Poisson {
    rng: Rng,
    mean_gap_ns: f64,
    /// Time of the latest arrival, in nanoseconds since the start of the run.
    at_ns: f64,
}

impl Poisson {
    /// Arrivals at `rate_per_s` per second on average (must be positive and finite).
    pub(crate) fn new(rate_per_s: f64, rng: Rng) -> Self {
        Poisson {
            rng,
            mean_gap_ns: 1e9 / rate_per_s,
            at_ns: 0.0,
        }
    }

    /// The next arrival, in nanoseconds since the start of the run.
    pub(crate) fn next_ns(&mut self) -> u64 {
        // 1 - u is in (0, 1]: the logarithm is finite.
        let gap = -(1.0 - self.rng.unit()).ln() * self.mean_gap_ns;
        self.at_ns += gap;
        self.at_ns as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_arrivals() {
        let mut a = Poisson::new(10_000.0, Rng::new(7, 0));
        let mut b = Poisson::new(10_000.0, Rng::new(7, 0));
        let xs: Vec<u64> = (0..1000).map(|_| a.next_ns()).collect();
        let ys: Vec<u64> = (0..1000).map(|_| b.next_ns()).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "arrivals go forward");
    }

    #[test]
    fn other_seed_or_stream_other_arrivals() {
        let first = |seed, stream| Poisson::new(1000.0, Rng::new(seed, stream)).next_ns();
        assert_ne!(first(1, 0), first(2, 0));
        assert_ne!(first(1, 0), first(1, 1));
    }

    #[test]
    fn mean_rate_is_respected() {
        let rate = 50_000.0;
        let mut p = Poisson::new(rate, Rng::new(1, 0));
        let n = 200_000;
        let mut last = 0;
        for _ in 0..n {
            last = p.next_ns();
        }
        let measured = n as f64 / (last as f64 / 1e9);
        assert!((measured / rate - 1.0).abs() < 0.02, "rate {measured}");
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut r = Rng::new(3, 9);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}

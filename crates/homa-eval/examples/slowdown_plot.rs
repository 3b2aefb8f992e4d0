//! Draws an example slowdown plot from made-up numbers, to check the SVG writer renders.
//!
//! `cargo run -p homa-eval --example slowdown_plot -- /tmp/example.svg`

use homa_eval::plot::{slowdown_svg, Series};
use homa_eval::stats::{default_buckets, Samples};
use homa_eval::workload::{Distribution, Workload};

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "slowdown_example.svg".into());
    let dist = Distribution::of(Workload::W4, false);
    let mut series = Vec::new();
    for (label, factor) in [("P99, made up", 4.0), ("P50, made up", 1.5)] {
        let mut samples = Samples::new();
        for i in 0..10_000 {
            let size = dist.sample((f64::from(i) + 0.5) / 10_000.0);
            let ideal = 2_000.0 + f64::from(size) * 0.8;
            // Larger messages wait longer, as under SRPT.
            let slowdown = 1.0 + factor * (f64::from(size).ln() / 16.0).powi(3);
            samples.push(size, ideal * slowdown, ideal);
        }
        let points = samples
            .buckets(&default_buckets(&dist))
            .iter()
            .map(|b| (b.cumulative_fraction, b.p50_slowdown, b.max_size))
            .collect();
        series.push(Series::new(label, points));
    }
    std::fs::write(&path, slowdown_svg("W4 (example data)", &series))?;
    println!("wrote {path}");
    Ok(())
}

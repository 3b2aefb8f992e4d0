//! # homa-eval — workloads, statistics, plots and reports shared by `homa bench` and `homa sim`
//!
//! Everything here is pure computation over numbers and strings: no sockets, no engine,
//! no clock, no file system (the caller writes the strings it gets to files). The terms
//! follow the project's BENCHMARKING.md.
//!
//! * [`workload`]: the five message-length distributions of the Homa papers (W1–W5),
//!   embedded in the binary at build time (raw and capped at 1,000,000 bytes), and
//!   sampling from them.
//! * [`stats`]: nearest-rank percentiles, and a [`Samples`](stats::Samples) collector
//!   that turns (size, latency, baseline) triples into per-size-bucket P50/P99/P99.9
//!   latencies and slowdowns, and short-message slowdowns.
//! * [`plot`]: an SVG writer for the papers' figure, slowdown against cumulative
//!   message fraction.
//! * [`report`]: CSV and JSON writers with correct escaping.
//!
//! ```
//! use homa_eval::stats::{default_buckets, Samples};
//! use homa_eval::workload::{Distribution, Workload};
//!
//! let dist = Distribution::of(Workload::W2, false);
//! let mut samples = Samples::new();
//! for i in 0..1000 {
//!     let size = dist.sample((i as f64 + 0.5) / 1000.0);
//!     // A made-up transport that always takes twice the ideal time.
//!     let ideal_ns = 1000.0 + size as f64 * 0.8;
//!     samples.push(size, 2.0 * ideal_ns, ideal_ns);
//! }
//! let buckets = samples.buckets(&default_buckets(&dist));
//! assert!(buckets.iter().all(|b| (b.p50_slowdown - 2.0).abs() < 1e-9));
//! let short = samples.short(dist.short_threshold());
//! assert_eq!(short.p99_slowdown, 2.0);
//! ```

#![forbid(unsafe_code)]

pub mod plot;
pub mod report;
pub mod stats;
pub mod workload;

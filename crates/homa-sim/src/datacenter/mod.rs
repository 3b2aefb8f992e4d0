//! The datacenter simulator behind `homa sim`: the project's real engine, one per host,
//! on a two-tier network at the scale of the Homa paper (SIGCOMM 2018), under the
//! papers' workloads.
//!
//! # The model
//!
//! * **Topology** ([`TwoTier`](crate::TwoTier)): by default 144 hosts in 9 racks of 16;
//!   10 Gbit/s host links; every top-of-rack switch has a 40 Gbit/s uplink to each of 4
//!   aggregation switches. Packets between racks are sprayed per packet over the
//!   aggregation switches (`ecmp = flow` hashes per host pair instead).
//! * **Switches and hosts**: store-and-forward with a fixed switch delay (250 ns) after a
//!   packet has fully arrived; egress ports with 8 strict-priority FIFO queues, unlimited
//!   buffers by default (`buffer = BYTES` gives every switch port a tail-drop buffer;
//!   host NIC queues stay unlimited, since the engine's pacer keeps them short); host
//!   software delays of 750 ns on transmit and on receive; links with no propagation
//!   delay by default. Each packet costs its Homa length plus 62 bytes (IPv4 header and
//!   Ethernet framing) of link time.
//! * **RTT bytes** ≈ 10,000: with those delays the unloaded round trip between racks of
//!   a full DATA packet out and a GRANT back is 7.8 µs ([`Model::rtt_ns`]), 9.7 KB at
//!   10 Gbit/s. The engines' `unsched_bytes` and fixed grant `window` are set to
//!   `rtt_bytes` rounded to whole packets (10,000 → 7 × 1424 = 9,968 bytes, which also
//!   avoids a tiny packet at the unscheduled limit). `link_mbps` is the host link rate
//!   (for the pacer), `wmem_max` is unlimited, every other tunable keeps the kernel's
//!   default unless given with `engine = NAME=VALUE` (e.g. `max_overcommit`).
//! * **Priorities**: 8 levels. The receivers' unscheduled cutoffs are derived from the
//!   workload as in the paper ([`Cutoffs::Auto`]): the share of unscheduled bytes sets
//!   how many levels carry unscheduled packets, and the cutoffs split those bytes evenly
//!   among them, the shortest messages highest; the remaining lower levels carry
//!   scheduled packets.
//! * **Workloads** W1–W5 from the raw (uncapped) files by default. Homa messages are at
//!   most 1,000,000 bytes (a wire-format limit), and the raw W2–W5 go up to 3.5–29.4 MB:
//!   by default such a message is **split** into consecutive pieces of at most 1,000,000
//!   bytes to the same destination, each issued when the previous one is delivered
//!   (see [`LargeMessages::Split`]); its completion is when its last piece is received.
//!   `large = cap` caps them instead and counts them; `capped = true` uses the 1 MB-capped
//!   files. The report always says which, and how many messages were split or capped.
//! * **Traffic**: each host creates messages by an open-loop Poisson process whose rate
//!   gives the offered load (payload per host / host link rate; `load_basis = wire`
//!   counts DATA headers and framing too), each to a uniformly random other host.
//! * **One-way messages over an RPC engine.** Every host runs one engine, a server bound
//!   to port 1 that also sends requests. A message is a *request*; its completion time
//!   is measured **at the receiver**, from its creation at the sender until the engine
//!   delivers the whole request (the paper's one-way message). The receiver then answers
//!   with a 1-byte response, which is not measured: it lets both ends finish the RPC (the
//!   engine's at-most-once protocol frees state only after a response and its ack), costs
//!   one small packet back, and tells the sender when to issue a split message's next
//!   piece. Not answering would leave every RPC alive forever (the client would keep
//!   asking for a response and the server keep answering BUSY).
//! * **Measurement**: after a warm-up (as long as the window by default, since the
//!   backlog of heavy-tailed workloads takes ~100 ms to settle), messages
//!   created during the measurement window are measured. After the window, arrivals go
//!   on until every measured message is delivered (at most the drain limit), so late
//!   messages still see the offered load.
//! * **Slowdown** (BENCHMARKING.md's simulator slowdown): completion time divided by
//!   [`Model::ideal_ns`], the time on an idle network: serialisation of every byte of
//!   every packet, headers included, at the host link rate, plus per hop the
//!   store-and-forward of the last packet, the switch delays, link latencies and the
//!   host delays, on the message's path (same rack or not). P50/P99 per size bucket
//!   ([`default_buckets`](homa_eval::stats::default_buckets): each about a tenth of the
//!   messages) and for short messages (the shortest 10 %).
//! * **Sustained load**: see [`Sustain`].
//! * **Determinism**: every random choice comes from the seed (per-host arrival streams,
//!   the network's routing stream); the same seed gives the same results, byte for byte
//!   in [`DcResult::to_json`] with `deterministic` (which leaves out wall-clock time).
//!
//! ```
//! use homa_sim::datacenter::{run, DcConfig};
//!
//! let mut cfg = DcConfig::default();
//! for (k, v) in [("racks", "2"), ("hosts_per_rack", "4"), ("aggregation", "2"),
//!                ("workload", "w2"), ("load", "0.5"), ("duration", "200us"), ("warmup", "50us")] {
//!     cfg.set(k, v).unwrap();
//! }
//! let result = run(&cfg).unwrap();
//! assert!(result.counters.measured_completed > 0);
//! assert!(result.short.p50_slowdown >= 1.0);
//! println!("{}", result.table());
//! ```

mod app;
mod config;
mod model;
mod run;

pub use app::Counters;
pub use config::{
    parse_bytes, parse_duration, parse_load, Cutoffs, DcConfig, LargeMessages, LoadBasis,
    SettingError, WorkloadChoice,
};
pub use model::Model;
pub use run::{run, DcError, DcResult, EngineTotals, Sustain};

/// The loads of a sweep: 10 %, 20 %, …, 90 %.
pub const SWEEP_LOADS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// The highest load the network sustains, from `(load, sustained)` pairs: the highest
/// load below the lowest load that was not sustained (`None` if even the lowest was not).
///
/// ```
/// use homa_sim::datacenter::max_sustained_load;
/// assert_eq!(max_sustained_load(&[(0.1, true), (0.2, true), (0.3, false)]), Some(0.2));
/// assert_eq!(max_sustained_load(&[(0.2, true), (0.1, true)]), Some(0.2));
/// assert_eq!(max_sustained_load(&[(0.1, false), (0.2, true)]), None);
/// ```
pub fn max_sustained_load(results: &[(f64, bool)]) -> Option<f64> {
    let mut sorted = results.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = None;
    for (load, ok) in sorted {
        if !ok {
            break;
        }
        best = Some(load);
    }
    best
}

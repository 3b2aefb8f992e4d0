//! The datacenter simulator (`homa_sim::datacenter`, behind `homa sim`) on small
//! topologies: invariants, not results.
//!
//! Strict priority service at egress ports is the network core's and is checked there
//! (`tests/network.rs`: `strict_priority_high_packet_overtakes_queued_low_packets`,
//! `strict_priority_at_a_congested_switch_port`, `fifo_port_ignores_priorities`); the
//! datacenter runs use those same ports.

use homa_sim::datacenter::{run, DcConfig, DcResult, Model};

/// 2 racks of 4 hosts, 2 aggregation switches, then `settings`.
fn small(settings: &[(&str, &str)]) -> DcConfig {
    let mut cfg = DcConfig::default();
    for (k, v) in [
        ("racks", "2"),
        ("hosts_per_rack", "4"),
        ("aggregation", "2"),
    ]
    .iter()
    .chain(settings)
    {
        cfg.set(k, v).unwrap();
    }
    cfg
}

fn run_ok(cfg: &DcConfig) -> DcResult {
    run(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Every message completes, every byte offered is delivered once, the network loses
/// nothing, every engine ends with no RPC and every bpage back.
fn check_conservation(r: &DcResult) {
    let c = &r.counters;
    let hosts = r.config.hosts();
    assert!(c.created > 0);
    assert_eq!(c.completed, c.created, "every message completes");
    assert_eq!(c.measured_completed, c.measured_created);
    assert_eq!(r.samples.len() as u64, c.measured_completed);
    assert_eq!(
        c.bytes_issued, c.bytes_created,
        "every byte handed to an engine"
    );
    assert_eq!(
        c.bytes_delivered, c.bytes_created,
        "every byte delivered once"
    );
    assert_eq!(c.pieces_received, c.pieces_sent);
    assert_eq!(c.responses, c.pieces_sent, "every piece answered");
    assert_eq!((c.failures, c.send_errors), (0, 0));
    let n = &r.net;
    assert_eq!(n.in_flight(), 0);
    assert_eq!(n.packets_sent, n.packets_delivered + n.dropped.total());
    assert_eq!(n.dropped.total(), 0, "unlimited buffers drop nothing");
    assert_eq!(r.engines.packets_sent, n.packets_sent);
    assert_eq!(r.engines.packets_received, n.packets_delivered);
    assert_eq!(r.engines.malformed, 0);
    assert_eq!(r.engines.idle_pools, hosts, "every bpage released");
    assert_eq!(r.engines.live_rpcs, 0, "every RPC finished");
    for s in r.samples.as_slice() {
        assert!(
            s.latency_ns >= s.baseline_ns * (1.0 - 1e-9),
            "faster than ideal: {s:?}"
        );
    }
}

#[test]
fn every_message_completes_and_bytes_are_conserved() {
    let cfg = small(&[
        ("workload", "w3"),
        ("load", "0.7"),
        ("duration", "1ms"),
        ("warmup", "200us"),
        ("drain_all", "true"),
        ("seed", "3"),
    ]);
    let r = run_ok(&cfg);
    check_conservation(&r);
    assert!(r.counters.created > 1000, "{}", r.counters.created);
}

#[test]
fn messages_over_a_megabyte_are_split_into_pieces_and_complete() {
    let cfg = small(&[
        ("workload", "fixed:2300000"),
        ("load", "0.3"),
        ("duration", "10ms"),
        ("warmup", "0ns"),
        ("drain_all", "true"),
    ]);
    let r = run_ok(&cfg);
    check_conservation(&r);
    let c = &r.counters;
    assert_eq!(c.split, c.created);
    assert_eq!(
        c.pieces_sent,
        3 * c.created,
        "1,000,000 + 1,000,000 + 300,000"
    );
    assert_eq!(c.capped, 0);
}

#[test]
fn capping_counts_the_capped_messages() {
    let cfg = small(&[
        ("workload", "w5"),
        ("large", "cap"),
        ("load", "0.3"),
        ("duration", "5ms"),
        ("warmup", "0ns"),
        ("drain_all", "true"),
    ]);
    let r = run_ok(&cfg);
    check_conservation(&r);
    let c = &r.counters;
    assert!(c.capped > 0 && c.split == 0);
    assert_eq!(c.pieces_sent, c.created);
    assert_eq!(r.distribution.max(), 1_000_000);
    assert!(r.samples.as_slice().iter().all(|s| s.size <= 1_000_000));
}

#[test]
fn ideal_time_of_a_known_case() {
    // Default model: 10 Gbit/s hosts, 40 Gbit/s uplinks, 250 ns switches, 750 ns host
    // delays each way, no propagation delay, 1424-byte segments, 118 bytes per packet.
    let m = Model::new(&DcConfig::default());
    // 2000 bytes: packets of 1424 and 576 bytes of payload, 1542 and 694 wire bytes
    // (1233.6 and 555.2 ns at 10 Gbit/s; 308.4 and 138.8 ns at 40 Gbit/s).
    assert_eq!(m.wire_bytes(2000), 2236);
    // Between racks: the first packet goes store-and-forward over the host link and both
    // uplinks; the receiver's link (as slow as the sender's) then carries both packets
    // back to back, the second having caught up on the fast uplinks (it is ready at the
    // receiver's ToR 555.2 + 2 × 138.8 = 832.8 ns after the first left the sender, the
    // first 2 × 308.4 = 616.8 ns after; the first still goes first):
    // 750 + 1233.6 + 2 × (250 + 308.4) + 250 + (1233.6 + 555.2) + 750 = 5889.2 ns.
    let between = m.ideal_ns(2000, false);
    assert!((between - 5889.2).abs() < 1e-6, "{between}");
    // 1536 bytes (1424 + 112: 1542 and 230 wire bytes): sprayed over another
    // aggregation switch, the short second packet overtakes the first on the uplinks
    // (ready at the receiver's ToR at 750 + 1233.6 + 184 + 3 × 250 + 2 × 46 = 3009.6,
    // the first at 750 + 1233.6 + 3 × 250 + 2 × 308.4 = 3350.4) and the receiver's link
    // carries it first: 3350.4 + 1233.6 + 750 = 5334 ns. In order (per-flow hashing):
    // 750 + 1233.6 + 2 × (250 + 308.4) + 250 + (1233.6 + 184) + 750 = 5518 ns.
    assert!((m.ideal_ns(1536, false) - 5334.0).abs() < 1e-6);
    let mut flow = DcConfig::default();
    flow.set("ecmp", "flow").unwrap();
    assert!((Model::new(&flow).ideal_ns(1536, false) - 5518.0).abs() < 1e-6);
    // Within a rack: 750 + 1233.6 + 250 + (1233.6 + 555.2) + 750 = 4772.4 ns.
    let within = m.ideal_ns(2000, true);
    assert!((within - 4772.4).abs() < 1e-6, "{within}");
    // A one-packet message: its store-and-forward at every hop.
    // 100 + 118 = 218 wire bytes: 750 + 174.4 + 2 × (250 + 43.6) + 250 + 174.4 + 750.
    assert!((m.ideal_ns(100, false) - 2686.0).abs() < 1e-6);
    // 2,300,000 bytes: pieces of 1e6, 1e6, 3e5, each packetised on its own (the
    // unscheduled limit, 9968 = 7 × 1424, falls on a packet boundary).
    assert_eq!(m.packets_of(1_000_000), (703, 1_000_000 - 702 * 1424));
    let per_piece = |len: u64| len + len.div_ceil(1424) * 118;
    assert_eq!(
        m.wire_bytes(2_300_000),
        2 * per_piece(1_000_000) + per_piece(300_000)
    );
    assert_eq!(m.packet_wire_sizes(2_300_000).count(), 703 + 703 + 211);
}

#[test]
fn an_idle_network_meets_the_ideal_time() {
    // At a load of 0.1 % messages almost never meet: each should take its ideal time,
    // up to the grant round trip not hidden by the unscheduled bytes.
    for (size, load) in [("2000", "0.002"), ("50000", "0.02")] {
        let cfg = small(&[
            ("workload", &format!("fixed:{size}")),
            ("load", load),
            ("duration", "40ms"),
            ("warmup", "0ns"),
        ]);
        let r = run_ok(&cfg);
        let o = r.samples.overall();
        assert!(o.count >= 20, "{size}: {} messages", o.count);
        let min = r
            .samples
            .as_slice()
            .iter()
            .map(|s| s.latency_ns / s.baseline_ns)
            .fold(f64::INFINITY, f64::min);
        assert!(min >= 1.0 - 1e-9, "{size}: faster than ideal ({min})");
        assert!(
            o.p50_slowdown < 1.05,
            "{size}: P50 slowdown {}",
            o.p50_slowdown
        );
    }
}

#[test]
fn same_seed_gives_identical_results() {
    let cfg = small(&[
        ("workload", "w4"),
        ("load", "0.6"),
        ("duration", "1ms"),
        ("warmup", "100us"),
    ]);
    let a = run_ok(&cfg).to_json(true).to_pretty();
    let b = run_ok(&cfg).to_json(true).to_pretty();
    assert_eq!(a, b);
    let mut other = cfg.clone();
    other.seed += 1;
    assert_ne!(a, run_ok(&other).to_json(true).to_pretty());
}

#[test]
fn an_offered_load_beyond_the_links_is_not_sustained() {
    // 130 % of the host link in payload alone cannot be carried.
    let cfg = small(&[
        ("workload", "w3"),
        ("load", "1.3"),
        ("duration", "1ms"),
        ("warmup", "100us"),
        ("drain_limit", "0ns"),
    ]);
    let r = run_ok(&cfg);
    assert!(!r.sustain.sustained, "{:?}", r.sustain);
}

#[test]
fn finite_buffers_drop_and_the_engines_recover() {
    // Tiny switch buffers force tail drops; Homa's RESENDs recover every message.
    let cfg = small(&[
        ("workload", "w3"),
        ("load", "0.8"),
        ("duration", "1ms"),
        ("warmup", "0ns"),
        ("buffer", "6K"),
        ("drain_all", "true"),
    ]);
    let r = run_ok(&cfg);
    let c = &r.counters;
    assert!(r.net.dropped.buffer > 0, "no drops: {:?}", r.net.dropped);
    assert_eq!(c.completed, c.created);
    assert_eq!(c.bytes_delivered, c.bytes_created);
    assert_eq!(r.net.in_flight(), 0);
    assert!(r.engines.retransmitted_packets > 0);
}

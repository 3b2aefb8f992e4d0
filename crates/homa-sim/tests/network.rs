//! Behaviour of the simulated network: priorities, timing, buffers, faults, run control,
//! routing.

mod common;

use core::time::Duration;

use common::{Scripted, Send, Spinner};
use homa_proto::wire::PacketType;
use homa_proto::Time;
use homa_sim::{
    host_ip, Device, DropReason, Ecmp, FaultRule, FaultSite, Filter, LinkSpec, NetConfig, Network,
    Scheduling, SimError, Star, TraceKind, TwoTier, DEFAULT_OVERHEAD,
};

const GBPS10: u64 = 10_000_000_000;

fn star(n: usize, seed: u64, link: LinkSpec) -> Network<Scripted> {
    Star::new(n)
        .link(link)
        .config(NetConfig::with_seed(seed))
        .build(|_, _| Scripted::new())
        .unwrap()
}

/// Serialisation time in ns of a packet of `len` bytes at `rate`, exact rational.
fn ser_ns_exact(len: usize, rate: u64) -> f64 {
    ((len + DEFAULT_OVERHEAD) * 8) as f64 * 1e9 / rate as f64
}

#[test]
fn strict_priority_high_packet_overtakes_queued_low_packets() {
    let mut net = star(2, 1, LinkSpec::default());
    let dst = net.host_ip(1);
    let n0 = net.node_mut(0);
    for tag in 0..10 {
        n0.out.push_back(Send::data(dst, 1000, 0, tag));
    }
    n0.out.push_back(Send::data(dst, 1000, 7, 100));
    net.run_until_idle(10_000).unwrap();
    // The first low packet was already on the wire; the high one goes next.
    assert_eq!(net.node(1).tags(), [0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let port = net
        .port_between(Device::Host(0), Device::Switch(0))
        .unwrap();
    let ps = net.port_stats(port);
    assert_eq!(ps.packets_by_priority[0], 10);
    assert_eq!(ps.packets_by_priority[7], 1);
    assert_eq!(net.stats().delivered_by_priority[7], 1);
}

#[test]
fn fifo_port_ignores_priorities() {
    let link = LinkSpec::default().scheduling(Scheduling::Fifo);
    let mut net = star(2, 1, link);
    let dst = net.host_ip(1);
    let n0 = net.node_mut(0);
    for tag in 0..5 {
        n0.out.push_back(Send::data(dst, 1000, 0, tag));
    }
    n0.out.push_back(Send::data(dst, 1000, 7, 100));
    net.run_until_idle(10_000).unwrap();
    assert_eq!(net.node(1).tags(), [0, 1, 2, 3, 4, 100]);
}

#[test]
fn strict_priority_at_a_congested_switch_port() {
    // Hosts 1 and 2 each send 10 low packets to host 0 at time 0: the switch port to
    // host 0 builds a queue. Host 3 sends one high packet at 3.5 µs; it leaves the switch
    // as soon as the packet on the wire is done.
    let len = 1250 - DEFAULT_OVERHEAD; // 10,000 bits: 1,000 ns at 10 Gbit/s
    let mut net = star(4, 1, LinkSpec::new(GBPS10, Duration::from_micros(1)));
    let dst = net.host_ip(0);
    for h in [1, 2] {
        for tag in 0..10 {
            net.node_mut(h).out.push_back(Send::data(dst, len, 0, tag));
        }
    }
    net.node_mut(3)
        .at(Time::from_nanos(3_500), Send::data(dst, len, 7, 100));
    net.run_until_idle(10_000).unwrap();
    let got = &net.node(0).got;
    assert_eq!(got.len(), 21);
    // Lows reach the switch from 2,000 ns and leave back to back: done at 3, 4, 5, 6 µs.
    // The high reaches it at 3,500 + 1,000 + 1,000 = 5,500 ns, leaves at 6,000 ns, and
    // arrives at 7,000 + 1,000 ns.
    let pos = got.iter().position(|g| g.tag == 100).unwrap();
    assert_eq!(pos, 4);
    assert_eq!(got[pos].time, Time::from_nanos(8_000));
    let port = net
        .port_between(Device::Switch(0), Device::Host(0))
        .unwrap();
    assert!(net.port_stats(port).max_queued_bytes >= 10 * 1250);
}

#[test]
fn serialization_and_latency_timing_is_exact() {
    let cfg = NetConfig {
        seed: 3,
        switch_delay: Duration::from_nanos(300),
        host_rx_delay: Duration::from_nanos(200),
        ..NetConfig::default()
    };
    let rate = GBPS10;
    let mut net = Star::new(2)
        .link(LinkSpec::new(rate, Duration::from_micros(1)))
        .config(cfg)
        .build(|_, _| Scripted::new())
        .unwrap();
    let dst = net.host_ip(1);
    for tag in 0..3 {
        net.node_mut(0).out.push_back(Send::data(dst, 1000, 0, tag));
    }
    net.run_until_idle(1_000).unwrap();
    let times: Vec<u64> = net.node(1).got.iter().map(|g| g.time.as_nanos()).collect();
    // (1000 + 62) * 8 = 8,496 bits = 849.6 ns. Host port: done at ceil(k * 849.6) =
    // 850, 1700, 2549; switch arrivals + 1000 latency + 300 switch delay = 2150, 3000,
    // 3849; the switch port is busy from 2150 without a gap: done at 2150 + 850, 1700,
    // 2549; + 1000 latency + 200 receive delay.
    assert_eq!(times, [4_200, 5_050, 5_899]);
    // The same from the formula.
    let ser = ser_ns_exact(1000, rate);
    let first = ser.ceil() as u64 + 1_000 + 300 + ser.ceil() as u64 + 1_000 + 200;
    assert_eq!(times[0], first);
    assert_eq!(net.stats().transmissions, 6);
}

#[test]
fn transmit_delay_and_loopback() {
    let cfg = NetConfig {
        host_tx_delay: Duration::from_nanos(700),
        host_rx_delay: Duration::from_nanos(100),
        ..NetConfig::default()
    };
    let mut net = Star::new(2)
        .config(cfg)
        .build(|_, _| Scripted::new())
        .unwrap();
    let me = net.host_ip(0);
    let peer = net.host_ip(1);
    net.node_mut(0).out.push_back(Send::data(me, 100, 0, 1));
    net.node_mut(0).out.push_back(Send::data(peer, 100, 0, 2));
    net.run_until_idle(1_000).unwrap();
    // Loopback: only the receive delay.
    assert_eq!(net.node(0).got[0].time, Time::from_nanos(100));
    assert_eq!(net.node(0).got[0].from, me);
    // 700 + 2 × (ceil(162 * 8 / 10) = 130 + 1000) + 100.
    assert_eq!(
        net.node(1).got[0].time,
        Time::from_nanos(700 + 2 * 1_130 + 100)
    );
}

#[test]
fn finite_buffer_tail_drops_are_counted_per_port_and_priority() {
    let mut net = star(2, 1, LinkSpec::default().buffer(3_000));
    net.enable_trace();
    let dst = net.host_ip(1);
    for tag in 0..10 {
        net.node_mut(0).out.push_back(Send::data(dst, 1000, 3, tag));
    }
    net.run_until_idle(1_000).unwrap();
    // One on the wire, two of 1,062 bytes fit the 3,000-byte buffer, seven dropped.
    assert_eq!(net.node(1).tags(), [0, 1, 2]);
    let port = net
        .port_between(Device::Host(0), Device::Switch(0))
        .unwrap();
    let ps = net.port_stats(port);
    assert_eq!(ps.drops_by_priority[3], 7);
    assert_eq!(ps.drops(), 7);
    assert_eq!(ps.max_queued_bytes, 2 * 1062);
    assert_eq!(net.stats().dropped.buffer, 7);
    let drops = net
        .trace()
        .iter()
        .filter(|e| e.kind == TraceKind::Dropped(DropReason::BufferFull))
        .count();
    assert_eq!(drops, 7);
    assert_eq!(net.port_queued_bytes(port), 0);
}

/// Host 0 sends `n` DATA packets to host 1, 2 µs apart (no queueing); returns the tags in
/// delivery order.
fn spaced_run(seed: u64, n: u64, rules: &[FaultRule]) -> Network<Scripted> {
    let mut net = star(2, seed, LinkSpec::default());
    for r in rules {
        net.add_fault(r.clone());
    }
    let dst = net.host_ip(1);
    for tag in 0..n {
        net.node_mut(0)
            .at(Time::from_micros(2 * tag), Send::data(dst, 200, 0, tag));
    }
    net.run_until_idle(10 * n).unwrap();
    net
}

#[test]
fn loss_rate_matches_probability() {
    let n = 20_000;
    let net = spaced_run(11, n, &[FaultRule::loss(0.1)]);
    let delivered = net.stats().packets_delivered;
    assert!((17_500..=18_500).contains(&delivered), "{delivered}");
    assert_eq!(net.stats().dropped.fault, n - delivered);
    assert_eq!(net.stats().in_flight(), 0);
}

#[test]
fn duplication_rate_matches_probability() {
    let n = 20_000;
    let net = spaced_run(12, n, &[FaultRule::duplicate(0.05)]);
    let delivered = net.stats().packets_delivered;
    assert!((20_700..=21_300).contains(&delivered), "{delivered}");
    assert_eq!(net.stats().duplicated, delivered - n);
    // Every copy right behind its original.
    let tags = net.node(1).tags();
    assert!(tags.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
}

#[test]
fn reordering_rate_matches_probability() {
    let n = 20_000;
    let rule = FaultRule::reorder(0.1, Duration::from_micros(20));
    let net = spaced_run(13, n, &[rule]);
    let delayed = net.stats().delayed;
    assert!((1_800..=2_200).contains(&delayed), "{delayed}");
    assert_eq!(net.stats().packets_delivered, n);
    // A packet is out of order if a later-sent one arrived before it. Extra delays are
    // uniform up to 20 µs with packets 2 µs apart: ~90 % of delayed packets get overtaken.
    let mut max_seen = None;
    let mut out_of_order = 0;
    for t in net.node(1).tags() {
        if max_seen.is_some_and(|m| t < m) {
            out_of_order += 1;
        }
        max_seen = max_seen.max(Some(t));
    }
    assert!(
        out_of_order > delayed * 8 / 10 && out_of_order <= delayed,
        "{out_of_order} of {delayed}"
    );
}

fn faulty_echo_run(seed: u64) -> Network<Scripted> {
    let mut net = Star::new(4)
        .config(NetConfig::with_seed(seed))
        .build(|_, _| Scripted::echo(5, 200))
        .unwrap();
    net.enable_trace();
    net.add_fault(FaultRule::loss(0.05));
    net.add_fault(FaultRule::duplicate(0.05).at(FaultSite::EveryEgress));
    net.add_fault(FaultRule::reorder(0.1, Duration::from_micros(5)).at(FaultSite::HostIngress));
    for h in 0..4 {
        let peer = host_ip((h + 1) % 4);
        for tag in 0..20 {
            let t = Time::from_nanos(300 * tag);
            net.node_mut(h).at(t, Send::data(peer, 500, 1, tag));
        }
    }
    net.run_until_idle(1_000_000).unwrap();
    net
}

#[test]
fn same_seed_gives_identical_trace_and_stats_different_seed_differs() {
    let a = faulty_echo_run(77);
    let b = faulty_echo_run(77);
    assert!(a.trace().len() > 1_000);
    assert_eq!(a.trace(), b.trace());
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.now(), b.now());
    let c = faulty_echo_run(78);
    assert_ne!(a.trace(), c.trace());
    assert_ne!(a.stats(), c.stats());
}

#[test]
fn fault_filter_selects_packet_type() {
    let mut net = star(2, 5, LinkSpec::default());
    let id =
        net.add_fault(FaultRule::loss(1.0).filter(Filter::any().packet_type(PacketType::Grant)));
    let dst = net.host_ip(1);
    for tag in 0..100 {
        let ty = if tag % 2 == 0 {
            PacketType::Data
        } else {
            PacketType::Grant
        };
        let p = Send {
            to: dst,
            len: 60,
            prio: 0,
            ty,
            tag,
        };
        net.node_mut(0).out.push_back(p);
    }
    net.run_until_idle(10_000).unwrap();
    let got = &net.node(1).got;
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|g| g.ty == PacketType::Data.code()));
    let counts = net.fault_counts(id).unwrap();
    assert_eq!((counts.matched, counts.fired), (50, 50));
    assert_eq!(net.stats().sent_of_type(PacketType::Grant), 50);
    assert_eq!(net.stats().dropped.fault, 50);
}

#[test]
fn fault_filter_selects_source_host() {
    let mut net = star(3, 5, LinkSpec::default());
    let from0 = host_ip(0);
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().from(from0)));
    let dst = net.host_ip(2);
    for h in 0..2 {
        for tag in 0..10 {
            net.node_mut(h).out.push_back(Send::data(dst, 100, 0, tag));
        }
    }
    net.run_until_idle(10_000).unwrap();
    let got = &net.node(2).got;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|g| g.from == host_ip(1)));
}

#[test]
fn skip_first_and_limit_drop_exactly_the_chosen_packet() {
    let mut net = star(2, 5, LinkSpec::default());
    let rule = FaultRule::loss(1.0)
        .filter(Filter::any().between(host_ip(0), host_ip(1)))
        .skip_first(2)
        .limit(1);
    let id = net.add_fault(rule);
    let dst = net.host_ip(1);
    for tag in 0..6 {
        net.node_mut(0).out.push_back(Send::data(dst, 100, 0, tag));
    }
    net.run_until_idle(10_000).unwrap();
    assert_eq!(net.node(1).tags(), [0, 1, 3, 4, 5]);
    assert!(net.remove_fault(id).is_some());
    assert_eq!(net.fault_counts(id), None);
}

#[test]
fn step_limit_catches_a_livelocking_node_and_names_the_seed() {
    let mut net = Star::new(2)
        .config(NetConfig::with_seed(1234))
        .build(|_, _| Spinner::default())
        .unwrap();
    let err = net.run_until(|_| false, 10_000).unwrap_err();
    assert!(matches!(
        err,
        SimError::StepLimit {
            seed: 1234,
            steps: 10_000,
            ..
        }
    ));
    assert!(err.to_string().contains("seed 1234"), "{err}");
    assert_eq!(net.now(), Time::ZERO); // time never moved
                                       // run_for is bounded too.
    let mut net = Star::new(1)
        .config(NetConfig {
            seed: 99,
            max_steps: 500,
            ..NetConfig::default()
        })
        .build(|_, _| Spinner::default())
        .unwrap();
    let err = net.run_for(Duration::from_millis(1)).unwrap_err();
    assert_eq!(err.seed(), 99);
    assert!(err.to_string().contains("seed 99"));
    assert_eq!(net.node(0).calls, 500);
}

#[test]
fn idle_network_is_reported_as_deadlock_with_the_seed() {
    let mut net = star(2, 4321, LinkSpec::default());
    let dst = net.host_ip(1);
    net.node_mut(0).out.push_back(Send::data(dst, 100, 0, 1));
    let err = net
        .run_until(|n| n.node(1).got.len() == 2, 1_000)
        .unwrap_err();
    assert!(matches!(err, SimError::Idle { seed: 4321, .. }));
    assert!(err.to_string().contains("seed 4321"));
    assert_eq!(net.node(1).got.len(), 1);
}

#[test]
fn timers_fire_at_their_deadline_and_run_for_stops_on_time() {
    let mut net = star(2, 1, LinkSpec::default());
    net.enable_trace();
    let dst = net.host_ip(1);
    net.node_mut(0)
        .at(Time::from_micros(5), Send::data(dst, 100, 0, 1));
    net.run_for(Duration::from_micros(4)).unwrap();
    assert_eq!(net.now(), Time::from_micros(4));
    assert!(net.trace().is_empty());
    net.run_for(Duration::from_micros(100)).unwrap();
    assert_eq!(net.now(), Time::from_micros(104));
    assert_eq!(net.trace()[0].kind, TraceKind::Sent);
    assert_eq!(net.trace()[0].time, Time::from_micros(5));
    assert_eq!(net.stats().timeouts, 1);
    assert_eq!(net.node(1).got.len(), 1);
}

#[test]
fn burst_limit_repolls_at_the_same_instant() {
    let cfg = NetConfig {
        max_burst: 4,
        ..NetConfig::default()
    };
    let mut net = Star::new(2)
        .config(cfg)
        .build(|_, _| Scripted::new())
        .unwrap();
    net.enable_trace();
    let dst = net.host_ip(1);
    for tag in 0..10 {
        net.node_mut(0).out.push_back(Send::data(dst, 100, 0, tag));
    }
    net.run_until_idle(1_000).unwrap();
    let sent: Vec<Time> = net
        .trace()
        .iter()
        .filter(|e| e.kind == TraceKind::Sent)
        .map(|e| e.time)
        .collect();
    assert_eq!(sent, [Time::ZERO; 10]);
    assert_eq!(net.node(1).tags(), (0..10).collect::<Vec<_>>());
}

#[test]
fn unknown_destination_is_dropped_as_no_route() {
    let mut net = star(2, 1, LinkSpec::default());
    let nowhere = "192.168.1.1".parse().unwrap();
    net.node_mut(0)
        .out
        .push_back(Send::data(nowhere, 100, 0, 1));
    net.run_until_idle(100).unwrap();
    assert_eq!(net.stats().dropped.no_route, 1);
    assert_eq!(net.stats().in_flight(), 0);
}

#[test]
fn observer_sees_packet_bytes() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = star(2, 1, LinkSpec::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    net.set_observer(move |e, bytes| {
        if e.kind == TraceKind::Delivered {
            s.borrow_mut().push((e.packet_type, bytes[7]));
        }
    });
    let dst = net.host_ip(1);
    net.node_mut(0).out.push_back(Send::data(dst, 100, 0, 9));
    net.run_until_idle(100).unwrap();
    assert_eq!(*seen.borrow(), [(Some(PacketType::Data), 9)]);
}

/// Tag layout for the routing tests: source, destination, sequence.
fn route_tag(src: usize, dst: usize, seq: usize) -> u64 {
    (src as u64) << 40 | (dst as u64) << 20 | seq as u64
}

fn two_tier_run(ecmp: Ecmp) -> (Network<Scripted>, TwoTier) {
    let topo = TwoTier::new(2, 4, 2).config(NetConfig {
        seed: 21,
        ecmp,
        ..NetConfig::default()
    });
    let mut net = topo.clone().build(|_, _| Scripted::new()).unwrap();
    let hosts = net.num_hosts();
    for src in 0..hosts {
        for dst in (0..hosts).filter(|&d| d != src) {
            for seq in 0..50 {
                let t = Time::from_nanos(100 * seq as u64);
                let p = Send::data(host_ip(dst), 1000, 0, route_tag(src, dst, seq));
                net.node_mut(src).at(t, p);
            }
        }
    }
    net.run_until_idle(1_000_000).unwrap();
    (net, topo)
}

#[test]
fn two_tier_routes_every_packet_to_its_host_spraying_over_both_aggregation_switches() {
    let (net, topo) = two_tier_run(Ecmp::Spray);
    let hosts = net.num_hosts();
    assert_eq!((hosts, net.num_switches()), (8, 4));
    for h in 0..hosts {
        let got = &net.node(h).got;
        assert_eq!(got.len(), 7 * 50, "host {h}");
        for g in got {
            assert_eq!((g.tag >> 20) & 0xFFFFF, h as u64, "misrouted to host {h}");
            let src = (g.tag >> 40) as usize;
            assert_eq!(g.from, host_ip(src));
        }
    }
    // Each rack sends 4 × 4 × 50 = 800 packets to the other; intra-rack traffic never
    // leaves the ToR.
    let inter = 2 * 4 * 4 * 50;
    let intra = 2 * 4 * 3 * 50;
    assert_eq!(net.stats().transmissions, (4 * inter + 2 * intra) as u64);
    for rack in 0..2 {
        let tor = topo.tor(rack);
        let mut up = Vec::new();
        for a in 0..2 {
            let port = net.port_between(tor, topo.aggregation_switch(a)).unwrap();
            up.push(net.port_stats(port).packets);
        }
        assert_eq!(up.iter().sum::<u64>(), 800);
        // Spraying: both uplinks used, roughly evenly (binomial, σ ≈ 14).
        assert!(
            up.iter().all(|&c| (320..=480).contains(&c)),
            "rack {rack}: {up:?}"
        );
    }
    // Spraying reorders some packets of a pair; the network still delivers them all.
    assert_eq!(net.stats().in_flight(), 0);
}

#[test]
fn flow_hash_keeps_each_host_pair_on_one_path_and_in_order() {
    let (net, topo) = two_tier_run(Ecmp::FlowHash);
    for h in 0..net.num_hosts() {
        let got = &net.node(h).got;
        assert_eq!(got.len(), 350);
        for src in 0..net.num_hosts() {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|g| (g.tag >> 40) as usize == src)
                .map(|g| g.tag & 0xFFFFF)
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{src} -> {h}");
        }
    }
    // Both uplinks of each ToR still carry some pairs.
    for rack in 0..2 {
        let used = (0..2)
            .filter(|&a| {
                let p = net
                    .port_between(topo.tor(rack), topo.aggregation_switch(a))
                    .unwrap();
                net.port_stats(p).packets > 0
            })
            .count();
        assert_eq!(used, 2, "rack {rack}");
    }
}

#[test]
fn topology_builder_rejects_bad_topologies() {
    use homa_sim::{BuildError, TopologyBuilder};
    let mut b = TopologyBuilder::new(NetConfig::default());
    let h0 = b.add_host(host_ip(0), Scripted::new());
    b.add_host(host_ip(0), Scripted::new());
    assert_eq!(b.build().err(), Some(BuildError::DuplicateIp(host_ip(0))));

    let mut b = TopologyBuilder::new(NetConfig::default());
    let h0b = b.add_host(host_ip(0), Scripted::new());
    assert_eq!(h0, h0b);
    b.link(h0b, Device::Switch(3), LinkSpec::default());
    assert_eq!(
        b.build().err(),
        Some(BuildError::UnknownDevice(Device::Switch(3)))
    );

    let mut b = TopologyBuilder::new(NetConfig::default());
    let h = b.add_host(host_ip(0), Scripted::new());
    let s = b.add_switch();
    b.link(h, s, LinkSpec::new(0, Duration::ZERO));
    assert_eq!(b.build().err(), Some(BuildError::ZeroRate(h, s)));
}

#[test]
fn node_mut_polls_the_node_at_the_current_time() {
    let mut net = star(3, 1, LinkSpec::default());
    assert_eq!(
        net.host_ip(2),
        "10.0.0.3".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(net.host_index(host_ip(1)), Some(1));
    net.enable_trace();
    net.run_for(Duration::from_micros(7)).unwrap();
    let dst = net.host_ip(2);
    net.node_mut(0).out.push_back(Send::data(dst, 100, 0, 1));
    net.run_until(|n| !n.node(2).got.is_empty(), 100).unwrap();
    assert_eq!(net.trace()[0].time, Time::from_micros(7));
    // An explicit poll sends at once, before any step.
    net.node_mut(1).out.push_back(Send::data(dst, 100, 0, 2));
    net.poll(1);
    assert_eq!(net.stats().packets_sent, 2);
}

#[test]
fn port_buffer_can_be_changed_at_run_time() {
    let mut net = star(2, 1, LinkSpec::default());
    let port = net
        .port_between(Device::Host(0), Device::Switch(0))
        .unwrap();
    assert_eq!(
        net.port_endpoints(port),
        (Device::Host(0), Device::Switch(0))
    );
    net.set_port_buffer(port, Some(0));
    let dst = net.host_ip(1);
    for tag in 0..5 {
        net.node_mut(0).out.push_back(Send::data(dst, 100, 2, tag));
    }
    net.run_until_idle(1_000).unwrap();
    // Only the packet that found the port idle got through.
    assert_eq!(net.node(1).tags(), [0]);
    assert_eq!(net.port_stats(port).drops_by_priority[2], 4);
}

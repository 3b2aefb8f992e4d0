//! Properties over random scenarios: packets are conserved, and runs replay exactly.

mod common;

use core::time::Duration;

use common::{Scripted, Send};
use homa_proto::Time;
use homa_sim::{host_ip, FaultRule, FaultSite, LinkSpec, NetConfig, Network, Star};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    hosts: usize,
    loss: f64,
    dup: f64,
    reorder: f64,
    site: FaultSite,
    buffer: Option<u64>,
    /// (src, dst, time in ns, len, prio)
    sends: Vec<(usize, usize, u64, usize, u8)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..6).prop_flat_map(|hosts| {
        (
            any::<u64>(),
            0.0..0.3f64,
            0.0..0.3f64,
            0.0..0.3f64,
            prop_oneof![
                Just(FaultSite::HostEgress),
                Just(FaultSite::HostIngress),
                Just(FaultSite::EveryEgress)
            ],
            prop::option::of(2_000u64..20_000),
            prop::collection::vec(
                (0..hosts, 0..hosts, 0u64..50_000, 12usize..1480, 0u8..8),
                1..200,
            ),
        )
            .prop_map(
                move |(seed, loss, dup, reorder, site, buffer, sends)| Scenario {
                    seed,
                    hosts,
                    loss,
                    dup,
                    reorder,
                    site,
                    buffer,
                    sends,
                },
            )
    })
}

fn run(s: &Scenario) -> Network<Scripted> {
    let link = LinkSpec {
        buffer_bytes: s.buffer,
        ..LinkSpec::default()
    };
    let mut net = Star::new(s.hosts)
        .link(link)
        .config(NetConfig::with_seed(s.seed))
        .build(|_, _| Scripted::echo(3, 5))
        .unwrap();
    net.enable_trace();
    net.add_fault(FaultRule::loss(s.loss).at(s.site));
    net.add_fault(FaultRule::duplicate(s.dup).at(s.site));
    net.add_fault(FaultRule::reorder(s.reorder, Duration::from_micros(3)).at(s.site));
    let mut sends = s.sends.clone();
    sends.sort_by_key(|&(_, _, t, _, _)| t);
    for (i, &(src, dst, t, len, prio)) in sends.iter().enumerate() {
        let p = Send::data(host_ip(dst), len, prio, i as u64);
        net.node_mut(src).at(Time::from_nanos(t), p);
    }
    net.run_until_idle(1_000_000).unwrap();
    net
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn packets_are_conserved_and_runs_replay(s in scenario()) {
        let net = run(&s);
        let st = net.stats();
        prop_assert_eq!(st.in_flight(), 0);
        prop_assert_eq!(st.packets_sent + st.duplicated, st.packets_delivered + st.dropped.total());
        let received: usize = net.nodes().map(|n| n.got.len()).sum();
        prop_assert_eq!(received as u64, st.packets_delivered);
        prop_assert_eq!(st.sent_by_priority.iter().sum::<u64>(), st.packets_sent);
        let again = run(&s);
        prop_assert_eq!(net.trace(), again.trace());
        prop_assert_eq!(net.stats(), again.stats());
    }
}

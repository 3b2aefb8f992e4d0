//! Loss recovery and RPC lifetime (PROTOCOL.md 4): the engine on a lossy, duplicating,
//! reordering test network, silent and vanished peers, restarts, slow servers and an
//! exhausted receive pool.

mod apps;

use std::time::Duration;

use apps::*;
use homa_proto::engine::{Engine, EngineOptions, RpcError};
use homa_proto::wire::PacketType;
use homa_proto::Time;
use homa_sim::rng::Rng;
use homa_sim::{FaultRule, Filter};

fn sent(net: &Net, ty: PacketType) -> u64 {
    net.stats().sent_by_type[usize::from(ty.code() - 0x10)]
}

/// 1000 RPCs from 4 clients at random times over 100 ms: mostly small, some needing
/// grants each way.
fn thousand_rpcs(net: &mut Net, seed: u64) {
    let mut rng = Rng::new(seed);
    let server = server_addr(net);
    for i in 1..=4 {
        let c = client_mut(net, i);
        let mut at = Time::ZERO;
        for _ in 0..250 {
            at += Duration::from_micros(rng.below(800));
            let request = match rng.below(10) {
                0 => request_for_response(50_000 + rng.below(150_000) as u32, rng.next_u64() as u8),
                1 => {
                    let len = 40_000 + rng.below(160_000) as usize;
                    let mut r = random_bytes(&mut rng, len);
                    r[0] = 0;
                    r
                }
                _ => {
                    let len = 1 + rng.below(3000) as usize;
                    let mut r = random_bytes(&mut rng, len);
                    r[0] = 0;
                    r
                }
            };
            c.script.push_back((at, server, request));
        }
    }
}

fn check_all_complete(net: &Net, rpcs: usize) {
    let done: usize = (1..net.num_hosts())
        .map(|i| client(net, i).done.len())
        .sum();
    let failed: Vec<_> = (1..net.num_hosts())
        .flat_map(|i| client(net, i).failed.clone())
        .collect();
    assert!(failed.is_empty(), "failed RPCs: {failed:?}");
    assert_eq!(done, rpcs);
    let s = server(net);
    assert_eq!(s.deliveries.len(), rpcs, "every request reached the server");
    check_clean(net);
}

/// Loss of probability `p` on every packet type, in both directions.
fn lossy_run(p: f64, seed: u64) {
    let mut net = Setup::new(4, seed).build();
    let ids: Vec<_> = PacketType::ALL
        .iter()
        .map(|&ty| net.add_fault(FaultRule::loss(p).filter(Filter::any().packet_type(ty))))
        .collect();
    thousand_rpcs(&mut net, seed);
    run_to_completion(&mut net);
    // Let the last acks settle so the server state drains too.
    net.run_for(Duration::from_millis(300)).unwrap();
    check_all_complete(&net, 1000);
    // Every type of which at least 10 losses were expected saw some (the chance of none
    // is then below 1 in 20000). Across the three loss rates every type sent is hit.
    let mut hit = Vec::new();
    for (ty, id) in PacketType::ALL.iter().zip(ids) {
        let lost = net.fault_counts(id).expect("rule exists").fired;
        if sent(&net, *ty) as f64 * p >= 10.0 {
            assert!(lost > 0, "no {ty} was lost");
        }
        if lost > 0 {
            hit.push(*ty);
        }
    }
    eprintln!("loss {p}: packet types lost: {hit:?}");
    assert_eq!(net.node(SERVER).engine.rpc_count(), 0, "server state freed");
}

#[test]
fn one_percent_loss_on_every_packet_type_loses_nothing() {
    lossy_run(0.01, 11);
}

#[test]
fn ten_percent_loss_on_every_packet_type_loses_nothing() {
    lossy_run(0.10, 12);
}

#[test]
fn thirty_percent_loss_on_every_packet_type_loses_nothing() {
    lossy_run(0.30, 13);
}

#[test]
fn duplication_and_reordering_change_nothing() {
    let mut net = Setup::new(4, 14).build();
    net.add_fault(FaultRule::duplicate(0.10));
    net.add_fault(FaultRule::reorder(0.20, Duration::from_micros(200)));
    thousand_rpcs(&mut net, 14);
    run_to_completion(&mut net);
    net.run_for(Duration::from_millis(300)).unwrap();
    check_all_complete(&net, 1000);
    assert!(net.stats().duplicated > 1000 && net.stats().delayed > 1000);
}

#[test]
fn a_silent_server_makes_the_client_time_out_after_timeout_ticks() {
    let mut net = Setup::new(1, 15).build();
    let server_ip = net.host_ip(SERVER);
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().from(server_ip)));
    let t0 = net.now();
    send(&mut net, 1, vec![5; 1000]);
    run_to_completion(&mut net);
    let c = client(&net, 1);
    assert_eq!(c.failed.len(), 1);
    assert_eq!(c.failed[0].error, RpcError::Timeout);
    let waited = net.now() - t0;
    // 100 ticks of silence, the first counted at the first tick after sending.
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(102),
        "{waited:?}"
    );
    // It probed every 5 ms in between: 19 RESEND rounds.
    assert_eq!(net.node(1).engine.stats().sent_by_type[2], 19);
}

#[test]
fn a_vanished_client_lets_the_server_free_its_rpcs() {
    let mut net = Setup::new(2, 16).build();
    let gone = net.host_ip(1);
    // Client 1 sends a large request and vanishes after 20 us (mid-request); client 2's
    // RPC completes, then client 2 vanishes before acknowledging it.
    let mut big = vec![1; 500_000];
    big[0] = 0;
    send(&mut net, 1, big);
    send(&mut net, 2, vec![2; 100]);
    net.run_for(Duration::from_micros(20)).unwrap();
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().from(gone)));
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().to(gone)));
    net.run_until(|n| client(n, 2).done.len() == 1, MAX_STEPS)
        .unwrap();
    let other = net.host_ip(2);
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().from(other)));
    net.add_fault(FaultRule::loss(1.0).filter(Filter::any().to(other)));
    assert_eq!(net.node(SERVER).engine.rpc_count(), 2);
    net.run_for(Duration::from_millis(150)).unwrap();
    let s = &net.node(SERVER).engine;
    assert_eq!(s.rpc_count(), 0, "both RPCs freed");
    assert_eq!(s.stats().timeouts, 1, "the incomplete request timed out");
    assert_eq!(
        s.stats().unacknowledged_discards,
        1,
        "the unacknowledged response was dropped"
    );
    assert!(s.pool().is_idle(), "the partial request's bpages are back");
}

#[test]
fn rpc_unknown_after_a_server_restart_makes_the_client_restart_the_request() {
    let mut setup = Setup::new(1, 17);
    setup.server.delay = Duration::from_millis(2);
    let mut net = setup.build();
    let mut request = vec![3; 20_000];
    request[0] = 0;
    send(&mut net, 1, request);
    // The whole request arrives; the server starts computing...
    net.run_until(|n| server(n).deliveries.len() == 1, MAX_STEPS)
        .unwrap();
    // ...and its process restarts: every RPC is gone, and so is the work in progress.
    let fresh = Engine::new(
        config(),
        EngineOptions::server(SERVER_PORT, 99),
        vec![0; 16 << 20],
    )
    .unwrap();
    let host = net.node_mut(SERVER);
    host.engine = fresh;
    host.app = Role::Server(Server::default());
    run_to_completion(&mut net);
    // The client's probe got RPC_UNKNOWN, it sent the request again, the new server ran it.
    let c = client(&net, 1);
    assert_eq!(c.done.len(), 1, "completed after the restart");
    assert!(c.failed.is_empty());
    assert_eq!(net.node(1).engine.stats().restarts, 1);
    assert_eq!(
        net.node(SERVER).engine.stats().sent_by_type[3],
        1,
        "one RPC_UNKNOWN"
    );
    assert_eq!(server(&net).deliveries.len(), 1);
    check_clean(&net);
}

#[test]
fn busy_keeps_a_slow_server_alive_for_ten_seconds() {
    let mut setup = Setup::new(1, 18);
    setup.server.delay = Duration::from_secs(10);
    let mut net = setup.build();
    send(&mut net, 1, vec![4; 2000]);
    run_to_completion(&mut net);
    let c = client(&net, 1);
    assert!(c.failed.is_empty(), "{:?}", c.failed);
    assert_eq!(c.done.len(), 1);
    let rtt = c.done[0].completed - c.done[0].sent;
    assert!(
        rtt >= Duration::from_secs(10) && rtt < Duration::from_millis(10_010),
        "{rtt:?}"
    );
    // Probed every 5 ms, answered with BUSY each time.
    let busy = net.node(SERVER).engine.stats().sent_by_type[4];
    assert!(busy >= 1990, "{busy} BUSY packets");
    check_clean(&net);
}

#[test]
fn receive_pool_exhaustion_stalls_and_recovers_with_nothing_lost() {
    let mut setup = Setup::new(6, 19);
    // 20 bpages: room for two 600 KB requests at a time.
    setup.server_region = 20 * 65536;
    setup.server.hold = Duration::from_millis(1);
    let mut net = setup.build();
    let mut rng = Rng::new(19);
    for i in 1..=6 {
        let mut request = random_bytes(&mut rng, 600_000);
        request[0] = 0;
        send(&mut net, i, request);
    }
    run_to_completion(&mut net);
    let stalls = net.node(SERVER).engine.stats().buffer_stalls;
    assert!(stalls >= 4, "{stalls} stalls");
    assert!((1..=6).all(|i| client(&net, i).done.len() == 1 && client(&net, i).failed.is_empty()));
    assert_eq!(server(&net).deliveries.len(), 6);
    check_clean(&net);
}

//! The engine on the deterministic test network: RPCs of every size, acks.

mod apps;

use std::time::Duration;

use apps::*;
use homa_proto::wire::PacketType;
use homa_sim::rng::Rng;

fn sent(net: &Net, ty: PacketType) -> u64 {
    net.stats().sent_by_type[usize::from(ty.code() - 0x10)]
}

#[test]
fn small_rpc_completes() {
    let mut net = Setup::new(1, 1).build();
    send(&mut net, 1, b"hello".to_vec());
    run_to_completion(&mut net);
    let c = client(&net, 1);
    assert_eq!(c.done.len(), 1);
    assert!(c.failed.is_empty());
    let rtt = c.done[0].completed - c.done[0].sent;
    // Two packets through a switch (4 hops of 1 us plus serialisation): a few us.
    assert!(rtt < Duration::from_micros(10), "rtt {rtt:?}");
    assert_eq!(sent(&net, PacketType::Grant), 0, "nothing to grant");
    check_clean(&net);
}

#[test]
fn megabyte_request_and_response_are_granted() {
    let mut net = Setup::new(1, 2).build();
    let mut rng = Rng::new(2);
    let mut request = random_bytes(&mut rng, 1_000_000);
    request[0] = 0; // not a response-length request: the response is the bytes reversed
    send(&mut net, 1, request);
    run_to_completion(&mut net);
    let c = client(&net, 1);
    assert_eq!(c.done.len(), 1);
    assert_eq!(
        (c.done[0].request_len, c.done[0].response_len),
        (1_000_000, 1_000_000)
    );
    // Both directions need grants beyond the 40000 unscheduled bytes.
    assert!(
        net.node(SERVER).engine.stats().sent_by_type[1] > 0,
        "server granted the request"
    );
    assert!(
        net.node(1).engine.stats().sent_by_type[1] > 0,
        "client granted the response"
    );
    // 2 MB at 10 Gbit/s is 1.6 ms; grants keep the pipe full, so well under 3 ms.
    let rtt = c.done[0].completed - c.done[0].sent;
    assert!(rtt < Duration::from_millis(3), "rtt {rtt:?}");
    check_clean(&net);
}

#[test]
fn lengths_sampled_across_1_to_1_000_000_arrive_intact() {
    let mut net = Setup::new(3, 3).build();
    let mut rng = Rng::new(3);
    let server = server_addr(&net);
    let mut total = 0;
    for i in 1..=3 {
        let mut at = net.now();
        for _ in 0..60 {
            // Log-uniform lengths, plus the edges.
            let len = match rng.below(20) {
                0 => 1,
                1 => 1_000_000,
                _ => (10f64.powf(rng.next_f64() * 6.0)).round().clamp(1.0, 1e6) as usize,
            };
            let mut request = random_bytes(&mut rng, len);
            if rng.chance(0.3) {
                let resp = 1 + rng.below(1_000_000) as u32;
                request = apps::request_for_response(resp, rng.next_u64() as u8);
            } else if request[0] == 0xFF {
                request[0] = 0;
            }
            at += Duration::from_micros(rng.below(200));
            client_mut(&mut net, i)
                .script
                .push_back((at, server, request));
            total += 1;
        }
    }
    run_to_completion(&mut net);
    let done: usize = (1..=3).map(|i| client(&net, i).done.len()).sum();
    assert_eq!(done, total);
    assert!((1..=3).all(|i| client(&net, i).failed.is_empty()));
    let sizes: Vec<usize> = (1..=3)
        .flat_map(|i| client(&net, i).done.iter().map(|d| d.response_len))
        .collect();
    assert!(sizes.contains(&1) && sizes.iter().any(|&s| s > 500_000));
    check_clean(&net);
}

#[test]
fn an_idle_client_acks_unasked_and_the_server_frees_the_rpc() {
    let mut net = Setup::new(1, 4).build();
    send(&mut net, 1, vec![1; 100]);
    run_to_completion(&mut net);
    assert_eq!(
        net.node(SERVER).engine.rpc_count(),
        1,
        "kept until the client acks"
    );
    // No more traffic: after a whole tick the client sends its pending ack itself,
    // before the server would ask (NEED_ACK from 2 ticks after the response).
    net.run_for(Duration::from_millis(5)).unwrap();
    assert_eq!(sent(&net, PacketType::Ack), 1);
    assert_eq!(sent(&net, PacketType::NeedAck), 0);
    assert_eq!(net.node(SERVER).engine.rpc_count(), 0);
    assert_eq!(net.node(SERVER).engine.stats().acked_rpcs, 1);
    // Nothing keeps going after that.
    let before = net.stats().packets_sent;
    net.run_for(Duration::from_millis(20)).unwrap();
    assert_eq!(net.stats().packets_sent, before);
    check_clean(&net);
}

#[test]
fn need_ack_is_answered_when_the_clients_own_ack_is_lost() {
    let mut net = Setup::new(1, 4).build();
    // The client's unasked ACK never arrives.
    net.add_fault(
        homa_sim::FaultRule::loss(1.0)
            .filter(homa_sim::Filter::any().packet_type(PacketType::Ack))
            .limit(1),
    );
    send(&mut net, 1, vec![1; 100]);
    run_to_completion(&mut net);
    net.run_for(Duration::from_millis(10)).unwrap();
    // So the server asks, and the client's answer frees the RPC.
    assert!(sent(&net, PacketType::NeedAck) >= 1);
    assert_eq!(sent(&net, PacketType::Ack), 2);
    assert_eq!(net.node(SERVER).engine.rpc_count(), 0);
    assert_eq!(net.node(SERVER).engine.stats().acked_rpcs, 1);
    check_clean(&net);
}

#[test]
fn steady_traffic_carries_acks_piggy_backed() {
    let mut net = Setup::new(1, 5).build();
    let server = server_addr(&net);
    let c = client_mut(&mut net, 1);
    for k in 0..200u64 {
        let at = homa_proto::Time::from_micros(20 * k);
        c.script.push_back((at, server, vec![k as u8; 300]));
    }
    run_to_completion(&mut net);
    // Every RPC but the last few was acked by a later request's DATA, with no ACK or
    // NEED_ACK packets while traffic flowed.
    let acked = net.node(SERVER).engine.stats().acked_rpcs;
    assert!(acked >= 195, "acked {acked}");
    assert_eq!(sent(&net, PacketType::Ack), 0);
    assert_eq!(sent(&net, PacketType::NeedAck), 0);
    check_clean(&net);
}

#[test]
fn more_than_five_completions_without_traffic_overflow_into_an_ack_packet() {
    let mut net = Setup::new(1, 6).build();
    // Six concurrent RPCs: no DATA to the server follows their completions, so the sixth
    // completion sends the five pending acks in an ACK packet.
    for k in 0..6u8 {
        send(&mut net, 1, vec![k; 50]);
    }
    run_to_completion(&mut net);
    assert_eq!(sent(&net, PacketType::Ack), 1);
    // Let the ACK arrive (well before any NEED_ACK would be sent).
    net.run_for(Duration::from_micros(100)).unwrap();
    assert_eq!(sent(&net, PacketType::NeedAck), 0);
    assert_eq!(net.node(SERVER).engine.stats().acked_rpcs, 6);
    assert_eq!(net.node(SERVER).engine.rpc_count(), 0);
    check_clean(&net);
}

#[test]
fn after_ten_thousand_rpcs_every_bpage_is_back() {
    let mut net = Setup::new(4, 7).build();
    let server = server_addr(&net);
    let mut rng = Rng::new(7);
    for i in 1..=4 {
        let c = client_mut(&mut net, i);
        for k in 0..2500u64 {
            let len = 1 + rng.below(3000) as usize;
            let at = homa_proto::Time::from_micros(5 * k + rng.below(5));
            let mut req = vec![(k % 251) as u8; len];
            req[0] = 1;
            c.script.push_back((at, server, req));
        }
    }
    run_to_completion(&mut net);
    let done: usize = (1..=4).map(|i| client(&net, i).done.len()).sum();
    assert_eq!(done, 10_000);
    check_clean(&net);
}

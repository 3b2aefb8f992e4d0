//! Receiver-driven scheduling (PROTOCOL.md 3.3, 3.4): SRPT, scheduled priorities, FIFO
//! grants and overcommitment, observed on the test network.

mod apps;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use apps::*;
use homa_proto::wire::{PacketType, Repr};
use homa_proto::Time;
use homa_sim::TraceKind;

/// Records the priority of every GRANT the network carries.
fn record_grant_levels(net: &mut Net) -> Rc<RefCell<Vec<u8>>> {
    let levels = Rc::new(RefCell::new(Vec::new()));
    let sink = levels.clone();
    net.set_observer(move |e, bytes| {
        if e.kind == TraceKind::Sent {
            if let Ok(Repr::Grant(g)) = Repr::parse(bytes) {
                sink.borrow_mut().push(g.priority);
            }
        }
    });
    levels
}

#[test]
fn short_messages_finish_before_a_long_one_under_srpt() {
    let mut net = Setup::new(5, 21).build();
    let server = server_addr(&net);
    send(&mut net, 1, one_way(1_000_000, 1));
    // 40 short requests from four other clients while the long one is in flight.
    for i in 2..=5 {
        let c = client_mut(&mut net, i);
        for k in 0..10u64 {
            let at = Time::from_micros(50 + 40 * k + i as u64);
            c.script
                .push_back((at, server, one_way(2000 + 1000 * k as usize, 2)));
        }
    }
    run_to_completion(&mut net);
    let long = client(&net, 1).done[0];
    let shorts: Vec<_> = (2..=5).flat_map(|i| client(&net, i).done.clone()).collect();
    assert_eq!(shorts.len(), 40);
    for s in &shorts {
        assert!(
            s.completed < long.completed,
            "short {s:?} finished after the long one"
        );
        let rtt = s.completed - s.sent;
        // Alone, a 12 KB RPC takes ~15 us here; the long message must not delay it much.
        assert!(rtt < Duration::from_micros(60), "short RPC took {rtt:?}");
    }
    check_clean(&net);
}

#[test]
fn scheduled_priorities_follow_rank_and_the_number_of_active_messages() {
    // Alone: one active message, so its grants use the lowest level.
    let mut net = Setup::new(1, 22).build();
    let levels = record_grant_levels(&mut net);
    send(&mut net, 1, one_way(1_000_000, 1));
    run_to_completion(&mut net);
    let levels = levels.borrow();
    assert!(levels.len() > 5);
    assert!(
        levels.iter().all(|&p| p == 0),
        "one active message: level 0"
    );

    // Five messages of different lengths at once. For every SRPT GRANT (FIFO grants use
    // level 6 and are left out), rebuild the receiver's state from the DATA it had
    // received by then and compute PROTOCOL.md 3.3 step 6 independently: rank = number of
    // other incomplete messages with fewer bytes left (ties to the older), N = incomplete
    // messages, level = max(0, 3 - rank - max(0, 4 - N)).
    let mut net = Setup::new(5, 23).build();
    let server_ip = net.host_ip(SERVER);
    let log = Rc::new(RefCell::new(Vec::new()));
    let sink = log.clone();
    net.set_observer(move |e, bytes| {
        let data = e.kind == TraceKind::Delivered && e.to == server_ip;
        let grant = e.kind == TraceKind::Sent && e.from == server_ip;
        if let (true, Ok(Repr::Data(d))) = (data, Repr::parse(bytes)) {
            sink.borrow_mut()
                .push((e.from, Some(d.payload.len() as u32), 0));
        } else if let (true, Ok(Repr::Grant(g))) = (grant, Repr::parse(bytes)) {
            sink.borrow_mut().push((e.to, None, g.priority));
        }
    });
    let lengths: HashMap<IpAddr, u32> = (1..=5)
        .map(|i| (net.host_ip(i), 250_000 + 150_000 * i as u32))
        .collect();
    for i in 1..=5 {
        let len = lengths[&net.host_ip(i)] as usize;
        send(&mut net, i, one_way(len, i as u8));
    }
    run_to_completion(&mut net);
    let mut received: HashMap<IpAddr, u32> = HashMap::new();
    let mut birth: Vec<IpAddr> = Vec::new();
    let mut levels = [0u32; 8];
    for &(host, payload, priority) in log.borrow().iter() {
        if let Some(n) = payload {
            if !birth.contains(&host) {
                birth.push(host);
            }
            *received.entry(host).or_insert(0) += n;
            continue;
        }
        if priority == 6 {
            continue;
        }
        let left = |h: &IpAddr| lengths[h] - received.get(h).copied().unwrap_or(0);
        let incomplete: Vec<IpAddr> = birth.iter().copied().filter(|h| left(h) > 0).collect();
        let order = |h: &IpAddr| (left(h), birth.iter().position(|b| b == h));
        let rank = incomplete
            .iter()
            .filter(|o| order(o) < order(&host))
            .count() as i32;
        let n = incomplete.len() as i32;
        let expected = (3 - rank - (4 - n).max(0)).max(0) as u8;
        let state: Vec<_> = incomplete
            .iter()
            .map(|h| (h.to_string(), left(h)))
            .collect();
        assert_eq!(
            priority, expected,
            "GRANT to {host}: rank {rank} of {n}: {state:?}"
        );
        levels[usize::from(priority)] += 1;
    }
    // Non-vacuous: every scheduled level was used.
    assert!(
        levels[..4].iter().all(|&k| k > 0),
        "grants per level: {levels:?}"
    );
}

/// Bytes of DATA from `from` delivered to the server until `until`.
fn delivered_from(net: &mut Net, from: IpAddr) -> Rc<RefCell<u64>> {
    let total = Rc::new(RefCell::new(0u64));
    let sink = total.clone();
    net.set_observer(move |e, _| {
        if e.kind == TraceKind::Delivered
            && e.from == from
            && e.packet_type == Some(PacketType::Data)
        {
            *sink.borrow_mut() += u64::from(e.len);
        }
    });
    total
}

/// A 1 MB request from client 1 competing with endless 60 KB requests from eight others
/// (two in flight each: far more than the server's link carries, and more messages than
/// the active set holds); returns the bytes of the long request delivered in 20 ms.
fn long_message_progress(grant_fifo_fraction: u32) -> u64 {
    let mut setup = Setup::new(9, 24);
    setup.config = config()
        .to_builder()
        .grant_fifo_fraction(grant_fifo_fraction)
        .build()
        .unwrap();
    let mut net = setup.build();
    let server = server_addr(&net);
    let long_from = net.host_ip(1);
    let delivered = delivered_from(&mut net, long_from);
    send(&mut net, 1, one_way(1_000_000, 1));
    for i in 2..=9 {
        let c = client_mut(&mut net, i);
        c.repeat = Some((server, one_way(60_000, i as u8)));
        c.repeat_until = Time::from_millis(20);
        for k in 0..2 {
            c.script
                .push_back((Time::from_micros(1 + k), server, one_way(60_000, i as u8)));
        }
    }
    net.run_for(Duration::from_millis(20)).unwrap();
    let shorts: usize = (2..=9).map(|i| client(&net, i).done.len()).sum();
    // 300 x 60 KB in 20 ms is over 7 Gbit/s of the server's 10 Gbit/s link.
    assert!(
        shorts > 300,
        "the short traffic kept the server busy ({shorts} RPCs)"
    );
    let bytes = *delivered.borrow();
    bytes
}

#[test]
fn fifo_grants_keep_a_long_message_moving_under_endless_short_traffic() {
    let with_fifo = long_message_progress(50);
    let without = long_message_progress(0);
    eprintln!(
        "long message bytes delivered in 20 ms: {with_fifo} with FIFO grants, {without} without"
    );
    // Without FIFO grants the long message starves behind the short ones; with them it
    // gets its share (5 % of 10 Gbit/s over 20 ms is 1.25 MB).
    assert!(with_fifo >= 500_000, "with FIFO grants: {with_fifo} bytes");
    assert!(
        with_fifo >= 2 * without,
        "with {with_fifo}, without {without}"
    );
}

#[test]
fn never_more_than_max_overcommit_messages_are_granted() {
    let mut net = Setup::new(12, 25).build();
    for i in 1..=12 {
        send(&mut net, i, one_way(1_000_000, i as u8));
    }
    let max_incoming = u64::from(config().max_incoming());
    let unsched = 12 * u64::from(config().unsched_bytes());
    let (mut max_active, mut max_total) = (0, 0);
    net.run_until(
        |n| {
            let info = n.node(SERVER).engine.grant_info();
            max_active = max_active.max(info.active);
            max_total = max_total.max(info.total_incoming);
            assert!(info.active <= 8, "{info:?}");
            assert!(info.total_incoming <= max_incoming + unsched, "{info:?}");
            (1..=12).all(|i| client(n, i).finished())
        },
        MAX_STEPS,
    )
    .unwrap();
    assert_eq!(max_active, 8, "the active set filled up");
    assert!(
        max_total > max_incoming / 2,
        "grants were limited by max_incoming ({max_total})"
    );
    check_clean(&net);
}

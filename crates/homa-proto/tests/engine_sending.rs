//! The sending side of the engine driven directly: ids, sender-side SRPT and the pacer
//! (PROTOCOL.md 2.1, 3.5).

use std::net::SocketAddr;

use homa_proto::engine::{Engine, EngineOptions, SendError, Transmit};
use homa_proto::wire::{PacketType, Repr};
use homa_proto::{Config, Time};

fn engine(config: Config, first_id: u64) -> Engine {
    Engine::new(
        config,
        EngineOptions::client(40_000, first_id),
        vec![0; 1 << 20],
    )
    .unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Everything the engine will send at `now`, with the packets' destinations.
fn drain(e: &mut Engine, now: Time) -> Vec<(Transmit, Vec<u8>)> {
    let mut buf = vec![0; e.max_packet_size()];
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        out.push((t, buf[..t.len].to_vec()));
    }
    out
}

#[test]
fn client_ids_are_even_and_advance_by_two() {
    let mut e = engine(Config::default(), 1001);
    let s = addr("10.0.0.2:4000");
    let ids: Vec<u64> = (0..4)
        .map(|_| e.send_request(Time::ZERO, s, vec![1; 10], 0).unwrap())
        .collect();
    assert_eq!(ids, [1000, 1002, 1004, 1006]);
    for (_, p) in drain(&mut e, Time::ZERO) {
        let id = Repr::parse(&p).unwrap().common().sender_id;
        assert_eq!(id % 2, 0, "clients send even ids");
    }
}

#[test]
fn misuse_is_refused_with_a_typed_error() {
    let mut e = engine(Config::default(), 2);
    let now = Time::ZERO;
    let s = addr("10.0.0.2:4000");
    assert_eq!(
        e.send_request(now, s, vec![], 0),
        Err(SendError::EmptyMessage)
    );
    assert_eq!(
        e.send_request(now, s, vec![0; 1_000_001], 0),
        Err(SendError::MessageTooLong { length: 1_000_001 })
    );
    assert_eq!(
        e.send_request(now, addr("10.0.0.2:40000"), vec![1], 0),
        Err(SendError::InvalidDestinationPort { port: 40000 })
    );
    assert!(matches!(
        e.send_request(now, addr("0.0.0.0:4000"), vec![1], 0),
        Err(SendError::InvalidDestinationAddress { .. })
    ));
    assert_eq!(
        e.send_response(now, s, 4, vec![1]),
        Err(SendError::NotARequestId { id: 4 })
    );
    assert_eq!(
        e.send_response(now, s, 5, vec![1]),
        Err(SendError::UnknownRpc { id: 5 })
    );
    e.shutdown();
    assert_eq!(e.send_request(now, s, vec![1], 0), Err(SendError::Shutdown));
    // Each error says what was wrong.
    let msg = SendError::InvalidDestinationPort { port: 40000 }.to_string();
    assert!(msg.contains("40000") && msg.contains("1..=32767"), "{msg}");
}

#[test]
fn the_transmit_buffer_limit_refuses_more_but_accepts_one_large_message() {
    let config = Config::builder().wmem_max(100_000).build().unwrap();
    let mut e = engine(config, 2);
    let s = addr("10.0.0.2:4000");
    // A message larger than the limit is accepted when nothing else is queued...
    e.send_request(Time::ZERO, s, vec![1; 150_000], 0).unwrap();
    // ...but then nothing more until it finishes.
    assert_eq!(
        e.send_request(Time::ZERO, s, vec![1; 10], 0),
        Err(SendError::SendBufferFull {
            queued: 150_000,
            limit: 100_000
        })
    );
}

#[test]
fn sender_srpt_sends_the_message_with_fewest_bytes_left_first() {
    let config = Config::builder().dont_throttle(true).build().unwrap();
    let mut e = engine(config, 2);
    let long = addr("10.0.0.2:4000");
    let short = addr("10.0.0.3:4000");
    e.send_request(Time::ZERO, long, vec![1; 1_000_000], 0)
        .unwrap();
    e.send_request(Time::ZERO, short, vec![2; 5000], 0).unwrap();
    let out = drain(&mut e, Time::ZERO);
    // The short message's 4 packets first, then the long one's 40000 unscheduled bytes.
    let dests: Vec<SocketAddr> = out.iter().map(|(t, _)| t.destination).collect();
    assert_eq!(&dests[..4], [short; 4]);
    assert!(dests[4..].iter().all(|&d| d == long));
    assert_eq!(dests.len(), 4 + 29);
}

#[test]
fn the_pacer_bounds_the_estimated_backlog_and_lets_short_messages_bypass_it() {
    // 10 Gbit/s: a 1480-byte packet plus 62 bytes of framing takes ~1.25 us. Everything
    // unscheduled, so no receiver is needed to keep the message going.
    let config = Config::builder()
        .link_mbps(10_000)
        .unsched_bytes(1_000_000)
        .build()
        .unwrap();
    let mut e = engine(config, 2);
    let t0 = Time::from_millis(1);
    e.send_request(t0, addr("10.0.0.2:4000"), vec![1; 1_000_000], 0)
        .unwrap();
    let burst = drain(&mut e, t0);
    // Packets go out while the estimated backlog is at most 5 us: 5 packets.
    assert_eq!(burst.len(), 5, "packets allowed at once");
    let ready = e.poll_timeout().expect("the pacer wants to be woken");
    assert!(
        ready > t0 && ready < t0 + std::time::Duration::from_micros(2),
        "{ready}"
    );

    // A short message is never deferred, even now.
    e.send_request(t0, addr("10.0.0.3:4000"), vec![2; 500], 0)
        .unwrap();
    let out = drain(&mut e, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.destination, addr("10.0.0.3:4000"));

    // Over 100 us of virtual time, the long message is paced at the link rate.
    let mut now = ready;
    let mut sent = 0;
    while now < t0 + std::time::Duration::from_micros(100) {
        sent += drain(&mut e, now).len();
        now = e.poll_timeout().unwrap();
    }
    // 100 us at 9.9 Gbit/s is about 80 packets of 1542 wire bytes (less the short one).
    assert!((75..=85).contains(&sent), "{sent} packets in 100 us");
}

#[test]
fn control_packets_go_at_the_top_level_and_data_per_the_peers_cutoffs() {
    let config = Config::builder().dont_throttle(true).build().unwrap();
    let mut e = engine(config, 2);
    e.send_request(Time::ZERO, addr("10.0.0.2:4000"), vec![1; 100], 0)
        .unwrap();
    let out = drain(&mut e, Time::ZERO);
    assert_eq!(out[0].0.packet_type, PacketType::Data);
    assert_eq!(
        (out[0].0.priority, out[0].0.tos),
        (6, 0xC0),
        "before any CUTOFFS: level 6"
    );
}

#[test]
fn split_transmits_are_the_same_packets_without_the_copy() {
    // Two engines in the same state: one emits whole packets, the other headers with
    // shared payloads; put together, the packets must be identical, control ones too.
    let mut whole = engine(Config::default(), 10);
    let mut split = engine(Config::default(), 10);
    let s = addr("10.0.0.2:4000");
    for (k, len) in [1usize, 100, 1500, 50_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + k) as u8).collect();
        whole.send_request(Time::ZERO, s, bytes.clone(), 0).unwrap();
        split.send_request(Time::ZERO, s, bytes, 0).unwrap();
    }
    let expected = drain(&mut whole, Time::ZERO);
    let mut buf = vec![0; split.max_packet_size()];
    let mut got = Vec::new();
    while let Some((t, payload)) = split.poll_transmit_split(Time::ZERO, &mut buf) {
        let mut packet = buf[..t.len].to_vec();
        if let Some(p) = &payload {
            assert_eq!(t.packet_type, PacketType::Data);
            assert_eq!(t.len, 56, "only the header is written");
            packet.extend_from_slice(p.as_slice());
        }
        got.push((t, packet));
    }
    assert!(expected.len() > 4);
    assert_eq!(got.len(), expected.len());
    for ((te, pe), (tg, pg)) in expected.iter().zip(&got) {
        assert_eq!(pe, pg);
        assert_eq!(
            (te.destination, te.priority, te.tos, te.packet_type),
            (tg.destination, tg.priority, tg.tos, tg.packet_type)
        );
    }
    assert_eq!(whole.stats().sent_by_type, split.stats().sent_by_type);
}

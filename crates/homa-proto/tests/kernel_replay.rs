//! The reactions of PROTOCOL.md 8.3 that a Linux kernel peer depends on, each fed the
//! exact bytes the kernel sent in `tests/data/*.pcap` (or, where a capture has no such
//! packet, the bytes of the matching section 9.2 vector, which the kernel produces).
//!
//! The engine plays the part of the captures' test peer (10.99.0.1, same ports and ids);
//! each test checks that it answers as a kernel-compatible peer must.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use homa_proto::engine::{Engine, EngineOptions, Event, Message, Transmit};
use homa_proto::wire::{
    fill_checksum, Ack, AckList, AckRepr, CommonRepr, DataRepr, PacketType, Repr, ResendRepr,
    RESEND_ALL,
};
use homa_proto::{Config, Time};
use support::pcap::{load, Frame, KERNEL, PEER};

const KERNEL_IP: IpAddr = IpAddr::V4(KERNEL);
const DEFAULT_CUTOFFS: [u32; 8] = [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200];

/// A packet the engine sent.
struct Sent {
    t: Transmit,
    bytes: Vec<u8>,
}

impl Sent {
    fn repr(&self) -> Repr<'_> {
        Repr::parse(&self.bytes).expect("the engine emits valid packets")
    }
    fn data(&self) -> DataRepr<'_> {
        match self.repr() {
            Repr::Data(d) => d,
            other => panic!("expected DATA, got {other:?}"),
        }
    }
}

/// Drains everything the engine wants to send at `now`. Time does not move: the
/// engines here are built with the pacer off ([`config`]), which these tests do not study.
fn drain(e: &mut Engine, now: &mut Time) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; e.max_packet_size()];
    while let Some(t) = e.poll_transmit(*now, &mut buf) {
        out.push(Sent {
            t,
            bytes: buf[..t.len].to_vec(),
        });
    }
    out
}

/// The kernel's defaults, pacer off.
fn config() -> Config {
    Config::builder().dont_throttle(true).build().unwrap()
}

fn kind(sent: &[Sent]) -> Vec<PacketType> {
    sent.iter().map(|s| s.t.packet_type).collect()
}

fn data_of<'a>(frames: &'a [Frame], src: Ipv4Addr, id: u64) -> Vec<(&'a Frame, DataRepr<'a>)> {
    frames
        .iter()
        .filter(|f| f.src == src)
        .filter_map(|f| match Repr::parse(&f.homa).unwrap() {
            Repr::Data(d) if d.common.sender_id == id => Some((f, d)),
            _ => None,
        })
        .collect()
}

/// The message a side of the capture sent, reassembled by offset.
fn message_of(frames: &[Frame], src: Ipv4Addr, id: u64) -> Vec<u8> {
    let packets = data_of(frames, src, id);
    let length = packets[0].1.message_length as usize;
    let mut msg = vec![0u8; length];
    let mut seen = vec![false; length];
    for (_, d) in &packets {
        let at = d.offset as usize;
        msg[at..at + d.payload.len()].copy_from_slice(d.payload);
        seen[at..at + d.payload.len()].fill(true);
    }
    assert!(seen.iter().all(|&s| s), "capture holds the whole message");
    msg
}

fn find(frames: &[Frame], src: Ipv4Addr, ty: PacketType, id: u64) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| f.src == src)
        .filter(|f| {
            let r = Repr::parse(&f.homa).unwrap();
            r.packet_type() == ty && r.common().sender_id == id
        })
        .collect()
}

fn response(e: &mut Engine) -> Message {
    match e.poll_event() {
        Some(Event::Response(m)) => m,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn request(e: &mut Engine) -> Message {
    match e.poll_event() {
        Some(Event::Request(m)) => m,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The bytes a kernel emits for `repr` from `src` to `dst` (vectors of PROTOCOL.md 9.2 show
/// our emit is byte-exact with the kernel's).
fn kernel_bytes(repr: Repr<'_>, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; repr.buffer_len()];
    repr.emit(&mut b).unwrap();
    fill_checksum(&mut b, IpAddr::V4(src), IpAddr::V4(dst)).unwrap();
    b
}

/// A kernel client at `sport` probes RPC `id` (RESEND of everything at priority 7, as
/// the module sends it) on our server port 4000; returns what the engine sent, each
/// packet checked to be addressed back to that client and RPC.
fn kernel_probe(s: &mut Engine, now: &mut Time, sport: u16, id: u64) -> Vec<Sent> {
    let probe = kernel_bytes(
        Repr::Resend(ResendRepr {
            common: CommonRepr {
                sport,
                dport: 4000,
                sender_id: id,
            },
            offset: 0,
            length: RESEND_ALL,
            priority: 7,
        }),
        KERNEL,
        PEER,
    );
    s.handle_datagram(*now, KERNEL_IP, &probe);
    let out = drain(s, now);
    for p in &out {
        assert_eq!(
            *p.repr().common(),
            CommonRepr {
                sport: 4000,
                dport: sport,
                sender_id: id + 1
            }
        );
    }
    out
}

fn region() -> Vec<u8> {
    vec![0u8; 4 << 20]
}

#[test]
fn kernel_server_small_rpc_cutoffs_are_stored_and_response_delivered() {
    let frames = load("kernel_cap_host_client.pcap");
    let (_, req) = data_of(&frames, PEER, 483_319_180_482)[0];
    let mut now = Time::from_millis(1);
    let mut c = Engine::new(
        config(),
        EngineOptions::client(req.common.sport, req.common.sender_id),
        region(),
    )
    .unwrap();
    let server = SocketAddr::new(KERNEL_IP, 4000);
    let id = c
        .send_request(now, server, req.payload.to_vec(), 99)
        .unwrap();
    assert_eq!(id, 483_319_180_482);

    let out = drain(&mut c, &mut now);
    assert_eq!(kind(&out), [PacketType::Data]);
    let d = out[0].data();
    assert_eq!(d.common, req.common);
    assert_eq!((d.message_length, d.incoming, d.offset), (100, 100, 0));
    assert_eq!(d.payload, req.payload);
    assert_eq!(d.cutoff_version, 0, "no CUTOFFS from the kernel yet");
    assert_eq!(out[0].t.priority, 6, "unscheduled level before CUTOFFS");
    assert_eq!(out[0].t.tos, 0xC0);

    // The kernel's CUTOFFS, then its response.
    let cutoffs = find(&frames, KERNEL, PacketType::Cutoffs, id + 1)[0];
    c.handle_datagram(now, KERNEL_IP, &cutoffs.homa);
    assert!(drain(&mut c, &mut now).is_empty());
    let resp = find(&frames, KERNEL, PacketType::Data, id + 1)[0];
    c.handle_datagram(now, KERNEL_IP, &resp.homa);
    let m = response(&mut c);
    assert_eq!((m.id, m.cookie, m.peer), (id, 99, server));
    assert_eq!(c.message_bytes(&m), message_of(&frames, KERNEL, id + 1));

    // The kernel's DATA carried cutoff_version 0, so we tell it ours.
    let out = drain(&mut c, &mut now);
    assert_eq!(kind(&out), [PacketType::Cutoffs]);
    match out[0].repr() {
        Repr::Cutoffs(co) => {
            assert_eq!(co.unsched_cutoffs, DEFAULT_CUTOFFS);
            assert_eq!(co.cutoff_version, 1);
            assert_eq!(
                co.common,
                CommonRepr {
                    sport: req.common.sport,
                    dport: 4000,
                    sender_id: id
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out[0].t.priority, 7, "control packets at the top level");
    assert_eq!(
        c.rpc_count(),
        0,
        "a delivered response frees the client RPC"
    );

    // The next request uses the kernel's table: 100 bytes -> level 7, version 1 echoed.
    c.send_request(now, server, vec![1; 100], 0).unwrap();
    let out = drain(&mut c, &mut now);
    assert_eq!(out[0].t.priority, 7);
    assert_eq!(out[0].data().cutoff_version, 1);
    // ...and carries the ack for the finished RPC.
    assert_eq!(
        out[0].data().ack,
        Some(Ack {
            client_id: id,
            server_port: 4000
        })
    );
}

#[test]
fn kernel_server_large_rpc_grants_obeyed_response_granted_need_ack_answered() {
    let frames = load("kernel_cap_host_client.pcap");
    let id = 762_242_886_254;
    let (_, first) = data_of(&frames, PEER, id)[0];
    let request_bytes = message_of(&frames, PEER, id);
    let mut now = Time::from_millis(1);
    let mut c = Engine::new(
        config(),
        EngineOptions::client(first.common.sport, id),
        region(),
    )
    .unwrap();
    let server = SocketAddr::new(KERNEL_IP, 4000);
    assert_eq!(
        c.send_request(now, server, request_bytes.clone(), 5)
            .unwrap(),
        id
    );

    // Unscheduled: 28 full 1424-byte packets, then one cut exactly at 40000.
    let out = drain(&mut c, &mut now);
    assert_eq!(out.len(), 29);
    let last = out[28].data();
    assert_eq!(
        (last.offset, last.payload.len(), last.incoming),
        (39_872, 128, 40_000)
    );
    assert!(out
        .iter()
        .all(|s| s.t.priority == 6 && s.t.packet_type == PacketType::Data));

    // The kernel's CUTOFFS and its GRANT (offset 100000, priority 0).
    c.handle_datagram(
        now,
        KERNEL_IP,
        &find(&frames, KERNEL, PacketType::Cutoffs, id + 1)[0].homa,
    );
    let grant = find(&frames, KERNEL, PacketType::Grant, id + 1)[0];
    c.handle_datagram(now, KERNEL_IP, &grant.homa);
    let out = drain(&mut c, &mut now);
    assert_eq!(out.len(), 43, "60000 scheduled bytes in 1424-byte packets");
    assert_eq!(out[0].data().offset, 40_000);
    let end = out.last().unwrap().data();
    assert_eq!(end.offset + end.payload.len() as u32, 100_000);
    for s in &out {
        assert_eq!(
            (s.t.priority, s.t.tos),
            (0, 0),
            "scheduled bytes at the granted level"
        );
        assert_eq!(s.data().cutoff_version, 1);
    }

    // The kernel's response: we tell it our cutoffs and grant the rest.
    let response_packets = data_of(&frames, KERNEL, id + 1);
    let mut sent = Vec::new();
    for (f, _) in &response_packets {
        c.handle_datagram(now, KERNEL_IP, &f.homa);
        sent.extend(drain(&mut c, &mut now));
    }
    let cutoffs = sent
        .iter()
        .filter(|s| s.t.packet_type == PacketType::Cutoffs)
        .count();
    assert_eq!(cutoffs, 1, "rate-limited to one per tick");
    let grants: Vec<_> = sent
        .iter()
        .filter_map(|s| match s.repr() {
            Repr::Grant(g) => Some(g),
            _ => None,
        })
        .collect();
    assert!(
        !grants.is_empty(),
        "a message longer than `incoming` must be granted"
    );
    assert_eq!(
        grants[0].offset, 100_000,
        "window 200000 covers the whole message"
    );
    assert_eq!(
        grants[0].priority, 0,
        "one active message uses the lowest level"
    );
    assert_eq!(grants[0].common.sender_id, id);
    let m = response(&mut c);
    assert_eq!(c.message_bytes(&m), message_of(&frames, KERNEL, id + 1));

    // NEED_ACK from the kernel: answer with an ACK naming the RPC (what the test peer sent).
    let need_ack = find(&frames, KERNEL, PacketType::NeedAck, id + 1)[0];
    c.handle_datagram(now, KERNEL_IP, &need_ack.homa);
    let out = drain(&mut c, &mut now);
    assert_eq!(kind(&out), [PacketType::Ack]);
    let peer_ack = find(&frames, PEER, PacketType::Ack, id)[0];
    for i in [0, 1, 2, 3, 11].into_iter().chain(20..80) {
        assert_eq!(out[0].bytes[i], peer_ack.homa[i], "ACK byte {i}");
    }
}

#[test]
fn kernel_resend_gets_the_overlapping_segments_at_its_priority() {
    let frames = load("kernel_cap_resend.pcap");
    let id = 324_780_423_502;
    let (_, first) = data_of(&frames, PEER, id)[0];
    let mut now = Time::from_millis(1);
    let mut c = Engine::new(
        config(),
        EngineOptions::client(first.common.sport, id),
        region(),
    )
    .unwrap();
    let server = SocketAddr::new(KERNEL_IP, 4000);
    c.send_request(now, server, message_of(&frames, PEER, id), 0)
        .unwrap();
    let out = drain(&mut c, &mut now);
    assert_eq!(out.len(), 4, "5600 bytes in 1424-byte packets");

    c.handle_datagram(
        now,
        KERNEL_IP,
        &find(&frames, KERNEL, PacketType::Cutoffs, id + 1)[0].homa,
    );
    let resend = find(&frames, KERNEL, PacketType::Resend, id + 1)[0];
    match Repr::parse(&resend.homa).unwrap() {
        Repr::Resend(r) => assert_eq!((r.offset, r.length, r.priority), (2800, 1400, 7)),
        other => panic!("{other:?}"),
    }
    c.handle_datagram(now, KERNEL_IP, &resend.homa);
    let out = drain(&mut c, &mut now);
    // [2800, 4200) overlaps our segments [1424, 2848) and [2848, 4272).
    let got: Vec<(u32, usize)> = out
        .iter()
        .map(|s| (s.data().offset, s.data().payload.len()))
        .collect();
    assert_eq!(got, [(1424, 1424), (2848, 1424)]);
    for s in &out {
        let d = s.data();
        assert!(d.retransmit);
        assert_eq!(d.incoming, 4200, "incoming = end of the resent range");
        assert_eq!((s.t.priority, s.t.tos), (7, 0xE0), "the RESEND's priority");
    }

    let resp = find(&frames, KERNEL, PacketType::Data, id + 1)[0];
    c.handle_datagram(now, KERNEL_IP, &resp.homa);
    let m = response(&mut c);
    assert_eq!(m.len(), 200);
}

#[test]
fn kernel_client_is_served_granted_probed_and_acked() {
    let frames = load("kernel_cap_guest_client.pcap");
    let mut now = Time::from_millis(1);
    let mut s = Engine::new(config(), EngineOptions::server(4000, 1000), region()).unwrap();

    // Small request from the kernel (id 2, cutoff_version 0).
    let first = data_of(&frames, KERNEL, 2);
    assert_eq!(first.len(), 1);
    s.handle_datagram(now, KERNEL_IP, &first[0].0.homa);
    let req = request(&mut s);
    assert_eq!((req.id, req.peer), (3, SocketAddr::new(KERNEL_IP, 32768)));
    assert_eq!(s.message_bytes(&req), message_of(&frames, KERNEL, 2));
    let out = drain(&mut s, &mut now);
    assert_eq!(kind(&out), [PacketType::Cutoffs]);
    match out[0].repr() {
        Repr::Cutoffs(co) => {
            assert_eq!(
                co.common,
                CommonRepr {
                    sport: 4000,
                    dport: 32768,
                    sender_id: 3
                }
            );
            assert_eq!(
                (co.unsched_cutoffs, co.cutoff_version),
                (DEFAULT_CUTOFFS, 1)
            );
        }
        other => panic!("{other:?}"),
    }

    // A kernel client probing while we compute gets BUSY.
    let out = kernel_probe(&mut s, &mut now, 32768, 2);
    assert_eq!(kind(&out), [PacketType::Busy]);

    // The response, then NEED_ACK from `request_ack_ticks` after it is fully sent.
    s.release_message(now, &req).unwrap();
    s.send_response(now, req.peer, req.id, vec![7; 100])
        .unwrap();
    let out = drain(&mut s, &mut now);
    assert_eq!(kind(&out), [PacketType::Data]);
    assert_eq!(out[0].t.priority, 6, "no CUTOFFS from the kernel yet");
    s.handle_datagram(
        now,
        KERNEL_IP,
        &find(&frames, KERNEL, PacketType::Cutoffs, 2)[0].homa,
    );
    let mut need_acks = Vec::new();
    for tick in 1..=9 {
        now = s.poll_timeout().expect("timer armed");
        s.handle_timeout(now);
        let out = drain(&mut s, &mut now);
        if out.iter().any(|p| p.t.packet_type == PacketType::NeedAck) {
            need_acks.push(tick);
        }
    }
    // The first tick records the response as done; NEED_ACK from 2 ticks later, then
    // every `resend_interval` (5) ticks (the kernel asks every tick; see timer.rs).
    assert_eq!(need_acks, [3, 8]);

    // The kernel's next request, from another socket (port 32769), piggy-backs the ack
    // for id 2 (port 32768): the kernel shares acks among a host's sockets. We take acks
    // only from the RPC's own port (rpc.rs, source check), so RPC 3 stays...
    let big = data_of(&frames, KERNEL, 4);
    assert_eq!(
        big[0].1.ack,
        Some(Ack {
            client_id: 2,
            server_port: 4000
        })
    );
    assert_eq!(big[0].1.common.sport, 32769);
    s.handle_datagram(now, KERNEL_IP, &big[0].0.homa);
    assert_eq!(s.stats().acked_rpcs, 0);
    assert_eq!(s.stats().forged, 1);
    assert_eq!(s.rpc_count(), 2);
    // ... until the kernel answers our NEED_ACK, from the RPC's port, with an ACK.
    let ack = kernel_bytes(
        Repr::Ack(AckRepr {
            common: CommonRepr {
                sport: 32768,
                dport: 4000,
                sender_id: 2,
            },
            acks: AckList::new(),
        }),
        KERNEL,
        PEER,
    );
    s.handle_datagram(now, KERNEL_IP, &ack);
    assert_eq!(s.stats().acked_rpcs, 1);
    assert_eq!(s.rpc_count(), 1, "only the new RPC is left");
    let out = drain(&mut s, &mut now);
    let grants: Vec<_> = out
        .iter()
        .filter_map(|p| match p.repr() {
            Repr::Grant(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(grants.len(), 1);
    assert_eq!((grants[0].offset, grants[0].priority), (100_000, 0));
    assert_eq!(
        grants[0].common,
        CommonRepr {
            sport: 4000,
            dport: 32769,
            sender_id: 5
        }
    );
    for (f, _) in &big[1..] {
        s.handle_datagram(now, KERNEL_IP, &f.homa);
    }
    let req = request(&mut s);
    assert_eq!(req.id, 5);
    assert_eq!(s.message_bytes(&req), message_of(&frames, KERNEL, 4));

    // A RESEND for an RPC we never had: RPC_UNKNOWN with the ids swapped.
    let out = kernel_probe(&mut s, &mut now, 32770, 40);
    assert_eq!(kind(&out), [PacketType::RpcUnknown]);
}

/// Section 9.2's scenario: client 10.0.0.1:32768, id 1234, server 10.0.0.2:4000.
fn vector_client() -> (Engine, SocketAddr) {
    let c = Engine::new(config(), EngineOptions::client(32768, 1234), region()).unwrap();
    (c, "10.0.0.2:4000".parse().unwrap())
}

#[test]
fn silent_server_is_probed_with_the_kernels_resend_busy_defers_it_and_timeout_fails() {
    let (mut c, server) = vector_client();
    let mut now = Time::from_millis(10);
    c.send_request(now, server, b"hello".to_vec(), 3).unwrap();
    drain(&mut c, &mut now);
    let v4b = "80 00 0f a0 00 00 00 00 00 00 00 12 50 06 00 00 46 c9 b9 7d 00 00 00 00 00 00 04 d2 00 00 00 00 ff ff ff ff 07";
    let v4b: Vec<u8> = v4b
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let client_ip = Ipv4Addr::new(10, 0, 0, 1);
    let busy = kernel_bytes(
        Repr::Busy(CommonRepr {
            sport: 4000,
            dport: 32768,
            sender_id: 1235,
        }),
        Ipv4Addr::new(10, 0, 0, 2),
        client_ip,
    );
    let mut probes = Vec::new();
    let mut failed_at = None;
    for tick in 1..=200u32 {
        now = c.poll_timeout().expect("timer armed while the RPC lives");
        c.handle_timeout(now);
        if tick == 7 {
            c.handle_datagram(now, server.ip(), &busy);
        }
        for mut p in drain(&mut c, &mut now) {
            assert_eq!(p.t.packet_type, PacketType::Resend);
            fill_checksum(&mut p.bytes, IpAddr::V4(client_ip), server.ip()).unwrap();
            assert_eq!(p.bytes, v4b, "the probe is exactly V4b");
            probes.push(tick);
        }
        if let Some(Event::Failed(f)) = c.poll_event() {
            assert_eq!((f.id, f.cookie, f.peer), (1234, 3, server));
            assert_eq!(f.error, homa_proto::engine::RpcError::Timeout);
            failed_at = Some(tick);
            break;
        }
    }
    // Probe at 5 silent ticks; BUSY at tick 7 resets silence: 12, 17, ..., then abort at
    // 100 silent ticks after the BUSY.
    assert_eq!(&probes[..3], [5, 12, 17]);
    assert_eq!(probes.len(), 1 + 19);
    assert_eq!(failed_at, Some(7 + 100));
    assert_eq!(c.rpc_count(), 0);
}

#[test]
fn rpc_unknown_from_a_kernel_server_restarts_the_request() {
    let (mut c, server) = vector_client();
    let mut now = Time::from_millis(10);
    c.send_request(now, server, vec![9; 5000], 0).unwrap();
    let first = drain(&mut c, &mut now);
    assert_eq!(first.len(), 4);
    let unknown = kernel_bytes(
        Repr::RpcUnknown(CommonRepr {
            sport: 4000,
            dport: 32768,
            sender_id: 1235,
        }),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 1),
    );
    c.handle_datagram(now, server.ip(), &unknown);
    let again = drain(&mut c, &mut now);
    assert_eq!(again.len(), 4, "everything sent so far, again");
    for (a, b) in first.iter().zip(&again) {
        let (a, b) = (a.data(), b.data());
        assert_eq!((a.offset, a.payload), (b.offset, b.payload));
        assert!(b.retransmit);
    }
    assert!(
        again.iter().all(|s| s.t.priority == 6),
        "unscheduled level for the length"
    );
    assert_eq!(c.stats().restarts, 1);
}

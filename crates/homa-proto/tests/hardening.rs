//! The engine against hostile and vanishing peers, in virtual time: server state is
//! always reclaimed, forged packets are ignored and counted, per-peer work stays per
//! peer, tables shrink after a flood.

use std::net::{IpAddr, SocketAddr};

use homa_proto::engine::{Engine, EngineOptions, Event, Message, SendError, Unreachable};
use homa_proto::wire::{Ack, AckList, AckRepr, CommonRepr, DataRepr, OffsetForm, PacketType, Repr};
use homa_proto::{Config, Time};

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:4000";
const MB: usize = 1_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client_with(config: Config, region: usize) -> Engine {
    let port = addr(CLIENT).port();
    Engine::new(config, EngineOptions::client(port, 1000), vec![0; region]).unwrap()
}

fn server_with(config: Config, region: usize) -> Engine {
    let port = addr(SERVER).port();
    Engine::new(config, EngineOptions::server(port, 1), vec![0; region]).unwrap()
}

/// A client and a server on a loss-free, zero-delay network, in virtual time.
struct Pair {
    c: Engine,
    s: Engine,
    now: Time,
    /// Whether the client still exists: when false, nothing it sends is delivered and
    /// nothing reaches it.
    client_alive: bool,
    requests: Vec<Message>,
    responses: Vec<Message>,
    failures: Vec<homa_proto::engine::RpcFailure>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(Config::default(), Config::default(), 8 << 20, 8 << 20)
    }

    fn with(cc: Config, sc: Config, c_region: usize, s_region: usize) -> Pair {
        Pair {
            c: client_with(cc, c_region),
            s: server_with(sc, s_region),
            now: Time::from_millis(1),
            client_alive: true,
            requests: Vec::new(),
            responses: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Moves packets both ways until both engines are quiet; collects events.
    fn exchange(&mut self) {
        let mut buf = vec![0; 70_000];
        let (c_ip, s_ip) = (addr(CLIENT).ip(), addr(SERVER).ip());
        loop {
            let mut moved = false;
            while let Some(t) = self.c.poll_transmit(self.now, &mut buf) {
                if self.client_alive {
                    self.s.handle_datagram(self.now, c_ip, &buf[..t.len]);
                    moved = true;
                }
            }
            while let Some(t) = self.s.poll_transmit(self.now, &mut buf) {
                if self.client_alive && t.destination == addr(CLIENT) {
                    self.c.handle_datagram(self.now, s_ip, &buf[..t.len]);
                    moved = true;
                }
            }
            while let Some(e) = self.s.poll_event() {
                if let Event::Request(m) = e {
                    self.requests.push(m);
                }
            }
            while let Some(e) = self.c.poll_event() {
                match e {
                    Event::Response(m) => self.responses.push(m),
                    Event::Failed(f) => self.failures.push(f),
                    Event::Request(_) => unreachable!("the client is not a server"),
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Sends a request of `len` bytes and delivers it: (client id, the server's request).
    fn call(&mut self, len: usize, cookie: u64) -> (u64, Message) {
        let id = self
            .c
            .send_request(self.now, addr(SERVER), vec![1; len], cookie)
            .unwrap();
        self.exchange();
        (id, self.requests.pop().expect("the request arrived"))
    }

    /// Advances virtual time by `ms` milliseconds, one tick at a time.
    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now = self.now.add_nanos(1_000_000);
            self.c.handle_timeout(self.now);
            self.s.handle_timeout(self.now);
            self.exchange();
        }
    }

    /// Runs until `done` holds, at most `ms` milliseconds; returns whether it held.
    fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Pair) -> bool) -> bool {
        for _ in 0..ms {
            if done(self) {
                return true;
            }
            self.run_ms(1);
        }
        done(self)
    }
}

/// A DATA packet of a message `len` long at `offset`, as a hostile client would send it.
fn data(sport: u16, id: u64, len: u32, incoming: u32, offset: u32, payload: &[u8]) -> Vec<u8> {
    data_to(
        addr(SERVER).port(),
        sport,
        id,
        len,
        incoming,
        offset,
        payload,
    )
}

/// [`data`] to Homa port `dport`.
fn data_to(
    dport: u16,
    sport: u16,
    id: u64,
    len: u32,
    incoming: u32,
    offset: u32,
    payload: &[u8],
) -> Vec<u8> {
    let repr = Repr::Data(DataRepr {
        common: CommonRepr {
            sport,
            dport,
            sender_id: id,
        },
        message_length: len,
        incoming,
        ack: None,
        cutoff_version: 1,
        retransmit: false,
        offset,
        offset_form: OffsetForm::Both,
        payload,
    });
    let mut b = vec![0; repr.buffer_len()];
    repr.emit(&mut b).unwrap();
    b
}

fn quiet_secs(p: &mut Pair, secs: u64) {
    p.run_ms(secs * 1000);
}

#[test]
fn a_server_rpc_waiting_for_grants_is_freed_when_its_client_vanishes() {
    let mut p = Pair::new();
    let (_, req) = p.call(100, 0);
    p.s.release_message(p.now, &req).unwrap();
    // The response's unscheduled part goes out; the client takes it and vanishes.
    p.s.send_response(p.now, req.peer, req.id, vec![2; MB])
        .unwrap();
    let mut buf = vec![0; 70_000];
    while p.s.poll_transmit(p.now, &mut buf).is_some() {}
    p.client_alive = false;
    assert_eq!(p.s.queued_bytes(), MB as u64);
    // It waits for grants that never come: freed after the silence timeout.
    assert!(p.run_until(1000, |p| p.s.rpc_count() == 0));
    assert_eq!(
        p.s.queued_bytes(),
        0,
        "its bytes no longer count against wmem"
    );
    assert_eq!(p.s.stats().abandoned, 1);
}

#[test]
fn a_server_rpc_waiting_for_its_application_is_freed_when_the_client_vanishes() {
    let mut p = Pair::new();
    let (_, req) = p.call(5000, 0);
    p.client_alive = false;
    assert!(p.run_until(1000, |p| p.s.rpc_count() == 0));
    assert_eq!(p.s.stats().abandoned, 1);
    // A response after that is refused with a typed error, not sent into the void.
    assert_eq!(
        p.s.send_response(p.now, req.peer, req.id, vec![1; 10]),
        Err(SendError::UnknownRpc { id: req.id })
    );
}

#[test]
fn a_live_client_keeps_a_slow_server_rpc_alive() {
    let mut p = Pair::new();
    let (id, req) = p.call(5000, 9);
    // The application computes for 2 s, twenty times the silence timeout; the client's
    // probes (answered with BUSY) keep both ends alive.
    quiet_secs(&mut p, 2);
    assert_eq!(p.s.rpc_count(), 1);
    p.s.send_response(p.now, req.peer, req.id, vec![3; 200_000])
        .unwrap();
    assert!(p.run_until(1000, |p| !p.responses.is_empty()));
    let resp = &p.responses[0];
    assert_eq!((resp.id, resp.cookie, resp.len()), (id, 9, 200_000));
    assert_eq!(p.s.stats().abandoned, 0);
    assert!(p.failures.is_empty());
}

#[test]
fn a_live_client_waiting_for_buffer_space_keeps_the_response_alive() {
    // The client's receive region holds one 1 MB response at a time; the application
    // holds the first for 2 s, so the second waits for buffer space (and grants) far
    // longer than the server's silence timeout. Keep-alive GRANTs keep it alive.
    let mut p = Pair::with(Config::default(), Config::default(), 24 << 16, 8 << 20);
    let a =
        p.c.send_request(p.now, addr(SERVER), vec![1; 10], 1)
            .unwrap();
    let b =
        p.c.send_request(p.now, addr(SERVER), vec![2; 10], 2)
            .unwrap();
    p.exchange();
    assert_eq!(p.requests.len(), 2);
    for req in std::mem::take(&mut p.requests) {
        p.s.release_message(p.now, &req).unwrap();
        p.s.send_response(p.now, req.peer, req.id, vec![req.id as u8; MB])
            .unwrap();
    }
    assert!(p.run_until(2000, |p| !p.responses.is_empty()));
    let first = p.responses.remove(0);
    quiet_secs(&mut p, 2);
    assert_eq!(p.s.stats().abandoned, 0, "the waiting response was kept");
    assert!(p.c.stats().keepalives > 0);
    p.c.release_message(p.now, &first).unwrap();
    assert!(p.run_until(2000, |p| !p.responses.is_empty()));
    let ids = [first.id, p.responses[0].id];
    assert!(ids.contains(&a) && ids.contains(&b), "{ids:?}");
    assert!(p.failures.is_empty());
}

/// Virtual milliseconds a fresh pair takes to deliver a 1 MB request (the harness paces
/// the sender at its link rate, a tick at a time).
fn ms_to_serve_1_mb(p: &mut Pair) -> u128 {
    let t0 = p.now;
    p.c.send_request(p.now, addr(SERVER), vec![5; MB], 0)
        .unwrap();
    assert!(p.run_until(300, |p| !p.requests.is_empty()));
    p.now.saturating_duration_since(t0).as_millis()
}

#[test]
fn first_packets_announcing_1_mb_with_incoming_0_are_freed_and_do_not_block_requests() {
    let mut p = Pair::with(Config::default(), Config::default(), 8 << 20, 64 << 20);
    let s_ip: IpAddr = "10.0.0.9".parse().unwrap();
    // 200 hostile first packets, half with a payload, half without: more 1 MB messages
    // than the 64 MB region holds.
    for k in 0..200u64 {
        let payload: &[u8] = if k % 2 == 0 { &[7; 1000] } else { &[] };
        let pkt = data(40_000 + k as u16, 2 * k + 2, MB as u32, 0, 0, payload);
        p.s.handle_datagram(p.now, s_ip, &pkt);
    }
    p.exchange();
    assert_eq!(p.s.rpc_count(), 200);
    // A real 1 MB request is served long before the hostile RPCs time out (100 ticks):
    // idle messages give up their grants and, after `resend_ticks`, their buffers.
    let plain = ms_to_serve_1_mb(&mut Pair::with(
        Config::default(),
        Config::default(),
        8 << 20,
        64 << 20,
    ));
    let t0 = p.now;
    let id =
        p.c.send_request(p.now, addr(SERVER), vec![5; MB], 0)
            .unwrap();
    assert!(p.run_until(300, |p| !p.requests.is_empty()));
    let attacked = p.now.saturating_duration_since(t0).as_millis();
    assert!(
        attacked < plain + 25,
        "served after {attacked} ms, {plain} ms without the attack"
    );
    assert!(p.s.stats().buffers_reclaimed > 0);
    let req = p.requests.pop().unwrap();
    assert_eq!(req.len(), MB);
    p.s.release_message(p.now, &req).unwrap();
    p.s.send_response(p.now, req.peer, req.id, vec![1; 10])
        .unwrap();
    assert!(p.run_until(1000, |p| !p.responses.is_empty()));
    assert_eq!(p.responses[0].id, id);
    let resp = p.responses.pop().unwrap();
    p.c.release_message(p.now, &resp).unwrap();
    // Every hostile RPC is gone and no bpage is left held.
    assert!(p.run_until(3000, |p| p.s.rpc_count() == 0));
    assert!(
        p.s.pool().is_idle(),
        "the hostile messages' buffers came back"
    );
    // Most were abandoned waiting for grants; those the scheduler granted to timed out
    // waiting for data.
    assert_eq!(p.s.stats().abandoned + p.s.stats().timeouts, 200);
}

#[test]
fn first_packets_sent_again_and_again_do_not_hold_the_pool_from_a_real_request() {
    let mut p = Pair::with(Config::default(), Config::default(), 8 << 20, 16 << 20);
    let s_ip: IpAddr = "10.0.0.9".parse().unwrap();
    // 40 hostile 1 MB messages (more than the 16 MB region holds) whose first packet is
    // sent again every millisecond: each looks alive, but none makes progress.
    let hostile: Vec<Vec<u8>> = (0..40u64)
        .map(|k| data(40_000 + k as u16, 2 * k + 2, MB as u32, 0, 0, &[7; 1400]))
        .collect();
    let plain = ms_to_serve_1_mb(&mut Pair::with(
        Config::default(),
        Config::default(),
        8 << 20,
        16 << 20,
    ));
    let attack = |p: &mut Pair| {
        for pkt in &hostile {
            p.s.handle_datagram(p.now, s_ip, pkt);
        }
    };
    attack(&mut p);
    let id =
        p.c.send_request(p.now, addr(SERVER), vec![5; MB], 0)
            .unwrap();
    let mut served = false;
    for _ in 0..plain + 25 {
        attack(&mut p);
        p.run_ms(1);
        if !p.requests.is_empty() {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "the real request was served while the attack went on"
    );
    let req = p.requests.pop().unwrap();
    assert_eq!(req.len(), MB);
    assert!(p.s.message_bytes(&req).iter().all(|&b| b == 5));
    p.s.release_message(p.now, &req).unwrap();
    p.s.send_response(p.now, req.peer, req.id, vec![1; 10])
        .unwrap();
    assert!(p.run_until(100, |p| !p.responses.is_empty()));
    assert_eq!(p.responses[0].id, id);
    // Once the attack stops, the hostile RPCs time out and every bpage comes back.
    let resp = p.responses.pop().unwrap();
    p.c.release_message(p.now, &resp).unwrap();
    assert!(p.run_until(3000, |p| p.s.rpc_count() == 0));
    assert!(p.s.pool().is_idle());
    p.s.check_invariants().unwrap();
}

#[test]
fn a_client_answers_data_for_an_rpc_it_no_longer_has_with_rpc_unknown() {
    let mut p = Pair::new();
    let (id, req) = p.call(10, 0);
    assert!(p.c.abort(id));
    p.s.release_message(p.now, &req).unwrap();
    p.s.send_response(p.now, req.peer, req.id, vec![2; MB])
        .unwrap();
    // No time passes: the server learns at once that nobody wants the response.
    p.exchange();
    assert_eq!(p.s.rpc_count(), 0);
    assert_eq!(p.s.queued_bytes(), 0);
    assert!(p.c.stats().sent_by_type[usize::from(PacketType::RpcUnknown.code() - 0x10)] > 0);
    assert!(p.responses.is_empty() && p.failures.is_empty());
}

#[test]
fn an_abort_tells_the_server_even_when_no_more_data_comes() {
    let mut p = Pair::new();
    let (id, req) = p.call(10, 0);
    p.s.release_message(p.now, &req).unwrap();
    p.s.send_response(p.now, req.peer, req.id, vec![2; MB])
        .unwrap();
    // The unscheduled part of the response reaches the client; its GRANTs are lost, so
    // the server waits for grants and has nothing more to send.
    let mut buf = vec![0; 70_000];
    while let Some(t) = p.s.poll_transmit(p.now, &mut buf) {
        p.c.handle_datagram(p.now, addr(SERVER).ip(), &buf[..t.len]);
    }
    while p.c.poll_transmit(p.now, &mut buf).is_some() {}
    assert_eq!(p.s.rpc_count(), 1);
    assert!(p.c.abort(id));
    // The client's RPC_UNKNOWN frees the server's RPC at once, with no DATA to answer.
    p.exchange();
    assert_eq!(p.s.rpc_count(), 0);
    assert_eq!(p.s.queued_bytes(), 0);
    assert!(p.responses.is_empty() && p.failures.is_empty());
}

#[test]
fn a_response_from_another_address_or_port_is_ignored_and_counted() {
    let mut p = Pair::new();
    let (id, req) = p.call(10, 0);
    // Forged responses for the client's id: from another host, and from another port of
    // the server's host.
    let forged = |sport: u16| data_to(addr(CLIENT).port(), sport, id + 1, 4, 4, 0, b"evil");
    p.c.handle_datagram(p.now, "10.0.0.66".parse().unwrap(), &forged(4000));
    p.c.handle_datagram(p.now, addr(SERVER).ip(), &forged(4001));
    assert!(p.c.poll_event().is_none(), "no forged response delivered");
    assert!(p.c.has_client_rpc(id));
    assert_eq!(p.c.stats().forged, 2);
    p.s.release_message(p.now, &req).unwrap();
    p.s.send_response(p.now, req.peer, req.id, b"good".to_vec())
        .unwrap();
    p.exchange();
    let resp = p.responses.pop().unwrap();
    assert_eq!(p.c.message_bytes(&resp), b"good");
}

#[test]
fn request_data_and_acks_from_another_port_of_the_clients_host_are_ignored() {
    let mut p = Pair::new();
    let c_ip = addr(CLIENT).ip();
    // A half-received 100 kB request from the real client (port 40000).
    let real = vec![9u8; 40_000];
    p.s.handle_datagram(p.now, c_ip, &data(40_000, 2, 100_000, 40_000, 0, &real));
    // Another process on the client's host injects bytes into it, and acks it.
    p.s.handle_datagram(
        p.now,
        c_ip,
        &data(40_001, 2, 100_000, 100_000, 40_000, &[0xEE; 60_000]),
    );
    let ack = Repr::Ack(AckRepr {
        common: CommonRepr {
            sport: 40_001,
            dport: addr(SERVER).port(),
            sender_id: 2,
        },
        acks: AckList::new(),
    });
    let mut b = vec![0; ack.buffer_len()];
    ack.emit(&mut b).unwrap();
    p.s.handle_datagram(p.now, c_ip, &b);
    assert_eq!(p.s.rpc_count(), 1, "not freed by the forged ack");
    assert_eq!(p.s.stats().forged, 2);
    // The real client completes it with its own bytes.
    p.s.handle_datagram(
        p.now,
        c_ip,
        &data(40_000, 2, 100_000, 100_000, 40_000, &[9; 60_000]),
    );
    let Some(Event::Request(m)) = p.s.poll_event() else {
        panic!("request not delivered");
    };
    assert!(
        p.s.message_bytes(&m).iter().all(|&b| b == 9),
        "no forged byte inside"
    );
    let _ = Ack {
        client_id: 2,
        server_port: 4000,
    };
}

#[test]
fn a_forged_busy_does_not_keep_a_dead_servers_rpc_alive() {
    let mut p = Pair::new();
    let id =
        p.c.send_request(p.now, addr(SERVER), vec![1; 10], 0)
            .unwrap();
    // The server is dead: nothing reaches it; someone else sends BUSY every ms.
    let busy = Repr::Busy(CommonRepr {
        sport: 4000,
        dport: addr(CLIENT).port(),
        sender_id: id + 1,
    });
    let mut b = vec![0; busy.buffer_len()];
    busy.emit(&mut b).unwrap();
    let mut buf = vec![0; 70_000];
    let mut failed_at = None;
    for ms in 1..=1000u64 {
        p.now = p.now.add_nanos(1_000_000);
        p.c.handle_timeout(p.now);
        while p.c.poll_transmit(p.now, &mut buf).is_some() {}
        p.c.handle_datagram(p.now, "10.0.0.77".parse().unwrap(), &b);
        p.c.handle_datagram(p.now, addr(SERVER).ip(), &{
            let mut f = b.clone();
            f[0..2].copy_from_slice(&4001u16.to_be_bytes());
            f
        });
        if let Some(Event::Failed(f)) = p.c.poll_event() {
            assert_eq!(f.id, id);
            failed_at = Some(ms);
            break;
        }
    }
    let at = failed_at.expect("the RPC failed");
    assert!(
        at <= 101,
        "timed out after {at} ticks, as with no BUSY at all"
    );
    assert!(p.c.stats().forged > 0);
}

#[test]
fn server_rpcs_are_capped_and_refusals_counted() {
    let sc = Config::builder().max_server_rpcs(10).build().unwrap();
    let mut p = Pair::with(Config::default(), sc, 8 << 20, 8 << 20);
    for k in 0..20u64 {
        let pkt = data(40_000 + k as u16, 2 * k + 2, 100, 100, 0, &[1; 100]);
        p.s.handle_datagram(p.now, "10.0.0.5".parse().unwrap(), &pkt);
    }
    assert_eq!(p.s.rpc_count(), 10);
    assert_eq!(p.s.stats().server_rpc_limit, 10);
}

#[test]
fn an_icmp_report_fails_only_the_rpcs_of_that_peer() {
    let mut c = client_with(Config::default(), 8 << 20);
    let mut ids = Vec::new();
    for host in 0..50u8 {
        for port in [4000u16, 4001] {
            let to = SocketAddr::new(IpAddr::from([10, 1, 0, host]), port);
            for _ in 0..10 {
                ids.push((to, c.send_request(Time::ZERO, to, vec![1; 10], 0).unwrap()));
            }
        }
    }
    let victim = SocketAddr::new(IpAddr::from([10, 1, 0, 7]), 4001);
    c.handle_unreachable(victim, Unreachable::Port);
    let failed: Vec<u64> = std::iter::from_fn(|| c.poll_event())
        .map(|e| match e {
            Event::Failed(f) => f.id,
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<u64> = ids
        .iter()
        .filter(|(to, _)| *to == victim)
        .map(|&(_, id)| id)
        .collect();
    assert_eq!(failed, expected);
    c.handle_unreachable(victim, Unreachable::Host);
    let failed = std::iter::from_fn(|| c.poll_event()).count();
    assert_eq!(failed, 10, "the host's other port");
    assert_eq!(c.rpc_count(), 1000 - 20);
}

#[test]
fn tables_shrink_back_after_a_flood_of_requests() {
    let mut s = server_with(Config::default(), 8 << 20);
    let mut now = Time::from_millis(1);
    let base = s.footprint();
    // 20,000 small requests from 2,000 addresses whose clients never come back.
    for k in 0..20_000u32 {
        let ip = IpAddr::from([10, 2, (k / 250 % 256) as u8, (k % 250) as u8]);
        let pkt = data(
            40_000 + (k % 1000) as u16,
            2 * u64::from(k) + 2,
            50,
            50,
            0,
            &[1; 50],
        );
        s.handle_datagram(now, ip, &pkt);
    }
    let mut delivered = 0;
    while let Some(e) = s.poll_event() {
        if let Event::Request(m) = e {
            s.release_message(now, &m).unwrap();
            delivered += 1;
        }
    }
    assert_eq!(delivered, 16_384, "capped at max_server_rpcs");
    let full = s.footprint();
    assert!(full.rpc_slots >= 16_384);
    let mut buf = vec![0; s.max_packet_size()];
    // Nobody answers: every RPC is abandoned, tombstones expire, tables are compacted.
    for _ in 0..2000 {
        now = now.add_nanos(1_000_000);
        s.handle_timeout(now);
        while s.poll_transmit(now, &mut buf).is_some() {}
    }
    let after = s.footprint();
    assert_eq!(after.rpcs, 0);
    assert_eq!(after.tombstones, 0);
    assert!(after.rpc_slots <= base.rpc_slots + 64, "{after:?}");
    assert!(
        after.id_index_capacity <= base.id_index_capacity + 256,
        "{after:?}"
    );
    assert!(
        after.tombstone_capacity <= base.tombstone_capacity + 256,
        "{after:?}"
    );
    assert!(s.pool().is_idle());
}

#[test]
fn a_packet_from_homa_port_0_is_dropped_and_counted() {
    let mut s = server_with(Config::default(), 8 << 20);
    s.handle_datagram(
        Time::ZERO,
        "10.0.0.1".parse().unwrap(),
        &data(0, 2, 10, 10, 0, &[1; 10]),
    );
    assert_eq!(s.rpc_count(), 0);
    assert_eq!(s.stats().bad_source_port, 1);
    let mut buf = vec![0; s.max_packet_size()];
    assert!(
        s.poll_transmit(Time::ZERO, &mut buf).is_none(),
        "nothing is answered"
    );
}

/// RESENDs the client sent so far.
fn resends_sent(e: &Engine) -> u64 {
    e.stats().sent_by_type[PacketType::Resend as usize - 0x10]
}

#[test]
fn a_busy_server_with_a_thousand_queued_requests_is_probed_within_budget_and_loses_none() {
    // The server's application takes 300 ms (three silence timeouts) to get to 1,000
    // queued requests. The kernel would probe each every 5 ticks: 200,000 RESENDs a
    // second. Here the client sends at most `resend_budget` a tick to the server, the
    // BUSYs show the server alive, and every RPC completes.
    let mut p = Pair::with(Config::default(), Config::default(), 64 << 20, 64 << 20);
    let budget = u64::from(Config::default().resend_budget());
    let ids: Vec<u64> = (0..1000)
        .map(|k| {
            p.c.send_request(p.now, addr(SERVER), vec![k as u8; 100], k)
                .unwrap()
        })
        .collect();
    p.exchange();
    assert_eq!(p.requests.len(), 1000);
    let mut most_in_a_tick = 0;
    for _ in 0..300 {
        let before = resends_sent(&p.c);
        p.run_ms(1);
        most_in_a_tick = most_in_a_tick.max(resends_sent(&p.c) - before);
    }
    assert!(
        most_in_a_tick <= budget,
        "{most_in_a_tick} RESENDs in a tick"
    );
    assert!(resends_sent(&p.c) > 0, "the client probed");
    assert!(
        p.c.stats().probes_deferred > 0,
        "the budget held probes back"
    );
    assert!(p.failures.is_empty(), "{:?}", p.failures.first());
    for req in std::mem::take(&mut p.requests) {
        p.s.release_message(p.now, &req).unwrap();
        p.s.send_response(p.now, req.peer, req.id, vec![7; 100])
            .unwrap();
    }
    assert!(p.run_until(1000, |p| p.responses.len() == 1000));
    let mut got: Vec<u64> = p.responses.iter().map(|m| m.id).collect();
    got.sort_unstable();
    let mut want = ids;
    want.sort_unstable();
    assert_eq!(got, want, "every RPC answered exactly once");
    assert!(p.failures.is_empty());
}

#[test]
fn a_request_lost_among_many_queued_ones_is_found_by_a_probe() {
    // 200 requests wait at a busy server; one more was lost on the way. The budget puts
    // the probes off, but the lost one still gets its turn: RPC_UNKNOWN, a restart, and
    // its response arrives with the others.
    let mut p = Pair::with(Config::default(), Config::default(), 64 << 20, 64 << 20);
    for k in 0..200 {
        p.c.send_request(p.now, addr(SERVER), vec![1; 100], k)
            .unwrap();
    }
    p.exchange();
    p.client_alive = false;
    let lost =
        p.c.send_request(p.now, addr(SERVER), vec![2; 100], 999)
            .unwrap();
    p.exchange();
    p.client_alive = true;
    assert_eq!(p.requests.len(), 200);
    assert!(p.run_until(500, |p| p.requests.len() == 201));
    assert!(p.c.stats().restarts >= 1);
    for req in std::mem::take(&mut p.requests) {
        p.s.release_message(p.now, &req).unwrap();
        p.s.send_response(p.now, req.peer, req.id, vec![7; 100])
            .unwrap();
    }
    assert!(p.run_until(1000, |p| p.responses.len() == 201));
    assert!(p.responses.iter().any(|m| m.id == lost && m.cookie == 999));
    assert!(p.failures.is_empty());
}

#[test]
fn rpcs_to_a_vanished_server_fail_on_the_kernels_schedule_whatever_their_number() {
    // The budget spreads the probes of 500 RPCs over many ticks; the server answers none,
    // so its silence, not the probes each RPC got, decides: all fail at the timeout.
    let mut p = Pair::new();
    p.client_alive = false;
    for k in 0..500 {
        p.c.send_request(p.now, addr(SERVER), vec![1; 100], k)
            .unwrap();
    }
    let timeout = u64::from(Config::default().timeout_ticks());
    p.run_ms(timeout - 1);
    assert!(p.failures.is_empty());
    p.run_ms(2);
    assert_eq!(p.failures.len(), 500);
    assert!(p
        .failures
        .iter()
        .all(|f| f.error == homa_proto::engine::RpcError::Timeout));
}

#[test]
fn a_server_asks_for_acks_within_the_probe_budget_and_frees_what_a_vanished_client_left() {
    // 1,000 responses all sent to one client, whose acks never come: the kernel would
    // send 1,000 NEED_ACKs a tick. Here at most `resend_budget` a tick go to that client,
    // and once it has been silent for the timeout every RPC is freed.
    let mut s = server_with(Config::default(), 64 << 20);
    let budget = u64::from(Config::default().resend_budget());
    let client: IpAddr = addr(CLIENT).ip();
    let mut now = Time::from_millis(1);
    for k in 0..1000u64 {
        s.handle_datagram(now, client, &data(40_000, 2 * k + 2, 10, 10, 0, &[1; 10]));
    }
    let mut buf = vec![0; 70_000];
    while let Some(e) = s.poll_event() {
        let Event::Request(m) = e else { continue };
        s.release_message(now, &m).unwrap();
        s.send_response(now, m.peer, m.id, vec![2; 10]).unwrap();
    }
    while s.poll_transmit(now, &mut buf).is_some() {}
    let need_acks = |s: &Engine| s.stats().sent_by_type[PacketType::NeedAck as usize - 0x10];
    let mut most_in_a_tick = 0;
    for _ in 0..150 {
        now = now.add_nanos(1_000_000);
        let before = need_acks(&s);
        s.handle_timeout(now);
        while s.poll_transmit(now, &mut buf).is_some() {}
        most_in_a_tick = most_in_a_tick.max(need_acks(&s) - before);
    }
    assert!(need_acks(&s) > 0, "the server asked");
    assert!(
        most_in_a_tick <= budget,
        "{most_in_a_tick} NEED_ACKs in a tick"
    );
    assert_eq!(s.rpc_count(), 0, "the vanished client's RPCs were freed");
    assert_eq!(s.stats().unacknowledged_discards, 1000);
}

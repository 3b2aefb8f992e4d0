//! The socket library against hostile and vanishing peers, over real UDP sockets on
//! loopback: forged responses, clients that vanish mid-response, first packets that
//! announce 1 MB and send nothing, floods from closed ports, a firewall that refuses
//! packets, live messages whose bpages are released by offset.
//!
//! Hostile peers are written with `homa_proto`'s wire format and engine over plain
//! `std::net::UdpSocket`s, as an attacker would. No test sleeps to wait for an event:
//! waits poll the state they wait for, with generous deadlines that only turn a hang into
//! a failure.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use homa_proto::engine::{Engine, EngineOptions};
use homa_proto::wire::{CommonRepr, DataRepr, OffsetForm, PacketType, Repr};
use homa_proto::{Config, Time};
use homa_socket::{Error, Socket, SocketConfig, TransportKind, Want};

const MB: usize = 1_000_000;
/// Far above anything a test waits for; reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

/// A protocol configuration whose timeout is `ms` (and nothing else changed).
fn timeout_ms(ms: u32) -> Config {
    Config::builder().timeout_ticks(ms).build().unwrap()
}

/// Waits until `cond` holds; panics with `what` after [`HANG`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// A DATA packet whose Homa source port is `sport`.
fn data_packet(
    sport: u16,
    dport: u16,
    id: u64,
    len: u32,
    incoming: u32,
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
        cutoff_version: 0,
        retransmit: false,
        offset: 0,
        offset_form: OffsetForm::Both,
        payload,
    });
    let mut b = vec![0; repr.buffer_len()];
    repr.emit(&mut b).unwrap();
    b
}

fn udp(bind: &str) -> UdpSocket {
    UdpSocket::bind(bind).expect("binding a UDP socket")
}

#[test]
fn a_forged_response_from_127_0_0_2_or_from_another_port_is_ignored() {
    let server = bind_server(SocketConfig::default);
    let client = Socket::new(SocketConfig::default()).unwrap();
    let id = client
        .send_request(server.loopback_addr(), b"question", 1)
        .unwrap();
    let req = server.recv(Want::Requests).unwrap();
    let cport = client.port();
    // Forged responses for the client's RPC: from another address, from another port of
    // the server's address, and with a Homa port that is not the UDP port it came from.
    let other_host = udp("127.0.0.2:0");
    let p = other_host.local_addr().unwrap().port();
    let evil = data_packet(p, cport, id + 1, 4, 4, b"evil");
    other_host.send_to(&evil, client.loopback_addr()).unwrap();
    let other_port = udp("127.0.0.1:0");
    let p = other_port.local_addr().unwrap().port();
    other_port
        .send_to(
            &data_packet(p, cport, id + 1, 4, 4, b"evil"),
            client.loopback_addr(),
        )
        .unwrap();
    let lying = udp("127.0.0.1:0");
    lying
        .send_to(
            &data_packet(server.port(), cport, id + 1, 4, 4, b"evil"),
            client.loopback_addr(),
        )
        .unwrap();
    wait_until("the forged packets to be dropped", || {
        client.stats().forged >= 2 && client.transport_stats().sport_mismatch >= 1
    });
    assert!(matches!(
        client.try_recv(Want::Response(id)),
        Err(Error::WouldBlock)
    ));
    req.reply(b"answer").unwrap();
    let resp = client.recv_timeout(Want::Response(id), HANG).unwrap();
    assert_eq!((resp.to_vec(), resp.cookie()), (b"answer".to_vec(), 1));
}

/// A client that sends a request, takes the first packet of the response, never grants
/// and vanishes: a Homa engine over a plain UDP socket whose GRANTs are never sent.
struct VanishingClient {
    engine: Engine,
    socket: UdpSocket,
    got_response_data: bool,
}

impl VanishingClient {
    fn start(server: SocketAddr, request: usize, k: u64) -> VanishingClient {
        let socket = udp("127.0.0.1:0");
        socket.set_nonblocking(true).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut options = EngineOptions::client(port, 1_000 + 2 * k);
        options.max_packet_loopback = Some(65_000);
        let mut engine = Engine::new(Config::default(), options, vec![0; 2 << 20]).unwrap();
        engine
            .send_request(Time::ZERO, server, vec![k as u8; request], 0)
            .unwrap();
        VanishingClient {
            engine,
            socket,
            got_response_data: false,
        }
    }

    /// Sends what the engine has (but GRANTs) and handles what arrived; returns whether
    /// it got part of its response (and is about to vanish).
    fn step(&mut self, now: Time) -> bool {
        let mut buf = vec![0; 70_000];
        self.engine.handle_timeout(now);
        while let Some(t) = self.engine.poll_transmit(now, &mut buf) {
            if t.packet_type != PacketType::Grant {
                let _ = self.socket.send_to(&buf[..t.len], t.destination);
            }
        }
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            if let Ok(Repr::Data(d)) = Repr::parse(&buf[..n]) {
                if d.common.sender_id & 1 == 1 && d.offset == 0 {
                    self.got_response_data = true;
                }
            }
            self.engine.handle_datagram(now, from.ip(), &buf[..n]);
        }
        self.got_response_data
    }
}

#[test]
fn two_hundred_clients_that_vanish_mid_response_do_not_stop_the_server() {
    // The server answers every request with 1 MB: 200 of them are twice its transmit
    // limit (`wmem_max`, 100 MB), which the vanished clients used to pin for good. Its
    // responses wait for grants past 40,000 bytes, as on a real link (over loopback they
    // would go out whole, unscheduled).
    let config = || {
        SocketConfig::default()
            .protocol(timeout_ms(1000))
            .region_size(256 << 20)
            .loopback_unsched_bytes(40_000)
    };
    let server = Server::start(config, 2, |_| vec![0x5A; MB]);
    let to = server.addr();
    let epoch = Instant::now();
    let now = || Time::from_nanos(epoch.elapsed().as_nanos() as u64);
    let mut attackers: Vec<VanishingClient> = (0..200)
        .map(|k| VanishingClient::start(to, 100_000, k))
        .collect();
    let deadline = Instant::now() + HANG;
    // Each one that got the first part of its response goes silent: its socket stays
    // open (no ICMP error tells the server anything), it just never answers again.
    let mut silent = Vec::new();
    while !attackers.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} attackers never got their response",
            attackers.len()
        );
        let mut i = 0;
        while i < attackers.len() {
            if attackers[i].step(now()) {
                silent.push(attackers.swap_remove(i));
            } else {
                i += 1;
            }
        }
    }
    let vanished = Instant::now();
    // Requests of every size are served again once the vanished clients' RPCs time out.
    let client = Socket::new(SocketConfig::default()).unwrap();
    for len in [1, 100, 1400, 10_000, 100_000, MB] {
        let id = client
            .send_request(to, &pattern(len, len as u64), 0)
            .unwrap();
        let resp = client
            .recv_timeout(Want::Response(id), HANG)
            .unwrap_or_else(|e| panic!("{len}-byte request: {e}"));
        assert_eq!(resp.len(), MB);
    }
    let served = vanished.elapsed();
    wait_until("the server to free every RPC", || {
        server.socket.rpc_count() == 0
    });
    let stats = server.socket.stats();
    eprintln!(
        "served again {served:?} after the attackers vanished (protocol timeout 1 s); \
         {} server RPCs abandoned, {} unacknowledged discards",
        stats.abandoned, stats.unacknowledged_discards
    );
    // Every vanished client's RPC was reclaimed: as abandoned, or (seen once in 30-odd
    // runs, under CI's parallel load, and not explained yet) as a timeout, the count for
    // a server RPC freed while it still waited for request bytes.
    assert!(stats.abandoned + stats.timeouts >= 200, "{stats:?}");
    drop(silent);
    server.stop();
}

#[test]
fn two_hundred_first_packets_with_incoming_0_do_not_block_1_mb_requests() {
    let config = || SocketConfig::default().protocol(timeout_ms(1000));
    let server = Server::start(config, 2, echo);
    let to = server.addr();
    let attacker = udp("127.0.0.1:0");
    let sport = attacker.local_addr().unwrap().port();
    for k in 0..200u64 {
        // 1 MB announced, nothing unscheduled: with and without a payload.
        let payload: &[u8] = if k % 2 == 0 { &[1; 1000] } else { &[] };
        let pkt = data_packet(sport, to.port(), 2 * k + 2, MB as u32, 0, payload);
        attacker.send_to(&pkt, to).unwrap();
    }
    wait_until("the hostile RPCs to exist", || {
        server.socket.rpc_count() >= 200
    });
    let client = Socket::new(SocketConfig::default()).unwrap();
    for k in 0..3u64 {
        let msg = pattern(MB, k);
        let id = client.send_request(to, &msg, k).unwrap();
        let resp = client.recv_timeout(Want::Response(id), HANG).unwrap();
        assert!(resp.to_vec() == msg, "1 MB request {k} intact");
    }
    wait_until("the hostile RPCs to be freed", || {
        server.socket.rpc_count() == 0
    });
    drop(client);
    let socket = server.stop();
    assert!(
        socket.pool_is_idle(),
        "no bpage left held by the hostile messages"
    );
}

#[test]
fn a_flood_of_small_requests_from_closed_ports_does_not_stop_the_server() {
    let config = || SocketConfig::default().protocol(timeout_ms(1000));
    let server = Server::start(config, 2, echo);
    let to = server.addr();
    let base = server.socket.footprint();
    // 20,000 requests from 2,000 ports that close right after sending: every response
    // draws an ICMP port unreachable.
    let mut id = 2u64;
    for _ in 0..2000 {
        let s = udp("127.0.0.1:0");
        let sport = s.local_addr().unwrap().port();
        for _ in 0..10 {
            let _ = s.send_to(&data_packet(sport, to.port(), id, 20, 20, &[7; 20]), to);
            id += 2;
        }
    }
    // The server keeps serving, and its state goes back to what it was.
    let client = Socket::new(SocketConfig::default().protocol(timeout_ms(10_000))).unwrap();
    let start = Instant::now();
    for k in 0..20u64 {
        let msg = pattern(1 + (k as usize * 997) % 50_000, k);
        let rid = client.send_request(to, &msg, k).unwrap();
        let resp = client.recv_timeout(Want::Response(rid), HANG).unwrap();
        assert!(resp.to_vec() == msg);
    }
    eprintln!("20 RPCs served in {:?} after the flood", start.elapsed());
    wait_until("the flood's RPCs to be freed", || {
        server.socket.rpc_count() == 0
    });
    wait_until("the tables to shrink back", || {
        let f = server.socket.footprint();
        f.tombstones == 0
            && f.rpc_slots <= base.rpc_slots + 64
            && f.id_index_capacity <= base.id_index_capacity + 256
            && f.tombstone_capacity <= base.tombstone_capacity + 256
    });
    drop(client);
    server.stop();
}

/// An iptables rule for the life of the value (deleted on drop, also on panic).
struct FirewallRule {
    tool: &'static str,
    spec: Vec<String>,
}

impl FirewallRule {
    fn insert(tool: &'static str, spec: &[String]) -> Result<FirewallRule, String> {
        let out = std::process::Command::new(tool)
            .args(["-I", "OUTPUT"])
            .args(spec)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{tool}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(FirewallRule {
            tool,
            spec: spec.to_vec(),
        })
    }
}

impl Drop for FirewallRule {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.tool)
            .args(["-D", "OUTPUT"])
            .args(&self.spec)
            .status();
    }
}

#[test]
fn an_eperm_burst_from_a_firewall_rule_is_loss_not_failure() {
    for v6 in [false, true] {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let config = || {
            SocketConfig::default()
                .ipv6(v6)
                .protocol(timeout_ms(10_000))
        };
        let server = Server::start(config, 1, echo);
        let client = Socket::new(config()).unwrap();
        let spec: Vec<String> = [
            "-p",
            "udp",
            "--dport",
            &server.addr().port().to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rule = match FirewallRule::insert(tool, &spec) {
            Ok(r) => r,
            Err(why) => {
                skip_or_fail(&format!("needs root and {tool}: {why}"));
                return;
            }
        };
        // Every packet to the server is refused (EPERM) while the rule stands.
        let ids: Vec<(u64, Vec<u8>)> = (0..20u64)
            .map(|k| {
                let msg = pattern(1 + (k as usize * 4999) % 100_000, k);
                (client.send_request(server.addr(), &msg, k).unwrap(), msg)
            })
            .collect();
        wait_until("refused sends", || {
            client.transport_stats().packets_refused >= 20
        });
        drop(rule);
        // Loss recovery delivers every one; none failed with PeerUnreachable.
        for (id, msg) in ids {
            let resp = client
                .recv_timeout(Want::Response(id), HANG)
                .unwrap_or_else(|e| panic!("{tool}: RPC {id}: {e}"));
            assert!(resp.to_vec() == msg);
        }
        drop(client);
        server.stop();
    }
}

#[test]
fn a_live_messages_bpages_cannot_be_released_by_offset() {
    let server = bind_server(SocketConfig::default);
    let client = Socket::new(SocketConfig::default()).unwrap();
    let msg = pattern(300_000, 3);
    client
        .send_request(server.loopback_addr(), &msg, 0)
        .unwrap();
    let req = server.recv(Want::Requests).unwrap();
    let offsets = req.bpage_offsets().to_vec();
    match server.release_bpages(&offsets) {
        Err(Error::UnknownBpage { offset }) => assert_eq!(offset, offsets[0]),
        other => panic!("expected UnknownBpage, got {other:?}"),
    }
    // The pages stayed the message's: another message cannot land on them.
    client
        .send_request(server.loopback_addr(), &pattern(300_000, 4), 0)
        .unwrap();
    let other = server.recv(Want::Requests).unwrap();
    assert!(other.bpage_offsets().iter().all(|o| !offsets.contains(o)));
    assert!(req.to_vec() == msg, "the live message is intact");
    let kept = req.into_bpages();
    server.release_bpages(&kept).unwrap();
    assert!(matches!(
        server.release_bpages(&kept),
        Err(Error::UnknownBpage { .. })
    ));
    drop(other);
    assert!(server.pool_is_idle());
}

#[test]
fn an_rpc_that_fails_during_its_own_send_reports_to_the_waiter_for_its_id() {
    let client = Socket::new(SocketConfig::default()).unwrap();
    let nowhere = SocketAddr::new(
        client.loopback_addr().ip(),
        unused_server_port(TransportKind::Udp, false),
    );
    // Later sends meet the ICMP reports of earlier ones (the failure then happens inside
    // send_request); each RPC's error reaches the receiver of that id, exactly once.
    let ids: Vec<u64> = (0..20u64)
        .map(|k| client.send_request(nowhere, b"anyone?", k).unwrap())
        .collect();
    for (k, &id) in ids.iter().enumerate().rev() {
        match client.recv_timeout(Want::Response(id), HANG) {
            Err(Error::PortUnreachable { id: e, cookie, .. }) => {
                assert_eq!((e, cookie), (id, k as u64));
            }
            other => panic!("RPC {id}: {other:?}"),
        }
        assert!(matches!(
            client.recv(Want::Response(id)),
            Err(Error::UnknownRpc { .. })
        ));
    }
    assert!(matches!(
        client.try_recv(Want::Responses),
        Err(Error::WouldBlock)
    ));
}

#[test]
fn shutting_down_with_sockets_shared_by_threads_frees_everything() {
    // A soak of mixed good and hostile traffic from several threads leaves no state.
    let config = || SocketConfig::default().protocol(timeout_ms(1000));
    let server = Server::start(config, 2, echo);
    let to = server.addr();
    let client = Arc::new(Socket::new(SocketConfig::default()).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let client = client.clone();
            s.spawn(move || {
                let junk = udp("127.0.0.1:0");
                let sport = junk.local_addr().unwrap().port();
                for k in 0..200u64 {
                    let _ = junk.send_to(
                        &data_packet(sport, to.port(), 4 * k + 2, 500_000, 0, &[]),
                        to,
                    );
                    let msg = pattern(1 + ((t * 200 + k) % 20_000) as usize, k);
                    let id = client.send_request(to, &msg, k).unwrap();
                    let r = client.recv_timeout(Want::Response(id), HANG).unwrap();
                    assert!(r.to_vec() == msg);
                }
            });
        }
    });
    wait_until("every server RPC to be freed", || {
        server.socket.rpc_count() == 0
    });
    assert!(client.pool_is_idle());
    drop(client);
    assert!(server.stop().pool_is_idle());
}

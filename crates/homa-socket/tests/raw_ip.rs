//! The raw IP transport (protocol 146) over real loopback sockets, IPv4 and IPv6: each
//! socket receives only the packets addressed to its own Homa port (the kernel hands
//! every protocol-146 packet to every raw socket unless a socket filter says otherwise),
//! and a Homa port is reserved host-wide, across processes. Needs CAP_NET_RAW: without
//! it every test prints a skip message (fails instead when
//! HOMA_TEST_REQUIRE_PRIVILEGED=1, as in CI) and passes.
//!
//! Written for a busy machine (see `common`): random free ports, a 10 s protocol
//! timeout, no sleeps, no timing asserts.

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use homa_proto::engine::Stats;
use homa_proto::wire::PacketType;
use homa_socket::{Error, Socket, TransportKind, Want};

/// The raw setups (IPv4, IPv6) this process can run; each one left out is reported.
fn raw_setups() -> Vec<bool> {
    setups()
        .into_iter()
        .filter(|&(kind, _)| kind == TransportKind::RawIp)
        .map(|(_, v6)| v6)
        .collect()
}

fn raw(v6: bool) -> homa_socket::SocketConfig {
    config(TransportKind::RawIp, v6)
}

/// DATA packets an engine received (valid ones, whatever their port) and sent.
fn data_received(s: &Stats) -> u64 {
    s.received_by_type[PacketType::Data as usize - 0x10]
}

fn data_sent(s: &Stats) -> u64 {
    s.sent_by_type[PacketType::Data as usize - 0x10]
}

/// `receiver`'s engine got exactly the DATA packets `sender` sent it: no more than were
/// sent (its own outgoing packets, or other sockets' packets, would add to them), and
/// every first transmission (a message is complete only with all its segments).
/// `receiver` must be read before `sender`, so that every packet counted as received was
/// already counted as sent; the only sender of `receiver`'s packets is `sender`.
fn assert_only_peer_data(what: &str, receiver: &Stats, sender: &Stats) {
    let (got, sent) = (data_received(receiver), data_sent(sender));
    let first = sent - sender.retransmitted_packets;
    assert!(
        first <= got && got <= sent,
        "{what}: received {got} DATA packets; the peer sent {sent} ({first} first transmissions)"
    );
    assert_eq!(receiver.wrong_port, 0, "{what}: packets for other ports");
    assert!(
        receiver.packets_received <= sender.packets_sent,
        "{what}: received {} packets, the peer sent {}",
        receiver.packets_received,
        sender.packets_sent
    );
}

/// Two idle raw Homa sockets on other ports see none of a client/server exchange (100 B,
/// 100 KB and 1 MB requests and responses), and the client's and server's engines get
/// exactly each other's packets: for a 1 MB response, its DATA packets, not also the
/// client's own outgoing request DATA, as when every raw socket got every packet.
#[test]
fn idle_raw_sockets_see_nothing_and_each_end_receives_only_what_was_sent_to_it() {
    for v6 in raw_setups() {
        let what = label(TransportKind::RawIp, v6);
        let idle = [bind_server(|| raw(v6)), bind_server(|| raw(v6))];
        let linked = || raw(v6).loopback_unsched_bytes(40_000);
        let server = Server::start(linked, 1, echo);
        let client = Socket::new(linked()).unwrap();
        for (k, len) in [100, 100_000, 1_000_000, 1_000_000].into_iter().enumerate() {
            let msg = pattern(len, k as u64);
            let id = client.send_request(server.addr(), &msg, 0).unwrap();
            let resp = client
                .recv_timeout(Want::Response(id), RECV_LIMIT)
                .unwrap_or_else(|e| panic!("{what}: {len} bytes: {e}"));
            assert!(resp.to_vec() == msg, "{what}: {len} bytes corrupted");
        }
        // Let the idle sockets handle whatever reached them (nothing should have).
        for s in &idle {
            assert!(matches!(s.try_recv(Want::Requests), Err(Error::WouldBlock)));
            let stats = s.stats();
            assert_eq!(stats.packets_received, 0, "{what}: idle socket: {stats:?}");
            let t = s.transport_stats();
            assert_eq!((t.truncated, t.malformed), (0, 0), "{what}: {t:?}");
        }
        let at_client = client.stats();
        let at_server = server.socket.stats();
        assert_only_peer_data(&format!("{what}: client"), &at_client, &at_server);
        let at_server = server.socket.stats();
        let at_client = client.stats();
        assert_only_peer_data(&format!("{what}: server"), &at_server, &at_client);
        // The 1 MB responses arrived in order, so nearly all of their packets went
        // straight into bpages (over UDP, 15 of 16 per message). (They wait for grants
        // past 40,000 bytes, as on a link: sent whole, as over loopback by default, a
        // message mostly arrives in one receive and none of it can be placed.)
        assert!(
            at_client.misplaced == 0
                && at_client.placed_packets * 4 >= data_received(&at_client) * 3,
            "{what}: {} of {} DATA packets placed, {} misplaced",
            at_client.placed_packets,
            data_received(&at_client),
            at_client.misplaced
        );
        drop(client);
        server.stop();
    }
}

/// A socket that sends a request to its own port (client and server in one socket)
/// gets each of its packets once: the kernel delivers a packet to a raw socket when it
/// arrives, not when it leaves, so a packet from a socket to itself is one arrival, for
/// the socket it is addressed to.
#[test]
fn a_raw_socket_that_sends_to_its_own_port_gets_each_packet_once() {
    for v6 in raw_setups() {
        let what = label(TransportKind::RawIp, v6);
        let socket = bind_server(|| raw(v6));
        let me = socket.loopback_addr();
        for (k, len) in [100, 1_000_000].into_iter().enumerate() {
            let msg = pattern(len, k as u64);
            let id = socket.send_request(me, &msg, 0).unwrap();
            let req = socket
                .recv_timeout(Want::Requests, RECV_LIMIT)
                .unwrap_or_else(|e| panic!("{what}: request of {len} bytes: {e}"));
            assert!(req.to_vec() == msg, "{what}: request corrupted");
            req.reply(&msg).unwrap();
            let resp = socket
                .recv_timeout(Want::Response(id), RECV_LIMIT)
                .unwrap_or_else(|e| panic!("{what}: response of {len} bytes: {e}"));
            assert!(resp.to_vec() == msg, "{what}: response corrupted");
        }
        let stats = socket.stats();
        // Both ends are this engine: what it received, it sent.
        assert_only_peer_data(&what, &stats, &stats);
    }
}

/// Set in the child process of the next test: `<port>,<ipv6: 0|1>,<taken|free>`.
const CHILD_ENV: &str = "HOMA_TEST_RAW_RESERVATION_CHILD";

/// Runs `raw_port_reservation_child` in a fresh process of this test binary and returns
/// whether it passed.
fn run_child(port: u16, v6: bool, expect: &str) -> bool {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "raw_port_reservation_child", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, format!("{port},{},{expect}", u8::from(v6)))
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "child ({expect}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
    out.status.success() && ran
}

/// A raw-IP server port bound in this process cannot be bound in another one (the
/// error is `Error::Io` with EADDRINUSE, as a UDP port in use), of either IP version; a
/// homa-rs UDP socket may hold the same number meanwhile (the reservation is not a UDP
/// port); and once the socket is closed, the other process can bind the port.
#[test]
fn a_raw_server_port_is_reserved_across_processes() {
    for v6 in raw_setups() {
        let what = label(TransportKind::RawIp, v6);
        // A UDP server first, then a raw one on its number: the two coexist.
        let (udp, held) = (0..BIND_TRIES)
            .find_map(|_| {
                let udp = bind_server(|| config(TransportKind::Udp, v6));
                match Socket::bind(udp.port(), raw(v6)) {
                    Ok(raw) => Some((udp, raw)),
                    Err(e) if is_addr_in_use(&e) => None,
                    Err(e) => panic!("{what}: {e}"),
                }
            })
            .expect("a port free for both UDP and raw IP");
        let port = held.port();
        // In this process, for both IP versions (one Homa port space per host).
        for other_v6 in [false, true] {
            let err = Socket::bind(port, raw(other_v6)).unwrap_err();
            assert!(is_addr_in_use(&err), "{what}: {err}");
        }
        assert!(
            run_child(port, v6, "taken"),
            "{what}: port {port} not reserved"
        );
        drop(held);
        assert!(
            run_child(port, v6, "free"),
            "{what}: port {port} never freed"
        );
        drop(udp);
    }
}

/// The child of the previous test; does nothing when run on its own.
#[test]
fn raw_port_reservation_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let port: u16 = parts[0].parse().unwrap();
    let v6 = parts[1] == "1";
    match parts[2] {
        "taken" => {
            for v6 in [false, true] {
                let err = Socket::bind(port, raw(v6)).unwrap_err();
                assert!(is_addr_in_use(&err), "{err}");
                match &err {
                    Error::Io { source, .. } => {
                        assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
                    }
                    other => panic!("{other:?}"),
                }
                assert!(err.to_string().contains("already uses it"), "{err}");
            }
        }
        "free" => {
            // A process forking at the moment the parent closed its socket (another test
            // thread starting a child) holds a copy of the reservation until it execs:
            // retry for a while.
            let deadline = Instant::now() + WAIT_LIMIT;
            loop {
                match Socket::bind(port, raw(v6)) {
                    Ok(s) => {
                        assert_eq!(s.port(), port);
                        break;
                    }
                    Err(e) if is_addr_in_use(&e) && Instant::now() < deadline => {
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("port {port}: {e}"),
                }
            }
        }
        other => panic!("unknown expectation {other}"),
    }
}

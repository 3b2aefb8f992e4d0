//! The socket library over real loopback sockets: both transports (UDP, raw IP 146),
//! both IP versions. The raw-IP setups need CAP_NET_RAW: without it they are skipped
//! with a message (failed instead when HOMA_TEST_REQUIRE_PRIVILEGED=1, as in CI).
//!
//! Written for a busy machine: random free ports, a 10 s protocol timeout (short ones
//! only where a timeout must fire), no sleeps and no timing asserts; waits are bounded
//! generously only to turn a hang into a failure (see `common`).

mod common;

use std::sync::Arc;

use common::*;
use homa_socket::{Error, Socket, TransportKind, Want};

#[test]
fn lengths_from_1_byte_to_1_megabyte_arrive_intact() {
    // Whole messages unscheduled (the loopback default), and grants past 40,000 bytes
    // as on a link.
    for unsched in [None, Some(40_000)] {
        for (kind, v6) in setups() {
            lengths_arrive_intact(kind, v6, unsched);
        }
    }
}

fn lengths_arrive_intact(kind: TransportKind, v6: bool, unsched: Option<u32>) {
    let cfg = || match unsched {
        Some(bytes) => config(kind, v6).loopback_unsched_bytes(bytes),
        None => config(kind, v6),
    };
    {
        let server = Server::start(cfg, 2, echo);
        let client = Socket::new(cfg()).unwrap();
        for (k, len) in [
            1, 2, 100, 1400, 1500, 9000, 40_000, 40_001, 65_536, 65_537, 100_000, 500_000, 999_999,
            1_000_000,
        ]
        .into_iter()
        .enumerate()
        {
            let msg = pattern(len, k as u64);
            let id = client.send_request(server.addr(), &msg, k as u64).unwrap();
            let resp = client
                .recv_timeout(Want::Response(id), RECV_LIMIT)
                .unwrap_or_else(|e| panic!("{}: {len} bytes: {e}", label(kind, v6)));
            assert_eq!(resp.cookie(), k as u64);
            assert_eq!(resp.len(), len);
            assert!(
                resp.to_vec() == msg,
                "{}: {len} bytes corrupted",
                label(kind, v6)
            );
        }
        // Long responses that wait for grants arrive in order over several receives:
        // most of their packets were received straight into bpages (direct placement),
        // the rest copied, all intact (checked above). (A whole unscheduled message
        // mostly arrives in one receive, before its first packet shows where it goes.)
        let stats = client.stats();
        assert!(
            (unsched.is_none() || stats.placed_packets > 0) && stats.misplaced == 0,
            "{}: {} packets received in place, {} misplaced",
            label(kind, v6),
            stats.placed_packets,
            stats.misplaced
        );
        drop(client);
        server.stop();
    }
}

#[test]
fn eight_threads_with_200_concurrent_rpcs_each_get_their_own_responses() {
    for (kind, v6) in setups() {
        let server = Server::start(|| config(kind, v6), 2, echo);
        let client = Arc::new(Socket::new(config(kind, v6)).unwrap());
        let to = server.addr();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let client = client.clone();
                s.spawn(move || {
                    let sent: Vec<(u64, Vec<u8>)> = (0..200u64)
                        .map(|k| {
                            let msg = pattern(1 + ((t * 200 + k) % 3000) as usize, t * 1000 + k);
                            (client.send_request(to, &msg, t).unwrap(), msg)
                        })
                        .collect();
                    for (id, msg) in sent {
                        let resp = client
                            .recv_timeout(Want::Response(id), RECV_LIMIT)
                            .unwrap_or_else(|e| panic!("{}: thread {t}: {e}", label(kind, v6)));
                        assert_eq!((resp.id(), resp.cookie()), (id, t));
                        assert!(resp.to_vec() == msg);
                    }
                });
            }
        });
        assert!(client.pool_is_idle());
        drop(client);
        server.stop();
    }
}

/// One socket that is a client and a server at once (as the kernel's sockets may be): a
/// thread receives requests only while another sends requests to the socket itself and
/// receives the responses. A receive for requests must never take a response, or that
/// response is lost to the thread that waits for it.
#[test]
fn a_thread_waiting_for_requests_never_takes_a_response() {
    for (kind, v6) in setups() {
        let socket = Arc::new(bind_server(|| config(kind, v6)));
        let ip: std::net::IpAddr = if v6 {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        let me = std::net::SocketAddr::new(ip, socket.port());
        let misdelivered = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let server = socket.clone();
            let misdelivered = &misdelivered;
            s.spawn(move || loop {
                match server.recv(Want::Requests) {
                    Ok(m) if m.is_request() => {
                        let _ = m.reply(&m.to_vec());
                    }
                    // A response, or the failure of one of our own RPCs.
                    Ok(_) => {
                        misdelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if e.cookie().is_some() => {
                        misdelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(Error::Shutdown) => return,
                    Err(e) => panic!("{}: the serving thread: {e}", label(kind, v6)),
                }
            });
            // Stops the serving thread however this thread leaves (a failed wait too).
            struct Stop<'a>(&'a Socket);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.shutdown();
                }
            }
            let _stop = Stop(&socket);
            for round in 0..10u64 {
                let sent: Vec<(u64, Vec<u8>)> = (0..200u64)
                    .map(|k| {
                        let msg = pattern(1 + ((round * 200 + k) % 2000) as usize, k);
                        (socket.send_request(me, &msg, round).unwrap(), msg)
                    })
                    .collect();
                for (id, msg) in sent {
                    let resp = socket
                        .recv_timeout(Want::Response(id), RECV_LIMIT)
                        .unwrap_or_else(|e| panic!("{}: round {round}: {e}", label(kind, v6)));
                    assert!(resp.to_vec() == msg);
                }
            }
        });
        assert_eq!(
            misdelivered.into_inner(),
            0,
            "{}: the serving thread was handed responses",
            label(kind, v6)
        );
    }
}

#[test]
fn waiting_on_one_id_returns_that_response_only() {
    for (kind, v6) in setups() {
        let server = Server::start(|| config(kind, v6), 1, echo);
        let client = Socket::new(config(kind, v6)).unwrap();
        let ids: Vec<u64> = (0..10u64)
            .map(|k| {
                client
                    .send_request(server.addr(), &[k as u8; 10], k)
                    .unwrap()
            })
            .collect();
        // Wait for the last one first; all the others stay queued for later.
        let last = client
            .recv_timeout(Want::Response(ids[9]), RECV_LIMIT)
            .unwrap();
        assert_eq!((last.id(), last.cookie()), (ids[9], 9));
        for (k, &id) in ids[..9].iter().enumerate().rev() {
            let r = client.recv_timeout(Want::Response(id), RECV_LIMIT).unwrap();
            assert_eq!((r.id(), r.to_vec()), (id, vec![k as u8; 10]));
        }
        // Waiting for an id that is finished fails at once instead of hanging.
        assert!(matches!(
            client.recv(Want::Response(ids[0])),
            Err(Error::UnknownRpc { .. })
        ));
        drop(client);
        server.stop();
    }
}

/// The protocol timeout of tests that need it to fire (a silent peer): short, so the
/// test does not wait long; the receive that reports it still waits up to RECV_LIMIT.
const FIRING_TIMEOUT_TICKS: u32 = 1_000;

#[test]
fn a_request_to_a_port_nobody_serves_fails_with_that_rpcs_id_and_cookie() {
    for (kind, v6) in setups() {
        // Only raw IP needs the timeout to fire; over UDP the ICMP error comes first.
        let config = match kind {
            TransportKind::RawIp => config_with_timeout(kind, v6, FIRING_TIMEOUT_TICKS),
            _ => config(kind, v6),
        };
        let client = Socket::new(config).unwrap();
        let mut nowhere = client.loopback_addr();
        nowhere.set_port(unused_server_port(kind, v6));
        let id = client.send_request(nowhere, b"anyone?", 5).unwrap();
        let err = client
            .recv_timeout(Want::Response(id), RECV_LIMIT)
            .unwrap_err();
        match (kind, &err) {
            // UDP: the kernel's ICMP port unreachable fails the RPC (before any timeout).
            (
                TransportKind::Udp,
                Error::PortUnreachable {
                    id: e,
                    cookie: 5,
                    peer,
                },
            ) => assert_eq!((*e, *peer), (id, nowhere)),
            // Raw IP: nothing answers (no kernel Homa); the RPC times out.
            (
                TransportKind::RawIp,
                Error::RpcTimeout {
                    id: e,
                    cookie: 5,
                    peer,
                },
            ) => assert_eq!((*e, *peer), (id, nowhere)),
            _ => panic!("{}: unexpected {err:?}", label(kind, v6)),
        }
        // The failure finished the RPC.
        assert!(
            matches!(
                client.try_recv(Want::Response(id)),
                Err(Error::UnknownRpc { .. })
            ),
            "{}",
            label(kind, v6)
        );
    }
}

/// What the client thread of the next test saw of one RPC: the phase of the test when it
/// sent it, and whether it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    phase: u8,
    ok: bool,
}

/// Phases of the next test.
const SERVING: u8 = 0;
const DEAD: u8 = 1;
const RESTARTED: u8 = 2;

#[test]
fn a_server_that_died_makes_requests_fail_and_a_restarted_one_never_hangs_clients() {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    for (kind, v6) in setups() {
        let what = label(kind, v6);
        // Raw IP: requests to the dead server fail only by timing out.
        let config = || config_with_timeout(kind, v6, FIRING_TIMEOUT_TICKS);
        let server = Server::start(config, 1, echo);
        let (port, to) = (server.port(), server.addr());
        let client = Arc::new(Socket::new(config()).unwrap());
        let phase = Arc::new(AtomicU8::new(SERVING));
        let stop = Arc::new(AtomicBool::new(false));
        let (report, outcomes) = std::sync::mpsc::channel();
        // RPCs one after another from a second thread while the server dies and comes
        // back; it reports each outcome with the phase in which the RPC was sent.
        let worker = {
            let (client, phase, stop) = (client.clone(), phase.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    k += 1;
                    let sent_in = phase.load(Ordering::SeqCst);
                    let msg = pattern(20_000, k);
                    let id = client.send_request(to, &msg, k).unwrap();
                    let ok = match client.recv_timeout(Want::Response(id), RECV_LIMIT) {
                        Ok(r) => {
                            assert_eq!(r.cookie(), k);
                            assert!(r.to_vec() == msg, "response {k} corrupted");
                            true
                        }
                        Err(
                            Error::RpcTimeout { id: e, cookie, .. }
                            | Error::PortUnreachable { id: e, cookie, .. },
                        ) => {
                            assert_eq!((e, cookie), (id, k));
                            false
                        }
                        // Error::Timeout included: the client hung.
                        Err(e) => panic!("RPC {k}: unexpected {e:?}"),
                    };
                    // The test may have stopped listening.
                    let _ = report.send(Outcome { phase: sent_in, ok });
                }
            })
        };
        let ok_in = |phase| move |o: &Outcome| *o == Outcome { phase, ok: true };
        wait_for(
            &outcomes,
            &format!("{what}: an RPC completed"),
            ok_in(SERVING),
        );
        drop(server.stop());
        phase.store(DEAD, Ordering::SeqCst);
        wait_for(
            &outcomes,
            &format!("{what}: an RPC sent to the dead server failed"),
            |o| {
                *o == Outcome {
                    phase: DEAD,
                    ok: false,
                }
            },
        );
        let server = Server::start_on(port, config(), 1, echo);
        phase.store(RESTARTED, Ordering::SeqCst);
        wait_for(
            &outcomes,
            &format!("{what}: an RPC sent to the restarted server completed"),
            ok_in(RESTARTED),
        );
        stop.store(true, Ordering::SeqCst);
        worker.join().expect("the client thread panicked");
        server.stop();
    }
}

#[test]
fn after_10000_rpcs_every_bpage_is_back_in_the_pool() {
    for (kind, v6) in setups() {
        let server = Server::start(|| config(kind, v6), 2, echo);
        let client = Socket::new(config(kind, v6)).unwrap();
        let mut inflight = std::collections::VecDeque::new();
        for k in 0..10_000u64 {
            let len = 1 + (k * 7919 % 70_000) as usize;
            inflight.push_back(
                client
                    .send_request(server.addr(), &vec![k as u8; len], k)
                    .unwrap(),
            );
            if inflight.len() == 16 {
                let id = inflight.pop_front().unwrap();
                client.recv_timeout(Want::Response(id), RECV_LIMIT).unwrap();
            }
        }
        for id in inflight {
            client.recv_timeout(Want::Response(id), RECV_LIMIT).unwrap();
        }
        assert!(client.pool_is_idle(), "{}: client bpages", label(kind, v6));
        let server_socket = server.stop();
        assert!(
            server_socket.pool_is_idle(),
            "{}: server bpages",
            label(kind, v6)
        );
    }
}

#[test]
fn shutting_down_a_socket_wakes_every_waiter() {
    for (kind, v6) in setups() {
        let socket = Arc::new(bind_server(|| config(kind, v6)));
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let s = socket.clone();
                std::thread::spawn(move || {
                    let want = if i % 2 == 0 {
                        Want::Requests
                    } else {
                        Want::Both
                    };
                    s.recv_timeout(want, RECV_LIMIT)
                })
            })
            .collect();
        socket.shutdown();
        for w in waiters {
            // Whether a waiter was already blocked or arrived just after: Shutdown (a
            // waiter left asleep would see Timeout, after RECV_LIMIT).
            let result = w.join().unwrap();
            assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
        }
        assert!(matches!(
            socket.send_request(socket.loopback_addr(), b"x", 0),
            Err(Error::Shutdown)
        ));
    }
}

#[test]
fn malformed_datagrams_to_a_busy_server_are_counted_and_dropped() {
    for v6 in [false, true] {
        let server = Server::start(|| config(TransportKind::Udp, v6), 2, echo);
        let client = Socket::new(config(TransportKind::Udp, v6)).unwrap();
        let bind = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let junk_sender = std::net::UdpSocket::bind(bind).unwrap();
        let to = server.addr();
        let sp = to.port().to_be_bytes();
        // Truncated, unknown type, absurd lengths, offsets past the end.
        let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0; 5], vec![0xFF; 27]];
        let mut bad_type = vec![0u8; 40];
        bad_type[2..4].copy_from_slice(&sp);
        bad_type[11] = 0x42;
        junk.push(bad_type);
        let mut data = vec![0u8; 56 + 100];
        data[2..4].copy_from_slice(&sp);
        data[11] = 0x10;
        data[28..32].copy_from_slice(&u32::MAX.to_be_bytes()); // message_length absurd
        junk.push(data.clone());
        data[28..32].copy_from_slice(&50u32.to_be_bytes()); // payload past the end
        junk.push(data.clone());
        data[28..32].copy_from_slice(&1000u32.to_be_bytes());
        data[52..56].copy_from_slice(&5000u32.to_be_bytes()); // offset past the end
        junk.push(data);
        let mut grant = vec![0u8; 20]; // GRANT cut short
        grant[11] = 0x11;
        junk.push(grant);
        // Junk that names another Homa port than its UDP source port is dropped by the
        // transport before the engine sees it (counted as a source-port mismatch): give
        // every datagram long enough to carry a port the sender's own.
        let own = junk_sender.local_addr().unwrap().port().to_be_bytes();
        for j in junk.iter_mut().filter(|j| j.len() >= 2) {
            j[..2].copy_from_slice(&own);
        }
        // At most WINDOW rounds in flight: junk that overflowed the server's receive
        // buffer (a descheduled server, a small net.core.rmem_max) would be lost
        // uncounted, where requests are recovered by the protocol.
        const WINDOW: usize = 16;
        let mut ids = std::collections::VecDeque::new();
        let check = |(id, k): (u64, u64)| {
            let r = client.recv_timeout(Want::Response(id), RECV_LIMIT).unwrap();
            assert!(r.to_vec() == pattern(3000, k));
        };
        for k in 0..300u64 {
            for j in &junk {
                junk_sender.send_to(j, to).unwrap();
            }
            ids.push_back((client.send_request(to, &pattern(3000, k), k).unwrap(), k));
            if ids.len() == WINDOW {
                check(ids.pop_front().unwrap());
            }
        }
        // Each round's junk was sent before its request, and the server handles the
        // datagrams in the order they arrive: once the last response is here, all junk
        // has been counted.
        ids.into_iter().for_each(check);
        let stats = server.socket.stats();
        // 300 rounds of 8 junk datagrams, all but the empty one reach the engine (an
        // empty datagram is also counted): every one is malformed.
        assert_eq!(stats.malformed, 300 * junk.len() as u64, "{stats:?}");
        drop(client);
        server.stop();
    }
}

#[test]
fn a_full_transmit_buffer_makes_try_send_request_would_block() {
    let protocol = common::protocol().wmem_max(100_000).build().unwrap();
    // A live server that never answers keeps the first request unfinished (for the
    // protocol timeout of 10 s, far longer than the test).
    let server = bind_server(|| config(TransportKind::Udp, false));
    let client = Socket::new(config(TransportKind::Udp, false).protocol(protocol)).unwrap();
    client
        .try_send_request(server.loopback_addr(), &[1; 90_000], 0)
        .unwrap();
    assert!(matches!(
        client.try_send_request(server.loopback_addr(), &[1; 20_000], 0),
        Err(Error::WouldBlock)
    ));
}

/// A handler that keeps its thread busy for 500 ms (no `recv` drives meanwhile).
fn compute_500_ms(b: &[u8]) -> Vec<u8> {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(500) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    b.to_vec()
}

#[test]
fn a_handler_that_computes_for_500_ms_completes_under_default_timeouts() {
    // Default protocol settings: a 100 ms timeout, five times shorter than the handler.
    // While the only server thread computes, its background thread answers the client's
    // RESEND probes (BUSY) and the client keeps the RPC.
    for (kind, v6) in setups() {
        let cfg = || {
            homa_socket::SocketConfig::default()
                .transport(kind)
                .ipv6(v6)
        };
        let server = Server::start(cfg, 1, compute_500_ms);
        let client = Socket::new(cfg()).unwrap();
        for len in [100, 1_000_000] {
            let msg = pattern(len, 7);
            let id = client.send_request(server.addr(), &msg, 0).unwrap();
            let resp = client
                .recv_timeout(Want::Response(id), RECV_LIMIT)
                .unwrap_or_else(|e| panic!("{}: {len} bytes: {e}", label(kind, v6)));
            assert!(resp.to_vec() == msg, "{}: {len} bytes", label(kind, v6));
        }
        assert_eq!(client.stats().timeouts, 0);
        drop(client);
        server.stop();
    }
}

//! The socket library over real loopback sockets: both transports (UDP, raw IP 146; the
//! raw ones need root, which CI has), both IP versions.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use homa_socket::{Error, Socket, TransportKind, Want};

#[test]
fn lengths_from_1_byte_to_1_megabyte_arrive_intact() {
    for (kind, v6) in SETUPS {
        let server = Server::start(port(21000), config(kind, v6), 2, echo);
        let client = Socket::new(config(kind, v6)).unwrap();
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
                .recv_timeout(Want::Response(id), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{}: {len} bytes: {e}", label(kind, v6)));
            assert_eq!(resp.cookie(), k as u64);
            assert_eq!(resp.len(), len);
            assert!(
                resp.to_vec() == msg,
                "{}: {len} bytes corrupted",
                label(kind, v6)
            );
        }
        // Long responses arrive in order: most of their packets were received straight
        // into bpages (direct placement), the rest copied, all intact (checked above).
        let stats = client.stats();
        assert!(
            stats.placed_packets > 0 && stats.misplaced == 0,
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
    for (kind, v6) in SETUPS {
        let server = Server::start(port(21100), config(kind, v6), 2, echo);
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
                            .recv_timeout(Want::Response(id), Duration::from_secs(20))
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

#[test]
fn waiting_on_one_id_returns_that_response_only() {
    for (kind, v6) in SETUPS {
        let server = Server::start(port(21200), config(kind, v6), 1, echo);
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
            .recv_timeout(Want::Response(ids[9]), Duration::from_secs(5))
            .unwrap();
        assert_eq!((last.id(), last.cookie()), (ids[9], 9));
        for (k, &id) in ids[..9].iter().enumerate().rev() {
            let r = client
                .recv_timeout(Want::Response(id), Duration::from_secs(5))
                .unwrap();
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

#[test]
fn a_request_to_a_port_nobody_serves_fails_within_the_timeout() {
    for (kind, v6) in SETUPS {
        let client = Socket::new(config(kind, v6)).unwrap();
        let mut nowhere = client.loopback_addr();
        nowhere.set_port(port(21300));
        let start = Instant::now();
        let id = client.send_request(nowhere, b"anyone?", 5).unwrap();
        let err = client.recv(Want::Response(id)).unwrap_err();
        let took = start.elapsed();
        match (kind, &err) {
            // UDP: the kernel's ICMP port unreachable fails the RPC at once.
            (
                TransportKind::Udp,
                Error::PortUnreachable {
                    id: e, cookie: 5, ..
                },
            ) => assert_eq!(*e, id),
            // Raw IP: nothing answers (no kernel Homa); the RPC times out.
            (
                TransportKind::RawIp,
                Error::RpcTimeout {
                    id: e, cookie: 5, ..
                },
            ) => assert_eq!(*e, id),
            _ => panic!("{}: unexpected {err:?}", label(kind, v6)),
        }
        assert!(
            took < Duration::from_millis(500),
            "{}: took {took:?}",
            label(kind, v6)
        );
    }
}

#[test]
fn a_server_that_died_makes_requests_fail_and_a_restarted_one_never_hangs_clients() {
    for (kind, v6) in SETUPS {
        let p = port(21400);
        let server = Server::start(p, config(kind, v6), 1, echo);
        let client = Arc::new(Socket::new(config(kind, v6)).unwrap());
        let to = server.addr();
        // RPCs in flight from a second thread while the server dies and comes back.
        let worker = {
            let client = client.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                let end = Instant::now() + Duration::from_millis(600);
                let mut k = 0;
                while Instant::now() < end {
                    k += 1;
                    let msg = pattern(20_000, k);
                    let id = client.send_request(to, &msg, k).unwrap();
                    match client.recv_timeout(Want::Response(id), Duration::from_secs(2)) {
                        Ok(r) => {
                            assert!(r.to_vec() == msg);
                            ok += 1;
                        }
                        Err(Error::RpcTimeout { .. } | Error::PortUnreachable { .. }) => {
                            failed += 1
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                (ok, failed)
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        drop(server.stop());
        std::thread::sleep(Duration::from_millis(150));
        let server = Server::start(p, config(kind, v6), 1, echo);
        let (ok, failed) = worker.join().expect("no hang, no panic");
        assert!(ok > 0, "{}: some RPCs completed", label(kind, v6));
        assert!(
            failed > 0,
            "{}: RPCs to the dead server failed",
            label(kind, v6)
        );
        server.stop();
    }
}

#[test]
fn after_10000_rpcs_every_bpage_is_back_in_the_pool() {
    for (kind, v6) in SETUPS {
        let server = Server::start(port(21500), config(kind, v6), 2, echo);
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
                client
                    .recv_timeout(Want::Response(id), Duration::from_secs(10))
                    .unwrap();
            }
        }
        for id in inflight {
            client
                .recv_timeout(Want::Response(id), Duration::from_secs(10))
                .unwrap();
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
    for (kind, v6) in SETUPS {
        let socket = Arc::new(Socket::bind(port(21600), config(kind, v6)).unwrap());
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let s = socket.clone();
                std::thread::spawn(move || {
                    let want = if i % 2 == 0 {
                        Want::Requests
                    } else {
                        Want::Both
                    };
                    let start = Instant::now();
                    (
                        s.recv_timeout(want, Duration::from_secs(30)),
                        start.elapsed(),
                    )
                })
            })
            .collect();
        socket.shutdown();
        for w in waiters {
            // Whether a waiter was already blocked or arrived just after: Shutdown, at once.
            let (result, waited) = w.join().unwrap();
            assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
            assert!(waited < Duration::from_secs(5));
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
        let server = Server::start(port(21700), config(TransportKind::Udp, v6), 2, echo);
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
        let mut ids = Vec::new();
        for k in 0..300u64 {
            for j in &junk {
                junk_sender.send_to(j, to).unwrap();
            }
            ids.push((client.send_request(to, &pattern(3000, k), k).unwrap(), k));
        }
        for (id, k) in ids {
            let r = client
                .recv_timeout(Want::Response(id), Duration::from_secs(10))
                .unwrap();
            assert!(r.to_vec() == pattern(3000, k));
        }
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
    let protocol = homa_proto::Config::builder()
        .wmem_max(100_000)
        .build()
        .unwrap();
    // A live server that never answers keeps the first request unfinished.
    let server = Socket::bind(port(21800), config(TransportKind::Udp, false)).unwrap();
    let client = Socket::new(config(TransportKind::Udp, false).protocol(protocol)).unwrap();
    client
        .try_send_request(server.loopback_addr(), &[1; 90_000], 0)
        .unwrap();
    assert!(matches!(
        client.try_send_request(server.loopback_addr(), &[1; 20_000], 0),
        Err(Error::WouldBlock)
    ));
}

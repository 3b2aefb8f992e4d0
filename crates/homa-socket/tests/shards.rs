//! A server port served by several shards (`SocketConfig::shards`), over real UDP
//! loopback sockets of both IP versions: every RPC is served exactly once, by the shard
//! its client port maps to, behind the unchanged `Socket` API.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use common::*;
use homa_socket::{Error, Socket, SocketConfig, TransportKind, Want};

const SHARDS: u16 = 4;
const CLIENTS: usize = 8;
const RPCS_PER_CLIENT: u64 = 150;

/// Client sockets whose ports cover every shard twice (the shard of a client is its
/// port mod the shard count, and ports are chosen by the kernel).
fn clients_on_every_shard(v6: bool) -> Vec<Socket> {
    let mut per_shard: Vec<Vec<Socket>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for _ in 0..10_000 {
        let socket = Socket::new(config(TransportKind::Udp, v6)).unwrap();
        let shard = &mut per_shard[usize::from(socket.port() % SHARDS)];
        if shard.len() < CLIENTS / usize::from(SHARDS) {
            shard.push(socket);
        }
        if per_shard
            .iter()
            .all(|s| s.len() == CLIENTS / usize::from(SHARDS))
        {
            return per_shard.into_iter().flatten().collect();
        }
    }
    panic!("the kernel never gave client ports of every residue mod {SHARDS}");
}

fn request(client: usize, k: u64) -> Vec<u8> {
    // Mostly one-packet requests, every seventh a multi-packet one.
    let len = if k % 7 == 3 {
        150_000
    } else {
        100 + (k as usize * 13) % 1_000
    };
    pattern(len, (client as u64) << 32 | k)
}

#[test]
fn four_shards_and_eight_client_threads_serve_every_rpc_exactly_once() {
    for v6 in [false, true] {
        every_rpc_exactly_once(v6);
    }
}

fn every_rpc_exactly_once(v6: bool) {
    let what = label(TransportKind::Udp, v6);
    let server = bind_server(|| config(TransportKind::Udp, v6).shards(SHARDS));
    assert_eq!(server.shard_count(), usize::from(SHARDS));
    let addr = server.loopback_addr();
    let clients = clients_on_every_shard(v6);
    // (client port, RPC id) -> how many times a server thread received it.
    let served: Mutex<HashMap<(SocketAddr, u64), u32>> = Mutex::new(HashMap::new());
    // Bpage offsets seen per shard of the sender's port: shard i's lie in its own
    // part of the socket's offset space.
    let offsets: Mutex<HashMap<u16, Vec<u32>>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..SHARDS {
            s.spawn(|| loop {
                let request = match server.recv(Want::Requests) {
                    Ok(r) => r,
                    Err(Error::Shutdown) => return,
                    Err(e) => panic!("{what}: server: {e}"),
                };
                *served
                    .lock()
                    .unwrap()
                    .entry((request.peer(), request.id()))
                    .or_insert(0) += 1;
                offsets
                    .lock()
                    .unwrap()
                    .entry(request.peer().port() % SHARDS)
                    .or_default()
                    .extend_from_slice(request.bpage_offsets());
                let echo = request.to_vec();
                request.reply_owned(echo).unwrap();
            });
        }
        let workers: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(c, client)| {
                let what = &what;
                s.spawn(move || {
                    for k in 0..RPCS_PER_CLIENT {
                        let msg = request(c, k);
                        let id = client.send_request(addr, &msg, k).unwrap();
                        let response = client
                            .recv_timeout(Want::Response(id), RECV_LIMIT)
                            .unwrap_or_else(|e| panic!("{what}: client {c}, RPC {k}: {e}"));
                        assert_eq!(response.cookie(), k);
                        assert!(response.to_vec() == msg, "{what}: client {c}, RPC {k}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        server.shutdown();
    });
    let served = served.into_inner().unwrap();
    assert_eq!(
        served.len(),
        CLIENTS * RPCS_PER_CLIENT as usize,
        "{what}: every RPC reached a server thread"
    );
    assert!(
        served.values().all(|&n| n == 1),
        "{what}: some RPC was served twice"
    );
    // Each shard received its clients' requests, into its own part of the region.
    let offsets = offsets.into_inner().unwrap();
    let span = homa_socket::region::DEFAULT_REGION_SIZE as u32 / u32::from(SHARDS);
    for shard in 0..SHARDS {
        let seen = &offsets[&shard];
        assert!(!seen.is_empty(), "{what}: shard {shard} served nothing");
        let own = u32::from(shard) * span..u32::from(shard + 1) * span;
        assert!(
            seen.iter().all(|o| own.contains(o)),
            "{what}: shard {shard}'s offsets outside {own:?}"
        );
    }
}

#[test]
fn a_sharded_socket_routes_requests_responses_and_bpages_to_their_shard() {
    let server = bind_server(|| config(TransportKind::Udp, false).shards(SHARDS));
    // The sharded socket is a client too: of a plain server on another port.
    let other = bind_server(|| config(TransportKind::Udp, false));
    let mut ids = Vec::new();
    for k in 0..8u64 {
        ids.push(server.send_request(other.loopback_addr(), b"q", k).unwrap());
    }
    for _ in 0..8 {
        let r = other.recv_timeout(Want::Requests, RECV_LIMIT).unwrap();
        r.reply(&r.to_vec()).unwrap();
    }
    // One by id, the rest as any response; each exactly once.
    let first = server
        .recv_timeout(Want::Response(ids[0]), RECV_LIMIT)
        .unwrap();
    assert_eq!(first.cookie(), 0);
    drop(first);
    let mut cookies: Vec<u64> = (1..8)
        .map(|_| {
            server
                .recv_timeout(Want::Responses, RECV_LIMIT)
                .unwrap()
                .cookie()
        })
        .collect();
    cookies.sort();
    assert_eq!(cookies, (1..8).collect::<Vec<_>>());
    assert!(matches!(
        server.try_recv(Want::Responses),
        Err(Error::WouldBlock)
    ));
    assert!(!server.abort(ids[1]), "already received");

    // Requests from clients of every shard; bpages kept by offset and given back.
    let clients = clients_on_every_shard(false);
    for (c, client) in clients.iter().enumerate() {
        client
            .send_request(server.loopback_addr(), &pattern(70_000, c as u64), 0)
            .unwrap();
    }
    let mut kept = Vec::new();
    for _ in 0..clients.len() {
        let r = server.recv_timeout(Want::Both, RECV_LIMIT).unwrap();
        assert!(r.is_request());
        r.reply(b"ok").unwrap();
        kept.extend(r.into_bpages());
    }
    assert!(!server.pool_is_idle(), "kept bpages are out of the pools");
    assert!(matches!(
        server.release_bpages(&[u32::MAX]),
        Err(Error::UnknownBpage { offset: u32::MAX })
    ));
    server.release_bpages(&kept).unwrap();
    assert!(server.pool_is_idle());
    assert!(
        server.release_bpages(&kept[..1]).is_err(),
        "already given back"
    );
    for (c, client) in clients.iter().enumerate() {
        let response = client
            .recv_timeout(Want::Responses, RECV_LIMIT)
            .unwrap_or_else(|e| panic!("client {c}: {e}"));
        assert_eq!(response.to_vec(), b"ok");
    }
    // The counters are the sum of the shards'.
    let stats = server.stats();
    assert!(stats.received_by_type[0] >= clients.len() as u64 * 2);
}

#[test]
fn sharding_misuse_is_a_typed_error() {
    let invalid = |r: Result<Socket, Error>, what: &str| match r {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: {other:?}"),
    };
    invalid(
        Socket::new(SocketConfig::default().shards(2)),
        "a sharded client socket",
    );
    invalid(
        Socket::bind(
            unused_server_port(TransportKind::Udp, false),
            SocketConfig::default().shards(0),
        ),
        "zero shards",
    );
    invalid(
        Socket::bind(
            unused_server_port(TransportKind::Udp, false),
            SocketConfig::default().shards(257),
        ),
        "257 shards",
    );
    invalid(
        Socket::bind(
            unused_server_port(TransportKind::Udp, false),
            SocketConfig::default()
                .transport(TransportKind::RawIp)
                .shards(2),
        ),
        "raw IP shards",
    );
    invalid(
        Socket::bind(
            unused_server_port(TransportKind::Udp, false),
            SocketConfig::default().region_size(8 << 20).shards(8),
        ),
        "a region too small for its shards",
    );
    // A port taken by a sharded socket cannot be bound again, sharded or not.
    let server = bind_server(|| SocketConfig::default().shards(2));
    for shards in [1, 2] {
        match Socket::bind(server.port(), SocketConfig::default().shards(shards)) {
            Err(e) => assert!(is_addr_in_use(&e), "{shards} shards: {e}"),
            Ok(_) => panic!("{shards} shards: bound a port in use"),
        }
    }
}

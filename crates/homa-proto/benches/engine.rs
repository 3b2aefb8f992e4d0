//! Engine cost per packet: `cargo bench -p homa-proto --bench engine`.
//!
//! A plain harness (no external crate): each case runs for a fixed number of iterations,
//! repeated a few times, and prints the best per-packet time. It measures the engine
//! alone: no sockets, no system calls.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use homa_proto::engine::{Engine, EngineOptions, Event};
use homa_proto::{Config, Time};

const MESSAGE: usize = 1_000_000;

fn config() -> Config {
    // Everything unscheduled and no pacing, so one side alone can be timed.
    Config::builder()
        .unsched_bytes(1_000_000)
        .dont_throttle(true)
        .build()
        .unwrap()
}

fn client() -> Engine {
    Engine::new(config(), EngineOptions::client(40_000, 2), vec![0; 4 << 20]).unwrap()
}

fn server() -> Engine {
    Engine::new(
        config(),
        EngineOptions::server(4000, 1001),
        vec![0; 4 << 20],
    )
    .unwrap()
}

const SERVER: &str = "10.0.0.2:4000";
const CLIENT_IP: &str = "10.0.0.1";

/// Packets of one request as the client emits them.
fn request_packets() -> Vec<Vec<u8>> {
    let mut c = client();
    let server: SocketAddr = SERVER.parse().unwrap();
    c.send_request(Time::ZERO, server, vec![7; MESSAGE], 0)
        .unwrap();
    let mut buf = vec![0; c.max_packet_size()];
    let mut packets = Vec::new();
    while let Some(t) = c.poll_transmit(Time::ZERO, &mut buf) {
        packets.push(buf[..t.len].to_vec());
    }
    packets
}

fn best_of<F: FnMut() -> u64>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let packets = f();
            start.elapsed().as_nanos() as f64 / packets as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let iterations = 200;
    let from: IpAddr = CLIENT_IP.parse().unwrap();

    // Transmit: send_request + poll_transmit of every DATA packet.
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let tx = best_of(5, || {
        let mut c = client();
        let mut buf = vec![0; c.max_packet_size()];
        let mut n = 0;
        for _ in 0..iterations {
            c.send_request(Time::ZERO, server_addr, vec![7; MESSAGE], 0)
                .unwrap();
            while let Some(t) = c.poll_transmit(Time::ZERO, &mut buf) {
                black_box(t);
                n += 1;
            }
            // A fresh engine, so unanswered requests do not fill the transmit buffer.
            c = client();
        }
        n
    });

    // Receive: handle_datagram of every DATA packet of a message, payload into the region.
    let packets = request_packets();
    let rx = best_of(5, || {
        let mut s = server();
        let mut n = 0;
        for i in 0..iterations {
            // A fresh id per message: rewrite sender_id (bytes 20..28) in place.
            let mut pkts = packets.clone();
            for p in &mut pkts {
                p[20..28].copy_from_slice(&(2 * i as u64 + 2).to_be_bytes());
            }
            for p in &pkts {
                s.handle_datagram(Time::ZERO, from, p);
                n += 1;
            }
            while let Some(ev) = s.poll_event() {
                if let Event::Request(m) = ev {
                    s.release_message(Time::ZERO, &m).unwrap();
                    s.send_response(Time::ZERO, m.peer, m.id, vec![1]).unwrap();
                }
            }
            let mut buf = vec![0; s.max_packet_size()];
            while s.poll_transmit(Time::ZERO, &mut buf).is_some() {}
        }
        n
    });

    // A small RPC end to end through two engines (both sides' work).
    let small = best_of(5, || {
        let mut c = client();
        let mut s = server();
        let mut buf = vec![0; c.max_packet_size()];
        let server_ip = server_addr.ip();
        let rpcs = 20_000;
        for _ in 0..rpcs {
            c.send_request(Time::ZERO, server_addr, vec![1; 100], 0)
                .unwrap();
            while let Some(t) = c.poll_transmit(Time::ZERO, &mut buf) {
                s.handle_datagram(Time::ZERO, from, &buf[..t.len]);
            }
            while let Some(Event::Request(m)) = s.poll_event() {
                s.release_message(Time::ZERO, &m).unwrap();
                s.send_response(Time::ZERO, m.peer, m.id, vec![2; 100])
                    .unwrap();
            }
            while let Some(t) = s.poll_transmit(Time::ZERO, &mut buf) {
                c.handle_datagram(Time::ZERO, server_ip, &buf[..t.len]);
            }
            while let Some(Event::Response(m)) = c.poll_event() {
                c.release_message(Time::ZERO, &m).unwrap();
            }
        }
        rpcs
    });

    println!(
        "engine cost (best of 5 runs, {} packets of up to 1424 payload bytes per message)",
        packets.len()
    );
    println!("  transmit: {tx:8.1} ns per DATA packet (send_request + poll_transmit)");
    println!(
        "  receive:  {rx:8.1} ns per DATA packet (handle_datagram, payload copied into the region)"
    );
    println!("  small RPC (100 B each way, both engines): {small:8.1} ns per RPC");
}

//! How fast the test network runs real Homa engines:
//! `cargo run --release -p homa-sim --example engine_speed`.
//!
//! 8 clients and 8 servers on a 10 Gbit/s star; each client keeps 4 RPCs of random
//! lengths (log-uniform, 100 B to 100 KB, echoed back) in flight to random servers for
//! 50 ms of virtual time. Prints simulated packets per wall-clock second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use homa_proto::engine::{Engine, EngineOptions, Event};
use homa_proto::{Config, Time};
use homa_sim::host::{App, Host};
use homa_sim::rng::Rng;
use homa_sim::{NetConfig, Star};

const CLIENTS: usize = 8;
const SERVERS: usize = 8;

enum Role {
    Server,
    Client {
        rng: Rng,
        servers: Vec<SocketAddr>,
        done: u64,
    },
}

impl Role {
    fn send(rng: &mut Rng, servers: &[SocketAddr], now: Time, engine: &mut Engine) {
        let len = 10f64.powf(2.0 + 3.0 * rng.next_f64()) as usize;
        let to = servers[rng.below(servers.len() as u64) as usize];
        engine.send_request(now, to, vec![7; len], 0).expect("send");
    }
}

impl App for Role {
    fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
        match (self, event) {
            (Role::Server, Event::Request(m)) => {
                let len = m.len();
                engine.release_message(now, &m).unwrap();
                engine
                    .send_response(now, m.peer, m.id, vec![9; len])
                    .unwrap();
            }
            (Role::Client { rng, servers, done }, Event::Response(m)) => {
                engine.release_message(now, &m).unwrap();
                *done += 1;
                Role::send(rng, servers, now, engine);
            }
            (_, e) => panic!("unexpected {e:?}"),
        }
    }
}

fn main() {
    let config = Config::builder().link_mbps(10_000).build().unwrap();
    let mut net = Star::new(CLIENTS + SERVERS)
        .config(NetConfig::with_seed(1))
        .build(|i, _ip| {
            let region = vec![0u8; 8 << 20];
            if i < SERVERS {
                let e = Engine::new(
                    config.clone(),
                    EngineOptions::server(4000, i as u64 * 2 + 1),
                    region,
                )
                .unwrap();
                Host::new(e, Role::Server)
            } else {
                let e = Engine::new(
                    config.clone(),
                    EngineOptions::client(40_000, (i as u64) << 40),
                    region,
                )
                .unwrap();
                let servers = (0..SERVERS)
                    .map(|s| SocketAddr::new(homa_sim::host_ip(s), 4000))
                    .collect();
                Host::new(
                    e,
                    Role::Client {
                        rng: Rng::new(i as u64),
                        servers,
                        done: 0,
                    },
                )
            }
        })
        .unwrap();
    for i in SERVERS..SERVERS + CLIENTS {
        let now = net.now();
        let host = net.node_mut(i);
        if let Role::Client { rng, servers, .. } = &mut host.app {
            for _ in 0..4 {
                Role::send(rng, servers, now, &mut host.engine);
            }
        }
    }
    let start = Instant::now();
    net.run_for(Duration::from_millis(50)).unwrap();
    let wall = start.elapsed().as_secs_f64();
    let rpcs: u64 = net
        .nodes()
        .map(|h| match &h.app {
            Role::Client { done, .. } => *done,
            Role::Server => 0,
        })
        .sum();
    let stats = net.stats();
    println!(
        "test network with real engines: {} hosts, 50 ms of virtual time",
        CLIENTS + SERVERS
    );
    println!("  RPCs completed:        {rpcs}");
    println!("  packets delivered:     {}", stats.packets_delivered);
    println!("  events:                {}", stats.events);
    println!("  wall time:             {wall:.3} s");
    println!(
        "  simulated packets/s:   {:.0}",
        stats.packets_delivered as f64 / wall
    );
    println!("  events/s:              {:.0}", stats.events as f64 / wall);
}

//! Test applications for the engine's protocol tests: a server that answers requests
//! (counting how often each request reaches it) and a client that sends a script of
//! requests and checks every response byte.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use homa_proto::engine::{Engine, EngineOptions, Event, Message, RpcFailure};
use homa_proto::{Config, Time};
use homa_sim::host::{App, Host};
use homa_sim::rng::Rng;
use homa_sim::{LinkSpec, NetConfig, Network, Star};

/// Server port used by every test.
pub(crate) const SERVER_PORT: u16 = 4000;
/// Host 0 is the server in every test network.
pub(crate) const SERVER: usize = 0;
/// Generous step bound: livelock detection, not a performance limit.
pub(crate) const MAX_STEPS: u64 = 50_000_000;

/// The response to a request: its bytes reversed; but if the request starts with a
/// `0xFF` byte followed by a 4-byte big-endian length, that many bytes of a pattern (so a
/// small request can ask for a large response), and if it starts with `0xFE`, its first
/// 8 bytes (a large request with a small response).
pub(crate) fn response_for(request: &[u8]) -> Vec<u8> {
    if request[0] == 0xFE {
        return request[..request.len().min(8)].to_vec();
    }
    if request.len() >= 5 && request[0] == 0xFF {
        let len = u32::from_be_bytes([request[1], request[2], request[3], request[4]]) as usize;
        let seed = request.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        return (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
    }
    request.iter().rev().copied().collect()
}

/// A request asking for a `len`-byte response.
pub(crate) fn request_for_response(len: u32, extra: u8) -> Vec<u8> {
    let mut r = vec![0xFF];
    r.extend_from_slice(&len.to_be_bytes());
    r.push(extra);
    r
}

/// A `len`-byte request (at least 8) whose response is small.
pub(crate) fn one_way(len: usize, fill: u8) -> Vec<u8> {
    let mut r = vec![fill; len];
    r[0] = 0xFE;
    r
}

/// `len` random bytes.
pub(crate) fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Answers requests with [`response_for`], after `delay`; keeps each request's buffers
/// for `hold` before giving them back.
#[derive(Debug, Default)]
pub(crate) struct Server {
    pub(crate) delay: Duration,
    pub(crate) hold: Duration,
    /// Never respond (a server whose application hangs).
    pub(crate) mute: bool,
    /// How many times each request (client address, id) reached the application.
    pub(crate) deliveries: HashMap<(SocketAddr, u64), u32>,
    pending: BTreeMap<(Time, u64), (Message, Vec<u8>)>,
    seq: u64,
}

impl Server {
    fn finish(&mut self, now: Time, engine: &mut Engine, m: Message, bytes: &[u8]) {
        engine
            .release_message(now, &m)
            .expect("request buffers are ours");
        if !self.mute {
            // The RPC may be gone (the client went away): that is not an error here.
            let _ = engine.send_response(now, m.peer, m.id, response_for(bytes));
        }
    }

    /// Requests that reached the application more than once.
    pub(crate) fn duplicates(&self) -> usize {
        self.deliveries.values().filter(|&&n| n > 1).count()
    }
}

impl App for Server {
    fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
        let Event::Request(m) = event else {
            panic!("a server gets only requests, got {event:?}");
        };
        *self.deliveries.entry((m.peer, m.id)).or_insert(0) += 1;
        let bytes = engine.message_bytes(&m);
        let wait = self.delay.max(self.hold);
        if wait.is_zero() {
            self.finish(now, engine, m, &bytes);
        } else {
            self.seq += 1;
            self.pending.insert((now + wait, self.seq), (m, bytes));
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.pending.keys().next().map(|&(t, _)| t)
    }

    fn on_timeout(&mut self, now: Time, engine: &mut Engine) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (m, bytes) = entry.remove();
            self.finish(now, engine, m, &bytes);
        }
    }
}

/// One finished RPC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    pub(crate) id: u64,
    pub(crate) request_len: usize,
    pub(crate) response_len: usize,
    pub(crate) sent: Time,
    pub(crate) completed: Time,
}

/// Sends scripted requests and checks every response.
#[derive(Debug, Default)]
pub(crate) struct Client {
    /// Requests to send: (time, server, bytes), in time order.
    pub(crate) script: VecDeque<(Time, SocketAddr, Vec<u8>)>,
    /// Send this request again each time its response arrives, until `repeat_until`.
    pub(crate) repeat: Option<(SocketAddr, Vec<u8>)>,
    pub(crate) repeat_until: Time,
    outstanding: HashMap<u64, (Vec<u8>, Time, usize)>,
    pub(crate) done: Vec<Done>,
    pub(crate) failed: Vec<RpcFailure>,
    /// Responses whose bytes were wrong (must stay 0).
    pub(crate) corrupt: usize,
}

impl Client {
    pub(crate) fn send(
        &mut self,
        now: Time,
        engine: &mut Engine,
        to: SocketAddr,
        request: Vec<u8>,
    ) {
        let expected = response_for(&request);
        let len = request.len();
        let id = engine
            .send_request(now, to, request, 0)
            .unwrap_or_else(|e| panic!("send_request: {e}"));
        self.outstanding.insert(id, (expected, now, len));
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether every scripted request has been answered or has failed.
    pub(crate) fn finished(&self) -> bool {
        self.script.is_empty() && self.outstanding.is_empty()
    }
}

impl App for Client {
    fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
        match event {
            Event::Response(m) => {
                let (expected, sent, request_len) = self
                    .outstanding
                    .remove(&m.id)
                    .unwrap_or_else(|| panic!("response for unknown or finished RPC {}", m.id));
                let bytes = engine.message_bytes(&m);
                if bytes != expected {
                    self.corrupt += 1;
                }
                engine
                    .release_message(now, &m)
                    .expect("response buffers are ours");
                self.done.push(Done {
                    id: m.id,
                    request_len,
                    response_len: bytes.len(),
                    sent,
                    completed: now,
                });
                if let Some((to, req)) = self.repeat.clone() {
                    if now < self.repeat_until {
                        self.send(now, engine, to, req);
                    }
                }
            }
            Event::Failed(f) => {
                assert!(
                    self.outstanding.remove(&f.id).is_some(),
                    "failure for unknown RPC {}",
                    f.id
                );
                self.failed.push(f);
            }
            Event::Request(_) => panic!("a client gets no requests"),
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.script.front().map(|(t, _, _)| *t)
    }

    fn on_timeout(&mut self, now: Time, engine: &mut Engine) {
        while self.script.front().is_some_and(|(t, _, _)| *t <= now) {
            let (_, to, request) = self.script.pop_front().expect("checked");
            self.send(now, engine, to, request);
        }
    }
}

/// Either role, so one network can hold both.
#[derive(Debug)]
pub(crate) enum Role {
    Server(Server),
    Client(Client),
}

impl App for Role {
    fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
        match self {
            Role::Server(s) => s.on_event(now, engine, event),
            Role::Client(c) => c.on_event(now, engine, event),
        }
    }
    fn poll_timeout(&self) -> Option<Time> {
        match self {
            Role::Server(s) => s.poll_timeout(),
            Role::Client(c) => c.poll_timeout(),
        }
    }
    fn on_timeout(&mut self, now: Time, engine: &mut Engine) {
        match self {
            Role::Server(s) => s.on_timeout(now, engine),
            Role::Client(c) => c.on_timeout(now, engine),
        }
    }
}

pub(crate) type Net = Network<Host<Role>>;

/// The kernel's defaults, with the link speed of the test network (10 Gbit/s).
pub(crate) fn config() -> Config {
    Config::builder().link_mbps(10_000).build().unwrap()
}

/// Settings for a test network.
pub(crate) struct Setup {
    pub(crate) clients: usize,
    pub(crate) seed: u64,
    pub(crate) link: LinkSpec,
    pub(crate) config: Config,
    pub(crate) server_region: usize,
    pub(crate) server: Server,
}

impl Setup {
    pub(crate) fn new(clients: usize, seed: u64) -> Setup {
        Setup {
            clients,
            seed: homa_sim::seed_from_env(seed),
            link: LinkSpec::new(10_000_000_000, Duration::from_micros(1)),
            config: config(),
            server_region: 16 << 20,
            server: Server::default(),
        }
    }

    /// A star of one server (host 0) and `clients` clients.
    pub(crate) fn build(self) -> Net {
        let Setup {
            clients,
            seed,
            link,
            config,
            server_region,
            server,
        } = self;
        let mut server = Some(server);
        Star::new(clients + 1)
            .link(link)
            .config(NetConfig::with_seed(seed))
            .build(|i, _ip| {
                if i == SERVER {
                    let e = Engine::new(
                        config.clone(),
                        EngineOptions::server(SERVER_PORT, seed.wrapping_mul(7) | 1),
                        vec![0; server_region],
                    )
                    .unwrap();
                    Host::new(e, Role::Server(server.take().expect("one server")))
                } else {
                    // Distinct random id spaces per client, as real processes would have.
                    let first_id = Rng::new(seed ^ i as u64).next_u64();
                    let e = Engine::new(
                        config.clone(),
                        EngineOptions::client(40_000 + i as u16, first_id),
                        vec![0; 16 << 20],
                    )
                    .unwrap();
                    Host::new(e, Role::Client(Client::default()))
                }
            })
            .unwrap()
    }
}

pub(crate) fn server_addr(net: &Net) -> SocketAddr {
    SocketAddr::new(net.host_ip(SERVER), SERVER_PORT)
}

pub(crate) fn client(net: &Net, i: usize) -> &Client {
    match &net.node(i).app {
        Role::Client(c) => c,
        Role::Server(_) => panic!("host {i} is the server"),
    }
}

pub(crate) fn client_mut(net: &mut Net, i: usize) -> &mut Client {
    match &mut net.node_mut(i).app {
        Role::Client(c) => c,
        Role::Server(_) => panic!("host {i} is the server"),
    }
}

pub(crate) fn server(net: &Net) -> &Server {
    match &net.node(SERVER).app {
        Role::Server(s) => s,
        Role::Client(_) => panic!("host 0 is the server"),
    }
}

/// Sends `request` from client `i` now.
pub(crate) fn send(net: &mut Net, i: usize, request: Vec<u8>) {
    let now = net.now();
    let to = server_addr(net);
    let host = net.node_mut(i);
    let Role::Client(c) = &mut host.app else {
        panic!("host {i} is the server");
    };
    c.send(now, &mut host.engine, to, request);
}

/// Runs until every client has finished its script.
pub(crate) fn run_to_completion(net: &mut Net) {
    let n = net.num_hosts();
    net.run_until(|net| (1..n).all(|i| client(net, i).finished()), MAX_STEPS)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Checks the end state every test expects: every response correct, no request run
/// twice, every bpage back in its pool.
pub(crate) fn check_clean(net: &Net) {
    for i in 1..net.num_hosts() {
        let c = client(net, i);
        assert_eq!(c.corrupt, 0, "client {i}: corrupt responses");
        assert!(
            net.node(i).engine.pool().is_idle(),
            "client {i}: bpages not returned"
        );
    }
    assert_eq!(
        server(net).duplicates(),
        0,
        "a request reached the server twice"
    );
    assert!(
        net.node(SERVER).engine.pool().is_idle(),
        "server: bpages not returned"
    );
}

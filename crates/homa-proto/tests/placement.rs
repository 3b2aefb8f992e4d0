//! Direct placement (`Engine::placements` / `placement_fits` / `handle_placed`), driven
//! the way a scatter-receiving driver does: every datagram of a batch is first written
//! where its placement says (as the kernel would, before anyone looks at it), then the
//! mismatches are handled by copy and the matches in place. Messages must arrive intact
//! however packets are reordered or lost, and in-order traffic must mostly skip the copy.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use homa_proto::engine::{Engine, EngineOptions, Event, Placement};
use homa_proto::region::Region;
use homa_proto::wire::{PacketType, Repr, DATA_HEADER_LEN};
use homa_proto::{Config, Time};

/// A region the test can scribble on, as the kernel does when it scatters a datagram.
#[derive(Clone)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Region for Shared {
    fn len(&self) -> usize {
        self.0.borrow().len()
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
    }
}

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn engine(server: bool, region: &Shared) -> Engine<Shared> {
    let mut options = if server {
        EngineOptions::server(99, 1)
    } else {
        EngineOptions::client(40_000, 1000)
    };
    // Loopback peers get 64 KB packets, as over the socket library's loopback.
    options.max_packet_loopback = Some(65_507);
    Engine::new(Config::default(), options, region.clone()).unwrap()
}

fn drain(e: &mut Engine<Shared>, now: Time) -> Vec<Vec<u8>> {
    let mut buf = vec![0; e.max_packet_size()];
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        out.push(buf[..t.len].to_vec());
    }
    out
}

/// A tiny xorshift generator: the test's only randomness, seeded.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Receives `batch` from `from` as a scatter-receiving driver would; returns how many
/// datagrams were handled in place.
fn receive_batch(
    e: &mut Engine<Shared>,
    region: &Shared,
    now: Time,
    from: IpAddr,
    batch: &[Vec<u8>],
) -> usize {
    let mut places: Vec<Placement> = Vec::new();
    e.placements(batch.len(), &mut places);
    // The "kernel": bytes after the header of datagram i go to placement i's spans.
    for (packet, p) in batch.iter().zip(&places) {
        let mut rest = packet.get(DATA_HEADER_LEN..).unwrap_or(&[]);
        let mut mem = region.0.borrow_mut();
        for (at, len) in p.spans() {
            let n = len.min(rest.len());
            mem[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    // Phase 1: which datagrams are where their placement says.
    let fits: Vec<Option<&Placement>> = batch
        .iter()
        .enumerate()
        .map(|(i, packet)| {
            let p = places.get(i)?;
            let head = &packet[..packet.len().min(DATA_HEADER_LEN)];
            e.placement_fits(from, head, packet.len(), p).then_some(p)
        })
        .collect();
    // Phase 2: handle, the matches without a copy.
    let mut placed = 0;
    for (packet, fit) in batch.iter().zip(fits) {
        match fit {
            Some(p) => {
                placed += 1;
                e.handle_placed(now, from, &packet[..DATA_HEADER_LEN], packet.len(), p);
            }
            None => e.handle_datagram(now, from, packet),
        }
    }
    placed
}

struct Outcome {
    request: Vec<u8>,
    placed: usize,
    packets: usize,
    server: Engine<Shared>,
}

/// Sends one request of `data` and moves packets until the server has it, shuffling each
/// batch with probability `shuffle` and dropping each DATA packet with probability `loss`.
fn transfer(data: &[u8], seed: u64, shuffle: f64, loss: f64, hosts: [&str; 2]) -> Outcome {
    let [client_ip, server_ip] = hosts.map(ip);
    let client_region = Shared(Rc::new(RefCell::new(vec![0; 4 << 20])));
    let server_region = Shared(Rc::new(RefCell::new(vec![0; 4 << 20])));
    let mut client = engine(false, &client_region);
    let mut server = engine(true, &server_region);
    let mut rng = Rng(seed | 1);
    let chance = |rng: &mut Rng, p: f64| (rng.next() % 1_000_000) as f64 / 1e6 < p;
    let mut now = Time::ZERO;
    let dest = SocketAddr::new(server_ip, 99);
    client.send_request(now, dest, data.to_vec(), 5).unwrap();
    let (mut placed, mut packets) = (0, 0);
    for _ in 0..100_000 {
        let mut out = drain(&mut client, now);
        out.retain(|_| !chance(&mut rng, loss));
        for batch in out.chunks_mut(8) {
            if chance(&mut rng, shuffle) {
                for i in (1..batch.len()).rev() {
                    batch.swap(i, (rng.next() % (i as u64 + 1)) as usize);
                }
            }
            packets += batch.len();
            placed += receive_batch(&mut server, &server_region, now, client_ip, batch);
        }
        let back = drain(&mut server, now);
        for p in &back {
            client.handle_datagram(now, server_ip, p);
        }
        if let Some(Event::Request(m)) = server.poll_event() {
            let mem = server_region.0.borrow();
            let request = m
                .buffers
                .chunks()
                .flat_map(|(at, len)| mem[at..at + len].to_vec())
                .collect();
            drop(mem);
            return Outcome {
                request,
                placed,
                packets,
                server,
            };
        }
        if out.is_empty() && back.is_empty() {
            now += std::time::Duration::from_millis(1);
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
    }
    panic!("seed {seed}: the request never arrived");
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

#[test]
fn in_order_packets_are_received_in_place() {
    let data = pattern(500_000, 1);
    let o = transfer(&data, 1, 0.0, 0.0, [CLIENT, SERVER]);
    assert!(o.request == data, "message corrupted");
    assert_eq!(o.server.stats().placed_packets as usize, o.placed);
    assert_eq!(o.server.stats().misplaced, 0);
    // Everything but the first packet of the message can be predicted; batches are cut
    // where the engine's output is, so allow a little slack.
    assert!(
        o.placed * 10 >= o.packets * 9,
        "only {} of {} packets placed",
        o.placed,
        o.packets
    );
}

#[test]
fn loopback_sized_packets_are_received_in_place_after_the_first() {
    // 64 KB packets; the first carries the 40,000 unscheduled bytes, so it does not show
    // the segment size: the guess (this engine's own) must be right from the second.
    let data = pattern(1_000_000, 2);
    let o = transfer(&data, 2, 0.0, 0.0, ["127.0.0.1", "127.0.0.1"]);
    assert!(o.request == data, "message corrupted");
    assert_eq!(o.packets, 16);
    assert_eq!(o.placed, 15, "every packet but the first placed");
}

#[test]
fn reordered_and_lost_packets_still_arrive_intact() {
    let (mut placed, mut packets) = (0, 0);
    for seed in 1..=40 {
        let hosts = if seed % 2 == 0 {
            [CLIENT, SERVER]
        } else {
            ["127.0.0.1", "127.0.0.1"]
        };
        let len = 1 + (Rng(seed * 7919).next() % 300_000) as usize;
        let data = pattern(len, seed);
        let o = transfer(&data, seed, 0.5, 0.05, hosts);
        placed += o.placed;
        packets += o.packets;
        assert!(
            o.request == data,
            "seed {seed}: {len}-byte message corrupted"
        );
        assert_eq!(o.server.stats().misplaced, 0, "seed {seed}");
    }
    // Both paths were taken: packets received in place, and mispredicted ones copied
    // over bytes that were scribbled on.
    assert!(
        placed > 0 && placed < packets,
        "{placed} of {packets} placed"
    );
}

#[test]
fn a_placement_outlived_by_its_rpc_is_dropped_and_counted() {
    let region = Shared(Rc::new(RefCell::new(vec![0; 4 << 20])));
    let server_region = Shared(Rc::new(RefCell::new(vec![0; 4 << 20])));
    let mut client = engine(false, &region);
    let mut server = engine(true, &server_region);
    let now = Time::ZERO;
    let id = client
        .send_request(now, SocketAddr::new(ip(SERVER), 99), vec![1; 10], 0)
        .unwrap();
    for p in drain(&mut client, now) {
        server.handle_datagram(now, ip(CLIENT), &p);
    }
    let Some(Event::Request(req)) = server.poll_event() else {
        panic!("no request");
    };
    server
        .send_response(now, req.peer, req.id, pattern(200_000, 3))
        .unwrap();
    let mut response = drain(&mut server, now);
    response.retain(|p| Repr::parse(p).unwrap().packet_type() == PacketType::Data);
    // The first packet tells the client the segment size; then placements exist.
    client.handle_datagram(now, ip(SERVER), &response[0]);
    let mut places = Vec::new();
    client.placements(4, &mut places);
    assert!(!places.is_empty());
    let p = places[0];
    let second = &response[1];
    assert!(client.placement_fits(ip(SERVER), &second[..DATA_HEADER_LEN], second.len(), &p));
    // The application gives up on the RPC before the driver handles the datagram.
    assert!(client.abort(id));
    client.handle_placed(
        now,
        ip(SERVER),
        &second[..DATA_HEADER_LEN],
        second.len(),
        &p,
    );
    assert_eq!(client.stats().misplaced, 1);
    assert_eq!(client.stats().placed_packets, 0);
    // A packet from elsewhere does not fit a placement either.
    assert!(!client.placement_fits(ip(CLIENT), &second[..DATA_HEADER_LEN], second.len(), &p));
    assert!(!client.placement_fits(ip(SERVER), &second[..10], second.len(), &p));
}

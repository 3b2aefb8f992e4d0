//! How many packets per second of wall time the simulator moves.
//!
//! Every host keeps a fixed number of full-size packets in flight to random other hosts
//! (a closed loop, so the run reaches a steady state), on a 16-host star and on the Homa
//! papers' 144-host two-tier datacenter. Run with
//! `cargo run --release -p homa-sim --example sim_throughput [virtual_ms]`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use homa_proto::Time;
use homa_sim::rng::Rng;
use homa_sim::{host_ip, Network, Node, Outgoing, Star, TwoTier};

/// Keeps `window` packets in flight: one new packet per packet received.
struct Blaster {
    rng: Rng,
    me: usize,
    hosts: usize,
    credits: u32,
}

impl Node for Blaster {
    fn handle_datagram(&mut self, _now: Time, _from: IpAddr, _packet: &[u8]) {
        self.credits += 1;
    }

    fn poll_transmit(&mut self, _now: Time, buf: &mut [u8]) -> Option<Outgoing> {
        if self.credits == 0 {
            return None;
        }
        self.credits -= 1;
        let mut dst = self.rng.below(self.hosts as u64 - 1) as usize;
        if dst >= self.me {
            dst += 1;
        }
        buf[11] = 0x10;
        Some(Outgoing {
            destination: host_ip(dst),
            len: buf.len(),
            priority: (self.rng.next_u64() & 7) as u8,
        })
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        None
    }

    fn handle_timeout(&mut self, _now: Time) {}
}

fn blaster(hosts: usize, window: u32) -> impl FnMut(usize, IpAddr) -> Blaster {
    move |me, _| Blaster {
        rng: Rng::stream(1, me as u64),
        me,
        hosts,
        credits: window,
    }
}

fn measure(name: &str, net: &mut Network<Blaster>, virtual_time: Duration) {
    // Warm up (buffers, heap and queues reach their steady-state sizes), then measure.
    net.run_for(virtual_time / 10).unwrap();
    let before = net.stats().clone();
    let wall = Instant::now();
    net.run_for(virtual_time).unwrap();
    let wall = wall.elapsed().as_secs_f64();
    let after = net.stats();
    let delivered = after.packets_delivered - before.packets_delivered;
    let hops = after.transmissions - before.transmissions;
    let events = after.events - before.events;
    println!(
        "{name}: {:.1} ms virtual in {:.3} s wall: {:.2} M packets delivered/s, \
         {:.2} M packet-hops/s, {:.2} M events/s ({delivered} packets, {hops} hops, \
         {} events queued at the end)",
        virtual_time.as_secs_f64() * 1e3,
        wall,
        delivered as f64 / wall / 1e6,
        hops as f64 / wall / 1e6,
        events as f64 / wall / 1e6,
        net.pending_events(),
    );
}

fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let virtual_time = Duration::from_millis(ms);

    let mut star = Star::new(16).build(blaster(16, 8)).unwrap();
    measure("star, 16 hosts", &mut star, virtual_time);

    let mut dc = TwoTier::homa_paper().build(blaster(144, 8)).unwrap();
    measure("two-tier, 144 hosts", &mut dc, virtual_time);
}

//! # homa-sim — a deterministic discrete-event network for Homa engines
//!
//! A topology of hosts and switches joined by links. Each direction of a link is fed by
//! an egress port with eight strict-priority FIFO queues (or one FIFO) and a finite or
//! unlimited buffer; packets are serialised at the link rate (packet length plus a
//! per-packet overhead), propagate for the link latency, and are stored and forwarded
//! by switches after a fixed delay. Switches route by destination IP along shortest
//! paths, spraying packets over equal-cost next hops with a seeded generator. Virtual
//! time jumps from event to event; events with equal times run in the order they were
//! scheduled, so a run is a pure function of its [`NetConfig::seed`].
//!
//! Hosts run a [`Node`]: the Homa engine (through a thin adapter), or any test double.
//! After every call into a node the network drains its [`Node::poll_transmit`] and
//! re-reads [`Node::poll_timeout`], as a real driver would.
//!
//! The same machinery serves two scales: the engine's deterministic test network
//! ([`Star`]) and the datacenter simulator ([`TwoTier`]: racks of hosts under
//! top-of-rack switches, uplinks to aggregation switches). [`datacenter`] runs the
//! Homa paper's experiments on it (open-loop workloads W1–W5 over one engine per host,
//! slowdown against the ideal time, sustained load); `homa sim` is its command line.
//!
//! Faults — loss, duplication and extra delay (reordering) — are [`FaultRule`]s drawn from
//! the seeded generator, each limited by a [`Filter`] (packet type, sender, receiver,
//! priority) and acting at a [`FaultSite`].
//!
//! Runs are bounded: [`Network::run_until`] fails with a [`SimError`] that names the
//! seed when the step limit is hit (livelock) or the network goes idle first (deadlock);
//! a panic that unwinds through a network prints its seed too.
//!
//! ## The model
//!
//! * **Serialisation.** A packet of `len` bytes holds a link for
//!   `(len + per_packet_overhead) × 8 / rate` seconds ([`NetConfig::per_packet_overhead`]:
//!   IPv4 header and Ethernet framing, 62 bytes by default). Within a busy period
//!   departure times come from the cumulative bit count, rounded up to the nanosecond,
//!   so back-to-back packets accumulate no rounding error.
//! * **Propagation and delays.** The packet reaches the far end [`LinkSpec::latency`]
//!   after its last bit left. A switch forwards it [`NetConfig::switch_delay`] after it
//!   has fully arrived (store-and-forward); a host hands it to its node
//!   [`NetConfig::host_rx_delay`] after it arrived. A node's packets enter the egress port
//!   [`NetConfig::host_tx_delay`] after it emitted them.
//! * **Egress ports.** A packet reaching an idle port starts at once; otherwise it waits
//!   in the FIFO of its priority level (or is tail-dropped if the port's buffer is full).
//!   When a transmission ends, the oldest packet of the highest non-empty level starts.
//! * **Routing.** Each device forwards a packet for host `h` over a link on a shortest
//!   path to `h`; equal-cost links are chosen per packet from the seeded generator
//!   ([`Ecmp::Spray`]) or per host pair ([`Ecmp::FlowHash`]).
//! * **Determinism.** Events are ordered by (time, sequence number of scheduling); every
//!   random decision comes from a generator stream derived from the seed; nothing reads a
//!   clock or depends on hash-map iteration order.
//! * **Cost.** An event is 24 bytes in a binary heap; packet slots and their buffers are
//!   recycled, queues keep their capacity, so a run in steady state allocates nothing per
//!   packet (with tracing off).
//!
//! ```
//! use core::net::IpAddr;
//! use homa_proto::Time;
//! use homa_sim::{Node, Outgoing, Star};
//!
//! /// Answers every packet with one of the same length.
//! #[derive(Default)]
//! struct Echo {
//!     pending: Vec<(IpAddr, usize)>,
//!     received: u32,
//! }
//!
//! impl Node for Echo {
//!     fn handle_datagram(&mut self, _now: Time, from: IpAddr, packet: &[u8]) {
//!         self.received += 1;
//!         if self.received < 10 {
//!             self.pending.push((from, packet.len()));
//!         }
//!     }
//!     fn poll_transmit(&mut self, _now: Time, buf: &mut [u8]) -> Option<Outgoing> {
//!         let (destination, len) = self.pending.pop()?;
//!         buf[..len].fill(0);
//!         Some(Outgoing { destination, len, priority: 0 })
//!     }
//!     fn poll_timeout(&mut self) -> Option<Time> {
//!         None
//!     }
//!     fn handle_timeout(&mut self, _now: Time) {}
//! }
//!
//! let mut net = Star::new(2).build(|_, _| Echo::default()).unwrap();
//! let peer = net.host_ip(1);
//! net.node_mut(0).pending.push((peer, 100)); // polled before the next step
//! net.run_until(|n| n.node(1).received == 10, 1_000).unwrap();
//! assert_eq!(net.stats().packets_delivered, 19);
//! assert!(net.now() > Time::ZERO);
//! ```

#![forbid(unsafe_code)]

use core::net::IpAddr;

use homa_proto::Time;

mod config;
pub mod datacenter;
mod error;
mod fault;
pub mod host;
mod network;
pub mod rng;
mod stats;
mod topology;
mod trace;

pub use config::{
    max_packet_for_mtu, seed_from_env, Ecmp, LinkSpec, NetConfig, Scheduling, DEFAULT_MAX_PACKET,
    DEFAULT_MTU, DEFAULT_OVERHEAD, IPV4_HEADER_LEN,
};
pub use error::{BuildError, SimError};
pub use fault::{packet_type, FaultCounts, FaultId, FaultKind, FaultRule, FaultSite, Filter};
pub use network::{Network, PortId};
pub use stats::{Drops, PortStats, Stats};
pub use topology::{host_ip, Device, Star, TopologyBuilder, TwoTier};
pub use trace::{DropReason, TraceEntry, TraceKind};

/// A packet a node wants to send: its bytes are the first `len` bytes of the buffer it
/// was given.
///
/// ```
/// use homa_sim::{host_ip, Outgoing};
/// let out = Outgoing { destination: host_ip(1), len: 56, priority: 7 };
/// assert_eq!(out.len, 56);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// IP address of the destination host.
    pub destination: IpAddr,
    /// Length of the Homa packet, at most the buffer's length.
    pub len: usize,
    /// Priority level, 0 (lowest) ..= 7 (highest); larger values are treated as 7.
    pub priority: u8,
}

/// A host's protocol stack, driven by the network in virtual time (the sans-IO driving
/// contract of the Homa engine).
///
/// The network calls, for each host:
///
/// * [`handle_datagram`](Node::handle_datagram) when a packet has arrived (after the
///   host's receive delay);
/// * [`handle_timeout`](Node::handle_timeout) when the deadline last returned by
///   [`poll_timeout`](Node::poll_timeout) has been reached;
/// * after each of those calls, and after the test touched the node through
///   [`Network::node_mut`] or [`Network::poll`]: [`poll_transmit`](Node::poll_transmit)
///   until it returns `None` (at most [`NetConfig::max_burst`] packets per step), then
///   [`poll_timeout`](Node::poll_timeout).
///
/// `now` never decreases between calls. `Box<dyn Node>` is a `Node`, for networks of
/// mixed node types.
///
/// ```
/// use core::net::IpAddr;
/// use homa_proto::Time;
/// use homa_sim::{Node, Outgoing};
///
/// /// Counts packets, never sends.
/// struct Sink(u64);
///
/// impl Node for Sink {
///     fn handle_datagram(&mut self, _now: Time, _from: IpAddr, _packet: &[u8]) {
///         self.0 += 1;
///     }
///     fn poll_transmit(&mut self, _now: Time, _buf: &mut [u8]) -> Option<Outgoing> {
///         None
///     }
///     fn poll_timeout(&mut self) -> Option<Time> {
///         None
///     }
///     fn handle_timeout(&mut self, _now: Time) {}
/// }
/// ```
pub trait Node {
    /// A packet arrived from the host with IP `from`; `packet` is the Homa packet (the IP
    /// payload).
    fn handle_datagram(&mut self, now: Time, from: IpAddr, packet: &[u8]);

    /// Writes the next packet to send into `buf` (exactly [`NetConfig::max_packet`] bytes
    /// long, with arbitrary contents) and says where it goes, or returns `None` when
    /// there is nothing to send now. Returning a `len` larger than `buf` is a bug and
    /// panics.
    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Outgoing>;

    /// When the node next wants [`handle_timeout`](Node::handle_timeout) called, or `None`
    /// for never. A time already past means "as soon as possible" (at the current time,
    /// after the events already scheduled for it).
    fn poll_timeout(&mut self) -> Option<Time>;

    /// The deadline last returned by [`poll_timeout`](Node::poll_timeout) has passed.
    fn handle_timeout(&mut self, now: Time);
}

impl<T: Node + ?Sized> Node for Box<T> {
    fn handle_datagram(&mut self, now: Time, from: IpAddr, packet: &[u8]) {
        (**self).handle_datagram(now, from, packet);
    }
    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Outgoing> {
        (**self).poll_transmit(now, buf)
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        (**self).poll_timeout()
    }
    fn handle_timeout(&mut self, now: Time) {
        (**self).handle_timeout(now);
    }
}

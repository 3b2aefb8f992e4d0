//! The event loop: hosts, egress ports, routing, faults and run control.

use core::cmp::Ordering;
use core::hash::{BuildHasherDefault, Hasher};
use core::net::IpAddr;
use core::time::Duration;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use homa_proto::Time;

use crate::config::{nanos, Ecmp, NetConfig, Scheduling};
use crate::error::{BuildError, SimError};
use crate::fault::{self, packet_type, FaultCounts, FaultId, FaultRule, Point, RuleState, Subject};
use crate::rng::{splitmix64, Rng};
use crate::stats::{PortStats, Stats};
use crate::topology::{Device, TopologyBuilder};
use crate::trace::{DropReason, TraceEntry, TraceKind};
use crate::{Node, Outgoing};

/// Generator stream of fault decisions.
const STREAM_FAULTS: u64 = 1;
/// Generator stream of next-hop choices.
const STREAM_ROUTING: u64 = 2;
/// `Pkt::dst` of a packet addressed to an unknown IP.
const NO_HOST: u32 = u32::MAX;

/// FxHash-style hasher for the IP → host map (looked up once per packet sent; the keys
/// come from the topology, not from an adversary).
#[derive(Debug, Default, Clone, Copy)]
struct IpHasher(u64);

impl IpHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

impl Hasher for IpHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IpMap = HashMap<IpAddr, u32, BuildHasherDefault<IpHasher>>;

/// An egress port: one direction of one link. Link `k` (in the order links were added)
/// has ports `2k` (first device to second) and `2k + 1` (back).
///
/// ```
/// use homa_sim::PortId;
/// assert_eq!(PortId::from_index(3).index(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(u32);

impl PortId {
    /// The port with index `index`.
    pub fn from_index(index: usize) -> PortId {
        PortId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// The port's index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A packet in the network. Slots are recycled, buffers included.
struct Pkt {
    data: Box<[u8]>,
    len: u32,
    src: u32,
    dst: u32,
    prio: u8,
    id: u64,
}

struct HostState<N> {
    node: N,
    ip: IpAddr,
    /// What the node's `poll_timeout` last said.
    deadline: Option<Time>,
    /// Time of the earliest `Timer` event in the queue for this host, if any.
    armed: Option<Time>,
    dirty: bool,
}

struct Port {
    from: u32,
    to: u32,
    rate_bps: u64,
    /// Propagation latency plus the receiving device's fixed delay.
    arrive_ns: u64,
    buffer: Option<u64>,
    strict: bool,
    queues: [VecDeque<u32>; 8],
    /// Bit `q` set when `queues[q]` is non-empty.
    nonempty: u8,
    queued_bytes: u64,
    /// Start of the current busy period and bits sent in it: departure times are computed
    /// from the cumulative bit count, so back-to-back packets accumulate no rounding.
    busy_start: Time,
    busy_bits: u64,
    busy_until: Time,
    wake_pending: bool,
    stats: PortStats,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A port finished a transmission and has packets waiting.
    Wake(u32),
    /// A packet's last bit (plus the receiver's fixed delay) reached the far end of a port's link.
    Arrive(u32, u32),
    /// A packet held back by a reorder fault enters a port.
    Enqueue(u32, u32),
    /// A host's packet leaves the host software (transmit delay) for its egress port.
    HostTx(u32, u32),
    /// A packet a host sent to itself arrives.
    Loopback(u32, u32),
    /// A packet held back by a reorder fault at the ingress reaches the node.
    Deliver(u32, u32),
    /// A host's timer.
    Timer(u32),
    /// A host hit the burst limit and has more to send.
    Poll(u32),
}

/// Largest host, switch or port index an event can carry (29 bits).
const MAX_INDEX: usize = (1 << 29) - 1;

impl Ev {
    /// Packs the event into 64 bits: kind (3 bits), host or port (29), packet slot (32).
    #[inline]
    fn encode(self) -> u64 {
        let (kind, a, b) = match self {
            Ev::Wake(p) => (0, p, 0),
            Ev::Arrive(p, s) => (1, p, s),
            Ev::Enqueue(p, s) => (2, p, s),
            Ev::HostTx(h, s) => (3, h, s),
            Ev::Loopback(h, s) => (4, h, s),
            Ev::Deliver(h, s) => (5, h, s),
            Ev::Timer(h) => (6, h, 0),
            Ev::Poll(h) => (7, h, 0),
        };
        (kind << 61) | (u64::from(a) << 32) | u64::from(b)
    }

    #[inline]
    fn decode(code: u64) -> Ev {
        let a = ((code >> 32) as u32) & MAX_INDEX as u32;
        let b = code as u32;
        match code >> 61 {
            0 => Ev::Wake(a),
            1 => Ev::Arrive(a, b),
            2 => Ev::Enqueue(a, b),
            3 => Ev::HostTx(a, b),
            4 => Ev::Loopback(a, b),
            5 => Ev::Deliver(a, b),
            6 => Ev::Timer(a),
            _ => Ev::Poll(a),
        }
    }
}

/// A queued event: 24 bytes, ordered by (time, sequence number).
struct Event {
    time: Time,
    seq: u64,
    code: u64,
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.time == other.time && self.seq == other.seq
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Event) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// Reversed, so the max-heap yields the earliest (time, sequence) first.
impl Ord for Event {
    #[inline]
    fn cmp(&self, other: &Event) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A callback seeing every trace record with the packet's bytes.
type Observer = Box<dyn FnMut(&TraceEntry, &[u8])>;

/// Outcome of one step.
enum Step {
    Done,
    Idle,
    Beyond,
}

/// A running network of hosts (each with a [`Node`]) and switches, in virtual time.
/// Build it with [`Star`](crate::Star), [`TwoTier`](crate::TwoTier) or
/// [`TopologyBuilder`].
///
/// Hosts are numbered from 0 in the order they were added; methods taking a `host: usize`
/// panic if it is out of range.
///
/// ```
/// use core::time::Duration;
/// use homa_sim::{FaultRule, Star};
/// # use homa_sim::{Node, Outgoing}; use homa_proto::Time;
/// # struct Quiet;
/// # impl Node for Quiet {
/// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
/// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
/// #     fn poll_timeout(&mut self) -> Option<Time> { None }
/// #     fn handle_timeout(&mut self, _: Time) {}
/// # }
///
/// let mut net = Star::new(4).build(|_, _| Quiet).unwrap();
/// net.add_fault(FaultRule::loss(0.01));
/// net.enable_trace();
/// net.run_for(Duration::from_millis(1)).unwrap();
/// assert_eq!(net.now(), Time::from_millis(1));
/// assert!(net.trace().is_empty()); // quiet nodes
/// ```
pub struct Network<N> {
    config: NetConfig,
    now: Time,
    hosts: Vec<HostState<N>>,
    num_switches: usize,
    ports: Vec<Port>,
    /// Egress ports of each device (hosts first, then switches).
    device_ports: Vec<Vec<PortId>>,
    /// `(start, count)` into `route_ports`, indexed by `device * hosts + destination`.
    routes: Vec<(u32, u32)>,
    route_ports: Vec<u32>,
    ip_to_host: IpMap,
    events: BinaryHeap<Event>,
    next_seq: u64,
    pkts: Vec<Pkt>,
    free: Vec<u32>,
    next_id: u64,
    faults: Vec<Option<RuleState>>,
    fault_rng: Rng,
    route_rng: Rng,
    dirty: Vec<u32>,
    stats: Stats,
    trace: Option<Vec<TraceEntry>>,
    observer: Option<Observer>,
    rx_delay_ns: u64,
    tx_delay_ns: u64,
}

impl<N> core::fmt::Debug for Network<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.config.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("switches", &self.num_switches)
            .field("ports", &self.ports.len())
            .field("pending_events", &self.events.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Prints the seed when a panic (a failed assertion in a test, say) unwinds through a
/// network, so the run can be replayed.
impl<N> Drop for Network<N> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "homa-sim: panic during a simulation with seed {} (virtual time {}); \
                 replay with NetConfig {{ seed: {}, .. }} (or HOMA_SIM_SEED={} where the test \
                 uses seed_from_env)",
                self.config.seed, self.now, self.config.seed, self.config.seed
            );
        }
    }
}

impl<N: Node> Network<N> {
    // ----- construction -------------------------------------------------------------

    pub(crate) fn from_builder(b: TopologyBuilder<N>) -> Result<Network<N>, BuildError> {
        let TopologyBuilder {
            config,
            hosts,
            switches,
            links,
        } = b;
        if config.max_packet == 0 {
            return Err(BuildError::ZeroMaxPacket);
        }
        if config.max_burst == 0 {
            return Err(BuildError::ZeroBurst);
        }
        let nh = hosts.len();
        let nd = nh + switches;
        if nd > MAX_INDEX || links.len() * 2 > MAX_INDEX {
            return Err(BuildError::TooLarge);
        }
        let dev_index = |d: Device| -> Result<usize, BuildError> {
            match d {
                Device::Host(i) if i < nh => Ok(i),
                Device::Switch(i) if i < switches => Ok(nh + i),
                _ => Err(BuildError::UnknownDevice(d)),
            }
        };
        let mut ip_to_host = IpMap::with_capacity_and_hasher(nh, Default::default());
        for (i, (ip, _)) in hosts.iter().enumerate() {
            if ip_to_host.insert(*ip, i as u32).is_some() {
                return Err(BuildError::DuplicateIp(*ip));
            }
        }
        let rx_delay_ns = nanos(config.host_rx_delay);
        let switch_delay_ns = nanos(config.switch_delay);
        let mut ports = Vec::with_capacity(links.len() * 2);
        let mut device_ports = vec![Vec::new(); nd];
        for l in &links {
            let (a, b) = (dev_index(l.a)?, dev_index(l.b)?);
            if a == b {
                return Err(BuildError::SelfLink(l.a));
            }
            for (from, to, spec, dfrom, dto) in
                [(a, b, l.a_to_b, l.a, l.b), (b, a, l.b_to_a, l.b, l.a)]
            {
                if spec.rate_bps == 0 {
                    return Err(BuildError::ZeroRate(dfrom, dto));
                }
                let far = if to < nh {
                    rx_delay_ns
                } else {
                    switch_delay_ns
                };
                device_ports[from].push(PortId(ports.len() as u32));
                ports.push(Port {
                    from: from as u32,
                    to: to as u32,
                    rate_bps: spec.rate_bps,
                    arrive_ns: nanos(spec.latency).saturating_add(far),
                    buffer: spec.buffer_bytes,
                    strict: spec.scheduling == Scheduling::StrictPriority,
                    queues: Default::default(),
                    nonempty: 0,
                    queued_bytes: 0,
                    busy_start: Time::ZERO,
                    busy_bits: 0,
                    busy_until: Time::ZERO,
                    wake_pending: false,
                    stats: PortStats::default(),
                });
            }
        }
        let (routes, route_ports) = compute_routes(nh, nd, &ports, &device_ports);
        let seed = config.seed;
        Ok(Network {
            rx_delay_ns,
            tx_delay_ns: nanos(config.host_tx_delay),
            config,
            now: Time::ZERO,
            hosts: hosts
                .into_iter()
                .map(|(ip, node)| HostState {
                    node,
                    ip,
                    deadline: None,
                    armed: None,
                    dirty: true,
                })
                .collect(),
            num_switches: switches,
            ports,
            device_ports,
            routes,
            route_ports,
            ip_to_host,
            events: BinaryHeap::new(),
            next_seq: 0,
            pkts: Vec::new(),
            free: Vec::new(),
            next_id: 0,
            faults: Vec::new(),
            fault_rng: Rng::stream(seed, STREAM_FAULTS),
            route_rng: Rng::stream(seed, STREAM_ROUTING),
            dirty: (0..nh as u32).collect(),
            stats: Stats::default(),
            trace: None,
            observer: None,
        })
    }

    // ----- accessors ----------------------------------------------------------------

    /// The current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The seed of every random decision.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The network's settings.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Network-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of hosts.
    pub fn num_hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Number of switches.
    pub fn num_switches(&self) -> usize {
        self.num_switches
    }

    /// IP address of host `host`.
    pub fn host_ip(&self, host: usize) -> IpAddr {
        self.hosts[host].ip
    }

    /// The host with address `ip`.
    pub fn host_index(&self, ip: IpAddr) -> Option<usize> {
        self.ip_to_host.get(&ip).map(|&h| h as usize)
    }

    /// Host `host`'s node.
    pub fn node(&self, host: usize) -> &N {
        &self.hosts[host].node
    }

    /// Host `host`'s node, for calls into it (an application sending a message, say). The
    /// node is marked to be polled (transmissions, then timeout) before the next step.
    pub fn node_mut(&mut self, host: usize) -> &mut N {
        let h = &mut self.hosts[host];
        if !h.dirty {
            h.dirty = true;
            self.dirty.push(host as u32);
        }
        &mut h.node
    }

    /// All nodes, in host order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &N> + '_ {
        self.hosts.iter().map(|h| &h.node)
    }

    /// Polls host `host` now: drains its transmissions into the network and re-reads its
    /// timeout. Needed only to see the effect before the next step;
    /// [`node_mut`](Network::node_mut) already schedules a poll.
    pub fn poll(&mut self, host: usize) {
        self.poll_host(host as u32);
    }

    /// Events waiting in the queue (cancelled timers included).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    // ----- ports --------------------------------------------------------------------

    /// Every egress port.
    pub fn ports(&self) -> impl ExactSizeIterator<Item = PortId> {
        (0..self.ports.len()).map(PortId::from_index)
    }

    /// The egress ports of `device` (in the order its links were added). Empty for an
    /// unknown device.
    pub fn ports_of(&self, device: Device) -> &[PortId] {
        self.device_index(device)
            .map_or(&[][..], |d| &self.device_ports[d][..])
    }

    /// The device a port belongs to and the device at the other end of its link.
    pub fn port_endpoints(&self, port: PortId) -> (Device, Device) {
        let p = &self.ports[port.index()];
        (self.device(p.from), self.device(p.to))
    }

    /// The (first) egress port of `from` whose link leads to `to`.
    pub fn port_between(&self, from: Device, to: Device) -> Option<PortId> {
        let to = self.device_index(to)? as u32;
        self.ports_of(from)
            .iter()
            .copied()
            .find(|p| self.ports[p.index()].to == to)
    }

    /// Counters of an egress port.
    pub fn port_stats(&self, port: PortId) -> &PortStats {
        &self.ports[port.index()].stats
    }

    /// Bytes waiting in an egress port (with overhead; the packet on the wire excluded).
    pub fn port_queued_bytes(&self, port: PortId) -> u64 {
        self.ports[port.index()].queued_bytes
    }

    /// Changes an egress port's buffer size (`None`: unlimited). Packets already queued
    /// stay.
    pub fn set_port_buffer(&mut self, port: PortId, bytes: Option<u64>) {
        self.ports[port.index()].buffer = bytes;
    }

    fn device(&self, index: u32) -> Device {
        let i = index as usize;
        if i < self.hosts.len() {
            Device::Host(i)
        } else {
            Device::Switch(i - self.hosts.len())
        }
    }

    fn device_index(&self, d: Device) -> Option<usize> {
        match d {
            Device::Host(i) if i < self.hosts.len() => Some(i),
            Device::Switch(i) if i < self.num_switches => Some(self.hosts.len() + i),
            _ => None,
        }
    }

    // ----- faults and tracing -------------------------------------------------------

    /// Adds a fault rule; rules act in the order they were added.
    pub fn add_fault(&mut self, rule: FaultRule) -> FaultId {
        self.faults.push(Some(RuleState {
            rule,
            counts: FaultCounts::default(),
        }));
        FaultId(self.faults.len() - 1)
    }

    /// Removes a fault rule, returning it.
    pub fn remove_fault(&mut self, id: FaultId) -> Option<FaultRule> {
        let rule = self.faults.get_mut(id.0)?.take().map(|s| s.rule);
        if self.faults.iter().all(Option::is_none) {
            self.faults.clear();
        }
        rule
    }

    /// Removes every fault rule.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// How often a rule has matched and fired.
    pub fn fault_counts(&self, id: FaultId) -> Option<FaultCounts> {
        self.faults.get(id.0)?.as_ref().map(|s| s.counts)
    }

    /// Starts recording a [`TraceEntry`] for everything that happens to each packet.
    pub fn enable_trace(&mut self) {
        if self.trace.is_none() {
            self.trace = Some(Vec::new());
        }
    }

    /// The trace recorded since [`enable_trace`](Network::enable_trace) (empty if off).
    pub fn trace(&self) -> &[TraceEntry] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Takes the recorded trace, leaving recording on with an empty trace.
    pub fn take_trace(&mut self) -> Vec<TraceEntry> {
        self.trace.as_mut().map(core::mem::take).unwrap_or_default()
    }

    /// Calls `observer` with each trace record and the packet's bytes as it happens
    /// (whether or not the trace is recorded): to inspect packets on the wire in a test.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use homa_sim::{Star, TraceKind};
    /// # use homa_sim::{Node, Outgoing}; use homa_proto::Time;
    /// # struct Quiet;
    /// # impl Node for Quiet {
    /// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
    /// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
    /// #     fn poll_timeout(&mut self) -> Option<Time> { None }
    /// #     fn handle_timeout(&mut self, _: Time) {}
    /// # }
    ///
    /// let mut net = Star::new(2).build(|_, _| Quiet).unwrap();
    /// let grants = Rc::new(Cell::new(0));
    /// let g = grants.clone();
    /// net.set_observer(move |entry, bytes| {
    ///     if entry.kind == TraceKind::Sent && bytes.get(11) == Some(&0x11) {
    ///         g.set(g.get() + 1);
    ///     }
    /// });
    /// ```
    pub fn set_observer(&mut self, observer: impl FnMut(&TraceEntry, &[u8]) + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// Removes the observer.
    pub fn clear_observer(&mut self) {
        self.observer = None;
    }

    // ----- run control --------------------------------------------------------------

    /// Processes the next event (after polling nodes marked by
    /// [`node_mut`](Network::node_mut)); `false` if there was none (the network is idle).
    pub fn step(&mut self) -> bool {
        self.flush();
        matches!(self.step_before(Time::MAX), Step::Done)
    }

    /// Runs until `done(self)` holds, checking it before each step. Returns the steps
    /// taken; fails if `max_steps` steps did not suffice (livelock) or the network went
    /// idle first (deadlock). The error names the seed.
    ///
    /// ```
    /// # use homa_sim::{Node, Outgoing, Star, SimError}; use homa_proto::Time;
    /// # struct Quiet;
    /// # impl Node for Quiet {
    /// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
    /// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
    /// #     fn poll_timeout(&mut self) -> Option<Time> { None }
    /// #     fn handle_timeout(&mut self, _: Time) {}
    /// # }
    /// let mut net = Star::new(2).build(|_, _| Quiet).unwrap();
    /// let err = net.run_until(|n| n.stats().packets_delivered > 0, 100).unwrap_err();
    /// assert!(matches!(err, SimError::Idle { seed: 0, .. }));
    /// ```
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&Network<N>) -> bool,
        max_steps: u64,
    ) -> Result<u64, SimError> {
        let mut steps = 0;
        loop {
            self.flush();
            if done(self) {
                return Ok(steps);
            }
            if steps >= max_steps {
                return Err(self.step_limit(steps));
            }
            match self.step_before(Time::MAX) {
                Step::Done => steps += 1,
                Step::Idle | Step::Beyond => {
                    return Err(SimError::Idle {
                        seed: self.config.seed,
                        steps,
                        now: self.now,
                    })
                }
            }
        }
    }

    /// Runs until nothing is left to happen; fails after `max_steps` steps.
    pub fn run_until_idle(&mut self, max_steps: u64) -> Result<u64, SimError> {
        let mut steps = 0;
        loop {
            self.flush();
            if steps >= max_steps && !self.events.is_empty() {
                return Err(self.step_limit(steps));
            }
            match self.step_before(Time::MAX) {
                Step::Done => steps += 1,
                Step::Idle | Step::Beyond => return Ok(steps),
            }
        }
    }

    /// Runs every event up to and including `now() + duration`, then sets the time to it.
    /// Fails after [`NetConfig::max_steps`] steps.
    pub fn run_for(&mut self, duration: Duration) -> Result<u64, SimError> {
        self.run_to(self.now + duration)
    }

    /// Runs every event up to and including `time`, then sets the time to it (if later
    /// than now). Fails after [`NetConfig::max_steps`] steps.
    pub fn run_to(&mut self, time: Time) -> Result<u64, SimError> {
        let mut steps = 0;
        loop {
            self.flush();
            if steps >= self.config.max_steps {
                return Err(self.step_limit(steps));
            }
            match self.step_before(time) {
                Step::Done => steps += 1,
                Step::Idle | Step::Beyond => break,
            }
        }
        self.now = self.now.max(time);
        Ok(steps)
    }

    fn step_limit(&self, steps: u64) -> SimError {
        SimError::StepLimit {
            seed: self.config.seed,
            steps,
            now: self.now,
        }
    }

    /// Polls the nodes marked by `node_mut`.
    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = core::mem::take(&mut self.dirty);
        for &h in &dirty {
            self.hosts[h as usize].dirty = false;
            self.poll_host(h);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Processes the next event if it is due no later than `limit`.
    fn step_before(&mut self, limit: Time) -> Step {
        loop {
            let Some(next) = self.events.peek() else {
                return Step::Idle;
            };
            if next.time > limit {
                return Step::Beyond;
            }
            let Some(ev) = self.events.pop() else {
                return Step::Idle;
            };
            let kind = Ev::decode(ev.code);
            if let Ev::Timer(h) = kind {
                if self.hosts[h as usize].armed != Some(ev.time) {
                    continue; // superseded by an earlier timer
                }
            }
            self.now = ev.time;
            self.stats.events += 1;
            self.process(kind);
            return Step::Done;
        }
    }

    fn process(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(p) => self.wake(p),
            Ev::Arrive(p, s) => self.arrive(p, s),
            Ev::Enqueue(p, s) => self.enqueue(p, s),
            Ev::HostTx(h, s) => self.host_egress(h, s),
            Ev::Loopback(h, s) => self.ingress(h, s),
            Ev::Deliver(h, s) => self.deliver(h, s),
            Ev::Timer(h) => self.timer(h),
            Ev::Poll(h) => self.poll_host(h),
        }
    }

    #[inline]
    fn push(&mut self, time: Time, ev: Ev) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push(Event {
            time,
            seq,
            code: ev.encode(),
        });
    }

    // ----- hosts --------------------------------------------------------------------

    fn poll_host(&mut self, h: u32) {
        let hi = h as usize;
        let max = self.config.max_packet;
        let mut sent = 0;
        loop {
            if sent >= self.config.max_burst {
                self.push(self.now, Ev::Poll(h));
                break;
            }
            let slot = self.alloc();
            let out = self.hosts[hi]
                .node
                .poll_transmit(self.now, &mut self.pkts[slot as usize].data[..max]);
            let Some(out) = out else {
                self.free.push(slot);
                break;
            };
            sent += 1;
            self.emit(h, slot, out);
        }
        self.update_timer(h);
    }

    fn update_timer(&mut self, h: u32) {
        let now = self.now;
        let host = &mut self.hosts[h as usize];
        let deadline = host.node.poll_timeout();
        host.deadline = deadline;
        if let Some(t) = deadline {
            let t = t.max(now);
            if host.armed.is_none_or(|a| t < a) {
                host.armed = Some(t);
                self.push(t, Ev::Timer(h));
            }
        }
    }

    fn timer(&mut self, h: u32) {
        let now = self.now;
        let host = &mut self.hosts[h as usize];
        host.armed = None;
        match host.deadline {
            Some(d) if d <= now => {
                host.deadline = None;
                self.stats.timeouts += 1;
                host.node.handle_timeout(now);
                self.poll_host(h);
            }
            Some(d) => {
                host.armed = Some(d);
                self.push(d, Ev::Timer(h));
            }
            None => {}
        }
    }

    fn emit(&mut self, h: u32, slot: u32, out: Outgoing) {
        assert!(
            out.len <= self.config.max_packet,
            "host {h} returned a {}-byte packet from poll_transmit; its buffer holds {}",
            out.len,
            self.config.max_packet
        );
        let dst = self.ip_to_host.get(&out.destination).copied();
        let prio = out.priority.min(7);
        let pkt = &mut self.pkts[slot as usize];
        pkt.len = out.len as u32;
        pkt.src = h;
        pkt.dst = dst.unwrap_or(NO_HOST);
        pkt.prio = prio;
        pkt.id = self.next_id;
        self.next_id += 1;
        let st = &mut self.stats;
        st.packets_sent += 1;
        st.bytes_sent += out.len as u64;
        st.sent_by_priority[usize::from(prio)] += 1;
        if let Some(t) = packet_type(&pkt.data[..out.len]) {
            st.sent_by_type[usize::from(t.code() - 0x10)] += 1;
        }
        self.record_to(TraceKind::Sent, slot, out.destination);
        match dst {
            None => self.drop_to(slot, DropReason::NoRoute, out.destination),
            Some(d) if d == h => {
                let t = self.now.add_nanos(self.rx_delay_ns);
                self.push(t, Ev::Loopback(h, slot));
            }
            Some(_) if self.tx_delay_ns > 0 => {
                let t = self.now.add_nanos(self.tx_delay_ns);
                self.push(t, Ev::HostTx(h, slot));
            }
            Some(_) => self.host_egress(h, slot),
        }
    }

    fn host_egress(&mut self, h: u32, slot: u32) {
        match self.route(h, slot) {
            Some(p) => self.egress(p, slot, Point::HostEgress),
            None => self.drop(slot, DropReason::NoRoute),
        }
    }

    /// A packet reached its destination host: ingress faults, then the node.
    fn ingress(&mut self, h: u32, slot: u32) {
        let fate = self.decide(slot, Point::HostIngress);
        if let Some(site) = fate.drop {
            return self.drop(slot, DropReason::Fault(site));
        }
        let copy = fate.duplicate.then(|| self.duplicate(slot));
        for s in [Some(slot), copy].into_iter().flatten() {
            if fate.delay_ns == 0 {
                self.deliver(h, s);
            } else {
                self.delay(s, fate.delay_ns, Ev::Deliver(h, s));
            }
        }
    }

    fn deliver(&mut self, h: u32, slot: u32) {
        let (len, prio, src) = {
            let p = &self.pkts[slot as usize];
            (p.len as usize, p.prio, p.src)
        };
        self.stats.packets_delivered += 1;
        self.stats.bytes_delivered += len as u64;
        self.stats.delivered_by_priority[usize::from(prio)] += 1;
        self.record(TraceKind::Delivered, slot);
        let from = self.hosts[src as usize].ip;
        self.hosts[h as usize].node.handle_datagram(
            self.now,
            from,
            &self.pkts[slot as usize].data[..len],
        );
        self.free.push(slot);
        self.poll_host(h);
    }

    // ----- packets ------------------------------------------------------------------

    fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        self.pkts.push(Pkt {
            data: vec![0; self.config.max_packet].into_boxed_slice(),
            len: 0,
            src: 0,
            dst: 0,
            prio: 0,
            id: 0,
        });
        (self.pkts.len() - 1) as u32
    }

    fn duplicate(&mut self, slot: u32) -> u32 {
        let c = self.alloc();
        let id = self.next_id;
        self.next_id += 1;
        let (orig, copy) = two(&mut self.pkts, slot as usize, c as usize);
        let len = orig.len as usize;
        copy.data[..len].copy_from_slice(&orig.data[..len]);
        copy.len = orig.len;
        copy.src = orig.src;
        copy.dst = orig.dst;
        copy.prio = orig.prio;
        copy.id = id;
        self.stats.duplicated += 1;
        self.record(TraceKind::Duplicated { copy: id }, slot);
        c
    }

    fn drop(&mut self, slot: u32, reason: DropReason) {
        let dst = self.pkts[slot as usize].dst;
        let to = self.hosts[dst as usize].ip;
        self.drop_to(slot, reason, to);
    }

    fn drop_to(&mut self, slot: u32, reason: DropReason, to: IpAddr) {
        let d = &mut self.stats.dropped;
        match reason {
            DropReason::Fault(_) => d.fault += 1,
            DropReason::BufferFull => d.buffer += 1,
            DropReason::NoRoute => d.no_route += 1,
        }
        self.record_to(TraceKind::Dropped(reason), slot, to);
        self.free.push(slot);
    }

    fn delay(&mut self, slot: u32, extra_ns: u64, ev: Ev) {
        self.stats.delayed += 1;
        self.record(TraceKind::Delayed { extra_ns }, slot);
        let t = self.now.add_nanos(extra_ns);
        self.push(t, ev);
    }

    fn decide(&mut self, slot: u32, point: Point) -> fault::Fate {
        if self.faults.is_empty() {
            return fault::Fate::default();
        }
        let p = &self.pkts[slot as usize];
        let subject = Subject {
            bytes: &p.data[..p.len as usize],
            from: self.hosts[p.src as usize].ip,
            to: self.hosts[p.dst as usize].ip,
            priority: p.prio,
        };
        fault::decide(&mut self.faults, &mut self.fault_rng, point, &subject)
    }

    #[inline]
    fn record(&mut self, kind: TraceKind, slot: u32) {
        if self.trace.is_none() && self.observer.is_none() {
            return;
        }
        let to = self.hosts[self.pkts[slot as usize].dst as usize].ip;
        self.record_to(kind, slot, to);
    }

    #[inline]
    fn record_to(&mut self, kind: TraceKind, slot: u32, to: IpAddr) {
        if self.trace.is_none() && self.observer.is_none() {
            return;
        }
        let p = &self.pkts[slot as usize];
        let bytes = &p.data[..p.len as usize];
        let entry = TraceEntry {
            time: self.now,
            kind,
            id: p.id,
            from: self.hosts[p.src as usize].ip,
            to,
            len: p.len,
            priority: p.prio,
            packet_type: packet_type(bytes),
        };
        if let Some(obs) = self.observer.as_mut() {
            obs(&entry, bytes);
        }
        if let Some(t) = self.trace.as_mut() {
            t.push(entry);
        }
    }

    // ----- forwarding ---------------------------------------------------------------

    /// The egress port of device `dev` for the packet's destination.
    #[inline]
    fn route(&mut self, dev: u32, slot: u32) -> Option<u32> {
        let p = &self.pkts[slot as usize];
        let nh = self.hosts.len();
        let (start, count) = self.routes[dev as usize * nh + p.dst as usize];
        let pick = match count {
            0 => return None,
            1 => 0,
            n => match self.config.ecmp {
                Ecmp::Spray => self.route_rng.below(u64::from(n)) as u32,
                Ecmp::FlowHash => {
                    let mut x = (u64::from(p.src) << 32 | u64::from(p.dst)) ^ u64::from(dev) << 48;
                    (splitmix64(&mut x) % u64::from(n)) as u32
                }
            },
        };
        Some(self.route_ports[(start + pick) as usize])
    }

    fn arrive(&mut self, port: u32, slot: u32) {
        let dev = self.ports[port as usize].to;
        if (dev as usize) < self.hosts.len() {
            if self.pkts[slot as usize].dst == dev {
                self.ingress(dev, slot);
            } else {
                self.drop(slot, DropReason::NoRoute);
            }
        } else {
            match self.route(dev, slot) {
                Some(p) => self.egress(p, slot, Point::SwitchEgress),
                None => self.drop(slot, DropReason::NoRoute),
            }
        }
    }

    /// A packet is about to enter egress port `port`: faults, then the queue.
    fn egress(&mut self, port: u32, slot: u32, point: Point) {
        let fate = self.decide(slot, point);
        if let Some(site) = fate.drop {
            return self.drop(slot, DropReason::Fault(site));
        }
        let copy = fate.duplicate.then(|| self.duplicate(slot));
        for s in [Some(slot), copy].into_iter().flatten() {
            if fate.delay_ns == 0 {
                self.enqueue(port, s);
            } else {
                self.delay(s, fate.delay_ns, Ev::Enqueue(port, s));
            }
        }
    }

    fn enqueue(&mut self, p: u32, slot: u32) {
        let now = self.now;
        let port = &mut self.ports[p as usize];
        if port.nonempty == 0 && now >= port.busy_until {
            return self.start_tx(p, slot);
        }
        let pkt = &self.pkts[slot as usize];
        let size = u64::from(pkt.len) + self.config.per_packet_overhead as u64;
        let prio = pkt.prio;
        if port
            .buffer
            .is_some_and(|cap| port.queued_bytes + size > cap)
        {
            port.stats.drops_by_priority[usize::from(prio)] += 1;
            return self.drop(slot, DropReason::BufferFull);
        }
        let q = if port.strict { prio } else { 0 };
        port.queues[usize::from(q)].push_back(slot);
        port.nonempty |= 1 << q;
        port.queued_bytes += size;
        port.stats.max_queued_bytes = port.stats.max_queued_bytes.max(port.queued_bytes);
        if !port.wake_pending {
            port.wake_pending = true;
            let t = port.busy_until.max(now);
            self.push(t, Ev::Wake(p));
        }
    }

    fn wake(&mut self, p: u32) {
        let port = &mut self.ports[p as usize];
        port.wake_pending = false;
        if port.nonempty == 0 {
            return;
        }
        let q = 7 - port.nonempty.leading_zeros() as usize;
        let Some(slot) = port.queues[q].pop_front() else {
            return;
        };
        if port.queues[q].is_empty() {
            port.nonempty &= !(1 << q);
        }
        let size = u64::from(self.pkts[slot as usize].len) + self.config.per_packet_overhead as u64;
        port.queued_bytes -= size;
        self.start_tx(p, slot);
        let port = &mut self.ports[p as usize];
        if port.nonempty != 0 {
            port.wake_pending = true;
            let t = port.busy_until;
            self.push(t, Ev::Wake(p));
        }
    }

    fn start_tx(&mut self, p: u32, slot: u32) {
        let now = self.now;
        let pkt = &self.pkts[slot as usize];
        let (len, prio) = (u64::from(pkt.len), pkt.prio);
        let port = &mut self.ports[p as usize];
        let bits = (len + self.config.per_packet_overhead as u64) * 8;
        if now == port.busy_until && port.busy_bits > 0 && port.busy_bits < 1 << 62 {
            port.busy_bits += bits;
        } else {
            port.busy_start = now;
            port.busy_bits = bits;
        }
        let ns = match port.busy_bits.checked_mul(1_000_000_000) {
            Some(x) => x.div_ceil(port.rate_bps),
            None => {
                let x = (u128::from(port.busy_bits) * 1_000_000_000)
                    .div_ceil(u128::from(port.rate_bps));
                u64::try_from(x).unwrap_or(u64::MAX)
            }
        };
        let done = port.busy_start.add_nanos(ns);
        port.busy_until = done;
        port.stats.packets += 1;
        port.stats.bytes += len;
        port.stats.packets_by_priority[usize::from(prio)] += 1;
        let arrive = done.add_nanos(port.arrive_ns);
        self.stats.transmissions += 1;
        self.stats.transmitted_bytes += len;
        self.push(arrive, Ev::Arrive(p, slot));
    }
}

/// Shared access to slot `a` and exclusive access to slot `b` (`a != b`).
fn two(pkts: &mut [Pkt], a: usize, b: usize) -> (&Pkt, &mut Pkt) {
    if a < b {
        let (x, y) = pkts.split_at_mut(b);
        (&x[a], &mut y[0])
    } else {
        let (x, y) = pkts.split_at_mut(a);
        (&y[0], &mut x[b])
    }
}

/// Shortest-path next hops from every device to every host. Hosts do not forward: a
/// path never passes through a host other than its ends.
fn compute_routes(
    nh: usize,
    nd: usize,
    ports: &[Port],
    device_ports: &[Vec<PortId>],
) -> (Vec<(u32, u32)>, Vec<u32>) {
    let mut routes = vec![(0u32, 0u32); nd * nh];
    let mut route_ports = Vec::new();
    let mut dist = vec![u32::MAX; nd];
    let mut queue = VecDeque::with_capacity(nd);
    for d in 0..nh {
        dist.fill(u32::MAX);
        dist[d] = 0;
        queue.clear();
        queue.push_back(d);
        // Links are full duplex, so the devices one hop closer are the neighbours.
        while let Some(w) = queue.pop_front() {
            if w < nh && w != d {
                continue;
            }
            for p in &device_ports[w] {
                let v = ports[p.index()].to as usize;
                if dist[v] == u32::MAX {
                    dist[v] = dist[w] + 1;
                    queue.push_back(v);
                }
            }
        }
        for v in 0..nd {
            if v == d || dist[v] == u32::MAX {
                continue;
            }
            let start = route_ports.len() as u32;
            for p in &device_ports[v] {
                let w = ports[p.index()].to as usize;
                if dist[w].saturating_add(1) == dist[v] && (w == d || w >= nh) {
                    route_ports.push(p.0);
                }
            }
            routes[v * nh + d] = (start, route_ports.len() as u32 - start);
        }
    }
    (routes, route_ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_encoding() {
        let m = MAX_INDEX as u32;
        for ev in [
            Ev::Wake(m),
            Ev::Arrive(m, u32::MAX),
            Ev::Enqueue(1, 2),
            Ev::HostTx(3, 4),
            Ev::Loopback(5, 6),
            Ev::Deliver(7, 8),
            Ev::Timer(9),
            Ev::Poll(0),
        ] {
            assert_eq!(format!("{:?}", Ev::decode(ev.encode())), format!("{ev:?}"));
        }
    }

    #[test]
    fn events_pop_in_time_then_scheduling_order() {
        let mut heap = BinaryHeap::new();
        for (seq, t) in [5u64, 1, 5, 3].into_iter().enumerate() {
            heap.push(Event {
                time: Time::from_nanos(t),
                seq: seq as u64,
                code: 0,
            });
        }
        let order: Vec<(u64, u64)> = core::iter::from_fn(|| heap.pop())
            .map(|e| (e.time.as_nanos(), e.seq))
            .collect();
        assert_eq!(order, [(1, 1), (3, 3), (5, 0), (5, 2)]);
    }
}

//! Network-wide settings and per-link specifications.

use core::time::Duration;

use homa_proto::wire::ETH_OVERHEAD;

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// The default MTU: Ethernet's 1500 bytes.
pub const DEFAULT_MTU: usize = 1500;

/// The largest Homa packet (IP payload) that fits an IPv4 packet of `mtu` bytes:
/// `mtu - 20`.
///
/// ```
/// assert_eq!(homa_sim::max_packet_for_mtu(1500), 1480);
/// assert_eq!(homa_sim::max_packet_for_mtu(9000), 8980);
/// ```
pub const fn max_packet_for_mtu(mtu: usize) -> usize {
    mtu.saturating_sub(IPV4_HEADER_LEN)
}

/// The default largest Homa packet: [`max_packet_for_mtu`]`(`[`DEFAULT_MTU`]`)` = 1480.
pub const DEFAULT_MAX_PACKET: usize = max_packet_for_mtu(DEFAULT_MTU);

/// The default per-packet link overhead added to the Homa packet's length when computing
/// serialisation time and buffer occupancy: the IPv4 header (20) plus Ethernet header, CRC,
/// preamble, start delimiter and inter-frame gap (42) = 62 bytes.
pub const DEFAULT_OVERHEAD: usize = IPV4_HEADER_LEN + ETH_OVERHEAD;

/// How a switch (or multi-homed host) chooses among several equal-cost next hops.
///
/// ```
/// use homa_sim::{Ecmp, NetConfig};
/// let cfg = NetConfig { ecmp: Ecmp::FlowHash, ..NetConfig::default() };
/// assert_eq!(cfg.ecmp, Ecmp::FlowHash);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ecmp {
    /// Per-packet spraying: each packet picks a next hop uniformly at random from the
    /// network's seeded generator (as the Homa papers' simulations do).
    #[default]
    Spray,
    /// Per-flow hashing on (source host, destination host, switch): packets of one host
    /// pair always take the same path, so the network never reorders them.
    FlowHash,
}

/// How an egress port orders the packets waiting for its link.
///
/// ```
/// use homa_sim::{LinkSpec, Scheduling};
/// let nic = LinkSpec::default().scheduling(Scheduling::Fifo);
/// assert_eq!(nic.scheduling, Scheduling::Fifo);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// Eight FIFO queues, one per priority level; the highest non-empty level is served
    /// first (a packet already on the wire is never pre-empted).
    #[default]
    StrictPriority,
    /// One FIFO queue for all levels (a host NIC without priority queues).
    Fifo,
}

/// One direction of a link: the egress port that feeds it and the wire itself.
///
/// ```
/// use core::time::Duration;
/// use homa_sim::LinkSpec;
///
/// let uplink = LinkSpec::new(40_000_000_000, Duration::from_nanos(100)).buffer(500_000);
/// assert_eq!(uplink.rate_bps, 40_000_000_000);
/// assert_eq!(uplink.buffer_bytes, Some(500_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpec {
    /// Bit rate, in bits per second (must be positive).
    pub rate_bps: u64,
    /// Propagation latency, added after the last bit has been serialised.
    pub latency: Duration,
    /// Bytes the egress port may hold waiting for the link (the packet on the wire is not
    /// counted), each packet counting its length plus [`NetConfig::per_packet_overhead`];
    /// a packet that does not fit is tail-dropped. `None`: unlimited.
    pub buffer_bytes: Option<u64>,
    /// Queue discipline of the egress port.
    pub scheduling: Scheduling,
}

impl LinkSpec {
    /// A link of `rate_bps` bits per second and `latency`, unlimited buffer, strict priority.
    pub const fn new(rate_bps: u64, latency: Duration) -> LinkSpec {
        LinkSpec {
            rate_bps,
            latency,
            buffer_bytes: None,
            scheduling: Scheduling::StrictPriority,
        }
    }

    /// The same link with a finite egress buffer of `bytes`.
    pub const fn buffer(mut self, bytes: u64) -> LinkSpec {
        self.buffer_bytes = Some(bytes);
        self
    }

    /// The same link with queue discipline `scheduling`.
    pub const fn scheduling(mut self, scheduling: Scheduling) -> LinkSpec {
        self.scheduling = scheduling;
        self
    }
}

/// 10 Gbit/s, 1 µs latency, unlimited buffer, strict priority.
impl Default for LinkSpec {
    fn default() -> LinkSpec {
        LinkSpec::new(10_000_000_000, Duration::from_micros(1))
    }
}

/// Network-wide settings. Build with struct-update syntax from the defaults.
///
/// ```
/// use core::time::Duration;
/// use homa_sim::NetConfig;
///
/// let cfg = NetConfig {
///     seed: 42,
///     host_rx_delay: Duration::from_micros(2),
///     ..NetConfig::default()
/// };
/// assert_eq!(cfg.max_packet, 1480);
/// assert_eq!(cfg.per_packet_overhead, 62);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Seed of every random decision (faults, spraying). Printed in every [`SimError`]
    /// and when a panic unwinds through the network.
    ///
    /// [`SimError`]: crate::SimError
    pub seed: u64,
    /// Size of the buffer handed to [`Node::poll_transmit`]: the largest Homa packet.
    /// Default [`DEFAULT_MAX_PACKET`] (1480, a 1500-byte MTU).
    ///
    /// [`Node::poll_transmit`]: crate::Node::poll_transmit
    pub max_packet: usize,
    /// Bytes added to each packet's length for serialisation time and buffer accounting.
    /// Default [`DEFAULT_OVERHEAD`] (62).
    pub per_packet_overhead: usize,
    /// Host software delay on receive: from the last bit arriving at a host until the node
    /// sees the packet. Default 0.
    pub host_rx_delay: Duration,
    /// Host software delay on transmit: from the node emitting a packet until it enters
    /// the host's egress port. Default 0.
    pub host_tx_delay: Duration,
    /// Fixed forwarding delay of every switch, after the whole packet has arrived
    /// (store-and-forward) and before it enters the egress port. Default 0.
    pub switch_delay: Duration,
    /// Choice among equal-cost next hops. Default [`Ecmp::Spray`].
    pub ecmp: Ecmp,
    /// Packets taken from one node in one poll; if it has more, it is polled again at the
    /// same instant as a separate step (so a node that never stops sending is caught by
    /// the step limit). Default 1024.
    pub max_burst: usize,
    /// Step limit of [`Network::run_for`] and [`Network::run_to`], which take no explicit
    /// limit. Default 100,000,000.
    ///
    /// [`Network::run_for`]: crate::Network::run_for
    /// [`Network::run_to`]: crate::Network::run_to
    pub max_steps: u64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            seed: 0,
            max_packet: DEFAULT_MAX_PACKET,
            per_packet_overhead: DEFAULT_OVERHEAD,
            host_rx_delay: Duration::ZERO,
            host_tx_delay: Duration::ZERO,
            switch_delay: Duration::ZERO,
            ecmp: Ecmp::Spray,
            max_burst: 1024,
            max_steps: 100_000_000,
        }
    }
}

impl NetConfig {
    /// The defaults with `seed`.
    ///
    /// ```
    /// assert_eq!(homa_sim::NetConfig::with_seed(9).seed, 9);
    /// ```
    pub fn with_seed(seed: u64) -> NetConfig {
        NetConfig {
            seed,
            ..NetConfig::default()
        }
    }
}

/// Reads a seed from the environment variable `HOMA_SIM_SEED` (decimal or `0x` hex), or
/// returns `default`: lets a failing test be replayed with the seed it printed without
/// editing it.
///
/// ```
/// // With HOMA_SIM_SEED unset:
/// # if std::env::var_os("HOMA_SIM_SEED").is_none() {
/// assert_eq!(homa_sim::seed_from_env(5), 5);
/// # }
/// ```
pub fn seed_from_env(default: u64) -> u64 {
    let Ok(v) = std::env::var("HOMA_SIM_SEED") else {
        return default;
    };
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or(default)
}

/// Nanoseconds in `d`, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

//! Building networks: the general [`TopologyBuilder`], and the two shapes the project
//! uses, [`Star`] (the engine's tests) and [`TwoTier`] (the datacenter simulation).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

use crate::config::{LinkSpec, NetConfig};
use crate::error::BuildError;
use crate::network::{Network, PortId};
use crate::Node;

/// A host or a switch, by the index it got when added (hosts and switches are numbered
/// separately, from 0).
///
/// ```
/// use homa_sim::Device;
/// assert_eq!(Device::Host(3).host_index(), Some(3));
/// assert_eq!(Device::Switch(0).to_string(), "switch 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// Host number `n`: the `n`-th [`TopologyBuilder::add_host`].
    Host(usize),
    /// Switch number `n`: the `n`-th [`TopologyBuilder::add_switch`].
    Switch(usize),
}

impl Device {
    /// The host index, if this is a host.
    pub fn host_index(self) -> Option<usize> {
        match self {
            Device::Host(i) => Some(i),
            Device::Switch(_) => None,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Host(i) => write!(f, "host {i}"),
            Device::Switch(i) => write!(f, "switch {i}"),
        }
    }
}

/// The IP address the ready-made topologies give host `i`: 10.0.0.1 for host 0, counting
/// up through the 10.0.0.0/8 block (host 255 is 10.0.1.0).
///
/// ```
/// use core::net::{IpAddr, Ipv4Addr};
/// assert_eq!(homa_sim::host_ip(0), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
/// assert_eq!(homa_sim::host_ip(9), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)));
/// ```
pub fn host_ip(i: usize) -> IpAddr {
    let offset = u32::try_from(i).unwrap_or(u32::MAX) & 0x00FF_FFFF;
    IpAddr::V4(Ipv4Addr::from(0x0A00_0001u32.wrapping_add(offset)))
}

/// One link as the builder recorded it.
#[derive(Debug, Clone)]
pub(crate) struct LinkDef {
    pub(crate) a: Device,
    pub(crate) b: Device,
    pub(crate) a_to_b: LinkSpec,
    pub(crate) b_to_a: LinkSpec,
}

/// Builds any topology of hosts and switches. Routing is computed at
/// [`build`](TopologyBuilder::build): every device forwards a packet for host `h` over
/// the links on its shortest paths to `h` (hosts never forward other hosts' packets);
/// several such links are equal-cost next hops chosen per [`NetConfig::ecmp`].
///
/// ```
/// use core::time::Duration;
/// use homa_proto::Time;
/// use homa_sim::{host_ip, Device, LinkSpec, NetConfig, Node, Outgoing, TopologyBuilder};
/// # struct Quiet;
/// # impl Node for Quiet {
/// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
/// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
/// #     fn poll_timeout(&mut self) -> Option<Time> { None }
/// #     fn handle_timeout(&mut self, _: Time) {}
/// # }
///
/// // Two hosts behind two switches in a line: h0 - s0 - s1 - h1.
/// let mut b = TopologyBuilder::new(NetConfig::with_seed(1));
/// let h0 = b.add_host(host_ip(0), Quiet);
/// let h1 = b.add_host(host_ip(1), Quiet);
/// let s0 = b.add_switch();
/// let s1 = b.add_switch();
/// let link = LinkSpec::new(10_000_000_000, Duration::from_nanos(500));
/// b.link(h0, s0, link);
/// let (core_fwd, _core_back) = b.link(s0, s1, link.buffer(100_000));
/// b.link(s1, h1, link);
/// let net = b.build().unwrap();
/// assert_eq!(net.port_endpoints(core_fwd), (Device::Switch(0), Device::Switch(1)));
/// assert_eq!(net.num_hosts(), 2);
/// ```
pub struct TopologyBuilder<N> {
    pub(crate) config: NetConfig,
    pub(crate) hosts: Vec<(IpAddr, N)>,
    pub(crate) switches: usize,
    pub(crate) links: Vec<LinkDef>,
}

impl<N: Node> TopologyBuilder<N> {
    /// An empty topology with network settings `config`.
    pub fn new(config: NetConfig) -> TopologyBuilder<N> {
        TopologyBuilder {
            config,
            hosts: Vec::new(),
            switches: 0,
            links: Vec::new(),
        }
    }

    /// Adds a host with address `ip` running `node`.
    pub fn add_host(&mut self, ip: IpAddr, node: N) -> Device {
        self.hosts.push((ip, node));
        Device::Host(self.hosts.len() - 1)
    }

    /// Adds a switch.
    pub fn add_switch(&mut self) -> Device {
        self.switches += 1;
        Device::Switch(self.switches - 1)
    }

    /// Connects `a` and `b` with a full-duplex link, both directions per `spec`. Returns
    /// the egress ports of the two directions, `a → b` first. Several links between the
    /// same pair are parallel equal-cost paths.
    pub fn link(&mut self, a: Device, b: Device, spec: LinkSpec) -> (PortId, PortId) {
        self.link_asymmetric(a, b, spec, spec)
    }

    /// Connects `a` and `b` with different specifications per direction.
    pub fn link_asymmetric(
        &mut self,
        a: Device,
        b: Device,
        a_to_b: LinkSpec,
        b_to_a: LinkSpec,
    ) -> (PortId, PortId) {
        let k = self.links.len();
        self.links.push(LinkDef {
            a,
            b,
            a_to_b,
            b_to_a,
        });
        (PortId::from_index(2 * k), PortId::from_index(2 * k + 1))
    }

    /// Hosts added so far.
    pub fn num_hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Validates the topology, computes the routes and returns the network at time 0.
    pub fn build(self) -> Result<Network<N>, BuildError> {
        Network::from_builder(self)
    }
}

/// N hosts, each with one link to a single switch: the engine's test network. Host `i`
/// has IP [`host_ip`]`(i)` (10.0.0.1 …).
///
/// ```
/// use core::time::Duration;
/// use homa_sim::{LinkSpec, NetConfig, Star};
/// # use homa_sim::{Node, Outgoing}; use homa_proto::Time;
/// # struct Quiet;
/// # impl Node for Quiet {
/// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
/// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
/// #     fn poll_timeout(&mut self) -> Option<Time> { None }
/// #     fn handle_timeout(&mut self, _: Time) {}
/// # }
///
/// let net = Star::new(3)
///     .link(LinkSpec::new(25_000_000_000, Duration::from_nanos(200)))
///     .config(NetConfig::with_seed(7))
///     .build(|_index, _ip| Quiet)
///     .unwrap();
/// assert_eq!(net.num_hosts(), 3);
/// assert_eq!(net.num_switches(), 1);
/// assert_eq!(net.seed(), 7);
/// ```
#[derive(Debug, Clone)]
pub struct Star {
    hosts: usize,
    link: LinkSpec,
    config: NetConfig,
}

impl Star {
    /// `hosts` hosts, [`LinkSpec::default`] links (10 Gbit/s, 1 µs), default settings.
    pub fn new(hosts: usize) -> Star {
        Star {
            hosts,
            link: LinkSpec::default(),
            config: NetConfig::default(),
        }
    }

    /// Every link (both directions) per `spec`.
    pub fn link(mut self, spec: LinkSpec) -> Star {
        self.link = spec;
        self
    }

    /// Network settings.
    pub fn config(mut self, config: NetConfig) -> Star {
        self.config = config;
        self
    }

    /// Builds the network, creating host `i`'s node with `make(i, ip)`. The switch is
    /// `Device::Switch(0)`.
    pub fn build<N: Node>(
        self,
        mut make: impl FnMut(usize, IpAddr) -> N,
    ) -> Result<Network<N>, BuildError> {
        let mut b = TopologyBuilder::new(self.config);
        let switch = b.add_switch();
        for i in 0..self.hosts {
            let ip = host_ip(i);
            let h = b.add_host(ip, make(i, ip));
            b.link(h, switch, self.link);
        }
        b.build()
    }
}

/// A two-tier datacenter: `racks` racks of `hosts_per_rack` hosts under a top-of-rack
/// (ToR) switch each, every ToR linked once to each of `aggregation` aggregation switches.
/// Traffic between racks is sprayed over the uplinks per [`NetConfig::ecmp`].
///
/// Numbering: host `r * hosts_per_rack + k` is host `k` of rack `r`, IP
/// [`host_ip`] of that index; switches `0..racks` are the ToRs, switches
/// `racks..racks + aggregation` the aggregation switches.
///
/// ```
/// use homa_sim::TwoTier;
/// # use homa_sim::{Node, Outgoing}; use homa_proto::Time;
/// # struct Quiet;
/// # impl Node for Quiet {
/// #     fn handle_datagram(&mut self, _: Time, _: core::net::IpAddr, _: &[u8]) {}
/// #     fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Outgoing> { None }
/// #     fn poll_timeout(&mut self) -> Option<Time> { None }
/// #     fn handle_timeout(&mut self, _: Time) {}
/// # }
///
/// // The Homa papers' simulated datacenter: 144 hosts, 9 racks, 4 aggregation switches.
/// let net = TwoTier::homa_paper().build(|_, _| Quiet).unwrap();
/// assert_eq!((net.num_hosts(), net.num_switches()), (144, 13));
/// ```
#[derive(Debug, Clone)]
pub struct TwoTier {
    racks: usize,
    hosts_per_rack: usize,
    aggregation: usize,
    host_link: LinkSpec,
    uplink: LinkSpec,
    config: NetConfig,
}

impl TwoTier {
    /// `racks` × `hosts_per_rack` hosts and `aggregation` aggregation switches; 10 Gbit/s
    /// host links and 40 Gbit/s uplinks, 1 µs latency each; default settings.
    pub fn new(racks: usize, hosts_per_rack: usize, aggregation: usize) -> TwoTier {
        TwoTier {
            racks,
            hosts_per_rack,
            aggregation,
            host_link: LinkSpec::new(10_000_000_000, Duration::from_micros(1)),
            uplink: LinkSpec::new(40_000_000_000, Duration::from_micros(1)),
            config: NetConfig::default(),
        }
    }

    /// The topology of the Homa papers' simulations: 9 racks of 16 hosts, 4 aggregation
    /// switches, 10 Gbit/s host links, 40 Gbit/s uplinks.
    pub fn homa_paper() -> TwoTier {
        TwoTier::new(9, 16, 4)
    }

    /// Host ↔ ToR links per `spec`.
    pub fn host_link(mut self, spec: LinkSpec) -> TwoTier {
        self.host_link = spec;
        self
    }

    /// ToR ↔ aggregation links per `spec`.
    pub fn uplink(mut self, spec: LinkSpec) -> TwoTier {
        self.uplink = spec;
        self
    }

    /// Network settings.
    pub fn config(mut self, config: NetConfig) -> TwoTier {
        self.config = config;
        self
    }

    /// The ToR switch of rack `rack`.
    pub fn tor(&self, rack: usize) -> Device {
        Device::Switch(rack)
    }

    /// Aggregation switch `i`.
    pub fn aggregation_switch(&self, i: usize) -> Device {
        Device::Switch(self.racks + i)
    }

    /// Builds the network, creating host `i`'s node with `make(i, ip)`.
    pub fn build<N: Node>(
        self,
        mut make: impl FnMut(usize, IpAddr) -> N,
    ) -> Result<Network<N>, BuildError> {
        let mut b = TopologyBuilder::new(self.config.clone());
        let tors: Vec<Device> = (0..self.racks).map(|_| b.add_switch()).collect();
        let aggs: Vec<Device> = (0..self.aggregation).map(|_| b.add_switch()).collect();
        for (r, &tor) in tors.iter().enumerate() {
            for k in 0..self.hosts_per_rack {
                let i = r * self.hosts_per_rack + k;
                let ip = host_ip(i);
                let h = b.add_host(ip, make(i, ip));
                b.link(h, tor, self.host_link);
            }
            for &agg in &aggs {
                b.link(tor, agg, self.uplink);
            }
        }
        b.build()
    }
}

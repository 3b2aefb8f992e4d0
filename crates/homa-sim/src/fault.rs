//! Seeded fault injection: loss, duplication and extra delay (reordering), each limited
//! to the packets a [`Filter`] selects and applied at a chosen [`FaultSite`].

use core::net::IpAddr;
use core::time::Duration;

use homa_proto::wire::PacketType;

use crate::config::nanos;
use crate::rng::Rng;

/// Offset of the type byte in every Homa packet.
const TYPE_OFFSET: usize = 11;

/// The Homa packet type of `packet` (byte 11), if it is long enough and the code is known.
///
/// ```
/// use homa_proto::wire::PacketType;
/// let mut pkt = [0u8; 28];
/// pkt[11] = 0x11;
/// assert_eq!(homa_sim::packet_type(&pkt), Some(PacketType::Grant));
/// assert_eq!(homa_sim::packet_type(&pkt[..5]), None);
/// ```
pub fn packet_type(packet: &[u8]) -> Option<PacketType> {
    packet
        .get(TYPE_OFFSET)
        .and_then(|&c| PacketType::from_code(c))
}

/// Which packets a fault rule applies to. The default selects every packet; each
/// restriction narrows it (all restrictions must hold).
///
/// ```
/// use homa_proto::wire::PacketType;
/// use homa_sim::{host_ip, Filter};
///
/// let f = Filter::any()
///     .packet_type(PacketType::Data)
///     .packet_type(PacketType::Grant)
///     .from(host_ip(0));
/// let mut grant = [0u8; 33];
/// grant[11] = 0x11;
/// assert!(f.matches(&grant, host_ip(0), host_ip(1)));
/// assert!(!f.matches(&grant, host_ip(1), host_ip(0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// Bit `code - 0x10` set for each selected type; 0 = any type.
    types: u16,
    from: Option<IpAddr>,
    to: Option<IpAddr>,
    min_priority: u8,
}

impl Filter {
    /// Selects every packet.
    pub const fn any() -> Filter {
        Filter {
            types: 0,
            from: None,
            to: None,
            min_priority: 0,
        }
    }

    /// Adds `ty` to the selected packet types (initially: any type). A packet too short
    /// to carry a type, or with an unknown type code, matches no type restriction.
    pub const fn packet_type(mut self, ty: PacketType) -> Filter {
        self.types |= 1 << (ty.code() - 0x10);
        self
    }

    /// Only packets sent by the host with IP `ip`.
    pub const fn from(mut self, ip: IpAddr) -> Filter {
        self.from = Some(ip);
        self
    }

    /// Only packets addressed to IP `ip`.
    pub const fn to(mut self, ip: IpAddr) -> Filter {
        self.to = Some(ip);
        self
    }

    /// Only packets from `from` to `to` (one direction of a host pair).
    pub const fn between(self, from: IpAddr, to: IpAddr) -> Filter {
        self.from(from).to(to)
    }

    /// Only packets at priority level `level` or higher.
    pub const fn min_priority(mut self, level: u8) -> Filter {
        self.min_priority = level;
        self
    }

    /// Whether a packet with bytes `packet` sent from `from` to `to` is selected
    /// (ignoring the priority restriction; see [`Filter::matches_with_priority`]).
    pub fn matches(&self, packet: &[u8], from: IpAddr, to: IpAddr) -> bool {
        self.matches_with_priority(packet, from, to, 7)
    }

    /// Whether a packet with bytes `packet`, sent from `from` to `to` at level `priority`,
    /// is selected.
    ///
    /// ```
    /// use homa_sim::{host_ip, Filter};
    /// let f = Filter::any().min_priority(6);
    /// assert!(!f.matches_with_priority(&[], host_ip(0), host_ip(1), 5));
    /// ```
    pub fn matches_with_priority(
        &self,
        packet: &[u8],
        from: IpAddr,
        to: IpAddr,
        priority: u8,
    ) -> bool {
        if priority < self.min_priority {
            return false;
        }
        if self.from.is_some_and(|ip| ip != from) || self.to.is_some_and(|ip| ip != to) {
            return false;
        }
        if self.types != 0 {
            match packet_type(packet) {
                Some(t) => self.types & (1 << (t.code() - 0x10)) != 0,
                None => false,
            }
        } else {
            true
        }
    }
}

/// Where in the network a fault rule acts.
///
/// ```
/// use homa_sim::{FaultRule, FaultSite};
/// let rule = FaultRule::loss(0.01).at(FaultSite::HostIngress);
/// assert_eq!(rule.site(), FaultSite::HostIngress);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultSite {
    /// When a sending host's packet enters its egress port (once per packet; packets a
    /// host sends to itself skip it). Default.
    #[default]
    HostEgress,
    /// When a packet reaches the destination host, after the receive delay and before the
    /// node sees it (once per packet).
    HostIngress,
    /// When a packet enters any egress port, host or switch (once per hop).
    EveryEgress,
}

/// What a fault rule does to a packet it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Drop the packet.
    Loss,
    /// Send an identical copy right behind it (at most one copy per packet per site).
    Duplicate,
    /// Hold the packet for an extra delay uniform in 1 ns ..= `max_extra`, so packets
    /// behind it overtake it.
    Reorder {
        /// Largest extra delay.
        max_extra: Duration,
    },
}

/// One fault rule: with `probability`, do `kind` to each packet the filter selects at the
/// rule's site. Optional `skip_first` and `limit` make deterministic faults ("drop the
/// third DATA packet") out of probability 1.
///
/// ```
/// use core::time::Duration;
/// use homa_proto::wire::PacketType;
/// use homa_sim::{host_ip, FaultRule, Filter};
///
/// // 1 % loss of everything; 5 % of GRANTs delayed by up to 10 µs.
/// let loss = FaultRule::loss(0.01);
/// let reorder = FaultRule::reorder(0.05, Duration::from_micros(10))
///     .filter(Filter::any().packet_type(PacketType::Grant));
/// // Exactly the second DATA packet host 0 sends.
/// let one = FaultRule::loss(1.0)
///     .filter(Filter::any().packet_type(PacketType::Data).from(host_ip(0)))
///     .skip_first(1)
///     .limit(1);
/// # let _ = (loss, reorder, one);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    kind: FaultKind,
    probability: f64,
    filter: Filter,
    site: FaultSite,
    skip_first: u64,
    limit: Option<u64>,
}

impl FaultRule {
    /// A rule of `kind` firing with `probability` on every packet at the host egress.
    pub fn new(kind: FaultKind, probability: f64) -> FaultRule {
        FaultRule {
            kind,
            probability,
            filter: Filter::any(),
            site: FaultSite::HostEgress,
            skip_first: 0,
            limit: None,
        }
    }

    /// Drop packets with `probability`.
    pub fn loss(probability: f64) -> FaultRule {
        FaultRule::new(FaultKind::Loss, probability)
    }

    /// Duplicate packets with `probability`.
    pub fn duplicate(probability: f64) -> FaultRule {
        FaultRule::new(FaultKind::Duplicate, probability)
    }

    /// Delay packets with `probability` by an extra 1 ns ..= `max_extra`.
    pub fn reorder(probability: f64, max_extra: Duration) -> FaultRule {
        FaultRule::new(FaultKind::Reorder { max_extra }, probability)
    }

    /// Limits the rule to packets `filter` selects.
    pub fn filter(mut self, filter: Filter) -> FaultRule {
        self.filter = filter;
        self
    }

    /// Applies the rule at `site` instead of the host egress.
    pub fn at(mut self, site: FaultSite) -> FaultRule {
        self.site = site;
        self
    }

    /// The rule ignores the first `n` packets its filter selects.
    pub fn skip_first(mut self, n: u64) -> FaultRule {
        self.skip_first = n;
        self
    }

    /// The rule fires at most `n` times.
    pub fn limit(mut self, n: u64) -> FaultRule {
        self.limit = Some(n);
        self
    }

    /// What the rule does.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// Where the rule acts.
    pub fn site(&self) -> FaultSite {
        self.site
    }

    /// The rule's probability.
    pub fn probability(&self) -> f64 {
        self.probability
    }
}

/// Handle of a rule added with [`Network::add_fault`](crate::Network::add_fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub(crate) usize);

/// How often a rule has matched and fired so far.
///
/// ```
/// let c = homa_sim::FaultCounts::default();
/// assert_eq!((c.matched, c.fired), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    /// Packets the filter selected at the rule's site.
    pub matched: u64,
    /// Times the rule acted.
    pub fired: u64,
}

/// A rule with its counters.
#[derive(Debug, Clone)]
pub(crate) struct RuleState {
    pub(crate) rule: FaultRule,
    pub(crate) counts: FaultCounts,
}

/// What the rules decided for one packet at one site.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fate {
    /// The site of the loss rule that fired, if one did.
    pub(crate) drop: Option<FaultSite>,
    pub(crate) duplicate: bool,
    pub(crate) delay_ns: u64,
}

/// A packet as the fault rules see it.
pub(crate) struct Subject<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) from: IpAddr,
    pub(crate) to: IpAddr,
    pub(crate) priority: u8,
}

/// Sites a packet passes at a host egress port, a switch egress port, and a host ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    HostEgress,
    SwitchEgress,
    HostIngress,
}

impl Point {
    fn includes(self, site: FaultSite) -> bool {
        matches!(
            (self, site),
            (
                Point::HostEgress,
                FaultSite::HostEgress | FaultSite::EveryEgress
            ) | (Point::SwitchEgress, FaultSite::EveryEgress)
                | (Point::HostIngress, FaultSite::HostIngress)
        )
    }
}

/// Runs every rule acting at `point` over `pkt`, in the order they were added. A loss
/// ends the evaluation.
pub(crate) fn decide(
    rules: &mut [Option<RuleState>],
    rng: &mut Rng,
    point: Point,
    pkt: &Subject<'_>,
) -> Fate {
    let mut fate = Fate::default();
    for st in rules.iter_mut().flatten() {
        let r = &st.rule;
        if !point.includes(r.site)
            || !r
                .filter
                .matches_with_priority(pkt.bytes, pkt.from, pkt.to, pkt.priority)
        {
            continue;
        }
        st.counts.matched += 1;
        if st.counts.matched <= r.skip_first || r.limit.is_some_and(|l| st.counts.fired >= l) {
            continue;
        }
        if !rng.chance(r.probability) {
            continue;
        }
        st.counts.fired += 1;
        match r.kind {
            FaultKind::Loss => {
                fate.drop = Some(r.site);
                return fate;
            }
            FaultKind::Duplicate => fate.duplicate = true,
            FaultKind::Reorder { max_extra } => {
                let max = nanos(max_extra).max(1);
                fate.delay_ns = fate.delay_ns.saturating_add(1 + rng.below(max));
            }
        }
    }
    fate
}

//! Counters of what the network did.

use homa_proto::wire::PacketType;

/// Packets dropped, by reason.
///
/// ```
/// let d = homa_sim::Drops { fault: 1, buffer: 2, no_route: 3 };
/// assert_eq!(d.total(), 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drops {
    /// Dropped by a loss [`FaultRule`](crate::FaultRule).
    pub fault: u64,
    /// Tail-dropped by a full egress buffer.
    pub buffer: u64,
    /// Addressed to an IP no host has (or unreachable).
    pub no_route: u64,
}

impl Drops {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.fault + self.buffer + self.no_route
    }
}

/// Network-wide counters. To report simulated packets per second, divide
/// [`Stats::transmissions`] (or [`Stats::packets_delivered`], or [`Stats::events`]) by
/// the wall time the caller measured around the run.
///
/// ```
/// let s = homa_sim::Stats::default();
/// assert_eq!(s.in_flight(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Packets the nodes emitted (`poll_transmit` returned `Some`).
    pub packets_sent: u64,
    /// Bytes of those packets (Homa packet lengths, no overhead).
    pub bytes_sent: u64,
    /// Emitted packets per priority level.
    pub sent_by_priority: [u64; 8],
    /// Emitted packets per Homa type (index `code - 0x10`); unknown types are not counted.
    pub sent_by_type: [u64; 9],
    /// Packets handed to a node (`handle_datagram`), duplicates included.
    pub packets_delivered: u64,
    /// Bytes of those packets.
    pub bytes_delivered: u64,
    /// Delivered packets per priority level.
    pub delivered_by_priority: [u64; 8],
    /// Dropped packets, by reason.
    pub dropped: Drops,
    /// Copies made by duplication faults.
    pub duplicated: u64,
    /// Packets held back by reorder faults.
    pub delayed: u64,
    /// Packet transmissions over links (one per packet per hop).
    pub transmissions: u64,
    /// Bytes of those transmissions (packet lengths, no overhead).
    pub transmitted_bytes: u64,
    /// Calls to `handle_timeout`.
    pub timeouts: u64,
    /// Events processed (steps).
    pub events: u64,
}

impl Stats {
    /// Packets emitted or duplicated but neither delivered nor dropped yet.
    pub fn in_flight(&self) -> u64 {
        (self.packets_sent + self.duplicated)
            .saturating_sub(self.packets_delivered + self.dropped.total())
    }

    /// Emitted packets of type `ty`.
    ///
    /// ```
    /// use homa_proto::wire::PacketType;
    /// assert_eq!(homa_sim::Stats::default().sent_of_type(PacketType::Data), 0);
    /// ```
    pub fn sent_of_type(&self, ty: PacketType) -> u64 {
        self.sent_by_type[usize::from(ty.code() - 0x10)]
    }
}

/// Counters of one egress port.
///
/// ```
/// let p = homa_sim::PortStats::default();
/// assert_eq!(p.drops(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Packets transmitted.
    pub packets: u64,
    /// Bytes transmitted (packet lengths, no overhead).
    pub bytes: u64,
    /// Packets transmitted per priority level.
    pub packets_by_priority: [u64; 8],
    /// Tail drops per priority level.
    pub drops_by_priority: [u64; 8],
    /// Most bytes ever waiting in the port's queues (with overhead, as the buffer counts).
    pub max_queued_bytes: u64,
}

impl PortStats {
    /// All tail drops.
    pub fn drops(&self) -> u64 {
        self.drops_by_priority.iter().sum()
    }
}

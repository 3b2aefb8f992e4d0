//! A record of what happened to each packet, for tests and debugging.

use core::net::IpAddr;

use homa_proto::wire::PacketType;
use homa_proto::Time;

use crate::fault::FaultSite;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A loss fault rule fired at this site.
    Fault(FaultSite),
    /// The egress port's buffer was full.
    BufferFull,
    /// No host has the destination IP, or it is unreachable.
    NoRoute,
}

/// What happened to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A node emitted it.
    Sent,
    /// It was handed to the destination node.
    Delivered,
    /// It was dropped.
    Dropped(DropReason),
    /// A duplication fault made a copy with id `copy`.
    Duplicated {
        /// The copy's packet id.
        copy: u64,
    },
    /// A reorder fault held it back for `extra_ns` nanoseconds.
    Delayed {
        /// The extra delay.
        extra_ns: u64,
    },
}

/// One trace record. Records are produced in the order things happen, so two runs with
/// the same seed produce identical traces.
///
/// ```
/// use homa_sim::{TraceEntry, TraceKind};
/// # fn check(e: &TraceEntry) {
/// if e.kind == TraceKind::Delivered {
///     println!("{} {} -> {} ({} bytes)", e.time, e.from, e.to, e.len);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    /// When.
    pub time: Time,
    /// What.
    pub kind: TraceKind,
    /// The packet's id: emission order, from 0; copies get fresh ids.
    pub id: u64,
    /// IP of the sending host.
    pub from: IpAddr,
    /// Destination IP.
    pub to: IpAddr,
    /// Homa packet length.
    pub len: u32,
    /// Priority level.
    pub priority: u8,
    /// Homa packet type (byte 11), if known.
    pub packet_type: Option<PacketType>,
}

//! The Homa wire format, byte-exact with the Linux kernel module (full build).
//!
//! Two ways to look at a packet, after smoltcp:
//!
//! * **Views** ([`Packet`], [`DataPacket`], [`GrantPacket`], [`ResendPacket`],
//!   [`CutoffsPacket`], [`AckPacket`]) wrap a byte buffer without copying. Their
//!   `new_checked` constructor validates the length (and for DATA the payload range) once;
//!   after that no accessor can panic. Setters exist for `T: AsMut<[u8]>`.
//! * **Representations** ([`Repr`] and one struct per type) are owned, typed values with
//!   `parse` and `emit`. Parsing applies the kernel's receive validation (PROTOCOL.md 1.12);
//!   emitting writes exactly what homa.ko writes: `doff` 0xE0 for DATA and 0x50 otherwise,
//!   `flags` 0x06, `urgent` 0xB97D, the true offset in both DATA offset fields. The
//!   checksum needs the IP addresses, so it is filled afterwards by [`fill_checksum`].
//!
//! ```
//! use homa_proto::wire::{CommonRepr, GrantRepr, Repr};
//!
//! let grant = Repr::Grant(GrantRepr {
//!     common: CommonRepr { sport: 4000, dport: 32768, sender_id: 1235 },
//!     offset: 80_000,
//!     priority: 2,
//! });
//! let mut buf = [0u8; 64];
//! let len = grant.emit(&mut buf).unwrap();
//! assert_eq!(len, 33);
//! assert_eq!(Repr::parse(&buf[..len]).unwrap(), grant);
//! ```

mod ack;
mod checksum;
mod common;
mod cutoffs;
mod data;
mod error;
mod grant;
mod repr;
mod resend;

pub use ack::{Ack, AckList, AckPacket, AckRepr};
pub use checksum::{
    checksum_ipv4, checksum_ipv6, fill_checksum, fill_checksum_seed, fill_checksum_split,
    packet_checksum,
};
pub use common::{CommonRepr, Packet};
pub use cutoffs::{CutoffsPacket, CutoffsRepr};
pub use data::{DataPacket, DataRepr, OffsetForm};
pub use error::WireError;
pub use grant::{GrantPacket, GrantRepr};
pub use repr::Repr;
pub use resend::{ResendPacket, ResendRepr, RESEND_ALL};

use core::ops::Range;

/// IP protocol number of Homa (IANA-assigned).
pub const IPPROTO_HOMA: u8 = 146;
/// Length of the common header that starts every packet.
pub const COMMON_HEADER_LEN: usize = 28;
/// Length of a DATA header (payload follows).
pub const DATA_HEADER_LEN: usize = 56;
/// Largest header any packet type defines (ACK).
pub const MAX_HEADER_LEN: usize = 80;
/// Largest message, in bytes (`HOMA_MAX_MESSAGE_LENGTH`).
pub const MAX_MESSAGE_LENGTH: u32 = 1_000_000;
/// Number of priority levels Homa can use (`HOMA_MAX_PRIORITIES`).
pub const MAX_PRIORITIES: usize = 8;
/// Acks carried by one ACK packet (`HOMA_MAX_ACKS_PER_PKT`).
pub const MAX_ACKS_PER_PKT: usize = 5;
/// Ethernet overhead per packet used for link-time accounting: header and CRC (18) plus
/// preamble, start delimiter and inter-frame gap (24).
pub const ETH_OVERHEAD: usize = 42;
/// Value of the `flags` byte in every packet the full build emits (SYN+RST, the TCP-hijack marker).
pub const FLAGS_MARKER: u8 = 0x06;
/// Value of the `urgent` field in every packet the full build emits (the TCP-hijack marker).
pub const URGENT_MARKER: u16 = 0xB97D;
/// `doff` written on control packets (5 words, as TCP would read it).
pub const DOFF_CONTROL: u8 = 0x50;
/// `doff` written on single-segment DATA packets (14 words = 56 bytes).
pub const DOFF_DATA: u8 = 0xE0;

/// The nine Homa packet types (PROTOCOL.md 1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PacketType {
    /// A contiguous byte range of a message (0x10).
    Data = 0x10,
    /// Receiver → sender: raise the permitted offset, set the scheduled priority (0x11).
    Grant = 0x11,
    /// Ask for retransmission of a range; also a client's liveness probe (0x12).
    Resend = 0x12,
    /// "I have no state for this RPC" (0x13).
    RpcUnknown = 0x13,
    /// "I'm alive but not sending right now" (0x14).
    Busy = 0x14,
    /// Unscheduled priority cutoffs of the sending host (0x15).
    Cutoffs = 0x15,
    /// Debug: freeze the time trace. Ignored on receive, never sent (0x16).
    Freeze = 0x16,
    /// Server → client: confirm you have the whole response (0x17).
    NeedAck = 0x17,
    /// Client → server: these RPCs are finished (0x18).
    Ack = 0x18,
}

impl PacketType {
    /// All types in code order.
    pub const ALL: [PacketType; 9] = [
        PacketType::Data,
        PacketType::Grant,
        PacketType::Resend,
        PacketType::RpcUnknown,
        PacketType::Busy,
        PacketType::Cutoffs,
        PacketType::Freeze,
        PacketType::NeedAck,
        PacketType::Ack,
    ];

    /// The type for a wire code, or `None` outside 0x10..=0x18.
    ///
    /// ```
    /// use homa_proto::wire::PacketType;
    /// assert_eq!(PacketType::from_code(0x11), Some(PacketType::Grant));
    /// assert_eq!(PacketType::from_code(0x19), None);
    /// ```
    pub const fn from_code(code: u8) -> Option<PacketType> {
        Some(match code {
            0x10 => PacketType::Data,
            0x11 => PacketType::Grant,
            0x12 => PacketType::Resend,
            0x13 => PacketType::RpcUnknown,
            0x14 => PacketType::Busy,
            0x15 => PacketType::Cutoffs,
            0x16 => PacketType::Freeze,
            0x17 => PacketType::NeedAck,
            0x18 => PacketType::Ack,
            _ => return None,
        })
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Minimum length of a packet of this type: its header (PROTOCOL.md 1.12).
    ///
    /// ```
    /// use homa_proto::wire::PacketType;
    /// assert_eq!(PacketType::Data.header_len(), 56);
    /// assert_eq!(PacketType::Ack.header_len(), 80);
    /// ```
    pub const fn header_len(self) -> usize {
        match self {
            PacketType::Data => DATA_HEADER_LEN,
            PacketType::Grant => 33,
            PacketType::Resend => 37,
            PacketType::Cutoffs => 62,
            PacketType::Ack => 80,
            PacketType::RpcUnknown
            | PacketType::Busy
            | PacketType::Freeze
            | PacketType::NeedAck => COMMON_HEADER_LEN,
        }
    }

    /// The name used in the kernel's code and in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Data => "DATA",
            PacketType::Grant => "GRANT",
            PacketType::Resend => "RESEND",
            PacketType::RpcUnknown => "RPC_UNKNOWN",
            PacketType::Busy => "BUSY",
            PacketType::Cutoffs => "CUTOFFS",
            PacketType::Freeze => "FREEZE",
            PacketType::NeedAck => "NEED_ACK",
            PacketType::Ack => "ACK",
        }
    }

    /// The `doff` byte homa.ko writes for this type.
    pub const fn doff(self) -> u8 {
        match self {
            PacketType::Data => DOFF_DATA,
            _ => DOFF_CONTROL,
        }
    }

    /// Named byte ranges of this type's header, in order (common header first).
    fn layout(self) -> &'static [(&'static str, Range<usize>)] {
        match self {
            PacketType::Data => data::LAYOUT,
            PacketType::Grant => grant::LAYOUT,
            PacketType::Resend => resend::LAYOUT,
            PacketType::Cutoffs => cutoffs::LAYOUT,
            PacketType::Ack => ack::LAYOUT,
            _ => common::LAYOUT,
        }
    }

    /// The first field of this type's header that does not fit in `len` bytes.
    fn truncated_field(self, len: usize) -> &'static str {
        common::LAYOUT
            .iter()
            .chain(self.layout())
            .find(|(_, r)| r.end > len)
            .map_or("header", |(name, _)| name)
    }
}

impl core::fmt::Display for PacketType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The IPv4 TOS byte (or IPv6 Traffic Class) that carries priority `level`: `level << 5`.
///
/// Only the low three bits of `level` are used (levels are 0..=7); the ECN bits are 0.
///
/// ```
/// use homa_proto::wire::{level_to_tos, tos_to_level};
/// assert_eq!(level_to_tos(7), 0xE0);
/// assert_eq!(level_to_tos(6), 0xC0);
/// assert_eq!(tos_to_level(0xC0), 6);
/// ```
pub const fn level_to_tos(level: u8) -> u8 {
    (level & 0x07) << 5
}

/// The priority level carried by an IPv4 TOS byte or IPv6 Traffic Class: its top three bits.
pub const fn tos_to_level(tos: u8) -> u8 {
    tos >> 5
}

// Big-endian field access. Callers guarantee the range is inside the buffer (every
// view checks its length before handing out accessors).
#[inline]
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}
#[inline]
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Checks that `buf` is a well-formed packet of type `expected`: long enough for the
/// common header, a known type equal to `expected`, and long enough for that type's header.
fn check_typed(buf: &[u8], expected: PacketType) -> Result<(), WireError> {
    let actual = common::check(buf)?;
    if actual != expected {
        return Err(WireError::WrongType { expected, actual });
    }
    Ok(())
}

/// Checks that `buf` can hold a packet of type `ty` with `total` bytes.
fn check_emit_len(buf: &[u8], ty: PacketType, total: usize) -> Result<(), WireError> {
    if buf.len() < total {
        return Err(WireError::BufferTooSmall {
            packet_type: ty,
            required: total,
            actual: buf.len(),
        });
    }
    Ok(())
}

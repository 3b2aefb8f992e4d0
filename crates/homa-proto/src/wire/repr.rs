//! [`Repr`]: any Homa packet as an owned, typed value.

use super::common::check;
use super::{
    check_emit_len, AckRepr, CommonRepr, CutoffsRepr, DataRepr, GrantRepr, PacketType, ResendRepr,
    WireError, COMMON_HEADER_LEN,
};

/// Any Homa packet, parsed.
///
/// Header-only types (RPC_UNKNOWN, BUSY, FREEZE, NEED_ACK) carry just the common fields.
///
/// ```
/// use homa_proto::wire::{CommonRepr, Repr, PacketType};
///
/// let need_ack = Repr::NeedAck(CommonRepr { sport: 4000, dport: 32768, sender_id: 1235 });
/// let mut buf = [0u8; 28];
/// assert_eq!(need_ack.emit(&mut buf), Ok(28));
/// let back = Repr::parse(&buf).unwrap();
/// assert_eq!(back.packet_type(), PacketType::NeedAck);
/// assert_eq!(back, need_ack);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// DATA (0x10).
    Data(DataRepr<'a>),
    /// GRANT (0x11).
    Grant(GrantRepr),
    /// RESEND (0x12).
    Resend(ResendRepr),
    /// RPC_UNKNOWN (0x13).
    RpcUnknown(CommonRepr),
    /// BUSY (0x14).
    Busy(CommonRepr),
    /// CUTOFFS (0x15).
    Cutoffs(CutoffsRepr),
    /// FREEZE (0x16): debug only; receivers ignore it.
    Freeze(CommonRepr),
    /// NEED_ACK (0x17).
    NeedAck(CommonRepr),
    /// ACK (0x18).
    Ack(AckRepr),
}

impl<'a> Repr<'a> {
    /// Parses `buf` with the kernel's receive validation (PROTOCOL.md 1.12): at least 28
    /// bytes, a type in 0x10..=0x18, at least the type's header length, and for DATA a
    /// valid message length and a payload inside the message. Trailing bytes after a
    /// control header are ignored. Never panics.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let ty = check(buf)?;
        let common = CommonRepr::read(buf);
        Ok(match ty {
            PacketType::Data => Repr::Data(DataRepr::parse(buf)?),
            PacketType::Grant => Repr::Grant(GrantRepr::parse(buf)?),
            PacketType::Resend => Repr::Resend(ResendRepr::parse(buf)?),
            PacketType::Cutoffs => Repr::Cutoffs(CutoffsRepr::parse(buf)?),
            PacketType::Ack => Repr::Ack(AckRepr::parse(buf)?),
            PacketType::RpcUnknown => Repr::RpcUnknown(common),
            PacketType::Busy => Repr::Busy(common),
            PacketType::Freeze => Repr::Freeze(common),
            PacketType::NeedAck => Repr::NeedAck(common),
        })
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Repr::Data(_) => PacketType::Data,
            Repr::Grant(_) => PacketType::Grant,
            Repr::Resend(_) => PacketType::Resend,
            Repr::RpcUnknown(_) => PacketType::RpcUnknown,
            Repr::Busy(_) => PacketType::Busy,
            Repr::Cutoffs(_) => PacketType::Cutoffs,
            Repr::Freeze(_) => PacketType::Freeze,
            Repr::NeedAck(_) => PacketType::NeedAck,
            Repr::Ack(_) => PacketType::Ack,
        }
    }

    /// The common fields.
    pub fn common(&self) -> &CommonRepr {
        match self {
            Repr::Data(d) => &d.common,
            Repr::Grant(g) => &g.common,
            Repr::Resend(r) => &r.common,
            Repr::Cutoffs(c) => &c.common,
            Repr::Ack(a) => &a.common,
            Repr::RpcUnknown(c) | Repr::Busy(c) | Repr::Freeze(c) | Repr::NeedAck(c) => c,
        }
    }

    /// Length of the emitted packet.
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::Data(d) => d.buffer_len(),
            Repr::Grant(g) => g.buffer_len(),
            Repr::Resend(r) => r.buffer_len(),
            Repr::Cutoffs(c) => c.buffer_len(),
            Repr::Ack(a) => a.buffer_len(),
            Repr::RpcUnknown(_) | Repr::Busy(_) | Repr::Freeze(_) | Repr::NeedAck(_) => {
                COMMON_HEADER_LEN
            }
        }
    }

    /// Writes the packet into `buf` exactly as homa.ko would (checksum left 0; see
    /// [`fill_checksum`](super::fill_checksum)); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        match self {
            Repr::Data(d) => d.emit(buf),
            Repr::Grant(g) => g.emit(buf),
            Repr::Resend(r) => r.emit(buf),
            Repr::Cutoffs(c) => c.emit(buf),
            Repr::Ack(a) => a.emit(buf),
            Repr::RpcUnknown(c) | Repr::Busy(c) | Repr::Freeze(c) | Repr::NeedAck(c) => {
                let ty = self.packet_type();
                check_emit_len(buf, ty, COMMON_HEADER_LEN)?;
                c.emit(buf, ty, 0);
                Ok(COMMON_HEADER_LEN)
            }
        }
    }
}

//! RESEND packets (type 0x12, `struct homa_resend_hdr`, 37 bytes).

use core::ops::Range;

use super::{check_emit_len, check_typed, get_u32, put_u32, CommonRepr, PacketType, WireError};

const OFFSET: usize = 28;
const LENGTH: usize = 32;
const PRIORITY: usize = 36;
const LEN: usize = 37;

pub(super) const LAYOUT: &[(&str, Range<usize>)] =
    &[("offset", 28..32), ("length", 32..36), ("priority", 36..37)];

/// RESEND `length` meaning "I have received nothing: resend everything you have sent".
pub const RESEND_ALL: u32 = 0xFFFF_FFFF;

/// A zero-copy view of a RESEND packet.
///
/// The stripped kernel build sends 36-byte RESENDs without a priority byte; like the
/// full build, this view rejects them as truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ResendPacket<T> {
    /// Wraps `buffer` after checking it is a RESEND of at least 37 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_typed(buffer.as_ref(), PacketType::Resend)?;
        Ok(ResendPacket { buffer })
    }
    /// The common header.
    pub fn common(&self) -> CommonRepr {
        CommonRepr::read(self.buffer.as_ref())
    }
    /// First byte to retransmit.
    pub fn offset(&self) -> u32 {
        get_u32(self.buffer.as_ref(), OFFSET)
    }
    /// Number of bytes, or [`RESEND_ALL`].
    pub fn length(&self) -> u32 {
        get_u32(self.buffer.as_ref(), LENGTH)
    }
    /// Priority level for the retransmitted DATA.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[PRIORITY]
    }
}

/// A RESEND: retransmit `[offset, offset + length)`, or everything sent so far if
/// `length` is [`RESEND_ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResendRepr {
    /// Ports and the sender's RPC id.
    pub common: CommonRepr,
    /// First byte to retransmit.
    pub offset: u32,
    /// Number of bytes, or [`RESEND_ALL`].
    pub length: u32,
    /// Priority level for the retransmitted DATA.
    pub priority: u8,
}

impl ResendRepr {
    /// Whether this asks for everything sent so far (length −1).
    pub const fn is_all(&self) -> bool {
        self.length == RESEND_ALL
    }
    /// Parses a RESEND.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let pkt = ResendPacket::new_checked(buf)?;
        Ok(ResendRepr {
            common: pkt.common(),
            offset: pkt.offset(),
            length: pkt.length(),
            priority: pkt.priority(),
        })
    }
    /// Length of the emitted packet (37).
    pub const fn buffer_len(&self) -> usize {
        LEN
    }
    /// Writes the packet into `buf`; returns its length. Checksum left 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        check_emit_len(buf, PacketType::Resend, LEN)?;
        self.common.emit(buf, PacketType::Resend, 0);
        put_u32(buf, OFFSET, self.offset);
        put_u32(buf, LENGTH, self.length);
        buf[PRIORITY] = self.priority;
        Ok(LEN)
    }
}

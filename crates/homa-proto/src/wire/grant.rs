//! GRANT packets (type 0x11, `struct homa_grant_hdr`, 33 bytes).

use core::ops::Range;

use super::{check_emit_len, check_typed, get_u32, put_u32, CommonRepr, PacketType, WireError};

const OFFSET: usize = 28;
const PRIORITY: usize = 32;
const LEN: usize = 33;

pub(super) const LAYOUT: &[(&str, Range<usize>)] = &[("offset", 28..32), ("priority", 32..33)];

/// A zero-copy view of a GRANT packet. Trailing bytes (e.g. the pre-2025 34th
/// `resend_all` byte) are accepted and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrantPacket<T> {
    /// Wraps `buffer` after checking it is a GRANT of at least 33 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_typed(buffer.as_ref(), PacketType::Grant)?;
        Ok(GrantPacket { buffer })
    }
    /// The common header.
    pub fn common(&self) -> CommonRepr {
        CommonRepr::read(self.buffer.as_ref())
    }
    /// New cumulative grant: the sender may transmit every byte before this offset.
    pub fn offset(&self) -> u32 {
        get_u32(self.buffer.as_ref(), OFFSET)
    }
    /// Priority level for the message's scheduled DATA from now on.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[PRIORITY]
    }
}

/// A GRANT: raise the sender's permitted offset and set its scheduled priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantRepr {
    /// Ports and the sender's (the message receiver's) RPC id.
    pub common: CommonRepr,
    /// New cumulative granted offset.
    pub offset: u32,
    /// Priority level for scheduled DATA.
    pub priority: u8,
}

impl GrantRepr {
    /// Parses a GRANT.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let pkt = GrantPacket::new_checked(buf)?;
        Ok(GrantRepr {
            common: pkt.common(),
            offset: pkt.offset(),
            priority: pkt.priority(),
        })
    }
    /// Length of the emitted packet (33).
    pub const fn buffer_len(&self) -> usize {
        LEN
    }
    /// Writes the packet into `buf`; returns its length. Checksum left 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        check_emit_len(buf, PacketType::Grant, LEN)?;
        self.common.emit(buf, PacketType::Grant, 0);
        put_u32(buf, OFFSET, self.offset);
        buf[PRIORITY] = self.priority;
        Ok(LEN)
    }
}

//! The 28-byte common header (`struct homa_common_hdr`) that starts every packet.

use core::ops::Range;

use super::{
    get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, PacketType, WireError, COMMON_HEADER_LEN,
    FLAGS_MARKER, URGENT_MARKER,
};

pub(super) mod field {
    use core::ops::Range;
    pub(crate) const SPORT: usize = 0;
    pub(crate) const DPORT: usize = 2;
    pub(crate) const SEQUENCE: usize = 4;
    pub(crate) const ACK: Range<usize> = 8..11;
    pub(crate) const TYPE: usize = 11;
    pub(crate) const DOFF: usize = 12;
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WINDOW: usize = 14;
    pub(crate) const CHECKSUM: usize = 16;
    pub(crate) const URGENT: usize = 18;
    pub(crate) const SENDER_ID: usize = 20;
}

/// Named byte ranges of the common header.
pub(super) const LAYOUT: &[(&str, Range<usize>)] = &[
    ("sport", 0..2),
    ("dport", 2..4),
    ("sequence", 4..8),
    ("ack", 8..11),
    ("type", 11..12),
    ("doff", 12..13),
    ("flags", 13..14),
    ("window", 14..16),
    ("checksum", 16..18),
    ("urgent", 18..20),
    ("sender_id", 20..28),
];

/// Receive validation of PROTOCOL.md 1.12, returning the packet type: at least 28 bytes,
/// a type in 0x10..=0x18, and at least the type's header length. Trailing bytes are fine.
pub(super) fn check(buf: &[u8]) -> Result<PacketType, WireError> {
    let len = buf.len();
    if len <= field::TYPE {
        return Err(WireError::Truncated {
            packet_type: None,
            field: PacketType::Data.truncated_field(len),
            required: COMMON_HEADER_LEN,
            actual: len,
        });
    }
    let code = buf[field::TYPE];
    let ty = PacketType::from_code(code).ok_or(WireError::UnknownType { code, length: len })?;
    if len < ty.header_len() {
        return Err(WireError::Truncated {
            packet_type: Some(ty),
            field: ty.truncated_field(len),
            required: ty.header_len(),
            actual: len,
        });
    }
    Ok(ty)
}

/// A zero-copy view of any Homa packet's common header.
///
/// ```
/// use homa_proto::wire::{Packet, PacketType};
///
/// // V9 of PROTOCOL.md 9.2: a BUSY from server port 4000 to client port 32768.
/// let bytes = [
///     0x0f, 0xa0, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x14, 0x50, 0x06, 0, 0,
///     0x4d, 0xcf, 0xb9, 0x7d, 0, 0, 0, 0, 0, 0, 0x04, 0xd3,
/// ];
/// let pkt = Packet::new_checked(&bytes[..]).unwrap();
/// assert_eq!(pkt.packet_type(), PacketType::Busy);
/// assert_eq!((pkt.sport(), pkt.dport(), pkt.sender_id()), (4000, 32768, 1235));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    ty: PacketType,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` after the receive validation of PROTOCOL.md 1.12 (length of the
    /// common header and of the type's header, known type). DATA payload ranges are
    /// checked by [`DataPacket::new_checked`](super::DataPacket::new_checked).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let ty = check(buffer.as_ref())?;
        Ok(Packet { buffer, ty })
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.ty
    }
    /// Homa port of the sending socket.
    pub fn sport(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SPORT)
    }
    /// Homa port of the destination socket.
    pub fn dport(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DPORT)
    }
    /// The TCP-sequence-position field: the payload offset for DATA, 0 otherwise.
    pub fn sequence(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQUENCE)
    }
    /// The `doff` byte (ignored by receivers).
    pub fn doff(&self) -> u8 {
        self.buffer.as_ref()[field::DOFF]
    }
    /// The `flags` byte (0x06 from the full build; ignored by receivers).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The `window` field (unused, 0).
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }
    /// The TCP-style checksum (never verified by receivers).
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The `urgent` field (0xB97D from the full build; ignored by receivers).
    pub fn urgent(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }
    /// RPC id as known by the sender of this packet (even from clients, odd from servers).
    pub fn sender_id(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::SENDER_ID)
    }
    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The common fields as a representation.
    pub fn common_repr(&self) -> CommonRepr {
        CommonRepr {
            sport: self.sport(),
            dport: self.dport(),
            sender_id: self.sender_id(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }
}

/// The fields of the common header that carry meaning: ports and the sender's RPC id.
///
/// The other common fields are written by `emit` exactly as homa.ko
/// writes them (PROTOCOL.md 1.13) and ignored on receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommonRepr {
    /// Homa port of the sending socket.
    pub sport: u16,
    /// Homa port of the destination socket.
    pub dport: u16,
    /// RPC id as known by the sender of the packet.
    pub sender_id: u64,
}

impl CommonRepr {
    /// Writes a common header of type `ty` into `buf[..28]`, with `sequence` as given
    /// (the payload offset for DATA, 0 otherwise), `doff` for the type, `flags` 0x06,
    /// `urgent` 0xB97D and a zero checksum. The caller has checked `buf` is long enough.
    pub(super) fn emit(&self, buf: &mut [u8], ty: PacketType, sequence: u32) {
        put_u16(buf, field::SPORT, self.sport);
        put_u16(buf, field::DPORT, self.dport);
        put_u32(buf, field::SEQUENCE, sequence);
        buf[field::ACK].fill(0);
        buf[field::TYPE] = ty.code();
        buf[field::DOFF] = ty.doff();
        buf[field::FLAGS] = FLAGS_MARKER;
        put_u16(buf, field::WINDOW, 0);
        put_u16(buf, field::CHECKSUM, 0);
        put_u16(buf, field::URGENT, URGENT_MARKER);
        put_u64(buf, field::SENDER_ID, self.sender_id);
    }

    /// Reads the meaningful common fields; the caller has checked the length.
    pub(super) fn read(buf: &[u8]) -> CommonRepr {
        CommonRepr {
            sport: get_u16(buf, field::SPORT),
            dport: get_u16(buf, field::DPORT),
            sender_id: get_u64(buf, field::SENDER_ID),
        }
    }
}

//! DATA packets (type 0x10, `struct homa_data_hdr`, 56 bytes + payload).

use core::ops::Range;

use super::common::field as cfield;
use super::{
    check_emit_len, check_typed, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, Ack,
    CommonRepr, PacketType, WireError, DATA_HEADER_LEN, MAX_MESSAGE_LENGTH,
};

mod field {
    pub(super) const MESSAGE_LENGTH: usize = 28;
    pub(super) const INCOMING: usize = 32;
    pub(super) const ACK_CLIENT_ID: usize = 36;
    pub(super) const ACK_SERVER_PORT: usize = 44;
    pub(super) const CUTOFF_VERSION: usize = 46;
    pub(super) const RETRANSMIT: usize = 48;
    pub(super) const PAD: core::ops::Range<usize> = 49..52;
    pub(super) const SEG_OFFSET: usize = 52;
}

pub(super) const LAYOUT: &[(&str, Range<usize>)] = &[
    ("message_length", 28..32),
    ("incoming", 32..36),
    ("ack.client_id", 36..44),
    ("ack.server_port", 44..46),
    ("cutoff_version", 46..48),
    ("retransmit", 48..49),
    ("pad", 49..52),
    ("seg.offset", 52..56),
];

/// The DATA validity rule shared by parse and emit: a message length of
/// 1..=[`MAX_MESSAGE_LENGTH`], and a payload inside the message.
fn check_range(offset: u32, payload_len: usize, message_length: u32) -> Result<(), WireError> {
    if message_length == 0 || message_length > MAX_MESSAGE_LENGTH {
        return Err(WireError::InvalidMessageLength { message_length });
    }
    if offset >= message_length
        || u64::from(offset) + payload_len as u64 > u64::from(message_length)
    {
        return Err(WireError::DataOutOfRange {
            offset,
            payload_len,
            message_length,
        });
    }
    Ok(())
}

/// `seg.offset` value meaning "the offset is in `sequence`".
const SEG_OFFSET_USE_SEQUENCE: u32 = 0xFFFF_FFFF;

/// Where a DATA packet carries its payload offset (PROTOCOL.md 1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OffsetForm {
    /// The offset in both `sequence` and `seg.offset`: what every kernel variant accepts
    /// and what this implementation sends.
    #[default]
    Both,
    /// The offset in `sequence` only, `seg.offset` = 0xFFFFFFFF: the form of the kernel's
    /// single-segment packets. Parsed so it can be re-emitted byte for byte.
    SequenceOnly,
}

/// A zero-copy view of a DATA packet.
///
/// `new_checked` validates the header length, the message length and that the payload
/// lies inside the message, so every accessor (including [`payload`](Self::payload)) is
/// infallible afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// Wraps `buffer` after validating it as a DATA packet.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        check_typed(buf, PacketType::Data)?;
        let pkt = DataPacket { buffer };
        let payload_len = pkt.buffer.as_ref().len() - DATA_HEADER_LEN;
        check_range(pkt.offset(), payload_len, pkt.message_length())?;
        Ok(pkt)
    }

    /// The common header.
    pub fn common(&self) -> CommonRepr {
        CommonRepr::read(self.buffer.as_ref())
    }
    /// The raw `sequence` field.
    pub fn sequence(&self) -> u32 {
        get_u32(self.buffer.as_ref(), cfield::SEQUENCE)
    }
    /// Total length of the message.
    pub fn message_length(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MESSAGE_LENGTH)
    }
    /// Bytes the receiver may count on without grants (original packets), or the end of
    /// the resent range (retransmissions).
    pub fn incoming(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::INCOMING)
    }
    /// The piggy-backed ack, if `ack.client_id` is non-zero.
    pub fn ack(&self) -> Option<Ack> {
        let b = self.buffer.as_ref();
        let client_id = get_u64(b, field::ACK_CLIENT_ID);
        (client_id != 0).then(|| Ack {
            client_id,
            server_port: get_u16(b, field::ACK_SERVER_PORT),
        })
    }
    /// The cutoff version echoed from the destination's last CUTOFFS (0 if none).
    pub fn cutoff_version(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CUTOFF_VERSION)
    }
    /// Whether this packet answers a RESEND (informational).
    pub fn retransmit(&self) -> bool {
        self.buffer.as_ref()[field::RETRANSMIT] != 0
    }
    /// The raw `seg.offset` field.
    pub fn seg_offset(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEG_OFFSET)
    }
    /// Where the offset was found.
    pub fn offset_form(&self) -> OffsetForm {
        if self.seg_offset() == SEG_OFFSET_USE_SEQUENCE {
            OffsetForm::SequenceOnly
        } else {
            OffsetForm::Both
        }
    }
    /// Offset of the first payload byte: `seg.offset`, or `sequence` when `seg.offset`
    /// is 0xFFFFFFFF (the receiver rule of PROTOCOL.md 1.6).
    pub fn offset(&self) -> u32 {
        match self.offset_form() {
            OffsetForm::SequenceOnly => self.sequence(),
            OffsetForm::Both => self.seg_offset(),
        }
    }
    /// The message bytes this packet carries.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[DATA_HEADER_LEN..]
    }
}

/// A DATA packet: header fields and a borrowed payload.
///
/// ```
/// use homa_proto::wire::{CommonRepr, DataRepr, OffsetForm, Repr};
///
/// let data = DataRepr {
///     common: CommonRepr { sport: 32768, dport: 4000, sender_id: 1234 },
///     message_length: 5,
///     incoming: 5,
///     ack: None,
///     cutoff_version: 1,
///     retransmit: false,
///     offset: 0,
///     offset_form: OffsetForm::Both,
///     payload: b"hello",
/// };
/// let mut buf = [0u8; 128];
/// let len = data.emit(&mut buf).unwrap();
/// assert_eq!(len, 61);
/// assert_eq!(Repr::parse(&buf[..len]).unwrap(), Repr::Data(data));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr<'a> {
    /// Ports and the sender's RPC id.
    pub common: CommonRepr,
    /// Total length of the message (1..=1,000,000).
    pub message_length: u32,
    /// Unscheduled bytes of the message (originals) or end of the resent range (retransmissions).
    pub incoming: u32,
    /// A finished RPC whose server is the destination host.
    pub ack: Option<Ack>,
    /// Version of the destination's cutoff table, 0 if none received.
    pub cutoff_version: u16,
    /// Whether the packet answers a RESEND.
    pub retransmit: bool,
    /// Offset of the first payload byte in the message.
    pub offset: u32,
    /// Which offset fields carry the offset.
    pub offset_form: OffsetForm,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> DataRepr<'a> {
    /// Parses and validates a DATA packet.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let pkt = DataPacket::new_checked(buf)?;
        Ok(Self::from_header(&pkt, &buf[DATA_HEADER_LEN..]))
    }

    /// The header fields of a validated view, with `payload`.
    fn from_header<T: AsRef<[u8]>>(pkt: &DataPacket<T>, payload: &'a [u8]) -> Self {
        DataRepr {
            common: pkt.common(),
            message_length: pkt.message_length(),
            incoming: pkt.incoming(),
            ack: pkt.ack(),
            cutoff_version: pkt.cutoff_version(),
            retransmit: pkt.retransmit(),
            offset: pkt.offset(),
            offset_form: pkt.offset_form(),
            payload,
        }
    }

    /// Parses the header of a DATA packet whose payload was stored elsewhere: for a
    /// driver that receives the payload straight into its destination. `head` holds the
    /// packet's first bytes (at least the 56-byte header for success) and `packet_len` is
    /// the length of the whole packet. It accepts exactly what [`parse`](Self::parse)
    /// accepts on a packet of `packet_len` bytes, with the same fields; the returned
    /// [`payload`](Self::payload) is empty and the payload's length is returned beside it.
    /// An error describes what was looked at: for a packet that is not DATA it may differ
    /// from the whole packet's (e.g. a 62-byte CUTOFFS looks truncated in 56 bytes).
    ///
    /// ```
    /// use homa_proto::wire::{CommonRepr, DataRepr, OffsetForm};
    /// let d = DataRepr {
    ///     common: CommonRepr { sport: 40000, dport: 99, sender_id: 2 },
    ///     message_length: 3000, incoming: 3000, ack: None, cutoff_version: 0,
    ///     retransmit: false, offset: 1000, offset_form: OffsetForm::Both,
    ///     payload: &[7; 1000],
    /// };
    /// let mut buf = [0u8; 1056];
    /// d.emit(&mut buf).unwrap();
    /// let (head, payload_len) = DataRepr::parse_header(&buf[..56], 1056).unwrap();
    /// assert_eq!((head.offset, payload_len), (1000, 1000));
    /// assert!(DataRepr::parse_header(&buf[..56], 2057).is_err()); // past the message
    /// assert!(DataRepr::parse_header(&buf[..40], 1056).is_err()); // header cut short
    /// ```
    pub fn parse_header(head: &'a [u8], packet_len: usize) -> Result<(Self, usize), WireError> {
        let seen = head.len().min(packet_len).min(DATA_HEADER_LEN);
        check_typed(&head[..seen], PacketType::Data)?;
        let pkt = DataPacket {
            buffer: &head[..DATA_HEADER_LEN],
        };
        let payload_len = packet_len - DATA_HEADER_LEN;
        check_range(pkt.offset(), payload_len, pkt.message_length())?;
        Ok((Self::from_header(&pkt, &[]), payload_len))
    }

    /// Length of the emitted packet: 56 + payload.
    pub fn buffer_len(&self) -> usize {
        DATA_HEADER_LEN + self.payload.len()
    }

    /// Writes the header and copies the payload into `buf`; returns the packet length.
    /// The checksum is left 0 (see [`fill_checksum`](super::fill_checksum)). A
    /// representation the parser would reject (message length outside 1..=1,000,000, or a
    /// payload outside the message) is refused with the same error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        check_emit_len(buf, PacketType::Data, len)?;
        if self.payload.len() > MAX_MESSAGE_LENGTH as usize {
            return Err(WireError::PayloadTooLong {
                payload_len: self.payload.len(),
            });
        }
        check_range(self.offset, self.payload.len(), self.message_length)?;
        self.emit_header(buf)?;
        buf[DATA_HEADER_LEN..len].copy_from_slice(self.payload);
        Ok(len)
    }

    /// Writes only the 56-byte header into `buf[..56]`, for callers that place the
    /// payload themselves (e.g. straight from an application buffer).
    pub fn emit_header(&self, buf: &mut [u8]) -> Result<(), WireError> {
        check_emit_len(buf, PacketType::Data, DATA_HEADER_LEN)?;
        self.common.emit(buf, PacketType::Data, self.offset);
        put_u32(buf, field::MESSAGE_LENGTH, self.message_length);
        put_u32(buf, field::INCOMING, self.incoming);
        let ack = self.ack.unwrap_or_default();
        put_u64(buf, field::ACK_CLIENT_ID, ack.client_id);
        put_u16(buf, field::ACK_SERVER_PORT, ack.server_port);
        put_u16(buf, field::CUTOFF_VERSION, self.cutoff_version);
        buf[field::RETRANSMIT] = u8::from(self.retransmit);
        buf[field::PAD].fill(0);
        let seg = match self.offset_form {
            OffsetForm::Both => self.offset,
            OffsetForm::SequenceOnly => SEG_OFFSET_USE_SEQUENCE,
        };
        put_u32(buf, field::SEG_OFFSET, seg);
        Ok(())
    }
}

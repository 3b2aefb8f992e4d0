//! The error type of the wire layer.

use core::fmt;

use super::PacketType;

/// Why a byte buffer is not an acceptable Homa packet, or why a packet could not be
/// written into a buffer.
///
/// Every variant names what was wrong (the packet type, the field, the lengths involved),
/// so a counter or a log line can say exactly why a packet was dropped.
///
/// ```
/// use homa_proto::wire::{Repr, WireError, PacketType};
///
/// // A GRANT cut off after 30 bytes: the `offset` field (bytes 28..32) is incomplete.
/// let mut grant = [0u8; 30];
/// grant[11] = 0x11;
/// match Repr::parse(&grant) {
///     Err(WireError::Truncated { packet_type, field, required, actual }) => {
///         assert_eq!(packet_type, Some(PacketType::Grant));
///         assert_eq!(field, "offset");
///         assert_eq!((required, actual), (33, 30));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the header of its packet type does.
    Truncated {
        /// The packet type, if the buffer was long enough to carry the type byte.
        packet_type: Option<PacketType>,
        /// The first header field that does not fit in the buffer.
        field: &'static str,
        /// Minimum length of a packet of this type (the common header if the type is unknown).
        required: usize,
        /// Length of the buffer that was given.
        actual: usize,
    },
    /// The `type` byte is outside 0x10..=0x18.
    UnknownType {
        /// The type byte found at offset 11.
        code: u8,
        /// Length of the buffer that was given.
        length: usize,
    },
    /// A DATA packet announces a message length of 0 or more than
    /// [`MAX_MESSAGE_LENGTH`](super::MAX_MESSAGE_LENGTH).
    InvalidMessageLength {
        /// The `message_length` field.
        message_length: u32,
    },
    /// A DATA packet's payload does not lie inside its message:
    /// `offset < message_length` and `offset + payload_len <= message_length` must both hold.
    DataOutOfRange {
        /// The payload offset (from `seg.offset`, or `sequence` if `seg.offset` is 0xFFFFFFFF).
        offset: u32,
        /// Number of payload bytes after the 56-byte header.
        payload_len: usize,
        /// The `message_length` field.
        message_length: u32,
    },
    /// A typed view was asked for over a packet of another type.
    WrongType {
        /// The type the view is for.
        expected: PacketType,
        /// The type the buffer carries.
        actual: PacketType,
    },
    /// The output buffer is too small for the packet being emitted.
    BufferTooSmall {
        /// The type of packet being emitted.
        packet_type: PacketType,
        /// Bytes needed.
        required: usize,
        /// Bytes available.
        actual: usize,
    },
    /// A DATA payload longer than a message can be was given to `emit`.
    PayloadTooLong {
        /// Length of the payload.
        payload_len: usize,
    },
    /// The checksum was asked for with one IPv4 and one IPv6 address.
    AddressFamilyMismatch,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated {
                packet_type,
                field,
                required,
                actual,
            } => {
                let name = packet_type.map_or("Homa", PacketType::name);
                write!(
                    f,
                    "{name} packet truncated in field `{field}`: {actual} bytes, at least {required} required"
                )
            }
            WireError::UnknownType { code, length } => write!(
                f,
                "unknown Homa packet type {code:#04x} (valid 0x10..=0x18) in a {length}-byte packet"
            ),
            WireError::InvalidMessageLength { message_length } => write!(
                f,
                "DATA packet field `message_length` is {message_length}, allowed 1..={}",
                super::MAX_MESSAGE_LENGTH
            ),
            WireError::DataOutOfRange {
                offset,
                payload_len,
                message_length,
            } => write!(
                f,
                "DATA payload of {payload_len} bytes at offset {offset} does not fit in a {message_length}-byte message"
            ),
            WireError::WrongType { expected, actual } => write!(
                f,
                "expected a {} packet, found {}",
                expected.name(),
                actual.name()
            ),
            WireError::BufferTooSmall {
                packet_type,
                required,
                actual,
            } => write!(
                f,
                "cannot emit {} packet: {required} bytes needed, buffer has {actual}",
                packet_type.name()
            ),
            WireError::PayloadTooLong { payload_len } => write!(
                f,
                "DATA payload of {payload_len} bytes exceeds the maximum message length {}",
                super::MAX_MESSAGE_LENGTH
            ),
            WireError::AddressFamilyMismatch => {
                f.write_str("checksum pseudo-header needs two IPv4 or two IPv6 addresses")
            }
        }
    }
}

impl std::error::Error for WireError {}

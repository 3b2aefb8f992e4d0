//! The TCP-style checksum of PROTOCOL.md 1.3.
//!
//! The full build fills the common header's `checksum` field (offset 16) with the
//! standard TCP checksum computed as if the Homa packet were a TCP segment: the
//! one's-complement sum over a pseudo-header (source, destination, zero, protocol **6**,
//! length) and the whole packet with the checksum field zeroed, complemented. No receiver
//! verifies it; the raw-IP transport fills it so packets look exactly like homa.ko's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{WireError, COMMON_HEADER_LEN};

/// Byte offset of the checksum field.
const CHECKSUM_AT: usize = 16;
/// Protocol number used in the pseudo-header: TCP, even though the IP protocol is 146.
const PSEUDO_PROTOCOL: u32 = 6;

/// Adds `data` to a one's-complement accumulator as big-endian 16-bit words (an odd last
/// byte is padded with zero), skipping the checksum field at offset 16..18.
fn sum_packet(data: &[u8]) -> u64 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for (i, c) in chunks.by_ref().enumerate() {
        let word = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        // Bytes 16..20 hold checksum (16..18) and urgent (18..20): keep only urgent.
        let word = if i == CHECKSUM_AT / 4 {
            word & 0xFFFF
        } else {
            word
        };
        sum += u64::from(word);
    }
    let rest = chunks.remainder();
    let tail_at = data.len() - rest.len();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    if tail_at == CHECKSUM_AT {
        tail[0] = 0;
        tail[1] = 0;
    }
    sum + u64::from(u32::from_be_bytes(tail))
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn words(b: &[u8]) -> u64 {
    b.chunks_exact(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum()
}

/// The checksum of `packet` (a whole Homa packet, header and payload) sent from `src` to
/// `dst` over IPv4. The packet's own checksum field is treated as zero.
///
/// ```
/// use std::net::Ipv4Addr;
/// use homa_proto::wire::checksum_ipv4;
/// // V6 of PROTOCOL.md 9.2: a NEED_ACK from 10.0.0.2 to 10.0.0.1, checksum 0x4dcc.
/// let v6 = [
///     0x0f, 0xa0, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x17, 0x50, 0x06, 0, 0,
///     0x4d, 0xcc, 0xb9, 0x7d, 0, 0, 0, 0, 0, 0, 0x04, 0xd3,
/// ];
/// let sum = checksum_ipv4(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), &v6);
/// assert_eq!(sum, 0x4dcc);
/// ```
pub fn checksum_ipv4(src: Ipv4Addr, dst: Ipv4Addr, packet: &[u8]) -> u16 {
    let pseudo = words(&src.octets()) + words(&dst.octets()) + u64::from(PSEUDO_PROTOCOL);
    fold(pseudo + packet.len() as u64 + sum_packet(packet))
}

/// The checksum of `packet` sent from `src` to `dst` over IPv6 (pseudo-header with
/// next-header 6). The packet's own checksum field is treated as zero.
pub fn checksum_ipv6(src: Ipv6Addr, dst: Ipv6Addr, packet: &[u8]) -> u16 {
    let len = packet.len() as u64;
    let pseudo = words(&src.octets())
        + words(&dst.octets())
        + (len >> 16)
        + (len & 0xFFFF)
        + u64::from(PSEUDO_PROTOCOL);
    fold(pseudo + sum_packet(packet))
}

/// The checksum of `packet` between two addresses of the same family.
pub fn packet_checksum(src: IpAddr, dst: IpAddr, packet: &[u8]) -> Result<u16, WireError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(checksum_ipv4(s, d, packet)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(checksum_ipv6(s, d, packet)),
        _ => Err(WireError::AddressFamilyMismatch),
    }
}

/// Computes the checksum of an emitted packet and writes it at offset 16.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use homa_proto::wire::{fill_checksum, CommonRepr, Repr};
///
/// let busy = Repr::Busy(CommonRepr { sport: 4000, dport: 32768, sender_id: 1235 });
/// let mut buf = [0u8; 28];
/// busy.emit(&mut buf).unwrap();
/// let (s, c) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
/// fill_checksum(&mut buf, IpAddr::V4(s), IpAddr::V4(c)).unwrap();
/// assert_eq!(&buf[16..18], &[0x4d, 0xcf]); // V9 of PROTOCOL.md 9.2
/// ```
pub fn fill_checksum(packet: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<(), WireError> {
    if packet.len() < COMMON_HEADER_LEN {
        return Err(WireError::Truncated {
            packet_type: None,
            field: "checksum",
            required: COMMON_HEADER_LEN,
            actual: packet.len(),
        });
    }
    let sum = packet_checksum(src, dst, packet)?;
    packet[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

//! Property tests of the wire format (PROTOCOL.md sections 1.4–1.12 and 9).
//!
//! The receive rules are checked against an oracle written in this file straight from
//! PROTOCOL.md (header lengths, field names and offsets, DATA range rules), not from the
//! crate's own tables, and the checksum against a plain RFC 1071 sum.
//!
//! Case counts (fixed per property with `ProptestConfig { cases, .. }`, so CI always runs
//! the same number; the seed is random per run, and a failing case is shrunk and saved to
//! `tests/wire_props.proptest-regressions`, which should then be committed). The whole
//! file runs in about a second in the test profile on a 2-core machine.
//!
//! | property                                                      | cases  |
//! |---------------------------------------------------------------|--------|
//! | `data_round_trips_with_kernel_fixed_bytes`                    | 5000   |
//! | `grant_round_trips_with_kernel_fixed_bytes`                   | 3000   |
//! | `resend_round_trips_with_kernel_fixed_bytes`                  | 3000   |
//! | `header_only_types_round_trip_with_kernel_fixed_bytes` (×4)   | 3000   |
//! | `cutoffs_round_trip_with_kernel_fixed_bytes`                  | 3000   |
//! | `ack_round_trips_with_kernel_fixed_bytes`                     | 3000   |
//! | `filled_ipv4_checksum_verifies_with_rfc1071`                  | 5000   |
//! | `filled_ipv6_checksum_verifies_with_rfc1071`                  | 5000   |
//! | `checksum_with_mixed_address_families_is_refused`             | 1000   |
//! | `arbitrary_short_bytes_follow_the_receive_rules` (0..200 B)   | 50000  |
//! | `arbitrary_long_bytes_follow_the_receive_rules` (0..2000 B)   | 5000   |
//! | `arbitrary_bytes_with_a_known_type_follow_the_receive_rules`  | 20000  |
//! | `mutated_valid_packets_follow_the_receive_rules`              | 20000  |
//! | `control_packets_ignore_trailing_bytes`                       | 5000   |
//! | `mutation_outcomes_cover_every_error_variant` (fixed seed)    | 5000   |
//! | `data_header_parsed_apart_agrees_with_the_whole_packet`       | 20000  |
//!
//! Everything else is a plain unit test of PROTOCOL.md 1.12 receive validation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use homa_proto::wire::{
    fill_checksum, level_to_tos, packet_checksum, tos_to_level, Ack, AckList, AckPacket, AckRepr,
    CommonRepr, CutoffsPacket, CutoffsRepr, DataPacket, DataRepr, GrantPacket, GrantRepr,
    OffsetForm, Packet, PacketType, Repr, ResendPacket, ResendRepr, WireError, RESEND_ALL,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRng, TestRunner};

// ---------------------------------------------------------------------------------------
// The oracle: PROTOCOL.md written out independently of the crate.
// ---------------------------------------------------------------------------------------

/// `HOMA_MAX_MESSAGE_LENGTH` (PROTOCOL.md 1.6).
const MAX_MESSAGE: u32 = 1_000_000;
/// Largest payload the generators put in one DATA packet.
const MAX_PAYLOAD: usize = 2000;

/// Header length of each type code (PROTOCOL.md 1.4 and 1.12), `None` for unknown codes.
fn header_len_of(code: u8) -> Option<usize> {
    Some(match code {
        0x10 => 56,
        0x11 => 33,
        0x12 => 37,
        0x13 | 0x14 | 0x16 | 0x17 => 28,
        0x15 => 62,
        0x18 => 80,
        _ => return None,
    })
}

/// Common header fields (PROTOCOL.md 1.5) as (kernel field name, end offset).
const COMMON_FIELDS: &[(&str, usize)] = &[
    ("sport", 2),
    ("dport", 4),
    ("sequence", 8),
    ("ack", 11),
    ("type", 12),
    ("doff", 13),
    ("flags", 14),
    ("window", 16),
    ("checksum", 18),
    ("urgent", 20),
    ("sender_id", 28),
];

/// Type-specific fields after the common header (PROTOCOL.md 1.6–1.11).
fn type_fields(code: u8) -> &'static [(&'static str, usize)] {
    match code {
        0x10 => &[
            ("message_length", 32),
            ("incoming", 36),
            ("ack.client_id", 44),
            ("ack.server_port", 46),
            ("cutoff_version", 48),
            ("retransmit", 49),
            ("pad", 52),
            ("seg.offset", 56),
        ],
        0x11 => &[("offset", 32), ("priority", 33)],
        0x12 => &[("offset", 32), ("length", 36), ("priority", 37)],
        0x15 => &[("unsched_cutoffs", 60), ("cutoff_version", 62)],
        0x18 => &[
            ("num_acks", 30),
            ("acks[0]", 40),
            ("acks[1]", 50),
            ("acks[2]", 60),
            ("acks[3]", 70),
            ("acks[4]", 80),
        ],
        _ => &[],
    }
}

/// The field that a cut after `len` bytes leaves incomplete (the one straddling the cut,
/// or the next one if the cut falls on a field boundary).
fn straddling_field(code: Option<u8>, len: usize) -> &'static str {
    let rest = code.map_or(&[][..], type_fields);
    COMMON_FIELDS
        .iter()
        .chain(rest)
        .find(|(_, end)| *end > len)
        .map(|(name, _)| *name)
        .expect("a truncated packet has an incomplete field")
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// What the kernel's receive path (PROTOCOL.md 1.12 and the DATA rules of 1.6) decides
/// about `buf`, expressed with the crate's error type: the packet type and, for DATA,
/// the payload offset (`seg.offset`, or `sequence` when `seg.offset` is 0xFFFFFFFF).
fn oracle(buf: &[u8]) -> Result<(PacketType, Option<u32>), WireError> {
    let len = buf.len();
    if len < 12 {
        return Err(WireError::Truncated {
            packet_type: None,
            field: straddling_field(None, len),
            required: 28,
            actual: len,
        });
    }
    let code = buf[11];
    let Some(hdr) = header_len_of(code) else {
        return Err(WireError::UnknownType { code, length: len });
    };
    let ty = PacketType::ALL
        .into_iter()
        .find(|t| t.code() == code)
        .expect("every code with a header length is a packet type");
    if len < hdr {
        return Err(WireError::Truncated {
            packet_type: Some(ty),
            field: straddling_field(Some(code), len),
            required: hdr,
            actual: len,
        });
    }
    if code != 0x10 {
        return Ok((ty, None));
    }
    let message_length = be32(buf, 28);
    if message_length == 0 || message_length > MAX_MESSAGE {
        return Err(WireError::InvalidMessageLength { message_length });
    }
    let seg = be32(buf, 52);
    let offset = if seg == 0xFFFF_FFFF {
        be32(buf, 4)
    } else {
        seg
    };
    let payload_len = len - 56;
    if offset >= message_length
        || u64::from(offset) + payload_len as u64 > u64::from(message_length)
    {
        return Err(WireError::DataOutOfRange {
            offset,
            payload_len,
            message_length,
        });
    }
    Ok((ty, Some(offset)))
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (RFC 1071), folded, not
/// complemented. An odd last byte is padded with zero.
fn rfc1071_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// TCP pseudo-header (protocol 6) for an IPv4 segment of `len` bytes.
fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// IPv6 pseudo-header (RFC 8200 8.1) with next header 6 for a segment of `len` bytes.
fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 6]);
    p
}

// ---------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------

/// A DATA packet with an owned payload (a `DataRepr` borrows its payload).
#[derive(Debug, Clone)]
struct DataCase {
    header: DataRepr<'static>,
    payload: Vec<u8>,
}

impl DataCase {
    fn repr(&self) -> DataRepr<'_> {
        DataRepr {
            payload: &self.payload,
            ..self.header
        }
    }
}

/// Any packet.
#[derive(Debug, Clone)]
enum Case {
    Data(DataCase),
    Control(Repr<'static>),
}

impl Case {
    fn repr(&self) -> Repr<'_> {
        match self {
            Case::Data(d) => Repr::Data(d.repr()),
            Case::Control(r) => *r,
        }
    }
}

fn common() -> impl Strategy<Value = CommonRepr> {
    (any::<u16>(), any::<u16>(), any::<u64>()).prop_map(|(sport, dport, sender_id)| CommonRepr {
        sport,
        dport,
        sender_id,
    })
}

fn offset_form() -> impl Strategy<Value = OffsetForm> {
    prop_oneof![Just(OffsetForm::Both), Just(OffsetForm::SequenceOnly)]
}

/// The piggy-backed ack of DATA: a zero client id means "none", so `Some` has a
/// non-zero id.
fn piggyback_ack() -> impl Strategy<Value = Option<Ack>> {
    proptest::option::of(
        (1..=u64::MAX, any::<u16>()).prop_map(|(client_id, server_port)| Ack {
            client_id,
            server_port,
        }),
    )
}

fn data_case() -> impl Strategy<Value = DataCase> {
    let message_length = prop_oneof![1u32..=300, 1u32..=MAX_MESSAGE, Just(MAX_MESSAGE)];
    message_length
        .prop_flat_map(|ml| (Just(ml), prop_oneof![0..ml, Just(0), Just(ml - 1)]))
        .prop_flat_map(|(ml, offset)| {
            let room = ((ml - offset) as usize).min(MAX_PAYLOAD);
            let payload =
                prop_oneof![0..=room, Just(room)].prop_flat_map(|len| vec(any::<u8>(), len..=len));
            (
                common(),
                Just(ml),
                Just(offset),
                payload,
                any::<u32>(),
                piggyback_ack(),
                any::<u16>(),
                any::<bool>(),
                offset_form(),
            )
        })
        .prop_map(
            |(
                common,
                message_length,
                offset,
                payload,
                incoming,
                ack,
                cutoff_version,
                retransmit,
                offset_form,
            )| {
                DataCase {
                    header: DataRepr {
                        common,
                        message_length,
                        incoming,
                        ack,
                        cutoff_version,
                        retransmit,
                        offset,
                        offset_form,
                        payload: &[],
                    },
                    payload,
                }
            },
        )
}

fn grant() -> impl Strategy<Value = GrantRepr> {
    (common(), any::<u32>(), any::<u8>()).prop_map(|(common, offset, priority)| GrantRepr {
        common,
        offset,
        priority,
    })
}

fn resend() -> impl Strategy<Value = ResendRepr> {
    let length = prop_oneof![any::<u32>(), Just(RESEND_ALL)];
    (common(), any::<u32>(), length, any::<u8>()).prop_map(|(common, offset, length, priority)| {
        ResendRepr {
            common,
            offset,
            length,
            priority,
        }
    })
}

fn cutoffs() -> impl Strategy<Value = CutoffsRepr> {
    (common(), any::<[u32; 8]>(), any::<u16>()).prop_map(
        |(common, unsched_cutoffs, cutoff_version)| CutoffsRepr {
            common,
            unsched_cutoffs,
            cutoff_version,
        },
    )
}

fn ack_packet() -> impl Strategy<Value = AckRepr> {
    let entry = (any::<u64>(), any::<u16>()).prop_map(|(client_id, server_port)| Ack {
        client_id,
        server_port,
    });
    (common(), vec(entry, 0..=5)).prop_map(|(common, entries)| {
        let mut acks = AckList::new();
        for a in entries {
            acks.push(a).expect("at most five acks");
        }
        AckRepr { common, acks }
    })
}

const HEADER_ONLY: [PacketType; 4] = [
    PacketType::RpcUnknown,
    PacketType::Busy,
    PacketType::Freeze,
    PacketType::NeedAck,
];

fn header_only(ty: PacketType, c: CommonRepr) -> Repr<'static> {
    match ty {
        PacketType::RpcUnknown => Repr::RpcUnknown(c),
        PacketType::Busy => Repr::Busy(c),
        PacketType::Freeze => Repr::Freeze(c),
        PacketType::NeedAck => Repr::NeedAck(c),
        other => panic!("{other} is not a header-only type"),
    }
}

fn control_case() -> impl Strategy<Value = Repr<'static>> {
    prop_oneof![
        grant().prop_map(Repr::Grant),
        resend().prop_map(Repr::Resend),
        cutoffs().prop_map(Repr::Cutoffs),
        ack_packet().prop_map(Repr::Ack),
        (proptest::sample::select(HEADER_ONLY.to_vec()), common())
            .prop_map(|(t, c)| header_only(t, c)),
    ]
}

fn any_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        2 => data_case().prop_map(Case::Data),
        3 => control_case().prop_map(Case::Control),
    ]
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

fn emit_vec(repr: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    let len = repr
        .emit(&mut buf)
        .expect("emit into a buffer of buffer_len()");
    assert_eq!(len, buf.len());
    buf
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

// ---------------------------------------------------------------------------------------
// Round trip and emitted bytes.
// ---------------------------------------------------------------------------------------

/// Checks the bytes of an emitted packet field by field against PROTOCOL.md (including
/// the imitation-only bytes the kernel writes) with the checksum still zero.
fn check_emitted_bytes(repr: &Repr<'_>, pkt: &[u8]) -> Result<(), TestCaseError> {
    let c = repr.common();
    let code = repr.packet_type().code();
    prop_assert_eq!(be16(pkt, 0), c.sport, "sport");
    prop_assert_eq!(be16(pkt, 2), c.dport, "dport");
    prop_assert_eq!(&pkt[8..11], &[0u8, 0, 0][..], "ack[3] must be zero");
    prop_assert_eq!(pkt[11], code, "type");
    let doff = if code == 0x10 { 0xE0 } else { 0x50 };
    prop_assert_eq!(pkt[12], doff, "doff");
    prop_assert_eq!(pkt[13], 0x06, "flags must be SYN+RST");
    prop_assert_eq!(&pkt[14..16], &[0u8, 0][..], "window must be zero");
    prop_assert_eq!(&pkt[16..18], &[0u8, 0][..], "checksum is left zero by emit");
    prop_assert_eq!(&pkt[18..20], &[0xB9u8, 0x7D][..], "urgent marker");
    prop_assert_eq!(be64(pkt, 20), c.sender_id, "sender_id");
    match repr {
        Repr::Data(d) => {
            prop_assert_eq!(pkt.len(), 56 + d.payload.len());
            prop_assert_eq!(be32(pkt, 4), d.offset, "sequence carries the offset");
            prop_assert_eq!(be32(pkt, 28), d.message_length);
            prop_assert_eq!(be32(pkt, 32), d.incoming);
            let ack = d.ack.unwrap_or_default();
            prop_assert_eq!(be64(pkt, 36), ack.client_id);
            prop_assert_eq!(be16(pkt, 44), ack.server_port);
            prop_assert_eq!(be16(pkt, 46), d.cutoff_version);
            prop_assert_eq!(pkt[48], u8::from(d.retransmit));
            prop_assert_eq!(&pkt[49..52], &[0u8, 0, 0][..], "pad");
            let seg = match d.offset_form {
                OffsetForm::Both => d.offset,
                OffsetForm::SequenceOnly => 0xFFFF_FFFF,
            };
            prop_assert_eq!(be32(pkt, 52), seg, "seg.offset");
            prop_assert_eq!(&pkt[56..], d.payload);
        }
        Repr::Grant(g) => {
            prop_assert_eq!(pkt.len(), 33);
            prop_assert_eq!(be32(pkt, 4), 0, "sequence");
            prop_assert_eq!(be32(pkt, 28), g.offset);
            prop_assert_eq!(pkt[32], g.priority);
        }
        Repr::Resend(r) => {
            prop_assert_eq!(pkt.len(), 37);
            prop_assert_eq!(be32(pkt, 4), 0, "sequence");
            prop_assert_eq!(be32(pkt, 28), r.offset);
            prop_assert_eq!(be32(pkt, 32), r.length);
            prop_assert_eq!(pkt[36], r.priority);
        }
        Repr::Cutoffs(co) => {
            prop_assert_eq!(pkt.len(), 62);
            prop_assert_eq!(be32(pkt, 4), 0, "sequence");
            for (i, v) in co.unsched_cutoffs.iter().enumerate() {
                prop_assert_eq!(be32(pkt, 28 + 4 * i), *v, "unsched_cutoffs[{}]", i);
            }
            prop_assert_eq!(be16(pkt, 60), co.cutoff_version);
        }
        Repr::Ack(a) => {
            prop_assert_eq!(pkt.len(), 80, "ACK is always sent full length");
            prop_assert_eq!(be32(pkt, 4), 0, "sequence");
            prop_assert_eq!(usize::from(be16(pkt, 28)), a.acks.len());
            for i in 0..5 {
                let want = a.acks.as_slice().get(i).copied().unwrap_or_default();
                prop_assert_eq!(be64(pkt, 30 + 10 * i), want.client_id, "acks[{}]", i);
                prop_assert_eq!(be16(pkt, 38 + 10 * i), want.server_port, "acks[{}]", i);
            }
        }
        Repr::RpcUnknown(_) | Repr::Busy(_) | Repr::Freeze(_) | Repr::NeedAck(_) => {
            prop_assert_eq!(pkt.len(), 28);
            prop_assert_eq!(be32(pkt, 4), 0, "sequence");
        }
    }
    Ok(())
}

/// Emits `repr` into a dirty, oversized buffer, checks length, bytes and that nothing
/// past the packet was written, parses it back, and checks that a buffer one byte short
/// is refused.
fn check_round_trip(repr: &Repr<'_>) -> Result<(), TestCaseError> {
    let len = repr.buffer_len();
    let mut buf = vec![0xA5u8; len + 16];
    let n = repr
        .emit(&mut buf)
        .map_err(|e| fail(format!("emit failed: {e}")))?;
    prop_assert_eq!(n, len, "emit returns buffer_len()");
    prop_assert!(
        buf[len..].iter().all(|&b| b == 0xA5),
        "emit wrote past the packet"
    );
    let pkt = &buf[..len];
    check_emitted_bytes(repr, pkt)?;
    let back = Repr::parse(pkt).map_err(|e| fail(format!("parse of emitted packet: {e}")))?;
    prop_assert_eq!(back, *repr);
    // The views and the oracle agree on the emitted packet too.
    check_any(pkt)?;

    let mut short = vec![0u8; len - 1];
    prop_assert_eq!(
        repr.emit(&mut short),
        Err(WireError::BufferTooSmall {
            packet_type: repr.packet_type(),
            required: len,
            actual: len - 1,
        })
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]
    #[test]
    fn data_round_trips_with_kernel_fixed_bytes(case in data_case()) {
        let d = case.repr();
        prop_assert!(d.offset < d.message_length);
        prop_assert!(d.offset as usize + d.payload.len() <= d.message_length as usize);
        check_round_trip(&Repr::Data(d))?;
        // emit_header writes the same 56 bytes as emit.
        let full = emit_vec(&Repr::Data(d));
        let mut header = [0x5Au8; 56];
        d.emit_header(&mut header).map_err(|e| fail(format!("emit_header: {e}")))?;
        prop_assert_eq!(&header[..], &full[..56]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn grant_round_trips_with_kernel_fixed_bytes(g in grant()) {
        check_round_trip(&Repr::Grant(g))?;
    }

    #[test]
    fn resend_round_trips_with_kernel_fixed_bytes(r in resend()) {
        check_round_trip(&Repr::Resend(r))?;
        prop_assert_eq!(r.is_all(), r.length == 0xFFFF_FFFF);
    }

    #[test]
    fn header_only_types_round_trip_with_kernel_fixed_bytes(c in common()) {
        for ty in HEADER_ONLY {
            check_round_trip(&header_only(ty, c))?;
        }
    }

    #[test]
    fn cutoffs_round_trip_with_kernel_fixed_bytes(co in cutoffs()) {
        check_round_trip(&Repr::Cutoffs(co))?;
    }

    #[test]
    fn ack_round_trips_with_kernel_fixed_bytes(a in ack_packet()) {
        check_round_trip(&Repr::Ack(a))?;
    }
}

// ---------------------------------------------------------------------------------------
// Checksum.
// ---------------------------------------------------------------------------------------

/// Fills the checksum of `case` over a garbage checksum field and checks it with the
/// RFC 1071 sum over `pseudo` + packet: the complement of the sum with the field zeroed
/// must be what was written, and the sum over the filled packet must be 0xFFFF.
fn check_filled_checksum(
    case: &Case,
    garbage: u16,
    src: IpAddr,
    dst: IpAddr,
    pseudo: &[u8],
) -> Result<(), TestCaseError> {
    let emitted = emit_vec(&case.repr());
    let mut pkt = emitted.clone();
    pkt[16..18].copy_from_slice(&garbage.to_be_bytes());
    fill_checksum(&mut pkt, src, dst).map_err(|e| fail(format!("fill_checksum: {e}")))?;
    prop_assert_eq!(&pkt[..16], &emitted[..16], "only bytes 16..18 may change");
    prop_assert_eq!(&pkt[18..], &emitted[18..], "only bytes 16..18 may change");

    let mut zeroed = pseudo.to_vec();
    zeroed.extend_from_slice(&emitted);
    let expected = !rfc1071_sum(&zeroed);
    prop_assert_eq!(be16(&pkt, 16), expected, "checksum differs from RFC 1071");

    let mut filled = pseudo.to_vec();
    filled.extend_from_slice(&pkt);
    prop_assert_eq!(
        rfc1071_sum(&filled),
        0xFFFF,
        "filled packet does not verify"
    );

    prop_assert_eq!(packet_checksum(src, dst, &pkt), Ok(expected));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]
    #[test]
    fn filled_ipv4_checksum_verifies_with_rfc1071(
        case in any_case(), garbage in any::<u16>(), src in ipv4(), dst in ipv4(),
    ) {
        let len = case.repr().buffer_len();
        let pseudo = pseudo_v4(src, dst, len);
        check_filled_checksum(&case, garbage, IpAddr::V4(src), IpAddr::V4(dst), &pseudo)?;
    }

    #[test]
    fn filled_ipv6_checksum_verifies_with_rfc1071(
        case in any_case(), garbage in any::<u16>(), src in ipv6(), dst in ipv6(),
    ) {
        let len = case.repr().buffer_len();
        let pseudo = pseudo_v6(src, dst, len);
        check_filled_checksum(&case, garbage, IpAddr::V6(src), IpAddr::V6(dst), &pseudo)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn checksum_with_mixed_address_families_is_refused(
        case in any_case(), v4 in ipv4(), v6 in ipv6(),
    ) {
        let emitted = emit_vec(&case.repr());
        let mismatch = Err(WireError::AddressFamilyMismatch);
        for (src, dst) in [(IpAddr::V4(v4), IpAddr::V6(v6)), (IpAddr::V6(v6), IpAddr::V4(v4))] {
            let mut pkt = emitted.clone();
            prop_assert_eq!(fill_checksum(&mut pkt, src, dst), mismatch.map(|_: u16| ()));
            prop_assert_eq!(&pkt, &emitted, "a refused fill must not touch the packet");
            prop_assert_eq!(packet_checksum(src, dst, &pkt), mismatch);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The parser against arbitrary and mutated input.
// ---------------------------------------------------------------------------------------

/// What happened to one input, for the coverage test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Parsed(PacketType),
    Truncated(Option<PacketType>),
    UnknownType,
    InvalidMessageLength,
    DataOutOfRange,
}

/// Checks the fields of a successful parse against the bytes.
fn check_parsed_fields(
    repr: &Repr<'_>,
    buf: &[u8],
    offset: Option<u32>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(*repr.common(), common_from_bytes(buf));
    match repr {
        Repr::Data(d) => {
            prop_assert_eq!(Some(d.offset), offset);
            prop_assert!(d.message_length >= 1 && d.message_length <= MAX_MESSAGE);
            prop_assert!(
                d.offset < d.message_length,
                "offset {} >= message_length",
                d.offset
            );
            prop_assert!(
                u64::from(d.offset) + d.payload.len() as u64 <= u64::from(d.message_length),
                "payload past the message end"
            );
            prop_assert_eq!(d.message_length, be32(buf, 28));
            prop_assert_eq!(d.incoming, be32(buf, 32));
            let client_id = be64(buf, 36);
            let ack = (client_id != 0).then(|| Ack {
                client_id,
                server_port: be16(buf, 44),
            });
            prop_assert_eq!(d.ack, ack);
            prop_assert_eq!(d.cutoff_version, be16(buf, 46));
            prop_assert_eq!(d.retransmit, buf[48] != 0);
            let form = if be32(buf, 52) == 0xFFFF_FFFF {
                OffsetForm::SequenceOnly
            } else {
                OffsetForm::Both
            };
            prop_assert_eq!(d.offset_form, form);
            prop_assert_eq!(d.payload, &buf[56..]);
        }
        Repr::Grant(g) => {
            prop_assert_eq!(g.offset, be32(buf, 28));
            prop_assert_eq!(g.priority, buf[32]);
        }
        Repr::Resend(r) => {
            prop_assert_eq!(r.offset, be32(buf, 28));
            prop_assert_eq!(r.length, be32(buf, 32));
            prop_assert_eq!(r.priority, buf[36]);
        }
        Repr::Cutoffs(co) => {
            for i in 0..8 {
                prop_assert_eq!(co.unsched_cutoffs[i], be32(buf, 28 + 4 * i));
            }
            prop_assert_eq!(co.cutoff_version, be16(buf, 60));
        }
        Repr::Ack(a) => {
            let n = usize::from(be16(buf, 28)).min(5);
            prop_assert_eq!(a.acks.len(), n, "num_acks is clamped to 5");
            for (i, ack) in a.acks.as_slice().iter().enumerate() {
                prop_assert_eq!(ack.client_id, be64(buf, 30 + 10 * i));
                prop_assert_eq!(ack.server_port, be16(buf, 38 + 10 * i));
            }
        }
        Repr::RpcUnknown(_) | Repr::Busy(_) | Repr::Freeze(_) | Repr::NeedAck(_) => {}
    }
    Ok(())
}

/// A parsed packet must re-emit without error, and parsing the re-emitted bytes must give
/// the same value back (parse ∘ emit is the identity on parsed values).
fn check_reemit(repr: &Repr<'_>, input_len: usize) -> Result<(), TestCaseError> {
    let len = repr.buffer_len();
    prop_assert!(len <= input_len, "re-emitted packet longer than its input");
    let mut out = vec![0u8; len];
    let n = repr
        .emit(&mut out)
        .map_err(|e| fail(format!("re-emit of a parsed packet failed: {e}")))?;
    prop_assert_eq!(n, len);
    let again = Repr::parse(&out).map_err(|e| fail(format!("re-parse failed: {e}")))?;
    prop_assert_eq!(again, *repr);
    Ok(())
}

/// Touches every accessor of every view (none may panic after `new_checked`) and checks
/// each view accepts or refuses `buf` exactly as the receive rules say.
fn check_views(
    buf: &[u8],
    expected: &Result<(PacketType, Option<u32>), WireError>,
) -> Result<(), TestCaseError> {
    // The common checks only: a DATA whose range is bad still has a valid common header.
    let basic: Result<PacketType, WireError> = match *expected {
        Ok((t, _)) => Ok(t),
        Err(WireError::InvalidMessageLength { .. } | WireError::DataOutOfRange { .. }) => {
            Ok(PacketType::Data)
        }
        Err(e) => Err(e),
    };
    let got = Packet::new_checked(buf).map(|p| {
        let _ = (p.sport(), p.dport(), p.sequence(), p.doff(), p.flags());
        let _ = (p.window(), p.checksum(), p.urgent(), p.sender_id());
        assert_eq!(p.as_bytes().len(), buf.len());
        assert_eq!(p.common_repr(), common_from_bytes(buf));
        p.packet_type()
    });
    prop_assert_eq!(got, basic, "Packet::new_checked");

    let want = |view: PacketType| -> Result<(), WireError> {
        match basic {
            Err(e) => Err(e),
            Ok(t) if t != view => Err(WireError::WrongType {
                expected: view,
                actual: t,
            }),
            Ok(_) => expected.map(|_| ()),
        }
    };
    let data = DataPacket::new_checked(buf).map(|p| {
        let _ = (p.common(), p.sequence(), p.message_length(), p.incoming());
        let _ = (p.ack(), p.cutoff_version(), p.retransmit(), p.seg_offset());
        let _ = (p.offset_form(), p.offset());
        assert_eq!(p.payload().len(), buf.len() - 56);
    });
    prop_assert_eq!(data, want(PacketType::Data), "DataPacket::new_checked");
    let grant = GrantPacket::new_checked(buf).map(|p| {
        let _ = (p.common(), p.offset(), p.priority());
    });
    prop_assert_eq!(grant, want(PacketType::Grant), "GrantPacket::new_checked");
    let resend = ResendPacket::new_checked(buf).map(|p| {
        let _ = (p.common(), p.offset(), p.length(), p.priority());
    });
    prop_assert_eq!(
        resend,
        want(PacketType::Resend),
        "ResendPacket::new_checked"
    );
    let cutoffs = CutoffsPacket::new_checked(buf).map(|p| {
        let _ = (p.common(), p.cutoffs(), p.cutoff(8), p.cutoff(usize::MAX));
        let _ = p.cutoff_version();
    });
    prop_assert_eq!(
        cutoffs,
        want(PacketType::Cutoffs),
        "CutoffsPacket::new_checked"
    );
    let ack = AckPacket::new_checked(buf).map(|p| {
        let _ = (p.common(), p.num_acks_raw(), p.acks(), p.ack(usize::MAX));
        assert!(p.num_acks() <= 5);
    });
    prop_assert_eq!(ack, want(PacketType::Ack), "AckPacket::new_checked");
    Ok(())
}

/// Reads the common fields straight from the bytes.
fn common_from_bytes(buf: &[u8]) -> CommonRepr {
    CommonRepr {
        sport: be16(buf, 0),
        dport: be16(buf, 2),
        sender_id: be64(buf, 20),
    }
}

/// Feeds `buf` to `Repr::parse` and every view and checks them against the oracle.
fn check_any(buf: &[u8]) -> Result<Outcome, TestCaseError> {
    let expected = oracle(buf);
    let parsed = Repr::parse(buf);
    match (&parsed, &expected) {
        (Ok(repr), Ok((ty, offset))) => {
            prop_assert_eq!(repr.packet_type(), *ty);
            check_parsed_fields(repr, buf, *offset)?;
            check_reemit(repr, buf.len())?;
        }
        (Err(got), Err(want)) => {
            prop_assert_eq!(got, want);
            prop_assert!(!got.to_string().is_empty());
            if let WireError::Truncated {
                actual, required, ..
            } = *got
            {
                prop_assert_eq!(actual, buf.len(), "Truncated must report the input length");
                prop_assert!(required > actual);
            }
        }
        _ => {
            return Err(fail(format!(
                "Repr::parse gave {parsed:?}, the receive rules say {expected:?}"
            )))
        }
    }
    check_views(buf, &expected)?;
    Ok(match expected {
        Ok((t, _)) => Outcome::Parsed(t),
        Err(WireError::Truncated { packet_type, .. }) => Outcome::Truncated(packet_type),
        Err(WireError::UnknownType { .. }) => Outcome::UnknownType,
        Err(WireError::InvalidMessageLength { .. }) => Outcome::InvalidMessageLength,
        Err(WireError::DataOutOfRange { .. }) => Outcome::DataOutOfRange,
        Err(other) => return Err(fail(format!("oracle produced {other:?}"))),
    })
}

/// One change to a valid packet.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the packet to a length in 0..=len.
    Truncate(Index),
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Overwrite one byte.
    Overwrite(Index, u8),
    /// Overwrite the type byte (offset 11).
    SetType(u8),
    /// Overwrite a 32-bit field: `sequence` (4), `message_length` (28), `incoming` (32)
    /// or `seg.offset` (52).
    SetWord(usize, u32),
    /// Add a small delta to one of those fields (to land just either side of a limit).
    Nudge(usize, i32),
    /// Append bytes.
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let word_at = || proptest::sample::select(vec![4usize, 28, 32, 52]);
    let word = prop_oneof![
        Just(0u32),
        Just(1),
        Just(MAX_MESSAGE - 1),
        Just(MAX_MESSAGE),
        Just(MAX_MESSAGE + 1),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        0..4000u32,
        any::<u32>(),
    ];
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        2 => prop_oneof![0x0Fu8..=0x19, any::<u8>()].prop_map(Mutation::SetType),
        3 => (word_at(), word).prop_map(|(at, v)| Mutation::SetWord(at, v)),
        2 => (word_at(), -3i32..=3).prop_map(|(at, d)| Mutation::Nudge(at, d)),
        1 => vec(any::<u8>(), 1..40).prop_map(Mutation::Append),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Truncate(i) => buf.truncate(i.index(buf.len() + 1)),
        Mutation::Flip(i, mask) if !buf.is_empty() => {
            let at = i.index(buf.len());
            buf[at] ^= mask;
        }
        Mutation::Overwrite(i, b) if !buf.is_empty() => {
            let at = i.index(buf.len());
            buf[at] = *b;
        }
        Mutation::SetType(code) if buf.len() > 11 => buf[11] = *code,
        Mutation::SetWord(at, v) if buf.len() >= at + 4 => {
            buf[*at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        Mutation::Nudge(at, d) if buf.len() >= at + 4 => {
            let v = be32(buf, *at).wrapping_add_signed(*d);
            buf[*at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        Mutation::Append(extra) => buf.extend_from_slice(extra),
        _ => {}
    }
}

fn mutated_packet() -> impl Strategy<Value = Vec<u8>> {
    (any_case(), vec(mutation(), 1..=4)).prop_map(|(case, mutations)| {
        let mut buf = emit_vec(&case.repr());
        for m in &mutations {
            apply(&mut buf, m);
        }
        buf
    })
}

/// Arbitrary bytes whose type byte is one of the nine known codes.
fn bytes_with_known_type() -> impl Strategy<Value = Vec<u8>> {
    (vec(any::<u8>(), 12..120), 0x10u8..=0x18).prop_map(|(mut b, code)| {
        b[11] = code;
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 50000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_short_bytes_follow_the_receive_rules(buf in vec(any::<u8>(), 0..200)) {
        check_any(&buf)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_long_bytes_follow_the_receive_rules(buf in vec(any::<u8>(), 0..2000)) {
        check_any(&buf)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_with_a_known_type_follow_the_receive_rules(buf in bytes_with_known_type()) {
        check_any(&buf)?;
    }

    #[test]
    fn mutated_valid_packets_follow_the_receive_rules(buf in mutated_packet()) {
        check_any(&buf)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]
    /// Direct placement parses a DATA header apart from its payload: it must accept and
    /// reject exactly what the whole-packet parser does, with the same fields (and, for
    /// DATA-typed bytes, the same errors).
    #[test]
    fn data_header_parsed_apart_agrees_with_the_whole_packet(buf in mutated_packet()) {
        let whole = DataRepr::parse(&buf);
        let apart = DataRepr::parse_header(&buf[..buf.len().min(56)], buf.len());
        match (whole, apart) {
            (Ok(w), Ok((a, payload_len))) => {
                prop_assert_eq!(payload_len, w.payload.len());
                prop_assert_eq!(DataRepr { payload: &[], ..w }, a);
            }
            // Same error for DATA packets; another type may look truncated in 56 bytes.
            (Err(w), Err(a)) if buf.get(11) == Some(&0x10) => prop_assert_eq!(w, a),
            (Err(_), Err(_)) => {}
            (w, a) => return Err(fail(format!("whole {w:?} but apart {a:?}"))),
        }
    }
}

/// Runs the mutation generator with proptest's fixed seed and checks that it reaches every
/// outcome: every type parsed, truncation with and without a type, unknown types, and
/// both DATA range errors. This keeps the mutation property from passing vacuously.
#[test]
fn mutation_outcomes_cover_every_error_variant() {
    let config = ProptestConfig {
        cases: 5000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let algorithm = config.rng_algorithm;
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(algorithm));
    let seen = RefCell::new(BTreeMap::<Outcome, usize>::new());
    runner
        .run(&mutated_packet(), |buf| {
            let outcome = check_any(&buf)?;
            *seen.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    let mut required = vec![
        Outcome::Truncated(None),
        Outcome::UnknownType,
        Outcome::InvalidMessageLength,
        Outcome::DataOutOfRange,
    ];
    for t in PacketType::ALL {
        required.push(Outcome::Parsed(t));
        required.push(Outcome::Truncated(Some(t)));
    }
    for r in required {
        assert!(
            seen.get(&r).copied().unwrap_or(0) > 0,
            "outcome {r:?} never reached; seen {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Trailing bytes.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]
    #[test]
    fn control_packets_ignore_trailing_bytes(
        repr in control_case(), extra in vec(any::<u8>(), 1..100),
    ) {
        let mut buf = emit_vec(&repr);
        buf.extend_from_slice(&extra);
        prop_assert_eq!(Repr::parse(&buf), Ok(repr));
        check_any(&buf)?;
    }
}

// ---------------------------------------------------------------------------------------
// Receive validation, case by case (PROTOCOL.md 1.12).
// ---------------------------------------------------------------------------------------

fn sample(ty: PacketType) -> Vec<u8> {
    let c = CommonRepr {
        sport: 4000,
        dport: 32768,
        sender_id: 1235,
    };
    let repr = match ty {
        PacketType::Data => Repr::Data(DataRepr {
            common: c,
            message_length: 100,
            incoming: 100,
            ack: None,
            cutoff_version: 1,
            retransmit: false,
            offset: 0,
            offset_form: OffsetForm::SequenceOnly,
            payload: &[7; 10],
        }),
        PacketType::Grant => Repr::Grant(GrantRepr {
            common: c,
            offset: 80_000,
            priority: 2,
        }),
        PacketType::Resend => Repr::Resend(ResendRepr {
            common: c,
            offset: 0,
            length: RESEND_ALL,
            priority: 7,
        }),
        PacketType::Cutoffs => Repr::Cutoffs(CutoffsRepr {
            common: c,
            unsched_cutoffs: [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200],
            cutoff_version: 1,
        }),
        PacketType::Ack => Repr::Ack(AckRepr {
            common: c,
            acks: AckList::new(),
        }),
        t => header_only(t, c),
    };
    emit_vec(&repr)
}

#[test]
fn one_byte_short_of_each_header_is_truncated_in_its_last_field() {
    let cases = [
        (PacketType::Data, 56, "seg.offset"),
        (PacketType::Grant, 33, "priority"),
        (PacketType::Resend, 37, "priority"),
        (PacketType::RpcUnknown, 28, "sender_id"),
        (PacketType::Busy, 28, "sender_id"),
        (PacketType::Cutoffs, 62, "cutoff_version"),
        (PacketType::Freeze, 28, "sender_id"),
        (PacketType::NeedAck, 28, "sender_id"),
        (PacketType::Ack, 80, "acks[4]"),
    ];
    for (ty, header, field) in cases {
        let pkt = sample(ty);
        // The full header parses (DATA has 10 payload bytes after it).
        assert!(Repr::parse(&pkt).is_ok(), "{ty}");
        assert!(Repr::parse(&pkt[..header]).is_ok() || ty == PacketType::Data);
        let want: Result<Repr<'_>, WireError> = Err(WireError::Truncated {
            packet_type: Some(ty),
            field,
            required: header,
            actual: header - 1,
        });
        let short = &pkt[..header - 1];
        assert_eq!(Repr::parse(short), want, "{ty}");
        assert_eq!(
            Packet::new_checked(short).map(|_| ()),
            want.map(|_| ()),
            "{ty}"
        );
    }
}

#[test]
fn every_cut_inside_a_header_names_the_straddling_field() {
    // Spot checks of the oracle's field table against PROTOCOL.md.
    assert_eq!(straddling_field(Some(0x10), 30), "message_length");
    assert_eq!(straddling_field(Some(0x10), 44), "ack.server_port");
    assert_eq!(straddling_field(Some(0x12), 32), "length");
    assert_eq!(straddling_field(Some(0x18), 45), "acks[1]");
    assert_eq!(straddling_field(Some(0x15), 28), "unsched_cutoffs");
    assert_eq!(straddling_field(Some(0x11), 20), "sender_id");
    let mut checked = 0;
    for ty in PacketType::ALL {
        let pkt = sample(ty);
        for len in 0..ty.header_len() {
            let got = Repr::parse(&pkt[..len]);
            let Err(WireError::Truncated {
                packet_type,
                field,
                required,
                actual,
            }) = got
            else {
                panic!("{ty} cut at {len}: {got:?}");
            };
            assert_eq!(actual, len);
            if len < 12 {
                assert_eq!((packet_type, required), (None, 28), "{ty} cut at {len}");
                assert_eq!(field, straddling_field(None, len));
            } else {
                assert_eq!(packet_type, Some(ty));
                assert_eq!(required, header_len_of(ty.code()).unwrap());
                assert_eq!(
                    field,
                    straddling_field(Some(ty.code()), len),
                    "{ty} cut at {len}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 56 + 33 + 37 + 28 * 4 + 62 + 80);
}

#[test]
fn fewer_than_twelve_bytes_have_no_packet_type() {
    let names = [
        "sport", "sport", "dport", "dport", "sequence", "sequence", "sequence", "sequence", "ack",
        "ack", "ack", "type",
    ];
    let bytes = [0x10u8; 12];
    for (len, name) in names.iter().enumerate() {
        let want: Result<(), WireError> = Err(WireError::Truncated {
            packet_type: None,
            field: name,
            required: 28,
            actual: len,
        });
        assert_eq!(Repr::parse(&bytes[..len]).map(|_| ()), want);
        assert_eq!(Packet::new_checked(&bytes[..len]).map(|_| ()), want);
        assert_eq!(DataPacket::new_checked(&bytes[..len]).map(|_| ()), want);
    }
}

#[test]
fn type_codes_0x0f_and_0x19_are_unknown() {
    for code in [0x0Fu8, 0x19] {
        for len in [12usize, 28, 56, 80, 200] {
            let mut buf = vec![0u8; len];
            buf[11] = code;
            let want = WireError::UnknownType { code, length: len };
            assert_eq!(Repr::parse(&buf), Err(want));
            assert_eq!(Packet::new_checked(&buf[..]).map(|_| ()), Err(want));
            assert_eq!(AckPacket::new_checked(&buf[..]).map(|_| ()), Err(want));
        }
    }
    // And every other code outside 0x10..=0x18.
    for code in (0u8..=255).filter(|c| !(0x10..=0x18).contains(c)) {
        let mut buf = [0u8; 80];
        buf[11] = code;
        assert_eq!(
            Repr::parse(&buf),
            Err(WireError::UnknownType { code, length: 80 })
        );
    }
}

/// A DATA packet written by hand (independent of the emitter).
fn data_bytes(sequence: u32, seg_offset: u32, message_length: u32, payload_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; 56 + payload_len];
    b[0..2].copy_from_slice(&32768u16.to_be_bytes());
    b[2..4].copy_from_slice(&4000u16.to_be_bytes());
    b[4..8].copy_from_slice(&sequence.to_be_bytes());
    b[11] = 0x10;
    b[12] = 0xE0;
    b[13] = 0x06;
    b[18..20].copy_from_slice(&[0xB9, 0x7D]);
    b[20..28].copy_from_slice(&1234u64.to_be_bytes());
    b[28..32].copy_from_slice(&message_length.to_be_bytes());
    b[32..36].copy_from_slice(&message_length.to_be_bytes());
    b[52..56].copy_from_slice(&seg_offset.to_be_bytes());
    for (i, x) in b[56..].iter_mut().enumerate() {
        *x = i as u8;
    }
    b
}

fn parse_data(b: &[u8]) -> Result<DataRepr<'_>, WireError> {
    let via_view = DataPacket::new_checked(b).map(|p| p.offset());
    match Repr::parse(b) {
        Ok(Repr::Data(d)) => {
            assert_eq!(via_view, Ok(d.offset));
            assert_eq!(DataRepr::parse(b), Ok(d));
            Ok(d)
        }
        Ok(other) => panic!("not DATA: {other:?}"),
        Err(e) => {
            assert_eq!(via_view, Err(e));
            assert_eq!(DataRepr::parse(b), Err(e));
            Err(e)
        }
    }
}

#[test]
fn data_seg_offset_all_ones_takes_the_offset_from_sequence() {
    let b = data_bytes(1424, 0xFFFF_FFFF, 100_000, 1424);
    let d = parse_data(&b).unwrap();
    assert_eq!(d.offset, 1424);
    assert_eq!(d.offset_form, OffsetForm::SequenceOnly);
    assert_eq!(d.payload, &b[56..]);
    // The offset from `sequence` is range-checked like any other.
    let b = data_bytes(100_000, 0xFFFF_FFFF, 100_000, 1);
    assert_eq!(
        parse_data(&b),
        Err(WireError::DataOutOfRange {
            offset: 100_000,
            payload_len: 1,
            message_length: 100_000
        })
    );
}

#[test]
fn data_seg_offset_other_than_all_ones_wins_over_sequence() {
    // A GSO segment: `sequence` is stale, `seg.offset` is right (PROTOCOL.md 1.6 rule 2).
    let b = data_bytes(4, 2848, 100_000, 1424);
    let d = parse_data(&b).unwrap();
    assert_eq!(d.offset, 2848);
    assert_eq!(d.offset_form, OffsetForm::Both);
    // 0xFFFFFFFE is an ordinary (out-of-range) offset, not the "use sequence" marker.
    let b = data_bytes(0, 0xFFFF_FFFE, 1_000_000, 10);
    assert_eq!(
        parse_data(&b),
        Err(WireError::DataOutOfRange {
            offset: 0xFFFF_FFFE,
            payload_len: 10,
            message_length: 1_000_000
        })
    );
}

#[test]
fn data_offset_at_or_past_the_message_end_is_out_of_range() {
    for (offset, payload) in [(100u32, 0usize), (100, 1), (101, 0), (u32::MAX - 1, 0)] {
        let b = data_bytes(offset, offset, 100, payload);
        assert_eq!(
            parse_data(&b),
            Err(WireError::DataOutOfRange {
                offset,
                payload_len: payload,
                message_length: 100
            }),
            "offset {offset}"
        );
    }
    // The last byte of the message, and an empty payload inside it, are fine.
    assert_eq!(parse_data(&data_bytes(99, 99, 100, 1)).unwrap().offset, 99);
    assert_eq!(
        parse_data(&data_bytes(99, 99, 100, 0))
            .unwrap()
            .payload
            .len(),
        0
    );
}

#[test]
fn data_payload_past_the_message_end_is_out_of_range() {
    let b = data_bytes(60, 60, 100, 41);
    assert_eq!(
        parse_data(&b),
        Err(WireError::DataOutOfRange {
            offset: 60,
            payload_len: 41,
            message_length: 100
        })
    );
    // Exactly up to the end is fine.
    let b = data_bytes(60, 60, 100, 40);
    let d = parse_data(&b).unwrap();
    assert_eq!((d.offset, d.payload.len()), (60, 40));
    // A whole one-byte message.
    assert_eq!(parse_data(&data_bytes(0, 0, 1, 1)).unwrap().payload, &[0]);
    assert!(parse_data(&data_bytes(0, 0, 1, 2)).is_err());
}

#[test]
fn data_message_length_zero_or_above_one_million_is_invalid() {
    for ml in [0u32, MAX_MESSAGE + 1, u32::MAX] {
        // Checked before the range, so even an offset that would be fine is refused.
        let b = data_bytes(0, 0, ml, 0);
        assert_eq!(
            parse_data(&b),
            Err(WireError::InvalidMessageLength { message_length: ml }),
            "message_length {ml}"
        );
    }
    assert!(parse_data(&data_bytes(0, 0, 1, 0)).is_ok());
    assert!(parse_data(&data_bytes(999_000, 999_000, MAX_MESSAGE, 1000)).is_ok());
}

#[test]
fn grant_of_34_bytes_parses_like_33() {
    // The pre-2025-07 GRANT had a 34th `resend_all` byte (PROTOCOL.md 1.7).
    let mut pkt = sample(PacketType::Grant);
    let g33 = GrantRepr::parse(&pkt).unwrap();
    pkt.push(1);
    assert_eq!(pkt.len(), 34);
    assert_eq!(Repr::parse(&pkt), Ok(Repr::Grant(g33)));
    let view = GrantPacket::new_checked(&pkt[..]).unwrap();
    assert_eq!((view.offset(), view.priority()), (80_000, 2));
}

#[test]
fn stripped_build_36_byte_resend_is_truncated_in_priority() {
    let pkt = sample(PacketType::Resend);
    assert_eq!(
        Repr::parse(&pkt[..36]),
        Err(WireError::Truncated {
            packet_type: Some(PacketType::Resend),
            field: "priority",
            required: 37,
            actual: 36
        })
    );
}

#[test]
fn priority_levels_map_to_tos_and_back() {
    for level in 0u8..8 {
        let tos = level_to_tos(level);
        assert_eq!(tos, level * 32);
        assert_eq!(tos & 0x1F, 0);
        assert_eq!(tos_to_level(tos), level);
        assert_eq!(
            tos_to_level(tos | 0x1F),
            level,
            "DSCP low bits and ECN ignored"
        );
    }
}

//! Golden input: captures of real Linux kernel Homa traffic (see `tests/data/README.md`).
//!
//! 10.99.0.2 is the kernel (full build of HomaModule, except in `kernel_cap_strip.pcap`),
//! 10.99.0.1 a test peer. Every packet the full-build kernel sent must parse, and
//! re-emitting the parsed value must give back the kernel's bytes: everything outside the
//! imitation-only bytes of PROTOCOL.md 9.3 always, and — because every kernel packet in
//! these captures carries a valid TCP-style checksum — the whole packet, checksum included,
//! once `fill_checksum` has been run with the packet's IP addresses.
//!
//! The pcap reader is written here (classic pcap, little-endian, Ethernet, IPv4) so the
//! test needs no extra dependency.

use std::collections::BTreeMap;
use std::net::IpAddr;

use homa_proto::wire::{
    fill_checksum, level_to_tos, tos_to_level, DataPacket, OffsetForm, PacketType, Repr, WireError,
    IPPROTO_HOMA,
};

mod support;

use support::pcap::{load, read_pcap, Frame, KERNEL, PEER};

const HOST_CLIENT: &str = "kernel_cap_host_client.pcap";
const GUEST_CLIENT: &str = "kernel_cap_guest_client.pcap";
const RESEND: &str = "kernel_cap_resend.pcap";
const STRIP: &str = "kernel_cap_strip.pcap";

/// The three captures of the full build, our wire target.
const FULL_BUILD: [&str; 3] = [HOST_CLIENT, GUEST_CLIENT, RESEND];

/// Bytes the kernel ignores on receive and that only imitate TCP (PROTOCOL.md 9.3):
/// 8–10 (`ack`), 12 (`doff`), 13 (`flags`), 14–15 (`window`), 16–17 (`checksum`),
/// 18–19 (`urgent`).
const IMITATION_ONLY: [usize; 11] = [8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19];

fn file_name(name: &str) -> &str {
    name
}

fn parse<'a>(path: &str, f: &'a Frame) -> Repr<'a> {
    Repr::parse(&f.homa)
        .unwrap_or_else(|e| panic!("{} #{} from {}: {e}", file_name(path), f.number, f.src))
}

fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut out = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut out), Ok(out.len()));
    out
}

/// Asserts `emitted` equals `captured` except for the imitation-only bytes.
fn assert_same_but_imitation(what: &str, emitted: &[u8], captured: &[u8]) {
    assert_eq!(emitted.len(), captured.len(), "{what}: length");
    for (i, (e, c)) in emitted.iter().zip(captured).enumerate() {
        if !IMITATION_ONLY.contains(&i) {
            assert_eq!(
                e, c,
                "{what}: byte {i} differs (emitted {e:#04x}, kernel {c:#04x})"
            );
        }
    }
}

fn count_types<'a>(reprs: impl IntoIterator<Item = Repr<'a>>) -> BTreeMap<PacketType, usize> {
    let mut counts = BTreeMap::new();
    for r in reprs {
        *counts.entry(r.packet_type()).or_default() += 1;
    }
    counts
}

#[test]
fn pcap_reader_cuts_ethernet_padding_by_ip_total_length() {
    // A DATA packet with a 1-byte payload, followed by 4 bytes of padding/FCS that are
    // not part of the IP packet. Without the cut the payload would be 5 bytes and the
    // packet would be rejected (offset 0 + 5 > message_length 1).
    let mut homa = vec![0u8; 57];
    homa[11] = 0x10;
    homa[28..32].copy_from_slice(&1u32.to_be_bytes());
    homa[56] = b'x';
    let total = 20 + homa.len();
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&[0x45, 0xE0]);
    frame.extend_from_slice(&(total as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_HOMA, 0, 0]);
    frame.extend_from_slice(&KERNEL.octets());
    frame.extend_from_slice(&PEER.octets());
    frame.extend_from_slice(&homa);
    frame.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
    let mut file = Vec::new();
    for v in [0xA1B2_C3D4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        file.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u32, 0, frame.len() as u32, frame.len() as u32] {
        file.extend_from_slice(&v.to_le_bytes());
    }
    file.extend_from_slice(&frame);

    let frames = read_pcap(&file);
    assert_eq!(frames.len(), 1);
    let f = &frames[0];
    assert_eq!(
        (f.src, f.dst, f.tos, f.protocol),
        (KERNEL, PEER, 0xE0, IPPROTO_HOMA)
    );
    assert_eq!(f.homa, homa);
    match Repr::parse(&f.homa) {
        Ok(Repr::Data(d)) => assert_eq!(d.payload, b"x"),
        other => panic!("{other:?}"),
    }
    // The uncut frame really would have been rejected.
    assert!(matches!(
        Repr::parse(&frame[34..]),
        Err(WireError::DataOutOfRange { payload_len: 5, .. })
    ));
}

#[test]
fn full_build_kernel_packets_re_emit_byte_for_byte_including_checksum() {
    use PacketType::*;
    // Exact counts of what the kernel (10.99.0.2) sent in each capture.
    let expected: [(&str, &[(PacketType, usize)]); 3] = [
        (
            HOST_CLIENT,
            &[(Data, 73), (Grant, 5), (Cutoffs, 2), (NeedAck, 1)],
        ),
        (GUEST_CLIENT, &[(Data, 73), (Grant, 4), (Cutoffs, 3)]),
        (RESEND, &[(Data, 1), (Resend, 1), (Cutoffs, 1)]),
    ];
    let mut total = 0;
    let mut exact_with_checksum = 0;
    let mut all_types = BTreeMap::new();
    for (path, want) in expected {
        let frames = load(path);
        let kernel: Vec<&Frame> = frames.iter().filter(|f| f.src == KERNEL).collect();
        let mut reprs = Vec::new();
        for f in &kernel {
            let what = format!("{} #{}", file_name(path), f.number);
            let repr = parse(path, f);
            let mut out = emit(&repr);
            assert_same_but_imitation(&what, &out, &f.homa);
            fill_checksum(&mut out, IpAddr::V4(f.src), IpAddr::V4(f.dst)).unwrap();
            if out == f.homa {
                exact_with_checksum += 1;
            } else {
                eprintln!("{what}: differs after fill_checksum");
            }
            total += 1;
            reprs.push(repr);
        }
        let counts = count_types(reprs);
        let want: BTreeMap<PacketType, usize> = want.iter().copied().collect();
        assert_eq!(counts, want, "{}: kernel packet types", file_name(path));
        for (t, n) in counts {
            *all_types.entry(t).or_insert(0) += n;
        }
    }
    eprintln!(
        "full-build kernel packets: {total} {all_types:?}, \
         {exact_with_checksum} identical including checksum"
    );
    assert_eq!(total, 164);
    // Every kernel packet in these captures carries a valid TCP-style checksum (pseudo-header
    // protocol 6, PROTOCOL.md 1.3), so our output equals the kernel's to the last byte.
    assert_eq!(
        exact_with_checksum, total,
        "re-emitted packets identical to the kernel's"
    );
}

#[test]
fn full_build_kernel_tos_is_level_shifted_and_control_packets_use_level_7() {
    let mut data_levels = BTreeMap::new();
    let mut control = 0;
    for path in FULL_BUILD {
        for f in load(path).iter().filter(|f| f.src == KERNEL) {
            let what = format!("{} #{}", file_name(path), f.number);
            assert_eq!(
                f.tos & 0x1F,
                0,
                "{what}: TOS {:#04x} is not level << 5",
                f.tos
            );
            assert_eq!(level_to_tos(tos_to_level(f.tos)), f.tos, "{what}");
            if parse(path, f).packet_type() == PacketType::Data {
                *data_levels.entry(tos_to_level(f.tos)).or_insert(0) += 1;
            } else {
                assert_eq!(f.tos, 0xE0, "{what}: control packet not at level 7");
                control += 1;
            }
        }
    }
    assert_eq!(control, 17);
    // In these exchanges the kernel sent DATA at levels 0 and 6 only.
    assert_eq!(data_levels, BTreeMap::from([(0, 86), (6, 61)]));
}

#[test]
fn full_build_kernel_data_puts_the_offset_in_sequence_only() {
    let mut n = 0;
    for path in FULL_BUILD {
        for f in load(path).iter().filter(|f| f.src == KERNEL) {
            let Repr::Data(d) = parse(path, f) else {
                continue;
            };
            let view = DataPacket::new_checked(&f.homa[..]).unwrap();
            assert_eq!(view.seg_offset(), 0xFFFF_FFFF);
            assert_eq!(d.offset_form, OffsetForm::SequenceOnly);
            assert_eq!(d.offset, view.sequence());
            assert!(d.payload.len() <= 1424, "1424-byte segments at MTU 1500");
            assert_eq!(f.homa[12], 0xE0, "doff of single-segment DATA");
            n += 1;
        }
    }
    assert_eq!(n, 147);
}

#[test]
fn kernel_resend_asks_for_the_dropped_segment_at_priority_7() {
    let frames = load(RESEND);
    let resends: Vec<_> = frames
        .iter()
        .filter(|f| f.src == KERNEL)
        .filter_map(|f| match parse(RESEND, f) {
            Repr::Resend(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(resends.len(), 1);
    let r = resends[0];
    assert_eq!((r.offset, r.length, r.priority), (2800, 1400, 7));
    assert!(!r.is_all());
    assert_eq!(r.common.sport, 4000, "the kernel is the server");
}

#[test]
fn kernel_cutoffs_carry_the_default_table_version_1() {
    let mut n = 0;
    for path in FULL_BUILD {
        for f in load(path).iter().filter(|f| f.src == KERNEL) {
            if let Repr::Cutoffs(c) = parse(path, f) {
                assert_eq!(
                    c.unsched_cutoffs,
                    [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200]
                );
                assert_eq!(c.cutoff_version, 1);
                n += 1;
            }
        }
    }
    assert_eq!(n, 6);
}

#[test]
fn test_peer_packets_parse_in_every_capture() {
    use PacketType::*;
    let expected: [(&str, &[(PacketType, usize)]); 4] = [
        (HOST_CLIENT, &[(Data, 74), (Grant, 1), (Ack, 2)]),
        (GUEST_CLIENT, &[(Data, 73), (Grant, 1)]),
        (RESEND, &[(Data, 4), (Ack, 1)]),
        (STRIP, &[(Data, 77), (Grant, 3), (Ack, 3)]),
    ];
    for (path, want) in expected {
        let frames = load(path);
        let mut reprs = Vec::new();
        for f in frames.iter().filter(|f| f.src == PEER) {
            let repr = parse(path, f);
            // The peer writes flags/urgent 0 but every field that carries meaning the
            // way we do, so only imitation bytes may differ.
            let what = format!("{} #{}", file_name(path), f.number);
            assert_same_but_imitation(&what, &emit(&repr), &f.homa);
            reprs.push(repr);
        }
        let want: BTreeMap<PacketType, usize> = want.iter().copied().collect();
        assert_eq!(
            count_types(reprs),
            want,
            "{}: peer packet types",
            file_name(path)
        );
    }
}

#[test]
fn stripped_build_data_parses_and_its_36_byte_resend_is_rejected() {
    let frames = load(STRIP);
    let mut data = 0;
    let mut resend = 0;
    for f in frames.iter().filter(|f| f.src == KERNEL) {
        match f.homa[11] {
            0x10 => {
                let Repr::Data(d) = parse(STRIP, f) else {
                    unreachable!()
                };
                // The stripped build always writes the real offset into seg.offset,
                // leaves `incoming` reserved (0) and the TCP markers 0.
                assert_eq!(d.offset_form, OffsetForm::Both);
                assert_eq!(d.incoming, 0);
                assert_eq!((f.homa[13], &f.homa[18..20]), (0, &[0u8, 0][..]));
                data += 1;
            }
            0x12 => {
                assert_eq!(f.homa.len(), 36);
                // Exactly why the full-build kernel drops it.
                assert_eq!(
                    Repr::parse(&f.homa),
                    Err(WireError::Truncated {
                        packet_type: Some(PacketType::Resend),
                        field: "priority",
                        required: 37,
                        actual: 36,
                    })
                );
                resend += 1;
            }
            other => panic!("stripped kernel sent type {other:#04x}"),
        }
    }
    assert_eq!((data, resend), (73, 1));
}

//! The test vectors of PROTOCOL.md section 9.2, byte for byte.
//!
//! Each vector is emitted from its representation (then checksummed with the scenario's
//! IPv4 addresses) and must equal the published bytes exactly; parsing the published bytes
//! must give back every field.

use std::net::{IpAddr, Ipv4Addr};

use homa_proto::wire::{
    fill_checksum, Ack, AckList, AckRepr, CommonRepr, CutoffsRepr, DataPacket, DataRepr, GrantRepr,
    OffsetForm, Packet, Repr, ResendRepr, RESEND_ALL,
};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const C2S: CommonRepr = CommonRepr {
    sport: 32768,
    dport: 4000,
    sender_id: 1234,
};
const S2C: CommonRepr = CommonRepr {
    sport: 4000,
    dport: 32768,
    sender_id: 1235,
};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Emits `repr`, fills the checksum for `src` → `dst`, and compares with the vector's
/// header bytes (`expected`, the payload following it is `payload`).
fn check_emit(repr: &Repr<'_>, src: IpAddr, dst: IpAddr, expected_header: &[u8]) -> Vec<u8> {
    let mut buf = vec![0xAAu8; repr.buffer_len()];
    let len = repr.emit(&mut buf).unwrap();
    assert_eq!(len, buf.len());
    fill_checksum(&mut buf, src, dst).unwrap();
    assert_eq!(
        &buf[..expected_header.len()],
        expected_header,
        "emitted {} differs",
        repr.packet_type()
    );
    buf
}

const V1A: &str = "80 00 0f a0 00 00 00 00 00 00 00 10 e0 06 00 00
65 65 b9 7d 00 00 00 00 00 00 04 d2 00 00 00 05
00 00 00 05 00 00 00 00 00 00 04 d0 0f a0 00 01
00 00 00 00 ff ff ff ff";
const V1B: &str = "80 00 0f a0 00 00 00 00 00 00 00 10 e0 06 00 00
65 65 b9 7d 00 00 00 00 00 00 04 d2 00 00 00 05
00 00 00 05 00 00 00 00 00 00 04 d0 0f a0 00 01
00 00 00 00 00 00 00 00";

fn v1(form: OffsetForm) -> DataRepr<'static> {
    DataRepr {
        common: C2S,
        message_length: 5,
        incoming: 5,
        ack: Some(Ack {
            client_id: 1232,
            server_port: 4000,
        }),
        cutoff_version: 1,
        retransmit: false,
        offset: 0,
        offset_form: form,
        payload: b"hello",
    }
}

#[test]
fn v1a_data_hello_kernel_form() {
    let repr = v1(OffsetForm::SequenceOnly);
    let header = hex(V1A);
    let pkt = check_emit(&Repr::Data(repr), CLIENT, SERVER, &header);
    assert_eq!(pkt.len(), 61);
    assert_eq!(&pkt[56..], b"hello");
    assert_eq!(Repr::parse(&pkt).unwrap(), Repr::Data(repr));
    let view = DataPacket::new_checked(&pkt[..]).unwrap();
    assert_eq!(
        (view.sequence(), view.seg_offset(), view.offset()),
        (0, 0xFFFF_FFFF, 0)
    );
}

#[test]
fn v1b_data_hello_portable_form() {
    let repr = v1(OffsetForm::Both);
    let pkt = check_emit(&Repr::Data(repr), CLIENT, SERVER, &hex(V1B));
    assert_eq!(Repr::parse(&pkt).unwrap(), Repr::Data(repr));
}

fn v2(form: OffsetForm, retransmit: bool, incoming: u32) -> DataRepr<'static> {
    static ZEROS: [u8; 1424] = [0; 1424];
    DataRepr {
        common: C2S,
        message_length: 100_000,
        incoming,
        ack: None,
        cutoff_version: 1,
        retransmit,
        offset: 2848,
        offset_form: form,
        payload: &ZEROS,
    }
}

#[test]
fn v2a_data_full_segment_kernel_form() {
    let v = "80 00 0f a0 00 00 0b 20 00 00 00 10 e0 06 00 00
8a 24 b9 7d 00 00 00 00 00 00 04 d2 00 01 86 a0
00 00 9c 40 00 00 00 00 00 00 00 00 00 00 00 01
00 00 00 00 ff ff ff ff";
    let repr = v2(OffsetForm::SequenceOnly, false, 40_000);
    let pkt = check_emit(&Repr::Data(repr), CLIENT, SERVER, &hex(v));
    assert_eq!(pkt.len(), 1480);
    assert_eq!(Repr::parse(&pkt).unwrap(), Repr::Data(repr));
}

#[test]
fn v2b_data_full_segment_portable_form() {
    let v = "80 00 0f a0 00 00 0b 20 00 00 00 10 e0 06 00 00
7f 04 b9 7d 00 00 00 00 00 00 04 d2 00 01 86 a0
00 00 9c 40 00 00 00 00 00 00 00 00 00 00 00 01
00 00 00 00 00 00 0b 20";
    let repr = v2(OffsetForm::Both, false, 40_000);
    let pkt = check_emit(&Repr::Data(repr), CLIENT, SERVER, &hex(v));
    assert_eq!(Repr::parse(&pkt).unwrap(), Repr::Data(repr));
}

#[test]
fn v2c_data_retransmission() {
    let v = "80 00 0f a0 00 00 0b 20 00 00 00 10 e0 06 00 00
09 95 b9 7d 00 00 00 00 00 00 04 d2 00 01 86 a0
00 00 10 b0 00 00 00 00 00 00 00 00 00 00 00 01
01 00 00 00 00 00 0b 20";
    let repr = v2(OffsetForm::Both, true, 4272);
    let pkt = check_emit(&Repr::Data(repr), CLIENT, SERVER, &hex(v));
    assert_eq!(Repr::parse(&pkt).unwrap(), Repr::Data(repr));
}

/// Checks a control vector both ways: emit equals the bytes, parse gives the repr.
fn control(repr: Repr<'_>, src: IpAddr, dst: IpAddr, v: &str) {
    let bytes = hex(v);
    let pkt = check_emit(&repr, src, dst, &bytes);
    assert_eq!(pkt, bytes, "length of emitted {}", repr.packet_type());
    assert_eq!(Repr::parse(&bytes).unwrap(), repr);
}

#[test]
fn v3_grant() {
    let repr = Repr::Grant(GrantRepr {
        common: S2C,
        offset: 80_000,
        priority: 2,
    });
    control(
        repr,
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 11 50 06 00 00
         13 4c b9 7d 00 00 00 00 00 00 04 d3 00 01 38 80
         02",
    );
}

#[test]
fn v4a_resend_gap() {
    let repr = Repr::Resend(ResendRepr {
        common: S2C,
        offset: 1424,
        length: 1424,
        priority: 7,
    });
    control(
        repr,
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 12 50 06 00 00
         3b a8 b9 7d 00 00 00 00 00 00 04 d3 00 00 05 90
         00 00 05 90 07",
    );
}

#[test]
fn v4b_resend_probe_everything() {
    let r = ResendRepr {
        common: C2S,
        offset: 0,
        length: RESEND_ALL,
        priority: 7,
    };
    assert!(r.is_all());
    control(
        Repr::Resend(r),
        CLIENT,
        SERVER,
        "80 00 0f a0 00 00 00 00 00 00 00 12 50 06 00 00
         46 c9 b9 7d 00 00 00 00 00 00 04 d2 00 00 00 00
         ff ff ff ff 07",
    );
}

#[test]
fn v5_ack() {
    let mut acks = AckList::new();
    acks.push(Ack {
        client_id: 1230,
        server_port: 4000,
    })
    .unwrap();
    acks.push(Ack {
        client_id: 1228,
        server_port: 4000,
    })
    .unwrap();
    control(
        Repr::Ack(AckRepr { common: C2S, acks }),
        CLIENT,
        SERVER,
        "80 00 0f a0 00 00 00 00 00 00 00 18 50 06 00 00
         24 bc b9 7d 00 00 00 00 00 00 04 d2 00 02 00 00
         00 00 00 00 04 ce 0f a0 00 00 00 00 00 00 04 cc
         0f a0 00 00 00 00 00 00 00 00 00 00 00 00 00 00
         00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn v6_need_ack() {
    control(
        Repr::NeedAck(S2C),
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 17 50 06 00 00
         4d cc b9 7d 00 00 00 00 00 00 04 d3",
    );
}

#[test]
fn v7_cutoffs() {
    let repr = Repr::Cutoffs(CutoffsRepr {
        common: S2C,
        unsched_cutoffs: [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200],
        cutoff_version: 1,
    });
    control(
        repr,
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 15 50 06 00 00
         c5 0b b9 7d 00 00 00 00 00 00 04 d3 00 00 00 00
         00 00 00 00 00 00 00 00 00 00 00 00 00 0f 42 40
         00 00 3a 98 00 00 0a f0 00 00 00 c8 00 01",
    );
    // The table a default configuration announces is exactly this one.
    let config = homa_proto::Config::default();
    assert_eq!(
        config.unsched_cutoffs(),
        [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200]
    );
    assert_eq!(config.cutoff_version(), 1);
}

#[test]
fn v8_rpc_unknown() {
    control(
        Repr::RpcUnknown(S2C),
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 13 50 06 00 00
         4d d0 b9 7d 00 00 00 00 00 00 04 d3",
    );
}

#[test]
fn v9_busy() {
    control(
        Repr::Busy(S2C),
        SERVER,
        CLIENT,
        "0f a0 80 00 00 00 00 00 00 00 00 14 50 06 00 00
         4d cf b9 7d 00 00 00 00 00 00 04 d3",
    );
}

#[test]
fn views_read_the_imitation_fields_as_emitted() {
    let bytes = hex(V1A);
    let mut full = bytes.clone();
    full.extend_from_slice(b"hello");
    let pkt = Packet::new_checked(&full[..]).unwrap();
    assert_eq!(pkt.doff(), 0xE0);
    assert_eq!(pkt.flags(), 0x06);
    assert_eq!(pkt.window(), 0);
    assert_eq!(pkt.urgent(), 0xB97D);
    assert_eq!(pkt.checksum(), 0x6565);
    assert_eq!(pkt.sequence(), 0);
}

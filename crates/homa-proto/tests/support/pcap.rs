//! A small reader for the kernel captures in `tests/data/` (classic pcap, little-endian,
//! Ethernet, IPv4), so the tests need no extra dependency.

use std::net::Ipv4Addr;

use homa_proto::wire::IPPROTO_HOMA;

/// The Linux kernel in every capture.
pub(crate) const KERNEL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The (non-authoritative) test peer in every capture.
pub(crate) const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Path of a capture file in `tests/data/`.
pub(crate) fn path(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One captured IPv4 packet.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// Record number in the file, from 1 (as Wireshark counts).
    pub(crate) number: usize,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) tos: u8,
    pub(crate) protocol: u8,
    /// The IP payload, cut at the IP total length (Ethernet padding removed).
    pub(crate) homa: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a classic little-endian pcap file with Ethernet link type and IPv4 packets.
/// Panics (failing the test) on anything else.
pub(crate) fn read_pcap(bytes: &[u8]) -> Vec<Frame> {
    assert!(bytes.len() >= 24, "pcap file header missing");
    assert_eq!(
        le32(bytes, 0),
        0xA1B2_C3D4,
        "not a little-endian microsecond pcap"
    );
    assert_eq!(le32(bytes, 20), 1, "link type is not Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let number = frames.len() + 1;
        assert!(at + 16 <= bytes.len(), "record {number}: header cut short");
        let incl = le32(bytes, at + 8) as usize;
        let orig = le32(bytes, at + 12) as usize;
        assert_eq!(incl, orig, "record {number}: captured with a snap length");
        at += 16;
        let frame = bytes
            .get(at..at + incl)
            .unwrap_or_else(|| panic!("record {number}: data cut short"));
        at += incl;

        assert!(
            frame.len() >= 14 + 20,
            "record {number}: too short for Ethernet + IPv4"
        );
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        assert_eq!(ethertype, 0x0800, "record {number}: not IPv4");
        let ip = &frame[14..];
        assert_eq!(ip[0] >> 4, 4, "record {number}: IP version");
        let ihl = usize::from(ip[0] & 0x0F) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert!(
            ihl >= 20 && total >= ihl,
            "record {number}: bad IHL/total length"
        );
        assert!(
            total <= ip.len(),
            "record {number}: IP packet longer than the frame"
        );
        frames.push(Frame {
            number,
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            tos: ip[1],
            protocol: ip[9],
            homa: ip[ihl..total].to_vec(),
        });
    }
    frames
}

/// Reads `tests/data/<name>` and checks every packet is Homa between the kernel and the peer.
pub(crate) fn load(name: &str) -> Vec<Frame> {
    let path = path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let frames = read_pcap(&bytes);
    assert!(!frames.is_empty(), "{path} holds no packets");
    for f in &frames {
        assert_eq!(
            f.protocol, IPPROTO_HOMA,
            "{name} #{}: not IP protocol 146",
            f.number
        );
        assert!(
            f.src == KERNEL || f.src == PEER,
            "{name} #{}: unknown source",
            f.number
        );
    }
    frames
}

//! ACK packets (type 0x18, `struct homa_ack_hdr`, 80 bytes) and the 10-byte
//! `struct homa_ack` also embedded in DATA.

use core::ops::Range;

use super::{
    check_emit_len, check_typed, get_u16, get_u64, put_u16, put_u64, CommonRepr, PacketType,
    WireError, MAX_ACKS_PER_PKT,
};

const NUM_ACKS: usize = 28;
const ACKS: usize = 30;
const ACK_LEN: usize = 10;
const LEN: usize = 80;

pub(super) const LAYOUT: &[(&str, Range<usize>)] = &[
    ("num_acks", 28..30),
    ("acks[0]", 30..40),
    ("acks[1]", 40..50),
    ("acks[2]", 50..60),
    ("acks[3]", 60..70),
    ("acks[4]", 70..80),
];

/// One acknowledgement: the client-side (even) id of a finished RPC and the port of the
/// server socket that owns it on the destination host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ack {
    /// Client-side id of the finished RPC (even; 0 means "no ack").
    pub client_id: u64,
    /// Port of the server socket that holds the RPC.
    pub server_port: u16,
}

/// Up to [`MAX_ACKS_PER_PKT`] acks, without allocation.
///
/// ```
/// use homa_proto::wire::{Ack, AckList};
/// let mut list = AckList::new();
/// assert!(list.push(Ack { client_id: 1230, server_port: 4000 }).is_ok());
/// assert_eq!(list.as_slice().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AckList {
    len: u8,
    items: [Ack; MAX_ACKS_PER_PKT],
}

impl AckList {
    /// An empty list.
    pub const fn new() -> Self {
        AckList {
            len: 0,
            items: [Ack {
                client_id: 0,
                server_port: 0,
            }; MAX_ACKS_PER_PKT],
        }
    }
    /// Appends `ack`, or gives it back if the list already holds five.
    pub fn push(&mut self, ack: Ack) -> Result<(), Ack> {
        let slot = self.items.get_mut(usize::from(self.len)).ok_or(ack)?;
        *slot = ack;
        self.len += 1;
        Ok(())
    }
    /// The acks in order.
    pub fn as_slice(&self) -> &[Ack] {
        &self.items[..usize::from(self.len)]
    }
    /// Number of acks.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether the list holds five acks.
    pub fn is_full(&self) -> bool {
        self.len() == MAX_ACKS_PER_PKT
    }
}

impl<'a> IntoIterator for &'a AckList {
    type Item = &'a Ack;
    type IntoIter = core::slice::Iter<'a, Ack>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

/// A zero-copy view of an ACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AckPacket<T> {
    /// Wraps `buffer` after checking it is an ACK of at least 80 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_typed(buffer.as_ref(), PacketType::Ack)?;
        Ok(AckPacket { buffer })
    }
    /// The common header; `sender_id` names an RPC the server may delete.
    pub fn common(&self) -> CommonRepr {
        CommonRepr::read(self.buffer.as_ref())
    }
    /// The raw `num_acks` field.
    pub fn num_acks_raw(&self) -> u16 {
        get_u16(self.buffer.as_ref(), NUM_ACKS)
    }
    /// Number of valid entries: `num_acks` clamped to 5, as the kernel does.
    pub fn num_acks(&self) -> usize {
        usize::from(self.num_acks_raw()).min(MAX_ACKS_PER_PKT)
    }
    /// Entry `i` (0..5), valid or not.
    pub fn ack(&self, i: usize) -> Ack {
        let at = ACKS + ACK_LEN * i.min(MAX_ACKS_PER_PKT - 1);
        let b = self.buffer.as_ref();
        Ack {
            client_id: get_u64(b, at),
            server_port: get_u16(b, at + 8),
        }
    }
    /// The valid entries.
    pub fn acks(&self) -> AckList {
        let mut list = AckList::new();
        for i in 0..self.num_acks() {
            // Cannot overflow: num_acks() <= MAX_ACKS_PER_PKT.
            let _ = list.push(self.ack(i));
        }
        list
    }
}

/// An ACK: the RPC in the header and up to five more may be deleted by the server.
///
/// It is always emitted at its full 80 bytes, unused entries zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckRepr {
    /// Ports and the client id of an RPC the server may delete.
    pub common: CommonRepr,
    /// Further finished RPCs.
    pub acks: AckList,
}

impl AckRepr {
    /// Parses an ACK.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let pkt = AckPacket::new_checked(buf)?;
        Ok(AckRepr {
            common: pkt.common(),
            acks: pkt.acks(),
        })
    }
    /// Length of the emitted packet (80).
    pub const fn buffer_len(&self) -> usize {
        LEN
    }
    /// Writes the packet into `buf`; returns its length. Checksum left 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        check_emit_len(buf, PacketType::Ack, LEN)?;
        self.common.emit(buf, PacketType::Ack, 0);
        put_u16(buf, NUM_ACKS, self.acks.len() as u16);
        buf[ACKS..LEN].fill(0);
        for (i, ack) in self.acks.as_slice().iter().enumerate() {
            put_u64(buf, ACKS + ACK_LEN * i, ack.client_id);
            put_u16(buf, ACKS + ACK_LEN * i + 8, ack.server_port);
        }
        Ok(LEN)
    }
}

//! CUTOFFS packets (type 0x15, `struct homa_cutoffs_hdr`, 62 bytes).

use core::ops::Range;

use super::{
    check_emit_len, check_typed, get_u16, get_u32, put_u16, put_u32, CommonRepr, PacketType,
    WireError, MAX_PRIORITIES,
};

const CUTOFFS: usize = 28;
const VERSION: usize = 60;
const LEN: usize = 62;

pub(super) const LAYOUT: &[(&str, Range<usize>)] =
    &[("unsched_cutoffs", 28..60), ("cutoff_version", 60..62)];

/// A zero-copy view of a CUTOFFS packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutoffsPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CutoffsPacket<T> {
    /// Wraps `buffer` after checking it is a CUTOFFS of at least 62 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_typed(buffer.as_ref(), PacketType::Cutoffs)?;
        Ok(CutoffsPacket { buffer })
    }
    /// The common header.
    pub fn common(&self) -> CommonRepr {
        CommonRepr::read(self.buffer.as_ref())
    }
    /// Entry `i` (0..8): the largest message length that uses level `i` for unscheduled
    /// bytes. Indices of 8 or more return 0.
    pub fn cutoff(&self, i: usize) -> u32 {
        if i < MAX_PRIORITIES {
            get_u32(self.buffer.as_ref(), CUTOFFS + 4 * i)
        } else {
            0
        }
    }
    /// All eight entries, as sent (entry 0 is not normalised here).
    pub fn cutoffs(&self) -> [u32; MAX_PRIORITIES] {
        core::array::from_fn(|i| self.cutoff(i))
    }
    /// Version of this table.
    pub fn cutoff_version(&self) -> u16 {
        get_u16(self.buffer.as_ref(), VERSION)
    }
}

/// A CUTOFFS: the sending host's unscheduled priority cutoffs and their version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CutoffsRepr {
    /// Ports and the id of the RPC that triggered it (sender's view).
    pub common: CommonRepr,
    /// Entry i = largest message length using level i for unscheduled bytes, as on the
    /// wire. The receiver treats entry 0 as infinity.
    pub unsched_cutoffs: [u32; MAX_PRIORITIES],
    /// Version of the table, echoed by the recipient in later DATA packets.
    pub cutoff_version: u16,
}

impl CutoffsRepr {
    /// Parses a CUTOFFS.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let pkt = CutoffsPacket::new_checked(buf)?;
        Ok(CutoffsRepr {
            common: pkt.common(),
            unsched_cutoffs: pkt.cutoffs(),
            cutoff_version: pkt.cutoff_version(),
        })
    }
    /// Length of the emitted packet (62).
    pub const fn buffer_len(&self) -> usize {
        LEN
    }
    /// Writes the packet into `buf`; returns its length. Checksum left 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        check_emit_len(buf, PacketType::Cutoffs, LEN)?;
        self.common.emit(buf, PacketType::Cutoffs, 0);
        for (i, c) in self.unsched_cutoffs.iter().enumerate() {
            put_u32(buf, CUTOFFS + 4 * i, *c);
        }
        put_u16(buf, VERSION, self.cutoff_version);
        Ok(LEN)
    }
}

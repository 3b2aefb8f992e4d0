//! An outgoing message: packetisation (PROTOCOL.md 3.1), unscheduled bytes and grants
//! (3.2), and the segment boundaries retransmissions must reuse (4.2).

/// The sending side of a message.
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(crate) struct OutMessage {
    /// The message bytes (kept until the RPC ends, for retransmission).
    pub(crate) data: Arc<Vec<u8>>,
    /// Bytes sent without grants: `min(unsched_bytes, length)`.
    pub(crate) unsched: u32,
    /// Bytes the receiver has allowed so far.
    pub(crate) granted: u32,
    /// One past the last byte handed to the network (`sent_end`).
    pub(crate) next_offset: u32,
    /// Priority level for scheduled bytes (from the latest GRANT).
    pub(crate) sched_priority: u8,
    /// Payload bytes per packet to this destination.
    pub(crate) max_seg: u32,
}

impl OutMessage {
    pub(crate) fn new(data: Vec<u8>, unsched_bytes: u32, max_seg: u32) -> Self {
        let length = data.len() as u32;
        let unsched = unsched_bytes.min(length);
        OutMessage {
            data: Arc::new(data),
            unsched,
            granted: unsched,
            next_offset: 0,
            sched_priority: 0,
            max_seg: max_seg.max(1),
        }
    }

    pub(crate) fn length(&self) -> u32 {
        self.data.len() as u32
    }

    /// Bytes not yet handed to the network.
    pub(crate) fn remaining(&self) -> u32 {
        self.length() - self.next_offset
    }

    /// Whether a packet may be sent now: unsent bytes start below the granted offset.
    pub(crate) fn sendable(&self) -> bool {
        self.next_offset < self.length() && self.next_offset < self.granted
    }

    /// Whether every byte has been handed to the network.
    pub(crate) fn fully_sent(&self) -> bool {
        self.next_offset >= self.length()
    }

    /// End of the packet that starts at `start`: `max_seg` bytes, cut at the message end
    /// and exactly at the unscheduled limit.
    pub(crate) fn segment_end(&self, start: u32) -> u32 {
        let mut end = start.saturating_add(self.max_seg).min(self.length());
        if start < self.unsched {
            end = end.min(self.unsched);
        }
        end
    }

    /// Start of the original packet that holds byte `offset`.
    pub(crate) fn segment_start(&self, offset: u32) -> u32 {
        if offset < self.unsched {
            offset / self.max_seg * self.max_seg
        } else {
            self.unsched + (offset - self.unsched) / self.max_seg * self.max_seg
        }
    }

    /// Raises the granted offset (never lowers it; capped at the length). Returns whether it grew.
    pub(crate) fn grant(&mut self, offset: u32) -> bool {
        let new = offset.min(self.length());
        if new > self.granted {
            self.granted = new;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(m: &OutMessage) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < m.length() {
            let end = m.segment_end(at);
            v.push((at, end));
            at = end;
        }
        v
    }

    #[test]
    fn packet_boundary_is_cut_exactly_at_the_unscheduled_limit() {
        // PROTOCOL.md 3.1: 40000 unscheduled, 1424-byte segments: ..., 39872 (128 bytes), 40000, 41424, ...
        let m = OutMessage::new(vec![0; 100_000], 40_000, 1424);
        let segs = segments(&m);
        assert_eq!(segs[27], (27 * 1424, 28 * 1424));
        assert_eq!(segs[28], (39_872, 40_000));
        assert_eq!(segs[29], (40_000, 41_424));
        assert_eq!(segs.last().unwrap().1, 100_000);
        for &(s, e) in &segs {
            assert_eq!(m.segment_start(s), s);
            assert_eq!(m.segment_start(e - 1), s);
        }
    }

    #[test]
    fn short_messages_are_entirely_unscheduled() {
        let m = OutMessage::new(vec![0; 100], 40_000, 1424);
        assert_eq!(m.unsched, 100);
        assert_eq!(m.granted, 100);
        assert_eq!(segments(&m), vec![(0, 100)]);
    }

    #[test]
    fn grants_only_grow_and_are_capped_at_the_length() {
        let mut m = OutMessage::new(vec![0; 50_000], 40_000, 1424);
        assert!(!m.grant(30_000));
        assert!(m.grant(45_000));
        assert!(m.grant(1_000_000));
        assert_eq!(m.granted, 50_000);
    }
}

//! Reassembly of an incoming message (PROTOCOL.md 3.3, 4.2): received ranges, gaps,
//! and the granted offset the sender has been told about.

use crate::pool::MessageBuffers;
use crate::Time;

/// Most gaps tracked for one message. A packet that would open another gap is dropped
/// (and later requested again by RESEND), so a hostile sender cannot make the receiver
/// allocate without bound.
pub(crate) const MAX_GAPS: usize = 256;

/// What happened to a DATA packet's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// New bytes: write them to the message's buffers.
    New,
    /// Already received, or overlapping received bytes: dropped.
    Duplicate,
    /// Would open more than [`MAX_GAPS`] gaps: dropped.
    TooManyGaps,
}

#[derive(Debug, Clone)]
pub(crate) struct InMessage {
    /// Total length of the message.
    pub(crate) length: u32,
    /// Bytes the sender may send without further grants (initially its `incoming`).
    pub(crate) granted: u32,
    /// Bytes received (a count, not an offset).
    pub(crate) received: u32,
    /// One past the highest byte received.
    pub(crate) recv_end: u32,
    /// Missing ranges below `recv_end`, sorted and disjoint.
    gaps: Vec<(u32, u32)>,
    /// Where the message lives in the receive region; `None` while stalled waiting for space.
    pub(crate) buffers: Option<MessageBuffers>,
    /// When the first packet was seen.
    pub(crate) birth: Time,
    /// Whether the grant scheduler tracks it.
    pub(crate) scheduled: bool,
    /// Largest payload of one packet accepted so far that was not cut short by the
    /// message's end or the unscheduled limit (0: none yet): the sender's segment size, from
    /// which [`Engine::placements`](crate::engine::Engine::placements) predicts where
    /// the next packets start.
    pub(crate) seg: u32,
}

impl InMessage {
    pub(crate) fn new(length: u32, incoming: u32, birth: Time) -> Self {
        InMessage {
            length,
            granted: incoming.min(length),
            received: 0,
            recv_end: 0,
            gaps: Vec::new(),
            buffers: None,
            birth,
            scheduled: false,
            seg: 0,
        }
    }

    /// Whether every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.received == self.length
    }

    /// Whether the message needs grants beyond what the sender sends unscheduled.
    pub(crate) fn needs_grants(&self) -> bool {
        self.granted < self.length
    }

    /// Records `[offset, offset + len)` as received if it is new and lies entirely in
    /// unreceived space (the kernel's rule: a packet partially overlapping received data
    /// is dropped). The caller has checked `offset + len <= length`.
    pub(crate) fn accept(&mut self, offset: u32, len: u32) -> Accepted {
        if len == 0 {
            return Accepted::Duplicate;
        }
        let end = offset + len;
        if offset >= self.recv_end {
            if offset > self.recv_end {
                if self.gaps.len() >= MAX_GAPS {
                    return Accepted::TooManyGaps;
                }
                self.gaps.push((self.recv_end, offset));
            }
            self.recv_end = end;
        } else {
            let Some(i) = self.gaps.iter().position(|&(s, e)| s <= offset && end <= e) else {
                return Accepted::Duplicate;
            };
            let (s, e) = self.gaps[i];
            match (s == offset, e == end) {
                (true, true) => {
                    self.gaps.remove(i);
                }
                (true, false) => self.gaps[i].0 = end,
                (false, true) => self.gaps[i].1 = offset,
                (false, false) => {
                    if self.gaps.len() >= MAX_GAPS {
                        return Accepted::TooManyGaps;
                    }
                    self.gaps[i].1 = offset;
                    self.gaps.insert(i + 1, (end, e));
                }
            }
        }
        self.received += len;
        Accepted::New
    }

    /// The ranges a RESEND should ask for: every gap, then `[recv_end, granted)` if
    /// non-empty (PROTOCOL.md 4.2).
    pub(crate) fn missing(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let tail = (self.recv_end < self.granted).then_some((self.recv_end, self.granted));
        self.gaps.iter().copied().chain(tail)
    }

    /// Number of gaps.
    #[cfg(test)]
    pub(crate) fn gap_count(&self) -> usize {
        self.gaps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_packets_leave_no_gaps() {
        let mut m = InMessage::new(3000, 3000, Time::ZERO);
        assert_eq!(m.accept(0, 1000), Accepted::New);
        assert_eq!(m.accept(1000, 1000), Accepted::New);
        assert_eq!(m.accept(2000, 1000), Accepted::New);
        assert!(m.is_complete());
        assert_eq!(m.missing().count(), 0);
    }

    #[test]
    fn out_of_order_packets_open_and_fill_gaps() {
        let mut m = InMessage::new(5000, 5000, Time::ZERO);
        assert_eq!(m.accept(3000, 1000), Accepted::New);
        assert_eq!(
            m.missing().collect::<Vec<_>>(),
            vec![(0, 3000), (4000, 5000)]
        );
        assert_eq!(m.accept(1000, 1000), Accepted::New); // splits the gap
        assert_eq!(
            m.missing().collect::<Vec<_>>(),
            vec![(0, 1000), (2000, 3000), (4000, 5000)]
        );
        assert_eq!(m.accept(0, 1000), Accepted::New);
        assert_eq!(m.accept(2000, 1000), Accepted::New);
        assert_eq!(m.accept(4000, 1000), Accepted::New);
        assert!(m.is_complete());
        assert_eq!(m.gap_count(), 0);
    }

    #[test]
    fn duplicates_and_partial_overlaps_are_dropped() {
        let mut m = InMessage::new(4000, 4000, Time::ZERO);
        assert_eq!(m.accept(0, 1000), Accepted::New);
        assert_eq!(m.accept(0, 1000), Accepted::Duplicate);
        assert_eq!(m.accept(2000, 1000), Accepted::New);
        assert_eq!(
            m.accept(500, 1000),
            Accepted::Duplicate,
            "straddles received bytes"
        );
        assert_eq!(
            m.accept(1500, 1000),
            Accepted::Duplicate,
            "straddles the gap's end"
        );
        assert_eq!(m.received, 2000);
    }

    #[test]
    fn gap_count_is_bounded() {
        let mut m = InMessage::new(1_000_000, 1_000_000, Time::ZERO);
        for i in 0..MAX_GAPS as u32 {
            assert_eq!(m.accept(2 * i + 1, 1), Accepted::New);
        }
        assert_eq!(m.accept(2 * MAX_GAPS as u32 + 1, 1), Accepted::TooManyGaps);
        assert_eq!(m.gap_count(), MAX_GAPS);
    }

    #[test]
    fn missing_includes_the_granted_tail() {
        let mut m = InMessage::new(100_000, 40_000, Time::ZERO);
        m.accept(0, 10_000);
        m.granted = 60_000;
        assert_eq!(m.missing().collect::<Vec<_>>(), vec![(10_000, 60_000)]);
    }
}

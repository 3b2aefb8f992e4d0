//! Reassembly of an incoming message (PROTOCOL.md 3.3, 4.2): received ranges, gaps,
//! and the granted offset the sender has been told about.

use std::net::SocketAddr;

use crate::engine::{Engine, Event, Message, Placement};
use crate::region::Region;
use crate::rpc::{is_client_id, Lookup, Rpc, RpcState};
use crate::wire::{DataRepr, Repr};

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
    /// Priority of the last GRANT sent for it (repeated by keep-alive grants).
    pub(crate) grant_priority: u8,
    /// The engine's tick count when new bytes last arrived (or the message began): how
    /// long its sender has made no progress (`stall.rs`).
    pub(crate) progress_tick: u64,
    /// Whether its buffers were once taken for a stalled message (`stall.rs`): it waits
    /// behind the others when stalled, and its silence keeps counting when it gets space
    /// again.
    pub(crate) reclaimed: bool,
    /// While stalled: whether it waits behind the messages whose senders are alive and
    /// were never reclaimed (`stall.rs`); part of its entry in the stalled set.
    pub(crate) stall_late: bool,
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
            grant_priority: 0,
            progress_tick: 0,
            reclaimed: false,
            stall_late: false,
        }
    }

    /// Forgets every byte received (its buffers were taken back, `stall.rs`); what the
    /// sender was granted stays, since the sender knows it.
    pub(crate) fn reset_received(&mut self) {
        self.received = 0;
        self.recv_end = 0;
        self.gaps.clear();
        self.seg = 0;
    }

    /// Its entry in the engine's stalled set (`stall.rs`), for RPC `key` of `serial`: the
    /// one place that lays the entry out.
    pub(crate) fn stall_entry(&self, serial: u64, key: u32) -> crate::stall::StallEntry {
        (self.stall_late, self.length, serial, key)
    }

    /// Whether its sender has sent nothing new for at least `ticks` ticks, at engine
    /// tick `now` (`grant.rs`, `stall.rs`).
    pub(crate) fn idle_for(&self, now: u64, ticks: u64) -> bool {
        now.saturating_sub(self.progress_tick) >= ticks
    }

    /// Whether every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.received == self.length
    }

    /// Whether the message needs grants beyond what the sender sends unscheduled.
    pub(crate) fn needs_grants(&self) -> bool {
        self.granted < self.length
    }

    /// Records the bytes of `[offset, offset + len)` that had not been received yet and
    /// appends those ranges to `new` (cleared first), in order. A packet may overlap bytes
    /// already received: only its new parts are taken. (The kernel drops a packet that
    /// partially overlaps received data, which wedges a message forever when a sender
    /// cuts its retransmissions at other boundaries than the packets that arrived: every
    /// retransmission overlaps and is dropped, and every RESEND asks for it again.) The
    /// caller has checked `offset + len <= length`.
    pub(crate) fn accept(&mut self, offset: u32, len: u32, new: &mut Vec<(u32, u32)>) -> Accepted {
        new.clear();
        if len == 0 {
            return Accepted::Duplicate;
        }
        let end = offset + len;
        let below = end.min(self.recv_end);
        let first = self.gaps.partition_point(|&(_, e)| e <= offset);
        // Room for the gap a packet strictly inside a gap splits off, or the one a packet
        // past the end opens.
        let splits = self
            .gaps
            .get(first)
            .is_some_and(|&(s, e)| s < offset && end < e);
        if (splits || offset > self.recv_end) && self.gaps.len() >= MAX_GAPS {
            return Accepted::TooManyGaps;
        }
        let mut i = first;
        while i < self.gaps.len() && self.gaps[i].0 < below {
            let (s, e) = self.gaps[i];
            let (a, b) = (s.max(offset), e.min(below));
            new.push((a, b));
            match (a == s, b == e) {
                (true, true) => {
                    self.gaps.remove(i);
                }
                (true, false) => {
                    self.gaps[i].0 = b;
                    i += 1;
                }
                (false, true) => {
                    self.gaps[i].1 = a;
                    i += 1;
                }
                (false, false) => {
                    self.gaps[i].1 = a;
                    self.gaps.insert(i + 1, (b, e));
                    i += 2;
                }
            }
        }
        if end > self.recv_end {
            if offset > self.recv_end {
                self.gaps.push((self.recv_end, offset));
            }
            new.push((offset.max(self.recv_end), end));
            self.recv_end = end;
        }
        if new.is_empty() {
            return Accepted::Duplicate;
        }
        self.received += new.iter().map(|&(a, b)| b - a).sum::<u32>();
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

impl<R: Region> Engine<R> {
    pub(crate) fn handle_data(
        &mut self,
        now: Time,
        src: SocketAddr,
        local_id: u64,
        d: &DataRepr<'_>,
        placed: Option<(usize, &Placement)>,
    ) {
        if let Some(ack) = d.ack {
            self.handle_ack(src, ack);
        }
        if let Some((len, p)) = placed {
            if !self.placement_holds(src, local_id, d, len, p) {
                self.stats.misplaced += 1;
                return;
            }
        }
        let payload_len = placed.map_or(d.payload.len(), |(len, _)| len);
        let key = match self.lookup(src, local_id) {
            Lookup::Found(k) => k,
            Lookup::Forged => return,
            Lookup::Unknown if is_client_id(local_id) => {
                // A response for an RPC this client no longer has (aborted, or finished
                // and this is a late copy). The kernel drops it silently (PROTOCOL.md
                // 4.3); answering RPC_UNKNOWN lets the server free its RPC at once
                // instead of holding it (and its transmit memory) until it times out.
                self.stats.unknown_rpc += 1;
                let repr = Repr::RpcUnknown(self.common_to(src, local_id));
                self.queue_control(src, repr);
                return;
            }
            Lookup::Unknown => match self.new_server_rpc(now, src, local_id) {
                Some(k) => k,
                None => return,
            },
        };
        if d.cutoff_version != self.config.cutoff_version() {
            self.maybe_send_cutoffs(now, src, local_id);
        }
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        if rpc.is_client() && rpc.state == RpcState::Outgoing {
            if rpc.msgout.as_ref().is_some_and(|m| !m.fully_sent()) {
                // A server answers only a request it has whole: response DATA before the
                // request is even sent is forged (or from a confused peer). Taking it
                // would stop the request and wedge the RPC.
                self.stats.early_responses += 1;
                return;
            }
            rpc.state = RpcState::Incoming;
        }
        let serial = rpc.serial;
        let ticks = self.ticks;
        if rpc.msgin.is_none() {
            // Bytes the sender sent are bytes it was allowed to send: a first packet whose
            // `incoming` is below its own end (or 0) is taken as granted up to that end,
            // so the message is tracked like any other (and times out if nothing follows).
            let first_end = d.offset.saturating_add(payload_len as u32);
            let mut m = InMessage::new(d.message_length, d.incoming.max(first_end), now);
            m.progress_tick = ticks;
            m.buffers = self.pool.allocate(d.message_length);
            if m.buffers.is_none() {
                self.stats.buffer_stalls += 1;
                self.stalled.insert(m.stall_entry(serial, key));
            }
            rpc.msgin = Some(m);
        }
        let m = rpc.msgin.as_mut().expect("created above");
        if m.length != d.message_length {
            // Not this message (its first packet said another length, e.g. a forged
            // one): dropped, and no sign of life, so the RPC times out instead of
            // waiting forever for bytes that can never match.
            self.stats.length_mismatch += 1;
            return;
        }
        if m.is_complete() {
            rpc.silent_ticks = 0;
            self.stats.duplicate_data += 1;
            return;
        }
        let Some(buffers) = m.buffers else {
            // Dropped, and no sign of life: nothing it sends can be taken, so a sender
            // that only repeats its packets (never probing, as a live client does with
            // RESENDs) waits behind live ones (`stall.rs`) and times out.
            self.stats.dropped_while_stalled += 1;
            return;
        };
        rpc.silent_ticks = 0;
        let mut fresh = core::mem::take(&mut self.scratch_ranges);
        match m.accept(d.offset, payload_len as u32, &mut fresh) {
            Accepted::New => {
                m.progress_tick = ticks;
                // A packet cut short by the message's end or the unscheduled limit does
                // not show the sender's segment size, nor does a first packet (it may be
                // a short lead, `OutMessage::with_lead`).
                let end = d.offset + payload_len as u32;
                if d.offset > 0 && end != d.message_length && end != d.incoming {
                    m.seg = m.seg.max(payload_len as u32);
                }
            }
            Accepted::Duplicate => {
                self.stats.duplicate_data += 1;
                self.scratch_ranges = fresh;
                return;
            }
            Accepted::TooManyGaps => {
                self.stats.dropped_too_many_gaps += 1;
                self.scratch_ranges = fresh;
                return;
            }
        }
        // A placed payload is already where it belongs (a placement covers only bytes not
        // received yet); otherwise the new parts are copied to the message's buffers.
        if placed.is_some() {
            self.stats.placed_packets += 1;
        } else {
            for &(a, b) in &fresh {
                let mut at = a;
                let mut rest = &d.payload[(a - d.offset) as usize..(b - d.offset) as usize];
                while !rest.is_empty() {
                    let Some((region_off, contiguous)) = buffers.locate(at) else {
                        break;
                    };
                    let n = contiguous.min(rest.len());
                    self.region.write(region_off, &rest[..n]);
                    rest = &rest[n..];
                    at += n as u32;
                }
            }
        }
        self.scratch_ranges = fresh;
        if self.last_data[0] != Some(key) {
            self.last_data = [Some(key), self.last_data[0]];
        }
        let complete = m.is_complete();
        if m.scheduled {
            // Even once fully granted, its bytes left still rank it among the others.
            self.grants.update_received(key, m.received);
            self.grants_dirty = true;
        } else if m.needs_grants() {
            m.scheduled = true;
            self.grants
                .insert(key, src.ip(), m.length, m.granted, m.received, m.birth);
            self.grants_dirty = true;
        }
        if complete {
            if m.scheduled {
                m.scheduled = false;
                self.grants.remove(key);
            }
            self.deliver(key);
        }
    }

    /// Creates the server RPC for the first DATA packet of a new request, unless the
    /// socket is not a server, the request was recently finished (a delayed duplicate),
    /// or the socket already holds `max_server_rpcs` server RPCs (each refusal counted).
    fn new_server_rpc(&mut self, now: Time, src: SocketAddr, local_id: u64) -> Option<u32> {
        if !self.options.server {
            self.stats.requests_to_client += 1;
            return None;
        }
        self.expire_tombstones(now);
        if self.tombstone_set.contains(&(src.ip(), local_id)) {
            self.stats.stale_requests += 1;
            return None;
        }
        if self.server_ids.len() >= self.config.max_server_rpcs() as usize {
            // Dropped like a lost packet: a live client probes, gets RPC_UNKNOWN and
            // restarts the request when there is room again.
            self.stats.server_rpc_limit += 1;
            return None;
        }
        let serial = self.new_serial();
        let key = self.insert_rpc(Rpc {
            id: local_id,
            peer: src,
            cookie: 0,
            state: RpcState::Incoming,
            msgout: None,
            msgin: None,
            silent_ticks: 0,
            probes: 0,
            last_probe: 0,
            heard: true,
            done_tick: None,
            serial,
            queued: None,
        });
        self.arm_timer(now);
        Some(key)
    }

    /// A message is complete: hand it to the application.
    pub(crate) fn deliver(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        let Some(buffers) = rpc.msgin.as_mut().and_then(|m| m.buffers.take()) else {
            return;
        };
        let message = Message {
            id: rpc.id,
            peer: rpc.peer,
            cookie: rpc.cookie,
            buffers,
        };
        if rpc.is_client() {
            let (peer, id) = (rpc.peer, rpc.id);
            self.free_rpc(key);
            self.events.push_back(Event::Response(message));
            self.queue_ack(peer, id);
        } else {
            rpc.state = RpcState::InService;
            rpc.silent_ticks = 0;
            self.events.push_back(Event::Request(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl InMessage {
        fn take(&mut self, offset: u32, len: u32) -> Accepted {
            self.accept(offset, len, &mut Vec::new())
        }
    }

    #[test]
    fn in_order_packets_leave_no_gaps() {
        let mut m = InMessage::new(3000, 3000, Time::ZERO);
        assert_eq!(m.take(0, 1000), Accepted::New);
        assert_eq!(m.take(1000, 1000), Accepted::New);
        assert_eq!(m.take(2000, 1000), Accepted::New);
        assert!(m.is_complete());
        assert_eq!(m.missing().count(), 0);
    }

    #[test]
    fn out_of_order_packets_open_and_fill_gaps() {
        let mut m = InMessage::new(5000, 5000, Time::ZERO);
        assert_eq!(m.take(3000, 1000), Accepted::New);
        assert_eq!(
            m.missing().collect::<Vec<_>>(),
            vec![(0, 3000), (4000, 5000)]
        );
        assert_eq!(m.take(1000, 1000), Accepted::New); // splits the gap
        assert_eq!(
            m.missing().collect::<Vec<_>>(),
            vec![(0, 1000), (2000, 3000), (4000, 5000)]
        );
        assert_eq!(m.take(0, 1000), Accepted::New);
        assert_eq!(m.take(2000, 1000), Accepted::New);
        assert_eq!(m.take(4000, 1000), Accepted::New);
        assert!(m.is_complete());
        assert_eq!(m.gap_count(), 0);
    }

    #[test]
    fn duplicates_are_dropped_and_partial_overlaps_keep_only_their_new_bytes() {
        let mut m = InMessage::new(4000, 4000, Time::ZERO);
        let mut new = Vec::new();
        assert_eq!(m.accept(0, 1000, &mut new), Accepted::New);
        assert_eq!(m.take(0, 1000), Accepted::Duplicate);
        assert_eq!(m.accept(2000, 1000, &mut new), Accepted::New);
        assert_eq!(
            m.missing().collect::<Vec<_>>(),
            vec![(1000, 2000), (3000, 4000)]
        );
        // Straddles received bytes: only 1000..1500 is new.
        assert_eq!(m.accept(500, 1000, &mut new), Accepted::New);
        assert_eq!(new, vec![(1000, 1500)]);
        // Straddles the rest of the gap, the received block and the tail.
        assert_eq!(m.accept(1200, 2800, &mut new), Accepted::New);
        assert_eq!(new, vec![(1500, 2000), (3000, 4000)]);
        assert!(m.is_complete());
        assert_eq!(m.received, 4000);
        assert_eq!(m.gap_count(), 0);
    }

    #[test]
    fn a_retransmission_cut_at_other_boundaries_completes_the_message() {
        // Bytes 100..400 arrived first (another segment size); the original 0..722
        // packet retransmitted whole fills both sides.
        let mut m = InMessage::new(722, 722, Time::ZERO);
        let mut new = Vec::new();
        assert_eq!(m.accept(100, 300, &mut new), Accepted::New);
        assert_eq!(m.accept(0, 722, &mut new), Accepted::New);
        assert_eq!(new, vec![(0, 100), (400, 722)]);
        assert!(m.is_complete());
    }

    #[test]
    fn gap_count_is_bounded() {
        let mut m = InMessage::new(1_000_000, 1_000_000, Time::ZERO);
        for i in 0..MAX_GAPS as u32 {
            assert_eq!(m.take(2 * i + 1, 1), Accepted::New);
        }
        assert_eq!(m.take(2 * MAX_GAPS as u32 + 1, 1), Accepted::TooManyGaps);
        assert_eq!(m.gap_count(), MAX_GAPS);
    }

    #[test]
    fn missing_includes_the_granted_tail() {
        let mut m = InMessage::new(100_000, 40_000, Time::ZERO);
        m.take(0, 10_000);
        m.granted = 60_000;
        assert_eq!(m.missing().collect::<Vec<_>>(), vec![(10_000, 60_000)]);
    }
}

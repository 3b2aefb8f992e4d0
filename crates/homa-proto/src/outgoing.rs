//! An outgoing message: packetisation (PROTOCOL.md 3.1), unscheduled bytes and grants
//! (3.2), and the segment boundaries retransmissions must reuse (4.2).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::engine::{Engine, Payload, Transmit};
use crate::region::Region;
use crate::rpc::{Lookup, RpcState};
use crate::wire::{DataRepr, GrantRepr, OffsetForm, PacketType, Repr, ResendRepr, DATA_HEADER_LEN};
use crate::Time;

/// The sending side of a message.
#[derive(Debug, Clone)]
pub(crate) struct OutMessage {
    /// The message bytes (kept until the RPC ends, for retransmission).
    pub(crate) data: Bytes,
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
    /// Length of a short first packet (0: none): see [`with_lead`](Self::with_lead).
    pub(crate) lead: u32,
}

/// Payload of the short first packet of a message with a lead ([`OutMessage::with_lead`]).
pub(crate) const LEAD_BYTES: u32 = 1024;

impl OutMessage {
    pub(crate) fn new(data: Bytes, unsched_bytes: u32, max_seg: u32) -> Self {
        let length = data.len() as u32;
        let unsched = unsched_bytes.min(length);
        OutMessage {
            data,
            unsched,
            granted: unsched,
            next_offset: 0,
            sched_priority: 0,
            max_seg: max_seg.max(1),
            lead: 0,
        }
    }

    /// Starts the message with a short packet of [`LEAD_BYTES`] when it needs more than
    /// one packet of unscheduled bytes: the receiver learns the message's length (and so
    /// where it goes) from that packet and can receive the rest straight into place,
    /// instead of copying a full first packet that arrived before it knew. Later
    /// packets keep `max_seg` bytes, counted from the lead's end.
    pub(crate) fn with_lead(mut self) -> Self {
        if self.unsched > self.max_seg && self.max_seg > LEAD_BYTES {
            self.lead = LEAD_BYTES;
        }
        self
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
        if start < self.lead {
            return self.lead;
        }
        let mut end = start.saturating_add(self.max_seg).min(self.length());
        if start < self.unsched {
            end = end.min(self.unsched);
        }
        end
    }

    /// Start of the original packet that holds byte `offset`.
    pub(crate) fn segment_start(&self, offset: u32) -> u32 {
        if offset < self.lead {
            0
        } else if offset < self.unsched {
            self.lead + (offset - self.lead) / self.max_seg * self.max_seg
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

/// One DATA packet to write: bytes `start..end` of the message.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u32,
    end: u32,
    incoming: u32,
    ack: Option<crate::wire::Ack>,
    retransmit: bool,
}

/// Most retransmission ranges queued at once (see `queue_retransmit`).
pub(crate) const MAX_RETRANSMITS: usize = 4096;

/// A range of an outgoing message to send again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retransmit {
    pub(crate) key: u32,
    pub(crate) serial: u64,
    /// Start of the next segment to send.
    pub(crate) next: u32,
    /// Stop when `next` reaches this.
    pub(crate) end: u32,
    /// `incoming` field of the retransmitted packets.
    pub(crate) incoming: u32,
    pub(crate) priority: u8,
}
pub(crate) fn ip_header_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    }
}

impl<R: Region> Engine<R> {
    /// Re-files RPC `key` in the sendable sets according to its current state.
    pub(crate) fn refresh_sendable(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        if let Some(old) = rpc.queued.take() {
            self.sendable.remove(&(old, rpc.serial, key));
            self.sendable_by_age.remove(&(rpc.serial, key));
        }
        if rpc.state != RpcState::Outgoing {
            return;
        }
        if let Some(out) = &rpc.msgout {
            if out.sendable() {
                let remaining = out.remaining();
                rpc.queued = Some(remaining);
                self.sendable.insert((remaining, rpc.serial, key));
                self.sendable_by_age.insert((rpc.serial, key));
            }
        }
    }

    /// GRANT: the receiver allows more bytes of our message, at a priority.
    pub(crate) fn handle_grant(&mut self, src: SocketAddr, local_id: u64, g: &GrantRepr) {
        let Some(key) = self.lookup_known(src, local_id) else {
            return;
        };
        let top = self.config.control_priority();
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        rpc.silent_ticks = 0;
        if rpc.state != RpcState::Outgoing {
            return;
        }
        if let Some(out) = rpc.msgout.as_mut() {
            out.grant(g.offset);
            out.sched_priority = g.priority.min(top);
        }
        self.refresh_sendable(key);
    }

    /// RESEND: the receiver misses bytes of our message (PROTOCOL.md 4.2, sender side).
    pub(crate) fn handle_resend(&mut self, src: SocketAddr, local_id: u64, r: &ResendRepr) {
        let key = match self.lookup(src, local_id) {
            Lookup::Found(k) => k,
            Lookup::Forged => return,
            Lookup::Unknown => {
                let repr = Repr::RpcUnknown(self.common_to(src, local_id));
                self.queue_control(src, repr);
                return;
            }
        };
        self.client_alive(key);
        let top = self.config.control_priority();
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        let serial = rpc.serial;
        let Some(out) = rpc.msgout.as_mut() else {
            // A server still receiving or computing: "I'm alive".
            let repr = Repr::Busy(self.common_to(src, local_id));
            self.queue_control(src, repr);
            return;
        };
        // The client still wants (part of) the response: it is alive, so restart the
        // wait for its ack.
        rpc.done_tick = None;
        let sent_end = out.next_offset;
        let end = if r.is_all() {
            sent_end
        } else {
            r.offset.saturating_add(r.length)
        };
        let upto = end.min(sent_end);
        let retransmit = (r.offset < upto).then(|| Retransmit {
            key,
            serial,
            next: out.segment_start(r.offset),
            end: upto,
            incoming: upto,
            priority: r.priority.min(top),
        });
        let grew = end > out.granted && out.grant(end);
        // BUSY: "not sent yet, still coming". A RESEND past the message's end comes from
        // a peer that took another message for this one (a forged first packet): no
        // BUSY then, so it times out instead of waiting for bytes that do not exist.
        let busy = r.offset >= sent_end && r.offset < out.length();
        if let Some(rt) = retransmit {
            self.queue_retransmit(rt);
        }
        if grew {
            self.refresh_sendable(key);
        }
        if busy {
            let repr = Repr::Busy(self.common_to(src, local_id));
            self.queue_control(src, repr);
        }
    }

    /// RPC_UNKNOWN: the peer does not know the RPC (PROTOCOL.md 4.3). A client restarts
    /// its request; a server frees the RPC.
    pub(crate) fn handle_rpc_unknown(&mut self, src: SocketAddr, local_id: u64) {
        let Some(key) = self.lookup_known(src, local_id) else {
            return;
        };
        let Some(rpc) = self.rpcs.get(key) else {
            return;
        };
        if !rpc.is_client() {
            // The client no longer knows the RPC.
            self.free_rpc(key);
            return;
        }
        if rpc.state != RpcState::Outgoing {
            return;
        }
        // The server lost the request: send everything sent so far again, at the
        // unscheduled level for the message length.
        let Some(out) = rpc.msgout.as_ref() else {
            return;
        };
        let priority =
            self.peers
                .unsched_priority(rpc.peer.ip(), out.length(), self.config.num_priorities());
        let sent_end = out.next_offset;
        let serial = rpc.serial;
        if sent_end > 0 {
            let restart = Retransmit {
                key,
                serial,
                next: 0,
                end: sent_end,
                incoming: sent_end,
                priority,
            };
            if self.queue_retransmit(restart) {
                self.stats.restarts += 1;
            }
        }
    }

    /// Queues a retransmission range; returns whether it was queued. At most
    /// [`MAX_RETRANSMITS`] wait, so a peer that floods RESENDs cannot grow the queue
    /// without bound (a dropped range is counted and asked for again by the peer's next
    /// RESEND).
    fn queue_retransmit(&mut self, rt: Retransmit) -> bool {
        if self.retransmits.len() < MAX_RETRANSMITS {
            self.retransmits.push_back(rt);
            true
        } else {
            self.stats.retransmits_dropped += 1;
            false
        }
    }

    pub(crate) fn transmit(
        &mut self,
        now: Time,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        assert!(
            buf.len() >= self.max_packet_size(),
            "poll_transmit needs a buffer of max_packet_size() = {} bytes, got {}",
            self.max_packet_size(),
            buf.len()
        );
        if self.shut_down {
            return None;
        }
        self.flush_grants(now);
        if let Some(c) = self.control.pop_front() {
            let len = c.repr.emit(buf).expect("buffer checked above");
            return Some((
                self.sent(now, c.to, len, c.priority, c.repr.packet_type()),
                None,
            ));
        }
        while let Some(rt) = self.retransmits.front_mut() {
            let rt = *rt;
            match self.emit_retransmit(now, rt, buf, split) {
                Some(t) => return Some(t),
                None => {
                    self.retransmits.pop_front();
                }
            }
        }
        self.emit_new_data(now, buf, split)
    }

    /// Writes a DATA packet: whole, or (`split`) its header with the payload returned as
    /// a [`Payload`] of `data`. Returns (bytes written, bytes on the wire, payload).
    pub(crate) fn emit_data(
        repr: &DataRepr<'_>,
        data: &Bytes,
        buf: &mut [u8],
        split: bool,
    ) -> (usize, usize, Option<Payload>) {
        if split {
            repr.emit_header(buf)
                .expect("buffer checked by poll_transmit");
            let start = repr.offset as usize;
            let payload = Payload {
                data: data.clone(),
                start,
                end: start + repr.payload.len(),
            };
            (DATA_HEADER_LEN, repr.buffer_len(), Some(payload))
        } else {
            let len = repr.emit(buf).expect("buffer checked by poll_transmit");
            (len, len, None)
        }
    }

    /// Whether packets to `dest` pass through a NIC the pacer models.
    pub(crate) fn paced(&self, dest: IpAddr) -> bool {
        self.options.pace_loopback || !dest.is_loopback()
    }

    pub(crate) fn sent(
        &mut self,
        now: Time,
        to: SocketAddr,
        len: usize,
        priority: u8,
        ty: PacketType,
    ) -> Transmit {
        if self.paced(to.ip()) {
            self.pacer.record(now, len, ip_header_len(to.ip()));
        }
        self.stats.packets_sent += 1;
        self.stats.sent_by_type[usize::from(ty.code() - 0x10)] += 1;
        Transmit {
            destination: to,
            len,
            priority,
            tos: self.config.tos_for_level(priority),
            packet_type: ty,
        }
    }

    /// Writes segment `seg` of RPC `key`'s outgoing message as a DATA packet (see
    /// `emit_data`).
    fn write_segment(
        &self,
        key: u32,
        seg: Segment,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(usize, usize, Option<Payload>)> {
        let rpc = self.rpcs.get(key)?;
        let out = rpc.msgout.as_ref()?;
        let repr = DataRepr {
            common: self.common_to(rpc.peer, rpc.id),
            message_length: out.length(),
            incoming: seg.incoming,
            ack: seg.ack,
            cutoff_version: self.peers.cutoff_version(rpc.peer.ip()),
            retransmit: seg.retransmit,
            offset: seg.start,
            offset_form: OffsetForm::Both,
            payload: &out.data[seg.start as usize..seg.end as usize],
        };
        Some(Self::emit_data(&repr, &out.data, buf, split))
    }

    /// Sends the next segment of retransmission `rt`; `None` when it is finished or stale.
    pub(crate) fn emit_retransmit(
        &mut self,
        now: Time,
        rt: Retransmit,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        let rpc = self.rpcs.get(rt.key).filter(|r| r.serial == rt.serial)?;
        let out = rpc.msgout.as_ref()?;
        if rt.next >= rt.end || rt.next >= out.length() {
            return None;
        }
        let start = rt.next;
        let end = out.segment_end(start);
        let to = rpc.peer;
        let segment = Segment {
            start,
            end,
            incoming: rt.incoming,
            ack: None,
            retransmit: true,
        };
        let (len, wire_len, payload) = self.write_segment(rt.key, segment, buf, split)?;
        if let Some(front) = self.retransmits.front_mut() {
            front.next = end;
        }
        self.stats.retransmitted_packets += 1;
        let mut t = self.sent(now, to, wire_len, rt.priority, PacketType::Data);
        t.len = len;
        Some((t, payload))
    }

    pub(crate) fn emit_new_data(
        &mut self,
        now: Time,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        let key = self.pick_sendable(now)?;
        let num_priorities = self.config.num_priorities();
        let rpc = self.rpcs.get(key)?;
        let out = rpc.msgout.as_ref()?;
        let to = rpc.peer;
        let start = out.next_offset;
        let end = out.segment_end(start);
        let priority = if start < out.unsched {
            self.peers
                .unsched_priority(to.ip(), out.length(), num_priorities)
        } else {
            out.sched_priority
        };
        let incoming = out.unsched;
        let ack = if rpc.is_client() {
            self.peers.take_ack(to)
        } else {
            None
        };
        let segment = Segment {
            start,
            end,
            incoming,
            ack,
            retransmit: false,
        };
        let (len, wire_len, payload) = self.write_segment(key, segment, buf, split)?;
        if let Some(out) = self.rpcs.get_mut(key).and_then(|r| r.msgout.as_mut()) {
            out.next_offset = end;
        }
        self.refresh_sendable(key);
        let mut t = self.sent(now, to, wire_len, priority, PacketType::Data);
        t.len = len;
        Some((t, payload))
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
        let m = OutMessage::new(vec![0; 100_000].into(), 40_000, 1424);
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
    fn a_lead_packet_comes_first_and_the_rest_keep_their_size() {
        let m = OutMessage::new(vec![0; 200_000].into(), 1_000_000, 65_480).with_lead();
        let segs = segments(&m);
        assert_eq!(segs[0], (0, LEAD_BYTES));
        assert_eq!(segs[1], (LEAD_BYTES, LEAD_BYTES + 65_480));
        assert_eq!(segs.last().unwrap().1, 200_000);
        for &(s, e) in &segs {
            assert_eq!(m.segment_start(s), s);
            assert_eq!(m.segment_start(e - 1), s);
        }
        // One packet's worth (or less) of unscheduled bytes: no lead.
        let one = OutMessage::new(vec![0; 60_000].into(), 1_000_000, 65_480).with_lead();
        assert_eq!(segments(&one), vec![(0, 60_000)]);
        let granted = OutMessage::new(vec![0; 200_000].into(), 40_000, 65_480).with_lead();
        assert_eq!(granted.lead, 0);
    }

    #[test]
    fn short_messages_are_entirely_unscheduled() {
        let m = OutMessage::new(vec![0; 100].into(), 40_000, 1424);
        assert_eq!(m.unsched, 100);
        assert_eq!(m.granted, 100);
        assert_eq!(segments(&m), vec![(0, 100)]);
    }

    #[test]
    fn grants_only_grow_and_are_capped_at_the_length() {
        let mut m = OutMessage::new(vec![0; 50_000].into(), 40_000, 1424);
        assert!(!m.grant(30_000));
        assert!(m.grant(45_000));
        assert!(m.grant(1_000_000));
        assert_eq!(m.granted, 50_000);
    }
}

//! Direct placement: receiving DATA payloads straight into the receive region.
//!
//! A driver that can scatter one datagram over several buffers (`recvmmsg` with iovecs)
//! avoids copying payloads out of its receive buffer: before a receive it asks
//! [`Engine::placements`] where the next DATA packets will most likely go, points the
//! bytes after each datagram's 56-byte header at those region ranges, and afterwards
//! hands every datagram that matches its placement ([`Engine::placement_fits`]) to
//! [`Engine::handle_placed`], which does all that [`Engine::handle_datagram`] does except
//! the copy. A datagram that does not match (another message, another offset, another
//! packet type) is gathered back into one buffer by the driver and handled normally.
//!
//! Why this is safe: a placement only covers bytes of a message still being received,
//! beyond the highest byte received so far, so nothing the kernel writes there can
//! overwrite received data or memory the application holds; only the engine (through its
//! driver) allocates bpages, so the range stays the message's (or free) until the driver
//! handles the batch; and [`Engine::handle_placed`] checks again that the placement still
//! describes the message, dropping the packet (counted in
//! [`Stats::misplaced`](crate::engine::Stats::misplaced)) if the RPC ended or restarted
//! in between. The driver must gather every non-matching datagram back out of the region
//! *before* handling any datagram of the batch, since handling may write the region.
//!
//! Prediction: the sender sends a message's packets in order at a fixed segment size,
//! and mostly one message at a time (SRPT), so the next packets are those after the
//! highest byte received of the message that received data last (then of the one before).

use std::net::{IpAddr, SocketAddr};

use crate::engine::Engine;
use crate::pool::MessageBuffers;
use crate::region::Region;
use crate::rpc::same_endpoint;
use crate::wire::DataRepr;
use crate::Time;

/// Where the payload of one expected DATA packet can be received: up to two region
/// ranges (a packet may straddle two bpages), in message order.
///
/// Direct placement lets a driver that scatters datagrams (`recvmmsg` with iovecs) skip
/// copying payloads out of its receive buffer:
///
/// 1. before a receive, [`Engine::placements`] predicts where the next DATA payloads go
///    (after the highest byte received of the messages that received data last);
/// 2. the driver receives datagram `i`'s first 56 bytes (the DATA header) into its own
///    buffer and the following bytes into placement `i`'s [`spans`](Self::spans);
/// 3. after the receive, *before handling anything*, it checks each datagram with
///    [`Engine::placement_fits`] and gathers every one that does not fit back into its
///    own buffer (handling may write the region);
/// 4. it hands the fitting ones to [`Engine::handle_placed`] (no copy) and the others to
///    [`Engine::handle_datagram`].
///
/// A placement only covers bytes of a message still being received that have not
/// arrived yet, so whatever lands there cannot overwrite received data or bytes the
/// application holds; and [`Engine::handle_placed`] checks again that it still describes
/// its message, dropping the packet (counted in
/// [`Stats::misplaced`](crate::engine::Stats::misplaced)) if the RPC ended or restarted
/// in between: loss recovery asks for it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    key: u32,
    serial: u64,
    peer: SocketAddr,
    local_id: u64,
    offset: u32,
    capacity: u32,
    spans: [(usize, usize); 2],
}

impl Placement {
    /// The region ranges `(offset, len)` that receive the payload, in order; their
    /// lengths add up to [`capacity`](Self::capacity).
    pub fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.spans.iter().copied().filter(|&(_, len)| len > 0)
    }

    /// Payload bytes the placement holds.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The offset in its message of the first byte the placement expects.
    pub fn message_offset(&self) -> u32 {
        self.offset
    }

    /// The sender the placement expects the packet from.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// The region ranges of `[offset, offset + len)` of a message, if it spans at most two.
fn spans_of(buffers: &MessageBuffers, offset: u32, len: u32) -> Option<[(usize, usize); 2]> {
    let len = len as usize;
    let (a, contiguous) = buffers.locate(offset)?;
    let first = contiguous.min(len);
    if first == len {
        return Some([(a, first), (0, 0)]);
    }
    let (b, contiguous) = buffers.locate(offset.checked_add(first as u32)?)?;
    (contiguous >= len - first).then_some([(a, first), (b, len - first)])
}

impl<R: Region> Engine<R> {
    /// Predicts where the payloads of the next DATA packets will go and appends up to
    /// `max` [`Placement`]s to `out` (cleared first), disjoint from each other and from
    /// every byte already received. Empty when nothing is being received.
    ///
    /// ```
    /// use homa_proto::engine::{Engine, EngineOptions};
    /// use homa_proto::Config;
    /// let e: Engine = Engine::new(Config::default(), EngineOptions::server(99, 1), vec![0; 1 << 21]).unwrap();
    /// let mut out = Vec::new();
    /// e.placements(8, &mut out);
    /// assert!(out.is_empty(), "no message is arriving");
    /// ```
    pub fn placements(&self, max: usize, out: &mut Vec<Placement>) {
        out.clear();
        for key in self.last_data.into_iter().flatten() {
            let Some(rpc) = self.rpcs.get(key) else {
                continue;
            };
            let Some(m) = rpc.msgin.as_ref() else {
                continue;
            };
            let Some(buffers) = m.buffers.as_ref() else {
                continue;
            };
            if m.is_complete() {
                continue;
            }
            // Until a full-sized packet shows the sender's segment size, guess that it
            // sends packets as large as this engine would to it.
            let seg = if m.seg > 0 {
                m.seg
            } else {
                self.max_seg(rpc.peer.ip())
            };
            let limit = m.granted.min(m.length);
            let mut offset = m.recv_end;
            while out.len() < max && offset < limit {
                let capacity = seg.min(m.length - offset);
                let Some(spans) = spans_of(buffers, offset, capacity) else {
                    break;
                };
                out.push(Placement {
                    key,
                    serial: rpc.serial,
                    peer: rpc.peer,
                    local_id: rpc.id,
                    offset,
                    capacity,
                    spans,
                });
                offset += capacity;
            }
        }
    }

    /// Whether a datagram of `packet_len` bytes from `from`, whose first bytes are
    /// `head`, is the DATA packet `placement` expects: a valid DATA header for this
    /// port, from the placement's peer and RPC, at its offset, with a payload that fits.
    /// Changes nothing.
    pub fn placement_fits(
        &self,
        from: IpAddr,
        head: &[u8],
        packet_len: usize,
        placement: &Placement,
    ) -> bool {
        let Ok((d, payload_len)) = DataRepr::parse_header(head, packet_len) else {
            return false;
        };
        d.common.dport == self.port()
            && same_endpoint(SocketAddr::new(from, d.common.sport), placement.peer)
            && d.common.sender_id ^ 1 == placement.local_id
            && d.offset == placement.offset
            && payload_len <= placement.capacity()
    }

    /// Handles a DATA packet whose first bytes are `head` and whose payload was received
    /// straight into the region at `placement` (for which
    /// [`placement_fits`](Self::placement_fits) held): everything
    /// [`handle_datagram`](Self::handle_datagram) does, without copying the payload. If
    /// the placement no longer describes its message, the packet is dropped and counted
    /// in [`Stats::misplaced`](crate::engine::Stats::misplaced).
    pub fn handle_placed(
        &mut self,
        now: Time,
        from: IpAddr,
        head: &[u8],
        packet_len: usize,
        placement: &Placement,
    ) {
        if !self.begin_receive(now) {
            return;
        }
        match DataRepr::parse_header(head, packet_len) {
            Ok((d, payload_len)) => self.dispatch(
                now,
                from,
                crate::wire::Repr::Data(d),
                Some((payload_len, placement)),
            ),
            Err(e) => self.count_malformed(e),
        }
    }

    /// Whether `placement` still describes where `d`'s payload of `len` bytes belongs:
    /// same RPC (not ended, not restarted), same buffers, same offset, and it fits.
    pub(crate) fn placement_holds(
        &self,
        src: SocketAddr,
        local_id: u64,
        d: &DataRepr<'_>,
        len: usize,
        p: &Placement,
    ) -> bool {
        let Some(rpc) = self.rpcs.get(p.key) else {
            return false;
        };
        let Some(m) = rpc.msgin.as_ref() else {
            return false;
        };
        let Some(buffers) = m.buffers.as_ref() else {
            return false;
        };
        rpc.serial == p.serial
            && rpc.id == local_id
            && same_endpoint(rpc.peer, src)
            && same_endpoint(p.peer, src)
            && m.length == d.message_length
            && d.offset == p.offset
            && len <= p.capacity()
            && spans_of(buffers, p.offset, p.capacity) == Some(p.spans)
    }
}

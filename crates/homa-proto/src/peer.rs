//! Per-host state: the peer's unscheduled cutoffs (PROTOCOL.md 3.4), when we last sent
//! it ours, and the acks waiting to be piggy-backed to it (4.5).

use crate::engine::{Engine, TICK};
use crate::region::Region;
use crate::wire::{CutoffsRepr, Repr};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::wire::{Ack, AckList, MAX_MESSAGE_LENGTH, MAX_PRIORITIES};
use crate::Time;

/// Most peers remembered. Beyond this, peers with no pending acks are forgotten (their
/// cutoffs are relearned on the next exchange), so packets from many addresses cannot
/// grow the table without bound.
pub(crate) const MAX_PEERS: usize = 16_384;

/// "Infinity" in a cutoff table (the kernel's INT_MAX).
const CUTOFF_INFINITY: u32 = i32::MAX as u32;

#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The peer's cutoffs: entry i = largest message length using level i.
    cutoffs: [u32; MAX_PRIORITIES],
    /// Version of the peer's table we hold (0 = none received).
    pub(crate) cutoff_version: u16,
    /// When we last sent this peer our CUTOFFS.
    pub(crate) last_cutoffs_sent: Option<Time>,
    /// Acks for finished RPCs, per server port on this host, most recent last, with the
    /// tick at which the list last went from empty to non-empty.
    acks: Vec<(u16, AckList, u64)>,
}

impl Peer {
    fn new() -> Self {
        // Before any CUTOFFS: entry 6 = infinity, so every unscheduled byte goes at level 6.
        let mut cutoffs = [0; MAX_PRIORITIES];
        cutoffs[MAX_PRIORITIES - 2] = CUTOFF_INFINITY;
        Peer {
            cutoffs,
            cutoff_version: 0,
            last_cutoffs_sent: None,
            acks: Vec::new(),
        }
    }

    /// Stores a CUTOFFS table from this peer; entry 0 is forced to infinity.
    pub(crate) fn set_cutoffs(&mut self, mut cutoffs: [u32; MAX_PRIORITIES], version: u16) {
        cutoffs[0] = CUTOFF_INFINITY;
        self.cutoffs = cutoffs;
        self.cutoff_version = version;
    }

    /// Level for the unscheduled bytes of a message of `length` bytes: scanning down
    /// from `num_priorities - 1`, the first level whose cutoff covers the length.
    pub(crate) fn unsched_priority(&self, length: u32, num_priorities: u8) -> u8 {
        let top = usize::from(num_priorities.clamp(1, MAX_PRIORITIES as u8)) - 1;
        (0..=top)
            .rev()
            .find(|&i| self.cutoffs[i] >= length.min(MAX_MESSAGE_LENGTH))
            .unwrap_or(0) as u8
    }

    /// Queues an ack for `server_port` at timer tick `tick`. If five are already pending
    /// for that port, they are returned (to go out in an ACK packet now, with the new one
    /// in its header).
    pub(crate) fn push_ack(&mut self, server_port: u16, ack: Ack, tick: u64) -> Option<AckList> {
        let (list, since) = match self.acks.iter_mut().find(|(p, _, _)| *p == server_port) {
            Some((_, list, since)) => (list, since),
            None => {
                self.acks.push((server_port, AckList::new(), tick));
                let (_, list, since) = self.acks.last_mut().expect("just pushed");
                (list, since)
            }
        };
        if list.is_full() {
            return Some(core::mem::take(list));
        }
        if list.is_empty() {
            *since = tick;
        }
        // Cannot fail: the list is not full.
        let _ = list.push(ack);
        None
    }

    /// Takes the most recent pending ack for `server_port`, to piggy-back on a DATA packet.
    pub(crate) fn take_ack(&mut self, server_port: u16) -> Option<Ack> {
        let (_, list, _) = self.acks.iter_mut().find(|(p, _, _)| *p == server_port)?;
        let mut rest = AckList::new();
        let (&last, before) = list.as_slice().split_last()?;
        for a in before {
            let _ = rest.push(*a);
        }
        *list = rest;
        Some(last)
    }

    /// Takes every pending ack for `server_port` (to fill an ACK packet).
    pub(crate) fn take_all_acks(&mut self, server_port: u16) -> AckList {
        self.acks
            .iter_mut()
            .find(|(p, _, _)| *p == server_port)
            .map(|(_, list, _)| core::mem::take(list))
            .unwrap_or_default()
    }

    fn has_pending_acks(&self) -> bool {
        self.acks.iter().any(|(_, l, _)| !l.is_empty())
    }
}

/// All peers this engine talks to, by IP address.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: HashMap<IpAddr, Peer>,
    /// Peers that may hold pending acks.
    with_acks: Vec<IpAddr>,
}

impl PeerTable {
    /// The peer for `addr`, created if needed. When the table is full, idle peers (no
    /// pending acks) are forgotten until it is half full, so packets from many addresses
    /// cost amortised O(1) each and cannot grow the table without bound.
    pub(crate) fn get_mut(&mut self, addr: IpAddr) -> &mut Peer {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&addr) {
            let mut excess = self.peers.len() - MAX_PEERS / 2;
            self.peers.retain(|_, p| {
                if excess > 0 && !p.has_pending_acks() {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
            self.peers.shrink_to(MAX_PEERS);
        }
        self.peers.entry(addr).or_insert_with(Peer::new)
    }

    /// Gives back memory after many peers were forgotten.
    pub(crate) fn shrink(&mut self) {
        if self.peers.capacity() > 4 * self.peers.len() + 64 {
            self.peers.shrink_to(2 * self.peers.len());
        }
    }

    /// Peers allocated room for.
    pub(crate) fn capacity(&self) -> usize {
        self.peers.capacity()
    }

    /// Unscheduled level for a message to `dest`.
    pub(crate) fn unsched_priority(&self, dest: IpAddr, length: u32, num_priorities: u8) -> u8 {
        match self.peers.get(&dest) {
            Some(p) => p.unsched_priority(length, num_priorities),
            None => Peer::new().unsched_priority(length, num_priorities),
        }
    }

    /// The version of `dest`'s cutoffs we hold (0 if none).
    pub(crate) fn cutoff_version(&self, dest: IpAddr) -> u16 {
        self.peers.get(&dest).map_or(0, |p| p.cutoff_version)
    }

    /// Queues an ack for the server socket at `server` (see [`Peer::push_ack`]).
    pub(crate) fn push_ack(&mut self, server: SocketAddr, ack: Ack, tick: u64) -> Option<AckList> {
        let peer = self.get_mut(server.ip());
        let was_idle = !peer.has_pending_acks();
        let full = peer.push_ack(server.port(), ack, tick);
        if was_idle && !self.with_acks.contains(&server.ip()) {
            self.with_acks.push(server.ip());
        }
        full
    }

    /// Takes every list of acks that has waited a whole tick (queued before tick
    /// `tick - 1`) without a DATA packet to ride on, as (server socket, acks) pairs.
    pub(crate) fn take_stale_acks(&mut self, tick: u64) -> Vec<(SocketAddr, AckList)> {
        let mut out = Vec::new();
        let peers = &mut self.peers;
        self.with_acks.retain(|ip| {
            let Some(peer) = peers.get_mut(ip) else {
                return false;
            };
            for (port, list, since) in &mut peer.acks {
                if !list.is_empty() && *since + 1 < tick {
                    out.push((SocketAddr::new(*ip, *port), core::mem::take(list)));
                }
            }
            peer.has_pending_acks()
        });
        out
    }

    /// Whether some peer may still hold pending acks.
    pub(crate) fn any_pending_acks(&self) -> bool {
        !self.with_acks.is_empty()
    }

    /// Takes a pending ack for the server socket at `dest`.
    pub(crate) fn take_ack(&mut self, dest: SocketAddr) -> Option<Ack> {
        self.peers.get_mut(&dest.ip())?.take_ack(dest.port())
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

impl<R: Region> Engine<R> {
    /// CUTOFFS from `from`: remember its table and version (echoed in our DATA to it).
    pub(crate) fn handle_cutoffs(&mut self, from: IpAddr, c: &CutoffsRepr) {
        self.peers
            .get_mut(from)
            .set_cutoffs(c.unsched_cutoffs, c.cutoff_version);
    }

    /// Sends our CUTOFFS to a peer whose DATA carried another version, at most once a
    /// tick per peer.
    pub(crate) fn maybe_send_cutoffs(&mut self, now: Time, to: SocketAddr, local_id: u64) {
        let peer = self.peers.get_mut(to.ip());
        if peer
            .last_cutoffs_sent
            .is_some_and(|t| now.saturating_duration_since(t) < TICK)
        {
            return;
        }
        peer.last_cutoffs_sent = Some(now);
        let repr = Repr::Cutoffs(CutoffsRepr {
            common: self.common_to(to, local_id),
            unsched_cutoffs: self.config.unsched_cutoffs(),
            cutoff_version: self.config.cutoff_version(),
        });
        self.queue_control(to, repr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_cutoffs_unscheduled_data_goes_at_level_6() {
        let p = Peer::new();
        assert_eq!(p.unsched_priority(100, 8), 6);
        assert_eq!(p.unsched_priority(1_000_000, 8), 6);
    }

    #[test]
    fn default_kernel_table_maps_lengths_to_levels() {
        let mut p = Peer::new();
        p.set_cutoffs([0, 0, 0, 0, 1_000_000, 15_000, 2800, 200], 1);
        assert_eq!(p.unsched_priority(200, 8), 7);
        assert_eq!(p.unsched_priority(201, 8), 6);
        assert_eq!(p.unsched_priority(2800, 8), 6);
        assert_eq!(p.unsched_priority(15_000, 8), 5);
        assert_eq!(p.unsched_priority(15_001, 8), 4);
        assert_eq!(p.unsched_priority(1_000_000, 8), 4);
        // With only 4 levels in use locally, the scan starts at level 3.
        assert_eq!(p.unsched_priority(100, 4), 0);
    }

    fn ack(client_id: u64) -> Ack {
        Ack {
            client_id,
            server_port: 4000,
        }
    }

    #[test]
    fn acks_piggyback_most_recent_first_and_overflow_after_five() {
        let mut p = Peer::new();
        for id in 1..=5u64 {
            assert!(p.push_ack(4000, ack(2 * id), 0).is_none());
        }
        let overflow = p.push_ack(4000, ack(12), 0).unwrap();
        assert_eq!(overflow.len(), 5);
        assert!(p.take_ack(4000).is_none(), "the overflow took them all");
        p.push_ack(4000, ack(20), 0);
        p.push_ack(4000, ack(22), 0);
        assert_eq!(p.take_ack(4000).unwrap().client_id, 22);
        assert_eq!(p.take_ack(4001), None);
        assert_eq!(p.take_all_acks(4000).len(), 1);
    }

    #[test]
    fn acks_that_waited_a_whole_tick_are_flushed() {
        let mut t = PeerTable::default();
        let server: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        assert!(t.push_ack(server, ack(2), 7).is_none());
        assert!(t.push_ack(server, ack(4), 7).is_none());
        assert!(t.any_pending_acks());
        assert!(
            t.take_stale_acks(7).is_empty(),
            "queued during this tick: not yet"
        );
        assert!(t.take_stale_acks(8).is_empty(), "not a whole tick yet");
        let flushed = t.take_stale_acks(9);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].0, server);
        assert_eq!(flushed[0].1.len(), 2);
        assert!(!t.any_pending_acks());
        assert!(t.take_stale_acks(10).is_empty());
    }
}

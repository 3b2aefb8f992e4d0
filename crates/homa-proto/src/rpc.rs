//! RPC state (PROTOCOL.md 2): ids, the two messages, where the RPC is in its life; the
//! table that holds RPCs and its indexes (by id, and by peer for ICMP reports); looking
//! an RPC up for a received packet, which checks that the packet comes from the RPC's
//! peer (address and Homa port); freeing RPCs; the cap on server RPCs.
//!
//! **Source check.** The kernel matches a client RPC by id alone and a server RPC by
//! client address and id (PROTOCOL.md 2.3), so anyone who can guess an id can inject a
//! response, acknowledge, cancel or keep alive someone else's RPC. Here every packet for
//! an existing RPC must come from the address *and* Homa port the RPC talks to (the
//! request's destination for a client RPC, the request's source for a server RPC);
//! anything else is dropped and counted in [`Stats::forged`](crate::engine::Stats::forged).
//! The Linux module sends every packet of an RPC from the port the RPC uses, so this
//! stays interoperable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use crate::engine::{Engine, Event, RpcError, RpcFailure, Unreachable};
use crate::incoming::InMessage;
use crate::outgoing::OutMessage;
use crate::region::Region;

/// Whether an id names the client side (even) or the server side (odd) of an RPC.
pub(crate) fn is_client_id(id: u64) -> bool {
    id & 1 == 0
}

/// Where an RPC is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RpcState {
    /// Client: sending the request / waiting for the response. Server: sending the response.
    Outgoing,
    /// Receiving a message: the response (client) or the request (server).
    Incoming,
    /// Server: the request was delivered and the application has not responded yet.
    InService,
}

#[derive(Debug)]
pub(crate) struct Rpc {
    /// Local id: even on the client, odd on the server.
    pub(crate) id: u64,
    /// The other end: its address and Homa port.
    pub(crate) peer: SocketAddr,
    /// The application's completion cookie (client RPCs).
    pub(crate) cookie: u64,
    pub(crate) state: RpcState,
    pub(crate) msgout: Option<OutMessage>,
    pub(crate) msgin: Option<InMessage>,
    /// Ticks since the peer last showed signs of life for this RPC.
    pub(crate) silent_ticks: u32,
    /// Probes (RESENDs, NEED_ACKs, keep-alive GRANTs) sent in the current wait
    /// (`probe.rs`).
    pub(crate) probes: u32,
    /// The tick of the latest of those probes.
    pub(crate) last_probe: u64,
    /// A packet came from the peer for this RPC since the last timer pass (the pass
    /// records it in the engine's liveness, `probe.rs`).
    pub(crate) heard: bool,
    /// Server: the tick on which the response was first seen fully sent.
    pub(crate) done_tick: Option<u64>,
    /// Unique for the engine's lifetime; orders RPCs by age and detects stale handles.
    pub(crate) serial: u64,
    /// The bytes-left value under which the RPC is filed in the engine's sendable set.
    pub(crate) queued: Option<u32>,
}

impl Rpc {
    pub(crate) fn is_client(&self) -> bool {
        is_client_id(self.id)
    }

    /// Whether its incoming message is owed bytes: it has buffer space and granted bytes
    /// not yet received (silence then means loss, and is probed).
    pub(crate) fn expecting_data(&self) -> bool {
        self.msgin
            .as_ref()
            .is_some_and(|m| m.buffers.is_some() && m.received < m.granted)
    }
}

/// A slab: RPCs live at stable indices (`u32` keys); the lowest free key is reused first,
/// so after a burst the live keys sit at the front and [`shrink`](Self::shrink) can hand
/// the rest of the memory back.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    slots: Vec<Option<Rpc>>,
    free: BinaryHeap<Reverse<u32>>,
    len: usize,
}

impl Slab {
    pub(crate) fn insert(&mut self, rpc: Rpc) -> u32 {
        self.len += 1;
        if let Some(Reverse(k)) = self.free.pop() {
            self.slots[k as usize] = Some(rpc);
            k
        } else {
            self.slots.push(Some(rpc));
            (self.slots.len() - 1) as u32
        }
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<Rpc> {
        let rpc = self.slots.get_mut(key as usize)?.take()?;
        self.free.push(Reverse(key));
        self.len -= 1;
        Some(rpc)
    }

    pub(crate) fn get(&self, key: u32) -> Option<&Rpc> {
        self.slots.get(key as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut Rpc> {
        self.slots.get_mut(key as usize)?.as_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (live or free).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Keys of every live RPC.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(k, _)| k as u32)
    }

    /// Drops free slots at the end and gives back memory well beyond what is used.
    pub(crate) fn shrink(&mut self) {
        while self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
        let end = self.slots.len() as u32;
        self.free.retain(|&Reverse(k)| k < end);
        if self.slots.capacity() > 2 * self.slots.len() + 64 {
            self.slots
                .shrink_to(self.slots.len() + self.slots.len() / 2);
            self.free.shrink_to_fit();
        }
    }
}

/// What a received packet's source and id name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The RPC, and the packet comes from its peer.
    Found(u32),
    /// No RPC has this id (for this client address, on a server).
    Unknown,
    /// An RPC has this id but talks to another address or port: the packet is forged
    /// (or misdirected); it was counted.
    Forged,
}

/// Whether `a` and `b` are the same address and port (IPv6 flow labels and scope ids,
/// which received packets do not carry, are ignored).
pub(crate) fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

impl<R: Region> Engine<R> {
    /// Files a new RPC in the table and its indexes; returns its key.
    pub(crate) fn insert_rpc(&mut self, rpc: Rpc) -> u32 {
        let (id, peer, client) = (rpc.id, rpc.peer, rpc.is_client());
        let key = self.rpcs.insert(rpc);
        if client {
            self.client_ids.insert(id, key);
        } else {
            self.server_ids.insert((peer.ip(), id), key);
        }
        self.by_peer.insert((peer.ip(), peer.port(), key));
        key
    }

    /// The RPC a packet from `src` with local id `local_id` belongs to.
    pub(crate) fn lookup(&mut self, src: SocketAddr, local_id: u64) -> Lookup {
        let key = if is_client_id(local_id) {
            self.client_ids.get(&local_id)
        } else {
            self.server_ids.get(&(src.ip(), local_id))
        };
        let Some(&key) = key else {
            return Lookup::Unknown;
        };
        match self.rpcs.get_mut(key) {
            Some(rpc) if same_endpoint(rpc.peer, src) => {
                rpc.heard = true;
                Lookup::Found(key)
            }
            Some(_) => {
                self.stats.forged += 1;
                Lookup::Forged
            }
            None => Lookup::Unknown,
        }
    }

    /// [`lookup`](Self::lookup) for packets that are dropped when no RPC matches (GRANT,
    /// BUSY, RPC_UNKNOWN): the RPC's key, or `None` (an unknown one counted in
    /// `unknown_rpc`, a forged one in `forged`).
    pub(crate) fn lookup_known(&mut self, src: SocketAddr, local_id: u64) -> Option<u32> {
        match self.lookup(src, local_id) {
            Lookup::Found(key) => Some(key),
            Lookup::Forged => None,
            Lookup::Unknown => {
                self.stats.unknown_rpc += 1;
                None
            }
        }
    }

    /// A server RPC heard from its client through a packet that shows it alive (a RESEND
    /// probe, a keep-alive): its silence count restarts — unless the server is waiting for
    /// the request's DATA, which only DATA answers (a client that probes but never sends
    /// the bytes it owes must still time out).
    pub(crate) fn client_alive(&mut self, key: u32) {
        if let Some(rpc) = self.rpcs.get_mut(key) {
            let waiting_for_data = rpc.state == RpcState::Incoming && rpc.expecting_data();
            if !rpc.is_client() && !waiting_for_data {
                rpc.silent_ticks = 0;
            }
        }
    }

    /// Tells the engine that `dest` is unreachable (from an ICMP error or the
    /// transport's equivalent): client RPCs to it fail with the matching [`RpcError`],
    /// server RPCs for it are deleted (PROTOCOL.md 4.6). Costs O(log n) plus the RPCs of
    /// that host, whatever the number of other RPCs.
    pub fn handle_unreachable(&mut self, dest: SocketAddr, kind: Unreachable) {
        let error = match kind {
            Unreachable::Port => RpcError::PortUnreachable,
            Unreachable::Host => RpcError::HostUnreachable,
            Unreachable::Protocol => RpcError::ProtocolUnsupported,
        };
        // A port report concerns that port of the host, the others every port.
        let ip = dest.ip();
        let (low, high) = match kind {
            Unreachable::Port => (dest.port(), dest.port()),
            _ => (0, u16::MAX),
        };
        let keys: Vec<u32> = self
            .by_peer
            .range((ip, low, 0)..=(ip, high, u32::MAX))
            .map(|&(_, _, k)| k)
            .collect();
        for key in keys {
            self.fail_or_discard(key, error);
        }
        self.unstall_if_pending(self.now);
    }

    /// Ends RPC `key`: a client RPC fails with `error`, a server RPC is discarded.
    pub(crate) fn fail_or_discard(&mut self, key: u32, error: RpcError) {
        if let Some(rpc) = self.free_rpc(key) {
            if rpc.is_client() {
                self.events.push_back(Event::Failed(RpcFailure {
                    id: rpc.id,
                    peer: rpc.peer,
                    cookie: rpc.cookie,
                    error,
                }));
            }
        }
    }

    /// Removes an RPC and everything that refers to it; returns it.
    pub(crate) fn free_rpc(&mut self, key: u32) -> Option<Rpc> {
        let rpc = self.rpcs.remove(key)?;
        if rpc.heard {
            let timeout = u64::from(self.config.timeout_ticks());
            self.liveness.heard(rpc.peer, self.ticks, timeout);
        }
        self.by_peer.remove(&(rpc.peer.ip(), rpc.peer.port(), key));
        if rpc.is_client() {
            self.client_ids.remove(&rpc.id);
        } else {
            self.server_ids.remove(&(rpc.peer.ip(), rpc.id));
            if rpc.state != RpcState::Incoming {
                self.add_tombstone(rpc.peer.ip(), rpc.id);
            }
        }
        if let Some(remaining) = rpc.queued {
            self.sendable.remove(&(remaining, rpc.serial, key));
            self.sendable_by_age.remove(&(rpc.serial, key));
        }
        if let Some(out) = &rpc.msgout {
            self.queued_bytes -= u64::from(out.length());
        }
        if let Some(m) = &rpc.msgin {
            if m.scheduled {
                self.grants.remove(key);
                // A freed slot may promote a waiting message.
                self.grants_dirty = true;
            }
            if !m.is_complete() {
                self.stalled.remove(&m.stall_entry(rpc.serial, key));
                if let Some(b) = &m.buffers {
                    // The engine still owns an incomplete message's buffers.
                    let _ = self.pool.release_all(b);
                }
            }
        }
        if !self.stalled.is_empty() {
            self.unstall_pending = true;
        }
        Some(rpc)
    }

    /// Gives back memory the RPC table and its indexes no longer need (after a burst of
    /// RPCs, e.g. a flood of requests).
    pub(crate) fn compact_rpcs(&mut self) {
        self.rpcs.shrink();
        shrink_map(&mut self.client_ids);
        shrink_map(&mut self.server_ids);
        shrink_deque(&mut self.events);
        shrink_deque(&mut self.control);
        shrink_deque(&mut self.retransmits);
    }
}

/// Shrinks a map whose capacity is far above its length.
pub(crate) fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut std::collections::HashMap<K, V>) {
    if m.capacity() > 4 * m.len() + 64 {
        m.shrink_to(2 * m.len());
    }
}

/// Shrinks a queue whose capacity is far above its length.
pub(crate) fn shrink_deque<T>(q: &mut std::collections::VecDeque<T>) {
    if q.capacity() > 4 * q.len() + 64 {
        q.shrink_to(2 * q.len());
    }
}

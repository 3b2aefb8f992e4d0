//! RPC state (PROTOCOL.md 2): ids, the two messages, and where the RPC is in its life.

use std::net::IpAddr;

use crate::engine::{Engine, Event, RpcError, RpcFailure, Unreachable};
use crate::region::Region;

use std::net::SocketAddr;

use crate::incoming::InMessage;
use crate::outgoing::OutMessage;

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
}

/// A simple slab: RPCs live at stable indices (`u32` keys) reused after removal.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    slots: Vec<Option<Rpc>>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    pub(crate) fn insert(&mut self, rpc: Rpc) -> u32 {
        self.len += 1;
        if let Some(k) = self.free.pop() {
            self.slots[k as usize] = Some(rpc);
            k
        } else {
            self.slots.push(Some(rpc));
            (self.slots.len() - 1) as u32
        }
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<Rpc> {
        let rpc = self.slots.get_mut(key as usize)?.take()?;
        self.free.push(key);
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

    /// Keys of every live RPC.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(k, _)| k as u32)
    }
}

impl<R: Region> Engine<R> {
    /// Tells the engine that `dest` is unreachable (from an ICMP error or the
    /// transport's equivalent): client RPCs to it fail with the matching [`RpcError`],
    /// server RPCs for it are deleted (PROTOCOL.md 4.6).
    pub fn handle_unreachable(&mut self, dest: SocketAddr, kind: Unreachable) {
        let error = match kind {
            Unreachable::Port => RpcError::PortUnreachable,
            Unreachable::Host => RpcError::HostUnreachable,
            Unreachable::Protocol => RpcError::ProtocolUnsupported,
        };
        let keys: Vec<u32> = self
            .rpcs
            .keys()
            .filter(|&k| {
                self.rpcs.get(k).is_some_and(|r| {
                    r.peer.ip() == dest.ip()
                        && (kind != Unreachable::Port || r.peer.port() == dest.port())
                })
            })
            .collect();
        for key in keys {
            self.fail_or_discard(key, error);
        }
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
                self.stalled.remove(&(m.length, rpc.serial, key));
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

    pub(crate) fn find(&self, from: IpAddr, local_id: u64) -> Option<u32> {
        if is_client_id(local_id) {
            self.client_ids.get(&local_id).copied()
        } else {
            self.server_ids.get(&(from, local_id)).copied()
        }
    }
}

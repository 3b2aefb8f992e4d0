//! The 1 ms timer tick (PROTOCOL.md 4.1): silence counting, RESENDs, timeouts,
//! NEED_ACKs, the reclaiming of server RPCs whose client went silent, client
//! keep-alives, and the periodic compaction of the engine's tables.

use std::net::SocketAddr;

use crate::engine::{Control, Engine, RpcError};
use crate::region::Region;
use crate::rpc::RpcState;
use crate::wire::{GrantRepr, Repr, ResendRepr, RESEND_ALL};
use crate::Time;

/// Every this many ticks, tables give back memory they no longer need.
const COMPACT_TICKS: u64 = 1000;

impl<R: Region> Engine<R> {
    /// One timer pass over every RPC, in the kernel's order of checks.
    pub(crate) fn tick(&mut self, now: Time) {
        self.ticks += 1;
        let tick = self.ticks;
        let timeout_ticks = self.config.timeout_ticks();
        let mut keys = core::mem::take(&mut self.scratch_keys);
        let mut due = core::mem::take(&mut self.scratch_probes);
        keys.clear();
        keys.extend(self.rpcs.keys());
        // Peers heard from since the last pass are alive now, before any RPC is judged.
        for &key in &keys {
            if let Some(rpc) = self.rpcs.get_mut(key).filter(|r| r.heard) {
                rpc.heard = false;
                let peer = rpc.peer;
                self.liveness.heard(peer, tick, u64::from(timeout_ticks));
            }
        }
        for &key in &keys {
            // 0. A message whose sender went idle gives up its grants.
            self.unschedule_if_idle(key);
            let Some(rpc) = self.rpcs.get_mut(key) else {
                continue;
            };
            if !rpc.is_client() {
                self.tick_server(key, tick, &mut due);
                continue;
            }
            if rpc.silent_ticks == 0 {
                // A new silence starts.
                rpc.probes = 0;
            }
            rpc.silent_ticks += 1;
            // 2. Receiving: silent is fine if nothing granted is missing, or while
            //    waiting for buffer space.
            if rpc.state == RpcState::Incoming {
                let expecting = rpc.expecting_data();
                if !expecting {
                    // Waiting for grants (or for buffer space): the server waits too,
                    // and frees its RPC if this client falls silent, so tell it, every
                    // `resend_interval` ticks (within the peer's probe budget), that we
                    // are still here.
                    let (silent, probes, last_probe, peer) =
                        (rpc.silent_ticks, rpc.probes, rpc.last_probe, rpc.peer);
                    if self.probe_due(silent, probes, last_probe) {
                        due.push((peer, last_probe, key));
                    }
                    continue;
                }
            }
            // 4. Client still sending granted bytes: nothing is owed by the server yet.
            if rpc.state == RpcState::Outgoing && rpc.msgout.as_ref().is_some_and(|m| m.sendable())
            {
                rpc.silent_ticks = 0;
                continue;
            }
            // 5. Silence: RESEND every `resend_interval` ticks from `resend_ticks` (within
            //    the peer's budget, `probe.rs`), abort at `timeout_ticks` unless the peer
            //    is alive and this RPC has not yet had its share of probes.
            let (silent, probes, last_probe, peer) =
                (rpc.silent_ticks, rpc.probes, rpc.last_probe, rpc.peer);
            if silent >= timeout_ticks && self.timed_out(peer, probes) {
                self.stats.timeouts += 1;
                self.fail_or_discard(key, RpcError::Timeout);
            } else if self.probe_due(silent, probes, last_probe) {
                due.push((peer, last_probe, key));
            }
        }
        self.scratch_keys = keys;
        self.send_due_probes(&mut due);
        self.scratch_probes = due;
        // Acks that found no DATA packet to ride on for a whole tick go out in ACK
        // packets (up to six each), so servers rarely need to ask with NEED_ACK. The
        // kernel waits to be asked; under bursts of completions that means one NEED_ACK
        // per RPC per tick, a storm that can swamp the client.
        for (to, mut acks) in self.peers.take_stale_acks(tick) {
            let Some(&first) = acks.as_slice().first() else {
                continue;
            };
            let mut rest = crate::wire::AckList::new();
            for a in &acks.as_slice()[1..] {
                let _ = rest.push(*a);
            }
            acks = rest;
            let common = crate::wire::CommonRepr {
                sport: self.port(),
                dport: to.port(),
                sender_id: first.client_id,
            };
            self.queue_control(to, Repr::Ack(crate::wire::AckRepr { common, acks }));
        }
        // 6. Messages whose senders went idle give up their buffer space if a stalled
        //    message needs it.
        self.reclaim_idle_buffers(now);
        if tick % COMPACT_TICKS == 0 {
            self.liveness.prune(tick, u64::from(timeout_ticks));
            self.compact();
        }
    }

    /// Gives back memory the tables no longer need: every `COMPACT_TICKS` ticks, and
    /// when the engine goes idle (the timer stops).
    pub(crate) fn compact(&mut self) {
        self.compact_rpcs();
        self.compact_tombstones();
        self.peers.shrink();
    }

    /// One tick of a server RPC. Every server RPC is freed once its client has been
    /// silent for `timeout_ticks` while the server waits on it — for the rest of the
    /// request, for grants for the response, for the application (a live client probes
    /// with RESENDs, answered with BUSY), or for the ack — so a client that vanishes (or
    /// forges a first packet and never follows up) cannot pin server state, transmit
    /// memory or receive buffers. DATA of the request, GRANTs (as in the kernel) and
    /// RESENDs (here) from the client reset the count; while the server waits for the
    /// request's bytes, only DATA does (`rpc.rs`, `client_alive`). A client probes within
    /// a budget per peer (`probe.rs`), so an RPC waiting for grants or for the
    /// application is freed only when the client is silent for all its RPCs, and one
    /// waiting for bytes the client owes only after its share of probes went unanswered.
    /// The kernel never times out a server RPC that waits for grants, for its
    /// application or for an ack (PROTOCOL.md 4.1, 7.2); this is a deviation.
    fn tick_server(&mut self, key: u32, tick: u64, due: &mut Vec<crate::probe::DueProbe>) {
        let timeout_ticks = self.config.timeout_ticks();
        let request_ack_ticks = u64::from(self.config.request_ack_ticks());
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        match rpc.state {
            RpcState::Outgoing if rpc.msgout.as_ref().is_some_and(|m| m.fully_sent()) => {
                // 1. Response fully sent: wait for the client's ack, asking with NEED_ACK
                //    from `request_ack_ticks` on.
                if rpc.done_tick.is_none() {
                    rpc.done_tick = Some(tick);
                    rpc.probes = 0;
                }
                let waited = tick - rpc.done_tick.unwrap_or(tick);
                let (probes, last_probe, peer) = (rpc.probes, rpc.last_probe, rpc.peer);
                if waited >= u64::from(timeout_ticks) && self.timed_out(peer, probes) {
                    // The kernel asks forever (a to-do in its notes.txt); a client
                    // that vanished must not pin server state, so give up after
                    // `timeout_ticks` ticks in which the client neither acked nor asked
                    // for data (a RESEND restarts the wait) and either fell silent or
                    // left its share of NEED_ACKs unanswered. The RPC is tombstoned, so
                    // the request cannot run twice.
                    self.stats.unacknowledged_discards += 1;
                    self.free_rpc(key);
                } else if waited >= request_ack_ticks
                    && self.probe_interval_passed(probes, last_probe)
                {
                    // The kernel asks on every tick; with many unacknowledged RPCs
                    // that is a storm of NEED_ACKs and ACKs that swamps both hosts.
                    // Asking every `resend_interval` ticks after the first, within the
                    // client's probe budget (`probe.rs`), is wire-compatible; clients
                    // also flush their acks unasked.
                    due.push((peer, last_probe, key));
                }
            }
            RpcState::Outgoing if rpc.msgout.as_ref().is_some_and(|m| m.sendable()) => {
                // 3. Granted bytes still to send: the ball is in our court.
                rpc.silent_ticks = 0;
            }
            RpcState::Outgoing | RpcState::InService => {
                // Waiting for grants for the response (a live client sends keep-alive
                // GRANTs for it), or for the application (it probes): within its budget
                // (`probe.rs`), so only a client silent for every RPC has vanished.
                rpc.silent_ticks += 1;
                let peer = rpc.peer;
                if rpc.silent_ticks >= timeout_ticks && self.peer_silent(peer) {
                    self.stats.abandoned += 1;
                    self.free_rpc(key);
                }
            }
            RpcState::Incoming => {
                if rpc.silent_ticks == 0 {
                    rpc.probes = 0;
                }
                rpc.silent_ticks += 1;
                let (silent, probes, last_probe, peer) =
                    (rpc.silent_ticks, rpc.probes, rpc.last_probe, rpc.peer);
                let expecting = rpc.expecting_data();
                // A client that owes bytes is given its share of probes while it is
                // alive; one that owes nothing (a stall, `incoming 0`) is not asked.
                if silent >= timeout_ticks && (!expecting || self.timed_out(peer, probes)) {
                    if expecting {
                        self.stats.timeouts += 1;
                    } else {
                        self.stats.abandoned += 1;
                    }
                    self.free_rpc(key);
                } else if expecting && self.probe_due(silent, probes, last_probe) {
                    due.push((peer, last_probe, key));
                }
            }
        }
    }

    /// BUSY: the peer is alive and working on the RPC (only resets its silence).
    pub(crate) fn handle_busy(&mut self, src: SocketAddr, local_id: u64) {
        if let Some(rpc) = self
            .lookup_known(src, local_id)
            .and_then(|key| self.rpcs.get_mut(key))
        {
            rpc.silent_ticks = 0;
        }
    }

    /// Client keep-alive for a response that waits for grants (or for buffer space): a
    /// GRANT repeating the offset already granted, at the priority last given. It
    /// changes nothing at the server but resets its silence count (as any GRANT does in
    /// the kernel, where it is harmless), so the server keeps the RPC while this client
    /// lives. The kernel's clients send nothing in this state.
    pub(crate) fn send_keepalive(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get(key) else {
            return;
        };
        let Some(m) = rpc.msgin.as_ref() else {
            return;
        };
        let (to, id) = (rpc.peer, rpc.id);
        let repr = Repr::Grant(GrantRepr {
            common: self.common_to(to, id),
            offset: m.granted,
            priority: m.grant_priority,
        });
        self.stats.keepalives += 1;
        self.queue_control(to, repr);
    }
}

impl<R: Region> Engine<R> {
    /// Queues the RESENDs for RPC `key`'s incoming message (PROTOCOL.md 4.2).
    pub(crate) fn send_resends(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get(key) else {
            return;
        };
        let (to, id) = (rpc.peer, rpc.id);
        let priority = self.config.control_priority();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        match &rpc.msgin {
            Some(m) if m.buffers.is_some() => ranges.extend(m.missing()),
            _ => ranges.push((0, 0)),
        }
        for (start, end) in ranges {
            let (offset, length) = if end == 0 {
                (0, RESEND_ALL)
            } else {
                (start, end - start)
            };
            let repr = Repr::Resend(ResendRepr {
                common: self.common_to(to, id),
                offset,
                length,
                priority,
            });
            self.control.push_back(Control { to, repr, priority });
        }
    }
}

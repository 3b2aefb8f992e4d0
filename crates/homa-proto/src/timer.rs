//! The 1 ms timer tick (PROTOCOL.md 4.1): silence counting, RESENDs, timeouts and
//! NEED_ACKs.

use crate::engine::Control;
use crate::wire::{ResendRepr, RESEND_ALL};

use crate::engine::{Engine, RpcError};
use crate::region::Region;
use crate::rpc::RpcState;
use crate::wire::Repr;
use crate::Time;

impl<R: Region> Engine<R> {
    /// One timer pass over every RPC, in the kernel's order of checks.
    pub(crate) fn tick(&mut self, _now: Time) {
        self.ticks += 1;
        let tick = self.ticks;
        let resend_ticks = self.config.resend_ticks();
        let resend_interval = self.config.resend_interval();
        let timeout_ticks = self.config.timeout_ticks();
        let request_ack_ticks = u64::from(self.config.request_ack_ticks());
        let mut keys = core::mem::take(&mut self.scratch_keys);
        keys.clear();
        keys.extend(self.rpcs.keys());
        for &key in &keys {
            let Some(rpc) = self.rpcs.get_mut(key) else {
                continue;
            };
            // 1. Server whose response is fully sent: wait for the client's ack, asking
            //    with NEED_ACK from `request_ack_ticks` on, every tick.
            if !rpc.is_client() && rpc.state == RpcState::Outgoing {
                if rpc.msgout.as_ref().is_some_and(|m| m.fully_sent()) {
                    let done = *rpc.done_tick.get_or_insert(tick);
                    let waited = tick - done;
                    if waited >= u64::from(timeout_ticks) {
                        // The kernel asks forever (a to-do in its notes.txt); a client
                        // that vanished must not pin server state, so give up after
                        // `timeout_ticks` ticks in which the client neither acked nor asked
                        // for data (a RESEND restarts the wait). The RPC is tombstoned, so
                        // the request cannot run twice.
                        self.stats.unacknowledged_discards += 1;
                        self.free_rpc(key);
                    } else if waited >= request_ack_ticks
                        && (waited - request_ack_ticks) % u64::from(resend_interval) == 0
                    {
                        // The kernel asks on every tick; with many unacknowledged RPCs
                        // that is a storm of NEED_ACKs and ACKs that swamps both hosts.
                        // Asking every `resend_interval` ticks after the first is
                        // wire-compatible; clients also flush their acks unasked.

                        let (to, id) = (rpc.peer, rpc.id);
                        let common = crate::wire::CommonRepr {
                            sport: self.port(),
                            dport: to.port(),
                            sender_id: id,
                        };
                        self.queue_control(to, Repr::NeedAck(common));
                    }
                    continue;
                }
                // 3. Still sending the response: the client's RESENDs detect losses.
                rpc.silent_ticks = 0;
                continue;
            }
            if rpc.state == RpcState::InService {
                continue;
            }
            rpc.silent_ticks += 1;
            // 2. Receiving: silent is fine if nothing granted is missing, or while
            //    waiting for buffer space.
            if rpc.state == RpcState::Incoming {
                let expecting = rpc
                    .msgin
                    .as_ref()
                    .is_some_and(|m| m.buffers.is_some() && m.received < m.granted);
                if !expecting {
                    rpc.silent_ticks = 0;
                    continue;
                }
            }
            // 4. Client still sending granted bytes: nothing is owed by the server yet.
            if rpc.state == RpcState::Outgoing && rpc.msgout.as_ref().is_some_and(|m| m.sendable())
            {
                rpc.silent_ticks = 0;
                continue;
            }
            // 5. Silence: RESEND every `resend_interval` ticks from `resend_ticks`, abort
            //    at `timeout_ticks`.
            let silent = rpc.silent_ticks;
            if silent >= timeout_ticks {
                self.stats.timeouts += 1;
                self.fail_or_discard(key, RpcError::Timeout);
            } else if silent >= resend_ticks && (silent - resend_ticks) % resend_interval == 0 {
                self.send_resends(key);
            }
        }
        self.scratch_keys = keys;
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

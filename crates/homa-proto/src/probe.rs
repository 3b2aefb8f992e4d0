//! RESEND probes with a budget per peer, and the peer liveness that client timeouts
//! consult (PROTOCOL.md 4.1, 4.2; a deviation from the kernel, described here).
//!
//! The kernel sends a RESEND for every silent RPC every `resend_interval` ticks. Its cost
//! grows with the number of RPCs waiting, not with what is lost: a client with 1,000
//! requests queued at a busy server sends 200,000 RESENDs a second, each answered with a
//! BUSY, and the server that was merely busy drowns in probes (measured here: a server
//! socket's receive queue overflowed, 290,000 datagrams a second were dropped, and clients
//! failed live RPCs with timeouts). So:
//!
//! - **Budget.** The timer pass collects the RPCs that are due a probe (silent for
//!   `resend_ticks`, and `resend_interval` ticks since their last probe) and sends at most
//!   `resend_budget` probes to each peer (address and Homa port) per tick, least recently
//!   probed first. The rest stay due and go on later ticks. With few RPCs waiting nothing
//!   changes: each is probed on the kernel's schedule.
//! - **Liveness.** A client RPC fails with a timeout once it has been silent for
//!   `timeout_ticks` and either its peer has sent nothing for any RPC of ours for
//!   `timeout_ticks` (the peer is gone: every RPC to it fails on schedule, as in the
//!   kernel) or the RPC itself has had as many unanswered probes as the kernel's schedule
//!   gives it before its timeout (the peer is alive but does not know this RPC, or does
//!   not answer for it). A busy peer that answers some probes therefore keeps its queued
//!   RPCs alive until each has had its share of probes.
//! - **NEED_ACKs and keep-alives** are probes too: a server asks for the ack of a
//!   response all sent, and a client tells a server that a response waiting for its
//!   grants is still wanted (`timer.rs`), within the same budget (a client acks unasked
//!   within a tick or two, so under load the kernel's one NEED_ACK per RPC per tick
//!   doubled the packets a server handled).
//! - **Servers** free an RPC that waits for its application once its client has been
//!   silent for `timeout_ticks` (the client probes within its budget, so only a client
//!   silent for every RPC has vanished), and likewise one that waits for grants (its
//!   client's keep-alives have the budget too); one that waits for request bytes
//!   or for an ack after `timeout_ticks` once the client has fallen silent or left that
//!   RPC's share of probes unanswered; and one
//!   that expects nothing from the client (a stalled or `incoming 0` request) after
//!   `timeout_ticks` of silence, whatever the peer does (`timer.rs`).
//!
//! Liveness is remembered per peer for `timeout_ticks`: an entry per peer that this
//! engine's client RPCs heard from, at most [`MAX_LIVE_PEERS`], pruned when full and at
//! every compaction.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::engine::Engine;
use crate::region::Region;
use crate::rpc::RpcState;
use crate::wire::Repr;

/// Most peers whose last sign of life is remembered. When full, stale entries are
/// dropped; a peer that finds no room is treated as silent (its RPCs time out on the
/// kernel's schedule).
pub(crate) const MAX_LIVE_PEERS: usize = 16_384;

/// When each peer last answered a client RPC of ours, in timer ticks.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    heard: HashMap<SocketAddr, u64>,
}

impl Liveness {
    /// `peer` answered an RPC at tick `tick`.
    pub(crate) fn heard(&mut self, peer: SocketAddr, tick: u64, timeout_ticks: u64) {
        if self.heard.len() >= MAX_LIVE_PEERS && !self.heard.contains_key(&peer) {
            self.prune(tick, timeout_ticks);
            if self.heard.len() >= MAX_LIVE_PEERS {
                return;
            }
        }
        self.heard.insert(peer, tick);
    }

    /// Ticks since `peer` last answered, or `None` if it has not within memory.
    pub(crate) fn silent_for(&self, peer: SocketAddr, tick: u64) -> Option<u64> {
        self.heard.get(&peer).map(|&t| tick.saturating_sub(t))
    }

    /// Forgets peers not heard from for `timeout_ticks` (they count as silent anyway).
    pub(crate) fn prune(&mut self, tick: u64, timeout_ticks: u64) {
        self.heard
            .retain(|_, &mut t| tick.saturating_sub(t) < timeout_ticks);
        crate::rpc::shrink_map(&mut self.heard);
    }

    pub(crate) fn len(&self) -> usize {
        self.heard.len()
    }
}

/// An RPC due a probe: its peer, the tick of its last probe (0 = never) and its key.
/// Sorted, a peer's RPCs come together, least recently probed first, so an RPC that is
/// answered and falls silent again queues behind those not yet probed.
pub(crate) type DueProbe = (SocketAddr, u64, u32);

impl<R: Region> Engine<R> {
    /// Whether an RPC silent for `silent` ticks, with `probes` unanswered probes (the
    /// last at tick `last_probe`), is due a probe now.
    pub(crate) fn probe_due(&self, silent: u32, probes: u32, last_probe: u64) -> bool {
        silent >= self.config.resend_ticks() && self.probe_interval_passed(probes, last_probe)
    }

    /// Whether an RPC with `probes` probes in its current wait, the last at tick
    /// `last_probe`, may be probed again: none yet, or `resend_interval` ticks since.
    pub(crate) fn probe_interval_passed(&self, probes: u32, last_probe: u64) -> bool {
        let interval = u64::from(self.config.resend_interval());
        probes == 0 || self.ticks.saturating_sub(last_probe) >= interval
    }

    /// Probes the kernel's schedule gives a silent RPC before its timeout: at silences
    /// `resend_ticks`, `resend_ticks + resend_interval`, … below `timeout_ticks`.
    pub(crate) fn probes_before_timeout(&self) -> u32 {
        let (first, interval, timeout) = (
            self.config.resend_ticks(),
            self.config.resend_interval(),
            self.config.timeout_ticks(),
        );
        if timeout <= first {
            0
        } else {
            (timeout - first).div_ceil(interval)
        }
    }

    /// Whether `peer` has sent nothing for any RPC of ours for `timeout_ticks`.
    pub(crate) fn peer_silent(&self, peer: SocketAddr) -> bool {
        let timeout = u64::from(self.config.timeout_ticks());
        self.liveness
            .silent_for(peer, self.ticks)
            .is_none_or(|s| s >= timeout)
    }

    /// Whether an RPC silent for `timeout_ticks` with `probes` unanswered probes to
    /// `peer` has timed out: its peer fell silent too, or it had its share of probes.
    pub(crate) fn timed_out(&self, peer: SocketAddr, probes: u32) -> bool {
        self.peer_silent(peer) || probes >= self.probes_before_timeout()
    }

    /// Sends the probes collected by a timer pass — RESENDs, a server's NEED_ACKs for
    /// responses all sent, a client's keep-alive GRANTs for responses that wait for its
    /// grants — per peer at most `resend_budget`, least recently probed first.
    pub(crate) fn send_due_probes(&mut self, due: &mut Vec<DueProbe>) {
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        let budget = self.config.resend_budget();
        let tick = self.ticks;
        let mut current: Option<(SocketAddr, u32)> = None;
        for &(peer, _, key) in due.iter() {
            let sent = match current {
                Some((p, n)) if p == peer => n,
                _ => 0,
            };
            if sent >= budget {
                self.stats.probes_deferred += 1;
                continue;
            }
            current = Some((peer, sent + 1));
            let Some(rpc) = self.rpcs.get_mut(key) else {
                continue;
            };
            rpc.probes += 1;
            rpc.last_probe = tick;
            let expecting = rpc.expecting_data();
            if !rpc.is_client()
                && rpc.state == RpcState::Outgoing
                && rpc.msgout.as_ref().is_some_and(|m| m.fully_sent())
            {
                // A server's response is all sent: ask for the ack.
                let (to, id) = (rpc.peer, rpc.id);
                let common = self.common_to(to, id);
                self.queue_control(to, Repr::NeedAck(common));
            } else if rpc.is_client() && rpc.state == RpcState::Incoming && !expecting {
                // A response waiting for our grants or buffer space: "still here".
                self.send_keepalive(key);
            } else {
                self.send_resends(key);
            }
        }
        due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn liveness_remembers_and_forgets() {
        let mut l = Liveness::default();
        assert_eq!(l.silent_for(addr(1), 10), None);
        l.heard(addr(1), 10, 100);
        assert_eq!(l.silent_for(addr(1), 15), Some(5));
        l.prune(109, 100);
        assert_eq!(l.len(), 1);
        l.prune(110, 100);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn liveness_is_bounded() {
        let mut l = Liveness::default();
        for i in 0..MAX_LIVE_PEERS as u64 {
            let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1));
            l.heard(a, 1, 100);
        }
        assert_eq!(l.len(), MAX_LIVE_PEERS);
        // Full of fresh entries: a new peer finds no room and counts as silent.
        l.heard(addr(2), 2, 100);
        assert_eq!(l.len(), MAX_LIVE_PEERS);
        assert_eq!(l.silent_for(addr(2), 2), None);
        // Once the old entries are stale, they make room.
        l.heard(addr(2), 200, 100);
        assert_eq!(l.len(), 1);
        assert_eq!(l.silent_for(addr(2), 200), Some(0));
    }
}

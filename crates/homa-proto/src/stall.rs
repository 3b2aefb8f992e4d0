//! Receive-buffer pressure (PROTOCOL.md 3.6): messages that wait for space in the
//! receive region, and the space taken back from messages whose senders stopped sending.
//!
//! A message whose first packet finds the pool full is *stalled*: it has no buffers, its
//! DATA is dropped, and it waits in the engine's stalled set. When space comes back,
//! `unstall` gives it buffers and restarts it with RESEND(0, −1). The set is ordered by
//! [`StallEntry`]: messages whose senders are alive (heard from within
//! `resend_ticks + resend_interval` ticks: DATA, or a live client's RESEND probes) and
//! that were never reclaimed come first, shortest first, then oldest; the others (silent
//! senders, messages that already had space and made nothing of it) wait behind them. The
//! order is brought up to date once per tick.
//!
//! Space held by a message that no longer makes progress is taken back for a stalled
//! one: once per tick, if the shortest stalled message does not fit, messages at least as
//! long whose sender has sent no new bytes for `resend_ticks` ticks give up their buffers
//! (those whose sender owes granted bytes first, then the longest) and become stalled
//! themselves; their received bytes are dropped and asked for again when they get space.
//! So a peer that announces large messages and sends only their first packets (with
//! `incoming` 0, say) holds pool space for a few ticks, not until its RPCs time out; a
//! message taken back keeps counting its silence, so such an RPC still times out. The
//! kernel has no such reclaiming (its stalled messages wait for space to be freed); this
//! is a deviation, written down in ARCHITECTURE.md.

use crate::engine::{Control, Engine};
use crate::region::Region;
use crate::wire::{Repr, ResendRepr, RESEND_ALL};
use crate::Time;

/// A stalled message's place in the queue for buffer space: (late, length, RPC serial,
/// RPC key). `late` is [`InMessage::stall_late`](crate::incoming::InMessage): its
/// sender is silent, or it was reclaimed.
pub(crate) type StallEntry = (bool, u32, u64, u32);

impl<R: Region> Engine<R> {
    /// Gives stalled messages buffer space if it is available now, restarting each with
    /// RESEND(0, −1) at level `num_priorities − 2` (PROTOCOL.md 3.6).
    pub(crate) fn unstall(&mut self, _now: Time) {
        self.unstall_pending = false;
        while let Some(&(_, length, serial, key)) = self.stalled.first() {
            let Some(buffers) = self.pool.allocate(length) else {
                break;
            };
            self.stalled.pop_first();
            let Some(rpc) = self.rpcs.get_mut(key).filter(|r| r.serial == serial) else {
                let _ = self.pool.release_all(&buffers);
                continue;
            };
            let Some(m) = rpc.msgin.as_mut() else {
                let _ = self.pool.release_all(&buffers);
                continue;
            };
            m.buffers = Some(buffers);
            m.progress_tick = self.ticks;
            if !m.reclaimed {
                // It waited for us, not for its sender.
                rpc.silent_ticks = 0;
            }
            let (to, id) = (rpc.peer, rpc.id);
            let priority = self.config.num_priorities().saturating_sub(2);
            let repr = Repr::Resend(ResendRepr {
                common: self.common_to(to, id),
                offset: 0,
                length: RESEND_ALL,
                priority,
            });
            let control_priority = self.config.control_priority();
            self.control.push_back(Control {
                to,
                repr,
                priority: control_priority,
            });
        }
    }

    pub(crate) fn unstall_if_pending(&mut self, now: Time) {
        if self.unstall_pending {
            self.unstall(now);
        }
    }

    /// Once per tick: if the shortest stalled message does not fit in the pool, takes
    /// the buffers of idle messages at least as long until it does (see the module
    /// documentation), then hands out the space. O(RPCs), only while a message is
    /// stalled and does not fit.
    pub(crate) fn reclaim_idle_buffers(&mut self, now: Time) {
        self.refresh_stalled_order();
        let Some(&(_, need, _, _)) = self.stalled.first() else {
            return;
        };
        if self.pool.can_allocate(need) {
            self.unstall(now);
            return;
        }
        let idle_after = u64::from(self.config.resend_ticks());
        let mut idle = core::mem::take(&mut self.scratch_idle);
        idle.clear();
        for key in self.rpcs.keys() {
            let Some(m) = self.rpcs.get(key).and_then(|r| r.msgin.as_ref()) else {
                continue;
            };
            if m.buffers.is_some()
                && !m.is_complete()
                && m.length >= need
                && m.idle_for(self.ticks, idle_after)
            {
                idle.push((m.received < m.granted, m.length, key));
            }
        }
        // Senders that owe granted bytes first, then the longest messages.
        idle.sort_unstable_by(|a, b| b.cmp(a));
        let mut taken = Vec::new();
        for &(_, _, key) in &idle {
            if self.pool.can_allocate(need) {
                break;
            }
            if let Some(entry) = self.take_buffers(key) {
                taken.push(entry);
            }
        }
        self.scratch_idle = idle;
        // Those just reclaimed are late: the space goes to the messages that waited.
        self.stalled.extend(taken);
        self.unstall(now);
    }

    /// Files each stalled message as late or not by what its sender did since the last
    /// tick (O(stalled)).
    fn refresh_stalled_order(&mut self) {
        let silent_after = self
            .config
            .resend_ticks()
            .saturating_add(self.config.resend_interval());
        let mut moves = core::mem::take(&mut self.scratch_moves);
        moves.clear();
        for &entry @ (late, _, serial, key) in &self.stalled {
            let Some(rpc) = self.rpcs.get(key).filter(|r| r.serial == serial) else {
                continue;
            };
            let reclaimed = rpc.msgin.as_ref().is_some_and(|m| m.reclaimed);
            let now_late = reclaimed || rpc.silent_ticks > silent_after;
            if now_late != late {
                moves.push(entry);
            }
        }
        for &entry @ (late, _, serial, key) in &moves {
            self.stalled.remove(&entry);
            if let Some(m) = self.rpcs.get_mut(key).and_then(|r| r.msgin.as_mut()) {
                m.stall_late = !late;
                self.stalled.insert(m.stall_entry(serial, key));
            }
        }
        self.scratch_moves = moves;
    }

    /// Takes message `key`'s buffers back: its received bytes are dropped (they will be
    /// asked for again), it leaves the grant scheduler, and it becomes stalled. Returns
    /// its stalled-set entry, which the caller inserts.
    fn take_buffers(&mut self, key: u32) -> Option<StallEntry> {
        let rpc = self.rpcs.get_mut(key)?;
        let serial = rpc.serial;
        let m = rpc.msgin.as_mut()?;
        let buffers = m.buffers.take()?;
        let _ = self.pool.release_all(&buffers);
        m.reset_received();
        m.reclaimed = true;
        m.stall_late = true;
        if m.scheduled {
            m.scheduled = false;
            self.grants.remove(key);
            self.grants_dirty = true;
        }
        self.stats.buffers_reclaimed += 1;
        Some(m.stall_entry(serial, key))
    }
}

//! Receiver-side grant scheduling (PROTOCOL.md 3.3): which incoming messages get GRANTs,
//! how many bytes, and at which priority level.
//!
//! The engine owns the RPCs and identifies each incoming message by a `u32` key (its slab
//! handle). It tells the [`GrantScheduler`] about messages that need grants
//! ([`insert`](GrantScheduler::insert)), about every arrival of data
//! ([`update_received`](GrantScheduler::update_received)) and about messages that are
//! complete or gone ([`remove`](GrantScheduler::remove)); after each batch of packets (and
//! after any of these calls, and when the FIFO timer of
//! [`next_fifo_time`](GrantScheduler::next_fifo_time) fires) it calls
//! [`poll_grants`](GrantScheduler::poll_grants) and sends one GRANT per
//! [`GrantDecision`].
//!
//! # The algorithm (PROTOCOL.md 3.3, steps 1–9)
//!
//! * **Ranking.** A message outranks another if it has fewer unreceived bytes
//!   (`bytes_remaining = length − received`); ties go to the older `birth`, and remaining
//!   ties to the message inserted first (so the order is total and deterministic).
//! * **Active set.** At most `max_overcommit` messages are *active* (eligible for SRPT
//!   grants); every other tracked message *waits* in its peer's list, sorted by rank, and
//!   peers with waiting messages are kept sorted by their best waiting message.
//!   - *Admission* — tried for a newly inserted message, and for a waiting message that
//!     received data and is (then) the best waiting message of its peer: a free slot is
//!     taken if there is one; otherwise the *victim candidate* is the lowest-ranked active
//!     message among those of the peer(s) with the most active messages, where the
//!     newcomer's own peer counts the newcomer too. The victim is displaced (goes back to
//!     its peer's waiting list) if its peer has at least two more active messages than the
//!     newcomer's peer, or else if the newcomer outranks it; otherwise the newcomer waits.
//!   - *Promotion* — whenever a slot is free and messages wait: the best waiting message of
//!     the peer with the fewest active messages is activated (a peer with none first,
//!     otherwise the first in peer order among those with the fewest).
//! * **Window.** The configured `window`, or `max_incoming / (N + 1)` when it is 0, where
//!   `N` is the number of active messages.
//! * **Grant amount.** For an active message, `want = received + window − granted`; nothing
//!   if `want ≤ 0`; capped at `length − granted` and at the headroom
//!   `max_incoming − total_incoming`.
//! * **Needy.** If the headroom is ≤ 0, or another active message is needy, the message is
//!   marked needy and gets nothing. Each poll serves the needy messages first (best-ranked
//!   first, ignoring the "another is needy" rule among themselves), then the others in rank
//!   order.
//! * **Priority.** `rank` = number of active messages that outrank this one;
//!   `prio = max_sched_prio − rank − max(0, max_sched_prio + 1 − N)`, floored at 0.
//! * **FIFO grants.** With `grant_fifo_fraction > 0`, at most once per
//!   `fifo_grant_increment·8 / (link_mbps·grant_fifo_fraction/1000)` µs (320 µs at the
//!   defaults), after the SRPT pass of a poll: the oldest tracked message that is not fully
//!   granted and whose outstanding grant (`granted − received`) is below
//!   `window + 2·fifo_grant_increment` gets `fifo_grant_increment` more bytes (capped at its
//!   length) at level `num_priorities − 2`.
//! * **Accounting.** `total_incoming` = Σ over tracked messages of
//!   `max(0, granted − received)`, updated on every change; a removed message takes its
//!   share with it.
//!
//! # How this resolves what 3.3 leaves open
//!
//! 1. *Victim ties.* When several peers share the largest active count, the victim is the
//!    lowest-ranked active message of any of them. "At least two more" compares the victim
//!    peer's current active count with the newcomer peer's current count (so a peer with
//!    two active messages loses one to a peer with none, but one with two does not lose one
//!    to a peer with one unless the newcomer outranks it). Both as in the Linux module's
//!    `homa_grant_find_victim`.
//! 2. *"A waiting one that became its peer's best".* Admission is retried when a waiting
//!    message receives data and is afterwards the best waiting message of its peer (also
//!    if it already was the best: its rank improved). It is not retried for a message
//!    that becomes best only because another one left the list, nor for a just-displaced
//!    victim (the kernel does the same; every other change is covered by promotion).
//! 3. *Partial grants.* A message whose grant is cut short by the headroom is marked needy
//!    too (it was "starved by the headroom"), so that it is first in line, by rank, when
//!    headroom comes back. This is what the kernel's `homa_grant_try_send` does.
//! 4. *Fully granted messages* (granted = length) keep their place — active slot or waiting
//!    list — until [`remove`](GrantScheduler::remove) (step 9: they leave when fully
//!    received); their outstanding bytes still count in `total_incoming`, they count in
//!    `N` and in ranks, and they are never granted again. As in the kernel.
//! 5. *FIFO grants respect `max_incoming`.* The kernel lets a FIFO grant overshoot the
//!    cap; here a FIFO grant is also capped at the headroom (and skipped when there is
//!    none), so that the granted-but-unreceived total never exceeds `max_incoming` because
//!    of a grant. (Unscheduled bytes are the sender's decision and can exceed it.)
//! 6. *FIFO timing.* The check runs after the SRPT pass of every poll (not only after a
//!    poll that sent an SRPT grant, so that the engine's timer can drive it). A check that
//!    is due consumes the interval even if no message is eligible. The FIFO clock is armed
//!    by the first poll of a busy period (no FIFO grant in that poll), and disarmed when
//!    no tracked message is left that is not fully granted; so the first FIFO grant comes
//!    one interval after a burst starts, never at its first grant.
//! 7. *Headroom when data ran ahead of the grant.* Senders transmit whole packets, so
//!    `received` can exceed `granted`. The headroom then caps the bytes a grant adds to
//!    `total_incoming`, not the raw increase of the offset: the new offset is at most
//!    `max(granted, received) + headroom`. (Capping the raw increase would leave needy
//!    messages behind with headroom still unused.)
//! 8. *Edge cases.* Updates and removals for unknown keys are no-ops; `received` never
//!    decreases and is capped at the length; inserting a key that is already tracked only
//!    updates its received count; a message whose `granted ≥ length`, or that is already
//!    complete, is not tracked.
//!
//! # Cost
//!
//! Ranks are kept in sorted vectors that keep their capacity, so steady-state calls do not
//! allocate (only a new peer or a larger peak of messages grows a vector or a map). Per
//! call: [`update_received`](GrantScheduler::update_received) is O(active) for an active
//! message and a binary search plus a short memmove (plus an O(active) admission check)
//! for a waiting one; [`poll_grants`](GrantScheduler::poll_grants) is O(active) plus, when
//! a FIFO grant is due, a walk from the oldest message to the first eligible one;
//! [`remove`](GrantScheduler::remove) of an active message also scans the peers with
//! waiting messages to promote one. No hash map is ever iterated, so decisions are
//! deterministic.

use crate::engine::Engine;
use crate::region::Region;
use crate::wire::{GrantRepr, Repr};

use std::collections::HashMap;
use std::net::IpAddr;

use crate::{Config, Time};

/// Largest possible active set (`HOMA_MAX_GRANTS`).
const MAX_ACTIVE: usize = 8;

/// One GRANT to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantDecision {
    /// The message's key (the engine's RPC handle).
    pub(crate) key: u32,
    /// The new cumulative granted offset: the sender may transmit bytes `0..offset`.
    pub(crate) offset: u32,
    /// Priority level for the sender's scheduled packets (the GRANT's `priority` byte).
    pub(crate) priority: u8,
}

/// SRPT order of a message: smaller is better ("outranks").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Unreceived bytes.
    remaining: u32,
    /// When the message was first seen.
    birth: Time,
    /// Insertion order, the final tie-break.
    seq: u64,
}

/// Where a tracked message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the active set.
    Active,
    /// In its peer's waiting list.
    Waiting,
}

/// Grant state of one tracked message.
#[derive(Debug, Clone)]
struct Msg {
    /// Index of its peer in `GrantScheduler::peers`.
    peer: usize,
    length: u32,
    /// Bytes received (a count, not the highest offset), ≤ `length`.
    received: u32,
    /// Granted offset, ≤ `length` once the scheduler has granted anything.
    granted: u32,
    /// `max(0, granted − received)` as included in `total_incoming`.
    rec_incoming: u32,
    birth: Time,
    seq: u64,
    place: Place,
    /// Starved by the headroom; only active messages are needy.
    needy: bool,
}

impl Msg {
    fn rank(&self) -> Rank {
        Rank {
            remaining: self.length - self.received,
            birth: self.birth,
            seq: self.seq,
        }
    }

    fn fully_granted(&self) -> bool {
        self.granted >= self.length
    }

    /// Brings `rec_incoming` (and with it `total_incoming`) up to date.
    fn refresh_incoming(&mut self, total_incoming: &mut u64) {
        let now = self.granted.saturating_sub(self.received);
        *total_incoming -= u64::from(self.rec_incoming);
        *total_incoming += u64::from(now);
        self.rec_incoming = now;
    }
}

/// Per-peer state: how many of its messages are active, and its waiting list.
#[derive(Debug, Clone)]
struct Peer {
    addr: IpAddr,
    /// Its messages in the active set.
    active: u32,
    /// Its tracked messages (active or waiting); the slot is freed at 0.
    messages: u32,
    /// Waiting messages, best first.
    waiting: Vec<(Rank, u32)>,
}

/// One entry of the active set.
#[derive(Debug, Clone, Copy)]
struct Slot {
    rank: Rank,
    key: u32,
    peer: usize,
}

/// The receiver's SRPT grant scheduler (PROTOCOL.md 3.3); see the module documentation
/// for the algorithm and the choices made where the protocol description is silent.
#[derive(Debug, Clone)]
pub(crate) struct GrantScheduler {
    max_incoming: u64,
    max_overcommit: usize,
    /// The `window` tunable; 0 = dynamic.
    fixed_window: u32,
    max_sched_prio: u8,
    fifo_increment: u32,
    fifo_priority: u8,
    /// Nanoseconds between FIFO grants; `None` when `grant_fifo_fraction` is 0.
    fifo_interval: Option<u64>,
    /// Earliest time of the next FIFO grant; `None` while disarmed.
    fifo_due: Option<Time>,
    msgs: HashMap<u32, Msg>,
    /// The active set, best first (index = rank).
    active: Vec<Slot>,
    peers: Vec<Peer>,
    free_peers: Vec<usize>,
    peer_index: HashMap<IpAddr, usize>,
    /// Peers with waiting messages, sorted by their best waiting message.
    peer_order: Vec<(Rank, usize)>,
    /// Tracked messages that are not fully granted, oldest first: (birth, seq, key).
    by_birth: Vec<(Time, u64, u32)>,
    total_incoming: u64,
    /// Number of active messages marked needy.
    needy_count: usize,
    next_seq: u64,
}

impl GrantScheduler {
    /// A scheduler with no messages, using `config`'s `max_incoming`, `max_overcommit`,
    /// `window`, `grant_fifo_fraction`, `fifo_grant_increment`, `link_mbps`,
    /// `num_priorities` and `max_sched_prio`.
    pub(crate) fn new(config: &Config) -> Self {
        let fifo_interval = match u64::from(config.grant_fifo_fraction()) {
            0 => None,
            fraction => {
                // increment·8 bits at link_mbps·fraction/1000 Mbit/s, in nanoseconds.
                let bits = u64::from(config.fifo_grant_increment()) * 8;
                let rate = u64::from(config.link_mbps()) * fraction;
                Some((bits * 1_000_000 / rate).max(1))
            }
        };
        let max_overcommit = (config.max_overcommit() as usize).clamp(1, MAX_ACTIVE);
        GrantScheduler {
            max_incoming: u64::from(config.max_incoming()),
            max_overcommit,
            fixed_window: config.window(),
            max_sched_prio: config.max_sched_prio(),
            fifo_increment: config.fifo_grant_increment(),
            fifo_priority: config.num_priorities().saturating_sub(2),
            fifo_interval,
            fifo_due: None,
            msgs: HashMap::new(),
            active: Vec::with_capacity(max_overcommit),
            peers: Vec::new(),
            free_peers: Vec::new(),
            peer_index: HashMap::new(),
            peer_order: Vec::new(),
            by_birth: Vec::new(),
            total_incoming: 0,
            needy_count: 0,
            next_seq: 0,
        }
    }

    /// Starts tracking a message that needs grants: its length exceeds the initial granted
    /// offset, buffer space has been allocated for it (PROTOCOL.md 3.6) and its first
    /// packet(s) arrived.
    ///
    /// `granted` is the initial granted offset (the sender's `incoming`), `received` the
    /// bytes received so far (capped at `length`), `birth` when the message was first
    /// seen. Nothing happens if `granted >= length` or the message is already complete.
    /// If `key` is already tracked this only acts as
    /// [`update_received`](Self::update_received)`(key, received)`.
    ///
    /// The message is admitted to the active set if there is a free slot or it displaces
    /// an active message (see the module documentation); otherwise it waits.
    pub(crate) fn insert(
        &mut self,
        key: u32,
        peer: IpAddr,
        length: u32,
        granted: u32,
        received: u32,
        birth: Time,
    ) {
        if self.msgs.contains_key(&key) {
            self.update_received(key, received);
            return;
        }
        let received = received.min(length);
        if granted >= length || received >= length {
            return;
        }
        let peer = self.peer_for(peer);
        self.peers[peer].messages += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut msg = Msg {
            peer,
            length,
            received,
            granted,
            rec_incoming: 0,
            birth,
            seq,
            place: Place::Waiting,
            needy: false,
        };
        msg.refresh_incoming(&mut self.total_incoming);
        self.msgs.insert(key, msg);
        let entry = (birth, seq, key);
        let pos = self.by_birth.partition_point(|e| *e < entry);
        self.by_birth.insert(pos, entry);
        self.admit(key);
    }

    /// Records that `received` bytes of the message have now arrived (a cumulative count).
    ///
    /// No-op for an unknown key or a count that is not larger than the previous one
    /// (received never decreases); counts above the length are taken as the length. The
    /// message's rank improves: an active message moves up in the active set (which can
    /// change grant priorities), a waiting one moves up in its peer's list and, if it is
    /// then its peer's best (and not yet complete), tries to enter the active set. No grant
    /// is decided here; call [`poll_grants`](Self::poll_grants) after the batch.
    pub(crate) fn update_received(&mut self, key: u32, received: u32) {
        let Some(msg) = self.msgs.get_mut(&key) else {
            return;
        };
        let received = received.min(msg.length);
        if received <= msg.received {
            return;
        }
        let old_rank = msg.rank();
        msg.received = received;
        msg.refresh_incoming(&mut self.total_incoming);
        let (new_rank, peer, place) = (msg.rank(), msg.peer, msg.place);
        match place {
            Place::Active => {
                let Some(mut i) = self.active.iter().position(|s| s.key == key) else {
                    debug_assert!(false, "active message {key} missing from the active set");
                    return;
                };
                self.active[i].rank = new_rank;
                while i > 0 && self.active[i - 1].rank > new_rank {
                    self.active.swap(i - 1, i);
                    i -= 1;
                }
            }
            Place::Waiting => {
                self.waiting_remove(peer, old_rank);
                let best = self.peers[peer]
                    .waiting
                    .first()
                    .is_none_or(|&(rank, _)| new_rank < rank);
                // A message that just completed only moves up: the engine removes it, and
                // admitting it would displace a message for nothing.
                if best && new_rank.remaining > 0 {
                    self.admit(key);
                } else {
                    self.waiting_insert(peer, new_rank, key);
                }
            }
        }
    }

    /// Stops tracking a message: it is complete, aborted or otherwise gone. Its outstanding
    /// bytes leave `total_incoming`; if it was active, waiting messages are promoted into
    /// the free slot. No-op for an unknown key.
    pub(crate) fn remove(&mut self, key: u32) {
        let Some(msg) = self.msgs.remove(&key) else {
            return;
        };
        self.total_incoming -= u64::from(msg.rec_incoming);
        if !msg.fully_granted() {
            self.by_birth_remove(msg.birth, msg.seq);
        }
        match msg.place {
            Place::Active => {
                if let Some(i) = self.active.iter().position(|s| s.key == key) {
                    self.active.remove(i);
                    self.peers[msg.peer].active -= 1;
                } else {
                    debug_assert!(false, "active message {key} missing from the active set");
                }
                if msg.needy {
                    self.needy_count -= 1;
                }
                self.fill_slots();
            }
            Place::Waiting => self.waiting_remove(msg.peer, msg.rank()),
        }
        self.release_peer(msg.peer);
    }

    /// Appends to `out` the GRANTs to send now, each with the message's new cumulative
    /// granted offset and the priority to use.
    ///
    /// First the SRPT pass over the active set: needy messages first (best-ranked first),
    /// then the others in rank order, each getting up to its window beyond what it has
    /// received, within the `max_incoming` headroom. Then at most one FIFO grant, if one is
    /// due at `now`. A key appears at most once from the SRPT pass; a FIFO grant to the
    /// same message comes after it and supersedes its priority at the sender. `out` is not
    /// cleared.
    pub(crate) fn poll_grants(&mut self, now: Time, out: &mut Vec<GrantDecision>) {
        let window = self.window();
        let n = self.active.len();
        let mut was_needy: u32 = 0;
        for (i, slot) in self.active.iter().enumerate() {
            if self.msgs.get(&slot.key).is_some_and(|m| m.needy) {
                was_needy |= 1 << i;
            }
        }
        for i in 0..n {
            if was_needy & (1 << i) != 0 {
                self.try_grant(i, window, false, out);
            }
        }
        for i in 0..n {
            if was_needy & (1 << i) == 0 {
                self.try_grant(i, window, true, out);
            }
        }
        self.fifo_check(now, window, out);
    }

    /// The time at which the next FIFO grant may be due (for the engine's timer), or `None`
    /// when FIFO grants are disabled, when no tracked message could take one (all fully
    /// granted, or none), or when the FIFO clock is not armed yet (the next
    /// [`poll_grants`](Self::poll_grants) arms it). A time at or before the current time
    /// means the next poll checks for a FIFO grant.
    pub(crate) fn next_fifo_time(&self) -> Option<Time> {
        self.fifo_interval?;
        if self.by_birth.is_empty() {
            None
        } else {
            self.fifo_due
        }
    }

    #[cfg(test)]
    /// The granted offset of a tracked message.
    pub(crate) fn granted(&self, key: u32) -> Option<u32> {
        self.msgs.get(&key).map(|m| m.granted)
    }

    /// Granted-but-unreceived bytes over all tracked messages:
    /// Σ `max(0, granted − received)`.
    pub(crate) fn total_incoming(&self) -> u64 {
        self.total_incoming
    }

    /// Number of messages in the active set.
    pub(crate) fn active_count(&self) -> usize {
        self.active.len()
    }

    #[cfg(test)]
    /// Whether the message is in the active set (false for unknown keys).
    pub(crate) fn is_active(&self, key: u32) -> bool {
        self.msgs
            .get(&key)
            .is_some_and(|m| m.place == Place::Active)
    }

    #[cfg(test)]
    /// Whether the message is active and marked needy (starved by `max_incoming`).
    pub(crate) fn is_needy(&self, key: u32) -> bool {
        self.msgs.get(&key).is_some_and(|m| m.needy)
    }

    /// Number of tracked messages (active or waiting, including fully granted ones).
    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    #[cfg(test)]
    /// Whether no message is tracked.
    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The per-message window with the current active set: the `window` tunable, or
    /// `max_incoming / (N + 1)` when it is 0.
    pub(crate) fn window(&self) -> u32 {
        if self.fixed_window != 0 {
            self.fixed_window
        } else {
            // max_incoming fits in u32 (it comes from a u32 tunable).
            (self.max_incoming / (self.active.len() as u64 + 1)) as u32
        }
    }

    /// Scheduled priority for the active message at `rank` (PROTOCOL.md 3.3 step 6).
    fn priority(&self, rank: usize) -> u8 {
        let max = i64::from(self.max_sched_prio);
        let extra = (max + 1 - self.active.len() as i64).max(0);
        (max - rank as i64 - extra).clamp(0, max) as u8
    }

    /// SRPT grant for the active message at index `i`, if it wants one.
    fn try_grant(
        &mut self,
        i: usize,
        window: u32,
        check_needy: bool,
        out: &mut Vec<GrantDecision>,
    ) {
        let key = self.active[i].key;
        let priority = self.priority(i);
        let headroom = self.max_incoming as i64 - self.total_incoming as i64;
        let others_needy = check_needy && self.needy_count > 0;
        let Some(msg) = self.msgs.get_mut(&key) else {
            return;
        };
        if msg.fully_granted() {
            return;
        }
        // The offset the window asks for: `want = received + window − granted` bytes more,
        // capped at `length − granted`.
        let target = (u64::from(msg.received) + u64::from(window)).min(u64::from(msg.length));
        if target <= u64::from(msg.granted) {
            if msg.needy {
                msg.needy = false;
                self.needy_count -= 1;
            }
            return;
        }
        if headroom <= 0 || others_needy {
            if !msg.needy {
                msg.needy = true;
                self.needy_count += 1;
            }
            return;
        }
        // Capped at the headroom, counted in the bytes the grant adds to total_incoming
        // (none for the part, if any, that only catches up with bytes already received).
        let cap = u64::from(msg.granted.max(msg.received)) + headroom as u64;
        let starved = cap < target;
        // target ≤ length, so the new offset fits in u32.
        msg.granted = target.min(cap) as u32;
        msg.refresh_incoming(&mut self.total_incoming);
        if starved != msg.needy {
            msg.needy = starved;
            if starved {
                self.needy_count += 1;
            } else {
                self.needy_count -= 1;
            }
        }
        let (offset, fully, birth, seq) = (msg.granted, msg.fully_granted(), msg.birth, msg.seq);
        if fully {
            self.by_birth_remove(birth, seq);
        }
        out.push(GrantDecision {
            key,
            offset,
            priority,
        });
    }

    /// Makes the FIFO grant if one is due (PROTOCOL.md 3.3 step 8).
    fn fifo_check(&mut self, now: Time, window: u32, out: &mut Vec<GrantDecision>) {
        let Some(interval) = self.fifo_interval else {
            return;
        };
        if self.by_birth.is_empty() {
            self.fifo_due = None;
            return;
        }
        match self.fifo_due {
            Some(due) if now >= due => {}
            Some(_) => return,
            None => {
                self.fifo_due = Some(now.add_nanos(interval));
                return;
            }
        }
        self.fifo_due = Some(now.add_nanos(interval));
        let limit = u64::from(window) + 2 * u64::from(self.fifo_increment);
        let msgs = &self.msgs;
        let Some(key) = self.by_birth.iter().map(|&(_, _, key)| key).find(|key| {
            msgs.get(key)
                .is_some_and(|m| u64::from(m.rec_incoming) < limit)
        }) else {
            return;
        };
        let headroom = self.max_incoming as i64 - self.total_incoming as i64;
        if headroom <= 0 {
            return;
        }
        let Some(msg) = self.msgs.get_mut(&key) else {
            return;
        };
        // Capped at the length and, as for SRPT grants, at the headroom.
        let target = (u64::from(msg.granted) + u64::from(self.fifo_increment))
            .min(u64::from(msg.length))
            .min(u64::from(msg.granted.max(msg.received)) + headroom as u64);
        // granted < target ≤ length.
        msg.granted = target as u32;
        msg.refresh_incoming(&mut self.total_incoming);
        let (offset, fully, birth, seq) = (msg.granted, msg.fully_granted(), msg.birth, msg.seq);
        if fully {
            if msg.needy {
                msg.needy = false;
                self.needy_count -= 1;
            }
            self.by_birth_remove(birth, seq);
        }
        out.push(GrantDecision {
            key,
            offset,
            priority: self.fifo_priority,
        });
    }

    /// Puts a message that is in no list into the active set if it can take a free slot
    /// or displace a victim, else into its peer's waiting list.
    fn admit(&mut self, key: u32) {
        let Some(msg) = self.msgs.get(&key) else {
            return;
        };
        let (rank, peer) = (msg.rank(), msg.peer);
        if self.active.len() < self.max_overcommit {
            self.activate(key);
            return;
        }
        match self.find_victim(rank, peer) {
            Some(i) => {
                let victim = self.active.remove(i);
                self.peers[victim.peer].active -= 1;
                if let Some(v) = self.msgs.get_mut(&victim.key) {
                    v.place = Place::Waiting;
                    if v.needy {
                        v.needy = false;
                        self.needy_count -= 1;
                    }
                }
                self.waiting_insert(victim.peer, victim.rank, victim.key);
                self.activate(key);
            }
            None => {
                if let Some(msg) = self.msgs.get_mut(&key) {
                    msg.place = Place::Waiting;
                }
                self.waiting_insert(peer, rank, key);
            }
        }
    }

    /// The index in the (full) active set of the message a newcomer with `rank` from
    /// `peer` displaces, if any (PROTOCOL.md 3.3 step 3).
    fn find_victim(&self, rank: Rank, peer: usize) -> Option<usize> {
        // (count, index): the largest count, and for equal counts the lowest-ranked
        // message (the active set is sorted best first, so the later one).
        let mut best: Option<(u32, usize)> = None;
        for (i, slot) in self.active.iter().enumerate() {
            let count = self.peers[slot.peer].active + u32::from(slot.peer == peer);
            if best.is_none_or(|(c, _)| count >= c) {
                best = Some((count, i));
            }
        }
        let (count, i) = best?;
        if count >= self.peers[peer].active + 2 || rank < self.active[i].rank {
            Some(i)
        } else {
            None
        }
    }

    /// Adds a message that is in no list to the active set.
    fn activate(&mut self, key: u32) {
        let Some(msg) = self.msgs.get_mut(&key) else {
            return;
        };
        msg.place = Place::Active;
        debug_assert!(!msg.needy);
        let slot = Slot {
            rank: msg.rank(),
            key,
            peer: msg.peer,
        };
        let pos = self.active.partition_point(|s| s.rank < slot.rank);
        self.active.insert(pos, slot);
        self.peers[slot.peer].active += 1;
    }

    /// Promotes waiting messages while slots are free: each time the best waiting message
    /// of the peer with the fewest active messages (first in peer order on ties).
    fn fill_slots(&mut self) {
        while self.active.len() < self.max_overcommit {
            let mut chosen = None;
            let mut fewest = u32::MAX;
            for &(_, p) in &self.peer_order {
                let active = self.peers[p].active;
                if active < fewest {
                    fewest = active;
                    chosen = Some(p);
                    if active == 0 {
                        break;
                    }
                }
            }
            let Some(p) = chosen else {
                break;
            };
            let Some(&(rank, key)) = self.peers[p].waiting.first() else {
                debug_assert!(false, "peer in peer order without waiting messages");
                break;
            };
            self.waiting_remove(p, rank);
            self.activate(key);
        }
    }

    /// Inserts a message into its peer's waiting list (its `place` is set by the caller).
    fn waiting_insert(&mut self, peer: usize, rank: Rank, key: u32) {
        let list = &mut self.peers[peer].waiting;
        let old_best = list.first().map(|&(r, _)| r);
        let pos = list.partition_point(|&(r, _)| r < rank);
        list.insert(pos, (rank, key));
        if pos == 0 {
            self.reorder_peer(peer, old_best, Some(rank));
        }
    }

    /// Removes the message with `rank` from its peer's waiting list.
    fn waiting_remove(&mut self, peer: usize, rank: Rank) {
        let list = &mut self.peers[peer].waiting;
        let Ok(pos) = list.binary_search_by(|&(r, _)| r.cmp(&rank)) else {
            debug_assert!(false, "waiting message missing from its peer's list");
            return;
        };
        list.remove(pos);
        if pos == 0 {
            let new_best = list.first().map(|&(r, _)| r);
            self.reorder_peer(peer, Some(rank), new_best);
        }
    }

    /// Moves a peer in `peer_order` after its best waiting message changed.
    fn reorder_peer(&mut self, peer: usize, old_best: Option<Rank>, new_best: Option<Rank>) {
        if let Some(old) = old_best {
            if let Ok(i) = self.peer_order.binary_search(&(old, peer)) {
                self.peer_order.remove(i);
            } else {
                debug_assert!(false, "peer missing from the peer order");
            }
        }
        if let Some(new) = new_best {
            let entry = (new, peer);
            let i = self.peer_order.partition_point(|e| *e < entry);
            self.peer_order.insert(i, entry);
        }
    }

    /// The peer slot for `addr`, created if needed.
    fn peer_for(&mut self, addr: IpAddr) -> usize {
        if let Some(&p) = self.peer_index.get(&addr) {
            return p;
        }
        let p = match self.free_peers.pop() {
            Some(p) => {
                self.peers[p].addr = addr;
                p
            }
            None => {
                self.peers.push(Peer {
                    addr,
                    active: 0,
                    messages: 0,
                    waiting: Vec::new(),
                });
                self.peers.len() - 1
            }
        };
        self.peer_index.insert(addr, p);
        p
    }

    /// Drops one message's reference to its peer, freeing the slot at zero.
    fn release_peer(&mut self, peer: usize) {
        let p = &mut self.peers[peer];
        p.messages -= 1;
        if p.messages == 0 {
            debug_assert!(p.active == 0 && p.waiting.is_empty());
            self.peer_index.remove(&p.addr);
            self.free_peers.push(peer);
        }
    }

    /// Removes a message from `by_birth` (it is fully granted or gone); disarms the FIFO
    /// clock when no candidate is left.
    fn by_birth_remove(&mut self, birth: Time, seq: u64) {
        if let Ok(i) = self
            .by_birth
            .binary_search_by(|&(b, s, _)| (b, s).cmp(&(birth, seq)))
        {
            self.by_birth.remove(i);
        } else {
            debug_assert!(false, "message missing from the birth order");
        }
        if self.by_birth.is_empty() {
            self.fifo_due = None;
        }
    }

    /// Panics if any internal invariant is broken (tests only).
    #[cfg(test)]
    fn assert_consistent(&self) {
        // Accounting.
        let mut total = 0u64;
        for (key, m) in &self.msgs {
            assert!(m.received <= m.length, "{key}");
            assert_eq!(
                m.rec_incoming,
                m.granted.saturating_sub(m.received),
                "{key}"
            );
            total += u64::from(m.rec_incoming);
            assert!(!m.needy || m.place == Place::Active, "{key}");
        }
        assert_eq!(total, self.total_incoming);
        // Active set: sorted, consistent, bounded, full whenever messages wait.
        assert!(self.active.len() <= self.max_overcommit);
        assert_eq!(self.active.len(), self.msgs.len().min(self.max_overcommit));
        for w in self.active.windows(2) {
            assert!(w[0].rank < w[1].rank);
        }
        let mut needy = 0;
        for s in &self.active {
            let m = &self.msgs[&s.key];
            assert_eq!(m.place, Place::Active);
            assert_eq!(m.rank(), s.rank);
            assert_eq!(m.peer, s.peer);
            needy += usize::from(m.needy);
        }
        assert_eq!(needy, self.needy_count);
        // Peers and waiting lists.
        let mut waiting = 0;
        let mut with_waiting = 0;
        for (p, peer) in self.peers.iter().enumerate() {
            if self.free_peers.contains(&p) {
                assert!(peer.messages == 0 && peer.active == 0 && peer.waiting.is_empty());
                continue;
            }
            assert_eq!(self.peer_index[&peer.addr], p);
            let active = self.active.iter().filter(|s| s.peer == p).count() as u32;
            assert_eq!(active, peer.active);
            let tracked = self.msgs.values().filter(|m| m.peer == p).count() as u32;
            assert_eq!(tracked, peer.messages);
            assert!(peer.messages > 0);
            for w in peer.waiting.windows(2) {
                assert!(w[0].0 < w[1].0);
            }
            for &(rank, key) in &peer.waiting {
                let m = &self.msgs[&key];
                assert_eq!(m.place, Place::Waiting);
                assert_eq!(m.rank(), rank);
                assert_eq!(m.peer, p);
            }
            waiting += peer.waiting.len();
            if let Some(&(best, _)) = peer.waiting.first() {
                with_waiting += 1;
                assert!(self.peer_order.contains(&(best, p)));
            }
        }
        assert_eq!(
            self.peer_index.len() + self.free_peers.len(),
            self.peers.len()
        );
        assert_eq!(waiting + self.active.len(), self.msgs.len());
        assert_eq!(with_waiting, self.peer_order.len());
        for w in self.peer_order.windows(2) {
            assert!(w[0] < w[1]);
        }
        // Birth order: exactly the messages that are not fully granted.
        for w in self.by_birth.windows(2) {
            assert!(w[0] < w[1]);
        }
        let open = self.msgs.values().filter(|m| !m.fully_granted()).count();
        assert_eq!(open, self.by_birth.len());
        for &(birth, seq, key) in &self.by_birth {
            let m = &self.msgs[&key];
            assert!(m.birth == birth && m.seq == seq && !m.fully_granted());
        }
        if self.by_birth.is_empty() {
            assert!(self.fifo_due.is_none());
        }
    }
}

impl<R: Region> Engine<R> {
    /// Runs the grant scheduler if anything changed, queueing GRANTs.
    pub(crate) fn flush_grants(&mut self, now: Time) {
        let fifo_due = self.grants.next_fifo_time().is_some_and(|t| t <= now);
        if !self.grants_dirty && !fifo_due {
            return;
        }
        self.grants_dirty = false;
        let mut decisions = core::mem::take(&mut self.grant_scratch);
        decisions.clear();
        self.grants.poll_grants(now, &mut decisions);
        for d in &decisions {
            let Some(rpc) = self.rpcs.get_mut(d.key) else {
                continue;
            };
            let Some(m) = rpc.msgin.as_mut() else {
                continue;
            };
            m.granted = m.granted.max(d.offset.min(m.length));
            m.grant_priority = d.priority;
            let (to, id) = (rpc.peer, rpc.id);
            let repr = Repr::Grant(GrantRepr {
                common: self.common_to(to, id),
                offset: d.offset,
                priority: d.priority,
            });
            self.queue_control(to, repr);
        }
        self.grant_scratch = decisions;
    }

    /// On each tick, for RPC `key`: a scheduled message whose sender owes granted bytes
    /// and has sent nothing new for `resend_ticks` ticks leaves the scheduler, so that its
    /// granted bytes stop counting against `max_incoming` and its slot goes to a sender
    /// that sends; it rejoins when new bytes arrive (`incoming.rs`). Loss recovery goes
    /// on as before (RESENDs, then the timeout). The kernel keeps such a message
    /// scheduled until its RPC ends; a peer that announces large messages and never sends
    /// what it is granted would then hold the grants of every other sender.
    pub(crate) fn unschedule_if_idle(&mut self, key: u32) {
        let idle_after = u64::from(self.config.resend_ticks());
        let ticks = self.ticks;
        let Some(m) = self.rpcs.get_mut(key).and_then(|r| r.msgin.as_mut()) else {
            return;
        };
        if m.scheduled && m.received < m.granted && m.idle_for(ticks, idle_after) {
            m.scheduled = false;
            self.grants.remove(key);
            self.grants_dirty = true;
            self.stats.idle_unscheduled += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const MB: u32 = 1_000_000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn us(micros: u64) -> Time {
        Time::from_micros(micros)
    }

    fn poll(s: &mut GrantScheduler, now: Time) -> Vec<GrantDecision> {
        let mut out = Vec::new();
        s.poll_grants(now, &mut out);
        s.assert_consistent();
        out
    }

    fn grant(key: u32, offset: u32, priority: u8) -> GrantDecision {
        GrantDecision {
            key,
            offset,
            priority,
        }
    }

    /// A fully received unscheduled prefix: granted = received = 40000.
    fn insert_full_unsched(s: &mut GrantScheduler, key: u32, peer: u8, length: u32, birth: Time) {
        s.insert(key, ip(peer), length, 40_000, 40_000, birth);
        s.assert_consistent();
    }

    fn no_fifo() -> Config {
        Config::builder().grant_fifo_fraction(0).build().unwrap()
    }

    #[test]
    fn single_message_gets_a_200000_window_at_level_0() {
        let mut s = GrantScheduler::new(&Config::default());
        s.insert(1, ip(1), MB, 40_000, 10_000, us(0));
        assert_eq!(s.len(), 1);
        assert!(s.is_active(1));
        assert_eq!(s.total_incoming(), 30_000);
        assert_eq!(poll(&mut s, us(0)), [grant(1, 210_000, 0)]);
        assert_eq!(s.granted(1), Some(210_000));
        assert_eq!(s.total_incoming(), 200_000);
        // Nothing more until data arrives.
        assert!(poll(&mut s, us(1)).is_empty());
        s.update_received(1, 25_000);
        assert_eq!(s.total_incoming(), 185_000);
        assert_eq!(poll(&mut s, us(2)), [grant(1, 225_000, 0)]);
    }

    #[test]
    fn two_messages_get_133333_windows_at_levels_1_and_0() {
        let mut s = GrantScheduler::new(&no_fifo());
        insert_full_unsched(&mut s, 1, 1, MB, us(0));
        insert_full_unsched(&mut s, 2, 2, 500_000, us(1));
        assert_eq!(s.window(), 133_333);
        // Message 2 has fewer bytes remaining: rank 0, level 1.
        assert_eq!(
            poll(&mut s, us(2)),
            [grant(2, 173_333, 1), grant(1, 173_333, 0)]
        );
        assert_eq!(s.total_incoming(), 266_666);
    }

    #[test]
    fn four_or_more_active_messages_use_levels_3_2_1_0_0() {
        let mut s = GrantScheduler::new(&no_fifo());
        for k in 0..6u32 {
            // Longer keys are longer messages: key k has rank k.
            insert_full_unsched(&mut s, k, k as u8, 100_000 * (k + 1) + 40_000, us(0));
        }
        assert_eq!(s.window(), 57_142);
        let out = poll(&mut s, us(0));
        let prios: Vec<(u32, u8)> = out.iter().map(|d| (d.key, d.priority)).collect();
        assert_eq!(prios, [(0, 3), (1, 2), (2, 1), (3, 0), (4, 0), (5, 0)]);

        // With exactly 3 and 4 active messages.
        for (n, expect) in [(3u32, vec![2u8, 1, 0]), (4, vec![3, 2, 1, 0])] {
            let mut s = GrantScheduler::new(&no_fifo());
            for k in 0..n {
                insert_full_unsched(&mut s, k, 1, 100_000 * (k + 1) + 40_000, us(0));
            }
            let prios: Vec<u8> = poll(&mut s, us(0)).iter().map(|d| d.priority).collect();
            assert_eq!(prios, expect, "{n} active");
        }
    }

    #[test]
    fn priorities_follow_rank_changes_among_active_messages() {
        let mut s = GrantScheduler::new(&no_fifo());
        insert_full_unsched(&mut s, 1, 1, 300_000, us(0));
        insert_full_unsched(&mut s, 2, 2, 400_000, us(0));
        poll(&mut s, us(0));
        // Message 2 overtakes message 1 (fewer bytes remaining).
        s.update_received(2, 173_333);
        s.assert_consistent();
        s.update_received(1, 41_000);
        let out = poll(&mut s, us(1));
        assert_eq!(out, [grant(2, 306_666, 1), grant(1, 174_333, 0)]);
    }

    #[test]
    fn the_active_set_never_exceeds_max_overcommit() {
        for max in [1u32, 3, 8] {
            let config = Config::builder().max_overcommit(max).build().unwrap();
            let mut s = GrantScheduler::new(&config);
            for k in 0..30u32 {
                insert_full_unsched(
                    &mut s,
                    k,
                    (k % 7) as u8,
                    50_000 + 37_000 * (k % 11),
                    us(k.into()),
                );
                assert!(s.active_count() <= max as usize);
                poll(&mut s, us(k.into()));
            }
            assert_eq!(s.active_count(), max as usize);
            assert_eq!(s.len(), 30);
            for k in (0..30u32).step_by(2) {
                s.remove(k);
                s.assert_consistent();
                assert_eq!(s.active_count(), (max as usize).min(s.len()));
            }
        }
    }

    #[test]
    fn a_ninth_message_from_a_new_peer_displaces_by_the_balance_rule() {
        let mut s = GrantScheduler::new(&no_fifo());
        // Eight short messages from peer 1 fill the active set.
        for k in 0..8u32 {
            insert_full_unsched(&mut s, k, 1, 100_000 + 1000 * k, us(0));
        }
        assert_eq!(s.active_count(), 8);
        // A long message (the worst rank of all) from peer 2: peer 1 has 8 active, peer 2
        // none, so peer 1's lowest-ranked message (key 7) makes room.
        insert_full_unsched(&mut s, 100, 2, MB, us(1));
        assert!(s.is_active(100));
        assert!(!s.is_active(7));
        assert_eq!(s.active_count(), 8);

        // With eight peers holding one active message each, a worse-ranked newcomer from a
        // ninth peer does not displace anyone (1 is not at least 2 more than 0).
        let mut s = GrantScheduler::new(&no_fifo());
        for k in 0..8u32 {
            insert_full_unsched(&mut s, k, k as u8, 100_000 + 1000 * k, us(0));
        }
        insert_full_unsched(&mut s, 100, 50, MB, us(1));
        assert!(!s.is_active(100));
        assert!((0..8).all(|k| s.is_active(k)));

        // Peer 1 with two active, a newcomer from a peer with none: balance displaces
        // peer 1's worse message even though the newcomer is ranked last.
        let config = Config::builder().max_overcommit(3).build().unwrap();
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 1, 1, 100_000, us(0));
        insert_full_unsched(&mut s, 2, 1, 110_000, us(0));
        insert_full_unsched(&mut s, 3, 2, 120_000, us(0));
        insert_full_unsched(&mut s, 4, 3, MB, us(1));
        assert!(s.is_active(4) && s.is_active(1) && s.is_active(3));
        assert!(!s.is_active(2));
    }

    #[test]
    fn a_newcomer_that_outranks_the_victim_displaces_it() {
        let mut s = GrantScheduler::new(&no_fifo());
        for k in 0..8u32 {
            insert_full_unsched(&mut s, k, k as u8, 200_000 + 10_000 * k, us(0));
        }
        // A ninth peer's message that beats key 7 (the worst) but not key 6.
        insert_full_unsched(&mut s, 100, 9, 265_000, us(1));
        assert!(s.is_active(100));
        assert!(!s.is_active(7));
        // A newcomer that is worse than every active message stays out.
        insert_full_unsched(&mut s, 101, 10, 290_000, us(2));
        assert!(!s.is_active(101));

        // Same peer: the victim is the peer's own worst, displaced only by rank.
        let config = Config::builder().max_overcommit(2).build().unwrap();
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 1, 1, 300_000, us(0));
        insert_full_unsched(&mut s, 2, 2, 100_000, us(0));
        insert_full_unsched(&mut s, 3, 1, 400_000, us(1));
        assert!(!s.is_active(3));
        insert_full_unsched(&mut s, 4, 1, 200_000, us(2));
        assert!(s.is_active(4) && s.is_active(2));
        assert!(!s.is_active(1));
        // Ties in bytes remaining go to the older message.
        insert_full_unsched(&mut s, 5, 1, 200_000, us(3));
        assert!(!s.is_active(5));
    }

    #[test]
    fn a_waiting_message_that_becomes_its_peers_best_can_displace() {
        let config = Config::builder().max_overcommit(2).build().unwrap();
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 1, 1, 300_000, us(0));
        insert_full_unsched(&mut s, 2, 2, 400_000, us(0));
        // Peer 3's message waits: it is ranked last and balance does not favour it.
        s.insert(3, ip(3), 459_500, 100_000, 40_000, us(1));
        assert!(!s.is_active(3));
        poll(&mut s, us(1));
        // Its unscheduled bytes keep arriving; once it outranks key 2 it takes its slot.
        s.update_received(3, 99_000);
        assert!(!s.is_active(3));
        s.update_received(3, 100_000);
        s.assert_consistent();
        assert!(s.is_active(3));
        assert!(!s.is_active(2));
    }

    #[test]
    fn promotion_picks_the_best_message_of_the_peer_with_fewest_active() {
        let config = Config::builder().max_overcommit(3).build().unwrap();
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 10, 1, 100_000, us(0)); // peer 1
        insert_full_unsched(&mut s, 30, 3, 110_000, us(0)); // peer 3
        insert_full_unsched(&mut s, 40, 4, 120_000, us(0)); // peer 4
                                                            // Peer 1's second message waits (same-peer victim, worse rank).
        insert_full_unsched(&mut s, 11, 1, 130_000, us(1));
        // Peer 2's message waits (ranked last; 1 is not 2 more than 0).
        insert_full_unsched(&mut s, 20, 2, 900_000, us(1));
        assert!(!s.is_active(11) && !s.is_active(20));
        // Peer 1 comes first in peer order (its best waiting message is better) but has an
        // active message; peer 2 has none, so its message is promoted.
        s.remove(30);
        s.assert_consistent();
        assert!(s.is_active(20));
        assert!(!s.is_active(11));

        // Among peers with equally few active messages, the first in peer order wins.
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 10, 1, 100_000, us(0));
        insert_full_unsched(&mut s, 20, 2, 110_000, us(0));
        insert_full_unsched(&mut s, 30, 3, 120_000, us(0));
        insert_full_unsched(&mut s, 11, 1, 300_000, us(1));
        insert_full_unsched(&mut s, 21, 2, 200_000, us(1));
        insert_full_unsched(&mut s, 22, 2, 150_000, us(1));
        assert!(!s.is_active(11) && !s.is_active(21) && !s.is_active(22));
        s.remove(30);
        s.assert_consistent();
        assert!(
            s.is_active(22),
            "peer 2's best (150000) beats peer 1's (300000)"
        );
        // Now peer 2 has two active, peer 1 one: peer 1 goes first.
        s.remove(10);
        s.assert_consistent();
        assert!(s.is_active(11));
        assert!(!s.is_active(21));
    }

    #[test]
    fn grants_never_push_total_incoming_above_max_incoming() {
        // Twelve messages whose unscheduled bytes alone exceed max_incoming.
        let mut s = GrantScheduler::new(&Config::default());
        for k in 0..12u32 {
            s.insert(k, ip(k as u8), MB, 40_000, 0, us(0));
        }
        assert_eq!(s.total_incoming(), 480_000);
        assert!(poll(&mut s, us(0)).is_empty());
        assert!(poll(&mut s, us(10_000)).is_empty(), "no FIFO grant either");
        assert_eq!(s.total_incoming(), 480_000);
        // As unscheduled data arrives, grants resume only below the cap.
        for k in 0..12u32 {
            s.update_received(k, 40_000);
            let before = s.total_incoming();
            let out = poll(&mut s, us(20_000 + u64::from(k)));
            if !out.is_empty() {
                assert!(s.total_incoming() <= 400_000);
            } else {
                assert_eq!(s.total_incoming(), before);
            }
        }
        // Unscheduled bytes drained: eight full windows of 44444.
        assert_eq!(s.total_incoming(), 355_552);
    }

    #[test]
    fn needy_messages_are_served_first_when_headroom_returns() {
        let config = Config::builder()
            .max_incoming(100_000)
            .window(50_000)
            .grant_fifo_fraction(0)
            .build()
            .unwrap();
        let mut s = GrantScheduler::new(&config);
        insert_full_unsched(&mut s, 1, 1, 200_000, us(0));
        insert_full_unsched(&mut s, 2, 2, 300_000, us(0));
        insert_full_unsched(&mut s, 3, 3, 400_000, us(0));
        assert_eq!(
            poll(&mut s, us(0)),
            [grant(1, 90_000, 2), grant(2, 90_000, 1)]
        );
        assert!(s.is_needy(3));
        assert_eq!(s.total_incoming(), 100_000);

        // 20000 bytes of message 1 arrive: the needy message 3 gets them (partially, so it
        // stays needy), and message 1, though better ranked, waits behind it.
        s.update_received(1, 60_000);
        assert_eq!(poll(&mut s, us(1)), [grant(3, 60_000, 0)]);
        assert!(s.is_needy(3) && s.is_needy(1));
        assert!(!s.is_needy(2));

        // 30000 bytes of message 2 arrive: needy messages by rank, 1 (fully served) then 3.
        s.update_received(2, 70_000);
        assert_eq!(
            poll(&mut s, us(2)),
            [grant(1, 110_000, 2), grant(3, 70_000, 0)]
        );
        assert!(!s.is_needy(1) && s.is_needy(3));
        assert_eq!(s.total_incoming(), 100_000);

        // Removing message 3 clears its needy state; the rest proceed normally.
        s.remove(3);
        s.assert_consistent();
        assert_eq!(s.total_incoming(), 70_000);
        assert_eq!(poll(&mut s, us(3)), [grant(2, 120_000, 0)]);
    }

    #[test]
    fn a_fixed_window_does_not_depend_on_the_active_count() {
        let config = Config::builder()
            .window(60_000)
            .grant_fifo_fraction(0)
            .build()
            .unwrap();
        let mut s = GrantScheduler::new(&config);
        s.insert(1, ip(1), MB, 40_000, 5_000, us(0));
        assert_eq!(poll(&mut s, us(0)), [grant(1, 65_000, 0)]);
        for k in 2..=5u32 {
            insert_full_unsched(&mut s, k, k as u8, MB, us(1));
        }
        assert_eq!(s.window(), 60_000);
        let out = poll(&mut s, us(1));
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|d| d.offset == 100_000));
        // 60000 + 4·60000 = 300000 ≤ 400000: nobody is starved.
        assert_eq!(s.total_incoming(), 300_000);
    }

    #[test]
    fn fifo_interval_is_320us_at_the_defaults() {
        let s = GrantScheduler::new(&Config::default());
        assert_eq!(s.fifo_interval, Some(320_000));
        let s = GrantScheduler::new(&Config::builder().grant_fifo_fraction(500).build().unwrap());
        assert_eq!(s.fifo_interval, Some(32_000));
    }

    #[test]
    fn fifo_grants_go_to_the_oldest_eligible_message_once_per_interval() {
        let config = Config::builder()
            .max_overcommit(1)
            .max_incoming(2_000_000)
            .window(200_000)
            .build()
            .unwrap();
        let mut s = GrantScheduler::new(&config);
        // The old long message O (key 1) is displaced by the shorter S (key 2).
        insert_full_unsched(&mut s, 1, 1, MB, us(0));
        insert_full_unsched(&mut s, 2, 2, 300_000, us(1));
        assert!(s.is_active(2) && !s.is_active(1));
        // The first poll of the busy period arms the FIFO clock.
        assert_eq!(s.next_fifo_time(), None);
        assert_eq!(poll(&mut s, us(0)), [grant(2, 240_000, 0)]);
        assert_eq!(s.next_fifo_time(), Some(us(320)));
        assert!(poll(&mut s, us(319)).is_empty());
        // Due: O gets 50000 at level 6.
        assert_eq!(poll(&mut s, us(320)), [grant(1, 90_000, 6)]);
        assert_eq!(s.next_fifo_time(), Some(us(640)));
        assert!(
            poll(&mut s, us(321)).is_empty(),
            "at most once per interval"
        );
        assert!(poll(&mut s, us(639)).is_empty());
        // O never sends: its outstanding grant grows 50000 per interval while it is below
        // window + 2·increment = 300000...
        let mut t = 640;
        for offset in [140_000, 190_000, 240_000, 290_000, 340_000] {
            assert_eq!(poll(&mut s, us(t)), [grant(1, offset, 6)], "t = {t}");
            t += 320;
        }
        // ...and at 300000 it is skipped: the next oldest (S, outstanding 200000) gets it.
        assert_eq!(poll(&mut s, us(t)), [grant(2, 290_000, 6)]);
        t += 320;
        // Once O's data arrives it is eligible again.
        s.update_received(1, 140_000);
        assert_eq!(poll(&mut s, us(t)), [grant(1, 390_000, 6)]);
        // A late poll consumes the interval from its own time.
        assert_eq!(poll(&mut s, us(t + 1000)).len(), 1);
        assert_eq!(s.next_fifo_time(), Some(us(t + 1320)));
    }

    #[test]
    fn fifo_grants_are_capped_at_the_length_and_follow_the_srpt_pass() {
        let mut s = GrantScheduler::new(&Config::default());
        insert_full_unsched(&mut s, 1, 1, 260_000, us(0));
        assert_eq!(poll(&mut s, us(0)), [grant(1, 240_000, 0)]);
        s.update_received(1, 100_000);
        // SRPT grants the rest of the message: it is fully granted, no FIFO candidate left.
        assert_eq!(poll(&mut s, us(400)), [grant(1, 260_000, 0)]);
        assert_eq!(s.next_fifo_time(), None);

        let mut s = GrantScheduler::new(&Config::default());
        insert_full_unsched(&mut s, 1, 1, 270_000, us(0));
        insert_full_unsched(&mut s, 2, 2, MB, us(0));
        poll(&mut s, us(0));
        s.update_received(1, 100_000);
        // SRPT first (window 133333), then the FIFO grant of the oldest, capped at length.
        assert_eq!(
            poll(&mut s, us(320)),
            [grant(1, 233_333, 1), grant(1, 270_000, 6)]
        );
        assert_eq!(s.granted(1), Some(270_000));
    }

    #[test]
    fn a_zero_grant_fifo_fraction_disables_fifo_grants() {
        let mut s = GrantScheduler::new(&no_fifo());
        insert_full_unsched(&mut s, 1, 1, MB, us(0));
        insert_full_unsched(&mut s, 2, 2, 500_000, us(0));
        poll(&mut s, us(0));
        assert_eq!(s.next_fifo_time(), None);
        for t in 1..50u64 {
            let out = poll(&mut s, us(t * 320));
            assert!(out.is_empty(), "{out:?}");
            assert_eq!(s.next_fifo_time(), None);
        }
    }

    #[test]
    fn removal_keeps_total_incoming_consistent() {
        let mut s = GrantScheduler::new(&no_fifo());
        s.insert(1, ip(1), MB, 40_000, 10_000, us(0));
        s.insert(2, ip(1), 600_000, 40_000, 40_000, us(0));
        s.insert(3, ip(2), 300_000, 40_000, 0, us(0));
        assert_eq!(s.total_incoming(), 30_000 + 40_000);
        poll(&mut s, us(0));
        s.update_received(3, 20_000);
        s.update_received(1, 90_000);
        s.assert_consistent();
        let expected: u64 = [1u32, 2, 3]
            .iter()
            .map(|&k| {
                let m = &s.msgs[&k];
                u64::from(m.granted - m.received)
            })
            .sum();
        assert_eq!(s.total_incoming(), expected);
        let g2 = u64::from(s.granted(2).unwrap()) - 40_000;
        s.remove(2);
        s.assert_consistent();
        assert_eq!(s.total_incoming(), expected - g2);
        s.remove(2); // unknown now: no-op
        s.remove(99);
        s.remove(1);
        s.remove(3);
        s.assert_consistent();
        assert_eq!(s.total_incoming(), 0);
        assert!(s.is_empty());
        assert!(s.peer_index.is_empty());
        assert_eq!(s.active_count(), 0);
    }

    #[test]
    fn unknown_keys_stale_counts_and_ungrantable_messages_are_ignored() {
        let mut s = GrantScheduler::new(&Config::default());
        s.update_received(7, 1000);
        s.remove(7);
        assert!(s.is_empty());
        // Fully covered by unscheduled bytes, or already complete: not tracked.
        s.insert(1, ip(1), 40_000, 40_000, 0, us(0));
        s.insert(2, ip(1), 50_000, 40_000, 50_000, us(0));
        assert!(s.is_empty());
        s.insert(3, ip(1), MB, 40_000, 30_000, us(0));
        s.update_received(3, 20_000); // smaller: ignored
        assert_eq!(s.total_incoming(), 10_000);
        // A second insert of the same key only updates the count.
        s.insert(3, ip(9), 5, 0, 35_000, us(9));
        assert_eq!(s.total_incoming(), 5_000);
        assert_eq!(s.len(), 1);
        s.assert_consistent();
        assert_eq!(s.granted(3), Some(40_000));
        assert_eq!(s.granted(4), None);
        assert!(!s.is_active(4));
    }

    #[test]
    fn a_fully_granted_message_stays_tracked_and_is_never_granted_again() {
        let mut s = GrantScheduler::new(&Config::default());
        insert_full_unsched(&mut s, 1, 1, 100_000, us(0));
        assert_eq!(poll(&mut s, us(0)), [grant(1, 100_000, 0)]);
        for t in 1..5u64 {
            assert!(poll(&mut s, us(t * 1000)).is_empty());
        }
        assert_eq!(s.len(), 1);
        assert!(s.is_active(1));
        assert_eq!(s.total_incoming(), 60_000);
        s.update_received(1, 150_000); // capped at the length
        assert_eq!(s.total_incoming(), 0);
        s.assert_consistent();
        s.remove(1);
        assert!(s.is_empty());
    }

    // ---- Randomised sequences -------------------------------------------------------

    /// One step of a random sequence.
    #[derive(Debug, Clone)]
    enum Op {
        /// A new message: peer, length, unscheduled bytes, fraction (‰) of them received.
        Insert {
            peer: u8,
            length: u32,
            unsched: u32,
            received_permille: u32,
        },
        /// Data for the tracked message at this index (modulo their number): `permille` of
        /// what the sender may send (its grant plus one packet) arrives.
        Receive { pick: usize, permille: u32 },
        /// The tracked message at this index is aborted.
        Remove { pick: usize },
        /// Time advances by this many microseconds and the engine polls.
        Poll { advance_us: u32 },
    }

    /// The engine's side of the conversation, as a test oracle.
    struct Harness {
        s: GrantScheduler,
        config: Config,
        now: Time,
        next_key: u32,
        /// key → (length, received, granted as the sender knows it)
        model: Vec<(u32, u32, u32, u32)>,
        out: Vec<GrantDecision>,
        /// Coverage: SRPT grants, FIFO grants, polls that left needy messages.
        stats: [usize; 3],
    }

    impl Harness {
        fn new(config: Config) -> Self {
            Harness {
                s: GrantScheduler::new(&config),
                config,
                now: Time::ZERO,
                next_key: 0,
                model: Vec::new(),
                out: Vec::new(),
                stats: [0; 3],
            }
        }

        fn model_incoming(&self) -> u64 {
            self.model
                .iter()
                .map(|&(_, _, rcv, g)| u64::from(g.saturating_sub(rcv)))
                .sum()
        }

        fn step(&mut self, op: &Op) {
            let max_incoming = u64::from(self.config.max_incoming());
            match *op {
                Op::Insert {
                    peer,
                    length,
                    unsched,
                    received_permille,
                } => {
                    let unsched = unsched.min(length);
                    let received =
                        (u64::from(unsched) * u64::from(received_permille) / 1000) as u32;
                    // A well-behaved world: unscheduled bytes alone never exceed the cap.
                    let outstanding = u64::from(unsched - received);
                    if unsched >= length
                        || received >= length
                        || self.s.total_incoming() + outstanding > max_incoming
                    {
                        return;
                    }
                    let key = self.next_key;
                    self.next_key += 1;
                    self.s
                        .insert(key, ip(peer), length, unsched, received, self.now);
                    self.model.push((key, length, received, unsched));
                }
                Op::Receive { pick, permille } => {
                    if self.model.is_empty() {
                        return;
                    }
                    let i = pick % self.model.len();
                    let (key, length, received, granted) = self.model[i];
                    // Whole packets: up to one packet beyond the grant.
                    let limit = length.min(granted.saturating_add(1424));
                    let new = received
                        + ((u64::from(limit - received) * u64::from(permille)) / 1000) as u32;
                    self.s.update_received(key, new);
                    if new >= length {
                        // Complete: the engine removes it.
                        self.s.remove(key);
                        self.model.swap_remove(i);
                    } else {
                        self.model[i].2 = new;
                    }
                }
                Op::Remove { pick } => {
                    if self.model.is_empty() {
                        return;
                    }
                    let i = pick % self.model.len();
                    self.s.remove(self.model[i].0);
                    self.model.swap_remove(i);
                }
                Op::Poll { advance_us } => {
                    self.now = self.now.add_nanos(u64::from(advance_us) * 1000);
                    let before = self.s.total_incoming();
                    self.out.clear();
                    self.s.poll_grants(self.now, &mut self.out);
                    let fifo_prio = self.config.num_priorities().saturating_sub(2);
                    let mut fifo = 0;
                    for d in &self.out {
                        let m = self
                            .model
                            .iter_mut()
                            .find(|m| m.0 == d.key)
                            .expect("grant for a tracked message");
                        assert!(d.offset > m.3, "{d:?} does not advance {}", m.3);
                        assert!(d.offset <= m.1, "{d:?} beyond length {}", m.1);
                        if d.priority == fifo_prio && fifo_prio > self.config.max_sched_prio() {
                            fifo += 1;
                        } else {
                            assert!(d.priority <= self.config.max_sched_prio(), "{d:?}");
                        }
                        m.3 = d.offset;
                    }
                    assert!(fifo <= 1);
                    self.stats[0] += self.out.len() - fifo;
                    self.stats[1] += fifo;
                    self.stats[2] += usize::from(self.s.needy_count > 0);
                    if !self.out.is_empty() {
                        assert!(self.s.total_incoming() <= max_incoming);
                    }
                    assert!(self.s.total_incoming() <= before.max(max_incoming));
                    // Work conservation: after a poll, every active message that wants
                    // bytes is needy, and needy ones exist only without headroom.
                    let window = i64::from(self.s.window());
                    for slot in &self.s.active {
                        let m = &self.s.msgs[&slot.key];
                        let want = i64::from(m.received) + window - i64::from(m.granted);
                        if !m.fully_granted() && want > 0 {
                            assert!(m.needy, "active {} wants {want} but is not needy", slot.key);
                        }
                    }
                    if self.s.needy_count > 0 {
                        assert!(
                            self.s.total_incoming() >= max_incoming,
                            "needy with headroom: before {} now {} {:?} {:?} {:?} {:#?}",
                            before,
                            self.s.total_incoming(),
                            self.config,
                            self.out,
                            self.s.active,
                            self.s.msgs
                        );
                    }
                    if let Some(t) = self.s.next_fifo_time() {
                        assert!(t > self.now);
                    }
                }
            }
        }

        fn check(&self) {
            self.s.assert_consistent();
            assert_eq!(self.s.len(), self.model.len());
            assert_eq!(self.s.total_incoming(), self.model_incoming());
            assert!(self.s.total_incoming() <= u64::from(self.config.max_incoming()));
            assert!(self.s.active_count() <= self.config.max_overcommit() as usize);
            for &(key, ..) in &self.model {
                let g = self.s.granted(key).unwrap();
                assert_eq!(g, self.model.iter().find(|m| m.0 == key).unwrap().3);
            }
        }

        /// Runs `ops` checking everything after each; returns the coverage counters.
        fn run(config: Config, ops: &[Op]) -> [usize; 3] {
            let mut h = Harness::new(config);
            for op in ops {
                h.step(op);
                h.check();
            }
            for (key, ..) in std::mem::take(&mut h.model) {
                h.s.remove(key);
            }
            h.check();
            assert_eq!(h.s.total_incoming(), 0);
            assert!(h.s.is_empty() && h.s.peer_order.is_empty() && h.s.by_birth.is_empty());
            h.stats
        }
    }

    use crate::test_rng::XorShift;

    fn random_config(rng: &mut XorShift) -> Config {
        Config::builder()
            .max_overcommit(1 + rng.below(8) as u32)
            .max_incoming([400_000, 100_000, 1_000_000][rng.below(3) as usize])
            .window([0, 0, 30_000, 150_000][rng.below(4) as usize])
            .grant_fifo_fraction([50, 0, 500][rng.below(3) as usize])
            .fifo_grant_increment([50_000, 10_000][rng.below(2) as usize])
            .num_priorities([8, 4, 2, 1][rng.below(4) as usize])
            .build()
            .unwrap()
    }

    fn random_op(rng: &mut XorShift) -> Op {
        match rng.below(10) {
            0..=1 => Op::Insert {
                peer: rng.below(6) as u8,
                length: match rng.below(3) {
                    0 => 1 + rng.below(100_000) as u32,
                    1 => 1 + rng.below(400_000) as u32,
                    _ => 1 + rng.below(u64::from(MB)) as u32,
                },
                unsched: [40_000, 10_000, 0][rng.below(3) as usize],
                received_permille: rng.below(1001) as u32,
            },
            2..=5 => Op::Receive {
                pick: rng.next() as usize,
                permille: rng.below(1001) as u32,
            },
            6 => Op::Remove {
                pick: rng.next() as usize,
            },
            _ => Op::Poll {
                advance_us: rng.below(400) as u32,
            },
        }
    }

    #[test]
    fn seeded_random_sequences_keep_the_headroom_cap_and_the_accounting() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut stats = [0; 3];
        for _ in 0..100 {
            let config = random_config(&mut rng);
            let ops: Vec<Op> = (0..500).map(|_| random_op(&mut rng)).collect();
            let run = Harness::run(config, &ops);
            for (total, n) in stats.iter_mut().zip(run) {
                *total += n;
            }
        }
        // The sequences exercise SRPT grants, FIFO grants and starvation by the cap.
        assert!(stats.iter().all(|&n| n > 50), "{stats:?}");
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u8..6, 1u32..=MB, prop_oneof![Just(40_000u32), 0u32..=60_000], 0u32..=1000)
                .prop_map(|(peer, length, unsched, received_permille)| Op::Insert {
                    peer,
                    length,
                    unsched,
                    received_permille,
                }),
            4 => (any::<usize>(), 0u32..=1000).prop_map(|(pick, permille)| Op::Receive { pick, permille }),
            1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            3 => (0u32..700).prop_map(|advance_us| Op::Poll { advance_us }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_operation_sequences_keep_the_headroom_cap_and_the_accounting(
            max_overcommit in 1u32..=8,
            max_incoming in prop_oneof![Just(400_000u32), 50_000u32..=1_000_000],
            window in prop_oneof![Just(0u32), 1u32..=300_000],
            fifo_fraction in prop_oneof![Just(50u32), Just(0u32), 1u32..=500],
            ops in prop::collection::vec(op_strategy(), 0..150),
        ) {
            let config = Config::builder()
                .max_overcommit(max_overcommit)
                .max_incoming(max_incoming)
                .window(window)
                .grant_fifo_fraction(fifo_fraction)
                .build()
                .unwrap();
            Harness::run(config, &ops);
        }
    }
}

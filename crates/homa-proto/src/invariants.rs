//! Consistency checks over an engine's whole state, for tests and fuzzing.
//!
//! [`Engine::check_invariants`] walks every RPC and every index over them and reports the
//! first thing that does not add up. It is exact (no sampling) and costs
//! O(RPCs + bpages + queued packets), so a test can run it after every call into the
//! engine. Nothing here is needed to drive an engine.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::engine::{Engine, MAX_TOMBSTONES, MIN_CLIENT_PORT, TICK};
use crate::incoming::MAX_GAPS;
use crate::peer::MAX_PEERS;
use crate::region::Region;
use crate::rpc::{Rpc, RpcState};
use crate::wire::MAX_MESSAGE_LENGTH;

/// Returns `Err(format!(...))` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Names an RPC in a failure message (formatted only when one is made).
struct Named<'a>(u32, &'a Rpc);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Named(key, rpc) = self;
        write!(
            f,
            "RPC {} (key {key}, peer {}, {:?})",
            rpc.id, rpc.peer, rpc.state
        )
    }
}

impl<R: Region> Engine<R> {
    /// Checks that the engine's state is consistent; `Err` describes the first
    /// inconsistency found. A test and fuzzing aid, not part of the driving contract.
    ///
    /// Checked, exactly:
    /// * every live RPC is indexed exactly once (`client_ids` by id, `server_ids` by
    ///   client address and id) and every index entry names a live RPC with that id and
    ///   peer; RPC states agree with the messages they hold;
    /// * each message's counters are within its length, and an incoming message's gaps
    ///   add up to the bytes received;
    /// * `queued_bytes()` is the sum of the live outgoing messages' lengths;
    /// * the sendable sets hold exactly the RPCs with a sendable outgoing message, filed
    ///   under their current bytes left; the stalled set holds exactly the incomplete
    ///   incoming messages without buffers;
    /// * the grant scheduler tracks as many messages as are marked scheduled, its
    ///   granted-but-unreceived total matches theirs, and at most `max_overcommit` are
    ///   active;
    /// * the first stalled message (the shortest of those due first) does not fit in the
    ///   pool, unless a retry is pending;
    /// * the bpage tokens of incomplete messages are outstanding in the pool, each in one
    ///   message only (see also [`check_invariants_with`](Self::check_invariants_with));
    /// * tombstones are ordered, indexed once and name no live RPC; there are at most
    ///   `MAX_TOMBSTONES`; the peer table holds at most `MAX_PEERS` peers unless some
    ///   hold pending acks (the table only evicts peers without them);
    /// * queued retransmissions of live RPCs lie within their messages;
    /// * the timer is armed while any RPC is live or any ack is pending.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_rpcs()?;
        self.check_queues()?;
        self.check_pool(None)
    }

    /// [`check_invariants`](Self::check_invariants), and also that the bpage tokens add
    /// up exactly: the tokens of incomplete messages (owned by the engine) and
    /// `application_tokens` (delivered messages' tokens not yet released) are, together
    /// and without repetition, exactly the pool's outstanding tokens, and releasing them
    /// all would leave every bpage available. A test and fuzzing aid.
    #[doc(hidden)]
    pub fn check_invariants_with(&self, application_tokens: &[u32]) -> Result<(), String> {
        self.check_rpcs()?;
        self.check_queues()?;
        self.check_pool(Some(application_tokens))
    }

    /// One line per live RPC (key, id, peer, state, message progress), for failure
    /// messages of tests and fuzz targets.
    #[doc(hidden)]
    pub fn describe_rpcs(&self) -> String {
        let mut s = String::new();
        for key in self.rpcs.keys() {
            let Some(rpc) = self.rpcs.get(key) else {
                continue;
            };
            let _ = write!(
                s,
                "key {key} id {} peer {} {:?} silent {} done {:?}",
                rpc.id, rpc.peer, rpc.state, rpc.silent_ticks, rpc.done_tick
            );
            if let Some(out) = &rpc.msgout {
                let _ = write!(
                    s,
                    " out[len {} sent {} granted {} queued {:?}]",
                    out.length(),
                    out.next_offset,
                    out.granted,
                    rpc.queued
                );
            }
            if let Some(m) = &rpc.msgin {
                let _ = write!(
                    s,
                    " in[len {} received {} granted {} buffers {} scheduled {}]",
                    m.length,
                    m.received,
                    m.granted,
                    m.buffers.is_some(),
                    m.scheduled
                );
            }
            s.push('\n');
        }
        s
    }

    /// The server RPCs whose response waits for grants (every granted byte sent, some
    /// not granted yet), as (client, id, response length): what a test may allow to
    /// outlive a run while the timer never times them out (see
    /// `tests/engine_props.rs`, `server_rpc_whose_client_went_away_is_freed`).
    #[doc(hidden)]
    pub fn responses_waiting_for_grants(&self) -> Vec<(SocketAddr, u64, u32)> {
        self.rpcs
            .keys()
            .filter_map(|key| self.rpcs.get(key))
            .filter(|rpc| !rpc.is_client() && rpc.state == RpcState::Outgoing)
            .filter_map(|rpc| {
                let out = rpc.msgout.as_ref()?;
                (!out.fully_sent() && out.next_offset >= out.granted).then_some((
                    rpc.peer,
                    rpc.id,
                    out.length(),
                ))
            })
            .collect()
    }

    /// RPCs, their indexes, and the sets that file them.
    fn check_rpcs(&self) -> Result<(), String> {
        let (mut clients, mut servers, mut queued, mut stalled, mut scheduled) = (0, 0, 0, 0, 0);
        let (mut out_bytes, mut incoming) = (0u64, 0u64);
        let mut serials = Vec::with_capacity(self.rpcs.len());
        for key in self.rpcs.keys() {
            let rpc = self
                .rpcs
                .get(key)
                .ok_or_else(|| format!("key {key} listed, not live"))?;
            let what = Named(key, rpc);
            serials.push(rpc.serial);
            ensure!(
                rpc.serial <= self.next_serial,
                "{what}: serial from the future"
            );
            if rpc.is_client() {
                clients += 1;
                ensure!(
                    self.client_ids.get(&rpc.id) == Some(&key),
                    "{what}: not indexed"
                );
                ensure!(
                    (1..MIN_CLIENT_PORT).contains(&rpc.peer.port()),
                    "{what}: request to a client port"
                );
                ensure!(
                    rpc.state != RpcState::InService,
                    "{what}: client in service"
                );
                ensure!(rpc.msgout.is_some(), "{what}: client without its request");
            } else {
                servers += 1;
                ensure!(self.options.server, "{what}: server RPC on a client socket");
                ensure!(rpc.cookie == 0, "{what}: server RPC with a cookie");
                ensure!(
                    self.server_ids.get(&(rpc.peer.ip(), rpc.id)) == Some(&key),
                    "{what}: not indexed"
                );
                let complete = rpc.msgin.as_ref().is_some_and(|m| m.is_complete());
                match rpc.state {
                    RpcState::Incoming => ensure!(
                        rpc.msgout.is_none() && rpc.msgin.is_some() && !complete,
                        "{what}: receiving, but no incomplete request or a response"
                    ),
                    RpcState::InService => ensure!(
                        rpc.msgout.is_none() && complete,
                        "{what}: in service without a whole request, or with a response"
                    ),
                    RpcState::Outgoing => ensure!(
                        rpc.msgout.is_some() && complete,
                        "{what}: responding without a whole request or a response"
                    ),
                }
                ensure!(
                    !self.tombstone_set.contains(&(rpc.peer.ip(), rpc.id)),
                    "{what}: live and tombstoned"
                );
            }
            ensure!(
                rpc.done_tick.is_none()
                    || (!rpc.is_client()
                        && rpc.state == RpcState::Outgoing
                        && rpc.msgout.as_ref().is_some_and(|m| m.fully_sent())),
                "{what}: waiting for an ack before the response is sent"
            );
            if let Some(out) = &rpc.msgout {
                out_bytes += u64::from(out.length());
                let len = out.length();
                ensure!(
                    (1..=MAX_MESSAGE_LENGTH).contains(&len)
                        && out.next_offset <= len
                        && out.unsched <= out.granted
                        && out.granted <= len,
                    "{what}: outgoing length {len}, sent {}, unscheduled {}, granted {}",
                    out.next_offset,
                    out.unsched,
                    out.granted
                );
                let filed = rpc.queued.is_some();
                ensure!(
                    filed || !(rpc.state == RpcState::Outgoing && out.sendable()),
                    "{what}: sendable but not in the sendable sets"
                );
            }
            if let Some(remaining) = rpc.queued {
                queued += 1;
                let out = rpc
                    .msgout
                    .as_ref()
                    .ok_or_else(|| format!("{what}: filed as sendable"))?;
                ensure!(
                    out.sendable() && out.remaining() == remaining,
                    "{what}: filed as sendable with {remaining} bytes left, has {} (sendable: {})",
                    out.remaining(),
                    out.sendable()
                );
                ensure!(
                    self.sendable.contains(&(remaining, rpc.serial, key))
                        && self.sendable_by_age.contains(&(rpc.serial, key)),
                    "{what}: missing from the sendable sets"
                );
            }
            if let Some(m) = &rpc.msgin {
                let len = m.length;
                ensure!(
                    (1..=MAX_MESSAGE_LENGTH).contains(&len)
                        && m.received <= m.recv_end
                        && m.recv_end <= len
                        && m.granted <= len,
                    "{what}: incoming length {len}, received {}, end {}, granted {}",
                    m.received,
                    m.recv_end,
                    m.granted
                );
                let mut at = 0;
                let (mut gap_bytes, mut gaps) = (0, 0);
                for (start, end) in m.missing().filter(|&(s, _)| s < m.recv_end) {
                    ensure!(
                        at <= start && start < end && end <= m.recv_end,
                        "{what}: gaps out of order at {start}..{end}"
                    );
                    (at, gap_bytes, gaps) = (end, gap_bytes + end - start, gaps + 1);
                }
                ensure!(
                    gaps <= MAX_GAPS && m.received + gap_bytes == m.recv_end,
                    "{what}: {gaps} gaps of {gap_bytes} bytes, {} received below {}",
                    m.received,
                    m.recv_end
                );
                if let Some(b) = &m.buffers {
                    ensure!(b.length() == len, "{what}: buffers of {} bytes", b.length());
                    ensure!(!m.is_complete(), "{what}: complete but not delivered");
                } else if !m.is_complete() {
                    stalled += 1;
                    ensure!(
                        self.stalled.contains(&m.stall_entry(rpc.serial, key)),
                        "{what}: without buffers and not stalled"
                    );
                    ensure!(m.received == 0, "{what}: received bytes with nowhere to go");
                }
                if m.scheduled {
                    scheduled += 1;
                    ensure!(
                        m.buffers.is_some() && !m.is_complete(),
                        "{what}: scheduled without buffers or when complete"
                    );
                    incoming += u64::from(m.granted.saturating_sub(m.received));
                }
            }
        }
        serials.sort_unstable();
        ensure!(
            serials.windows(2).all(|w| w[0] < w[1]),
            "two RPCs share a serial"
        );
        ensure!(
            self.rpcs.len() == clients + servers,
            "rpc_count {} but {} RPCs live",
            self.rpcs.len(),
            clients + servers
        );
        ensure!(
            self.client_ids.len() == clients && self.server_ids.len() == servers,
            "{} client / {} server index entries for {clients} / {servers} RPCs",
            self.client_ids.len(),
            self.server_ids.len()
        );
        ensure!(
            servers <= self.config.max_server_rpcs() as usize,
            "{servers} server RPCs, over the cap of {}",
            self.config.max_server_rpcs()
        );
        ensure!(
            self.by_peer.len() == clients + servers
                && self.by_peer.iter().all(|&(ip, port, key)| self
                    .rpcs
                    .get(key)
                    .is_some_and(|r| r.peer.ip() == ip && r.peer.port() == port)),
            "the per-peer index ({} entries) does not match the {} RPCs",
            self.by_peer.len(),
            clients + servers
        );
        ensure!(
            self.queued_bytes == out_bytes,
            "queued_bytes {} but outgoing messages hold {out_bytes}",
            self.queued_bytes
        );
        ensure!(
            self.sendable.len() == queued && self.sendable_by_age.len() == queued,
            "sendable sets of {} and {} entries for {queued} sendable RPCs",
            self.sendable.len(),
            self.sendable_by_age.len()
        );
        ensure!(
            self.stalled.len() == stalled,
            "{} stalled entries for {stalled} messages waiting for buffers",
            self.stalled.len()
        );
        if let Some(&(_, len, _, key)) = self.stalled.first() {
            ensure!(
                self.unstall_pending || !self.pool.can_allocate(len),
                "stalled message of RPC key {key} ({len} bytes) fits in the pool now"
            );
        }
        let max_active = (self.config.max_overcommit() as usize).clamp(1, 8);
        ensure!(
            self.grants.len() == scheduled
                && self.grants.active_count() <= max_active.min(scheduled)
                && self.grants.total_incoming() == incoming,
            "grant scheduler tracks {} messages ({} active, {} bytes incoming); \
             {scheduled} are scheduled ({incoming} bytes incoming, at most {max_active} active)",
            self.grants.len(),
            self.grants.active_count(),
            self.grants.total_incoming()
        );
        Ok(())
    }

    /// Tombstones, peers, retransmissions and the timer.
    fn check_queues(&self) -> Result<(), String> {
        ensure!(
            self.tombstones.len() <= MAX_TOMBSTONES
                && self.tombstones.len() == self.tombstone_set.len(),
            "{} tombstones, {} indexed",
            self.tombstones.len(),
            self.tombstone_set.len()
        );
        let keep = TICK * (2 * self.config.timeout_ticks());
        let mut last = None;
        for &(expiry, ip, id) in &self.tombstones {
            ensure!(
                self.tombstone_set.contains(&(ip, id)),
                "tombstone ({ip}, {id}) not indexed"
            );
            ensure!(
                last.is_none_or(|t| t <= expiry) && expiry <= self.now + keep,
                "tombstone ({ip}, {id}) out of order or beyond its lifetime"
            );
            last = Some(expiry);
        }
        ensure!(
            self.peers.len() <= MAX_PEERS || self.peers.any_pending_acks(),
            "{} peers without pending acks (at most {MAX_PEERS})",
            self.peers.len()
        );
        for rt in &self.retransmits {
            let Some(rpc) = self.rpcs.get(rt.key).filter(|r| r.serial == rt.serial) else {
                continue; // stale: skipped when reached
            };
            let len = rpc.msgout.as_ref().map_or(0, |m| m.length());
            ensure!(
                rt.end <= len,
                "retransmission of RPC {} up to {} beyond its {len} bytes",
                rpc.id,
                rt.end
            );
        }
        ensure!(
            self.shut_down
                || self.timer_armed
                || (self.rpcs.len() == 0 && !self.peers.any_pending_acks()),
            "timer disarmed with {} RPCs live or acks pending",
            self.rpcs.len()
        );
        Ok(())
    }

    /// The pool: engine-owned tokens are outstanding and disjoint; with
    /// `application_tokens`, everything adds up to an idle pool.
    fn check_pool(&self, application_tokens: Option<&[u32]>) -> Result<(), String> {
        let pool = &self.pool;
        ensure!(
            pool.free_pages() <= pool.available_pages()
                && pool.available_pages() <= pool.page_count(),
            "pool: {} free, {} available of {} bpages",
            pool.free_pages(),
            pool.available_pages(),
            pool.page_count()
        );
        // Give every token back on a copy: a token that is not outstanding, or is held
        // twice, fails to release.
        let mut copy = pool.clone();
        let mut owned = 0;
        for key in self.rpcs.keys() {
            let Some(rpc) = self.rpcs.get(key) else {
                continue;
            };
            if let Some(b) = rpc.msgin.as_ref().and_then(|m| m.buffers.as_ref()) {
                copy.release_all(b)
                    .map_err(|e| format!("RPC {} (key {key}) buffers: {e}", rpc.id))?;
                owned += b.tokens().len();
            }
        }
        ensure!(
            copy.outstanding_tokens() + owned == pool.outstanding_tokens(),
            "releasing {owned} engine-owned tokens left {} of {} outstanding",
            copy.outstanding_tokens(),
            pool.outstanding_tokens()
        );
        let Some(tokens) = application_tokens else {
            return Ok(());
        };
        for &token in tokens {
            copy.release(token)
                .map_err(|e| format!("application token: {e}"))?;
        }
        ensure!(
            copy.is_idle() && copy.available_pages() == copy.page_count(),
            "{} tokens outstanding that neither the engine nor the application holds \
             ({} of {} bpages available once all are back)",
            copy.outstanding_tokens(),
            copy.available_pages(),
            copy.page_count()
        );
        Ok(())
    }
}

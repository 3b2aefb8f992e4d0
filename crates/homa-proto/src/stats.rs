//! Counters of everything the engine did and dropped, and diagnostic snapshots.

use crate::wire::WireError;

/// Counters of everything the engine did and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams given to `handle_datagram`.
    pub packets_received: u64,
    /// Packets returned by `poll_transmit`.
    pub packets_sent: u64,
    /// Valid packets received, per type (index = code − 0x10).
    pub received_by_type: [u64; 9],
    /// Packets sent, per type (index = code − 0x10).
    pub sent_by_type: [u64; 9],
    /// Packets that failed validation (too short, unknown type, bad DATA range).
    pub malformed: u64,
    /// The most recent validation failure.
    pub last_malformed: Option<WireError>,
    /// Packets whose destination port is not this socket's.
    pub wrong_port: u64,
    /// Packets for RPCs this engine does not have (late duplicates, stale peers).
    pub unknown_rpc: u64,
    /// Packets for an existing RPC that came from another address or Homa port than
    /// the RPC's peer (forged or misdirected; acks included): dropped.
    pub forged: u64,
    /// Response DATA for a request not yet fully sent (a server answers only whole
    /// requests, so it is forged or from a confused peer): dropped.
    pub early_responses: u64,
    /// Packets whose source Homa port is 0 (reserved; nothing can answer them): dropped.
    pub bad_source_port: u64,
    /// Request DATA refused because the socket already had `max_server_rpcs` server
    /// RPCs (the client retries after RPC_UNKNOWN).
    pub server_rpc_limit: u64,
    /// Server RPCs freed because their client stayed silent for `timeout_ticks` while
    /// the server waited for grants, for the application, for buffer space or for the
    /// rest of a request it had stopped expecting.
    pub abandoned: u64,
    /// Keep-alive GRANTs sent for responses waiting for grants or buffer space.
    pub keepalives: u64,
    /// Retransmission ranges not queued because too many were waiting (the peer asks
    /// again).
    pub retransmits_dropped: u64,
    /// Request DATA received by a socket that is not a server.
    pub requests_to_client: u64,
    /// DATA payload already received (duplicates, overlaps).
    pub duplicate_data: u64,
    /// DATA whose `message_length` differs from the message's first packet.
    pub length_mismatch: u64,
    /// DATA dropped because its message waits for receive-buffer space.
    pub dropped_while_stalled: u64,
    /// DATA dropped because it would open too many gaps in its message.
    pub dropped_too_many_gaps: u64,
    /// Messages that had to wait for receive-buffer space.
    pub buffer_stalls: u64,
    /// Messages whose buffers were taken back for a stalled message because their
    /// sender had sent nothing new for `resend_ticks` ticks (their bytes are asked for
    /// again when they get space).
    pub buffers_reclaimed: u64,
    /// Messages taken out of grant scheduling because their sender owed granted bytes
    /// and sent nothing new for `resend_ticks` ticks (they rejoin when bytes arrive).
    pub idle_unscheduled: u64,
    /// DATA packets sent again for RESENDs or restarts.
    pub retransmitted_packets: u64,
    /// Probes (RESENDs, NEED_ACKs, keep-alive GRANTs) put off to a later tick because
    /// their peer had had its `resend_budget` for this one (`probe.rs`).
    pub probes_deferred: u64,
    /// Requests restarted after RPC_UNKNOWN.
    pub restarts: u64,
    /// RPCs aborted after `timeout_ticks` of silence (client and server).
    pub timeouts: u64,
    /// Server RPCs freed because the client never acknowledged the response.
    pub unacknowledged_discards: u64,
    /// FREEZE packets (ignored).
    pub freezes_ignored: u64,
    /// Server RPCs freed by acks.
    pub acked_rpcs: u64,
    /// Request DATA for a server RPC that was recently finished (a delayed duplicate):
    /// dropped instead of executing the request twice.
    pub stale_requests: u64,
    /// DATA packets whose payload the driver received straight into the receive region
    /// ([`Engine::handle_placed`](crate::engine::Engine::handle_placed)) and that were accepted there, without a copy.
    pub placed_packets: u64,
    /// Packets received into a [`Placement`](crate::engine::Placement) that no longer
    /// matched their message when handled (the RPC ended or restarted meanwhile): dropped,
    /// to be asked for again like any lost packet.
    pub misplaced: u64,
}

/// The receiver's grant state, for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantInfo {
    /// Incoming messages that need grants.
    pub grantable: usize,
    /// Messages currently granted to (at most `max_overcommit`).
    pub active: usize,
    /// Granted but not yet received bytes over all grantable messages.
    pub total_incoming: u64,
}

/// How much state the engine holds: entries and allocated room of its tables. After a
/// burst (a flood of requests) the entries go back down as RPCs finish or time out, and
/// the allocated room follows within about a second (the tables are compacted every
/// 1000 ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Footprint {
    /// Live RPCs (client and server).
    pub rpcs: usize,
    /// RPC slots allocated (live or free).
    pub rpc_slots: usize,
    /// Room allocated in the id indexes (client ids + server ids).
    pub id_index_capacity: usize,
    /// Tombstones of finished server RPCs.
    pub tombstones: usize,
    /// Room allocated for tombstones (queue + set).
    pub tombstone_capacity: usize,
    /// Peers with state, and room allocated for them.
    pub peers: usize,
    /// Room allocated for peers.
    pub peer_capacity: usize,
    /// Peers whose last answer to a client RPC is remembered (at most 16,384; client
    /// timeouts consult it).
    pub live_peers: usize,
    /// Queued application events.
    pub events: usize,
    /// Queued retransmission ranges.
    pub retransmits: usize,
}

/// Adds another engine's counters (a sharded socket reports the sum of its shards).
/// `last_malformed` becomes the other's when it has one.
///
/// ```
/// use homa_proto::engine::Stats;
/// let mut total = Stats::default();
/// let mut shard = Stats::default();
/// shard.packets_received = 3;
/// shard.received_by_type[0] = 2;
/// total += &shard;
/// total += &shard;
/// assert_eq!((total.packets_received, total.received_by_type[0]), (6, 4));
/// ```
impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, other: &Stats) {
        // Destructured without `..`: a new counter must be added here to compile.
        let Stats {
            packets_received,
            packets_sent,
            received_by_type,
            sent_by_type,
            malformed,
            last_malformed,
            wrong_port,
            unknown_rpc,
            forged,
            early_responses,
            bad_source_port,
            server_rpc_limit,
            abandoned,
            keepalives,
            retransmits_dropped,
            requests_to_client,
            duplicate_data,
            length_mismatch,
            dropped_while_stalled,
            dropped_too_many_gaps,
            buffer_stalls,
            buffers_reclaimed,
            idle_unscheduled,
            retransmitted_packets,
            probes_deferred,
            restarts,
            timeouts,
            unacknowledged_discards,
            freezes_ignored,
            acked_rpcs,
            stale_requests,
            placed_packets,
            misplaced,
        } = other;
        for (mine, theirs) in [
            (&mut self.packets_received, packets_received),
            (&mut self.packets_sent, packets_sent),
            (&mut self.malformed, malformed),
            (&mut self.wrong_port, wrong_port),
            (&mut self.unknown_rpc, unknown_rpc),
            (&mut self.forged, forged),
            (&mut self.early_responses, early_responses),
            (&mut self.bad_source_port, bad_source_port),
            (&mut self.server_rpc_limit, server_rpc_limit),
            (&mut self.abandoned, abandoned),
            (&mut self.keepalives, keepalives),
            (&mut self.retransmits_dropped, retransmits_dropped),
            (&mut self.requests_to_client, requests_to_client),
            (&mut self.duplicate_data, duplicate_data),
            (&mut self.length_mismatch, length_mismatch),
            (&mut self.dropped_while_stalled, dropped_while_stalled),
            (&mut self.dropped_too_many_gaps, dropped_too_many_gaps),
            (&mut self.buffer_stalls, buffer_stalls),
            (&mut self.buffers_reclaimed, buffers_reclaimed),
            (&mut self.idle_unscheduled, idle_unscheduled),
            (&mut self.retransmitted_packets, retransmitted_packets),
            (&mut self.probes_deferred, probes_deferred),
            (&mut self.restarts, restarts),
            (&mut self.timeouts, timeouts),
            (&mut self.unacknowledged_discards, unacknowledged_discards),
            (&mut self.freezes_ignored, freezes_ignored),
            (&mut self.acked_rpcs, acked_rpcs),
            (&mut self.stale_requests, stale_requests),
            (&mut self.placed_packets, placed_packets),
            (&mut self.misplaced, misplaced),
        ] {
            *mine += *theirs;
        }
        for (mine, theirs) in self.received_by_type.iter_mut().zip(received_by_type) {
            *mine += *theirs;
        }
        for (mine, theirs) in self.sent_by_type.iter_mut().zip(sent_by_type) {
            *mine += *theirs;
        }
        if last_malformed.is_some() {
            self.last_malformed = *last_malformed;
        }
    }
}

/// Adds another engine's footprint (a sharded socket reports the sum of its shards).
impl std::ops::AddAssign<Footprint> for Footprint {
    fn add_assign(&mut self, other: Footprint) {
        let Footprint {
            rpcs,
            rpc_slots,
            id_index_capacity,
            tombstones,
            tombstone_capacity,
            peers,
            peer_capacity,
            live_peers,
            events,
            retransmits,
        } = other;
        self.rpcs += rpcs;
        self.rpc_slots += rpc_slots;
        self.id_index_capacity += id_index_capacity;
        self.tombstones += tombstones;
        self.tombstone_capacity += tombstone_capacity;
        self.peers += peers;
        self.peer_capacity += peer_capacity;
        self.live_peers += live_peers;
        self.events += events;
        self.retransmits += retransmits;
    }
}

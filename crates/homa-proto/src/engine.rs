//! The engine: one Homa socket (one port), sans-IO.
//!
//! # Driving contract
//!
//! The engine owns no socket, thread or clock. A driver (the socket library, the
//! simulator, a test) calls it like this, passing the current time to every call:
//!
//! 1. **Packets in**: for every datagram received, [`Engine::handle_datagram`]`(now, from, bytes)`.
//!    Malformed packets are counted in [`Stats`] and dropped; nothing received can panic.
//! 2. **Packets out**: after *any* call into the engine (a packet, a timeout, an
//!    application call), drain [`Engine::poll_transmit`]`(now, buf)` until it returns
//!    `None`, sending each packet to [`Transmit::destination`] with IP TOS / Traffic Class
//!    [`Transmit::tos`]. `buf` must hold [`Engine::max_packet_size`] bytes. The checksum
//!    field is left 0; a raw-IP driver fills it with [`wire::fill_checksum_split`](crate::wire::fill_checksum_split).
//! 3. **Time**: call [`Engine::handle_timeout`]`(now)` when `now` reaches
//!    [`Engine::poll_timeout`] (re-read it after every call; `None` = no timer needed).
//!    It drives the 1 ms tick (RESENDs, timeouts, NEED_ACKs) and the pacer.
//! 4. **Application events**: drain [`Engine::poll_event`] after every call. A delivered
//!    [`Message`]'s bytes live in the receive region at [`Message::buffers`]; the
//!    application owns them until it gives them back with [`Engine::release`] or
//!    [`Engine::release_message`].
//!
//! ```
//! use std::net::SocketAddr;
//! use homa_proto::engine::{Engine, EngineOptions, Event};
//! use homa_proto::{Config, Time};
//!
//! let client_addr: SocketAddr = "10.0.0.1:32768".parse().unwrap();
//! let server_addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
//! let mut client = Engine::new(Config::default(), EngineOptions::client(32768, 2), vec![0; 1 << 20]).unwrap();
//! let mut server = Engine::new(Config::default(), EngineOptions::server(4000, 1000), vec![0; 1 << 20]).unwrap();
//!
//! let now = Time::ZERO;
//! let id = client.send_request(now, server_addr, b"ping".to_vec(), 7).unwrap();
//! let mut buf = vec![0; client.max_packet_size()];
//! // Deliver every packet each way until both are quiet (a loss-free, zero-delay network).
//! loop {
//!     let mut moved = false;
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         server.handle_datagram(now, client_addr.ip(), &buf[..t.len]);
//!         moved = true;
//!     }
//!     while let Some(t) = server.poll_transmit(now, &mut buf) {
//!         client.handle_datagram(now, server_addr.ip(), &buf[..t.len]);
//!         moved = true;
//!     }
//!     while let Some(ev) = server.poll_event() {
//!         if let Event::Request(req) = ev {
//!             assert_eq!(server.message_bytes(&req), b"ping");
//!             server.release_message(now, &req).unwrap();
//!             server.send_response(now, req.peer, req.id, b"pong".to_vec()).unwrap();
//!             moved = true;
//!         }
//!     }
//!     if !moved { break; }
//! }
//! match client.poll_event() {
//!     Some(Event::Response(resp)) => {
//!         assert_eq!((resp.id, resp.cookie), (id, 7));
//!         assert_eq!(client.message_bytes(&resp), b"pong");
//!     }
//!     other => panic!("expected the response, got {other:?}"),
//! }
//! ```

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

use crate::grant::{GrantDecision, GrantScheduler};
use crate::outgoing::{OutMessage, Retransmit};
use crate::pacer::Pacer;
use crate::peer::PeerTable;
pub use crate::placement::Placement;
use crate::pool::{BufferPool, PoolError};
use crate::region::{ReadRegion, Region};
use crate::rpc::{is_client_id, Rpc, RpcState, Slab};
use crate::wire::{CommonRepr, PacketType, Repr, WireError, DATA_HEADER_LEN, MAX_MESSAGE_LENGTH};
use crate::{Config, Time};

pub use crate::error::{EngineError, SendError};
pub use crate::event::{Event, Message, RpcError, RpcFailure, Unreachable};
pub use crate::stats::{Footprint, GrantInfo, Stats};

/// Length of one timer tick.
pub const TICK: Duration = Duration::from_millis(1);
/// Lowest port a client socket may use (`HOMA_MIN_DEFAULT_PORT`).
pub const MIN_CLIENT_PORT: u16 = 0x8000;
/// Most finished server RPCs remembered (see [`Stats::stale_requests`]).
pub const MAX_TOMBSTONES: usize = 1 << 18;
/// Largest Homa packet to an IPv4 peer on a 1500-byte MTU path (IP header 20).
pub const DEFAULT_MAX_PACKET_V4: usize = 1500 - 20;
/// Largest Homa packet to an IPv6 peer on a 1500-byte MTU path (IP header 40).
pub const DEFAULT_MAX_PACKET_V6: usize = 1500 - 40;

/// How an engine is set up: its port, role and packet sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// The Homa port of this socket: 1..=32767 for a server, 32768..=65535 for a client.
    pub port: u16,
    /// Whether the socket accepts requests (a server, after `bind`).
    pub server: bool,
    /// First client RPC id; made even. Ids must be unique per client IP address across
    /// processes and restarts (PROTOCOL.md 2.3): drivers pass a random value whose high
    /// bits differ per process.
    pub first_id: u64,
    /// Largest Homa packet (header + payload) sent to IPv4 peers: path MTU − 20
    /// (− 8 more under UDP).
    pub max_packet_v4: usize,
    /// Largest Homa packet sent to IPv6 peers: path MTU − 40 (− 8 more under UDP).
    pub max_packet_v6: usize,
    /// Largest Homa packet sent to loopback peers (127.0.0.0/8, ::1), whose MTU is
    /// usually 65536; `None` = the same as other peers of the family.
    pub max_packet_loopback: Option<usize>,
    /// Whether packets to loopback peers go through the pacer. They never reach a NIC,
    /// so by default (false) they are neither deferred nor counted in the NIC backlog.
    pub pace_loopback: bool,
    /// Unscheduled bytes of messages to loopback peers: the loopback path's RTT-bytes.
    /// `None` (the default) = `Config::unsched_bytes`, as for any peer. Over loopback a
    /// GRANT round trip costs as much as moving the bytes and there is no switch queue
    /// to protect, so a driver that sends over a host's loopback sets it high (the
    /// socket library: the whole message, so no loopback message waits for a grant).
    /// Grants still take over past it; the receiver's scheduling is unchanged.
    pub unsched_loopback: Option<u32>,
}

impl EngineOptions {
    /// A client socket on `port` (32768..=65535) whose ids start at `first_id`.
    pub fn client(port: u16, first_id: u64) -> Self {
        EngineOptions {
            port,
            server: false,
            first_id,
            max_packet_v4: DEFAULT_MAX_PACKET_V4,
            max_packet_v6: DEFAULT_MAX_PACKET_V6,
            max_packet_loopback: None,
            pace_loopback: false,
            unsched_loopback: None,
        }
    }

    /// A server socket bound to `port` (1..=32767); it can also send requests, with ids
    /// starting at `first_id`.
    pub fn server(port: u16, first_id: u64) -> Self {
        EngineOptions {
            server: true,
            ..EngineOptions::client(port, first_id)
        }
    }
}

/// The payload of a DATA packet from [`Engine::poll_transmit_split`]: a range of the
/// message's bytes, shared with the engine (cloning it copies no bytes).
#[derive(Clone)]
pub struct Payload {
    pub(crate) data: Bytes,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Payload {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("range", &(self.start..self.end))
            .finish()
    }
}

/// A packet written by [`Engine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it: the peer's IP address and Homa port.
    pub destination: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// Priority level, 0 (lowest) ..= 7.
    pub priority: u8,
    /// IPv4 TOS / IPv6 Traffic Class byte for the level (`priority_map[level] << 5`).
    pub tos: u8,
    /// The packet's type.
    pub packet_type: PacketType,
}

/// A control packet waiting to be sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Control {
    pub(crate) to: SocketAddr,
    pub(crate) repr: Repr<'static>,
    pub(crate) priority: u8,
}

/// One Homa socket: every RPC it is a client or server of, and the protocol around them.
/// See the [module documentation](self) for how to drive it.
pub struct Engine<R: Region = Vec<u8>> {
    pub(crate) config: Config,
    pub(crate) options: EngineOptions,
    pub(crate) next_id: u64,
    pub(crate) shut_down: bool,
    pub(crate) region: R,
    pub(crate) pool: BufferPool,
    pub(crate) rpcs: Slab,
    pub(crate) client_ids: HashMap<u64, u32>,
    pub(crate) server_ids: HashMap<(IpAddr, u64), u32>,
    /// Every RPC by (peer address, peer port, key): ICMP reports and other per-peer
    /// work touch only that peer's RPCs.
    pub(crate) by_peer: BTreeSet<(IpAddr, u16, u32)>,
    pub(crate) next_serial: u64,
    pub(crate) peers: PeerTable,
    pub(crate) grants: GrantScheduler,
    pub(crate) grant_scratch: Vec<GrantDecision>,
    pub(crate) grants_dirty: bool,
    pub(crate) pacer: Pacer,
    /// RPCs with a packet that may be sent, by (bytes left, age).
    pub(crate) sendable: BTreeSet<(u32, u64, u32)>,
    /// The same RPCs by age, for the pacer's FIFO share.
    pub(crate) sendable_by_age: BTreeSet<(u64, u32)>,
    /// Thousandths accumulated toward the next FIFO pick.
    pub(crate) fifo_credit: u32,
    pub(crate) control: VecDeque<Control>,
    pub(crate) retransmits: VecDeque<Retransmit>,
    /// RPCs whose incoming message waits for buffer space (`stall.rs`).
    pub(crate) stalled: BTreeSet<crate::stall::StallEntry>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timer_armed: bool,
    pub(crate) next_tick: Time,
    pub(crate) ticks: u64,
    /// Bytes of outgoing messages not yet finished (for `wmem_max`).
    pub(crate) queued_bytes: u64,
    pub(crate) stats: Stats,
    pub(crate) scratch_keys: Vec<u32>,
    /// Reused by the timer pass: RPCs due a probe (`probe.rs`).
    pub(crate) scratch_probes: Vec<crate::probe::DueProbe>,
    /// When each peer last answered a client RPC (`probe.rs`).
    pub(crate) liveness: crate::probe::Liveness,
    /// Reused by `reclaim_idle_buffers` (`stall.rs`).
    pub(crate) scratch_idle: Vec<(bool, u32, u32)>,
    /// Reused by `refresh_stalled_order` (`stall.rs`).
    pub(crate) scratch_moves: Vec<crate::stall::StallEntry>,
    /// The new byte ranges of the DATA packet being handled.
    pub(crate) scratch_ranges: Vec<(u32, u32)>,
    /// Buffer space may have been freed: retry stalled messages.
    pub(crate) unstall_pending: bool,
    /// The latest time passed to any entry point.
    pub(crate) now: Time,
    /// Recently finished server RPCs, oldest first, with the time they may be forgotten.
    pub(crate) tombstones: VecDeque<(Time, IpAddr, u64)>,
    pub(crate) tombstone_set: HashSet<(IpAddr, u64)>,
    /// The two RPCs that most recently received new DATA, newest first: where
    /// [`placements`](Engine::placements) predicts the next packets go.
    pub(crate) last_data: [Option<u32>; 2],
}

impl<R: Region> fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("port", &self.options.port)
            .field("server", &self.options.server)
            .field("rpcs", &self.rpcs.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Region> Engine<R> {
    /// Creates an engine for one socket, receiving into `region` (cut into 64 KiB bpages).
    pub fn new(config: Config, options: EngineOptions, region: R) -> Result<Self, EngineError> {
        let port_ok = if options.server {
            (1..MIN_CLIENT_PORT).contains(&options.port)
        } else {
            options.port >= MIN_CLIENT_PORT
        };
        if !port_ok {
            return Err(EngineError::InvalidPort {
                port: options.port,
                server: options.server,
            });
        }
        for (option, value) in [
            ("max_packet_v4", options.max_packet_v4),
            ("max_packet_v6", options.max_packet_v6),
            (
                "max_packet_loopback",
                options.max_packet_loopback.unwrap_or(DEFAULT_MAX_PACKET_V4),
            ),
        ] {
            if !(DATA_HEADER_LEN + 1..=65535).contains(&value) {
                return Err(EngineError::InvalidPacketSize { option, value });
            }
        }
        let pool = BufferPool::new(region.len()).map_err(EngineError::Pool)?;
        Ok(Engine {
            grants: GrantScheduler::new(&config),
            pacer: Pacer::new(&config, options.max_packet_v4),
            next_id: options.first_id & !1,
            config,
            options,
            shut_down: false,
            region,
            pool,
            rpcs: Slab::default(),
            client_ids: HashMap::new(),
            server_ids: HashMap::new(),
            by_peer: BTreeSet::new(),
            next_serial: 0,
            peers: PeerTable::default(),
            grant_scratch: Vec::new(),
            grants_dirty: false,
            sendable: BTreeSet::new(),
            sendable_by_age: BTreeSet::new(),
            fifo_credit: 0,
            control: VecDeque::new(),
            retransmits: VecDeque::new(),
            stalled: BTreeSet::new(),
            events: VecDeque::new(),
            timer_armed: false,
            next_tick: Time::ZERO,
            ticks: 0,
            queued_bytes: 0,
            stats: Stats::default(),
            scratch_keys: Vec::new(),
            scratch_probes: Vec::new(),
            liveness: crate::probe::Liveness::default(),
            scratch_idle: Vec::new(),
            scratch_moves: Vec::new(),
            scratch_ranges: Vec::new(),
            unstall_pending: false,
            now: Time::ZERO,
            tombstones: VecDeque::new(),
            tombstone_set: HashSet::new(),
            last_data: [None; 2],
        })
    }

    /// This socket's Homa port.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// Whether this socket accepts requests.
    pub fn is_server(&self) -> bool {
        self.options.server
    }

    /// The protocol configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The receive region.
    pub fn region(&self) -> &R {
        &self.region
    }

    /// The bpage pool (free space, outstanding tokens).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Live RPCs (client and server).
    pub fn rpc_count(&self) -> usize {
        self.rpcs.len()
    }

    /// Whether client RPC `id` is still waiting for its response.
    pub fn has_client_rpc(&self, id: u64) -> bool {
        is_client_id(id) && self.client_ids.contains_key(&id)
    }

    /// Number of peers with state.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The receiver's grant state.
    pub fn grant_info(&self) -> GrantInfo {
        GrantInfo {
            grantable: self.grants.len(),
            active: self.grants.active_count(),
            total_incoming: self.grants.total_incoming(),
        }
    }

    /// How much state the engine holds (table sizes and allocated room).
    ///
    /// ```
    /// use homa_proto::engine::{Engine, EngineOptions};
    /// use homa_proto::Config;
    /// let e: Engine = Engine::new(Config::default(), EngineOptions::server(99, 1), vec![0; 1 << 21]).unwrap();
    /// assert_eq!(e.footprint().rpcs, 0);
    /// ```
    pub fn footprint(&self) -> Footprint {
        Footprint {
            rpcs: self.rpcs.len(),
            rpc_slots: self.rpcs.capacity(),
            id_index_capacity: self.client_ids.capacity() + self.server_ids.capacity(),
            tombstones: self.tombstones.len(),
            tombstone_capacity: self.tombstones.capacity() + self.tombstone_set.capacity(),
            peers: self.peers.len(),
            peer_capacity: self.peers.capacity(),
            live_peers: self.liveness.len(),
            events: self.events.len(),
            retransmits: self.retransmits.len(),
        }
    }
    /// The buffer size [`poll_transmit`](Self::poll_transmit) needs.
    pub fn max_packet_size(&self) -> usize {
        let loopback = self.options.max_packet_loopback.unwrap_or(0);
        self.options
            .max_packet_v4
            .max(self.options.max_packet_v6)
            .max(loopback)
    }

    /// Bytes of unfinished outgoing messages, counted against `wmem_max`.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Unscheduled bytes of a message to `dest` (PROTOCOL.md 3.2: RTT-bytes of the path).
    pub(crate) fn unsched_to(&self, dest: IpAddr) -> u32 {
        match self.options.unsched_loopback {
            Some(bytes) if dest.is_loopback() => bytes,
            _ => self.config.unsched_bytes(),
        }
    }

    /// A new outgoing message to `dest`. To loopback peers with the loopback
    /// unscheduled bytes set (`EngineOptions::unsched_loopback`: this library at both
    /// ends), a message of several packets starts with a short lead packet
    /// (`OutMessage::with_lead`), so that the receiver places the rest.
    fn out_message(&self, message: Bytes, dest: IpAddr) -> OutMessage {
        let out = OutMessage::new(message, self.unsched_to(dest), self.max_seg(dest));
        if dest.is_loopback() && self.options.unsched_loopback.is_some() {
            out.with_lead()
        } else {
            out
        }
    }

    pub(crate) fn max_seg(&self, dest: IpAddr) -> u32 {
        let max_packet = match (dest, self.options.max_packet_loopback) {
            (d, Some(lo)) if d.is_loopback() => lo,
            (IpAddr::V4(_), _) => self.options.max_packet_v4,
            (IpAddr::V6(_), _) => self.options.max_packet_v6,
        };
        (max_packet - DATA_HEADER_LEN) as u32
    }

    pub(crate) fn check_message(&self, len: usize) -> Result<(), SendError> {
        if self.shut_down {
            return Err(SendError::Shutdown);
        }
        if len == 0 {
            return Err(SendError::EmptyMessage);
        }
        if len > MAX_MESSAGE_LENGTH as usize {
            return Err(SendError::MessageTooLong { length: len });
        }
        let limit = self.config.wmem_max();
        if self.queued_bytes > 0 && self.queued_bytes + len as u64 > limit {
            return Err(SendError::SendBufferFull {
                queued: self.queued_bytes,
                limit,
            });
        }
        Ok(())
    }

    pub(crate) fn arm_timer(&mut self, now: Time) {
        if !self.timer_armed {
            self.timer_armed = true;
            self.next_tick = now + TICK;
        }
    }

    /// Keeps the tick running so pending acks are flushed (see `timer.rs`).
    pub(crate) fn timer_armed_for_acks(&mut self) {
        let now = self.now;
        self.arm_timer(now);
    }

    pub(crate) fn new_serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Sends a request to the server socket at `dest` and returns its id (even). The
    /// `cookie` comes back with the response or failure. A message larger than `wmem_max`
    /// is accepted when nothing else is queued.
    pub fn send_request(
        &mut self,
        now: Time,
        dest: SocketAddr,
        message: impl Into<Bytes>,
        cookie: u64,
    ) -> Result<u64, SendError> {
        let message = message.into();
        self.now = self.now.max(now);
        self.check_message(message.len())?;
        if !(1..MIN_CLIENT_PORT).contains(&dest.port()) {
            return Err(SendError::InvalidDestinationPort { port: dest.port() });
        }
        if dest.ip().is_unspecified() || dest.ip().is_multicast() {
            return Err(SendError::InvalidDestinationAddress { addr: dest.ip() });
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(2);
        self.queued_bytes += message.len() as u64;
        let serial = self.new_serial();
        let out = self.out_message(message, dest.ip());
        let key = self.insert_rpc(Rpc {
            id,
            peer: dest,
            cookie,
            state: RpcState::Outgoing,
            msgout: Some(out),
            msgin: None,
            silent_ticks: 0,
            probes: 0,
            last_probe: 0,
            heard: false,
            done_tick: None,
            serial,
            queued: None,
        });
        self.refresh_sendable(key);
        self.arm_timer(now);
        Ok(id)
    }

    /// Sends the response to request `id` from the client at `client` (the request's
    /// [`Message::id`] and [`Message::peer`]).
    pub fn send_response(
        &mut self,
        now: Time,
        client: SocketAddr,
        id: u64,
        message: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        let message = message.into();
        self.now = self.now.max(now);
        self.check_message(message.len())?;
        if is_client_id(id) {
            return Err(SendError::NotARequestId { id });
        }
        let key = *self
            .server_ids
            .get(&(client.ip(), id))
            .ok_or(SendError::UnknownRpc { id })?;
        let out = self.out_message(message, client.ip());
        let rpc = self.rpcs.get_mut(key).ok_or(SendError::UnknownRpc { id })?;
        if rpc.state != RpcState::InService {
            return Err(if rpc.msgout.is_some() {
                SendError::AlreadyResponded { id }
            } else {
                SendError::UnknownRpc { id }
            });
        }
        self.queued_bytes += u64::from(out.length());
        rpc.msgout = Some(out);
        rpc.state = RpcState::Outgoing;
        rpc.silent_ticks = 0;
        self.refresh_sendable(key);
        self.arm_timer(now);
        Ok(())
    }

    /// Abandons client RPC `id`: no event will be delivered for it. Returns whether it
    /// existed. If any of the request has been sent, the server is told with an
    /// RPC_UNKNOWN, so it frees its RPC at once (a kernel server deletes it, PROTOCOL.md
    /// 4.3; one waiting for grants would otherwise keep it as long as its socket lives,
    /// since the kernel never times that state out). The kernel's clients tell the
    /// server nothing; later DATA for the RPC is answered with RPC_UNKNOWN too.
    pub fn abort(&mut self, id: u64) -> bool {
        match self.client_ids.get(&id) {
            Some(&key) if is_client_id(id) => {
                let told = self.rpcs.get(key).and_then(|rpc| {
                    let started = rpc.state != RpcState::Outgoing
                        || rpc.msgout.as_ref().is_some_and(|m| m.next_offset > 0);
                    started.then_some(rpc.peer)
                });
                self.free_rpc(key);
                if let Some(server) = told {
                    let repr = Repr::RpcUnknown(self.common_to(server, id));
                    self.queue_control(server, repr);
                }
                // Its buffer space may let a stalled message go on.
                self.unstall_if_pending(self.now);
                true
            }
            _ => false,
        }
    }

    /// Shuts the socket down: every RPC is deleted (peers are not told, as in the
    /// kernel), queued events are dropped, and later calls fail with
    /// [`SendError::Shutdown`]. Bpages already delivered stay the application's.
    pub fn shutdown(&mut self) {
        self.shut_down = true;
        let keys: Vec<u32> = self.rpcs.keys().collect();
        for key in keys {
            self.free_rpc(key);
        }
        self.events.clear();
        self.control.clear();
        self.retransmits.clear();
        self.timer_armed = false;
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// The next application event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gives back one bpage token of a delivered message.
    pub fn release(&mut self, now: Time, token: u32) -> Result<(), PoolError> {
        self.pool.release(token)?;
        self.unstall(now);
        Ok(())
    }

    /// Gives back every bpage of a delivered message.
    pub fn release_message(&mut self, now: Time, message: &Message) -> Result<(), PoolError> {
        self.pool.release_all(&message.buffers)?;
        self.unstall(now);
        Ok(())
    }

    pub(crate) fn queue_control(&mut self, to: SocketAddr, repr: Repr<'static>) {
        let priority = self.config.control_priority();
        self.control.push_back(Control { to, repr, priority });
    }

    pub(crate) fn common_to(&self, to: SocketAddr, sender_id: u64) -> CommonRepr {
        CommonRepr {
            sport: self.options.port,
            dport: to.port(),
            sender_id,
        }
    }

    /// Handles one received datagram: `packet` is the Homa packet (the UDP payload, or
    /// the IP payload for raw IP) from IP address `from`.
    pub fn handle_datagram(&mut self, now: Time, from: IpAddr, packet: &[u8]) {
        if !self.begin_receive(now) {
            return;
        }
        match Repr::parse(packet) {
            Ok(repr) => self.dispatch(now, from, repr, None),
            Err(e) => self.count_malformed(e),
        }
    }

    /// Counts a received packet; false if the engine is shut down (the packet is ignored).
    pub(crate) fn begin_receive(&mut self, now: Time) -> bool {
        self.now = self.now.max(now);
        self.stats.packets_received += 1;
        !self.shut_down
    }

    pub(crate) fn count_malformed(&mut self, e: WireError) {
        self.stats.malformed += 1;
        self.stats.last_malformed = Some(e);
    }

    /// Handles a parsed packet; `placed` is set for a DATA packet whose payload (of the
    /// given length) was received straight into the region at the placement.
    pub(crate) fn dispatch(
        &mut self,
        now: Time,
        from: IpAddr,
        repr: Repr<'_>,
        placed: Option<(usize, &Placement)>,
    ) {
        self.stats.received_by_type[usize::from(repr.packet_type().code() - 0x10)] += 1;
        let common = *repr.common();
        if common.dport != self.options.port {
            self.stats.wrong_port += 1;
            return;
        }
        if common.sport == 0 {
            // Port 0 is reserved (PROTOCOL.md 2.2): nothing can be sent back to it.
            self.stats.bad_source_port += 1;
            return;
        }
        let src = SocketAddr::new(from, common.sport);
        let local_id = common.sender_id ^ 1;
        match repr {
            Repr::Data(d) => self.handle_data(now, src, local_id, &d, placed),
            Repr::Grant(g) => self.handle_grant(src, local_id, &g),
            Repr::Resend(r) => self.handle_resend(src, local_id, &r),
            Repr::RpcUnknown(_) => self.handle_rpc_unknown(src, local_id),
            Repr::Busy(_) => self.handle_busy(src, local_id),
            Repr::Cutoffs(c) => self.handle_cutoffs(from, &c),
            Repr::Freeze(_) => self.stats.freezes_ignored += 1,
            Repr::NeedAck(_) => self.handle_need_ack(src, local_id),
            Repr::Ack(a) => self.handle_ack_packet(src, &a),
        }
        self.unstall_if_pending(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Time> {
        let tick = self.timer_armed.then_some(self.next_tick);
        [tick, self.poll_urgent_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The part of [`poll_timeout`](Self::poll_timeout) that cannot wait for the next
    /// 1 ms tick: when the pacer may send again, or a FIFO grant falls due. A driver that
    /// runs the tick's timers up to a tick late (the socket library's watchdog, while
    /// application threads keep driving) must still be on time for these.
    ///
    /// ```
    /// use homa_proto::engine::{Engine, EngineOptions};
    /// use homa_proto::Config;
    /// let e: Engine = Engine::new(Config::default(), EngineOptions::client(40_000, 1), vec![0; 1 << 21]).unwrap();
    /// assert_eq!(e.poll_urgent_timeout(), None);
    /// ```
    pub fn poll_urgent_timeout(&self) -> Option<Time> {
        let pacer = (!self.sendable.is_empty()).then(|| self.pacer.ready_at());
        let fifo = self.grants.next_fifo_time();
        pacer.into_iter().chain(fifo).min()
    }

    /// Runs timers that are due: the 1 ms tick (RESENDs, timeouts, NEED_ACKs).
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        self.expire_tombstones(now);
        if self.shut_down {
            return;
        }
        // FIFO grants fall due with time alone.
        self.flush_grants(now);
        if !self.timer_armed || now < self.next_tick {
            return;
        }
        self.tick(now);
        // Space freed by timeouts may let stalled messages go on.
        self.unstall_if_pending(now);
        self.next_tick += TICK;
        if self.next_tick <= now {
            self.next_tick = now + TICK;
        }
        // (Tombstones keep the tick going until they expire, so the tables that held a
        // burst of RPCs are compacted once it is over.)
        if self.rpcs.len() == 0 && !self.peers.any_pending_acks() && self.tombstones.is_empty() {
            self.timer_armed = false;
            self.compact();
        }
    }

    /// Writes the next packet to send into `buf` and describes it, or returns `None`
    /// when nothing may be sent now (see [`poll_timeout`](Self::poll_timeout) for when
    /// the pacer will allow more).
    ///
    /// Order: control packets (GRANT, RESEND, BUSY, …) first, then retransmissions, then
    /// new DATA from the message with the fewest bytes left (with the pacer's share for
    /// the oldest).
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`max_packet_size`](Self::max_packet_size): a driver bug.
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        let (t, payload) = self.transmit(now, buf, false)?;
        debug_assert!(payload.is_none());
        Some(t)
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but a DATA packet's payload is not
    /// copied: only its 56-byte header is written into `buf` (and counted in
    /// [`Transmit::len`]), and the payload comes back as a shared [`Payload`] to send
    /// right after it (e.g. as a second iovec). Other packets come whole, with `None`.
    ///
    /// ```
    /// use homa_proto::engine::{Engine, EngineOptions};
    /// use homa_proto::{Config, Time};
    /// let mut e: Engine = Engine::new(Config::default(), EngineOptions::client(40_000, 2), vec![0; 1 << 21]).unwrap();
    /// e.send_request(Time::ZERO, "10.0.0.2:99".parse().unwrap(), vec![7; 3000], 0).unwrap();
    /// let mut buf = vec![0; e.max_packet_size()];
    /// let (t, payload) = e.poll_transmit_split(Time::ZERO, &mut buf).unwrap();
    /// let payload = payload.expect("a DATA packet");
    /// assert_eq!(t.len, 56);
    /// assert!(payload.as_slice().iter().all(|&b| b == 7));
    /// ```
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`max_packet_size`](Self::max_packet_size): a driver bug.
    pub fn poll_transmit_split(
        &mut self,
        now: Time,
        buf: &mut [u8],
    ) -> Option<(Transmit, Option<Payload>)> {
        self.transmit(now, buf, true)
    }
}

impl<R: ReadRegion> Engine<R> {
    /// A copy of a delivered message's bytes (for tests and simple applications; the
    /// socket library reads the region in place).
    pub fn message_bytes(&self, message: &Message) -> Vec<u8> {
        let mut v = Vec::with_capacity(message.len());
        for (offset, len) in message.buffers.chunks() {
            v.extend_from_slice(self.region.read(offset, len));
        }
        v
    }
}

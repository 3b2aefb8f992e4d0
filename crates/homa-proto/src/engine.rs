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
//!    field is left 0; a raw-IP driver fills it with [`wire::fill_checksum`](crate::wire::fill_checksum).
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
use std::sync::Arc;
use std::time::Duration;

use crate::grant::{GrantDecision, GrantScheduler};
use crate::incoming::{Accepted, InMessage};
use crate::outgoing::OutMessage;
use crate::pacer::Pacer;
use crate::peer::PeerTable;
pub use crate::placement::Placement;
use crate::pool::{BufferPool, MessageBuffers, PoolError};
use crate::region::{ReadRegion, Region};
use crate::rpc::{is_client_id, Rpc, RpcState, Slab};
use crate::wire::{
    Ack, AckRepr, CommonRepr, CutoffsRepr, DataRepr, GrantRepr, OffsetForm, PacketType, Repr,
    ResendRepr, WireError, DATA_HEADER_LEN, MAX_MESSAGE_LENGTH, RESEND_ALL,
};
use crate::{Config, Time};

/// Length of one timer tick.
pub const TICK: Duration = Duration::from_millis(1);
/// Lowest port a client socket may use (`HOMA_MIN_DEFAULT_PORT`).
pub const MIN_CLIENT_PORT: u16 = 0x8000;
/// Most finished server RPCs remembered (see [`Stats::stale_requests`]).
pub const MAX_TOMBSTONES: usize = 1 << 20;
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

/// Why an engine could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The port does not fit the role: servers use 1..=32767, clients 32768..=65535.
    InvalidPort {
        /// The port given.
        port: u16,
        /// Whether a server was asked for.
        server: bool,
    },
    /// A maximum packet size cannot carry a DATA header and one byte, or exceeds 65535.
    InvalidPacketSize {
        /// Which option (`max_packet_v4` or `max_packet_v6`).
        option: &'static str,
        /// The value given.
        value: usize,
    },
    /// The receive region cannot be used.
    Pool(PoolError),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidPort { port, server: true } => {
                write!(f, "server port {port} is invalid: allowed 1..=32767")
            }
            EngineError::InvalidPort {
                port,
                server: false,
            } => {
                write!(f, "client port {port} is invalid: allowed 32768..=65535")
            }
            EngineError::InvalidPacketSize { option, value } => write!(
                f,
                "{option} = {value} is invalid: allowed {}..=65535",
                DATA_HEADER_LEN + 1
            ),
            EngineError::Pool(e) => write!(f, "receive region: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Why an application call was refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Messages must hold at least one byte.
    EmptyMessage,
    /// Messages hold at most 1,000,000 bytes.
    MessageTooLong {
        /// Length given.
        length: usize,
    },
    /// Requests go to server ports 1..=32767.
    InvalidDestinationPort {
        /// Port given.
        port: u16,
    },
    /// The destination address is unspecified (0.0.0.0 or ::) or multicast.
    InvalidDestinationAddress {
        /// Address given.
        addr: IpAddr,
    },
    /// Responses are sent for odd (server-side) ids.
    NotARequestId {
        /// Id given.
        id: u64,
    },
    /// No server RPC with this id from this client: never received, or already
    /// discarded (the client went away, or the response was already acknowledged).
    UnknownRpc {
        /// Id given.
        id: u64,
    },
    /// The RPC already has a response.
    AlreadyResponded {
        /// Id given.
        id: u64,
    },
    /// The transmit buffer limit (`wmem_max`) would be exceeded; retry after some
    /// outgoing messages finish.
    SendBufferFull {
        /// Bytes of unfinished outgoing messages.
        queued: u64,
        /// The limit.
        limit: u64,
    },
    /// The engine was shut down.
    Shutdown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::EmptyMessage => f.write_str("message is empty: at least 1 byte required"),
            SendError::MessageTooLong { length } => write!(
                f,
                "message of {length} bytes is too long: at most {MAX_MESSAGE_LENGTH}"
            ),
            SendError::InvalidDestinationPort { port } => write!(
                f,
                "destination port {port} is not a server port: allowed 1..=32767"
            ),
            SendError::InvalidDestinationAddress { addr } => {
                write!(f, "destination address {addr} cannot receive")
            }
            SendError::NotARequestId { id } => write!(
                f,
                "id {id} is not a request id: responses are sent for odd ids"
            ),
            SendError::UnknownRpc { id } => write!(
                f,
                "no RPC {id} from that client (never received, or already discarded)"
            ),
            SendError::AlreadyResponded { id } => {
                write!(f, "RPC {id} already has a response")
            }
            SendError::SendBufferFull { queued, limit } => write!(
                f,
                "transmit buffer full: {queued} bytes queued, limit {limit}"
            ),
            SendError::Shutdown => f.write_str("socket is shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a client RPC failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RpcError {
    /// The server was silent for `timeout_ticks` (ETIMEDOUT).
    Timeout,
    /// No Homa socket, or no server socket, at the destination port (ENOTCONN).
    PortUnreachable,
    /// The destination host cannot be reached (EHOSTUNREACH).
    HostUnreachable,
    /// The destination host does not run Homa (EPROTONOSUPPORT).
    ProtocolUnsupported,
    /// The RPC was aborted by the application.
    Aborted,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RpcError::Timeout => "timed out: the server stopped answering",
            RpcError::PortUnreachable => "no server at the destination port",
            RpcError::HostUnreachable => "destination host unreachable",
            RpcError::ProtocolUnsupported => "destination host does not run Homa",
            RpcError::Aborted => "aborted",
        })
    }
}

impl std::error::Error for RpcError {}

/// What an ICMP error (or the transport's equivalent) said about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// Port unreachable: fails the RPCs to that host and port.
    Port,
    /// Host or network unreachable: fails every RPC to that host.
    Host,
    /// Protocol unreachable: fails every RPC to that host.
    Protocol,
}

/// A complete message, delivered to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The RPC id: odd for requests (answer with [`Engine::send_response`]), even for responses.
    pub id: u64,
    /// The other end.
    pub peer: SocketAddr,
    /// For responses, the completion cookie given with the request; 0 for requests.
    pub cookie: u64,
    /// Where the bytes are in the receive region; owned by the application until released.
    pub buffers: MessageBuffers,
}

impl Message {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buffers.length() as usize
    }
    /// Always false: messages hold at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Whether this is a request (odd id).
    pub fn is_request(&self) -> bool {
        !is_client_id(self.id)
    }
}

/// A client RPC that ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcFailure {
    /// The RPC's id.
    pub id: u64,
    /// The server it was sent to.
    pub peer: SocketAddr,
    /// Its completion cookie.
    pub cookie: u64,
    /// Why it failed.
    pub error: RpcError,
}

/// Something the application must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A complete request (server side).
    Request(Message),
    /// A complete response (client side); the RPC is finished.
    Response(Message),
    /// A client RPC failed; no response will come.
    Failed(RpcFailure),
}

/// The payload of a DATA packet from [`Engine::poll_transmit_split`]: a range of the
/// message's bytes, shared with the engine (cloning it copies no bytes).
#[derive(Clone)]
pub struct Payload {
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
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
    /// DATA packets sent again for RESENDs or restarts.
    pub retransmitted_packets: u64,
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
    /// ([`Engine::handle_placed`]) and that were accepted there, without a copy.
    pub placed_packets: u64,
    /// Packets received into a [`Placement`] that no longer
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

/// A control packet waiting to be sent.
#[derive(Debug, Clone, Copy)]
struct Control {
    to: SocketAddr,
    repr: Repr<'static>,
    priority: u8,
}

/// A range of an outgoing message to send again.
#[derive(Debug, Clone, Copy)]
struct Retransmit {
    key: u32,
    serial: u64,
    /// Start of the next segment to send.
    next: u32,
    /// Stop when `next` reaches this.
    end: u32,
    /// `incoming` field of the retransmitted packets.
    incoming: u32,
    priority: u8,
}

/// One Homa socket: every RPC it is a client or server of, and the protocol around them.
/// See the [module documentation](self) for how to drive it.
pub struct Engine<R: Region = Vec<u8>> {
    pub(crate) config: Config,
    options: EngineOptions,
    next_id: u64,
    shut_down: bool,
    pub(crate) region: R,
    pub(crate) pool: BufferPool,
    pub(crate) rpcs: Slab,
    client_ids: HashMap<u64, u32>,
    server_ids: HashMap<(IpAddr, u64), u32>,
    next_serial: u64,
    pub(crate) peers: PeerTable,
    grants: GrantScheduler,
    grant_scratch: Vec<GrantDecision>,
    grants_dirty: bool,
    pacer: Pacer,
    /// RPCs with a packet that may be sent, by (bytes left, age).
    sendable: BTreeSet<(u32, u64, u32)>,
    /// The same RPCs by age, for the pacer's FIFO share.
    sendable_by_age: BTreeSet<(u64, u32)>,
    /// Thousandths accumulated toward the next FIFO pick.
    fifo_credit: u32,
    control: VecDeque<Control>,
    retransmits: VecDeque<Retransmit>,
    /// RPCs whose incoming message waits for buffer space, by (length, age).
    stalled: BTreeSet<(u32, u64, u32)>,
    events: VecDeque<Event>,
    timer_armed: bool,
    next_tick: Time,
    pub(crate) ticks: u64,
    /// Bytes of outgoing messages not yet finished (for `wmem_max`).
    queued_bytes: u64,
    pub(crate) stats: Stats,
    pub(crate) scratch_keys: Vec<u32>,
    /// Buffer space may have been freed: retry stalled messages.
    unstall_pending: bool,
    /// The latest time passed to any entry point.
    now: Time,
    /// Recently finished server RPCs, oldest first, with the time they may be forgotten.
    tombstones: VecDeque<(Time, IpAddr, u64)>,
    tombstone_set: HashSet<(IpAddr, u64)>,
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

fn ip_header_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
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
            pacer: Pacer::new(&config),
            next_id: options.first_id & !1,
            config,
            options,
            shut_down: false,
            region,
            pool,
            rpcs: Slab::default(),
            client_ids: HashMap::new(),
            server_ids: HashMap::new(),
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

    pub(crate) fn max_seg(&self, dest: IpAddr) -> u32 {
        let max_packet = match (dest, self.options.max_packet_loopback) {
            (d, Some(lo)) if d.is_loopback() => lo,
            (IpAddr::V4(_), _) => self.options.max_packet_v4,
            (IpAddr::V6(_), _) => self.options.max_packet_v6,
        };
        (max_packet - DATA_HEADER_LEN) as u32
    }

    fn check_message(&self, len: usize) -> Result<(), SendError> {
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

    fn arm_timer(&mut self, now: Time) {
        if !self.timer_armed {
            self.timer_armed = true;
            self.next_tick = now + TICK;
        }
    }

    /// Keeps the tick running so pending acks are flushed (see `timer.rs`).
    fn timer_armed_for_acks(&mut self) {
        let now = self.now;
        self.arm_timer(now);
    }

    fn new_serial(&mut self) -> u64 {
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
        message: Vec<u8>,
        cookie: u64,
    ) -> Result<u64, SendError> {
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
        let out = OutMessage::new(
            message,
            self.config.unsched_bytes(),
            self.max_seg(dest.ip()),
        );
        let key = self.rpcs.insert(Rpc {
            id,
            peer: dest,
            cookie,
            state: RpcState::Outgoing,
            msgout: Some(out),
            msgin: None,
            silent_ticks: 0,
            done_tick: None,
            serial,
            queued: None,
        });
        self.client_ids.insert(id, key);
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
        message: Vec<u8>,
    ) -> Result<(), SendError> {
        self.now = self.now.max(now);
        self.check_message(message.len())?;
        if is_client_id(id) {
            return Err(SendError::NotARequestId { id });
        }
        let key = *self
            .server_ids
            .get(&(client.ip(), id))
            .ok_or(SendError::UnknownRpc { id })?;
        let max_seg = self.max_seg(client.ip());
        let unsched = self.config.unsched_bytes();
        let rpc = self.rpcs.get_mut(key).ok_or(SendError::UnknownRpc { id })?;
        if rpc.state != RpcState::InService {
            return Err(if rpc.msgout.is_some() {
                SendError::AlreadyResponded { id }
            } else {
                SendError::UnknownRpc { id }
            });
        }
        self.queued_bytes += message.len() as u64;
        rpc.msgout = Some(OutMessage::new(message, unsched, max_seg));
        rpc.state = RpcState::Outgoing;
        rpc.silent_ticks = 0;
        self.refresh_sendable(key);
        self.arm_timer(now);
        Ok(())
    }

    /// Abandons client RPC `id` without telling the server: no event will be delivered
    /// for it. Returns whether it existed.
    pub fn abort(&mut self, id: u64) -> bool {
        match self.client_ids.get(&id) {
            Some(&key) if is_client_id(id) => {
                self.free_rpc(key);
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

    /// Remembers a server RPC whose request was delivered, for twice the timeout, so a
    /// delayed duplicate of its request cannot execute it again. (The kernel has this
    /// gap, PROTOCOL.md 7.2.)
    fn add_tombstone(&mut self, client: IpAddr, id: u64) {
        let keep = TICK * (2 * self.config.timeout_ticks());
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some((_, ip, old)) = self.tombstones.pop_front() {
                self.tombstone_set.remove(&(ip, old));
            }
        }
        if self.tombstone_set.insert((client, id)) {
            self.tombstones.push_back((self.now + keep, client, id));
        }
    }

    fn expire_tombstones(&mut self, now: Time) {
        while let Some(&(expiry, ip, id)) = self.tombstones.front() {
            if expiry > now {
                break;
            }
            self.tombstones.pop_front();
            self.tombstone_set.remove(&(ip, id));
        }
    }

    /// Re-files RPC `key` in the sendable sets according to its current state.
    pub(crate) fn refresh_sendable(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        if let Some(old) = rpc.queued.take() {
            self.sendable.remove(&(old, rpc.serial, key));
            self.sendable_by_age.remove(&(rpc.serial, key));
        }
        if rpc.state != RpcState::Outgoing {
            return;
        }
        if let Some(out) = &rpc.msgout {
            if out.sendable() {
                let remaining = out.remaining();
                rpc.queued = Some(remaining);
                self.sendable.insert((remaining, rpc.serial, key));
                self.sendable_by_age.insert((rpc.serial, key));
            }
        }
    }

    fn find(&self, from: IpAddr, local_id: u64) -> Option<u32> {
        if is_client_id(local_id) {
            self.client_ids.get(&local_id).copied()
        } else {
            self.server_ids.get(&(from, local_id)).copied()
        }
    }

    pub(crate) fn queue_control(&mut self, to: SocketAddr, repr: Repr<'static>) {
        let priority = self.config.control_priority();
        self.control.push_back(Control { to, repr, priority });
    }

    fn common_to(&self, to: SocketAddr, sender_id: u64) -> CommonRepr {
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
        let src = SocketAddr::new(from, common.sport);
        let local_id = common.sender_id ^ 1;
        match repr {
            Repr::Data(d) => self.handle_data(now, src, local_id, &d, placed),
            Repr::Grant(g) => self.handle_grant(src, local_id, &g),
            Repr::Resend(r) => self.handle_resend(src, local_id, &r),
            Repr::RpcUnknown(_) => self.handle_rpc_unknown(src, local_id),
            Repr::Busy(_) => match self.find(from, local_id).and_then(|k| self.rpcs.get_mut(k)) {
                Some(rpc) => rpc.silent_ticks = 0,
                None => self.stats.unknown_rpc += 1,
            },
            Repr::Cutoffs(c) => {
                self.peers
                    .get_mut(from)
                    .set_cutoffs(c.unsched_cutoffs, c.cutoff_version);
            }
            Repr::Freeze(_) => self.stats.freezes_ignored += 1,
            Repr::NeedAck(_) => self.handle_need_ack(src, local_id),
            Repr::Ack(a) => {
                for ack in a.acks.as_slice() {
                    self.handle_ack(from, *ack);
                }
                self.handle_ack(
                    from,
                    Ack {
                        client_id: common.sender_id,
                        server_port: self.options.port,
                    },
                );
            }
        }
        self.unstall_if_pending(now);
    }

    /// A finished RPC acknowledged by its client: free the server RPC.
    fn handle_ack(&mut self, from: IpAddr, ack: Ack) {
        if ack.server_port != self.options.port
            || ack.client_id == 0
            || !is_client_id(ack.client_id)
        {
            return;
        }
        if let Some(&key) = self.server_ids.get(&(from, ack.client_id | 1)) {
            self.free_rpc(key);
            self.stats.acked_rpcs += 1;
        }
    }

    fn handle_data(
        &mut self,
        now: Time,
        src: SocketAddr,
        local_id: u64,
        d: &DataRepr<'_>,
        placed: Option<(usize, &Placement)>,
    ) {
        if let Some(ack) = d.ack {
            self.handle_ack(src.ip(), ack);
        }
        if let Some((len, p)) = placed {
            if !self.placement_holds(src, local_id, d, len, p) {
                self.stats.misplaced += 1;
                return;
            }
        }
        let payload_len = placed.map_or(d.payload.len(), |(len, _)| len);
        let key = match self.find(src.ip(), local_id) {
            Some(k) => k,
            None if !is_client_id(local_id) => {
                if !self.options.server {
                    self.stats.requests_to_client += 1;
                    return;
                }
                self.expire_tombstones(now);
                if self.tombstone_set.contains(&(src.ip(), local_id)) {
                    self.stats.stale_requests += 1;
                    return;
                }
                let serial = self.new_serial();
                let key = self.rpcs.insert(Rpc {
                    id: local_id,
                    peer: src,
                    cookie: 0,
                    state: RpcState::Incoming,
                    msgout: None,
                    msgin: None,
                    silent_ticks: 0,
                    done_tick: None,
                    serial,
                    queued: None,
                });
                self.server_ids.insert((src.ip(), local_id), key);
                self.arm_timer(now);
                key
            }
            None => {
                self.stats.unknown_rpc += 1;
                return;
            }
        };
        if d.cutoff_version != self.config.cutoff_version() {
            self.maybe_send_cutoffs(now, src, local_id);
        }
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        rpc.silent_ticks = 0;
        if rpc.is_client() && rpc.state == RpcState::Outgoing {
            rpc.state = RpcState::Incoming;
        }
        let serial = rpc.serial;
        if rpc.msgin.is_none() {
            let mut m = InMessage::new(d.message_length, d.incoming, now);
            m.buffers = self.pool.allocate(d.message_length);
            if m.buffers.is_none() {
                self.stats.buffer_stalls += 1;
                self.stalled.insert((d.message_length, serial, key));
            }
            rpc.msgin = Some(m);
        }
        let m = rpc.msgin.as_mut().expect("created above");
        if m.length != d.message_length {
            self.stats.length_mismatch += 1;
            return;
        }
        if m.is_complete() {
            self.stats.duplicate_data += 1;
            return;
        }
        let Some(buffers) = m.buffers else {
            self.stats.dropped_while_stalled += 1;
            return;
        };
        match m.accept(d.offset, payload_len as u32) {
            Accepted::New => {
                // A packet cut short by the message's end or the unscheduled limit does
                // not show the sender's segment size.
                let end = d.offset + payload_len as u32;
                if end != d.message_length && end != d.incoming {
                    m.seg = m.seg.max(payload_len as u32);
                }
            }
            Accepted::Duplicate => {
                self.stats.duplicate_data += 1;
                return;
            }
            Accepted::TooManyGaps => {
                self.stats.dropped_too_many_gaps += 1;
                return;
            }
        }
        let mut at = d.offset;
        // A placed payload is already where it belongs.
        let mut rest = if placed.is_some() { &[][..] } else { d.payload };
        if placed.is_some() {
            self.stats.placed_packets += 1;
        }
        if self.last_data[0] != Some(key) {
            self.last_data = [Some(key), self.last_data[0]];
        }
        while !rest.is_empty() {
            let Some((region_off, contiguous)) = buffers.locate(at) else {
                break;
            };
            let n = contiguous.min(rest.len());
            self.region.write(region_off, &rest[..n]);
            rest = &rest[n..];
            at += n as u32;
        }
        let complete = m.is_complete();
        if m.scheduled {
            // Even once fully granted, its bytes left still rank it among the others.
            self.grants.update_received(key, m.received);
            self.grants_dirty = true;
        } else if m.needs_grants() {
            m.scheduled = true;
            self.grants
                .insert(key, src.ip(), m.length, m.granted, m.received, m.birth);
            self.grants_dirty = true;
        }
        if complete {
            if m.scheduled {
                m.scheduled = false;
                self.grants.remove(key);
            }
            self.deliver(key);
        }
    }

    /// A message is complete: hand it to the application.
    fn deliver(&mut self, key: u32) {
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        let Some(buffers) = rpc.msgin.as_mut().and_then(|m| m.buffers.take()) else {
            return;
        };
        let message = Message {
            id: rpc.id,
            peer: rpc.peer,
            cookie: rpc.cookie,
            buffers,
        };
        if rpc.is_client() {
            let (peer, id) = (rpc.peer, rpc.id);
            self.free_rpc(key);
            self.events.push_back(Event::Response(message));
            let ack = Ack {
                client_id: id,
                server_port: peer.port(),
            };
            self.timer_armed_for_acks();
            if let Some(full) = self.peers.push_ack(peer, ack, self.ticks) {
                let repr = Repr::Ack(AckRepr {
                    common: self.common_to(peer, id),
                    acks: full,
                });
                self.queue_control(peer, repr);
            }
        } else {
            rpc.state = RpcState::InService;
            rpc.silent_ticks = 0;
            self.events.push_back(Event::Request(message));
        }
    }

    fn maybe_send_cutoffs(&mut self, now: Time, to: SocketAddr, local_id: u64) {
        let peer = self.peers.get_mut(to.ip());
        if peer
            .last_cutoffs_sent
            .is_some_and(|t| now.saturating_duration_since(t) < TICK)
        {
            return;
        }
        peer.last_cutoffs_sent = Some(now);
        let repr = Repr::Cutoffs(CutoffsRepr {
            common: self.common_to(to, local_id),
            unsched_cutoffs: self.config.unsched_cutoffs(),
            cutoff_version: self.config.cutoff_version(),
        });
        self.queue_control(to, repr);
    }

    fn handle_grant(&mut self, src: SocketAddr, local_id: u64, g: &GrantRepr) {
        let Some(key) = self.find(src.ip(), local_id) else {
            self.stats.unknown_rpc += 1;
            return;
        };
        let top = self.config.control_priority();
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        rpc.silent_ticks = 0;
        if rpc.state != RpcState::Outgoing {
            return;
        }
        if let Some(out) = rpc.msgout.as_mut() {
            out.grant(g.offset);
            out.sched_priority = g.priority.min(top);
        }
        self.refresh_sendable(key);
    }

    fn handle_resend(&mut self, src: SocketAddr, local_id: u64, r: &ResendRepr) {
        let Some(key) = self.find(src.ip(), local_id) else {
            let repr = Repr::RpcUnknown(self.common_to(src, local_id));
            self.queue_control(src, repr);
            return;
        };
        let top = self.config.control_priority();
        let Some(rpc) = self.rpcs.get_mut(key) else {
            return;
        };
        let serial = rpc.serial;
        let Some(out) = rpc.msgout.as_mut() else {
            // A server still receiving or computing: "I'm alive".
            let repr = Repr::Busy(self.common_to(src, local_id));
            self.queue_control(src, repr);
            return;
        };
        // The client still wants (part of) the response: it is alive, so restart the
        // wait for its ack.
        rpc.done_tick = None;
        let sent_end = out.next_offset;
        let end = if r.is_all() {
            sent_end
        } else {
            r.offset.saturating_add(r.length)
        };
        let upto = end.min(sent_end);
        if r.offset < upto {
            self.retransmits.push_back(Retransmit {
                key,
                serial,
                next: out.segment_start(r.offset),
                end: upto,
                incoming: upto,
                priority: r.priority.min(top),
            });
        }
        let grew = end > out.granted && out.grant(end);
        let busy = r.offset >= sent_end;
        if grew {
            self.refresh_sendable(key);
        }
        if busy {
            let repr = Repr::Busy(self.common_to(src, local_id));
            self.queue_control(src, repr);
        }
    }

    fn handle_rpc_unknown(&mut self, src: SocketAddr, local_id: u64) {
        let Some(key) = self.find(src.ip(), local_id) else {
            self.stats.unknown_rpc += 1;
            return;
        };
        let Some(rpc) = self.rpcs.get(key) else {
            return;
        };
        if !rpc.is_client() {
            // The client no longer knows the RPC.
            self.free_rpc(key);
            return;
        }
        if rpc.state != RpcState::Outgoing {
            return;
        }
        // The server lost the request: send everything sent so far again, at the
        // unscheduled level for the message length.
        let Some(out) = rpc.msgout.as_ref() else {
            return;
        };
        let priority =
            self.peers
                .unsched_priority(rpc.peer.ip(), out.length(), self.config.num_priorities());
        let sent_end = out.next_offset;
        let serial = rpc.serial;
        if sent_end > 0 {
            self.stats.restarts += 1;
            self.retransmits.push_back(Retransmit {
                key,
                serial,
                next: 0,
                end: sent_end,
                incoming: sent_end,
                priority,
            });
        }
    }

    fn handle_need_ack(&mut self, src: SocketAddr, local_id: u64) {
        if !is_client_id(local_id) {
            self.stats.unknown_rpc += 1;
            return;
        }
        if let Some(key) = self.client_ids.get(&local_id).copied() {
            // Still here, so the response is incomplete: ask for what is missing.
            self.send_resends(key);
            return;
        }
        let acks = self.peers.get_mut(src.ip()).take_all_acks(src.port());
        let repr = Repr::Ack(AckRepr {
            common: self.common_to(src, local_id),
            acks,
        });
        self.queue_control(src, repr);
    }

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

    /// Gives stalled messages buffer space if it is available now, restarting each with
    /// RESEND(0, −1) at level `num_priorities − 2` (PROTOCOL.md 3.6).
    fn unstall(&mut self, _now: Time) {
        self.unstall_pending = false;
        while let Some(&(length, serial, key)) = self.stalled.first() {
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
            rpc.silent_ticks = 0;
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

    fn unstall_if_pending(&mut self, now: Time) {
        if self.unstall_pending {
            self.unstall(now);
        }
    }

    /// Runs the grant scheduler if anything changed, queueing GRANTs.
    fn flush_grants(&mut self, now: Time) {
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

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Time> {
        let tick = self.timer_armed.then_some(self.next_tick);
        let pacer = (!self.sendable.is_empty()).then(|| self.pacer.ready_at());
        let fifo = self.grants.next_fifo_time();
        [tick, pacer, fifo].into_iter().flatten().min()
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
        self.next_tick += TICK;
        if self.next_tick <= now {
            self.next_tick = now + TICK;
        }
        if self.rpcs.len() == 0 && !self.peers.any_pending_acks() {
            self.timer_armed = false;
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

    fn transmit(
        &mut self,
        now: Time,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        assert!(
            buf.len() >= self.max_packet_size(),
            "poll_transmit needs a buffer of max_packet_size() = {} bytes, got {}",
            self.max_packet_size(),
            buf.len()
        );
        if self.shut_down {
            return None;
        }
        self.flush_grants(now);
        if let Some(c) = self.control.pop_front() {
            let len = c.repr.emit(buf).expect("buffer checked above");
            return Some((
                self.sent(now, c.to, len, c.priority, c.repr.packet_type()),
                None,
            ));
        }
        while let Some(rt) = self.retransmits.front_mut() {
            let rt = *rt;
            match self.emit_retransmit(now, rt, buf, split) {
                Some(t) => return Some(t),
                None => {
                    self.retransmits.pop_front();
                }
            }
        }
        self.emit_new_data(now, buf, split)
    }

    /// Writes a DATA packet: whole, or (`split`) its header with the payload returned as
    /// a [`Payload`] of `data`. Returns (bytes written, bytes on the wire, payload).
    fn emit_data(
        repr: &DataRepr<'_>,
        data: &Arc<Vec<u8>>,
        buf: &mut [u8],
        split: bool,
    ) -> (usize, usize, Option<Payload>) {
        if split {
            repr.emit_header(buf)
                .expect("buffer checked by poll_transmit");
            let start = repr.offset as usize;
            let payload = Payload {
                data: Arc::clone(data),
                start,
                end: start + repr.payload.len(),
            };
            (DATA_HEADER_LEN, repr.buffer_len(), Some(payload))
        } else {
            let len = repr.emit(buf).expect("buffer checked by poll_transmit");
            (len, len, None)
        }
    }

    /// Whether packets to `dest` pass through a NIC the pacer models.
    fn paced(&self, dest: IpAddr) -> bool {
        self.options.pace_loopback || !dest.is_loopback()
    }

    fn sent(
        &mut self,
        now: Time,
        to: SocketAddr,
        len: usize,
        priority: u8,
        ty: PacketType,
    ) -> Transmit {
        if self.paced(to.ip()) {
            self.pacer.record(now, len, ip_header_len(to.ip()));
        }
        self.stats.packets_sent += 1;
        self.stats.sent_by_type[usize::from(ty.code() - 0x10)] += 1;
        Transmit {
            destination: to,
            len,
            priority,
            tos: self.config.tos_for_level(priority),
            packet_type: ty,
        }
    }

    /// Sends the next segment of retransmission `rt`; `None` when it is finished or stale.
    fn emit_retransmit(
        &mut self,
        now: Time,
        rt: Retransmit,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        let rpc = self.rpcs.get(rt.key).filter(|r| r.serial == rt.serial)?;
        let out = rpc.msgout.as_ref()?;
        if rt.next >= rt.end || rt.next >= out.length() {
            return None;
        }
        let start = rt.next;
        let end = out.segment_end(start);
        let (to, id, length) = (rpc.peer, rpc.id, out.length());
        let repr = DataRepr {
            common: self.common_to(to, id),
            message_length: length,
            incoming: rt.incoming,
            ack: None,
            cutoff_version: self.peers.cutoff_version(to.ip()),
            retransmit: true,
            offset: start,
            offset_form: OffsetForm::Both,
            payload: &out.data[start as usize..end as usize],
        };
        let (len, wire_len, payload) = Self::emit_data(&repr, &out.data, buf, split);
        if let Some(front) = self.retransmits.front_mut() {
            front.next = end;
        }
        self.stats.retransmitted_packets += 1;
        let mut t = self.sent(now, to, wire_len, rt.priority, PacketType::Data);
        t.len = len;
        Some((t, payload))
    }

    fn emit_new_data(
        &mut self,
        now: Time,
        buf: &mut [u8],
        split: bool,
    ) -> Option<(Transmit, Option<Payload>)> {
        let &(remaining, _, mut key) = self.sendable.first()?;
        let dest = self.rpcs.get(key)?.peer.ip();
        if remaining > self.config.defer_min_bytes() && self.paced(dest) {
            if !self.pacer.may_send(now) {
                return None;
            }
            self.fifo_credit += self.config.pacer_fifo_fraction();
            if self.fifo_credit >= 1000 {
                self.fifo_credit -= 1000;
                if let Some(&(_, oldest)) = self.sendable_by_age.first() {
                    key = oldest;
                }
            }
        }
        let num_priorities = self.config.num_priorities();
        let rpc = self.rpcs.get(key)?;
        let out = rpc.msgout.as_ref()?;
        let (to, id) = (rpc.peer, rpc.id);
        let start = out.next_offset;
        let end = out.segment_end(start);
        let priority = if start < out.unsched {
            self.peers
                .unsched_priority(to.ip(), out.length(), num_priorities)
        } else {
            out.sched_priority
        };
        let ack = if rpc.is_client() {
            self.peers.take_ack(to)
        } else {
            None
        };
        let rpc = self.rpcs.get(key)?;
        let out = rpc.msgout.as_ref()?;
        let repr = DataRepr {
            common: self.common_to(to, id),
            message_length: out.length(),
            incoming: out.unsched,
            ack,
            cutoff_version: self.peers.cutoff_version(to.ip()),
            retransmit: false,
            offset: start,
            offset_form: OffsetForm::Both,
            payload: &out.data[start as usize..end as usize],
        };
        let (len, wire_len, payload) = Self::emit_data(&repr, &out.data, buf, split);
        if let Some(out) = self.rpcs.get_mut(key).and_then(|r| r.msgout.as_mut()) {
            out.next_offset = end;
        }
        self.refresh_sendable(key);
        let mut t = self.sent(now, to, wire_len, priority, PacketType::Data);
        t.len = len;
        Some((t, payload))
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

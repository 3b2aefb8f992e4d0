//! Errors of the engine's constructor and of application calls.

use std::fmt;
use std::net::IpAddr;

use crate::pool::PoolError;
use crate::wire::{DATA_HEADER_LEN, MAX_MESSAGE_LENGTH};

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

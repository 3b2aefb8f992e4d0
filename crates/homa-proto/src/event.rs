//! What the engine tells the application: delivered messages and failed RPCs.

use std::fmt;
use std::net::SocketAddr;

use crate::pool::MessageBuffers;
use crate::rpc::is_client_id;

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
    /// The RPC id: odd for requests (answer with [`Engine::send_response`](crate::engine::Engine::send_response)), even for responses.
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

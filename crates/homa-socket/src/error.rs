//! The one error type of the socket library.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use homa_proto::engine::{RpcError, RpcFailure, SendError};

/// Everything that can go wrong with a Homa socket.
///
/// RPC failures carry the RPC's id and completion cookie, so an application that
/// multiplexes many RPCs knows which one failed.
///
/// ```
/// use homa_socket::Error;
/// let e = Error::MessageTooLong { length: 2_000_000 };
/// assert_eq!(e.to_string(), "message of 2000000 bytes is too long: at most 1000000");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server stopped answering: `timeout_ticks` (100 ms by default) of silence
    /// (the kernel's ETIMEDOUT).
    RpcTimeout {
        /// The RPC's id.
        id: u64,
        /// Its completion cookie.
        cookie: u64,
        /// The server.
        peer: SocketAddr,
    },
    /// No Homa server socket at the destination port (the kernel's ENOTCONN).
    PortUnreachable {
        /// The RPC's id.
        id: u64,
        /// Its completion cookie.
        cookie: u64,
        /// The server.
        peer: SocketAddr,
    },
    /// The destination host is unreachable, or runs no Homa (EHOSTUNREACH,
    /// EPROTONOSUPPORT).
    PeerUnreachable {
        /// The RPC's id.
        id: u64,
        /// Its completion cookie.
        cookie: u64,
        /// The server.
        peer: SocketAddr,
    },
    /// A receive with a timeout found nothing in time.
    Timeout,
    /// A non-blocking call found nothing ready (or no room to send).
    WouldBlock,
    /// The socket was shut down.
    Shutdown,
    /// Messages hold at least one byte.
    EmptyMessage,
    /// Messages hold at most 1,000,000 bytes.
    MessageTooLong {
        /// The length given.
        length: usize,
    },
    /// An argument was invalid; `argument` names it and `reason` says why.
    InvalidArgument {
        /// Which argument.
        argument: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// No RPC with this id (never sent or received here, already answered or finished).
    UnknownRpc {
        /// The id given.
        id: u64,
    },
    /// [`Socket::release_bpages`](crate::Socket::release_bpages) was given an offset that
    /// no message handed over with [`Message::into_bpages`](crate::Message::into_bpages)
    /// holds (never handed over, already given back, or owned by a live message).
    UnknownBpage {
        /// The offset given.
        offset: u32,
    },
    /// The receive region is too small for what was asked.
    PoolExhausted {
        /// Bytes needed.
        needed: usize,
        /// Bytes the region has.
        available: usize,
    },
    /// A system call failed; `context` says what was being done.
    Io {
        /// What the library was doing.
        context: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl Error {
    /// The id of the RPC this error is about, if any.
    pub fn rpc_id(&self) -> Option<u64> {
        match self {
            Error::RpcTimeout { id, .. }
            | Error::PortUnreachable { id, .. }
            | Error::PeerUnreachable { id, .. }
            | Error::UnknownRpc { id } => Some(*id),
            _ => None,
        }
    }

    /// The completion cookie of the failed RPC, if this is an RPC failure.
    pub fn cookie(&self) -> Option<u64> {
        match self {
            Error::RpcTimeout { cookie, .. }
            | Error::PortUnreachable { cookie, .. }
            | Error::PeerUnreachable { cookie, .. } => Some(*cookie),
            _ => None,
        }
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Error {
        Error::Io { context, source }
    }

    pub(crate) fn invalid(argument: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }

    pub(crate) fn from_failure(f: RpcFailure) -> Error {
        let RpcFailure {
            id,
            peer,
            cookie,
            error,
        } = f;
        match error {
            RpcError::Timeout => Error::RpcTimeout { id, cookie, peer },
            RpcError::PortUnreachable => Error::PortUnreachable { id, cookie, peer },
            _ => Error::PeerUnreachable { id, cookie, peer },
        }
    }

    pub(crate) fn from_send(e: SendError) -> Error {
        match e {
            SendError::EmptyMessage => Error::EmptyMessage,
            SendError::MessageTooLong { length } => Error::MessageTooLong { length },
            SendError::Shutdown => Error::Shutdown,
            SendError::UnknownRpc { id } => Error::UnknownRpc { id },
            SendError::SendBufferFull { .. } => Error::WouldBlock,
            SendError::InvalidDestinationPort { port } => Error::invalid(
                "destination",
                format!("port {port} is not a server port (1..=32767)"),
            ),
            SendError::InvalidDestinationAddress { addr } => {
                Error::invalid("destination", format!("{addr} cannot receive"))
            }
            SendError::NotARequestId { id } => Error::invalid(
                "id",
                format!("{id} is not a request id (requests have odd ids)"),
            ),
            SendError::AlreadyResponded { id } => {
                Error::invalid("id", format!("RPC {id} already has a response"))
            }
            other => Error::invalid("message", other.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::RpcTimeout { id, peer, .. } => {
                write!(
                    f,
                    "RPC {id} to {peer} timed out: the server stopped answering"
                )
            }
            Error::PortUnreachable { id, peer, .. } => {
                write!(f, "RPC {id}: no Homa server at {peer}")
            }
            Error::PeerUnreachable { id, peer, .. } => {
                write!(f, "RPC {id}: {peer} is unreachable or runs no Homa")
            }
            Error::Timeout => f.write_str("timed out waiting for a message"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::Shutdown => f.write_str("socket is shut down"),
            Error::EmptyMessage => f.write_str("message is empty: at least 1 byte required"),
            Error::MessageTooLong { length } => write!(
                f,
                "message of {length} bytes is too long: at most {}",
                homa_proto::wire::MAX_MESSAGE_LENGTH
            ),
            Error::InvalidArgument { argument, reason } => {
                write!(f, "invalid argument `{argument}`: {reason}")
            }
            Error::UnknownRpc { id } => write!(f, "no RPC {id} on this socket"),
            Error::UnknownBpage { offset } => write!(
                f,
                "bpage offset {offset} was not handed over by Message::into_bpages (or was already given back)"
            ),
            Error::PoolExhausted { needed, available } => write!(
                f,
                "receive region exhausted: {needed} bytes needed, {available} available"
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::RpcTimeout { .. } | Error::Timeout => io::ErrorKind::TimedOut,
            Error::PortUnreachable { .. } => io::ErrorKind::NotConnected,
            Error::PeerUnreachable { .. } => io::ErrorKind::HostUnreachable,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::Shutdown => io::ErrorKind::BrokenPipe,
            Error::EmptyMessage | Error::MessageTooLong { .. } | Error::InvalidArgument { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::UnknownRpc { .. } => io::ErrorKind::NotFound,
            Error::UnknownBpage { .. } => io::ErrorKind::InvalidInput,
            Error::PoolExhausted { .. } => io::ErrorKind::OutOfMemory,
            Error::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

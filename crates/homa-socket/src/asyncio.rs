//! Async versions of the socket operations (feature `tokio`).
//!
//! [`AsyncSocket`] wraps a [`Socket`] and registers its file descriptor with tokio's
//! reactor, so it must be created inside a tokio runtime. Its futures never block:
//!
//! * a task waiting for a message drives the socket itself when nobody else does: it
//!   reads what is queued, handles it, and if its message is not there, waits on the
//!   reactor for the socket to become readable (one task at a time does; the others
//!   wait for their own message);
//! * when a message arrives, only the task it is for is woken (the one waiting for that
//!   response id, else one that accepts it; see `waiters.rs`), by whichever task or
//!   thread handled the packet;
//! * the socket's watchdog thread runs timers (RESENDs, timeouts, acks) while tasks wait
//!   on the reactor, and drives only when no task does.

use bytes::Bytes;
use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::driver::Inner;
use crate::transport::Transport;

use crate::socket::Want;
use crate::{Error, Message, Socket, SocketConfig};

/// A Homa socket for async code.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), homa_socket::Error> {
/// use homa_socket::{AsyncSocket, SocketConfig, Want};
///
/// let server = AsyncSocket::bind(5992, SocketConfig::default())?;
/// let client = AsyncSocket::new(SocketConfig::default())?;
/// let id = client.send_request(server.socket().loopback_addr(), b"ping", 0).await?;
/// let request = server.recv(Want::Requests).await?;
/// server.send_response(request.peer(), request.id(), b"pong").await?;
/// let response = client.recv(Want::Response(id)).await?;
/// assert_eq!(response.to_vec(), b"pong");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncSocket {
    socket: Socket,
    /// The socket's file descriptor, registered with the reactor (readable).
    readable: AsyncFd<Fd>,
}

/// The socket's descriptor for the reactor. It holds the transport that owns the
/// descriptor, so the descriptor stays open, and the same, as long as the registration.
#[derive(Debug)]
struct Fd(Arc<Transport>);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
}

impl AsyncSocket {
    /// A client socket (see [`Socket::new`]).
    ///
    /// # Errors
    ///
    /// As [`Socket::new`]; [`Error::Io`] if called outside a tokio runtime (whose
    /// reactor the socket registers with).
    pub fn new(config: SocketConfig) -> Result<AsyncSocket, Error> {
        AsyncSocket::from_socket(Socket::new(config)?)
    }

    /// A server socket (see [`Socket::bind`]).
    ///
    /// # Errors
    ///
    /// As [`Socket::bind`]; [`Error::Io`] if called outside a tokio runtime.
    pub fn bind(port: u16, config: SocketConfig) -> Result<AsyncSocket, Error> {
        AsyncSocket::from_socket(Socket::bind(port, config)?)
    }

    /// Wraps a socket for async use, registering it with the current tokio runtime's
    /// reactor.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if called outside a tokio runtime (or the reactor refuses it);
    /// [`Error::InvalidArgument`] for a sharded socket
    /// ([`SocketConfig::shards`](crate::SocketConfig::shards) above 1: an async socket
    /// waits on one engine's descriptor).
    pub fn from_socket(socket: Socket) -> Result<AsyncSocket, Error> {
        if socket.shard_count() > 1 {
            return Err(Error::invalid(
                "socket",
                "an AsyncSocket drives one engine: use an unsharded socket",
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::io(
                "registering the socket with tokio's reactor",
                std::io::Error::other("no tokio runtime is running on this thread"),
            ));
        }
        let fd = Fd(socket.inner().lock().transport.clone());
        // SAFETY: `Fd` keeps the transport alive, and the transport owns its descriptor
        // for its whole life (it is never closed or replaced), so `as_raw_fd` returns the
        // same open descriptor for as long as the `AsyncFd` exists.
        let readable = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| Error::io("registering the socket with tokio's reactor", e.into()))?;
        Ok(AsyncSocket { socket, readable })
    }

    /// The underlying socket (for its synchronous calls and accessors).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Sends a request; resolves to its id. Waits while the transmit buffer is full.
    pub async fn send_request(
        &self,
        dest: SocketAddr,
        message: &[u8],
        cookie: u64,
    ) -> Result<u64, Error> {
        self.send_request_vectored(dest, &[IoSlice::new(message)], cookie)
            .await
    }

    /// [`send_request`](Self::send_request) with the message given as several slices.
    pub async fn send_request_vectored(
        &self,
        dest: SocketAddr,
        message: &[IoSlice<'_>],
        cookie: u64,
    ) -> Result<u64, Error> {
        self.socket.check_family(dest)?;
        let bytes = crate::socket::gather(message)?;
        self.send_request_owned(dest, bytes, cookie).await
    }

    /// [`send_request`](Self::send_request) that takes the message's buffer (no
    /// user-space copy; see [`Socket::send_request_owned`]).
    ///
    /// # Errors
    ///
    /// As [`Socket::send_request_owned`].
    pub async fn send_request_owned(
        &self,
        dest: SocketAddr,
        message: impl Into<Bytes>,
        cookie: u64,
    ) -> Result<u64, Error> {
        let message = self.socket.outgoing(dest, message)?;
        self.send(message, move |e, now, b| {
            e.send_request(now, dest, b, cookie)
        })
        .await
    }

    /// [`send_response`](Self::send_response) that takes the message's buffer.
    ///
    /// # Errors
    ///
    /// As [`Socket::send_response_owned`].
    pub async fn send_response_owned(
        &self,
        client: SocketAddr,
        id: u64,
        message: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let message = self.socket.outgoing(client, message)?;
        self.send(message, move |e, now, b| {
            e.send_response(now, client, id, b)
        })
        .await
    }

    /// Sends the response to request `id` from `client`.
    pub async fn send_response(
        &self,
        client: SocketAddr,
        id: u64,
        message: &[u8],
    ) -> Result<(), Error> {
        self.socket.check_family(client)?;
        let bytes = crate::socket::gather(&[IoSlice::new(message)])?;
        self.send_response_owned(client, id, bytes).await
    }

    async fn send<T>(
        &self,
        bytes: Bytes,
        call: impl Fn(
            &mut homa_proto::engine::Engine<crate::region::RegionWriter>,
            homa_proto::Time,
            Bytes,
        ) -> Result<T, homa_proto::engine::SendError>,
    ) -> Result<T, Error> {
        let inner = self.socket.inner();
        let token = Token::new(inner);
        let mut bytes = Some(bytes);
        poll_fn(|cx| {
            let attempt = bytes.take().expect("kept until sent");
            match inner.try_send(&call, attempt) {
                Err(e) => Poll::Ready(Err(e)),
                Ok(Ok(v)) => Poll::Ready(Ok(v)),
                Ok(Err(back)) => {
                    // Room frees as acks arrive (whoever drives wakes the senders).
                    bytes = Some(back);
                    let mut core = inner.lock();
                    core.waiters.wait_send(token.token, cx.waker());
                    inner.nudge_watchdog(&mut core);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits for a message, as [`Socket::recv`] does.
    ///
    /// # Errors
    ///
    /// As [`Socket::recv`]: the RPC's failure ([`Error::RpcTimeout`],
    /// [`Error::PeerUnreachable`], ...), [`Error::UnknownRpc`], [`Error::Shutdown`].
    pub async fn recv(&self, want: Want) -> Result<Message, Error> {
        let inner = self.socket.inner();
        let _reservation = Reservation::new(inner, want);
        let token = Token::new(inner);
        poll_fn(|cx| loop {
            let mut core = inner.lock();
            if let Some(found) = core.take(want) {
                drop(core);
                return Poll::Ready(found.map(|(kind, m)| Message::new(inner.clone(), kind, m)));
            }
            if core.is_shut_down() {
                return Poll::Ready(Err(Error::Shutdown));
            }
            if let Want::Response(id) = want {
                if !core.engine.has_client_rpc(id) {
                    return Poll::Ready(Err(Error::UnknownRpc { id }));
                }
            }
            core.waiters.wait_recv(token.token, want, cx.waker());
            if !core.is_driven() {
                // Nobody drives: read what is queued ourselves.
                core = inner.drive_now(core, want);
                if let Some(found) = core.take(want) {
                    drop(core);
                    return Poll::Ready(
                        found.map(|(kind, m)| Message::new(inner.clone(), kind, m)),
                    );
                }
                // Not there: wait on the reactor for the socket to become readable.
                core.waiters.wait_recv(token.token, want, cx.waker());
                core.waiters.reactor = Some(token.token);
                drop(core);
                match self.readable.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut ready)) => {
                        ready.clear_ready();
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(Error::io("waiting for the socket", e)))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            // Another task or thread drives: it wakes us when our message is there.
            return Poll::Pending;
        })
        .await
    }

    /// Waits for a message at most `timeout` (tokio's timer); [`Error::Timeout`] if none came.
    pub async fn recv_timeout(&self, want: Want, timeout: Duration) -> Result<Message, Error> {
        tokio::time::timeout(timeout, self.recv(want))
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// Shuts the socket down; waiting tasks resolve to [`Error::Shutdown`].
    pub fn shutdown(&self) {
        self.socket.shutdown();
    }
}

/// One future's registration with the socket's waiters, removed when it is dropped.
struct Token<'a> {
    inner: &'a Arc<Inner>,
    token: u64,
}

impl<'a> Token<'a> {
    fn new(inner: &'a Arc<Inner>) -> Self {
        let token = inner.lock().waiters.token();
        Token { inner, token }
    }
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        self.inner.lock().waiters.remove(self.token);
    }
}

/// Keeps a response id reserved for the task awaiting it (see [`Want::Response`]).
struct Reservation<'a> {
    inner: &'a std::sync::Arc<crate::driver::Inner>,
    id: Option<u64>,
}

impl<'a> Reservation<'a> {
    fn new(inner: &'a std::sync::Arc<crate::driver::Inner>, want: Want) -> Self {
        let id = match want {
            Want::Response(id) => Some(id),
            _ => None,
        };
        if let Some(id) = id {
            inner.lock().reserve(id);
        }
        Reservation { inner, id }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.lock().unreserve(id);
        }
    }
}

//! Async versions of the socket operations (feature `tokio`).
//!
//! [`AsyncSocket`] wraps a [`Socket`]. Its futures do not block: a task waiting for a
//! message registers its waker with the socket, and the socket's driver (its background
//! thread, or a thread blocked in a synchronous call) wakes it when a message arrives.
//! The futures work on any executor; [`AsyncSocket::recv_timeout`] uses tokio's timer.

use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

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
}

impl AsyncSocket {
    /// A client socket (see [`Socket::new`]).
    pub fn new(config: SocketConfig) -> Result<AsyncSocket, Error> {
        Socket::new(config).map(AsyncSocket::from)
    }

    /// A server socket (see [`Socket::bind`]).
    pub fn bind(port: u16, config: SocketConfig) -> Result<AsyncSocket, Error> {
        Socket::bind(port, config).map(AsyncSocket::from)
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
        self.send(bytes, move |e, now, b| e.send_request(now, dest, b, cookie))
            .await
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
        message: Vec<u8>,
        cookie: u64,
    ) -> Result<u64, Error> {
        self.socket.check_family(dest)?;
        crate::socket::check_length(message.len())?;
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
        message: Vec<u8>,
    ) -> Result<(), Error> {
        self.socket.check_family(client)?;
        crate::socket::check_length(message.len())?;
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
        self.send(bytes, move |e, now, b| e.send_response(now, client, id, b))
            .await
    }

    async fn send<T>(
        &self,
        bytes: Vec<u8>,
        call: impl Fn(
            &mut homa_proto::engine::Engine<crate::region::RegionWriter>,
            homa_proto::Time,
            Vec<u8>,
        ) -> Result<T, homa_proto::engine::SendError>,
    ) -> Result<T, Error> {
        let inner = self.socket.inner();
        let mut bytes = Some(bytes);
        poll_fn(|cx| {
            let attempt = bytes.take().expect("kept until sent");
            match inner.try_send(&call, attempt) {
                Err(e) => Poll::Ready(Err(e)),
                Ok(Ok(v)) => Poll::Ready(Ok(v)),
                Ok(Err(back)) => {
                    bytes = Some(back);
                    inner.register_waker(&mut inner.lock(), cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits for a message, as [`Socket::recv`] does.
    pub async fn recv(&self, want: Want) -> Result<Message, Error> {
        let inner = self.socket.inner();
        let _reservation = Reservation::new(inner, want);
        poll_fn(|cx| {
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
            inner.register_waker(&mut core, cx.waker());
            Poll::Pending
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

impl From<Socket> for AsyncSocket {
    fn from(socket: Socket) -> Self {
        AsyncSocket { socket }
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

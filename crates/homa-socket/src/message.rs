//! [`Message`]: a received request or response, read in place from the receive region.

use std::fmt;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use homa_proto::engine;

use crate::driver::Inner;
use crate::Error;

/// Whether a message is a request (server side) or a response (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A request: answer it with [`Message::reply`].
    Request,
    /// The response to one of this socket's requests.
    Response,
}

/// A received message. Its bytes stay in the socket's receive region, in the bpages
/// listed by [`bpage_offsets`](Self::bpage_offsets), which belong to the application
/// until the message is dropped (or handed back by offset, see
/// [`into_bpages`](Self::into_bpages)).
pub struct Message {
    inner: Arc<Inner>,
    kind: MessageKind,
    msg: engine::Message,
    owned: bool,
    /// The bpage offsets in the socket's offset space, when they differ from the engine's
    /// (a shard other than the first of a sharded socket).
    offsets: Option<Box<[u32]>>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.msg.id)
            .field("kind", &self.kind)
            .field("peer", &self.msg.peer)
            .field("cookie", &self.msg.cookie)
            .field("len", &self.msg.len())
            .field("bpages", &self.bpage_offsets())
            .finish()
    }
}

impl Message {
    pub(crate) fn new(inner: Arc<Inner>, kind: MessageKind, msg: engine::Message) -> Self {
        let base = inner.bpage_base();
        let offsets = (base != 0).then(|| msg.buffers.tokens().iter().map(|t| t + base).collect());
        Message {
            inner,
            kind,
            msg,
            owned: true,
            offsets,
        }
    }

    /// The RPC id: odd for requests, even for responses.
    pub fn id(&self) -> u64 {
        self.msg.id
    }
    /// Request or response.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }
    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        self.kind == MessageKind::Request
    }
    /// The other end (its address and Homa port).
    pub fn peer(&self) -> SocketAddr {
        self.msg.peer
    }
    /// For responses, the completion cookie given with the request; 0 for requests.
    pub fn cookie(&self) -> u64 {
        self.msg.cookie
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.msg.len()
    }
    /// Always false: messages hold at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Region offsets of the bpages holding the message (the seed's `bpage_offsets`):
    /// byte `i * 65536 ..` of the message is at entry `i`. (On a sharded socket, offsets
    /// in the concatenation of the shards' regions: see
    /// [`SocketConfig::shards`](crate::SocketConfig::shards).)
    pub fn bpage_offsets(&self) -> &[u32] {
        self.offsets
            .as_deref()
            .unwrap_or_else(|| self.msg.buffers.tokens())
    }

    /// The message's bytes, in order, as the slices of the bpages they occupy.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.msg.buffers.chunks().map(move |(offset, len)| {
            // SAFETY: these bytes are in bpages delivered to the application and owned by
            // this message until it is dropped; the engine never writes them meanwhile,
            // and the region outlives `self` (it lives in `inner`).
            unsafe { self.inner.region.slice(offset, len) }
        })
    }

    /// Copies the message into `buf`; returns the bytes copied (the shorter length).
    pub fn copy_to(&self, buf: &mut [u8]) -> usize {
        let mut at = 0;
        for s in self.slices() {
            let n = s.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&s[..n]);
            at += n;
            if at == buf.len() {
                break;
            }
        }
        at
    }

    /// A copy of the message.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for s in self.slices() {
            v.extend_from_slice(s);
        }
        v
    }

    /// Sends the response to this request.
    pub fn reply(&self, response: &[u8]) -> Result<(), Error> {
        self.reply_vectored(&[IoSlice::new(response)])
    }

    /// [`reply`](Self::reply) with the response given as several slices.
    pub fn reply_vectored(&self, response: &[IoSlice<'_>]) -> Result<(), Error> {
        if self.kind != MessageKind::Request {
            return Err(Error::invalid("message", "only requests can be replied to"));
        }
        self.reply_owned(crate::socket::gather(response)?)
    }

    /// [`reply`](Self::reply) that takes the response's buffer: no user-space copy (see
    /// [`Socket::send_request_owned`](crate::Socket::send_request_owned)).
    ///
    /// # Errors
    ///
    /// As [`reply`](Self::reply): [`Error::InvalidArgument`] for a response (only
    /// requests are replied to), [`Error::EmptyMessage`], [`Error::MessageTooLong`],
    /// [`Error::Shutdown`].
    pub fn reply_owned(&self, response: impl Into<bytes::Bytes>) -> Result<(), Error> {
        let response = response.into();
        if self.kind != MessageKind::Request {
            return Err(Error::invalid("message", "only requests can be replied to"));
        }
        crate::socket::check_length(response.len())?;
        let (peer, id) = (self.msg.peer, self.msg.id);
        self.inner.send(
            |engine, now, bytes| engine.send_response(now, peer, id, bytes),
            response,
        )
    }

    /// Keeps the bpages but forgets the message: the application must hand the returned
    /// offsets back with [`Socket::release_bpages`](crate::Socket::release_bpages), as
    /// `homa_recvmsg_args` does. Read the message first: its bytes are not reachable
    /// through this API afterwards.
    pub fn into_bpages(mut self) -> Vec<u32> {
        self.owned = false;
        let mut core = self.inner.lock();
        for &t in self.msg.buffers.tokens() {
            *core.handed_over.entry(t).or_insert(0) += 1;
        }
        drop(core);
        self.bpage_offsets().to_vec()
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if self.owned {
            let mut core = self.inner.lock();
            let now = self.inner.now();
            // Cannot fail: the message owns exactly these tokens.
            let _ = core.engine.release_message(now, &self.msg);
            // Freed space may restart a stalled message: send its RESEND now.
            core.flush(now);
        }
    }
}

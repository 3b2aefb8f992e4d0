//! [`Socket`]: the article's API over the sans-IO engine. How the engine is driven
//! (the driver role, the watchdog thread, batching, direct placement) is in `driver.rs`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homa_proto::engine::{self, Engine, EngineOptions};

use bytes::Bytes;
use homa_proto::pool::BPAGE_SIZE;

use crate::driver::Inner;
use crate::message::Message;
use crate::region::{RecvRegion, RegionWriter, MIN_REGION_SIZE};
use crate::shards::{first_id, Shard, Shards, MAX_SHARDS};
use crate::transport::{Family, Transport, TransportOptions};
use crate::{Error, SocketConfig};

/// Which messages a receive call accepts (the seed's `HOMA_RECVMSG_REQUEST` /
/// `HOMA_RECVMSG_RESPONSE` flags and its id filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    /// Incoming requests (server side).
    Requests,
    /// Any response (or failure) of this socket's requests not awaited by id elsewhere.
    Responses,
    /// Requests or responses, whichever is ready first.
    Both,
    /// The response (or failure) of this one request id.
    Response(u64),
}

/// A Homa socket: a client as created, a server when bound to a port.
///
/// `Socket` is `Send + Sync`: share it (e.g. in an `Arc` or across scoped threads) and
/// let many threads send and receive at once. Dropping it shuts it down.
///
/// ```
/// use homa_socket::{Socket, SocketConfig, Want};
///
/// let server = Socket::bind(0, SocketConfig::default()).err(); // port 0 is not a server port
/// assert!(server.is_some());
///
/// let server = Socket::bind(5991, SocketConfig::default()).unwrap();
/// let client = Socket::new(SocketConfig::default()).unwrap();
/// let id = client.send_request("127.0.0.1:5991".parse().unwrap(), b"ping", 42).unwrap();
///
/// let request = server.recv(Want::Requests).unwrap();
/// assert_eq!(request.to_vec(), b"ping");
/// request.reply(b"pong").unwrap();
///
/// let response = client.recv(Want::Response(id)).unwrap();
/// assert_eq!((response.id(), response.cookie()), (id, 42));
/// assert_eq!(response.to_vec(), b"pong");
/// ```
pub struct Socket {
    shards: Shards,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("port", &self.port())
            .field("family", &self.shards.first().family())
            .finish_non_exhaustive()
    }
}

fn random_u64() -> u64 {
    let mut v = [0u8; 8];
    // SAFETY: getrandom writes at most `v.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(v.as_mut_ptr().cast(), v.len(), 0) };
    if n != 8 {
        // Fall back to time and pid: ids need uniqueness, not secrecy.
        let t = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
        return t.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    u64::from_ne_bytes(v)
}

impl Socket {
    /// A client socket with an automatic port (32768..=65535).
    pub fn new(config: SocketConfig) -> Result<Socket, Error> {
        Socket::open(None, config)
    }

    /// A server socket bound to `port` (1..=32767); it can send requests too.
    pub fn bind(port: u16, config: SocketConfig) -> Result<Socket, Error> {
        if !(1..engine::MIN_CLIENT_PORT).contains(&port) {
            return Err(Error::invalid(
                "port",
                format!("{port} is not a server port: allowed 1..=32767"),
            ));
        }
        Socket::open(Some(port), config)
    }

    fn open(port: Option<u16>, mut config: SocketConfig) -> Result<Socket, Error> {
        if !(576..=65536).contains(&config.mtu) {
            return Err(Error::invalid(
                "mtu",
                format!("{} is out of range: allowed 576..=65536", config.mtu),
            ));
        }
        let max = homa_proto::wire::MAX_MESSAGE_LENGTH;
        let unsched_loopback = match (config.unsched_loopback, config.transport) {
            (Some(bytes), _) if !(1..=max).contains(&bytes) => {
                return Err(Error::invalid(
                    "loopback_unsched_bytes",
                    format!("{bytes} is out of range: allowed 1..={max}"),
                ))
            }
            (Some(bytes), _) => Some(bytes),
            (None, crate::TransportKind::Udp) => Some(max),
            (None, crate::TransportKind::RawIp) => None,
        };
        let shards = usize::from(config.shards);
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(Error::invalid(
                "shards",
                format!("{shards} is out of range: allowed 1..={MAX_SHARDS}"),
            ));
        }
        if shards > 1 && port.is_none() {
            return Err(Error::invalid(
                "shards",
                "only a server socket (Socket::bind) can be sharded",
            ));
        }
        let options = TransportOptions {
            kind: config.transport,
            family: config.family,
            port,
            mtu: config.mtu,
            socket_buffer: config.socket_buffer,
        };
        let (regions, span) = regions(&mut config, shards)?;
        let transports = if shards == 1 {
            vec![Transport::open(&options)?]
        } else {
            Transport::open_shards(&options, config.shards)?
        };
        let mut list = Vec::with_capacity(shards);
        for (index, (transport, region)) in transports.into_iter().zip(regions).enumerate() {
            let local_port = transport.local_port();
            let (v4, v6, loopback) = transport.max_packets();
            let first_id = first_id(index, shards, random_u64());
            let mut options = if port.is_some() {
                EngineOptions::server(local_port, first_id)
            } else {
                EngineOptions::client(local_port, first_id)
            };
            options.max_packet_v4 = v4;
            options.max_packet_v6 = v6;
            options.max_packet_loopback = Some(loopback);
            options.unsched_loopback = unsched_loopback;
            let engine = Engine::new(config.protocol.clone(), options, region.writer())
                .map_err(|e| Error::invalid("config", e.to_string()))?;
            let base = span * index as u32;
            let (inner, background) =
                Inner::start(engine, transport, region, config.poll, config.family, base)?;
            list.push(Shard {
                inner,
                background: Some(background),
            });
        }
        if shards > 1 {
            for shard in &list {
                let others = list
                    .iter()
                    .filter(|s| !Arc::ptr_eq(&s.inner, &shard.inner))
                    .map(|s| Arc::downgrade(&s.inner))
                    .collect();
                shard.inner.set_siblings(others);
            }
        }
        Ok(Socket {
            shards: Shards::new(list, span),
        })
    }

    /// This socket's Homa port.
    pub fn port(&self) -> u16 {
        self.shards.first().port()
    }

    /// Whether the socket is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.family() == Family::V6
    }

    fn family(&self) -> Family {
        self.shards.first().family()
    }

    /// How many shards serve the port ([`SocketConfig::shards`]; 1 unless sharded).
    pub fn shard_count(&self) -> usize {
        self.shards.all().count()
    }

    /// The local address to give peers on this host: loopback of the socket's family and
    /// its port.
    pub fn loopback_addr(&self) -> SocketAddr {
        SocketAddr::new(self.family().loopback(), self.port())
    }

    /// The runtime of an unsharded socket (an [`AsyncSocket`](crate::AsyncSocket) drives
    /// one engine).
    #[cfg(feature = "tokio")]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        self.shards.first()
    }

    pub(crate) fn check_family(&self, addr: SocketAddr) -> Result<(), Error> {
        if Family::of(addr.ip()) != self.family() {
            return Err(Error::invalid(
                "destination",
                format!(
                    "{addr} is not of the socket's address family ({:?})",
                    self.family()
                ),
            ));
        }
        Ok(())
    }

    /// An owned message to `peer`, checked as every send checks it: the peer's address
    /// family, then the message's length.
    pub(crate) fn outgoing(
        &self,
        peer: SocketAddr,
        message: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        let message = message.into();
        self.check_family(peer)?;
        check_length(message.len())?;
        Ok(message)
    }

    /// Sends a request and returns its id (even). `cookie` comes back with the response.
    /// Blocks while the transmit buffer (`wmem_max`) is full.
    pub fn send_request(
        &self,
        dest: SocketAddr,
        message: &[u8],
        cookie: u64,
    ) -> Result<u64, Error> {
        self.send_request_vectored(dest, &[IoSlice::new(message)], cookie)
    }

    /// [`send_request`](Self::send_request) without waiting: [`Error::WouldBlock`] if the
    /// transmit buffer (`wmem_max` bytes of unfinished outgoing messages) has no room.
    /// An application that sends without ever receiving can fill its receive region with
    /// responses and stall its own requests; this call lets it notice instead of waiting.
    pub fn try_send_request(
        &self,
        dest: SocketAddr,
        message: &[u8],
        cookie: u64,
    ) -> Result<u64, Error> {
        self.check_family(dest)?;
        let bytes = gather(&[IoSlice::new(message)])?;
        let call = move |e: &mut Engine<RegionWriter>, now, b| e.send_request(now, dest, b, cookie);
        self.shards
            .for_peer(dest)
            .try_send(&call, bytes)?
            .map_err(|_| Error::WouldBlock)
    }

    /// [`send_request`](Self::send_request) with the message given as several slices.
    pub fn send_request_vectored(
        &self,
        dest: SocketAddr,
        message: &[IoSlice<'_>],
        cookie: u64,
    ) -> Result<u64, Error> {
        self.check_family(dest)?;
        self.send_request_owned(dest, gather(message)?, cookie)
    }

    /// [`send_request`](Self::send_request) that takes the message's buffer, a `Vec<u8>`
    /// or a [`Bytes`](crate::Bytes): no copy is made in user space (the packets go out as
    /// iovecs over these very bytes, which the socket keeps until the response arrives).
    /// A `Bytes` is shared, so one buffer (e.g. `Bytes::from_static`) can be sent any
    /// number of times without a copy. The slice calls copy the message once.
    ///
    /// ```
    /// use homa_socket::{Bytes, Socket, SocketConfig, Want};
    /// let server = Socket::bind(5995, SocketConfig::default())?;
    /// let client = Socket::new(SocketConfig::default())?;
    /// let id = client.send_request_owned(server.loopback_addr(), vec![7; 100_000], 0)?;
    /// let request = server.recv(Want::Requests)?;
    /// static ZEROS: [u8; 100_000] = [0; 100_000];
    /// request.reply_owned(Bytes::from_static(&ZEROS))?;
    /// assert_eq!(client.recv(Want::Response(id))?.len(), 100_000);
    /// # Ok::<(), homa_socket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_request`](Self::send_request): [`Error::EmptyMessage`],
    /// [`Error::MessageTooLong`], [`Error::InvalidArgument`] (another address family, or a
    /// destination port that is not a server port), [`Error::Shutdown`].
    pub fn send_request_owned(
        &self,
        dest: SocketAddr,
        message: impl Into<Bytes>,
        cookie: u64,
    ) -> Result<u64, Error> {
        let message = self.outgoing(dest, message)?;
        self.shards.for_peer(dest).send(
            |engine, now, bytes| engine.send_request(now, dest, bytes, cookie),
            message,
        )
    }

    /// [`send_response`](Self::send_response) that takes the message's buffer (no
    /// user-space copy; see [`send_request_owned`](Self::send_request_owned)).
    ///
    /// # Errors
    ///
    /// As [`send_response`](Self::send_response).
    pub fn send_response_owned(
        &self,
        client: SocketAddr,
        id: u64,
        message: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let message = self.outgoing(client, message)?;
        self.shards.for_peer(client).send(
            |engine, now, bytes| engine.send_response(now, client, id, bytes),
            message,
        )
    }

    /// Sends the response to request `id` received from `client` (the request's
    /// [`Message::id`] and [`Message::peer`]). See also [`Message::reply`].
    pub fn send_response(&self, client: SocketAddr, id: u64, message: &[u8]) -> Result<(), Error> {
        self.send_response_vectored(client, id, &[IoSlice::new(message)])
    }

    /// [`send_response`](Self::send_response) with the message given as several slices.
    pub fn send_response_vectored(
        &self,
        client: SocketAddr,
        id: u64,
        message: &[IoSlice<'_>],
    ) -> Result<(), Error> {
        self.check_family(client)?;
        self.send_response_owned(client, id, gather(message)?)
    }

    /// Waits for a message.
    pub fn recv(&self, want: Want) -> Result<Message, Error> {
        self.shards.recv(want, None, false)
    }

    /// Waits for a message at most `timeout`; [`Error::Timeout`] if none came.
    pub fn recv_timeout(&self, want: Want, timeout: Duration) -> Result<Message, Error> {
        self.shards
            .recv(want, Some(Instant::now() + timeout), false)
    }

    /// Returns a message if one is ready, else [`Error::WouldBlock`].
    pub fn try_recv(&self, want: Want) -> Result<Message, Error> {
        self.shards.recv(want, None, true)
    }

    /// The seed's `recvmsg` in one call: first hands back the bpages in `release`
    /// (offsets kept with [`Message::into_bpages`]), then waits for a message (at most
    /// `timeout`, or forever if `None`).
    ///
    /// ```
    /// use homa_socket::{Socket, SocketConfig, Want};
    /// let server = Socket::bind(5993, SocketConfig::default()).unwrap();
    /// let client = Socket::new(SocketConfig::default()).unwrap();
    /// client.send_request(server.loopback_addr(), b"one", 0).unwrap();
    /// client.send_request(server.loopback_addr(), b"two", 0).unwrap();
    /// let first = server.recv(Want::Requests).unwrap();
    /// let kept = first.into_bpages(); // zero-copy user: keep the offsets
    /// let second = server.recv_releasing(Want::Requests, None, &kept).unwrap();
    /// assert_eq!(second.to_vec(), b"two");
    /// ```
    pub fn recv_releasing(
        &self,
        want: Want,
        timeout: Option<Duration>,
        release: &[u32],
    ) -> Result<Message, Error> {
        self.release_bpages(release)?;
        match timeout {
            Some(t) => self.recv_timeout(want, t),
            None => self.recv(want),
        }
    }

    /// Gives back bpages kept with [`Message::into_bpages`] (the seed's zero-copy
    /// hand-back: `bpage_offsets` passed to a later `recvmsg`). As in the kernel, offsets
    /// before an invalid one are already released when the error is returned.
    ///
    /// Only offsets handed over by [`Message::into_bpages`] are accepted, each as many
    /// times as it was handed over: the bpages of a [`Message`] that is still alive are
    /// its own (they are released when it is dropped), so releasing them here would let
    /// the region reuse memory the message still reads.
    ///
    /// ```
    /// use homa_socket::{Error, Socket, SocketConfig, Want};
    /// let server = Socket::bind(5994, SocketConfig::default()).unwrap();
    /// let client = Socket::new(SocketConfig::default()).unwrap();
    /// client.send_request(server.loopback_addr(), b"hi", 0).unwrap();
    /// let msg = server.recv(Want::Requests).unwrap();
    /// // The message is alive: its pages cannot be released by offset.
    /// let live = msg.bpage_offsets().to_vec();
    /// assert!(matches!(server.release_bpages(&live), Err(Error::UnknownBpage { .. })));
    /// assert_eq!(msg.to_vec(), b"hi");
    /// let kept = msg.into_bpages();
    /// server.release_bpages(&kept).unwrap();
    /// assert!(server.release_bpages(&kept).is_err(), "already given back");
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBpage`] for an offset that no handed-over message holds (never
    /// handed over, already given back, or still owned by a live [`Message`]).
    pub fn release_bpages(&self, tokens: &[u32]) -> Result<(), Error> {
        // Runs of offsets of one shard go back under one lock, in order.
        let mut rest = tokens;
        while let Some(&first) = rest.first() {
            let shard = self
                .shards
                .for_offset(first)
                .ok_or(Error::UnknownBpage { offset: first })?;
            let run = rest
                .iter()
                .take_while(|&&t| {
                    self.shards
                        .for_offset(t)
                        .is_some_and(|s| Arc::ptr_eq(s, shard))
                })
                .count();
            shard.release_bpages(&rest[..run])?;
            rest = &rest[run..];
        }
        Ok(())
    }

    /// Abandons client RPC `id`: its response will not be delivered (if it already
    /// arrived and was not received yet, it is discarded). Returns whether it was still
    /// pending. If any of the request went out, the server is told (an RPC_UNKNOWN) and
    /// frees its state at once; DATA that still arrives for the RPC is answered the same
    /// way.
    pub fn abort(&self, id: u64) -> bool {
        let Some(inner) = self.shards.for_id(id) else {
            return false;
        };
        let now = inner.now();
        inner.lock().abort(now, id)
    }

    /// Shuts the socket down: every RPC is deleted, every waiting thread wakes with
    /// [`Error::Shutdown`], and later calls fail with it.
    pub fn shutdown(&self) {
        self.shards.shutdown();
    }

    /// The engine's counters (packets, drops, retransmissions, ...).
    pub fn stats(&self) -> engine::Stats {
        let mut total = self.shards.first().lock().engine.stats().clone();
        for inner in self.shards.all().skip(1) {
            total += inner.lock().engine.stats();
        }
        total
    }

    /// The transport's counters (a snapshot; they count from the socket's creation).
    /// The engine's counters are [`stats`](Self::stats).
    ///
    /// - `packets_refused`, `refused_by_errno`: packets the kernel refused to send, in
    ///   all and by errno (EPERM: a firewall rule; EHOSTUNREACH/ENETUNREACH: no route;
    ///   ENOBUFS: a full device queue; EINVAL: a destination it cannot send to, such as
    ///   UDP port 0; ...). Such a packet is lost like one dropped on the wire, and never
    ///   fails an RPC by itself: the protocol resends it, or the RPC times out. (Only
    ///   ICMP reports make a peer unreachable.)
    /// - `batches_stalled`: batches whose rest was dropped because the send buffer
    ///   stayed full for a second (their packets count as refused with EAGAIN).
    /// - `truncated`: received datagrams larger than the largest packet, dropped.
    /// - `malformed`: raw IP only: received datagrams with an impossible IP header.
    /// - `sport_mismatch`: UDP only: received datagrams whose UDP source port differs
    ///   from the source port in their Homa header, dropped.
    ///
    /// ```
    /// use homa_socket::{Socket, SocketConfig};
    ///
    /// let socket = Socket::new(SocketConfig::default())?;
    /// let stats = socket.transport_stats();
    /// for (&errno, packets) in &stats.refused_by_errno {
    ///     let why = std::io::Error::from_raw_os_error(errno);
    ///     eprintln!("{packets} packets refused: {why}");
    /// }
    /// assert_eq!(stats.packets_refused, 0);
    /// assert_eq!((stats.batches_stalled, stats.truncated, stats.sport_mismatch), (0, 0, 0));
    /// # Ok::<(), homa_socket::Error>(())
    /// ```
    pub fn transport_stats(&self) -> crate::TransportStats {
        let mut total = crate::TransportStats::default();
        for inner in self.shards.all() {
            let transport = inner.lock().transport.clone();
            total += &transport.stats();
        }
        total
    }

    /// Whether every bpage of the receive region is back in the pool (no message is held
    /// by the application or being received).
    pub fn pool_is_idle(&self) -> bool {
        self.shards
            .all()
            .all(|inner| inner.lock().engine.pool().is_idle())
    }

    /// Number of live RPCs.
    pub fn rpc_count(&self) -> usize {
        self.shards
            .all()
            .map(|inner| inner.lock().engine.rpc_count())
            .sum()
    }

    /// How much protocol state the socket holds (table sizes and allocated room): after a
    /// burst of RPCs it shrinks back within about a second.
    pub fn footprint(&self) -> engine::Footprint {
        let mut total = engine::Footprint::default();
        for inner in self.shards.all() {
            total += inner.lock().engine.footprint();
        }
        total
    }
}

/// The receive region of each shard, and the bytes each spans in the socket's bpage
/// offsets: the configured region for an unsharded socket; for N shards, N regions that
/// share `region_size` (each a whole number of bpages).
fn regions(config: &mut SocketConfig, shards: usize) -> Result<(Vec<RecvRegion>, u32), Error> {
    if let Some(region) = config.region.take() {
        if shards > 1 {
            return Err(Error::invalid(
                "region",
                "a sharded socket allocates its shards' regions itself: set region_size instead",
            ));
        }
        // (A region holds at most 4 GiB: its offsets fit in a u32.)
        let span = u32::try_from(region.len()).unwrap_or(u32::MAX);
        return Ok((vec![region], span));
    }
    let per_shard = if shards == 1 {
        config.region_size
    } else {
        config.region_size / shards / BPAGE_SIZE * BPAGE_SIZE
    };
    if per_shard < MIN_REGION_SIZE {
        let each = if shards == 1 {
            String::new()
        } else {
            format!(" for {shards} shards ({per_shard} bytes each)")
        };
        return Err(Error::invalid(
            "region_size",
            format!(
                "{} bytes is too small{each}: at least {MIN_REGION_SIZE}",
                config.region_size
            ),
        ));
    }
    let regions = (0..shards)
        .map(|_| RecvRegion::allocate(per_shard))
        .collect::<Result<Vec<_>, _>>()?;
    // (`RecvRegion::allocate` refused more than 4 GiB: the offsets fit in a u32.)
    Ok((regions, u32::try_from(per_shard).unwrap_or(u32::MAX)))
}

/// Checks a message's length before it is sent: 1..=1,000,000 bytes.
pub(crate) fn check_length(len: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(Error::EmptyMessage);
    }
    if len > homa_proto::wire::MAX_MESSAGE_LENGTH as usize {
        return Err(Error::MessageTooLong { length: len });
    }
    Ok(())
}

/// Copies a message given as slices into one buffer that the engine owns.
pub(crate) fn gather(message: &[IoSlice<'_>]) -> Result<Bytes, Error> {
    let len: usize = message.iter().map(|s| s.len()).sum();
    check_length(len)?;
    let mut bytes = Vec::with_capacity(len);
    for s in message {
        bytes.extend_from_slice(s);
    }
    Ok(bytes.into())
}

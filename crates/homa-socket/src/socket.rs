//! [`Socket`]: the article's API over the sans-IO engine.
//!
//! # How the engine is driven
//!
//! One lock guards the engine. Whoever needs the network to make progress runs the
//! engine's I/O loop itself, holding the *driver role*:
//!
//! * a thread waiting in `recv` takes the role when it is free, so a response is received,
//!   processed and returned by the very thread that waits for it (no thread hand-off on
//!   the path of a small RPC);
//! * a background thread takes the role when no application thread wants it, so grants,
//!   retransmissions, timers and acks keep flowing while the application is busy; it
//!   gives the role up as soon as an application thread asks (through an eventfd); it
//!   does not busy-poll (only a thread waiting for a message spins, for
//!   [`SocketConfig::busy_poll`](crate::SocketConfig) before it sleeps);
//! * sending threads transmit their own packets directly under the lock.
//!
//! Received packets are batched (`recvmmsg`), and so are sent ones (`sendmmsg`, UDP GSO;
//! a DATA packet goes out as its header and an iovec over the message's own bytes).
//! Payloads are received straight into their bpages (direct placement: each datagram's
//! bytes after its 56-byte header are scattered to where the engine predicts its message
//! continues; mispredicted ones are gathered back and copied), so an in-order DATA
//! payload is copied once, by the kernel, as in the Linux module.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use homa_proto::engine::{self, Engine, EngineOptions, Event, RpcFailure};
use homa_proto::Time;

use crate::message::{Message, MessageKind};
use crate::region::{RecvRegion, RegionWriter, MIN_REGION_SIZE};
use crate::transport::sys::{Scatter, SCATTER_HEAD};
use crate::transport::{Family, RecvBatch, SendBatch, Transport, TransportOptions};
use crate::{Error, SocketConfig};

/// Packets per `sendmmsg` / `recvmmsg`.
const BATCH: usize = 32;
/// Full receive batches in a row after which timers run even though more packets wait
/// (2048 packets: a few milliseconds of work).
const TIMER_DEFER_BATCHES: usize = 64;

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

/// Who holds the driver role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    App,
    Background,
}

/// A finished client RPC waiting to be received.
type Completion = Result<engine::Message, RpcFailure>;

pub(crate) struct Core {
    pub(crate) engine: Engine<RegionWriter>,
    transport: Arc<Transport>,
    send_batch: SendBatch,
    recv_batch: Option<RecvBatch>,
    /// Where the driver's next receive places DATA payloads (direct placement), per slot.
    placements: Vec<engine::Placement>,
    /// Per datagram of the last receive: whether it was received in place.
    in_place: Vec<bool>,
    driver: Option<Driver>,
    /// Application threads waiting for the background driver to hand over.
    apps_wanting: usize,
    /// Received requests, with their arrival sequence number.
    requests: VecDeque<(u64, engine::Message)>,
    /// Finished client RPCs, with their arrival sequence number.
    responses: VecDeque<(u64, Completion)>,
    seq: u64,
    /// Ids some thread waits for specifically, with the number of such threads.
    reserved: HashMap<u64, usize>,
    shutdown: bool,
    /// When the current driver plans to wake up by itself.
    driver_until: Option<Time>,
    /// Async tasks waiting for a message or for room to send.
    pub(crate) wakers: Vec<std::task::Waker>,
    /// Bpage offsets handed to the application by [`Message::into_bpages`], with how
    /// many handed-over messages hold each (a page can hold the tails of several): the
    /// only offsets [`Socket::release_bpages`] accepts.
    pub(crate) handed_over: HashMap<u32, u32>,
    /// When the driver last read the transport's ICMP reports.
    last_reports: Time,
}

pub(crate) struct Inner {
    pub(crate) core: Mutex<Core>,
    cond: Condvar,
    wake: OwnedFd,
    pub(crate) region: RecvRegion,
    epoch: Instant,
    poll: Duration,
    family: Family,
    port: u16,
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
    inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("port", &self.inner.port)
            .field("family", &self.inner.family)
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

    fn open(port: Option<u16>, config: SocketConfig) -> Result<Socket, Error> {
        if !(576..=65536).contains(&config.mtu) {
            return Err(Error::invalid(
                "mtu",
                format!("{} is out of range: allowed 576..=65536", config.mtu),
            ));
        }
        let region = match config.region {
            Some(r) => r,
            None => {
                if config.region_size < MIN_REGION_SIZE {
                    return Err(Error::invalid(
                        "region_size",
                        format!(
                            "{} bytes is too small: at least {MIN_REGION_SIZE}",
                            config.region_size
                        ),
                    ));
                }
                RecvRegion::allocate(config.region_size)?
            }
        };
        let transport = Transport::open(&TransportOptions {
            kind: config.transport,
            family: config.family,
            port,
            mtu: config.mtu,
            socket_buffer: config.socket_buffer,
        })?;
        let local_port = transport.local_port();
        let (v4, v6, loopback) = transport.max_packets();
        let mut options = if port.is_some() {
            EngineOptions::server(local_port, random_u64())
        } else {
            EngineOptions::client(local_port, random_u64())
        };
        options.max_packet_v4 = v4;
        options.max_packet_v6 = v6;
        options.max_packet_loopback = Some(loopback);
        let engine = Engine::new(config.protocol, options, region.writer())
            .map_err(|e| Error::invalid("config", e.to_string()))?;
        let max_packet = engine.max_packet_size();
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "creating the wake-up eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let inner = Arc::new(Inner {
            core: Mutex::new(Core {
                engine,
                transport: Arc::new(transport),
                send_batch: SendBatch::new(max_packet, BATCH),
                recv_batch: Some(RecvBatch::new(max_packet, BATCH)),
                placements: Vec::with_capacity(BATCH),
                in_place: Vec::with_capacity(BATCH),
                driver: None,
                apps_wanting: 0,
                requests: VecDeque::new(),
                responses: VecDeque::new(),
                seq: 0,
                reserved: HashMap::new(),
                shutdown: false,
                driver_until: None,
                wakers: Vec::new(),
                handed_over: HashMap::new(),
                last_reports: Time::ZERO,
            }),
            cond: Condvar::new(),
            wake,
            region,
            epoch: Instant::now(),
            poll: config.poll,
            family: config.family,
            port: local_port,
        });
        let bg = inner.clone();
        let background = std::thread::Builder::new()
            .name(format!("homa-{local_port}"))
            .spawn(move || bg.background())
            .map_err(|e| Error::io("starting the socket's background thread", e))?;
        Ok(Socket {
            inner,
            background: Some(background),
        })
    }

    /// This socket's Homa port.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Whether the socket is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.inner.family == Family::V6
    }

    /// The local address to give peers on this host: loopback of the socket's family and
    /// its port.
    pub fn loopback_addr(&self) -> SocketAddr {
        SocketAddr::new(self.inner.family.loopback(), self.inner.port)
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub(crate) fn check_family(&self, addr: SocketAddr) -> Result<(), Error> {
        if Family::of(addr.ip()) != self.inner.family {
            return Err(Error::invalid(
                "destination",
                format!(
                    "{addr} is not of the socket's address family ({:?})",
                    self.inner.family
                ),
            ));
        }
        Ok(())
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
        self.inner
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
        let bytes = gather(message)?;
        self.inner.send(
            |engine, now, bytes| engine.send_request(now, dest, bytes, cookie),
            bytes,
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
        let bytes = gather(message)?;
        self.inner.send(
            |engine, now, bytes| engine.send_response(now, client, id, bytes),
            bytes,
        )
    }

    /// Waits for a message.
    pub fn recv(&self, want: Want) -> Result<Message, Error> {
        self.inner.recv(&self.inner, want, None, false)
    }

    /// Waits for a message at most `timeout`; [`Error::Timeout`] if none came.
    pub fn recv_timeout(&self, want: Want, timeout: Duration) -> Result<Message, Error> {
        self.inner
            .recv(&self.inner, want, Some(Instant::now() + timeout), false)
    }

    /// Returns a message if one is ready, else [`Error::WouldBlock`].
    pub fn try_recv(&self, want: Want) -> Result<Message, Error> {
        self.inner.recv(&self.inner, want, None, true)
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
        let mut core = self.inner.lock();
        let now = self.inner.now();
        let mut result = Ok(());
        for &t in tokens {
            match core.handed_over.get_mut(&t) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        core.handed_over.remove(&t);
                    }
                }
                None => {
                    result = Err(Error::UnknownBpage { offset: t });
                    break;
                }
            }
            if let Err(e) = core.engine.release(now, t) {
                // (Cannot happen: a handed-over offset is outstanding in the pool.)
                result = Err(Error::invalid("tokens", e.to_string()));
                break;
            }
        }
        core.flush(now);
        result
    }

    /// Abandons client RPC `id`: its response will not be delivered (if it already
    /// arrived and was not received yet, it is discarded). Returns whether it was still
    /// pending. The server learns it at its next packet for the RPC (it gets
    /// RPC_UNKNOWN) and frees its state.
    pub fn abort(&self, id: u64) -> bool {
        let mut core = self.inner.lock();
        core.collect();
        let mut found = core.engine.abort(id);
        let now = self.inner.now();
        let mut dropped = Vec::new();
        core.responses.retain(|(_, c)| {
            if completion_id(c) == id {
                dropped.push(*c);
                false
            } else {
                true
            }
        });
        for c in dropped {
            found = true;
            if let Ok(m) = c {
                // Its bpages go back to the pool.
                let _ = core.engine.release_message(now, &m);
            }
        }
        found
    }

    /// Shuts the socket down: every RPC is deleted, every waiting thread wakes with
    /// [`Error::Shutdown`], and later calls fail with it.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// The engine's counters (packets, drops, retransmissions, ...).
    pub fn stats(&self) -> engine::Stats {
        self.inner.lock().engine.stats().clone()
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
        let transport = self.inner.lock().transport.clone();
        transport.stats()
    }

    /// Whether every bpage of the receive region is back in the pool (no message is held
    /// by the application or being received).
    pub fn pool_is_idle(&self) -> bool {
        self.inner.lock().engine.pool().is_idle()
    }

    /// Number of live RPCs.
    pub fn rpc_count(&self) -> usize {
        self.inner.lock().engine.rpc_count()
    }

    /// How much protocol state the socket holds (table sizes and allocated room): after a
    /// burst of RPCs it shrinks back within about a second.
    pub fn footprint(&self) -> engine::Footprint {
        self.inner.lock().engine.footprint()
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.inner.shutdown();
        if let Some(bg) = self.background.take() {
            let _ = bg.join();
        }
    }
}

pub(crate) fn gather(message: &[IoSlice<'_>]) -> Result<Vec<u8>, Error> {
    let len: usize = message.iter().map(|s| s.len()).sum();
    if len == 0 {
        return Err(Error::EmptyMessage);
    }
    if len > homa_proto::wire::MAX_MESSAGE_LENGTH as usize {
        return Err(Error::MessageTooLong { length: len });
    }
    let mut bytes = Vec::with_capacity(len);
    for s in message {
        bytes.extend_from_slice(s);
    }
    Ok(bytes)
}

fn completion_id(c: &Completion) -> u64 {
    match c {
        Ok(m) => m.id,
        Err(f) => f.id,
    }
}

impl Core {
    /// Sends everything the engine has to send now.
    pub(crate) fn flush(&mut self, now: Time) {
        loop {
            self.send_batch.clear();
            while !self.send_batch.is_full() {
                let buf = self.send_batch.next_buf();
                // DATA payloads are not copied into the batch: they go out as iovecs over
                // the message's own bytes.
                match self.engine.poll_transmit_split(now, buf) {
                    Some((t, payload)) => {
                        self.send_batch
                            .commit_split(t.destination, t.tos, t.len, payload)
                    }
                    None => break,
                }
            }
            if self.send_batch.is_empty() {
                return;
            }
            // Refused packets are lost (the protocol's loss recovery resends them) and
            // counted in the transport's stats.
            for (dest, kind) in self.transport.send(&self.send_batch) {
                self.engine.handle_unreachable(dest, kind);
            }
        }
    }

    /// Direct placement, before a receive: asks the engine where the next DATA payloads
    /// go and points the batch's slots there.
    fn place(&mut self, batch: &mut RecvBatch) {
        let mut places = std::mem::take(&mut self.placements);
        self.engine.placements(BATCH, &mut places);
        let region = self.engine.region();
        let scatter = places.iter().map(|p| {
            let mut ranges = Scatter::default();
            for (slot, (offset, len)) in ranges.iter_mut().zip(p.spans()) {
                *slot = region.address(offset, len).map_or((0, 0), |a| (a, len));
            }
            if ranges.iter().map(|r| r.1).sum::<usize>() != p.capacity() {
                return Scatter::default(); // (never: placements lie in the region)
            }
            ranges
        });
        // SAFETY: each range is a placement: bytes of a message the engine is still
        // receiving, past every byte received so far, inside the region (which lives as
        // long as the socket). No Rust reference covers them: the application only
        // reads delivered messages, and only the driver writes the region, which this
        // thread is until `handle_batch` clears the scatter before handling anything.
        unsafe { batch.set_scatter(scatter) };
        self.placements = places;
    }

    /// Handles the `n` datagrams of the last receive. First every datagram that is not
    /// where its placement expected is put back together in its slot (before handling
    /// anything writes the region); then each is handled, the placed ones without a copy.
    fn handle_batch(&mut self, now: Time, batch: &mut RecvBatch, n: usize) {
        self.in_place.clear();
        let slot_len = batch.max_packet;
        for k in 0..n {
            let (from, at, len) = batch.packets[k];
            let slot = at / slot_len;
            let scattered = batch.scatter(slot) != Scatter::default();
            let Some(p) = self.placements.get(slot).filter(|_| scattered) else {
                self.in_place.push(false);
                continue;
            };
            let placed = at == slot * slot_len
                && len > SCATTER_HEAD
                && self
                    .engine
                    .placement_fits(from, &batch.buf[at..at + SCATTER_HEAD], len, p);
            if !placed {
                // Bytes after the slot's head went to the placement: bring them back.
                let written = at - slot * slot_len + len;
                let mut dst = slot * slot_len + SCATTER_HEAD;
                let mut left = written.saturating_sub(SCATTER_HEAD);
                for (offset, span) in p.spans() {
                    let m = span.min(left);
                    self.engine
                        .region()
                        .copy_out(offset, &mut batch.buf[dst..dst + m]);
                    dst += m;
                    left -= m;
                }
            }
            self.in_place.push(placed);
        }
        batch.clear_scatter();
        for k in 0..n {
            let (from, at, len) = batch.packets[k];
            if self.in_place[k] {
                let place = &self.placements[at / slot_len];
                let head = &batch.buf[at..at + SCATTER_HEAD];
                self.engine.handle_placed(now, from, head, len, place);
            } else {
                self.engine
                    .handle_datagram(now, from, &batch.buf[at..at + len]);
            }
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown
    }

    /// Marks response `id` as awaited by a specific receiver, so `Want::Responses`
    /// receivers leave it alone.
    pub(crate) fn reserve(&mut self, id: u64) {
        *self.reserved.entry(id).or_insert(0) += 1;
    }

    /// Undoes one [`reserve`](Self::reserve).
    pub(crate) fn unreserve(&mut self, id: u64) {
        if let Some(n) = self.reserved.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.reserved.remove(&id);
            }
        }
    }

    /// Gives back the memory of receive queues that a burst of messages grew.
    fn shrink_queues(&mut self) {
        if self.requests.is_empty() && self.requests.capacity() > 1024 {
            self.requests.shrink_to_fit();
        }
        if self.responses.is_empty() && self.responses.capacity() > 1024 {
            self.responses.shrink_to_fit();
        }
    }

    /// Wakes every async task waiting on this socket.
    pub(crate) fn wake_tasks(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    /// Moves the engine's events into the receive queues; returns whether any came.
    pub(crate) fn collect(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.engine.poll_event() {
            any = true;
            self.seq += 1;
            match event {
                Event::Request(m) => self.requests.push_back((self.seq, m)),
                Event::Response(m) => self.responses.push_back((self.seq, Ok(m))),
                Event::Failed(f) => self.responses.push_back((self.seq, Err(f))),
            }
        }
        if any {
            self.wake_tasks();
        }
        any
    }

    pub(crate) fn response_index(&self, want: Want) -> Option<usize> {
        match want {
            Want::Response(id) => self
                .responses
                .iter()
                .position(|(_, c)| completion_id(c) == id),
            _ => self
                .responses
                .iter()
                .position(|(_, c)| !self.reserved.contains_key(&completion_id(c))),
        }
    }

    /// Whether a receive for `want` would find something.
    fn has(&self, want: Want) -> bool {
        match want {
            Want::Requests => !self.requests.is_empty(),
            Want::Both => !self.requests.is_empty() || self.response_index(want).is_some(),
            _ => self.response_index(want).is_some(),
        }
    }

    /// Takes the first message `want` accepts.
    pub(crate) fn take(
        &mut self,
        want: Want,
    ) -> Option<Result<(MessageKind, engine::Message), Error>> {
        // Events the engine queued since the last drive (e.g. an RPC that failed inside
        // the sender's own send) go to their queues first, so they reach the receiver
        // waiting for them.
        self.collect();
        let request = || self.requests.front().map(|(seq, _)| *seq);
        let response = self.response_index(want);
        let take_request = match want {
            Want::Requests => request().is_some(),
            Want::Responses | Want::Response(_) => false,
            Want::Both => match (request(), response) {
                (Some(r), Some(i)) => r < self.responses[i].0,
                (r, _) => r.is_some(),
            },
        };
        if take_request {
            let (_, m) = self.requests.pop_front()?;
            return Some(Ok((MessageKind::Request, m)));
        }
        let (_, completion) = self.responses.remove(response?)?;
        Some(
            completion
                .map(|m| (MessageKind::Response, m))
                .map_err(Error::from_failure),
        )
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Interrupts a driver blocked waiting for packets.
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a local u64 to our own eventfd.
        unsafe {
            libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    fn drain_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a local u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    fn shutdown(&self) {
        let mut core = self.lock();
        if !core.shutdown {
            core.shutdown = true;
            core.engine.shutdown();
            // Queued but unreceived messages go back to the pool.
            let now = self.now();
            let mut queued: Vec<engine::Message> =
                core.requests.drain(..).map(|(_, m)| m).collect();
            queued.extend(core.responses.drain(..).filter_map(|(_, c)| c.ok()));
            for m in queued {
                let _ = core.engine.release_message(now, &m);
            }
        }
        core.wake_tasks();
        drop(core);
        self.cond.notify_all();
        self.wake();
    }

    /// Runs an application send: the engine call, then transmission by this thread.
    /// One attempt at an application send: the engine call, then transmission by this
    /// thread. Gives the bytes back (`Ok(Err(bytes))`) when the transmit buffer
    /// (`wmem_max`) has no room for them yet.
    pub(crate) fn try_send<T>(
        &self,
        call: &impl Fn(&mut Engine<RegionWriter>, Time, Vec<u8>) -> Result<T, engine::SendError>,
        bytes: Vec<u8>,
    ) -> Result<Result<T, Vec<u8>>, Error> {
        let mut core = self.lock();
        if core.shutdown {
            return Err(Error::Shutdown);
        }
        let queued = core.engine.queued_bytes();
        if queued > 0 && queued + bytes.len() as u64 > core.engine.config().wmem_max() {
            return Ok(Err(bytes));
        }
        let now = self.now();
        let v = call(&mut core.engine, now, bytes).map_err(Error::from_send)?;
        core.flush(now);
        // The pacer may want to send more soon: make sure the driver knows.
        if let Some(t) = core.engine.poll_timeout() {
            // (Without a driver there is nobody to wake: the background thread takes the
            // role and reads the engine's timer itself.)
            if core.driver.is_some() && core.driver_until.is_none_or(|u| t < u) {
                self.wake();
            }
        }
        Ok(Ok(v))
    }

    /// An application send that waits while the transmit buffer is full.
    pub(crate) fn send<T>(
        &self,
        call: impl Fn(&mut Engine<RegionWriter>, Time, Vec<u8>) -> Result<T, engine::SendError>,
        mut bytes: Vec<u8>,
    ) -> Result<T, Error> {
        loop {
            match self.try_send(&call, bytes)? {
                Ok(v) => return Ok(v),
                Err(back) => {
                    bytes = back;
                    // Outgoing messages finish as responses and acks arrive.
                    let core = self.lock();
                    drop(
                        self.cond
                            .wait_timeout(core, Duration::from_millis(1))
                            .unwrap_or_else(|p| p.into_inner()),
                    );
                }
            }
        }
    }

    fn recv(
        &self,
        me: &Arc<Inner>,
        want: Want,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<Message, Error> {
        let mut core = self.lock();
        if let Want::Response(id) = want {
            core.reserve(id);
        }
        let (mut core, result) = self.recv_locked(core, want, deadline, nonblocking);
        if let Want::Response(id) = want {
            core.unreserve(id);
        }
        drop(core);
        result.map(|(kind, m)| Message::new(me.clone(), kind, m))
    }

    fn recv_locked<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        want: Want,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> (
        MutexGuard<'a, Core>,
        Result<(MessageKind, engine::Message), Error>,
    ) {
        let mut polled = false;
        loop {
            if let Some(found) = core.take(want) {
                return (core, found);
            }
            if core.shutdown {
                return (core, Err(Error::Shutdown));
            }
            if let Want::Response(id) = want {
                if !core.engine.has_client_rpc(id) {
                    return (core, Err(Error::UnknownRpc { id }));
                }
            }
            if nonblocking {
                if polled || core.driver.is_some() {
                    return (core, Err(Error::WouldBlock));
                }
                // Pick up whatever already arrived, without waiting.
                polled = true;
                core = self.run_driver(core, Some(Instant::now()), Driver::App, want);
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return (core, Err(Error::Timeout));
            }
            match core.driver {
                None => core = self.run_driver(core, deadline, Driver::App, want),
                Some(driver) => {
                    if driver == Driver::Background {
                        core.apps_wanting += 1;
                        self.wake();
                    }
                    let wait = deadline
                        .map(|d| d.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::from_millis(100));
                    core = self
                        .cond
                        .wait_timeout(core, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if driver == Driver::Background {
                        core.apps_wanting -= 1;
                    }
                }
            }
        }
    }

    /// Takes the driver role, drives, gives the role back and tells the others.
    fn run_driver<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        deadline: Option<Instant>,
        who: Driver,
        want: Want,
    ) -> MutexGuard<'a, Core> {
        core.driver = Some(who);
        let mut core = self.drive(core, deadline, who, want);
        core.driver = None;
        core.driver_until = None;
        self.cond.notify_all();
        core
    }

    /// The I/O loop, run by the holder of the driver role until `want` has something (an
    /// application driver), an application asks for the role (the background driver),
    /// shutdown, or the deadline.
    fn drive<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        deadline: Option<Instant>,
        who: Driver,
        want: Want,
    ) -> MutexGuard<'a, Core> {
        // How many receives in a row filled their batch: more is probably queued. Timers
        // then wait for the queue to drain, so they do not judge peers silent whose
        // packets wait unread, but only for `TIMER_DEFER_BATCHES` batches: however full
        // the batches stay (a flood), timeouts and the reclaiming of state still run.
        let mut full_batches = 0;
        loop {
            let now = self.now();
            if full_batches == 0 || full_batches >= TIMER_DEFER_BATCHES {
                core.engine.handle_timeout(now);
                full_batches = 0;
            }
            core.flush(now);
            if core.collect() {
                self.cond.notify_all();
            }
            let satisfied = who == Driver::App && core.has(want);
            if satisfied
                || core.shutdown
                || (who == Driver::Background && core.apps_wanting > 0)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return core;
            }
            let engine_at = core.engine.poll_timeout();
            core.driver_until = engine_at;
            let transport = core.transport.clone();
            let mut batch = core.recv_batch.take().expect("one driver at a time");
            core.place(&mut batch);
            // Without the lock: receive, spinning a little, then sleeping.
            drop(core);
            // Only a thread waiting for a message spins: the background driver exists for
            // progress, not latency, and its spinning would take the CPU from the
            // application threads it is about to hand the role to.
            let spin = if who == Driver::App {
                self.poll
            } else {
                Duration::ZERO
            };
            let received = self.receive(&transport, &mut batch, engine_at, deadline, now, spin);
            core = self.lock();
            let now = self.now();
            let n = received.unwrap_or(0);
            if n == BATCH {
                full_batches += 1;
            } else {
                full_batches = 0;
            }
            core.handle_batch(now, &mut batch, n);
            core.shrink_queues();
            if n > 0 && !core.wakers.is_empty() {
                // Acks free transmit-buffer room without an event: let waiting async
                // senders retry (receivers just re-register).
                core.wake_tasks();
            }
            if n == 0 || now.saturating_duration_since(core.last_reports) >= engine::TICK {
                // Woken without data, or a tick passed: ICMP error reports may be waiting.
                core.last_reports = now;
                if let Ok(reports) = transport.take_unreachable() {
                    for (dest, kind) in reports {
                        core.engine.handle_unreachable(dest, kind);
                    }
                }
            }
            core.recv_batch = Some(batch);
        }
    }

    /// Receives a batch: spins for `spin`, then sleeps until a packet, a
    /// wake-up, the engine's next timer or the caller's deadline.
    fn receive(
        &self,
        transport: &Transport,
        batch: &mut RecvBatch,
        engine_at: Option<Time>,
        deadline: Option<Instant>,
        now: Time,
        spin: Duration,
    ) -> std::io::Result<usize> {
        let spin_until = Instant::now() + spin;
        loop {
            let n = transport.recv(batch)?;
            if n > 0 {
                return Ok(n);
            }
            if Instant::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        let mut timeout = engine_at.map(|t| t.saturating_duration_since(now));
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        transport.wait(self.wake.as_raw_fd(), timeout)?;
        self.drain_wake();
        transport.recv(batch)
    }

    /// The background thread: drives whenever no application thread does.
    fn background(self: Arc<Self>) {
        let mut core = self.lock();
        loop {
            if core.shutdown {
                return;
            }
            if core.driver.is_none() && core.apps_wanting == 0 {
                core = self.run_driver(core, None, Driver::Background, Want::Both);
            }
            if core.driver.is_some() || core.apps_wanting > 0 {
                // Someone else drives, or is about to: wait until the role is free.
                core = self
                    .cond
                    .wait_timeout(core, Duration::from_millis(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

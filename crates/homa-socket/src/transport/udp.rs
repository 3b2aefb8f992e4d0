//! The UDP transport: Homa packets as UDP payloads (project-local, PROTOCOL.md 8.2).
//!
//! - The UDP payload is exactly the Homa packet as it would follow the IP header; the
//!   Homa port is the UDP port. A packet for `SocketAddr(ip, homa_port)` goes to UDP
//!   `ip:homa_port`, and the engine finds the peer's Homa port inside the packet.
//! - One non-blocking socket per transport (AF_INET, or AF_INET6 with IPV6_V6ONLY), bound
//!   to the unspecified address.
//! - Every packet carries its priority as an `IP_TOS` / `IPV6_TCLASS` control message
//!   (`level << 5`).
//! - Sends are one `sendmmsg` per batch; runs of equal-size small packets to one
//!   destination with one TOS are merged into UDP GSO sends (`UDP_SEGMENT`), which the
//!   kernel (or the NIC) cuts back into the same datagrams.
//!   If the kernel refuses a GSO send (EIO, EINVAL, EOPNOTSUPP: no checksum offload on
//!   the route, a segment larger than the path MTU, ...), GSO is turned off for this
//!   transport and the rest goes one packet per datagram.
//! - Receives are one `recvmmsg` for up to the batch's capacity; datagrams larger than a
//!   slot are dropped and counted (`truncated`).
//! - The source port rule: a received datagram whose UDP source port differs from the
//!   `sport` of its Homa header (its first two bytes, big-endian) is dropped and counted
//!   (`sport_mismatch`). The engine takes the peer's Homa port from the header and
//!   answers to that UDP port, and every homa-rs UDP socket sends with its Homa port as
//!   its UDP port; a datagram that disagrees is not from the socket it names (forged, or
//!   from some other program), and answering it would aim packets at a port that never
//!   sent any. (The first two bytes are always in the datagram's slot, also when the rest
//!   is scattered: the first [`SCATTER_HEAD`](sys::SCATTER_HEAD) bytes stay there.)
//!   Datagrams shorter than two bytes are passed on; the engine counts them malformed.
//! - ICMP errors about packets we sent are queued on the socket (`IP_RECVERR` /
//!   `IPV6_RECVERR`) and turned into [`Unreachable`] reports (PROTOCOL.md 4.6), with the
//!   original destination (UDP port = Homa port) from the queued entry's address. These
//!   are the only reports (see the parent module's docs): an errno returned by a send is
//!   never one.
//! - Each ICMP error also sets the socket's pending error, which makes the *next* send or
//!   receive fail once with its errno (ECONNREFUSED, ...), whatever that call was about.
//!   So a send that fails with any errno but EAGAIN drains the error queue (keeping the
//!   reports for `take_unreachable`) and retries the same message, at most
//!   `SEND_RETRIES` times. If it still fails, the error is taken to be about that
//!   message: it is skipped (all its packets, for a GSO message), counted by errno
//!   (`refused_by_errno`: EPERM from a firewall rule, EHOSTUNREACH, ENOBUFS, EINVAL for
//!   UDP port 0, EMSGSIZE, ...), and the rest of the batch still goes. A failed receive
//!   likewise drains and receives again.
//! - EAGAIN (send buffer full) waits for room; after `SEND_STALL_LIMIT` without progress
//!   the rest of the batch is dropped and counted (`batches_stalled`, and its packets
//!   under EAGAIN). Send errors never fail the call: lost packets are for the protocol's
//!   loss recovery.
//!
//! The pieces shared with the raw transport (ICMP classification, the batched send loop,
//! the error-queue drain) live here too.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use homa_proto::engine::Unreachable;

use super::bpf::{bpf_stmt, LD_H_ABS, MOD_K, RET_A};
use super::sys::{self, QueuedError, RecvScratch, SendScratch};
use super::{Family, RecvBatch, SendBatch, SendCounters, TransportOptions, TransportStats};

/// Bytes of IPv4 header (no options) plus UDP header.
const V4_OVERHEAD: usize = 20 + 8;
/// Bytes of IPv6 header (no extensions) plus UDP header.
const V6_OVERHEAD: usize = 40 + 8;
/// The loopback MTU (Linux default).
const LOOPBACK_MTU: usize = 65536;
/// Largest IPv4 datagram (16-bit total length).
const IPV4_MAX_TOTAL: usize = 65535;
/// Largest Homa packet over IPv4 loopback: the IPv4 total-length limit, 65535 − 20 − 8
/// (the 65536-byte MTU is not the limit here).
pub(crate) const V4_LOOPBACK_MAX: usize = IPV4_MAX_TOTAL - V4_OVERHEAD;
/// Largest Homa packet over IPv6 loopback without fragmenting: MTU 65536 − 40 − 8.
/// (IPv6 could carry 65527 bytes of UDP payload, but only as fragments.)
pub(crate) const V6_LOOPBACK_MAX: usize = LOOPBACK_MTU - V6_OVERHEAD;
/// First automatic (client) Homa port.
pub(crate) const MIN_CLIENT_PORT: u16 = 32768;
/// Runs of packets at most this long may be merged into one GSO send (bigger packets
/// gain little: the per-packet cost is already amortised over many bytes).
const GSO_MAX_SEGMENT: usize = 9000;
/// Largest total payload of one GSO send (the kernel's limit is just under 64 KiB).
const GSO_MAX_BYTES: usize = 65000;
/// How long one wait for send-buffer room may take, and how long a send may go without
/// progress before giving up on the rest of the batch.
const SEND_WAIT: Duration = Duration::from_millis(10);
const SEND_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How often a message whose send failed with a (possibly stale) socket error is retried
/// before the error is taken to be about that message.
const SEND_RETRIES: u32 = 2;

/// What an ICMP report means for Homa (PROTOCOL.md 4.6), from the extended error's origin,
/// type and code. `None` for reports that are not about reachability (fragmentation
/// needed / packet too big, time exceeded, local errors).
pub(crate) fn classify(e: &QueuedError) -> Option<Unreachable> {
    match (e.origin?, e.icmp_type, e.icmp_code) {
        // ICMPv4 destination unreachable: port (3), protocol (2), fragmentation needed
        // (4, a path MTU report), any other code: host.
        (libc::SO_EE_ORIGIN_ICMP, 3, 3) => Some(Unreachable::Port),
        (libc::SO_EE_ORIGIN_ICMP, 3, 2) => Some(Unreachable::Protocol),
        (libc::SO_EE_ORIGIN_ICMP, 3, 4) => None,
        (libc::SO_EE_ORIGIN_ICMP, 3, _) => Some(Unreachable::Host),
        // ICMPv6 destination unreachable: port (4), any other code: host.
        (libc::SO_EE_ORIGIN_ICMP6, 1, 4) => Some(Unreachable::Port),
        (libc::SO_EE_ORIGIN_ICMP6, 1, _) => Some(Unreachable::Host),
        // ICMPv6 parameter problem, unrecognised next header: no Homa on that host.
        (libc::SO_EE_ORIGIN_ICMP6, 4, 1) => Some(Unreachable::Protocol),
        _ => None,
    }
}

/// Locks a mutex, ignoring poisoning (the data are scratch buffers and report lists,
/// valid whatever a panicking holder left).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The unspecified address of a family.
pub(crate) fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Receives one batch into `batch` without blocking; shared by both transports.
///
/// A pending socket error (an ICMP report) fails a receive once: `drain` moves the reports
/// aside and the receive is tried again (at most four times). `classify` turns datagram
/// `i` into (source, start, length) or drops it (counting why); it also gets the batch's
/// buffer, where datagram `i`'s slot starts at `i * batch.max_packet`. If every datagram
/// of a batch was dropped, the queue is read again, since it may hold more.
pub(crate) fn recv_batch(
    scratch: &mut RecvScratch,
    fd: RawFd,
    batch: &mut RecvBatch,
    ipv4_prefix: bool,
    mut drain: impl FnMut() -> io::Result<()>,
    mut classify: impl FnMut(&RecvScratch, &[u8], usize) -> Option<(IpAddr, usize, usize)>,
) -> io::Result<usize> {
    batch.packets.clear();
    let mut failures = 0;
    loop {
        // SAFETY: the scatter ranges are those given to `RecvBatch::set_scatter`, whose
        // contract keeps them writable and unreferenced until `clear_scatter`.
        let n = match unsafe {
            scratch.recv(
                fd,
                &mut batch.buf,
                batch.max_packet,
                batch.limit,
                ipv4_prefix,
                &batch.scatter,
            )
        } {
            Ok(n) => n,
            Err(e) => {
                drain()?;
                failures += 1;
                if failures > 4 {
                    return Err(e);
                }
                continue;
            }
        };
        for i in 0..n {
            if let Some(packet) = classify(scratch, &batch.buf, i) {
                batch.packets.push(packet);
            }
        }
        if n == 0 || !batch.packets.is_empty() || failures > 4 {
            return Ok(batch.packets.len());
        }
        failures += 1;
    }
}

/// How many random client ports to try before giving up.
const PORT_ATTEMPTS: usize = 256;

/// Tries `bind` on random client ports in 32768..=65535 until one is free (EADDRINUSE
/// means: try another); returns the port and what `bind` gave. `what` names a failed
/// attempt and `exhausted` the case where every try collided. Shared by both transports.
pub(crate) fn bind_random_client_port<T>(
    what: &'static str,
    exhausted: &'static str,
    mut bind: impl FnMut(u16) -> io::Result<T>,
) -> Result<(u16, T), crate::Error> {
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = MIN_CLIENT_PORT + (sys::random_u64() % 32768) as u16;
        match bind(port) {
            Ok(v) => return Ok((port, v)),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => last = Some(e),
            Err(e) => return Err(crate::Error::io(what, e)),
        }
    }
    Err(crate::Error::io(
        exhausted,
        last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EADDRINUSE)),
    ))
}

/// The send-side state: message headers, per message (first packet, count), and the
/// send counters (kept here because every send holds this state's mutex anyway).
#[derive(Debug)]
pub(crate) struct SendState {
    pub(crate) scratch: SendScratch,
    pub(crate) ranges: Vec<(usize, usize)>,
    pub(crate) counters: SendCounters,
}

impl SendState {
    pub(crate) fn new(capacity: usize) -> Self {
        SendState {
            scratch: SendScratch::new(capacity),
            ranges: Vec::with_capacity(capacity),
            counters: SendCounters::default(),
        }
    }
}

/// Adds to `out` the reports in `fd`'s error queue (draining it), skipping duplicates.
/// `port_of` gives the Homa destination port of an entry (`None`: not ours, skip).
pub(crate) fn drain_error_queue(
    fd: RawFd,
    out: &mut Vec<(SocketAddr, Unreachable)>,
    port_of: impl Fn(&QueuedError) -> Option<u16>,
) -> io::Result<()> {
    // Bounded: the queue is limited by the receive buffer, but new errors may keep
    // arriving while we drain.
    for _ in 0..4096 {
        let Some(e) = sys::recv_error(fd)? else {
            return Ok(());
        };
        let (Some(kind), Some(dest), Some(port)) = (classify(&e), e.dest, port_of(&e)) else {
            continue;
        };
        let report = (SocketAddr::new(dest.ip(), port), kind);
        if out.len() < MAX_PENDING && !out.contains(&report) {
            out.push(report);
        }
    }
    Ok(())
}

/// At most this many distinct reports are kept between two `take_unreachable` calls.
const MAX_PENDING: usize = 1024;

/// Whether a failed send of a GSO message may be the kernel refusing GSO itself (no
/// UDP GSO on the route, segment larger than the path MTU, ...).
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// Sends the messages in `b` (packet `ranges`: (first packet, count) per message),
/// handling partial sends, a full send buffer and refused messages, which are skipped and
/// counted in `counters` (see the module docs). Returns `Some(packet)` when a GSO message
/// starting at `packet` was refused: the caller turns GSO off and rebuilds from there.
/// `drain` moves the socket's error queue to the pending reports.
pub(crate) fn send_messages(
    fd: RawFd,
    b: &mut sys::SendBuilder<'_, '_>,
    ranges: &[(usize, usize)],
    counters: &mut SendCounters,
    drain: &dyn Fn() -> io::Result<()>,
) -> Option<usize> {
    let mut msg = 0;
    let mut retries = 0;
    let mut progress = Instant::now();
    while msg < b.len() {
        let e = match b.send(fd, msg) {
            Ok(k) => {
                msg += k.max(1);
                retries = 0;
                progress = Instant::now();
                continue;
            }
            Err(e) => e,
        };
        let (first, count) = ranges[msg];
        if count > 1 && gso_refused(&e) {
            return Some(first);
        }
        // Every send error is an OS error; EIO stands in should one not be.
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        if errno == libc::EAGAIN {
            // The send buffer is full: wait for room, unless it has been full too long
            // (or the wait itself fails). Then the rest of the batch is lost.
            let waited =
                progress.elapsed() <= SEND_STALL_LIMIT && sys::wait_writable(fd, SEND_WAIT).is_ok();
            if !waited {
                counters.stalled();
                counters.refused(libc::EAGAIN, ranges[msg..].iter().map(|r| r.1).sum());
                return None;
            }
            continue;
        }
        // A pending socket error (an ICMP report about an earlier packet, possibly to
        // another destination) fails the next send and is then cleared: fetch the
        // reports and retry the same message. (A failing drain only means fewer
        // reports: the retries are bounded either way.)
        let _ = drain();
        if retries < SEND_RETRIES {
            retries += 1;
            continue;
        }
        // The error is about this message: it is lost, like a packet dropped on the
        // wire, and the rest of the batch goes on.
        counters.refused(errno, count);
        msg += 1;
        retries = 0;
        progress = Instant::now();
    }
    None
}

/// Groups `packets[start..]` into messages: runs of up to 64 equal-size packets (the last
/// may be shorter) to one destination with one TOS become one GSO message when `gso`.
/// Packets of the wrong family are skipped (and, if `first`, i.e. on the batch's first
/// build, reported and counted under EAFNOSUPPORT).
#[allow(clippy::too_many_arguments)]
fn build<'d>(
    b: &mut sys::SendBuilder<'_, 'd>,
    ranges: &mut Vec<(usize, usize)>,
    family: Family,
    batch: &'d SendBatch,
    start: usize,
    gso: bool,
    reports: &mut Vec<(SocketAddr, Unreachable)>,
    counters: &mut SendCounters,
    first: bool,
) {
    let packets = &batch.packets;
    let mut i = start;
    while i < packets.len() {
        let (dest, tos, _, _) = packets[i];
        let len = batch.wire_len(i);
        if Family::of(dest.ip()) != family {
            // This socket cannot reach the other family at all.
            if first {
                counters.refused(libc::EAFNOSUPPORT, 1);
                if !reports.contains(&(dest, Unreachable::Host)) {
                    reports.push((dest, Unreachable::Host));
                }
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        if gso && len <= GSO_MAX_SEGMENT && len > 0 {
            let mut total = len;
            while i + n < packets.len() && n < sys::GSO_MAX_SEGMENTS {
                let (d, t, _, _) = packets[i + n];
                let l = batch.wire_len(i + n);
                if d != dest || t != tos || l > len || l == 0 || total + l > GSO_MAX_BYTES {
                    break;
                }
                total += l;
                n += 1;
                if l < len {
                    // A shorter packet can only end a run.
                    break;
                }
            }
        }
        let segment = if n > 1 { u16::try_from(len).ok() } else { None };
        let parts = (i..i + n)
            .flat_map(|k| {
                let (head, payload) = batch.parts(k);
                [head, payload]
            })
            .filter(|part| !part.is_empty());
        b.push(family, dest, tos, segment, parts);
        ranges.push((i, n));
        i += n;
    }
}

/// The UDP transport (see the module docs).
#[derive(Debug)]
pub(crate) struct UdpTransport {
    fd: OwnedFd,
    family: Family,
    port: u16,
    mtu: usize,
    send: Mutex<SendState>,
    recv: Mutex<RecvScratch>,
    /// Reports found while sending or receiving (a pending socket error made the call
    /// fail, so the error queue was drained), returned by the next `take_unreachable`.
    pending: Mutex<Vec<(SocketAddr, Unreachable)>>,
    /// Whether GSO sends are used (turned off for good if the kernel refuses one).
    gso: AtomicBool,
    /// Datagrams dropped because they did not fit a receive slot.
    truncated: AtomicU64,
    /// Datagrams dropped because their UDP source port was not their Homa `sport`.
    sport_mismatch: AtomicU64,
    /// A shard group's hold on its port (see `open_shards`), shared by its shards.
    _group: Option<Arc<OwnedFd>>,
}

impl UdpTransport {
    /// Opens the socket and binds it.
    ///
    /// Servers bind `options.port`. Clients need a port in 32768..=65535: Homa keeps
    /// 1..=32767 for servers (PROTOCOL.md 2.2; the engine treats the two ranges
    /// differently), and since the Homa port is the UDP port, the UDP port must be in
    /// the client range. Binding port 0 lets the kernel pick a free port from its
    /// ephemeral range (`net.ipv4.ip_local_port_range`, 32768..=60999 by default), which
    /// is fast and collision-free. If the range has been configured lower and the kernel
    /// picks a port below 32768, the socket is closed and random ports in 32768..=65535
    /// are tried instead.
    pub(crate) fn open(options: &TransportOptions) -> Result<Self, crate::Error> {
        let family = options.family;
        let fd = match options.port {
            Some(port) => {
                if port == 0 || port >= MIN_CLIENT_PORT {
                    return Err(crate::Error::invalid(
                        "port",
                        format!("server port {port} is outside 1..=32767"),
                    ));
                }
                let fd = Self::new_socket(options)?;
                sys::bind(fd.as_raw_fd(), SocketAddr::new(unspecified(family), port)).map_err(
                    |e| {
                        if e.raw_os_error() == Some(libc::EADDRINUSE) {
                            crate::Error::io(
                                "binding the Homa server port: the UDP port is already in use \
                                 (another socket is bound to it)",
                                e,
                            )
                        } else {
                            crate::Error::io("binding the UDP socket to the Homa server port", e)
                        }
                    },
                )?;
                fd
            }
            None => Self::bind_client(options)?,
        };
        Self::from_fd(fd, options)
    }

    /// The transport around a bound socket.
    fn from_fd(fd: OwnedFd, options: &TransportOptions) -> Result<Self, crate::Error> {
        let port = sys::local_addr(fd.as_raw_fd())
            .map_err(|e| crate::Error::io("reading the UDP socket's port", e))?
            .port();
        Ok(UdpTransport {
            fd,
            family: options.family,
            port,
            mtu: options.mtu,
            send: Mutex::new(SendState::new(64)),
            recv: Mutex::new(RecvScratch::new(64)),
            pending: Mutex::new(Vec::new()),
            gso: AtomicBool::new(true),
            truncated: AtomicU64::new(0),
            sport_mismatch: AtomicU64::new(0),
            _group: None,
        })
    }

    /// Opens `shards` sockets on server port `options.port` as one `SO_REUSEPORT` group
    /// (the transports of a sharded socket, `SocketConfig::shards`). A reuseport program sends each datagram to the socket of index
    /// (its Homa source port, the first two bytes of its payload) mod `shards`, so all
    /// the packets of a client port (each of its RPCs, every packet type) reach the same
    /// shard, and the responses to a request sent to server port `p` reach shard
    /// `p % shards`. A socket without `SO_REUSEPORT` cannot bind the port; so that
    /// another homa-rs shard group (which sets it) cannot join this one, the group holds
    /// the abstract Unix name `homa-rs/udp-shard-group/<v4|v6>/<port>` for its life
    /// (as raw-IP sockets reserve their port). A foreign program of the same user that
    /// sets `SO_REUSEPORT` could still join and receive a share.
    pub(crate) fn open_shards(
        options: &TransportOptions,
        shards: u16,
    ) -> Result<Vec<Self>, crate::Error> {
        let port = match options.port {
            Some(p) if (1..MIN_CLIENT_PORT).contains(&p) => p,
            other => {
                return Err(crate::Error::invalid(
                    "port",
                    format!("a sharded port must be a server port in 1..=32767, not {other:?}"),
                ))
            }
        };
        if !(1..=256).contains(&shards) {
            return Err(crate::Error::invalid(
                "shards",
                format!("{shards} is out of range: allowed 1..=256"),
            ));
        }
        let family = match options.family {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        let name = format!("homa-rs/udp-shard-group/{family}/{port}");
        let group = Arc::new(sys::bind_abstract(name.as_bytes()).map_err(|e| {
            crate::Error::io(
                "reserving the port for a shard group (abstract Unix socket)",
                e,
            )
        })?);
        let mut fds = Vec::with_capacity(usize::from(shards));
        for _ in 0..shards {
            let fd = Self::new_socket(options)?;
            sys::set_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
                .map_err(|e| crate::Error::io("setting SO_REUSEPORT on a shard's socket", e))?;
            sys::bind(
                fd.as_raw_fd(),
                SocketAddr::new(unspecified(options.family), port),
            )
            .map_err(|e| crate::Error::io("binding a shard's socket to the server port", e))?;
            fds.push(fd);
        }
        let program = [
            bpf_stmt(LD_H_ABS, 0),
            bpf_stmt(MOD_K, u32::from(shards)),
            bpf_stmt(RET_A, 0),
        ];
        if let Some(first) = fds.first() {
            sys::attach_reuseport_program(first.as_raw_fd(), &program)
                .map_err(|e| crate::Error::io("attaching the shards' reuseport program", e))?;
        }
        fds.into_iter()
            .map(|fd| {
                let mut shard = Self::from_fd(fd, options)?;
                shard._group = Some(group.clone());
                Ok(shard)
            })
            .collect()
    }

    /// A configured, unbound socket.
    fn new_socket(options: &TransportOptions) -> Result<OwnedFd, crate::Error> {
        let context = match options.family {
            Family::V4 => "opening an IPv4 UDP socket",
            Family::V6 => "opening an IPv6 UDP socket",
        };
        let fd = sys::socket(options.family, libc::SOCK_DGRAM, 0)
            .map_err(|e| crate::Error::io(context, e))?;
        let raw = fd.as_raw_fd();
        match options.family {
            Family::V4 => sys::set_option(raw, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
                .map_err(|e| crate::Error::io("enabling IP_RECVERR (ICMP error reports)", e))?,
            Family::V6 => {
                sys::set_option(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)
                    .map_err(|e| crate::Error::io("setting IPV6_V6ONLY", e))?;
                sys::set_option(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1).map_err(|e| {
                    crate::Error::io("enabling IPV6_RECVERR (ICMP error reports)", e)
                })?;
            }
        }
        sys::set_buffer_sizes(raw, options.socket_buffer);
        Ok(fd)
    }

    /// A socket bound to a client port (see [`open`](Self::open)).
    fn bind_client(options: &TransportOptions) -> Result<OwnedFd, crate::Error> {
        let any = unspecified(options.family);
        let fd = Self::new_socket(options)?;
        sys::bind(fd.as_raw_fd(), SocketAddr::new(any, 0))
            .map_err(|e| crate::Error::io("binding the UDP socket to an automatic port", e))?;
        let port = sys::local_addr(fd.as_raw_fd())
            .map_err(|e| crate::Error::io("reading the UDP socket's port", e))?
            .port();
        if port >= MIN_CLIENT_PORT {
            return Ok(fd);
        }
        drop(fd);
        let fd = Self::new_socket(options)?;
        bind_random_client_port(
            "binding the UDP socket to a client port",
            "finding a free UDP port in 32768..=65535 for a Homa client",
            |port| sys::bind(fd.as_raw_fd(), SocketAddr::new(any, port)),
        )?;
        Ok(fd)
    }

    /// The Homa (= UDP) port.
    pub(crate) fn local_port(&self) -> u16 {
        self.port
    }

    /// Largest Homa packets: non-loopback IPv4 and IPv6 paths (`mtu` minus IP and UDP
    /// headers) and loopback (65507 over IPv4, 65488 over IPv6).
    pub(crate) fn max_packets(&self) -> (usize, usize, usize) {
        let loopback = match self.family {
            Family::V4 => V4_LOOPBACK_MAX,
            Family::V6 => V6_LOOPBACK_MAX,
        };
        (
            self.mtu.saturating_sub(V4_OVERHEAD),
            self.mtu.saturating_sub(V6_OVERHEAD),
            loopback,
        )
    }

    /// Sends the batch: one `sendmmsg` (more if the kernel takes only part of it).
    /// Refused packets are skipped and counted; returns the wrong-family reports.
    pub(crate) fn send(&self, batch: &SendBatch) -> Vec<(SocketAddr, Unreachable)> {
        let mut reports = Vec::new();
        let mut guard = lock(&self.send);
        let st = &mut *guard;
        let fd = self.fd.as_raw_fd();
        let drain = || self.drain_to_pending();
        let mut start = 0;
        let mut first_build = true;
        loop {
            let gso = self.gso.load(Ordering::Relaxed);
            let mut b = st.scratch.builder();
            st.ranges.clear();
            build(
                &mut b,
                &mut st.ranges,
                self.family,
                batch,
                start,
                gso,
                &mut reports,
                &mut st.counters,
                first_build,
            );
            first_build = false;
            match send_messages(fd, &mut b, &st.ranges, &mut st.counters, &drain) {
                None => return reports,
                Some(refused) => {
                    // The kernel refused GSO: send the rest one packet per datagram.
                    self.gso.store(false, Ordering::Relaxed);
                    start = refused;
                }
            }
        }
    }

    /// Moves the socket's error queue into the pending reports.
    fn drain_to_pending(&self) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        drain_error_queue(self.fd.as_raw_fd(), &mut pending, |e| {
            e.dest.map(|d| d.port())
        })
    }

    /// Receives what is queued (one `recvmmsg`), without blocking.
    pub(crate) fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let slot = batch.max_packet;
        let mut scratch = lock(&self.recv);
        recv_batch(
            &mut scratch,
            self.fd.as_raw_fd(),
            batch,
            false,
            || self.drain_to_pending(),
            |scratch, buf, i| {
                let r = scratch.received(i);
                if r.truncated || r.len > slot {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                let src = r.source?;
                let at = i * slot;
                // The source port rule (module docs). The first bytes are in the slot
                // even when the rest was scattered; in bounds, as 2 <= r.len <= slot.
                if r.len >= 2 && u16::from_be_bytes([buf[at], buf[at + 1]]) != src.port() {
                    self.sport_mismatch.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some((src.ip(), at, r.len))
            },
        )
    }

    /// Reports of ICMP errors about packets this socket sent (and reports found while
    /// sending or receiving).
    pub(crate) fn take_unreachable(&self) -> io::Result<Vec<(SocketAddr, Unreachable)>> {
        let mut out = std::mem::take(&mut *lock(&self.pending));
        drain_error_queue(self.fd.as_raw_fd(), &mut out, |e| e.dest.map(|d| d.port()))?;
        Ok(out)
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> TransportStats {
        let mut stats = lock(&self.send).counters.snapshot();
        stats.truncated = self.truncated.load(Ordering::Relaxed);
        stats.sport_mismatch = self.sport_mismatch.load(Ordering::Relaxed);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::sys::test_util::{
        enable_recv_tos, inject_icmp, raw_ip_allowed, recv_with_tos, OutputRule,
    };
    use crate::transport::TransportKind;

    fn options(family: Family, port: Option<u16>) -> TransportOptions {
        TransportOptions {
            kind: TransportKind::Udp,
            family,
            port,
            mtu: 1500,
            socket_buffer: 4 << 20,
        }
    }

    fn client(family: Family) -> UdpTransport {
        UdpTransport::open(&options(family, None)).expect("opening a client transport")
    }

    /// A server on some free port in 1..=32767.
    fn server(family: Family) -> UdpTransport {
        for _ in 0..100 {
            let port = 10_000 + (sys::random_u64() % 22_000) as u16;
            if let Ok(t) = UdpTransport::open(&options(family, Some(port))) {
                return t;
            }
        }
        panic!("no free server port");
    }

    /// A packet of `len` bytes whose content identifies it, from Homa port `sport` (in
    /// its first two bytes, as in a Homa header, if it has two).
    fn packet(sport: u16, id: u8, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(id))
            .collect();
        if let Some(head) = p.get_mut(..2) {
            head.copy_from_slice(&sport.to_be_bytes());
        }
        p
    }

    /// Receives until `count` datagrams have arrived (waiting with a timeout).
    fn receive(t: &UdpTransport, max_packet: usize, count: usize) -> Vec<(IpAddr, Vec<u8>)> {
        let mut batch = RecvBatch::new(max_packet, 8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "received only {} of {count}", got.len());
            sys::wait_readable(t.raw_fd(), -1, Some(left)).unwrap();
            let n = t.recv(&mut batch).unwrap();
            assert_eq!(n, batch.packets.len());
            got.extend(batch.iter().map(|(from, p)| (from, p.to_vec())));
        }
        got
    }

    /// Sends `packets` (TOS, bytes) from `from` to `to` in one batch.
    fn send(
        from: &UdpTransport,
        to: SocketAddr,
        packets: &[(u8, Vec<u8>)],
    ) -> Vec<(SocketAddr, Unreachable)> {
        from.send(&SendBatch::of(to, packets))
    }

    fn roundtrip(family: Family) {
        let server = server(family);
        let client = client(family);
        let sport = client.local_port();
        let loopback_max = client.max_packets().2;
        let to = SocketAddr::new(family.loopback(), server.local_port());
        let sizes = [
            28,
            1,
            100,
            1000,
            1000,
            1000,
            999,
            1472,
            9000,
            30_000,
            loopback_max,
        ];
        let packets: Vec<(u8, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (((i % 8) as u8) << 5, packet(sport, i as u8, len)))
            .collect();
        assert!(send(&client, to, &packets).is_empty());
        let got = receive(&server, loopback_max, packets.len());
        let mut got_bytes: Vec<Vec<u8>> = got.iter().map(|g| g.1.clone()).collect();
        let mut sent: Vec<Vec<u8>> = packets.into_iter().map(|p| p.1).collect();
        got_bytes.sort();
        sent.sort();
        assert_eq!(got_bytes, sent);
        assert!(got.iter().all(|g| g.0 == family.loopback()));
        assert_eq!(server.stats(), TransportStats::default());
    }

    #[test]
    fn udp_v4_batch_roundtrip() {
        roundtrip(Family::V4);
    }

    #[test]
    fn udp_v6_batch_roundtrip() {
        roundtrip(Family::V6);
    }

    fn tos_is_set(family: Family) {
        let server = server(family);
        let client = client(family);
        let sport = client.local_port();
        enable_recv_tos(server.raw_fd(), family);
        let to = SocketAddr::new(family.loopback(), server.local_port());
        let packets: Vec<(u8, Vec<u8>)> = (0..8u8)
            .map(|level| (level << 5, packet(sport, level, 40)))
            .collect();
        assert!(send(&client, to, &packets).is_empty());
        let mut seen = Vec::new();
        let mut buf = vec![0; 100];
        while seen.len() < 8 {
            sys::wait_readable(server.raw_fd(), -1, Some(Duration::from_secs(5))).unwrap();
            let (len, from, tos) = recv_with_tos(server.raw_fd(), &mut buf).unwrap();
            assert_eq!(len, 40);
            assert_eq!(from.unwrap().port(), client.local_port());
            // The content says which level it was sent with.
            let level = packets.iter().position(|p| p.1 == buf[..len]).unwrap() as u8;
            assert_eq!(tos, Some(level << 5), "level {level}");
            seen.push(level);
        }
    }

    #[test]
    fn udp_v4_tos_is_set_per_packet() {
        tos_is_set(Family::V4);
    }

    #[test]
    fn udp_v6_traffic_class_is_set_per_packet() {
        tos_is_set(Family::V6);
    }

    #[test]
    fn udp_client_ports_are_automatic_ports() {
        for family in [Family::V4, Family::V6] {
            let a = client(family);
            let b = client(family);
            assert!(a.local_port() >= MIN_CLIENT_PORT);
            assert!(b.local_port() >= MIN_CLIENT_PORT);
            assert_ne!(a.local_port(), b.local_port());
        }
    }

    #[test]
    fn udp_server_port_taken_twice_fails_clearly() {
        for family in [Family::V4, Family::V6] {
            let a = server(family);
            let err = UdpTransport::open(&options(family, Some(a.local_port()))).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("already in use"), "{text}");
            let err = UdpTransport::open(&options(family, Some(40_000))).unwrap_err();
            assert!(err.to_string().contains("1..=32767"), "{err}");
        }
    }

    #[test]
    fn udp_buffers_are_sized() {
        let t = client(Family::V4);
        let rcv = sys::get_option(t.raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap();
        // The kernel reports double the size asked for (root: SO_RCVBUFFORCE works).
        assert!(rcv as usize >= 4 << 20, "SO_RCVBUF = {rcv}");
    }

    /// A UDP port nobody listens on (bound and closed again).
    fn dead_port(family: Family) -> SocketAddr {
        let t = client(family);
        SocketAddr::new(family.loopback(), t.local_port())
    }

    /// Waits until `t` has reports (via wait + take_unreachable) or 5 s pass.
    fn wait_reports(
        t: &UdpTransport,
        mut reports: Vec<(SocketAddr, Unreachable)>,
    ) -> Vec<(SocketAddr, Unreachable)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while reports.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            sys::wait_readable(t.raw_fd(), -1, Some(left)).unwrap();
            reports.extend(t.take_unreachable().unwrap());
        }
        reports
    }

    fn port_unreachable(family: Family) {
        let client = client(family);
        let sport = client.local_port();
        let dead = dead_port(family);
        let sent = send(&client, dead, &[(0xE0, packet(sport, 1, 100))]);
        let reports = wait_reports(&client, sent);
        assert_eq!(reports, vec![(dead, Unreachable::Port)]);
        assert!(client.take_unreachable().unwrap().is_empty());
    }

    #[test]
    fn udp_v4_port_unreachable_is_reported() {
        port_unreachable(Family::V4);
    }

    #[test]
    fn udp_v6_port_unreachable_is_reported() {
        port_unreachable(Family::V6);
    }

    /// An ICMP report pending on the socket fails the next send or receive once; it must
    /// be blamed on the right destination and must not lose packets to other ones.
    fn pending_error_not_blamed_on_others(family: Family) {
        let client = client(family);
        let sport = client.local_port();
        let server = server(family);
        let dead = dead_port(family);
        let live = SocketAddr::new(family.loopback(), server.local_port());
        let mut reports = Vec::new();
        for round in 0..5u8 {
            reports.extend(send(&client, dead, &[(0, packet(sport, round, 50))]));
            // Let the ICMP error arrive (a blocking wait, not a sleep).
            sys::wait_readable(client.raw_fd(), -1, Some(Duration::from_secs(5))).unwrap();
            let mut batch = RecvBatch::new(100, 4);
            if round % 2 == 1 {
                // The receive meets the pending error: it keeps the report for later.
                assert_eq!(client.recv(&mut batch).unwrap(), 0);
            }
            // Otherwise the send does: it must retry, not blame `live`.
            reports.extend(send(&client, live, &[(0, packet(sport, round, 60))]));
            let got = receive(&server, 100, 1);
            assert_eq!(got[0].1, packet(sport, round, 60));
            assert_eq!(client.recv(&mut batch).unwrap(), 0);
        }
        reports.extend(client.take_unreachable().unwrap());
        assert!(!reports.is_empty());
        assert!(
            reports.iter().all(|r| *r == (dead, Unreachable::Port)),
            "{reports:?}"
        );
    }

    #[test]
    fn udp_v4_pending_error_is_not_blamed_on_other_destinations() {
        pending_error_not_blamed_on_others(Family::V4);
    }

    #[test]
    fn udp_v6_pending_error_is_not_blamed_on_other_destinations() {
        pending_error_not_blamed_on_others(Family::V6);
    }

    /// ICMP host and protocol unreachable (forged on loopback with a raw ICMP socket,
    /// quoting a packet this transport sent) become Host and Protocol reports.
    fn icmp_kinds(family: Family) {
        // Forging ICMP errors takes a raw socket.
        if !raw_ip_allowed() {
            return;
        }
        let client = client(family);
        let dest = SocketAddr::new(family.loopback(), 4321);
        let cases: &[(u8, u8, Unreachable)] = match family {
            Family::V4 => &[
                (3, 1, Unreachable::Host),
                (3, 2, Unreachable::Protocol),
                (3, 13, Unreachable::Host),
            ],
            Family::V6 => &[
                (1, 3, Unreachable::Host),
                (1, 0, Unreachable::Host),
                (4, 1, Unreachable::Protocol),
            ],
        };
        for &(ty, code, kind) in cases {
            let udp = [
                (client.local_port() >> 8) as u8,
                client.local_port() as u8,
                (dest.port() >> 8) as u8,
                dest.port() as u8,
                0,
                16,
                0,
                0,
            ];
            inject_icmp(family, ty, code, libc::IPPROTO_UDP as u8, &udp);
            let reports = wait_reports(&client, Vec::new());
            assert_eq!(reports, vec![(dest, kind)], "ICMP type {ty} code {code}");
        }
    }

    #[test]
    fn udp_v4_icmp_kinds_are_mapped() {
        icmp_kinds(Family::V4);
    }

    #[test]
    fn udp_v6_icmp_kinds_are_mapped() {
        icmp_kinds(Family::V6);
    }

    #[test]
    fn udp_oversize_datagrams_are_dropped_and_counted() {
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let client = client(family);
            let sport = client.local_port();
            let to = SocketAddr::new(family.loopback(), server.local_port());
            let packets = [
                (0, packet(sport, 1, 200)),
                (0, packet(sport, 2, 50)),
                (0, packet(sport, 3, 100)),
            ];
            assert!(send(&client, to, &packets).is_empty());
            let got = receive(&server, 100, 2);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].1, packet(sport, 2, 50));
            assert_eq!(got[1].1, packet(sport, 3, 100));
            assert_eq!(server.stats().truncated, 1);
        }
    }

    /// The loopback maxima are exact: one byte more does not fit an unfragmented packet.
    #[test]
    fn udp_loopback_maxima_are_exact() {
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let client = client(family);
            let sport = client.local_port();
            if family == Family::V6 {
                // Without this, IPv6 would send larger datagrams as fragments.
                sys::set_option(client.raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)
                    .unwrap();
            }
            let max = client.max_packets().2;
            let to = SocketAddr::new(family.loopback(), server.local_port());
            assert!(send(&client, to, &[(0, packet(sport, 1, max))]).is_empty());
            assert_eq!(receive(&server, max, 1)[0].1.len(), max);
            // One byte more is refused (and counted), not sent as fragments.
            assert!(send(&client, to, &[(0, packet(sport, 1, max + 1))]).is_empty());
            let refused = client.stats().refused_by_errno;
            assert_eq!(refused, [(libc::EMSGSIZE, 1)].into(), "{family:?}");
        }
        assert_eq!(V4_LOOPBACK_MAX, 65507);
        assert_eq!(V6_LOOPBACK_MAX, 65488);
    }

    #[test]
    fn udp_gso_runs_arrive_as_separate_datagrams() {
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let client = client(family);
            let sport = client.local_port();
            let to = SocketAddr::new(family.loopback(), server.local_port());
            let mut packets: Vec<(u8, Vec<u8>)> =
                (0..70u8).map(|i| (0x40, packet(sport, i, 1200))).collect();
            packets.push((0x40, packet(sport, 200, 300)));
            packets.push((0x60, packet(sport, 201, 1200)));
            assert!(send(&client, to, &packets).is_empty());
            assert!(client.gso.load(Ordering::Relaxed), "the kernel refused GSO");
            let got = receive(&server, 2000, packets.len());
            let got: Vec<Vec<u8>> = got.into_iter().map(|g| g.1).collect();
            let sent: Vec<Vec<u8>> = packets.into_iter().map(|p| p.1).collect();
            assert_eq!(got, sent);
        }
    }

    #[test]
    fn udp_wrong_family_destination_is_reported_not_sent() {
        let client = client(Family::V4);
        let server = server(Family::V4);
        let v6: SocketAddr = "[::1]:1000".parse().unwrap();
        let live = SocketAddr::new(Family::V4.loopback(), server.local_port());
        let sport = client.local_port();
        let batch = SendBatch::of_many(&[
            (v6, 0, packet(sport, 1, 50)),
            (live, 0, packet(sport, 2, 60)),
        ]);
        assert_eq!(client.send(&batch), vec![(v6, Unreachable::Host)]);
        assert_eq!(receive(&server, 100, 1)[0].1.len(), 60);
        let stats = client.stats();
        assert_eq!(stats.refused_by_errno, [(libc::EAFNOSUPPORT, 1)].into());
        assert_eq!(stats.packets_refused, 1);
    }

    /// The address of a transport's Homa port on loopback.
    fn addr_of(t: &UdpTransport, family: Family) -> SocketAddr {
        SocketAddr::new(family.loopback(), t.local_port())
    }

    /// Receives exactly the packets of `expected` on `server` (in any order), each once.
    fn receive_exactly(server: &UdpTransport, expected: &[Vec<u8>]) {
        let max = expected.iter().map(Vec::len).max().unwrap_or(1);
        let mut got: Vec<Vec<u8>> = receive(server, max, expected.len())
            .into_iter()
            .map(|g| g.1)
            .collect();
        let mut expected = expected.to_vec();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }

    /// A batch to three live servers (runs of equal packets, which become GSO sends) with,
    /// in the middle, one packet to UDP port 0, which the kernel refuses (EINVAL): only
    /// that packet is lost, and it is counted, not reported.
    fn refused_packet_costs_only_itself(family: Family) {
        let client = client(family);
        let sport = client.local_port();
        let servers = [server(family), server(family), server(family)];
        let port0 = SocketAddr::new(family.loopback(), 0);
        let plan: [(Option<usize>, usize); 6] = [
            (Some(0), 3),
            (Some(1), 2),
            (None, 1),
            (Some(1), 2),
            (Some(2), 3),
            (Some(0), 1),
        ];
        let mut packets = Vec::new();
        let mut expected = vec![Vec::new(); servers.len()];
        for (to, count) in plan {
            for _ in 0..count {
                let p = packet(sport, packets.len() as u8, 500);
                let dest = match to {
                    Some(k) => {
                        expected[k].push(p.clone());
                        addr_of(&servers[k], family)
                    }
                    None => port0,
                };
                packets.push((dest, 0x20, p));
            }
        }
        assert!(client.send(&SendBatch::of_many(&packets)).is_empty());
        for (server, expected) in servers.iter().zip(&expected) {
            receive_exactly(server, expected);
        }
        let stats = client.stats();
        assert_eq!(
            stats.refused_by_errno,
            [(libc::EINVAL, 1)].into(),
            "{stats:?}"
        );
        assert_eq!((stats.packets_refused, stats.batches_stalled), (1, 0));
        assert!(client.take_unreachable().unwrap().is_empty());
        // A refused single packet is not a GSO refusal.
        assert!(client.gso.load(Ordering::Relaxed));
    }

    #[test]
    fn udp_v4_a_refused_packet_costs_only_itself() {
        refused_packet_costs_only_itself(Family::V4);
    }

    #[test]
    fn udp_v6_a_refused_packet_costs_only_itself() {
        refused_packet_costs_only_itself(Family::V6);
    }

    /// A firewall rule dropping the packets to one server (netfilter makes the send fail
    /// with EPERM) loses those packets only: counted, not reported as unreachable.
    fn firewall_eperm_is_loss(family: Family) {
        let blocked = server(family);
        let live = server(family);
        let client = client(family);
        let sport = client.local_port();
        let port = blocked.local_port().to_string();
        let Some(rule) = OutputRule::insert(family, &["-p", "udp", "--dport", &port, "-j", "DROP"])
        else {
            return;
        };
        let mut packets = Vec::new();
        let mut expected = Vec::new();
        // A GSO run and single packets to the blocked server, between packets to the
        // live one.
        for (k, (to_blocked, len)) in [(false, 300), (true, 400), (true, 400), (true, 400)]
            .into_iter()
            .chain([(false, 300), (true, 200), (false, 100), (false, 100)])
            .enumerate()
        {
            let p = packet(sport, k as u8, len);
            let dest = if to_blocked {
                addr_of(&blocked, family)
            } else {
                expected.push(p.clone());
                addr_of(&live, family)
            };
            packets.push((dest, 0, p));
        }
        let reports = client.send(&SendBatch::of_many(&packets));
        drop(rule);
        assert!(reports.is_empty(), "{reports:?}");
        receive_exactly(&live, &expected);
        let stats = client.stats();
        assert_eq!(
            stats.refused_by_errno,
            [(libc::EPERM, 4)].into(),
            "{stats:?}"
        );
        assert_eq!(stats.packets_refused, 4);
        assert!(client.take_unreachable().unwrap().is_empty());
        // Nothing got through to the blocked server.
        let mut batch = RecvBatch::new(1000, 8);
        assert_eq!(blocked.recv(&mut batch).unwrap(), 0);
    }

    #[test]
    fn udp_v4_a_firewall_eperm_is_loss_not_unreachable() {
        firewall_eperm_is_loss(Family::V4);
    }

    #[test]
    fn udp_v6_a_firewall_eperm_is_loss_not_unreachable() {
        firewall_eperm_is_loss(Family::V6);
    }

    /// The source port rule: a datagram whose UDP source port is not its Homa `sport` is
    /// dropped and counted; one that agrees, or is too short to say, is delivered.
    #[test]
    fn udp_datagram_whose_source_port_differs_from_sport_is_dropped() {
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let sender = std::net::UdpSocket::bind(SocketAddr::new(family.loopback(), 0))
                .expect("binding a plain UDP socket");
            let own = sender.local_addr().unwrap().port();
            let to = addr_of(&server, family);
            let wrong = packet(own.wrapping_add(1), 1, 40);
            let tiny = vec![7u8];
            let right = packet(own, 2, 40);
            for p in [&wrong, &tiny, &right] {
                sender.send_to(p, to).unwrap();
            }
            // Datagrams from one socket arrive in order: by the time `right` is in, `wrong`
            // was seen and dropped.
            let got: Vec<Vec<u8>> = receive(&server, 100, 2).into_iter().map(|g| g.1).collect();
            assert_eq!(got, vec![tiny, right], "{family:?}");
            let stats = server.stats();
            assert_eq!(stats.sport_mismatch, 1, "{family:?}: {stats:?}");
            assert_eq!(stats.truncated, 0);
            let mut batch = RecvBatch::new(100, 8);
            assert_eq!(server.recv(&mut batch).unwrap(), 0);
        }
    }

    /// A sharded server port: every datagram goes to the shard of its Homa source port
    /// mod the number of shards, and no other shard sees it; a socket without
    /// SO_REUSEPORT cannot take the port.
    #[test]
    fn udp_shards_split_a_port_by_the_senders_port() {
        for family in [Family::V4, Family::V6] {
            let (port, shards) = (0..100)
                .find_map(|_| {
                    let port = 10_000 + (sys::random_u64() % 22_000) as u16;
                    UdpTransport::open_shards(&options(family, Some(port)), 4)
                        .ok()
                        .map(|s| (port, s))
                })
                .expect("a free port for four shards");
            assert!(UdpTransport::open(&options(family, Some(port))).is_err());
            let to = SocketAddr::new(family.loopback(), port);
            let senders: Vec<std::net::UdpSocket> = (0..8)
                .map(|_| std::net::UdpSocket::bind(SocketAddr::new(family.loopback(), 0)).unwrap())
                .collect();
            let mut expected = vec![Vec::new(); 4];
            for (k, sender) in senders.iter().enumerate() {
                let own = sender.local_addr().unwrap().port();
                let p = packet(own, k as u8, 40);
                sender.send_to(&p, to).unwrap();
                expected[usize::from(own % 4)].push(p);
            }
            for (i, shard) in shards.iter().enumerate() {
                let mut got: Vec<Vec<u8>> = receive(shard, 100, expected[i].len())
                    .into_iter()
                    .map(|g| g.1)
                    .collect();
                got.sort();
                expected[i].sort();
                assert_eq!(got, expected[i], "{family:?}: shard {i}");
                let mut batch = RecvBatch::new(100, 8);
                assert_eq!(shard.recv(&mut batch).unwrap(), 0, "{family:?}: shard {i}");
            }
        }
    }

    #[test]
    fn icmp_classification() {
        let e = |origin, ty, code| QueuedError {
            dest: None,
            errno: 0,
            origin: Some(origin),
            icmp_type: ty,
            icmp_code: code,
            quoted: [0; sys::QUOTED],
            quoted_len: 0,
        };
        use libc::{SO_EE_ORIGIN_ICMP as V4, SO_EE_ORIGIN_ICMP6 as V6};
        assert_eq!(classify(&e(V4, 3, 3)), Some(Unreachable::Port));
        assert_eq!(classify(&e(V4, 3, 2)), Some(Unreachable::Protocol));
        assert_eq!(classify(&e(V4, 3, 1)), Some(Unreachable::Host));
        assert_eq!(classify(&e(V4, 3, 0)), Some(Unreachable::Host));
        assert_eq!(classify(&e(V4, 3, 4)), None);
        assert_eq!(classify(&e(V4, 11, 0)), None);
        assert_eq!(classify(&e(V6, 1, 4)), Some(Unreachable::Port));
        assert_eq!(classify(&e(V6, 1, 3)), Some(Unreachable::Host));
        assert_eq!(classify(&e(V6, 4, 1)), Some(Unreachable::Protocol));
        assert_eq!(classify(&e(V6, 2, 0)), None);
        assert_eq!(classify(&e(libc::SO_EE_ORIGIN_LOCAL, 0, 0)), None);
        let mut none = e(V4, 3, 3);
        none.origin = None;
        assert_eq!(classify(&none), None);
    }
}

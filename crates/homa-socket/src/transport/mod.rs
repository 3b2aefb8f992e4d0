//! How Homa packets reach the network: UDP (default, unprivileged) or raw IP protocol 146
//! (CAP_NET_RAW, byte-for-byte what the Linux module sends). Both carry the same Homa
//! packets, with the priority in the IP TOS / IPv6 Traffic Class (`level << 5`) of each
//! packet.
//!
//! The socket core talks to a transport only through this module's (crate-private)
//! types: it fills a `SendBatch` from the engine's `poll_transmit` and hands it to
//! `Transport::send`; it waits with `Transport::wait` and drains received datagrams with
//! `Transport::recv` into a `RecvBatch`, whose slots can scatter each datagram's payload
//! straight into the receive region where the engine predicts it belongs (direct
//! placement, `homa_proto::engine::Placement`).
//!
//! # Errors
//!
//! A send error costs one packet, never an RPC, and never the rest of its batch:
//!
//! - `Transport::send` does not fail. A packet the kernel refuses (a firewall rule:
//!   EPERM; no route: EHOSTUNREACH/ENETUNREACH; a full device queue: ENOBUFS; a
//!   destination it cannot send to at all: EINVAL, ...) is skipped, like a packet lost on
//!   the wire, and counted by errno in [`TransportStats`]; the rest of the batch still
//!   goes. The protocol's loss recovery resends what was skipped, or the RPC times out.
//! - An errno from a send is not evidence about the destination (it may be a stale
//!   error from an earlier ICMP report, or about the local host), so it never makes an
//!   [`Unreachable`] report. Reports, which make the engine fail every RPC to a peer,
//!   come only from ICMP errors queued on the socket (`IP_RECVERR` / `IPV6_RECVERR`),
//!   which `Transport::take_unreachable` returns (sends and receives that find the queue
//!   non-empty drain it and keep the reports for that call). The one exception is a
//!   destination of the other address family, which the socket cannot send to at all:
//!   `Transport::send` reports it as host unreachable (and counts it).
//! - If the kernel's send buffer stays full for a second, the rest of the batch is
//!   dropped (counted under EAGAIN and in [`TransportStats::batches_stalled`]).
//!
//! The receive side drops datagrams that cannot be Homa packets of the transport
//! (truncated, a malformed raw IPv4 header, a UDP source port that disagrees with the
//! Homa header) and counts them too; everything else goes to the engine, which checks
//! the Homa packet itself.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use homa_proto::engine::{Payload, Unreachable};

pub(crate) mod bpf;
pub(crate) mod raw;
pub(crate) mod sys;
pub(crate) mod udp;

/// Which encapsulation a socket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransportKind {
    /// The Homa packet is the UDP payload; the Homa port is the UDP port. Needs no
    /// privileges; talks only to other homa-rs sockets (PROTOCOL.md 8.2).
    #[default]
    Udp,
    /// Raw IP protocol 146, exactly as the Linux kernel module sends it (PROTOCOL.md
    /// 8.1): interoperates with `homa.ko` peers. Needs CAP_NET_RAW.
    RawIp,
}

/// The address family of a socket: it talks to peers of this family only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The loopback address of the family: 127.0.0.1 or ::1.
    ///
    /// ```
    /// use homa_socket::transport::Family;
    /// assert_eq!(Family::V6.loopback().to_string(), "::1");
    /// ```
    pub fn loopback(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }
}

/// A snapshot of a transport's counters: what it could not send and what it dropped on
/// receipt before the engine saw it (see [`Socket::transport_stats`]). The engine's own
/// counters are [`Socket::stats`].
///
/// Every counter counts from the socket's creation; none is ever reset.
///
/// [`Socket::transport_stats`]: crate::Socket::transport_stats
/// [`Socket::stats`]: crate::Socket::stats
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Packets not sent because the kernel refused them (a firewall rule, no route, a
    /// full device queue, an invalid destination, a send buffer that stayed full, ...):
    /// lost like packets dropped on the wire. The sum of
    /// [`refused_by_errno`](Self::refused_by_errno).
    pub packets_refused: u64,
    /// [`packets_refused`](Self::packets_refused) by the errno that refused them
    /// (`libc::EPERM`, ...; see [`std::io::Error::from_raw_os_error`]). A GSO send of
    /// several packets counts each. Packets dropped because the send buffer stayed full
    /// are under EAGAIN; packets to a destination of the other address family are under
    /// EAFNOSUPPORT.
    pub refused_by_errno: BTreeMap<i32, u64>,
    /// Batches whose rest was dropped because the kernel's send buffer stayed full for
    /// a second (their packets are counted under EAGAIN).
    pub batches_stalled: u64,
    /// Received datagrams dropped because they were larger than a receive slot (the
    /// engine's largest packet).
    pub truncated: u64,
    /// Received datagrams dropped because their IP header was impossible: an IPv4
    /// header that does not describe a protocol-146 packet of the length received (raw
    /// IP only; always 0 for UDP).
    pub malformed: u64,
    /// Received datagrams dropped because their UDP source port differs from the
    /// source port in their Homa header (UDP only; always 0 otherwise).
    pub sport_mismatch: u64,
}

/// Adds another transport's counters (a sharded socket reports the sum of its shards).
impl std::ops::AddAssign<&TransportStats> for TransportStats {
    fn add_assign(&mut self, other: &TransportStats) {
        // Destructured without `..`: a new counter must be added here to compile.
        let TransportStats {
            packets_refused,
            refused_by_errno,
            batches_stalled,
            truncated,
            malformed,
            sport_mismatch,
        } = other;
        self.packets_refused += packets_refused;
        for (errno, n) in refused_by_errno {
            *self.refused_by_errno.entry(*errno).or_insert(0) += n;
        }
        self.batches_stalled += batches_stalled;
        self.truncated += truncated;
        self.malformed += malformed;
        self.sport_mismatch += sport_mismatch;
    }
}

/// The send-side counters, kept under the send mutex (which every send holds anyway).
#[derive(Debug, Default)]
pub(crate) struct SendCounters {
    /// Packets refused, by errno.
    refused: BTreeMap<i32, u64>,
    batches_stalled: u64,
}

impl SendCounters {
    /// Counts `packets` packets refused with `errno`.
    pub(crate) fn refused(&mut self, errno: i32, packets: usize) {
        if packets > 0 {
            *self.refused.entry(errno).or_insert(0) += packets as u64;
        }
    }

    /// Counts a batch whose rest was dropped because the send buffer stayed full.
    pub(crate) fn stalled(&mut self) {
        self.batches_stalled += 1;
    }

    /// The send side of a snapshot (the receive counters are left 0).
    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            packets_refused: self.refused.values().sum(),
            refused_by_errno: self.refused.clone(),
            batches_stalled: self.batches_stalled,
            ..TransportStats::default()
        }
    }
}

/// How to open a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransportOptions {
    pub(crate) kind: TransportKind,
    pub(crate) family: Family,
    /// Server port (1..=32767) to bind, or `None` for an automatic client port in
    /// 32768..=65535.
    pub(crate) port: Option<u16>,
    /// MTU of non-loopback paths (loopback paths use 65536).
    pub(crate) mtu: usize,
    /// Socket receive and send buffer sizes to ask the kernel for (bytes).
    pub(crate) socket_buffer: usize,
}

/// Packets to send: each one's first bytes packed one after another in one buffer, and,
/// for DATA packets from `poll_transmit_split`, the payload shared with the engine's
/// message (sent as a second iovec: no copy).
#[derive(Debug)]
pub(crate) struct SendBatch {
    pub(crate) buf: Vec<u8>,
    /// (destination: IP and Homa port, TOS byte, start, length in `buf`) per packet.
    pub(crate) packets: Vec<(SocketAddr, u8, usize, usize)>,
    /// Per packet, the payload that follows its bytes in `buf`, if any.
    payloads: Vec<Option<Payload>>,
    max_packet: usize,
    capacity: usize,
}

impl SendBatch {
    /// Room for `capacity` packets of up to `max_packet` bytes.
    pub(crate) fn new(max_packet: usize, capacity: usize) -> Self {
        SendBatch {
            buf: vec![0; max_packet * capacity],
            packets: Vec::with_capacity(capacity),
            payloads: Vec::with_capacity(capacity),
            max_packet,
            capacity,
        }
    }
    /// Whether no more packets fit.
    pub(crate) fn is_full(&self) -> bool {
        self.packets.len() == self.capacity
    }
    /// Whether the batch holds no packets.
    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
    /// The buffer for the next packet (`max_packet` bytes).
    pub(crate) fn next_buf(&mut self) -> &mut [u8] {
        let at = self.packets.len() * self.max_packet;
        &mut self.buf[at..at + self.max_packet]
    }
    /// A batch of whole packets `(TOS, bytes)`, all to `to`.
    #[cfg(test)]
    pub(crate) fn of(to: SocketAddr, packets: &[(u8, Vec<u8>)]) -> SendBatch {
        let packets: Vec<_> = packets
            .iter()
            .map(|(tos, p)| (to, *tos, p.clone()))
            .collect();
        SendBatch::of_many(&packets)
    }
    /// A batch of whole packets `(destination, TOS, bytes)`.
    #[cfg(test)]
    pub(crate) fn of_many(packets: &[(SocketAddr, u8, Vec<u8>)]) -> SendBatch {
        let max = packets.iter().map(|p| p.2.len()).max().unwrap_or(1);
        let mut batch = SendBatch::new(max, packets.len());
        for (to, tos, bytes) in packets {
            batch.next_buf()[..bytes.len()].copy_from_slice(bytes);
            batch.commit(*to, *tos, bytes.len());
        }
        batch
    }
    /// Records that a whole packet of `len` bytes was written into
    /// [`next_buf`](Self::next_buf).
    #[cfg(test)]
    pub(crate) fn commit(&mut self, dest: SocketAddr, tos: u8, len: usize) {
        self.commit_split(dest, tos, len, None);
    }
    /// Records that a packet's first `len` bytes were written into
    /// [`next_buf`](Self::next_buf), followed on the wire by `payload`.
    pub(crate) fn commit_split(
        &mut self,
        dest: SocketAddr,
        tos: u8,
        len: usize,
        payload: Option<Payload>,
    ) {
        let at = self.packets.len() * self.max_packet;
        self.packets.push((dest, tos, at, len));
        self.payloads.push(payload);
    }
    /// Empties the batch (and lets go of the payloads).
    pub(crate) fn clear(&mut self) {
        self.packets.clear();
        self.payloads.clear();
    }
    /// Packet `i` as its bytes in the buffer and its payload (empty if none).
    pub(crate) fn parts(&self, i: usize) -> (&[u8], &[u8]) {
        let (_, _, at, len) = self.packets[i];
        let payload = self.payloads[i].as_ref().map_or(&[][..], |p| p.as_slice());
        (&self.buf[at..at + len], payload)
    }
    /// Length of packet `i` on the wire.
    pub(crate) fn wire_len(&self, i: usize) -> usize {
        let (head, payload) = self.parts(i);
        head.len() + payload.len()
    }
    /// The packets: (destination, TOS, first bytes, payload).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, u8, &[u8], &[u8])> + '_ {
        (0..self.packets.len()).map(|i| {
            let (d, t, _, _) = self.packets[i];
            let (head, payload) = self.parts(i);
            (d, t, head, payload)
        })
    }
}

/// Received datagrams: room for `capacity` packets of up to `max_packet` bytes.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    pub(crate) buf: Vec<u8>,
    /// (source IP, start, length of the Homa packet) per datagram received.
    pub(crate) packets: Vec<(IpAddr, usize, usize)>,
    pub(crate) max_packet: usize,
    pub(crate) capacity: usize,
    /// How many datagrams the next receives may take (1..=capacity; see
    /// [`set_limit`](Self::set_limit)).
    pub(crate) limit: usize,
    /// Direct placement: per slot, where the bytes after the datagram's first
    /// [`SCATTER_HEAD`](sys::SCATTER_HEAD) go instead (see [`set_scatter`](Self::set_scatter)).
    scatter: Vec<sys::Scatter>,
}

impl RecvBatch {
    /// Room for `capacity` datagrams of up to `max_packet` bytes each.
    pub(crate) fn new(max_packet: usize, capacity: usize) -> Self {
        RecvBatch {
            buf: vec![0; max_packet * capacity],
            packets: Vec::with_capacity(capacity),
            max_packet,
            capacity,
            limit: capacity,
            scatter: Vec::with_capacity(capacity),
        }
    }

    /// Lets the next receives take at most `n` datagrams (clamped to 1..=capacity).
    pub(crate) fn set_limit(&mut self, n: usize) {
        self.limit = n.clamp(1, self.capacity);
    }
    /// The Homa packets received by the last [`Transport::recv`], with their source.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (IpAddr, &[u8])> + '_ {
        self.packets
            .iter()
            .map(|&(from, at, len)| (from, &self.buf[at..at + len]))
    }

    /// Makes the next receives scatter datagram `i`'s bytes after its header into the
    /// memory ranges `scatter[i]` (as `(address, length)`), keeping the rest in its slot
    /// after a gap of the ranges' length (see [`sys::RecvScratch::recv`]). A slot whose
    /// ranges and a header do not fit in a slot is received whole.
    ///
    /// # Safety
    ///
    /// Until [`clear_scatter`](Self::clear_scatter), every range must stay valid for
    /// writes and no Rust reference may cover it.
    pub(crate) unsafe fn set_scatter(&mut self, scatter: impl Iterator<Item = sys::Scatter>) {
        let room = self.max_packet;
        self.scatter.clear();
        self.scatter
            .extend(scatter.take(self.capacity).map(|ranges| {
                let total: usize = ranges.iter().map(|r| r.1).sum();
                if sys::SCATTER_HEAD + total <= room {
                    ranges
                } else {
                    sys::Scatter::default()
                }
            }));
    }

    /// Stops scattering: the next receives put each datagram whole in its slot.
    pub(crate) fn clear_scatter(&mut self) {
        self.scatter.clear();
    }

    /// The scatter ranges of slot `i` (empty if none).
    pub(crate) fn scatter(&self, i: usize) -> sys::Scatter {
        self.scatter.get(i).copied().unwrap_or_default()
    }
}

/// An open transport.
#[derive(Debug)]
pub(crate) enum Transport {
    Udp(udp::UdpTransport),
    Raw(raw::RawTransport),
}

impl Transport {
    /// Opens the transport. Errors say what failed (binding a port in use, a missing
    /// CAP_NET_RAW, ...).
    pub(crate) fn open(options: &TransportOptions) -> Result<Transport, crate::Error> {
        match options.kind {
            TransportKind::Udp => udp::UdpTransport::open(options).map(Transport::Udp),
            TransportKind::RawIp => raw::RawTransport::open(options).map(Transport::Raw),
        }
    }

    /// Opens `shards` transports that share one server port, each receiving the packets
    /// of the senders whose Homa source port is its index modulo `shards` (UDP only: a
    /// `SO_REUSEPORT` group steered by a classic BPF program).
    pub(crate) fn open_shards(
        options: &TransportOptions,
        shards: u16,
    ) -> Result<Vec<Transport>, crate::Error> {
        match options.kind {
            TransportKind::Udp => Ok(udp::UdpTransport::open_shards(options, shards)?
                .into_iter()
                .map(Transport::Udp)
                .collect()),
            TransportKind::RawIp => Err(crate::Error::invalid(
                "shards",
                "a sharded socket needs the UDP transport (raw IP sockets cannot share a port)",
            )),
        }
    }

    /// The socket's Homa port.
    pub(crate) fn local_port(&self) -> u16 {
        match self {
            Transport::Udp(t) => t.local_port(),
            Transport::Raw(t) => t.local_port(),
        }
    }

    /// Largest Homa packet to non-loopback IPv4 peers, IPv6 peers, and loopback peers.
    pub(crate) fn max_packets(&self) -> (usize, usize, usize) {
        match self {
            Transport::Udp(t) => t.max_packets(),
            Transport::Raw(t) => t.max_packets(),
        }
    }

    /// Sends every packet of `batch` (blocking briefly if the kernel's buffer is full).
    /// A packet the kernel refuses is skipped and counted (see the module docs); the
    /// rest still goes. Returns a host-unreachable report for each destination of the
    /// other address family (the only reports a send makes).
    pub(crate) fn send(&self, batch: &SendBatch) -> Vec<(SocketAddr, Unreachable)> {
        match self {
            Transport::Udp(t) => t.send(batch),
            Transport::Raw(t) => t.send(batch),
        }
    }

    /// A snapshot of the transport's counters.
    pub(crate) fn stats(&self) -> TransportStats {
        match self {
            Transport::Udp(t) => t.stats(),
            Transport::Raw(t) => t.stats(),
        }
    }

    /// Receives what is queued without blocking, into `batch` (replacing its contents).
    /// Returns the number of datagrams; 0 if none.
    pub(crate) fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        match self {
            Transport::Udp(t) => t.recv(batch),
            Transport::Raw(t) => t.recv(batch),
        }
    }

    /// Drains ICMP errors reported for packets this socket sent, as (destination,
    /// kind) pairs.
    pub(crate) fn take_unreachable(&self) -> io::Result<Vec<(SocketAddr, Unreachable)>> {
        match self {
            Transport::Udp(t) => t.take_unreachable(),
            Transport::Raw(t) => t.take_unreachable(),
        }
    }

    /// Blocks until a datagram or an error report is readable, `wake_fd` is readable,
    /// or `timeout` passes (`None` = no timeout).
    pub(crate) fn wait(&self, wake_fd: RawFd, timeout: Option<Duration>) -> io::Result<sys::Ready> {
        sys::wait_readable(self.raw_fd(), wake_fd, timeout)
    }

    /// The file descriptor to wait on (for async runtimes).
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Udp(t) => t.raw_fd(),
            Transport::Raw(t) => t.raw_fd(),
        }
    }
}

//! The raw IP transport: Homa packets directly in IP protocol 146, byte for byte what the
//! Linux module sends (PROTOCOL.md 8.1). Needs CAP_NET_RAW.
//!
//! - Sending: over IPv4 the socket writes the IP header itself (`IP_HDRINCL`, see
//!   `ipv4_header`: what the kernel would build, with the packet's priority in its TOS
//!   byte), because the kernel then copies a packet as it is, where for a header it
//!   builds it sums the payload while copying (measured: a 1 MB RTT over loopback went
//!   from 455 to 322 µs); over IPv6 the kernel builds the header and the priority travels
//!   as an `IPV6_TCLASS` control message. The Homa checksum (PROTOCOL.md 1.3) is computed
//!   over the packet's two parts where they are (`wire::fill_checksum_split`) and
//!   written into a copy of its first bytes (the batch is shared, read-only); to
//!   loopback only its seed is written, as on homa.ko's loopback packets (`fill_sum`);
//!   a DATA payload goes from the message's memory as a second iovec, as over UDP. The source address in the checksum is the one the
//!   kernel's routing picks for that destination (looked up once per destination and
//!   cached).
//! - Receiving: the kernel hands every protocol-146 packet that reaches this host to
//!   every protocol-146 raw socket: packets for other Homa ports, and, over loopback,
//!   the packets the socket itself sends (a loopback packet is delivered when it
//!   arrives, to every raw socket). So each socket carries a classic BPF socket filter
//!   (`SO_ATTACH_FILTER`, see `port_filter`) that keeps a packet only if its Homa
//!   destination port is the socket's; the kernel drops the rest before they are queued
//!   (no copy to user space, no wake-up). That is also all it takes against our own
//!   packets: one we send to another port fails the filter; one we send to our own port
//!   (a socket that is its own server) arrives exactly once, addressed to us, and must
//!   be received; there is no copy made on the way out. No other check is needed, and
//!   no packet a Homa peer addressed to us is dropped (interoperation with homa.ko is
//!   unchanged). Packets queued between the socket's creation and the filter (the
//!   socket receives from its creation) are discarded: the socket drops everything
//!   until it knows its port, then empties its queue, then attaches the port filter.
//!   The engine still checks the port of what it gets. IPv4 raw sockets deliver the IP
//!   header (the filter sees it too, and skips 4 × IHL bytes), which is stripped; IPv6
//!   raw sockets deliver, and filter, from the Homa header on. (The kernel still clones
//!   each packet for every raw socket of the protocol before running its filter.)
//! - Ports: Homa ports live inside the packet, so the OS knows nothing of them. Each
//!   transport reserves its port for its lifetime by binding a Unix socket to the
//!   abstract name `homa-rs/raw-ip-port/<port>`: two homa-rs raw-IP sockets in one
//!   network namespace (the scope of Homa ports, PROTOCOL.md 2.2), in one process or
//!   several, cannot use the same port; the second gets `Error::Io` with EADDRINUSE, as
//!   for a UDP port in use. Why an abstract Unix name rather than binding a UDP socket
//!   of the same number: abstract names belong to the network namespace like Homa
//!   ports, are one name for both IP versions (Homa has one port space; UDP has one per
//!   family unless dual-stack), cannot be taken by an unrelated program that happens to
//!   use that UDP port (which would make our bind fail), do not take the UDP port away
//!   from anyone (a homa-rs UDP socket may use the same number: it is a different
//!   encapsulation), and disappear when the process exits however it exits. Other Homa
//!   implementations on the host (homa.ko, which must not run alongside anyway) do not
//!   see the reservation. Clients pick random ports in 32768..=65535 until a
//!   reservation succeeds.
//! - ICMP errors: every protocol-146 raw socket gets the ICMP errors about every
//!   protocol-146 packet sent from the host (the socket filter does not apply to the
//!   error queue); a report is ours when the quoted Homa header's source port is our
//!   port, and its destination port tells which Homa port failed.
//!   These are the only [`Unreachable`] reports (see the parent module's docs).
//! - Send errors follow the UDP transport's rules (the send loop is shared): a message
//!   that still fails after draining the error queue and retrying is skipped and counted
//!   by errno (EPERM from a firewall rule, ...), the rest of the batch goes on, and a send
//!   buffer full for too long drops the rest of the batch. A destination whose source
//!   address cannot be looked up (no route: ENETUNREACH, EHOSTUNREACH; a broadcast
//!   address: EACCES, ...) cannot be sent to by the kernel either: its packets are
//!   skipped and counted by that errno, not reported (loss recovery or the RPC timeout
//!   deals with them). Only when the lookup fails for lack of local resources (out of
//!   descriptors or memory) does the packet go without a checksum, which no receiver
//!   verifies (PROTOCOL.md 1.3).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use homa_proto::engine::Unreachable;
use homa_proto::wire::{fill_checksum_seed, fill_checksum_split, IPPROTO_HOMA};

use super::bpf::{bpf_stmt, JEQ_K, LDX_B_MSH, LD_H_ABS, LD_H_IND, RET_K};
use super::sys::{self, QueuedError, RecvScratch, IPV4_HEADER_LEN};
use super::udp::{bind_random_client_port, drain_error_queue, lock, send_messages};
use super::udp::{recv_batch, SendState, MIN_CLIENT_PORT};
use super::{Family, RecvBatch, SendBatch, TransportOptions, TransportStats};

/// Largest IP datagram expressible in IPv4's total length / IPv6's payload length.
const IP_MAX: usize = 65535;
/// The loopback MTU (Linux default).
const LOOPBACK_MTU: usize = 65536;
/// Largest Homa packet over IPv4 loopback: 65535 − 20.
pub(crate) const V4_LOOPBACK_MAX: usize = IP_MAX - 20;
/// Largest Homa packet over IPv6 loopback without fragmenting: MTU 65536 − 40.
pub(crate) const V6_LOOPBACK_MAX: usize = LOOPBACK_MTU - 40;
/// Source addresses are looked up again after this long (routes change).
const SOURCE_TTL: Duration = Duration::from_secs(10);
/// At most this many destinations' source addresses are cached.
const SOURCE_CACHE_MAX: usize = 4096;
/// What a permission failure opening the socket says.
const NEEDS_CAP_NET_RAW: &str =
    "opening a raw IP socket for protocol 146 needs CAP_NET_RAW (run as root or grant the capability)";

/// What looking up the source address towards a destination gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The address the kernel uses.
    Found(IpAddr),
    /// The lookup failed for lack of local resources (out of descriptors or memory): the
    /// packet can still go, without a checksum, which no receiver verifies (PROTOCOL.md
    /// 1.3).
    Unknown,
    /// The kernel cannot send there (no route, a broadcast address, ...): this errno.
    Refused(i32),
}

impl Source {
    fn of(found: io::Result<IpAddr>) -> Source {
        match found {
            Ok(src) => Source::Found(src),
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Source::Unknown,
                errno => Source::Refused(errno.unwrap_or(libc::EIO)),
            },
        }
    }
}

/// The IPv4 header of a packet sent with `IP_HDRINCL`, as the kernel would build it for
/// a protocol-146 raw socket: no options, don't fragment, the system's TTL, the
/// packet's priority in the TOS byte. The kernel fills the total length, the
/// identification and the header checksum (left 0 here), and the source address when it
/// is 0 (unknown).
fn ipv4_header(tos: u8, ttl: u8, saddr: Ipv4Addr, daddr: Ipv4Addr) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[1] = tos;
    h[6] = 0x40; // DF
    h[8] = ttl;
    h[9] = IPPROTO_HOMA;
    h[12..16].copy_from_slice(&saddr.octets());
    h[16..20].copy_from_slice(&daddr.octets());
    h
}

/// Writes the Homa checksum (PROTOCOL.md 1.3) of the packet `head` + `payload` into
/// `head`: the whole TCP-style sum; to a loopback destination only its seed, as homa.ko's
/// loopback packets carry (nothing finishes the sum there, and nothing between the two
/// ends could check it), which saves a pass over the payload.
fn fill_sum(
    head: &mut [u8],
    payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), homa_proto::wire::WireError> {
    if dst.is_loopback() {
        fill_checksum_seed(head, head.len() + payload.len(), src, dst)
    } else {
        fill_checksum_split(head, payload, src, dst)
    }
}

/// The abstract Unix socket name that reserves a Homa port for raw-IP sockets.
fn reservation_name(port: u16) -> String {
    format!("homa-rs/raw-ip-port/{port}")
}

/// What `ret` returns to keep the whole datagram.
const KEEP_ALL: u32 = u32::MAX;
/// Offset of the destination port in the Homa common header (PROTOCOL.md 1.4).
const DPORT_AT: u32 = 2;

/// A socket filter that drops everything (while the queue is emptied, see `open`).
const DROP_ALL: [libc::sock_filter; 1] = [bpf_stmt(RET_K, 0)];

/// The socket filter of a raw socket for Homa port `port` (see the module docs): keeps a
/// datagram only if the destination port of its Homa header is `port`. What the program
/// sees starts with the IPv4 header for an IPv4 socket (the Homa header follows the
/// header's 4 × IHL bytes, options included) and with the Homa header itself for an
/// IPv6 socket (the kernel has consumed the IPv6 header and any extension headers).
/// Loading past the end of a datagram ends the program with 0: a datagram too short to
/// carry a destination port is dropped too.
fn port_filter(family: Family, port: u16) -> Vec<libc::sock_filter> {
    let keep_if_ours = [
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: u32::from(port),
        },
        bpf_stmt(RET_K, KEEP_ALL),
        bpf_stmt(RET_K, 0),
    ];
    let load = match family {
        Family::V4 => vec![bpf_stmt(LDX_B_MSH, 0), bpf_stmt(LD_H_IND, DPORT_AT)],
        Family::V6 => vec![bpf_stmt(LD_H_ABS, DPORT_AT)],
    };
    load.into_iter().chain(keep_if_ours).collect()
}

/// The sending side's state: message headers and a copy of each packet's first bytes,
/// with the checksum filled.
#[derive(Debug)]
struct RawSend {
    state: SendState,
    buf: Vec<u8>,
    /// (destination, TOS, start in `buf`, length there, index in the batch, for the
    /// payload) of each packet to send.
    packets: Vec<(SocketAddr, u8, usize, usize, usize)>,
}

/// The raw IP transport (see the module docs).
#[derive(Debug)]
pub(crate) struct RawTransport {
    fd: OwnedFd,
    family: Family,
    port: u16,
    mtu: usize,
    /// TTL of the IPv4 headers this socket writes (the socket's own, the system default).
    ttl: u8,
    /// Holds the port reservation while the transport lives.
    _reservation: OwnedFd,
    send: Mutex<RawSend>,
    recv: Mutex<RecvScratch>,
    /// Destination → (source address the kernel uses, when looked up).
    sources: Mutex<HashMap<IpAddr, (IpAddr, Instant)>>,
    /// Reports found while sending or receiving, for the next `take_unreachable`.
    pending: Mutex<Vec<(SocketAddr, Unreachable)>>,
    truncated: AtomicU64,
    malformed: AtomicU64,
}

impl RawTransport {
    /// Opens the raw socket and reserves the Homa port (see the module docs).
    pub(crate) fn open(options: &TransportOptions) -> Result<Self, crate::Error> {
        let family = options.family;
        let fd =
            sys::socket(family, libc::SOCK_RAW, i32::from(IPPROTO_HOMA)).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES) => crate::Error::io(NEEDS_CAP_NET_RAW, e),
                    _ => crate::Error::io("opening a raw IP socket for protocol 146", e),
                }
            })?;
        let raw = fd.as_raw_fd();
        // From its creation the socket receives every protocol-146 packet: queue nothing
        // until the port filter is in place (see the module docs).
        sys::attach_filter(raw, &DROP_ALL)
            .map_err(|e| crate::Error::io("attaching a socket filter to the raw socket", e))?;
        // The TTL the kernel would put in the IPv4 headers it builds (net.ipv4.ip_default_ttl).
        let ttl = sys::get_option(raw, libc::IPPROTO_IP, libc::IP_TTL)
            .ok()
            .and_then(|t| u8::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(64);
        if family == Family::V4 {
            // We write the IPv4 header (see `send`): the kernel then copies each packet
            // as it is, instead of summing it while it copies.
            sys::set_option(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)
                .map_err(|e| crate::Error::io("setting IP_HDRINCL on the raw socket", e))?;
        }
        let (level, recverr) = match family {
            Family::V4 => (libc::IPPROTO_IP, libc::IP_RECVERR),
            Family::V6 => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
        };
        sys::set_option(raw, level, recverr, 1)
            .map_err(|e| crate::Error::io("enabling ICMP error reports on the raw socket", e))?;
        sys::set_buffer_sizes(raw, options.socket_buffer);
        let (port, reservation) = match options.port {
            Some(port) => {
                if port == 0 || port >= MIN_CLIENT_PORT {
                    return Err(crate::Error::invalid(
                        "port",
                        format!("server port {port} is outside 1..=32767"),
                    ));
                }
                let r = sys::bind_abstract(reservation_name(port).as_bytes()).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EADDRINUSE) {
                        crate::Error::io(
                            "reserving the Homa server port: another homa-rs raw-IP socket \
                             in this network namespace already uses it",
                            e,
                        )
                    } else {
                        crate::Error::io("reserving the Homa port (abstract Unix socket)", e)
                    }
                })?;
                (port, r)
            }
            None => Self::reserve_client_port()?,
        };
        // What arrived before DROP_ALL was attached, then only packets for our port.
        sys::discard_queued(raw);
        sys::attach_filter(raw, &port_filter(family, port))
            .map_err(|e| crate::Error::io("attaching the Homa port filter to the raw socket", e))?;
        Ok(RawTransport {
            fd,
            family,
            port,
            mtu: options.mtu,
            ttl,
            _reservation: reservation,
            send: Mutex::new(RawSend {
                state: SendState::new(64),
                buf: Vec::new(),
                packets: Vec::new(),
            }),
            recv: Mutex::new(RecvScratch::new(64)),
            sources: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            truncated: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        })
    }

    /// Reserves a random free client port. With a few thousand clients on a host the
    /// first try almost always succeeds; a collision just means another try.
    fn reserve_client_port() -> Result<(u16, OwnedFd), crate::Error> {
        bind_random_client_port(
            "reserving the Homa port (abstract Unix socket)",
            "finding a free Homa client port in 32768..=65535 for a raw-IP socket",
            |port| sys::bind_abstract(reservation_name(port).as_bytes()),
        )
    }

    /// The Homa port.
    pub(crate) fn local_port(&self) -> u16 {
        self.port
    }

    /// Largest Homa packets: non-loopback IPv4 and IPv6 paths (`mtu` minus the IP
    /// header) and loopback (65515 over IPv4, 65496 over IPv6).
    pub(crate) fn max_packets(&self) -> (usize, usize, usize) {
        let loopback = match self.family {
            Family::V4 => V4_LOOPBACK_MAX,
            Family::V6 => V6_LOOPBACK_MAX,
        };
        (
            self.mtu.saturating_sub(20),
            self.mtu.saturating_sub(40),
            loopback,
        )
    }

    /// The source address the kernel uses towards `dest` (cached).
    fn source_for(&self, dest: IpAddr, now: Instant) -> io::Result<IpAddr> {
        let mut sources = lock(&self.sources);
        if let Some(&(src, at)) = sources.get(&dest) {
            if now.saturating_duration_since(at) < SOURCE_TTL {
                return Ok(src);
            }
        }
        let src = sys::route_source(dest)?;
        if sources.len() >= SOURCE_CACHE_MAX {
            sources.clear();
        }
        sources.insert(dest, (src, now));
        Ok(src)
    }

    /// Sends the batch: each packet's first bytes copied with the checksum filled (the
    /// payload stays where it is), then one `sendmmsg` (more if the kernel takes only
    /// part of it). Refused packets are skipped and counted (see the module docs);
    /// returns the wrong-family reports.
    pub(crate) fn send(&self, batch: &SendBatch) -> Vec<(SocketAddr, Unreachable)> {
        let mut reports = Vec::new();
        let mut guard = lock(&self.send);
        let st = &mut *guard;
        st.buf.clear();
        st.packets.clear();
        let now = Instant::now();
        // Batches usually go to few destinations: repeats skip the lookup, failed or not.
        let mut last: Option<(IpAddr, Source)> = None;
        for (index, (dest, tos, head, payload)) in batch.iter().enumerate() {
            if Family::of(dest.ip()) != self.family {
                st.state.counters.refused(libc::EAFNOSUPPORT, 1);
                if !reports.contains(&(dest, Unreachable::Host)) {
                    reports.push((dest, Unreachable::Host));
                }
                continue;
            }
            let source = match last {
                Some((d, source)) if d == dest.ip() => source,
                _ => Source::of(self.source_for(dest.ip(), now)),
            };
            last = Some((dest.ip(), source));
            let src = match source {
                Source::Found(src) => Some(src),
                Source::Unknown => None,
                // The kernel could not send the packet either. Lost, not reported: loss
                // recovery or the RPC's timeout deals with it.
                Source::Refused(errno) => {
                    st.state.counters.refused(errno, 1);
                    continue;
                }
            };
            // The batch is shared and read-only: the packet's first bytes (a DATA header,
            // or a whole control packet) are copied to write the checksum into; a DATA
            // payload stays in the message's memory, summed there, and goes as a second
            // iovec.
            let start = st.buf.len();
            if let IpAddr::V4(daddr) = dest.ip() {
                let saddr = match src {
                    Some(IpAddr::V4(s)) => s,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                st.buf
                    .extend_from_slice(&ipv4_header(tos, self.ttl, saddr, daddr));
            }
            let homa = st.buf.len();
            st.buf.extend_from_slice(head);
            if let Some(src) = src {
                // Fails only for packets shorter than a common header, sent as they are.
                let _ = fill_sum(&mut st.buf[homa..], payload, src, dest.ip());
            }
            let len = st.buf.len() - start;
            st.packets.push((dest, tos, start, len, index));
        }
        let mut b = st.state.scratch.builder();
        st.state.ranges.clear();
        for (i, &(dest, tos, start, len, index)) in st.packets.iter().enumerate() {
            // Raw IPv6 sockets insist on port 0 (or the protocol number) in the address;
            // the IPv6 scope id, if any, is kept.
            let mut to = dest;
            to.set_port(0);
            let payload = batch.parts(index).1;
            let parts = std::iter::once(&st.buf[start..start + len])
                .chain((!payload.is_empty()).then_some(payload));
            b.push(self.family, to, tos, None, parts);
            st.state.ranges.push((i, 1));
        }
        let drain = || self.drain_to_pending();
        let fd = self.fd.as_raw_fd();
        // Raw sends are never GSO messages: no GSO refusal to handle.
        let _ = send_messages(fd, &mut b, &st.state.ranges, &mut st.state.counters, &drain);
        reports
    }

    /// The Homa destination port of an error report about one of our packets.
    fn our_port(&self, e: &QueuedError) -> Option<u16> {
        let quoted = &e.quoted[..e.quoted_len.min(e.quoted.len())];
        // An IPv4 socket writes its IP header (IP_HDRINCL), and the kernel then quotes
        // the packet from that header on.
        let at = match self.family {
            Family::V4 => {
                let first = *quoted.first()?;
                if first >> 4 != 4 {
                    return None;
                }
                usize::from(first & 0x0f) * 4
            }
            Family::V6 => 0,
        };
        let q = quoted.get(at..at + 4)?;
        let sport = u16::from_be_bytes([q[0], q[1]]);
        (sport == self.port).then(|| u16::from_be_bytes([q[2], q[3]]))
    }

    fn drain_to_pending(&self) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        drain_error_queue(self.fd.as_raw_fd(), &mut pending, |e| self.our_port(e))
    }

    /// Receives what is queued (one `recvmmsg`), without blocking.
    pub(crate) fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let slot = batch.max_packet;
        let prefix = self.family == Family::V4;
        let mut scratch = lock(&self.recv);
        recv_batch(
            &mut scratch,
            self.fd.as_raw_fd(),
            batch,
            prefix,
            || self.drain_to_pending(),
            |scratch, _, i| {
                let r = scratch.received(i);
                if r.truncated {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                let found = if prefix {
                    ipv4_payload(scratch.prefix(i), r.len, slot)
                        .map(|(src, at, len)| (IpAddr::V4(src), i * slot + at, len))
                } else {
                    match r.source {
                        Some(src) if r.len <= slot => Some((src.ip(), i * slot, r.len)),
                        _ => None,
                    }
                };
                if found.is_none() {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                }
                found
            },
        )
    }

    /// Reports of ICMP errors about packets this socket sent.
    pub(crate) fn take_unreachable(&self) -> io::Result<Vec<(SocketAddr, Unreachable)>> {
        let mut out = std::mem::take(&mut *lock(&self.pending));
        drain_error_queue(self.fd.as_raw_fd(), &mut out, |e| self.our_port(e))?;
        Ok(out)
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> TransportStats {
        let mut stats = lock(&self.send).state.counters.snapshot();
        stats.truncated = self.truncated.load(Ordering::Relaxed);
        stats.malformed = self.malformed.load(Ordering::Relaxed);
        stats
    }
}

/// Where the Homa packet is in a datagram from a raw IPv4 socket: `header` holds its first
/// 20 bytes, the rest (options, then the Homa packet) is at the start of the slot;
/// `received` counts both. Returns (source, start in the slot, length), or `None` if the
/// header is not a plausible IPv4 header of a protocol-146 packet.
fn ipv4_payload(
    header: &[u8; IPV4_HEADER_LEN],
    received: usize,
    slot: usize,
) -> Option<(Ipv4Addr, usize, usize)> {
    if received < IPV4_HEADER_LEN || header[0] >> 4 != 4 || header[9] != IPPROTO_HOMA {
        return None;
    }
    let ihl = usize::from(header[0] & 0x0F) * 4;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if ihl < IPV4_HEADER_LEN || total < ihl || total > received {
        return None;
    }
    let start = ihl - IPV4_HEADER_LEN;
    let end = total - IPV4_HEADER_LEN;
    if end > slot {
        return None;
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    Some((src, start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::sys::test_util::{
        self, enable_recv_tos, inject_icmp, raw_ip_allowed, recv_with_tos, OutputRule,
    };
    use crate::transport::TransportKind;
    use homa_proto::engine::{Engine, EngineOptions};
    use homa_proto::wire::packet_checksum;
    use homa_proto::{Config, Time};

    fn options(family: Family, port: Option<u16>) -> TransportOptions {
        TransportOptions {
            kind: TransportKind::RawIp,
            family,
            port,
            mtu: 1500,
            socket_buffer: 8 << 20,
        }
    }

    /// A client transport. Every test that opens raw sockets first checks
    /// [`raw_ip_allowed`] (and is skipped without CAP_NET_RAW); after that, failing to
    /// open one is a bug.
    fn client(family: Family) -> RawTransport {
        RawTransport::open(&options(family, None))
            .unwrap_or_else(|e| panic!("raw transport tests need CAP_NET_RAW: {e}"))
    }

    fn server(family: Family) -> RawTransport {
        for _ in 0..100 {
            let port = 10_000 + (sys::random_u64() % 22_000) as u16;
            match RawTransport::open(&options(family, Some(port))) {
                Ok(t) => return t,
                Err(crate::Error::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EADDRINUSE) => {}
                Err(e) => panic!("raw transport tests need CAP_NET_RAW: {e}"),
            }
        }
        panic!("no free server port");
    }

    /// A Homa-shaped packet: source and destination ports first, then bytes that
    /// identify it (the checksum field at 16..18 is left zero for the transport).
    fn packet(sport: u16, dport: u16, id: u8, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(id))
            .collect();
        p[..2].copy_from_slice(&sport.to_be_bytes());
        p[2..4].copy_from_slice(&dport.to_be_bytes());
        p[16] = 0;
        p[17] = 0;
        p
    }

    fn ports(p: &[u8]) -> (u16, u16) {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    }

    fn send(
        from: &RawTransport,
        to: SocketAddr,
        packets: &[(u8, Vec<u8>)],
    ) -> Vec<(SocketAddr, Unreachable)> {
        from.send(&SendBatch::of(to, packets))
    }

    /// Receives until `count` packets from `sport` to `dport` have arrived (packets from
    /// other senders to the same port, which only other tests' stray packets could be,
    /// are skipped).
    fn receive(
        t: &RawTransport,
        max_packet: usize,
        sport: u16,
        dport: u16,
        count: usize,
    ) -> Vec<(IpAddr, Vec<u8>)> {
        let mut batch = RecvBatch::new(max_packet, 8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "received only {} of {count}", got.len());
            sys::wait_readable(t.raw_fd(), -1, Some(left)).unwrap();
            let n = t.recv(&mut batch).unwrap();
            assert_eq!(n, batch.packets.len());
            got.extend(
                batch
                    .iter()
                    .filter(|(_, p)| p.len() >= 4 && ports(p) == (sport, dport))
                    .map(|(from, p)| (from, p.to_vec())),
            );
        }
        got
    }

    fn roundtrip(family: Family) {
        if !raw_ip_allowed() {
            return;
        }
        let server = server(family);
        let client = client(family);
        let (sport, dport) = (client.local_port(), server.local_port());
        let max = client.max_packets().2;
        let to = SocketAddr::new(family.loopback(), dport);
        let sizes = [28, 100, 1000, 1400, 9000, 30_000, max];
        let packets: Vec<(u8, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| ((i as u8 % 8) << 5, packet(sport, dport, i as u8, len)))
            .collect();
        assert!(send(&client, to, &packets).is_empty());
        let got = receive(&server, max, sport, dport, packets.len());
        for (i, (from, p)) in got.iter().enumerate() {
            assert_eq!(*from, family.loopback());
            let sent = &packets[i].1;
            assert_eq!(p.len(), sent.len());
            assert_eq!(p[..16], sent[..16]);
            assert_eq!(p[18..], sent[18..]);
            // The checksum's seed was filled (loopback), with the addresses the kernel
            // used.
            assert_eq!(p[16..18], seed(*from, p), "packet {i}");
        }
        // The sender's own raw socket does not see them (over loopback it would, without
        // its port filter): once a packet sent to the client's own port after them is
        // there, nothing else is queued.
        let mark = packet(dport, sport, 99, 40);
        assert!(send(
            &server,
            SocketAddr::new(family.loopback(), sport),
            &[(0, mark)]
        )
        .is_empty());
        let got = receive(&client, max, dport, sport, 1);
        assert_eq!(got[0].1[18], packet(dport, sport, 99, 40)[18]);
        assert_eq!(client.recv(&mut RecvBatch::new(max, 8)).unwrap(), 0);
    }

    /// The checksum seed of packet `p` received over loopback from `from`.
    fn seed(from: IpAddr, p: &[u8]) -> [u8; 2] {
        let mut copy = p.to_vec();
        homa_proto::wire::fill_checksum_seed(&mut copy, p.len(), from, from).unwrap();
        [copy[16], copy[17]]
    }

    /// Off loopback a packet sent as two parts carries the checksum of the whole packet;
    /// to loopback, its seed.
    #[test]
    fn packets_carry_the_whole_checksum_off_loopback_and_its_seed_on_it() {
        let packet: Vec<u8> = (0..5001u32).map(|i| (i * 7 + 3) as u8).collect();
        let pairs = [
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            ),
            ("fe80::1".parse().unwrap(), "2001:db8::2".parse().unwrap()),
        ];
        for (src, dst) in pairs {
            let mut head = packet[..56].to_vec();
            fill_sum(&mut head, &packet[56..], src, dst).unwrap();
            let sum = packet_checksum(src, dst, &packet).unwrap();
            assert_eq!(u16::from_be_bytes([head[16], head[17]]), sum);
        }
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut head = packet[..56].to_vec();
        fill_sum(&mut head, &packet[56..], lo, lo).unwrap();
        assert_eq!(head[16..18], seed(lo, &packet));
    }

    /// DATA packets as the socket sends them, the engine's header and the message's
    /// payload as two iovecs, arrive whole, with the checksum's seed (loopback).
    fn split_packets_are_checksummed(family: Family) {
        if !raw_ip_allowed() {
            return;
        }
        let server = server(family);
        let client = client(family);
        let (sport, dport) = (client.local_port(), server.local_port());
        let mut engine: Engine<Vec<u8>> = Engine::new(
            Config::default(),
            EngineOptions::client(sport, 2),
            vec![0; 1 << 21],
        )
        .unwrap();
        let to = SocketAddr::new(family.loopback(), dport);
        // An odd length: the last payload ends in half a 16-bit word.
        let message: Vec<u8> = (0..5001u32).map(|i| (i * 7 + 3) as u8).collect();
        engine
            .send_request(Time::ZERO, to, message.clone(), 0)
            .unwrap();
        let max = engine.max_packet_size();
        let mut batch = SendBatch::new(max, 16);
        while !batch.is_full() {
            match engine.poll_transmit_split(Time::ZERO, batch.next_buf()) {
                Some((t, payload)) => batch.commit_split(t.destination, t.tos, t.len, payload),
                None => break,
            }
        }
        let split = (0..batch.packets.len())
            .filter(|&i| !batch.parts(i).1.is_empty())
            .count();
        assert!(split >= 2, "{split} DATA packets with a separate payload");
        assert!(client.send(&batch).is_empty());
        let got = receive(&server, max, sport, dport, batch.packets.len());
        let mut received = Vec::new();
        for (i, (from, p)) in got.iter().enumerate() {
            let (head, payload) = batch.parts(i);
            assert_eq!(p.len(), head.len() + payload.len());
            assert_eq!(p[head.len()..], *payload);
            assert_eq!(p[16..18], seed(*from, p), "packet {i}");
            received.extend_from_slice(payload);
        }
        assert!(received == message);
    }

    #[test]
    fn raw_v4_split_data_packets_carry_the_whole_packets_checksum() {
        split_packets_are_checksummed(Family::V4);
    }

    #[test]
    fn raw_v6_split_data_packets_carry_the_whole_packets_checksum() {
        split_packets_are_checksummed(Family::V6);
    }

    /// The port filter, checked against what the kernel really hands it: from a plain
    /// raw socket, packets to the transport's port and to other ports (one byte away in
    /// either half, and the reversed port), with IPv4 options or an IPv6 destination
    /// options header in front of the Homa header when `options`. Only the ones to the
    /// port arrive, in order; the others are dropped before the socket's queue.
    fn filter_keeps_only_our_port(family: Family, options: bool) {
        if !raw_ip_allowed() {
            return;
        }
        let t = server(family);
        let port = t.local_port();
        let sender = sys::socket(family, libc::SOCK_RAW, i32::from(IPPROTO_HOMA)).unwrap();
        let fd = sender.as_raw_fd();
        if options {
            match family {
                // Four bytes of options (IHL 6): NOP, NOP, NOP, end of options.
                Family::V4 => test_util::set_option_bytes(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_OPTIONS,
                    &[1, 1, 1, 0],
                ),
                // A destination options header: next header (filled by the kernel),
                // length 0 (8 bytes), a PadN option of 4 bytes.
                Family::V6 => test_util::set_option_bytes(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_DSTOPTS,
                    &[0, 0, 1, 4, 0, 0, 0, 0],
                ),
            }
            .unwrap();
            if family == Family::V6 {
                sys::set_option(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVDSTOPTS, 1).unwrap();
            }
        }
        let others = [
            port ^ 1,
            port ^ 0x100,
            port.swap_bytes(),
            port.wrapping_add(1),
        ];
        let sport = MIN_CLIENT_PORT + (sys::random_u64() % 32768) as u16;
        let to = SocketAddr::new(family.loopback(), 0);
        let mut ours = Vec::new();
        for (k, &dport) in others.iter().chain(&[port]).cycle().take(20).enumerate() {
            let p = packet(sport, dport, k as u8, 60 + k);
            test_util::send_to(fd, &p, to).unwrap();
            if dport == port {
                ours.push(p);
            }
        }
        // Short datagrams are dropped too: they carry no destination port.
        test_util::send_to(fd, &[0x9c, 0x41, (port >> 8) as u8], to).unwrap();
        // The last packet marks the end: when it is here, everything before it has been
        // filtered.
        let last = packet(sport, port, 200, 50);
        test_util::send_to(fd, &last, to).unwrap();
        ours.push(last);
        let got = receive(&t, 2000, sport, port, ours.len());
        let ids: Vec<u8> = got.iter().map(|(_, p)| p[18]).collect();
        let sent: Vec<u8> = ours.iter().map(|p| p[18]).collect();
        assert_eq!(ids, sent, "{family:?}, options {options}");
        let mut batch = RecvBatch::new(2000, 8);
        assert_eq!(
            t.recv(&mut batch).unwrap(),
            0,
            "{family:?}, options {options}"
        );
        if options {
            // The options really were in front of the Homa header: the unfiltered sender
            // receives its own packets over loopback and shows them.
            // (It also receives every other test's protocol-146 packets: find the first
            // one this test sent.)
            let mut buf = [0u8; 2000];
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "the sender never saw its first packet");
                sys::wait_readable(fd, -1, Some(left)).unwrap();
                let Ok((len, cmsgs)) = test_util::recv_with_cmsg_types(fd, &mut buf) else {
                    continue;
                };
                let at = match family {
                    Family::V4 => usize::from(buf[0] & 0x0F) * 4,
                    Family::V6 => 0,
                };
                if len < at + 4 || ports(&buf[at..len]) != (sport, others[0]) {
                    continue;
                }
                match family {
                    Family::V4 => assert_eq!((at, len), (24, 24 + 60)),
                    Family::V6 => {
                        assert!(cmsgs.contains(&(libc::IPPROTO_IPV6, libc::IPV6_DSTOPTS)));
                        assert_eq!(len, 60);
                    }
                }
                break;
            }
        }
    }

    /// What `open` does before the port filter: a socket that received packets for
    /// other ports (as any raw socket does from its creation) loses them all once it
    /// drops everything and empties its queue.
    #[test]
    fn raw_packets_queued_before_the_filter_are_discarded() {
        if !raw_ip_allowed() {
            return;
        }
        let fresh = sys::socket(Family::V4, libc::SOCK_RAW, i32::from(IPPROTO_HOMA)).unwrap();
        let fd = fresh.as_raw_fd();
        let sender = sys::socket(Family::V4, libc::SOCK_RAW, i32::from(IPPROTO_HOMA)).unwrap();
        let to = SocketAddr::new(Family::V4.loopback(), 0);
        for k in 0..5 {
            let p = packet(40_001, 7, k, 100);
            test_util::send_to(sender.as_raw_fd(), &p, to).unwrap();
        }
        sys::wait_readable(fd, -1, Some(Duration::from_secs(5))).unwrap();
        sys::attach_filter(fd, &DROP_ALL).unwrap();
        assert!(sys::discard_queued(fd) >= 5);
        // A port reserved for this test: nothing else sends to it.
        let reserved = server(Family::V4);
        sys::attach_filter(fd, &port_filter(Family::V4, reserved.local_port())).unwrap();
        let mut buf = [0u8; 200];
        let e = test_util::recv_with_cmsg_types(fd, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn raw_v4_filter_keeps_only_packets_for_our_port() {
        filter_keeps_only_our_port(Family::V4, false);
    }

    #[test]
    fn raw_v4_filter_skips_ip_options() {
        filter_keeps_only_our_port(Family::V4, true);
    }

    #[test]
    fn raw_v6_filter_sees_the_homa_header_first() {
        filter_keeps_only_our_port(Family::V6, false);
    }

    #[test]
    fn raw_v6_filter_sees_the_homa_header_after_extension_headers() {
        filter_keeps_only_our_port(Family::V6, true);
    }

    #[test]
    fn raw_v4_batch_roundtrip_with_checksums() {
        roundtrip(Family::V4);
    }

    #[test]
    fn raw_v6_batch_roundtrip_with_checksums() {
        roundtrip(Family::V6);
    }

    /// The TOS / Traffic Class of each packet, as seen by a plain raw socket.
    fn tos_lands_in_header(family: Family) {
        if !raw_ip_allowed() {
            return;
        }
        let observer = sys::socket(family, libc::SOCK_RAW, i32::from(IPPROTO_HOMA)).unwrap();
        let obs = observer.as_raw_fd();
        if family == Family::V6 {
            enable_recv_tos(obs, family);
        }
        let client = client(family);
        let dport = 7;
        let sport = client.local_port();
        let packets: Vec<(u8, Vec<u8>)> = (0..8u8)
            .map(|l| (l << 5, packet(sport, dport, l, 40 + usize::from(l))))
            .collect();
        assert!(send(&client, SocketAddr::new(family.loopback(), dport), &packets).is_empty());
        let mut seen = 0;
        let mut buf = vec![0; 2000];
        let header = if family == Family::V4 { 20 } else { 0 };
        while seen < 8 {
            sys::wait_readable(obs, -1, Some(Duration::from_secs(5))).unwrap();
            let Ok((len, _, tclass)) = recv_with_tos(obs, &mut buf) else {
                continue;
            };
            let p = &buf[header..len];
            if p.len() < 4 || ports(p) != (sport, dport) {
                continue;
            }
            let level = (p.len() - 40) as u8;
            let tos = match family {
                // The IPv4 header's second byte.
                Family::V4 => buf[1],
                Family::V6 => tclass.expect("IPV6_TCLASS reported"),
            };
            assert_eq!(tos, level << 5, "level {level}");
            seen += 1;
        }
    }

    #[test]
    fn raw_v4_tos_lands_in_ip_header() {
        tos_lands_in_header(Family::V4);
    }

    #[test]
    fn raw_v6_traffic_class_lands_in_ip_header() {
        tos_lands_in_header(Family::V6);
    }

    #[test]
    fn raw_ports_are_reserved() {
        if !raw_ip_allowed() {
            return;
        }
        for family in [Family::V4, Family::V6] {
            let a = client(family);
            let b = client(family);
            assert!(a.local_port() >= MIN_CLIENT_PORT);
            assert_ne!(a.local_port(), b.local_port());
            // A port below the range the other tests' servers take (10000..), so that
            // none of them can grab it between the close and the reopen below.
            let s = (0..100)
                .find_map(|_| {
                    let port = 5000 + (sys::random_u64() % 4000) as u16;
                    RawTransport::open(&options(family, Some(port))).ok()
                })
                .expect("a free port in 5000..9000");
            // The port space is shared by both families, as in the kernel.
            for f in [Family::V4, Family::V6] {
                let err = RawTransport::open(&options(f, Some(s.local_port()))).unwrap_err();
                assert!(err.to_string().contains("already uses it"), "{err}");
            }
            let port = s.local_port();
            drop(s);
            // Closing the transport frees the port. (A child that another test thread is
            // forking at this moment, e.g. to run iptables, holds a copy of the
            // reservation until it execs: retry for a while.)
            let deadline = Instant::now() + Duration::from_secs(30);
            let again = loop {
                match RawTransport::open(&options(family, Some(port))) {
                    Ok(t) => break t,
                    Err(e) if Instant::now() < deadline => {
                        assert!(e.to_string().contains("already uses it"), "{e}");
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("port {port} never freed: {e}"),
                }
            };
            assert_eq!(again.local_port(), port);
        }
    }

    /// Forged ICMP errors about our packets become reports; about another socket's
    /// packets, nothing.
    fn icmp_reports(family: Family) {
        if !raw_ip_allowed() {
            return;
        }
        let ours = client(family);
        let bystander = client(family);
        let cases: &[(u8, u8, Unreachable)] = match family {
            Family::V4 => &[
                (3, 3, Unreachable::Port),
                (3, 2, Unreachable::Protocol),
                (3, 1, Unreachable::Host),
            ],
            Family::V6 => &[
                (1, 4, Unreachable::Port),
                (4, 1, Unreachable::Protocol),
                (1, 3, Unreachable::Host),
            ],
        };
        for &(ty, code, kind) in cases {
            let quoted = packet(ours.local_port(), 1234, 0, 28);
            inject_icmp(family, ty, code, IPPROTO_HOMA, &quoted);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut reports = Vec::new();
            while reports.is_empty() && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                sys::wait_readable(ours.raw_fd(), -1, Some(left)).unwrap();
                reports = ours.take_unreachable().unwrap();
            }
            let dest = SocketAddr::new(family.loopback(), 1234);
            assert_eq!(reports, vec![(dest, kind)], "ICMP type {ty} code {code}");
            sys::wait_readable(bystander.raw_fd(), -1, Some(Duration::from_secs(5))).unwrap();
            assert!(bystander.take_unreachable().unwrap().is_empty());
        }
    }

    #[test]
    fn raw_v4_icmp_errors_are_reported_to_the_sender_only() {
        icmp_reports(Family::V4);
    }

    #[test]
    fn raw_v6_icmp_errors_are_reported_to_the_sender_only() {
        icmp_reports(Family::V6);
    }

    #[test]
    fn raw_oversize_datagrams_are_dropped_and_counted() {
        if !raw_ip_allowed() {
            return;
        }
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let client = client(family);
            let (sport, dport) = (client.local_port(), server.local_port());
            let to = SocketAddr::new(family.loopback(), dport);
            let packets = [
                (0, packet(sport, dport, 1, 200)),
                (0, packet(sport, dport, 2, 50)),
                (0, packet(sport, dport, 3, 100)),
            ];
            assert!(send(&client, to, &packets).is_empty());
            let got = receive(&server, 100, sport, dport, 2);
            assert_eq!(got[0].1[18..], packets[1].1[18..]);
            assert_eq!(got[1].1[18..], packets[2].1[18..]);
            assert!(server.stats().truncated >= 1);
        }
    }

    #[test]
    fn raw_loopback_maxima_are_exact() {
        if !raw_ip_allowed() {
            return;
        }
        for family in [Family::V4, Family::V6] {
            let server = server(family);
            let client = client(family);
            if family == Family::V6 {
                // Without this, IPv6 would send larger packets as fragments. (IPV6_DONTFRAG
                // does not do it here: the kernel honours it only for UDP, ICMPv6 and
                // IPPROTO_RAW sockets, not for a raw socket of protocol 146.)
                sys::set_option(
                    client.raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MTU_DISCOVER,
                    libc::IPV6_PMTUDISC_DO,
                )
                .unwrap();
            }
            let (sport, dport) = (client.local_port(), server.local_port());
            let max = client.max_packets().2;
            let to = SocketAddr::new(family.loopback(), dport);
            assert!(send(&client, to, &[(0, packet(sport, dport, 1, max))]).is_empty());
            assert_eq!(receive(&server, max, sport, dport, 1)[0].1.len(), max);
            // One byte more is refused (and counted), not sent as fragments.
            assert!(send(&client, to, &[(0, packet(sport, dport, 1, max + 1))]).is_empty());
            let refused = client.stats().refused_by_errno;
            assert_eq!(refused, [(libc::EMSGSIZE, 1)].into(), "{family:?}");
        }
        assert_eq!(V4_LOOPBACK_MAX, 65515);
        assert_eq!(V6_LOOPBACK_MAX, 65496);
    }

    /// Destinations the kernel cannot send to (no source address: a broadcast address
    /// over IPv4, a multicast address without a scope over IPv6) lose their packets, which
    /// are counted by errno, not reported; the rest of the batch goes.
    fn refused_packet_costs_only_itself(family: Family) {
        if !raw_ip_allowed() {
            return;
        }
        let (unsendable, errno): (IpAddr, _) = match family {
            Family::V4 => (Ipv4Addr::BROADCAST.into(), libc::EACCES),
            Family::V6 => ("ff02::1".parse().unwrap(), libc::EINVAL),
        };
        let server = server(family);
        let client = client(family);
        let (sport, dport) = (client.local_port(), server.local_port());
        let live = SocketAddr::new(family.loopback(), dport);
        let dead = SocketAddr::new(unsendable, dport);
        let plan = [live, live, dead, live, dead, dead, live];
        let packets: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(k, &to)| (to, 0, packet(sport, dport, k as u8, 100)))
            .collect();
        assert!(client.send(&SendBatch::of_many(&packets)).is_empty());
        let got = receive(&server, 200, sport, dport, 4);
        let ids: Vec<u8> = got.iter().map(|(_, p)| p[18]).collect();
        let sent: Vec<u8> = [0, 1, 3, 6].iter().map(|&k| packets[k].2[18]).collect();
        assert_eq!(ids, sent);
        let stats = client.stats();
        assert_eq!(stats.refused_by_errno, [(errno, 3)].into(), "{stats:?}");
        assert_eq!(stats.packets_refused, 3);
        assert!(client.take_unreachable().unwrap().is_empty());
    }

    #[test]
    fn raw_v4_a_refused_packet_costs_only_itself() {
        refused_packet_costs_only_itself(Family::V4);
    }

    #[test]
    fn raw_v6_a_refused_packet_costs_only_itself() {
        refused_packet_costs_only_itself(Family::V6);
    }

    /// A firewall rule dropping protocol-146 packets to one address (the send fails with
    /// EPERM) loses those packets only: counted, not reported. (IPv4 only: the rule is
    /// made unique by a random 127/8 address, and IPv6 has one loopback address.)
    #[test]
    fn raw_v4_a_firewall_eperm_is_loss_not_unreachable() {
        if !raw_ip_allowed() {
            return;
        }
        let server = server(Family::V4);
        let client = client(Family::V4);
        let (sport, dport) = (client.local_port(), server.local_port());
        let r = sys::random_u64().to_be_bytes();
        let blocked_ip = Ipv4Addr::new(127, r[0], r[1], r[2].clamp(2, 254));
        let blocked = SocketAddr::new(blocked_ip.into(), dport);
        let live = SocketAddr::new(Family::V4.loopback(), dport);
        let ip = blocked_ip.to_string();
        let Some(rule) = OutputRule::insert(Family::V4, &["-p", "146", "-d", &ip, "-j", "DROP"])
        else {
            return;
        };
        let plan = [blocked, live, blocked, blocked, live];
        let packets: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(k, &to)| (to, 0, packet(sport, dport, k as u8, 100)))
            .collect();
        let reports = client.send(&SendBatch::of_many(&packets));
        drop(rule);
        assert!(reports.is_empty(), "{reports:?}");
        let got = receive(&server, 200, sport, dport, 2);
        let ids: Vec<u8> = got.iter().map(|(_, p)| p[18]).collect();
        assert_eq!(ids, vec![packets[1].2[18], packets[4].2[18]]);
        let stats = client.stats();
        assert_eq!(
            stats.refused_by_errno,
            [(libc::EPERM, 3)].into(),
            "{stats:?}"
        );
        assert!(client.take_unreachable().unwrap().is_empty());
    }

    #[test]
    fn raw_ipv4_header_parsing_rejects_garbage() {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[9] = IPPROTO_HOMA;
        h[2..4].copy_from_slice(&120u16.to_be_bytes());
        h[12..16].copy_from_slice(&[10, 0, 0, 1]);
        let src = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(ipv4_payload(&h, 120, 100), Some((src, 0, 100)));
        // Options: the packet starts after them.
        let mut o = h;
        o[0] = 0x47;
        assert_eq!(ipv4_payload(&o, 120, 100), Some((src, 8, 92)));
        // Trailing bytes beyond the total length are not part of the packet.
        assert_eq!(ipv4_payload(&h, 130, 200), Some((src, 0, 100)));
        // Total length beyond what was received, or the slot.
        assert_eq!(ipv4_payload(&h, 119, 100), None);
        assert_eq!(ipv4_payload(&h, 120, 99), None);
        // Not IPv4, header length below 20 or above the total, wrong protocol, short.
        let mut bad = h;
        bad[0] = 0x65;
        assert_eq!(ipv4_payload(&bad, 120, 100), None);
        bad[0] = 0x44;
        assert_eq!(ipv4_payload(&bad, 120, 100), None);
        bad = h;
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(ipv4_payload(&bad, 120, 100), None);
        bad = h;
        bad[9] = 6;
        assert_eq!(ipv4_payload(&bad, 120, 100), None);
        assert_eq!(ipv4_payload(&h, 19, 100), None);
        for b in 0..=255u8 {
            let mut any = [b; 20];
            any[9] = IPPROTO_HOMA;
            for len in [0, 19, 20, 60, 1000, 70_000] {
                if let Some((_, at, n)) = ipv4_payload(&any, len, 500) {
                    assert!(at + n <= 500 && at + n + 20 <= len);
                }
            }
        }
    }

    /// Without CAP_NET_RAW, opening fails with an error that says what is missing.
    /// Capabilities are per thread on Linux: drop CAP_NET_RAW from a scratch thread.
    #[test]
    fn raw_without_cap_net_raw_fails_clearly() {
        std::thread::spawn(|| {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy, Default)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut header = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            // SAFETY: capget writes two `Data` records (version 3) and may update the
            // header's version; both point at live, correctly sized locals.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_capget,
                    std::ptr::from_mut(&mut header),
                    data.as_mut_ptr(),
                )
            };
            assert_eq!(r, 0);
            data[0].effective &= !(1 << 13); // CAP_NET_RAW
                                             // SAFETY: as above; capset only reads them. It affects this thread only.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_capset,
                    std::ptr::from_mut(&mut header),
                    data.as_ptr(),
                )
            };
            assert_eq!(r, 0);
            let err = RawTransport::open(&options(Family::V4, None)).unwrap_err();
            match err {
                crate::Error::Io { context, source } => {
                    assert_eq!(context, NEEDS_CAP_NET_RAW);
                    assert_eq!(source.raw_os_error(), Some(libc::EPERM));
                }
                other => panic!("{other}"),
            }
        })
        .join()
        .unwrap();
    }
}

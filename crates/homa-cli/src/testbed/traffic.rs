//! The checks' traffic: UDP sockets created inside a namespace, a paced or blocking
//! flood, a sink that counts what arrives, an echo responder and RTT probes.
//!
//! Every datagram starts with a 16-byte header: magic `HTB1`, a kind byte, the TOS the
//! sender used, two spare bytes, and a big-endian 64-bit sequence number.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::TestbedError;
use super::netns::in_netns;

/// The length of the header every datagram starts with.
pub(crate) const HEADER_BYTES: usize = 16;

const MAGIC: [u8; 4] = *b"HTB1";

/// Bytes of the IP header (no options, no extension headers).
fn ip_header(ipv6: bool) -> usize {
    if ipv6 {
        40
    } else {
        20
    }
}

/// Bytes of IP, UDP and Ethernet header around a UDP payload, as htb counts a frame.
pub(crate) fn frame_overhead(ipv6: bool) -> usize {
    ip_header(ipv6) + 8 + 14
}

/// The largest UDP payload that fits the MTU in one packet.
pub(crate) fn max_payload(mtu: usize, ipv6: bool) -> usize {
    mtu - ip_header(ipv6) - 8
}

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Flood or bulk data.
    Data = 0,
    /// An RTT probe (echoed).
    Probe = 1,
    /// The echo of a probe.
    Echo = 2,
}

/// A parsed datagram header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// What it is.
    pub(crate) kind: Kind,
    /// The TOS (IPv6 traffic class) the sender set.
    pub(crate) tos: u8,
    /// Its sequence number within its stream.
    pub(crate) seq: u64,
}

impl Header {
    /// Writes the header into the start of `buf` (at least [`HEADER_BYTES`] long).
    pub(crate) fn write(&self, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&MAGIC);
        buf[4] = self.kind as u8;
        buf[5] = self.tos;
        buf[6] = 0;
        buf[7] = 0;
        buf[8..16].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Reads a header; `None` if `buf` is not one of ours.
    pub(crate) fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_BYTES || buf[..4] != MAGIC {
            return None;
        }
        let kind = match buf[4] {
            0 => Kind::Data,
            1 => Kind::Probe,
            2 => Kind::Echo,
            _ => return None,
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&buf[8..16]);
        Some(Header {
            kind,
            tos: buf[5],
            seq: u64::from_be_bytes(seq),
        })
    }
}

/// Sets an integer socket option.
fn setsockopt_int(socket: &UdpSocket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives on the stack for the whole call and the length passed is its
    // size; `socket` keeps the descriptor open. setsockopt reads the option and writes
    // nothing of ours.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the TOS byte (IPv4) or traffic class (IPv6) of everything `socket` sends.
pub(crate) fn set_tos(socket: &UdpSocket, ipv6: bool, tos: u8) -> io::Result<()> {
    if ipv6 {
        setsockopt_int(
            socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            i32::from(tos),
        )
    } else {
        setsockopt_int(socket, libc::IPPROTO_IP, libc::IP_TOS, i32::from(tos))
    }
}

/// Sets the send buffer past `net.core.wmem_max` (root only); the kernel doubles it.
pub(crate) fn force_send_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    let value = i32::try_from(bytes).unwrap_or(i32::MAX);
    setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, value)
}

/// Sets the receive buffer past `net.core.rmem_max` (root only); the kernel doubles it.
pub(crate) fn force_receive_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    let value = i32::try_from(bytes).unwrap_or(i32::MAX);
    setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)
}

/// A UDP socket created inside namespace `netns`, bound to an ephemeral port of the
/// wildcard address of its IP version, with TOS `tos`.
pub(crate) fn udp_socket(netns: &str, ipv6: bool, tos: u8) -> Result<UdpSocket, TestbedError> {
    in_netns(netns, || {
        let any: IpAddr = if ipv6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0))
            .map_err(|e| TestbedError::io(format!("binding a UDP socket in {netns}"), e))?;
        set_tos(&socket, ipv6, tos)
            .map_err(|e| TestbedError::io(format!("setting TOS {tos:#04x} in {netns}"), e))?;
        Ok(socket)
    })
}

fn io_context(what: &str) -> impl FnOnce(io::Error) -> TestbedError + '_ {
    move |e| TestbedError::io(what, e)
}

/// How often the helper threads look at their stop flag while idle.
const POLL: Duration = Duration::from_millis(20);

/// A stream of equal-sized data datagrams from one socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloodSpec {
    /// UDP payload bytes per datagram.
    pub(crate) payload: usize,
    /// Wire rate to pace at (bits per second, frames as htb counts them); `None` sends
    /// as fast as the socket takes them (blocking when its send buffer is full).
    pub(crate) pace_bps: Option<u64>,
    /// Bytes of frame overhead counted for pacing (see [`frame_overhead`]).
    pub(crate) overhead: usize,
    /// The longest it runs even if never stopped.
    pub(crate) max_duration: Duration,
}

/// A running flood; [`Flood::stop`] ends it and says how many datagrams it sent.
#[derive(Debug)]
pub(crate) struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Flood {
    /// Starts sending from `socket` to `to`.
    pub(crate) fn start(socket: UdpSocket, to: SocketAddr, spec: FloodSpec) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (Arc::clone(&stop), Arc::clone(&sent));
        let thread = std::thread::spawn(move || flood_loop(&socket, to, spec, &stop2, &sent2));
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Datagrams sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flood; returns the datagrams sent, or the send error that ended it.
    pub(crate) fn stop(self) -> Result<u64, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    /// Waits for the flood to end by itself (its `max_duration`); returns the datagrams
    /// sent, or the send error that ended it.
    pub(crate) fn finish(mut self) -> Result<u64, TestbedError> {
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r.map_err(io_context("sending the flood"))?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(self.sent())
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flood_loop(
    socket: &UdpSocket,
    to: SocketAddr,
    spec: FloodSpec,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; spec.payload.max(HEADER_BYTES)];
    let start = Instant::now();
    // Pacing: datagram k is due at `base + k * gap`; after a stall of more than 10 ms the
    // schedule restarts instead of bursting to catch up.
    let gap = spec.pace_bps.map(|bps| {
        let bits = ((spec.payload + spec.overhead) * 8) as f64;
        Duration::from_secs_f64(bits / bps.max(1) as f64)
    });
    let (mut base, mut k) = (start, 0u32);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < spec.max_duration {
        if let Some(gap) = gap {
            let due = base + gap * k;
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                std::thread::sleep(due - now);
            } else if now > due + Duration::from_millis(10) {
                (base, k) = (now, 0);
            }
            k = k.wrapping_add(1);
        }
        Header {
            kind: Kind::Data,
            tos: 0,
            seq,
        }
        .write(&mut buf);
        match socket.send_to(&buf, to) {
            Ok(_) => {}
            // A full qdisc or neighbour queue: the packet is lost, as on a real port.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
        seq += 1;
        sent.store(seq, Ordering::Relaxed);
    }
    Ok(())
}

/// What a [`Sink`] received.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SinkStats {
    /// Data datagrams received.
    pub(crate) packets: u64,
    /// When the first arrived.
    pub(crate) first: Option<Instant>,
    /// When the last arrived.
    pub(crate) last: Option<Instant>,
}

impl SinkStats {
    /// The arrival rate in frames of `frame_bytes` bytes over [first, last], bits per
    /// second; `None` with fewer than two datagrams.
    pub(crate) fn rate_bps(&self, frame_bytes: usize) -> Option<f64> {
        let span = self.last?.duration_since(self.first?).as_secs_f64();
        (self.packets >= 2 && span > 0.0)
            .then(|| (self.packets - 1) as f64 * frame_bytes as f64 * 8.0 / span)
    }
}

/// A thread that receives and counts data datagrams until stopped.
#[derive(Debug)]
pub(crate) struct Sink {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<SinkStats>>>,
}

impl Sink {
    /// Starts receiving on `socket`.
    pub(crate) fn start(socket: UdpSocket) -> Result<Sink, TestbedError> {
        socket
            .set_read_timeout(Some(POLL))
            .map_err(io_context("setting the sink's read timeout"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (Arc::clone(&stop), Arc::clone(&received));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut stats = SinkStats::default();
            while !stop2.load(Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        if Header::read(&buf[..n]).is_some_and(|h| h.kind == Kind::Data) {
                            let now = Instant::now();
                            stats.first.get_or_insert(now);
                            stats.last = Some(now);
                            stats.packets += 1;
                            received2.store(stats.packets, Ordering::Relaxed);
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(stats)
        });
        Ok(Sink {
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// Data datagrams received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops receiving and returns the counts.
    pub(crate) fn stop(mut self) -> Result<SinkStats, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(io_context("receiving in the sink")),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(SinkStats::default()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A thread that answers every probe with a header-only echo carrying the probe's
/// sequence number, sent with the probe's TOS.
#[derive(Debug)]
pub(crate) struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl Echo {
    /// Starts answering on `socket` (of IP version `ipv6`).
    pub(crate) fn start(socket: UdpSocket, ipv6: bool) -> Result<Echo, TestbedError> {
        socket
            .set_read_timeout(Some(POLL))
            .map_err(io_context("setting the echo's read timeout"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut tos = None;
            let mut answered = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e),
                };
                let Some(h) = Header::read(&buf[..n]).filter(|h| h.kind == Kind::Probe) else {
                    continue;
                };
                if tos != Some(h.tos) {
                    set_tos(&socket, ipv6, h.tos)?;
                    tos = Some(h.tos);
                }
                let mut reply = [0u8; HEADER_BYTES];
                Header {
                    kind: Kind::Echo,
                    ..h
                }
                .write(&mut reply);
                match socket.send_to(&reply, from) {
                    Ok(_) => answered += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(answered)
        });
        Ok(Echo {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops answering; returns how many probes were answered.
    pub(crate) fn stop(mut self) -> Result<u64, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(io_context("answering probes")),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(0),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A series of RTT probes to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeSpec {
    /// How many.
    pub(crate) count: u32,
    /// UDP payload bytes of each probe.
    pub(crate) payload: usize,
    /// Time between two probes.
    pub(crate) interval: Duration,
    /// How long after the last probe to wait for the echoes still missing.
    pub(crate) timeout: Duration,
}

/// The round-trip times of the echoes that came back.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeResult {
    /// Probes sent.
    pub(crate) sent: u32,
    /// RTT of each echoed probe, sorted.
    pub(crate) rtts: Vec<Duration>,
}

impl ProbeResult {
    /// Probes whose echo never came (dropped by a full queue, or later than the timeout).
    pub(crate) fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.rtts.len() as u32)
    }

    /// The `q`-quantile RTT (0.5 = median), nearest rank; `None` without echoes.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.rtts, q)
    }
}

/// The `q`-quantile of sorted `values` by nearest rank; `None` if empty.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sends `spec.count` probes from `socket` (its TOS already set) to the echo at `to`,
/// and measures each one's RTT.
pub(crate) fn probe(
    socket: &UdpSocket,
    to: SocketAddr,
    tos: u8,
    spec: ProbeSpec,
) -> Result<ProbeResult, TestbedError> {
    let receiver = socket
        .try_clone()
        .map_err(io_context("cloning the probe socket"))?;
    receiver
        .set_read_timeout(Some(POLL))
        .map_err(io_context("setting the probe socket's read timeout"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let thread = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            match receiver.recv(&mut buf) {
                Ok(n) => {
                    let now = Instant::now();
                    if let Some(h) = Header::read(&buf[..n]).filter(|h| h.kind == Kind::Echo) {
                        if tx.send((h.seq, now)).is_err() {
                            break;
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let result = send_and_collect(socket, to, tos, spec, &rx);
    stop.store(true, Ordering::Relaxed);
    let joined = thread.join();
    let mut result = result?;
    match joined {
        Ok(r) => r.map_err(io_context("receiving echoes"))?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    result.rtts.sort();
    Ok(result)
}

fn send_and_collect(
    socket: &UdpSocket,
    to: SocketAddr,
    tos: u8,
    spec: ProbeSpec,
    echoes: &mpsc::Receiver<(u64, Instant)>,
) -> Result<ProbeResult, TestbedError> {
    let mut buf = vec![0u8; spec.payload.max(HEADER_BYTES)];
    let mut sent_at: Vec<Option<Instant>> = Vec::with_capacity(spec.count as usize);
    let mut arrived: Vec<Option<Instant>> = vec![None; spec.count as usize];
    let start = Instant::now();
    for seq in 0..spec.count {
        let due = start + spec.interval * seq;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Header {
            kind: Kind::Probe,
            tos,
            seq: u64::from(seq),
        }
        .write(&mut buf);
        let now = Instant::now();
        match socket.send_to(&buf, to) {
            Ok(_) => sent_at.push(Some(now)),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => sent_at.push(None),
            Err(e) => return Err(TestbedError::io(format!("sending a probe to {to}"), e)),
        }
    }
    let deadline = Instant::now() + spec.timeout;
    let mut missing = sent_at.iter().filter(|s| s.is_some()).count();
    while missing > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match echoes.recv_timeout(left) {
            Ok((seq, at)) => {
                if let Some(slot) = arrived.get_mut(seq as usize).filter(|s| s.is_none()) {
                    *slot = Some(at);
                    missing -= 1;
                }
            }
            Err(_) => break,
        }
    }
    let rtts = sent_at
        .iter()
        .zip(&arrived)
        .filter_map(|(s, a)| Some(a.as_ref()?.duration_since(*s.as_ref()?)))
        .collect();
    Ok(ProbeResult {
        sent: spec.count,
        rtts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_strangers() {
        let h = Header {
            kind: Kind::Probe,
            tos: 0xE0,
            seq: 0x0102_0304_0506_0708,
        };
        let mut buf = [0u8; 32];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::read(&buf[..15]), None);
        let mut bad = buf;
        bad[0] = b'X';
        assert_eq!(Header::read(&bad), None);
        let mut bad = buf;
        bad[4] = 9;
        assert_eq!(Header::read(&bad), None);
    }

    #[test]
    fn payload_and_frame_sizes_fill_the_mtu() {
        assert_eq!(max_payload(1500, false), 1472);
        assert_eq!(max_payload(1500, true), 1452);
        assert_eq!(1472 + frame_overhead(false), 1514);
        assert_eq!(1452 + frame_overhead(true), 1514);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(5)));
        assert_eq!(quantile(&v, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(10)));
        assert_eq!(quantile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
        let r = ProbeResult { sent: 12, rtts: v };
        assert_eq!(r.lost(), 2);
    }

    #[test]
    fn sink_rate_counts_frames_between_first_and_last() {
        let t0 = Instant::now();
        let s = SinkStats {
            packets: 1001,
            first: Some(t0),
            last: Some(t0 + Duration::from_millis(100)),
        };
        // 1000 gaps of 1514 bytes in 0.1 s = 121.12 Mbit/s.
        let rate = s.rate_bps(1514).unwrap();
        assert!((rate - 121_120_000.0).abs() < 1.0, "{rate}");
        assert_eq!(SinkStats::default().rate_bps(1514), None);
        let one = SinkStats {
            packets: 1,
            first: Some(t0),
            last: Some(t0),
        };
        assert_eq!(one.rate_bps(1514), None);
    }

    /// The traffic pieces work over loopback (no namespace, no root): probes are echoed
    /// with their sequence numbers, a blocking flood reaches a sink.
    #[test]
    fn probes_echo_and_flood_reaches_sink_over_loopback() {
        let local = |s: &UdpSocket| s.local_addr().unwrap();
        let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_socket = bind();
        let echo_addr = local(&echo_socket);
        let echo = Echo::start(echo_socket, false).unwrap();
        let prober = bind();
        let spec = ProbeSpec {
            count: 5,
            payload: 100,
            interval: Duration::ZERO,
            timeout: Duration::from_secs(30),
        };
        let r = probe(&prober, echo_addr, 0, spec).unwrap();
        assert_eq!((r.sent, r.rtts.len()), (5, 5), "{r:?}");
        assert_eq!(echo.stop().unwrap(), 5);

        let sink_socket = bind();
        let sink_addr = local(&sink_socket);
        let sink = Sink::start(sink_socket).unwrap();
        let flood = Flood::start(
            bind(),
            sink_addr,
            FloodSpec {
                payload: 200,
                pace_bps: Some(10_000_000),
                overhead: frame_overhead(false),
                max_duration: Duration::from_secs(60),
            },
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.received() < 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent = flood.stop().unwrap();
        let got = sink.stop().unwrap();
        assert!(got.packets >= 50, "the sink got {got:?} of {sent}");
        assert!(got.packets <= sent, "{got:?} of {sent}");
        assert!(got.first.unwrap() <= got.last.unwrap());
    }
}

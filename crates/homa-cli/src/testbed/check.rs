//! The checks run on a new rack before anything is measured on it:
//! 1. a bulk UDP transfer host 0 → host 1 runs at about the link rate (measured at the
//!    receiver);
//! 2. a high-priority probe overtakes a standing low-priority queue at the switch port
//!    toward host 1, while a low-priority probe waits behind it.
//!
//! The flood of check 2 is sent from the switch namespace itself (standing in for the
//! rest of the fabric behind the switch), paced at [`FLOOD_OVERLOAD`] × the link rate.
//! A host cannot do it alone: its own egress is shaped to the link rate, so its flood
//! arrives at the switch port exactly as fast as the port drains and the queue would
//! stand in the host's own egress instead. Probes go from host 0 (idle egress) to an echo
//! on host 1, so the only queue on their path is the switch port's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::error::TestbedError;
use super::rack::{switch_port, Rack, HOST_DEV, MTU};
use super::shaping::{read_port_stats, tos, Counters};
use super::traffic::{
    force_receive_buffer, force_send_buffer, frame_overhead, max_payload, probe, udp_socket, Echo,
    Flood, FloodSpec, ProbeResult, ProbeSpec, Sink, HEADER_BYTES,
};

/// The flood of the priority check arrives at this multiple of the link rate.
pub(crate) const FLOOD_OVERLOAD: f64 = 1.5;

/// The bulk check passes when the receiver sees this fraction of the link rate or more …
pub(crate) const BULK_MIN_FRACTION: f64 = 0.9;

/// … and no more than this (shaping that lets more through is broken too).
pub(crate) const BULK_MAX_FRACTION: f64 = 1.05;

/// The TOS of the high-priority probes (level 7).
pub(crate) const HIGH_TOS: u8 = 0xE0;

/// The TOS of the low-priority probes and of the flood (level 0).
pub(crate) const LOW_TOS: u8 = 0x00;

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The emulation does what it should.
    Pass,
    /// It does not; why.
    Fail(String),
    /// The check could not tell (e.g. no standing queue formed); why.
    Inconclusive(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => write!(f, "PASS"),
            Verdict::Fail(why) => write!(f, "FAIL: {why}"),
            Verdict::Inconclusive(why) => write!(f, "INCONCLUSIVE: {why}"),
        }
    }
}

/// What the bulk check measured.
#[derive(Debug, Clone)]
pub(crate) struct BulkResult {
    /// Sending host and receiving host.
    pub(crate) from: usize,
    /// The receiving host.
    pub(crate) to: usize,
    /// How long the sender sent.
    pub(crate) duration: Duration,
    /// UDP payload of each datagram.
    pub(crate) payload: usize,
    /// Datagrams the sender handed to its socket.
    pub(crate) sent: u64,
    /// Datagrams the receiver got.
    pub(crate) received: u64,
    /// The receiver's arrival rate in frames (IP packet + Ethernet header), bit/s.
    pub(crate) wire_bps: Option<f64>,
    /// `wire_bps` / the link rate.
    pub(crate) fraction: Option<f64>,
    /// The sender's egress during the run (drops, packets).
    pub(crate) sender_egress: Counters,
    /// The switch port toward the receiver during the run.
    pub(crate) switch_port: Counters,
}

impl BulkResult {
    /// Pass when the fraction is in [`BULK_MIN_FRACTION`, `BULK_MAX_FRACTION`].
    pub(crate) fn verdict(&self) -> Verdict {
        match self.fraction {
            None => Verdict::Fail(format!(
                "the receiver got {} datagrams of {} sent",
                self.received, self.sent
            )),
            Some(f) if (BULK_MIN_FRACTION..=BULK_MAX_FRACTION).contains(&f) => Verdict::Pass,
            Some(f) => Verdict::Fail(format!(
                "{f:.3} of the link rate, outside {BULK_MIN_FRACTION}..={BULK_MAX_FRACTION}"
            )),
        }
    }
}

/// Runs the bulk check: `duration` of blocking UDP sends of full-MTU datagrams from host
/// `from` to host `to`, counted at the receiver.
pub(crate) fn bulk(
    rack: &Rack,
    from: usize,
    to: usize,
    duration: Duration,
) -> Result<BulkResult, TestbedError> {
    let (src, dst) = (&rack.hosts[from], &rack.hosts[to]);
    let payload = max_payload(MTU as usize, false);
    let receiver = udp_socket(&dst.netns, false, LOW_TOS)?;
    force_receive_buffer(&receiver, 8 << 20)
        .map_err(|e| TestbedError::io("setting the bulk receiver's buffer", e))?;
    let to_addr = SocketAddr::new(dst.addr(false), local_port(&receiver)?);
    let sender = udp_socket(&src.netns, false, LOW_TOS)?;
    // The sender blocks once its buffer is full; keep what it can queue in its own egress
    // below the port buffer (the kernel doubles the value and counts truesize), so the
    // egress queue never overflows and the sender never spins on silent drops.
    let sndbuf = (rack.shaping.buffer_bytes / 2).clamp(4096, 8 << 20) as usize;
    force_send_buffer(&sender, sndbuf)
        .map_err(|e| TestbedError::io("setting the bulk sender's buffer", e))?;
    let port = switch_port(to);
    let egress_before = read_port_stats(&src.netns, HOST_DEV)?.total();
    let port_before = read_port_stats(&rack.switch, &port)?.total();
    let sink = Sink::start(receiver)?;
    let flood = Flood::start(
        sender,
        to_addr,
        FloodSpec {
            payload,
            pace_bps: None,
            overhead: frame_overhead(false),
            max_duration: duration,
        },
    );
    let sent = flood.finish()?;
    // What the sender's egress still holds arrives at the link rate after it stopped:
    // count it too, until nothing has come for 50 ms (bounded by 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = sink.received();
        std::thread::sleep(Duration::from_millis(50));
        if sink.received() == seen || std::time::Instant::now() >= deadline {
            break;
        }
    }
    let stats = sink.stop()?;
    let egress = read_port_stats(&src.netns, HOST_DEV)?.total();
    let port_after = read_port_stats(&rack.switch, &port)?.total();
    let frame = payload + frame_overhead(false);
    let wire_bps = stats.rate_bps(frame);
    Ok(BulkResult {
        from,
        to,
        duration,
        payload,
        sent,
        received: stats.packets,
        wire_bps,
        fraction: wire_bps.map(|r| r / rack.shaping.link_bps as f64),
        sender_egress: egress.since(&egress_before),
        switch_port: port_after.since(&port_before),
    })
}

fn local_port(socket: &std::net::UdpSocket) -> Result<u16, TestbedError> {
    socket
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TestbedError::io("reading a socket's port", e))
}

/// What the priority check measured.
#[derive(Debug, Clone)]
pub(crate) struct PriorityResult {
    /// The host probing.
    pub(crate) prober: usize,
    /// The host whose switch port is flooded (and that echoes the probes).
    pub(crate) target: usize,
    /// UDP payload of each probe (the echo is header-only).
    pub(crate) probe_payload: usize,
    /// TOS 0xE0 probes on the idle rack.
    pub(crate) unloaded_high: ProbeResult,
    /// TOS 0 probes on the idle rack.
    pub(crate) unloaded_low: ProbeResult,
    /// TOS 0xE0 probes during the flood.
    pub(crate) flood_high: ProbeResult,
    /// TOS 0 probes during the flood.
    pub(crate) flood_low: ProbeResult,
    /// Whether the level-0 queue reached the fill mark before the probes.
    pub(crate) filled: bool,
    /// The port's level-0 class when the probes started (its backlog is the queue).
    pub(crate) queue_at_probes: Counters,
    /// The port's level-7 class over the flood (the high probes through it).
    pub(crate) high_class: Counters,
    /// The whole port over the flood (sent, drops; backlog at the end).
    pub(crate) port: Counters,
    /// Flood datagrams sent.
    pub(crate) flood_sent: u64,
}

impl PriorityResult {
    /// Pass when the high-priority median under flood is under half the low one (or
    /// every low probe was lost in the full queue while high ones came back);
    /// inconclusive when no standing queue formed.
    pub(crate) fn verdict(&self) -> Verdict {
        let standing = self.queue_at_probes.backlog_packets >= 4 || self.port.dropped > 0;
        if !standing {
            return Verdict::Inconclusive(
                "no standing queue formed at the switch port (the flood could not \
                 outrun the link: try a lower --link-mbps)"
                    .into(),
            );
        }
        let Some(high) = self.flood_high.quantile(0.5) else {
            return Verdict::Fail("no high-priority probe came back during the flood".into());
        };
        match self.flood_low.quantile(0.5) {
            None => Verdict::Pass,
            Some(low) if high * 2 < low => Verdict::Pass,
            Some(low) => Verdict::Fail(format!(
                "high-priority median {} is not under half the low-priority one {}",
                micros(high),
                micros(low)
            )),
        }
    }
}

/// A duration in µs (or ms from 10 ms on), for reports.
pub(crate) fn micros(d: std::time::Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} us", d.as_secs_f64() * 1e6)
    }
}

/// Runs the priority check: probes host `prober` → host `target` idle, then during a
/// level-0 flood from the switch into the port toward `target`.
pub(crate) fn priority(
    rack: &Rack,
    prober: usize,
    target: usize,
) -> Result<PriorityResult, TestbedError> {
    let (src, dst) = (&rack.hosts[prober], &rack.hosts[target]);
    let link_bps = rack.shaping.link_bps;
    let buffer = rack.shaping.buffer_bytes;
    let probe_payload = max_payload(MTU as usize, false);

    let echo_socket = udp_socket(&dst.netns, false, LOW_TOS)?;
    let echo_addr = SocketAddr::new(dst.addr(false), local_port(&echo_socket)?);
    let echo = Echo::start(echo_socket, false)?;
    let high = udp_socket(&src.netns, false, HIGH_TOS)?;
    let low = udp_socket(&src.netns, false, LOW_TOS)?;

    // A full queue drains in `drain`; probes wait for their echo that long and more.
    let drain = Duration::from_secs_f64(buffer as f64 * 8.0 / link_bps as f64);
    let idle_spec = ProbeSpec {
        count: 20,
        payload: probe_payload,
        interval: Duration::from_millis(2),
        timeout: Duration::from_secs(1),
    };
    // Warm-up: resolves every neighbour entry on the path and warms the caches; the
    // RTTs are dropped.
    for (socket, level) in [(&high, 7), (&low, 0)] {
        probe(
            socket,
            echo_addr,
            tos(level),
            ProbeSpec {
                count: 5,
                ..idle_spec
            },
        )?;
    }
    let unloaded_high = probe(&high, echo_addr, tos(7), idle_spec)?;
    let unloaded_low = probe(&low, echo_addr, tos(0), idle_spec)?;

    let port = switch_port(target);
    let before = read_port_stats(&rack.switch, &port)?;
    let sink_socket = udp_socket(&dst.netns, false, LOW_TOS)?;
    let sink_addr = SocketAddr::new(dst.addr(false), local_port(&sink_socket)?);
    let sink = Sink::start(sink_socket)?;
    let flood_socket = udp_socket(&rack.switch, false, LOW_TOS)?;
    // Never blocked by its own buffer: the port's bfifo decides what is dropped.
    force_send_buffer(&flood_socket, (4 * buffer as usize).max(1 << 20))
        .map_err(|e| TestbedError::io("setting the flood's send buffer", e))?;
    let fill =
        Duration::from_secs_f64(buffer as f64 * 8.0 / ((FLOOD_OVERLOAD - 1.0) * link_bps as f64));
    let flood_spec = FloodSpec {
        payload: probe_payload,
        pace_bps: Some((link_bps as f64 * FLOOD_OVERLOAD) as u64),
        overhead: frame_overhead(false),
        // Far past the probes; the flood is stopped as soon as they are done.
        max_duration: Duration::from_secs(30) + 4 * (fill + drain),
    };
    let flood = Flood::start(flood_socket, sink_addr, flood_spec);

    // Bounded polling for the standing queue: until the level-0 class holds 3/4 of the
    // buffer (or drops), or four fill times and 2 s have passed.
    let fill_mark = buffer * 3 / 4;
    let deadline = Instant::now() + Duration::from_secs(2) + 4 * fill;
    let mut filled = false;
    while Instant::now() < deadline {
        let level0 = read_port_stats(&rack.switch, &port)?
            .level(0)
            .since(&before.level(0));
        if level0.backlog_bytes >= fill_mark || level0.dropped > 0 {
            filled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let queue_at_probes = read_port_stats(&rack.switch, &port)?
        .level(0)
        .since(&before.level(0));
    let flood_probe = ProbeSpec {
        count: 20,
        payload: probe_payload,
        interval: Duration::from_millis(5),
        timeout: 2 * drain + Duration::from_millis(500),
    };
    let flood_high = probe(&high, echo_addr, tos(7), flood_probe)?;
    let flood_low = probe(&low, echo_addr, tos(0), flood_probe)?;
    let after = read_port_stats(&rack.switch, &port)?;
    let flood_sent = flood.stop()?;
    sink.stop()?;
    echo.stop()?;
    Ok(PriorityResult {
        prober,
        target,
        probe_payload,
        unloaded_high,
        unloaded_low,
        flood_high,
        flood_low,
        filled,
        queue_at_probes,
        high_class: after.level(7).since(&before.level(7)),
        port: after.total().since(&before.total()),
        flood_sent,
    })
}

/// The unloaded RTT of full-size level-7 probes from host `from` to an echo on host
/// `to` (after warm-up probes), for the RTT-bytes when the checks are skipped: what the
/// priority check measures first.
pub(crate) fn path_rtt(rack: &Rack, from: usize, to: usize) -> Result<ProbeResult, TestbedError> {
    let (src, dst) = (&rack.hosts[from], &rack.hosts[to]);
    let echo_socket = udp_socket(&dst.netns, false, LOW_TOS)?;
    let echo_addr = SocketAddr::new(dst.addr(false), local_port(&echo_socket)?);
    let echo = Echo::start(echo_socket, false)?;
    let high = udp_socket(&src.netns, false, HIGH_TOS)?;
    let spec = ProbeSpec {
        count: 20,
        payload: max_payload(MTU as usize, false),
        interval: Duration::from_millis(2),
        timeout: Duration::from_secs(1),
    };
    probe(&high, echo_addr, tos(7), ProbeSpec { count: 5, ..spec })?;
    let result = probe(&high, echo_addr, tos(7), spec)?;
    echo.stop()?;
    Ok(result)
}

/// The payload of a probe's echo: the header only.
pub(crate) const ECHO_PAYLOAD: usize = HEADER_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_with(fraction: Option<f64>) -> BulkResult {
        BulkResult {
            from: 0,
            to: 1,
            duration: Duration::from_secs(1),
            payload: 1472,
            sent: 8000,
            received: 7900,
            wire_bps: fraction.map(|f| f * 1e8),
            fraction,
            sender_egress: Counters::default(),
            switch_port: Counters::default(),
        }
    }

    #[test]
    fn bulk_verdict_wants_about_the_link_rate() {
        assert_eq!(bulk_with(Some(0.97)).verdict(), Verdict::Pass);
        assert_eq!(bulk_with(Some(1.05)).verdict(), Verdict::Pass);
        assert!(matches!(bulk_with(Some(0.5)).verdict(), Verdict::Fail(_)));
        assert!(matches!(bulk_with(Some(1.3)).verdict(), Verdict::Fail(_)));
        assert!(matches!(bulk_with(None).verdict(), Verdict::Fail(_)));
    }

    fn probes(ms: &[u64], sent: u32) -> ProbeResult {
        ProbeResult {
            sent,
            rtts: ms.iter().map(|&m| Duration::from_micros(m)).collect(),
        }
    }

    fn priority_with(
        high: ProbeResult,
        low: ProbeResult,
        backlog: u64,
        drops: u64,
    ) -> PriorityResult {
        PriorityResult {
            prober: 0,
            target: 1,
            probe_payload: 1472,
            unloaded_high: probes(&[40, 41], 2),
            unloaded_low: probes(&[40, 41], 2),
            flood_high: high,
            flood_low: low,
            filled: backlog > 0,
            queue_at_probes: Counters {
                backlog_packets: backlog,
                backlog_bytes: backlog * 1514,
                ..Counters::default()
            },
            high_class: Counters::default(),
            port: Counters {
                dropped: drops,
                ..Counters::default()
            },
            flood_sent: 1000,
        }
    }

    #[test]
    fn priority_verdict_compares_high_and_low_under_a_standing_queue() {
        let fast = probes(&[50, 60, 70], 3);
        let slow = probes(&[21_000, 21_500], 3);
        assert_eq!(
            priority_with(fast.clone(), slow.clone(), 170, 10).verdict(),
            Verdict::Pass
        );
        // Every low probe lost in the full queue, high ones through: pass.
        assert_eq!(
            priority_with(fast.clone(), probes(&[], 3), 170, 10).verdict(),
            Verdict::Pass
        );
        // High as slow as low: fail.
        assert!(matches!(
            priority_with(slow.clone(), slow.clone(), 170, 0).verdict(),
            Verdict::Fail(_)
        ));
        // No high probe came back: fail.
        assert!(matches!(
            priority_with(probes(&[], 3), slow.clone(), 170, 0).verdict(),
            Verdict::Fail(_)
        ));
        // No standing queue: cannot tell.
        assert!(matches!(
            priority_with(fast, slow, 1, 0).verdict(),
            Verdict::Inconclusive(_)
        ));
    }

    #[test]
    fn durations_print_in_us_or_ms() {
        assert_eq!(micros(Duration::from_micros(42)), "42 us");
        assert_eq!(micros(Duration::from_micros(21_340)), "21.3 ms");
    }
}

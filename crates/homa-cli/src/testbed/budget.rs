//! A path's RTT-bytes (link rate × unloaded RTT): what Homa's `unsched_bytes` and grant
//! `window` should cover so that a sender keeps the link busy until the receiver's first
//! grant arrives.

use std::time::Duration;

/// Bytes a link of `link_bps` bits per second carries in `rtt`, rounded up.
pub(crate) fn rtt_bytes(link_bps: u64, rtt: Duration) -> u64 {
    let bits = u128::from(link_bps).saturating_mul(rtt.as_nanos());
    u64::try_from(bits.div_ceil(8 * 1_000_000_000)).unwrap_or(u64::MAX)
}

/// The time to serialise `frame_bytes` on a link of `link_bps`.
pub(crate) fn serialisation(link_bps: u64, frame_bytes: usize) -> Duration {
    let nanos = (frame_bytes as u128 * 8 * 1_000_000_000).div_ceil(u128::from(link_bps.max(1)));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The serialisation part of a round trip through the rack: a data frame of
/// `data_frame` bytes over `hops` links one way, a reply of `reply_frame` bytes back.
///
/// The emulated links do not delay an isolated packet by its serialisation time (htb lets
/// a packet through at once while the class has a burst's worth of tokens), so a probe
/// RTT measured on an idle rack lacks it; [`PathBudget::new`] adds it back.
pub(crate) fn serialisation_rtt(
    link_bps: u64,
    hops: u32,
    data_frame: usize,
    reply_frame: usize,
) -> Duration {
    (serialisation(link_bps, data_frame) + serialisation(link_bps, reply_frame)) * hops
}

/// How Homa's packets travel, for their header sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encapsulation {
    /// In UDP datagrams (8 more header bytes).
    Udp,
    /// As IP protocol 146.
    RawIp,
}

/// The DATA payload of one full Homa packet on a path of `mtu` bytes: the MTU less the IP
/// header (20 bytes IPv4, 40 IPv6), the UDP header (8) when Homa travels in UDP, and
/// Homa's DATA header (56). At MTU 1500: 1416 (UDP/IPv4), 1396 (UDP/IPv6), 1424 (raw
/// IPv4, PROTOCOL.md's segments), 1404 (raw IPv6).
pub(crate) fn segment_bytes(mtu: u32, encapsulation: Encapsulation, ipv6: bool) -> u64 {
    let ip = if ipv6 { 40 } else { 20 };
    let udp = match encapsulation {
        Encapsulation::Udp => 8,
        Encapsulation::RawIp => 0,
    };
    let headers = ip + udp + homa_proto::wire::DATA_HEADER_LEN as u64;
    u64::from(mtu).saturating_sub(headers).max(1)
}

/// Homa's loss timers for a path whose ports queue up to `queue_bytes` per priority class.
///
/// The kernel's 5 ms `resend_ticks` assume a datacenter link, where a full switch buffer
/// drains in well under a millisecond. On a slow emulated link a granted message that is
/// merely queued stays silent far longer (a 256 KiB class buffer takes 21 ms at
/// 100 Mbit/s), so the kernel's timer asks for data that is not lost: the RESENDs bring
/// retransmissions at the highest priority (PROTOCOL.md 4.2), which fill the very queues
/// that caused the silence. The timers therefore scale with the path: the first RESEND
/// comes after the longest a packet can legitimately sit in the path's two queues (a full
/// class buffer draining at the sender's egress and again at the switch port) plus the
/// kernel's own 5 ticks, so on a fast link they are the kernel's; RESEND rounds repeat at
/// the same interval; an RPC is aborted after 20 of those intervals, the kernel's ratio
/// of `timeout_ticks` to `resend_ticks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathTimers {
    /// The time one full class buffer takes to drain at the link rate.
    pub(crate) drain: Duration,
    /// `resend_ticks` and `resend_interval` (1 ms ticks).
    pub(crate) resend_ticks: u32,
    /// `timeout_ticks`.
    pub(crate) timeout_ticks: u32,
}

impl PathTimers {
    /// The timers of a path at `link_bps` whose ports hold `queue_bytes` per class.
    pub(crate) fn new(link_bps: u64, queue_bytes: u64) -> PathTimers {
        // The kernel's timers: the protocol's defaults (PROTOCOL.md), in 1 ms ticks.
        let kernel = homa_proto::Config::default();
        let drain = serialisation(link_bps, usize::try_from(queue_bytes).unwrap_or(usize::MAX));
        // Two queues on the path, to the nearest millisecond, plus the kernel's ticks.
        let ms = (drain.as_nanos().saturating_mul(2) + 500_000) / 1_000_000;
        let resend_ticks = within_range(
            "resend_ticks",
            u32::try_from(ms)
                .unwrap_or(u32::MAX)
                .saturating_add(kernel.resend_ticks()),
        );
        let ratio = kernel.timeout_ticks() / kernel.resend_ticks().max(1);
        PathTimers {
            drain,
            resend_ticks,
            timeout_ticks: within_range("timeout_ticks", resend_ticks.saturating_mul(ratio)),
        }
    }

    /// The settings as `--homa-set` pairs, in the order the servers and clients get them.
    pub(crate) fn settings(&self) -> [(&'static str, u32); 3] {
        [
            ("resend_ticks", self.resend_ticks),
            ("resend_interval", self.resend_ticks),
            ("timeout_ticks", self.timeout_ticks),
        ]
    }
}

/// `value` capped at the largest the protocol accepts for the tunable `name`
/// (`homa_proto::config::TUNABLES`), so that servers and clients never reject it.
fn within_range(name: &str, value: u32) -> u32 {
    homa_proto::config::TUNABLES
        .iter()
        .find(|t| t.name == name)
        .map_or(value, |t| {
            u32::try_from(u64::from(value).min(t.max)).unwrap_or(value)
        })
}

/// Homa's per-path settings derived from the path's RTT-bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathBudget {
    /// The round trip the budget covers: measured software RTT + serialisation.
    pub(crate) rtt: Duration,
    /// Link rate × `rtt`.
    pub(crate) rtt_bytes: u64,
    /// `unsched_bytes`: RTT-bytes rounded up to whole segments, at least one.
    pub(crate) unsched_bytes: u64,
    /// The grant `window`: the same amount (one RTT of data in flight per message).
    pub(crate) window: u64,
    /// The loss timers for the path's queues.
    pub(crate) timers: PathTimers,
}

impl PathBudget {
    /// The budget of a path with link rate `link_bps`, an unloaded probe RTT of
    /// `measured_rtt` (without serialisation, see [`serialisation_rtt`]) plus
    /// `serialisation` added to it, for DATA segments of `segment_bytes` payload, through
    /// ports of `queue_bytes` per class (for the [`PathTimers`]).
    pub(crate) fn new(
        link_bps: u64,
        measured_rtt: Duration,
        serialisation: Duration,
        segment_bytes: u64,
        queue_bytes: u64,
    ) -> PathBudget {
        let rtt = measured_rtt.saturating_add(serialisation);
        let rtt_bytes = rtt_bytes(link_bps, rtt);
        let segment = segment_bytes.max(1);
        let rounded = rtt_bytes.div_ceil(segment).max(1).saturating_mul(segment);
        PathBudget {
            rtt,
            rtt_bytes,
            unsched_bytes: rounded,
            window: rounded,
            timers: PathTimers::new(link_bps, queue_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_bytes_is_rate_times_time_rounded_up() {
        assert_eq!(rtt_bytes(100_000_000, Duration::from_micros(40)), 500);
        assert_eq!(rtt_bytes(1_000_000_000, Duration::from_micros(10)), 1250);
        assert_eq!(rtt_bytes(100_000_000, Duration::from_nanos(1)), 1);
        assert_eq!(rtt_bytes(100_000_000, Duration::ZERO), 0);
        assert_eq!(rtt_bytes(u64::MAX, Duration::MAX), u64::MAX);
    }

    #[test]
    fn serialisation_of_a_full_frame() {
        assert_eq!(
            serialisation(100_000_000, 1514),
            Duration::from_nanos(121_120)
        );
        assert_eq!(
            serialisation(1_000_000_000, 1514),
            Duration::from_nanos(12_112)
        );
        assert_eq!(
            serialisation_rtt(100_000_000, 2, 1514, 58),
            Duration::from_nanos(2 * (121_120 + 4640))
        );
        assert_eq!(serialisation(0, 1), Duration::from_secs(8));
    }

    #[test]
    fn segments_are_the_mtu_less_every_header() {
        assert_eq!(segment_bytes(1500, Encapsulation::Udp, false), 1416);
        assert_eq!(segment_bytes(1500, Encapsulation::Udp, true), 1396);
        assert_eq!(segment_bytes(1500, Encapsulation::RawIp, false), 1424);
        assert_eq!(segment_bytes(1500, Encapsulation::RawIp, true), 1404);
        assert_eq!(segment_bytes(9000, Encapsulation::Udp, false), 8916);
        assert_eq!(segment_bytes(10, Encapsulation::Udp, true), 1);
    }

    #[test]
    fn budget_rounds_up_to_whole_segments() {
        let b = PathBudget::new(
            100_000_000,
            Duration::from_micros(40),
            Duration::from_micros(252),
            1424,
            262_144,
        );
        assert_eq!(b.rtt, Duration::from_micros(292));
        assert_eq!(b.rtt_bytes, 3650);
        assert_eq!(b.unsched_bytes, 3 * 1424);
        assert_eq!(b.window, b.unsched_bytes);
        assert_eq!(b.timers, PathTimers::new(100_000_000, 262_144));
        // Never zero segments.
        let b = PathBudget::new(10_000_000, Duration::ZERO, Duration::ZERO, 1424, 0);
        assert_eq!((b.rtt_bytes, b.unsched_bytes), (0, 1424));
        let b = PathBudget::new(10_000_000, Duration::from_secs(1), Duration::ZERO, 0, 0);
        assert_eq!(b.unsched_bytes, 1_250_000);
    }

    #[test]
    fn timers_cover_two_full_queues_and_the_kernels_ticks() {
        // 256 KiB at 100 Mbit/s: 20.97 ms per drain, 42 ms for two, + 5.
        let t = PathTimers::new(100_000_000, 262_144);
        assert_eq!(t.drain, Duration::from_nanos(20_971_520));
        assert_eq!((t.resend_ticks, t.timeout_ticks), (47, 940));
        assert_eq!(
            t.settings(),
            [
                ("resend_ticks", 47),
                ("resend_interval", 47),
                ("timeout_ticks", 940)
            ]
        );
        // A fast link keeps the kernel's timers.
        let t = PathTimers::new(25_000_000_000, 262_144);
        assert_eq!((t.resend_ticks, t.timeout_ticks), (5, 100));
        // Absurd buffers stay inside the tunables' ranges.
        let t = PathTimers::new(1, u64::MAX);
        assert_eq!((t.resend_ticks, t.timeout_ticks), (100_000, 2_000_000));
    }
}

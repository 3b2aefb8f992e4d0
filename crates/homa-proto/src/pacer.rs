//! The sender's NIC-backlog pacer (PROTOCOL.md 3.5, the pacer-thread model), and the
//! choice of which message sends next (SRPT with the pacer's FIFO share).
//!
//! The engine keeps an estimate of when the NIC will have drained everything handed to
//! it so far (`link_idle`), at `link_mbps` under-estimated by 1 %. A DATA packet of a
//! message with more than `defer_min_bytes` left to send may go out only while the
//! estimated backlog is at most `max_nic_est_backlog_usecs`; otherwise the message waits
//! on the throttled list and [`Pacer::ready_at`] tells the driver when to come back.
//! Control packets, short messages and retransmissions are never deferred, but their
//! bytes are counted in the estimate.
//!
//! The allowed backlog is at least two full packets' wire time. The kernel's 5 µs hold
//! several frames at its link speeds (a 1500-byte frame takes 0.5 µs at 25 Gbit/s), but
//! on a slow link one frame outlasts it (121 µs at 100 Mbit/s): the NIC would then go
//! idle after every packet until the driver woke up to send the next, and a measured
//! 1 MB transfer over an emulated 100 Mbit/s link ran at 0.5 of the link rate. With two
//! frames allowed the next packet is always queued behind the one on the wire; on fast
//! links nothing changes.

use crate::engine::Engine;
use crate::region::Region;
use crate::wire::ETH_OVERHEAD;
use crate::{Config, Time};

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// When the NIC will have sent everything handed to it so far.
    link_idle: Time,
    /// Effective link rate in bits per microsecond (= Mbit/s), 99 % of `link_mbps`.
    rate_mbps: u64,
    /// Allowed estimated backlog, in nanoseconds.
    max_backlog_ns: u64,
    enabled: bool,
}

impl Pacer {
    /// The pacer of a socket whose largest IPv4 packet is `max_packet` Homa bytes.
    pub(crate) fn new(config: &Config, max_packet: usize) -> Self {
        let mut pacer = Pacer {
            link_idle: Time::ZERO,
            rate_mbps: (u64::from(config.link_mbps()) * 99 / 100).max(1),
            max_backlog_ns: 0,
            enabled: !config.dont_throttle(),
        };
        let configured = u64::from(config.max_nic_est_backlog_usecs()) * 1000;
        let two_frames = 2 * pacer.wire_ns(max_packet, 20);
        pacer.max_backlog_ns = configured.max(two_frames);
        pacer
    }

    /// Wire time of a packet of `packet_len` Homa bytes behind an IP header of `ip_header` bytes.
    fn wire_ns(&self, packet_len: usize, ip_header: usize) -> u64 {
        let bits = ((packet_len + ip_header + ETH_OVERHEAD) * 8) as u64;
        bits * 1000 / self.rate_mbps
    }

    /// Accounts a packet handed to the NIC at `now`.
    pub(crate) fn record(&mut self, now: Time, packet_len: usize, ip_header: usize) {
        let start = self.link_idle.max(now);
        self.link_idle = start.add_nanos(self.wire_ns(packet_len, ip_header));
    }

    /// Whether a deferrable packet may be sent at `now`.
    pub(crate) fn may_send(&self, now: Time) -> bool {
        !self.enabled || self.link_idle <= now.add_nanos(self.max_backlog_ns)
    }

    /// The earliest time a deferrable packet may be sent.
    pub(crate) fn ready_at(&self) -> Time {
        Time::from_nanos(
            self.link_idle
                .as_nanos()
                .saturating_sub(self.max_backlog_ns),
        )
    }
}

impl<R: Region> Engine<R> {
    /// Which RPC sends the next new DATA packet, if any may go now: the one with the
    /// fewest bytes left (sender SRPT, PROTOCOL.md 3.5); a packet of a message with more
    /// than `defer_min_bytes` left to a paced destination waits while the NIC backlog
    /// is too long, and `pacer_fifo_fraction` thousandths of such packets go to the
    /// oldest sendable message instead, so long messages cannot starve.
    pub(crate) fn pick_sendable(&mut self, now: Time) -> Option<u32> {
        let &(remaining, _, key) = self.sendable.first()?;
        let dest = self.rpcs.get(key)?.peer.ip();
        if remaining <= self.config.defer_min_bytes() || !self.paced(dest) {
            return Some(key);
        }
        if !self.pacer.may_send(now) {
            return None;
        }
        self.fifo_credit += self.config.pacer_fifo_fraction();
        if self.fifo_credit >= 1000 {
            self.fifo_credit -= 1000;
            if let Some(&(_, oldest)) = self.sendable_by_age.first() {
                return Some(oldest);
            }
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_beyond_the_limit_defers_until_it_drains() {
        let config = Config::builder().link_mbps(10_000).build().unwrap();
        let mut p = Pacer::new(&config, 1438);
        let now = Time::from_micros(100);
        assert!(p.may_send(now));
        // 1438 + 20 + 42 = 1500 bytes = 12000 bits at 9900 Mbit/s = 1212 ns each.
        for _ in 0..4 {
            p.record(now, 1438, 20);
        }
        assert!(p.may_send(now), "4.8 us of backlog is under 5 us");
        p.record(now, 1438, 20);
        assert!(!p.may_send(now), "6 us of backlog is over 5 us");
        let ready = p.ready_at();
        assert!(ready > now && p.may_send(ready));
        assert_eq!(ready.as_nanos(), now.as_nanos() + 5 * 1212 - 5000);
    }

    #[test]
    fn dont_throttle_never_defers() {
        let config = Config::builder().dont_throttle(true).build().unwrap();
        let mut p = Pacer::new(&config, 1438);
        for _ in 0..1000 {
            p.record(Time::ZERO, 1500, 20);
        }
        assert!(p.may_send(Time::ZERO));
    }

    #[test]
    fn a_slow_link_allows_two_frames_of_backlog() {
        // 1500-byte frames at 99 Mbit/s: 121,212 ns each, far over the 5 us configured.
        let config = Config::builder().link_mbps(100).build().unwrap();
        let mut p = Pacer::new(&config, 1438);
        let now = Time::from_micros(100);
        p.record(now, 1438, 20);
        assert!(p.may_send(now), "one frame on the wire, the next may queue");
        p.record(now, 1438, 20);
        assert!(p.may_send(now), "two frames are the allowance");
        p.record(now, 1438, 20);
        assert!(!p.may_send(now), "a third waits");
        assert_eq!(p.ready_at().as_nanos(), now.as_nanos() + 121_212);
    }
}

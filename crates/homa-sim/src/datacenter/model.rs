//! The arithmetic of the model: packetisation, the ideal (idle-network) time of a
//! message, the unloaded round-trip time, the arrival rate for a load, and the
//! workload-derived unscheduled priority cutoffs.

use homa_eval::workload::Distribution;
use homa_proto::wire::{DATA_HEADER_LEN, MAX_MESSAGE_LENGTH, MAX_PRIORITIES};

use super::config::{Cutoffs, DcConfig, LargeMessages, LoadBasis};
use crate::{DEFAULT_OVERHEAD, IPV4_HEADER_LEN};

/// Bytes of a GRANT packet (common header 28 + offset 4 + priority 1 + resend_all 1 + pad),
/// used only for the unloaded RTT estimate.
const GRANT_LEN: u64 = 36;

/// The numbers of the model that the ideal time and the engines' settings need, derived
/// once from a [`DcConfig`].
///
/// ```
/// use homa_sim::datacenter::{DcConfig, Model};
/// let m = Model::new(&DcConfig::default());
/// assert_eq!(m.max_seg, 1424); // 1500 - 20 (IP) - 56 (DATA header)
/// assert_eq!(m.unsched_bytes, 9968); // 10,000 RTT bytes rounded to 7 full packets
/// // A 100-byte message: 1 packet of 100 + 56 + 62 = 218 wire bytes (174.4 ns at
/// // 10 Gbit/s, 43.6 ns at 40 Gbit/s); 750 ns host delays and 250 ns switches.
/// let same_rack = 750.0 + 174.4 + 250.0 + 174.4 + 750.0;
/// assert!((m.ideal_ns(100, true) - same_rack).abs() < 1e-9);
/// let other_rack = same_rack + 2.0 * (250.0 + 43.6);
/// assert!((m.ideal_ns(100, false) - other_rack).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Host link rate, bit/s.
    pub host_bps: f64,
    /// Uplink rate, bit/s.
    pub uplink_bps: f64,
    /// Propagation latency per link, ns.
    pub latency_ns: f64,
    /// Switch delay, ns.
    pub switch_ns: f64,
    /// Host transmit delay, ns.
    pub tx_ns: f64,
    /// Host receive delay, ns.
    pub rx_ns: f64,
    /// Payload bytes per DATA packet: `mtu - 20 - 56`.
    pub max_seg: u32,
    /// Bytes a DATA packet adds to its payload on the wire: DATA header (56) + IPv4 (20)
    /// + Ethernet framing (42) = 118.
    pub per_packet: u32,
    /// The engines' `unsched_bytes` (and grant window): RTT bytes rounded to whole
    /// packets.
    pub unsched_bytes: u32,
    /// Longest Homa message a message is sent as (1,000,000; longer ones are split).
    pub piece: u32,
    /// Whether packets between racks are sprayed over the aggregation switches.
    pub spray: bool,
}

impl Model {
    /// The model of `cfg`.
    pub fn new(cfg: &DcConfig) -> Model {
        let max_seg = (cfg.mtu - IPV4_HEADER_LEN - DATA_HEADER_LEN) as u32;
        let packets = ((f64::from(cfg.rtt_bytes) / f64::from(max_seg)).round() as u32).max(1);
        let unsched_bytes = (packets * max_seg).min(MAX_MESSAGE_LENGTH);
        Model {
            host_bps: cfg.host_link_bps as f64,
            uplink_bps: cfg.uplink_bps as f64,
            latency_ns: cfg.link_latency.as_nanos() as f64,
            switch_ns: cfg.switch_delay.as_nanos() as f64,
            tx_ns: cfg.host_tx_delay.as_nanos() as f64,
            rx_ns: cfg.host_rx_delay.as_nanos() as f64,
            max_seg,
            per_packet: (DATA_HEADER_LEN + DEFAULT_OVERHEAD) as u32,
            unsched_bytes,
            piece: MAX_MESSAGE_LENGTH,
            spray: cfg.ecmp == crate::Ecmp::Spray,
        }
    }

    /// The Homa messages a message of `size` bytes is sent as: pieces of
    /// [`piece`](Model::piece) bytes and the rest.
    pub fn pieces(&self, size: u32) -> impl Iterator<Item = u32> + '_ {
        let mut left = size;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let p = left.min(self.piece);
            left -= p;
            Some(p)
        })
    }

    /// DATA packets of one Homa message of `len` bytes, as the engine cuts them:
    /// `max_seg`-byte segments, with a cut exactly at the unscheduled limit. Returns
    /// (packets, payload bytes of the last packet).
    pub fn packets_of(&self, len: u32) -> (u64, u32) {
        let seg = self.max_seg;
        let unsched = self.unsched_bytes.min(len);
        let n_u = unsched.div_ceil(seg);
        let rest = len - unsched;
        if rest == 0 {
            (u64::from(n_u), unsched - (n_u - 1) * seg)
        } else {
            let n_s = rest.div_ceil(seg);
            (u64::from(n_u + n_s), rest - (n_s - 1) * seg)
        }
    }

    /// Bytes a message of `size` bytes puts on a link: payload plus
    /// [`per_packet`](Model::per_packet) for each DATA packet of each piece.
    pub fn wire_bytes(&self, size: u32) -> u64 {
        self.pieces(size)
            .map(|p| u64::from(p) + self.packets_of(p).0 * u64::from(self.per_packet))
            .sum()
    }

    /// Wire bytes of every DATA packet of a message of `size` bytes, in sending order
    /// (each piece packetised as the engine does).
    pub fn packet_wire_sizes(&self, size: u32) -> impl Iterator<Item = u32> + '_ {
        let seg = self.max_seg;
        let per_packet = self.per_packet;
        self.pieces(size).flat_map(move |piece| {
            let unsched = self.unsched_bytes.min(piece);
            let mut at = 0u32;
            core::iter::from_fn(move || {
                if at >= piece {
                    return None;
                }
                let mut end = (at + seg).min(piece);
                if at < unsched {
                    end = end.min(unsched);
                }
                let len = end - at;
                at = end;
                Some(len + per_packet)
            })
        })
    }

    /// The ideal one-way time of a message of `size` bytes on an idle network, ns
    /// (BENCHMARKING.md's simulator baseline): from its creation until its last byte is
    /// in the receiving engine, if its packets met nothing else on the way.
    ///
    /// The sender serialises every packet back to back at the host link rate (after the
    /// host transmit delay); each switch stores and forwards each packet (switch delay,
    /// then serialisation on the next link once that link is free); the receiver adds its
    /// receive delay. Within a rack the path is host–ToR–host. Between racks it is
    /// host–ToR–aggregation–ToR–host (3 switches, 4 links, the middle two at the uplink
    /// rate); with per-packet spraying each packet may take its own aggregation switch,
    /// so the ideal lets packets cross the uplinks independently (a short last packet
    /// can then overtake a full one and reach the receiver's link first, which a real run
    /// does too); with per-flow hashing they share one path in order.
    ///
    /// Computed exactly, packet by packet. For this topology it comes to: the host
    /// delays, serialisation of every wire byte at the host link rate (on the receiver's
    /// link, the bottleneck), plus the store-and-forward of one packet per hop before it
    /// (the first, full-sized one), switch delays and link latencies. Pieces of a split
    /// message are counted back to back (no response round trips) and grants as already
    /// there, so no run can be faster.
    pub fn ideal_ns(&self, size: u32, same_rack: bool) -> f64 {
        let host = 8e9 / self.host_bps;
        let up = 8e9 / self.uplink_bps;
        let hop = self.latency_ns + self.switch_ns;
        // When each packet leaves the sender's link, in order.
        let mut nic = self.tx_ns;
        let sent = self.packet_wire_sizes(size).map(move |wire| {
            let wire = f64::from(wire);
            nic += wire * host;
            (nic, wire)
        });
        // When each packet is ready at the receiver's ToR, in sending order.
        let ready: Vec<(f64, f64)> = if same_rack {
            sent.map(|(t, w)| (t + hop, w)).collect()
        } else if self.spray {
            let mut v: Vec<(f64, f64)> = sent
                .map(|(t, w)| (t + hop + w * up + hop + w * up + hop, w))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        } else {
            let (mut up1, mut up2) = (0.0f64, 0.0f64);
            sent.map(|(t, w)| {
                up1 = (t + hop).max(up1) + w * up;
                up2 = (up1 + hop).max(up2) + w * up;
                (up2 + hop, w)
            })
            .collect()
        };
        // The receiver's link serves them in the order they are ready.
        let mut last = 0.0f64;
        for (t, w) in ready {
            last = t.max(last) + w * host;
        }
        last + self.latency_ns + self.rx_ns
    }

    /// Unloaded round trip between racks of a full DATA packet one way and a GRANT back,
    /// ns: the time RTT bytes should cover.
    pub fn rtt_ns(&self) -> f64 {
        let one_way = |wire: f64| {
            self.tx_ns
                + 2.0 * wire * 8.0 * 1e9 / self.host_bps
                + 2.0 * wire * 8.0 * 1e9 / self.uplink_bps
                + 3.0 * self.switch_ns
                + 4.0 * self.latency_ns
                + self.rx_ns
        };
        one_way(f64::from(self.max_seg + self.per_packet))
            + one_way((GRANT_LEN + DEFAULT_OVERHEAD as u64) as f64)
    }

    /// Mean bytes per message that the load counts: payload (`Payload`) or wire bytes.
    pub fn mean_counted_bytes(&self, dist: &Distribution, basis: LoadBasis) -> f64 {
        match basis {
            LoadBasis::Payload => dist.mean(),
            LoadBasis::Wire => {
                let mut prev = 0.0;
                let mut sum = 0.0;
                for &(size, cdf) in dist.points() {
                    sum += self.wire_bytes(size) as f64 * (cdf - prev);
                    prev = cdf;
                }
                sum / prev
            }
        }
    }

    /// Mean time between a host's message arrivals for `load`, ns.
    pub fn mean_interarrival_ns(&self, dist: &Distribution, cfg: &DcConfig) -> f64 {
        let bytes = self.mean_counted_bytes(dist, cfg.load_basis);
        bytes * 8.0 * 1e9 / (cfg.load * self.host_bps)
    }

    /// The cutoff table for `cfg` (see [`Cutoffs`]) and, for `Auto`, the share of
    /// unscheduled bytes it was derived from.
    pub fn cutoffs(&self, cfg: &DcConfig, dist: &Distribution) -> ([u32; MAX_PRIORITIES], f64) {
        let frac = self.unscheduled_fraction(dist, cfg.large);
        let table = match cfg.cutoffs {
            Cutoffs::Kernel => DcConfig::KERNEL_CUTOFFS,
            Cutoffs::Table(t) => t,
            Cutoffs::Auto => self.auto_cutoffs(dist, cfg.priorities, frac),
        };
        (table, frac)
    }

    /// (Homa message length, unscheduled bytes, probability) of every piece the
    /// distribution sends.
    fn piece_weights(&self, dist: &Distribution, large: LargeMessages) -> Vec<(u32, f64)> {
        let _ = large; // with Cap, `dist` is already capped: every message is one piece.
        let mut prev = 0.0;
        let mut out: Vec<(u32, f64)> = Vec::new();
        for &(size, cdf) in dist.points() {
            let p = cdf - prev;
            prev = cdf;
            for piece in self.pieces(size) {
                out.push((piece, f64::from(piece.min(self.unsched_bytes)) * p));
            }
        }
        out.sort_by_key(|&(len, _)| len);
        out
    }

    /// Share of all message bytes that are sent unscheduled.
    pub fn unscheduled_fraction(&self, dist: &Distribution, large: LargeMessages) -> f64 {
        let unsched: f64 = self.piece_weights(dist, large).iter().map(|w| w.1).sum();
        unsched / dist.mean()
    }

    fn auto_cutoffs(
        &self,
        dist: &Distribution,
        priorities: u8,
        frac: f64,
    ) -> [u32; MAX_PRIORITIES] {
        let p = usize::from(priorities.clamp(1, MAX_PRIORITIES as u8));
        let mut table = [0u32; MAX_PRIORITIES];
        if p == 1 {
            table[0] = MAX_MESSAGE_LENGTH;
            return table;
        }
        let levels = ((p as f64 * frac).round() as usize).clamp(1, p - 1);
        let weights = self.piece_weights(dist, LargeMessages::Split);
        let total: f64 = weights.iter().map(|w| w.1).sum();
        // Level p-1-j covers lengths up to the j+1-th quantile of unscheduled bytes.
        let mut cum = 0.0;
        let mut j = 0;
        for &(len, w) in &weights {
            cum += w;
            while j + 1 < levels && cum >= (j + 1) as f64 / levels as f64 * total - 1e-12 {
                table[p - 1 - j] = len;
                j += 1;
            }
        }
        table[p - levels] = MAX_MESSAGE_LENGTH;
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homa_eval::workload::Workload;

    #[test]
    fn packets_follow_the_engine_cut() {
        let m = Model::new(&DcConfig::default());
        assert_eq!(m.packets_of(1), (1, 1));
        assert_eq!(m.packets_of(1424), (1, 1424));
        assert_eq!(m.packets_of(1425), (2, 1));
        assert_eq!(m.packets_of(9968), (7, 1424));
        assert_eq!(m.packets_of(9969), (8, 1));
        assert_eq!(m.packets_of(20_000), (15, 20_000 - 9968 - 7 * 1424));
        assert_eq!(
            m.pieces(2_500_000).collect::<Vec<_>>(),
            vec![1_000_000, 1_000_000, 500_000]
        );
    }

    #[test]
    fn default_rtt_is_about_ten_thousand_bytes() {
        let m = Model::new(&DcConfig::default());
        let bytes = m.rtt_ns() * m.host_bps / 8e9;
        assert!((9000.0..11_000.0).contains(&bytes), "{bytes}");
    }

    #[test]
    fn auto_cutoffs_are_monotone_and_cover_everything() {
        let cfg = DcConfig::default();
        let m = Model::new(&cfg);
        for w in Workload::ALL {
            let d = Distribution::of(w, false);
            let (t, frac) = m.cutoffs(&cfg, &d);
            assert!((0.0..=1.0).contains(&frac));
            let top = t.iter().position(|&c| c == MAX_MESSAGE_LENGTH).unwrap();
            assert!(t[..top].iter().all(|&c| c == 0), "{w}: {t:?}");
            assert!(t[top..].windows(2).all(|p| p[0] >= p[1]), "{w}: {t:?}");
            assert!(top >= 1, "{w}: at least one scheduled level");
        }
        // W1: every byte unscheduled, 7 unscheduled levels.
        let (t, frac) = m.cutoffs(&cfg, &Distribution::of(Workload::W1, false));
        assert!(frac > 0.99);
        assert_eq!(t[1], MAX_MESSAGE_LENGTH);
    }
}

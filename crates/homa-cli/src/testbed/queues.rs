//! What the emulated links' queues did during a run: the qdisc counters of every shaped
//! device before and after it ([`PortDelta`]: packets sent and dropped per device), and
//! the switch ports' backlog sampled a few times a second while it ran ([`Sampler`],
//! [`Peak`]), so that the report shows where queues formed and what was lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::TestbedError;
use super::shaping::{level_of_class, read_qdiscs, Counters, PortStats, QdiscStats, LEVELS};

/// The change of one shaped device's root-qdisc counters over a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceDelta {
    /// The device's place: `switch` or `host N`'s namespace.
    pub(crate) netns: String,
    /// The device (`eth0`, `p<i>`).
    pub(crate) dev: String,
    /// Whether it is a switch port (else a host's egress).
    pub(crate) switch_port: bool,
    /// Sent and dropped over the run; the backlog at its end.
    pub(crate) counters: Counters,
}

/// Every shaped device's counters over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortDelta {
    /// One entry per shaped device, hosts' egresses first.
    pub(crate) devices: Vec<DeviceDelta>,
}

impl PortDelta {
    /// The change from `before` to `after` (both from `Rack::port_stats`, same devices in
    /// the same order); `switch` is the switch's namespace.
    pub(crate) fn between(before: &[PortStats], after: &[PortStats], switch: &str) -> PortDelta {
        let devices = after
            .iter()
            .map(|a| {
                let earlier = before
                    .iter()
                    .find(|b| b.netns == a.netns && b.dev == a.dev)
                    .map(PortStats::total)
                    .unwrap_or_default();
                DeviceDelta {
                    netns: a.netns.clone(),
                    dev: a.dev.clone(),
                    switch_port: a.netns == switch,
                    counters: a.total().since(&earlier),
                }
            })
            .collect();
        PortDelta { devices }
    }

    fn sum(&self, switch_port: bool, f: impl Fn(&Counters) -> u64) -> u64 {
        self.devices
            .iter()
            .filter(|d| d.switch_port == switch_port)
            .map(|d| f(&d.counters))
            .sum()
    }

    /// Packets dropped at the switch ports (tail drops of full class queues).
    pub(crate) fn switch_drops(&self) -> u64 {
        self.sum(true, |c| c.dropped)
    }

    /// Packets dropped at the hosts' own egress queues.
    pub(crate) fn host_drops(&self) -> u64 {
        self.sum(false, |c| c.dropped)
    }

    /// Packets the switch ports sent.
    pub(crate) fn switch_sent(&self) -> u64 {
        self.sum(true, |c| c.sent_packets)
    }

    /// Packets the hosts' egresses sent (a UDP GSO send counts once here: the qdisc sees
    /// it whole).
    pub(crate) fn host_sent(&self) -> u64 {
        self.sum(false, |c| c.sent_packets)
    }
}

/// The largest switch-port backlog seen while sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Peak {
    /// The largest backlog of one port (all its classes), bytes.
    pub(crate) bytes: u64,
    /// Its packets, at that moment.
    pub(crate) packets: u64,
    /// The port it was at.
    pub(crate) port: Option<String>,
    /// Per priority level, the largest backlog of that level's queue at any port, bytes.
    pub(crate) level_bytes: [u64; LEVELS as usize],
    /// How many times the ports were read.
    pub(crate) samples: u64,
}

impl Peak {
    /// Takes in one reading of the switch's qdiscs (`tc -s qdisc show`, every device).
    pub(crate) fn update(&mut self, qdiscs: &[QdiscStats]) {
        self.samples += 1;
        for q in qdiscs {
            let Some(dev) = q.dev.as_deref() else {
                continue;
            };
            match q.parent.as_deref() {
                None if q.kind == "htb" && q.counters.backlog_bytes > self.bytes => {
                    self.bytes = q.counters.backlog_bytes;
                    self.packets = q.counters.backlog_packets;
                    self.port = Some(dev.to_string());
                }
                Some(parent) => {
                    if let Some(level) = level_of_class(parent) {
                        let slot = &mut self.level_bytes[usize::from(level)];
                        *slot = (*slot).max(q.counters.backlog_bytes);
                    }
                }
                None => {}
            }
        }
    }
}

/// Reads the switch's queues every `period` on a thread of its own until stopped.
#[derive(Debug)]
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    /// `None` once joined.
    thread: Option<JoinHandle<Result<Peak, TestbedError>>>,
}

impl Sampler {
    /// Starts sampling the qdiscs of namespace `switch`.
    pub(crate) fn start(switch: String, period: Duration) -> Result<Sampler, TestbedError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("testbed-queues".into())
            .spawn(move || {
                let mut peak = Peak::default();
                while !stop2.load(Ordering::Relaxed) {
                    peak.update(&read_qdiscs(&switch)?);
                    // Periodic sampling, not a wait for an event.
                    std::thread::sleep(period);
                }
                Ok(peak)
            })
            .map_err(|e| TestbedError::io("starting the queue sampler", e))?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops sampling and returns the peak (or why sampling stopped early).
    pub(crate) fn stop(mut self) -> Result<Peak, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(Peak::default()),
        }
    }
}

impl Drop for Sampler {
    /// Not stopped (an error left the run early): the thread ends after its current
    /// reading.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::shaping::parse_qdisc_stats;
    use std::collections::BTreeMap;

    fn port(netns: &str, dev: &str, sent: u64, dropped: u64) -> PortStats {
        PortStats {
            netns: netns.into(),
            dev: dev.into(),
            qdiscs: vec![QdiscStats {
                kind: "htb".into(),
                handle: "1:".into(),
                dev: None,
                parent: None,
                counters: Counters {
                    sent_packets: sent,
                    dropped,
                    ..Counters::default()
                },
            }],
            classes: BTreeMap::new(),
        }
    }

    #[test]
    fn deltas_split_switch_ports_from_host_egresses() {
        let before = [port("h0", "eth0", 10, 1), port("sw", "p0", 5, 0)];
        let after = [port("h0", "eth0", 110, 4), port("sw", "p0", 95, 7)];
        let d = PortDelta::between(&before, &after, "sw");
        assert_eq!((d.host_sent(), d.host_drops()), (100, 3));
        assert_eq!((d.switch_sent(), d.switch_drops()), (90, 7));
        // A device with no earlier reading counts from zero.
        let d = PortDelta::between(&[], &after, "sw");
        assert_eq!(d.switch_drops(), 7);
    }

    #[test]
    fn the_peak_is_the_fullest_port_and_each_levels_fullest_queue() {
        let sample = |p0: u64, p1: u64, level0: u64| {
            let text = format!(
                "qdisc htb 1: dev p0 root refcnt 3\n Sent 1 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n backlog {p0}b 2p requeues 0\n\
                 qdisc bfifo 10: dev p0 parent 1:10 limit 256Kb\n Sent 1 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n backlog {level0}b 2p requeues 0\n\
                 qdisc htb 1: dev p1 root refcnt 3\n Sent 1 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n backlog {p1}b 5p requeues 0\n"
            );
            parse_qdisc_stats(&text).unwrap()
        };
        let mut peak = Peak::default();
        peak.update(&sample(3000, 1000, 3000));
        peak.update(&sample(0, 9000, 0));
        peak.update(&sample(500, 100, 500));
        assert_eq!(peak.samples, 3);
        assert_eq!((peak.bytes, peak.packets), (9000, 5));
        assert_eq!(peak.port.as_deref(), Some("p1"));
        assert_eq!(peak.level_bytes[0], 3000);
        assert_eq!(peak.level_bytes[7], 0);
    }
}

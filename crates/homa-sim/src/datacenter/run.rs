//! Running one experiment and what it reports.

use core::cell::RefCell;
use core::fmt;
use core::time::Duration;
use std::rc::Rc;
use std::time::Instant;

use homa_eval::report::{Csv, Json};
use homa_eval::stats::{default_buckets, BucketStats, Samples, ShortStats};
use homa_eval::workload::Distribution;
use homa_proto::engine::{Engine, EngineOptions};
use homa_proto::region::DiscardRegion;
use homa_proto::wire::{MAX_MESSAGE_LENGTH, MAX_PRIORITIES};
use homa_proto::{Config, Time};

use super::app::{Counters, DcApp, Tracker, FIRST_ID, PORT};
use super::config::{DcConfig, LargeMessages};
use super::model::Model;
use crate::host::Host;
use crate::{
    max_packet_for_mtu, Device, Drops, Ecmp, LinkSpec, NetConfig, Network, Stats, TwoTier,
    DEFAULT_OVERHEAD,
};

/// Why a run could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcError {
    /// The settings are inconsistent.
    Config(String),
    /// The engines refused their configuration.
    Engine(String),
    /// The network could not be built.
    Build(String),
    /// The simulation failed (step limit; the message names the seed).
    Sim(String),
    /// The application saw something impossible (a bug): the first such event.
    App(String),
}

impl fmt::Display for DcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DcError::Config(e) => write!(f, "bad settings: {e}"),
            DcError::Engine(e) => write!(f, "engine configuration: {e}"),
            DcError::Build(e) => write!(f, "building the network: {e}"),
            DcError::Sim(e) => write!(f, "simulation: {e}"),
            DcError::App(e) => write!(f, "application: {e}"),
        }
    }
}

impl std::error::Error for DcError {}

/// Totals of the engines' counters over all hosts (those that tell whether anything
/// went wrong).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineTotals {
    /// Packets the engines sent.
    pub packets_sent: u64,
    /// Packets the engines received.
    pub packets_received: u64,
    /// DATA packets retransmitted.
    pub retransmitted_packets: u64,
    /// Messages that waited for receive-buffer space.
    pub buffer_stalls: u64,
    /// RPC timeouts.
    pub timeouts: u64,
    /// Malformed packets (must be 0).
    pub malformed: u64,
    /// Hosts whose receive pool is idle (every bpage released) at the end.
    pub idle_pools: usize,
    /// RPCs still alive at the end.
    pub live_rpcs: usize,
}

/// The sustainability verdict of a run (used by the sweep).
///
/// The *backlog* is the payload created but not yet delivered, over all hosts (a
/// message's bytes count as delivered piece by piece). A load is **sustained** when, over
/// the second half of the measurement window (the first half lets the backlog of a
/// heavy-tailed workload settle after the warm-up), (1) the payload delivered is at
/// least 95 % of the payload offered, and (2) the backlog's trend (least-squares slope of
/// its samples) grows by at most 5 % of the payload offered in that half. Under a load
/// the network cannot carry, the backlog grows steadily by the excess (offered −
/// capacity), so both fail; under a load it can carry, they hold up to noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Sustain {
    /// Delivered / offered payload over the whole window (reported, not judged: it
    /// includes the warm-up transient).
    pub delivered_ratio: f64,
    /// Delivered / offered payload over the second half of the window.
    pub second_half_ratio: f64,
    /// Backlog trend over the second half × its length / payload offered in it.
    pub backlog_growth: f64,
    /// Messages of the window not delivered within the drain limit (excluded from the
    /// statistics; reported).
    pub incomplete: u64,
    /// The verdict.
    pub sustained: bool,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct DcResult {
    /// The settings.
    pub config: DcConfig,
    /// The model derived from them.
    pub model: Model,
    /// The distribution messages were drawn from (after capping, if any).
    pub distribution: Distribution,
    /// The receivers' unscheduled cutoffs.
    pub cutoffs: [u32; MAX_PRIORITIES],
    /// Highest scheduled priority level (levels above carry unscheduled bytes).
    pub max_sched_prio: u8,
    /// Share of message bytes sent unscheduled.
    pub unscheduled_fraction: f64,
    /// Mean gap between a host's arrivals, ns.
    pub mean_interarrival_ns: f64,
    /// Window start and end, ns of simulated time.
    pub window_ns: (u64, u64),
    /// One sample (size, completion time, ideal time) per message of the window that
    /// completed.
    pub samples: Samples,
    /// Statistics per size bucket ([`default_buckets`] of the distribution).
    pub buckets: Vec<BucketStats>,
    /// Statistics of short messages (at most [`Distribution::short_threshold`] bytes).
    pub short: ShortStats,
    /// The application's counters.
    pub counters: Counters,
    /// The sustainability verdict.
    pub sustain: Sustain,
    /// Backlog (payload created, not yet delivered, over all hosts) in bytes, sampled
    /// from time 0 every twentieth of the window and at its start, middle and end:
    /// (ns, bytes).
    pub backlog: Vec<(u64, u64)>,
    /// Simulated time at the end of the run, ns.
    pub sim_end_ns: u64,
    /// The network's counters.
    pub net: Stats,
    /// Largest queue seen at any ToR port toward a host, bytes.
    pub max_queue_tor_down: u64,
    /// Largest queue seen at any switch port on a ToR–aggregation link, bytes.
    pub max_queue_uplinks: u64,
    /// Largest queue seen at any host NIC, bytes.
    pub max_queue_nic: u64,
    /// The engines' counters, summed.
    pub engines: EngineTotals,
    /// Wall-clock time of the simulation proper (not building the network).
    pub wall: Duration,
}

/// Runs one experiment; see the [module docs](super).
pub fn run(cfg: &DcConfig) -> Result<DcResult, DcError> {
    cfg.validate().map_err(DcError::Config)?;
    let model = Model::new(cfg);
    let dist = cfg.distribution();
    let sampled = match cfg.workload {
        // Cap mode samples the raw distribution and caps, to count the capped messages.
        super::WorkloadChoice::Named(w) if cfg.large == LargeMessages::Cap && !cfg.capped => {
            Distribution::of(w, false)
        }
        _ => dist.clone(),
    };
    let cap = cfg.large == LargeMessages::Cap;
    let (cutoffs, unscheduled_fraction) = model.cutoffs(cfg, &dist);
    let engine_config = engine_config(cfg, &model, cutoffs)?;
    let max_sched_prio = engine_config.max_sched_prio();
    let gap = model.mean_interarrival_ns(&dist, cfg);

    let warmup = cfg.effective_warmup().as_nanos() as u64;
    let duration = cfg.effective_duration().as_nanos() as u64;
    let window = (warmup, warmup + duration);
    let hosts = cfg.hosts();
    let tracker = Rc::new(RefCell::new(Tracker::new(
        hosts,
        cfg.hosts_per_rack,
        window,
        model.clone(),
    )));

    let max_packet = max_packet_for_mtu(cfg.mtu);
    let net_config = NetConfig {
        seed: cfg.seed,
        max_packet,
        per_packet_overhead: DEFAULT_OVERHEAD,
        host_rx_delay: cfg.host_rx_delay,
        host_tx_delay: cfg.host_tx_delay,
        switch_delay: cfg.switch_delay,
        ecmp: cfg.ecmp,
        max_burst: 1024,
        max_steps: u64::MAX,
    };
    let shared_dist = Rc::new(sampled);
    let options = EngineOptions {
        max_packet_v4: max_packet,
        max_packet_v6: max_packet,
        ..EngineOptions::server(PORT, FIRST_ID)
    };
    let make_engine = || {
        Engine::new(
            engine_config.clone(),
            options.clone(),
            DiscardRegion::new(cfg.pool_bytes),
        )
    };
    // Every host's engine is made the same way: check once that it can be.
    make_engine().map_err(|e| DcError::Engine(format!("{e:?}")))?;
    let mut net = TwoTier::new(cfg.racks, cfg.hosts_per_rack, cfg.aggregation)
        .host_link(LinkSpec::new(cfg.host_link_bps, cfg.link_latency))
        .uplink(LinkSpec::new(cfg.uplink_bps, cfg.link_latency))
        .config(net_config)
        .build(|i, _ip| {
            let engine = make_engine().expect("checked before building");
            let app = DcApp::new(
                i,
                hosts,
                cfg.seed,
                gap,
                Rc::clone(&shared_dist),
                cap,
                cfg.response_bytes,
                Rc::clone(&tracker),
            );
            Host::new(engine, app)
        })
        .map_err(|e| DcError::Build(e.to_string()))?;
    if let Some(b) = cfg.switch_buffer {
        for s in 0..net.num_switches() {
            let ports = net.ports_of(Device::Switch(s)).to_vec();
            for p in ports {
                net.set_port_buffer(p, Some(b));
            }
        }
    }
    for h in 0..hosts {
        net.poll(h);
    }

    let start = Instant::now();
    let sim = |e: crate::SimError| DcError::Sim(e.to_string());
    // Run to the end of the window, sampling the backlog every twentieth of the window
    // and at its start, middle and end.
    let mid = window.0 + duration / 2;
    let every = (duration / 20).max(1);
    let mut times: Vec<u64> = (1..)
        .map(|k| k * every)
        .take_while(|&t| t < window.1)
        .collect();
    times.extend([window.0, mid, window.1]);
    times.sort_unstable();
    times.dedup();
    let mut samples: Vec<(u64, u64)> = vec![(0, 0)];
    let mut at_mid = (0, 0);
    for t in times {
        net.run_to(Time::from_nanos(t)).map_err(sim)?;
        let tr = tracker.borrow();
        samples.push((t, tr.backlog()));
        if t == mid {
            at_mid = (
                tr.counters.window_bytes_offered,
                tr.counters.window_bytes_delivered,
            );
        }
    }
    // Keep the load on until the window's messages are delivered (or the limit).
    let limit = window.1 + cfg.effective_drain_limit().as_nanos() as u64;
    let step = (duration / 100).clamp(10_000, 1_000_000);
    while tracker.borrow().measured_outstanding > 0 && net.now().as_nanos() < limit {
        let next = (net.now().as_nanos() + step).min(limit);
        net.run_to(Time::from_nanos(next)).map_err(sim)?;
    }
    for h in 0..hosts {
        net.node_mut(h).app.stopped = true;
    }
    if cfg.drain_all {
        net.run_until_idle(u64::MAX).map_err(sim)?;
    }
    let wall = start.elapsed();

    if let Some(e) = tracker.borrow().first_error.clone() {
        return Err(DcError::App(e));
    }
    let mut engines = EngineTotals::default();
    for host in net.nodes() {
        let s = host.engine.stats();
        engines.packets_sent += s.packets_sent;
        engines.packets_received += s.packets_received;
        engines.retransmitted_packets += s.retransmitted_packets;
        engines.buffer_stalls += s.buffer_stalls;
        engines.timeouts += s.timeouts;
        engines.malformed += s.malformed;
        engines.idle_pools += usize::from(host.engine.pool().is_idle());
        engines.live_rpcs += host.engine.rpc_count();
    }
    let (max_queue_nic, max_queue_tor_down, max_queue_uplinks) = queue_maxima(&net, cfg);
    let sim_end_ns = net.now().as_nanos();
    let net_stats = net.stats().clone();
    drop(net);
    let tracker = Rc::try_unwrap(tracker)
        .map_err(|_| DcError::App("tracker still shared".into()))?
        .into_inner();

    let c = &tracker.counters;
    let ratio = |delivered: u64, offered: u64| {
        if offered > 0 {
            delivered as f64 / offered as f64
        } else {
            1.0
        }
    };
    let delivered_ratio = ratio(c.window_bytes_delivered, c.window_bytes_offered);
    let offered_second = c.window_bytes_offered - at_mid.0;
    let second_half_ratio = ratio(c.window_bytes_delivered - at_mid.1, offered_second);
    let late: Vec<(f64, f64)> = samples
        .iter()
        .filter(|&&(t, _)| t >= mid && t <= window.1)
        .map(|&(t, b)| (t as f64, b as f64))
        .collect();
    let backlog_growth = if offered_second > 0 {
        slope(&late) * (window.1 - mid) as f64 / offered_second as f64
    } else {
        0.0
    };
    let incomplete = c.measured_created - c.measured_completed;
    let sustain = Sustain {
        delivered_ratio,
        second_half_ratio,
        backlog_growth,
        incomplete,
        sustained: second_half_ratio >= 0.95 && backlog_growth <= 0.05,
    };
    let buckets = tracker.samples.buckets(&default_buckets(&dist));
    let short = tracker.samples.short(dist.short_threshold());
    Ok(DcResult {
        config: cfg.clone(),
        model,
        distribution: dist,
        cutoffs: engine_config.unsched_cutoffs(),
        max_sched_prio,
        unscheduled_fraction,
        mean_interarrival_ns: gap,
        window_ns: window,
        buckets,
        short,
        counters: tracker.counters.clone(),
        samples: tracker.samples,
        sustain,
        backlog: samples,
        sim_end_ns,
        net: net_stats,
        max_queue_tor_down,
        max_queue_uplinks,
        max_queue_nic,
        engines,
        wall,
    })
}

/// The engines' configuration: `unsched_bytes` and `window` from RTT bytes, the link
/// rate for the pacer, the priority levels and cutoffs, an unlimited send buffer (an
/// overloaded host queues without bound rather than refusing messages), then the
/// user's overrides.
fn engine_config(
    cfg: &DcConfig,
    model: &Model,
    cutoffs: [u32; MAX_PRIORITIES],
) -> Result<Config, DcError> {
    let mut b = Config::builder()
        .unsched_bytes(model.unsched_bytes)
        .window(model.unsched_bytes)
        .num_priorities(cfg.priorities)
        .link_mbps((cfg.host_link_bps / 1_000_000).max(1) as u32)
        .wmem_max(1 << 40)
        .unsched_cutoffs(cutoffs);
    for (name, value) in &cfg.engine {
        b.set(name, *value)
            .map_err(|e| DcError::Engine(e.to_string()))?;
    }
    b.build().map_err(|e| DcError::Engine(e.to_string()))
}

/// Largest queues: (host NICs, ToR ports toward hosts, switch ports on uplinks).
fn queue_maxima<N: crate::Node>(net: &Network<N>, cfg: &DcConfig) -> (u64, u64, u64) {
    let (mut nic, mut down, mut up) = (0, 0, 0);
    for p in net.ports() {
        let q = net.port_stats(p).max_queued_bytes;
        match net.port_endpoints(p) {
            (Device::Host(_), _) => nic = nic.max(q),
            (Device::Switch(s), Device::Host(_)) if s < cfg.racks => down = down.max(q),
            _ => up = up.max(q),
        }
    }
    (nic, down, up)
}

impl DcResult {
    /// Simulated time at the end of the run, seconds.
    pub fn sim_time_s(&self) -> f64 {
        self.sim_end_ns as f64 / 1e9
    }

    /// Network events per wall-clock second.
    pub fn events_per_s(&self) -> f64 {
        self.net.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Drops by reason.
    pub fn drops(&self) -> Drops {
        self.net.dropped
    }

    /// The run as BENCHMARKING.md's `homa sim` JSON object (plus more fields). With
    /// `deterministic`, the wall-clock fields (`wall_s`, `events_per_s`) are `null`, so
    /// the same seed gives the same bytes.
    pub fn to_json(&self, deterministic: bool) -> Json {
        let c = &self.config;
        let m = &self.model;
        let config = Json::object()
            .field("topology", "two-tier")
            .field("hosts", c.hosts())
            .field("racks", c.racks)
            .field("hosts_per_rack", c.hosts_per_rack)
            .field("aggregation_switches", c.aggregation)
            .field("host_link_gbps", c.host_link_bps as f64 / 1e9)
            .field("uplink_gbps", c.uplink_bps as f64 / 1e9)
            .field("link_latency_ns", c.link_latency.as_nanos() as u64)
            .field("switch_delay_ns", c.switch_delay.as_nanos() as u64)
            .field("host_tx_delay_ns", c.host_tx_delay.as_nanos() as u64)
            .field("host_rx_delay_ns", c.host_rx_delay.as_nanos() as u64)
            .field("switch_buffer_bytes", c.switch_buffer)
            .field(
                "ecmp",
                match c.ecmp {
                    Ecmp::Spray => "spray",
                    Ecmp::FlowHash => "flow",
                },
            )
            .field("mtu", c.mtu)
            .field("priorities", c.priorities)
            .field("rtt_bytes", c.rtt_bytes)
            .field("unsched_bytes", m.unsched_bytes)
            .field("grant_window", m.unsched_bytes)
            .field("model_rtt_ns", m.rtt_ns())
            .field("unsched_cutoffs", self.cutoffs.to_vec())
            .field("cutoffs_mode", c.cutoffs.to_string())
            .field("max_sched_prio", self.max_sched_prio)
            .field("unscheduled_fraction", self.unscheduled_fraction)
            .field(
                "engine_overrides",
                Json::Object(
                    c.engine
                        .iter()
                        .map(|(k, v)| (k.clone(), Json::UInt(*v)))
                        .collect(),
                ),
            )
            .field("workload", c.workload.to_string())
            .field("distribution", if c.capped { "capped" } else { "raw" })
            .field("message_cap", MAX_MESSAGE_LENGTH)
            .field("large_messages", c.large.to_string())
            .field("mean_message_bytes", self.distribution.mean())
            .field("max_message_bytes", self.distribution.max())
            .field("load", c.load)
            .field("load_basis", c.load_basis.to_string())
            .field("mean_interarrival_ns", self.mean_interarrival_ns)
            .field("warmup_s", self.window_ns.0 as f64 / 1e9)
            .field(
                "duration_s",
                (self.window_ns.1 - self.window_ns.0) as f64 / 1e9,
            )
            .field("drain_limit_s", c.effective_drain_limit().as_secs_f64())
            .field("drain_all", c.drain_all)
            .field("pool_bytes", c.pool_bytes)
            .field("response_bytes", c.response_bytes)
            .field("short_max_size", self.distribution.short_threshold());
        let k = &self.counters;
        let messages = Json::object()
            .field("started", k.created)
            .field("completed", k.completed)
            .field("measured", k.measured_created)
            .field("measured_completed", k.measured_completed)
            .field("split", k.split)
            .field("capped", k.capped)
            .field("pieces_sent", k.pieces_sent)
            .field("failures", k.failures)
            .field("send_errors", k.send_errors);
        let buckets: Vec<Json> = self
            .buckets
            .iter()
            .map(|b| Json::from(b).field("ideal_p50_us", self.ideal_us(b.max_size)))
            .collect();
        let s = &self.sustain;
        let net = &self.net;
        Json::object()
            .field("tool", "homa sim")
            .field("seed", c.seed)
            .field("config", config)
            .field("messages", messages)
            .field(
                "baseline",
                "ideal one-way time on an idle network (BENCHMARKING.md simulator slowdown)",
            )
            .field("buckets", Json::Array(buckets))
            .field("short", Json::from(&self.short))
            .field(
                "sustain",
                Json::object()
                    .field("delivered_ratio", s.delivered_ratio)
                    .field("backlog_growth", s.backlog_growth)
                    .field("incomplete", s.incomplete)
                    .field("sustained", s.sustained)
                    .field("second_half_ratio", s.second_half_ratio)
                    .field(
                        "backlog",
                        Json::Array(
                            self.backlog
                                .iter()
                                .map(|&(t, b)| {
                                    Json::Array(vec![Json::Float(t as f64 / 1e9), Json::UInt(b)])
                                })
                                .collect(),
                        ),
                    ),
            )
            .field(
                "network",
                Json::object()
                    .field("packets_sent", net.packets_sent)
                    .field("packets_delivered", net.packets_delivered)
                    .field("transmissions", net.transmissions)
                    .field("drops_buffer", net.dropped.buffer)
                    .field("drops_other", net.dropped.fault + net.dropped.no_route)
                    .field("sent_by_priority", net.sent_by_priority.to_vec())
                    .field("max_queue_nic_bytes", self.max_queue_nic)
                    .field("max_queue_tor_down_bytes", self.max_queue_tor_down)
                    .field("max_queue_uplink_bytes", self.max_queue_uplinks),
            )
            .field(
                "engine",
                Json::object()
                    .field("retransmitted_packets", self.engines.retransmitted_packets)
                    .field("buffer_stalls", self.engines.buffer_stalls)
                    .field("timeouts", self.engines.timeouts)
                    .field("malformed", self.engines.malformed),
            )
            .field("sim_time_s", self.sim_time_s())
            .field(
                "wall_s",
                if deterministic {
                    Json::Null
                } else {
                    Json::Float(self.wall.as_secs_f64())
                },
            )
            .field("events", net.events)
            .field(
                "events_per_s",
                if deterministic {
                    Json::Null
                } else {
                    Json::Float(self.events_per_s())
                },
            )
    }

    /// Median ideal time of the messages of bucket edge `size`, µs, between racks (for
    /// reading latencies against the baseline).
    fn ideal_us(&self, size: u32) -> f64 {
        self.model.ideal_ns(size, false) / 1000.0
    }

    /// The CSV header [`csv_rows`](DcResult::csv_rows) writes under.
    pub const CSV_COLUMNS: &'static [&'static str] = &[
        "workload",
        "load",
        "seed",
        "bucket",
        "max_size",
        "cumulative_fraction",
        "count",
        "p50_us",
        "p99_us",
        "p999_us",
        "p50_slowdown",
        "p99_slowdown",
    ];

    /// Appends one row per bucket and one `short` row.
    pub fn csv_rows(&self, csv: &mut Csv) {
        let w = self.config.workload.to_string();
        for b in &self.buckets {
            csv.row(&[
                w.clone().into(),
                self.config.load.into(),
                self.config.seed.into(),
                "size".into(),
                b.max_size.into(),
                b.cumulative_fraction.into(),
                b.count.into(),
                b.p50_us.into(),
                b.p99_us.into(),
                b.p999_us.into(),
                b.p50_slowdown.into(),
                b.p99_slowdown.into(),
            ]);
        }
        let s = &self.short;
        csv.row(&[
            w.into(),
            self.config.load.into(),
            self.config.seed.into(),
            "short".into(),
            s.max_size.into(),
            self.distribution.cdf_at(s.max_size).into(),
            s.count.into(),
            f64::NAN.into(),
            f64::NAN.into(),
            f64::NAN.into(),
            s.p50_slowdown.into(),
            s.p99_slowdown.into(),
        ]);
    }

    /// A human-readable table of the run.
    pub fn table(&self) -> String {
        use core::fmt::Write as _;
        let c = &self.config;
        let k = &self.counters;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} at {:.0} % load ({} basis), {} hosts ({} racks × {}), seed {}; window {:.1} ms after {:.1} ms warm-up",
            c.workload,
            c.load * 100.0,
            c.load_basis,
            c.hosts(),
            c.racks,
            c.hosts_per_rack,
            c.seed,
            (self.window_ns.1 - self.window_ns.0) as f64 / 1e6,
            self.window_ns.0 as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "  slowdown = one-way completion time / ideal time on an idle network; cutoffs {:?} (levels 0..={} scheduled)",
            self.cutoffs, self.max_sched_prio
        );
        let _ = writeln!(
            out,
            "  {:>10} {:>6} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "max size", "cum %", "count", "ideal µs", "P50 µs", "P99 µs", "P50 slow", "P99 slow"
        );
        for b in &self.buckets {
            let _ = writeln!(
                out,
                "  {:>10} {:>6.1} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>9.2} {:>9.2}",
                b.max_size,
                b.cumulative_fraction * 100.0,
                b.count,
                self.ideal_us(b.max_size),
                b.p50_us,
                b.p99_us,
                b.p50_slowdown,
                b.p99_slowdown
            );
        }
        let _ = writeln!(
            out,
            "  short (≤ {} B): {} messages, P50 slowdown {:.2}, P99 slowdown {:.2}",
            self.short.max_size, self.short.count, self.short.p50_slowdown, self.short.p99_slowdown
        );
        let s = &self.sustain;
        let _ = writeln!(
            out,
            "  messages: {} started, {} completed; window: {} created, {} completed; {} split, {} capped at 1,000,000 B",
            k.created, k.completed, k.measured_created, k.measured_completed, k.split, k.capped
        );
        let _ = writeln!(
            out,
            "  delivered/offered {:.3} (second half {:.3}), backlog growth {:.3}, {} incomplete: {}",
            s.delivered_ratio,
            s.second_half_ratio,
            s.backlog_growth,
            s.incomplete,
            if s.sustained { "sustained" } else { "NOT sustained" }
        );
        let _ = writeln!(
            out,
            "  max queues: NIC {} B, ToR→host {} B, uplinks {} B; drops {}; retransmitted {}; timeouts {}",
            self.max_queue_nic,
            self.max_queue_tor_down,
            self.max_queue_uplinks,
            self.net.dropped.total(),
            self.engines.retransmitted_packets,
            self.engines.timeouts
        );
        let _ = writeln!(
            out,
            "  simulated {:.1} ms in {:.1} s wall: {} events ({:.2} M events/s), {} packets",
            self.sim_end_ns as f64 / 1e6,
            self.wall.as_secs_f64(),
            self.net.events,
            self.events_per_s() / 1e6,
            self.net.packets_sent
        );
        out
    }
}

/// Least-squares slope of `points` (y per unit of x); 0 for fewer than two points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0))
            .collect();
        assert!((super::slope(&pts) - 3.0).abs() < 1e-12);
        assert_eq!(super::slope(&pts[..1]), 0.0);
    }
}

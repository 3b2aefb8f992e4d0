//! The experiment's report, in the manner of `homa bench`'s: the unloaded RTTs, each
//! transport's loaded run (all hosts' clients merged), slowdown per size bucket and for
//! short messages, throughput, CPU, the emulated links' loss and queues, the ratio
//! summary against the targets; `--json`, `--csv`, `--plot`.
//!
//! Slowdown uses `homa bench`'s definitions and code: an RPC's RTT over the unloaded
//! Homa RTT at its size (the P50 of back-to-back RPCs, interpolated linearly in size by
//! [`Baseline`]), percentiles and buckets by [`Samples`].

use std::fmt::Write as _;
use std::path::PathBuf;

use homa_eval::plot::{size_label, slowdown_svg, Series};
use homa_eval::report::{Cell, Csv, Json};
use homa_eval::stats::{BucketStats, Samples, ShortStats};

use crate::bench::harness::Baseline;
use crate::bench::raw::RawPhase;
use crate::bench::report::{num, ratio, size_text, us};
use crate::bench::spec::WorkloadSpec;

use super::budget::serialisation;
use super::error::TestbedError;
use super::experiment::{DurationChoice, Plan, TransportRun, Variant, MIN_SHORT_MESSAGES};
use super::rack::MTU;
use super::shaping::LEVELS;

/// The target for Homa's short-message P99 slowdown (W4 at load 0.8).
pub(crate) const TARGET_HOMA_SHORT_P99: f64 = 3.0;
/// The target for TCP's short-message P99 slowdown over Homa's.
pub(crate) const TARGET_TCP_OVER_HOMA: f64 = 20.0;

/// What the load means, for the report and the JSON.
pub(crate) const LOAD_DEFINITION: &str = "payload on every host link, each direction, as a fraction of the link rate: each host's client offers load/2 x link of request payload (open-loop Poisson arrivals, uniformly over every other host's servers); responses are as long as requests, so each uplink carries the host's requests and its responses to the others' requests (load/2 + load/2), each downlink the reverse; headers and control packets come on top";

/// The output files asked for (`--json`, `--csv`, `--plot`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outputs {
    pub(crate) json: Option<PathBuf>,
    pub(crate) csv: Option<PathBuf>,
    pub(crate) plot: Option<PathBuf>,
}

impl Outputs {
    /// Checks, before anything is built, that the files can be written (creating them
    /// empty), so that a typo does not cost the whole experiment.
    pub(crate) fn check(&self) -> Result<(), TestbedError> {
        let paths = [
            ("--json", &self.json),
            ("--csv", &self.csv),
            ("--plot", &self.plot),
        ];
        for (i, (option, path)) in paths.iter().enumerate() {
            let Some(p) = path else { continue };
            if p.as_os_str() == "-" {
                return Err(TestbedError::Output {
                    option,
                    why: "homa testbed prints its progress on stdout: give a file name".into(),
                });
            }
            if paths[..i].iter().any(|(_, q)| q.as_ref() == Some(p)) {
                return Err(TestbedError::Output {
                    option,
                    why: format!("{} is named by another output option too", p.display()),
                });
            }
            std::fs::File::create(p).map_err(|e| TestbedError::Output {
                option,
                why: format!("cannot write {}: {e}", p.display()),
            })?;
        }
        Ok(())
    }

    /// Writes the files asked for; returns what was written, for the report.
    pub(crate) fn write(&self, a: &Analysis<'_>) -> Result<Vec<String>, TestbedError> {
        let mut written = Vec::new();
        let files = [
            ("--json", &self.json, "JSON report"),
            ("--csv", &self.csv, "CSV report"),
            ("--plot", &self.plot, "plot"),
        ];
        for (option, path, what) in files {
            let Some(p) = path else { continue };
            let contents = match option {
                "--json" => json(a).to_pretty(),
                "--csv" => csv(a),
                _ => plot(a),
            };
            std::fs::write(p, contents).map_err(|e| TestbedError::Output {
                option,
                why: format!("writing {}: {e}", p.display()),
            })?;
            written.push(format!("{what} written to {}", p.display()));
        }
        Ok(written)
    }
}

/// A baseline through the P50s of an unloaded phase.
fn baseline_of(raw: &RawPhase) -> Option<Baseline> {
    Baseline::new(
        raw.unloaded
            .iter()
            .map(|&(size, p50, _, _)| (size, p50 as f64))
            .collect(),
    )
}

/// One transport's loaded run, every host's client merged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Merged {
    /// Measured RPCs that completed.
    pub(crate) rpcs: u64,
    pub(crate) started: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
    pub(crate) unfinished: u64,
    /// Request payload of the measured, completed RPCs.
    pub(crate) bytes: u64,
    /// The first failure any client reported.
    pub(crate) first_failure: Option<String>,
    /// Clients that reported (and that did not: no raw samples).
    pub(crate) clients_ok: usize,
    pub(crate) clients_failed: usize,
    /// The measured interval, seconds (the same for every client).
    pub(crate) seconds: f64,
}

/// What the report says about one transport.
pub(crate) struct TransportStats<'a> {
    pub(crate) run: &'a TransportRun,
    pub(crate) merged: Merged,
    /// Its own unloaded baseline.
    pub(crate) own_baseline: Option<Baseline>,
    /// Slowdowns against the Homa baseline.
    pub(crate) samples: Samples,
    /// Slowdowns against its own baseline.
    pub(crate) own: Samples,
}

impl TransportStats<'_> {
    /// Request payload completed per second, Gbit/s (all hosts).
    pub(crate) fn gbps(&self) -> f64 {
        self.merged.bytes as f64 * 8.0 / self.merged.seconds / 1e9
    }

    /// Payload on an average host link, each direction, as a fraction of the link rate
    /// (requests and responses: twice the request payload, over every host).
    pub(crate) fn link_load(&self, plan: &Plan) -> f64 {
        2.0 * self.gbps() * 1e9 / (plan.hosts as f64 * plan.link_bps as f64)
    }

    fn short(&self, plan: &Plan) -> ShortStats {
        self.samples.short(plan.workload.short_threshold)
    }
}

/// Everything the report shows, computed once.
pub(crate) struct Analysis<'a> {
    pub(crate) plan: &'a Plan,
    /// Homa's unloaded baseline (every transport's slowdown is against it).
    pub(crate) homa_baseline: Option<Baseline>,
    pub(crate) transports: Vec<TransportStats<'a>>,
}

impl<'a> Analysis<'a> {
    /// Merges each transport's clients and computes the slowdowns.
    pub(crate) fn new(plan: &'a Plan, runs: &'a [TransportRun]) -> Analysis<'a> {
        let homa_baseline = runs
            .iter()
            .find(|r| r.variant == Variant::Homa)
            .and_then(|r| r.unloaded.as_ref().ok())
            .and_then(baseline_of);
        let transports = runs
            .iter()
            .map(|run| {
                let own_baseline = run.unloaded.as_ref().ok().and_then(baseline_of);
                let mut merged = Merged::default();
                let mut samples = Samples::new();
                let mut own = Samples::new();
                for c in &run.clients {
                    let Ok(raw) = &c.raw else {
                        merged.clients_failed += 1;
                        continue;
                    };
                    merged.clients_ok += 1;
                    merged.rpcs += raw.rtts.len() as u64;
                    merged.started += raw.started;
                    merged.failed += raw.failed;
                    merged.skipped += raw.skipped;
                    merged.unfinished += raw.unfinished;
                    merged.seconds = merged.seconds.max(raw.seconds);
                    if merged.first_failure.is_none() {
                        merged.first_failure.clone_from(&raw.failure);
                    }
                    for &(size, ns) in &raw.rtts {
                        merged.bytes += u64::from(size);
                        if let Some(b) = &homa_baseline {
                            samples.push_with(size, ns as f64, |s| b.at(s));
                        }
                        if let Some(b) = &own_baseline {
                            own.push_with(size, ns as f64, |s| b.at(s));
                        }
                    }
                }
                TransportStats {
                    run,
                    merged,
                    own_baseline,
                    samples,
                    own,
                }
            })
            .collect();
        Analysis {
            plan,
            homa_baseline,
            transports,
        }
    }

    fn of(&self, v: Variant) -> Option<&TransportStats<'a>> {
        self.transports.iter().find(|t| t.run.variant == v)
    }

    fn short_p99(&self, v: Variant) -> f64 {
        self.of(v)
            .map_or(f64::NAN, |t| t.short(self.plan).p99_slowdown)
    }

    fn short_p50(&self, v: Variant) -> f64 {
        self.of(v)
            .map_or(f64::NAN, |t| t.short(self.plan).p50_slowdown)
    }
}

/// What the link rate alone costs a short RPC under load: each of the 4 shaped links it
/// crosses (sender's egress and switch port, each way) may be busy with a full frame it
/// cannot preempt. Returns (one frame's time in µs, the 4 frames' time over the unloaded
/// Homa RTT of a short message), if the baseline is known.
pub(crate) fn frame_floor(a: &Analysis<'_>) -> Option<(f64, f64)> {
    let frame = serialisation(a.plan.link_bps, MTU as usize + 14).as_secs_f64() * 1e6;
    let base_us = a
        .homa_baseline
        .as_ref()?
        .at(a.plan.workload.short_threshold)
        / 1e3;
    Some((frame, 4.0 * frame / base_us))
}

/// The ratios and the targets.
pub(crate) struct Summary {
    pub(crate) homa_short_p99: f64,
    pub(crate) tcp_over_homa_p99: f64,
    pub(crate) tcp_over_homa_p50: f64,
    pub(crate) one_prio_over_homa_p99: f64,
    /// Homa's short P99 slowdown ≤ [`TARGET_HOMA_SHORT_P99`].
    pub(crate) homa_target: bool,
    /// TCP's at least [`TARGET_TCP_OVER_HOMA`] × Homa's.
    pub(crate) tcp_target: bool,
    /// Homa with one priority strictly between Homa and TCP.
    pub(crate) between_target: bool,
}

impl Summary {
    pub(crate) fn new(a: &Analysis<'_>) -> Summary {
        let homa = a.short_p99(Variant::Homa);
        let one = a.short_p99(Variant::HomaOnePriority);
        let tcp = a.short_p99(Variant::Tcp);
        let tcp_over_homa_p99 = tcp / homa;
        Summary {
            homa_short_p99: homa,
            tcp_over_homa_p99,
            tcp_over_homa_p50: a.short_p50(Variant::Tcp) / a.short_p50(Variant::Homa),
            one_prio_over_homa_p99: one / homa,
            homa_target: homa <= TARGET_HOMA_SHORT_P99,
            tcp_target: tcp_over_homa_p99 >= TARGET_TCP_OVER_HOMA,
            between_target: homa < one && one < tcp,
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn variant_title(v: Variant) -> &'static str {
    match v {
        Variant::Homa => "Homa (8 priorities)",
        Variant::HomaOnePriority => "Homa (1 priority)",
        Variant::Tcp => "TCP",
    }
}

fn workload_title(spec: WorkloadSpec) -> String {
    match spec {
        WorkloadSpec::Named(w) => format!("{} capped at 1 MB", w.name().to_uppercase()),
        WorkloadSpec::Fixed(s) => format!("{s} B messages"),
    }
}

/// The whole report, as printed.
pub(crate) fn text(a: &Analysis<'_>) -> String {
    let mut o = String::new();
    setup_text(&mut o, a.plan);
    unloaded_text(&mut o, a);
    loaded_text(&mut o, a);
    buckets_text(&mut o, a);
    queues_text(&mut o, a);
    problems_text(&mut o, a);
    summary_text(&mut o, a);
    o
}

fn setup_text(o: &mut String, p: &Plan) {
    let opt = &p.options;
    let link_mbps = p.link_bps as f64 / 1e6;
    let _ = writeln!(o, "\nexperiment: Homa (8 priorities), Homa (1 priority) and TCP over the emulated rack, one after another");
    let _ = writeln!(
        o,
        "  setup     every host runs a `homa server` ({} thread(s)) and a `homa client` ({} thread(s)), all-to-all: each client's servers are every other host's; servers restart for each transport; {}Homa over {} {}, busy-poll {} µs; TCP: {} connection(s) per client-server thread pair, TOS 0",
        opt.servers,
        opt.clients,
        if p.one_engine_per_host(Variant::Homa) {
            "Homa's loaded runs: one engine per host (the client's first socket serves the host's port, `homa client --serve`: one pacer and grant scheduler per host, as the kernel's; the servers answer the unloaded RTT only, and the clients' CPU seconds include serving); "
        } else {
            ""
        },
        opt.transport.name().to_uppercase(),
        if opt.ipv6 { "IPv6" } else { "IPv4" },
        opt.busy_poll_us,
        opt.tcp_conns
    );
    let _ = writeln!(
        o,
        "  load      {} of {link_mbps} Mbit/s on every host link, each direction (payload): each host's client offers {} x link = {:.1} Mbit/s of requests, open-loop Poisson, uniformly over the other {} hosts' servers; responses as long as requests; {:.1} RPCs/s in all",
        opt.load,
        p.client_load,
        p.client_load * link_mbps,
        p.hosts - 1,
        p.rpc_rate
    );
    let _ = writeln!(
        o,
        "  workload  {} (mean {:.0} B); short messages: <= {} B ({:.1} % of messages)",
        workload_title(opt.workload),
        p.workload.dist.mean(),
        p.workload.short_threshold,
        100.0 * p.short_fraction
    );
    let chosen = match p.duration_choice {
        DurationChoice::Given => "--duration".to_string(),
        DurationChoice::Quick => "--quick".to_string(),
        DurationChoice::ForShortMessages => format!(
            "the default: at least {MIN_SHORT_MESSAGES:.0} short messages expected, rounded up to 10 s"
        ),
    };
    let _ = writeln!(
        o,
        "  runs      {} s per transport ({chosen}; {:.0} short messages expected per transport) after {:.1} s warm-up, up to {:.0} s drain; seed {} (host i: seed + i x 2^32)",
        p.duration,
        p.expected_short(),
        p.client_plan.load_warmup.as_secs_f64(),
        p.client_plan.drain.as_secs_f64(),
        opt.seed
    );
    let b = &p.budget;
    let _ = writeln!(
        o,
        "  homa      unsched_bytes = window = {} ({} x {}-byte segments; RTT-bytes {} of a {:.0} µs RTT), link_mbps {} (pacer), MTU {MTU}",
        b.unsched_bytes,
        b.unsched_bytes / p.segment.max(1),
        p.segment,
        b.rtt_bytes,
        b.rtt.as_secs_f64() * 1e6,
        p.homa_link_mbps
    );
    let _ = writeln!(
        o,
        "  timers    resend_ticks = resend_interval = {} ms, timeout_ticks = {} ms (a full class buffer drains in {:.1} ms)",
        b.timers.resend_ticks,
        b.timers.timeout_ticks,
        b.timers.drain.as_secs_f64() * 1e3
    );
    if !opt.homa_set.is_empty() {
        let set: Vec<String> = opt
            .homa_set
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "  homa-set  also set on every server and client (--homa-set): {}",
            set.join(", ")
        );
    }
}

fn unloaded_text(o: &mut String, a: &Analysis<'_>) {
    let _ = writeln!(
        o,
        "\n1. Unloaded RTT, µs: host 0 -> host 1, back-to-back RPCs (request and response of the size); each transport's own servers"
    );
    let mut names = format!("   {:>8}", "");
    let mut header = format!("   {:>8}", "size");
    for t in &a.transports {
        let _ = write!(names, " | {:<26}", variant_title(t.run.variant));
        let _ = write!(header, " | {:>9} {:>9} {:>6}", "P50", "P99", "RPCs");
    }
    let _ = writeln!(o, "{names}\n{header}");
    let mut sizes: Vec<u32> = a
        .transports
        .iter()
        .filter_map(|t| t.run.unloaded.as_ref().ok())
        .flat_map(|r| r.unloaded.iter().map(|u| u.0))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let mut line = format!("   {:>8}", size_text(size));
        for t in &a.transports {
            let cell = t
                .run
                .unloaded
                .as_ref()
                .ok()
                .and_then(|r| r.unloaded.iter().find(|u| u.0 == size));
            match cell {
                Some(&(_, p50, p99, n)) => {
                    let _ = write!(
                        line,
                        " | {} {} {n:>6}",
                        us(p50 as f64 / 1e3, 9),
                        us(p99 as f64 / 1e3, 9)
                    );
                }
                None => {
                    let _ = write!(line, " | {:>9} {:>9} {:>6}", "—", "—", 0);
                }
            }
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "   (the P50s are the slowdown baselines, linear in size between these sizes: every transport against Homa's, measured first; own = against the transport's own)"
    );
}

fn loaded_text(o: &mut String, a: &Analysis<'_>) {
    let _ = writeln!(
        o,
        "\n2. Loaded runs: every host's client merged ({} hosts)",
        a.plan.hosts
    );
    let _ = writeln!(
        o,
        "   {:<19} {:>7} {:>7} {:>7} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "transport",
        "RPCs",
        "failed",
        "skipped",
        "unfinished",
        "Gbit/s",
        "link load",
        "client s",
        "server s",
        "CPU busy",
        "CPU wait"
    );
    for t in &a.transports {
        let m = &t.merged;
        let _ = writeln!(
            o,
            "   {:<19} {:>7} {:>7} {:>7} {:>10} {} {} {} {} {} {}",
            variant_title(t.run.variant),
            m.rpcs,
            m.failed,
            m.skipped,
            m.unfinished,
            num(t.gbps(), 8, 4),
            num(t.link_load(a.plan), 9, 3),
            num(t.run.cpu.clients_s, 8, 1),
            num(t.run.cpu.servers_s.unwrap_or(f64::NAN), 8, 1),
            match t.run.cpu.machine_busy {
                Some(b) => format!("{:>7.0} %", 100.0 * b),
                None => format!("{:>8}", "—"),
            },
            match t.run.cpu.run_wait_us_per_slice() {
                Some(w) => format!("{w:>6.0} µs"),
                None => format!("{:>9}", "—"),
            }
        );
    }
    for t in &a.transports {
        if let Some(why) = &t.merged.first_failure {
            let _ = writeln!(
                o,
                "   {} RPC failure (first of {}): {why}",
                variant_title(t.run.variant),
                t.merged.failed
            );
        }
    }
    let _ = writeln!(
        o,
        "   (RPCs: measured and completed; failed: the transport gave up on them; skipped: arrivals dropped by a client with too much in flight; unfinished: measured RPCs still open after the drain. Gbit/s: request payload completed per second, all hosts; link load: requests + responses per host link and direction / link rate (the offered is {}); client s: the clients' CPU seconds, whole phase; server s: the servers' CPU seconds over the loaded run; CPU busy: all {} CPUs of the machine over the loaded run; CPU wait: how long the servers' and clients' threads waited, runnable, for a CPU each time they got one (mean, /proc/<pid>/task/*/schedstat): a few µs when CPUs are to spare, hundreds when the machine is the bottleneck)",
        a.plan.options.load,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
}

fn buckets_text(o: &mut String, a: &Analysis<'_>) {
    let _ = writeln!(
        o,
        "\n3. Slowdown per message size (RTT / unloaded Homa RTT of the same size)"
    );
    let mut names = format!("   {:>7} {:>5}", "", "");
    let mut header = format!("   {:>7} {:>5}", "<= size", "frac");
    for t in &a.transports {
        let _ = write!(names, " | {:<22}", variant_title(t.run.variant));
        let _ = write!(header, " | {:>6} {:>7} {:>7}", "n", "P50", "P99");
    }
    let _ = writeln!(o, "{names}\n{header}");
    let per: Vec<Vec<BucketStats>> = a
        .transports
        .iter()
        .map(|t| t.samples.buckets(&a.plan.workload.edges))
        .collect();
    let mut edges: Vec<u32> = per.iter().flatten().map(|b| b.max_size).collect();
    edges.sort_unstable();
    edges.dedup();
    for e in edges {
        let found: Vec<Option<&BucketStats>> = per
            .iter()
            .map(|v| v.iter().find(|b| b.max_size == e))
            .collect();
        let frac = found
            .iter()
            .flatten()
            .next()
            .map_or(f64::NAN, |b| b.cumulative_fraction);
        let mut line = format!("   {:>7} {}", size_label(e), num(frac, 5, 2));
        for b in found {
            let _ = match b {
                Some(b) => write!(
                    line,
                    " | {:>6} {} {}",
                    b.count,
                    num(b.p50_slowdown, 7, 1),
                    num(b.p99_slowdown, 7, 1)
                ),
                None => write!(line, " | {:>6} {:>7} {:>7}", 0, "—", "—"),
            };
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "   Short messages (<= {} B, the shortest 10 %):",
        a.plan.workload.short_threshold
    );
    for t in &a.transports {
        let s = t.short(a.plan);
        let own = t.own.short(a.plan.workload.short_threshold);
        let _ = writeln!(
            o,
            "     {:<19} {:>6} messages: slowdown P50 {} P99 {} (own baseline: P50 {} P99 {})",
            variant_title(t.run.variant),
            s.count,
            num(s.p50_slowdown, 0, 2),
            num(s.p99_slowdown, 0, 2),
            num(own.p50_slowdown, 0, 2),
            num(own.p99_slowdown, 0, 2)
        );
    }
}

fn queues_text(o: &mut String, a: &Analysis<'_>) {
    let _ = writeln!(
        o,
        "\n4. The emulated links during each loaded run (tc -s: qdisc drops are silent to UDP senders)"
    );
    for t in &a.transports {
        let (p, peak) = (&t.run.ports, &t.run.peak);
        let levels: Vec<String> = (0..LEVELS)
            .rev()
            .map(|l| peak.level_bytes[usize::from(l)].to_string())
            .collect();
        let _ = writeln!(
            o,
            "   {:<19} drops: switch ports {} of {} packets, host egresses {} of {} sends; peak switch-port backlog {} B ({} packets{}), per level 7..0 peak {} B; {} readings",
            variant_title(t.run.variant),
            p.switch_drops(),
            p.switch_sent() + p.switch_drops(),
            p.host_drops(),
            p.host_sent() + p.host_drops(),
            peak.bytes,
            peak.packets,
            peak.port.as_deref().map_or(String::new(), |port| format!(" at {port}")),
            levels.join("/"),
            peak.samples
        );
    }
    let _ = writeln!(
        o,
        "   (a host egress counts a UDP GSO send once: its qdisc sees it whole; switch ports see MTU-sized packets)"
    );
}

fn problems_text(o: &mut String, a: &Analysis<'_>) {
    let problems: Vec<(Variant, &String)> = a
        .transports
        .iter()
        .flat_map(|t| t.run.problems.iter().map(move |p| (t.run.variant, p)))
        .collect();
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n   Problems:");
    for (v, p) in problems {
        let _ = writeln!(o, "   {}: {p}", variant_title(v));
    }
}

fn summary_text(o: &mut String, a: &Analysis<'_>) {
    let s = Summary::new(a);
    let _ = writeln!(
        o,
        "\nSummary (short messages, slowdown against unloaded Homa)"
    );
    let _ = writeln!(
        o,
        "   Homa short-message P99 slowdown:                 {}",
        ratio(s.homa_short_p99)
    );
    let _ = writeln!(
        o,
        "   TCP / Homa short-message P99 slowdown:           {} (P50: {})",
        ratio(s.tcp_over_homa_p99),
        ratio(s.tcp_over_homa_p50)
    );
    let _ = writeln!(
        o,
        "   Homa 1 priority / Homa short-message P99:        {}",
        ratio(s.one_prio_over_homa_p99)
    );
    let _ = writeln!(
        o,
        "   Targets (issue 12: W4 at load 0.8; this run: {} at {}): Homa P99 <= {TARGET_HOMA_SHORT_P99}: {}; TCP >= {TARGET_TCP_OVER_HOMA} x Homa: {}; Homa 1 priority between Homa and TCP: {}",
        workload_title(a.plan.options.workload),
        a.plan.options.load,
        met(s.homa_target),
        met(s.tcp_target),
        met(s.between_target)
    );
    floor_text(o, a);
}

fn floor_text(o: &mut String, a: &Analysis<'_>) {
    let Some((frame, floor)) = frame_floor(a) else {
        return;
    };
    let _ = writeln!(
        o,
        "   At {} Mbit/s a full frame takes {frame:.0} µs per link; a short RPC crosses 4 shaped links (2 each way), each possibly busy with a frame it cannot preempt: up to {:.0} µs of waiting = {floor:.1} x the unloaded Homa RTT of a {}-byte RPC (the issue's targets assume links where a frame is a small part of the RTT: 1.2 µs at 10 Gbit/s)",
        a.plan.link_bps / 1_000_000,
        4.0 * frame,
        a.plan.workload.short_threshold
    );
}

fn points_json(b: Option<&Baseline>) -> Json {
    Json::Array(
        b.map(Baseline::points)
            .unwrap_or_default()
            .iter()
            .map(|(s, ns)| {
                Json::object()
                    .field("size", *s)
                    .field("p50_us", ns / 1000.0)
            })
            .collect(),
    )
}

fn config_json(p: &Plan) -> Json {
    let o = &p.options;
    let b = &p.budget;
    Json::object()
        .field("hosts", p.hosts)
        .field("link_mbps", p.link_bps as f64 / 1e6)
        .field("mtu", MTU)
        .field("workload", o.workload.to_string())
        .field("workload_mean_bytes", p.workload.dist.mean())
        .field("short_max_size", p.workload.short_threshold)
        .field("short_fraction", p.short_fraction)
        .field("load", o.load)
        .field("load_definition", LOAD_DEFINITION)
        .field("client_load", p.client_load)
        .field("rpcs_per_s_offered", p.rpc_rate)
        .field("duration_s", p.duration)
        .field(
            "duration_choice",
            match p.duration_choice {
                DurationChoice::Given => "given",
                DurationChoice::Quick => "quick",
                DurationChoice::ForShortMessages => "short_messages",
            },
        )
        .field("expected_short_messages", p.expected_short())
        .field("warmup_s", p.client_plan.load_warmup.as_secs_f64())
        .field("drain_s", p.client_plan.drain.as_secs_f64())
        .field("seed", o.seed)
        .field("quick", o.quick)
        .field("clients_per_host", o.clients)
        .field("servers_per_host", o.servers)
        .field("tcp_conns", o.tcp_conns)
        .field("busy_poll_us", o.busy_poll_us)
        .field("transport", o.transport.name())
        .field("ipv6", o.ipv6)
        .field("rtt_us", b.rtt.as_secs_f64() * 1e6)
        .field("rtt_bytes", b.rtt_bytes)
        .field("segment_bytes", p.segment)
        .field("unsched_bytes", b.unsched_bytes)
        .field("window", b.window)
        .field("homa_link_mbps", p.homa_link_mbps)
        .field("resend_ticks", b.timers.resend_ticks)
        .field("timeout_ticks", b.timers.timeout_ticks)
        .field("class_drain_ms", b.timers.drain.as_secs_f64() * 1e3)
        .field(
            "homa_set",
            o.homa_set
                .iter()
                .fold(Json::object(), |j, &(k, v)| j.field(k, v)),
        )
        .field(
            "slowdown_baseline",
            "P50 of unloaded back-to-back Homa RPCs host 0 -> host 1 (8 priorities), measured first, linear in size between measured sizes; own_*: the transport's own unloaded RTT",
        )
}

/// The unloaded RTTs of a run, one object per size.
fn unloaded_json(run: &TransportRun) -> Json {
    Json::Array(
        run.unloaded
            .as_ref()
            .map(|r| r.unloaded.clone())
            .unwrap_or_default()
            .iter()
            .map(|&(size, p50, p99, n)| {
                Json::object()
                    .field("size", size)
                    .field("p50_us", p50 as f64 / 1e3)
                    .field("p99_us", p99 as f64 / 1e3)
                    .field("count", n)
            })
            .collect(),
    )
}

/// The qdisc counters over a loaded run: the sums and every device.
fn qdisc_json(ports: &super::queues::PortDelta) -> Json {
    Json::object()
        .field("switch_drops", ports.switch_drops())
        .field("switch_sent", ports.switch_sent())
        .field("host_drops", ports.host_drops())
        .field("host_sent", ports.host_sent())
        .field(
            "devices",
            Json::Array(
                ports
                    .devices
                    .iter()
                    .map(|d| {
                        Json::object()
                            .field("netns", d.netns.as_str())
                            .field("dev", d.dev.as_str())
                            .field("switch_port", d.switch_port)
                            .field("sent_packets", d.counters.sent_packets)
                            .field("dropped", d.counters.dropped)
                    })
                    .collect(),
            ),
        )
}

/// Each host's client of a loaded run: its counts, or why it has none.
fn clients_json(run: &TransportRun) -> Json {
    Json::Array(
        run.clients
            .iter()
            .map(|c| match &c.raw {
                Ok(r) => Json::object()
                    .field("host", c.host)
                    .field("rpcs", r.rtts.len())
                    .field("started", r.started)
                    .field("failed", r.failed)
                    .field("cpu_s", r.cpu_s),
                Err(why) => Json::object()
                    .field("host", c.host)
                    .field("error", why.as_str()),
            })
            .collect(),
    )
}

fn transport_json(a: &Analysis<'_>, t: &TransportStats<'_>) -> Json {
    let p = a.plan;
    let m = &t.merged;
    let own = t.own.buckets(&p.workload.edges);
    let buckets: Vec<Json> = t
        .samples
        .buckets(&p.workload.edges)
        .iter()
        .map(|b| {
            let mut j = Json::from(b);
            let o = own.iter().find(|o| o.max_size == b.max_size);
            j.insert("own_p50_slowdown", o.map_or(f64::NAN, |o| o.p50_slowdown));
            j.insert("own_p99_slowdown", o.map_or(f64::NAN, |o| o.p99_slowdown));
            j
        })
        .collect();
    let mut short = Json::from(&t.short(p));
    let own_short = t.own.short(p.workload.short_threshold);
    short.insert("own_p50_slowdown", own_short.p50_slowdown);
    short.insert("own_p99_slowdown", own_short.p99_slowdown);
    let (ports, peak, cpu) = (&t.run.ports, &t.run.peak, &t.run.cpu);
    Json::object()
        .field("transport", t.run.variant.name())
        .field("priorities", t.run.variant.priorities())
        .field("unloaded", unloaded_json(t.run))
        .field(
            "loaded",
            Json::object()
                .field("rpcs", m.rpcs)
                .field("started", m.started)
                .field("failed", m.failed)
                .field("skipped", m.skipped)
                .field("unfinished", m.unfinished)
                .field("first_failure", m.first_failure.clone())
                .field("clients_ok", m.clients_ok)
                .field("clients_failed", m.clients_failed)
                .field("seconds", m.seconds)
                .field("throughput_gbps", t.gbps())
                .field("link_load", t.link_load(p)),
        )
        .field("buckets", Json::Array(buckets))
        .field("short", short)
        .field("overall", Json::from(&t.samples.overall()))
        .field(
            "cpu",
            Json::object()
                .field("clients_s", cpu.clients_s)
                .field("servers_s", cpu.servers_s)
                .field("machine_busy", cpu.machine_busy)
                .field("wall_s", cpu.wall_s)
                .field(
                    "run_queue_wait_s",
                    cpu.run_queue.map(|rq| rq.wait_ns as f64 / 1e9),
                )
                .field("timeslices", cpu.run_queue.map(|rq| rq.timeslices))
                .field("run_queue_wait_us_per_slice", cpu.run_wait_us_per_slice()),
        )
        .field("qdisc", qdisc_json(ports))
        .field(
            "peak_backlog",
            Json::object()
                .field("bytes", peak.bytes)
                .field("packets", peak.packets)
                .field("port", peak.port.clone())
                .field("level_bytes", peak.level_bytes.to_vec())
                .field("samples", peak.samples),
        )
        .field("clients", clients_json(t.run))
        .field(
            "problems",
            t.run
                .problems
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
}

/// The `--json` document.
pub(crate) fn json(a: &Analysis<'_>) -> Json {
    let s = Summary::new(a);
    let mut baselines = Json::object();
    for t in &a.transports {
        baselines.insert(t.run.variant.name(), points_json(t.own_baseline.as_ref()));
    }
    Json::object()
        .field("tool", "homa testbed")
        .field("version", env!("CARGO_PKG_VERSION"))
        .field("config", config_json(a.plan))
        .field("baseline", points_json(a.homa_baseline.as_ref()))
        .field("baselines", baselines)
        .field(
            "transports",
            Json::Array(a.transports.iter().map(|t| transport_json(a, t)).collect()),
        )
        .field(
            "summary",
            Json::object()
                .field("homa_short_p99_slowdown", s.homa_short_p99)
                .field("tcp_homa_short_p99_slowdown", s.tcp_over_homa_p99)
                .field("tcp_homa_short_p50_slowdown", s.tcp_over_homa_p50)
                .field("homa1_homa_short_p99_slowdown", s.one_prio_over_homa_p99)
                .field(
                    "frame_wait_floor_slowdown",
                    frame_floor(a).map(|(_, floor)| floor),
                )
                .field(
                    "targets",
                    Json::object()
                        .field("homa_short_p99_at_most_3", s.homa_target)
                        .field("tcp_at_least_20x_homa", s.tcp_target)
                        .field("homa1_between_homa_and_tcp", s.between_target),
                ),
        )
}

const CSV_COLUMNS: [&str; 17] = [
    "section",
    "transport",
    "size",
    "count",
    "p50_us",
    "p99_us",
    "p50_slowdown",
    "p99_slowdown",
    "own_p50_slowdown",
    "own_p99_slowdown",
    "cumulative_fraction",
    "gbps",
    "failed",
    "switch_drops",
    "host_drops",
    "peak_backlog_bytes",
    "cpu_s",
];

/// The `--csv` document: one row per measurement; `section` says which (`unloaded`,
/// `loaded`, `bucket`, `short`).
pub(crate) fn csv(a: &Analysis<'_>) -> String {
    let mut c = Csv::new(&CSV_COLUMNS);
    let nan = || Cell::Float(f64::NAN);
    let pad = |mut cells: Vec<Cell>| {
        cells.resize(CSV_COLUMNS.len(), Cell::Text(String::new()));
        cells
    };
    for t in &a.transports {
        let name = t.run.variant.name();
        if let Ok(r) = &t.run.unloaded {
            for &(size, p50, p99, n) in &r.unloaded {
                c.row(&pad(vec![
                    "unloaded".into(),
                    name.into(),
                    size.into(),
                    n.into(),
                    (p50 as f64 / 1e3).into(),
                    (p99 as f64 / 1e3).into(),
                ]));
            }
        }
        let (ports, cpu) = (&t.run.ports, &t.run.cpu);
        let mut row = vec!["loaded".into(), name.into(), nan(), t.merged.rpcs.into()];
        row.extend(std::iter::repeat_n(nan(), 7));
        row.extend([
            t.gbps().into(),
            t.merged.failed.into(),
            ports.switch_drops().into(),
            ports.host_drops().into(),
            t.run.peak.bytes.into(),
            (cpu.clients_s + cpu.servers_s.unwrap_or(0.0)).into(),
        ]);
        c.row(&row);
        let own = t.own.buckets(&a.plan.workload.edges);
        for b in t.samples.buckets(&a.plan.workload.edges) {
            let o = own.iter().find(|o| o.max_size == b.max_size);
            c.row(&pad(vec![
                "bucket".into(),
                name.into(),
                b.max_size.into(),
                b.count.into(),
                b.p50_us.into(),
                b.p99_us.into(),
                b.p50_slowdown.into(),
                b.p99_slowdown.into(),
                o.map_or(f64::NAN, |o| o.p50_slowdown).into(),
                o.map_or(f64::NAN, |o| o.p99_slowdown).into(),
                b.cumulative_fraction.into(),
            ]));
        }
        let s = t.short(a.plan);
        let so = t.own.short(a.plan.workload.short_threshold);
        c.row(&pad(vec![
            "short".into(),
            name.into(),
            s.max_size.into(),
            s.count.into(),
            nan(),
            nan(),
            s.p50_slowdown.into(),
            s.p99_slowdown.into(),
            so.p50_slowdown.into(),
            so.p99_slowdown.into(),
        ]));
    }
    c.finish()
}

/// The `--plot` SVG: P99 slowdown (Homa baseline) per size bucket against the
/// cumulative fraction of messages, one line per transport (as `homa bench --plot`).
pub(crate) fn plot(a: &Analysis<'_>) -> String {
    let series: Vec<Series> = a
        .transports
        .iter()
        .map(|t| {
            let points = t
                .samples
                .buckets(&a.plan.workload.edges)
                .iter()
                .map(|b| (b.cumulative_fraction, b.p99_slowdown, b.max_size))
                .collect();
            Series::new(format!("{} P99", t.run.variant.name()), points)
        })
        .collect();
    let title = format!(
        "{} at load {} on the emulated rack ({} hosts, {} Mbit/s): P99 slowdown vs unloaded Homa RTT",
        workload_title(a.plan.options.workload),
        a.plan.options.load,
        a.plan.hosts,
        a.plan.link_bps / 1_000_000
    );
    slowdown_svg(&title, &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::raw::{Phase, RawKind};
    use crate::bench::system::RunQueue;
    use crate::bench::TransportArg;
    use crate::testbed::budget::PathBudget;
    use crate::testbed::experiment::{ClientRun, CpuUse, Options};
    use crate::testbed::queues::{Peak, PortDelta};
    use std::time::Duration;

    fn plan() -> Plan {
        let options = Options {
            workload: crate::bench::spec::parse_workload("w4").unwrap(),
            load: 0.8,
            duration: Some(2.0),
            seed: 1,
            quick: true,
            clients: 1,
            servers: 1,
            tcp_conns: 1,
            busy_poll_us: 0,
            transport: TransportArg::Udp,
            ipv6: false,
            homa_link_mbps: None,
            homa_set: Vec::new(),
            one_engine_per_host: false,
        };
        let budget = PathBudget::new(
            100_000_000,
            Duration::from_micros(60),
            Duration::from_micros(252),
            1416,
            262_144,
        );
        Plan::new(options, 2, 100_000_000, budget, 1416)
    }

    /// An unloaded phase with RTT `base` ns at 100 B and 100 × at 1 MB.
    fn unloaded(base: u64) -> RawPhase {
        RawPhase {
            phase: Some(Phase::Unloaded),
            kind: Some(RawKind::Homa),
            unloaded: vec![
                (100, base, 2 * base, 50),
                (1_000_000, 100 * base, 120 * base, 50),
            ],
            ..RawPhase::default()
        }
    }

    /// A loaded client whose 100-byte RPCs take `short` ns and 1 MB ones `long` ns.
    fn loaded(short: u64, long: u64) -> RawPhase {
        let mut rtts: Vec<(u32, u64)> = (0..90).map(|i| (100, short + i)).collect();
        rtts.extend((0..10).map(|i| (1_000_000, long + i)));
        RawPhase {
            phase: Some(Phase::Loaded),
            seconds: 2.0,
            cpu_s: 0.5,
            started: 100,
            rtts,
            ..RawPhase::default()
        }
    }

    fn run(variant: Variant, base: u64, short: u64) -> TransportRun {
        TransportRun {
            variant,
            unloaded: Ok(unloaded(base)),
            clients: vec![
                ClientRun {
                    host: 0,
                    raw: Ok(loaded(short, 200 * base)),
                },
                ClientRun {
                    host: 1,
                    raw: Err("homa client (loaded) on host 1: failed".into()),
                },
            ],
            ports: PortDelta::default(),
            peak: Peak {
                bytes: 3028,
                packets: 2,
                port: Some("p1".into()),
                ..Peak::default()
            },
            cpu: CpuUse {
                clients_s: 0.5,
                servers_s: Some(0.25),
                machine_busy: Some(0.4),
                wall_s: 4.0,
                // 30 ms over 1,000 timeslices: 30 µs each.
                run_queue: Some(RunQueue {
                    wait_ns: 30_000_000,
                    timeslices: 1000,
                }),
            },
            problems: vec!["loaded run, host 1: failed".into()],
        }
    }

    fn runs() -> Vec<TransportRun> {
        vec![
            run(Variant::Homa, 10_000, 20_000),
            run(Variant::HomaOnePriority, 11_000, 50_000),
            run(Variant::Tcp, 8_000, 2_000_000),
        ]
    }

    #[test]
    fn slowdowns_are_against_the_homa_baseline_and_clients_merge() {
        let plan = plan();
        let runs = runs();
        let a = Analysis::new(&plan, &runs);
        let homa = a.of(Variant::Homa).unwrap();
        assert_eq!((homa.merged.clients_ok, homa.merged.clients_failed), (1, 1));
        assert_eq!(homa.merged.rpcs, 100);
        assert_eq!(homa.merged.bytes, 90 * 100 + 10 * 1_000_000);
        // 100-byte RPCs: 20,000..20,089 ns over a 10,000 ns baseline.
        let short = homa.short(&plan);
        assert_eq!(short.count, 90);
        assert!((2.0..2.01).contains(&short.p50_slowdown), "{short:?}");
        // TCP against Homa's baseline, and against its own.
        let tcp = a.of(Variant::Tcp).unwrap();
        assert!((200.0..201.0).contains(&tcp.short(&plan).p50_slowdown));
        let own = tcp.own.short(plan.workload.short_threshold);
        assert!((250.0..251.0).contains(&own.p50_slowdown), "{own:?}");
        let s = Summary::new(&a);
        assert!(s.homa_target && s.tcp_target && s.between_target);
        assert!(
            (s.tcp_over_homa_p99 - 100.0).abs() < 1.0,
            "{}",
            s.tcp_over_homa_p99
        );
        // Requests + responses of 1 client over 2 s, per host link of 100 Mbit/s.
        let expected = 2.0 * homa.merged.bytes as f64 * 8.0 / 2.0 / 2e8;
        assert!((homa.link_load(&plan) - expected).abs() < 1e-12);
    }

    #[test]
    fn a_slow_homa_misses_the_targets() {
        let plan = plan();
        let mut runs = runs();
        runs[0] = run(Variant::Homa, 10_000, 500_000);
        let s = Summary::new(&Analysis::new(&plan, &runs));
        assert!(!s.homa_target && !s.tcp_target && !s.between_target);
    }

    #[test]
    fn the_report_has_every_section_and_the_files_every_key() {
        let plan = plan();
        let runs = runs();
        let a = Analysis::new(&plan, &runs);
        let t = text(&a);
        for needle in [
            "1. Unloaded RTT",
            "2. Loaded runs",
            "3. Slowdown per message size",
            "Short messages (<=",
            "4. The emulated links",
            "peak switch-port backlog 3028 B (2 packets at p1)",
            "Problems:",
            "loaded run, host 1: failed",
            "Summary",
            "TCP / Homa short-message P99 slowdown:",
            "Homa P99 <= 3: met",
            // 4 x 121.12 µs frames over the baseline at 315 B: 10 µs + 215/999,900 of 990 µs.
            "a full frame takes 121 µs per link",
            "     40 %     30 µs",
            "= 47.4 x the unloaded Homa RTT",
        ] {
            assert!(t.contains(needle), "no {needle:?} in:\n{t}");
        }
        let j = json(&a);
        for key in ["config", "baseline", "baselines", "transports", "summary"] {
            assert!(j.get(key).is_some(), "no {key}");
        }
        let Some(Json::Array(ts)) = j.get("transports") else {
            panic!("transports is not an array")
        };
        assert_eq!(ts.len(), 3);
        for t in ts {
            for key in [
                "transport",
                "unloaded",
                "loaded",
                "buckets",
                "short",
                "overall",
                "cpu",
                "qdisc",
                "peak_backlog",
                "clients",
                "problems",
            ] {
                assert!(t.get(key).is_some(), "no {key} in {t:?}");
            }
            let cpu = t.get("cpu").expect("cpu");
            assert_eq!(
                cpu.get("run_queue_wait_us_per_slice"),
                Some(&Json::Float(30.0))
            );
            assert_eq!(cpu.get("timeslices"), Some(&Json::UInt(1000)));
        }
        let c = csv(&a);
        assert!(c.lines().all(|l| l.split(',').count() == CSV_COLUMNS.len()));
        for section in ["unloaded,", "loaded,", "bucket,", "short,"] {
            assert!(c.lines().any(|l| l.starts_with(section)), "{section}");
        }
        assert_eq!(plot(&a).matches("<polyline").count(), 3);
    }

    #[test]
    fn output_files_are_checked_before_the_run() {
        let dir = std::env::temp_dir().join(format!("homa-tb-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Outputs {
            json: Some(dir.join("a.json")),
            csv: Some(dir.join("a.csv")),
            plot: None,
        };
        assert!(ok.check().is_ok());
        assert!(dir.join("a.json").exists());
        let stdout = Outputs {
            json: Some("-".into()),
            ..Outputs::default()
        };
        assert!(matches!(
            stdout.check(),
            Err(TestbedError::Output {
                option: "--json",
                ..
            })
        ));
        let same = Outputs {
            csv: Some(dir.join("a.json")),
            ..ok.clone()
        };
        assert!(matches!(
            same.check(),
            Err(TestbedError::Output {
                option: "--csv",
                ..
            })
        ));
        let missing = Outputs {
            plot: Some(dir.join("no/such/dir/p.svg")),
            ..Outputs::default()
        };
        assert!(matches!(
            missing.check(),
            Err(TestbedError::Output {
                option: "--plot",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

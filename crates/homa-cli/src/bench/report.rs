//! The report of a run: the tables, the summary of ratios, `--json`, `--csv` and
//! `--plot`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use homa_eval::plot::{size_label, slowdown_svg, Series};
use homa_eval::report::{Cell, Csv, Json};
use homa_eval::stats::{BucketStats, ShortStats};

use super::cost::Cost;
use super::error::BenchError;
use super::harness::{Baseline, Unloaded};
use super::server::Targets;
use super::spec::{WorkloadSpec, MAX_MESSAGE};
use super::system::{self, Machine};
use super::{
    udp, Kind, LoadedRun, MeasureArgs, Plan, Results, Scope, WorkloadInfo, TABLE_SIZES,
    THROUGHPUT_SIZE, THROUGHPUT_WINDOW,
};

/// Everything the report says about how the run was made.
pub(crate) struct Context {
    pub(crate) scope: Scope,
    pub(crate) machine: Machine,
    pub(crate) mtu: Option<u32>,
    pub(crate) priorities: u8,
    pub(crate) homa_link_mbps: u32,
    pub(crate) transport: &'static str,
    pub(crate) ipv6: bool,
    pub(crate) targets: Targets,
    pub(crate) workload: WorkloadSpec,
    pub(crate) workload_text: String,
    pub(crate) workload_mean: f64,
    pub(crate) edges: Vec<u32>,
    pub(crate) short_threshold: u32,
    pub(crate) load: f64,
    pub(crate) link_gbps: f64,
    pub(crate) clients: usize,
    pub(crate) servers: usize,
    /// TCP connections per client-server pair (`--tcp-conns`).
    pub(crate) tcp_conns: usize,
    /// Shards of the one Homa server port (`--server-shards`), if sharded.
    pub(crate) server_shards: Option<u16>,
    pub(crate) seed: u64,
    pub(crate) quick: bool,
    pub(crate) busy_poll_us: u64,
    /// The `--homa-*` settings given (name, value).
    pub(crate) homa_settings: Vec<(&'static str, u64)>,
    pub(crate) plan: Plan,
}

impl Context {
    pub(crate) fn new(
        m: &MeasureArgs,
        plan: &Plan,
        workload: &WorkloadInfo,
        targets: &Targets,
        scope: Scope,
        machine: Machine,
    ) -> Context {
        // (Validated when the sockets were opened.)
        let protocol = m.homa.protocol().unwrap_or_default();
        let workload_text = match workload.spec {
            WorkloadSpec::Named(w) => format!(
                "{w} ({}, capped at {MAX_MESSAGE} B as the Linux module's benchmark samples it: {w}_cp_node)",
                w.description()
            ),
            WorkloadSpec::Fixed(size) => format!("every message {size} B"),
        };
        Context {
            scope,
            machine,
            mtu: match scope {
                Scope::Loopback => system::interface_mtu("lo"),
                Scope::Remote(_) => None,
            }
            .or_else(|| system::path_mtu(targets.udp)),
            priorities: protocol.num_priorities(),
            homa_link_mbps: protocol.link_mbps(),
            transport: m.transport.name(),
            ipv6: m.ipv6,
            targets: targets.clone(),
            workload: workload.spec,
            workload_text,
            workload_mean: workload.dist.mean(),
            edges: workload.edges.clone(),
            short_threshold: workload.short_threshold,
            load: m.load,
            link_gbps: m.link_gbps,
            clients: m.clients,
            servers: m.servers,
            tcp_conns: m.tcp_conns,
            server_shards: m.server_shards,
            seed: m.seed,
            quick: m.quick,
            busy_poll_us: m.busy_poll_us,
            homa_settings: m.homa.describe(),
            plan: plan.clone(),
        }
    }

    fn offered_gbps(&self) -> f64 {
        self.load * self.link_gbps
    }

    /// Whose CPU time and context switches the cost columns count.
    fn cost_scope(&self) -> &'static str {
        match self.scope {
            Scope::Loopback => "the whole process: client and server threads alike (the servers of every transport are threads of this process), Homa's background threads included",
            Scope::Remote(_) => "the client process only (the server's cost is not seen)",
        }
    }

    /// [`cost_scope`](Self::cost_scope), for a table's heading.
    fn cost_scope_short(&self) -> &'static str {
        match self.scope {
            Scope::Loopback => "the whole process (client and server threads)",
            Scope::Remote(_) => "the client process only",
        }
    }

    fn where_(&self) -> String {
        match self.scope {
            Scope::Loopback => format!(
                "loopback {}, servers in this process",
                self.targets.udp.ip()
            ),
            Scope::Remote(ip) => format!("`homa server` at {ip}"),
        }
    }

    fn config_json(&self) -> Json {
        let p = &self.plan;
        Json::object()
            .field(
                "mode",
                match self.scope {
                    Scope::Loopback => "loopback",
                    Scope::Remote(_) => "client",
                },
            )
            .field("server", self.targets.udp.ip().to_string())
            .field(
                "homa_ports",
                self.targets.homa.iter().map(|a| a.port()).collect::<Vec<u16>>(),
            )
            .field(
                "tcp_ports",
                self.targets.tcp.iter().map(|a| a.port()).collect::<Vec<u16>>(),
            )
            .field("udp_port", self.targets.udp.port())
            .field("transport", self.transport)
            .field("ipv6", self.ipv6)
            .field(
                "machine",
                Json::object()
                    .field("hostname", self.machine.hostname.as_str())
                    .field("cpu", self.machine.cpu.as_str())
                    .field("cpus", self.machine.cpus)
                    .field("kernel", self.machine.kernel.as_str())
                    .field("loadavg_at_start", self.machine.loadavg.map_or(Json::Null, Json::from)),
            )
            .field("mtu", self.mtu.map_or(Json::Null, Json::from))
            .field("priorities", self.priorities)
            .field("homa_link_mbps", self.homa_link_mbps)
            .field("message_cap", MAX_MESSAGE)
            .field("workload", self.workload.to_string())
            .field("workload_description", self.workload_text.as_str())
            .field("workload_mean_bytes", self.workload_mean)
            .field("short_max_size", self.short_threshold)
            .field("load", self.load)
            .field("link_gbps", self.link_gbps)
            .field("offered_gbps", self.offered_gbps())
            .field(
                "load_definition",
                "offered request payload per second / nominal link rate; open-loop Poisson arrivals; responses as long as requests",
            )
            .field("clients", self.clients)
            .field("servers", self.servers)
            .field("server_shards", self.server_shards)
            .field("seed", self.seed)
            .field("quick", self.quick)
            .field("busy_poll_us", self.busy_poll_us)
            .field(
                "homa_settings",
                self.homa_settings
                    .iter()
                    .fold(Json::object(), |o, &(k, v)| o.field(k, v)),
            )
            .field("duration_s", p.load_duration.as_secs_f64())
            .field("warmup_s", p.load_warmup.as_secs_f64())
            .field("drain_s", p.drain.as_secs_f64())
            .field("max_outstanding_per_client", p.max_outstanding)
            .field("unloaded_min_rpcs", p.budget.min)
            .field("unloaded_max_rpcs", p.budget.max)
            .field("unloaded_seconds_per_size", p.budget.time.as_secs_f64())
            .field("throughput_size", THROUGHPUT_SIZE)
            .field("throughput_window", THROUGHPUT_WINDOW)
            .field("throughput_s", p.throughput_duration.as_secs_f64())
            .field(
                "slowdown_baseline",
                "homa: P50 of unloaded back-to-back Homa RPCs measured at the start of this run, linear interpolation in size between measured sizes (clamped outside them); own_*: the same with the transport's own unloaded RTT",
            )
            .field(
                "cpu_scope",
                match self.scope {
                    Scope::Loopback => "process (clients and servers)",
                    Scope::Remote(_) => "client process",
                },
            )
            .field("cost_scope", self.cost_scope())
            .field("cost_definition", COST_DEFINITION)
    }
}

/// What the `cost` fields and the per-RPC columns are (`--json` config).
const COST_DEFINITION: &str = "getrusage(RUSAGE_SELF) read when a phase's measured interval begins (after its warm-up) and when it ends; cpu_us_per_rpc = (user + system CPU time) / measured RPCs, ctx_switches_per_rpc = (voluntary + involuntary context switches) / measured RPCs. unloaded: from just before the first measured RPC to just after the last (lost RPCs' work included, not counted); throughput: the measured interval, per message completed in it; loaded: from the end of the warm-up to the last start, per RPC started then and completed. sched_yield that hands the CPU to another thread counts as an involuntary switch; kernel work done in ksoftirqd is not the process's";

/// A cost pair for a table: CPU µs per RPC and context switches per RPC.
fn cost_cells(c: &Cost, width: usize) -> String {
    format!(
        "{} {}",
        us(c.cpu_us_per_rpc(), width),
        num(c.switches_per_rpc(), 6, 2)
    )
}

/// The summary ratios.
struct Summary {
    homa_udp_small: f64,
    homa_tcp_small: f64,
    homa_tcp_throughput: f64,
    homa_tcp_short_p99: f64,
}

/// The unloaded result of one transport at one size, if measured.
fn unloaded_of(results: &Results, kind: Kind, size: u32) -> Option<&Unloaded> {
    results
        .unloaded
        .iter()
        .find(|(k, u)| *k == kind && u.size == size)
        .map(|(_, u)| u)
}

fn p50_at(results: &Results, kind: Kind, size: u32) -> f64 {
    unloaded_of(results, kind, size).map_or(f64::NAN, |u| u.percentile_us(50.0))
}

fn run_of(results: &Results, kind: Kind) -> Option<&LoadedRun> {
    results.loaded.iter().find(|r| r.kind == kind)
}

impl Summary {
    fn new(ctx: &Context, results: &Results) -> Summary {
        let small = TABLE_SIZES[0];
        let gbps = |kind| {
            results
                .throughput
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map_or(f64::NAN, |(_, t, _)| t.gbps)
        };
        let short_p99 = |kind| {
            run_of(results, kind).map_or(f64::NAN, |r| {
                r.samples.short(ctx.short_threshold).p99_slowdown
            })
        };
        Summary {
            homa_udp_small: p50_at(results, Kind::Homa, small) / p50_at(results, Kind::Udp, small),
            homa_tcp_small: p50_at(results, Kind::Homa, small) / p50_at(results, Kind::Tcp, small),
            homa_tcp_throughput: gbps(Kind::Homa) / gbps(Kind::Tcp),
            homa_tcp_short_p99: short_p99(Kind::Homa) / short_p99(Kind::Tcp),
        }
    }
}

/// A number for a table: `—` when unknown.
pub(crate) fn num(v: f64, width: usize, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:>width$.decimals$}")
    } else {
        format!("{:>width$}", "—")
    }
}

/// A latency in µs with precision that suits its magnitude.
pub(crate) fn us(v: f64, width: usize) -> String {
    let decimals = if !v.is_finite() || v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else {
        2
    };
    num(v, width, decimals)
}

/// A message size for tables: `100 B`, `10 KB`, `1 MB`.
pub(crate) fn size_text(size: u32) -> String {
    match size {
        s if s >= 1_000_000 && s % 1_000_000 == 0 => format!("{} MB", s / 1_000_000),
        s if s >= 1000 && s % 1000 == 0 => format!("{} KB", s / 1000),
        s => format!("{s} B"),
    }
}

/// A ratio with two decimals, or a note that it was not measured.
pub(crate) fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "— (not measured)".into()
    }
}

/// The tables and summary, as printed.
pub(crate) fn text(ctx: &Context, results: &Results) -> String {
    let mut o = String::new();
    let s = Summary::new(ctx, results);
    let _ = writeln!(
        o,
        "homa bench: Homa against TCP and UDP, side by side ({})",
        ctx.where_()
    );
    let m = &ctx.machine;
    let _ = writeln!(
        o,
        "  machine   {}: {}, {} CPUs; kernel {}; load average {} at start{}",
        m.hostname,
        m.cpu,
        m.cpus,
        m.kernel,
        m.loadavg.map_or("unknown".into(), |l| format!("{l:.2}")),
        if m.loadavg.is_some_and(|l| l > 0.5 * m.cpus as f64) {
            " (busy: other work disturbs these numbers)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "  network   MTU {}; Homa over {}{}, {} priorities, messages at most {MAX_MESSAGE} B; every transport's waiting threads busy-poll {} µs (sched_yield between polls) before sleeping",
        ctx.mtu.map_or("unknown".into(), |v| v.to_string()),
        if ctx.transport == "raw" { "raw IP (protocol 146; loopback messages unscheduled whole, as over UDP)" } else { "UDP" },
        if ctx.ipv6 { ", IPv6" } else { ", IPv4" },
        ctx.priorities,
        ctx.busy_poll_us
    );
    if !ctx.homa_settings.is_empty() {
        let set: Vec<String> = ctx
            .homa_settings
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "  homa      set by --homa-*: {}", set.join(", "));
    }
    let _ = writeln!(
        o,
        "  idle      {} CPU ms/s, {} context switches/s with the servers up and no RPC ({} s before the first phase; {}): counted in every phase's cost",
        num(results.idle.cpu_ms_per_s(), 0, 1),
        num(results.idle.switches_per_s(), 0, 0),
        num(results.idle.wall_s, 0, 2),
        ctx.cost_scope_short()
    );
    let _ = writeln!(o, "  workload  {}", ctx.workload_text);
    let _ = writeln!(
        o,
        "  load      {} of a nominal {} Gbit/s link = {:.2} Gbit/s of requests offered (open-loop Poisson); {} client threads -> {} server threads{}; {} s per transport after {} s warm-up; seed {}{}",
        ctx.load,
        ctx.link_gbps,
        ctx.offered_gbps(),
        ctx.clients,
        ctx.servers,
        match ctx.server_shards {
            Some(n) => format!(" (Homa: one port, {n} shards)"),
            None => String::new(),
        },
        ctx.plan.load_duration.as_secs_f64(),
        ctx.plan.load_warmup.as_secs_f64(),
        ctx.seed,
        if ctx.quick { " (--quick)" } else { "" }
    );

    // 1. Unloaded.
    let _ = writeln!(
        o,
        "\n1. Unloaded RTT, µs: one client, back-to-back RPCs, request and response of the size"
    );
    let _ = writeln!(
        o,
        "   {:>8} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
        "size", "Homa P50", "P99", "TCP P50", "P99", "UDP P50", "P99", "RPCs"
    );
    for &size in &TABLE_SIZES {
        let cell = |kind| unloaded_of(results, kind, size);
        let pair = |u: Option<&Unloaded>| match u {
            Some(u) => format!(
                "{} {}",
                us(u.percentile_us(50.0), 9),
                us(u.percentile_us(99.0), 9)
            ),
            None => format!("{:>9} {:>9}", "—", "—"),
        };
        let count = cell(Kind::Homa).map_or(0, |u| u.rtts_ns.len());
        let _ = writeln!(
            o,
            "   {:>8} | {} | {} | {} | {:>7}",
            size_text(size),
            pair(cell(Kind::Homa)),
            pair(cell(Kind::Tcp)),
            pair(cell(Kind::Udp)),
            count
        );
    }
    let udp_lost: usize = results
        .unloaded
        .iter()
        .filter(|(k, _)| *k == Kind::Udp)
        .map(|(_, u)| u.lost)
        .sum();
    let _ = writeln!(
        o,
        "   UDP: one datagram each way, up to {} B (the largest payload of one datagram){}",
        udp::max_payload(ctx.ipv6),
        if udp_lost > 0 {
            format!("; {udp_lost} datagrams lost and not counted")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "   Cost per measured RPC (CPU µs: user + system; csw: context switches) of {}:",
        ctx.cost_scope_short()
    );
    let _ = writeln!(
        o,
        "   {:>8} | {:>9} {:>6} | {:>9} {:>6} | {:>9} {:>6}",
        "size", "Homa CPU", "csw", "TCP CPU", "csw", "UDP CPU", "csw"
    );
    for &size in &TABLE_SIZES {
        let cell = |kind| {
            unloaded_of(results, kind, size).map_or(format!("{:>9} {:>6}", "—", "—"), |u| {
                cost_cells(&u.cost, 9)
            })
        };
        let _ = writeln!(
            o,
            "   {:>8} | {} | {} | {}",
            size_text(size),
            cell(Kind::Homa),
            cell(Kind::Tcp),
            cell(Kind::Udp)
        );
    }
    let points = |b: &Baseline| {
        b.points()
            .iter()
            .map(|(s, ns)| format!("{} {}", size_label(*s), us(ns / 1000.0, 0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        o,
        "   Slowdown baseline: P50 of these RPCs at {} sizes, linear in size between them (µs):\n     Homa: {}\n     TCP:  {}",
        results.homa_baseline.points().len(),
        points(&results.homa_baseline),
        points(&results.tcp_baseline)
    );

    // 2. Throughput.
    let _ = writeln!(
        o,
        "\n2. Throughput: one-way back-to-back {} messages (1-byte responses), {} in flight, one client -> one server",
        size_text(THROUGHPUT_SIZE),
        THROUGHPUT_WINDOW
    );
    let _ = writeln!(
        o,
        "   {:<9} {:>8} {:>9} {:>7} {:>10} {:>6}",
        "transport", "Gbit/s", "msgs/s", "CPU s", "CPU µs/msg", "csw"
    );
    for (kind, t, cpu) in &results.throughput {
        let _ = writeln!(
            o,
            "   {:<9} {} {} {} {}",
            kind.name(),
            num(t.gbps, 8, 2),
            num(t.msgs_per_s, 9, 0),
            num(*cpu, 7, 2),
            cost_cells(&t.cost, 10)
        );
    }
    let _ = writeln!(
        o,
        "   (CPU s: the whole phase, warm-up included; CPU µs and csw (context switches): per message of the measured interval)"
    );

    // 3. Loaded.
    let _ = writeln!(
        o,
        "\n3. Loaded run: {} at load {} ({:.2} Gbit/s of requests offered), {} clients -> {} servers, {} connection(s) per TCP client",
        ctx.workload,
        ctx.load,
        ctx.offered_gbps(),
        ctx.clients,
        ctx.servers,
        ctx.servers * ctx.tcp_conns
    );
    let _ = writeln!(
        o,
        "   {:<9} {:>8} {:>8} {:>8} {:>7} {:>10} {:>6} {:>7} {:>7} {:>10} {:>9} {:>11}",
        "transport",
        "Gbit/s",
        "Kops/s",
        "RPCs",
        "CPU s",
        "CPU µs/RPC",
        "csw",
        "failed",
        "skipped",
        "unfinished",
        "lag µs",
        "CPU wait µs"
    );
    for r in &results.loaded {
        let started = r.result.started.max(1) as f64;
        let _ = writeln!(
            o,
            "   {:<9} {} {} {:>8} {} {} {:>7} {:>7} {:>10} {} {}",
            r.kind.name(),
            num(r.achieved_gbps(), 8, 2),
            num(r.kops(), 8, 1),
            r.result.rtts.len(),
            num(r.cpu_s, 7, 2),
            cost_cells(&r.cost, 10),
            r.result.failed,
            r.result.skipped,
            r.result.unfinished,
            num(r.result.lag_ns / started / 1000.0, 9, 1),
            num(r.cost.run_wait_us_per_slice(), 11, 1)
        );
    }
    for (kind, why) in &results.failed_runs {
        let _ = writeln!(o, "   {:<9} did not finish: {why}", kind.name());
    }
    for r in &results.loaded {
        if let Some(why) = &r.result.first_failure {
            let _ = writeln!(
                o,
                "   {} RPC failure (first of {}): {why}",
                r.kind.name(),
                r.result.failed
            );
        }
    }
    let _ = writeln!(
        o,
        "   (Gbit/s: request payload of the measured RPCs per second; CPU s: the whole run, warm-up and drain included; CPU µs and csw (context switches): per measured RPC, over the measured interval; lag: mean delay of a start behind its Poisson arrival time; CPU wait: the mean time a thread of the process waited, runnable, for a CPU each time it got one, over the measured interval)"
    );
    let homa = run_of(results, Kind::Homa);
    let tcp = run_of(results, Kind::Tcp);
    let hb = homa
        .map(|r| r.samples.buckets(&ctx.edges))
        .unwrap_or_default();
    let tb = tcp
        .map(|r| r.samples.buckets(&ctx.edges))
        .unwrap_or_default();
    let tb_own = tcp.map(|r| r.own.buckets(&ctx.edges)).unwrap_or_default();
    let mut edges: Vec<u32> = hb.iter().chain(&tb).map(|b| b.max_size).collect();
    edges.sort_unstable();
    edges.dedup();
    let _ = writeln!(
        o,
        "   Per message size (slowdown = RTT / unloaded Homa RTT of the same size; TCP own = / unloaded TCP RTT):"
    );
    let _ = writeln!(
        o,
        "   {:>7} {:>5} | {:>6} {:>9} {:>9} {:>6} {:>7} | {:>6} {:>9} {:>9} {:>6} {:>7} | {:>6} {:>7}",
        "<= size", "frac", "Homa n", "P50 µs", "P99 µs", "P50 sd", "P99 sd", "TCP n", "P50 µs", "P99 µs", "P50 sd",
        "P99 sd", "own 50", "own 99"
    );
    let find = |v: &[BucketStats], e: u32| v.iter().find(|b| b.max_size == e).cloned();
    for e in edges {
        let h = find(&hb, e);
        let t = find(&tb, e);
        let t_own = find(&tb_own, e);
        let frac = h
            .as_ref()
            .or(t.as_ref())
            .map_or(f64::NAN, |b| b.cumulative_fraction);
        let cols = |b: &Option<BucketStats>| match b {
            Some(b) => format!(
                "{:>6} {} {} {} {}",
                b.count,
                us(b.p50_us, 9),
                us(b.p99_us, 9),
                num(b.p50_slowdown, 6, 1),
                num(b.p99_slowdown, 7, 1)
            ),
            None => format!("{:>6} {:>9} {:>9} {:>6} {:>7}", 0, "—", "—", "—", "—"),
        };
        let own = match &t_own {
            Some(b) => format!(
                "{} {}",
                num(b.p50_slowdown, 6, 1),
                num(b.p99_slowdown, 7, 1)
            ),
            None => format!("{:>6} {:>7}", "—", "—"),
        };
        let _ = writeln!(
            o,
            "   {:>7} {} | {} | {} | {}",
            size_label(e),
            num(frac, 5, 2),
            cols(&h),
            cols(&t),
            own
        );
    }
    let short = |r: Option<&LoadedRun>, own: bool| -> Option<ShortStats> {
        r.map(|r| {
            if own {
                r.own.short(ctx.short_threshold)
            } else {
                r.samples.short(ctx.short_threshold)
            }
        })
    };
    let sd = |s: Option<ShortStats>| match s {
        Some(s) => format!(
            "P50 {} P99 {}",
            num(s.p50_slowdown, 0, 2),
            num(s.p99_slowdown, 0, 2)
        ),
        None => "—".into(),
    };
    let _ = writeln!(
        o,
        "   Short messages (<= {} B, the shortest 10 %): slowdown Homa {}; TCP {} (own baseline: {})",
        ctx.short_threshold,
        sd(short(homa, false)),
        sd(short(tcp, false)),
        sd(short(tcp, true))
    );

    // Summary.
    let _ = writeln!(
        o,
        "\nSummary (Homa / other: below 1 means Homa is faster, except throughput)"
    );
    let _ = writeln!(
        o,
        "   Homa/UDP small-RPC latency ({} P50):                {}",
        size_text(TABLE_SIZES[0]),
        ratio(s.homa_udp_small)
    );
    let _ = writeln!(
        o,
        "   Homa/TCP small-RPC latency ({} P50):                {}",
        size_text(TABLE_SIZES[0]),
        ratio(s.homa_tcp_small)
    );
    let _ = writeln!(
        o,
        "   Homa/TCP throughput ({} one-way; above 1: Homa faster): {}",
        size_text(THROUGHPUT_SIZE),
        ratio(s.homa_tcp_throughput)
    );
    let _ = writeln!(
        o,
        "   Homa/TCP short-message P99 slowdown under load:         {}",
        ratio(s.homa_tcp_short_p99)
    );
    o
}

fn bucket_json(b: &BucketStats, own: Option<&BucketStats>) -> Json {
    let mut j = Json::from(b);
    j.insert("own_p50_slowdown", own.map_or(f64::NAN, |o| o.p50_slowdown));
    j.insert("own_p99_slowdown", own.map_or(f64::NAN, |o| o.p99_slowdown));
    j
}

/// The `--json` document (BENCHMARKING.md's shape, with more fields).
pub(crate) fn json(ctx: &Context, results: &Results) -> Json {
    let unloaded: Vec<Json> = results
        .unloaded
        .iter()
        .map(|(kind, u)| {
            let mut entry = Json::object()
                .field("transport", kind.name())
                .field("size", u.size)
                .field("count", u.rtts_ns.len())
                .field("p50_us", u.percentile_us(50.0))
                .field("p99_us", u.percentile_us(99.0))
                .field("p999_us", u.percentile_us(99.9))
                .field("lost", u.lost);
            u.cost.add_to(&mut entry);
            entry
        })
        .collect();
    let throughput: Vec<Json> = results
        .throughput
        .iter()
        .map(|(kind, t, cpu)| {
            let mut entry = Json::object()
                .field("transport", kind.name())
                .field("size", t.size)
                .field("gbps", t.gbps)
                .field("msgs_per_s", t.msgs_per_s)
                .field("window", t.window)
                .field("seconds", t.seconds)
                .field("cpu_s", *cpu);
            t.cost.add_to(&mut entry);
            entry
        })
        .collect();
    let loaded: Vec<Json> = results
        .loaded
        .iter()
        .map(|r| {
            let own = r.own.buckets(&ctx.edges);
            let buckets: Vec<Json> = r
                .samples
                .buckets(&ctx.edges)
                .iter()
                .map(|b| bucket_json(b, own.iter().find(|o| o.max_size == b.max_size)))
                .collect();
            let short = r.samples.short(ctx.short_threshold);
            let own_short = r.own.short(ctx.short_threshold);
            let mut short_json = Json::from(&short);
            short_json.insert("own_p50_slowdown", own_short.p50_slowdown);
            short_json.insert("own_p99_slowdown", own_short.p99_slowdown);
            let started = r.result.started.max(1) as f64;
            let mut entry = Json::object()
                .field("transport", r.kind.name())
                .field("workload", ctx.workload.to_string())
                .field("load", ctx.load)
                .field("offered_gbps", ctx.offered_gbps())
                .field("throughput_gbps", r.achieved_gbps())
                .field("kops", r.kops())
                .field("cpu_s", r.cpu_s)
                .field("seconds", r.seconds)
                .field("rpcs", r.result.rtts.len())
                .field("started", r.result.started)
                .field("failed", r.result.failed)
                .field("skipped", r.result.skipped)
                .field("unfinished", r.result.unfinished)
                .field("mean_start_lag_us", r.result.lag_ns / started / 1000.0)
                .field("baseline", "homa")
                .field("buckets", Json::Array(buckets))
                .field("short", short_json)
                .field("overall", Json::from(&r.samples.overall()));
            r.cost.add_to(&mut entry);
            entry
        })
        .collect();
    let points = |b: &Baseline| {
        Json::Array(
            b.points()
                .iter()
                .map(|(s, ns)| {
                    Json::object()
                        .field("size", *s)
                        .field("p50_us", ns / 1000.0)
                })
                .collect(),
        )
    };
    let s = Summary::new(ctx, results);
    Json::object()
        .field("tool", "homa bench")
        .field("version", env!("CARGO_PKG_VERSION"))
        .field("config", ctx.config_json())
        .field("idle", {
            let mut idle = results.idle.json();
            idle.insert("cpu_ms_per_s", results.idle.cpu_ms_per_s());
            idle.insert("ctx_switches_per_s", results.idle.switches_per_s());
            idle
        })
        .field("unloaded", Json::Array(unloaded))
        .field("throughput", Json::Array(throughput))
        .field("loaded", Json::Array(loaded))
        .field(
            "loaded_failures",
            Json::Array(
                results
                    .failed_runs
                    .iter()
                    .map(|(k, why)| {
                        Json::object()
                            .field("transport", k.name())
                            .field("error", why.as_str())
                    })
                    .collect(),
            ),
        )
        .field(
            "baselines",
            Json::object()
                .field("homa", points(&results.homa_baseline))
                .field("tcp", points(&results.tcp_baseline)),
        )
        .field(
            "summary",
            Json::object()
                .field("homa_udp_small_rpc_latency", s.homa_udp_small)
                .field("homa_tcp_small_rpc_latency", s.homa_tcp_small)
                .field("homa_tcp_throughput", s.homa_tcp_throughput)
                .field("homa_tcp_short_p99_slowdown", s.homa_tcp_short_p99),
        )
}

const CSV_COLUMNS: [&str; 20] = [
    "section",
    "transport",
    "workload",
    "load",
    "size",
    "count",
    "p50_us",
    "p99_us",
    "p999_us",
    "p50_slowdown",
    "p99_slowdown",
    "own_p50_slowdown",
    "own_p99_slowdown",
    "cumulative_fraction",
    "gbps",
    "kops",
    "cpu_s",
    "note",
    "cpu_us_per_rpc",
    "ctx_switches_per_rpc",
];

/// A row of `cells`, padded to the `note` column, then the cost per RPC.
fn with_cost(mut cells: Vec<Cell>, cost: &Cost) -> Vec<Cell> {
    cells.resize(CSV_COLUMNS.len() - 2, Cell::Text(String::new()));
    cells.extend([cost.cpu_us_per_rpc().into(), cost.switches_per_rpc().into()]);
    cells
}

/// The `--csv` document: one row per measurement; `section` says which (`unloaded`,
/// `throughput`, `loaded`, `bucket`, `short`); `size` is the message size, or a
/// bucket's largest size.
pub(crate) fn csv(ctx: &Context, results: &Results) -> String {
    let mut c = Csv::new(&CSV_COLUMNS);
    let nan = || Cell::Float(f64::NAN);
    let wl = ctx.workload.to_string();
    for (kind, u) in &results.unloaded {
        let row = vec![
            "unloaded".into(),
            kind.name().into(),
            "".into(),
            nan(),
            u.size.into(),
            u.rtts_ns.len().into(),
            u.percentile_us(50.0).into(),
            u.percentile_us(99.0).into(),
            u.percentile_us(99.9).into(),
        ];
        c.row(&with_cost(row, &u.cost));
    }
    for (kind, t, cpu) in &results.throughput {
        let mut row = vec![
            "throughput".into(),
            kind.name().into(),
            "".into(),
            nan(),
            t.size.into(),
        ];
        row.extend(std::iter::repeat_n(nan(), 9));
        row.extend([t.gbps.into(), (t.msgs_per_s / 1000.0).into(), (*cpu).into()]);
        c.row(&with_cost(row, &t.cost));
    }
    for r in &results.loaded {
        let mut row = vec![
            "loaded".into(),
            r.kind.name().into(),
            wl.as_str().into(),
            ctx.load.into(),
            nan(),
            r.result.rtts.len().into(),
        ];
        row.extend(std::iter::repeat_n(nan(), 8));
        row.extend([
            r.achieved_gbps().into(),
            r.kops().into(),
            r.cpu_s.into(),
            format!(
                "offered {} Gbit/s; slowdown vs homa unloaded",
                ctx.offered_gbps()
            )
            .into(),
        ]);
        c.row(&with_cost(row, &r.cost));
        let own = r.own.buckets(&ctx.edges);
        for b in r.samples.buckets(&ctx.edges) {
            let o = own.iter().find(|o| o.max_size == b.max_size);
            c.row(&[
                "bucket".into(),
                r.kind.name().into(),
                wl.as_str().into(),
                ctx.load.into(),
                b.max_size.into(),
                b.count.into(),
                b.p50_us.into(),
                b.p99_us.into(),
                b.p999_us.into(),
                b.p50_slowdown.into(),
                b.p99_slowdown.into(),
                o.map_or(f64::NAN, |o| o.p50_slowdown).into(),
                o.map_or(f64::NAN, |o| o.p99_slowdown).into(),
                b.cumulative_fraction.into(),
            ]);
        }
        let s = r.samples.short(ctx.short_threshold);
        let so = r.own.short(ctx.short_threshold);
        c.row(&[
            "short".into(),
            r.kind.name().into(),
            wl.as_str().into(),
            ctx.load.into(),
            s.max_size.into(),
            s.count.into(),
            nan(),
            nan(),
            nan(),
            s.p50_slowdown.into(),
            s.p99_slowdown.into(),
            so.p50_slowdown.into(),
            so.p99_slowdown.into(),
        ]);
    }
    c.finish()
}

/// The `--plot` SVG: P99 slowdown (Homa baseline) per size bucket against the
/// cumulative fraction of messages, one line per transport.
pub(crate) fn plot(ctx: &Context, results: &Results) -> String {
    let series: Vec<Series> = results
        .loaded
        .iter()
        .map(|r| {
            let points = r
                .samples
                .buckets(&ctx.edges)
                .iter()
                .map(|b| (b.cumulative_fraction, b.p99_slowdown, b.max_size))
                .collect();
            Series::new(format!("{} P99", r.kind.name()), points)
        })
        .collect();
    let title = format!(
        "{} at load {} of {} Gbit/s ({}): P99 slowdown vs unloaded Homa RTT",
        match ctx.workload {
            WorkloadSpec::Named(w) => format!("{} capped", w.name().to_uppercase()),
            WorkloadSpec::Fixed(s) => format!("{s} B messages"),
        },
        ctx.load,
        ctx.link_gbps,
        match ctx.scope {
            Scope::Loopback => "loopback".to_string(),
            Scope::Remote(ip) => ip.to_string(),
        }
    );
    slowdown_svg(&title, &series)
}

/// Writes `contents` to `path` (`-`: stdout); `what` names it in the error.
pub(crate) fn write_to(path: &Path, what: &str, contents: &str) -> Result<(), BenchError> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(contents.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| BenchError::io(format!("writing the {what} to stdout"), e));
    }
    std::fs::write(path, contents)
        .map_err(|e| BenchError::io(format!("writing the {what} to {}", path.display()), e))
}

/// Checks, before a run, that the output files can be written (creating them empty),
/// so a typo does not cost a minute of measurements.
pub(crate) fn check_outputs(m: &MeasureArgs) -> Result<(), BenchError> {
    if m.plot.as_deref() == Some(Path::new("-")) {
        return Err(BenchError::option(
            "--plot",
            "the plot goes to a file: give a name such as slowdown.svg",
        ));
    }
    if m.json.is_some() && m.json == m.csv && m.json.as_deref() != Some(Path::new("-")) {
        return Err(BenchError::option(
            "--csv",
            "it names the same file as --json",
        ));
    }
    for (option, path) in [("--json", &m.json), ("--csv", &m.csv), ("--plot", &m.plot)] {
        if let Some(p) = path {
            if p != Path::new("-") {
                std::fs::File::create(p).map_err(|e| {
                    BenchError::io(format!("cannot write {option} {}", p.display()), e)
                })?;
            }
        }
    }
    if m.json.as_deref() == Some(Path::new("-")) && m.csv.as_deref() == Some(Path::new("-")) {
        return Err(BenchError::option(
            "--csv",
            "only one of --json and --csv can go to stdout",
        ));
    }
    Ok(())
}

/// Prints the tables (to stderr when a machine-readable output goes to stdout) and
/// writes the files asked for.
pub(crate) fn emit(ctx: &Context, results: &Results, m: &MeasureArgs) -> Result<(), BenchError> {
    let to_stdout = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    let tables = text(ctx, results);
    if to_stdout(&m.json) || to_stdout(&m.csv) {
        eprint!("{tables}");
    } else {
        print!("{tables}");
        let _ = std::io::stdout().flush();
    }
    if let Some(p) = &m.json {
        write_to(p, "JSON report", &json(ctx, results).to_pretty())?;
    }
    if let Some(p) = &m.csv {
        write_to(p, "CSV report", &csv(ctx, results))?;
    }
    if let Some(p) = &m.plot {
        write_to(p, "plot", &plot(ctx, results))?;
        if !(to_stdout(&m.json) || to_stdout(&m.csv)) {
            println!("\nPlot written to {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cost::{Snapshot, Usage, Window};
    use super::super::harness::{LoadResult, Throughput};
    use super::super::system::Machine;
    use super::*;
    use clap::Parser;
    use homa_eval::stats::Samples;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        m: MeasureArgs,
    }

    /// `rpcs` RPCs that cost 10 µs of CPU and 3 context switches each.
    fn cost(rpcs: u64) -> Cost {
        let t0 = Instant::now();
        let at = |usage| Snapshot {
            at: t0,
            usage: Some(usage),
        };
        Window {
            from: at(Usage::default()),
            to: at(Usage {
                user_us: 6 * rpcs,
                system_us: 4 * rpcs,
                voluntary: 2 * rpcs,
                involuntary: rpcs,
                ..Usage::default()
            }),
        }
        .cost(rpcs)
    }

    fn fixture() -> (Context, Results, MeasureArgs) {
        let m = Args::parse_from(["bench", "--quick", "--workload", "1000"]).m;
        let plan = Plan::new(&m);
        let workload = WorkloadInfo::new(m.workload);
        let targets = Targets::layout(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000, 2, false, 3999);
        let machine = Machine {
            hostname: "test".into(),
            cpu: "test".into(),
            cpus: 2,
            kernel: "test".into(),
            loadavg: None,
        };
        let ctx = Context::new(&m, &plan, &workload, &targets, Scope::Loopback, machine);
        let unloaded = [Kind::Homa, Kind::Tcp, Kind::Udp]
            .into_iter()
            .flat_map(|kind| {
                TABLE_SIZES.iter().map(move |&size| {
                    (
                        kind,
                        Unloaded {
                            size,
                            rtts_ns: vec![10_000.0; 4],
                            lost: 0,
                            cost: cost(4),
                        },
                    )
                })
            })
            .collect();
        let throughput = [Kind::Homa, Kind::Tcp]
            .into_iter()
            .map(|kind| {
                let t = Throughput {
                    size: THROUGHPUT_SIZE,
                    window: THROUGHPUT_WINDOW,
                    gbps: 8.0,
                    msgs_per_s: 1000.0,
                    seconds: 1.0,
                    cost: cost(1000),
                };
                (kind, t, 1.5)
            })
            .collect();
        let loaded = [Kind::Homa, Kind::Tcp]
            .into_iter()
            .map(|kind| {
                let mut samples = Samples::new();
                samples.push_with(1000, 20_000.0, |_| 10_000.0);
                LoadedRun {
                    kind,
                    result: LoadResult {
                        rtts: vec![(1000, 20_000.0)],
                        started: 1,
                        bytes: 1000,
                        ..LoadResult::default()
                    },
                    cpu_s: 1.0,
                    cost: cost(1),
                    seconds: 1.0,
                    own: samples.clone(),
                    samples,
                }
            })
            .collect();
        let baseline = Baseline::new(vec![(1000, 10_000.0)]).unwrap();
        let results = Results {
            unloaded,
            throughput,
            loaded,
            failed_runs: Vec::new(),
            homa_baseline: baseline.clone(),
            tcp_baseline: baseline,
            idle: {
                let mut idle = cost(0);
                idle.wall_s = 0.5;
                idle.used = Some(Usage {
                    user_us: 3_000,
                    system_us: 2_000,
                    voluntary: 400,
                    involuntary: 100,
                    ..Usage::default()
                });
                idle
            },
        };
        (ctx, results, m)
    }

    #[test]
    fn every_phase_reports_its_cost_per_rpc_in_json() {
        let (ctx, results, _) = fixture();
        let j = json(&ctx, &results);
        for section in ["unloaded", "throughput", "loaded"] {
            let Some(Json::Array(entries)) = j.get(section) else {
                panic!("no {section} array");
            };
            assert!(!entries.is_empty(), "{section} is empty");
            for e in entries {
                assert_eq!(
                    e.get("cpu_us_per_rpc"),
                    Some(&Json::Float(10.0)),
                    "{section}"
                );
                assert_eq!(e.get("ctx_switches_per_rpc"), Some(&Json::Float(3.0)));
                let c = e.get("cost").expect("a cost object");
                assert_eq!(
                    c.get("voluntary_ctx_switches_per_rpc"),
                    Some(&Json::Float(2.0))
                );
                // The old fields stay.
                assert!(e.get("transport").is_some());
            }
        }
        let Some(Json::Array(t)) = j.get("throughput") else {
            unreachable!()
        };
        assert_eq!(t[0].get("cpu_s"), Some(&Json::Float(1.5)));
        let idle = j.get("idle").expect("an idle object");
        assert_eq!(idle.get("cpu_ms_per_s"), Some(&Json::Float(10.0)));
        assert_eq!(idle.get("ctx_switches_per_s"), Some(&Json::Float(1000.0)));
        assert_eq!(idle.get("cpu_us_per_rpc"), None);
        let config = j.get("config").unwrap();
        assert!(config.get("cpu_scope").is_some());
        assert!(config.get("cost_scope").is_some() && config.get("cost_definition").is_some());
    }

    #[test]
    fn tables_and_csv_show_the_cost_columns() {
        let (ctx, results, _) = fixture();
        let t = text(&ctx, &results);
        assert!(t.contains("Cost per measured RPC"), "{t}");
        assert!(
            t.contains("idle      10.0 CPU ms/s, 1000 context switches/s"),
            "{t}"
        );
        assert!(t.contains("CPU µs/msg") && t.contains("CPU µs/RPC"), "{t}");
        // 10 µs and 3 switches per RPC, in every phase's rows.
        let unloaded_row = t
            .lines()
            .skip_while(|l| !l.contains("Cost per measured RPC"))
            .nth(2)
            .unwrap();
        assert_eq!(
            unloaded_row.split_whitespace().collect::<Vec<_>>(),
            ["100", "B", "|", "10.00", "3.00", "|", "10.00", "3.00", "|", "10.00", "3.00"]
        );
        let homa_throughput = t
            .lines()
            .skip_while(|l| !l.starts_with("2. Throughput"))
            .find(|l| l.trim_start().starts_with("homa"))
            .unwrap();
        assert!(
            homa_throughput.ends_with("10.00   3.00"),
            "{homa_throughput}"
        );
        let c = csv(&ctx, &results);
        let mut lines = c.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header.len(), CSV_COLUMNS.len());
        assert_eq!(
            header[header.len() - 2..],
            ["cpu_us_per_rpc", "ctx_switches_per_rpc"]
        );
        for line in lines.filter(|l| {
            l.starts_with("unloaded,") || l.starts_with("throughput,") || l.starts_with("loaded,")
        }) {
            assert!(line.ends_with(",10.0,3.0"), "{line}");
            assert_eq!(line.split(',').count(), CSV_COLUMNS.len(), "{line}");
        }
    }

    #[test]
    fn an_unmeasured_cost_is_a_dash_and_null() {
        let (ctx, mut results, _) = fixture();
        results.throughput[0].1.cost = Cost::default();
        let t = text(&ctx, &results);
        let homa_throughput = t
            .lines()
            .skip_while(|l| !l.starts_with("2. Throughput"))
            .find(|l| l.trim_start().starts_with("homa"))
            .unwrap();
        assert!(homa_throughput.ends_with("—      —"), "{homa_throughput}");
        let j = json(&ctx, &results).to_compact();
        assert!(j.contains("\"cpu_us_per_rpc\":null"));
    }
}

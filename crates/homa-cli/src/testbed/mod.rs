//! `homa testbed`: an emulated rack built from network namespaces on this machine — host
//! namespaces joined by veth pairs to one switch namespace, every egress shaped to the
//! link rate with eight strict-priority queues — checked before use (bulk rate,
//! priority order), then the experiment: Homa (8 priorities), Homa with one priority and
//! TCP, all-to-all across the hosts under the same load, reported like `homa bench`; then
//! torn down. See `docs/testbed.md` for the layout, the definitions and the decisions.

mod budget;
mod check;
mod cpu;
mod error;
mod experiment;
mod netns;
mod procs;
mod queues;
mod rack;
mod report;
mod shaping;
mod traffic;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::bench::spec::{self, WorkloadSpec};
use crate::bench::TransportArg;
use budget::{segment_bytes, serialisation_rtt, Encapsulation, PathBudget};
use check::{micros, BulkResult, PriorityResult, Verdict, ECHO_PAYLOAD, FLOOD_OVERLOAD};
pub(crate) use error::TestbedError;
use netns::{sweep_stale, Namespaces};
use rack::{Rack, Stage, HOST_DEV, MTU};
use shaping::{PortShaping, CONTROL_CLASS, LEVELS};
use traffic::frame_overhead;

const EXAMPLES: &str = "\
Examples:
  homa testbed                               4 hosts at 100 Mbit/s: build, check, run Homa, Homa with one
                                             priority and TCP (W4 at load 0.8, all-to-all), report, tear down
  homa testbed --quick                       a smoke run: 3 hosts, 3 s per transport
  homa testbed --load 0.5 --duration 30 --json tb.json --plot tb.svg
  homa testbed --hosts 3 --link-mbps 200 --buffer 128K --skip-experiment
  homa testbed --hosts 2 --hold              keep the rack (no experiment) until stdin closes or Ctrl-C;
                                             run programs in it with `ip netns exec homa-tb-PID-h0 ...`

Load is the payload on every host link, each direction, as a fraction of the link rate:
each host's client offers load/2 x link of requests, and responses are as long as
requests. Slowdown = RTT / unloaded Homa RTT (host 0 -> host 1) of the same length.

Needs root. Namespaces are named homa-tb-<pid>-sw and homa-tb-<pid>-h<i>; a run deletes
only namespaces its own marker (/run/homa-testbed/<pid>) lists: its own at exit, on
Ctrl-C/SIGTERM/SIGHUP and after a failure, and those of earlier runs that died.";

/// Options of `homa testbed`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct TestbedArgs {
    /// Host namespaces in the rack (2..=16) [default: 4, 3 with --quick].
    #[arg(long, value_name = "N")]
    hosts: Option<u32>,
    /// Link rate of every host link and switch port, Mbit/s (10..=10000).
    #[arg(long, default_value_t = 100, value_name = "MBPS")]
    link_mbps: u32,
    /// Buffer of each priority class of each port, bytes; K, M, KiB, MiB are binary
    /// multiples (3028 = two frames ..= 64M).
    #[arg(long, default_value = "256K", value_name = "BYTES")]
    buffer: String,
    /// Length of the bulk-transfer check, seconds (0.2..=10).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    bulk_seconds: f64,
    /// Build the rack but skip the emulation checks.
    #[arg(long)]
    skip_checks: bool,
    /// After the checks, keep the rack (instead of running the experiment) until stdin
    /// reaches end of file (Ctrl-D) or a signal (Ctrl-C) arrives, then tear it down.
    #[arg(long)]
    hold: bool,
    /// Build and check the rack, but run no experiment.
    #[arg(long)]
    skip_experiment: bool,
    #[command(flatten)]
    experiment: ExperimentArgs,
    /// Fail on purpose after a build stage (tests the teardown).
    #[arg(long, hide = true, value_enum, value_name = "STAGE")]
    inject_failure: Option<Stage>,
}

/// The experiment's options (the measurement options of `homa bench`, where they apply).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExperimentArgs {
    /// A smoke run (CI): 3 hosts unless --hosts, 3 s per transport, fewer unloaded RPCs;
    /// still all three transports.
    #[arg(long)]
    quick: bool,
    /// Workload: w1…w5 (the Homa papers' distributions, capped at 1,000,000 bytes as
    /// the Linux module's benchmark samples them) or one message size for every RPC.
    #[arg(long, value_name = "w1..w5|SIZE", default_value = "w4", value_parser = spec::parse_workload)]
    workload: WorkloadSpec,
    /// Payload on every host link, each direction, as a fraction of the link rate (each
    /// host's client offers half of it as requests; responses are as long).
    #[arg(long, value_name = "FRACTION", default_value = "0.8", value_parser = spec::parse_load)]
    load: f64,
    /// Seconds of each transport's loaded run [default: long enough for 2,000 short
    /// messages, in steps of 10 s; 3 with --quick].
    #[arg(long, value_name = "SECONDS", value_parser = spec::parse_positive)]
    duration: Option<f64>,
    /// Seed of the arrival times, sizes and destinations (host i uses seed + i x 2^32).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client threads of each host's `homa client`.
    #[arg(long, value_name = "N", default_value = "1", value_parser = spec::parse_threads)]
    clients: usize,
    /// Server threads of each host's `homa server` (per transport).
    #[arg(long, value_name = "N", default_value = "1", value_parser = spec::parse_threads)]
    servers: usize,
    /// TCP connections from each client thread to each server thread.
    #[arg(long, value_name = "N", default_value = "1", value_parser = spec::parse_threads)]
    tcp_conns: usize,
    /// How long a waiting thread busy-polls before it sleeps, µs, for every transport
    /// (0: sleep at once; a testbed runs 2 processes per host on the machine's cores).
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_us: u64,
    /// How Homa packets travel.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Run the experiment over IPv6.
    #[arg(long)]
    ipv6: bool,
    /// Homa's loaded runs with one engine per host: each host's client socket also
    /// serves the host's port (`homa client --serve`), so a host has one pacer and one
    /// grant scheduler, as with the kernel module; needs `--servers 1`. (Default: a
    /// server and a client process per host, two engines.)
    #[arg(long)]
    one_engine_per_host: bool,
    /// The link rate Homa's pacer assumes, Mbit/s [default: --link-mbps].
    #[arg(long, value_name = "MBPS", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    homa_link_mbps: Option<u32>,
    /// Any other Homa protocol tunable for every server and client, by its sysctl name
    /// (e.g. `resend_ticks=50`; repeatable): for diagnostics, the experiment's own
    /// settings are those above.
    #[arg(long = "homa-set", value_name = "NAME=VALUE", value_parser = crate::bench::knobs::parse_setting)]
    homa_set: Vec<(&'static str, u64)>,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write the results as CSV to PATH.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Draw slowdown against cumulative message fraction (one line per transport) as
    /// SVG to PATH.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}

/// The allowed number of hosts.
const HOSTS: std::ops::RangeInclusive<u32> = 2..=16;

/// The allowed link rates, Mbit/s.
const LINK_MBPS: std::ops::RangeInclusive<u32> = 10..=10_000;

/// The allowed buffer per class: two full frames to 64 MiB.
const BUFFER_BYTES: std::ops::RangeInclusive<u64> = 3028..=64 << 20;

/// The allowed bulk-check lengths, seconds.
const BULK_SECONDS: std::ops::RangeInclusive<f64> = 0.2..=10.0;

/// Validated settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// Host namespaces.
    pub(crate) hosts: usize,
    /// Shaping of every port.
    pub(crate) shaping: PortShaping,
    /// Length of the bulk check.
    pub(crate) bulk: Duration,
    /// Skip the checks.
    pub(crate) skip_checks: bool,
    /// Hold the rack until stdin closes.
    pub(crate) hold: bool,
    /// Fail on purpose after this stage.
    pub(crate) inject: Option<Stage>,
    /// Run the experiment (not `--skip-experiment`, not `--hold`).
    pub(crate) experiment: bool,
    /// The experiment's options.
    pub(crate) options: experiment::Options,
    /// Its output files.
    pub(crate) outputs: report::Outputs,
}

impl Settings {
    /// Checks every option's range.
    pub(crate) fn from_args(args: &TestbedArgs) -> Result<Settings, TestbedError> {
        let range = |r: &std::ops::RangeInclusive<u32>| format!("{}..={}", r.start(), r.end());
        let e = &args.experiment;
        let hosts = args.hosts.unwrap_or(if e.quick { 3 } else { 4 });
        if !HOSTS.contains(&hosts) {
            return Err(TestbedError::option("--hosts", hosts, range(&HOSTS)));
        }
        if !LINK_MBPS.contains(&args.link_mbps) {
            return Err(TestbedError::option(
                "--link-mbps",
                args.link_mbps,
                range(&LINK_MBPS),
            ));
        }
        let buffer_allowed = format!(
            "{}..={} bytes (e.g. 256K, 1M, 262144)",
            BUFFER_BYTES.start(),
            BUFFER_BYTES.end()
        );
        let buffer = parse_bytes(&args.buffer)
            .filter(|b| BUFFER_BYTES.contains(b))
            .ok_or_else(|| TestbedError::option("--buffer", &args.buffer, buffer_allowed))?;
        if e.one_engine_per_host && e.servers != 1 {
            return Err(TestbedError::option(
                "--servers",
                e.servers,
                "1 with --one-engine-per-host (the client's socket serves the host's one port)",
            ));
        }
        if !BULK_SECONDS.contains(&args.bulk_seconds) {
            return Err(TestbedError::option(
                "--bulk-seconds",
                args.bulk_seconds,
                format!("{}..={}", BULK_SECONDS.start(), BULK_SECONDS.end()),
            ));
        }
        Ok(Settings {
            hosts: hosts as usize,
            shaping: PortShaping {
                link_bps: u64::from(args.link_mbps) * 1_000_000,
                buffer_bytes: buffer,
            },
            bulk: Duration::from_secs_f64(args.bulk_seconds),
            skip_checks: args.skip_checks,
            hold: args.hold,
            inject: args.inject_failure,
            experiment: !args.skip_experiment && !args.hold,
            options: experiment::Options {
                workload: e.workload,
                load: e.load,
                duration: e.duration,
                seed: e.seed,
                quick: e.quick,
                clients: e.clients,
                servers: e.servers,
                tcp_conns: e.tcp_conns,
                busy_poll_us: e.busy_poll_us,
                transport: e.transport,
                ipv6: e.ipv6,
                homa_link_mbps: e.homa_link_mbps,
                homa_set: e.homa_set.clone(),
                one_engine_per_host: e.one_engine_per_host,
            },
            outputs: report::Outputs {
                json: e.json.clone(),
                csv: e.csv.clone(),
                plot: e.plot.clone(),
            },
        })
    }
}

/// A byte count: digits, optionally followed by `K`/`KiB`/`KB` or `M`/`MiB`/`MB` (binary
/// multiples, any case).
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

/// Fails unless the effective user is root (read from `/proc/self/status`).
fn require_root() -> Result<(), TestbedError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| TestbedError::io("reading /proc/self/status", e))?;
    match effective_uid(&status) {
        Some(0) => Ok(()),
        Some(euid) => Err(TestbedError::NotRoot { euid }),
        None => Err(TestbedError::io(
            "reading the effective uid from /proc/self/status",
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        )),
    }
}

/// The effective uid of a `/proc/PID/status` text (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The programs the testbed runs, and the Debian package of each.
const TOOLS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("ethtool", "ethtool"),
];

/// Fails if a program the testbed runs is not on PATH.
fn require_tools() -> Result<(), TestbedError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, package) in TOOLS {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            return Err(TestbedError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// `homa testbed`.
pub(crate) fn run(args: TestbedArgs) -> Result<(), String> {
    run_testbed(&args).map_err(|e| e.to_string())
}

fn run_testbed(args: &TestbedArgs) -> Result<(), TestbedError> {
    let settings = Settings::from_args(args)?;
    require_root()?;
    require_tools()?;
    if settings.experiment {
        settings.outputs.check()?;
    }

    let sweep = sweep_stale()?;
    for name in &sweep.removed {
        println!("removed stale namespace {name} (its testbed run is gone)");
    }
    for name in &sweep.running {
        println!("leaving {name} alone: another testbed run owns it");
    }
    for name in &sweep.foreign {
        println!("leaving {name} alone: no testbed marker vouches for it");
    }

    let namespaces = Namespaces::new()?;
    namespaces.install_signal_handler()?;
    let rack = rack::build(
        namespaces,
        settings.hosts,
        settings.shaping,
        settings.inject,
    )?;
    print_layout(&rack);

    let result = use_rack(&rack, &settings);

    let created = rack.namespaces.names().len();
    let errors = rack.namespaces.teardown();
    let left = rack.namespaces.names().len();
    println!(
        "teardown: removed {} of {created} namespaces",
        created - left
    );
    result?;
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Checks the rack, then holds it or runs the experiment on it. A failed check is
/// returned as the error after the report: nothing is measured on such a rack.
fn use_rack(rack: &Rack, settings: &Settings) -> Result<(), TestbedError> {
    let mut prio = None;
    if settings.skip_checks {
        println!("checks: skipped (--skip-checks)");
    } else {
        let (failure, result) = run_checks(rack, settings)?;
        if let Some(e) = failure {
            println!("experiment: not run (a check failed)");
            return Err(e);
        }
        prio = Some(result);
    }

    // The RTT-bytes: from the priority check's unloaded probes, or probed now for an
    // experiment on an unchecked rack.
    let measured = match &prio {
        Some(p) => Some(p.unloaded_high.quantile(0.5)),
        None if settings.experiment => Some(check::path_rtt(rack, 0, 1)?.quantile(0.5)),
        None => None,
    };
    let budget = measured.and_then(|m| budget(rack, settings, m));
    if prio.is_some() {
        print_port_table(rack)?;
    }

    if settings.hold {
        println!("holding the rack: close stdin (Ctrl-D) or press Ctrl-C to tear it down");
        std::io::stdout().flush().ok();
        let mut sink = Vec::new();
        std::io::stdin()
            .read_to_end(&mut sink)
            .map_err(|e| TestbedError::io("reading stdin while holding", e))?;
        return Ok(());
    }
    if !settings.experiment {
        println!("experiment: skipped (--skip-experiment)");
        return Ok(());
    }
    let Some(budget) = budget else {
        return Err(TestbedError::CheckFailed {
            check: "RTT-bytes",
            why: "no unloaded probe from host 0 came back from host 1".into(),
        });
    };
    run_experiment(rack, settings, budget)
}

/// Runs the experiment, prints its report and writes the files asked for.
fn run_experiment(
    rack: &Rack,
    settings: &Settings,
    budget: PathBudget,
) -> Result<(), TestbedError> {
    let o = &settings.options;
    let plan = experiment::Plan::new(
        o.clone(),
        rack.hosts.len(),
        rack.shaping.link_bps,
        budget,
        segment(settings),
    );
    let dir = std::env::temp_dir().join(format!("{}{}", netns::SCRATCH_PREFIX, std::process::id()));
    rack.namespaces.create_scratch(&dir)?;
    let runs = experiment::run(rack, &plan, &dir)?;
    let analysis = report::Analysis::new(&plan, &runs);
    print!("{}", report::text(&analysis));
    for line in settings.outputs.write(&analysis)? {
        println!("{line}");
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// The DATA payload per full packet of the experiment's Homa encapsulation.
fn segment(settings: &Settings) -> u64 {
    let encapsulation = match settings.options.transport {
        TransportArg::Udp => Encapsulation::Udp,
        TransportArg::Raw => Encapsulation::RawIp,
    };
    segment_bytes(MTU, encapsulation, settings.options.ipv6)
}

fn print_layout(rack: &Rack) {
    let s = &rack.shaping;
    println!(
        "homa testbed: {} hosts and one switch in network namespaces; the switch routes IPv4 and IPv6",
        rack.hosts.len()
    );
    println!(
        "  links: {} Mbit/s, MTU {MTU}, tso/gso/gro off; every host egress and every switch port shaped alike",
        s.link_bps / 1_000_000
    );
    println!(
        "  queues: {LEVELS} strict priorities per port: level p = TOS / traffic class p<<5 -> htb class 1:1p, prio 7-p; \
         leaf rate {} bit/s (1 % of the link over 8 levels); ARP and IPv6 neighbour discovery in {CONTROL_CLASS} ({} bit/s)",
        s.leaf_rate_bps(),
        s.control_rate_bps()
    );
    println!(
        "  buffer: {} bytes per priority class per port (bfifo, tail drop; any one class may fill it, \
         so a port holds at most {} x that)",
        s.buffer_bytes,
        LEVELS + 1
    );
    println!("  switch: netns {}", rack.switch);
    for h in &rack.hosts {
        println!(
            "  host {}: netns {}, {HOST_DEV} {} {}, switch port p{} {} {}",
            h.index,
            h.netns,
            h.ipv4,
            h.ipv6,
            h.index,
            rack::switch_ipv4(h.index),
            rack::switch_ipv6(h.index)
        );
    }
}

/// Runs both checks and prints them; returns the first failed check as an error value,
/// and the priority check's measurements.
fn run_checks(
    rack: &Rack,
    settings: &Settings,
) -> Result<(Option<TestbedError>, PriorityResult), TestbedError> {
    let mut failure = None;
    let bulk = check::bulk(rack, 0, 1, settings.bulk)?;
    let verdict = bulk.verdict();
    print_bulk(&bulk, &verdict);
    if let Verdict::Fail(why) = verdict {
        failure.get_or_insert(TestbedError::CheckFailed {
            check: "bulk transfer",
            why,
        });
    }

    let prio = check::priority(rack, 0, 1)?;
    let verdict = prio.verdict();
    print_priority(&prio, &verdict, FLOOD_OVERLOAD);
    if let Verdict::Fail(why) = verdict {
        failure.get_or_insert(TestbedError::CheckFailed {
            check: "priority",
            why,
        });
    }
    Ok((failure, prio))
}

fn print_bulk(b: &BulkResult, verdict: &Verdict) {
    let rate = b
        .wire_bps
        .map_or("no rate".to_string(), |r| format!("{:.1} Mbit/s", r / 1e6));
    let fraction = b.fraction.map_or("-".to_string(), |f| format!("{f:.3}"));
    println!(
        "check 1, bulk transfer: UDP host {} -> host {} for {:.1} s, {}-byte payloads: {rate} of frames \
         at the receiver = {fraction} of the link rate ({} of {} datagrams arrived; drops: host {} egress {}, \
         switch port p{} {}): {verdict}",
        b.from,
        b.to,
        b.duration.as_secs_f64(),
        b.payload,
        b.received,
        b.sent,
        b.from,
        b.sender_egress.dropped,
        b.to,
        b.switch_port.dropped
    );
}

fn summary(r: &traffic::ProbeResult) -> String {
    match (r.quantile(0.5), r.quantile(0.9)) {
        (Some(p50), Some(p90)) => format!(
            "median {} (p90 {}), {}/{} echoed{}",
            micros(p50),
            micros(p90),
            r.rtts.len(),
            r.sent,
            if r.lost() > 0 {
                format!(", {} lost", r.lost())
            } else {
                String::new()
            }
        ),
        _ => format!("no echo of {} probes", r.sent),
    }
}

fn print_priority(p: &PriorityResult, verdict: &Verdict, overload: f64) {
    println!(
        "check 2, priority at switch port p{} (host {} probes an echo on host {}; {}-byte probes, header-only echoes):",
        p.target, p.prober, p.target, p.probe_payload
    );
    println!(
        "  unloaded RTT: TOS 0xe0 {}; TOS 0x00 {}",
        summary(&p.unloaded_high),
        summary(&p.unloaded_low)
    );
    println!(
        "  flood: TOS 0x00 UDP sent from the switch namespace into p{} at {overload} x the link rate ({} datagrams); \
         queue when the probes started: {} bytes, {} packets in class 1:10{}; over the flood the port sent {} packets \
         and dropped {}",
        p.target,
        p.flood_sent,
        p.queue_at_probes.backlog_bytes,
        p.queue_at_probes.backlog_packets,
        if p.filled { "" } else { " (never reached 3/4 of the buffer)" },
        p.port.sent_packets,
        p.port.dropped
    );
    println!(
        "  under flood: TOS 0xe0 {}; TOS 0x00 {} (class 1:17 carried {} packets, dropped {})",
        summary(&p.flood_high),
        summary(&p.flood_low),
        p.high_class.sent_packets,
        p.high_class.dropped
    );
    println!("  verdict: {verdict}");
}

/// The RTT-bytes of a host pair from the unloaded probe RTT `measured` (full-size probes,
/// header-only echoes), printed; `None` (and a line saying so) without a measurement.
fn budget(rack: &Rack, settings: &Settings, measured: Option<Duration>) -> Option<PathBudget> {
    let link = rack.shaping.link_bps;
    let Some(measured) = measured else {
        println!("RTT-bytes: no unloaded RTT was measured");
        return None;
    };
    let data_frame = traffic::max_payload(MTU as usize, false) + frame_overhead(false);
    let reply_frame = ECHO_PAYLOAD + frame_overhead(false);
    let serial = serialisation_rtt(link, 2, data_frame, reply_frame);
    let segment = segment(settings);
    let b = PathBudget::new(link, measured, serial, segment, rack.shaping.buffer_bytes);
    println!(
        "RTT-bytes per host pair: (unloaded probe RTT {} + serialisation {} of a {data_frame}-byte frame and a \
         {reply_frame}-byte reply over 2 links each way) = {} x {} Mbit/s = {} bytes -> unsched_bytes = window = {} \
         ({} x {segment}-byte segments: Homa over {} at MTU {MTU})",
        micros(measured),
        micros(serial),
        micros(b.rtt),
        link / 1_000_000,
        b.rtt_bytes,
        b.unsched_bytes,
        b.unsched_bytes / segment,
        match (settings.options.transport, settings.options.ipv6) {
            (TransportArg::Udp, false) => "UDP/IPv4",
            (TransportArg::Udp, true) => "UDP/IPv6",
            (TransportArg::Raw, false) => "raw IPv4",
            (TransportArg::Raw, true) => "raw IPv6",
        }
    );
    let t = &b.timers;
    println!(
        "loss timers: a full {}-byte class buffer drains in {} at {} Mbit/s; two such queues on a path + the \
         kernel's 5 ticks -> resend_ticks = resend_interval = {} ms, timeout_ticks = 20 x that = {} ms",
        rack.shaping.buffer_bytes,
        micros(t.drain),
        link / 1_000_000,
        t.resend_ticks,
        t.timeout_ticks
    );
    Some(b)
}

fn print_port_table(rack: &Rack) -> Result<(), TestbedError> {
    println!("ports after the checks (tc -s; drops are silent to UDP senders):");
    for stats in rack.port_stats()? {
        let total = stats.total();
        let per_level: Vec<String> = (0..LEVELS)
            .rev()
            .map(|l| {
                let c = stats.level(l);
                format!("{}/{}", c.sent_packets, c.dropped)
            })
            .collect();
        println!(
            "  {} {}: sent {} packets, dropped {}; per level 7..0 sent/dropped {}; control {}",
            stats.netns,
            stats.dev,
            total.sent_packets,
            total.dropped,
            per_level.join(" "),
            stats.class(CONTROL_CLASS).sent_packets
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TestbedArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, TestbedError> {
        let cli = Cli::try_parse_from(std::iter::once("testbed").chain(args.iter().copied()))
            .expect("clap accepts these");
        Settings::from_args(&cli.args)
    }

    fn rejected(args: &[&str], option: &str) {
        match settings(args) {
            Err(TestbedError::Option { option: o, .. }) => assert_eq!(o, option, "{args:?}"),
            other => panic!("{args:?}: expected a {option} error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_four_hosts_at_100_mbit_with_256k_per_class() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.hosts, 4);
        assert_eq!(s.shaping.link_bps, 100_000_000);
        assert_eq!(s.shaping.buffer_bytes, 262_144);
        assert_eq!(s.bulk, Duration::from_secs(1));
        assert!(!s.skip_checks && !s.hold && s.inject.is_none());
    }

    #[test]
    fn options_out_of_range_are_typed_errors() {
        rejected(&["--hosts", "1"], "--hosts");
        rejected(&["--one-engine-per-host", "--servers", "2"], "--servers");
        assert!(
            settings(&["--one-engine-per-host"])
                .unwrap()
                .options
                .one_engine_per_host
        );
        rejected(&["--hosts", "17"], "--hosts");
        rejected(&["--hosts", "0"], "--hosts");
        rejected(&["--link-mbps", "9"], "--link-mbps");
        rejected(&["--link-mbps", "10001"], "--link-mbps");
        rejected(&["--buffer", "1000"], "--buffer");
        rejected(&["--buffer", "65M"], "--buffer");
        rejected(&["--buffer", "lots"], "--buffer");
        rejected(&["--buffer", "12Q"], "--buffer");
        rejected(&["--buffer", ""], "--buffer");
        rejected(&["--bulk-seconds", "0.1"], "--bulk-seconds");
        rejected(&["--bulk-seconds", "NaN"], "--bulk-seconds");
        rejected(&["--bulk-seconds", "inf"], "--bulk-seconds");
        let e = settings(&["--hosts", "40"]).unwrap_err();
        assert_eq!(e.to_string(), "--hosts 40: out of range; allowed: 2..=16");
    }

    #[test]
    fn options_in_range_are_taken() {
        let s = settings(&[
            "--hosts",
            "16",
            "--link-mbps",
            "10",
            "--buffer",
            "1M",
            "--bulk-seconds",
            "0.5",
            "--hold",
            "--skip-checks",
        ])
        .unwrap();
        assert_eq!(s.hosts, 16);
        assert_eq!(s.shaping.link_bps, 10_000_000);
        assert_eq!(s.shaping.buffer_bytes, 1 << 20);
        assert_eq!(s.bulk, Duration::from_millis(500));
        assert!(s.hold && s.skip_checks);
        assert_eq!(settings(&["--hosts", "2"]).unwrap().hosts, 2);
        assert_eq!(
            settings(&["--link-mbps", "10000"])
                .unwrap()
                .shaping
                .link_bps,
            10_000_000_000
        );
        let s = settings(&["--inject-failure", "links"]).unwrap();
        assert_eq!(s.inject, Some(Stage::Links));
    }

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("262144"), Some(262_144));
        assert_eq!(parse_bytes("256K"), Some(262_144));
        assert_eq!(parse_bytes("256KiB"), Some(262_144));
        assert_eq!(parse_bytes("256kb"), Some(262_144));
        assert_eq!(parse_bytes("2M"), Some(2 << 20));
        assert_eq!(parse_bytes("3028b"), Some(3028));
        assert_eq!(parse_bytes("K"), None);
        assert_eq!(parse_bytes("1.5M"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999999999M"), None);
        assert_eq!(parse_bytes("18446744073709551615M"), None);
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\t0\n"), None);
    }
}

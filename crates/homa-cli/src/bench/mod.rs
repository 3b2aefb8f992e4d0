//! `homa bench`, `homa server`, `homa client`: the Homa papers' benchmark, Homa against
//! TCP and a raw UDP ping-pong, measured side by side in one run (BENCHMARKING.md).
//!
//! # What is measured
//!
//! 1. **Unloaded RTT**: one client, back-to-back RPCs (request and response of the same
//!    length), one at a time, for 100 B … 1 MB, with Homa, TCP and UDP (UDP only up to
//!    the largest payload one datagram carries). The same measurement at sizes spanning
//!    the workload gives the slowdown baselines.
//! 2. **Throughput**: one client sends back-to-back 1 MB requests (1-byte responses) to
//!    one server, [`THROUGHPUT_WINDOW`] in flight, Homa against TCP.
//! 3. **Loaded run**: `--clients` threads send RPCs with open-loop Poisson arrivals to
//!    `--servers` server threads (uniformly chosen), sizes drawn from the workload
//!    (responses as long as requests), Homa and then TCP.
//!
//! # Definitions
//!
//! * **Load**: there is no link on loopback, so `--load` is a fraction of a *nominal*
//!   link rate `--link-gbps` (default 10 Gbit/s): the clients together offer
//!   `load × link` bits of request payload per second (responses of equal length double
//!   the bytes moved). Achieved throughput counts the request payload of the RPCs started
//!   in the measured interval and completed, per second of that interval.
//! * **Slowdown** of an RPC: its RTT over the unloaded RTT at its length. The unloaded
//!   RTT at any length is the P50 measured at a set of sizes spanning the workload,
//!   interpolated linearly in size ([`harness::Baseline`]). Both transports are
//!   compared against the Homa baseline; each transport's own baseline is reported too.
//! * **Short messages**: the shortest 10 % of the workload's messages.
//!
//! # Threads
//!
//! Server thread `i` owns Homa port `P + i` (one socket, one thread receiving and
//! answering) and TCP port `P + i` (one listener and the connections it accepts, served
//! by a `ppoll` loop); one more thread echoes UDP. With `--server-shards N` Homa has one
//! port instead, served by N shards (`SocketConfig::shards`), and every Homa server
//! thread receives from it; the client sockets' ports are chosen so that the clients
//! spread evenly over the shards. Each client thread has one Homa socket
//! (RPCs to every server) or one TCP connection to every server (one per client-server
//! pair), and alone starts RPCs and receives their responses.
//!
//! # Waiting
//!
//! Every waiting thread, of every transport, client or server, waits the same way, set by
//! one knob, `--busy-poll-us` (default 50): it busy-polls for that long, with
//! `sched_yield` between two non-blocking polls, then blocks. Homa's threads do it inside
//! the socket (`SocketConfig::busy_poll`, polling with a non-blocking `recvmmsg`); the TCP
//! and UDP baselines in [`system::poll_spin`] (`ppoll` with a zero timeout, then a
//! blocking `ppoll`). Yielding keeps a spinning thread from starving the peer it waits
//! for when both share a core.
//!
//! # Cost
//!
//! Every phase of every transport also reports what its measured RPCs cost: CPU time
//! (user + system) and context switches (voluntary + involuntary) per RPC ([`cost`]).
//! `homa bench` runs its servers as threads of its own process, so
//! `getrusage(RUSAGE_SELF)` counts both ends of every RPC (client threads, the server
//! threads of every transport, the Homa sockets' background threads); `homa client` sees
//! its own process only. The harness reads it when the measured interval begins (after
//! the warm-up) and when it ends. The servers of the other transports idle meanwhile;
//! what the process uses with nothing to do, measured before the first phase, is
//! reported as the idle floor.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use homa_eval::stats::{default_buckets, Samples};
use homa_eval::workload::Distribution;
use homa_socket::{SocketConfig, TransportKind};

mod arrivals;
mod cost;
mod error;
mod frame;
pub(crate) mod harness;
mod homa;
pub(crate) mod knobs;
pub(crate) mod raw;
pub(crate) mod report;
mod server;
pub(crate) mod spec;
pub(crate) mod system;
mod tcp;
mod udp;

use error::BenchError;
use harness::{Baseline, Budget, LoadPlan, RpcClient};
use knobs::HomaKnobs;
use server::{ServerOptions, ServerSet, Targets};
use spec::WorkloadSpec;

/// Zeros sent as payload (the benchmark never looks at message contents).
pub(crate) static ZEROS: [u8; spec::MAX_MESSAGE as usize] = [0; spec::MAX_MESSAGE as usize];

/// The message sizes of the unloaded RTT table.
pub(crate) const TABLE_SIZES: [u32; 5] = [100, 1_000, 10_000, 100_000, 1_000_000];
/// Message size of the throughput measurement.
pub(crate) const THROUGHPUT_SIZE: u32 = 1_000_000;
/// Messages in flight during the throughput measurement.
pub(crate) const THROUGHPUT_WINDOW: usize = 4;
/// Sizes measured for the slowdown baseline, within the workload's range (plus its
/// smallest and largest size): about three per decade.
const BASELINE_GRID: [u32; 13] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];
/// Request bytes a loaded-run client keeps in flight at most; arrivals beyond are
/// skipped and counted (the transport is not keeping up). Well below the Homa socket's
/// transmit buffer (100 MB) and receive region (64 MiB), so that overload shows as
/// skipped arrivals rather than as a client blocked in `send_request`.
const MAX_OUTSTANDING_BYTES: u64 = 16_000_000;
/// Default Homa/TCP port of `homa server` and `homa client`.
const DEFAULT_PORT: u16 = 4000;
/// Default UDP echo port of `homa server` and `homa client`.
const DEFAULT_UDP_PORT: u16 = 3999;

/// Homa's encapsulation, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportArg {
    /// Homa packets in UDP datagrams (no privileges needed).
    Udp,
    /// Raw IP protocol 146, as the Linux module (needs root or CAP_NET_RAW).
    Raw,
}

impl TransportArg {
    pub(crate) fn kind(self) -> TransportKind {
        match self {
            TransportArg::Udp => TransportKind::Udp,
            TransportArg::Raw => TransportKind::RawIp,
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportArg::Udp => "udp",
            TransportArg::Raw => "raw",
        }
    }
}

/// The measurement options shared by `homa bench` and `homa client`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MeasureArgs {
    /// A smoke run of a few seconds (CI): fewer RPCs, short throughput and loaded runs.
    #[arg(long)]
    quick: bool,
    /// Workload of the loaded run: w1…w5 (the Homa papers' distributions, capped at
    /// 1,000,000 bytes as the Linux module's benchmark samples them) or one message size
    /// for every RPC (e.g. 1000, 64K, 1M).
    #[arg(long, value_name = "w1..w5|SIZE", default_value = "w4", value_parser = spec::parse_workload)]
    workload: WorkloadSpec,
    /// Offered load of the loaded run, as a fraction of the nominal link rate
    /// (`--link-gbps`): the clients offer load × link bits of requests per second.
    #[arg(long, value_name = "FRACTION", default_value = "0.5", value_parser = spec::parse_load)]
    load: f64,
    /// Nominal link rate that `--load` is a fraction of (loopback has no link rate).
    #[arg(long, value_name = "GBPS", default_value = "10", value_parser = spec::parse_positive)]
    link_gbps: f64,
    /// Seconds of each transport's loaded run [default: 10, 1 with --quick].
    #[arg(long, value_name = "SECONDS", value_parser = spec::parse_positive)]
    duration: Option<f64>,
    /// Client threads of the loaded run.
    #[arg(long, value_name = "N", default_value = "2", value_parser = spec::parse_threads)]
    clients: usize,
    /// Server threads per transport (Homa and TCP).
    #[arg(long, value_name = "N", default_value = "2", value_parser = spec::parse_threads)]
    servers: usize,
    /// TCP connections from each client thread to each server thread; the requests to
    /// one server take them in turn.
    #[arg(long, value_name = "N", default_value = "1", value_parser = spec::parse_threads)]
    tcp_conns: usize,
    /// Serve Homa on one port with N shards (`SocketConfig::shards`: a SO_REUSEPORT
    /// group of N engines), all server threads receiving from it, instead of one port
    /// per server thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    server_shards: Option<u16>,
    /// How Homa packets travel.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Use IPv6 (loopback ::1 for `homa bench`).
    #[arg(long)]
    ipv6: bool,
    /// How long a waiting thread busy-polls before it sleeps, in µs, for every transport
    /// alike: non-blocking polls with sched_yield between them, then a blocking wait
    /// (Homa's socket default and the Linux module's poll_usecs: 50; 0 sleeps at once).
    #[arg(long, value_name = "US", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_us: u64,
    #[command(flatten)]
    pub(crate) homa: HomaKnobs,
    /// Seed of the arrival times, sizes and destinations of the loaded run.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Also write the results as JSON (BENCHMARKING.md's shape) to PATH; `-` for stdout
    /// (the tables then go to stderr).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write the results as CSV to PATH (`-` for stdout).
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Draw the loaded run's slowdown against cumulative message fraction (the papers'
    /// figure, one line per transport) as SVG to PATH.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}

const BENCH_EXAMPLES: &str = "\
Examples:
  homa bench                          the full run on loopback (about a minute)
  homa bench --quick                  a smoke run of a few seconds
  homa bench --workload w5 --load 0.8 --plot w5.svg
  homa bench --workload 64K --clients 4 --servers 4 --json results.json
  homa bench --json - > results.json  JSON on stdout, tables on stderr
  sudo homa bench --transport raw     Homa as raw IP protocol 146

Load is a fraction of a nominal link rate (--link-gbps, default 10 Gbit/s): the
clients offer load x link bits/s of request payload with Poisson arrivals. Slowdown =
RTT / unloaded Homa RTT of the same length (P50, interpolated between measured sizes).";

/// Options of `homa bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = BENCH_EXAMPLES)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    measure: MeasureArgs,
}

const SERVER_EXAMPLES: &str = "\
Examples:
  homa server                         Homa and TCP on ports 4000-4001, UDP echo on 3999
  homa server --servers 4 --port 5000
  ip netns exec srv homa server --bind 10.0.0.1
  sudo homa server --transport raw    then: homa client --transport raw --server ...

Serve until killed (Ctrl-C). Start `homa client` with the same --servers, --port,
--udp-port, --transport and --ipv6.";

/// Options of `homa server`.
#[derive(Debug, clap::Args)]
#[command(after_help = SERVER_EXAMPLES)]
pub(crate) struct ServerArgs {
    /// First port: server thread i serves Homa and TCP on port PORT + i (Homa server
    /// ports are 1..=32767).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// UDP port of the ping-pong echo.
    #[arg(long, default_value_t = DEFAULT_UDP_PORT)]
    udp_port: u16,
    /// Server threads per transport.
    #[arg(long, value_name = "N", default_value = "2", value_parser = spec::parse_threads)]
    servers: usize,
    /// Serve Homa on one port with N shards (`SocketConfig::shards`: a SO_REUSEPORT
    /// group of N engines), all server threads receiving from it, instead of one port
    /// per server thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    server_shards: Option<u16>,
    /// Address of the TCP and UDP sockets [default: 0.0.0.0, or :: with --ipv6]. Homa
    /// sockets receive on every address.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// How Homa packets travel.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// IPv6 Homa sockets.
    #[arg(long)]
    ipv6: bool,
    /// How long a waiting thread busy-polls before it sleeps, in µs, for every transport
    /// alike: non-blocking polls with sched_yield between them, then a blocking wait
    /// (Homa's socket default and the Linux module's poll_usecs: 50; 0 sleeps at once).
    #[arg(long, value_name = "US", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll_us: u64,
    #[command(flatten)]
    homa: HomaKnobs,
}

const CLIENT_EXAMPLES: &str = "\
Examples:
  homa client --server 10.0.0.1                 full run against `homa server` there
  homa client --server 10.0.0.1 --quick --json -
  ip netns exec cli homa client --server 10.0.0.1 --workload w3 --load 0.8

Prints the same tables as `homa bench`. CPU seconds are the client process's only.";

/// Options of `homa client`.
#[derive(Debug, clap::Args)]
#[command(after_help = CLIENT_EXAMPLES)]
pub(crate) struct ClientArgs {
    /// Address of the host running `homa server`; several, comma-separated, spread the
    /// loaded run's RPCs uniformly over all their server threads (the other phases use
    /// the first).
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        required = true
    )]
    server: Vec<IpAddr>,
    /// First port of the servers (as given to `homa server`).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// UDP echo port of the server.
    #[arg(long, default_value_t = DEFAULT_UDP_PORT)]
    udp_port: u16,
    /// Measure only this phase of one transport (`--kind`) and write its raw samples to
    /// `--raw-out` instead of the report (for programs that merge many clients, such as
    /// `homa testbed`; format in the `raw` module's docs).
    #[arg(long, value_enum, requires_all = ["kind", "raw_out"])]
    phase: Option<raw::Phase>,
    /// The transport of `--phase`.
    #[arg(long, value_enum, requires = "phase")]
    kind: Option<raw::RawKind>,
    /// Where `--phase` writes its raw samples (`-` for stdout).
    #[arg(long, value_name = "PATH", requires = "phase")]
    raw_out: Option<PathBuf>,
    /// With `--phase loaded --kind homa`: the first client socket is bound to `--port`
    /// and also serves requests there (one engine, so one pacer and one grant scheduler,
    /// for the host's client and server, as the kernel module has one per host). The
    /// client prints `ready` once it serves, starts the load on a line from stdin,
    /// prints `done` after writing `--raw-out`, and serves until stdin closes. For
    /// `homa testbed`, which starts every host's client this way.
    #[arg(long, requires = "phase")]
    serve: bool,
    #[command(flatten)]
    measure: MeasureArgs,
}

/// The socket settings every benchmark Homa socket uses. Over raw IP, messages to
/// loopback peers go unscheduled whole as over UDP (the socket's raw-IP default keeps the
/// kernel's 40,000 bytes because a loopback peer may be the kernel module; the
/// benchmark's peers are its own sockets), so the two transports differ only in how
/// packets travel.
///
/// # Errors
///
/// [`BenchError::Option`] if `knobs` holds a value the protocol rejects.
pub(crate) fn socket_config(
    transport: TransportKind,
    ipv6: bool,
    spin: Duration,
    knobs: &HomaKnobs,
) -> Result<SocketConfig, BenchError> {
    let config = SocketConfig::default()
        .transport(transport)
        .ipv6(ipv6)
        .busy_poll(spin);
    let config = match transport {
        TransportKind::RawIp => config.loopback_unsched_bytes(homa_proto::wire::MAX_MESSAGE_LENGTH),
        _ => config,
    };
    knobs.apply(config)
}

/// `homa bench`: servers and clients in this process, on loopback.
pub(crate) fn bench(args: BenchArgs) -> Result<(), String> {
    run_bench(args).map_err(|e| e.to_string())
}

fn run_bench(args: BenchArgs) -> Result<(), BenchError> {
    let m = args.measure;
    report::check_outputs(&m)?;
    let ip = if m.ipv6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let servers = ServerSet::start(&ServerOptions {
        bind: ip,
        homa_port: None,
        tcp_port: 0,
        udp_port: 0,
        servers: m.servers,
        shards: m.server_shards,
        transport: m.transport.kind(),
        ipv6: m.ipv6,
        spin: Duration::from_micros(m.busy_poll_us),
        knobs: m.homa.clone(),
    })?;
    let targets = servers.targets(ip);
    let result = measure(&m, &targets, Scope::Loopback);
    drop(servers);
    result
}

/// `homa server`: serve until killed.
pub(crate) fn server(args: ServerArgs) -> Result<(), String> {
    run_server(args).map_err(|e| e.to_string())
}

fn run_server(args: ServerArgs) -> Result<(), BenchError> {
    let bind = args.bind.unwrap_or(if args.ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    if bind.is_ipv6() != args.ipv6 {
        return Err(BenchError::option(
            "--bind",
            format!("{bind} is not of the Homa sockets' family (add or drop --ipv6)"),
        ));
    }
    let set = ServerSet::start(&ServerOptions {
        bind,
        homa_port: Some(args.port),
        tcp_port: args.port,
        udp_port: args.udp_port,
        servers: args.servers,
        shards: args.server_shards,
        transport: args.transport.kind(),
        ipv6: args.ipv6,
        spin: Duration::from_micros(args.busy_poll_us),
        knobs: args.homa,
    })?;
    let last = args.port as usize + args.servers - 1;
    let homa_ports = match args.server_shards {
        Some(n) => format!("port {} ({n} shards)", args.port),
        None => format!("ports {}-{last}", args.port),
    };
    println!(
        "homa server: Homa ({}, {}) on {homa_ports}, TCP on {bind} ports {}-{last}, UDP echo on {bind} port {}; {} server threads. Ctrl-C stops.",
        args.transport.name(),
        if args.ipv6 { "IPv6" } else { "IPv4" },
        args.port,
        set.udp_port,
        args.servers
    );
    let _ = std::io::stdout().flush();
    set.run_forever()
}

/// `homa client`: the measurements of `homa bench` against `homa server`.
pub(crate) fn client(args: ClientArgs) -> Result<(), String> {
    run_client(args).map_err(|e| e.to_string())
}

fn run_client(args: ClientArgs) -> Result<(), BenchError> {
    let m = args.measure;
    let family = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
    if let Some(ip) = args.server.iter().find(|ip| ip.is_ipv6() != m.ipv6) {
        return Err(BenchError::option(
            "--server",
            format!(
                "{ip} is {}, but the Homa sockets are {} (add or drop --ipv6)",
                family(ip.is_ipv6()),
                family(m.ipv6)
            ),
        ));
    }
    if args.port == 0 || args.port as usize + m.servers - 1 > 32_767 {
        return Err(BenchError::option(
            "--port",
            format!(
                "{}: Homa server ports {}..{} must lie within 1..=32767",
                args.port,
                args.port,
                args.port as usize + m.servers - 1
            ),
        ));
    }
    let mut targets: Option<Targets> = None;
    for &ip in &args.server {
        let t = Targets::layout(
            ip,
            args.port,
            m.servers,
            m.server_shards.is_some(),
            args.udp_port,
        );
        match &mut targets {
            None => targets = Some(t),
            Some(all) => all.extend(t),
        }
    }
    let targets = targets.ok_or_else(|| BenchError::option("--server", "no address given"))?;
    let first = targets.udp.ip();
    if args.serve
        && (args.phase != Some(raw::Phase::Loaded) || args.kind != Some(raw::RawKind::Homa))
    {
        return Err(BenchError::option(
            "--serve",
            "serves Homa requests during a loaded run: it needs --phase loaded --kind homa",
        ));
    }
    if args.serve && (m.servers != 1 || m.server_shards.is_some()) {
        return Err(BenchError::option(
            "--serve",
            "serves one Homa port (--port) with one thread: it needs --servers 1 and no --server-shards",
        ));
    }
    match (args.phase, args.kind, args.raw_out) {
        (Some(phase), Some(kind), Some(out)) if args.serve => {
            serving_phase(&m, &targets, args.port, phase, kind, &out)
        }
        (Some(phase), Some(kind), Some(out)) => raw_phase(&m, &targets, phase, kind, &out),
        _ => {
            report::check_outputs(&m)?;
            measure(&m, &targets, Scope::Remote(first))
        }
    }
}

/// `homa client --phase … --serve`: the loaded run with its first socket bound to
/// `port` and serving there, between a `ready` line, a line from stdin, and a `done`
/// line; then serving until stdin closes.
fn serving_phase(
    m: &MeasureArgs,
    targets: &Targets,
    port: u16,
    phase: raw::Phase,
    kind: raw::RawKind,
    out: &std::path::Path,
) -> Result<(), BenchError> {
    let mut factory = ClientFactory::new(m, targets);
    factory.serve = Some(port);
    phase_with(m, &factory, phase, kind, out)?;
    say("done")?;
    // Other hosts' clients may still send requests: serve them (the socket's server
    // thread does) until the parent closes stdin.
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink)
        .map_err(|e| BenchError::io("waiting for stdin to close", e))?;
    Ok(())
}

/// Prints `line` on stdout at once (a parent waits for it).
fn say(line: &str) -> Result<(), BenchError> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")
        .and_then(|_| o.flush())
        .map_err(|e| BenchError::io("writing to stdout", e))
}

/// `homa client --phase`: one phase of one transport, its raw samples written to `out`.
fn raw_phase(
    m: &MeasureArgs,
    targets: &Targets,
    phase: raw::Phase,
    kind: raw::RawKind,
    out: &std::path::Path,
) -> Result<(), BenchError> {
    phase_with(m, &ClientFactory::new(m, targets), phase, kind, out)
}

/// One phase of one transport with clients from `factory`, its raw samples written to
/// `out`.
fn phase_with(
    m: &MeasureArgs,
    factory: &ClientFactory<'_>,
    phase: raw::Phase,
    kind: raw::RawKind,
    out: &std::path::Path,
) -> Result<(), BenchError> {
    let plan = Plan::new(m);
    let workload = WorkloadInfo::new(m.workload);
    let mut result = raw::RawPhase {
        phase: Some(phase),
        kind: Some(kind),
        ..raw::RawPhase::default()
    };
    let cpu0 = system::cpu_seconds();
    match phase {
        raw::Phase::Unloaded => {
            let sizes = workload.unloaded_sizes();
            let mut client = factory.open(kind.kind())?;
            let mut used = cost::Usage::default();
            for size in sizes {
                let u = harness::unloaded(
                    client.as_mut(),
                    &factory.describe(kind.kind()),
                    size,
                    &plan.budget,
                    &mut system::usage,
                )?;
                let ns = |p| (u.percentile_us(p) * 1000.0).round() as u64;
                result
                    .unloaded
                    .push((size, ns(50.0), ns(99.0), u.rtts_ns.len() as u64));
                result.seconds += u.cost.wall_s;
                result.started += u.rtts_ns.len() as u64;
                result.failed += u.lost as u64;
                if let Some(u) = u.cost.used {
                    used = used.plus(u);
                }
            }
            result.ctx_switches = used.switches();
            result.run_wait_us = used.run_wait_us;
            result.timeslices = used.timeslices;
        }
        raw::Phase::Loaded => {
            let bar = indicatif::ProgressBar::hidden();
            let (r, _) = run_loaded(m, &plan, &workload, factory, kind.kind(), &bar)?
                .map_err(BenchError::Protocol)?;
            result.seconds = plan.load_duration.as_secs_f64();
            let used = r.cost().used.unwrap_or_default();
            result.ctx_switches = used.switches();
            result.run_wait_us = used.run_wait_us;
            result.timeslices = used.timeslices;
            result.started = r.started;
            result.failed = r.failed;
            result.skipped = r.skipped;
            result.unfinished = r.unfinished;
            result.failure = r.first_failure.clone();
            result.rtts = r
                .rtts
                .iter()
                .map(|&(size, ns)| (size, ns.round() as u64))
                .collect();
        }
    }
    result.cpu_s = system::cpu_seconds() - cpu0;
    report::write_to(out, "raw samples", &result.to_text())
}

/// The loaded run of one transport: `--clients` threads offering the workload at
/// `--load`; their merged result and the process's CPU seconds over the whole run. The
/// inner `Err` is a run that could not finish (a client thread failed), the outer one a
/// client that could not be opened.
fn run_loaded(
    m: &MeasureArgs,
    plan: &Plan,
    workload: &WorkloadInfo,
    factory: &ClientFactory<'_>,
    kind: Kind,
    bar: &indicatif::ProgressBar,
) -> Result<Result<(harness::LoadResult, f64), String>, BenchError> {
    let offered_bps = m.load * m.link_gbps * 1e9;
    let rate_per_thread = offered_bps / 8.0 / workload.dist.mean() / m.clients as f64;
    let clients = (0..m.clients)
        .map(|_| factory.open(kind))
        .collect::<Result<Vec<_>, _>>()?;
    if factory.serve.is_some() {
        // Serving now: tell the parent, and start when it says so (every host serves
        // before any sends).
        say("ready")?;
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| BenchError::io("waiting for the start line on stdin", e))?;
    }
    let aborts: Vec<harness::AbortHandle> =
        clients.iter().filter_map(|c| c.abort_handle()).collect();
    // A transport that blocks for good must not hang the benchmark.
    let give_up = Instant::now()
        + plan.load_warmup
        + plan.load_duration
        + plan.drain
        + Duration::from_secs(10);
    let cpu0 = system::cpu_seconds();
    let results: Vec<Result<harness::LoadResult, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                let plan = LoadPlan {
                    rate_per_s: rate_per_thread,
                    // Every server port of every host (a sharded Homa port serves the
                    // indexes of all its host's threads).
                    servers: factory.targets.tcp.len(),
                    warmup: plan.load_warmup,
                    duration: plan.load_duration,
                    drain: plan.drain,
                    max_outstanding: plan.max_outstanding,
                    max_outstanding_bytes: plan.max_outstanding_bytes,
                    seed: m.seed,
                    stream: i as u64,
                };
                let dist = &workload.dist;
                let bar = bar.clone();
                s.spawn(move || {
                    let tick = || {
                        if i == 0 {
                            bar.inc(1);
                        }
                    };
                    harness::loaded(client.as_mut(), &plan, dist, tick, &mut system::usage)
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            if Instant::now() >= give_up {
                aborts.iter().for_each(|abort| abort());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Protocol("a client thread panicked".into()))
                })
            })
            .collect()
    });
    let cpu_s = system::cpu_seconds() - cpu0;
    let mut merged = harness::LoadResult::default();
    for r in results {
        match r {
            Ok(r) => merged.merge(r),
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    Ok(Ok((merged, cpu_s)))
}

/// Where the servers run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// In this process, on loopback (`homa bench`).
    Loopback,
    /// `homa server` at this address (`homa client`).
    Remote(IpAddr),
}

/// How much of everything to measure.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) budget: Budget,
    pub(crate) throughput_warmup: Duration,
    pub(crate) throughput_duration: Duration,
    pub(crate) load_warmup: Duration,
    pub(crate) load_duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) max_outstanding: usize,
    pub(crate) max_outstanding_bytes: u64,
    /// How long the idle floor is measured (servers up, no RPC).
    pub(crate) idle: Duration,
}

impl Plan {
    fn new(m: &MeasureArgs) -> Plan {
        Plan::for_run(m.quick, m.duration)
    }

    /// The plan of a run with `--quick` (or not) and `--duration` (seconds, if given):
    /// what `homa client` does, for a program that starts clients and must know how
    /// long they take (`homa testbed`).
    pub(crate) fn for_run(quick: bool, duration: Option<f64>) -> Plan {
        let duration = Duration::from_secs_f64(duration.unwrap_or(if quick { 1.0 } else { 10.0 }));
        if quick {
            Plan {
                budget: Budget {
                    min: 10,
                    max: 300,
                    time: Duration::from_millis(30),
                    warmup: 3,
                },
                throughput_warmup: Duration::from_millis(100),
                throughput_duration: Duration::from_millis(400),
                load_warmup: Duration::from_millis(200),
                load_duration: duration,
                drain: Duration::from_secs(2),
                max_outstanding: 1000,
                max_outstanding_bytes: MAX_OUTSTANDING_BYTES,
                idle: Duration::from_millis(200),
            }
        } else {
            Plan {
                budget: Budget {
                    min: 50,
                    max: 10_000,
                    time: Duration::from_millis(400),
                    warmup: 20,
                },
                throughput_warmup: Duration::from_millis(500),
                throughput_duration: Duration::from_secs(3),
                load_warmup: Duration::from_secs(1).min(duration / 5),
                load_duration: duration,
                drain: Duration::from_secs(5),
                max_outstanding: 1000,
                max_outstanding_bytes: MAX_OUTSTANDING_BYTES,
                idle: Duration::from_millis(500),
            }
        }
    }
}

/// The three transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Homa,
    Tcp,
    Udp,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Homa => "homa",
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
        }
    }
}

/// Everything needed to open clients.
struct ClientFactory<'a> {
    targets: &'a Targets,
    transport: TransportKind,
    ipv6: bool,
    spin: Duration,
    /// The Homa settings of `--homa-*`.
    knobs: HomaKnobs,
    /// The shards of the Homa server port, if sharded.
    shards: Option<u16>,
    /// TCP connections per client-server pair (`--tcp-conns`).
    tcp_conns: usize,
    /// Homa clients opened so far (client `k` is steered to shard `k mod shards`).
    homa_opened: std::sync::atomic::AtomicUsize,
    /// `--serve`: the first Homa client's socket is bound to this port and serves there.
    serve: Option<u16>,
}

impl<'a> ClientFactory<'a> {
    fn new(m: &MeasureArgs, targets: &'a Targets) -> ClientFactory<'a> {
        ClientFactory {
            targets,
            transport: m.transport.kind(),
            ipv6: m.ipv6,
            spin: Duration::from_micros(m.busy_poll_us),
            knobs: m.homa.clone(),
            shards: m.server_shards,
            tcp_conns: m.tcp_conns,
            homa_opened: Default::default(),
            serve: None,
        }
    }

    fn open(&self, kind: Kind) -> Result<Box<dyn RpcClient + Send>, BenchError> {
        Ok(match kind {
            Kind::Homa => {
                let k = self
                    .homa_opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let config = || socket_config(self.transport, self.ipv6, self.spin, &self.knobs);
                match self.serve {
                    Some(port) if k == 0 => Box::new(homa::HomaClient::serving(
                        config()?,
                        port,
                        &self.targets.homa,
                    )?),
                    _ => Box::new(homa::HomaClient::new(
                        config,
                        &self.targets.homa,
                        self.shards.map(|n| (n, k)),
                    )?),
                }
            }
            Kind::Tcp => Box::new(tcp::TcpClient::connect(
                &self.targets.tcp,
                self.tcp_conns,
                self.spin,
            )?),
            Kind::Udp => Box::new(udp::UdpClient::connect(self.targets.udp, self.spin)?),
        })
    }

    fn describe(&self, kind: Kind) -> String {
        match kind {
            Kind::Homa => format!("the Homa server at {}", self.targets.homa[0]),
            Kind::Tcp => format!("the TCP server at {}", self.targets.tcp[0]),
            Kind::Udp => format!("the UDP echo at {}", self.targets.udp),
        }
    }
}

/// The workload of the loaded run.
pub(crate) struct WorkloadInfo {
    pub(crate) spec: WorkloadSpec,
    pub(crate) dist: Distribution,
    /// Bucket edges of the report.
    pub(crate) edges: Vec<u32>,
    pub(crate) short_threshold: u32,
}

impl WorkloadInfo {
    /// The distribution, report buckets and short-message threshold of `spec`.
    pub(crate) fn new(spec: WorkloadSpec) -> WorkloadInfo {
        let dist = match spec {
            WorkloadSpec::Named(w) => Distribution::of(w, true),
            WorkloadSpec::Fixed(size) => Distribution::fixed(size),
        };
        WorkloadInfo {
            spec,
            edges: default_buckets(&dist),
            short_threshold: dist.short_threshold(),
            dist,
        }
    }

    /// Sizes of the unloaded phase: the table's and the baseline's, ascending.
    pub(crate) fn unloaded_sizes(&self) -> Vec<u32> {
        let mut sizes: Vec<u32> = TABLE_SIZES
            .iter()
            .copied()
            .chain(self.baseline_sizes())
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// Sizes to measure unloaded for the slowdown baseline.
    fn baseline_sizes(&self) -> Vec<u32> {
        let (lo, hi) = (self.dist.min(), self.dist.max());
        let mut sizes: Vec<u32> = BASELINE_GRID
            .iter()
            .copied()
            .filter(|&s| s > lo && s < hi)
            .chain([lo, hi])
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

/// The measured loaded run of one transport.
pub(crate) struct LoadedRun {
    pub(crate) kind: Kind,
    pub(crate) result: harness::LoadResult,
    /// CPU seconds of the whole run, warm-up and drain included.
    pub(crate) cpu_s: f64,
    /// What the measured RPCs cost, over the measured interval.
    pub(crate) cost: cost::Cost,
    pub(crate) seconds: f64,
    /// Slowdowns against the Homa baseline.
    pub(crate) samples: Samples,
    /// Slowdowns against this transport's own baseline.
    pub(crate) own: Samples,
}

impl LoadedRun {
    pub(crate) fn achieved_gbps(&self) -> f64 {
        self.result.bytes as f64 * 8.0 / self.seconds / 1e9
    }
    pub(crate) fn kops(&self) -> f64 {
        self.result.rtts.len() as f64 / self.seconds / 1000.0
    }
}

/// Everything one run measured, for the report.
pub(crate) struct Results {
    pub(crate) unloaded: Vec<(Kind, harness::Unloaded)>,
    pub(crate) throughput: Vec<(Kind, harness::Throughput, f64)>,
    pub(crate) loaded: Vec<LoadedRun>,
    /// Loaded runs that could not finish, and why.
    pub(crate) failed_runs: Vec<(Kind, String)>,
    pub(crate) homa_baseline: Baseline,
    pub(crate) tcp_baseline: Baseline,
    /// What the process used with the servers up and no RPC in flight, before the first
    /// phase: the floor under every phase's cost.
    pub(crate) idle: cost::Cost,
}

/// The progress bar: drawn only when stderr is a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn measure(m: &MeasureArgs, targets: &Targets, scope: Scope) -> Result<(), BenchError> {
    let machine = system::Machine::probe();
    let plan = Plan::new(m);
    let workload = WorkloadInfo::new(m.workload);
    let factory = ClientFactory::new(m, targets);
    let udp_max = udp::max_payload(m.ipv6);
    let sizes = workload.unloaded_sizes();
    let udp_sizes: Vec<u32> = TABLE_SIZES
        .iter()
        .copied()
        .filter(|&s| s as usize <= udp_max && s as usize >= udp::MIN_PAYLOAD)
        .collect();
    let load_seconds = (plan.load_warmup + plan.load_duration).as_secs();
    let total = (2 * sizes.len() + udp_sizes.len() + 2) as u64 + 2 * load_seconds.max(1);
    let bar = progress_bar(total);

    // 0. The idle floor: the servers' (and the sockets' background threads') cost with
    // nothing to do, part of every phase's cost.
    bar.set_message("idle floor");
    let idle = {
        let from = cost::Snapshot::take(&mut system::usage);
        std::thread::sleep(plan.idle);
        let to = cost::Snapshot::take(&mut system::usage);
        cost::Window { from, to }.cost(0)
    };

    // 1. Unloaded RTT (and the baselines).
    let mut unloaded = Vec::new();
    for (kind, kind_sizes) in [
        (Kind::Homa, &sizes),
        (Kind::Tcp, &sizes),
        (Kind::Udp, &udp_sizes),
    ] {
        let mut client = factory.open(kind)?;
        for &size in kind_sizes {
            bar.set_message(format!("unloaded RTT: {} {size} B", kind.name()));
            let u = harness::unloaded(
                client.as_mut(),
                &factory.describe(kind),
                size,
                &plan.budget,
                &mut system::usage,
            )?;
            unloaded.push((kind, u));
            bar.inc(1);
        }
    }
    let baseline_of = |kind: Kind| {
        Baseline::new(
            unloaded
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, u)| (u.size, u.percentile_us(50.0) * 1000.0))
                .collect(),
        )
        .ok_or_else(|| {
            BenchError::Protocol(format!("no unloaded {} RTT was measured", kind.name()))
        })
    };
    let homa_baseline = baseline_of(Kind::Homa)?;
    let tcp_baseline = baseline_of(Kind::Tcp)?;

    // 2. Throughput.
    let mut throughput = Vec::new();
    for kind in [Kind::Homa, Kind::Tcp] {
        bar.set_message(format!("throughput: {}", kind.name()));
        let mut client = factory.open(kind)?;
        let cpu0 = system::cpu_seconds();
        let t = harness::throughput(
            client.as_mut(),
            &factory.describe(kind),
            THROUGHPUT_SIZE,
            THROUGHPUT_WINDOW,
            plan.throughput_warmup,
            plan.throughput_duration,
            &mut system::usage,
        )?;
        let cpu = system::cpu_seconds() - cpu0;
        throughput.push((kind, t, cpu));
        bar.inc(1);
    }

    // 3. Loaded runs.
    let mut loaded = Vec::new();
    let mut failed_runs = Vec::new();
    for kind in [Kind::Homa, Kind::Tcp] {
        bar.set_message(format!(
            "loaded run: {} {} at load {}",
            kind.name(),
            workload.spec,
            m.load
        ));
        let (merged, cpu_s) = match run_loaded(m, &plan, &workload, &factory, kind, &bar)? {
            Ok(done) => done,
            Err(e) => {
                // Report the failure with the other transport's results rather than lose
                // both.
                failed_runs.push((kind, e));
                continue;
            }
        };
        let own_baseline = if kind == Kind::Homa {
            &homa_baseline
        } else {
            &tcp_baseline
        };
        let mut samples = Samples::new();
        let mut own = Samples::new();
        for &(size, rtt) in &merged.rtts {
            samples.push_with(size, rtt, |s| homa_baseline.at(s));
            own.push_with(size, rtt, |s| own_baseline.at(s));
        }
        loaded.push(LoadedRun {
            kind,
            cost: merged.cost(),
            result: merged,
            cpu_s,
            seconds: plan.load_duration.as_secs_f64(),
            samples,
            own,
        });
    }
    bar.finish_and_clear();

    let results = Results {
        unloaded,
        throughput,
        loaded,
        failed_runs,
        homa_baseline,
        tcp_baseline,
        idle,
    };
    let ctx = report::Context::new(m, &plan, &workload, targets, scope, machine);
    report::emit(&ctx, &results, m)
}

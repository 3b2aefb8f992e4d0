//! The experiment over the rack: Homa (8 priorities), Homa with one priority and TCP, one
//! after another over the same rack and shaping. For each transport:
//!
//! 1. a `homa server` starts on every host (restarted for each transport, so a
//!    one-priority run's servers use one priority too);
//! 2. the unloaded RTT: a `homa client --phase unloaded` on host 0 against host 1's
//!    server (back-to-back RPCs at each size; the Homa run's is every transport's
//!    slowdown baseline, measured first);
//! 3. the loaded run: a `homa client --phase loaded` on every host at once, all-to-all
//!    (each against every *other* host's server), open-loop Poisson arrivals, while the
//!    switch's queues are sampled; the qdisc counters of every shaped device are read
//!    before and after it, the servers' CPU time before they are killed.
//!
//! **Load.** A request and its response have the same length, so every host's uplink
//! carries its own requests and its responses to the others' requests, and its downlink
//! the reverse. Each client therefore offers `load / 2 × link` of request payload:
//! on average the payload on every host link, each direction, is `load × link`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bench::raw::RawPhase;
use crate::bench::spec::WorkloadSpec;
use crate::bench::system::RunQueue;
use crate::bench::{Plan as ClientPlan, TransportArg, WorkloadInfo};

use super::budget::PathBudget;
use super::cpu;
use super::error::TestbedError;
use super::procs::HostProcess;
use super::queues::{PortDelta, Sampler};
use super::rack::{Rack, MTU};

/// First Homa / TCP port of every host's `homa server`.
pub(crate) const SERVER_PORT: u16 = 4000;
/// The UDP echo port of every host's `homa server` (unused by the experiment).
pub(crate) const UDP_PORT: u16 = 3999;
/// Short messages the default duration is long enough for, per transport.
pub(crate) const MIN_SHORT_MESSAGES: f64 = 2000.0;
/// Length of each transport's loaded run with `--quick`, seconds.
pub(crate) const QUICK_SECONDS: f64 = 3.0;
/// The longest default duration, seconds (at very low loads; `--duration` sets any).
pub(crate) const MAX_DEFAULT_SECONDS: f64 = 600.0;
/// How often the switch's queues are read during a loaded run.
const SAMPLE_PERIOD: Duration = Duration::from_millis(200);
/// How long a server may take to print that it is ready.
const SERVER_READY: Duration = Duration::from_secs(30);

/// One transport of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Homa with 8 priority levels.
    Homa,
    /// Homa with one priority level (`--homa-priorities 1`): what priorities buy.
    HomaOnePriority,
    /// TCP (every packet at TOS 0).
    Tcp,
}

impl Variant {
    /// The three, in the order they run.
    pub(crate) const ALL: [Variant; 3] = [Variant::Homa, Variant::HomaOnePriority, Variant::Tcp];

    /// Short name, as in the JSON and CSV.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Homa => "homa",
            Variant::HomaOnePriority => "homa-1prio",
            Variant::Tcp => "tcp",
        }
    }

    /// `homa client --kind`.
    fn kind(self) -> &'static str {
        match self {
            Variant::Homa | Variant::HomaOnePriority => "homa",
            Variant::Tcp => "tcp",
        }
    }

    /// `--homa-priorities` of its servers and clients (TCP's servers also serve Homa,
    /// idle: they keep 8).
    pub(crate) fn priorities(self) -> u8 {
        match self {
            Variant::HomaOnePriority => 1,
            Variant::Homa | Variant::Tcp => 8,
        }
    }
}

/// The experiment's options, as given (`homa testbed`'s).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    pub(crate) workload: WorkloadSpec,
    /// Payload on every host link, each direction, as a fraction of the link rate.
    pub(crate) load: f64,
    /// `--duration`, seconds.
    pub(crate) duration: Option<f64>,
    pub(crate) seed: u64,
    pub(crate) quick: bool,
    /// Client threads per host.
    pub(crate) clients: usize,
    /// Server threads per host.
    pub(crate) servers: usize,
    pub(crate) tcp_conns: usize,
    pub(crate) busy_poll_us: u64,
    pub(crate) transport: TransportArg,
    pub(crate) ipv6: bool,
    /// `--homa-link-mbps` [default: the link rate].
    pub(crate) homa_link_mbps: Option<u32>,
    /// `--homa-set` settings passed on to every server and client.
    pub(crate) homa_set: Vec<(&'static str, u64)>,
    /// `--one-engine-per-host`.
    pub(crate) one_engine_per_host: bool,
}

/// How the loaded runs' length was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DurationChoice {
    /// `--duration`.
    Given,
    /// `--quick`.
    Quick,
    /// Long enough for [`MIN_SHORT_MESSAGES`] short messages (capped at
    /// [`MAX_DEFAULT_SECONDS`]).
    ForShortMessages,
}

/// Everything the runs need, derived once from the options, the rack and the budget.
pub(crate) struct Plan {
    pub(crate) options: Options,
    pub(crate) hosts: usize,
    pub(crate) link_bps: u64,
    /// `--load` of each client: half the link load (see the module docs).
    pub(crate) client_load: f64,
    pub(crate) workload: WorkloadInfo,
    /// Fraction of the workload's messages that are short.
    pub(crate) short_fraction: f64,
    /// RPCs per second offered by all hosts together.
    pub(crate) rpc_rate: f64,
    /// Seconds of each loaded run.
    pub(crate) duration: f64,
    pub(crate) duration_choice: DurationChoice,
    /// The clients' own plan (warm-up, drain, unloaded budget).
    pub(crate) client_plan: ClientPlan,
    /// RTT-bytes, unscheduled bytes and window of every path.
    pub(crate) budget: PathBudget,
    /// DATA payload per full packet.
    pub(crate) segment: u64,
    /// `--homa-link-mbps` given to servers and clients.
    pub(crate) homa_link_mbps: u32,
}

impl Plan {
    /// The plan of a run over `hosts` hosts at `link_bps`, with `budget`'s settings.
    pub(crate) fn new(
        options: Options,
        hosts: usize,
        link_bps: u64,
        budget: PathBudget,
        segment: u64,
    ) -> Plan {
        let workload = WorkloadInfo::new(options.workload);
        let client_load = options.load / 2.0;
        let short_fraction = workload.dist.cdf_at(workload.short_threshold);
        let per_host = client_load * link_bps as f64 / 8.0 / workload.dist.mean();
        let rpc_rate = per_host * hosts as f64;
        let (duration, duration_choice) = match (options.duration, options.quick) {
            (Some(d), _) => (d, DurationChoice::Given),
            (None, true) => (QUICK_SECONDS, DurationChoice::Quick),
            (None, false) => {
                let seconds = MIN_SHORT_MESSAGES / (rpc_rate * short_fraction).max(1e-9);
                let rounded = ((seconds / 10.0).ceil() * 10.0).clamp(10.0, MAX_DEFAULT_SECONDS);
                (rounded, DurationChoice::ForShortMessages)
            }
        };
        let homa_link_mbps = options
            .homa_link_mbps
            .unwrap_or(u32::try_from(link_bps / 1_000_000).unwrap_or(u32::MAX));
        Plan {
            client_plan: ClientPlan::for_run(options.quick, Some(duration)),
            options,
            hosts,
            link_bps,
            client_load,
            workload,
            short_fraction,
            rpc_rate,
            duration,
            duration_choice,
            budget,
            segment,
            homa_link_mbps,
        }
    }

    /// Short messages a loaded run is expected to measure (all hosts).
    pub(crate) fn expected_short(&self) -> f64 {
        self.rpc_rate * self.short_fraction * self.duration
    }

    /// The options every `homa server` and `homa client` of `variant` gets.
    fn common_args(&self, variant: Variant) -> Vec<String> {
        let o = &self.options;
        let clamp = |v: u64| v.clamp(1, 1_000_000).to_string();
        let mut args = vec![
            "--port".to_string(),
            SERVER_PORT.to_string(),
            "--udp-port".into(),
            UDP_PORT.to_string(),
            "--servers".into(),
            o.servers.to_string(),
            "--busy-poll-us".into(),
            o.busy_poll_us.to_string(),
            "--transport".into(),
            o.transport.name().into(),
            "--homa-priorities".into(),
            variant.priorities().to_string(),
            "--homa-unsched-bytes".into(),
            clamp(self.budget.unsched_bytes),
            "--homa-window".into(),
            clamp(self.budget.window),
            "--homa-link-mbps".into(),
            self.homa_link_mbps.to_string(),
            "--homa-mtu".into(),
            MTU.to_string(),
        ];
        if o.ipv6 {
            args.push("--ipv6".into());
        }
        // The path's timers first: a --homa-set of the same name, applied later, wins.
        for (name, value) in self.budget.timers.settings() {
            args.push("--homa-set".into());
            args.push(format!("{name}={value}"));
        }
        for (name, value) in &o.homa_set {
            args.push("--homa-set".into());
            args.push(format!("{name}={value}"));
        }
        args
    }

    /// `homa server` on the host at `addr`.
    pub(crate) fn server_args(&self, variant: Variant, addr: IpAddr) -> Vec<String> {
        let mut args = vec!["server".to_string(), "--bind".into(), addr.to_string()];
        args.extend(self.common_args(variant));
        args
    }

    /// `homa client` of host `host` for one phase against `servers`, raw samples to
    /// `raw_out`.
    pub(crate) fn client_args(
        &self,
        variant: Variant,
        loaded: bool,
        host: usize,
        servers: &[IpAddr],
        raw_out: &Path,
    ) -> Vec<String> {
        let o = &self.options;
        let list: Vec<String> = servers.iter().map(IpAddr::to_string).collect();
        let mut args = vec!["client".to_string(), "--server".into(), list.join(",")];
        args.extend(self.common_args(variant));
        args.extend([
            "--workload".to_string(),
            o.workload.to_string(),
            "--load".into(),
            self.client_load.to_string(),
            "--link-gbps".into(),
            (self.link_bps as f64 / 1e9).to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--seed".into(),
            host_seed(o.seed, host).to_string(),
            "--clients".into(),
            o.clients.to_string(),
            "--tcp-conns".into(),
            o.tcp_conns.to_string(),
            "--phase".into(),
            if loaded { "loaded" } else { "unloaded" }.into(),
            "--kind".into(),
            variant.kind().into(),
            "--raw-out".into(),
            raw_out.display().to_string(),
        ]);
        if o.quick {
            args.push("--quick".into());
        }
        if loaded && self.one_engine_per_host(variant) {
            args.push("--serve".into());
        }
        args
    }

    /// Whether each host runs one engine for its client and its server in `variant`'s
    /// loaded run (`--one-engine-per-host`, Homa only): one `homa client --serve` per
    /// host, as the kernel module has one pacer and one grant scheduler per host. (TCP's
    /// stack is each host's kernel anyway.)
    pub(crate) fn one_engine_per_host(&self, variant: Variant) -> bool {
        matches!(variant, Variant::Homa | Variant::HomaOnePriority)
            && self.options.one_engine_per_host
    }

    /// How long a client phase may take before it is killed.
    fn client_limit(&self, loaded: bool) -> Duration {
        let p = &self.client_plan;
        if loaded {
            // The client's own give-up time (it aborts 10 s after its drain), and more.
            p.load_warmup + p.load_duration + p.drain + Duration::from_secs(40)
        } else if self.options.quick {
            Duration::from_secs(180)
        } else {
            Duration::from_secs(900)
        }
    }
}

/// The seed of host `host`'s client: `--seed` + host × 2^32, so that every host draws its
/// own arrivals, sizes and destinations, the same ones for every transport.
pub(crate) fn host_seed(seed: u64, host: usize) -> u64 {
    seed.wrapping_add((host as u64) << 32)
}

/// What one host's loaded client did.
#[derive(Debug, Clone)]
pub(crate) struct ClientRun {
    pub(crate) host: usize,
    /// Its raw samples, or why there are none (the client failed).
    pub(crate) raw: Result<RawPhase, String>,
}

/// CPU used during a loaded run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// The clients' CPU seconds (their raw files: the whole phase, warm-up and drain).
    pub(crate) clients_s: f64,
    /// The servers' CPU seconds over the loaded run (`/proc/<pid>/stat`), if read.
    pub(crate) servers_s: Option<f64>,
    /// Busy fraction of all CPUs over the loaded run (`/proc/stat`).
    pub(crate) machine_busy: Option<f64>,
    /// Wall-clock seconds of the loaded run (clients started to all exited).
    pub(crate) wall_s: f64,
    /// How long the servers' and clients' threads waited for a CPU while runnable, and
    /// how many timeslices they ran (servers: over the loaded run; clients: their raw
    /// files, the measured interval); `None` if no timeslice was counted.
    pub(crate) run_queue: Option<RunQueue>,
}

impl CpuUse {
    /// Mean wait for a CPU per timeslice, µs: the direct sign of a CPU-bound run (a few
    /// µs on a machine with CPUs to spare; hundreds when runnable threads queue).
    pub(crate) fn run_wait_us_per_slice(&self) -> Option<f64> {
        self.run_queue
            .filter(|rq| rq.timeslices > 0)
            .map(|rq| rq.wait_ns as f64 / 1000.0 / rq.timeslices as f64)
    }
}

/// The sum of every process's run-queue figures, if all of them could be read.
fn run_queue_sum(servers: &[HostProcess]) -> Option<RunQueue> {
    servers.iter().try_fold(RunQueue::default(), |sum, s| {
        let rq = s.run_queue()?;
        Some(RunQueue {
            wait_ns: sum.wait_ns + rq.wait_ns,
            timeslices: sum.timeslices + rq.timeslices,
        })
    })
}

/// One transport's runs.
#[derive(Debug, Clone)]
pub(crate) struct TransportRun {
    pub(crate) variant: Variant,
    /// The unloaded RTT (host 0 → host 1), or why it could not be measured.
    pub(crate) unloaded: Result<RawPhase, String>,
    /// One per host (empty if the loaded run could not start).
    pub(crate) clients: Vec<ClientRun>,
    /// The qdisc counters over the loaded run.
    pub(crate) ports: PortDelta,
    /// The switch ports' largest backlog during the loaded run.
    pub(crate) peak: super::queues::Peak,
    pub(crate) cpu: CpuUse,
    /// Whatever went wrong (failed clients, servers that died, sampling errors).
    pub(crate) problems: Vec<String>,
}

impl TransportRun {
    fn new(variant: Variant) -> TransportRun {
        TransportRun {
            variant,
            unloaded: Err("not measured".into()),
            clients: Vec::new(),
            ports: PortDelta::default(),
            peak: Default::default(),
            cpu: CpuUse::default(),
            problems: Vec::new(),
        }
    }
}

/// Runs the three transports one after another; `dir` holds the logs and raw files.
/// A transport that fails is reported in its [`TransportRun::problems`] and the next one
/// runs; only an interruption stops the experiment.
pub(crate) fn run(rack: &Rack, plan: &Plan, dir: &Path) -> Result<Vec<TransportRun>, TestbedError> {
    let exe = std::env::current_exe()
        .map_err(|e| TestbedError::io("finding the path of this homa executable", e))?;
    let launcher = Launcher {
        rack,
        plan,
        exe: &exe,
        dir,
    };
    let mut runs = Vec::new();
    for variant in Variant::ALL {
        let mut run = TransportRun::new(variant);
        match launcher.run_variant(variant, &mut run) {
            Ok(()) => {}
            Err(TestbedError::Interrupted) => return Err(TestbedError::Interrupted),
            Err(e) => run.problems.push(e.to_string()),
        }
        runs.push(run);
    }
    Ok(runs)
}

/// What starting a process on a host needs.
struct Launcher<'a> {
    rack: &'a Rack,
    plan: &'a Plan,
    /// This `homa` executable.
    exe: &'a Path,
    /// Logs and raw files.
    dir: &'a Path,
}

impl Launcher<'_> {
    /// One transport: servers, its unloaded RTT, its loaded run.
    fn run_variant(&self, variant: Variant, run: &mut TransportRun) -> Result<(), TestbedError> {
        let (plan, name) = (self.plan, variant.name());
        println!(
            "experiment: {name}: starting a homa server on each of the {} hosts",
            plan.hosts
        );
        let mut servers = self.start_servers(variant)?;

        println!("experiment: {name}: unloaded RTT, host 0 -> host 1");
        let target = self.rack.hosts[1].addr(plan.options.ipv6);
        let raw_path = self.dir.join(format!("{name}-unloaded.raw"));
        let mut client = self.start_client(variant, false, 0, &[target], &raw_path)?;
        run.unloaded = finish_client(&mut client, plan.client_limit(false), &raw_path);
        if let Err(why) = &run.unloaded {
            run.problems.push(format!("unloaded RTT: {why}"));
        }

        println!(
            "experiment: {name}: loaded run, {} s on every host after {:.1} s warm-up (up to {:.0} s drain)",
            plan.duration,
            plan.client_plan.load_warmup.as_secs_f64(),
            plan.client_plan.drain.as_secs_f64()
        );
        self.loaded_run(variant, &mut servers, run)?;

        for (host, server) in servers.iter_mut().enumerate() {
            // (Serving clients took over from the servers, which were stopped.)
            if !plan.one_engine_per_host(variant) && server.cpu_seconds().is_none() {
                run.problems.push(format!(
                    "the homa server on host {host} exited during the run: {}",
                    server.log_tail()
                ));
            }
            server.kill()?;
        }
        Ok(())
    }

    /// Starts `homa server` on every host and waits until each says it is ready.
    fn start_servers(&self, variant: Variant) -> Result<Vec<HostProcess>, TestbedError> {
        let children = self.rack.namespaces.children();
        let mut servers = Vec::with_capacity(self.rack.hosts.len());
        for h in &self.rack.hosts {
            let args = self
                .plan
                .server_args(variant, h.addr(self.plan.options.ipv6));
            servers.push(HostProcess::start(
                &children,
                &h.netns,
                self.exe,
                &args,
                format!("homa server on host {}", h.index),
                self.dir,
                &format!("{}-server-h{}", variant.name(), h.index),
            )?);
        }
        for s in &mut servers {
            s.wait_for_line("homa server:", SERVER_READY)?;
        }
        Ok(servers)
    }

    /// Starts the `homa client` of one phase on `host` against `servers`.
    fn start_client(
        &self,
        variant: Variant,
        loaded: bool,
        host: usize,
        servers: &[IpAddr],
        raw_out: &Path,
    ) -> Result<HostProcess, TestbedError> {
        let phase = if loaded { "loaded" } else { "unloaded" };
        // A serving client is started on a line from its stdin.
        let start = if loaded && self.plan.one_engine_per_host(variant) {
            HostProcess::start_piped
        } else {
            HostProcess::start
        };
        start(
            &self.rack.namespaces.children(),
            &self.rack.hosts[host].netns,
            self.exe,
            &self
                .plan
                .client_args(variant, loaded, host, servers, raw_out),
            format!("homa client ({phase}) on host {host}"),
            self.dir,
            &format!("{}-{phase}-client-h{host}", variant.name()),
        )
    }

    /// The loaded run: every host's client at once, all-to-all; queues sampled, qdisc
    /// counters and CPU read around it.
    fn loaded_run(
        &self,
        variant: Variant,
        servers: &mut [HostProcess],
        run: &mut TransportRun,
    ) -> Result<(), TestbedError> {
        let rack = self.rack;
        let serving = self.plan.one_engine_per_host(variant);
        if serving {
            // Each host's client serves its port itself: the servers give it up.
            for server in servers.iter_mut() {
                server.kill()?;
            }
        }
        let before = rack.port_stats()?;
        let ticks0 = cpu::machine_ticks();
        let servers0: Option<f64> = servers.iter().map(HostProcess::cpu_seconds).sum();
        let servers_rq0 = run_queue_sum(servers);
        let sampler = Sampler::start(rack.switch.clone(), SAMPLE_PERIOD)?;
        let started = Instant::now();
        let mut clients: Vec<(HostProcess, PathBuf)> = Vec::with_capacity(rack.hosts.len());
        for h in &rack.hosts {
            let others: Vec<IpAddr> = rack
                .hosts
                .iter()
                .filter(|o| o.index != h.index)
                .map(|o| o.addr(self.plan.options.ipv6))
                .collect();
            let raw_path = self
                .dir
                .join(format!("{}-loaded-h{}.raw", variant.name(), h.index));
            let client = self.start_client(variant, true, h.index, &others, &raw_path)?;
            clients.push((client, raw_path));
        }
        let limit = self.plan.client_limit(true);
        if serving {
            self.serve_and_load(&mut clients, started + limit, run);
        }
        for (host, (client, raw_path)) in clients.iter_mut().enumerate() {
            let left = limit.saturating_sub(started.elapsed());
            let raw = finish_client(client, left, raw_path);
            if let Err(why) = &raw {
                run.problems.push(format!("loaded run, host {host}: {why}"));
            }
            run.clients.push(ClientRun { host, raw });
        }
        run.cpu.wall_s = started.elapsed().as_secs_f64();
        let servers1: Option<f64> = servers.iter().map(HostProcess::cpu_seconds).sum();
        let servers_rq = servers_rq0
            .zip(run_queue_sum(servers))
            .map(|(a, b)| b.since(a));
        let ticks1 = cpu::machine_ticks();
        match sampler.stop() {
            Ok(peak) => run.peak = peak,
            Err(e) => run
                .problems
                .push(format!("sampling the switch queues: {e}")),
        }
        let after = rack.port_stats()?;
        run.ports = PortDelta::between(&before, &after, &rack.switch);
        run.cpu.clients_s = run
            .clients
            .iter()
            .filter_map(|c| c.raw.as_ref().ok())
            .map(|r| r.cpu_s)
            .sum();
        run.cpu.servers_s = servers0.zip(servers1).map(|(a, b)| b - a);
        let rq = run.clients.iter().filter_map(|c| c.raw.as_ref().ok()).fold(
            servers_rq.unwrap_or_default(),
            |sum, r| RunQueue {
                wait_ns: sum.wait_ns + r.run_wait_us * 1000,
                timeslices: sum.timeslices + r.timeslices,
            },
        );
        run.cpu.run_queue = (rq.timeslices > 0).then_some(rq);
        run.cpu.machine_busy = ticks0.zip(ticks1).and_then(|(a, b)| b.busy_since(&a));
        Ok(())
    }
}

impl Launcher<'_> {
    /// The serving clients' run: once every one of them serves (`ready`), each is told
    /// to start; once every one has written its samples (`done`), or failed, or `until`
    /// passed, their stdins close and they exit. A client that fails to get ready or
    /// done is a problem of the run; the others go on.
    fn serve_and_load(
        &self,
        clients: &mut [(HostProcess, PathBuf)],
        until: Instant,
        run: &mut TransportRun,
    ) {
        let left = || until.saturating_duration_since(Instant::now());
        let mut ok: Vec<bool> = clients
            .iter_mut()
            .map(|(c, _)| record(run, c.wait_for_line("ready", left().min(READY_LIMIT))))
            .collect();
        for ((c, _), ok) in clients.iter_mut().zip(ok.iter_mut()) {
            if *ok {
                *ok = record(run, c.send_line("go"));
            }
        }
        for ((c, _), ok) in clients.iter_mut().zip(&ok) {
            if *ok {
                record(run, c.wait_for_line("done", left()));
            }
        }
        for (c, _) in clients.iter_mut() {
            c.close_stdin();
        }
    }
}

/// How long a serving client may take to bind its port and start serving.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Whether `r` is a success; a failure goes to the run's problems.
fn record<T>(run: &mut TransportRun, r: Result<T, TestbedError>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => {
            run.problems.push(format!("loaded run: {e}"));
            false
        }
    }
}

/// Waits for a client (at most `limit`) and reads its raw samples; the error text says
/// why there are none.
fn finish_client(
    client: &mut HostProcess,
    limit: Duration,
    raw_out: &Path,
) -> Result<RawPhase, String> {
    let status = match client.wait(limit) {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(client
                .failure(format!("did not finish within {limit:?}; killed"))
                .to_string())
        }
        Err(e) => return Err(e.to_string()),
    };
    if !status.success() {
        return Err(client.failure(format!("failed ({status})")).to_string());
    }
    read_raw(raw_out).map_err(|e| e.to_string())
}

/// Reads and parses a client's raw samples.
pub(crate) fn read_raw(path: &Path) -> Result<RawPhase, TestbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| TestbedError::RawSamples {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    RawPhase::parse(&text).map_err(|e| TestbedError::RawSamples {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::budget::PathBudget;

    fn options() -> Options {
        Options {
            workload: crate::bench::spec::parse_workload("w4").unwrap(),
            load: 0.8,
            duration: None,
            seed: 1,
            quick: false,
            clients: 1,
            servers: 1,
            tcp_conns: 1,
            busy_poll_us: 0,
            transport: TransportArg::Udp,
            ipv6: false,
            homa_link_mbps: None,
            homa_set: Vec::new(),
            one_engine_per_host: false,
        }
    }

    fn budget() -> PathBudget {
        PathBudget::new(
            100_000_000,
            Duration::from_micros(60),
            Duration::from_micros(252),
            1416,
            262_144,
        )
    }

    #[test]
    fn each_client_offers_half_the_link_load() {
        let plan = Plan::new(options(), 4, 100_000_000, budget(), 1416);
        assert_eq!(plan.client_load, 0.4);
        assert_eq!(plan.homa_link_mbps, 100);
        // W4 (capped): mean ~61 KB; 0.4 x 100 Mbit/s per host = ~82 RPCs/s, 4 hosts.
        assert!((plan.rpc_rate - 4.0 * 0.4e8 / 8.0 / plan.workload.dist.mean()).abs() < 1e-9);
        assert!((300.0..360.0).contains(&plan.rpc_rate), "{}", plan.rpc_rate);
    }

    #[test]
    fn the_default_duration_measures_enough_short_messages() {
        let plan = Plan::new(options(), 4, 100_000_000, budget(), 1416);
        assert_eq!(plan.duration_choice, DurationChoice::ForShortMessages);
        assert!(
            plan.expected_short() >= MIN_SHORT_MESSAGES,
            "{}",
            plan.expected_short()
        );
        assert_eq!(plan.duration % 10.0, 0.0);
        // Not much longer than needed: 10 s less would not do.
        assert!(
            plan.expected_short() * (plan.duration - 10.0) / plan.duration < MIN_SHORT_MESSAGES
        );

        let quick = Plan::new(
            Options {
                quick: true,
                ..options()
            },
            3,
            100_000_000,
            budget(),
            1416,
        );
        assert_eq!(
            (quick.duration, quick.duration_choice),
            (QUICK_SECONDS, DurationChoice::Quick)
        );
        let given = Plan::new(
            Options {
                duration: Some(7.5),
                ..options()
            },
            3,
            100_000_000,
            budget(),
            1416,
        );
        assert_eq!(
            (given.duration, given.duration_choice),
            (7.5, DurationChoice::Given)
        );
        let tiny = Plan::new(
            Options {
                load: 0.001,
                ..options()
            },
            2,
            10_000_000,
            budget(),
            1416,
        );
        assert_eq!(tiny.duration, MAX_DEFAULT_SECONDS);
    }

    #[test]
    fn servers_and_clients_get_the_budget_and_the_variant() {
        let plan = Plan::new(options(), 3, 100_000_000, budget(), 1416);
        let server = plan.server_args(Variant::HomaOnePriority, "198.18.2.2".parse().unwrap());
        let line = server.join(" ");
        assert!(
            line.starts_with("server --bind 198.18.2.2 --port 4000"),
            "{line}"
        );
        let b = budget();
        for needle in [
            "--homa-priorities 1".to_string(),
            format!("--homa-unsched-bytes {}", b.unsched_bytes),
            format!("--homa-window {}", b.window),
            "--homa-link-mbps 100".into(),
            "--homa-mtu 1500".into(),
            "--transport udp".into(),
        ] {
            assert!(line.contains(&needle), "{needle} not in {line}");
        }
        let servers: Vec<IpAddr> =
            vec!["198.18.0.2".parse().unwrap(), "198.18.1.2".parse().unwrap()];
        let client = plan
            .client_args(Variant::Tcp, true, 2, &servers, Path::new("/tmp/x.raw"))
            .join(" ");
        for needle in [
            "client --server 198.18.0.2,198.18.1.2",
            "--load 0.4",
            "--link-gbps 0.1",
            "--phase loaded --kind tcp --raw-out /tmp/x.raw",
            "--homa-priorities 8",
            "--workload w4",
        ] {
            assert!(client.contains(needle), "{needle} not in {client}");
        }
        assert!(
            client.contains(&format!("--seed {}", host_seed(1, 2))),
            "{client}"
        );
        assert!(!client.contains("--quick") && !client.split(' ').any(|a| a == "--serve"));
        // One engine per host: Homa's loaded clients serve, nothing else does.
        let one = Plan::new(
            Options {
                one_engine_per_host: true,
                ..options()
            },
            3,
            100_000_000,
            budget(),
            1416,
        );
        let raw = Path::new("/tmp/x.raw");
        for (variant, loaded, serves) in [
            (Variant::Homa, true, true),
            (Variant::HomaOnePriority, true, true),
            (Variant::Homa, false, false),
            (Variant::Tcp, true, false),
        ] {
            let args = one.client_args(variant, loaded, 0, &servers, raw);
            assert_eq!(
                args.iter().any(|a| a == "--serve"),
                serves,
                "{variant:?} loaded={loaded}"
            );
            assert_eq!(one.one_engine_per_host(variant), variant != Variant::Tcp);
        }
        let timers =
            "--homa-set resend_ticks=47 --homa-set resend_interval=47 --homa-set timeout_ticks=940";
        assert!(client.contains(timers) && line.contains(timers), "{line}");
        let set = Plan::new(
            Options {
                homa_set: vec![("resend_ticks", 50)],
                ..options()
            },
            3,
            100_000_000,
            budget(),
            1416,
        );
        let line = set.server_args(Variant::Homa, servers[0]).join(" ");
        assert!(line.ends_with("--homa-set resend_ticks=50"), "{line}");
        assert_ne!(host_seed(1, 0), host_seed(1, 1));
        assert_eq!(host_seed(7, 0), 7);
    }
}

//! `homa sim`: the project's engine in a simulated datacenter (the Homa paper's
//! topology and workloads); see `homa_sim::datacenter` for the model.
//!
//! Settings come from defaults, then a config file (`--config FILE`, `key = value`
//! lines with the long flag names, `_` for `-`), then the flags given; each run is one
//! (workload, load) pair. Output: a table per run on stdout (stderr when `--json -`),
//! and optionally JSON, CSV and SVG plots.

mod output;

use std::path::PathBuf;

use homa_eval::workload::Workload;
use homa_sim::datacenter::{
    max_sustained_load, parse_load, run as run_one, DcConfig, DcResult, WorkloadChoice, SWEEP_LOADS,
};

const EXAMPLES: &str = "\
Examples:
  homa sim                                   W4 at 80 % load on the paper topology (144 hosts), 100 ms window
  homa sim -w all --plot w80.svg --json w80.json --csv w80.csv
                                             W1-W5 at 80 % load: table, JSON, CSV, plots (w80.svg = P99, w80_p50.svg = P50)
  homa sim -w w1,w4 --sweep                  loads 10 %..90 %: the highest load each workload sustains
  homa sim --racks 2 --hosts-per-rack 8 -w w3 -l 50% --duration 5ms --seed 7
  homa sim --config dc.conf --buffer 500K --engine max_overcommit=4 --deterministic --json -

Config file: one `key = value` per line, keys as the long flags with `_` for `-`
(e.g. `hosts_per_rack = 16`, `switch_delay = 250ns`, `workload = w1,w4`, `load = 80%`,
`buffer = unlimited`, `engine = max_overcommit=4`); `#` starts a comment. Flags given on
the command line override the file. Durations take a unit (ns, us, ms, s); byte counts
may end in K, M, G, KiB, MiB, GiB.";

/// Options of `homa sim`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct SimArgs {
    /// Config file of `key = value` lines (see below); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Workloads: w1..w5, `all`, or fixed:BYTES; comma-separated [default: w4].
    #[arg(short, long, value_name = "LIST")]
    workload: Option<String>,
    /// Offered loads per host (payload / host link rate), as 0.8 or 80%; comma-separated [default: 0.8].
    #[arg(short, long, value_name = "LIST")]
    load: Option<String>,
    /// Run loads 10 %..90 % (or the --load list) per workload and report the highest
    /// sustained load; stops a workload at its first unsustained load.
    #[arg(long)]
    sweep: bool,
    /// With --sweep, run every load even after one is not sustained.
    #[arg(long)]
    sweep_all: bool,
    /// Measurement window, simulated [default: per workload: w1, w2 5ms; w3 50ms; w4 100ms; w5 200ms].
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// Warm-up before the window, excluded from statistics [default: the duration].
    #[arg(long, value_name = "DURATION")]
    warmup: Option<String>,
    /// Longest wait after the window for its messages to complete (arrivals go on) [default: duration].
    #[arg(long, value_name = "DURATION")]
    drain_limit: Option<String>,
    /// Then stop arrivals and run until every message has completed.
    #[arg(long)]
    drain_all: bool,
    /// Seed of every random choice [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Total hosts: sets --hosts-per-rack to HOSTS / racks (must divide evenly).
    #[arg(long)]
    hosts: Option<usize>,
    /// Racks (top-of-rack switches) [default: 9].
    #[arg(long)]
    racks: Option<usize>,
    /// Hosts per rack [default: 16].
    #[arg(long)]
    hosts_per_rack: Option<usize>,
    /// Aggregation switches [default: 4].
    #[arg(long)]
    aggregation: Option<usize>,
    /// Host link rate, Gbit/s [default: 10].
    #[arg(long, value_name = "GBPS")]
    host_gbps: Option<f64>,
    /// ToR-aggregation link rate, Gbit/s [default: 40].
    #[arg(long, value_name = "GBPS")]
    uplink_gbps: Option<f64>,
    /// Propagation latency of every link [default: 0ns].
    #[arg(long, value_name = "DURATION")]
    link_latency: Option<String>,
    /// Store-and-forward switch delay [default: 250ns].
    #[arg(long, value_name = "DURATION")]
    switch_delay: Option<String>,
    /// Host software delay on transmit [default: 750ns].
    #[arg(long, value_name = "DURATION")]
    host_tx_delay: Option<String>,
    /// Host software delay on receive [default: 750ns].
    #[arg(long, value_name = "DURATION")]
    host_rx_delay: Option<String>,
    /// Switch egress buffer per port: `unlimited` or bytes, e.g. 500K [default: unlimited].
    #[arg(long, value_name = "BYTES")]
    buffer: Option<String>,
    /// Path choice between racks: `spray` (per packet) or `flow` (per host pair) [default: spray].
    #[arg(long)]
    ecmp: Option<String>,
    /// IP MTU, bytes [default: 1500].
    #[arg(long)]
    mtu: Option<usize>,
    /// Priority levels, 1..=8 [default: 8].
    #[arg(long)]
    priorities: Option<u8>,
    /// RTT bytes: the engines' unscheduled bytes and grant window (rounded to whole packets) [default: 10000].
    #[arg(long)]
    rtt_bytes: Option<u32>,
    /// Unscheduled cutoffs: `auto` (from the workload), `kernel`, or 8 comma-separated lengths [default: auto].
    #[arg(long)]
    cutoffs: Option<String>,
    /// An engine tunable NAME=VALUE (kernel sysctl names, e.g. max_overcommit=4); repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    engine: Vec<String>,
    /// Use the distributions capped at 1,000,000 bytes (wN_cp_node) instead of the raw ones.
    #[arg(long)]
    capped: bool,
    /// Messages over 1,000,000 bytes: `split` into consecutive Homa messages, or `cap` [default: split].
    #[arg(long)]
    large: Option<String>,
    /// What the load counts: `payload` or `wire` (payload + headers + framing) [default: payload].
    #[arg(long)]
    load_basis: Option<String>,
    /// Receive region per host (no real memory behind it), at most 4GiB [default: 1GiB].
    #[arg(long, value_name = "BYTES")]
    pool: Option<String>,
    /// Length of the response each message gets [default: 1].
    #[arg(long)]
    response_bytes: Option<u32>,
    /// Write the results as JSON to PATH (`-` for stdout; the tables then go to stderr).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write per-bucket results as CSV to PATH.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Draw P99 slowdown against cumulative message fraction to PATH (SVG), one line per
    /// run; P50 goes to PATH with `_p50` before the extension. With several workloads
    /// and several loads (a sweep), one plot per workload: PATH with `_w1`, `_w1_p50`, ….
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// Leave wall-clock fields out of the JSON (null), so the same seed gives the same bytes.
    #[arg(long)]
    deterministic: bool,
    /// Print only the summary, not each run's table.
    #[arg(short, long)]
    quiet: bool,
}

/// What to run and where to write, beyond the model's settings.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) workloads: Vec<WorkloadChoice>,
    pub(crate) loads: Vec<f64>,
    pub(crate) loads_given: bool,
    pub(crate) sweep: bool,
    pub(crate) sweep_all: bool,
    pub(crate) json: Option<PathBuf>,
    pub(crate) csv: Option<PathBuf>,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) deterministic: bool,
    pub(crate) quiet: bool,
    hosts: Option<usize>,
}

fn parse_list<T>(v: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items: Result<Vec<T>, String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(one)
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err("empty list".into());
    }
    Ok(items)
}

fn parse_workloads(v: &str) -> Result<Vec<WorkloadChoice>, String> {
    if v.trim() == "all" {
        return Ok(Workload::ALL.map(WorkloadChoice::Named).to_vec());
    }
    parse_list(v, |s| s.parse())
}

fn parse_flag(v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

impl Plan {
    /// Handles the keys that are not model settings; `Ok(false)` for the others.
    fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "workload" => self.workloads = parse_workloads(v)?,
            "load" => {
                self.loads = parse_list(v, parse_load)?;
                self.loads_given = true;
            }
            "sweep" => self.sweep = parse_flag(v)?,
            "sweep_all" => self.sweep_all = parse_flag(v)?,
            "json" => self.json = Some(PathBuf::from(v)),
            "csv" => self.csv = Some(PathBuf::from(v)),
            "plot" => self.plot = Some(PathBuf::from(v)),
            "deterministic" => self.deterministic = parse_flag(v)?,
            "quiet" => self.quiet = parse_flag(v)?,
            "hosts" => {
                self.hosts = Some(
                    v.parse()
                        .map_err(|_| format!("{v:?} is not a number of hosts"))?,
                )
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The flags given, as `(key, value)` settings in the config file's terms.
fn flag_settings(a: &SimArgs) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut put = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k, v));
        }
    };
    put("workload", a.workload.clone());
    put("load", a.load.clone());
    put("sweep", a.sweep.then(|| "true".into()));
    put("sweep_all", a.sweep_all.then(|| "true".into()));
    put("duration", a.duration.clone());
    put("warmup", a.warmup.clone());
    put("drain_limit", a.drain_limit.clone());
    put("drain_all", a.drain_all.then(|| "true".into()));
    put("seed", a.seed.map(|v| v.to_string()));
    put("racks", a.racks.map(|v| v.to_string()));
    put("hosts_per_rack", a.hosts_per_rack.map(|v| v.to_string()));
    put("hosts", a.hosts.map(|v| v.to_string()));
    put("aggregation", a.aggregation.map(|v| v.to_string()));
    put("host_gbps", a.host_gbps.map(|v| v.to_string()));
    put("uplink_gbps", a.uplink_gbps.map(|v| v.to_string()));
    put("link_latency", a.link_latency.clone());
    put("switch_delay", a.switch_delay.clone());
    put("host_tx_delay", a.host_tx_delay.clone());
    put("host_rx_delay", a.host_rx_delay.clone());
    put("buffer", a.buffer.clone());
    put("ecmp", a.ecmp.clone());
    put("mtu", a.mtu.map(|v| v.to_string()));
    put("priorities", a.priorities.map(|v| v.to_string()));
    put("rtt_bytes", a.rtt_bytes.map(|v| v.to_string()));
    put("cutoffs", a.cutoffs.clone());
    put("capped", a.capped.then(|| "true".into()));
    put("large", a.large.clone());
    put("load_basis", a.load_basis.clone());
    put("pool", a.pool.clone());
    put("response_bytes", a.response_bytes.map(|v| v.to_string()));
    put("json", a.json.as_ref().map(|p| p.display().to_string()));
    put("csv", a.csv.as_ref().map(|p| p.display().to_string()));
    put("plot", a.plot.as_ref().map(|p| p.display().to_string()));
    put("deterministic", a.deterministic.then(|| "true".into()));
    put("quiet", a.quiet.then(|| "true".into()));
    for e in &a.engine {
        out.push(("engine", e.clone()));
    }
    out
}

/// Builds the model settings and the plan from defaults, the config file and the flags.
pub(crate) fn settings(args: &SimArgs) -> Result<(DcConfig, Plan), String> {
    let mut cfg = DcConfig::default();
    let mut plan = Plan {
        workloads: vec![WorkloadChoice::Named(Workload::W4)],
        loads: vec![0.8],
        ..Plan::default()
    };
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        // Engine overrides accumulate: the file's first, then the flags' (applied in order).
        cfg.apply_file(&text, |k, v| plan.set(k, v))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for (k, v) in flag_settings(args) {
        if !plan
            .set(k, &v)
            .map_err(|e| format!("--{}: {e}", k.replace('_', "-")))?
        {
            cfg.set(k, &v)
                .map_err(|e| format!("--{}: {}", k.replace('_', "-"), e.reason))?;
        }
    }
    if let Some(h) = plan.hosts {
        if h == 0 || h % cfg.racks != 0 {
            return Err(format!(
                "--hosts {h} is not a positive multiple of --racks {}",
                cfg.racks
            ));
        }
        cfg.hosts_per_rack = h / cfg.racks;
    }
    cfg.validate()?;
    Ok((cfg, plan))
}

/// One run's outcome, as the summary needs it.
pub(crate) struct RunRecord {
    pub(crate) result: DcResult,
}

pub(crate) fn run(args: SimArgs) -> Result<(), String> {
    let (base, plan) = settings(&args)?;
    let to_stderr = plan.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let say = |s: &str| {
        if to_stderr {
            eprint!("{s}");
        } else {
            print!("{s}");
        }
    };
    let loads: Vec<f64> = if plan.sweep && !plan.loads_given {
        SWEEP_LOADS.to_vec()
    } else {
        plan.loads.clone()
    };
    let mut records: Vec<RunRecord> = Vec::new();
    let mut sweeps: Vec<(WorkloadChoice, Vec<(f64, bool)>)> = Vec::new();
    for &w in &plan.workloads {
        let mut verdicts = Vec::new();
        let mut sorted = loads.clone();
        if plan.sweep {
            sorted.sort_by(f64::total_cmp);
        }
        for &load in &sorted {
            let mut cfg = base.clone();
            cfg.workload = w;
            cfg.load = load;
            let result = run_one(&cfg).map_err(|e| format!("{w} at load {load}: {e}"))?;
            if plan.quiet {
                say(&output::one_line(&result));
            } else {
                say(&result.table());
                say("\n");
            }
            let ok = result.sustain.sustained;
            verdicts.push((load, ok));
            records.push(RunRecord { result });
            if plan.sweep && !ok && !plan.sweep_all {
                break;
            }
        }
        if plan.sweep {
            sweeps.push((w, verdicts));
        }
    }
    say(&output::summary(&records));
    if plan.sweep {
        say(&output::sweep_summary(&sweeps, max_sustained_load));
    }
    output::write_outputs(&plan, &records, &sweeps)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<(DcConfig, Plan), String> {
        let cli = Cli::try_parse_from(std::iter::once("homa-sim").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        settings(&cli.sim)
    }

    #[test]
    fn defaults_are_the_paper_setup() {
        let (cfg, plan) = parse(&[]).unwrap();
        assert_eq!(cfg, DcConfig::default());
        assert_eq!(plan.workloads, vec![WorkloadChoice::Named(Workload::W4)]);
        assert_eq!(plan.loads, vec![0.8]);
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("homa-sim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dc.conf");
        std::fs::write(
            &path,
            "# test\nworkload = w1,w2\nload = 50%\nracks = 3\nswitch_delay = 1us\nengine = max_overcommit=4\nsweep = true\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let (cfg, plan) = parse(&[
            "--config",
            p,
            "--racks",
            "2",
            "--engine",
            "grant_fifo_fraction=0",
        ])
        .unwrap();
        assert_eq!(cfg.racks, 2);
        assert_eq!(cfg.switch_delay.as_nanos(), 1000);
        assert_eq!(plan.loads, vec![0.5]);
        assert!(plan.sweep);
        assert_eq!(plan.workloads.len(), 2);
        assert_eq!(
            cfg.engine,
            vec![
                ("max_overcommit".to_string(), 4),
                ("grant_fifo_fraction".to_string(), 0)
            ]
        );
        std::fs::write(&path, "racks = x\n").unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(e.contains("line 1") && e.contains("racks"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flags_name_themselves() {
        let e = parse(&["--switch-delay", "5"]).unwrap_err();
        assert!(e.starts_with("--switch-delay"), "{e}");
        let e = parse(&["--hosts", "100"]).unwrap_err();
        assert!(e.contains("--hosts"), "{e}");
        let (cfg, _) = parse(&["--hosts", "18", "--racks", "3"]).unwrap();
        assert_eq!(cfg.hosts_per_rack, 6);
        let (_, plan) = parse(&["-w", "all", "-l", "10%,0.2"]).unwrap();
        assert_eq!(plan.workloads.len(), 5);
        assert_eq!(plan.loads, vec![0.1, 0.2]);
    }
}

//! `homa testbed`: an emulated rack built from network namespaces on this machine — host
//! namespaces joined by veth pairs to one switch namespace, every egress shaped to the
//! link rate with eight strict-priority queues — checked before use (bulk rate,
//! priority order), then torn down. See `docs/testbed.md` for the layout and decisions.
//!
//! The experiment itself (Homa and TCP runs over the rack) is not built yet.

mod budget;
mod check;
mod error;
mod netns;
mod rack;
mod shaping;
mod traffic;

use std::io::{Read, Write};
use std::time::Duration;

use budget::{serialisation_rtt, PathBudget};
use check::{micros, BulkResult, PriorityResult, Verdict, ECHO_PAYLOAD, FLOOD_OVERLOAD};
pub(crate) use error::TestbedError;
use netns::{sweep_stale, Namespaces};
use rack::{Rack, Stage, HOST_DEV, MTU};
use shaping::{PortShaping, CONTROL_CLASS, LEVELS};
use traffic::frame_overhead;

const EXAMPLES: &str = "\
Examples:
  homa testbed                               4 hosts at 100 Mbit/s, 256 KiB per class: build, check, tear down
  homa testbed --hosts 3 --link-mbps 200 --buffer 128K
  homa testbed --hosts 2 --hold              keep the rack until stdin closes or Ctrl-C;
                                             run programs in it with `ip netns exec homa-tb-PID-h0 ...`

Needs root. Namespaces are named homa-tb-<pid>-sw and homa-tb-<pid>-h<i>; a run deletes
only namespaces its own marker (/run/homa-testbed/<pid>) lists: its own at exit, on
Ctrl-C/SIGTERM/SIGHUP and after a failure, and those of earlier runs that died.";

/// Options of `homa testbed`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct TestbedArgs {
    /// Host namespaces in the rack (2..=16).
    #[arg(long, default_value_t = 4, value_name = "N")]
    hosts: u32,
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
    /// After the checks, keep the rack until stdin reaches end of file (Ctrl-D) or a
    /// signal (Ctrl-C) arrives, then tear it down.
    #[arg(long)]
    hold: bool,
    /// Fail on purpose after a build stage (tests the teardown).
    #[arg(long, hide = true, value_enum, value_name = "STAGE")]
    inject_failure: Option<Stage>,
}

/// The allowed number of hosts.
const HOSTS: std::ops::RangeInclusive<u32> = 2..=16;

/// The allowed link rates, Mbit/s.
const LINK_MBPS: std::ops::RangeInclusive<u32> = 10..=10_000;

/// The allowed buffer per class: two full frames to 64 MiB.
const BUFFER_BYTES: std::ops::RangeInclusive<u64> = 3028..=64 << 20;

/// The allowed bulk-check lengths, seconds.
const BULK_SECONDS: std::ops::RangeInclusive<f64> = 0.2..=10.0;

/// The DATA payload of one full Homa packet at MTU 1500 over raw IPv4 (PROTOCOL.md's
/// 1424-byte segments): the unit RTT-bytes are rounded up to.
const SEGMENT_BYTES: u64 = 1424;

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
}

impl Settings {
    /// Checks every option's range.
    pub(crate) fn from_args(args: &TestbedArgs) -> Result<Settings, TestbedError> {
        let range = |r: &std::ops::RangeInclusive<u32>| format!("{}..={}", r.start(), r.end());
        if !HOSTS.contains(&args.hosts) {
            return Err(TestbedError::option("--hosts", args.hosts, range(&HOSTS)));
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
        if !BULK_SECONDS.contains(&args.bulk_seconds) {
            return Err(TestbedError::option(
                "--bulk-seconds",
                args.bulk_seconds,
                format!("{}..={}", BULK_SECONDS.start(), BULK_SECONDS.end()),
            ));
        }
        Ok(Settings {
            hosts: args.hosts as usize,
            shaping: PortShaping {
                link_bps: u64::from(args.link_mbps) * 1_000_000,
                buffer_bytes: buffer,
            },
            bulk: Duration::from_secs_f64(args.bulk_seconds),
            skip_checks: args.skip_checks,
            hold: args.hold,
            inject: args.inject_failure,
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

    let mut failure = None;
    if settings.skip_checks {
        println!("checks: skipped (--skip-checks)");
    } else {
        failure = run_checks(&rack, &settings)?;
    }
    println!("experiment (Homa and TCP runs over the testbed): not built yet");

    if settings.hold && failure.is_none() {
        println!("holding the rack: close stdin (Ctrl-D) or press Ctrl-C to tear it down");
        std::io::stdout().flush().ok();
        let mut sink = Vec::new();
        std::io::stdin()
            .read_to_end(&mut sink)
            .map_err(|e| TestbedError::io("reading stdin while holding", e))?;
    }

    let created = rack.namespaces.names().len();
    let errors = rack.namespaces.teardown();
    let left = rack.namespaces.names().len();
    println!(
        "teardown: removed {} of {created} namespaces",
        created - left
    );
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

/// Runs both checks and prints them; returns the first failed check as an error value.
fn run_checks(rack: &Rack, settings: &Settings) -> Result<Option<TestbedError>, TestbedError> {
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

    print_budget(rack, &prio);
    print_port_table(rack)?;
    Ok(failure)
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

fn print_budget(rack: &Rack, prio: &PriorityResult) {
    let link = rack.shaping.link_bps;
    let Some(measured) = prio.unloaded_high.quantile(0.5) else {
        println!("RTT-bytes: no unloaded RTT was measured");
        return;
    };
    let data_frame = prio.probe_payload + frame_overhead(false);
    let reply_frame = ECHO_PAYLOAD + frame_overhead(false);
    let serial = serialisation_rtt(link, 2, data_frame, reply_frame);
    let b = PathBudget::new(link, measured, serial, SEGMENT_BYTES);
    println!(
        "RTT-bytes per host pair: (unloaded probe RTT {} + serialisation {} of a {data_frame}-byte frame and a \
         {reply_frame}-byte reply over 2 links each way) = {} x {} Mbit/s = {} bytes -> unsched_bytes = window = {} \
         ({} x {SEGMENT_BYTES}-byte segments)",
        micros(measured),
        micros(serial),
        micros(b.rtt),
        link / 1_000_000,
        b.rtt_bytes,
        b.unsched_bytes,
        b.unsched_bytes / SEGMENT_BYTES
    );
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

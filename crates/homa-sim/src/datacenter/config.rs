//! The settings of a datacenter run, their defaults, and `key = value` parsing.

use core::fmt;
use core::time::Duration;

use homa_eval::workload::{Distribution, Workload};
use homa_proto::config::DEFAULT_UNSCHED_CUTOFFS;
use homa_proto::wire::{MAX_MESSAGE_LENGTH, MAX_PRIORITIES};

use crate::Ecmp;

/// Which message lengths a run draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadChoice {
    /// One of the papers' workloads W1–W5.
    Named(Workload),
    /// Every message is this many bytes (for tests and calibration).
    Fixed(u32),
}

impl fmt::Display for WorkloadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadChoice::Named(w) => write!(f, "{w}"),
            WorkloadChoice::Fixed(n) => write!(f, "fixed:{n}"),
        }
    }
}

impl core::str::FromStr for WorkloadChoice {
    type Err = String;
    /// `w1` … `w5` or `fixed:BYTES`.
    fn from_str(s: &str) -> Result<WorkloadChoice, String> {
        let s = s.trim();
        if let Some(n) = s.strip_prefix("fixed:") {
            return match parse_bytes(n) {
                Ok(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(WorkloadChoice::Fixed(n as u32)),
                _ => Err(format!("bad fixed message length {n:?}")),
            };
        }
        s.parse::<Workload>()
            .map(WorkloadChoice::Named)
            .map_err(|e| format!("{e} (or fixed:BYTES)"))
    }
}

/// What to do with sampled messages longer than Homa's 1,000,000-byte limit
/// ([`MAX_MESSAGE_LENGTH`]; the raw W2–W5 distributions reach 3.5–29.4 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargeMessages {
    /// Send the message as consecutive Homa messages ("pieces") of at most 1,000,000
    /// bytes to the same destination, each issued when the previous one has been
    /// delivered (its 1-byte response has come back); the message completes when its
    /// last piece is received. Offered bytes and the workload are unchanged; the cost is
    /// one round trip per extra piece (about 1 % of a piece's transmission time) and
    /// receivers rank a piece, not the whole message, by its remaining bytes.
    Split,
    /// Cap the length at 1,000,000 bytes (the probability mass above moves to
    /// 1,000,000; the report counts the capped messages). Changes the workload.
    Cap,
}

impl fmt::Display for LargeMessages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LargeMessages::Split => "split",
            LargeMessages::Cap => "cap",
        })
    }
}

/// What the offered load counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBasis {
    /// Message payload only (BENCHMARKING.md's definition).
    Payload,
    /// Every byte the messages' DATA packets put on the host link: payload, Homa DATA
    /// headers and per-packet IP/Ethernet overhead (for workloads of tiny messages, where
    /// headers dominate: W1's 80 % payload load is about 130 % of the link).
    Wire,
}

impl fmt::Display for LoadBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadBasis::Payload => "payload",
            LoadBasis::Wire => "wire",
        })
    }
}

/// The receivers' unscheduled priority cutoffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoffs {
    /// Computed from the workload as the Homa paper does: the number of unscheduled
    /// levels is the share of unscheduled bytes times the number of levels (rounded, at
    /// least 1, leaving at least one scheduled level), and the cutoffs split the
    /// unscheduled bytes evenly among those levels, shortest messages highest.
    Auto,
    /// The Linux module's defaults, `[0, 0, 0, 0, 1000000, 15000, 2800, 200]`.
    Kernel,
    /// An explicit table, index 0 first (as the kernel's `unsched_cutoffs` sysctl).
    Table([u32; MAX_PRIORITIES]),
}

impl fmt::Display for Cutoffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cutoffs::Auto => f.write_str("auto"),
            Cutoffs::Kernel => f.write_str("kernel"),
            Cutoffs::Table(t) => {
                let v: Vec<String> = t.iter().map(u32::to_string).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// Every setting of a datacenter run. [`Default`] is the Homa paper's configuration
/// (see the [module docs](super) for the values and why).
///
/// Every field can also be set by name with [`DcConfig::set`], which `homa sim` uses
/// for both its flags and its config file; [`DcConfig::KEYS`] lists the names.
///
/// ```
/// use homa_sim::datacenter::DcConfig;
/// let mut c = DcConfig::default();
/// c.set("load", "0.5").unwrap();
/// c.set("switch_delay", "300ns").unwrap();
/// c.set("buffer", "unlimited").unwrap();
/// assert_eq!(c.load, 0.5);
/// assert_eq!(c.switch_delay.as_nanos(), 300);
/// assert!(c.set("racks", "0").is_err());
/// assert!(c.set("nonsense", "1").is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DcConfig {
    /// Racks (top-of-rack switches). Default 9.
    pub racks: usize,
    /// Hosts per rack. Default 16.
    pub hosts_per_rack: usize,
    /// Aggregation switches; every ToR has one uplink to each. Default 4.
    pub aggregation: usize,
    /// Host ↔ ToR link rate, bit/s. Default 10 Gbit/s.
    pub host_link_bps: u64,
    /// ToR ↔ aggregation link rate, bit/s. Default 40 Gbit/s.
    pub uplink_bps: u64,
    /// Propagation latency of every link. Default 0.
    pub link_latency: Duration,
    /// Store-and-forward switch delay, after a packet has fully arrived. Default 250 ns.
    pub switch_delay: Duration,
    /// Host software delay from the engine emitting a packet to its NIC queue.
    /// Default 750 ns.
    pub host_tx_delay: Duration,
    /// Host software delay from a packet's last bit arriving to the engine seeing it.
    /// Default 750 ns.
    pub host_rx_delay: Duration,
    /// Buffer of every switch egress port, bytes (`None`: unlimited, the default). Host
    /// NIC queues are always unlimited (the engine's pacer keeps them short).
    pub switch_buffer: Option<u64>,
    /// Equal-cost path choice. Default per-packet spraying.
    pub ecmp: Ecmp,
    /// IP MTU; the largest Homa packet is `mtu - 20`. Default 1500.
    pub mtu: usize,
    /// Priority levels the engines use (`num_priorities`). Default 8.
    pub priorities: u8,
    /// RTT bytes: the engines' `unsched_bytes` and grant `window` are this, rounded to a
    /// whole number of full packets (10,000 → 7 × 1424 = 9,968). Default 10,000.
    pub rtt_bytes: u32,
    /// Unscheduled priority cutoffs. Default [`Cutoffs::Auto`].
    pub cutoffs: Cutoffs,
    /// Further engine tunables by their kernel names (`max_overcommit`,
    /// `grant_fifo_fraction`, …), applied last.
    pub engine: Vec<(String, u64)>,
    /// The message-length distribution. Default W4.
    pub workload: WorkloadChoice,
    /// Use the distributions capped at 1,000,000 bytes (`wN_cp_node.txt`) instead of the
    /// raw ones. Default false (raw).
    pub capped: bool,
    /// What to do with raw-distribution messages above 1,000,000 bytes. Default split.
    pub large: LargeMessages,
    /// Offered load per host as a fraction of the host link rate. Default 0.8.
    pub load: f64,
    /// What the load counts. Default payload.
    pub load_basis: LoadBasis,
    /// Length of the measurement window (after the warm-up). `None`: the workload's
    /// default ([`DcConfig::default_duration`]).
    pub duration: Option<Duration>,
    /// Warm-up before the measurement window. `None`: as long as the window (see
    /// [`DcConfig::effective_warmup`]).
    pub warmup: Option<Duration>,
    /// After the window, arrivals go on until every message created in it has completed,
    /// for at most this long. `None`: the duration.
    pub drain_limit: Option<Duration>,
    /// After that, stop arrivals and run until the network is idle (every message
    /// completes; used by the tests to check conservation). Default false.
    pub drain_all: bool,
    /// Seed of every random choice. Default 1.
    pub seed: u64,
    /// Receive region per host (a [`DiscardRegion`](homa_proto::region::DiscardRegion):
    /// no memory behind it), bytes; at most 4 GiB. Default 1 GiB.
    pub pool_bytes: usize,
    /// Length of the response to each message (the engines run RPCs; see the module
    /// docs). Default 1.
    pub response_bytes: u32,
}

impl Default for DcConfig {
    fn default() -> DcConfig {
        DcConfig {
            racks: 9,
            hosts_per_rack: 16,
            aggregation: 4,
            host_link_bps: 10_000_000_000,
            uplink_bps: 40_000_000_000,
            link_latency: Duration::ZERO,
            switch_delay: Duration::from_nanos(250),
            host_tx_delay: Duration::from_nanos(750),
            host_rx_delay: Duration::from_nanos(750),
            switch_buffer: None,
            ecmp: Ecmp::Spray,
            mtu: 1500,
            priorities: 8,
            rtt_bytes: 10_000,
            cutoffs: Cutoffs::Auto,
            engine: Vec::new(),
            workload: WorkloadChoice::Named(Workload::W4),
            capped: false,
            large: LargeMessages::Split,
            load: 0.8,
            load_basis: LoadBasis::Payload,
            duration: None,
            warmup: None,
            drain_limit: None,
            drain_all: false,
            seed: 1,
            pool_bytes: 1 << 30,
            response_bytes: 1,
        }
    }
}

/// A setting that could not be applied: which key, what value, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The key.
    pub key: String,
    /// The value given.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}: {}", self.key, self.value, self.reason)
    }
}

impl std::error::Error for SettingError {}

/// Parses a duration: a number with a unit `ns`, `us` (or `µs`), `ms` or `s`.
///
/// ```
/// use homa_sim::datacenter::parse_duration;
/// assert_eq!(parse_duration("1.5us").unwrap().as_nanos(), 1500);
/// assert_eq!(parse_duration("100ms").unwrap().as_millis(), 100);
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else {
        return Err(format!("{s:?} needs a unit: ns, us, ms or s"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{num:?} is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a non-negative duration"));
    }
    Ok(Duration::from_nanos((v * scale).round() as u64))
}

/// Parses a byte count: an integer with an optional decimal suffix `K`, `M`, `G` or
/// binary `KiB`, `MiB`, `GiB`.
///
/// ```
/// use homa_sim::datacenter::parse_bytes;
/// assert_eq!(parse_bytes("1500").unwrap(), 1500);
/// assert_eq!(parse_bytes("10K").unwrap(), 10_000);
/// assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
    .unwrap_or((s, 1));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a byte count"));
    }
    Ok((v * scale as f64).round() as u64)
}

/// Parses a load: a fraction (`0.8`) or a percentage (`80%`).
///
/// ```
/// use homa_sim::datacenter::parse_load;
/// assert_eq!(parse_load("80%").unwrap(), 0.8);
/// assert_eq!(parse_load("0.5").unwrap(), 0.5);
/// assert!(parse_load("0").is_err());
/// ```
pub fn parse_load(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a load (0.8 or 80%)"))?;
    if !(v > 0.0 && v <= 2.0) {
        return Err(format!("load {v} is outside (0, 2]"));
    }
    Ok(v)
}

fn parse_gbps(s: &str) -> Result<u64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate in Gbit/s"))?;
    if !(v > 0.0 && v <= 10_000.0) {
        return Err(format!("{v} Gbit/s is out of range"));
    }
    Ok((v * 1e9).round() as u64)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an integer"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}..={max}"));
    }
    Ok(v)
}

impl DcConfig {
    /// The names [`set`](DcConfig::set) accepts, with a description and value format
    /// each.
    pub const KEYS: &'static [(&'static str, &'static str)] = &[
        ("racks", "racks (ToR switches); integer, default 9"),
        ("hosts_per_rack", "hosts per rack; integer, default 16"),
        ("aggregation", "aggregation switches; integer, default 4"),
        ("host_gbps", "host link rate, Gbit/s; default 10"),
        (
            "uplink_gbps",
            "ToR-aggregation link rate, Gbit/s; default 40",
        ),
        (
            "link_latency",
            "propagation latency of every link; duration, default 0ns",
        ),
        (
            "switch_delay",
            "store-and-forward switch delay; duration, default 250ns",
        ),
        (
            "host_tx_delay",
            "host software delay on transmit; duration, default 750ns",
        ),
        (
            "host_rx_delay",
            "host software delay on receive; duration, default 750ns",
        ),
        (
            "buffer",
            "switch egress buffer: unlimited or bytes (e.g. 500K); default unlimited",
        ),
        (
            "ecmp",
            "spray (per packet) or flow (per host pair); default spray",
        ),
        ("mtu", "IP MTU, bytes; default 1500"),
        ("priorities", "priority levels, 1..=8; default 8"),
        (
            "rtt_bytes",
            "RTT bytes: unsched_bytes and grant window; default 10000",
        ),
        (
            "cutoffs",
            "unscheduled cutoffs: auto, kernel or 8 comma-separated lengths; default auto",
        ),
        (
            "engine",
            "an engine tunable NAME=VALUE (kernel sysctl names); may repeat",
        ),
        ("workload", "w1..w5 or fixed:BYTES; default w4"),
        (
            "capped",
            "use the 1 MB-capped distributions (true/false); default false",
        ),
        (
            "large",
            "messages over 1,000,000 bytes: split or cap; default split",
        ),
        (
            "load",
            "offered load per host, fraction or percent; default 0.8",
        ),
        ("load_basis", "payload or wire; default payload"),
        (
            "duration",
            "measurement window; duration, default per workload",
        ),
        (
            "warmup",
            "warm-up before the window; duration, default = duration",
        ),
        (
            "drain_limit",
            "longest wait for the window's messages after it; default = duration",
        ),
        (
            "drain_all",
            "then stop arrivals and run until idle (true/false); default false",
        ),
        ("seed", "seed of every random choice; default 1"),
        (
            "pool",
            "receive region per host, bytes (max 4GiB); default 1GiB",
        ),
        (
            "response_bytes",
            "length of each message's response; default 1",
        ),
    ];

    /// Sets one setting by name from its text form (see [`DcConfig::KEYS`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        self.set_inner(key.trim(), value.trim())
            .map_err(|reason| SettingError {
                key: key.trim().to_owned(),
                value: value.trim().to_owned(),
                reason,
            })
    }

    fn set_inner(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "racks" => self.racks = parse_count(v, 1, 10_000)?,
            "hosts_per_rack" => self.hosts_per_rack = parse_count(v, 1, 10_000)?,
            "aggregation" => self.aggregation = parse_count(v, 1, 1000)?,
            "host_gbps" => self.host_link_bps = parse_gbps(v)?,
            "uplink_gbps" => self.uplink_bps = parse_gbps(v)?,
            "link_latency" => self.link_latency = parse_duration(v)?,
            "switch_delay" => self.switch_delay = parse_duration(v)?,
            "host_tx_delay" => self.host_tx_delay = parse_duration(v)?,
            "host_rx_delay" => self.host_rx_delay = parse_duration(v)?,
            "buffer" => {
                self.switch_buffer = if v == "unlimited" || v == "inf" {
                    None
                } else {
                    let b = parse_bytes(v)?;
                    if b < 2 * self.mtu as u64 {
                        return Err(format!("a buffer of {b} bytes holds less than two packets"));
                    }
                    Some(b)
                }
            }
            "ecmp" => {
                self.ecmp = match v {
                    "spray" => Ecmp::Spray,
                    "flow" => Ecmp::FlowHash,
                    _ => return Err("expected spray or flow".into()),
                }
            }
            "mtu" => self.mtu = parse_count(v, 576, 65_535)?,
            "priorities" => self.priorities = parse_count(v, 1, MAX_PRIORITIES)? as u8,
            "rtt_bytes" => self.rtt_bytes = parse_count(v, 1, MAX_MESSAGE_LENGTH as usize)? as u32,
            "cutoffs" => {
                self.cutoffs = match v {
                    "auto" => Cutoffs::Auto,
                    "kernel" => Cutoffs::Kernel,
                    list => {
                        let parts: Vec<&str> = list.split(',').collect();
                        if parts.len() != MAX_PRIORITIES {
                            return Err(format!(
                                "expected auto, kernel or {MAX_PRIORITIES} comma-separated lengths"
                            ));
                        }
                        let mut t = [0u32; MAX_PRIORITIES];
                        for (slot, p) in t.iter_mut().zip(parts) {
                            *slot = p
                                .trim()
                                .parse()
                                .map_err(|_| format!("{p:?} is not a length"))?;
                        }
                        Cutoffs::Table(t)
                    }
                }
            }
            "engine" => {
                let (name, value) = v
                    .split_once('=')
                    .ok_or_else(|| "expected NAME=VALUE".to_string())?;
                let value: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not an integer"))?;
                homa_proto::Config::builder()
                    .set(name.trim(), value)
                    .map_err(|e| e.to_string())?;
                self.engine.push((name.trim().to_owned(), value));
            }
            "workload" => self.workload = v.parse()?,
            "capped" => self.capped = parse_bool(v)?,
            "large" => {
                self.large = match v {
                    "split" => LargeMessages::Split,
                    "cap" => LargeMessages::Cap,
                    _ => return Err("expected split or cap".into()),
                }
            }
            "load" => self.load = parse_load(v)?,
            "load_basis" => {
                self.load_basis = match v {
                    "payload" => LoadBasis::Payload,
                    "wire" => LoadBasis::Wire,
                    _ => return Err("expected payload or wire".into()),
                }
            }
            "duration" => self.duration = Some(positive(parse_duration(v)?)?),
            "warmup" => self.warmup = Some(parse_duration(v)?),
            "drain_limit" => self.drain_limit = Some(parse_duration(v)?),
            "drain_all" => self.drain_all = parse_bool(v)?,
            "seed" => {
                self.seed = v
                    .parse()
                    .map_err(|_| format!("{v:?} is not an unsigned integer"))?
            }
            "pool" => {
                let b = parse_bytes(v)?;
                if !(1 << 20..=1 << 32).contains(&b) {
                    return Err("expected 1MiB..=4GiB".into());
                }
                self.pool_bytes = b as usize;
            }
            "response_bytes" => {
                self.response_bytes = parse_count(v, 1, MAX_MESSAGE_LENGTH as usize)? as u32
            }
            _ => {
                let names: Vec<&str> = DcConfig::KEYS.iter().map(|k| k.0).collect();
                return Err(format!(
                    "unknown setting; expected one of {}",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Applies a config file: one `key = value` per line, keys as in
    /// [`DcConfig::KEYS`]; blank lines and `#` comments are ignored. Lines whose key
    /// `extra(key, value)` accepts (returns `Ok(true)`) are handled by the caller (the
    /// CLI's own options, such as output paths). Errors name the line.
    ///
    /// ```
    /// use homa_sim::datacenter::DcConfig;
    /// let mut c = DcConfig::default();
    /// c.apply_file("# paper, half load\nload = 50%\nworkload = w3\n", |_, _| Ok(false)).unwrap();
    /// assert_eq!(c.load, 0.5);
    /// let e = c.apply_file("load 5\n", |_, _| Ok(false)).unwrap_err();
    /// assert!(e.starts_with("line 1:"));
    /// ```
    pub fn apply_file(
        &mut self,
        text: &str,
        mut extra: impl FnMut(&str, &str) -> Result<bool, String>,
    ) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected `key = value`", i + 1))?;
            let (k, v) = (k.trim(), v.trim());
            if extra(k, v).map_err(|e| format!("line {}: {k} = {v:?}: {e}", i + 1))? {
                continue;
            }
            self.set(k, v).map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        Ok(())
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.racks * self.hosts_per_rack
    }

    /// The default measurement window of a workload, chosen so that each run simulates
    /// a few tens of millions of packets on the paper topology at 80 % load, and long enough
    /// for the workload's largest messages: W1 and W2 (one-packet messages) 5 ms, W3
    /// 50 ms, W4 100 ms, W5 200 ms (its 29 MB messages take 24 ms alone); fixed lengths
    /// 10 ms.
    pub fn default_duration(workload: WorkloadChoice) -> Duration {
        let ms = match workload {
            WorkloadChoice::Named(Workload::W1) | WorkloadChoice::Named(Workload::W2) => 5,
            WorkloadChoice::Named(Workload::W3) => 50,
            WorkloadChoice::Named(Workload::W4) => 100,
            WorkloadChoice::Named(Workload::W5) => 200,
            WorkloadChoice::Fixed(_) => 10,
        };
        Duration::from_millis(ms)
    }

    /// The measurement window's length actually used.
    pub fn effective_duration(&self) -> Duration {
        self.duration
            .unwrap_or_else(|| DcConfig::default_duration(self.workload))
    }

    /// The warm-up actually used: by default as long as the window. Under SRPT the
    /// backlog of a heavy-tailed workload (W3–W5: messages of 10–30 MB) takes of the order
    /// of 100 ms to settle (W4 at 60 % load: it grows for about 120 ms, then stays
    /// level), and a shorter warm-up makes a sustainable load look unsustained.
    pub fn effective_warmup(&self) -> Duration {
        self.warmup.unwrap_or(self.effective_duration())
    }

    /// The drain limit actually used.
    pub fn effective_drain_limit(&self) -> Duration {
        self.drain_limit.unwrap_or(self.effective_duration())
    }

    /// The distribution messages are drawn from: the raw or capped file (or the fixed
    /// length), capped at 1,000,000 bytes when [`LargeMessages::Cap`] applies.
    pub fn distribution(&self) -> Distribution {
        let d = match self.workload {
            WorkloadChoice::Named(w) => Distribution::of(w, self.capped),
            WorkloadChoice::Fixed(n) => Distribution::fixed(n),
        };
        if self.large == LargeMessages::Cap && d.max() > MAX_MESSAGE_LENGTH {
            d.capped_at(MAX_MESSAGE_LENGTH)
        } else {
            d
        }
    }

    /// The cutoff table for `Cutoffs::Kernel`.
    pub const KERNEL_CUTOFFS: [u32; MAX_PRIORITIES] = DEFAULT_UNSCHED_CUTOFFS;

    /// Checks the settings that `set` cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts() < 2 {
            return Err("at least 2 hosts are needed".into());
        }
        if self.hosts() > 1 << 20 {
            return Err("at most 1,048,576 hosts".into());
        }
        if !(self.load > 0.0 && self.load.is_finite()) {
            return Err(format!("load {} must be positive", self.load));
        }
        if self.pool_bytes < (1 << 20) || self.pool_bytes > (1 << 32) {
            return Err("pool must be 1 MiB..=4 GiB".into());
        }
        if let WorkloadChoice::Fixed(n) = self.workload {
            if n > MAX_MESSAGE_LENGTH && self.large == LargeMessages::Cap {
                return Err(format!("fixed length {n} would be capped entirely"));
            }
        }
        if let Some(b) = self.switch_buffer {
            if b < 2 * self.mtu as u64 {
                return Err(format!("a buffer of {b} bytes holds less than two packets"));
            }
        }
        Ok(())
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be positive".into())
    } else {
        Ok(d)
    }
}

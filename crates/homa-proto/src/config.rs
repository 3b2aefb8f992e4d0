//! Every protocol tunable of PROTOCOL.md section 6, at the kernel's defaults, validated.
//!
//! A [`Config`] can only be obtained through [`ConfigBuilder::build`] (or
//! [`Config::default`]), which checks every value; so an engine never sees an
//! out-of-range setting. The scalar tunables are declared once, in the table at the
//! bottom of this file, which also generates [`TUNABLES`] (name, default, range, meaning)
//! for tools that list or set them by name.
//!
//! ```
//! use homa_proto::{Config, ConfigError};
//!
//! let config = Config::builder().unsched_bytes(10_000).max_overcommit(4).build().unwrap();
//! assert_eq!(config.unsched_bytes(), 10_000);
//! assert_eq!(config.max_incoming(), 400_000); // untouched: the kernel default
//!
//! let err = Config::builder().max_overcommit(9).build().unwrap_err();
//! assert_eq!(err.to_string(), "max_overcommit = 9 is out of range: allowed 1..=8");
//! ```
//!
//! ## Section-6 items that are not here, and why
//!
//! * `timeout_resends`: the kernel keeps the sysctl but no code reads it (PROTOCOL.md 4.7).
//! * `max_nic_queue_usecs`, `max_link_usage`, `homa_share`: settings of the kernel's
//!   `homa` qdisc, which measures a real NIC queue; this implementation paces with the
//!   pacer-thread model (`link_mbps`, `max_nic_est_backlog_usecs`).
//! * `hijack_tcp`, `max_gso_size`, `gso_force_software`: how packets are handed to the
//!   network, not what they contain; they belong to the socket library's transport
//!   configuration.
//! * `next_id`: a debugging write-only knob; the engine takes its first client id from its
//!   constructor (random by default, PROTOCOL.md 2.3).
//!
//! ## Tunables the kernel does not have
//!
//! * `max_server_rpcs`: the most server RPCs one socket holds at once (a bound on what
//!   a flood of requests can make it allocate); requests beyond it are dropped and
//!   counted, and a live client retries through RPC_UNKNOWN.
//!
//! ## Derived values
//!
//! * `cutoff_version` and `max_sched_prio` are read-only in the kernel; here they are
//!   derived from the table (see [`Config::cutoff_version`], [`Config::max_sched_prio`]).

use core::fmt;

use crate::wire::{MAX_MESSAGE_LENGTH, MAX_PRIORITIES};

/// The receiver's default unscheduled cutoffs, index 0 first (PROTOCOL.md 3.4).
pub const DEFAULT_UNSCHED_CUTOFFS: [u32; MAX_PRIORITIES] =
    [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200];
/// The default priority map: identity.
pub const DEFAULT_PRIORITY_MAP: [u8; MAX_PRIORITIES] = [0, 1, 2, 3, 4, 5, 6, 7];
/// Version of the default cutoff table (what a freshly loaded kernel module announces).
pub const DEFAULT_CUTOFF_VERSION: u16 = 1;

/// A configuration value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A scalar tunable is outside its range.
    OutOfRange {
        /// The tunable's name (as the kernel sysctl spells it).
        parameter: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// One entry of an array tunable (`priority_map`, `unsched_cutoffs`) is out of range.
    EntryOutOfRange {
        /// The tunable's name.
        parameter: &'static str,
        /// Index of the bad entry.
        index: usize,
        /// The rejected value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// [`ConfigBuilder::set`] was given a name that is not a scalar tunable.
    UnknownParameter {
        /// The name given.
        name: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::OutOfRange {
                parameter,
                value,
                min,
                max,
            } => write!(
                f,
                "{parameter} = {value} is out of range: allowed {min}..={max}"
            ),
            ConfigError::EntryOutOfRange {
                parameter,
                index,
                value,
                min,
                max,
            } => write!(
                f,
                "{parameter}[{index}] = {value} is out of range: allowed {min}..={max}"
            ),
            ConfigError::UnknownParameter { name } => {
                let names: Vec<&str> = TUNABLES.iter().map(|t| t.name).collect();
                write!(
                    f,
                    "unknown parameter `{name}`: expected one of {}",
                    names.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Description of one scalar tunable, for tools that list or set them by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunable {
    /// Name, as the kernel's sysctl spells it.
    pub name: &'static str,
    /// Default value (the kernel's).
    pub default: u64,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// What it controls.
    pub doc: &'static str,
}

fn check_range(parameter: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            parameter,
            value,
            min,
            max,
        })
    }
}

macro_rules! tunables {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $min:expr, $max:expr; )*) => {
        /// Homa's protocol tunables, validated. Build one with [`Config::builder`].
        ///
        /// Getters return the values; see [`TUNABLES`] for the table of names, defaults
        /// and ranges.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $( $name: $ty, )*
            dont_throttle: bool,
            priority_map: [u8; MAX_PRIORITIES],
            unsched_cutoffs: [u32; MAX_PRIORITIES],
            cutoff_version: u16,
            max_sched_prio: u8,
        }

        impl Config {
            $(
                $(#[doc = $doc])+
                pub fn $name(&self) -> $ty {
                    self.$name
                }
            )*

            /// The value of a scalar tunable by name (as listed in [`TUNABLES`]), or
            /// `None` for an unknown name.
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($name) => Some(self.$name as u64), )*
                    "dont_throttle" => Some(u64::from(self.dont_throttle)),
                    _ => None,
                }
            }
        }

        /// Builds a [`Config`]; every setter takes effect only if [`build`](Self::build)
        /// accepts the whole set.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct ConfigBuilder {
            $( $name: $ty, )*
            dont_throttle: bool,
            priority_map: [u8; MAX_PRIORITIES],
            unsched_cutoffs: [u32; MAX_PRIORITIES],
        }

        impl Default for ConfigBuilder {
            fn default() -> Self {
                ConfigBuilder {
                    $( $name: $default, )*
                    dont_throttle: false,
                    priority_map: DEFAULT_PRIORITY_MAP,
                    unsched_cutoffs: DEFAULT_UNSCHED_CUTOFFS,
                }
            }
        }

        impl ConfigBuilder {
            $(
                $(#[doc = $doc])+
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*

            /// Sets a scalar tunable by its sysctl name (as listed in [`TUNABLES`]).
            /// The range is checked by [`build`](Self::build); a value too large for the
            /// field's type is reported as out of range here.
            ///
            /// ```
            /// use homa_proto::Config;
            /// let mut b = Config::builder();
            /// b.set("window", 60_000).unwrap();
            /// assert!(b.set("no_such_knob", 1).is_err());
            /// assert_eq!(b.build().unwrap().window(), 60_000);
            /// ```
            pub fn set(&mut self, name: &str, value: u64) -> Result<(), ConfigError> {
                match name {
                    $(
                        stringify!($name) => {
                            self.$name = <$ty>::try_from(value).map_err(|_| ConfigError::OutOfRange {
                                parameter: stringify!($name),
                                value,
                                min: $min as u64,
                                max: $max as u64,
                            })?;
                            Ok(())
                        }
                    )*
                    "dont_throttle" => {
                        check_range("dont_throttle", value, 0, 1)?;
                        self.dont_throttle = value == 1;
                        Ok(())
                    }
                    _ => Err(ConfigError::UnknownParameter { name: name.to_string() }),
                }
            }

            fn check_scalars(&self) -> Result<(), ConfigError> {
                $( check_range(stringify!($name), self.$name as u64, $min as u64, $max as u64)?; )*
                Ok(())
            }
        }

        /// Every scalar tunable: name, kernel default, allowed range and meaning.
        pub const TUNABLES: &[Tunable] = &[
            $( Tunable {
                name: stringify!($name),
                default: $default as u64,
                min: $min as u64,
                max: $max as u64,
                doc: concat!($($doc),+),
            }, )*
            Tunable {
                name: "dont_throttle",
                default: 0,
                min: 0,
                max: 1,
                doc: " 1 disables the pacer's throttling (the kernel's HOMA_FLAG_DONT_THROTTLE).",
            },
        ];
    };
}

tunables! {
    /// Bytes a new message may send before any grant (default 40000).
    unsched_bytes: u32 = 40_000, 1, MAX_MESSAGE_LENGTH;
    /// Fixed per-message grant window in bytes; 0 (default) = dynamic, `max_incoming / (N+1)`.
    window: u32 = 0, 0, 100_000_000;
    /// Cap on granted-but-unreceived bytes over all incoming messages (default 400000).
    max_incoming: u32 = 400_000, 1, 2_000_000_000;
    /// Most messages granted to at once (default 8, at most 8).
    max_overcommit: u32 = 8, 1, 8;
    /// Thousandths of scheduled bandwidth given to the oldest message by FIFO grants (default 50).
    grant_fifo_fraction: u32 = 50, 0, 500;
    /// Bytes added by each FIFO grant (default 50000).
    fifo_grant_increment: u32 = 50_000, 1, MAX_MESSAGE_LENGTH;
    /// Priority levels used, 0..n-1 (default 8).
    num_priorities: u8 = 8, 1, MAX_PRIORITIES;
    /// Ticks (1 ms) of silence before the first RESEND (default 5).
    resend_ticks: u32 = 5, 1, 100_000;
    /// Ticks between RESEND rounds for one RPC (default 5).
    resend_interval: u32 = 5, 1, 100_000;
    /// Most probes (RESENDs, NEED_ACKs, keep-alive GRANTs) sent to one peer (address and Homa port) per tick; further due probes wait, least recently probed first (default 4; project-local, the kernel probes every silent RPC).
    resend_budget: u32 = 4, 1, 100_000;
    /// Ticks of silence before an RPC is aborted (default 100).
    timeout_ticks: u32 = 100, 1, 10_000_000;
    /// Ticks after a response is fully sent before NEED_ACKs start (default 2).
    request_ack_ticks: u32 = 2, 1, 100_000;
    /// Uplink speed in Mbit/s, for the pacer and the FIFO-grant rate (default 25000).
    link_mbps: u32 = 25_000, 1, 10_000_000;
    /// Estimated NIC backlog, in microseconds, beyond which long-message packets are deferred (default 5; never less than two full packets' wire time at `link_mbps`).
    max_nic_est_backlog_usecs: u32 = 5, 0, 1_000_000;
    /// Messages shorter than this are never deferred by the pacer (default 1000).
    defer_min_bytes: u32 = 1000, 0, MAX_MESSAGE_LENGTH;
    /// Thousandths of paced transmissions that go to the oldest message (default 50).
    pacer_fifo_fraction: u32 = 50, 0, 500;
    /// Transmit buffer limit in bytes: unsent bytes of unfinished outgoing messages (default 100000000).
    wmem_max: u64 = 100_000_000, 1, 1u64 << 40;
    /// Most server RPCs a socket holds at once; further requests are dropped and counted (default 16384; project-local, the kernel has no such cap).
    max_server_rpcs: u32 = 16_384, 1, 100_000_000;
}

impl Default for Config {
    fn default() -> Self {
        ConfigBuilder::default()
            .build()
            .expect("the kernel defaults are valid")
    }
}

impl Config {
    /// A builder starting from the kernel's defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A builder holding this configuration's values.
    pub fn to_builder(&self) -> ConfigBuilder {
        let mut b = ConfigBuilder::default();
        for t in TUNABLES {
            // Every name in TUNABLES is accepted by `set`, and every current value is in range.
            let _ = b.set(t.name, self.get(t.name).unwrap_or(t.default));
        }
        b.priority_map = self.priority_map;
        b.unsched_cutoffs = self.unsched_cutoffs;
        b
    }

    /// Whether the pacer is disabled (the kernel's `HOMA_FLAG_DONT_THROTTLE`).
    pub fn dont_throttle(&self) -> bool {
        self.dont_throttle
    }

    /// Internal level → 3-bit value written into the IP TOS / Traffic Class (identity by default).
    pub fn priority_map(&self) -> [u8; MAX_PRIORITIES] {
        self.priority_map
    }

    /// The TOS byte (IPv4) or Traffic Class (IPv6) for internal level `level`:
    /// `priority_map[level] << 5`. Levels above 7 are treated as 7.
    ///
    /// ```
    /// let c = homa_proto::Config::default();
    /// assert_eq!(c.tos_for_level(7), 0xE0);
    /// assert_eq!(c.tos_for_level(0), 0x00);
    /// ```
    pub fn tos_for_level(&self, level: u8) -> u8 {
        let mapped = self.priority_map[usize::from(level.min(7))];
        crate::wire::level_to_tos(mapped)
    }

    /// This host's unscheduled cutoffs, as sent in CUTOFFS packets: entry i is the
    /// largest message length whose unscheduled bytes use level i; entries at or above
    /// `num_priorities` are 0.
    pub fn unsched_cutoffs(&self) -> [u32; MAX_PRIORITIES] {
        self.unsched_cutoffs
    }

    /// Version of the cutoff table, echoed by peers in their DATA packets. 1 for the
    /// default table (as a freshly loaded kernel module); for any other table a value in
    /// 2..=65535 derived from its contents, so that peers holding an older table of this
    /// host are refreshed after a restart with different settings.
    pub fn cutoff_version(&self) -> u16 {
        self.cutoff_version
    }

    /// Highest level used for scheduled packets (3 by default): one below the highest
    /// level whose cutoff is at least 1,000,000, or 0 if there is none.
    pub fn max_sched_prio(&self) -> u8 {
        self.max_sched_prio
    }

    /// Highest priority level (`num_priorities - 1`), used by every control packet.
    pub fn control_priority(&self) -> u8 {
        self.num_priorities - 1
    }
}

impl ConfigBuilder {
    /// Disables (true) or enables (false, default) the pacer's throttling.
    pub fn dont_throttle(mut self, value: bool) -> Self {
        self.dont_throttle = value;
        self
    }

    /// Sets the priority map; each entry must be 0..=7.
    pub fn priority_map(mut self, map: [u8; MAX_PRIORITIES]) -> Self {
        self.priority_map = map;
        self
    }

    /// Sets the unscheduled cutoffs (index 0 first). Entries at or above
    /// `num_priorities` are zeroed by [`build`](Self::build), as the kernel does.
    pub fn unsched_cutoffs(mut self, cutoffs: [u32; MAX_PRIORITIES]) -> Self {
        self.unsched_cutoffs = cutoffs;
        self
    }

    /// Validates every value and derives `max_sched_prio` and `cutoff_version`.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.check_scalars()?;
        for (index, &v) in self.priority_map.iter().enumerate() {
            if v > 7 {
                return Err(ConfigError::EntryOutOfRange {
                    parameter: "priority_map",
                    index,
                    value: v.into(),
                    min: 0,
                    max: 7,
                });
            }
        }
        let n = usize::from(self.num_priorities);
        let mut cutoffs = self.unsched_cutoffs;
        cutoffs[n..].fill(0);
        // The kernel's homa_prios_changed(): scan down from the top level for the first
        // cutoff that covers every message length; the levels below it are scheduled.
        let max_sched_prio = (1..n)
            .rev()
            .find(|&i| cutoffs[i] >= MAX_MESSAGE_LENGTH)
            .map_or(0, |i| i - 1) as u8;
        let cutoff_version = if cutoffs == DEFAULT_UNSCHED_CUTOFFS {
            DEFAULT_CUTOFF_VERSION
        } else {
            // FNV-1a over the table, mapped into 2..=65535.
            let mut h: u32 = 0x811C_9DC5;
            for b in cutoffs.iter().flat_map(|c| c.to_be_bytes()) {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            (2 + h % 65_534) as u16
        };
        let ConfigBuilder {
            unsched_bytes,
            window,
            max_incoming,
            max_overcommit,
            grant_fifo_fraction,
            fifo_grant_increment,
            num_priorities,
            resend_ticks,
            resend_interval,
            resend_budget,
            timeout_ticks,
            request_ack_ticks,
            link_mbps,
            max_nic_est_backlog_usecs,
            defer_min_bytes,
            pacer_fifo_fraction,
            wmem_max,
            max_server_rpcs,
            dont_throttle,
            priority_map,
            unsched_cutoffs: _,
        } = self;
        Ok(Config {
            unsched_bytes,
            window,
            max_incoming,
            max_overcommit,
            grant_fifo_fraction,
            fifo_grant_increment,
            num_priorities,
            resend_ticks,
            resend_interval,
            resend_budget,
            timeout_ticks,
            request_ack_ticks,
            link_mbps,
            max_nic_est_backlog_usecs,
            defer_min_bytes,
            pacer_fifo_fraction,
            wmem_max,
            max_server_rpcs,
            dont_throttle,
            priority_map,
            unsched_cutoffs: cutoffs,
            cutoff_version,
            max_sched_prio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kernels() {
        let c = Config::default();
        assert_eq!(c.unsched_bytes(), 40_000);
        assert_eq!(c.window(), 0);
        assert_eq!(c.max_incoming(), 400_000);
        assert_eq!(c.max_overcommit(), 8);
        assert_eq!(c.grant_fifo_fraction(), 50);
        assert_eq!(c.fifo_grant_increment(), 50_000);
        assert_eq!(c.num_priorities(), 8);
        assert_eq!(c.priority_map(), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            c.unsched_cutoffs(),
            [0, 0, 0, 0, 1_000_000, 15_000, 2800, 200]
        );
        assert_eq!(c.cutoff_version(), 1);
        assert_eq!(c.max_sched_prio(), 3);
        assert_eq!(c.resend_ticks(), 5);
        assert_eq!(c.resend_interval(), 5);
        assert_eq!(c.timeout_ticks(), 100);
        assert_eq!(c.request_ack_ticks(), 2);
        assert_eq!(c.link_mbps(), 25_000);
        assert_eq!(c.max_nic_est_backlog_usecs(), 5);
        assert_eq!(c.defer_min_bytes(), 1000);
        assert_eq!(c.pacer_fifo_fraction(), 50);
        assert_eq!(c.wmem_max(), 100_000_000);
        assert!(!c.dont_throttle());
        assert_eq!(c.control_priority(), 7);
    }

    #[test]
    fn every_scalar_rejects_values_just_outside_its_range() {
        for t in TUNABLES {
            let mut below = Config::builder();
            if t.min > 0 {
                below.set(t.name, t.min - 1).unwrap();
                let err = below.build().unwrap_err();
                assert!(
                    matches!(err, ConfigError::OutOfRange { parameter, .. } if parameter == t.name),
                    "{}: {err}",
                    t.name
                );
                assert!(err.to_string().contains(t.name), "{err}");
            }
            let mut above = Config::builder();
            match above.set(t.name, t.max + 1) {
                Err(ConfigError::OutOfRange { parameter, .. }) => assert_eq!(parameter, t.name),
                Err(e) => panic!("{}: {e}", t.name),
                Ok(()) => {
                    let err = above.build().unwrap_err();
                    assert!(
                        matches!(err, ConfigError::OutOfRange { parameter, value, min, max }
                            if parameter == t.name && value == t.max + 1 && min == t.min && max == t.max),
                        "{}: {err}",
                        t.name
                    );
                }
            }
            // The bounds themselves are accepted.
            for v in [t.min, t.max] {
                let mut ok = Config::builder();
                ok.set(t.name, v).unwrap();
                assert!(ok.build().is_ok(), "{} = {v}", t.name);
            }
        }
    }

    #[test]
    fn tunables_table_matches_the_defaults() {
        let c = Config::default();
        for t in TUNABLES {
            assert_eq!(c.get(t.name), Some(t.default), "{}", t.name);
        }
        assert_eq!(c.get("nope"), None);
    }

    #[test]
    fn to_builder_round_trips() {
        let c = Config::builder()
            .window(123_456)
            .num_priorities(4)
            .dont_throttle(true)
            .build()
            .unwrap();
        assert_eq!(c.to_builder().build().unwrap(), c);
    }

    #[test]
    fn priority_map_entries_are_checked() {
        let err = Config::builder()
            .priority_map([0, 1, 2, 3, 4, 5, 6, 8])
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::EntryOutOfRange {
                parameter: "priority_map",
                index: 7,
                value: 8,
                min: 0,
                max: 7
            }
        );
        assert_eq!(
            err.to_string(),
            "priority_map[7] = 8 is out of range: allowed 0..=7"
        );
    }

    #[test]
    fn fewer_priorities_zero_the_upper_cutoffs_and_move_max_sched_prio() {
        let c = Config::builder().num_priorities(4).build().unwrap();
        assert_eq!(c.unsched_cutoffs(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(c.max_sched_prio(), 0);
        assert_eq!(c.control_priority(), 3);
        assert_ne!(c.cutoff_version(), 1);

        let c = Config::builder()
            .num_priorities(4)
            .unsched_cutoffs([0, 0, 1_000_000, 500, 0, 0, 0, 0])
            .build()
            .unwrap();
        assert_eq!(c.max_sched_prio(), 1);
    }

    #[test]
    fn custom_tables_get_distinct_nonzero_versions() {
        let a = Config::builder()
            .unsched_cutoffs([0, 0, 0, 1_000_000, 10_000, 2000, 500, 100])
            .build()
            .unwrap();
        let b = Config::builder()
            .unsched_cutoffs([0, 0, 0, 1_000_000, 10_000, 2000, 400, 100])
            .build()
            .unwrap();
        assert!(a.cutoff_version() >= 2 && b.cutoff_version() >= 2);
        assert_ne!(a.cutoff_version(), b.cutoff_version());
        assert_eq!(a.max_sched_prio(), 2);
    }
}

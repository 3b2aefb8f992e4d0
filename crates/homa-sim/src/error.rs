//! Errors of running and building a network. Every run error carries the seed, and its
//! `Display` prints it, so a test that `unwrap`s a run shows how to replay it.

use core::fmt;
use core::net::IpAddr;

use homa_proto::Time;

use crate::topology::Device;

/// A run did not reach its goal.
///
/// ```
/// use homa_proto::Time;
/// use homa_sim::SimError;
///
/// let e = SimError::StepLimit { seed: 42, steps: 10, now: Time::ZERO };
/// assert!(e.to_string().contains("seed 42"));
/// assert_eq!(e.seed(), 42);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// `steps` events were processed without the condition holding: a livelock (or a
    /// limit too small for the scenario).
    StepLimit {
        /// The network's seed.
        seed: u64,
        /// Steps taken (the limit).
        steps: u64,
        /// Virtual time when the limit was hit.
        now: Time,
    },
    /// Nothing was left to happen (no packet in flight, no timer armed) and the condition
    /// still did not hold: a deadlock.
    Idle {
        /// The network's seed.
        seed: u64,
        /// Steps taken before the network went idle.
        steps: u64,
        /// Virtual time when the network went idle.
        now: Time,
    },
}

impl SimError {
    /// The seed of the network that failed.
    pub fn seed(&self) -> u64 {
        match *self {
            SimError::StepLimit { seed, .. } | SimError::Idle { seed, .. } => seed,
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SimError::StepLimit { seed, steps, now } => write!(
                f,
                "homa-sim (seed {seed}): step limit of {steps} reached at {now} before the \
                 condition held (livelock?); replay with NetConfig {{ seed: {seed}, .. }} \
                 (or HOMA_SIM_SEED={seed} where the test uses seed_from_env)"
            ),
            SimError::Idle { seed, steps, now } => write!(
                f,
                "homa-sim (seed {seed}): network idle at {now} after {steps} steps before the \
                 condition held (deadlock?); replay with NetConfig {{ seed: {seed}, .. }} \
                 (or HOMA_SIM_SEED={seed} where the test uses seed_from_env)"
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// A topology could not be built.
///
/// ```
/// use homa_sim::{BuildError, Device};
/// let e = BuildError::SelfLink(Device::Switch(0));
/// assert!(e.to_string().contains("itself"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// Two hosts have the same IP address.
    DuplicateIp(IpAddr),
    /// A link names a host or switch that was never added.
    UnknownDevice(Device),
    /// A link connects a device to itself.
    SelfLink(Device),
    /// A link direction has rate 0.
    ZeroRate(Device, Device),
    /// [`NetConfig::max_packet`](crate::NetConfig::max_packet) is 0.
    ZeroMaxPacket,
    /// [`NetConfig::max_burst`](crate::NetConfig::max_burst) is 0.
    ZeroBurst,
    /// More than 2^29 - 1 devices (hosts and switches) or ports.
    TooLarge,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::DuplicateIp(ip) => write!(f, "two hosts have IP address {ip}"),
            BuildError::UnknownDevice(d) => write!(f, "link names {d}, which was never added"),
            BuildError::SelfLink(d) => write!(f, "link connects {d} to itself"),
            BuildError::ZeroRate(a, b) => write!(f, "link {a} -> {b} has rate 0 bit/s"),
            BuildError::ZeroMaxPacket => f.write_str("max_packet is 0"),
            BuildError::ZeroBurst => f.write_str("max_burst is 0"),
            BuildError::TooLarge => f.write_str("topology exceeds 2^29 - 1 devices or ports"),
        }
    }
}

impl std::error::Error for BuildError {}

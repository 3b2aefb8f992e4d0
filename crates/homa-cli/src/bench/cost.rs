//! What a phase costs, besides time: the CPU time (user + system) and the context
//! switches (voluntary + involuntary) of the whole process over the phase's measured
//! RPCs, per RPC; and how long its threads waited for a CPU while runnable (the
//! run-queue wait per timeslice: near zero on a machine with CPUs to spare, and the
//! first figure to grow when the machine itself becomes the bottleneck).
//!
//! The harness takes a [`Snapshot`] (an instant and the process's [`Usage`] so far) when
//! a phase's measured interval begins, after its warm-up, and one when it ends; the
//! difference over the RPCs measured in between is the [`Cost`].

use std::time::Instant;

use homa_eval::report::Json;

/// Resources the process has used so far: every thread, live or finished
/// (`getrusage(RUSAGE_SELF)`; see [`super::system::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// User CPU time, µs.
    pub(crate) user_us: u64,
    /// System CPU time, µs.
    pub(crate) system_us: u64,
    /// Voluntary context switches: a thread blocked (waited for a packet, a lock, a
    /// timer).
    pub(crate) voluntary: u64,
    /// Involuntary context switches: a thread was preempted, or yielded the CPU to
    /// another runnable thread (`sched_yield` in a busy poll counts here when it switches).
    pub(crate) involuntary: u64,
    /// Time the process's threads spent runnable but waiting for a CPU, µs
    /// (`/proc/self/task/*/schedstat`, field 2). Only threads alive when it is read
    /// count (unlike the fields above), so a difference covers the threads that lived
    /// through the window; 0 where the kernel does not keep the figure.
    pub(crate) run_wait_us: u64,
    /// Timeslices the process's threads ran (field 3 of the same files): the number of
    /// times a thread got a CPU, so `run_wait_us / timeslices` is the mean wait for one.
    pub(crate) timeslices: u64,
}

impl Usage {
    /// What was used between `earlier` and `self` (zero where a counter went backwards).
    pub(crate) fn since(self, earlier: Usage) -> Usage {
        Usage {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            system_us: self.system_us.saturating_sub(earlier.system_us),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
            run_wait_us: self.run_wait_us.saturating_sub(earlier.run_wait_us),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
    }

    /// Both usages added up (of two windows of one process).
    pub(crate) fn plus(self, other: Usage) -> Usage {
        self.zip(other, |a, b| a.saturating_add(b))
    }

    /// User plus system CPU time, µs.
    pub(crate) fn cpu_us(self) -> u64 {
        self.user_us + self.system_us
    }

    /// Voluntary plus involuntary context switches.
    pub(crate) fn switches(self) -> u64 {
        self.voluntary + self.involuntary
    }

    fn zip(self, other: Usage, f: impl Fn(u64, u64) -> u64) -> Usage {
        Usage {
            user_us: f(self.user_us, other.user_us),
            system_us: f(self.system_us, other.system_us),
            voluntary: f(self.voluntary, other.voluntary),
            involuntary: f(self.involuntary, other.involuntary),
            run_wait_us: f(self.run_wait_us, other.run_wait_us),
            timeslices: f(self.timeslices, other.timeslices),
        }
    }
}

/// Reads the process's [`Usage`]; `None` if it cannot be read.
pub(crate) type Meter<'a> = &'a mut dyn FnMut() -> Option<Usage>;

/// The process's usage at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) usage: Option<Usage>,
}

impl Snapshot {
    /// Reads `meter` now.
    pub(crate) fn take(meter: Meter<'_>) -> Snapshot {
        let usage = meter();
        Snapshot {
            at: Instant::now(),
            usage,
        }
    }

    /// The earlier of two snapshots of one process (its counters only grow, so the
    /// smaller of each).
    pub(crate) fn earliest(self, other: Snapshot) -> Snapshot {
        Snapshot {
            at: self.at.min(other.at),
            usage: self.usage.zip(other.usage).map(|(a, b)| a.zip(b, u64::min)),
        }
    }

    /// The later of two snapshots of one process.
    pub(crate) fn latest(self, other: Snapshot) -> Snapshot {
        Snapshot {
            at: self.at.max(other.at),
            usage: self.usage.zip(other.usage).map(|(a, b)| a.zip(b, u64::max)),
        }
    }
}

/// A measured interval: from its first snapshot to its last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) from: Snapshot,
    pub(crate) to: Snapshot,
}

impl Window {
    /// The smallest window covering both (the client threads of a loaded run each
    /// measure their own, nearly identical, interval).
    pub(crate) fn union(self, other: Window) -> Window {
        Window {
            from: self.from.earliest(other.from),
            to: self.to.latest(other.to),
        }
    }

    /// The cost of `rpcs` RPCs measured in this window.
    pub(crate) fn cost(self, rpcs: u64) -> Cost {
        Cost {
            rpcs,
            wall_s: self
                .to
                .at
                .saturating_duration_since(self.from.at)
                .as_secs_f64(),
            used: self
                .to
                .usage
                .zip(self.from.usage)
                .map(|(to, from)| to.since(from)),
        }
    }
}

/// What a phase's measured RPCs cost the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cost {
    /// RPCs measured in the window (the denominator of every per-RPC figure).
    pub(crate) rpcs: u64,
    /// Wall-clock length of the window, seconds.
    pub(crate) wall_s: f64,
    /// What the process used in the window (`None`: not measured).
    pub(crate) used: Option<Usage>,
}

impl Default for Cost {
    /// Nothing measured.
    fn default() -> Cost {
        Cost {
            rpcs: 0,
            wall_s: 0.0,
            used: None,
        }
    }
}

/// `total / rpcs`, NaN (shown as `—`, `null` in JSON) when nothing was measured.
fn per(total: Option<u64>, rpcs: u64) -> f64 {
    match total {
        Some(t) if rpcs > 0 => t as f64 / rpcs as f64,
        _ => f64::NAN,
    }
}

impl Cost {
    /// CPU time (user + system) of the whole process per RPC, µs.
    pub(crate) fn cpu_us_per_rpc(&self) -> f64 {
        per(self.used.map(Usage::cpu_us), self.rpcs)
    }

    /// Context switches (voluntary + involuntary) of the whole process per RPC.
    pub(crate) fn switches_per_rpc(&self) -> f64 {
        per(self.used.map(Usage::switches), self.rpcs)
    }

    /// CPU seconds used in the window.
    pub(crate) fn cpu_s(&self) -> f64 {
        self.used.map_or(f64::NAN, |u| u.cpu_us() as f64 / 1e6)
    }

    /// CPUs kept busy on average during the window (CPU time / wall time).
    pub(crate) fn cpus_busy(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.cpu_s() / self.wall_s
        } else {
            f64::NAN
        }
    }

    /// CPU milliseconds used per second of the window.
    pub(crate) fn cpu_ms_per_s(&self) -> f64 {
        self.cpus_busy() * 1000.0
    }

    /// Mean time a thread waited for a CPU each time it got one, µs (NaN when no
    /// timeslice was counted: not measured, or the kernel does not keep the figure).
    pub(crate) fn run_wait_us_per_slice(&self) -> f64 {
        match self.used {
            Some(u) if u.timeslices > 0 => u.run_wait_us as f64 / u.timeslices as f64,
            _ => f64::NAN,
        }
    }

    /// Context switches per second of the window.
    pub(crate) fn switches_per_s(&self) -> f64 {
        match self.used {
            Some(u) if self.wall_s > 0.0 => u.switches() as f64 / self.wall_s,
            _ => f64::NAN,
        }
    }

    /// The per-RPC figures and the raw counts behind them, as JSON fields of a phase's
    /// entry: `cpu_us_per_rpc`, `ctx_switches_per_rpc` and a `cost` object.
    pub(crate) fn add_to(&self, entry: &mut Json) {
        entry.insert("cpu_us_per_rpc", self.cpu_us_per_rpc());
        entry.insert("ctx_switches_per_rpc", self.switches_per_rpc());
        entry.insert("cost", self.json());
    }

    /// The `cost` object.
    pub(crate) fn json(&self) -> Json {
        let u = self.used;
        let secs = |f: fn(&Usage) -> u64| u.map_or(f64::NAN, |u| f(&u) as f64 / 1e6);
        let count = |f: fn(&Usage) -> u64| u.map_or(Json::Null, |u| Json::from(f(&u)));
        Json::object()
            .field("rpcs", self.rpcs)
            .field("wall_s", self.wall_s)
            .field("cpu_s", self.cpu_s())
            .field("user_s", secs(|u| u.user_us))
            .field("system_s", secs(|u| u.system_us))
            .field("cpus_busy", self.cpus_busy())
            .field("voluntary_ctx_switches", count(|u| u.voluntary))
            .field("involuntary_ctx_switches", count(|u| u.involuntary))
            .field(
                "voluntary_ctx_switches_per_rpc",
                per(u.map(|u| u.voluntary), self.rpcs),
            )
            .field(
                "involuntary_ctx_switches_per_rpc",
                per(u.map(|u| u.involuntary), self.rpcs),
            )
            .field("run_queue_wait_s", secs(|u| u.run_wait_us))
            .field("timeslices", count(|u| u.timeslices))
            .field("run_queue_wait_us_per_slice", self.run_wait_us_per_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn usage(user_us: u64, system_us: u64, voluntary: u64, involuntary: u64) -> Usage {
        Usage {
            user_us,
            system_us,
            voluntary,
            involuntary,
            ..Usage::default()
        }
    }

    fn window(from: Usage, to: Usage, wall: Duration) -> Window {
        let t0 = Instant::now();
        Window {
            from: Snapshot {
                at: t0,
                usage: Some(from),
            },
            to: Snapshot {
                at: t0 + wall,
                usage: Some(to),
            },
        }
    }

    #[test]
    fn per_rpc_divides_the_window_by_its_rpcs() {
        let w = window(
            usage(1_000, 500, 10, 3),
            usage(3_000, 1_500, 410, 103),
            Duration::from_millis(500),
        );
        let c = w.cost(100);
        assert_eq!(c.used, Some(usage(2_000, 1_000, 400, 100)));
        assert_eq!(c.cpu_us_per_rpc(), 30.0);
        assert_eq!(c.switches_per_rpc(), 5.0);
        assert_eq!(c.cpu_s(), 0.003);
        assert_eq!(c.wall_s, 0.5);
        assert!((c.cpus_busy() - 0.006).abs() < 1e-12);
        assert!((c.cpu_ms_per_s() - 6.0).abs() < 1e-9);
        assert_eq!(c.switches_per_s(), 1000.0);
    }

    #[test]
    fn nothing_measured_is_not_a_number() {
        let c = window(usage(0, 0, 0, 0), usage(5, 5, 5, 5), Duration::ZERO).cost(0);
        assert!(c.cpu_us_per_rpc().is_nan() && c.switches_per_rpc().is_nan());
        assert!(c.cpus_busy().is_nan() && c.switches_per_s().is_nan());
        let unread = Cost {
            rpcs: 10,
            wall_s: 1.0,
            used: None,
        };
        assert!(unread.cpu_us_per_rpc().is_nan() && unread.cpu_s().is_nan());
        assert_eq!(Cost::default().rpcs, 0);
        // A counter that went backwards gives zero, never a wrapped huge number.
        assert_eq!(
            usage(1, 1, 1, 1).since(usage(2, 0, 2, 0)),
            usage(0, 1, 0, 1)
        );
    }

    #[test]
    fn union_spans_both_windows() {
        let a = window(
            usage(10, 10, 10, 10),
            usage(50, 50, 50, 50),
            Duration::from_secs(1),
        );
        let mut b = window(
            usage(12, 8, 11, 9),
            usage(60, 40, 70, 30),
            Duration::from_secs(2),
        );
        b.from.at = a.from.at + Duration::from_millis(1);
        let u = a.union(b);
        assert_eq!(u.from.at, a.from.at);
        assert_eq!(u.to.at, b.to.at);
        assert_eq!(u.from.usage, Some(usage(10, 8, 10, 9)));
        assert_eq!(u.to.usage, Some(usage(60, 50, 70, 50)));
        let mut unread = a;
        unread.to.usage = None;
        assert_eq!(unread.union(b).to.usage, None);
    }

    #[test]
    fn json_has_every_field() {
        let c = window(
            usage(0, 0, 0, 0),
            usage(600, 400, 30, 10),
            Duration::from_millis(2),
        )
        .cost(20);
        let mut entry = Json::object().field("transport", "homa");
        c.add_to(&mut entry);
        assert_eq!(entry.get("transport"), Some(&Json::from("homa")));
        assert_eq!(entry.get("cpu_us_per_rpc"), Some(&Json::Float(50.0)));
        assert_eq!(entry.get("ctx_switches_per_rpc"), Some(&Json::Float(2.0)));
        let cost = entry.get("cost").expect("a cost object");
        for (key, value) in [
            ("rpcs", Json::UInt(20)),
            ("cpu_s", Json::Float(0.001)),
            ("user_s", Json::Float(0.0006)),
            ("system_s", Json::Float(0.0004)),
            ("voluntary_ctx_switches", Json::UInt(30)),
            ("involuntary_ctx_switches", Json::UInt(10)),
            ("voluntary_ctx_switches_per_rpc", Json::Float(1.5)),
            ("involuntary_ctx_switches_per_rpc", Json::Float(0.5)),
        ] {
            assert_eq!(cost.get(key), Some(&value), "{key}");
        }
        assert!(cost.get("wall_s").is_some() && cost.get("cpus_busy").is_some());
        // No timeslice counted: the wait per slice is unknown, not zero.
        assert_eq!(cost.get("timeslices"), Some(&Json::UInt(0)));
        assert!(cost
            .to_compact()
            .contains("\"run_queue_wait_us_per_slice\":null"));
        let waited = Usage {
            run_wait_us: 3_000,
            timeslices: 40,
            ..usage(600, 400, 30, 10)
        };
        let c = window(usage(0, 0, 0, 0), waited, Duration::from_millis(2)).cost(20);
        assert_eq!(c.run_wait_us_per_slice(), 75.0);
        let cost = c.json();
        assert_eq!(cost.get("run_queue_wait_s"), Some(&Json::Float(0.003)));
        assert_eq!(cost.get("timeslices"), Some(&Json::UInt(40)));
        assert_eq!(
            cost.get("run_queue_wait_us_per_slice"),
            Some(&Json::Float(75.0))
        );
        // Unmeasured figures are null, not missing.
        let mut empty = Json::object();
        Cost::default().add_to(&mut empty);
        assert!(empty.to_compact().contains("\"cpu_us_per_rpc\":null"));
        assert!(empty
            .to_compact()
            .contains("\"voluntary_ctx_switches\":null"));
    }
}

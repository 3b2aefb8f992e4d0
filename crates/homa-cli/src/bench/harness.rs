//! The measurement loops, written once for every transport: a transport is an
//! [`RpcClient`] that starts RPCs and reports their completions, and the same code
//! measures Homa, TCP and UDP.
//!
//! * [`unloaded`]: back-to-back RPCs of one size, one at a time (the RTT tables and the
//!   slowdown baselines);
//! * [`throughput`]: a window of one-way messages kept in flight;
//! * [`loaded`]: open-loop Poisson arrivals of workload-sized RPCs to random servers.
//!
//! Each loop reads a [`Meter`] when its measured interval begins (after the warm-up) and
//! when it ends, so that the [`Cost`] of a phase covers its measured RPCs only.

use std::time::{Duration, Instant};

use homa_eval::stats::percentile;
use homa_eval::workload::Distribution;

use super::arrivals::{Poisson, Rng};
use super::cost::{Cost, Meter, Snapshot, Window};
use super::error::BenchError;

/// A finished RPC, as a transport reports it.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    /// The tag given to [`RpcClient::start`].
    pub(crate) tag: u64,
    /// When the whole response was in the client's hands.
    pub(crate) at: Instant,
    /// Why the RPC failed, if it did.
    pub(crate) failed: Option<String>,
}

/// One transport's client side.
pub(crate) trait RpcClient {
    /// Hands a request of `request` bytes for server `server` (an index into the
    /// client's server list) to the transport; the response will have `reply` bytes.
    fn start(
        &mut self,
        server: usize,
        request: usize,
        reply: usize,
        tag: u64,
    ) -> Result<(), BenchError>;
    /// Waits until `deadline` or until at least one RPC finished, appending what finished
    /// to `done`.
    fn wait(&mut self, deadline: Instant, done: &mut Vec<Completion>) -> Result<(), BenchError>;
    /// A way for another thread to make a blocked [`start`](Self::start) or
    /// [`wait`](Self::wait) return (with an error), for transports whose calls can block
    /// indefinitely.
    fn abort_handle(&self) -> Option<AbortHandle> {
        None
    }
}

/// Makes a client's blocked calls return; see [`RpcClient::abort_handle`].
pub(crate) type AbortHandle = std::sync::Arc<dyn Fn() + Send + Sync>;

/// How long one unloaded RPC may take before it counts as lost.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// How many back-to-back RPCs to measure: at least `min`, at most `max`, stopping at
/// `min` once `time` has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) time: Duration,
    /// RPCs sent first and not measured.
    pub(crate) warmup: usize,
}

/// The RTTs of back-to-back RPCs of one size.
#[derive(Debug, Clone)]
pub(crate) struct Unloaded {
    /// Message size (request and response), bytes.
    pub(crate) size: u32,
    /// RTTs in nanoseconds, ascending.
    pub(crate) rtts_ns: Vec<f64>,
    /// RPCs that got no response in time (UDP datagrams lost).
    pub(crate) lost: usize,
    /// What the measured RPCs cost: from just before the first measured RPC started to
    /// just after the last one finished (lost RPCs in between included, not counted).
    pub(crate) cost: Cost,
}

impl Unloaded {
    /// The `p`-th percentile RTT in µs (nearest rank).
    pub(crate) fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.rtts_ns, p) / 1000.0
    }
}

/// Measures RTTs of back-to-back RPCs of `size` bytes each way to server 0, and what
/// they cost (`meter` read before the first RPC after the warm-up and after the last).
pub(crate) fn unloaded(
    client: &mut dyn RpcClient,
    what: &str,
    size: u32,
    budget: &Budget,
    meter: Meter<'_>,
) -> Result<Unloaded, BenchError> {
    let mut rtts = Vec::with_capacity(budget.max.min(100_000));
    let mut lost = 0usize;
    let mut last_failure: Option<String> = None;
    let mut done = Vec::new();
    let mut tag = 0u64;
    let mut measuring_since = None;
    let mut from = None;
    loop {
        let measured = rtts.len();
        if measured >= budget.max
            || (measured >= budget.min
                && measuring_since.is_some_and(|t: Instant| t.elapsed() >= budget.time))
        {
            break;
        }
        tag += 1;
        if tag as usize > budget.warmup && from.is_none() {
            from = Some(Snapshot::take(meter));
        }
        let t0 = Instant::now();
        client.start(0, size as usize, size as usize, tag)?;
        let deadline = t0 + RPC_TIMEOUT;
        let mut finished = None;
        while finished.is_none() && Instant::now() < deadline {
            done.clear();
            client.wait(deadline, &mut done)?;
            // Anything else is a late answer to an earlier RPC that counted as lost.
            finished = done.iter().find(|c| c.tag == tag).cloned();
        }
        match finished {
            Some(Completion {
                failed: None, at, ..
            }) => {
                if tag as usize > budget.warmup {
                    measuring_since.get_or_insert(t0);
                    rtts.push(at.duration_since(t0).as_nanos() as f64);
                }
            }
            other => {
                lost += 1;
                if let Some(Completion {
                    failed: Some(why), ..
                }) = other
                {
                    last_failure = Some(why);
                }
                if lost > 3 + rtts.len() / 10 {
                    return Err(match last_failure {
                        Some(why) => BenchError::RpcFailed {
                            what: what.to_string(),
                            why,
                        },
                        None => BenchError::NoResponse {
                            what: what.to_string(),
                            waited_s: RPC_TIMEOUT.as_secs_f64(),
                        },
                    });
                }
            }
        }
    }
    let to = Snapshot::take(meter);
    let cost = Window {
        from: from.unwrap_or(to),
        to,
    }
    .cost(rtts.len() as u64);
    rtts.sort_by(f64::total_cmp);
    Ok(Unloaded {
        size,
        rtts_ns: rtts,
        lost,
        cost,
    })
}

/// One-way throughput of back-to-back messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// Message size, bytes.
    pub(crate) size: u32,
    /// Messages kept in flight.
    pub(crate) window: usize,
    /// Payload delivered per second, Gbit/s.
    pub(crate) gbps: f64,
    /// Messages delivered per second.
    pub(crate) msgs_per_s: f64,
    /// Seconds measured.
    pub(crate) seconds: f64,
    /// What the messages delivered in the measured interval cost, over that interval.
    pub(crate) cost: Cost,
}

/// Sends `size`-byte requests (1-byte responses) to server 0 for `duration`, keeping
/// `window` in flight; counts what completes after the first `warmup`, and reads
/// `meter` when that measured interval begins and ends.
pub(crate) fn throughput(
    client: &mut dyn RpcClient,
    what: &str,
    size: u32,
    window: usize,
    warmup: Duration,
    duration: Duration,
    meter: Meter<'_>,
) -> Result<Throughput, BenchError> {
    let start = Instant::now();
    let begin = start + warmup;
    let end = begin + duration;
    let mut tag = 0u64;
    let mut outstanding = 0usize;
    let mut counted = 0u64;
    let mut done = Vec::new();
    let mut last_progress = Instant::now();
    let (mut from, mut to) = (None, None);
    for _ in 0..window {
        tag += 1;
        client.start(0, size as usize, 1, tag)?;
        outstanding += 1;
    }
    while outstanding > 0 {
        let mut now = Instant::now();
        if from.is_none() && now >= begin {
            from = Some(Snapshot::take(meter));
        }
        if to.is_none() && now >= end {
            to = Some(Snapshot::take(meter));
            now = Instant::now();
        }
        if now.duration_since(last_progress) > RPC_TIMEOUT * 5 {
            return Err(BenchError::NoResponse {
                what: what.to_string(),
                waited_s: (RPC_TIMEOUT * 5).as_secs_f64(),
            });
        }
        // Wake at the interval's edges, to read the meter there.
        let edge = if from.is_none() {
            begin
        } else if to.is_none() {
            end
        } else {
            now + RPC_TIMEOUT
        };
        done.clear();
        client.wait(edge.min(now + RPC_TIMEOUT), &mut done)?;
        for c in &done {
            outstanding -= 1;
            last_progress = c.at;
            if let Some(why) = &c.failed {
                return Err(BenchError::RpcFailed {
                    what: what.to_string(),
                    why: why.clone(),
                });
            }
            if c.at >= begin && c.at <= end {
                counted += 1;
            }
            if c.at < end {
                tag += 1;
                client.start(0, size as usize, 1, tag)?;
                outstanding += 1;
            }
        }
    }
    let to = to.unwrap_or_else(|| Snapshot::take(meter));
    let from = from.unwrap_or(to);
    let seconds = duration.as_secs_f64();
    Ok(Throughput {
        size,
        window,
        gbps: counted as f64 * f64::from(size) * 8.0 / seconds / 1e9,
        msgs_per_s: counted as f64 / seconds,
        seconds,
        cost: Window { from, to }.cost(counted),
    })
}

/// The unloaded RTT at any size: the P50 of back-to-back RPCs measured at a few sizes,
/// interpolated linearly in size between neighbouring sizes (RTT grows about linearly
/// with length: a fixed cost plus copying and transmission per byte), and held constant
/// below the smallest and above the largest measured size.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Baseline {
    /// (size, P50 RTT ns), ascending by size, sizes distinct.
    points: Vec<(u32, f64)>,
}

impl Baseline {
    /// A baseline through `points` (any order; later duplicates of a size are dropped).
    /// `None` if there is no point.
    pub(crate) fn new(mut points: Vec<(u32, f64)>) -> Option<Baseline> {
        points.retain(|p| p.1.is_finite() && p.1 > 0.0);
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        (!points.is_empty()).then_some(Baseline { points })
    }

    /// The interpolated unloaded RTT of a `size`-byte RPC, ns.
    pub(crate) fn at(&self, size: u32) -> f64 {
        let i = self.points.partition_point(|p| p.0 < size);
        if i == 0 {
            return self.points[0].1;
        }
        if i == self.points.len() {
            return self.points[i - 1].1;
        }
        let (s0, r0) = self.points[i - 1];
        let (s1, r1) = self.points[i];
        let f = f64::from(size - s0) / f64::from(s1 - s0);
        r0 + f * (r1 - r0)
    }

    /// The measured points.
    pub(crate) fn points(&self) -> &[(u32, f64)] {
        &self.points
    }
}

/// What one client thread of a loaded run does.
#[derive(Debug, Clone)]
pub(crate) struct LoadPlan {
    /// Mean RPC starts per second of this thread.
    pub(crate) rate_per_s: f64,
    /// Servers to choose from, uniformly.
    pub(crate) servers: usize,
    /// Time before measurement starts (RPCs started then are not counted).
    pub(crate) warmup: Duration,
    /// Time during which RPCs start and are measured.
    pub(crate) duration: Duration,
    /// How long to wait, after the last start, for RPCs still in flight.
    pub(crate) drain: Duration,
    /// Arrivals beyond this many RPCs in flight are skipped (and counted): the
    /// transport cannot keep up with the offered load.
    pub(crate) max_outstanding: usize,
    /// Likewise for request bytes in flight (an arrival is skipped if it would pass
    /// this, unless nothing is in flight).
    pub(crate) max_outstanding_bytes: u64,
    /// `--seed`.
    pub(crate) seed: u64,
    /// This thread's random stream.
    pub(crate) stream: u64,
}

/// What one client thread of a loaded run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// (size, RTT ns) of every RPC started in the measured interval that completed.
    pub(crate) rtts: Vec<(u32, f64)>,
    /// RPCs started (all, warm-up included).
    pub(crate) started: u64,
    /// Request bytes of the measured, completed RPCs.
    pub(crate) bytes: u64,
    /// RPCs that failed.
    pub(crate) failed: u64,
    /// Arrivals skipped because `max_outstanding` RPCs or `max_outstanding_bytes` were
    /// in flight.
    pub(crate) skipped: u64,
    /// Measured RPCs still in flight when the drain time ran out.
    pub(crate) unfinished: u64,
    /// Sum over starts of how late they were handed to the transport, ns.
    pub(crate) lag_ns: f64,
    /// The first failure's reason.
    pub(crate) first_failure: Option<String>,
    /// The measured interval (from the end of the warm-up to the last start), with the
    /// meter read at both ends; `None` if the thread stopped before it ended.
    pub(crate) window: Option<Window>,
}

impl LoadResult {
    /// Adds another thread's result.
    pub(crate) fn merge(&mut self, other: LoadResult) {
        self.rtts.extend(other.rtts);
        self.started += other.started;
        self.bytes += other.bytes;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.unfinished += other.unfinished;
        self.lag_ns += other.lag_ns;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.window = match (self.window, other.window) {
            (Some(a), Some(b)) => Some(a.union(b)),
            (a, b) => a.or(b),
        };
    }

    /// What the measured RPCs cost: the process's usage over the measured interval
    /// (every client thread's, united) per RPC started in it that completed.
    pub(crate) fn cost(&self) -> Cost {
        self.window
            .map_or_else(Cost::default, |w| w.cost(self.rtts.len() as u64))
    }
}

/// An RPC in flight in a loaded run.
#[derive(Debug, Clone, Copy)]
struct Sent {
    size: u32,
    at: Instant,
    measured: bool,
}

/// Runs one client thread of a loaded run: open-loop Poisson arrivals, sizes drawn from
/// `sizes`, destinations uniform over the servers; request and response of equal size.
/// `meter` is read when the measured interval begins and when it ends.
pub(crate) fn loaded(
    client: &mut dyn RpcClient,
    plan: &LoadPlan,
    sizes: &Distribution,
    mut tick: impl FnMut(),
    meter: Meter<'_>,
) -> Result<LoadResult, BenchError> {
    let mut arrivals = Poisson::new(plan.rate_per_s, Rng::new(plan.seed, 2 * plan.stream));
    let mut rng = Rng::new(plan.seed, 2 * plan.stream + 1);
    let mut result = LoadResult::default();
    let mut sent: Vec<Option<Sent>> = Vec::new();
    let mut outstanding = 0usize;
    let mut outstanding_bytes = 0u64;
    let mut done = Vec::new();
    let start = Instant::now();
    let begin = start + plan.warmup;
    let end = begin + plan.duration;
    let mut next = start + Duration::from_nanos(arrivals.next_ns());
    let mut next_tick = start + Duration::from_secs(1);
    let mut from = None;
    let record = |done: &[Completion],
                  sent: &mut Vec<Option<Sent>>,
                  outstanding: &mut (usize, u64),
                  result: &mut LoadResult| {
        for c in done {
            let Some(s) = sent.get_mut(c.tag as usize).and_then(Option::take) else {
                continue;
            };
            outstanding.0 -= 1;
            outstanding.1 -= u64::from(s.size);
            if let Some(why) = &c.failed {
                result.failed += 1;
                result.first_failure.get_or_insert_with(|| why.clone());
            } else if s.measured {
                result
                    .rtts
                    .push((s.size, c.at.duration_since(s.at).as_nanos() as f64));
                result.bytes += u64::from(s.size);
            }
        }
    };
    loop {
        let mut now = Instant::now();
        if now >= next_tick {
            tick();
            next_tick += Duration::from_secs(1);
        }
        if from.is_none() && now >= begin {
            from = Some(Snapshot::take(meter));
            now = Instant::now();
        }
        if now >= end {
            let to = Snapshot::take(meter);
            result.window = from.map(|from| Window { from, to });
            break;
        }
        if now >= next {
            let size = sizes.sample(rng.unit());
            let server = rng.below(plan.servers);
            let fits = outstanding == 0
                || (outstanding < plan.max_outstanding
                    && outstanding_bytes + u64::from(size) <= plan.max_outstanding_bytes);
            if fits {
                let tag = sent.len() as u64;
                sent.push(Some(Sent {
                    size,
                    at: now,
                    measured: now >= begin,
                }));
                client.start(server, size as usize, size as usize, tag)?;
                outstanding += 1;
                outstanding_bytes += u64::from(size);
                result.started += 1;
                result.lag_ns += now.duration_since(next).as_nanos() as f64;
            } else {
                result.skipped += 1;
            }
            next = start + Duration::from_nanos(arrivals.next_ns());
            continue;
        }
        // Wake at the interval's edges too, to read the meter there.
        let edge = if from.is_none() { begin } else { end };
        done.clear();
        client.wait(next.min(edge).min(next_tick), &mut done)?;
        let mut o = (outstanding, outstanding_bytes);
        record(&done, &mut sent, &mut o, &mut result);
        (outstanding, outstanding_bytes) = o;
    }
    let drain_end = Instant::now() + plan.drain;
    while outstanding > 0 && Instant::now() < drain_end {
        done.clear();
        client.wait(drain_end, &mut done)?;
        let mut o = (outstanding, outstanding_bytes);
        record(&done, &mut sent, &mut o, &mut result);
        (outstanding, outstanding_bytes) = o;
    }
    result.unfinished = sent.iter().flatten().filter(|s| s.measured).count() as u64;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cost::Usage;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn baseline_interpolates_and_clamps() {
        let b = Baseline::new(vec![(1000, 20_000.0), (100, 10_000.0), (100, 99.0)]).unwrap();
        assert_eq!(b.points(), &[(100, 10_000.0), (1000, 20_000.0)]);
        assert_eq!(b.at(100), 10_000.0);
        assert_eq!(b.at(1000), 20_000.0);
        assert_eq!(b.at(550), 15_000.0);
        assert_eq!(b.at(1), 10_000.0);
        assert_eq!(b.at(1_000_000), 20_000.0);
        assert!(Baseline::new(vec![]).is_none());
        assert!(Baseline::new(vec![(5, f64::NAN)]).is_none());
    }

    /// A transport that answers every RPC after a fixed delay, in order, and counts the
    /// RPCs it started and finished.
    struct Fake {
        delay: Duration,
        queue: std::collections::VecDeque<(u64, Instant)>,
        counts: Rc<Cell<(u64, u64)>>,
    }

    impl Fake {
        fn new(delay: Duration) -> Fake {
            Fake {
                delay,
                queue: Default::default(),
                counts: Default::default(),
            }
        }

        /// A meter that reads RPCs started as voluntary context switches and RPCs
        /// finished as involuntary ones, so that a cost shows which RPCs it covered.
        fn meter(&self) -> impl FnMut() -> Option<Usage> {
            let counts = self.counts.clone();
            move || {
                let (started, finished) = counts.get();
                Some(Usage {
                    voluntary: started,
                    involuntary: finished,
                    ..Usage::default()
                })
            }
        }
    }

    impl RpcClient for Fake {
        fn start(&mut self, _: usize, _: usize, _: usize, tag: u64) -> Result<(), BenchError> {
            self.queue.push_back((tag, Instant::now() + self.delay));
            let (s, f) = self.counts.get();
            self.counts.set((s + 1, f));
            Ok(())
        }
        fn wait(
            &mut self,
            deadline: Instant,
            done: &mut Vec<Completion>,
        ) -> Result<(), BenchError> {
            match self.queue.front() {
                Some(&(tag, at)) if at <= deadline => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    self.queue.pop_front();
                    let (s, f) = self.counts.get();
                    self.counts.set((s, f + 1));
                    done.push(Completion {
                        tag,
                        at: Instant::now(),
                        failed: None,
                    });
                }
                _ => std::thread::sleep(deadline.saturating_duration_since(Instant::now())),
            }
            Ok(())
        }
    }

    #[test]
    fn loops_work_over_any_transport() {
        let mut fake = Fake::new(Duration::from_micros(200));
        let mut meter = fake.meter();
        let budget = Budget {
            min: 5,
            max: 20,
            time: Duration::from_millis(1),
            warmup: 2,
        };
        let u = unloaded(&mut fake, "fake", 100, &budget, &mut meter).unwrap();
        assert!(u.rtts_ns.len() >= 5 && u.lost == 0);
        assert!(u.percentile_us(50.0) >= 200.0);
        // The cost covers the measured RPCs, not the warm-up ones.
        let n = u.rtts_ns.len() as u64;
        assert_eq!(fake.counts.get(), (n + 2, n + 2));
        assert_eq!(u.cost.rpcs, n);
        assert_eq!(
            u.cost.used.map(|u| (u.voluntary, u.involuntary)),
            Some((n, n))
        );

        fake.counts.set((0, 0));
        let t = throughput(
            &mut fake,
            "fake",
            1000,
            2,
            Duration::from_millis(5),
            Duration::from_millis(20),
            &mut meter,
        )
        .unwrap();
        assert!(t.msgs_per_s > 0.0);
        assert_eq!(t.cost.rpcs as f64, (t.msgs_per_s * t.seconds).round());
        // The window's first two RPCs started before the measured interval.
        let (started, _) = fake.counts.get();
        assert!(t.cost.used.is_some_and(|u| u.voluntary + 2 <= started));

        let plan = LoadPlan {
            rate_per_s: 2000.0,
            servers: 2,
            warmup: Duration::from_millis(10),
            duration: Duration::from_millis(50),
            drain: Duration::from_millis(100),
            max_outstanding: 100,
            max_outstanding_bytes: 1 << 20,
            seed: 1,
            stream: 0,
        };
        let r = loaded(
            &mut fake,
            &plan,
            &Distribution::fixed(10),
            || {},
            &mut meter,
        )
        .unwrap();
        assert!(r.started > 0);
        assert!(r.window.is_some());
        assert_eq!(r.cost().rpcs, r.rtts.len() as u64);
        assert_eq!((r.failed, r.unfinished), (0, 0));
        assert!(r.rtts.iter().all(|&(s, rtt)| s == 10 && rtt >= 200_000.0));
    }
}

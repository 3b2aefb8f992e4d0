//! One phase of one transport, written as raw samples for a program that runs many
//! clients and merges what they measured (`homa testbed` runs a `homa client` on every
//! emulated host): `homa client --phase loaded|unloaded --kind homa|tcp --raw-out PATH`.
//!
//! # Format
//!
//! Text, one record per line, fields separated by one space; the first line is
//! `homa-raw 1` (the format's version). Then, in this order:
//!
//! ```text
//! phase loaded|unloaded
//! kind homa|tcp
//! seconds <measured interval, s>
//! cpu_s <process CPU seconds over the whole phase>
//! ctx_switches <process context switches over the measured interval>
//! run_wait_us <µs the process's threads waited for a CPU, over the measured interval>
//! timeslices <times they got one, over the measured interval>
//! started <RPCs started> | failed <n> | skipped <n> | unfinished <n>   (one line each)
//! failure <text of the first failure, to the end of the line>           (if any)
//! rtt <size> <ns>                      (loaded: one per measured RPC)
//! unloaded <size> <p50 ns> <p99 ns> <count>   (unloaded: one per size)
//! ```
//!
//! [`RawPhase::parse`] reads it back; unknown keys are an error, so a reader never
//! silently misses a field.

use std::fmt::Write as _;

use super::error::BenchError;
use super::Kind;

/// The version this module writes and reads.
const VERSION: &str = "homa-raw 1";

/// Which phase a raw file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Phase {
    /// Back-to-back RPCs at each size (the slowdown baseline).
    Unloaded,
    /// The open-loop loaded run.
    Loaded,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Unloaded => "unloaded",
            Phase::Loaded => "loaded",
        }
    }
}

/// A transport a raw phase measures (the UDP ping-pong has no loaded run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RawKind {
    /// Homa (over `--transport`).
    Homa,
    /// TCP, length-prefixed messages.
    Tcp,
}

impl RawKind {
    pub(crate) fn kind(self) -> Kind {
        match self {
            RawKind::Homa => Kind::Homa,
            RawKind::Tcp => Kind::Tcp,
        }
    }
}

/// What one client process measured in one phase.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RawPhase {
    pub(crate) phase: Option<Phase>,
    pub(crate) kind: Option<RawKind>,
    pub(crate) seconds: f64,
    pub(crate) cpu_s: f64,
    pub(crate) ctx_switches: u64,
    /// Run-queue wait of the process's threads over the measured interval, µs (see
    /// [`super::cost::Usage::run_wait_us`]).
    pub(crate) run_wait_us: u64,
    /// Timeslices those threads ran over the measured interval.
    pub(crate) timeslices: u64,
    pub(crate) started: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
    pub(crate) unfinished: u64,
    pub(crate) failure: Option<String>,
    /// Loaded: (size, RTT ns) of every measured RPC.
    pub(crate) rtts: Vec<(u32, u64)>,
    /// Unloaded: (size, P50 ns, P99 ns, count).
    pub(crate) unloaded: Vec<(u32, u64, u64, u64)>,
}

impl RawPhase {
    /// The text form (see the module docs).
    pub(crate) fn to_text(&self) -> String {
        let mut o = String::with_capacity(32 + 24 * self.rtts.len());
        let _ = writeln!(o, "{VERSION}");
        if let Some(p) = self.phase {
            let _ = writeln!(o, "phase {}", p.name());
        }
        if let Some(k) = self.kind {
            let _ = writeln!(o, "kind {}", k.kind().name());
        }
        let _ = writeln!(o, "seconds {}", self.seconds);
        let _ = writeln!(o, "cpu_s {}", self.cpu_s);
        let _ = writeln!(o, "ctx_switches {}", self.ctx_switches);
        let _ = writeln!(o, "run_wait_us {}", self.run_wait_us);
        let _ = writeln!(o, "timeslices {}", self.timeslices);
        let _ = writeln!(o, "started {}", self.started);
        let _ = writeln!(o, "failed {}", self.failed);
        let _ = writeln!(o, "skipped {}", self.skipped);
        let _ = writeln!(o, "unfinished {}", self.unfinished);
        if let Some(f) = &self.failure {
            let _ = writeln!(o, "failure {}", f.replace('\n', " "));
        }
        for (size, ns) in &self.rtts {
            let _ = writeln!(o, "rtt {size} {ns}");
        }
        for (size, p50, p99, n) in &self.unloaded {
            let _ = writeln!(o, "unloaded {size} {p50} {p99} {n}");
        }
        o
    }

    /// Reads [`to_text`](Self::to_text)'s form.
    ///
    /// # Errors
    ///
    /// [`BenchError::Protocol`] naming the line that is not of the format.
    pub(crate) fn parse(text: &str) -> Result<RawPhase, BenchError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, VERSION)) => {}
            other => {
                return Err(BenchError::Protocol(format!(
                    "a raw phase file starts with `{VERSION}`, not {:?}",
                    other.map(|(_, l)| l)
                )))
            }
        }
        let mut r = RawPhase::default();
        for (n, line) in lines {
            let bad = || BenchError::Protocol(format!("raw phase line {}: {line:?}", n + 1));
            let (key, rest) = line.split_once(' ').ok_or_else(bad)?;
            let nums = |count: usize| -> Result<Vec<u64>, BenchError> {
                let v: Vec<u64> = rest
                    .split(' ')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad())?;
                if v.len() == count {
                    Ok(v)
                } else {
                    Err(bad())
                }
            };
            let float = || rest.parse::<f64>().map_err(|_| bad());
            match key {
                "phase" => {
                    r.phase = Some(match rest {
                        "loaded" => Phase::Loaded,
                        "unloaded" => Phase::Unloaded,
                        _ => return Err(bad()),
                    })
                }
                "kind" => {
                    r.kind = Some(match rest {
                        "homa" => RawKind::Homa,
                        "tcp" => RawKind::Tcp,
                        _ => return Err(bad()),
                    })
                }
                "seconds" => r.seconds = float()?,
                "cpu_s" => r.cpu_s = float()?,
                "ctx_switches" => r.ctx_switches = nums(1)?[0],
                "run_wait_us" => r.run_wait_us = nums(1)?[0],
                "timeslices" => r.timeslices = nums(1)?[0],
                "started" => r.started = nums(1)?[0],
                "failed" => r.failed = nums(1)?[0],
                "skipped" => r.skipped = nums(1)?[0],
                "unfinished" => r.unfinished = nums(1)?[0],
                "failure" => r.failure = Some(rest.to_string()),
                "rtt" => {
                    let v = nums(2)?;
                    r.rtts.push((u32::try_from(v[0]).map_err(|_| bad())?, v[1]));
                }
                "unloaded" => {
                    let v = nums(4)?;
                    let size = u32::try_from(v[0]).map_err(|_| bad())?;
                    r.unloaded.push((size, v[1], v[2], v[3]));
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_reads_back_as_written() {
        let r = RawPhase {
            phase: Some(Phase::Loaded),
            kind: Some(RawKind::Tcp),
            seconds: 2.5,
            cpu_s: 0.125,
            ctx_switches: 77,
            run_wait_us: 4_321,
            timeslices: 99,
            started: 10,
            failed: 1,
            skipped: 2,
            unfinished: 0,
            failure: Some("RPC 4 to 10.0.0.1:4000 timed out".into()),
            rtts: vec![(100, 12_345), (1_000_000, 9_876_543)],
            unloaded: vec![(100, 10_000, 20_000, 50)],
        };
        assert_eq!(RawPhase::parse(&r.to_text()).unwrap(), r);
    }

    #[test]
    fn anything_else_is_refused_with_its_line() {
        assert!(RawPhase::parse("homa-raw 2\n").is_err());
        let e = RawPhase::parse("homa-raw 1\nrtt 100\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(RawPhase::parse("homa-raw 1\nrtt 100 x\n").is_err());
        assert!(RawPhase::parse("homa-raw 1\nbogus 1\n").is_err());
        assert!(RawPhase::parse("homa-raw 1\nrtt 5000000000 1\n").is_err());
    }
}

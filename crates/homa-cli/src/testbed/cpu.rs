//! CPU accounting from `/proc`: a process's CPU seconds (`/proc/<pid>/stat`, user +
//! system time of all its threads) and the machine's busy fraction over an interval
//! (`/proc/stat`), so that the report can show whether the CPU limited a run.

use std::fs;

/// Clock ticks per second of the `/proc` time fields (`sysconf(_SC_CLK_TCK)`, 100 on
/// Linux when it cannot be read).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer and touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may hold spaces, so fields are counted
/// after the last `)`.
pub(crate) fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// CPU seconds (user + system, every thread) process `pid` has used so far; `None` if it
/// is gone or its stat file cannot be read.
pub(crate) fn process_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_process_ticks(&stat)? as f64 / ticks_per_second())
}

/// The machine's aggregate CPU time at one moment (`/proc/stat`, line `cpu`), in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MachineTicks {
    /// Every state but idle and iowait: user, nice, system, irq, softirq, steal.
    pub(crate) busy: u64,
    /// idle + iowait.
    pub(crate) idle: u64,
}

impl MachineTicks {
    /// The fraction of all CPUs' time that was busy between `earlier` and `self`; `None`
    /// if no time passed.
    pub(crate) fn busy_since(&self, earlier: &MachineTicks) -> Option<f64> {
        let busy = self.busy.saturating_sub(earlier.busy);
        let idle = self.idle.saturating_sub(earlier.idle);
        let total = busy + idle;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// Parses the `cpu` line of `/proc/stat`: `cpu user nice system idle iowait irq softirq
/// steal guest guest_nice` (guest time is already counted in user time).
pub(crate) fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    Some(MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6) + field(7),
        idle: field(3) + field(4),
    })
}

/// The machine's CPU ticks now; `None` if `/proc/stat` cannot be read.
pub(crate) fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&fs::read_to_string("/proc/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_are_fields_14_and_15() {
        // Fields 3..=52 numbered by their position, after an odd command name.
        let fields: String = (3..=52).map(|i| format!(" {i}")).collect();
        let stat = format!("77 (homa (x) y){fields}");
        assert_eq!(parse_process_ticks(&stat), Some(14 + 15));
        assert_eq!(parse_process_ticks("77 (x) R 1 2"), None);
        assert_eq!(parse_process_ticks("no parenthesis"), None);
        let me = process_seconds(std::process::id()).expect("this process's stat");
        assert!(me >= 0.0);
    }

    #[test]
    fn machine_busy_fraction_leaves_out_idle_and_iowait() {
        let a = parse_machine_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            MachineTicks {
                busy: 150,
                idle: 850
            }
        );
        let b = parse_machine_ticks("cpu  200 10 90 900 50 5 5 0 0 0\n").unwrap();
        // busy +160, idle +100.
        assert_eq!(b.busy_since(&a), Some(160.0 / 260.0));
        assert_eq!(a.busy_since(&a), None);
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 x 3 4\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2\n"), None);
        assert!(machine_ticks().is_some());
    }
}

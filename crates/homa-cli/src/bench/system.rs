//! What the report records about the machine: CPU, kernel, path MTU; and CPU time used.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::cost::Usage;

/// Facts about the machine a run was made on.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Host name.
    pub(crate) hostname: String,
    /// CPU model (from /proc/cpuinfo).
    pub(crate) cpu: String,
    /// CPUs online.
    pub(crate) cpus: usize,
    /// Kernel release (`uname -r`).
    pub(crate) kernel: String,
    /// The 1-minute load average when the run started (other work on a shared machine
    /// disturbs the measurements).
    pub(crate) loadavg: Option<f64>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Machine {
    /// Reads the facts (unknown ones are "unknown").
    pub(crate) fn probe() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            hostname: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            loadavg: read_trimmed("/proc/loadavg")
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok())),
        }
    }
}

/// The MTU of network interface `name` (from sysfs).
pub(crate) fn interface_mtu(name: &str) -> Option<u32> {
    read_trimmed(&format!("/sys/class/net/{name}/mtu"))?
        .parse()
        .ok()
}

/// The MTU of the path to `dest`, as the kernel knows it (`IP_MTU` / `IPV6_MTU` of a
/// connected UDP socket); loopback gives 65536.
pub(crate) fn path_mtu(dest: SocketAddr) -> Option<u32> {
    let any: SocketAddr = if dest.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(dest).ok()?;
    let (level, name) = if dest.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `mtu` and `len` are valid for writes and `len` holds the size of `mtu`;
    // the descriptor is open for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && mtu > 0).then_some(mtu as u32)
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: forever).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd
    // structures; `ts_ptr` is null or points to a timespec that outlives the call; a null
    // signal mask leaves the mask unchanged.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Like [`poll`], but first busy-polls for up to `spin`, as the Homa socket does before
/// it sleeps (`SocketConfig::busy_poll`): non-blocking polls (`ppoll` with a zero
/// timeout) with `sched_yield` between them, so that a peer sharing this CPU (the other
/// end of a loopback RPC on a busy machine) runs at once instead of after the whole
/// spin; then one blocking `ppoll` for the rest of `timeout`. Every transport of the
/// benchmark waits this way, with the same `spin` (`--busy-poll-us`), so the comparison
/// is about protocols, not about wake-up latency or who hogs a core.
pub(crate) fn poll_spin(
    fds: &mut [libc::pollfd],
    timeout: Option<Duration>,
    spin: Duration,
) -> io::Result<usize> {
    let start = Instant::now();
    let spin = timeout.map_or(spin, |t| t.min(spin));
    if !spin.is_zero() {
        loop {
            let n = poll(fds, Some(Duration::ZERO))?;
            if n > 0 {
                return Ok(n);
            }
            if start.elapsed() >= spin {
                break;
            }
            std::thread::yield_now();
        }
    }
    poll(fds, timeout.map(|t| t.saturating_sub(start.elapsed())))
}

fn rusage_self() -> Option<libc::rusage> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is valid for writes of one rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    (r == 0).then_some(u)
}

/// CPU seconds (user + system) this process has used so far, all threads together.
pub(crate) fn cpu_seconds() -> f64 {
    usage().map_or(f64::NAN, |u| u.cpu_us() as f64 / 1e6)
}

/// What this process has used so far (`getrusage(RUSAGE_SELF)`): CPU time and context
/// switches of all its threads, those running and those finished; and the run-queue
/// wait and timeslices of its live threads ([`run_queue`]). In `homa bench` the servers
/// are threads of this process, so both ends of every RPC are counted.
pub(crate) fn usage() -> Option<Usage> {
    let u = rusage_self()?;
    let us = |t: libc::timeval| (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64;
    let rq = run_queue(std::process::id()).unwrap_or_default();
    Some(Usage {
        user_us: us(u.ru_utime),
        system_us: us(u.ru_stime),
        voluntary: u.ru_nvcsw.max(0) as u64,
        involuntary: u.ru_nivcsw.max(0) as u64,
        run_wait_us: rq.wait_ns / 1000,
        timeslices: rq.timeslices,
    })
}

/// How long a process's threads waited for a CPU, from the scheduler's own accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunQueue {
    /// Time runnable but not running, ns, summed over the live threads.
    pub(crate) wait_ns: u64,
    /// Times a thread was put on a CPU, summed over the live threads.
    pub(crate) timeslices: u64,
}

impl RunQueue {
    /// What accrued between `earlier` and `self` (zero where a sum went down: a thread
    /// exited in between).
    pub(crate) fn since(self, earlier: RunQueue) -> RunQueue {
        RunQueue {
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
    }
}

/// Parses a `schedstat` file: `<ns on a CPU> <ns runnable, waiting for a CPU>
/// <timeslices>`.
pub(crate) fn parse_schedstat(text: &str) -> Option<RunQueue> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let _on_cpu = fields.next()?.ok()?;
    Some(RunQueue {
        wait_ns: fields.next()?.ok()?,
        timeslices: fields.next()?.ok()?,
    })
}

/// The run-queue wait of process `pid`: the sum of `/proc/<pid>/task/*/schedstat` over
/// its live threads (`/proc/<pid>/schedstat` covers the main thread only). `None` if the
/// process is gone or the kernel keeps no such figures (no `CONFIG_SCHED_INFO`).
pub(crate) fn run_queue(pid: u32) -> Option<RunQueue> {
    let mut sum = RunQueue::default();
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread may exit between the listing and the read: it then counts for nothing.
        let Some(rq) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t))
        else {
            continue;
        };
        sum.wait_ns += rq.wait_ns;
        sum.timeslices += rq.timeslices;
        any = true;
    }
    any.then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_do_not_fail() {
        let m = Machine::probe();
        assert!(m.cpus >= 1);
        assert!(cpu_seconds() >= 0.0);
        let (a, b) = (usage().unwrap(), usage().unwrap());
        assert!(b.cpu_us() >= a.cpu_us() && b.switches() >= a.switches());
        assert!(path_mtu("127.0.0.1:9".parse().unwrap()).is_some_and(|m| m >= 1280));
        assert!(interface_mtu("no-such-interface").is_none());
    }

    #[test]
    fn schedstat_is_wait_and_timeslices() {
        assert_eq!(
            parse_schedstat("255681874 52332842 1263\n"),
            Some(RunQueue {
                wait_ns: 52_332_842,
                timeslices: 1263
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
        assert_eq!(parse_schedstat("1 x 3"), None);
        let later = RunQueue {
            wait_ns: 10,
            timeslices: 5,
        };
        let earlier = RunQueue {
            wait_ns: 4,
            timeslices: 7,
        };
        assert_eq!(
            later.since(earlier),
            RunQueue {
                wait_ns: 6,
                timeslices: 0
            }
        );
        assert!(run_queue(u32::MAX).is_none());
        // Where the kernel keeps the figures, this process has its test thread, which ran.
        if std::path::Path::new("/proc/self/schedstat").exists() {
            let me = run_queue(std::process::id()).expect("schedstat of this process");
            assert!(me.timeslices >= 1);
        }
    }
}

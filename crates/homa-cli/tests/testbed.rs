//! `homa testbed` end to end: the emulated switch really serves a high-priority packet
//! before low-priority ones queued ahead of it (asserted by arrival order, never by
//! time), and every namespace a run creates is gone after it — at a normal exit, on
//! SIGINT / SIGTERM, after a failure at each build stage — while stale namespaces of a
//! killed run are swept and foreign ones are left alone.
//!
//! Needs root (namespaces, veths, qdiscs) and `ip`, `tc`, `ethtool`: without them each
//! such test prints a skip message and passes — or fails when
//! HOMA_TEST_REQUIRE_PRIVILEGED=1 (CI), as in homa-socket's privileged tests.
//!
//! Written for a busy 2-core machine: the tests that build racks run one at a time, no
//! sleep waits for an event (conditions are polled, each with a generous deadline), all
//! ports are ephemeral, and the traffic is bounded in count.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

mod common;
use common::{effective_uid, namespaces_of, on_path, privileged, serial, skip_or_fail, NETNS_DIR};

/// Upper bound of every wait for an event; it only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// How often a polled condition is looked at again.
const POLL: Duration = Duration::from_millis(10);

/// Where `homa testbed` keeps its ownership markers.
const MARKER_DIR: &str = "/run/homa-testbed";

fn homa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homa"))
}

fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

fn marker_exists(pid: u32) -> bool {
    Path::new(MARKER_DIR).join(pid.to_string()).exists()
}

/// Polls `condition` every [`POLL`] until it holds (true) or [`WAIT_LIMIT`] passes.
fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for `child` to exit, bounded by [`WAIT_LIMIT`].
fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    let exited = wait_until(|| {
        status = child.try_wait().expect("waiting for homa testbed");
        status.is_some()
    });
    assert!(exited, "homa testbed did not exit within {WAIT_LIMIT:?}");
    status.unwrap()
}

/// One host of a held rack, as `homa testbed` printed it.
#[derive(Debug, Clone)]
struct HostInfo {
    netns: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl HostInfo {
    fn addr(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }
}

/// A `homa testbed --hold` process: the rack stays up until [`HeldRack::finish`] closes
/// its stdin. Dropped without `finish` (a failed test), it is asked to tear down all the
/// same (stdin closed, then SIGTERM).
struct HeldRack {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    printed: Vec<String>,
    switch: String,
    hosts: Vec<HostInfo>,
}

impl HeldRack {
    /// Starts `homa testbed --hold --skip-checks` with `args` and waits until it holds.
    fn start(args: &[&str]) -> HeldRack {
        let mut child = homa()
            .args(["testbed", "--hold", "--skip-checks"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting homa testbed");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut rack = HeldRack {
            child,
            stdin,
            lines,
            printed: Vec::new(),
            switch: String::new(),
            hosts: Vec::new(),
        };
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rack.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "homa testbed did not reach --hold; it printed:\n{}",
                    rack.printed.join("\n")
                ),
            };
            rack.printed.push(line.clone());
            if let Some(name) = line.trim().strip_prefix("switch: netns ") {
                rack.switch = name.to_string();
            }
            if let Some(host) = parse_host_line(&line) {
                rack.hosts.push(host);
            }
            if line.starts_with("holding the rack") {
                break;
            }
        }
        assert!(
            !rack.switch.is_empty(),
            "no switch line in {:?}",
            rack.printed
        );
        rack
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every namespace the rack consists of.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts.iter().map(|h| h.netns.clone()).collect();
        names.push(self.switch.clone());
        names.sort();
        names
    }

    /// Closes stdin (the rack is torn down), waits for the exit; returns its status and
    /// everything it printed.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child);
        let mut printed = std::mem::take(&mut self.printed);
        printed.extend(self.lines.try_iter());
        (status, printed)
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the process and waits for its exit.
    fn signal(mut self, signal: i32) -> (ExitStatus, Vec<String>) {
        send_signal(self.pid(), signal).expect("kill(2)");
        let status = wait_exit(&mut self.child);
        let mut printed = std::mem::take(&mut self.printed);
        printed.extend(self.lines.try_iter());
        (status, printed)
    }
}

impl Drop for HeldRack {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = send_signal(self.child.id(), libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// Parses `  host 0: netns homa-tb-1-h0, eth0 198.18.0.2 2001:2::2, switch port …`.
fn parse_host_line(line: &str) -> Option<HostInfo> {
    let rest = line.trim().strip_prefix("host ")?;
    let (_, rest) = rest.split_once(": netns ")?;
    let mut parts = rest.split(", ");
    let netns = parts.next()?.to_string();
    let mut addrs = parts.next()?.split_whitespace().skip(1);
    Some(HostInfo {
        netns,
        ipv4: addrs.next()?.parse().ok()?,
        ipv6: addrs.next()?.parse().ok()?,
    })
}

/// Runs `f` on a thread inside network namespace `netns` (sockets it creates live there).
fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(Path::new(NETNS_DIR).join(netns)).expect("opening the namespace");
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(&file).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn enter_netns(file: &File) -> io::Result<()> {
    // SAFETY: setns(2) reads a descriptor that `file` keeps open for the call and changes
    // only the calling thread's network namespace; no memory of ours is touched.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to process `pid` (a child of this test, not yet reaped).
fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes two integers and touches no memory; `pid` is our own child,
    // not reaped yet, so the number cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt_int(socket: &UdpSocket, level: i32, name: i32, value: i32) {
    // SAFETY: `value` outlives the call and its size is passed; `socket` keeps the
    // descriptor open; setsockopt only reads the option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// A UDP socket inside `netns` on an ephemeral port, sending with TOS / traffic class
/// `tos`.
fn socket_in(netns: &str, ipv6: bool, tos: u8) -> UdpSocket {
    in_netns(netns, || {
        let any: IpAddr = if ipv6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let s = UdpSocket::bind(SocketAddr::new(any, 0)).expect("binding a UDP socket");
        if ipv6 {
            setsockopt_int(&s, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, i32::from(tos));
        } else {
            setsockopt_int(&s, libc::IPPROTO_IP, libc::IP_TOS, i32::from(tos));
        }
        s
    })
}

/// The backlog (bytes, packets) of class `classid` on `dev` in `netns`, from `tc -s`.
fn class_backlog(netns: &str, dev: &str, classid: &str) -> (u64, u64) {
    let out = Command::new("tc")
        .args([
            "-n", netns, "-s", "class", "show", "dev", dev, "classid", classid,
        ])
        .output()
        .expect("running tc");
    assert!(
        out.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("backlog "))
        .unwrap_or_else(|| panic!("no backlog line in {text}"));
    let mut words = line.split_whitespace();
    let size = words.next().unwrap();
    let packets: u64 = words.next().unwrap().trim_end_matches('p').parse().unwrap();
    let bytes = if let Some(k) = size.strip_suffix("Kb") {
        k.parse::<u64>().unwrap() << 10
    } else if let Some(m) = size.strip_suffix("Mb") {
        m.parse::<u64>().unwrap() << 20
    } else {
        size.trim_end_matches('b').parse().unwrap()
    };
    (bytes, packets)
}

/// A datagram: a one-byte kind, then a big-endian sequence number, padded to `len`.
fn datagram(kind: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len.max(5)];
    d[0] = kind;
    d[1..5].copy_from_slice(&seq.to_be_bytes());
    d
}

const LOW: u8 = b'L';
const HIGH: u8 = b'H';
const FLOOD: u8 = b'F';

/// Receives on `socket` until `count` probe datagrams (kinds LOW/HIGH) arrived, in
/// arrival order; panics after [`WAIT_LIMIT`].
fn receive_probes(socket: &UdpSocket, count: usize) -> Vec<(u8, u32)> {
    socket.set_read_timeout(Some(POLL)).unwrap();
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {got:?} of {count} probes arrived within {WAIT_LIMIT:?}"
        );
        match socket.recv(&mut buf) {
            Ok(n) if n >= 5 && (buf[0] == LOW || buf[0] == HIGH) => {
                got.push((buf[0], u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]])));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receiving probes: {e}"),
        }
    }
    got
}

/// Low-priority probes sent ahead of the high one in each round.
const LOW_PROBES: u32 = 5;

/// Flood datagrams queued at the switch port before the probes (at 10 Mbit/s they take
/// about half a second to drain; at 1514 bytes each they fit the 1 MiB class buffer).
const FLOOD_PACKETS: u32 = 400;

/// One round: a burst of level-0 datagrams from the switch namespace fills the port
/// toward host 1, then host 0 sends LOW_PROBES level-0 probes and one level-7 probe to
/// host 1. Returns the probes' arrival order, or `None` if the queue had drained before
/// the probes were in it (the round proves nothing and is run again).
fn priority_round(rack: &HeldRack, ipv6: bool, round: u32) -> Option<Vec<(u8, u32)>> {
    let (h0, h1) = (&rack.hosts[0], &rack.hosts[1]);
    let probe_rx = socket_in(&h1.netns, ipv6, 0);
    let probe_to = SocketAddr::new(h1.addr(ipv6), probe_rx.local_addr().unwrap().port());
    // Bound, never read: the flood's destination exists, so no ICMP errors come back.
    let flood_rx = socket_in(&h1.netns, ipv6, 0);
    let flood_to = SocketAddr::new(h1.addr(ipv6), flood_rx.local_addr().unwrap().port());
    let low = socket_in(&h0.netns, ipv6, 0x00);
    let high = socket_in(&h0.netns, ipv6, 0xE0);
    let flood = socket_in(&rack.switch, ipv6, 0x00);
    // The burst must go into the qdisc at once, not wait for the socket's buffer.
    setsockopt_int(&flood, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);

    // Warm-up: one probe of each kind gets through, so every neighbour entry on the path
    // (host 0 → switch → host 1) is resolved before the burst.
    low.send_to(&datagram(LOW, 1_000 + round, 64), probe_to)
        .unwrap();
    high.send_to(&datagram(HIGH, 1_000 + round, 64), probe_to)
        .unwrap();
    let warm = receive_probes(&probe_rx, 2);
    assert_eq!(warm.len(), 2);

    // The queue of the last round, if any, has drained.
    assert!(
        wait_until(|| class_backlog(&rack.switch, "p1", "1:10").1 == 0),
        "the level-0 queue of p1 never drained"
    );
    let payload = if ipv6 { 1452 } else { 1472 };
    for seq in 0..FLOOD_PACKETS {
        flood
            .send_to(&datagram(FLOOD, seq, payload), flood_to)
            .unwrap();
    }
    assert!(
        wait_until(|| class_backlog(&rack.switch, "p1", "1:10").1 >= u64::from(FLOOD_PACKETS) / 2),
        "the burst never stood in p1's level-0 queue"
    );
    for seq in 0..LOW_PROBES {
        low.send_to(&datagram(LOW, seq, 200), probe_to).unwrap();
    }
    high.send_to(&datagram(HIGH, 0, 200), probe_to).unwrap();
    // The probes were sent; if the queue still holds far more than them, the low ones
    // joined it behind the burst (the queue only shrinks once the burst is in).
    let standing = class_backlog(&rack.switch, "p1", "1:10").1 >= u64::from(LOW_PROBES) + 50;
    let order = receive_probes(&probe_rx, LOW_PROBES as usize + 1);
    drop(flood_rx);
    standing.then_some(order)
}

fn assert_high_first(order: &[(u8, u32)], what: &str) {
    let lows: BTreeSet<u32> = order
        .iter()
        .filter(|(k, _)| *k == LOW)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        lows,
        (0..LOW_PROBES).collect(),
        "{what}: every low-priority probe arrives (no queue overflowed): {order:?}"
    );
    assert_eq!(
        order.first(),
        Some(&(HIGH, 0)),
        "{what}: the high-priority probe, sent after {LOW_PROBES} low ones, must arrive \
         before all of them: arrival order {order:?}"
    );
}

/// The emulated switch queues by priority, over IPv4 (TOS byte) and IPv6 (traffic
/// class): a level-7 probe sent after five level-0 probes overtakes them (and the
/// standing level-0 queue ahead of them) at the switch port. A FIFO port would deliver
/// the five first.
#[test]
fn switch_port_serves_high_priority_before_low_priority_sent_earlier() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    let rack = HeldRack::start(&["--hosts", "2", "--link-mbps", "10", "--buffer", "1M"]);
    assert_eq!(rack.hosts.len(), 2, "{:?}", rack.printed);
    for ipv6 in [false, true] {
        let what = if ipv6 { "IPv6" } else { "IPv4" };
        let mut valid = 0;
        for round in 0..3 {
            if let Some(order) = priority_round(&rack, ipv6, round) {
                assert_high_first(&order, what);
                valid += 1;
                break;
            }
        }
        assert!(
            valid > 0,
            "{what}: in 3 rounds the queue never stood while probing"
        );
    }
    let names = rack.names();
    let pid = rack.pid();
    let (status, printed) = rack.finish();
    assert!(status.success(), "{status}: {printed:?}");
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("teardown: removed 3 of 3")),
        "{printed:?}"
    );
    for name in &names {
        assert!(
            !netns_exists(name),
            "{name} left behind after a normal exit"
        );
    }
    assert!(!marker_exists(pid), "marker of {pid} left behind");
}

/// SIGINT (Ctrl-C) and SIGTERM tear the whole rack down before the process exits.
#[test]
fn a_signal_tears_down_every_namespace() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let rack = HeldRack::start(&["--hosts", "3"]);
        let (names, pid) = (rack.names(), rack.pid());
        assert_eq!(names.len(), 4, "{:?}", rack.printed);
        assert_eq!(namespaces_of(pid), names, "the rack is what it printed");
        assert!(marker_exists(pid));
        let (status, printed) = rack.signal(signal);
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{signal}: {status} {printed:?}"
        );
        assert_eq!(
            namespaces_of(pid),
            Vec::<String>::new(),
            "SIG{signal} left namespaces"
        );
        assert!(!marker_exists(pid), "SIG{signal} left the marker");
    }
}

/// A failure after each build stage (injected) still removes every namespace created.
#[test]
fn a_failure_at_any_build_stage_tears_down_every_namespace() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    for stage in ["namespaces", "links", "shaping"] {
        let child = homa()
            .args(["testbed", "--hosts", "3", "--inject-failure", stage])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{stage}: the injected failure must fail the run"
        );
        assert!(
            stderr.contains("failure injected after"),
            "{stage}: stderr {stderr}"
        );
        assert_eq!(
            namespaces_of(pid),
            Vec::<String>::new(),
            "{stage}: left namespaces"
        );
        assert!(!marker_exists(pid), "{stage}: left the marker");
    }
}

/// The namespaces of a run killed with SIGKILL (no teardown possible) are removed by the
/// next run; a prefixed namespace no marker vouches for is left alone.
#[test]
fn the_next_run_sweeps_a_killed_runs_namespaces_but_not_foreign_ones() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    /// Deletes the foreign namespace even if the test fails.
    struct Foreign(String);
    impl Drop for Foreign {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    // A pid no process has (above the kernel's maximum, 2^22).
    let foreign = Foreign("homa-tb-4999999-zz".to_string());
    let ok = Command::new("ip")
        .args(["netns", "add", &foreign.0])
        .status()
        .unwrap();
    assert!(ok.success(), "ip netns add {}", foreign.0);

    let killed = HeldRack::start(&["--hosts", "2"]);
    let (names, pid) = (killed.names(), killed.pid());
    let (status, _) = killed.signal(libc::SIGKILL);
    assert_eq!(status.code(), None, "SIGKILL ends it without an exit code");
    assert_eq!(namespaces_of(pid), names, "SIGKILL leaves the rack behind");
    assert!(marker_exists(pid));

    let out = homa()
        .args([
            "testbed",
            "--hosts",
            "2",
            "--skip-checks",
            "--skip-experiment",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in &names {
        assert!(
            stdout.contains(&format!("removed stale namespace {name}")),
            "{name} not reported as swept: {stdout}"
        );
        assert!(!netns_exists(name), "{name} not swept");
    }
    assert!(!marker_exists(pid), "the killed run's marker was not swept");
    assert!(
        netns_exists(&foreign.0),
        "the foreign namespace was touched"
    );
    assert!(
        stdout.contains(&format!("leaving {} alone", foreign.0)),
        "{stdout}"
    );
}

/// A full run of the checks: both print their measurements and pass; with
/// `--skip-experiment` it says so and measures nothing more.
#[test]
fn a_full_run_checks_the_emulation_and_prints_it() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    let child = homa()
        .args([
            "testbed",
            "--hosts",
            "2",
            "--link-mbps",
            "20",
            "--buffer",
            "128K",
            "--skip-experiment",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "check 1, bulk transfer",
        "of the link rate",
        "check 2, priority at switch port p1",
        "unloaded RTT: TOS 0xe0 median",
        "under flood: TOS 0xe0 median",
        "verdict: PASS",
        "RTT-bytes per host pair",
        "unsched_bytes = window =",
        "experiment: skipped (--skip-experiment)",
        "teardown: removed 3 of 3 namespaces",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

/// Bad options are refused with the option named, before anything needs root.
#[test]
fn options_out_of_range_are_refused_with_the_option_named() {
    for (args, needle) in [
        (
            vec!["--hosts", "1"],
            "--hosts 1: out of range; allowed: 2..=16",
        ),
        (vec!["--hosts", "17"], "--hosts 17: out of range"),
        (vec!["--link-mbps", "5"], "--link-mbps 5: out of range"),
        (vec!["--buffer", "12Q"], "--buffer 12Q: out of range"),
    ] {
        let out = homa().arg("testbed").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Without root, `homa testbed` says it needs root (run as `nobody` when the tests run as
/// root).
#[test]
fn without_root_it_says_it_needs_root() {
    let mut command = if effective_uid() == Some(0) {
        if !on_path("setpriv") {
            skip_or_fail("running as root and setpriv (util-linux) is missing to drop it");
            return;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_homa"));
        c
    } else {
        homa()
    };
    let out = command.args(["testbed", "--hosts", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran without root: {stderr}");
    assert!(stderr.contains("homa testbed needs root"), "{stderr}");
    assert!(
        stderr.contains("uid 65534") || effective_uid() != Some(0),
        "{stderr}"
    );
}

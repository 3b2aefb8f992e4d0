//! Shared helpers for the socket tests: servers on loopback, over each transport and
//! IP version, on ports chosen at random; a protocol configuration with timeouts long
//! enough for a busy machine; bounded waits; and skipping the raw-IP setups where the
//! process lacks CAP_NET_RAW.
//!
//! Rules the helpers encode, for new test files:
//! * never a fixed port: [`Server::start`] / [`bind_server`] pick a free server port,
//!   clients use `Socket::new` (automatic port), [`unused_server_port`] gives a port
//!   nobody serves;
//! * never sleep to wait for something: wait for the event itself (a channel, a
//!   response), bounded by [`WAIT_LIMIT`] / [`RECV_LIMIT`] only to turn a hang into a
//!   failure;
//! * the protocol timeout is [`TIMEOUT_TICKS`] (10 s) unless a test needs a timeout to
//!   fire, in which case it sets a short one with [`config_with_timeout`];
//! * iterate over [`setups()`], not [`ALL_SETUPS`]: it leaves out (and reports) the raw
//!   setups when raw sockets cannot be opened.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use homa_socket::{Error, Socket, SocketConfig, TransportKind, Want};

/// The four ways a socket can reach the network. Tests iterate over [`setups()`], which
/// leaves out the raw ones when they cannot run.
pub(crate) const ALL_SETUPS: [(TransportKind, bool); 4] = [
    (TransportKind::Udp, false),
    (TransportKind::Udp, true),
    (TransportKind::RawIp, false),
    (TransportKind::RawIp, true),
];

/// Protocol timeout of the tests' sockets, in ticks of 1 ms: 10 s, so that a process
/// descheduled for a while on a busy machine does not see its RPCs aborted.
pub(crate) const TIMEOUT_TICKS: u32 = 10_000;

/// How long a test waits for a response (`recv_timeout`): well above [`TIMEOUT_TICKS`],
/// so an RPC that the protocol gives up on reports the protocol's error, and a
/// `Error::Timeout` means the library hung.
pub(crate) const RECV_LIMIT: Duration = Duration::from_secs(60);

/// Upper bound of every other wait for an event (see [`wait_for`]): it only turns a hang
/// into a failure.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Server ports the tests pick from (Homa server ports are 1..=32767; the low ones are
/// left to real services and to `homa server`'s defaults).
pub(crate) const SERVER_PORTS: std::ops::RangeInclusive<u16> = 10_000..=32_767;

/// How many random ports [`bind_server`] tries before giving up.
pub(crate) const BIND_TRIES: usize = 100;

/// What a skipped raw setup prints, and why a required one fails.
pub(crate) const NEEDS_CAP_NET_RAW: &str = "raw IP tests need CAP_NET_RAW (run as root)";

/// The environment variable that turns skipped raw-IP setups into failures (CI sets it).
pub(crate) const REQUIRE_PRIVILEGED: &str = "HOMA_TEST_REQUIRE_PRIVILEGED";

/// The protocol settings of the tests: the defaults with [`TIMEOUT_TICKS`]. Change more
/// on the builder, then `.build().unwrap()` and pass it to `SocketConfig::protocol`.
pub(crate) fn protocol() -> homa_proto::ConfigBuilder {
    homa_proto::Config::builder().timeout_ticks(TIMEOUT_TICKS)
}

/// A socket configuration for one setup, with the tests' protocol settings.
pub(crate) fn config(kind: TransportKind, ipv6: bool) -> SocketConfig {
    SocketConfig::default()
        .transport(kind)
        .ipv6(ipv6)
        .protocol(protocol().build().unwrap())
}

/// Like [`config`] with a protocol timeout of `ticks` ms, for tests that need the
/// timeout to fire (a server that stays silent). Wait for its outcome with
/// [`RECV_LIMIT`] all the same.
pub(crate) fn config_with_timeout(kind: TransportKind, ipv6: bool, ticks: u32) -> SocketConfig {
    config(kind, ipv6).protocol(protocol().timeout_ticks(ticks).build().unwrap())
}

pub(crate) fn label(kind: TransportKind, ipv6: bool) -> String {
    format!("{kind:?}/{}", if ipv6 { "IPv6" } else { "IPv4" })
}

/// Whether `e` is a failed system call with this `errno`.
pub(crate) fn is_os_error(e: &Error, errno: i32) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(errno))
}

/// Whether `e` says the port is taken (EADDRINUSE).
pub(crate) fn is_addr_in_use(e: &Error) -> bool {
    is_os_error(e, libc::EADDRINUSE)
}

/// Whether raw IP sockets can be opened here. Checked once per test binary (by opening
/// a raw client socket); a permission failure (EPERM, EACCES) means no CAP_NET_RAW, any
/// other failure is a bug and panics.
fn raw_ip_permitted() -> Result<(), &'static str> {
    static PERMITTED: OnceLock<Result<(), String>> = OnceLock::new();
    PERMITTED
        .get_or_init(|| match Socket::new(config(TransportKind::RawIp, false)) {
            Ok(_) => Ok(()),
            Err(e) if is_os_error(&e, libc::EPERM) || is_os_error(&e, libc::EACCES) => {
                Err(e.to_string())
            }
            Err(e) => {
                panic!("opening a raw IP socket failed for another reason than permission: {e}")
            }
        })
        .as_ref()
        .map(|_| ())
        .map_err(String::as_str)
}

/// Whether the test may run the raw-IP setup `what`. Without CAP_NET_RAW it prints
/// `<what>: skipped: raw IP tests need CAP_NET_RAW (run as root)` to stderr (past the
/// test harness's output capture, so it shows in every run) and returns false — unless
/// `HOMA_TEST_REQUIRE_PRIVILEGED=1`, in which case it panics with that reason.
pub(crate) fn raw_ip_available(what: &str) -> bool {
    let Err(why) = raw_ip_permitted() else {
        return true;
    };
    skip_or_fail(&format!("{what}: {NEEDS_CAP_NET_RAW} ({why})"));
    false
}

/// Reports that a privileged part of a test cannot run here: prints
/// `<test>: skipped: <reason>` to stderr (past the harness's output capture, so it shows
/// in every run) — or, with `HOMA_TEST_REQUIRE_PRIVILEGED=1` (CI), fails the test.
pub(crate) fn skip_or_fail(reason: &str) {
    if std::env::var(REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1") {
        panic!("{reason}, and {REQUIRE_PRIVILEGED}=1 forbids skipping");
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    // Written to the process's stderr, not through eprintln!, which the harness captures.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {reason}");
}

/// The setups this process can run: [`ALL_SETUPS`], without the raw ones (each reported
/// by [`raw_ip_available`]) when raw sockets need a privilege the process lacks.
pub(crate) fn setups() -> Vec<(TransportKind, bool)> {
    ALL_SETUPS
        .into_iter()
        .filter(|&(kind, v6)| kind != TransportKind::RawIp || raw_ip_available(&label(kind, v6)))
        .collect()
}

/// A random server port in [`SERVER_PORTS`] (different in every call and test binary).
pub(crate) fn random_server_port() -> u16 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let span = u64::from(SERVER_PORTS.end() - SERVER_PORTS.start()) + 1;
    SERVER_PORTS.start() + (h.finish() % span) as u16
}

/// A server socket on a random free port of [`SERVER_PORTS`]: tries up to [`BIND_TRIES`]
/// ports, the next one whenever the port is taken (EADDRINUSE); panics on any other
/// error. `config` makes a fresh configuration for each try.
pub(crate) fn bind_server(mut config: impl FnMut() -> SocketConfig) -> Socket {
    let mut last = None;
    for _ in 0..BIND_TRIES {
        let port = random_server_port();
        match Socket::bind(port, config()) {
            Ok(socket) => return socket,
            Err(e) if is_addr_in_use(&e) => last = Some(e),
            Err(e) => panic!("binding a server on port {port}: {e}"),
        }
    }
    panic!(
        "no free server port in {BIND_TRIES} tries: {}",
        last.map_or_else(String::new, |e| e.to_string())
    );
}

/// A server port that nobody serves right now (for this transport and IP version): the
/// port of a server bound and closed again.
pub(crate) fn unused_server_port(kind: TransportKind, ipv6: bool) -> u16 {
    let socket = bind_server(|| config(kind, ipv6));
    let port = socket.port();
    drop(socket);
    port
}

/// Receives from `events` until one satisfies `wanted` and returns it; panics if none
/// does within [`WAIT_LIMIT`] or the senders are gone. `what` describes the awaited
/// event for the failure message.
pub(crate) fn wait_for<T>(
    events: &Receiver<T>,
    what: &str,
    mut wanted: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) if wanted(&event) => return event,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                panic!("waited {WAIT_LIMIT:?} in vain until {what}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("waiting until {what}: the sender is gone (did it panic?)")
            }
        }
    }
}

/// A server answering every request with `respond(request bytes)`, on `threads` threads.
pub(crate) struct Server {
    pub(crate) socket: Arc<Socket>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// A server on a random free port (see [`bind_server`]).
    pub(crate) fn start(
        config: impl FnMut() -> SocketConfig,
        threads: usize,
        respond: fn(&[u8]) -> Vec<u8>,
    ) -> Server {
        Server::serve(bind_server(config), threads, respond)
    }

    /// A server on `port` (e.g. to restart one where it was); panics if it cannot bind.
    pub(crate) fn start_on(
        port: u16,
        config: SocketConfig,
        threads: usize,
        respond: fn(&[u8]) -> Vec<u8>,
    ) -> Server {
        let socket =
            Socket::bind(port, config).unwrap_or_else(|e| panic!("bind server on {port}: {e}"));
        Server::serve(socket, threads, respond)
    }

    /// Serves on a socket already bound.
    pub(crate) fn serve(socket: Socket, threads: usize, respond: fn(&[u8]) -> Vec<u8>) -> Server {
        let socket = Arc::new(socket);
        let threads = (0..threads)
            .map(|_| {
                let s = socket.clone();
                std::thread::spawn(move || loop {
                    match s.recv(Want::Requests) {
                        Ok(req) => {
                            let resp = respond(&req.to_vec());
                            // The client may be gone; that is not the server's problem.
                            let _ = req.reply(&resp);
                        }
                        Err(Error::Shutdown) => return,
                        Err(e) => panic!("server recv: {e}"),
                    }
                })
            })
            .collect();
        Server { socket, threads }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.socket.loopback_addr()
    }

    pub(crate) fn port(&self) -> u16 {
        self.socket.port()
    }

    /// Shuts the server down, joins its threads and returns its socket (drop it to close
    /// the port).
    pub(crate) fn stop(self) -> Arc<Socket> {
        self.socket.shutdown();
        for t in self.threads {
            t.join().expect("server thread");
        }
        self.socket
    }
}

pub(crate) fn echo(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

/// Deterministic message content for length `len` and seed `k`.
pub(crate) fn pattern(len: usize, k: u64) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

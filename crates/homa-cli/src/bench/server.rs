//! The benchmark's servers: `servers` Homa server threads and as many TCP server threads
//! (thread `i` owns Homa port `P + i` and TCP port `P + i`), and one UDP echo thread.
//! `homa server` runs them until killed; `homa bench` runs them in its own process.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use homa_socket::{Socket, TransportKind};

use super::error::BenchError;
use super::{homa, socket_config, tcp, udp};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    /// Local address for the TCP and UDP sockets (Homa sockets take every address).
    pub(crate) bind: IpAddr,
    /// First Homa port, or `None` to pick free ones.
    pub(crate) homa_port: Option<u16>,
    /// First TCP port, or 0 for ephemeral ones.
    pub(crate) tcp_port: u16,
    /// UDP echo port, or 0 for an ephemeral one.
    pub(crate) udp_port: u16,
    /// Server threads per transport.
    pub(crate) servers: usize,
    /// Serve Homa on one port with this many shards (all server threads on it) instead
    /// of one port per thread.
    pub(crate) shards: Option<u16>,
    /// Homa over UDP or raw IP.
    pub(crate) transport: TransportKind,
    /// IPv6 Homa sockets.
    pub(crate) ipv6: bool,
    /// How long waiting threads spin before sleeping.
    pub(crate) spin: Duration,
    /// The Homa settings of `--homa-*`.
    pub(crate) knobs: super::HomaKnobs,
}

/// Running servers; dropping the set stops them.
#[derive(Debug)]
pub(crate) struct ServerSet {
    homa: Vec<Arc<Socket>>,
    /// The Homa ports, one per server thread.
    pub(crate) homa_ports: Vec<u16>,
    /// The TCP ports, one per server thread.
    pub(crate) tcp_ports: Vec<u16>,
    /// The UDP echo port.
    pub(crate) udp_port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Where a client finds the servers.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// Homa server sockets.
    pub(crate) homa: Vec<SocketAddr>,
    /// TCP servers.
    pub(crate) tcp: Vec<SocketAddr>,
    /// The UDP echo.
    pub(crate) udp: SocketAddr,
}

impl Targets {
    /// The usual layout of `homa server` at `ip`: Homa and TCP at `port + i` for each
    /// of `servers` threads (Homa only at `port` if `sharded`), the UDP echo at
    /// `udp_port`.
    pub(crate) fn layout(
        ip: IpAddr,
        port: u16,
        servers: usize,
        sharded: bool,
        udp_port: u16,
    ) -> Targets {
        let ports = (0..servers).map(|i| port.wrapping_add(i as u16));
        let homa_ports = if sharded { 1 } else { servers };
        Targets {
            homa: ports
                .clone()
                .take(homa_ports)
                .map(|p| SocketAddr::new(ip, p))
                .collect(),
            tcp: ports.map(|p| SocketAddr::new(ip, p)).collect(),
            udp: SocketAddr::new(ip, udp_port),
        }
    }

    /// Adds another host's servers (the UDP echo stays the first host's).
    pub(crate) fn extend(&mut self, other: Targets) {
        self.homa.extend(other.homa);
        self.tcp.extend(other.tcp);
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, BenchError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| BenchError::io("starting a server thread", e))
}

fn homa_sockets(opts: &ServerOptions, first: u16) -> Result<Vec<Arc<Socket>>, BenchError> {
    let mut sockets = Vec::new();
    let ports = if opts.shards.is_some() {
        1
    } else {
        opts.servers
    };
    for i in 0..ports {
        let port = u32::from(first) + i as u32;
        if port > 32_767 {
            return Err(BenchError::option(
                "--port",
                format!(
                    "Homa server ports end at 32767; {first} + {} servers goes past it",
                    opts.servers
                ),
            ));
        }
        let port = port as u16;
        let mut config = socket_config(opts.transport, opts.ipv6, opts.spin, &opts.knobs)?;
        if let Some(n) = opts.shards {
            config = config.shards(n);
        }
        let socket = Socket::bind(port, config).map_err(|e| {
            let hint = if opts.transport == TransportKind::RawIp {
                " (raw IP needs root or CAP_NET_RAW)"
            } else {
                ""
            };
            BenchError::homa(
                format!("opening the Homa server socket on port {port}{hint}"),
                e,
            )
        })?;
        sockets.push(Arc::new(socket));
    }
    Ok(sockets)
}

fn in_use(e: &BenchError) -> bool {
    match e {
        BenchError::Homa {
            source: homa_socket::Error::Io { source, .. },
            ..
        } => source.kind() == io::ErrorKind::AddrInUse,
        _ => false,
    }
}

impl ServerSet {
    /// Opens every socket and starts the server threads.
    pub(crate) fn start(opts: &ServerOptions) -> Result<ServerSet, BenchError> {
        let homa = match opts.homa_port {
            Some(p) => homa_sockets(opts, p)?,
            None => {
                // Free ports: try blocks from a per-process starting point.
                let mut base = 10_000 + (std::process::id() % 2000) as u16 * 10;
                let mut attempt = 0;
                loop {
                    match homa_sockets(opts, base) {
                        Ok(s) => break s,
                        Err(e) if in_use(&e) && attempt < 50 => {
                            attempt += 1;
                            base = 10_000 + (base - 10_000 + 64 * opts.servers as u16) % 20_000;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = ServerSet {
            homa_ports: homa.iter().map(|s| s.port()).collect(),
            homa,
            tcp_ports: Vec::new(),
            udp_port: 0,
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for i in 0..opts.servers {
            let port = if opts.tcp_port == 0 {
                0
            } else {
                opts.tcp_port.checked_add(i as u16).ok_or_else(|| {
                    BenchError::option("--port", "TCP ports would pass 65535".to_string())
                })?
            };
            let listener = TcpListener::bind((opts.bind, port)).map_err(|e| {
                BenchError::io(
                    format!("listening on TCP {}", SocketAddr::new(opts.bind, port)),
                    e,
                )
            })?;
            let local = listener
                .local_addr()
                .map_err(|e| BenchError::io("reading a TCP listener's address", e))?;
            set.tcp_ports.push(local.port());
            let stop = stop.clone();
            let spin = opts.spin;
            set.threads.push(spawn(format!("tcp-server-{i}"), move || {
                tcp::serve(listener, stop, spin)
            })?);
        }
        let socket = UdpSocket::bind((opts.bind, opts.udp_port)).map_err(|e| {
            BenchError::io(
                format!(
                    "opening the UDP echo on {}",
                    SocketAddr::new(opts.bind, opts.udp_port)
                ),
                e,
            )
        })?;
        set.udp_port = socket
            .local_addr()
            .map_err(|e| BenchError::io("reading the UDP echo's address", e))?
            .port();
        let udp_stop = stop.clone();
        let spin = opts.spin;
        set.threads.push(spawn("udp-echo".into(), move || {
            udp::serve(socket, udp_stop, spin)
        })?);
        // One thread per socket, or every server thread on the one sharded socket.
        for i in 0..opts.servers {
            let Some(socket) = set
                .homa
                .get(i)
                .or_else(|| set.homa.first().filter(|_| opts.shards.is_some()))
            else {
                break;
            };
            let socket = socket.clone();
            set.threads.push(spawn(format!("homa-server-{i}"), move || {
                homa::serve(socket)
            })?);
        }
        Ok(set)
    }

    /// Where a client on this host finds these servers at `ip`.
    pub(crate) fn targets(&self, ip: IpAddr) -> Targets {
        Targets {
            homa: self
                .homa_ports
                .iter()
                .map(|&p| SocketAddr::new(ip, p))
                .collect(),
            tcp: self
                .tcp_ports
                .iter()
                .map(|&p| SocketAddr::new(ip, p))
                .collect(),
            udp: SocketAddr::new(ip, self.udp_port),
        }
    }

    /// Blocks until the process is killed (`homa server`).
    pub(crate) fn run_forever(self) -> ! {
        loop {
            std::thread::park();
        }
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.homa {
            s.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

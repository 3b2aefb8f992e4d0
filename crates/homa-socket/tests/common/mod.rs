//! Shared helpers for the socket tests: servers on loopback, over each transport and
//! IP version.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use homa_socket::{Error, Socket, SocketConfig, TransportKind, Want};

/// The four ways a socket can reach the network.
pub(crate) const SETUPS: [(TransportKind, bool); 4] = [
    (TransportKind::Udp, false),
    (TransportKind::Udp, true),
    (TransportKind::RawIp, false),
    (TransportKind::RawIp, true),
];

/// A fresh server port for each test: test binaries run one at a time, tests within a
/// binary in parallel. Each binary passes its own base.
pub(crate) fn port(base: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn config(kind: TransportKind, ipv6: bool) -> SocketConfig {
    SocketConfig::default().transport(kind).ipv6(ipv6)
}

pub(crate) fn label(kind: TransportKind, ipv6: bool) -> String {
    format!("{kind:?}/{}", if ipv6 { "IPv6" } else { "IPv4" })
}

/// A server answering every request with `respond(request bytes)`, on `threads` threads.
pub(crate) struct Server {
    pub(crate) socket: Arc<Socket>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(
        port: u16,
        config: SocketConfig,
        threads: usize,
        respond: fn(&[u8]) -> Vec<u8>,
    ) -> Server {
        let socket = Arc::new(Socket::bind(port, config).expect("bind server"));
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

//! The raw UDP ping-pong baseline: one datagram out, the same datagram back. It is the
//! floor for any userspace transport over kernel sockets, for messages that fit one
//! datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::BenchError;
use super::harness::{Completion, RpcClient};
use super::system::poll_spin;

/// The largest UDP payload one datagram carries (65535 minus the IP and UDP headers).
pub(crate) fn max_payload(ipv6: bool) -> usize {
    if ipv6 {
        65_535 - 8
    } else {
        65_535 - 20 - 8
    }
}

/// Bytes of tag at the start of each datagram (the smallest ping-pong message).
pub(crate) const MIN_PAYLOAD: usize = 8;

/// Waits until `socket` is readable, spinning for `spin` first; false on timeout.
fn readable(socket: &UdpSocket, timeout: Duration, spin: Duration) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    Ok(poll_spin(&mut fds, Some(timeout), spin)? > 0)
}

/// Echoes every datagram received on `socket` back to its sender until `stop`. Waiting
/// spins for `spin` before sleeping.
pub(crate) fn serve(socket: UdpSocket, stop: Arc<AtomicBool>, spin: Duration) {
    if let Err(e) = socket.set_nonblocking(true) {
        eprintln!("homa: UDP echo: {e}");
        return;
    }
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match readable(&socket, Duration::from_millis(50), spin) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                eprintln!("homa: UDP echo: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                // A lost echo is the client's business (it counts losses).
                let _ = socket.send_to(&buf[..n], from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("homa: UDP echo: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A UDP ping-pong client. Each datagram starts with its 8-byte tag, so a late echo of
/// an earlier (lost) ping is not mistaken for the current one.
#[derive(Debug)]
pub(crate) struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
    spin: Duration,
}

impl UdpClient {
    /// A client of the echo server at `server`; waiting spins for `spin` before sleeping.
    pub(crate) fn connect(server: SocketAddr, spin: Duration) -> Result<UdpClient, BenchError> {
        let any: SocketAddr = if server.is_ipv6() {
            "[::]:0".parse().expect("valid literal")
        } else {
            "0.0.0.0:0".parse().expect("valid literal")
        };
        let socket = UdpSocket::bind(any).map_err(|e| BenchError::io("opening a UDP socket", e))?;
        socket
            .connect(server)
            .map_err(|e| BenchError::io(format!("connecting a UDP socket to {server}"), e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| BenchError::io("setting up a UDP socket", e))?;
        Ok(UdpClient {
            socket,
            server,
            buf: vec![0; 65_536],
            spin,
        })
    }
}

impl RpcClient for UdpClient {
    fn start(
        &mut self,
        _server: usize,
        request: usize,
        _reply: usize,
        tag: u64,
    ) -> Result<(), BenchError> {
        if !(MIN_PAYLOAD..=self.buf.len()).contains(&request) {
            return Err(BenchError::option(
                "UDP message size",
                format!("{request} bytes: the ping-pong sends {MIN_PAYLOAD}..=65507 bytes"),
            ));
        }
        self.buf[..8].copy_from_slice(&tag.to_le_bytes());
        match self.socket.send(&self.buf[..request]) {
            Ok(_) => Ok(()),
            // A refused or dropped datagram is a loss, which the harness counts.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(BenchError::io(
                format!("sending to the UDP echo at {}", self.server),
                e,
            )),
        }
    }

    fn wait(&mut self, deadline: Instant, done: &mut Vec<Completion>) -> Result<(), BenchError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match readable(&self.socket, left, self.spin) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(BenchError::io("waiting for the UDP echo", e)),
            }
            match self.socket.recv(&mut self.buf) {
                Ok(n) if n >= MIN_PAYLOAD => {
                    let mut tag = [0u8; 8];
                    tag.copy_from_slice(&self.buf[..8]);
                    done.push(Completion {
                        tag: u64::from_le_bytes(tag),
                        at: Instant::now(),
                        failed: None,
                    });
                    return Ok(());
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        // Nobody listens (yet): let the timeout decide.
                        std::thread::sleep(left.min(Duration::from_millis(10)));
                    }
                }
                Err(e) => {
                    return Err(BenchError::io(
                        format!("receiving from the UDP echo at {}", self.server),
                        e,
                    ))
                }
            }
        }
    }
}

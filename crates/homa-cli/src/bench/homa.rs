//! Homa in the benchmark: server threads that answer each request with a response of
//! the length it asks for ([`super::frame::reply_length`]), and a client that keeps any
//! number of RPCs in flight on one socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homa_socket::{Bytes, Error, Socket, Want};

use super::error::BenchError;
use super::frame::{reply_length, write_request_header};
use super::harness::{AbortHandle, Completion, RpcClient};
use super::spec::MAX_MESSAGE;
use super::ZEROS;

/// Answers requests on `socket` until it is shut down.
pub(crate) fn serve(socket: Arc<Socket>) {
    loop {
        match socket.recv(Want::Requests) {
            Ok(request) => {
                let len = request.len();
                let reply = match request.slices().next() {
                    Some(first) => reply_length(first, len),
                    None => len,
                };
                // A failed reply (the client vanished) concerns only that client. The
                // zeros are sent in place (as the TCP server writes them), not copied.
                let zeros = Bytes::from_static(&ZEROS[..reply.min(ZEROS.len())]);
                let _ = request.reply_owned(zeros);
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                eprintln!("homa: Homa server on port {}: {e}", socket.port());
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A Homa benchmark client: one socket, RPCs to any of `servers`.
#[derive(Debug)]
pub(crate) struct HomaClient {
    socket: Arc<Socket>,
    servers: Vec<SocketAddr>,
    /// Requests that ask for a response of another length than their own, by (request,
    /// reply) length: a few (the throughput phase's), each built once.
    framed: HashMap<(usize, usize), Bytes>,
}

/// Requests with their own header kept in [`HomaClient::framed`] at most.
const FRAMED_KEPT: usize = 16;

impl HomaClient {
    /// A client socket configured by `config`, sending to `servers`. With
    /// `spread = Some((shards, k))` the servers are sharded and this is client `k`: its
    /// port is chosen ≡ k (mod shards) so that the clients spread evenly over the shards
    /// (a server's shard is the client's port mod the shard count).
    pub(crate) fn new(
        config: impl Fn() -> Result<homa_socket::SocketConfig, BenchError>,
        servers: &[SocketAddr],
        spread: Option<(u16, usize)>,
    ) -> Result<HomaClient, BenchError> {
        let open = || {
            Socket::new(config()?).map_err(|e| BenchError::homa("opening a Homa client socket", e))
        };
        let mut socket = open()?;
        if let Some((shards, k)) = spread {
            let wanted = (k % usize::from(shards)) as u16;
            // Ports are the kernel's ephemeral ones: a few tries find each residue.
            for _ in 0..1000 {
                if socket.port() % shards == wanted {
                    break;
                }
                socket = open()?;
            }
        }
        Ok(HomaClient {
            socket: Arc::new(socket),
            servers: servers.to_vec(),
            framed: HashMap::new(),
        })
    }
}

impl HomaClient {
    /// A client whose socket is bound to `port` and also serves the requests that
    /// arrive there (a thread running [`serve`] on the same socket, until the socket
    /// shuts down): one engine for a host's client and server.
    ///
    /// # Errors
    ///
    /// [`BenchError::Homa`] if the port cannot be bound; [`BenchError::Io`] if the
    /// server thread cannot start.
    pub(crate) fn serving(
        config: homa_socket::SocketConfig,
        port: u16,
        servers: &[SocketAddr],
    ) -> Result<HomaClient, BenchError> {
        let socket = Socket::bind(port, config).map_err(|e| {
            BenchError::homa(
                format!("opening the serving client socket on port {port}"),
                e,
            )
        })?;
        let socket = Arc::new(socket);
        let server = socket.clone();
        std::thread::Builder::new()
            .name(format!("homa-server-{port}"))
            .spawn(move || serve(server))
            .map_err(|e| BenchError::io("starting the serving client's server thread", e))?;
        Ok(HomaClient {
            socket,
            servers: servers.to_vec(),
            framed: HashMap::new(),
        })
    }
}

impl RpcClient for HomaClient {
    fn start(
        &mut self,
        server: usize,
        request: usize,
        reply: usize,
        tag: u64,
    ) -> Result<(), BenchError> {
        // (One sharded server port serves every server index.)
        let dest = self.servers[server % self.servers.len()];
        // A request whose header is zero asks for a response of its own length: then it
        // is all zeros, sent in place like the TCP client's (no copy in user space).
        let message = if reply == request || request < 4 {
            Bytes::from_static(&ZEROS[..request.min(MAX_MESSAGE as usize)])
        } else if let Some(m) = self.framed.get(&(request, reply)) {
            m.clone()
        } else {
            let mut buf = ZEROS[..request.min(MAX_MESSAGE as usize)].to_vec();
            write_request_header(&mut buf, request, reply);
            let m = Bytes::from(buf);
            if self.framed.len() < FRAMED_KEPT {
                self.framed.insert((request, reply), m.clone());
            }
            m
        };
        self.socket
            .send_request_owned(dest, message, tag)
            .map(|_| ())
            .map_err(|e| match e {
                Error::Shutdown => BenchError::Stalled(format!(
                    "a Homa client blocked in send_request to {dest} (transmit buffer full) and was stopped"
                )),
                e => BenchError::homa(format!("sending a Homa request to {dest}"), e),
            })
    }

    fn wait(&mut self, deadline: Instant, done: &mut Vec<Completion>) -> Result<(), BenchError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = if left.is_zero() {
            self.socket.try_recv(Want::Responses)
        } else {
            self.socket.recv_timeout(Want::Responses, left)
        };
        match got {
            Ok(response) => {
                done.push(Completion {
                    tag: response.cookie(),
                    at: Instant::now(),
                    failed: None,
                });
                Ok(())
            }
            Err(Error::Timeout | Error::WouldBlock) => Ok(()),
            Err(Error::Shutdown) => Err(BenchError::Stalled(
                "the Homa client made no progress and was stopped".into(),
            )),
            Err(e) => match e.cookie() {
                // One RPC failed: the harness counts it.
                Some(tag) => {
                    done.push(Completion {
                        tag,
                        at: Instant::now(),
                        failed: Some(e.to_string()),
                    });
                    Ok(())
                }
                None => Err(BenchError::homa("waiting for Homa responses", e)),
            },
        }
    }

    fn abort_handle(&self) -> Option<AbortHandle> {
        let socket = self.socket.clone();
        Some(Arc::new(move || socket.shutdown()))
    }
}

//! The TCP baseline: length-prefixed messages ([`super::frame`]) over `TCP_NODELAY`
//! connections, one per client-server pair by default (`--tcp-conns N`: N per pair, the
//! requests to one server taking them in turn).
//!
//! Both ends run a non-blocking event loop (`ppoll`) over their connections, with a queue
//! of frames to write per connection: a client never stops reading responses while it
//! writes requests, and a server never stops reading requests while it writes responses,
//! so pipelined 1 MB messages cannot deadlock on full socket buffers. A server answers
//! the requests of one connection in order (TCP's head-of-line blocking is part of what
//! is measured).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::BenchError;
use super::frame::{Decoder, Header, HEADER};
use super::harness::{Completion, RpcClient};
use super::system::poll_spin;
use super::ZEROS;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;

/// A frame queued for writing: its header, then `body` bytes of payload.
#[derive(Debug)]
struct Out {
    header: [u8; HEADER],
    total: usize,
    written: usize,
}

/// One non-blocking framed connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    out: VecDeque<Out>,
}

/// What a connection's read found.
enum ReadOutcome {
    Open,
    Closed,
}

impl Conn {
    fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            decoder: Decoder::default(),
            out: VecDeque::new(),
        })
    }

    fn queue(&mut self, header: Header) {
        self.out.push_back(Out {
            header: header.encode(),
            total: HEADER + header.length as usize,
            written: 0,
        });
    }

    /// Writes queued frames until done or the socket buffer is full.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(front) = self.out.front_mut() {
            let body_done = front.written.saturating_sub(HEADER);
            let body_left = front.total - HEADER - body_done;
            let header_part: &[u8] = if front.written < HEADER {
                &front.header[front.written..]
            } else {
                &[]
            };
            // The payload is never looked at: send zeros from the shared buffer, in
            // pieces no longer than it.
            let body_part = &ZEROS[..body_left.min(ZEROS.len())];
            let bufs = [IoSlice::new(header_part), IoSlice::new(body_part)];
            match self.stream.write_vectored(&bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    front.written += n;
                    if front.written == front.total {
                        self.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads everything available, calling `frame` per completed frame.
    fn read(
        &mut self,
        buf: &mut [u8],
        mut frame: impl FnMut(Header),
    ) -> Result<ReadOutcome, BenchError> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => self
                    .decoder
                    .feed(&buf[..n], &mut frame)
                    .map_err(BenchError::Protocol)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::io("reading from a TCP connection", e)),
            }
        }
    }

    fn pollfd(&self) -> libc::pollfd {
        let mut events = libc::POLLIN;
        if !self.out.is_empty() {
            events |= libc::POLLOUT;
        }
        libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events,
            revents: 0,
        }
    }
}

/// A TCP benchmark client: `per_server` connections to each server (connection
/// `server * per_server + k`), used in turn by the requests to that server.
#[derive(Debug)]
pub(crate) struct TcpClient {
    conns: Vec<Conn>,
    /// Tags of the requests in flight on each connection, oldest first (responses come
    /// back in order).
    pending: Vec<VecDeque<u64>>,
    /// The server of each connection.
    peers: Vec<SocketAddr>,
    /// Connections per server.
    per_server: usize,
    /// Per server, the connection (0..per_server) its next request takes.
    turn: Vec<usize>,
    fds: Vec<libc::pollfd>,
    buf: Vec<u8>,
    spin: Duration,
}

impl TcpClient {
    /// Opens `per_server` connections (at least one) to every server in `servers`;
    /// waiting spins for `spin` before sleeping.
    pub(crate) fn connect(
        servers: &[SocketAddr],
        per_server: usize,
        spin: Duration,
    ) -> Result<TcpClient, BenchError> {
        let per_server = per_server.max(1);
        let peers: Vec<SocketAddr> = servers
            .iter()
            .flat_map(|&addr| std::iter::repeat_n(addr, per_server))
            .collect();
        let mut conns = Vec::with_capacity(peers.len());
        for addr in &peers {
            let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).map_err(|e| {
                BenchError::io(format!("connecting to the TCP server at {addr}"), e)
            })?;
            conns.push(
                Conn::new(stream).map_err(|e| {
                    BenchError::io(format!("setting up TCP connection to {addr}"), e)
                })?,
            );
        }
        Ok(TcpClient {
            pending: vec![VecDeque::new(); conns.len()],
            fds: Vec::with_capacity(conns.len()),
            conns,
            peers,
            per_server,
            turn: vec![0; servers.len()],
            buf: vec![0; READ_CHUNK],
            spin,
        })
    }
}

impl RpcClient for TcpClient {
    fn start(
        &mut self,
        server: usize,
        request: usize,
        reply: usize,
        tag: u64,
    ) -> Result<(), BenchError> {
        let k = self.turn[server];
        self.turn[server] = (k + 1) % self.per_server;
        let index = server * self.per_server + k;
        let conn = &mut self.conns[index];
        conn.queue(Header {
            length: request as u32,
            reply: reply as u32,
        });
        self.pending[index].push_back(tag);
        conn.flush().map_err(|e| {
            BenchError::io(
                format!("sending to the TCP server at {}", self.peers[index]),
                e,
            )
        })
    }

    fn wait(&mut self, deadline: Instant, done: &mut Vec<Completion>) -> Result<(), BenchError> {
        loop {
            self.fds.clear();
            self.fds.extend(self.conns.iter().map(Conn::pollfd));
            let timeout = deadline.saturating_duration_since(Instant::now());
            poll_spin(&mut self.fds, Some(timeout), self.spin)
                .map_err(|e| BenchError::io("waiting for TCP connections", e))?;
            for i in 0..self.conns.len() {
                let revents = self.fds[i].revents;
                if revents == 0 {
                    continue;
                }
                let conn = &mut self.conns[i];
                let pending = &mut self.pending[i];
                let peer = self.peers[i];
                if revents & libc::POLLOUT != 0 {
                    conn.flush().map_err(|e| {
                        BenchError::io(format!("sending to the TCP server at {peer}"), e)
                    })?;
                }
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    let mut unexpected = false;
                    let outcome = conn.read(&mut self.buf, |_| match pending.pop_front() {
                        Some(tag) => done.push(Completion {
                            tag,
                            at: Instant::now(),
                            failed: None,
                        }),
                        None => unexpected = true,
                    })?;
                    if unexpected {
                        return Err(BenchError::Protocol(format!(
                            "the TCP server at {peer} sent a response to no request"
                        )));
                    }
                    if let ReadOutcome::Closed = outcome {
                        return Err(BenchError::io(
                            format!("the TCP server at {peer} closed the connection"),
                            io::ErrorKind::ConnectionAborted.into(),
                        ));
                    }
                }
            }
            if !done.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}

/// Serves one listening socket and every connection it accepts until `stop`: answers
/// each request frame with a response frame of the asked length. Waiting spins for
/// `spin` before sleeping.
pub(crate) fn serve(listener: TcpListener, stop: Arc<AtomicBool>, spin: Duration) {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("homa: TCP server: {e}");
        return;
    }
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(conns.iter().map(Conn::pollfd));
        if poll_spin(&mut fds, Some(Duration::from_millis(50)), spin).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        // Existing connections first (their indices match `fds[1..]`), then new ones.
        let mut closed = Vec::new();
        for (i, conn) in conns.iter_mut().enumerate() {
            let revents = fds[i + 1].revents;
            if revents == 0 {
                continue;
            }
            let mut replies = Vec::new();
            let alive = match conn.read(&mut buf, |h| replies.push(h.reply)) {
                Ok(ReadOutcome::Open) => true,
                Ok(ReadOutcome::Closed) => false,
                Err(e) => {
                    eprintln!("homa: TCP server: dropping a connection: {e}");
                    false
                }
            };
            for reply in replies.into_iter().filter(|&r| r > 0) {
                conn.queue(Header {
                    length: reply,
                    reply: 0,
                });
            }
            if !alive || conn.flush().is_err() {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            conns.swap_remove(i);
        }
        if fds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => match Conn::new(stream) {
                        Ok(c) => conns.push(c),
                        Err(e) => eprintln!("homa: TCP server: {e}"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("homa: TCP server: accept: {e}");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--tcp-conns 3`, the requests to one server take its three connections in
    /// turn, and every response comes back on its own connection.
    #[test]
    fn requests_to_a_server_take_its_connections_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = std::thread::spawn(move || serve(listener, stop2, Duration::ZERO));
        let mut client = TcpClient::connect(&[addr], 3, Duration::ZERO).unwrap();
        assert_eq!(client.conns.len(), 3);
        for tag in 0..6 {
            client.start(0, 100, 50, tag).unwrap();
        }
        let queued: Vec<Vec<u64>> = client
            .pending
            .iter()
            .map(|p| p.iter().copied().collect())
            .collect();
        assert_eq!(queued, [vec![0, 3], vec![1, 4], vec![2, 5]]);
        let mut done = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.len() < 6 && Instant::now() < deadline {
            client.wait(deadline, &mut done).unwrap();
        }
        let mut tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, [0, 1, 2, 3, 4, 5]);
        assert!(done.iter().all(|c| c.failed.is_none()));
        stop.store(true, Ordering::Relaxed);
        drop(client);
        server.join().unwrap();
    }
}

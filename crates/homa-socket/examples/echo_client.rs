//! Sends requests to an echo server and checks the answers; prints round-trip times.
//!
//! ```text
//! cargo run --example echo_server &
//! cargo run --example echo_client -- 127.0.0.1:4000 1000 100
//! ```

use std::net::SocketAddr;
use std::time::Instant;

use homa_socket::{Error, Socket, SocketConfig, Want};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let server: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:4000".into())
        .parse()
        .map_err(|e| Error::InvalidArgument {
            argument: "SERVER_ADDR",
            reason: format!("{e}"),
        })?;
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let socket = Socket::new(SocketConfig::default().ipv6(server.is_ipv6()))?;
    let message: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut rtts = Vec::with_capacity(count);
    for k in 0..count {
        let start = Instant::now();
        let id = socket.send_request(server, &message, k as u64)?;
        let response = socket.recv(Want::Response(id))?;
        rtts.push(start.elapsed());
        assert_eq!(response.to_vec(), message, "echo mismatch");
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    println!(
        "{count} RPCs of {size} bytes to {server}: P50 {:?}, P99 {:?}",
        pct(0.5),
        pct(0.99)
    );
    let stats = socket.stats();
    println!(
        "DATA packets received: {}, of which straight into bpages (no copy): {}",
        stats.received_by_type[0], stats.placed_packets
    );
    Ok(())
}

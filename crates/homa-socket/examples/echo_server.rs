//! An echo server: answers every request with its own bytes.
//!
//! ```text
//! cargo run --example echo_server -- [PORT] [--ipv6] [--raw]
//! cargo run --example echo_client -- [SERVER_ADDR] [COUNT] [SIZE]
//! ```

use homa_socket::{Error, Socket, SocketConfig, TransportKind, Want};

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args
        .iter()
        .find_map(|a| a.parse::<u16>().ok())
        .unwrap_or(4000);
    let mut config = SocketConfig::default().ipv6(args.iter().any(|a| a == "--ipv6"));
    if args.iter().any(|a| a == "--raw") {
        config = config.transport(TransportKind::RawIp);
    }
    let socket = Socket::bind(port, config)?;
    eprintln!(
        "echo server on Homa port {} ({})",
        socket.port(),
        socket.loopback_addr()
    );
    loop {
        let request = socket.recv(Want::Requests)?;
        // Echo straight from the receive region's bpages: no copy into a Vec.
        let slices: Vec<std::io::IoSlice<'_>> =
            request.slices().map(std::io::IoSlice::new).collect();
        request.reply_vectored(&slices)?;
    }
}

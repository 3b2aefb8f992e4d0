//! A small key-value service over Homa, server and client in one process.
//!
//! Requests are `GET key` or `PUT key value` (text); responses are `OK`, `VALUE bytes`
//! or `MISSING`. Several client threads share one client socket.
//!
//! ```text
//! cargo run --example kv
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use homa_socket::{Error, Socket, SocketConfig, Want};

fn serve(socket: &Socket) -> Result<(), Error> {
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    loop {
        let request = match socket.recv(Want::Requests) {
            Ok(r) => r,
            Err(Error::Shutdown) => return Ok(()),
            Err(e) => return Err(e),
        };
        let bytes = request.to_vec();
        let mut parts = bytes.splitn(3, |&b| b == b' ');
        let response = match (parts.next(), parts.next(), parts.next()) {
            (Some(b"GET"), Some(key), None) => match store.get(key) {
                Some(v) => [b"VALUE ".as_slice(), v].concat(),
                None => b"MISSING".to_vec(),
            },
            (Some(b"PUT"), Some(key), Some(value)) => {
                store.insert(key.to_vec(), value.to_vec());
                b"OK".to_vec()
            }
            _ => b"ERROR bad request".to_vec(),
        };
        request.reply(&response)?;
    }
}

fn call(client: &Socket, server: std::net::SocketAddr, request: &[u8]) -> Result<Vec<u8>, Error> {
    let id = client.send_request(server, request, 0)?;
    Ok(client.recv(Want::Response(id))?.to_vec())
}

fn main() -> Result<(), Error> {
    let server = Arc::new(Socket::bind(4100, SocketConfig::default())?);
    let addr = server.loopback_addr();
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || serve(&server))
    };
    let client = Arc::new(Socket::new(SocketConfig::default())?);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || -> Result<(), Error> {
                for k in 0..250 {
                    let key = format!("key-{t}-{k}");
                    let value = format!("value {k} from thread {t}");
                    let put = call(&client, addr, format!("PUT {key} {value}").as_bytes())?;
                    assert_eq!(put, b"OK");
                    let got = call(&client, addr, format!("GET {key}").as_bytes())?;
                    assert_eq!(got, format!("VALUE {value}").into_bytes());
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread")?;
    }
    let missing = call(&client, addr, b"GET nobody")?;
    assert_eq!(missing, b"MISSING");
    println!("kv: 1000 PUTs and 1000 GETs from 4 threads, all answered correctly");
    server.shutdown();
    serving.join().expect("server thread")?;
    Ok(())
}

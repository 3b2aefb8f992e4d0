//! # homa-socket — Homa sockets for applications
//!
//! The API of the Linux module as the article describes it, in Rust: a [`Socket`] is a
//! client as created ([`Socket::new`]) and a server once bound to a port
//! ([`Socket::bind`]); requests get an id and carry a completion cookie; responses
//! answer a request by its id; receiving chooses requests, responses or both, or one
//! response by id ([`Want`]); messages arrive in a receive region cut into 64 KiB bpages
//! that the application owns until it gives them back (by dropping the [`Message`], or
//! by offset with [`Socket::release_bpages`]).
//!
//! Packets travel over UDP (default, unprivileged) or raw IP protocol 146 (what the
//! kernel module sends; needs CAP_NET_RAW), with the priority of each packet in its IP
//! TOS / IPv6 Traffic Class. The protocol itself is `homa_proto`'s sans-IO engine.
//!
//! ```
//! use homa_socket::{Socket, SocketConfig, Want};
//!
//! let server = Socket::bind(5990, SocketConfig::default())?;
//! let client = Socket::new(SocketConfig::default())?;
//! let id = client.send_request(server.loopback_addr(), b"hello", 7)?;
//!
//! let request = server.recv(Want::Requests)?;
//! request.reply(&request.to_vec())?;
//!
//! let response = client.recv(Want::Response(id))?;
//! assert_eq!(response.to_vec(), b"hello");
//! assert_eq!(response.cookie(), 7);
//! # Ok::<(), homa_socket::Error>(())
//! ```

#[cfg(feature = "tokio")]
mod asyncio;
mod config;
mod driver;
mod error;
mod message;
pub mod region;
mod shards;
mod socket;
pub mod transport;
mod waiters;

#[cfg(feature = "tokio")]
pub use asyncio::AsyncSocket;
/// The shared byte buffer the owned sends take (`bytes::Bytes`, re-exported).
pub use bytes::Bytes;
pub use config::SocketConfig;
pub use error::Error;
pub use message::{Message, MessageKind};
pub use region::RecvRegion;
pub use socket::{Socket, Want};
pub use transport::{Family, TransportKind, TransportStats};

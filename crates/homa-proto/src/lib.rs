//! # homa-proto — the Homa transport protocol as a sans-IO engine
//!
//! This crate holds everything about Homa that does not touch an operating system: the
//! byte-exact wire format ([`wire`]), the protocol's tunables ([`config`]), and the
//! protocol engine ([`engine`]): RPCs, grants, priorities, pacing, loss recovery and acks,
//! driven by a caller that passes in the time and moves the packets. Sockets, threads and
//! clocks live in the crates above (see ARCHITECTURE.md).
//!
//! ```
//! use homa_proto::wire::{Repr, PacketType};
//!
//! // V8 of PROTOCOL.md 9.2: an RPC_UNKNOWN sent by a kernel server.
//! let bytes = [
//!     0x0f, 0xa0, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x13, 0x50, 0x06, 0, 0,
//!     0x4d, 0xd0, 0xb9, 0x7d, 0, 0, 0, 0, 0, 0, 0x04, 0xd3,
//! ];
//! let pkt = Repr::parse(&bytes).unwrap();
//! assert_eq!(pkt.packet_type(), PacketType::RpcUnknown);
//! assert_eq!(pkt.common().sender_id, 1235);
//! ```

#![forbid(unsafe_code)]

mod ack;
pub mod config;
pub mod engine;
mod error;
mod event;
mod grant;
mod incoming;
mod invariants;
mod outgoing;
mod pacer;
mod peer;
mod placement;
pub mod pool;
mod probe;
pub mod region;
mod rpc;
mod stall;
mod stats;
#[cfg(test)]
mod test_rng;
pub mod time;
mod timer;
mod tombstone;
pub mod wire;

pub use config::{Config, ConfigBuilder, ConfigError};
pub use time::Time;

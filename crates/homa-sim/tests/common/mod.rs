//! Test doubles for the network tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::IpAddr;

use homa_proto::wire::PacketType;
use homa_proto::Time;
use homa_sim::{Node, Outgoing};

/// A packet a `Scripted` node sends. The tag is written to bytes 0..8, the type to byte 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub to: IpAddr,
    pub len: usize,
    pub prio: u8,
    pub ty: PacketType,
    pub tag: u64,
}

impl Send {
    pub fn data(to: IpAddr, len: usize, prio: u8, tag: u64) -> Send {
        Send {
            to,
            len,
            prio,
            ty: PacketType::Data,
            tag,
        }
    }
}

/// A packet a `Scripted` node received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    pub time: Time,
    pub from: IpAddr,
    pub len: usize,
    pub ty: u8,
    pub tag: u64,
}

/// Sends planned packets at planned times, records what it receives, and optionally
/// echoes every packet back (same length and tag) at a fixed priority.
#[derive(Debug, Default)]
pub struct Scripted {
    /// (time, packet), sorted by time.
    pub plan: VecDeque<(Time, Send)>,
    pub out: VecDeque<Send>,
    pub got: Vec<Got>,
    pub echo: Option<u8>,
    /// Stop echoing after this many packets received.
    pub echo_limit: usize,
}

impl Scripted {
    pub fn new() -> Scripted {
        Scripted::default()
    }

    pub fn echo(prio: u8, limit: usize) -> Scripted {
        Scripted {
            echo: Some(prio),
            echo_limit: limit,
            ..Scripted::default()
        }
    }

    pub fn at(&mut self, t: Time, p: Send) {
        self.plan.push_back((t, p));
    }

    pub fn tags(&self) -> Vec<u64> {
        self.got.iter().map(|g| g.tag).collect()
    }

    fn release(&mut self, now: Time) {
        while self.plan.front().is_some_and(|(t, _)| *t <= now) {
            let (_, p) = self.plan.pop_front().unwrap();
            self.out.push_back(p);
        }
    }
}

impl Node for Scripted {
    fn handle_datagram(&mut self, now: Time, from: IpAddr, packet: &[u8]) {
        let tag = u64::from_be_bytes(packet[..8].try_into().unwrap());
        self.got.push(Got {
            time: now,
            from,
            len: packet.len(),
            ty: packet[11],
            tag,
        });
        if let Some(prio) = self.echo {
            if self.got.len() <= self.echo_limit {
                self.out.push_back(Send {
                    to: from,
                    len: packet.len(),
                    prio,
                    ty: PacketType::Data,
                    tag,
                });
            }
        }
    }

    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Outgoing> {
        self.release(now);
        let p = self.out.pop_front()?;
        assert!(p.len >= 12);
        buf[..8].copy_from_slice(&p.tag.to_be_bytes());
        buf[8..p.len].fill(0);
        buf[11] = p.ty.code();
        Some(Outgoing {
            destination: p.to,
            len: p.len,
            priority: p.prio,
        })
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        self.plan.front().map(|(t, _)| *t)
    }

    fn handle_timeout(&mut self, now: Time) {
        self.release(now);
    }
}

/// A broken node: always wants its timer called, immediately.
#[derive(Debug, Default)]
pub struct Spinner {
    pub calls: u64,
}

impl Node for Spinner {
    fn handle_datagram(&mut self, _now: Time, _from: IpAddr, _packet: &[u8]) {}
    fn poll_transmit(&mut self, _now: Time, _buf: &mut [u8]) -> Option<Outgoing> {
        None
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        Some(Time::ZERO)
    }
    fn handle_timeout(&mut self, _now: Time) {
        self.calls += 1;
    }
}

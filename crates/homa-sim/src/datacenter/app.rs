//! The application on every simulated host: an open-loop Poisson source of one-way
//! messages to uniformly random other hosts, and a sink that answers each one with a
//! tiny response. A shared [`Tracker`] follows every message from creation at its sender
//! to delivery at its receiver.

use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};
use std::collections::HashMap;
use std::rc::Rc;

use homa_eval::stats::Samples;
use homa_eval::workload::Distribution;
use homa_proto::engine::{Engine, Event, Message};
use homa_proto::region::DiscardRegion;
use homa_proto::wire::MAX_MESSAGE_LENGTH;
use homa_proto::Time;

use super::model::Model;
use crate::host::App;
use crate::host_ip;
use crate::rng::Rng;

/// The server port every host's engine is bound to.
pub(crate) const PORT: u16 = 1;
/// First client RPC id of every engine (ids then go up by 2).
pub(crate) const FIRST_ID: u64 = 2;

/// One message (possibly sent as several Homa messages, "pieces").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg {
    pub(crate) created_ns: u64,
    pub(crate) completed_ns: u64,
    pub(crate) size: u32,
    /// Bytes handed to the engine so far (pieces issued).
    pub(crate) issued: u32,
    /// Bytes delivered to the receiver so far.
    pub(crate) delivered: u32,
    pub(crate) src: u32,
    pub(crate) dst: u32,
}

/// Counters of a run, over all hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages created (the whole run).
    pub created: u64,
    /// Messages fully delivered (the whole run).
    pub completed: u64,
    /// Messages created in the measurement window.
    pub measured_created: u64,
    /// Of those, the ones delivered by the end of the run.
    pub measured_completed: u64,
    /// Messages longer than 1,000,000 bytes sent as several pieces.
    pub split: u64,
    /// Messages whose sampled length was capped at 1,000,000 bytes.
    pub capped: u64,
    /// Homa messages (pieces) issued.
    pub pieces_sent: u64,
    /// Homa messages (pieces) received.
    pub pieces_received: u64,
    /// Responses received by senders.
    pub responses: u64,
    /// Payload bytes of created messages.
    pub bytes_created: u64,
    /// Payload bytes handed to the engines.
    pub bytes_issued: u64,
    /// Payload bytes delivered to receivers.
    pub bytes_delivered: u64,
    /// Payload bytes of messages created in the measurement window.
    pub window_bytes_offered: u64,
    /// Payload bytes delivered during the measurement window (any message).
    pub window_bytes_delivered: u64,
    /// Requests the engine refused (`send_request` errors).
    pub send_errors: u64,
    /// Client RPCs that failed (timeouts).
    pub failures: u64,
}

/// What all hosts' applications share.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) msgs: Vec<Msg>,
    /// Per sending host: message index of each RPC it issued, by RPC sequence number.
    rpc_msg: Vec<Vec<u32>>,
    pub(crate) window: (u64, u64),
    pub(crate) samples: Samples,
    pub(crate) counters: Counters,
    /// Messages of the window not yet delivered.
    pub(crate) measured_outstanding: u64,
    pub(crate) first_error: Option<String>,
    model: Model,
    /// Ideal times by (size, same rack): sizes come from a distribution of a few
    /// hundred points, and the exact computation walks every packet.
    ideal_cache: HashMap<(u32, bool), f64>,
    hosts_per_rack: u32,
}

impl Tracker {
    pub(crate) fn new(
        hosts: usize,
        hosts_per_rack: usize,
        window: (u64, u64),
        model: Model,
    ) -> Self {
        Tracker {
            msgs: Vec::new(),
            rpc_msg: vec![Vec::new(); hosts],
            window,
            samples: Samples::new(),
            counters: Counters::default(),
            measured_outstanding: 0,
            first_error: None,
            model,
            ideal_cache: HashMap::new(),
            hosts_per_rack: hosts_per_rack as u32,
        }
    }

    fn in_window(&self, t: u64) -> bool {
        (self.window.0..self.window.1).contains(&t)
    }

    fn error(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Payload bytes created but not yet delivered.
    pub(crate) fn backlog(&self) -> u64 {
        self.counters.bytes_created - self.counters.bytes_delivered
    }
}

/// The application of one host.
pub(crate) struct DcApp {
    host: u32,
    hosts: u32,
    rng: Rng,
    /// Time of the next arrival, ns (kept fractional so the rate is exact).
    next_arrival: f64,
    mean_gap_ns: f64,
    /// Whether new messages stop being created.
    pub(crate) stopped: bool,
    dist: Rc<Distribution>,
    cap: bool,
    response_bytes: usize,
    tracker: Rc<RefCell<Tracker>>,
}

impl DcApp {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        host: usize,
        hosts: usize,
        seed: u64,
        mean_gap_ns: f64,
        dist: Rc<Distribution>,
        cap: bool,
        response_bytes: u32,
        tracker: Rc<RefCell<Tracker>>,
    ) -> DcApp {
        // Stream 1000 + host: independent of the network's own streams (faults 1, routing 2).
        let mut rng = Rng::stream(seed, 1000 + host as u64);
        let first = exp_sample(&mut rng, mean_gap_ns);
        DcApp {
            host: host as u32,
            hosts: hosts as u32,
            rng,
            next_arrival: first,
            mean_gap_ns,
            stopped: false,
            dist,
            cap,
            response_bytes: response_bytes as usize,
            tracker,
        }
    }

    fn create(&mut self, created_ns: u64, now: Time, engine: &mut Engine<DiscardRegion>) {
        let mut size = self.dist.sample(self.rng.next_f64());
        let capped = self.cap && size > MAX_MESSAGE_LENGTH;
        if capped {
            size = MAX_MESSAGE_LENGTH;
        }
        let mut dst = self.rng.below(u64::from(self.hosts - 1)) as u32;
        if dst >= self.host {
            dst += 1;
        }
        let idx = {
            let mut t = self.tracker.borrow_mut();
            let idx = t.msgs.len() as u32;
            t.msgs.push(Msg {
                created_ns,
                completed_ns: u64::MAX,
                size,
                issued: 0,
                delivered: 0,
                src: self.host,
                dst,
            });
            t.counters.created += 1;
            t.counters.capped += u64::from(capped);
            t.counters.split += u64::from(size > MAX_MESSAGE_LENGTH);
            t.counters.bytes_created += u64::from(size);
            if t.in_window(created_ns) {
                t.counters.measured_created += 1;
                t.counters.window_bytes_offered += u64::from(size);
                t.measured_outstanding += 1;
            }
            idx
        };
        self.send_piece(now, engine, idx);
    }

    /// Issues the next piece of message `idx`.
    fn send_piece(&mut self, now: Time, engine: &mut Engine<DiscardRegion>, idx: u32) {
        let mut t = self.tracker.borrow_mut();
        let m = t.msgs[idx as usize];
        let piece = (m.size - m.issued).min(MAX_MESSAGE_LENGTH);
        let dest = SocketAddr::new(host_ip(m.dst as usize), PORT);
        match engine.send_request(now, dest, vec![0u8; piece as usize], u64::from(idx)) {
            Ok(id) => {
                let seq = (id - FIRST_ID) / 2;
                let list = &mut t.rpc_msg[self.host as usize];
                if seq != list.len() as u64 {
                    let e = format!("host {}: unexpected RPC id {id}", self.host);
                    t.error(e);
                    return;
                }
                list.push(idx);
                t.msgs[idx as usize].issued += piece;
                t.counters.pieces_sent += 1;
                t.counters.bytes_issued += u64::from(piece);
            }
            Err(e) => {
                t.counters.send_errors += 1;
                t.error(format!("host {}: send_request: {e}", self.host));
            }
        }
    }

    fn on_request(&mut self, now: Time, engine: &mut Engine<DiscardRegion>, m: &Message) {
        let now_ns = now.as_nanos();
        {
            let mut guard = self.tracker.borrow_mut();
            let t = &mut *guard;
            let Some(src) = host_index(m.peer.ip()) else {
                t.error(format!("request from unknown host {}", m.peer));
                return;
            };
            let seq = ((m.id ^ 1) - FIRST_ID) / 2;
            let Some(&idx) = t.rpc_msg.get(src).and_then(|l| l.get(seq as usize)) else {
                t.error(format!(
                    "request {} from host {src} matches no message",
                    m.id
                ));
                return;
            };
            let len = m.len() as u32;
            let expected = {
                let msg = &t.msgs[idx as usize];
                (msg.size - msg.delivered).min(MAX_MESSAGE_LENGTH)
            };
            if len != expected {
                t.error(format!(
                    "request {} from host {src}: {len} bytes, expected {expected}",
                    m.id
                ));
                return;
            }
            t.counters.pieces_received += 1;
            t.counters.bytes_delivered += u64::from(len);
            if t.in_window(now_ns) {
                t.counters.window_bytes_delivered += u64::from(len);
            }
            let msg = &mut t.msgs[idx as usize];
            msg.delivered += len;
            if msg.delivered == msg.size {
                msg.completed_ns = now_ns;
                let msg = *msg;
                t.counters.completed += 1;
                if t.in_window(msg.created_ns) {
                    t.counters.measured_completed += 1;
                    t.measured_outstanding -= 1;
                    let same_rack = msg.src / t.hosts_per_rack == msg.dst / t.hosts_per_rack;
                    let model = &t.model;
                    let ideal = *t
                        .ideal_cache
                        .entry((msg.size, same_rack))
                        .or_insert_with(|| model.ideal_ns(msg.size, same_rack));
                    t.samples
                        .push(msg.size, (now_ns - msg.created_ns) as f64, ideal);
                }
            }
        }
        if let Err(e) = engine.release_message(now, m) {
            self.tracker.borrow_mut().error(format!("release: {e:?}"));
        }
        let response = vec![0u8; self.response_bytes];
        if let Err(e) = engine.send_response(now, m.peer, m.id, response) {
            self.tracker
                .borrow_mut()
                .error(format!("send_response: {e}"));
        }
    }
}

/// The host index of a [`host_ip`] address.
fn host_index(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_sub(0x0A00_0001).map(|i| i as usize),
        IpAddr::V6(_) => None,
    }
}

/// An exponentially distributed gap of mean `mean`.
fn exp_sample(rng: &mut Rng, mean: f64) -> f64 {
    // next_f64 is in [0, 1): 1 - u is in (0, 1], so the logarithm is finite.
    -(1.0 - rng.next_f64()).ln() * mean
}

impl App<DiscardRegion> for DcApp {
    fn on_event(&mut self, now: Time, engine: &mut Engine<DiscardRegion>, event: Event) {
        match event {
            Event::Request(m) => self.on_request(now, engine, &m),
            Event::Response(m) => {
                if let Err(e) = engine.release_message(now, &m) {
                    self.tracker.borrow_mut().error(format!("release: {e:?}"));
                }
                let idx = m.cookie as u32;
                let more = {
                    let mut t = self.tracker.borrow_mut();
                    t.counters.responses += 1;
                    let msg = t.msgs[idx as usize];
                    msg.issued < msg.size
                };
                if more {
                    self.send_piece(now, engine, idx);
                }
            }
            Event::Failed(f) => {
                let mut t = self.tracker.borrow_mut();
                t.counters.failures += 1;
                t.error(format!(
                    "host {}: RPC {} failed: {:?}",
                    self.host, f.id, f.error
                ));
            }
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        if self.stopped {
            None
        } else {
            Some(Time::from_nanos(self.next_arrival.ceil() as u64))
        }
    }

    fn on_timeout(&mut self, now: Time, engine: &mut Engine<DiscardRegion>) {
        while !self.stopped && self.next_arrival.ceil() as u64 <= now.as_nanos() {
            let created = self.next_arrival.ceil() as u64;
            self.create(created, now, engine);
            self.next_arrival += exp_sample(&mut self.rng, self.mean_gap_ns);
        }
    }
}

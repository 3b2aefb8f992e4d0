//! The runtime under [`Socket`](crate::Socket): the lock around the engine, the driver
//! role, the background thread, batching and direct placement.
//!
//! # How the engine is driven
//!
//! One lock guards the engine. Whoever needs the network to make progress runs the
//! engine's I/O loop itself, holding the *driver role*:
//!
//! * a thread waiting in `recv` takes the role when it is free and drives to completion
//!   (receive, handle, transmit, run timers) until its message is there, so a response is
//!   received, processed and returned by the very thread that waits for it. Leaving
//!   `recv` wakes nobody: only threads blocked on the condition variable (waiting for the
//!   role, for a message another driver received, or for transmit room) are notified, and
//!   only when there are some;
//! * a waiting thread first polls the socket for
//!   [`SocketConfig::busy_poll`](crate::SocketConfig::busy_poll) (50 µs by default; zero
//!   never polls), calling `sched_yield` between polls so that a peer sharing its core
//!   runs, then sleeps in `ppoll` until a packet, the engine's next timer or its deadline;
//! * the background thread is a *watchdog*. While application threads drive it sleeps
//!   on an alarm (a timerfd) that every drive pushes to a tick after its read whenever
//!   less than half a tick is left, so threads that drive back to back never see it
//!   wake; when a pacing or FIFO-grant deadline falls due between two drives it runs one
//!   round without waiting (reading the socket first, so that what is queued is handled
//!   before timers judge peers silent) and leaves the role free, and the tick's timers
//!   wait for the next drive or the alarm (at most a tick); when nobody has read the
//!   socket for a tick (1 ms)
//!   and the engine has state to watch (or async tasks wait), it takes the role and
//!   drives, sleeping in `ppoll` and never spinning, until an application thread asks
//!   for the role back (through an eventfd). So a live process answers RESENDs (with data
//!   or BUSY) within about a tick even when every application thread computes, and a hand-off
//!   happens only after an application has been away for a tick. With nothing to watch
//!   (no RPCs, no waiting tasks) it sleeps until a drive, a send or an async task
//!   nudges it (or 100 ms pass);
//! * sending threads transmit their own packets directly under the lock.
//!
//! Received packets are batched (`recvmmsg`), and so are sent ones (`sendmmsg`, UDP GSO;
//! a DATA packet goes out as its header and an iovec over the message's own bytes).
//! Payloads are received straight into their bpages (direct placement: each datagram's
//! bytes after its 56-byte header are scattered to where the engine predicts its message
//! continues; mispredicted ones are gathered back and copied), so an in-order DATA
//! payload is copied once, by the kernel, as in the Linux module.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use homa_proto::engine::{self, Engine, Event, RpcFailure};
use homa_proto::Time;

use crate::message::{Message, MessageKind};
use crate::region::{RecvRegion, RegionWriter};
use crate::socket::Want;
use crate::transport::sys::{self, Scatter, SCATTER_HEAD};
use crate::transport::{Family, RecvBatch, SendBatch, Transport};
use crate::waiters::Waiters;
use crate::Error;

/// Packets per `sendmmsg` / `recvmmsg`.
pub(crate) const BATCH: usize = 32;
/// Full receive batches in a row after which timers run even though more packets wait
/// (2048 packets: a few milliseconds of work).
const TIMER_DEFER_BATCHES: usize = 64;

/// Who holds the driver role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    App,
    Background,
}

/// One turn in the driver role: who drives, for what, until when.
#[derive(Debug, Clone, Copy)]
struct Turn {
    who: Driver,
    /// What an application driver waits for: it gives the role back once that is there.
    want: Want,
    deadline: Option<Instant>,
    /// A sharded socket's scanning receive: it also gives the role back when a sibling
    /// shard pokes it.
    scan: bool,
}

impl Turn {
    fn app(want: Want, deadline: Option<Instant>, scan: bool) -> Turn {
        Turn {
            who: Driver::App,
            want,
            deadline,
            scan,
        }
    }

    /// The watchdog's turn: until an application asks for the role (or `deadline`).
    fn background(deadline: Option<Instant>) -> Turn {
        Turn {
            who: Driver::Background,
            want: Want::Both,
            deadline,
            scan: false,
        }
    }
}

/// A finished client RPC waiting to be received.
type Completion = Result<engine::Message, RpcFailure>;

pub(crate) struct Core {
    pub(crate) engine: Engine<RegionWriter>,
    pub(crate) transport: Arc<Transport>,
    send_batch: SendBatch,
    recv_batch: Option<RecvBatch>,
    /// Where the driver's next receive places DATA payloads (direct placement), per slot.
    placements: Vec<engine::Placement>,
    /// Per datagram of the last receive: whether it was received in place.
    in_place: Vec<bool>,
    driver: Option<Driver>,
    /// Application threads waiting for the background driver to hand over.
    apps_wanting: usize,
    /// Application threads blocked on `Inner::cond` (for their message, for the driver
    /// role, or for transmit-buffer room): only when there are any does a driver notify.
    app_waiters: usize,
    /// When a driver last read the socket.
    last_drive: Time,
    /// When `Inner::watch_timer` expires (drivers move it to a tick after their read
    /// whenever less than half a tick is left, so it expires only a tick or less after
    /// the last drive, and costs one system call per half tick of driving).
    watch_armed: Time,
    /// Whether the watchdog sleeps with no timeout (nothing to time, a thread drives):
    /// then a new RPC nudges it.
    watchdog_idle: bool,
    /// Received requests, with their arrival sequence number.
    requests: VecDeque<(u64, engine::Message)>,
    /// Finished client RPCs, with their arrival sequence number.
    responses: VecDeque<(u64, Completion)>,
    seq: u64,
    /// Ids some thread waits for specifically, with the number of such threads.
    reserved: HashMap<u64, usize>,
    shutdown: bool,
    /// When the current driver plans to wake up by itself.
    driver_until: Option<Time>,
    /// Async tasks waiting for a message or for room to send (`waiters.rs`).
    pub(crate) waiters: Waiters,
    /// Bpage offsets handed to the application by [`Message::into_bpages`], with how
    /// many handed-over messages hold each (a page can hold the tails of several): the
    /// only offsets [`Socket::release_bpages`](crate::Socket::release_bpages) accepts.
    pub(crate) handed_over: HashMap<u32, u32>,
    /// When the driver last read the transport's ICMP reports.
    last_reports: Time,
}

pub(crate) struct Inner {
    pub(crate) core: Mutex<Core>,
    cond: Condvar,
    /// Signalled to wake the watchdog (a nudge, shutdown).
    watch_wake: OwnedFd,
    /// Expires a tick after the last drive: the watchdog's alarm while application
    /// threads drive (drivers push it forward, `Core::watch_armed`).
    watch_timer: OwnedFd,
    wake: OwnedFd,
    pub(crate) region: RecvRegion,
    epoch: Instant,
    poll: Duration,
    family: Family,
    port: u16,
    /// Where this shard's bpage offsets start in the socket's offset space (0 unless the
    /// socket is sharded, `shards.rs`).
    bpage_base: u32,
    /// The other shards of a sharded socket (empty otherwise), set once all are started.
    siblings: OnceLock<Vec<Weak<Inner>>>,
    /// Set by a sibling that queued a message nobody there takes: a thread that scans
    /// the shards and drives or waits here looks at every shard again.
    rescan: AtomicBool,
}

pub(crate) fn completion_id(c: &Completion) -> u64 {
    match c {
        Ok(m) => m.id,
        Err(f) => f.id,
    }
}

impl Core {
    /// Sends everything the engine has to send now.
    pub(crate) fn flush(&mut self, now: Time) {
        loop {
            self.send_batch.clear();
            while !self.send_batch.is_full() {
                let buf = self.send_batch.next_buf();
                // DATA payloads are not copied into the batch: they go out as iovecs over
                // the message's own bytes.
                match self.engine.poll_transmit_split(now, buf) {
                    Some((t, payload)) => {
                        self.send_batch
                            .commit_split(t.destination, t.tos, t.len, payload)
                    }
                    None => break,
                }
            }
            if self.send_batch.is_empty() {
                return;
            }
            // Refused packets are lost (the protocol's loss recovery resends them) and
            // counted in the transport's stats.
            for (dest, kind) in self.transport.send(&self.send_batch) {
                self.engine.handle_unreachable(dest, kind);
            }
        }
    }

    /// Direct placement, before a receive: asks the engine where the next DATA payloads
    /// go and points the batch's slots there.
    fn place(&mut self, batch: &mut RecvBatch) {
        let mut places = std::mem::take(&mut self.placements);
        self.engine.placements(BATCH, &mut places);
        let region = self.engine.region();
        let scatter = places.iter().map(|p| {
            let mut ranges = Scatter::default();
            for (slot, (offset, len)) in ranges.iter_mut().zip(p.spans()) {
                *slot = region.address(offset, len).map_or((0, 0), |a| (a, len));
            }
            if ranges.iter().map(|r| r.1).sum::<usize>() != p.capacity() {
                return Scatter::default(); // (never: placements lie in the region)
            }
            ranges
        });
        // SAFETY: each range is a placement: bytes of a message the engine is still
        // receiving, past every byte received so far, inside the region (which lives as
        // long as the socket). No Rust reference covers them: the application only
        // reads delivered messages, and only the driver writes the region, which this
        // thread is until `handle_batch` clears the scatter before handling anything.
        unsafe { batch.set_scatter(scatter) };
        self.placements = places;
    }

    /// Handles the `n` datagrams of the last receive. First every datagram that is not
    /// where its placement expected is put back together in its slot (before handling
    /// anything writes the region); then each is handled, the placed ones without a copy.
    fn handle_batch(&mut self, now: Time, batch: &mut RecvBatch, n: usize) {
        self.in_place.clear();
        let slot_len = batch.max_packet;
        for k in 0..n {
            let (from, at, len) = batch.packets[k];
            let slot = at / slot_len;
            let scattered = batch.scatter(slot) != Scatter::default();
            let Some(p) = self.placements.get(slot).filter(|_| scattered) else {
                self.in_place.push(false);
                continue;
            };
            let placed = at == slot * slot_len
                && len > SCATTER_HEAD
                && self
                    .engine
                    .placement_fits(from, &batch.buf[at..at + SCATTER_HEAD], len, p);
            if !placed {
                // Bytes after the slot's head went to the placement: bring them back.
                let written = at - slot * slot_len + len;
                let mut dst = slot * slot_len + SCATTER_HEAD;
                let mut left = written.saturating_sub(SCATTER_HEAD);
                for (offset, span) in p.spans() {
                    let m = span.min(left);
                    self.engine
                        .region()
                        .copy_out(offset, &mut batch.buf[dst..dst + m]);
                    dst += m;
                    left -= m;
                }
            }
            self.in_place.push(placed);
        }
        batch.clear_scatter();
        for k in 0..n {
            let (from, at, len) = batch.packets[k];
            if self.in_place[k] {
                let place = &self.placements[at / slot_len];
                let head = &batch.buf[at..at + SCATTER_HEAD];
                self.engine.handle_placed(now, from, head, len, place);
            } else {
                self.engine
                    .handle_datagram(now, from, &batch.buf[at..at + len]);
            }
        }
    }

    /// Abandons client RPC `id` (see [`Socket::abort`](crate::Socket::abort)): in the
    /// engine, and its completion if it already arrived (its bpages go back to the
    /// pool). Returns whether it was still pending.
    pub(crate) fn abort(&mut self, now: Time, id: u64) -> bool {
        self.collect();
        let mut found = self.engine.abort(id);
        let mut dropped = Vec::new();
        self.responses.retain(|(_, c)| {
            if completion_id(c) == id {
                dropped.push(*c);
                false
            } else {
                true
            }
        });
        for c in dropped {
            found = true;
            if let Ok(m) = c {
                let _ = self.engine.release_message(now, &m);
            }
        }
        found
    }

    /// Whether a thread (or task) holds the driver role.
    #[cfg(feature = "tokio")]
    pub(crate) fn is_driven(&self) -> bool {
        self.driver.is_some()
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown
    }

    /// Marks response `id` as awaited by a specific receiver, so `Want::Responses`
    /// receivers leave it alone.
    pub(crate) fn reserve(&mut self, id: u64) {
        *self.reserved.entry(id).or_insert(0) += 1;
    }

    /// Undoes one [`reserve`](Self::reserve).
    pub(crate) fn unreserve(&mut self, id: u64) {
        if let Some(n) = self.reserved.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.reserved.remove(&id);
            }
        }
    }

    /// Gives back the memory of receive queues that a burst of messages grew.
    fn shrink_queues(&mut self) {
        if self.requests.is_empty() && self.requests.capacity() > 1024 {
            self.requests.shrink_to_fit();
        }
        if self.responses.is_empty() && self.responses.capacity() > 1024 {
            self.responses.shrink_to_fit();
        }
    }

    /// Moves the engine's events into the receive queues; returns whether any came.
    pub(crate) fn collect(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.engine.poll_event() {
            any = true;
            self.seq += 1;
            match event {
                Event::Request(m) => {
                    self.requests.push_back((self.seq, m));
                    self.waiters.request();
                }
                Event::Response(m) => {
                    let reserved = self.reserved.contains_key(&m.id);
                    self.waiters.response(m.id, reserved);
                    self.responses.push_back((self.seq, Ok(m)));
                }
                Event::Failed(f) => {
                    let reserved = self.reserved.contains_key(&f.id);
                    self.waiters.response(f.id, reserved);
                    self.responses.push_back((self.seq, Err(f)));
                }
            }
        }
        any
    }

    pub(crate) fn response_index(&self, want: Want) -> Option<usize> {
        match want {
            Want::Response(id) => self
                .responses
                .iter()
                .position(|(_, c)| completion_id(c) == id),
            _ => self
                .responses
                .iter()
                .position(|(_, c)| !self.reserved.contains_key(&completion_id(c))),
        }
    }

    /// Whether a receive for `want` would find something.
    fn has(&self, want: Want) -> bool {
        match want {
            Want::Requests => !self.requests.is_empty(),
            Want::Both => !self.requests.is_empty() || self.response_index(want).is_some(),
            _ => self.response_index(want).is_some(),
        }
    }

    /// Takes the first message `want` accepts.
    pub(crate) fn take(
        &mut self,
        want: Want,
    ) -> Option<Result<(MessageKind, engine::Message), Error>> {
        // Events the engine queued since the last drive (e.g. an RPC that failed inside
        // the sender's own send) go to their queues first, so they reach the receiver
        // waiting for them.
        self.collect();
        let request = || self.requests.front().map(|(seq, _)| *seq);
        // A receive for requests only never takes a response (nor a failed RPC): on a
        // socket that is both a client and a server, that is the client thread's.
        let response = match want {
            Want::Requests => None,
            _ => self.response_index(want),
        };
        let take_request = match want {
            Want::Requests => request().is_some(),
            Want::Responses | Want::Response(_) => false,
            Want::Both => match (request(), response) {
                (Some(r), Some(i)) => r < self.responses[i].0,
                (r, _) => r.is_some(),
            },
        };
        if take_request {
            let (_, m) = self.requests.pop_front()?;
            return Some(Ok((MessageKind::Request, m)));
        }
        let (_, completion) = self.responses.remove(response?)?;
        Some(
            completion
                .map(|m| (MessageKind::Response, m))
                .map_err(Error::from_failure),
        )
    }
}

impl Inner {
    /// Sets up the runtime around a new engine and starts the socket's background
    /// thread.
    pub(crate) fn start(
        engine: Engine<RegionWriter>,
        transport: Transport,
        region: RecvRegion,
        poll: Duration,
        family: Family,
        bpage_base: u32,
    ) -> Result<(Arc<Inner>, JoinHandle<()>), Error> {
        let max_packet = engine.max_packet_size();
        let wake = sys::eventfd().map_err(|e| Error::io("creating the wake-up eventfd", e))?;
        let watch_wake =
            sys::eventfd().map_err(|e| Error::io("creating the watchdog's eventfd", e))?;
        let watch_timer =
            sys::timerfd().map_err(|e| Error::io("creating the watchdog's timerfd", e))?;
        let port = transport.local_port();
        let inner = Arc::new(Inner {
            core: Mutex::new(Core {
                engine,
                transport: Arc::new(transport),
                send_batch: SendBatch::new(max_packet, BATCH),
                recv_batch: Some(RecvBatch::new(max_packet, BATCH)),
                placements: Vec::with_capacity(BATCH),
                in_place: Vec::with_capacity(BATCH),
                driver: None,
                apps_wanting: 0,
                app_waiters: 0,
                last_drive: Time::ZERO,
                watch_armed: Time::ZERO,
                watchdog_idle: false,
                requests: VecDeque::new(),
                responses: VecDeque::new(),
                seq: 0,
                reserved: HashMap::new(),
                shutdown: false,
                driver_until: None,
                waiters: Waiters::default(),
                handed_over: HashMap::new(),
                last_reports: Time::ZERO,
            }),
            cond: Condvar::new(),
            watch_wake,
            watch_timer,
            wake,
            region,
            epoch: Instant::now(),
            poll,
            family,
            port,
            bpage_base,
            siblings: OnceLock::new(),
            rescan: AtomicBool::new(false),
        });
        let bg = inner.clone();
        let background = std::thread::Builder::new()
            .name(format!("homa-{port}"))
            .spawn(move || bg.watchdog())
            .map_err(|e| Error::io("starting the socket's background thread", e))?;
        Ok((inner, background))
    }

    /// The socket's Homa port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The socket's address family.
    pub(crate) fn family(&self) -> Family {
        self.family
    }

    /// Where this shard's bpage offsets start in the socket's offset space.
    pub(crate) fn bpage_base(&self) -> u32 {
        self.bpage_base
    }

    /// Gives back bpages handed over by [`Message::into_bpages`] (offsets in the
    /// socket's offset space, all of this shard); stops at the first unknown one.
    pub(crate) fn release_bpages(&self, offsets: &[u32]) -> Result<(), Error> {
        let mut core = self.lock();
        let now = self.now();
        let mut result = Ok(());
        for &offset in offsets {
            let t = offset.wrapping_sub(self.bpage_base);
            match core.handed_over.get_mut(&t) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        core.handed_over.remove(&t);
                    }
                }
                None => {
                    result = Err(Error::UnknownBpage { offset });
                    break;
                }
            }
            if let Err(e) = core.engine.release(now, t) {
                // (Cannot happen: a handed-over offset is outstanding in the pool.)
                result = Err(Error::invalid("tokens", e.to_string()));
                break;
            }
        }
        core.flush(now);
        result
    }

    /// Takes a queued message `want` accepts, without driving (a sharded socket's scan
    /// of its shards); `Some(Err(Shutdown))` once shut down.
    pub(crate) fn take_queued(
        &self,
        me: &Arc<Inner>,
        want: Want,
    ) -> Option<Result<Message, Error>> {
        let mut core = self.lock();
        if core.shutdown {
            return Some(Err(Error::Shutdown));
        }
        let found = core.take(want)?;
        drop(core);
        Some(found.map(|(kind, m)| Message::new(me.clone(), kind, m)))
    }

    /// Makes this runtime one shard of a sharded socket, with `siblings` the others.
    pub(crate) fn set_siblings(&self, siblings: Vec<Weak<Inner>>) {
        let _ = self.siblings.set(siblings);
    }

    /// Whether this runtime is one shard of several.
    fn is_shard(&self) -> bool {
        self.siblings.get().is_some_and(|s| !s.is_empty())
    }

    /// After a round queued messages: if some of them will not be taken here (nobody
    /// waits on this shard, and the driver takes at most one, `taking`), tells the
    /// sibling shards, whose scanning threads then look here. Takes no sibling's lock.
    fn poke_siblings(&self, core: &Core, taking: bool) {
        let Some(siblings) = self.siblings.get() else {
            return;
        };
        let queued = core.requests.len() + core.responses.len();
        if core.app_waiters > 0 || queued <= usize::from(taking) {
            return;
        }
        for sibling in siblings.iter().filter_map(Weak::upgrade) {
            sibling.rescan.store(true, Ordering::Relaxed);
            sibling.wake();
            sibling.cond.notify_all();
        }
    }

    /// Whether an application thread (or task) holds the driver role.
    pub(crate) fn driven_by_app(&self) -> bool {
        self.lock().driver == Some(Driver::App)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Interrupts a driver blocked waiting for packets.
    fn wake(&self) {
        sys::signal(self.wake.as_raw_fd());
    }

    fn drain_wake(&self) {
        sys::drain(self.wake.as_raw_fd());
    }

    pub(crate) fn shutdown(&self) {
        let mut core = self.lock();
        if !core.shutdown {
            core.shutdown = true;
            core.engine.shutdown();
            // Queued but unreceived messages go back to the pool.
            let now = self.now();
            let mut queued: Vec<engine::Message> =
                core.requests.drain(..).map(|(_, m)| m).collect();
            queued.extend(core.responses.drain(..).filter_map(|(_, c)| c.ok()));
            for m in queued {
                let _ = core.engine.release_message(now, &m);
            }
        }
        core.waiters.all();
        drop(core);
        self.cond.notify_all();
        sys::signal(self.watch_wake.as_raw_fd());
        self.wake();
    }

    /// One attempt at an application send: the engine call, then transmission by this
    /// thread. Gives the bytes back (`Ok(Err(bytes))`) when the transmit buffer
    /// (`wmem_max`) has no room for them yet.
    pub(crate) fn try_send<T>(
        &self,
        call: &impl Fn(&mut Engine<RegionWriter>, Time, Bytes) -> Result<T, engine::SendError>,
        bytes: Bytes,
    ) -> Result<Result<T, Bytes>, Error> {
        let mut core = self.lock();
        if core.shutdown {
            return Err(Error::Shutdown);
        }
        let queued = core.engine.queued_bytes();
        if queued > 0 && queued + bytes.len() as u64 > core.engine.config().wmem_max() {
            return Ok(Err(bytes));
        }
        let now = self.now();
        let v = call(&mut core.engine, now, bytes).map_err(Error::from_send)?;
        core.flush(now);
        // The pacer may want to send more soon: make sure the driver knows.
        if let Some(t) = core.engine.poll_timeout() {
            if core.driver.is_some() && core.driver_until.is_none_or(|u| t < u) {
                self.wake();
            }
        }
        // A new RPC for the watchdog to watch.
        self.nudge_watchdog(&mut core);
        Ok(Ok(v))
    }

    /// Wakes the watchdog if it sleeps idle (the socket had nothing to time): a new RPC
    /// (sent, or arrived during a drive) or a waiting async task needs it. It goes idle
    /// only when it wakes, so this costs a system call at most once per idle sleep.
    pub(crate) fn nudge_watchdog(&self, core: &mut Core) {
        if core.watchdog_idle {
            core.watchdog_idle = false;
            sys::signal(self.watch_wake.as_raw_fd());
        }
    }

    /// An application send that waits while the transmit buffer is full.
    pub(crate) fn send<T>(
        &self,
        call: impl Fn(&mut Engine<RegionWriter>, Time, Bytes) -> Result<T, engine::SendError>,
        mut bytes: Bytes,
    ) -> Result<T, Error> {
        loop {
            match self.try_send(&call, bytes)? {
                Ok(v) => return Ok(v),
                Err(back) => {
                    bytes = back;
                    // Outgoing messages finish as responses and acks arrive (the driver,
                    // or the watchdog once nobody drives, receives them).
                    drop(self.wait_for_notice(self.lock(), Duration::from_millis(1)));
                }
            }
        }
    }

    /// Blocks on `cond` for at most `timeout`, counted in `app_waiters` so that drivers
    /// know to notify.
    fn wait_for_notice<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        timeout: Duration,
    ) -> MutexGuard<'a, Core> {
        core.app_waiters += 1;
        let mut core = self
            .cond
            .wait_timeout(core, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        core.app_waiters -= 1;
        core
    }

    /// Wakes the application threads blocked on `cond`, if there are any (queued
    /// messages may be theirs, or the driver role is free). With none, no system call.
    fn notify_waiters(&self, core: &Core) {
        if core.app_waiters > 0 {
            self.cond.notify_all();
        }
    }

    /// Waits for a message `want` accepts, driving when the role is free. `scan`: the
    /// caller is a sharded socket's receive, which returns [`Error::Timeout`] early when
    /// a sibling shard pokes it (it queued a message nobody there takes) so that the
    /// caller looks at every shard again.
    pub(crate) fn recv(
        &self,
        me: &Arc<Inner>,
        want: Want,
        deadline: Option<Instant>,
        nonblocking: bool,
        scan: bool,
    ) -> Result<Message, Error> {
        let mut core = self.lock();
        if let Want::Response(id) = want {
            core.reserve(id);
        }
        let (mut core, result) = self.recv_locked(core, want, deadline, nonblocking, scan);
        if let Want::Response(id) = want {
            core.unreserve(id);
        }
        drop(core);
        result.map(|(kind, m)| Message::new(me.clone(), kind, m))
    }

    fn recv_locked<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        want: Want,
        deadline: Option<Instant>,
        nonblocking: bool,
        scan: bool,
    ) -> (
        MutexGuard<'a, Core>,
        Result<(MessageKind, engine::Message), Error>,
    ) {
        let mut polled = false;
        loop {
            if let Some(found) = core.take(want) {
                return (core, found);
            }
            if core.shutdown {
                return (core, Err(Error::Shutdown));
            }
            if scan && self.rescan.swap(false, Ordering::Relaxed) {
                return (core, Err(Error::Timeout));
            }
            if let Want::Response(id) = want {
                if !core.engine.has_client_rpc(id) {
                    return (core, Err(Error::UnknownRpc { id }));
                }
            }
            if nonblocking {
                if polled || core.driver.is_some() {
                    return (core, Err(Error::WouldBlock));
                }
                // Pick up whatever already arrived, without waiting.
                polled = true;
                core = self.run_driver(core, Turn::app(want, Some(Instant::now()), false));
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return (core, Err(Error::Timeout));
            }
            match core.driver {
                None => core = self.run_driver(core, Turn::app(want, deadline, scan)),
                Some(driver) => {
                    if driver == Driver::Background {
                        // The watchdog drives because nobody did for a tick: ask for the
                        // role back (it leaves at once).
                        core.apps_wanting += 1;
                        self.wake();
                    }
                    let wait = deadline
                        .map(|d| d.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::from_millis(100));
                    core = self.wait_for_notice(core, wait);
                    if driver == Driver::Background {
                        core.apps_wanting -= 1;
                    }
                }
            }
        }
    }

    /// Reads and handles what is queued now, without waiting (an async task's turn as
    /// driver); the role must be free.
    #[cfg(feature = "tokio")]
    pub(crate) fn drive_now<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        want: Want,
    ) -> MutexGuard<'a, Core> {
        self.run_driver(core, Turn::app(want, Some(Instant::now()), false))
    }

    /// Takes the driver role, drives, and gives the role back. Only threads blocked on
    /// `cond` are told (leaving `recv` wakes nobody otherwise).
    fn run_driver<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        turn: Turn,
    ) -> MutexGuard<'a, Core> {
        core.driver = Some(turn.who);
        let mut core = self.drive(core, turn);
        core.driver = None;
        core.driver_until = None;
        self.notify_waiters(&core);
        if core.engine.poll_timeout().is_some() {
            // Packets this drive handled made state to watch (a request that arrived,
            // say) while the watchdog sleeps with nothing to time: wake it.
            self.nudge_watchdog(&mut core);
        }
        if core.waiters.reactor.is_none() {
            // Async tasks wait, none of them on the reactor: one takes that duty.
            core.waiters.wake_any();
        }
        core
    }

    /// The I/O loop, run by the holder of the driver role until `want` has something (an
    /// application driver), an application asks for the role (the background driver),
    /// shutdown, or the deadline. Each round reads the socket (without waiting the first
    /// time if timers are due, so that what is queued is handled before they judge peers
    /// silent), runs the timers that are due, transmits, and queues the engine's events.
    /// A `scan` driver also returns when a sibling shard pokes it.
    fn drive<'a>(&'a self, mut core: MutexGuard<'a, Core>, turn: Turn) -> MutexGuard<'a, Core> {
        let Turn {
            who,
            want,
            deadline,
            scan,
        } = turn;
        // How many receives in a row filled their batch: more is probably queued. Timers
        // then wait for the queue to drain, so they do not judge peers silent whose
        // packets wait unread, but only for `TIMER_DEFER_BATCHES` batches: however full
        // the batches stay (a flood), timeouts and the reclaiming of state still run.
        let mut full_batches = 0;
        // The first round reads without waiting only if timers are due: what is queued
        // must be handled before they judge peers silent. Otherwise the first poll of the
        // waiting receive reads it just as well (one system call fewer per drive).
        // (A caller that must not wait, past its deadline, reads without waiting.)
        let timers_due = core.engine.poll_timeout().is_some_and(|t| t <= self.now());
        let mut wait = !timers_due && deadline.is_none_or(|d| d > Instant::now());
        // Datagrams the last receive returned.
        let mut last = 0;
        loop {
            let now = self.now();
            let engine_at = core.engine.poll_timeout();
            core.driver_until = engine_at;
            let transport = core.transport.clone();
            let mut batch = core.recv_batch.take().expect("one driver at a time");
            core.place(&mut batch);
            // With no message arriving and no burst going on, take one datagram: if it
            // is the first packet of a long message, the rest of the message (often
            // queued right behind it: a loopback message goes out whole) is then
            // received straight into its bpages instead of being copied there. In a
            // burst the full batch is taken (at most one receive per burst is single).
            let single = core.placements.is_empty() && last == 0;
            batch.set_limit(if single { 1 } else { BATCH });
            // Without the lock: receive (spinning a little, then sleeping, after the first
            // round).
            drop(core);
            // Only a thread waiting for a message spins: the background driver exists for
            // progress, not latency, and its spinning would take the CPU from the
            // application threads it is about to hand the role to.
            let spin = if who == Driver::App {
                self.poll
            } else {
                Duration::ZERO
            };
            // (`socket_ready`: whether the socket may hold an ICMP report; only a sleep
            // that ended without the socket becoming ready rules it out.)
            let (received, socket_ready) = if wait {
                match self.receive(&transport, &mut batch, engine_at, deadline, now, spin) {
                    Ok((n, ready)) => (Ok(n), ready),
                    Err(e) => (Err(e), true),
                }
            } else {
                (transport.recv(&mut batch), true)
            };
            core = self.lock();
            let now = self.now();
            core.last_drive = now;
            if core.watch_armed < now + engine::TICK / 2 {
                // (A failure leaves the watchdog on its own timed sleeps: it then wakes
                // by the engine's next timer, as without the alarm.)
                if sys::arm_timer(self.watch_timer.as_raw_fd(), engine::TICK).is_ok() {
                    core.watch_armed = now + engine::TICK;
                }
            }
            let n = received.unwrap_or(0);
            last = n;
            if n == BATCH {
                full_batches += 1;
            } else {
                full_batches = 0;
            }
            core.handle_batch(now, &mut batch, n);
            core.shrink_queues();
            if n > 0 {
                // Acks free transmit-buffer room without an event: let waiting async
                // senders retry.
                core.waiters.room();
            }
            if (n == 0 && socket_ready)
                || now.saturating_duration_since(core.last_reports) >= engine::TICK
            {
                // The socket was ready without data (POLLERR), or a tick passed: ICMP
                // error reports may be waiting.
                core.last_reports = now;
                if let Ok(reports) = transport.take_unreachable() {
                    for (dest, kind) in reports {
                        core.engine.handle_unreachable(dest, kind);
                    }
                }
            }
            core.recv_batch = Some(batch);
            if full_batches == 0 || full_batches >= TIMER_DEFER_BATCHES {
                core.engine.handle_timeout(now);
                full_batches = 0;
            }
            core.flush(now);
            if core.collect() {
                self.notify_waiters(&core);
                self.poke_siblings(&core, who == Driver::App && core.has(want));
            }
            let satisfied = who == Driver::App && core.has(want);
            if satisfied
                || core.shutdown
                || (scan && self.rescan.load(Ordering::Relaxed))
                || (who == Driver::Background && core.apps_wanting > 0)
                || (n < BATCH && deadline.is_some_and(|d| Instant::now() >= d))
            {
                // (Past the deadline, a full batch means more is queued: read on, so
                // that a caller waiting for the socket's next readiness misses nothing.)
                return core;
            }
            wait = true;
        }
    }

    /// Receives a batch: polls for `spin` (yielding the CPU between polls, so that a
    /// peer on the same core runs), then sleeps until a packet, a wake-up, the engine's
    /// next timer or the caller's deadline. Also says whether the socket was ready (a
    /// packet or a queued error report) when the wait ended; true without a sleep.
    fn receive(
        &self,
        transport: &Transport,
        batch: &mut RecvBatch,
        engine_at: Option<Time>,
        deadline: Option<Instant>,
        now: Time,
        spin: Duration,
    ) -> std::io::Result<(usize, bool)> {
        if !spin.is_zero() {
            let spin_until = Instant::now() + spin;
            loop {
                let n = transport.recv(batch)?;
                if n > 0 {
                    return Ok((n, true));
                }
                if Instant::now() >= spin_until {
                    break;
                }
                // On a shared core, spinning would keep out the very thread whose packet
                // it waits for (PROTOCOL.md's poll_usecs assumes a core of its own).
                std::thread::yield_now();
            }
        }
        let mut timeout = engine_at.map(|t| t.saturating_duration_since(now));
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        let ready = transport.wait(self.wake.as_raw_fd(), timeout)?;
        if ready.wake {
            self.drain_wake();
        }
        Ok((transport.recv(batch)?, ready.fd))
    }

    /// The background thread, a watchdog: it sleeps while application threads drive
    /// (woken by the alarm a tick after the last drive, or by a nudge), and takes the
    /// driver role only when nobody has read the socket for a tick (or timers fell due
    /// with nobody driving), then drives (sleeping in the socket's wait, never spinning)
    /// until an application thread asks for the role back.
    fn watchdog(self: Arc<Self>) {
        let mut core = self.lock();
        loop {
            if core.shutdown {
                return;
            }
            let now = self.now();
            let grace_end = core.last_drive + engine::TICK;
            // Whether there is anything to watch: protocol state with timers, or async
            // tasks with none of them waiting on the reactor for the socket.
            let engine_at = core.engine.poll_timeout();
            // The pacer's and FIFO grants' deadlines cannot wait for a tick; the tick's
            // timers can: while application threads drive, the next drive runs them, or
            // we do when the alarm says nobody drove for a tick.
            let urgent_at = core.engine.poll_urgent_timeout();
            let recently_driven = core.watch_armed > now;
            let unwatched_tasks = !core.waiters.is_empty() && core.waiters.reactor.is_none();
            // (A shard always watches its socket: a thread receiving from a sharded socket
            // waits on one shard, so another's packets are read by its watchdog.)
            let needed = engine_at.is_some() || unwatched_tasks || self.is_shard();
            if needed && core.driver.is_none() && core.apps_wanting == 0 {
                if now >= grace_end && core.waiters.reactor.is_none() {
                    // Nobody read the socket for a tick (and no async task waits on the
                    // reactor to do it): drive until an application thread wants the
                    // role.
                    core = self.run_driver(core, Turn::background(None));
                    continue;
                }
                let due_at = if recently_driven {
                    urgent_at
                } else {
                    engine_at
                };
                if due_at.is_some_and(|t| t <= now) {
                    // Timers are due between two drives: one round (read what is
                    // queued, run them, transmit) without waiting, keeping the role free.
                    let now = Some(Instant::now());
                    core = self.run_driver(core, Turn::background(now));
                    continue;
                }
            }
            // Sleep. With nothing to watch: until nudged (or for at most 100 ms). While a
            // thread drives, or drove within the last tick: until the alarm (a tick
            // after the last drive), or a pacing or FIFO-grant deadline if nobody is
            // driving now; so application threads that drive back to back are never
            // interrupted by the watchdog. Otherwise until the grace period after the
            // last drive ends, or the engine's next timer if earlier.
            core.watchdog_idle = !needed;
            let sleep = if needed {
                let wake_at = if core.driver.is_some() {
                    None
                } else if recently_driven {
                    urgent_at
                } else {
                    Some(engine_at.map_or(grace_end, |t| t.min(grace_end)))
                };
                wake_at.map(|at| {
                    at.max(now + engine::TICK / 8)
                        .saturating_duration_since(now)
                })
            } else {
                Some(Duration::from_millis(100))
            };
            drop(core);
            // (An error here, which ppoll on two live descriptors does not have, would
            // only cut the sleep short.)
            // (An error reports both ready: draining an empty descriptor is harmless.)
            let ready = sys::wait_readable(
                self.watch_timer.as_raw_fd(),
                self.watch_wake.as_raw_fd(),
                sleep,
            )
            .unwrap_or(sys::Ready {
                fd: true,
                wake: true,
            });
            if ready.fd {
                sys::drain(self.watch_timer.as_raw_fd());
            }
            if ready.wake {
                sys::drain(self.watch_wake.as_raw_fd());
            }
            core = self.lock();
            core.watchdog_idle = false;
        }
    }
}

//! The async tasks waiting on a socket, and whom each event wakes.
//!
//! A task waiting for a message is registered with what it accepts ([`Want`]); a task
//! waiting for transmit-buffer room separately. An event wakes only the tasks it can
//! satisfy: a request wakes one task that accepts requests, a response (or failure)
//! the task waiting for that id, else one that accepts any response. Acks (which free
//! transmit room) wake the senders. At most one task waits on tokio's reactor for the
//! socket to become readable (`reactor`); when it stops waiting, another waiting task
//! is woken to take its place.
//!
//! Each registration is keyed by its future's token and removed when the future is
//! dropped, so cancelled futures (timeouts) leave nothing behind.

use std::collections::HashMap;
use std::task::Waker;

use crate::socket::Want;

#[derive(Debug, Default)]
pub(crate) struct Waiters {
    next: u64,
    recv: HashMap<u64, (Want, Waker)>,
    send: HashMap<u64, Waker>,
    /// The task that waits on the reactor for the socket's file descriptor.
    pub(crate) reactor: Option<u64>,
    /// A task was woken to take the reactor duty and has not polled since: waking
    /// another would only be a spurious wake-up.
    handoff_pending: bool,
}

impl Waiters {
    /// A token for one future.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn token(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Registers (or refreshes) a task waiting for a message.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wait_recv(&mut self, token: u64, want: Want, waker: &Waker) {
        self.handoff_pending = false;
        match self.recv.get_mut(&token) {
            Some((w, old)) => {
                *w = want;
                old.clone_from(waker);
            }
            None => {
                self.recv.insert(token, (want, waker.clone()));
            }
        }
    }

    /// Registers (or refreshes) a task waiting for transmit-buffer room.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wait_send(&mut self, token: u64, waker: &Waker) {
        self.send.insert(token, waker.clone());
    }

    /// Forgets a future (done or dropped). If it was the one on the reactor, another
    /// waiting task is woken to take over.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn remove(&mut self, token: u64) {
        self.handoff_pending = false;
        self.recv.remove(&token);
        self.send.remove(&token);
        if self.reactor == Some(token) {
            self.reactor = None;
            self.wake_any();
        }
    }

    /// Whether any task waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.recv.is_empty() && self.send.is_empty()
    }

    /// A request arrived: wakes one task that accepts requests.
    pub(crate) fn request(&mut self) {
        self.wake_one(|w| matches!(w, Want::Requests | Want::Both));
    }

    /// The completion of client RPC `id` arrived: wakes its task, or else (if no thread
    /// reserved it) one task that accepts any response.
    pub(crate) fn response(&mut self, id: u64, reserved: bool) {
        if !self.wake_one(|w| w == Want::Response(id)) && !reserved {
            self.wake_one(|w| matches!(w, Want::Responses | Want::Both));
        }
    }

    /// Transmit room may have freed: wakes every waiting sender.
    pub(crate) fn room(&mut self) {
        for (_, w) in self.send.drain() {
            w.wake();
        }
    }

    /// Shutdown: wakes everyone.
    pub(crate) fn all(&mut self) {
        self.room();
        for (_, (_, w)) in self.recv.drain() {
            w.wake();
        }
    }

    /// Wakes one waiting receiver, whatever it waits for (to take the reactor duty).
    pub(crate) fn wake_any(&mut self) {
        if !self.handoff_pending {
            self.handoff_pending = self.wake_one(|_| true);
        }
    }

    /// Wakes (and unregisters) one receiving task whose want `accepts`; returns whether
    /// there was one.
    fn wake_one(&mut self, accepts: impl Fn(Want) -> bool) -> bool {
        let Some(&token) = self
            .recv
            .iter()
            .filter(|(_, (w, _))| accepts(*w))
            .map(|(t, _)| t)
            .min()
        else {
            return false;
        };
        if let Some((_, w)) = self.recv.remove(&token) {
            w.wake();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_response_wakes_only_its_task_and_a_request_only_one_server_task() {
        let mut w = Waiters::default();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let (r1, wr1) = counter();
        let (r2, wr2) = counter();
        let (any, wany) = counter();
        let ta = w.token();
        w.wait_recv(ta, Want::Response(2), &wa);
        let tb = w.token();
        w.wait_recv(tb, Want::Response(4), &wb);
        let t1 = w.token();
        w.wait_recv(t1, Want::Requests, &wr1);
        let t2 = w.token();
        w.wait_recv(t2, Want::Requests, &wr2);
        let tany = w.token();
        w.wait_recv(tany, Want::Responses, &wany);
        w.response(4, true);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        assert_eq!(any.0.load(Ordering::SeqCst), 0);
        w.request();
        let woken = r1.0.load(Ordering::SeqCst) + r2.0.load(Ordering::SeqCst);
        assert_eq!(woken, 1);
        // An unreserved response nobody awaits by id goes to a `Responses` task.
        w.response(6, false);
        assert_eq!(any.0.load(Ordering::SeqCst), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn dropped_futures_leave_nothing_and_the_reactor_duty_moves_on() {
        let mut w = Waiters::default();
        let (_, wa) = counter();
        let (b, wb) = counter();
        let ta = w.token();
        w.wait_recv(ta, Want::Requests, &wa);
        w.reactor = Some(ta);
        let tb = w.token();
        w.wait_recv(tb, Want::Response(8), &wb);
        w.remove(ta);
        assert_eq!(w.reactor, None);
        assert_eq!(b.0.load(Ordering::SeqCst), 1, "the other task takes over");
        w.remove(tb);
        assert!(w.is_empty());
    }
}

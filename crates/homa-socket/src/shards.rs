//! One port served by several engines ([`SocketConfig::shards`](crate::SocketConfig::shards)):
//! which shard a call goes to, and receiving from all of them.
//!
//! A sharded server socket is N complete sockets (transport, engine, receive region,
//! driver and watchdog each) that share one UDP port as a `SO_REUSEPORT` group. The
//! group's steering program sends every datagram to shard *(its Homa source port) mod
//! N*, so all the packets of one client port reach one shard, and everything follows
//! from that:
//!
//! * a request from client port `c` is a server RPC of shard `c % N`, so its response
//!   ([`Message::reply`](crate::Message::reply), or `send_response` to `c`) goes out
//!   from that shard;
//! * a request this socket sends to server port `p` goes out from shard `p % N`, the
//!   shard the server's packets (all from port `p`) reach;
//! * client ids carry their shard in bits 56..64 (each shard's ids start at a random
//!   value below 2^55 in its own range), so a response id names its shard, and ids stay
//!   unique across the port as the protocol requires;
//! * bpage offsets are offsets in the concatenation of the shards' regions (shard `i`'s
//!   region starts at `i × region_size / N`), so offsets handed out by
//!   [`Message::into_bpages`](crate::Message::into_bpages) name their shard too.
//!
//! Receiving a response by id waits on its shard alone. Receiving any request or
//! response first takes what any shard has queued, then drives one shard: the first
//! whose driver role no application thread holds, starting from the thread's home shard
//! (threads are spread over the shards in the order they first receive), for at most a
//! tick before it looks at every shard again. So with as many waiting threads as shards
//! every shard has a thread driving it; with fewer, a message that reaches a shard
//! nobody drives waits for its watchdog (a tick) and the next scan (another tick).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use homa_proto::engine;

use crate::driver::Inner;
use crate::message::Message;
use crate::socket::Want;
use crate::Error;

/// Largest number of shards: the shard index fits in a client id's top 8 bits.
pub(crate) const MAX_SHARDS: usize = 256;
/// Where the shard index sits in a sharded socket's client ids.
const SHARD_ID_SHIFT: u32 = 56;

/// The first client id of shard `index` of `count`, from a random value: the random
/// value itself for an unsharded socket; else the shard in the top 8 bits and the random
/// value below bit 55, so 2^54 RPCs go by before a shard's ids could reach the next.
pub(crate) fn first_id(index: usize, count: usize, random: u64) -> u64 {
    if count == 1 {
        return random;
    }
    ((index as u64) << SHARD_ID_SHIFT) | (random & ((1 << (SHARD_ID_SHIFT - 1)) - 1))
}

/// One shard: a socket's runtime and its watchdog thread.
pub(crate) struct Shard {
    pub(crate) inner: Arc<Inner>,
    pub(crate) background: Option<JoinHandle<()>>,
}

/// The shards of a socket (one for an unsharded socket).
pub(crate) struct Shards {
    list: Vec<Shard>,
    /// Bytes of receive region per shard: the stride of the shards' bpage offsets.
    span: u32,
}

thread_local! {
    /// This thread's index among the threads that received from a sharded socket.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Spreads receiving threads over the shards: the n-th thread to receive starts at
/// shard n mod N.
fn home_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    HOME.with(|home| {
        home.get().unwrap_or_else(|| {
            let index = NEXT.fetch_add(1, Ordering::Relaxed);
            home.set(Some(index));
            index
        })
    })
}

impl Shards {
    /// `list` is non-empty; shard `i`'s bpage offsets start at `i × span`.
    pub(crate) fn new(list: Vec<Shard>, span: u32) -> Shards {
        debug_assert!(!list.is_empty());
        Shards { list, span }
    }

    /// Shard 0 (the only one of an unsharded socket).
    pub(crate) fn first(&self) -> &Arc<Inner> {
        &self.list[0].inner
    }

    /// Every shard's runtime.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Inner>> + '_ {
        self.list.iter().map(|s| &s.inner)
    }

    /// The shard that receives the packets sent from Homa port `port` (and so sends to
    /// it).
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> &Arc<Inner> {
        &self.list[usize::from(peer.port()) % self.list.len()].inner
    }

    /// The shard that sent client RPC `id`, if the id can be one of this socket's.
    pub(crate) fn for_id(&self, id: u64) -> Option<&Arc<Inner>> {
        if self.list.len() == 1 {
            return Some(self.first());
        }
        let index = usize::try_from(id >> SHARD_ID_SHIFT).ok()?;
        self.list.get(index).map(|s| &s.inner)
    }

    /// The shard whose region holds bpage offset `offset`.
    pub(crate) fn for_offset(&self, offset: u32) -> Option<&Arc<Inner>> {
        let index = usize::try_from(offset / self.span).ok()?;
        self.list.get(index).map(|s| &s.inner)
    }

    /// Waits for a message `want` accepts (see the module docs).
    pub(crate) fn recv(
        &self,
        want: Want,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<Message, Error> {
        if self.list.len() == 1 {
            let inner = self.first();
            return inner.recv(inner, want, deadline, nonblocking, false);
        }
        if let Want::Response(id) = want {
            let inner = self.for_id(id).ok_or(Error::UnknownRpc { id })?;
            return inner.recv(inner, want, deadline, nonblocking, false);
        }
        let n = self.list.len();
        let home = home_index() % n;
        let order = || (0..n).map(move |k| &self.list[(home + k) % n].inner);
        loop {
            for inner in order() {
                if let Some(found) = inner.take_queued(inner, want) {
                    return found;
                }
            }
            if nonblocking {
                // Nothing queued: read each shard's socket once.
                for inner in order() {
                    match inner.recv(inner, want, None, true, false) {
                        Err(Error::WouldBlock) => {}
                        other => return other,
                    }
                }
                return Err(Error::WouldBlock);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            let scan = now + engine::TICK;
            let until = deadline.map_or(scan, |d| d.min(scan));
            let target = order()
                .find(|inner| !inner.driven_by_app())
                .unwrap_or(&self.list[home].inner);
            match target.recv(target, want, Some(until), false, true) {
                Err(Error::Timeout) => {}
                other => return other,
            }
        }
    }

    /// Shuts every shard down.
    pub(crate) fn shutdown(&self) {
        for inner in self.all() {
            inner.shutdown();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.shutdown();
        for shard in &mut self.list {
            if let Some(bg) = shard.background.take() {
                let _ = bg.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ids_carry_the_shard_and_leave_room_below_it() {
        assert_eq!(first_id(0, 1, u64::MAX), u64::MAX, "unsharded: as drawn");
        for (index, count) in [(0, 2), (1, 2), (3, 4), (255, 256)] {
            let id = first_id(index, count, u64::MAX);
            assert_eq!(id >> SHARD_ID_SHIFT, index as u64);
            // 2^54 ids of step 2 stay inside the shard's range.
            let last = id.wrapping_add(2 * ((1 << 54) - 1));
            assert_eq!(last >> SHARD_ID_SHIFT, index as u64);
        }
    }
}

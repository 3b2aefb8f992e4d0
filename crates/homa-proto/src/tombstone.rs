//! Tombstones: finished server RPCs remembered for twice the timeout, so a delayed
//! duplicate of a request's DATA cannot execute the request again (closes the gap of
//! PROTOCOL.md 7.2).

use std::net::IpAddr;

use crate::engine::{Engine, MAX_TOMBSTONES, TICK};
use crate::region::Region;
use crate::Time;

impl<R: Region> Engine<R> {
    /// Remembers a server RPC whose request was delivered, for twice the timeout, so a
    /// delayed duplicate of its request cannot execute it again. (The kernel has this
    /// gap, PROTOCOL.md 7.2.)
    pub(crate) fn add_tombstone(&mut self, client: IpAddr, id: u64) {
        let keep = TICK * (2 * self.config.timeout_ticks());
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some((_, ip, old)) = self.tombstones.pop_front() {
                self.tombstone_set.remove(&(ip, old));
            }
        }
        if self.tombstone_set.insert((client, id)) {
            self.tombstones.push_back((self.now + keep, client, id));
        }
    }

    pub(crate) fn expire_tombstones(&mut self, now: Time) {
        while let Some(&(expiry, ip, id)) = self.tombstones.front() {
            if expiry > now {
                break;
            }
            self.tombstones.pop_front();
            self.tombstone_set.remove(&(ip, id));
        }
    }
}

impl<R: Region> Engine<R> {
    /// Gives back the memory of expired tombstones (after a flood of requests).
    pub(crate) fn compact_tombstones(&mut self) {
        let len = self.tombstones.len();
        if self.tombstones.capacity() > 4 * len + 64 {
            self.tombstones.shrink_to(2 * len);
        }
        if self.tombstone_set.capacity() > 4 * len + 64 {
            self.tombstone_set.shrink_to(2 * len);
        }
    }
}

//! Acknowledgements (PROTOCOL.md 4.5). Client side: a received response is
//! acknowledged (piggy-backed on the next DATA to that server, or in an ACK packet when
//! six are pending or one has waited a whole tick, see `timer.rs`), and NEED_ACK is
//! answered. Server side: acks, piggy-backed or in ACK packets, free server RPCs — only
//! those of the client that sends them (its address and Homa port, see `rpc.rs`).

use std::net::SocketAddr;

use crate::engine::Engine;
use crate::region::Region;
use crate::rpc::{is_client_id, same_endpoint, Lookup};
use crate::wire::{Ack, AckRepr, Repr};

impl<R: Region> Engine<R> {
    /// Client: the response to RPC `id` from `server` was received; queue its ack.
    pub(crate) fn queue_ack(&mut self, server: SocketAddr, id: u64) {
        let ack = Ack {
            client_id: id,
            server_port: server.port(),
        };
        self.timer_armed_for_acks();
        if let Some(full) = self.peers.push_ack(server, ack, self.ticks) {
            let repr = Repr::Ack(AckRepr {
                common: self.common_to(server, id),
                acks: full,
            });
            self.queue_control(server, repr);
        }
    }

    /// An ACK packet from `src`: the RPC in its header and every ack it lists.
    pub(crate) fn handle_ack_packet(&mut self, src: SocketAddr, a: &AckRepr) {
        for ack in a.acks.as_slice() {
            self.handle_ack(src, *ack);
        }
        self.handle_ack(
            src,
            Ack {
                client_id: a.common.sender_id,
                server_port: self.options.port,
            },
        );
    }

    /// A finished RPC acknowledged by the client at `src`: free the server RPC, if it is
    /// that client's (an ack from another port of the client's host is ignored and
    /// counted as forged; the kernel, which piggy-backs acks of any of a host's sockets,
    /// then answers our NEED_ACK from the right port).
    pub(crate) fn handle_ack(&mut self, src: SocketAddr, ack: Ack) {
        if ack.server_port != self.options.port
            || ack.client_id == 0
            || !is_client_id(ack.client_id)
        {
            return;
        }
        if let Some(&key) = self.server_ids.get(&(src.ip(), ack.client_id | 1)) {
            if let Some(rpc) = self
                .rpcs
                .get_mut(key)
                .filter(|r| same_endpoint(r.peer, src))
            {
                rpc.heard = true;
                self.free_rpc(key);
                self.stats.acked_rpcs += 1;
            } else {
                self.stats.forged += 1;
            }
        }
    }

    /// NEED_ACK from a server: ask for what is missing if the response is incomplete,
    /// otherwise answer with the pending acks for that server.
    pub(crate) fn handle_need_ack(&mut self, src: SocketAddr, local_id: u64) {
        if !is_client_id(local_id) {
            self.stats.unknown_rpc += 1;
            return;
        }
        match self.lookup(src, local_id) {
            // Still here, so the response is incomplete: ask for what is missing.
            Lookup::Found(key) => self.send_resends(key),
            Lookup::Forged => {}
            Lookup::Unknown => {
                let acks = self.peers.get_mut(src.ip()).take_all_acks(src.port());
                let repr = Repr::Ack(AckRepr {
                    common: self.common_to(src, local_id),
                    acks,
                });
                self.queue_control(src, repr);
            }
        }
    }
}

//! Acknowledgements (PROTOCOL.md 4.5): acks received (piggy-backed or in ACK packets)
//! free server RPCs; NEED_ACK is answered with the pending acks for that server.

use std::net::{IpAddr, SocketAddr};

use crate::engine::Engine;
use crate::region::Region;
use crate::rpc::is_client_id;
use crate::wire::{Ack, AckRepr, Repr};

impl<R: Region> Engine<R> {
    /// A finished RPC acknowledged by its client: free the server RPC.
    pub(crate) fn handle_ack(&mut self, from: IpAddr, ack: Ack) {
        if ack.server_port != self.options.port
            || ack.client_id == 0
            || !is_client_id(ack.client_id)
        {
            return;
        }
        if let Some(&key) = self.server_ids.get(&(from, ack.client_id | 1)) {
            self.free_rpc(key);
            self.stats.acked_rpcs += 1;
        }
    }

    pub(crate) fn handle_need_ack(&mut self, src: SocketAddr, local_id: u64) {
        if !is_client_id(local_id) {
            self.stats.unknown_rpc += 1;
            return;
        }
        if let Some(key) = self.client_ids.get(&local_id).copied() {
            // Still here, so the response is incomplete: ask for what is missing.
            self.send_resends(key);
            return;
        }
        let acks = self.peers.get_mut(src.ip()).take_all_acks(src.port());
        let repr = Repr::Ack(AckRepr {
            common: self.common_to(src, local_id),
            acks,
        });
        self.queue_control(src, repr);
    }
}

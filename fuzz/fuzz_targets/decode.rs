//! Fuzz target: arbitrary bytes through every decoder of the wire format.
//!
//! Properties checked on every input:
//! * `Repr::parse` and every view's `new_checked` return without panicking;
//! * the views agree with `Repr::parse` on whether the input is acceptable;
//! * a parsed packet re-emits without error into a buffer of `buffer_len()` bytes, and
//!   parsing the re-emitted bytes gives the same value (parse ∘ emit is the identity on
//!   parsed values).
#![no_main]

use homa_proto::wire::{
    AckPacket, CutoffsPacket, DataPacket, GrantPacket, Packet, PacketType, Repr, ResendPacket,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Repr::parse(data);

    // Every view must agree with Repr::parse about acceptance of its own type.
    let common = Packet::new_checked(data).map(|p| {
        let _ = (p.sport(), p.dport(), p.sequence(), p.doff(), p.flags());
        let _ = (p.window(), p.checksum(), p.urgent(), p.sender_id());
        p.packet_type()
    });
    let views = [
        (
            PacketType::Data,
            DataPacket::new_checked(data)
                .map(|p| {
                    let _ = (p.common(), p.message_length(), p.incoming(), p.ack());
                    let _ = (p.cutoff_version(), p.retransmit(), p.offset(), p.payload());
                })
                .is_ok(),
        ),
        (
            PacketType::Grant,
            GrantPacket::new_checked(data)
                .map(|p| {
                    let _ = (p.common(), p.offset(), p.priority());
                })
                .is_ok(),
        ),
        (
            PacketType::Resend,
            ResendPacket::new_checked(data)
                .map(|p| {
                    let _ = (p.common(), p.offset(), p.length(), p.priority());
                })
                .is_ok(),
        ),
        (
            PacketType::Cutoffs,
            CutoffsPacket::new_checked(data)
                .map(|p| {
                    let _ = (p.common(), p.cutoffs(), p.cutoff_version(), p.cutoff(9));
                })
                .is_ok(),
        ),
        (
            PacketType::Ack,
            AckPacket::new_checked(data)
                .map(|p| {
                    let _ = (p.common(), p.num_acks(), p.acks(), p.ack(usize::MAX));
                })
                .is_ok(),
        ),
    ];
    let parsed_type = parsed.as_ref().ok().map(Repr::packet_type);
    if let Some(t) = parsed_type {
        assert_eq!(common, Ok(t), "Packet view disagrees with Repr::parse");
    }
    for (ty, ok) in views {
        assert_eq!(
            ok,
            parsed_type == Some(ty),
            "{ty} view disagrees with Repr::parse ({parsed:?})"
        );
    }

    match parsed {
        Ok(repr) => {
            let mut out = vec![0u8; repr.buffer_len()];
            let len = repr.emit(&mut out).expect("a parsed packet must re-emit");
            assert_eq!(len, out.len());
            assert!(len <= data.len());
            let again = Repr::parse(&out).expect("a re-emitted packet must parse");
            assert_eq!(again, repr, "parse(emit(parse(x))) != parse(x)");
        }
        Err(e) => {
            // Formatting the error must not panic either.
            let _ = e.to_string();
        }
    }
});

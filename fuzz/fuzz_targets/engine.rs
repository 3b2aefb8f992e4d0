//! Fuzz target: two engines, a faulty network and their applications, driven by an
//! operation sequence decoded from the input.
//!
//! The interpreter is `crates/homa-proto/tests/support/engine_harness.rs`, shared with the
//! property test `crates/homa-proto/tests/engine_props.rs`: see there for the operations
//! and the checks. In short, after every operation both engines must pass
//! `Engine::check_invariants_with` (RPC indexes, send and receive accounting, grant
//! state, bpage tokens with the application's), every packet they send must parse and
//! every event must match what the application did; at the end, after the applications
//! have released everything and time has run past every timeout, both engines must be
//! idle. Any failure panics with the step and what broke.
#![no_main]

#[path = "../../crates/homa-proto/tests/support/engine_harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (setup, ops) = harness::decode(data);
    if let Err(e) = harness::Harness::run(&setup, &ops) {
        panic!("{e}");
    }
});

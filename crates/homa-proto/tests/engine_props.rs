//! Two engines driven by arbitrary operation sequences over a faulty network: after every
//! step both pass `check_invariants_with` (RPC indexes, send and receive accounting,
//! grant state, bpage tokens), every packet they send parses, every event matches what
//! the application did, and at the end, once the applications have released everything
//! and time has run past every timeout, both are idle (no RPCs, nothing queued, every
//! bpage back, no timer). The interpreter is `support/engine_harness.rs`, shared with the
//! fuzz target `fuzz/fuzz_targets/engine.rs`.

#[path = "support/engine_harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Fate, Forged, Harness, Op, Setup};
use homa_proto::engine::{Engine, EngineOptions, Event};
use homa_proto::wire::{CommonRepr, DataRepr, OffsetForm};
use homa_proto::{Config, Time};
use proptest::prelude::*;

fn setup() -> impl Strategy<Value = Setup> {
    any::<[u8; 6]>().prop_map(|b| Setup {
        client_pages: b[0],
        server_pages: b[1],
        flags: b[2],
        overcommit: b[3],
        unsched: b[4],
        wmem: b[5],
    })
}

/// Faults that lose, repeat or reorder packets but never change their bytes.
fn honest_fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Deliver),
        2 => Just(Fate::Drop),
        1 => Just(Fate::Duplicate),
    ]
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        11 => honest_fate(),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(at, xor)| Fate::Mutate { at, xor }),
        1 => any::<u16>().prop_map(|len| Fate::Truncate { len }),
    ]
}

fn forged() -> impl Strategy<Value = Forged> {
    (
        (any::<u8>(), any::<u16>(), -4i8..=4, any::<u8>()),
        (any::<u16>(), any::<u16>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |((kind, id_pick, id_delta, flags), (sport, dport), (a, b, c))| Forged {
                kind,
                id_pick,
                id_delta,
                flags,
                sport,
                dport,
                a,
                b,
                c,
            },
        )
}

/// Operations that a correct network and application can produce (faults: loss,
/// duplication, reordering, delay).
fn honest_op() -> BoxedStrategy<Op> {
    prop_oneof![
        12 => (any::<bool>(), any::<u16>(), honest_fate())
            .prop_map(|(to_server, pick, fate)| Op::Deliver { to_server, pick, fate }),
        4 => (any::<bool>(), any::<u8>(), any::<bool>())
            .prop_map(|(to_server, count, placed)| Op::DeliverBatch { to_server, count, placed }),
        3 => Just(Op::DeliverAll),
        2 => any::<u16>().prop_map(|micros| Op::Run { micros }),
        5 => (any::<u32>(), prop::bool::weighted(0.2))
            .prop_map(|(micros, late)| Op::Advance { micros, late }),
        4 => (any::<u32>(), any::<u8>()).prop_map(|(len, dest)| Op::SendRequest { len, dest }),
        5 => (any::<u16>(), any::<u32>()).prop_map(|(pick, len)| Op::SendResponse { pick, len }),
        3 => (any::<u16>(), any::<bool>()).prop_map(|(pick, whole)| Op::Release { pick, whole }),
        1 => any::<u32>().prop_map(|token| Op::ReleaseInvalid { token }),
        1 => any::<u16>().prop_map(|pick| Op::Abort { pick }),
        1 => (any::<bool>(), any::<u8>(), any::<u8>())
            .prop_map(|(on_server, dest, kind)| Op::Unreachable { on_server, dest, kind }),
    ]
    .boxed()
}

/// Everything, including corrupted, injected and forged packets.
fn any_op() -> BoxedStrategy<Op> {
    prop_oneof![
        30 => honest_op(),
        4 => (any::<bool>(), any::<u16>(), fate())
            .prop_map(|(to_server, pick, fate)| Op::Deliver { to_server, pick, fate }),
        2 => (any::<bool>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(to_server, from, bytes)| Op::Inject { to_server, from, bytes }),
        6 => (any::<bool>(), any::<u8>(), forged())
            .prop_map(|(to_server, from, packet)| Op::Forge { to_server, from, packet }),
    ]
    .boxed()
}

fn run(setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    Harness::run(setup, ops)
        .map(|_| ())
        .map_err(TestCaseError::fail)
}

proptest! {
    // A fixed seed: CI runs the same cases every time (set PROPTEST_RNG_SEED=random, or
    // another number, to explore; PROPTEST_CASES to run more).
    #![proptest_config(ProptestConfig {
        cases: 128,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x484f_4d41),
        ..ProptestConfig::default()
    })]

    /// Loss, duplication, reordering and delay: every message arrives intact or its RPC
    /// fails, once, and both engines end idle.
    #[test]
    fn lossy_networks_deliver_every_message_intact_or_fail_it_once(
        setup in setup(),
        ops in prop::collection::vec(honest_op(), 1..200),
    ) {
        run(&setup, &ops)?;
    }

    /// Corrupted, truncated, injected and forged packets on top: the accounting stays
    /// consistent after every step and both engines still end idle.
    #[test]
    fn arbitrary_packet_sequences_keep_accounting_consistent(
        setup in setup(),
        ops in prop::collection::vec(any_op(), 1..200),
    ) {
        run(&setup, &ops)?;
    }

    /// The fuzz target's input decoding, on random bytes.
    #[test]
    fn fuzz_inputs_decode_to_runs_that_keep_the_invariants(
        data in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let (setup, ops) = harness::decode(&data);
        run(&setup, &ops)?;
    }
}

/// Not a check: what the generated runs reach (responses, failures, stalls, placed
/// packets, ...), to judge the generators. `cargo test --test engine_props -- --ignored
/// --nocapture coverage`.
#[test]
#[ignore = "a report, not a check"]
fn coverage_of_generated_runs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for (name, ops) in [("lossy", honest_op()), ("arbitrary", any_op())] {
        let mut runner = TestRunner::deterministic();
        let strategy = (setup(), prop::collection::vec(ops, 1..200));
        let mut total = harness::Summary::default();
        let mut steps = 0;
        for _ in 0..200 {
            let (setup, ops) = strategy.new_tree(&mut runner).unwrap().current();
            steps += ops.len();
            let s = Harness::run(&setup, &ops).unwrap();
            total.responses += s.responses;
            total.requests += s.requests;
            total.delivered += s.delivered;
            total.placed += s.placed;
            total.stalls += s.stalls;
            total.buffer_full += s.buffer_full;
            total.pinned += s.pinned;
            total.wedged += s.wedged;
            for (k, v) in s.failures {
                *total.failures.entry(k).or_default() += v;
            }
        }
        println!("{name}: 200 runs, {steps} steps: {total:?}");
    }
}

/// A client and a server on a loss-free network, driven by hand (for reproducers).
struct Pair {
    client: Engine,
    server: Engine,
    now: Time,
}

impl Pair {
    fn new() -> Self {
        Pair::with(Config::default(), 2 << 20)
    }

    /// Both engines with `config`; the client's region of `client_region` bytes.
    fn with(config: Config, client_region: usize) -> Self {
        Pair {
            client: Engine::new(
                config.clone(),
                EngineOptions::client(harness::CLIENT.port(), 1000),
                vec![0; client_region],
            )
            .unwrap(),
            server: Engine::new(
                config,
                EngineOptions::server(harness::SERVER.port(), 1),
                vec![0; 2 << 20],
            )
            .unwrap(),
            now: Time::from_millis(1),
        }
    }

    /// Delivers every packet both ways until both engines are quiet.
    fn exchange(&mut self) {
        let mut buf = vec![0; 1500];
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                self.server
                    .handle_datagram(self.now, harness::CLIENT.ip(), &buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                self.client
                    .handle_datagram(self.now, harness::SERVER.ip(), &buf[..t.len]);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// Lets `ms` milliseconds pass in 1 ms steps, exchanging packets at each.
    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.exchange();
        }
    }
}

/// Was bug 1 (fixed: `timer.rs` frees server RPCs whose client went silent). A server RPC whose response waits for grants is exempt from the timeout
/// (`timer.rs`, "3. Still sending the response: the client's RESENDs detect losses"
/// resets its silence count on every tick), but a client that has gone sends no RESENDs
/// and no grants. Here the client aborts after the server sent its first 40,000
/// (unscheduled) bytes of a 200,000-byte response: the server RPC stays forever, its
/// 200,000 bytes counted against `wmem_max`. (The same happens after any client failure
/// or restart, and for requests forged from hosts that do not exist.)
#[test]
fn server_rpc_whose_client_went_away_is_freed() {
    let mut p = Pair::new();
    let id = p
        .client
        .send_request(p.now, harness::SERVER, vec![1; 100], 0)
        .unwrap();
    p.exchange();
    let Some(Event::Request(req)) = p.server.poll_event() else {
        panic!("the request arrives");
    };
    p.server.release_message(p.now, &req).unwrap();
    p.server
        .send_response(p.now, req.peer, req.id, vec![2; 200_000])
        .unwrap();
    assert!(p.client.abort(id));
    p.exchange();
    p.run_ms(10_000); // 100 times `timeout_ticks`
    assert_eq!(
        (p.server.rpc_count(), p.server.queued_bytes()),
        (0, 0),
        "server RPC still there:\n{}",
        p.server.describe_rpcs()
    );
}

/// Was bug 2 (fixed: `InMessage::accept` takes the new parts of an overlapping packet). A DATA packet accepted at an offset the sender's segments do not start at (here
/// forged: bytes 100..400 of a 722-byte request, which its client sends as one packet)
/// can never be completed: `InMessage::accept` drops every packet that partially
/// overlaps received bytes, so the client's packet, and each retransmission of it after
/// the server's RESENDs, is dropped. Yet `handle_data` resets the RPC's silence count
/// before dropping a duplicate, and the client is kept alive by the server's RESENDs
/// (answered with retransmissions) and BUSYs: neither side ever times out. A truncated
/// or corrupted DATA packet does the same. Expected: the RPC completes or fails.
#[test]
fn a_misaligned_data_packet_cannot_wedge_an_rpc() {
    let mut p = Pair::new();
    let id = p
        .client
        .send_request(p.now, harness::SERVER, vec![3; 722], 0)
        .unwrap();
    let forged = DataRepr {
        common: CommonRepr {
            sport: harness::CLIENT.port(),
            dport: harness::SERVER.port(),
            sender_id: id,
        },
        message_length: 722,
        incoming: 722,
        ack: None,
        cutoff_version: 0,
        retransmit: false,
        offset: 100,
        offset_form: OffsetForm::Both,
        payload: &[3; 300],
    };
    let mut bytes = vec![0; forged.buffer_len()];
    forged.emit(&mut bytes).unwrap();
    p.server
        .handle_datagram(p.now, harness::CLIENT.ip(), &bytes);
    p.exchange();
    // The request is delivered whole: the retransmitted 0..722 packet, which overlaps the
    // misaligned one, gives its new bytes.
    let mut delivered = None;
    for _ in 0..1000 {
        if let Some(Event::Request(m)) = p.server.poll_event() {
            delivered = Some(m);
            break;
        }
        p.run_ms(1);
    }
    let req = delivered.unwrap_or_else(|| {
        panic!(
            "request never delivered:\nclient: {}server: {}",
            p.client.describe_rpcs(),
            p.server.describe_rpcs()
        )
    });
    assert_eq!(p.server.message_bytes(&req), vec![3; 722]);
    p.server.release_message(p.now, &req).unwrap();
    p.server
        .send_response(p.now, req.peer, req.id, vec![4; 10])
        .unwrap();
    p.run_ms(100);
    match p.client.poll_event() {
        Some(Event::Response(m)) => assert_eq!(m.id, id),
        other => panic!("expected the response, got {other:?}"),
    }
    p.run_ms(10_000);
    assert_eq!((p.client.rpc_count(), p.server.rpc_count()), (0, 0));
}

/// Was bug 3 (fixed: abort, timeouts and ICMP reports unstall). When buffer space is freed by anything but a received packet or a release
/// (here `abort`; also a timeout in the tick, or `handle_unreachable`), `free_rpc` only
/// sets `unstall_pending`, which only the end of `dispatch` and the release calls act
/// on. A message stalled for buffer space then waits for the next packet to arrive,
/// which may never come: its sender waits for grants, and the stalled RPC itself is
/// exempt from the timeout. Here the client's 1 MiB region holds the first packet of a
/// 1,000,000-byte response when the first packet of a 100,000-byte one arrives and
/// stalls (`unsched_bytes` is 1000, and the client's GRANT for the first is lost, so the
/// server then waits); the application aborts the first RPC: the second should now get
/// the space, ask for its bytes again (RESEND) and be delivered. (Independent of bug 1:
/// were the server to time its RPCs out, the client's would still stall forever.)
#[test]
fn space_freed_by_abort_unstalls_a_waiting_message() {
    // One unscheduled packet per message: after it, the server waits for grants.
    let config = Config::builder().unsched_bytes(1000).build().unwrap();
    let mut p = Pair::with(config, 1 << 20);
    let big = p
        .client
        .send_request(p.now, harness::SERVER, vec![1; 10], 0)
        .unwrap();
    let small = p
        .client
        .send_request(p.now, harness::SERVER, vec![2; 10], 0)
        .unwrap();
    p.exchange();
    let mut buf = vec![0; 1500];
    for len in [1_000_000, 100_000] {
        let Some(Event::Request(req)) = p.server.poll_event() else {
            panic!("both requests arrive");
        };
        p.server.release_message(p.now, &req).unwrap();
        p.server
            .send_response(p.now, req.peer, req.id, vec![3; len])
            .unwrap();
        // Its only unscheduled packet arrives; the client's GRANT is lost.
        let t = p.server.poll_transmit(p.now, &mut buf).unwrap();
        assert!(p.server.poll_transmit(p.now, &mut buf).is_none());
        p.client
            .handle_datagram(p.now, harness::SERVER.ip(), &buf[..t.len]);
        while p.client.poll_transmit(p.now, &mut buf).is_some() {}
    }
    assert_eq!(
        p.client.stats().buffer_stalls,
        1,
        "the second response stalls"
    );
    assert!(p.client.abort(big));
    p.exchange();
    p.run_ms(10_000);
    match p.client.poll_event() {
        Some(Event::Response(m)) if m.id == small => {}
        other => panic!(
            "expected the response to {small}, got {other:?}; client:\n{}",
            p.client.describe_rpcs()
        ),
    }
}

/// A response forged from the server's own address and port (which the source check
/// cannot tell from the real one) reaches the client while the server computes. The bogus
/// incoming message is granted the whole `max_incoming`, and the server's BUSYs (it is
/// computing) keep its RPC alive; with a tiny `wmem_max` the server's application cannot
/// send its other responses, one of which waits for exactly those grants. Before idle
/// senders gave up their grants (`grant.rs`, `unschedule_idle_senders`) nothing moved
/// until the client gave up the RPC. Found by
/// `arbitrary_packet_sequences_keep_accounting_consistent` (shrunk input below).
#[test]
fn a_spoofed_response_while_the_server_computes_does_not_deadlock_grants() {
    let setup = Setup {
        client_pages: 0,
        server_pages: 0,
        flags: 0,
        overcommit: 0,
        unsched: 0,
        wmem: 8,
    };
    let ops = [
        Op::SendRequest {
            len: 769192528,
            dest: 48,
        },
        Op::Advance {
            micros: 1193365163,
            late: false,
        },
        Op::Deliver {
            to_server: false,
            pick: 0,
            fate: Fate::Deliver,
        },
        Op::Deliver {
            to_server: false,
            pick: 0,
            fate: Fate::Deliver,
        },
        Op::SendRequest {
            len: 715080823,
            dest: 0,
        },
        Op::Forge {
            to_server: false,
            from: 104,
            packet: Forged {
                kind: 144,
                id_pick: 4999,
                id_delta: 0,
                flags: 172,
                sport: 0,
                dport: 0,
                a: 0,
                b: 174704749,
                c: 1717875894,
            },
        },
        Op::SendRequest {
            len: 486614008,
            dest: 16,
        },
        Op::DeliverAll,
        Op::SendRequest {
            len: 1800423504,
            dest: 84,
        },
        Op::SendResponse {
            pick: 6591,
            len: 3158216146,
        },
        Op::DeliverAll,
        Op::SendResponse {
            pick: 16876,
            len: 2610655813,
        },
    ];
    run(&setup, &ops).unwrap();
}

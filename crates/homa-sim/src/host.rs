//! A simulated host running the real Homa engine plus some application logic.
//!
//! [`Host`] is the [`Node`] the network drives: it forwards packets and timeouts to its
//! [`Engine`] exactly as a socket driver would, and after every call hands the engine's
//! [`Event`]s to an [`App`] (an echo server, a workload generator, a test script), which
//! may call the engine back (send a request, a response, release buffers).
//!
//! ```
//! use homa_proto::engine::{Engine, EngineOptions, Event};
//! use homa_proto::{Config, Time};
//! use homa_sim::host::{App, Host};
//! use homa_sim::Star;
//!
//! /// Answers every request with its own bytes.
//! struct Echo;
//! impl App for Echo {
//!     fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
//!         if let Event::Request(m) = event {
//!             let bytes = engine.message_bytes(&m);
//!             engine.release_message(now, &m).unwrap();
//!             engine.send_response(now, m.peer, m.id, bytes).unwrap();
//!         }
//!     }
//! }
//!
//! /// Remembers the responses it gets.
//! #[derive(Default)]
//! struct Client(Vec<Vec<u8>>);
//! impl App for Client {
//!     fn on_event(&mut self, now: Time, engine: &mut Engine, event: Event) {
//!         if let Event::Response(m) = event {
//!             self.0.push(engine.message_bytes(&m));
//!             engine.release_message(now, &m).unwrap();
//!         }
//!     }
//! }
//!
//! let mut net = Star::new(2)
//!     .build(|i, _ip| {
//!         let options = if i == 0 { EngineOptions::server(4000, 1) } else { EngineOptions::client(40000, 2) };
//!         let engine = Engine::new(Config::default(), options, vec![0; 1 << 20]).unwrap();
//!         let app: Box<dyn App> = if i == 0 { Box::new(Echo) } else { Box::new(Client::default()) };
//!         Host::new(engine, app)
//!     })
//!     .unwrap();
//! let server = std::net::SocketAddr::new(net.host_ip(0), 4000);
//! let now = net.now();
//! net.node_mut(1).engine.send_request(now, server, b"hi".to_vec(), 0).unwrap();
//! net.run_until_idle(10_000).unwrap();
//! assert_eq!(net.node(0).engine.stats().packets_received, net.node(1).engine.stats().packets_sent);
//! ```

use homa_proto::engine::{Engine, Event};
use homa_proto::region::Region;
use homa_proto::Time;

use crate::{Node, Outgoing};

/// Application logic on a simulated host.
pub trait App<R: Region = Vec<u8>> {
    /// Handles one engine event (a request, a response, a failure). The engine may be
    /// called back freely.
    fn on_event(&mut self, now: Time, engine: &mut Engine<R>, event: Event);

    /// When the application next wants [`on_timeout`](Self::on_timeout) (for example the
    /// next request of an open-loop workload); `None` if never.
    fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// Called at (or after) the time given by [`poll_timeout`](Self::poll_timeout).
    fn on_timeout(&mut self, _now: Time, _engine: &mut Engine<R>) {}
}

impl<R: Region, A: App<R> + ?Sized> App<R> for Box<A> {
    fn on_event(&mut self, now: Time, engine: &mut Engine<R>, event: Event) {
        (**self).on_event(now, engine, event);
    }
    fn poll_timeout(&self) -> Option<Time> {
        (**self).poll_timeout()
    }
    fn on_timeout(&mut self, now: Time, engine: &mut Engine<R>) {
        (**self).on_timeout(now, engine);
    }
}

/// An engine and its application, as one simulated host.
#[derive(Debug)]
pub struct Host<A, R: Region = Vec<u8>> {
    /// The protocol engine (one Homa socket).
    pub engine: Engine<R>,
    /// The application using it.
    pub app: A,
}

impl<A: App<R>, R: Region> Host<A, R> {
    /// A host running `engine` for `app`.
    pub fn new(engine: Engine<R>, app: A) -> Self {
        Host { engine, app }
    }

    /// Delivers every pending engine event to the application.
    fn pump(&mut self, now: Time) {
        while let Some(event) = self.engine.poll_event() {
            self.app.on_event(now, &mut self.engine, event);
        }
    }
}

impl<A: App<R>, R: Region> Node for Host<A, R> {
    fn handle_datagram(&mut self, now: Time, from: core::net::IpAddr, packet: &[u8]) {
        self.engine.handle_datagram(now, from, packet);
        self.pump(now);
    }

    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Outgoing> {
        // Events can also come out of application calls made outside the network
        // (through `Network::node_mut`); deliver them before sending.
        self.pump(now);
        let t = self.engine.poll_transmit(now, buf)?;
        Some(Outgoing {
            destination: t.destination.ip(),
            len: t.len,
            priority: t.priority,
        })
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        match (self.engine.poll_timeout(), self.app.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        self.engine.handle_timeout(now);
        if self.app.poll_timeout().is_some_and(|t| t <= now) {
            self.app.on_timeout(now, &mut self.engine);
        }
        self.pump(now);
    }
}

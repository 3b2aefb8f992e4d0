//! Socket settings: the protocol's tunables plus how the socket reaches the network.

use std::time::Duration;

use homa_proto::Config;

use crate::region::DEFAULT_REGION_SIZE;
use crate::transport::{Family, TransportKind};
use crate::RecvRegion;

/// How a socket is built. Start from [`SocketConfig::default`] and change what you need.
///
/// ```
/// use homa_socket::{SocketConfig, TransportKind};
/// use homa_proto::Config;
///
/// let config = SocketConfig::default()
///     .ipv6(true)
///     .transport(TransportKind::Udp)
///     .protocol(Config::builder().unsched_bytes(60_000).build().unwrap())
///     .region_size(16 << 20);
/// assert!(config.is_ipv6());
/// ```
#[derive(Debug)]
pub struct SocketConfig {
    pub(crate) protocol: Config,
    pub(crate) transport: TransportKind,
    pub(crate) family: Family,
    pub(crate) mtu: usize,
    pub(crate) region_size: usize,
    pub(crate) region: Option<RecvRegion>,
    pub(crate) socket_buffer: usize,
    pub(crate) poll: Duration,
    /// `None`: the transport's default (see `loopback_unsched_bytes`).
    pub(crate) unsched_loopback: Option<u32>,
    pub(crate) shards: u16,
}

impl Default for SocketConfig {
    /// UDP, IPv4, the kernel's protocol defaults, MTU 1500 off loopback, a 64 MiB receive
    /// region allocated by the library, 16 MiB kernel socket buffers, 50 µs of busy polling,
    /// whole messages unscheduled to loopback peers over UDP, one shard.
    fn default() -> Self {
        SocketConfig {
            protocol: Config::default(),
            transport: TransportKind::Udp,
            family: Family::V4,
            mtu: 1500,
            region_size: DEFAULT_REGION_SIZE,
            region: None,
            socket_buffer: 16 << 20,
            poll: Duration::from_micros(50),
            unsched_loopback: None,
            shards: 1,
        }
    }
}

impl SocketConfig {
    /// The protocol's tunables (see [`homa_proto::Config`]).
    pub fn protocol(mut self, config: Config) -> Self {
        self.protocol = config;
        self
    }
    /// UDP (default) or raw IP protocol 146.
    pub fn transport(mut self, kind: TransportKind) -> Self {
        self.transport = kind;
        self
    }
    /// An IPv6 socket (true) or IPv4 (false, default). A socket talks to peers of its
    /// own family.
    pub fn ipv6(mut self, yes: bool) -> Self {
        self.family = if yes { Family::V6 } else { Family::V4 };
        self
    }
    /// Whether the socket is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.family == Family::V6
    }
    /// MTU of paths other than loopback (default 1500); packets are sized to it.
    /// Loopback paths use their own MTU (65536).
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }
    /// Size of the receive region the library allocates (default 64 MiB; at least
    /// [`MIN_REGION_SIZE`](crate::region::MIN_REGION_SIZE)).
    pub fn region_size(mut self, bytes: usize) -> Self {
        self.region_size = bytes;
        self
    }
    /// Receive into memory the caller supplies instead.
    pub fn region(mut self, region: RecvRegion) -> Self {
        self.region = Some(region);
        self
    }
    /// Kernel socket send/receive buffer size to ask for (default 16 MiB; above `net.core.rmem_max` it needs root).
    pub fn socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = bytes;
        self
    }
    /// How long a thread waiting for a message polls the socket before it sleeps in
    /// `ppoll` (default 50 µs, the kernel's `poll_usecs`). Between two polls it calls
    /// `sched_yield`, so a thread it waits for that shares its CPU (the peer of a
    /// loopback RPC on a busy machine) runs at once instead of after the whole spin.
    /// Zero never polls: the thread sleeps at once (fewest CPU cycles, a wake-up's
    /// latency). The background thread never polls.
    ///
    /// ```
    /// use homa_socket::SocketConfig;
    /// use std::time::Duration;
    /// let config = SocketConfig::default().busy_poll(Duration::ZERO);
    /// # let _ = config;
    /// ```
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.poll = spin;
        self
    }

    /// Unscheduled bytes of messages to loopback peers (127.0.0.0/8, ::1): the loopback
    /// path's RTT-bytes. Default over UDP 1,000,000, the longest message: over loopback
    /// a GRANT round trip costs as much as moving the bytes and there is no switch queue
    /// to protect, so no message waits for a grant. Over raw IP the default is the
    /// protocol's `unsched_bytes`, as for every destination: a raw-IP peer on the same
    /// host may be the kernel module, which expects the kernel's behaviour. Other
    /// destinations always use `unsched_bytes` (the kernel's 40,000 by default), so
    /// traffic on a real link is unchanged. A server's responses follow its own setting.
    ///
    /// ```
    /// use homa_socket::SocketConfig;
    /// // Loopback messages grant-scheduled past 40,000 bytes, as on a link.
    /// let config = SocketConfig::default().loopback_unsched_bytes(40_000);
    /// # let _ = config;
    /// ```
    pub fn loopback_unsched_bytes(mut self, bytes: u32) -> Self {
        self.unsched_loopback = Some(bytes);
        self
    }

    /// Serves a server port with `n` shards (default 1; at most 256; UDP only): `n`
    /// engines, each with its own UDP socket in a `SO_REUSEPORT` group on the port, its
    /// own driver and watchdog, and `region_size / n` bytes of receive region, so that
    /// `n` threads can receive, handle and send at once without sharing a lock. Every
    /// packet of a client port reaches the same shard, so each RPC lives in one shard
    /// from its first packet to its ack; the socket's API is unchanged (receives take
    /// from every shard, replies and sends go to the right one, counters are summed).
    /// Costs: each shard has its own threads and buffers, and a thread waiting for any
    /// message looks at every shard once per millisecond. How messages are routed is
    /// in `shards.rs`.
    ///
    /// [`Socket::bind`](crate::Socket::bind) fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a sharded client
    /// socket ([`Socket::new`](crate::Socket::new)), raw IP, a caller-supplied
    /// [`region`](Self::region), or a `region_size` below
    /// [`MIN_REGION_SIZE`](crate::region::MIN_REGION_SIZE) per shard.
    ///
    /// ```
    /// use homa_socket::{Socket, SocketConfig, Want};
    /// let server = Socket::bind(5996, SocketConfig::default().shards(4))?;
    /// assert_eq!(server.shard_count(), 4);
    /// let client = Socket::new(SocketConfig::default())?;
    /// let id = client.send_request(server.loopback_addr(), b"ping", 0)?;
    /// let request = server.recv(Want::Requests)?;
    /// request.reply(b"pong")?;
    /// assert_eq!(client.recv(Want::Response(id))?.to_vec(), b"pong");
    /// # Ok::<(), homa_socket::Error>(())
    /// ```
    pub fn shards(mut self, n: u16) -> Self {
        self.shards = n;
        self
    }
}

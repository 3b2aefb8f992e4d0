//! The system calls both transports use, behind safe functions: socket creation (owned
//! descriptors), socket options, socket addresses, batched sends (`sendmmsg` with a
//! TOS/Traffic Class control message per packet and optional UDP GSO) and receives
//! (`recvmmsg`), the error queue (`MSG_ERRQUEUE`), and waiting (`ppoll`).
//!
//! Every `unsafe` block is here, each with the reason it is sound. Nothing in this file
//! trusts a length or an address the kernel or the network hands back without checking
//! it against the buffer it came in.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use libc::c_int;

use super::Family;

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size, as a socket option or per send.
const UDP_SEGMENT: c_int = 103;
/// The kernel's limit on segments in one GSO send (64 before Linux 6.9, 128 since).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// The protocol-level of IP options for a family (`IPPROTO_IP` / `IPPROTO_IPV6`).
pub(crate) fn ip_level(family: Family) -> c_int {
    match family {
        Family::V4 => libc::IPPROTO_IP,
        Family::V6 => libc::IPPROTO_IPV6,
    }
}

/// The socket domain of a family.
pub(crate) fn domain(family: Family) -> c_int {
    match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    }
}

/// Opens a non-blocking, close-on-exec IP socket of `family`.
pub(crate) fn socket(family: Family, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    socket_in(domain(family), ty, protocol)
}

/// Opens a non-blocking, close-on-exec socket in any domain.
fn socket_in(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; any argument values are allowed (invalid ones
    // make it fail with an errno).
    let fd = unsafe {
        libc::socket(
            domain,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(): it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
pub(crate) fn set_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: the option value pointer refers to a live `c_int` and its exact size is
    // passed; the kernel only reads it. A bad descriptor or option fails with an errno.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads an integer socket option.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn get_option(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` tells the kernel how many bytes
    // it may write to `value`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Asks for `bytes` of receive and send buffer: first with `SO_RCVBUFFORCE` /
/// `SO_SNDBUFFORCE` (which pass `net.core.rmem_max`/`wmem_max` but need CAP_NET_ADMIN),
/// then, silently, with the capped `SO_RCVBUF` / `SO_SNDBUF`.
pub(crate) fn set_buffer_sizes(fd: RawFd, bytes: usize) {
    // The kernel doubles the value (bookkeeping overhead) and takes an int.
    let value = c_int::try_from(bytes.min(c_int::MAX as usize / 2)).unwrap_or(c_int::MAX / 2);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_option(fd, libc::SOL_SOCKET, force, value).is_err() {
            let _ = set_option(fd, libc::SOL_SOCKET, plain, value);
        }
    }
}

/// A socket address in the kernel's format.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr({:?})", self.get())
    }
}

impl RawAddr {
    /// Room for any address, for the kernel to fill.
    pub(crate) fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain old data (integers and byte arrays):
            // all zeroes is a valid value.
            storage: unsafe { std::mem::zeroed() },
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The kernel form of `addr`.
    pub(crate) fn new(addr: SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        raw.set(addr);
        raw
    }

    /// Overwrites the address with `addr`.
    pub(crate) fn set(&mut self, addr: SocketAddr) {
        let at = std::ptr::from_mut(&mut self.storage);
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for
                // every socket address type, so the write stays inside `self.storage`
                // and is aligned.
                unsafe { at.cast::<libc::sockaddr_in>().write(sin) };
                self.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6 (28 bytes < 128).
                unsafe { at.cast::<libc::sockaddr_in6>().write(sin6) };
                self.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
    }

    /// Resets the length so the kernel may write a whole address.
    fn reset(&mut self) {
        self.len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        std::ptr::from_ref(&self.storage).cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        std::ptr::from_mut(&mut self.storage).cast()
    }

    /// The address, if it is a complete IPv4 or IPv6 address.
    pub(crate) fn get(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        let at = std::ptr::from_ref(&self.storage);
        match c_int::from(self.storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the storage is aligned for and larger than sockaddr_in, every
                // bit pattern is a valid sockaddr_in, and the family says it is one.
                let sin = unsafe { at.cast::<libc::sockaddr_in>().read() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { at.cast::<libc::sockaddr_in6>().read() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Binds `fd` to `addr`.
pub(crate) fn bind(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let raw = RawAddr::new(addr);
    // SAFETY: the address pointer and length describe `raw`, which outlives the call;
    // the kernel only reads it.
    if unsafe { libc::bind(fd, raw.as_ptr(), raw.len) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Connects (a datagram socket: sets its default destination).
pub(crate) fn connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let raw = RawAddr::new(addr);
    // SAFETY: as in bind().
    if unsafe { libc::connect(fd, raw.as_ptr(), raw.len) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A Unix datagram socket bound to the abstract name `name` (a leading NUL byte is
/// added). Abstract names belong to the network namespace and vanish when the socket is
/// closed, so such a socket can hold a name for exactly as long as it lives. Fails with
/// EADDRINUSE if another socket holds the name.
pub(crate) fn bind_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = socket_in(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
    // SAFETY: sockaddr_un is plain old data (an integer and a byte array): all zeroes is
    // a valid value.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() + 1 > sun.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "abstract name too long",
        ));
    }
    for (dst, &src) in sun.sun_path[1..].iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    // SAFETY: the pointer and length describe the initialised prefix of `sun`, a live
    // local; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            std::ptr::from_ref(&sun).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Attaches the classic BPF program `program` as the socket's filter (`SO_ATTACH_FILTER`,
/// Linux `Documentation/networking/filter.rst`), replacing any earlier one: from then on
/// the kernel queues a received datagram only if the program returns non-zero for it
/// (and only that many of its bytes). The kernel checks the program; an invalid one
/// fails with EINVAL.
pub(crate) fn attach_filter(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    attach_program(fd, libc::SO_ATTACH_FILTER, program)
}

/// Attaches the classic BPF program `program` as the reuseport program of the
/// `SO_REUSEPORT` group `fd` belongs to (`SO_ATTACH_REUSEPORT_CBPF`): for each datagram
/// to the group's port the kernel runs it on the datagram's payload (past the UDP
/// header) and delivers the datagram to the group's socket of the index it returns, in
/// the order they joined (an index out of range falls back to the kernel's hash).
pub(crate) fn attach_reuseport_program(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    attach_program(fd, libc::SO_ATTACH_REUSEPORT_CBPF, program)
}

/// `setsockopt(SOL_SOCKET, option)` with a classic BPF program.
fn attach_program(fd: RawFd, option: c_int, program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the program (it copies it); never written through.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the option value pointer refers to `fprog`, a live local, and its exact
    // size is passed; `fprog.filter` points at `program`, which holds exactly `len`
    // instructions and outlives the call. The kernel only reads both (copying the
    // program before it returns), so nothing is written through the `*mut`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Throws away the datagrams queued on the non-blocking socket `fd` (each read into a
/// one-byte buffer, the rest discarded by the kernel) until none is left; returns how
/// many. The caller makes sure no more arrive meanwhile (a filter that drops
/// everything), else this may not end. A pending socket error (an ICMP report sets one,
/// and the next receive returns and clears it) does not stop it; best effort all the
/// same: after a few errors it gives up (the datagrams left are received as usual).
pub(crate) fn discard_queued(fd: RawFd) -> usize {
    let mut byte = [0u8; 1];
    let (mut discarded, mut errors) = (0, 0);
    while errors < 16 {
        // SAFETY: the buffer pointer and length describe `byte`, a live local the kernel
        // may write one byte to; no address is asked for.
        let r = unsafe { libc::recv(fd, byte.as_mut_ptr().cast(), byte.len(), libc::MSG_DONTWAIT) };
        if r >= 0 {
            discarded += 1;
            continue;
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock => break,
            io::ErrorKind::Interrupted => {}
            _ => errors += 1,
        }
    }
    discarded
}

/// The address a socket is bound to.
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    let mut raw = RawAddr::empty();
    // SAFETY: the pointer and the in/out length describe `raw.storage`, which the kernel
    // may fill up to `raw.len` bytes.
    if unsafe { libc::getsockname(fd, raw.as_mut_ptr(), &mut raw.len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    raw.get()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

/// The local address the kernel would use as the source of packets to `dest` (a UDP
/// socket connected to it, then `getsockname`).
pub(crate) fn route_source(dest: IpAddr) -> io::Result<IpAddr> {
    let family = Family::of(dest);
    let fd = socket(family, libc::SOCK_DGRAM, 0)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // Any non-zero port: a UDP connect() only resolves the route, nothing is sent.
    connect(raw, SocketAddr::new(dest, 9))?;
    Ok(local_addr(raw)?.ip())
}

/// A random number (std's randomly keyed hasher: seeded from the OS, no extra crate).
pub(crate) fn random_u64() -> u64 {
    // Every RandomState gets fresh keys (the per-thread random seed, incremented), so
    // hashing nothing still gives a new value each call.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `CMSG_ALIGN`: control message parts are aligned to `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}
/// `CMSG_LEN`: header plus `len` data bytes.
const fn cmsg_len(len: usize) -> usize {
    cmsg_align(size_of::<libc::cmsghdr>()) + len
}
/// `CMSG_SPACE`: header plus `len` data bytes, padded.
const fn cmsg_space(len: usize) -> usize {
    cmsg_align(size_of::<libc::cmsghdr>()) + cmsg_align(len)
}

/// Room for the control messages of one send: TOS/Traffic Class (int) and GSO (u16).
const SEND_CMSG_SPACE: usize = cmsg_space(size_of::<c_int>()) + cmsg_space(size_of::<u16>());

/// A control message buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; SEND_CMSG_SPACE]);

/// Writes one control message at `at` in `buf`; returns the offset of the next.
fn put_cmsg(buf: &mut [u8], at: usize, level: c_int, ty: c_int, data: &[u8]) -> usize {
    let len = cmsg_len(data.len());
    let hdr = cmsg_align(size_of::<libc::cmsghdr>());
    // The cmsghdr layout (linux): cmsg_len: size_t, cmsg_level: int, cmsg_type: int.
    buf[at..at + size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
    let lvl = at + size_of::<usize>();
    buf[lvl..lvl + 4].copy_from_slice(&level.to_ne_bytes());
    buf[lvl + 4..lvl + 8].copy_from_slice(&ty.to_ne_bytes());
    buf[at + hdr..at + hdr + data.len()].copy_from_slice(data);
    at + cmsg_space(data.len())
}

/// The control messages in `buf` (`len` valid bytes): (level, type, data). Stops at
/// the first malformed header.
fn cmsgs(buf: &[u8], len: usize) -> impl Iterator<Item = (c_int, c_int, &[u8])> + '_ {
    let buf = &buf[..len.min(buf.len())];
    let hdr = cmsg_align(size_of::<libc::cmsghdr>());
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + hdr > buf.len() {
            return None;
        }
        let mut word = [0u8; size_of::<usize>()];
        word.copy_from_slice(&buf[at..at + size_of::<usize>()]);
        let clen = usize::from_ne_bytes(word);
        if clen < hdr || clen > buf.len() - at {
            return None;
        }
        let lvl = at + size_of::<usize>();
        let level = c_int::from_ne_bytes([buf[lvl], buf[lvl + 1], buf[lvl + 2], buf[lvl + 3]]);
        let ty = c_int::from_ne_bytes([buf[lvl + 4], buf[lvl + 5], buf[lvl + 6], buf[lvl + 7]]);
        let data = &buf[at + hdr..at + clen];
        at += cmsg_align(clen);
        Some((level, ty, data))
    })
}

/// An all-zero `mmsghdr`.
fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all zeroes (null
    // pointers, zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// One message of a send: where its iovecs are, its destination and control data.
#[derive(Debug, Clone, Copy)]
struct OutMsg {
    first_iov: usize,
    iovs: usize,
    control_len: usize,
}

/// Reusable headers for `sendmmsg`, sized by use (no allocation once warmed up).
///
/// The raw pointers it holds (`mmsghdr`, `iovec`) are only meaningful during one
/// [`SendBuilder::send`] call; they are rewritten before every call and never read by
/// Rust code.
pub(crate) struct SendScratch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<RawAddr>,
    controls: Vec<CmsgBuf>,
    out: Vec<OutMsg>,
}

// SAFETY: the raw pointers inside are never dereferenced by Rust code; they are
// rewritten to point at live data at the start of every send, which happens while the
// scratch is exclusively borrowed. Moving the scratch to another thread is harmless.
unsafe impl Send for SendScratch {}

impl std::fmt::Debug for SendScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendScratch")
            .field("capacity", &self.msgs.capacity())
            .finish()
    }
}

impl SendScratch {
    /// Headers for `capacity` messages (grows when more are needed).
    pub(crate) fn new(capacity: usize) -> Self {
        SendScratch {
            msgs: Vec::with_capacity(capacity),
            iovs: Vec::with_capacity(capacity),
            addrs: Vec::with_capacity(capacity),
            controls: Vec::with_capacity(capacity),
            out: Vec::with_capacity(capacity),
        }
    }

    /// Starts a new set of messages whose bytes live in `'d`.
    pub(crate) fn builder<'d>(&mut self) -> SendBuilder<'_, 'd> {
        self.iovs.clear();
        self.addrs.clear();
        self.controls.clear();
        self.out.clear();
        SendBuilder {
            s: self,
            _data: PhantomData,
        }
    }
}

/// Messages being assembled for `sendmmsg`; the packet bytes are borrowed for `'d`, so
/// they outlive every send made through the builder.
pub(crate) struct SendBuilder<'s, 'd> {
    s: &'s mut SendScratch,
    _data: PhantomData<&'d [u8]>,
}

impl<'d> SendBuilder<'_, 'd> {
    /// Adds one datagram to `dest` made of `parts` (concatenated), with the TOS /
    /// Traffic Class `tos` and, if `segment` is given, UDP GSO segmentation at that size.
    pub(crate) fn push(
        &mut self,
        family: Family,
        dest: SocketAddr,
        tos: u8,
        segment: Option<u16>,
        parts: impl IntoIterator<Item = &'d [u8]>,
    ) {
        let first_iov = self.s.iovs.len();
        for p in parts {
            self.s.iovs.push(libc::iovec {
                // The kernel only reads through it (sendmsg).
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            });
        }
        let iovs = self.s.iovs.len() - first_iov;
        self.s.addrs.push(RawAddr::new(dest));
        let mut control = CmsgBuf([0; SEND_CMSG_SPACE]);
        let tos_type = match family {
            Family::V4 => libc::IP_TOS,
            Family::V6 => libc::IPV6_TCLASS,
        };
        let mut control_len = put_cmsg(
            &mut control.0,
            0,
            ip_level(family),
            tos_type,
            &c_int::from(tos).to_ne_bytes(),
        );
        if let Some(seg) = segment {
            control_len = put_cmsg(
                &mut control.0,
                control_len,
                libc::SOL_UDP,
                UDP_SEGMENT,
                &seg.to_ne_bytes(),
            );
        }
        self.s.controls.push(control);
        self.s.out.push(OutMsg {
            first_iov,
            iovs,
            control_len,
        });
    }

    /// Number of messages added.
    pub(crate) fn len(&self) -> usize {
        self.s.out.len()
    }

    /// Sends messages `first..` with one `sendmmsg` (non-blocking). Returns how many
    /// the kernel took (at least 1), or the error of message `first`.
    pub(crate) fn send(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        let s = &mut *self.s;
        let n = s.out.len();
        if first >= n {
            return Ok(0);
        }
        s.msgs.clear();
        for i in 0..n {
            let o = s.out[i];
            let mut m = empty_mmsghdr();
            m.msg_hdr.msg_name = s.addrs[i].as_mut_ptr().cast();
            m.msg_hdr.msg_namelen = s.addrs[i].len;
            m.msg_hdr.msg_iov = s.iovs[o.first_iov..].as_mut_ptr();
            m.msg_hdr.msg_iovlen = o.iovs;
            m.msg_hdr.msg_control = s.controls[i].0.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = o.control_len;
            s.msgs.push(m);
        }
        let count = libc::c_uint::try_from(n - first).unwrap_or(libc::c_uint::MAX);
        loop {
            // SAFETY: every mmsghdr in `msgs[first..]` points at live memory for the
            // whole call: its address and control buffer in `addrs`/`controls` (not
            // modified while `msgs` is in use), its iovecs in `iovs`, and through
            // them the packet bytes borrowed for `'d`, which outlive this builder.
            // The lengths given match those buffers. The kernel only writes `msg_len`.
            let r = unsafe {
                libc::sendmmsg(fd, s.msgs[first..].as_mut_ptr(), count, libc::MSG_DONTWAIT)
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Reusable headers for `recvmmsg`. They are built once for a given buffer, slot size,
/// count, prefix and scatter, and reused as they are while those stay the same (a
/// thread polling an empty socket rebuilds nothing): only the entries the last call
/// filled in (their address lengths) are reset.
pub(crate) struct RecvScratch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<RawAddr>,
    /// Per datagram, room for an IPv4 header without options (raw IPv4 sockets).
    prefixes: Vec<[u8; IPV4_HEADER_LEN]>,
    /// What the headers were built for, if they are valid.
    built: Option<BuiltFor>,
    /// Entries the last `recvmmsg` filled in.
    touched: usize,
}

/// The arguments of [`RecvScratch::recv`] that its headers depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuiltFor {
    buf: usize,
    buf_len: usize,
    slot: usize,
    count: usize,
    prefix: bool,
    scatter: Vec<Scatter>,
}

/// Length of an IPv4 header without options.
pub(crate) const IPV4_HEADER_LEN: usize = 20;

/// Bytes of a datagram that stay in its slot when the rest is scattered (direct
/// placement): a DATA header.
pub(crate) const SCATTER_HEAD: usize = homa_proto::wire::DATA_HEADER_LEN;

/// Scatter ranges of one datagram: up to two `(address, length)` memory ranges that
/// receive its bytes after the first [`SCATTER_HEAD`]; `(0, 0)` entries are unused.
pub(crate) type Scatter = [(usize, usize); 2];

/// iovecs per datagram at most: prefix, head, two scatter ranges, tail.
const MAX_IOVS: usize = 5;

// SAFETY: as for SendScratch: the raw pointers are rewritten before each receive,
// while the scratch is exclusively borrowed, and never dereferenced by Rust code.
unsafe impl Send for RecvScratch {}

impl std::fmt::Debug for RecvScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvScratch")
            .field("capacity", &self.msgs.len())
            .finish()
    }
}

/// What one received datagram looked like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes written (prefix included, if one was asked for).
    pub(crate) len: usize,
    /// The datagram did not fit.
    pub(crate) truncated: bool,
    /// The sender's address.
    pub(crate) source: Option<SocketAddr>,
}

impl RecvScratch {
    /// Headers for up to `capacity` datagrams (grows when asked for more).
    pub(crate) fn new(capacity: usize) -> Self {
        let mut s = RecvScratch {
            msgs: Vec::new(),
            iovs: Vec::new(),
            addrs: Vec::new(),
            prefixes: Vec::new(),
            built: None,
            touched: 0,
        };
        s.ensure(capacity);
        s
    }

    fn ensure(&mut self, capacity: usize) {
        if self.msgs.len() < capacity {
            // The vectors may move: every header must be rebuilt.
            self.built = None;
            self.msgs.resize_with(capacity, empty_mmsghdr);
            self.iovs.resize_with(MAX_IOVS * capacity, empty_iovec);
            self.addrs.resize(capacity, RawAddr::empty());
            self.prefixes.resize(capacity, [0; IPV4_HEADER_LEN]);
        }
    }

    /// Receives up to `count` datagrams without blocking, datagram `i` into
    /// `buf[i * slot..(i + 1) * slot]` (preceded, if `prefix`, by the 20-byte
    /// [`prefix`](Self::prefix) area: for raw IPv4 sockets, where the IP header comes
    /// first). Returns the number received (0 if none was queued).
    ///
    /// Direct placement: for `i < scatter.len()` with non-empty ranges, datagram `i`'s
    /// bytes after its first [`SCATTER_HEAD`] go to the ranges of `scatter[i]` (in order),
    /// and only what does not fit them goes on in the slot, after a gap as long as the
    /// ranges: putting the ranges' bytes into that gap restores the datagram.
    ///
    /// # Safety
    ///
    /// Every range in `scatter` must be memory that is valid for writes and that no Rust
    /// reference covers until the call returns.
    pub(crate) unsafe fn recv(
        &mut self,
        fd: RawFd,
        buf: &mut [u8],
        slot: usize,
        count: usize,
        prefix: bool,
        scatter: &[Scatter],
    ) -> io::Result<usize> {
        let count = count.min(buf.len().checked_div(slot).unwrap_or(0));
        if count == 0 {
            return Ok(0);
        }
        self.ensure(count);
        let scatter = &scatter[..scatter.len().min(count)];
        let same = self.built.as_ref().is_some_and(|b| {
            b.buf == buf.as_ptr() as usize
                && b.buf_len == buf.len()
                && b.slot == slot
                && b.count == count
                && b.prefix == prefix
                && b.scatter == scatter
        });
        if same {
            // The headers still describe these buffers; the kernel changed only the
            // address lengths (and output fields) of the entries it filled in.
            for i in 0..self.touched.min(count) {
                self.addrs[i].reset();
                self.msgs[i].msg_hdr.msg_namelen = self.addrs[i].len;
            }
        } else {
            self.build(buf, slot, count, prefix, scatter);
        }
        let vlen = libc::c_uint::try_from(count).unwrap_or(libc::c_uint::MAX);
        self.receive(fd, count, vlen)
    }

    /// Builds the headers of the first `count` datagrams (see [`recv`](Self::recv)).
    fn build(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        count: usize,
        prefix: bool,
        scatter: &[Scatter],
    ) {
        // (The scatter list's room is reused: placements change every round of a
        // transfer.)
        let mut kept = self.built.take().map(|b| b.scatter).unwrap_or_default();
        kept.clear();
        kept.extend_from_slice(scatter);
        self.built = Some(BuiltFor {
            buf: buf.as_ptr() as usize,
            buf_len: buf.len(),
            slot,
            count,
            prefix,
            scatter: kept,
        });
        for i in 0..count {
            let iov = &mut self.iovs[i * MAX_IOVS..(i + 1) * MAX_IOVS];
            let mut n = 0;
            if prefix {
                iov[n] = libc::iovec {
                    iov_base: self.prefixes[i].as_mut_ptr().cast(),
                    iov_len: IPV4_HEADER_LEN,
                };
                n += 1;
            }
            let ranges = scatter.get(i).copied().unwrap_or_default();
            let scattered: usize = ranges.iter().map(|r| r.1).sum();
            let own = &mut buf[i * slot..(i + 1) * slot];
            if scattered == 0 || SCATTER_HEAD + scattered > slot {
                iov[n] = libc::iovec {
                    iov_base: own.as_mut_ptr().cast(),
                    iov_len: slot,
                };
                n += 1;
            } else {
                iov[n] = libc::iovec {
                    iov_base: own.as_mut_ptr().cast(),
                    iov_len: SCATTER_HEAD,
                };
                n += 1;
                for &(address, len) in ranges.iter().filter(|r| r.1 > 0) {
                    iov[n] = libc::iovec {
                        iov_base: address as *mut libc::c_void,
                        iov_len: len,
                    };
                    n += 1;
                }
                let tail = &mut own[SCATTER_HEAD + scattered..];
                if !tail.is_empty() {
                    iov[n] = libc::iovec {
                        iov_base: tail.as_mut_ptr().cast(),
                        iov_len: tail.len(),
                    };
                    n += 1;
                }
            }
            self.addrs[i].reset();
            let mut m = empty_mmsghdr();
            m.msg_hdr.msg_name = self.addrs[i].as_mut_ptr().cast();
            m.msg_hdr.msg_namelen = self.addrs[i].len;
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = n;
            self.msgs[i] = m;
        }
    }

    /// One `recvmmsg` of `count` datagrams into the headers built.
    fn receive(&mut self, fd: RawFd, count: usize, vlen: libc::c_uint) -> io::Result<usize> {
        self.touched = 0;
        loop {
            // SAFETY: each of the first `count` mmsghdrs points at a live address
            // buffer (`addrs[i]`, with its size), live iovecs (`iovs`) that describe
            // disjoint, in-bounds parts of `buf` (i * slot + slot <= buf.len()), of
            // `prefixes[i]` and the scatter ranges, which the caller guarantees are
            // writable and unreferenced. They were built for exactly this `buf` (same
            // address and length), slot, count, prefix and scatter (`recv` compares),
            // and the vectors they point into have not moved since (`ensure` drops the
            // headers when it grows them). All stay borrowed and unmoved for the call. No
            // control buffer is given. The timeout pointer may be null.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    vlen,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                let r = (r as usize).min(count);
                for i in 0..r {
                    self.addrs[i].len = self.msgs[i].msg_hdr.msg_namelen;
                }
                self.touched = r;
                return Ok(r);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub(crate) fn received(&self, i: usize) -> Received {
        let m = &self.msgs[i];
        Received {
            len: m.msg_len as usize,
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            source: self.addrs[i].get(),
        }
    }

    /// The prefix area of datagram `i` (raw IPv4: the first 20 bytes of the IP header).
    pub(crate) fn prefix(&self, i: usize) -> &[u8; IPV4_HEADER_LEN] {
        &self.prefixes[i]
    }
}

/// Bytes of a quoted packet kept from an error report: the longest IPv4 header (60) and
/// the Homa ports.
pub(crate) const QUOTED: usize = 64;

/// One entry of a socket's error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedError {
    /// The original destination of the packet the error is about (the UDP port for UDP
    /// sockets, 0 for raw sockets).
    pub(crate) dest: Option<SocketAddr>,
    /// `sock_extended_err`: errno, origin, ICMP type and code (`None` if the entry
    /// carried no extended error).
    pub(crate) errno: u32,
    pub(crate) origin: Option<u8>,
    pub(crate) icmp_type: u8,
    pub(crate) icmp_code: u8,
    /// The first bytes of the quoted packet (for raw sockets: the Homa header, after
    /// the IPv4 header if the socket writes it, `IP_HDRINCL`).
    pub(crate) quoted: [u8; QUOTED],
    pub(crate) quoted_len: usize,
}

/// What one [`recvmsg_with_control`] received.
struct RecvMsg<'c> {
    len: usize,
    source: Option<SocketAddr>,
    /// The whole control buffer as bytes, and how much of it the kernel filled.
    control: &'c [u8],
    control_len: usize,
}

/// One `recvmsg(fd, flags)` into `buf`, with `control` (u64s, so that control messages
/// are aligned) as the control buffer. Errors (EINTR, EAGAIN, ...) are the caller's.
fn recvmsg_with_control<'c>(
    fd: RawFd,
    buf: &mut [u8],
    control: &'c mut [u64],
    flags: c_int,
) -> io::Result<RecvMsg<'c>> {
    let mut name = RawAddr::empty();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = name.len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(control);
    // SAFETY: `msg` points at live locals (name, one iovec over `buf`) and the control
    // buffer, each with its true size, for the duration of the call.
    let r = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    name.len = msg.msg_namelen;
    // SAFETY: reinterpreting initialised, live u64s as bytes of the same size (u8 has no
    // alignment or validity requirements).
    let control_bytes: &[u8] =
        unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), size_of_val(control)) };
    Ok(RecvMsg {
        len: r as usize,
        source: name.get(),
        control: control_bytes,
        control_len: msg.msg_controllen,
    })
}

/// Takes one entry off the socket's error queue (`MSG_ERRQUEUE`); `None` when empty.
pub(crate) fn recv_error(fd: RawFd) -> io::Result<Option<QueuedError>> {
    let mut data = [0u8; QUOTED];
    let mut control = [0u64; 64];
    let got = loop {
        match recvmsg_with_control(
            fd,
            &mut data,
            &mut control,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        ) {
            Ok(got) => break got,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            },
        }
    };
    let mut out = QueuedError {
        dest: got.source,
        errno: 0,
        origin: None,
        icmp_type: 0,
        icmp_code: 0,
        quoted: data,
        quoted_len: got.len.min(data.len()),
    };
    for (level, ty, d) in cmsgs(got.control, got.control_len) {
        let is_err = (level == libc::SOL_IP && ty == libc::IP_RECVERR)
            || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR);
        // struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code,
        // ee_pad; u32 ee_info; u32 ee_data; }
        if is_err && d.len() >= 8 {
            out.errno = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]);
            out.origin = Some(d[4]);
            out.icmp_type = d[5];
            out.icmp_code = d[6];
        }
    }
    Ok(Some(out))
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Polls `fds` until one is ready or `timeout` passes; retries when interrupted.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let ts = match (timeout, deadline) {
            (None, _) => None,
            (Some(t), None) => Some(timespec(t)),
            (Some(_), Some(d)) => Some(timespec(d.saturating_duration_since(Instant::now()))),
        };
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd of the length
        // given; `ts_ptr` is null or points at `ts`, alive for the call; a null signal
        // mask leaves the mask unchanged. Negative descriptors are ignored by ppoll.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(0);
        }
    }
}

/// Which descriptors a [`wait_readable`] found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// `fd` is readable or has an error pending.
    pub(crate) fd: bool,
    /// `wake_fd` is readable: drain it (only then: an empty drain is a wasted system call).
    pub(crate) wake: bool,
}

/// Blocks until `fd` is readable or has an error pending (a queued ICMP report: POLLERR;
/// drain it with the transport's `take_unreachable`), `wake_fd` is readable (a negative
/// `wake_fd` is ignored), or `timeout` passes (`None` = no timeout), and says which were
/// ready (neither: the timeout). Timeouts have nanosecond resolution (ppoll). Interrupted
/// waits are resumed with the remaining time.
pub(crate) fn wait_readable(
    fd: RawFd,
    wake_fd: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake_fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    poll(&mut fds, timeout)?;
    Ok(Ready {
        fd: fds[0].revents != 0,
        wake: fds[1].revents != 0,
    })
}

/// A non-blocking, close-on-exec eventfd (a counter other threads add to, to wake a
/// thread polling it).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to eventfd `fd` (it becomes readable). An overflowing counter (2^64 − 2
/// unread signals) would make the write fail with EAGAIN, which changes nothing: the
/// descriptor is readable either way.
pub(crate) fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64; `fd` is an eventfd its owner keeps
    // open for the call.
    unsafe {
        libc::write(fd, std::ptr::from_ref(&one).cast(), 8);
    }
}

/// Clears a counter descriptor (an eventfd, or a timerfd's expirations) without
/// blocking: after it, the descriptor is not readable until signalled or expired again.
pub(crate) fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local u64; `fd` is non-blocking and kept
    // open by its owner for the call.
    unsafe {
        libc::read(fd, std::ptr::from_mut(&mut v).cast(), 8);
    }
}

/// A non-blocking, close-on-exec timerfd on the monotonic clock, disarmed.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create has no memory preconditions; the result is checked below.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms timerfd `fd` to expire once, `after` from now (replacing any earlier setting; at
/// least 1 ns, since zero would disarm it).
pub(crate) fn arm_timer(fd: RawFd, after: Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: timespec(Duration::ZERO),
        it_value: timespec(after.max(Duration::from_nanos(1))),
    };
    // SAFETY: `spec` is a live local read by the call; a null old-value pointer asks for
    // nothing back; `fd` is a timerfd its owner keeps open for the call.
    let r = unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until `fd` is writable or `timeout` passes; whether it is writable.
pub(crate) fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    Ok(poll(&mut fds, Some(timeout))? > 0 && fds[0].revents & libc::POLLOUT != 0)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the transports' tests: plain receives that report the TOS byte, forged
    //! ICMP errors, firewall rules, and skipping tests that need privileges.

    use super::*;

    /// Set to `1`, this environment variable makes tests that need privileges fail
    /// instead of skipping when the privileges (or tools) are missing.
    pub(crate) const REQUIRE_PRIVILEGED: &str = "HOMA_TEST_REQUIRE_PRIVILEGED";

    /// Skips the calling test for `reason` (the caller returns after this): prints
    /// `skipped: <reason>` to stderr, or fails with the reason if
    /// [`REQUIRE_PRIVILEGED`]`=1`.
    pub(crate) fn skip(reason: &str) {
        if std::env::var_os(REQUIRE_PRIVILEGED).is_some_and(|v| v == "1") {
            panic!("{reason} ({REQUIRE_PRIVILEGED}=1: not skipping)");
        }
        eprintln!("skipped: {reason}");
    }

    /// Whether this thread may open raw IP sockets (CAP_NET_RAW). If it may not, the
    /// calling test is [skipped](skip) and should return.
    pub(crate) fn raw_ip_allowed() -> bool {
        match socket(
            Family::V4,
            libc::SOCK_RAW,
            c_int::from(homa_proto::wire::IPPROTO_HOMA),
        ) {
            Ok(_) => true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                skip("raw IP tests need CAP_NET_RAW (run as root)");
                false
            }
            Err(e) => panic!("opening a raw IP socket: {e}"),
        }
    }

    /// Whether the process runs as root (effective uid 0, from `/proc/self/status`).
    fn is_root() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    }

    /// A netfilter rule at the top of the OUTPUT chain (`iptables` / `ip6tables -I
    /// OUTPUT`), deleted again when dropped, also when the test panics.
    pub(crate) struct OutputRule {
        tool: &'static str,
        spec: Vec<String>,
    }

    impl OutputRule {
        /// Inserts the rule `spec` (e.g. `-p udp --dport 5000 -j DROP`) for `family`.
        /// `None` if that cannot be done here (not root, the tool missing or failing):
        /// then the calling test is [skipped](skip) and should return.
        pub(crate) fn insert(family: Family, spec: &[&str]) -> Option<OutputRule> {
            let tool = match family {
                Family::V4 => "iptables",
                Family::V6 => "ip6tables",
            };
            if !is_root() {
                skip(&format!("firewall tests need root (to run {tool})"));
                return None;
            }
            let rule = OutputRule {
                tool,
                spec: spec.iter().map(|s| s.to_string()).collect(),
            };
            match rule.run("-I") {
                Ok(()) => Some(rule),
                Err(why) => {
                    skip(&why);
                    None
                }
            }
        }

        /// Runs `tool <op> OUTPUT <spec>`; the error says what went wrong.
        fn run(&self, op: &str) -> Result<(), String> {
            let out = std::process::Command::new(self.tool)
                .arg(op)
                .arg("OUTPUT")
                .args(&self.spec)
                .output();
            let what = format!("{} {op} OUTPUT {}", self.tool, self.spec.join(" "));
            match out {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "`{what}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(format!("{} is not installed", self.tool))
                }
                Err(e) => Err(format!("running `{what}`: {e}")),
            }
        }
    }

    impl Drop for OutputRule {
        fn drop(&mut self) {
            if let Err(why) = self.run("-D") {
                eprintln!("could not remove a test's firewall rule: {why}");
            }
        }
    }

    /// Turns on reporting of the received TOS / Traffic Class (IP_RECVTOS /
    /// IPV6_RECVTCLASS).
    pub(crate) fn enable_recv_tos(fd: RawFd, family: Family) {
        let name = match family {
            Family::V4 => libc::IP_RECVTOS,
            Family::V6 => libc::IPV6_RECVTCLASS,
        };
        set_option(fd, ip_level(family), name, 1).expect("enabling TOS reporting");
    }

    /// Receives one datagram without blocking: (length, source, TOS/Traffic Class).
    pub(crate) fn recv_with_tos(
        fd: RawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<SocketAddr>, Option<u8>)> {
        let mut control = [0u64; 16];
        let got = recvmsg_with_control(fd, buf, &mut control, libc::MSG_DONTWAIT)?;
        let mut tos = None;
        for (level, ty, d) in cmsgs(got.control, got.control_len) {
            if level == libc::SOL_IP && ty == libc::IP_TOS && !d.is_empty() {
                tos = Some(d[0]);
            }
            if level == libc::SOL_IPV6 && ty == libc::IPV6_TCLASS && d.len() >= 4 {
                tos = Some(c_int::from_ne_bytes([d[0], d[1], d[2], d[3]]) as u8);
            }
        }
        Ok((got.len, got.source, tos))
    }

    /// Receives one datagram without blocking: its length and the (level, type) of
    /// each control message that came with it.
    pub(crate) fn recv_with_cmsg_types(
        fd: RawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, Vec<(c_int, c_int)>)> {
        let mut control = [0u64; 16];
        let got = recvmsg_with_control(fd, buf, &mut control, libc::MSG_DONTWAIT)?;
        let types = cmsgs(got.control, got.control_len)
            .map(|(level, ty, _)| (level, ty))
            .collect();
        Ok((got.len, types))
    }

    /// The Internet checksum of `data`.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Forges an ICMP (v4) / ICMPv6 error of `icmp_type`/`code` on loopback, quoting a
    /// packet of IP protocol `proto` from the loopback address to itself whose first
    /// bytes are `quoted` (at least 8). Needs CAP_NET_RAW.
    pub(crate) fn inject_icmp(family: Family, icmp_type: u8, code: u8, proto: u8, quoted: &[u8]) {
        let mut msg = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        match family {
            Family::V4 => {
                let total = (20 + quoted.len()) as u16;
                let mut ip = vec![
                    0x45,
                    0,
                    (total >> 8) as u8,
                    total as u8,
                    0,
                    0,
                    0x40,
                    0,
                    64,
                    proto,
                    0,
                    0,
                ];
                ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
                let sum = internet_checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                msg.extend_from_slice(&ip);
                msg.extend_from_slice(quoted);
                let sum = internet_checksum(&msg);
                msg[2..4].copy_from_slice(&sum.to_be_bytes());
                let fd =
                    socket(family, libc::SOCK_RAW, libc::IPPROTO_ICMP).expect("raw ICMP socket");
                let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
                send_to(std::os::fd::AsRawFd::as_raw_fd(&fd), &msg, to).expect("sending ICMP");
            }
            Family::V6 => {
                if icmp_type == 4 {
                    // Parameter problem: the pointer names the next-header field.
                    msg[7] = 6;
                }
                let len = quoted.len() as u16;
                msg.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, proto, 64]);
                msg.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                msg.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                msg.extend_from_slice(quoted);
                // The kernel fills the ICMPv6 checksum of raw ICMPv6 sockets.
                let fd = socket(family, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
                    .expect("raw ICMPv6 socket");
                let to = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
                send_to(std::os::fd::AsRawFd::as_raw_fd(&fd), &msg, to).expect("sending ICMPv6");
            }
        }
    }

    /// Sends one datagram (no control data).
    pub(crate) fn send_to(fd: RawFd, bytes: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let raw = RawAddr::new(dest);
        // SAFETY: the buffer and address pointers describe live values of the given
        // lengths; the kernel only reads them.
        let r = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                raw.as_ptr(),
                raw.len,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Sets a socket option whose value is a byte string (`IP_OPTIONS`,
    /// `IPV6_DSTOPTS`, ...).
    pub(crate) fn set_option_bytes(
        fd: RawFd,
        level: c_int,
        name: c_int,
        value: &[u8],
    ) -> io::Result<()> {
        let len = libc::socklen_t::try_from(value.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the pointer and length describe `value`, live for the call; the kernel
        // only reads it.
        let r = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), len) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn cmsg_macros_match_libc() {
        for n in [0usize, 1, 2, 4, 8, 16, 17] {
            let n32 = n as u32;
            // SAFETY: CMSG_LEN/CMSG_SPACE are pure arithmetic on their argument.
            let (len, space) = unsafe { (libc::CMSG_LEN(n32), libc::CMSG_SPACE(n32)) };
            assert_eq!(cmsg_len(n), len as usize);
            assert_eq!(cmsg_space(n), space as usize);
        }
    }

    #[test]
    fn cmsg_parser_round_trips_and_rejects_garbage() {
        let mut buf = [0u8; 64];
        let end = put_cmsg(&mut buf, 0, 1, 2, &[9, 9, 9, 9]);
        let end = put_cmsg(&mut buf, end, 3, 4, &[7, 7]);
        let got: Vec<_> = cmsgs(&buf, end).collect();
        assert_eq!(
            got,
            vec![(1, 2, &[9u8, 9, 9, 9][..]), (3, 4, &[7u8, 7][..])]
        );
        // A length running past the buffer stops the walk.
        let mut bad = buf;
        bad[..8].copy_from_slice(&1000usize.to_ne_bytes());
        assert_eq!(cmsgs(&bad, end).count(), 0);
        // A length shorter than the header stops it too.
        bad[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(cmsgs(&bad, end).count(), 0);
        // A controllen beyond the buffer is clamped.
        assert_eq!(cmsgs(&buf, 10_000).count(), 2);
    }

    #[test]
    fn socket_addresses_round_trip() {
        for a in [
            "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            "[::1]:65535".parse().unwrap(),
            "[fe80::1%3]:1".parse().unwrap(),
        ] {
            assert_eq!(RawAddr::new(a).get(), Some(a));
        }
        assert_eq!(RawAddr::empty().get(), None);
    }

    #[test]
    fn wait_readable_times_out_and_wakes() {
        let a = socket(Family::V4, libc::SOCK_DGRAM, 0).unwrap();
        bind(a.as_raw_fd(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let start = Instant::now();
        let ready = wait_readable(a.as_raw_fd(), -1, Some(Duration::from_millis(20))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            ready,
            Ready {
                fd: false,
                wake: false
            },
            "timed out"
        );
        // A readable wake descriptor ends the wait at once.
        let b = socket(Family::V4, libc::SOCK_DGRAM, 0).unwrap();
        bind(b.as_raw_fd(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let to = local_addr(b.as_raw_fd()).unwrap();
        test_util::send_to(a.as_raw_fd(), b"x", to).unwrap();
        let start = Instant::now();
        let ready =
            wait_readable(a.as_raw_fd(), b.as_raw_fd(), Some(Duration::from_secs(10))).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            ready,
            Ready {
                fd: false,
                wake: true
            },
            "only the wake descriptor"
        );
        // Huge timeouts are fine (saturated), and so is none at all.
        wait_readable(a.as_raw_fd(), b.as_raw_fd(), Some(Duration::MAX)).unwrap();
        wait_readable(a.as_raw_fd(), b.as_raw_fd(), None).unwrap();
    }

    #[test]
    fn route_source_of_loopback() {
        assert_eq!(
            route_source("127.0.0.1".parse().unwrap()).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            route_source("::1".parse().unwrap()).unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
    }
}

//! The receive buffer pool: where each incoming message's bytes go (PROTOCOL.md 5.5, 3.6).
//!
//! The engine owns no memory. The driver owns a *receive region* of `region_len` bytes (the
//! socket library maps it; the simulator may not store bytes at all) and [`BufferPool`]
//! decides the layout, exactly like the Linux module's `homa_pool`:
//!
//! - The region is cut into *bpages* of [`BPAGE_SIZE`] = 65536 bytes; only whole bpages
//!   are used (trailing bytes that do not fill a bpage are ignored).
//! - A message of length `L` gets `floor(L / 65536)` whole bpages plus, if
//!   `L % 65536 != 0`, one *tail fragment* of `L % 65536` bytes, so at most
//!   [`MAX_BPAGES`] = 16 tokens. A *token* is a byte offset from the start of the region.
//!   All tokens but the last are 64 KiB-aligned whole bpages (message bytes
//!   `[i * 65536, (i + 1) * 65536)` live at token `i`); the last token is the tail fragment
//!   and need not be aligned. [`MessageBuffers`] carries the tokens and maps message
//!   offsets to region offsets.
//! - Space is allocated for the whole message at once, when its first packet arrives. If
//!   it cannot be, [`BufferPool::allocate`] returns `None`, the pool is left unchanged and
//!   the engine stalls the message until space frees up (PROTOCOL.md 3.6).
//! - The application owns a delivered message's tokens and hands them back one by one, in
//!   any order and batching, through [`BufferPool::release`]; the engine returns the tokens
//!   of messages it abandons the same way ([`BufferPool::release_all`]). Every release is
//!   validated: a token that is not outstanding is a [`PoolError::InvalidToken`] and
//!   leaves the pool untouched.
//!
//! # Placement policy
//!
//! - **Whole bpages** are the lowest-indexed free bpages, in increasing order, so the
//!   footprint stays compact. (The kernel scans a window of roughly the pages in use plus
//!   25 % from a per-core cursor; taking the globally lowest free page is the limit of
//!   that policy.)
//! - **Tail fragments** are carved consecutively, without alignment, from the *current
//!   tail page* (the engine is single-threaded, so there is one, like one kernel core's).
//!   A bpage holding fragments stays allocated while any of its fragments is outstanding.
//!   When a fragment does not fit in the rest of the current tail page, a fresh bpage
//!   (the lowest free one) becomes the current tail page; the old one is freed when its
//!   last fragment comes back.
//! - When every fragment of the current tail page has been returned, the page stays current
//!   and carving restarts at its beginning. (The kernel restarts it only once a fragment no
//!   longer fits; restarting at once only changes where later fragments land.)
//! - An *idle* current tail page (no fragments outstanding) is not counted by
//!   [`BufferPool::free_pages`], but it is not lost either: if a message needs one more
//!   whole bpage than the free pages provide, the idle tail page is given up and used as a
//!   whole bpage. This is what the kernel's 10 ms ownership lease amounts to for a single
//!   core: without it, a one-bpage region could never again take a 64 KiB message after
//!   its first short one.
//!
//! # Accounting, and a leak check
//!
//! Every bpage is in exactly one of these states:
//!
//! | State | Counted by |
//! |---|---|
//! | free | [`free_pages`](BufferPool::free_pages) |
//! | the current tail page, no fragment outstanding (idle) | [`available_pages`](BufferPool::available_pages) (with the free ones) |
//! | the current tail page, fragments outstanding | — |
//! | a former tail page whose fragments are not all back | — |
//! | a whole bpage of an outstanding message | — |
//!
//! [`outstanding_tokens`](BufferPool::outstanding_tokens) counts tokens handed out and not
//! yet released. [`is_idle`](BufferPool::is_idle) is true exactly when it is zero, and then
//! `available_pages() == page_count()` and `free_pages()` is `page_count()` or
//! `page_count() - 1` (the latter when a current tail page exists). So a check that "every
//! bpage is back in the pool" is `pool.is_idle()`, or equivalently
//! `pool.available_pages() == pool.page_count()`.

use core::cmp::Reverse;
use core::fmt;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashSet};
use std::hash::BuildHasherDefault;

use crate::wire::MAX_MESSAGE_LENGTH;

/// Size of one bpage in bytes (`HOMA_BPAGE_SIZE`).
pub const BPAGE_SIZE: usize = 1 << BPAGE_SHIFT;

/// Largest number of tokens one message can need (`HOMA_MAX_BPAGES`):
/// `ceil(1_000_000 / 65536)`.
pub const MAX_BPAGES: usize = 16;

/// `log2(BPAGE_SIZE)` (`HOMA_BPAGE_SHIFT`).
const BPAGE_SHIFT: u32 = 16;
/// [`BPAGE_SIZE`] as a `u32`.
const BPAGE_U32: u32 = 1 << BPAGE_SHIFT;
/// Offset-within-bpage mask.
const BPAGE_MASK: u32 = BPAGE_U32 - 1;
/// Most bpages a pool can have: tokens are `u32` byte offsets, so 4 GiB of region.
const MAX_POOL_PAGES: usize = 1 << (32 - BPAGE_SHIFT);

/// Why a pool could not be created, or why a token could not be released.
///
/// ```
/// use homa_proto::pool::{BufferPool, PoolError};
///
/// assert_eq!(
///     BufferPool::new(1000).unwrap_err(),
///     PoolError::RegionTooSmall { len: 1000, min: 65536 },
/// );
/// let mut pool = BufferPool::new(4 * 65536).unwrap();
/// let err = pool.release(12345).unwrap_err();
/// assert!(matches!(err, PoolError::InvalidToken { token: 12345, .. }));
/// println!("{err}"); // invalid buffer token 12345 (0x3039): its bpage is free ...
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The region given to [`BufferPool::new`] does not hold a single whole bpage.
    RegionTooSmall {
        /// The region length given, in bytes.
        len: usize,
        /// The smallest usable region: [`BPAGE_SIZE`].
        min: usize,
    },
    /// The region given to [`BufferPool::new`] holds more bpages than 32-bit tokens can
    /// address (65536 bpages, 4 GiB).
    RegionTooLarge {
        /// The region length given, in bytes.
        len: usize,
        /// The largest region whose every bpage can be addressed: 4 GiB (or `usize::MAX`
        /// where that is smaller). Bytes after the last whole bpage are ignored, so up to
        /// 65535 bytes more are accepted.
        max: usize,
    },
    /// [`BufferPool::release`] was given a token that is not outstanding: never handed out,
    /// already released, inside a bpage or fragment rather than at its start, or outside
    /// the pool's bpages.
    InvalidToken {
        /// The token given.
        token: u32,
        /// What is wrong with it, e.g. `"beyond the last bpage of the region"`.
        reason: &'static str,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::RegionTooSmall { len, min } => write!(
                f,
                "receive region of {len} bytes is too small: it must hold at least one \
                 {BPAGE_SIZE}-byte bpage ({min} bytes)"
            ),
            PoolError::RegionTooLarge { len, max } => write!(
                f,
                "receive region of {len} bytes is too large: 32-bit buffer tokens address \
                 at most {MAX_POOL_PAGES} bpages ({max} bytes)"
            ),
            PoolError::InvalidToken { token, reason } => {
                write!(f, "invalid buffer token {token} ({token:#x}): {reason}")
            }
        }
    }
}

impl std::error::Error for PoolError {}

/// Where one message lives in the receive region: up to [`MAX_BPAGES`] tokens and the
/// message length. `Copy`, no heap.
///
/// Only a [`BufferPool`] creates these. Chunk `i` (token `i`) holds message bytes
/// `[i * 65536, min((i + 1) * 65536, length))`; every chunk but the last is a whole,
/// 64 KiB-aligned bpage.
///
/// ```
/// use homa_proto::pool::BufferPool;
///
/// let mut pool = BufferPool::new(8 * 65536).unwrap();
/// let msg = pool.allocate(70_000).unwrap();
/// assert_eq!(msg.length(), 70_000);
/// assert_eq!(msg.tokens().len(), 2);
/// // Byte 65_600 is 64 bytes into the tail fragment, which has 4464 - 64 bytes left.
/// let (at, len) = msg.locate(65_600).unwrap();
/// assert_eq!(at, msg.tokens()[1] as usize + 64);
/// assert_eq!(len, 70_000 - 65_600);
/// let total: usize = msg.chunks().map(|(_, len)| len).sum();
/// assert_eq!(total, 70_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageBuffers {
    length: u32,
    count: u8,
    /// `tokens[..count]` are meaningful; the rest are 0 so that equality is meaningful.
    tokens: [u32; MAX_BPAGES],
}

impl MessageBuffers {
    /// The message length in bytes (1..=1,000,000).
    pub fn length(&self) -> u32 {
        self.length
    }

    /// The tokens (byte offsets into the region) in message order: whole bpages first,
    /// then the tail fragment if the length is not a multiple of [`BPAGE_SIZE`].
    pub fn tokens(&self) -> &[u32] {
        self.tokens.get(..usize::from(self.count)).unwrap_or(&[])
    }

    /// Where message byte `offset` lives: `(region_offset, contiguous_len)`, meaning that
    /// message bytes `offset..offset + contiguous_len` are at region bytes
    /// `region_offset..region_offset + contiguous_len` (up to the end of that chunk).
    /// `None` if `offset >= length()`.
    ///
    /// ```
    /// use homa_proto::pool::BufferPool;
    ///
    /// let mut pool = BufferPool::new(4 * 65536).unwrap();
    /// let msg = pool.allocate(65_536 + 10).unwrap();
    /// assert_eq!(msg.locate(0), Some((msg.tokens()[0] as usize, 65_536)));
    /// assert_eq!(msg.locate(65_535), Some((msg.tokens()[0] as usize + 65_535, 1)));
    /// assert_eq!(msg.locate(65_536), Some((msg.tokens()[1] as usize, 10)));
    /// assert_eq!(msg.locate(65_546), None);
    /// ```
    pub fn locate(&self, offset: u32) -> Option<(usize, usize)> {
        if offset >= self.length {
            return None;
        }
        let index = (offset >> BPAGE_SHIFT) as usize;
        let within = offset & BPAGE_MASK;
        let start = *self.tokens().get(index)?;
        let chunk_len = self.chunk_len(index);
        Some((
            start as usize + within as usize,
            chunk_len.saturating_sub(within as usize),
        ))
    }

    /// The chunks in message order as `(region_offset, len)`. Their lengths add up to
    /// [`length`](Self::length); every chunk but the last is a whole bpage.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.tokens()
            .iter()
            .enumerate()
            .map(move |(index, &token)| (token as usize, self.chunk_len(index)))
    }

    /// Length of chunk `index`.
    fn chunk_len(&self, index: usize) -> usize {
        let before = index.saturating_mul(BPAGE_SIZE);
        (self.length as usize)
            .saturating_sub(before)
            .min(BPAGE_SIZE)
    }
}

/// What one bpage is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// In the free heap.
    Free,
    /// A whole bpage of an outstanding message (its token is the page start).
    Whole,
    /// Holds tail fragments; the count of outstanding ones. 0 only for the current tail
    /// page.
    Fragments(u32),
}

/// The page tail fragments are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TailPage {
    /// Page index.
    page: u32,
    /// Offset in the page where the next fragment starts (0..=65536). 0 whenever the page
    /// has no outstanding fragment.
    next: u32,
}

/// Where an allocation's tail fragment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailPlan {
    /// The length is a multiple of [`BPAGE_SIZE`].
    None,
    /// Carved from the current tail page.
    Current,
    /// A fresh page becomes the current tail page.
    Fresh,
}

/// A feasible allocation, worked out without changing the pool.
#[derive(Debug, Clone, Copy)]
struct Plan {
    whole: usize,
    tail_len: u32,
    tail: TailPlan,
    /// Give up the idle current tail page first (it becomes a whole bpage).
    retire_tail_page: bool,
}

/// How a token validated by [`BufferPool::check`] is held.
#[derive(Debug, Clone, Copy)]
enum Held {
    Whole(usize),
    Fragment(usize, u32),
}

/// Deterministic hashing (the set only ever holds tokens this pool made).
type TokenSet = HashSet<u32, BuildHasherDefault<DefaultHasher>>;

/// The bpage allocator over a receive region of `region_len` bytes (see the
/// [module docs](self) for the layout and the placement policy).
///
/// Allocation happens for a whole message at once; each token is then released on its
/// own. Nothing here touches the region's bytes: the pool only says where they go.
/// Operations cost O(log pages) and allocate nothing beyond amortized bookkeeping (the
/// set of outstanding fragments).
///
/// ```
/// use homa_proto::pool::{BufferPool, BPAGE_SIZE};
///
/// // A 1 MiB region: 16 bpages.
/// let mut pool = BufferPool::new(1 << 20).unwrap();
/// assert_eq!(pool.page_count(), 16);
///
/// // 150,000 bytes: two whole bpages and a 18,928-byte tail fragment.
/// let msg = pool.allocate(150_000).unwrap();
/// assert_eq!(msg.tokens(), &[0, 65_536, 131_072]);
/// assert_eq!(
///     msg.chunks().collect::<Vec<_>>(),
///     vec![(0, BPAGE_SIZE), (65_536, BPAGE_SIZE), (131_072, 18_928)],
/// );
/// // Short messages share the current tail page, one after the other.
/// let small = pool.allocate(100).unwrap();
/// assert_eq!(small.tokens(), &[131_072 + 18_928]);
/// assert_eq!(pool.outstanding_tokens(), 4);
///
/// // The application hands the tokens back, in any order.
/// pool.release(small.tokens()[0]).unwrap();
/// pool.release_all(&msg).unwrap();
/// assert!(pool.release(0).is_err()); // already released
/// assert!(pool.is_idle());
/// assert_eq!(pool.available_pages(), pool.page_count());
///
/// // A 1 MB message needs 16 tokens; too large for what is left after a 600 kB one.
/// let big = pool.allocate(600_000).unwrap();
/// assert!(!pool.can_allocate(1_000_000));
/// assert_eq!(pool.allocate(1_000_000), None);
/// pool.release_all(&big).unwrap();
/// assert_eq!(pool.allocate(1_000_000).unwrap().tokens().len(), 16);
/// ```
#[derive(Clone)]
pub struct BufferPool {
    region_len: usize,
    /// State of every usable bpage.
    pages: Vec<Page>,
    /// Indices of the `Free` pages, lowest first.
    free: BinaryHeap<Reverse<u32>>,
    /// The current tail page, if any fragment has been carved yet.
    tail: Option<TailPage>,
    /// Outstanding fragment tokens.
    fragments: TokenSet,
    /// Number of `Whole` pages.
    whole_outstanding: usize,
}

/// A summary (the per-page state and the fragment set can be large).
impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("region_len", &self.region_len)
            .field("page_count", &self.page_count())
            .field("free_pages", &self.free_pages())
            .field("whole_outstanding", &self.whole_outstanding)
            .field("fragments_outstanding", &self.fragments.len())
            .field("tail_page", &self.tail)
            .finish()
    }
}

impl BufferPool {
    /// A pool over a region of `region_len` bytes, all free. The region must hold at least
    /// one bpage ([`PoolError::RegionTooSmall`]) and at most 65536 (4 GiB, the reach of
    /// 32-bit tokens; [`PoolError::RegionTooLarge`]); bytes after the last whole bpage are
    /// not used.
    pub fn new(region_len: usize) -> Result<Self, PoolError> {
        let page_count = region_len / BPAGE_SIZE;
        if page_count == 0 {
            return Err(PoolError::RegionTooSmall {
                len: region_len,
                min: BPAGE_SIZE,
            });
        }
        if page_count > MAX_POOL_PAGES {
            return Err(PoolError::RegionTooLarge {
                len: region_len,
                max: MAX_POOL_PAGES.saturating_mul(BPAGE_SIZE),
            });
        }
        let free: Vec<Reverse<u32>> = (0..page_count)
            .filter_map(|page| u32::try_from(page).ok().map(Reverse))
            .collect();
        Ok(BufferPool {
            region_len,
            pages: vec![Page::Free; page_count],
            free: BinaryHeap::from(free),
            tail: None,
            fragments: TokenSet::default(),
            whole_outstanding: 0,
        })
    }

    /// Allocates space for a whole message of `length` bytes: `length / 65536` whole
    /// bpages (the lowest free ones, in increasing order) and, if `length % 65536 != 0`, a
    /// tail fragment carved from the current tail page (or from a fresh one if it does not
    /// fit).
    ///
    /// Returns `None`, leaving the pool unchanged, if there is not enough space now (the
    /// engine stalls the message and retries once tokens come back), or if `length` is 0
    /// or more than 1,000,000 bytes (no valid message has such a length; the wire parser
    /// already rejects them).
    pub fn allocate(&mut self, length: u32) -> Option<MessageBuffers> {
        let plan = self.plan(length)?;
        if plan.retire_tail_page {
            if let Some(tail) = self.tail.take() {
                self.free_page(tail.page);
            }
        }
        let mut tokens = [0u32; MAX_BPAGES];
        let mut count = 0usize;
        for slot in tokens.iter_mut().take(plan.whole) {
            let page = self.take_free_page()?;
            self.set_page(page, Page::Whole);
            self.whole_outstanding += 1;
            *slot = page << BPAGE_SHIFT;
            count += 1;
        }
        let tail_token = match plan.tail {
            TailPlan::None => None,
            TailPlan::Current => {
                let tail = self.tail.as_mut()?;
                let token = (tail.page << BPAGE_SHIFT) + tail.next;
                tail.next += plan.tail_len;
                let page = tail.page;
                self.add_fragment(page);
                Some(token)
            }
            TailPlan::Fresh => {
                // The old tail page (if any) has fragments outstanding, or the fragment
                // would have fitted; it stays allocated until they come back.
                let page = self.take_free_page()?;
                self.set_page(page, Page::Fragments(0));
                self.tail = Some(TailPage {
                    page,
                    next: plan.tail_len,
                });
                self.add_fragment(page);
                Some(page << BPAGE_SHIFT)
            }
        };
        if let Some(token) = tail_token {
            self.fragments.insert(token);
            if let Some(slot) = tokens.get_mut(count) {
                *slot = token;
                count += 1;
            }
        }
        Some(MessageBuffers {
            length,
            count: u8::try_from(count).unwrap_or(0),
            tokens,
        })
    }

    /// Whether a message of `length` bytes could be allocated right now, i.e. whether
    /// [`allocate`](Self::allocate) would return `Some`. Changes nothing.
    pub fn can_allocate(&self, length: u32) -> bool {
        self.plan(length).is_some()
    }

    /// Hands one token back. On error ([`PoolError::InvalidToken`]: out of range, not
    /// outstanding, or not the start of a whole bpage or fragment) nothing changes.
    ///
    /// A whole bpage is free again at once. A fragment's bpage is free again when its last
    /// fragment comes back, unless it is the current tail page, which then stays current
    /// and is carved again from its start.
    pub fn release(&mut self, token: u32) -> Result<(), PoolError> {
        let held = self.check(token)?;
        self.release_held(token, held);
        Ok(())
    }

    /// Hands back every token of `buffers` (for the engine, when it abandons a message).
    /// Either all tokens are released or, if any is not outstanding, none is and the error
    /// names the first bad one.
    pub fn release_all(&mut self, buffers: &MessageBuffers) -> Result<(), PoolError> {
        let tokens = buffers.tokens();
        let mut held = [Held::Whole(0); MAX_BPAGES];
        for (index, (&token, slot)) in tokens.iter().zip(held.iter_mut()).enumerate() {
            if tokens
                .get(..index)
                .is_some_and(|before| before.contains(&token))
            {
                return Err(PoolError::InvalidToken {
                    token,
                    reason: "listed twice in the same message",
                });
            }
            *slot = self.check(token)?;
        }
        for (&token, &held) in tokens.iter().zip(held.iter()) {
            self.release_held(token, held);
        }
        Ok(())
    }

    /// Number of usable bpages: `region_len / 65536`.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Number of free bpages: nothing outstanding in them and not the current tail page.
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// Number of bpages that could be handed out now: the free ones plus the current tail
    /// page if none of its fragments is outstanding. Equals
    /// [`page_count`](Self::page_count) exactly when the pool [`is_idle`](Self::is_idle).
    pub fn available_pages(&self) -> usize {
        self.free.len() + usize::from(self.idle_tail_page().is_some())
    }

    /// Number of tokens handed out by [`allocate`](Self::allocate) and not released yet.
    pub fn outstanding_tokens(&self) -> usize {
        self.whole_outstanding + self.fragments.len()
    }

    /// Whether every token has come back (no outstanding tokens). Then every bpage is free
    /// except possibly the (idle) current tail page, which is reusable: see
    /// [`available_pages`](Self::available_pages).
    pub fn is_idle(&self) -> bool {
        self.outstanding_tokens() == 0
    }

    /// The region length given to [`new`](Self::new), in bytes (including any trailing
    /// bytes that do not fill a bpage).
    pub fn region_len(&self) -> usize {
        self.region_len
    }

    /// Works out where a message of `length` bytes would go, if it can go anywhere now.
    fn plan(&self, length: u32) -> Option<Plan> {
        if length == 0 || length > MAX_MESSAGE_LENGTH {
            return None;
        }
        let whole = (length >> BPAGE_SHIFT) as usize;
        let tail_len = length & BPAGE_MASK;
        let free = self.free.len();
        if tail_len == 0 {
            if whole <= free {
                return Some(Plan {
                    whole,
                    tail_len,
                    tail: TailPlan::None,
                    retire_tail_page: false,
                });
            }
            // One page short: an idle tail page can serve as a whole bpage.
            if whole == free + 1 && self.idle_tail_page().is_some() {
                return Some(Plan {
                    whole,
                    tail_len,
                    tail: TailPlan::None,
                    retire_tail_page: true,
                });
            }
            return None;
        }
        // An idle tail page has `next == 0`, so any fragment (< 65536 bytes) fits in it.
        let fits = self
            .tail
            .is_some_and(|tail| BPAGE_U32 - tail.next >= tail_len);
        let (tail, pages_needed) = if fits {
            (TailPlan::Current, whole)
        } else {
            (TailPlan::Fresh, whole + 1)
        };
        (pages_needed <= free).then_some(Plan {
            whole,
            tail_len,
            tail,
            retire_tail_page: false,
        })
    }

    /// How `token` is held, or why it cannot be released.
    fn check(&self, token: u32) -> Result<Held, PoolError> {
        let index = (token >> BPAGE_SHIFT) as usize;
        let invalid = |reason| PoolError::InvalidToken { token, reason };
        match self.pages.get(index) {
            None => Err(invalid("beyond the last bpage of the region")),
            Some(Page::Free) => Err(invalid(
                "its bpage is free (the token was already released or never handed out)",
            )),
            Some(Page::Whole) if token & BPAGE_MASK == 0 => Ok(Held::Whole(index)),
            Some(Page::Whole) => Err(invalid("inside a whole bpage, not at its start")),
            Some(&Page::Fragments(count)) if self.fragments.contains(&token) => {
                Ok(Held::Fragment(index, count))
            }
            Some(Page::Fragments(_)) => Err(invalid(
                "not the start of an outstanding tail fragment (already released, \
                 never handed out, or inside a fragment)",
            )),
        }
    }

    /// Releases a token [`check`](Self::check) has validated.
    fn release_held(&mut self, token: u32, held: Held) {
        match held {
            Held::Whole(index) => {
                self.whole_outstanding -= 1;
                if let Ok(page) = u32::try_from(index) {
                    self.free_page(page);
                }
            }
            Held::Fragment(index, count) => {
                self.fragments.remove(&token);
                let left = count.saturating_sub(1);
                match self.tail.as_mut() {
                    Some(tail) if tail.page as usize == index => {
                        if left == 0 {
                            tail.next = 0;
                        }
                        if let Some(page) = self.pages.get_mut(index) {
                            *page = Page::Fragments(left);
                        }
                    }
                    _ if left == 0 => {
                        if let Ok(page) = u32::try_from(index) {
                            self.free_page(page);
                        }
                    }
                    _ => {
                        if let Some(page) = self.pages.get_mut(index) {
                            *page = Page::Fragments(left);
                        }
                    }
                }
            }
        }
    }

    /// The current tail page, if none of its fragments is outstanding.
    fn idle_tail_page(&self) -> Option<u32> {
        let tail = self.tail?;
        (self.pages.get(tail.page as usize) == Some(&Page::Fragments(0))).then_some(tail.page)
    }

    /// Pops the lowest free page.
    fn take_free_page(&mut self) -> Option<u32> {
        self.free.pop().map(|Reverse(page)| page)
    }

    /// Marks `page` free and puts it back in the heap.
    fn free_page(&mut self, page: u32) {
        self.set_page(page, Page::Free);
        self.free.push(Reverse(page));
    }

    fn set_page(&mut self, page: u32, state: Page) {
        if let Some(slot) = self.pages.get_mut(page as usize) {
            *slot = state;
        }
    }

    /// Counts one more outstanding fragment in `page`.
    fn add_fragment(&mut self, page: u32) {
        if let Some(Page::Fragments(count)) = self.pages.get_mut(page as usize) {
            *count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    impl BufferPool {
        /// Checks every internal invariant; panics with a description if one is broken.
        fn assert_consistent(&self) {
            let mut free: Vec<u32> = self.free.iter().map(|&Reverse(p)| p).collect();
            free.sort_unstable();
            let free_states: Vec<u32> = (0..self.pages.len())
                .filter(|&i| self.pages[i] == Page::Free)
                .map(|i| i as u32)
                .collect();
            assert_eq!(free, free_states, "free heap == pages in state Free");

            let whole = self.pages.iter().filter(|p| **p == Page::Whole).count();
            assert_eq!(whole, self.whole_outstanding);

            let mut per_page: HashMap<usize, u32> = HashMap::new();
            for &token in &self.fragments {
                *per_page.entry((token >> BPAGE_SHIFT) as usize).or_default() += 1;
            }
            for (index, page) in self.pages.iter().enumerate() {
                let is_tail = self.tail.is_some_and(|t| t.page as usize == index);
                let frags = per_page.get(&index).copied().unwrap_or(0);
                match *page {
                    Page::Fragments(n) => {
                        assert_eq!(n, frags, "fragment count of page {index}");
                        assert!(n > 0 || is_tail, "page {index}: empty non-tail page");
                    }
                    _ => {
                        assert_eq!(frags, 0, "fragments in non-fragment page {index}");
                        assert!(!is_tail, "tail page {index} in state {page:?}");
                    }
                }
            }
            if let Some(tail) = self.tail {
                assert!(tail.next <= BPAGE_U32);
                let Page::Fragments(n) = self.pages[tail.page as usize] else {
                    unreachable!()
                };
                if n == 0 {
                    assert_eq!(tail.next, 0, "idle tail page restarts at 0");
                }
                for &token in &self.fragments {
                    if token >> BPAGE_SHIFT == tail.page {
                        assert!(token & BPAGE_MASK < tail.next);
                    }
                }
            }
            assert_eq!(
                self.is_idle(),
                self.available_pages() == self.page_count(),
                "is_idle <=> every page available"
            );
        }

        /// Everything observable about the pool's state, for "unchanged" checks.
        fn snapshot(&self) -> (Vec<Page>, Vec<u32>, Option<TailPage>, Vec<u32>, usize) {
            let mut free: Vec<u32> = self.free.iter().map(|&Reverse(p)| p).collect();
            free.sort_unstable();
            let mut frags: Vec<u32> = self.fragments.iter().copied().collect();
            frags.sort_unstable();
            (
                self.pages.clone(),
                free,
                self.tail,
                frags,
                self.whole_outstanding,
            )
        }
    }

    const PAGE: u32 = BPAGE_U32;

    fn pool(pages: usize) -> BufferPool {
        BufferPool::new(pages * BPAGE_SIZE).unwrap()
    }

    /// Checks the shape of an allocation: token count, alignment, chunk lengths.
    fn assert_shape(msg: &MessageBuffers, length: u32) {
        let whole = (length / PAGE) as usize;
        let tail = length % PAGE;
        assert_eq!(msg.length(), length);
        assert_eq!(msg.tokens().len(), whole + usize::from(tail != 0));
        for &token in &msg.tokens()[..whole] {
            assert_eq!(token % PAGE, 0, "whole bpage token {token} aligned");
        }
        if tail != 0 {
            let last = *msg.tokens().last().unwrap();
            assert!(
                last % PAGE + tail <= PAGE,
                "tail fragment stays in its page"
            );
        }
        let total: usize = msg.chunks().map(|(_, len)| len).sum();
        assert_eq!(total, length as usize);
    }

    #[test]
    fn lengths_give_expected_token_counts_and_alignment() {
        for (length, tokens) in [
            (1, 1),
            (65_535, 1),
            (65_536, 1),
            (65_537, 2),
            (131_072, 2),
            (131_073, 3),
            (1_000_000, 16),
        ] {
            let mut pool = pool(20);
            let msg = pool.allocate(length).unwrap();
            assert_shape(&msg, length);
            assert_eq!(msg.tokens().len(), tokens, "length {length}");
            pool.assert_consistent();
        }
        // Exactly: 65536 -> one whole page at 0; 65537 -> page 0 + 1-byte fragment in page 1.
        let mut pool = pool(4);
        assert_eq!(pool.allocate(65_536).unwrap().tokens(), &[0]);
        assert_eq!(pool.allocate(65_537).unwrap().tokens(), &[PAGE, 2 * PAGE]);
        // 1,000,000 = 15 * 65536 + 16960.
        let mut pool = super::tests::pool(16);
        let msg = pool.allocate(1_000_000).unwrap();
        let expected: Vec<u32> = (0..16).map(|i| i * PAGE).collect();
        assert_eq!(msg.tokens(), &expected[..]);
        assert_eq!(msg.chunks().last(), Some((15 * BPAGE_SIZE, 16_960)));
    }

    #[test]
    fn invalid_lengths_are_refused_without_side_effects() {
        let mut pool = pool(32);
        let before = pool.snapshot();
        for length in [0, 1_000_001, u32::MAX] {
            assert!(!pool.can_allocate(length));
            assert_eq!(pool.allocate(length), None);
        }
        assert_eq!(pool.snapshot(), before);
    }

    #[test]
    fn new_rejects_a_region_without_a_whole_bpage() {
        for len in [0, 1, 65_535] {
            assert_eq!(
                BufferPool::new(len).unwrap_err(),
                PoolError::RegionTooSmall {
                    len,
                    min: BPAGE_SIZE
                }
            );
        }
        let pool = BufferPool::new(3 * BPAGE_SIZE + 100).unwrap();
        assert_eq!(pool.page_count(), 3);
        assert_eq!(pool.free_pages(), 3);
        assert_eq!(pool.region_len(), 3 * BPAGE_SIZE + 100);
        assert!(pool.is_idle());
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn new_rejects_a_region_beyond_the_reach_of_u32_tokens() {
        let four_gib = 1usize << 32;
        let mut pool = BufferPool::new(four_gib + BPAGE_SIZE - 1).unwrap();
        assert_eq!(pool.page_count(), 65_536);
        assert_eq!(
            BufferPool::new(four_gib + BPAGE_SIZE).unwrap_err(),
            PoolError::RegionTooLarge {
                len: four_gib + BPAGE_SIZE,
                max: four_gib
            }
        );
        // The last page is addressable: fill all but one page, then a tail in the last.
        let mut held = Vec::new();
        for _ in 0..65_535 {
            held.push(pool.allocate(65_536).unwrap());
        }
        let msg = pool.allocate(65_535).unwrap();
        assert_eq!(msg.tokens(), &[u32::MAX - 65_535]);
        assert_eq!(msg.locate(65_534), Some((u32::MAX as usize - 1, 1)));
        let last = pool.allocate(1).unwrap();
        assert_eq!(last.tokens(), &[u32::MAX]);
        assert_eq!(last.locate(0), Some((u32::MAX as usize, 1)));
        assert_eq!(pool.allocate(1), None);
        pool.release(u32::MAX).unwrap();
        pool.release(u32::MAX - 65_535).unwrap();
        for msg in &held {
            pool.release_all(msg).unwrap();
        }
        assert!(pool.is_idle());
    }

    #[test]
    fn locate_maps_every_offset_into_its_chunk() {
        let mut pool = pool(8);
        let _pad = pool.allocate(300).unwrap(); // so the tail fragment is not aligned
        let msg = pool.allocate(200_000).unwrap();
        let t = msg.tokens();
        assert_eq!(t.len(), 4);
        assert_eq!(msg.locate(0), Some((t[0] as usize, 65_536)));
        assert_eq!(msg.locate(1), Some((t[0] as usize + 1, 65_535)));
        assert_eq!(msg.locate(65_535), Some((t[0] as usize + 65_535, 1)));
        assert_eq!(msg.locate(65_536), Some((t[1] as usize, 65_536)));
        assert_eq!(msg.locate(196_608), Some((t[3] as usize, 3_392)));
        assert_eq!(t[3], 300, "tail carved after the 300-byte fragment");
        assert_eq!(msg.locate(199_999), Some((t[3] as usize + 3_391, 1)));
        assert_eq!(msg.locate(200_000), None);
        assert_eq!(msg.locate(u32::MAX), None);
        // Walking the message with locate visits exactly the chunks.
        let mut walked = Vec::new();
        let mut offset = 0u32;
        while let Some((at, len)) = msg.locate(offset) {
            walked.push((at, len));
            offset += len as u32;
        }
        assert_eq!(walked, msg.chunks().collect::<Vec<_>>());
    }

    #[test]
    fn whole_bpages_prefer_the_lowest_free_indices() {
        let mut pool = pool(8);
        let a = pool.allocate(65_536).unwrap();
        let b = pool.allocate(2 * 65_536).unwrap();
        let c = pool.allocate(65_536).unwrap();
        assert_eq!(
            (a.tokens(), b.tokens(), c.tokens()),
            (&[0][..], &[PAGE, 2 * PAGE][..], &[3 * PAGE][..])
        );
        pool.release(2 * PAGE).unwrap();
        pool.release(0).unwrap();
        // The freed pages 0 and 2 are reused before 4.. and in increasing order.
        let d = pool.allocate(3 * 65_536).unwrap();
        assert_eq!(d.tokens(), &[0, 2 * PAGE, 4 * PAGE]);
        pool.assert_consistent();
    }

    #[test]
    fn tail_fragments_are_carved_consecutively_from_one_page() {
        let mut pool = pool(4);
        let a = pool.allocate(100).unwrap();
        let b = pool.allocate(200).unwrap();
        let c = pool.allocate(65_536 + 300).unwrap();
        assert_eq!(a.tokens(), &[0]);
        assert_eq!(b.tokens(), &[100]);
        // c's whole page is the lowest free one (1); its tail continues page 0.
        assert_eq!(c.tokens(), &[PAGE, 300]);
        assert_eq!(pool.free_pages(), 2);
        assert_eq!(pool.outstanding_tokens(), 4);
        pool.assert_consistent();
    }

    #[test]
    fn fragment_page_is_freed_only_when_all_fragments_are_back_and_it_is_not_current() {
        let mut pool = pool(4);
        let a = pool.allocate(30_000).unwrap(); // page 0 @0
        let b = pool.allocate(30_000).unwrap(); // page 0 @30000
        let c = pool.allocate(30_000).unwrap(); // does not fit: page 1 becomes current
        assert_eq!(
            (a.tokens()[0], b.tokens()[0], c.tokens()[0]),
            (0, 30_000, PAGE)
        );
        assert_eq!(pool.free_pages(), 2);
        pool.release(a.tokens()[0]).unwrap();
        assert_eq!(pool.free_pages(), 2, "page 0 still holds b's fragment");
        pool.release(b.tokens()[0]).unwrap();
        assert_eq!(pool.free_pages(), 3, "page 0 is free once b is back");
        // The current tail page is not freed when its fragments come back.
        pool.release(c.tokens()[0]).unwrap();
        assert_eq!(pool.free_pages(), 3, "current tail page stays current");
        assert_eq!(pool.available_pages(), 4);
        assert!(pool.is_idle());
        pool.assert_consistent();
    }

    #[test]
    fn idle_current_tail_page_is_carved_again_from_its_start() {
        let mut pool = pool(4);
        let a = pool.allocate(60_000).unwrap();
        assert_eq!(a.tokens(), &[0]);
        pool.release(0).unwrap();
        // 60,000 more bytes would not fit after the first fragment, but the page is idle.
        let b = pool.allocate(60_000).unwrap();
        assert_eq!(b.tokens(), &[0]);
        assert_eq!(pool.free_pages(), 3);
        pool.assert_consistent();
    }

    #[test]
    fn idle_current_tail_page_is_reclaimed_when_whole_bpages_run_short() {
        let mut pool = pool(1);
        let a = pool.allocate(100).unwrap();
        pool.release(a.tokens()[0]).unwrap();
        assert_eq!(pool.free_pages(), 0);
        assert_eq!(pool.available_pages(), 1);
        assert!(pool.can_allocate(65_536));
        let b = pool.allocate(65_536).unwrap();
        assert_eq!(b.tokens(), &[0]);
        assert_eq!(pool.available_pages(), 0);
        pool.assert_consistent();
        pool.release(0).unwrap();
        assert_eq!(pool.free_pages(), 1, "no tail page any more");
        // A tail then starts a fresh current page.
        assert_eq!(pool.allocate(5).unwrap().tokens(), &[0]);
        pool.assert_consistent();
    }

    #[test]
    fn exhaustion_returns_none_and_leaves_the_pool_unchanged() {
        let mut pool = pool(4);
        let a = pool.allocate(2 * 65_536).unwrap(); // pages 0, 1
        let b = pool.allocate(40_000).unwrap(); // page 2 @0
        assert_eq!(pool.free_pages(), 1);
        let before = pool.snapshot();
        // Needs 2 whole pages, only 1 free.
        assert!(!pool.can_allocate(2 * 65_536));
        assert_eq!(pool.allocate(2 * 65_536), None);
        // 1 whole page + a tail that does not fit in page 2: 2 pages needed.
        assert!(!pool.can_allocate(65_536 + 30_000));
        assert_eq!(pool.allocate(65_536 + 30_000), None);
        // The tail page is busy, so it cannot stand in for a whole page.
        assert_eq!(pool.allocate(2 * 65_536), None);
        assert_eq!(pool.snapshot(), before);
        pool.assert_consistent();
        // Still usable: a tail that fits, then a whole page.
        assert!(pool.can_allocate(65_536 + 25_536));
        let c = pool.allocate(65_536 + 25_536).unwrap();
        assert_eq!(c.tokens(), &[3 * PAGE, 2 * PAGE + 40_000]);
        assert_eq!(pool.allocate(1), None, "tail page full, no free page");
        for msg in [&a, &b, &c] {
            pool.release_all(msg).unwrap();
        }
        assert!(pool.is_idle());
        assert_eq!(pool.available_pages(), 4);
    }

    #[test]
    fn releasing_a_token_that_is_not_outstanding_is_an_error_and_changes_nothing() {
        let mut pool = pool(4);
        let whole = pool.allocate(65_536).unwrap(); // page 0
        let frag = pool.allocate(1_000).unwrap(); // page 1 @0
        let gone = pool.allocate(500).unwrap(); // page 1 @1000
        pool.release(gone.tokens()[0]).unwrap();
        let before = pool.snapshot();
        for (token, reason) in [
            (4 * PAGE, "beyond the last bpage"),
            (u32::MAX, "beyond the last bpage"),
            (2 * PAGE, "bpage is free"),
            (3 * PAGE + 7, "bpage is free"),
            (100, "inside a whole bpage"),
            (PAGE + 10, "outstanding tail fragment"), // inside a fragment
            (1_000 + PAGE, "outstanding tail fragment"), // released already
            (1_500 + PAGE, "outstanding tail fragment"), // never handed out
        ] {
            match pool.release(token) {
                Err(PoolError::InvalidToken {
                    token: t,
                    reason: r,
                }) => {
                    assert_eq!(t, token);
                    assert!(r.contains(reason), "{token}: {r}");
                }
                other => panic!("release({token}) gave {other:?}"),
            }
            assert_eq!(pool.snapshot(), before);
        }
        pool.assert_consistent();
        // Double release of a whole page and of a fragment.
        pool.release(whole.tokens()[0]).unwrap();
        assert!(pool.release(whole.tokens()[0]).is_err());
        pool.release(frag.tokens()[0]).unwrap();
        assert!(pool.release(frag.tokens()[0]).is_err());
        // An idle current tail page has no fragment to release.
        assert!(pool.release(PAGE).is_err());
        pool.assert_consistent();
        assert!(pool.is_idle());
        assert_eq!(pool.available_pages(), 4);
    }

    #[test]
    fn release_all_is_all_or_nothing() {
        let mut pool = pool(4);
        let msg = pool.allocate(2 * 65_536 + 10).unwrap();
        pool.release(msg.tokens()[1]).unwrap();
        let before = pool.snapshot();
        assert_eq!(
            pool.release_all(&msg).unwrap_err(),
            PoolError::InvalidToken {
                token: PAGE,
                reason: "its bpage is free (the token was already released or never handed out)"
            }
        );
        assert_eq!(pool.snapshot(), before);
        pool.release(msg.tokens()[0]).unwrap();
        pool.release(msg.tokens()[2]).unwrap();
        assert!(pool.is_idle());
        let again = pool.allocate(65_536 * 3).unwrap();
        pool.release_all(&again).unwrap();
        assert!(pool.is_idle());
        pool.assert_consistent();
    }

    #[test]
    fn after_releasing_everything_every_bpage_is_back() {
        let mut pool = pool(16);
        let msgs: Vec<_> = [1, 70_000, 65_536, 300_000, 5, 99_999]
            .into_iter()
            .map(|len| pool.allocate(len).unwrap())
            .collect();
        assert!(!pool.is_idle());
        assert_eq!(pool.outstanding_tokens(), 1 + 2 + 1 + 5 + 1 + 2);
        // Release in reverse token order, one by one.
        let mut tokens: Vec<u32> = msgs.iter().flat_map(|m| m.tokens().to_vec()).collect();
        tokens.sort_unstable_by(|a, b| b.cmp(a));
        for token in tokens {
            pool.release(token).unwrap();
            pool.assert_consistent();
        }
        assert!(pool.is_idle());
        assert_eq!(pool.outstanding_tokens(), 0);
        assert_eq!(pool.available_pages(), pool.page_count());
        assert_eq!(pool.free_pages(), pool.page_count() - 1, "idle tail page");
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(
            BufferPool::new(10).unwrap_err().to_string(),
            "receive region of 10 bytes is too small: it must hold at least one 65536-byte \
             bpage (65536 bytes)"
        );
        let mut pool = pool(1);
        assert_eq!(
            pool.release(70_000).unwrap_err().to_string(),
            "invalid buffer token 70000 (0x11170): beyond the last bpage of the region"
        );
        let err: Box<dyn std::error::Error> = Box::new(pool.release(0).unwrap_err());
        assert!(err.to_string().contains("already released"));
    }

    use crate::test_rng::XorShift;

    /// A length from a mix of short, medium and long messages.
    fn random_length(rng: &mut XorShift) -> u32 {
        (match rng.below(4) {
            0 => 1 + rng.below(2_000),
            1 => 1 + rng.below(70_000),
            2 => 65_536 * (1 + rng.below(3)),
            _ => 1 + rng.below(1_000_000),
        }) as u32
    }

    #[test]
    fn random_sequences_never_give_a_byte_to_two_messages() {
        const PAGES: usize = 12;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut pool = pool(PAGES);
        // owner[i] = id of the message whose bytes occupy region byte i, 0 = nobody.
        let mut owner = vec![0u32; PAGES * BPAGE_SIZE];
        // Outstanding tokens: token -> (message id, chunk length).
        let mut outstanding: BTreeMap<u32, (u32, usize)> = BTreeMap::new();
        let mut next_id = 1u32;
        let (mut allocated, mut refused) = (0, 0);
        for _ in 0..4_000 {
            if outstanding.is_empty() || rng.below(100) < 55 {
                let length = random_length(&mut rng);
                let possible = pool.can_allocate(length);
                let Some(msg) = pool.allocate(length) else {
                    assert!(!possible);
                    refused += 1;
                    continue;
                };
                assert!(possible);
                allocated += 1;
                assert_shape(&msg, length);
                let id = next_id;
                next_id += 1;
                for (token, (at, len)) in msg.tokens().iter().zip(msg.chunks()) {
                    for (i, byte) in owner[at..at + len].iter_mut().enumerate() {
                        assert_eq!(*byte, 0, "byte {} given twice", at + i);
                        *byte = id;
                    }
                    assert!(outstanding.insert(*token, (id, len)).is_none());
                }
            } else {
                let pick = rng.below(outstanding.len() as u64) as usize;
                let (&token, &(id, len)) = outstanding.iter().nth(pick).unwrap();
                pool.release(token).unwrap();
                outstanding.remove(&token);
                let at = token as usize;
                assert!(owner[at..at + len].iter().all(|&o| o == id));
                owner[at..at + len].fill(0);
                // Occasionally try a bogus release: double release, or a byte inside.
                if rng.below(10) == 0 {
                    let before = pool.snapshot();
                    assert!(pool.release(token).is_err());
                    if !outstanding.contains_key(&(token + 1)) {
                        assert!(pool.release(token + 1).is_err());
                    }
                    assert_eq!(pool.snapshot(), before);
                }
            }
            assert_eq!(pool.outstanding_tokens(), outstanding.len());
            pool.assert_consistent();
        }
        assert!(allocated > 500 && refused > 100, "{allocated} / {refused}");
        for (token, _) in std::mem::take(&mut outstanding) {
            pool.release(token).unwrap();
        }
        assert!(pool.is_idle());
        assert_eq!(pool.available_pages(), PAGES);
        assert!(pool.free_pages() >= PAGES - 1);
        pool.assert_consistent();
    }

    /// One step of a proptest sequence.
    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u32),
        /// Release the outstanding token at this index (modulo their number).
        Release(prop::sample::Index),
        /// Release all remaining tokens of the message at this index.
        ReleaseMessage(prop::sample::Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop_oneof![1u32..=3_000, 1u32..=140_000, 1u32..=1_000_000].prop_map(Op::Allocate),
            3 => any::<prop::sample::Index>().prop_map(Op::Release),
            1 => any::<prop::sample::Index>().prop_map(Op::ReleaseMessage),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_allocate_release_sequences_keep_the_invariants(
            pages in 1usize..=20,
            ops in prop::collection::vec(op(), 0..120),
        ) {
            let mut pool = pool(pages);
            // Outstanding chunks, region start -> (end, message index).
            let mut chunks: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
            let mut messages: Vec<MessageBuffers> = Vec::new();
            let mut tokens: Vec<(u32, usize)> = Vec::new(); // (token, message index)
            for op in ops {
                match op {
                    Op::Allocate(length) => {
                        let possible = pool.can_allocate(length);
                        let before = pool.snapshot();
                        match pool.allocate(length) {
                            None => {
                                prop_assert!(!possible);
                                prop_assert_eq!(pool.snapshot(), before);
                            }
                            Some(msg) => {
                                prop_assert!(possible);
                                assert_shape(&msg, length);
                                let index = messages.len();
                                for (&token, (at, len)) in msg.tokens().iter().zip(msg.chunks()) {
                                    prop_assert!(at + len <= pages * BPAGE_SIZE);
                                    // No overlap with the neighbours on either side.
                                    if let Some((_, &(end, _))) = chunks.range(..=at).next_back() {
                                        prop_assert!(end <= at, "overlap below {}", at);
                                    }
                                    if let Some((&start, _)) = chunks.range(at..).next() {
                                        prop_assert!(at + len <= start, "overlap above {}", at);
                                    }
                                    chunks.insert(at, (at + len, index));
                                    tokens.push((token, index));
                                }
                                messages.push(msg);
                            }
                        }
                    }
                    Op::Release(pick) if !tokens.is_empty() => {
                        let (token, _) = tokens.swap_remove(pick.index(tokens.len()));
                        pool.release(token).unwrap();
                        chunks.remove(&(token as usize));
                        prop_assert!(pool.release(token).is_err(), "double release accepted");
                    }
                    Op::ReleaseMessage(pick) if !messages.is_empty() => {
                        let index = pick.index(messages.len());
                        let msg = messages[index];
                        let all_there = msg.tokens().iter().all(|t| tokens.contains(&(*t, index)));
                        // A stale copy whose released tokens were all handed out again
                        // is indistinguishable from a live one: only test the clear cases.
                        let one_free = msg.tokens().iter().any(|t| tokens.iter().all(|&(u, _)| u != *t));
                        let before = pool.snapshot();
                        if all_there {
                            pool.release_all(&msg).unwrap();
                            tokens.retain(|&(_, m)| m != index);
                            for &t in msg.tokens() {
                                chunks.remove(&(t as usize));
                            }
                        } else if one_free {
                            prop_assert!(pool.release_all(&msg).is_err());
                            prop_assert_eq!(pool.snapshot(), before);
                        }
                    }
                    Op::Release(_) | Op::ReleaseMessage(_) => {}
                }
                prop_assert_eq!(pool.outstanding_tokens(), tokens.len());
                pool.assert_consistent();
            }
            for (token, _) in tokens {
                pool.release(token).unwrap();
            }
            prop_assert!(pool.is_idle());
            prop_assert_eq!(pool.available_pages(), pages);
            prop_assert!(pool.free_pages() >= pages - 1);
            pool.assert_consistent();
        }
    }
}

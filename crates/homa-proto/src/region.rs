//! Where received message bytes are written: the receive region the driver owns.

/// The memory behind a [`BufferPool`](crate::pool::BufferPool): the engine decides where
/// each message goes and writes the payload of every DATA packet through this trait.
///
/// The engine only writes to bytes of bpages it currently owns (allocated to a message
/// that is still being received), never to bytes the application holds, so a driver that
/// lets the application read delivered messages concurrently can implement this over raw
/// memory soundly.
pub trait Region {
    /// Length of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` to `offset..offset + data.len()`, which the engine guarantees is in bounds.
    fn write(&mut self, offset: usize, data: &[u8]);
}

/// A region whose bytes can be read back (for tests, tools and simple drivers).
pub trait ReadRegion: Region {
    /// The bytes at `offset..offset + len`, which the caller guarantees is in bounds.
    fn read(&self, offset: usize, len: usize) -> &[u8];
}

impl Region for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self[offset..offset + data.len()].copy_from_slice(data);
    }
}

impl ReadRegion for Vec<u8> {
    fn read(&self, offset: usize, len: usize) -> &[u8] {
        &self[offset..offset + len]
    }
}

impl Region for Box<[u8]> {
    fn len(&self) -> usize {
        self.as_ref().len()
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self[offset..offset + data.len()].copy_from_slice(data);
    }
}

impl ReadRegion for Box<[u8]> {
    fn read(&self, offset: usize, len: usize) -> &[u8] {
        &self[offset..offset + len]
    }
}

/// A region that stores nothing: for simulations that track message lengths, not bytes.
///
/// ```
/// use homa_proto::region::{DiscardRegion, Region};
/// let mut r = DiscardRegion::new(1 << 20);
/// r.write(0, b"dropped");
/// assert_eq!(r.len(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardRegion {
    len: usize,
}

impl DiscardRegion {
    /// A region of `len` bytes that discards writes.
    pub const fn new(len: usize) -> Self {
        DiscardRegion { len }
    }
}

impl Region for DiscardRegion {
    fn len(&self) -> usize {
        self.len
    }
    fn write(&mut self, _offset: usize, _data: &[u8]) {}
}

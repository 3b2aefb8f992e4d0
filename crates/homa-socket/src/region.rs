//! The receive region: page-aligned memory cut into 64 KiB bpages, where incoming
//! messages are written and where the application reads them.

use std::ptr::NonNull;

use homa_proto::pool::BPAGE_SIZE;
use homa_proto::wire::MAX_MESSAGE_LENGTH;

use crate::Error;

/// Smallest region accepted: room for two maximum-size messages and a page of tail
/// fragments (the kernel's minimum, for one core).
pub const MIN_REGION_SIZE: usize = 2 * MAX_MESSAGE_LENGTH as usize + BPAGE_SIZE;
/// Region size when the configuration does not choose one: 64 MiB (pages are only
/// committed when touched).
pub const DEFAULT_REGION_SIZE: usize = 64 << 20;

/// The memory incoming messages are received into.
///
/// Either allocated by the library ([`RecvRegion::allocate`], anonymous memory mapped on
/// demand) or supplied by the caller ([`RecvRegion::from_raw_parts`], page-aligned,
/// under a written contract). Only whole 64 KiB bpages are used.
///
/// ```
/// use homa_socket::RecvRegion;
/// let region = RecvRegion::allocate(8 << 20).unwrap();
/// assert_eq!(region.len(), 8 << 20);
/// assert!(RecvRegion::allocate(1 << 20).is_err()); // below the minimum
/// ```
#[derive(Debug)]
pub struct RecvRegion {
    ptr: NonNull<u8>,
    len: usize,
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    /// `mmap`ed by [`RecvRegion::allocate`]: unmapped on drop.
    Mapped,
    /// The caller's memory ([`RecvRegion::from_raw_parts`]): left alone on drop.
    Caller,
}

// SAFETY: the region is plain memory; all access goes through raw pointers whose
// aliasing discipline is enforced by the bpage pool (the engine writes only bpages it
// owns, the application reads only bpages it owns).
unsafe impl Send for RecvRegion {}
// SAFETY: as above; shared references never create overlapping mutable access.
unsafe impl Sync for RecvRegion {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

fn check_len(len: usize) -> Result<(), Error> {
    if len < MIN_REGION_SIZE {
        return Err(Error::invalid(
            "region",
            format!("{len} bytes is too small: at least {MIN_REGION_SIZE} bytes (two 1 MB messages and a 64 KiB page)"),
        ));
    }
    if len > u32::MAX as usize {
        return Err(Error::invalid(
            "region",
            format!("{len} bytes is over the 4 GiB limit"),
        ));
    }
    Ok(())
}

impl RecvRegion {
    /// Maps `len` bytes of anonymous memory (committed as it is touched).
    pub fn allocate(len: usize) -> Result<RecvRegion, Error> {
        check_len(len)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(
                "mapping the receive region",
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::invalid("region", "mmap returned a null pointer"))?;
        Ok(RecvRegion {
            ptr,
            len,
            owner: Owner::Mapped,
        })
    }

    /// Receives into memory the caller owns and keeps (a shared-memory segment, a huge
    /// page mapping, ...). The region never frees it.
    ///
    /// ```
    /// use std::alloc::{alloc_zeroed, dealloc, Layout};
    /// use std::ptr::NonNull;
    /// use homa_socket::{RecvRegion, region::MIN_REGION_SIZE};
    ///
    /// let layout = Layout::from_size_align(MIN_REGION_SIZE, 4096).unwrap();
    /// // SAFETY: the layout has a non-zero size.
    /// let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
    /// // SAFETY: `ptr` is valid for `MIN_REGION_SIZE` bytes and page-aligned; nothing
    /// // else touches it until it is freed, after the region is dropped.
    /// let region = unsafe { RecvRegion::from_raw_parts(ptr, MIN_REGION_SIZE) }.unwrap();
    /// assert_eq!(region.len(), MIN_REGION_SIZE);
    /// drop(region);
    /// // SAFETY: allocated above with this layout; the region is gone.
    /// unsafe { dealloc(ptr.as_ptr(), layout) };
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `len` is smaller than [`MIN_REGION_SIZE`] or larger
    /// than 4 GiB, or `ptr` is not on a page boundary.
    ///
    /// # Safety
    ///
    /// Until the region is dropped *and* every socket given it (through
    /// [`SocketConfig::region`](crate::SocketConfig::region)) and every [`Message`](crate::Message)
    /// received through such a socket is dropped:
    ///
    /// * `ptr .. ptr + len` must be valid for reads and writes, and stay allocated;
    /// * nothing else may read or write that memory (the socket's engine writes it and
    ///   its messages read it, with no synchronisation beyond their own);
    /// * no Rust reference to any of it may exist.
    pub unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Result<RecvRegion, Error> {
        check_len(len)?;
        if ptr.as_ptr() as usize % page_size() != 0 {
            return Err(Error::invalid(
                "region",
                "the memory must start on a page boundary",
            ));
        }
        Ok(RecvRegion {
            ptr,
            len,
            owner: Owner::Caller,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region holds at least [`MIN_REGION_SIZE`] bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A writer for the engine.
    pub(crate) fn writer(&self) -> RegionWriter {
        RegionWriter {
            ptr: self.ptr,
            len: self.len,
        }
    }

    /// The bytes at `offset..offset + len`.
    ///
    /// # Safety
    ///
    /// The range must lie in bpages the caller owns (a delivered message's), which the
    /// engine does not write while they are owned.
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len, "slice outside the region");
        // SAFETY: in bounds (checked above); the caller guarantees no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }
}

impl Drop for RecvRegion {
    fn drop(&mut self) {
        match self.owner {
            Owner::Mapped => {
                // SAFETY: unmapping exactly the mapping made in `allocate`; no references
                // into it survive the region (messages hold the socket, which holds it).
                unsafe {
                    libc::munmap(self.ptr.as_ptr().cast(), self.len);
                }
            }
            Owner::Caller => {}
        }
    }
}

/// The engine's handle on the region: writes payload bytes into bpages it owns.
#[derive(Debug)]
pub(crate) struct RegionWriter {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the writer is only used under the socket's lock, and only writes bpages the
// engine owns, which no reader touches.
unsafe impl Send for RegionWriter {}

impl RegionWriter {
    /// The address of `offset..offset + len`, for a receive that places bytes there
    /// directly; `None` if the range is not inside the region.
    pub(crate) fn address(&self, offset: usize, len: usize) -> Option<usize> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| self.ptr.as_ptr() as usize + offset)
    }

    /// Copies the bytes at `offset..offset + dst.len()` into `dst`: for bytes of a
    /// message still being received (a placement the engine owns), which no reader
    /// touches.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        assert!(
            offset
                .checked_add(dst.len())
                .is_some_and(|end| end <= self.len),
            "read outside the region"
        );
        // SAFETY: in bounds (checked above); the bytes belong to a message the engine is
        // still receiving, so no one writes them concurrently, and `dst` is a separate
        // buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
    }
}

impl homa_proto::region::Region for RegionWriter {
    fn len(&self) -> usize {
        self.len
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len, "write outside the region");
        // SAFETY: in bounds (checked above); the engine writes only bpages it owns, so
        // no reference handed to the application overlaps these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
        }
    }
}

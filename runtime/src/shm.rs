//! Shared memory: a memory object (an anonymous memfd, or a named object in `/dev/shm`) mapped
//! `MAP_SHARED` into every process that holds a handle to it.
//!
//! [`Region`] is the raw mapping; [`Shared<S>`] a typed, reference-counted view of one `S` laid out
//! at the start of a region, which travels between processes as its descriptor. Every queue, lock
//! and value of procactor is a `Shared<S>` whose `S` holds only atomics and plain bytes.
//!
//! DESIGN.md names ipc-channel's `IpcSharedMemory` here; we do not use ipc-channel (see README),
//! and its shared memory is read-only once sent, while locks and queues need writable memory.

use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::wire;

/// One process's mapping of a memory object.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory valid for the Region's lifetime; what is stored in it is
// accessed through atomics or by types that synchronise across processes themselves.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Maps the whole object `fd` refers to, which must be `len` bytes (when given).
    pub(crate) fn open(fd: OwnedFd, len: Option<usize>, what: &'static str) -> Result<Region> {
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("fstat", e))?
            .st_size;
        match (usize::try_from(size), len) {
            (Ok(size), Some(len)) if size == len => Region::map(fd, len),
            (Ok(size), None) => Region::map(fd, size),
            _ => Err(Error::Decode {
                expected: what,
                reason: format!("a memory object of {size} bytes"),
            }),
        }
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region> {
        if len == 0 {
            // mmap refuses empty mappings; a dangling pointer serves the empty slice.
            return Ok(Region {
                ptr: NonNull::dangling(),
                len,
                fd,
            });
        }
        // SAFETY: a fresh shared mapping of the whole object (its size checked by the callers),
        // unmapped only in `Drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::io("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Unsupported("mmap gave null"))?;
        Ok(Region { ptr, len, fd })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Leaves the memory mapped for the rest of the process (see [`Layout::in_use_here`]).
    fn leak(self) {
        std::mem::forget(self);
    }
}

impl AsFd for Region {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `map`, unmapped once; nothing borrows it any more
            // (every borrow goes through a handle that owns the Region).
            unsafe {
                let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

/// What a type laid out in shared memory promises.
///
/// # Safety
/// Every bit pattern (all zeroes in particular) is a valid `Self`, and `Self` is only mutated
/// through atomics or under its own cross-process lock: other processes write it concurrently.
pub(crate) unsafe trait Layout: Sync + Sized {
    /// Tells one kind of object from another when a descriptor arrives.
    const MAGIC: u32;
    /// True while this process depends on the mapping staying in place even after its last
    /// handle is gone: a lock in it held by one of our threads is on that thread's robust list,
    /// which the kernel reads when the thread dies.
    fn in_use_here(&self) -> bool {
        false
    }
}

/// The header in front of every `Layout` object.
#[repr(C)]
struct Header {
    magic: AtomicU32,
    /// Bytes that follow `S` (the slots of a queue, the items of an array).
    tail_len: AtomicU32,
}

/// Bytes in front of `S`: the header, padded so that `S` starts on a cache line.
const HEAD: usize = 64;

/// A typed handle to an `S` in shared memory, followed by `tail` bytes. Cloning shares the
/// mapping; serializing sends the descriptor, and the receiver maps the same object.
pub(crate) struct Shared<S: Layout> {
    inner: Arc<Mapped>,
    _type: PhantomData<S>,
}

struct Mapped {
    region: Option<Region>,
    /// `S::in_use_here`, as a function of the object's address (the type is erased here).
    in_use_here: fn(*const u8) -> bool,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            if (self.in_use_here)(region.as_ptr().wrapping_add(HEAD)) {
                region.leak();
            }
        }
    }
}

impl<S: Layout> Shared<S> {
    /// A new zeroed `S` followed by `tail` zeroed bytes.
    pub(crate) fn new(what: &'static str, tail: usize) -> Result<Shared<S>> {
        let fd = rustix::fs::memfd_create(what, rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| Error::io("memfd_create", e))?;
        Shared::create_in(fd, what, tail)
    }

    /// Lays out a new `S` followed by `tail` zeroed bytes in the empty object `fd`.
    pub(crate) fn create_in(fd: OwnedFd, what: &'static str, tail: usize) -> Result<Shared<S>> {
        let tail_len = u32::try_from(tail).map_err(|_| Error::Encode {
            type_name: what,
            reason: format!("{tail} bytes of shared memory; at most 4 GiB"),
        })?;
        rustix::fs::ftruncate(&fd, Self::size(tail) as u64)
            .map_err(|e| Error::io("ftruncate", e))?;
        let shared = Shared::<S>::wrap(Region::map(fd, Self::size(tail))?);
        shared.header().tail_len.store(tail_len, Ordering::Relaxed);
        shared.header().magic.store(S::MAGIC, Ordering::Release);
        Ok(shared)
    }

    fn size(tail: usize) -> usize {
        HEAD + std::mem::size_of::<S>().next_multiple_of(64) + tail
    }

    fn wrap(region: Region) -> Shared<S> {
        fn in_use<S: Layout>(at: *const u8) -> bool {
            // SAFETY: called by `Mapped::drop` with the address of the live `S` of its region.
            unsafe { &*at.cast::<S>() }.in_use_here()
        }
        Shared {
            inner: Arc::new(Mapped {
                region: Some(region),
                in_use_here: in_use::<S>,
            }),
            _type: PhantomData,
        }
    }

    /// Maps an object received as `fd`, checking that it is an `S`.
    pub(crate) fn open(fd: OwnedFd, what: &'static str) -> Result<Shared<S>> {
        let region = Region::open(fd, None, what)?;
        let bad = |reason: String| Error::Decode {
            expected: what,
            reason,
        };
        if region.len() < Self::size(0) {
            return Err(bad(format!("a memory object of {} bytes", region.len())));
        }
        let shared = Shared::<S>::wrap(region);
        let magic = shared.header().magic.load(Ordering::Acquire);
        if magic != S::MAGIC {
            return Err(bad(format!("another kind of object (tag {magic:#x})")));
        }
        if Self::size(shared.tail_len()) != shared.region().len() {
            return Err(bad("a memory object of the wrong size".into()));
        }
        Ok(shared)
    }

    fn region(&self) -> &Region {
        // Only `Mapped::drop` takes the region out.
        self.inner.region.as_ref().expect("mapped")
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEAD bytes, page-aligned, and Header is atomics only.
        unsafe { &*self.region().as_ptr().cast::<Header>() }
    }

    /// The bytes after `S`.
    pub(crate) fn tail(&self) -> *mut u8 {
        self.region()
            .as_ptr()
            .wrapping_add(HEAD + std::mem::size_of::<S>().next_multiple_of(64))
    }

    pub(crate) fn tail_len(&self) -> usize {
        self.header().tail_len.load(Ordering::Relaxed) as usize
    }

    /// The descriptor of the memory object.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.region().as_fd()
    }
}

impl<S: Layout> Deref for Shared<S> {
    type Target = S;
    fn deref(&self) -> &S {
        // SAFETY: `S` lies at HEAD (64-byte aligned in a page-aligned mapping, so aligned for any
        // S this crate defines), inside the region, which lives as long as `self`; `Layout`
        // promises any bit pattern is valid and that mutation is synchronised.
        unsafe { &*self.region().as_ptr().wrapping_add(HEAD).cast::<S>() }
    }
}

impl<S: Layout> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            inner: self.inner.clone(),
            _type: PhantomData,
        }
    }
}

impl<S: Layout> Serialize for Shared<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        wire::serialize_fd(self.fd(), s)
    }
}

impl<'de, S: Layout> Deserialize<'de> for Shared<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let fd = wire::deserialize_fd(d)?;
        Shared::open(fd, std::any::type_name::<S>()).map_err(serde::de::Error::custom)
    }
}

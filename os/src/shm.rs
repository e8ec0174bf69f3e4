//! Shared memory: a memory object (an anonymous memfd, or a named object in `/dev/shm`) mapped
//! `MAP_SHARED` into every process that holds a handle to it.
//!
//! [`Region`] is the raw mapping; [`Shared<S>`] a typed, reference-counted view of one `S` laid out
//! at the start of a region, which travels between processes as its descriptor. Every queue, lock
//! and value of procactor is a `Shared<S>` whose `S` holds only atomics and plain bytes.
//!
//! A mapping whose file shrinks under it kills the process that touches the lost pages (SIGBUS),
//! and any holder of a descriptor can `ftruncate` it. So every memfd is sealed against resizing
//! (`sys::SIZE_SEALS`) before its descriptor leaves the process that made it, and a descriptor
//! that arrives is mapped only once it is known to be sealed so and large enough for what it
//! claims to hold. Named objects (`SharedMemory::create`) cannot be sealed: see their docs.
//!
//! DESIGN.md names ipc-channel's `IpcSharedMemory` here; we do not use ipc-channel (see README),
//! and its shared memory is read-only once sent, while locks and queues need writable memory.

use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rustix::fs::SealFlags;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::robust::RawMutex;
use crate::wire::Wait;
use crate::{sys, wire};

/// One process's mapping of a memory object.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    /// Sealed against writes: its bytes can never change.
    frozen: bool,
}

// SAFETY: the mapping is plain memory valid for the Region's lifetime; what is stored in it is
// accessed through atomics or by types that synchronise across processes themselves.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

/// How a region is mapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Readable and writable.
    ReadWrite,
    /// Readable only.
    ReadOnly,
}

/// The size a memory object that arrives must have.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// Exactly this many bytes.
    Exactly(usize),
    /// At least this many bytes.
    AtLeast(usize),
}

/// A descriptor refused before it was mapped: logged too, because a refusal inside a message's
/// decoding reaches the caller without its reason (postcard keeps none).
#[cold]
fn refuse(what: &'static str, reason: String) -> Error {
    log::warn!(target: "procactor::shm", "refused {what}: {reason}");
    Error::Decode {
        expected: what,
        reason,
    }
}

impl Region {
    /// Maps a memory object that came from another process, once it is sure that its size
    /// cannot change under us: a memfd sealed with `seals` (at least `sys::SIZE_SEALS`), not
    /// write-sealed if it is to be written, and of the right `size`. Anything else is refused
    /// before it is mapped: a resize under a mapping kills its users with SIGBUS.
    pub fn open_sealed(
        fd: OwnedFd,
        seals: SealFlags,
        size: Size,
        access: Access,
        what: &'static str,
    ) -> Result<Region> {
        let have = sys::seals(fd.as_fd()).map_err(|e| Error::io("fcntl(F_GET_SEALS)", e))?;
        if !have.contains(seals) {
            return Err(refuse(
                what,
                format!(
                    "a memory object that is not sealed against resizing (it has {have:?}, \
                     {seals:?} is required): whoever holds it could shrink it under us"
                ),
            ));
        }
        if access == Access::ReadWrite
            && have.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE)
        {
            return Err(refuse(what, "a write-sealed memory object".into()));
        }
        // Sealed: the size read now is its size for good.
        let len = Region::checked_len(fd.as_fd(), size, what)?;
        let mut region = Region::map(fd, len, access)?;
        region.frozen = have.contains(SealFlags::WRITE);
        Ok(region)
    }

    /// The bytes of a region sealed against writes (`None` for any other): nobody can change
    /// them while we read them.
    pub fn frozen_bytes(&self) -> Option<&[u8]> {
        // SAFETY: `len` bytes mapped as long as `self` lives (or a dangling pointer for none),
        // and the write seal forbids every write to them, through any mapping or descriptor.
        self.frozen
            .then(|| unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) })
    }

    /// Maps a named POSIX shared-memory object, which cannot be sealed: its size is checked,
    /// but another process of the same user with write access to it can still truncate it
    /// (see `SharedMemory`).
    pub fn open_named(fd: OwnedFd, min: usize, what: &'static str) -> Result<Region> {
        let st = sys::file_stat(fd.as_fd()).map_err(|e| Error::io("fstat", e))?;
        if st.uid != sys::getuid() {
            return Err(refuse(what, format!("a memory object of user {}", st.uid)));
        }
        let len = Region::checked_len(fd.as_fd(), Size::AtLeast(min), what)?;
        Region::map(fd, len, Access::ReadWrite)
    }

    fn checked_len(fd: BorrowedFd, want: Size, what: &'static str) -> Result<usize> {
        let size = sys::file_stat(fd).map_err(|e| Error::io("fstat", e))?.size;
        match (usize::try_from(size), want) {
            (Ok(len), Size::Exactly(n)) if len == n => Ok(len),
            (Ok(len), Size::AtLeast(n)) if len >= n => Ok(len),
            _ => Err(refuse(what, format!("a memory object of {size} bytes"))),
        }
    }

    /// Maps all `len` bytes of `fd`, whose size the caller made or checked to be `len` (and
    /// sealed, unless it is a named object).
    fn map(fd: OwnedFd, len: usize, access: Access) -> Result<Region> {
        if len == 0 {
            // mmap refuses empty mappings; a dangling pointer serves the empty slice.
            return Ok(Region {
                ptr: NonNull::dangling(),
                len,
                fd,
                frozen: false,
            });
        }
        let prot = match access {
            Access::ReadWrite => rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            Access::ReadOnly => rustix::mm::ProtFlags::READ,
        };
        // SAFETY: a fresh shared mapping of the whole object (its size checked by the callers),
        // unmapped only in `Drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::io("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Unsupported("mmap gave null"))?;
        Ok(Region {
            ptr,
            len,
            fd,
            frozen: false,
        })
    }

    /// The start of the mapping.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length of the mapping, in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

/// Types for which every bit pattern (all zeroes in particular) is a valid value, and which are
/// only mutated through atomics (or not at all): another process may write them at any moment.
///
/// # Safety
/// As above. Implemented here for the atomic integers, plain bytes, arrays of such types and the
/// runtime's futex types; a struct of such fields gets it from [`shared_struct!`], which checks
/// every field's type.
pub unsafe trait AnyBits: Sync + Sized {}

macro_rules! any_bits {
    ($($t:ty),*) => {$(
        // SAFETY: integers and atomic integers are valid for any bits, and atomics are `Sync`.
        unsafe impl AnyBits for $t {}
    )*};
}

any_bits!(
    u8,
    std::sync::atomic::AtomicU8,
    std::sync::atomic::AtomicU16,
    AtomicU32,
    std::sync::atomic::AtomicI32,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicI64,
    std::sync::atomic::AtomicUsize
);

// SAFETY: an array of values valid for any bits is valid for any bits.
unsafe impl<T: AnyBits, const N: usize> AnyBits for [T; N] {}

/// Defines a struct to lay out in shared memory: `repr(C)`, every field [`AnyBits`] (checked at
/// compile time), so the struct is `AnyBits` too and can implement [`Layout`]. This macro is
/// the one place where the runtime's shared-memory types get that promise, so the crates above
/// need no `unsafe`.
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// procactor_os::shared_struct! {
///     /// A counter other processes bump.
///     pub struct Counter {
///         hits: AtomicU32,
///         slots: [AtomicU32; 4],
///     }
/// }
/// impl procactor_os::shm::Layout for Counter {
///     const MAGIC: u32 = 0x434e_5452;
/// }
/// ```
#[macro_export]
macro_rules! shared_struct {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fattr:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Debug)]
        $vis struct $name {
            $($(#[$fattr])* $fvis $field: $ty),*
        }

        const _: () = {
            #[allow(dead_code)]
            fn check() {
                fn field_is_any_bits<T: $crate::shm::AnyBits>() {}
                $(field_is_any_bits::<$ty>();)*
            }
        };

        // SAFETY: every field is `AnyBits` (checked just above), so the struct is valid for any
        // bits and mutated only through its fields' atomics.
        #[allow(unsafe_code)]
        unsafe impl $crate::shm::AnyBits for $name {}
    };
}

/// What a type laid out in shared memory is: [`AnyBits`] (other processes write it
/// concurrently, and a hostile one may write anything), with a magic number.
pub trait Layout: AnyBits {
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
///
/// Objects made by [`new`](Shared::new) are memfds sealed against resizing before anyone else
/// can see them, and [`open`](Shared::open) maps nothing else: no holder of the descriptor can
/// shrink the memory under the others (who would die of SIGBUS).
pub struct Shared<S: Layout> {
    inner: Arc<Mapped>,
    _type: PhantomData<S>,
}

struct Mapped {
    region: Option<Region>,
    /// The tail's length, checked against the mapping when it was made: the copy in the header
    /// is shared memory, which any holder may overwrite.
    tail_len: usize,
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
    /// A new zeroed `S` followed by `tail` zeroed bytes, in a memfd sealed against resizing.
    pub fn new(what: &'static str, tail: usize) -> Result<Shared<S>> {
        let len = Self::size(what, tail)?;
        let fd = sys::sized_memfd(what, len as u64).map_err(|e| Error::io("memfd_create", e))?;
        Ok(Shared::lay_out(
            Region::map(fd, len, Access::ReadWrite)?,
            tail,
        ))
    }

    /// Lays out a new `S` followed by `tail` zeroed bytes in the empty named object `fd` (which
    /// cannot be sealed: see `SharedMemory`).
    pub fn create_named(fd: OwnedFd, what: &'static str, tail: usize) -> Result<Shared<S>> {
        let len = Self::size(what, tail)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| Error::io("ftruncate", e))?;
        Ok(Shared::lay_out(
            Region::map(fd, len, Access::ReadWrite)?,
            tail,
        ))
    }

    fn lay_out(region: Region, tail: usize) -> Shared<S> {
        let shared = Shared::<S>::wrap(region, tail);
        // `size` checked that it fits.
        shared
            .header()
            .tail_len
            .store(tail as u32, Ordering::Relaxed);
        shared.header().magic.store(S::MAGIC, Ordering::Release);
        shared
    }

    /// Bytes of an `S` with `tail` bytes after it (at most 4 GiB of tail).
    fn size(what: &'static str, tail: usize) -> Result<usize> {
        if u32::try_from(tail).is_err() {
            return Err(Error::Encode {
                type_name: what,
                reason: format!("{tail} bytes of shared memory; at most 4 GiB"),
            });
        }
        Ok(Self::offset_of_tail() + tail)
    }

    fn offset_of_tail() -> usize {
        HEAD + std::mem::size_of::<S>().next_multiple_of(64)
    }

    fn wrap(region: Region, tail_len: usize) -> Shared<S> {
        fn in_use<S: Layout>(at: *const u8) -> bool {
            // SAFETY: called by `Mapped::drop` with the address of the live `S` of its region.
            unsafe { &*at.cast::<S>() }.in_use_here()
        }
        Shared {
            inner: Arc::new(Mapped {
                region: Some(region),
                tail_len,
                in_use_here: in_use::<S>,
            }),
            _type: PhantomData,
        }
    }

    /// Maps an object received as `fd`: a memfd sealed against resizing (anything else is
    /// refused before it is mapped), holding an `S`.
    pub fn open(fd: OwnedFd, what: &'static str) -> Result<Shared<S>> {
        let region = Region::open_sealed(
            fd,
            sys::SIZE_SEALS,
            Size::AtLeast(Self::offset_of_tail()),
            Access::ReadWrite,
            what,
        )?;
        Shared::check(region, what)
    }

    /// Maps the named POSIX shared-memory object `fd` (unsealed: see `SharedMemory`), holding
    /// an `S`.
    pub fn open_named(fd: OwnedFd, what: &'static str) -> Result<Shared<S>> {
        Shared::check(Region::open_named(fd, Self::offset_of_tail(), what)?, what)
    }

    /// Checks that a mapping of at least the header's size holds an `S` of its size.
    fn check(region: Region, what: &'static str) -> Result<Shared<S>> {
        // SAFETY: the mapping is at least HEAD bytes, page-aligned, and Header is atomics only.
        let header = unsafe { &*region.as_ptr().cast::<Header>() };
        let magic = header.magic.load(Ordering::Acquire);
        if magic != S::MAGIC {
            return Err(refuse(
                what,
                format!("another kind of object (tag {magic:#x})"),
            ));
        }
        // Read once: what it says from now on does not matter.
        let tail_len = header.tail_len.load(Ordering::Relaxed) as usize;
        if Self::offset_of_tail() + tail_len != region.len() {
            return Err(refuse(what, "a memory object of the wrong size".into()));
        }
        Ok(Shared::wrap(region, tail_len))
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
    #[inline]
    pub fn tail(&self) -> *mut u8 {
        self.region().as_ptr().wrapping_add(Self::offset_of_tail())
    }

    /// Copies `src` into the tail at `offset`.
    ///
    /// # Panics
    /// If the range is not inside the tail (callers check what a peer could influence).
    #[inline]
    pub fn write_tail(&self, offset: usize, src: &[u8]) {
        self.check_tail(offset, src.len());
        // SAFETY: in bounds (checked); bytes have no invalid values. The caller serialises
        // writers (the object's lock, or free space only it may write); a process breaking that
        // can only make the bytes wrong, never reach outside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.tail().add(offset), src.len()) };
    }

    /// Copies bytes out of the tail from `offset` into `dst`.
    ///
    /// # Panics
    /// As [`write_tail`](Shared::write_tail).
    #[inline]
    pub fn read_tail(&self, offset: usize, dst: &mut [u8]) {
        self.check_tail(offset, dst.len());
        // SAFETY: as `write_tail`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.tail().add(offset), dst.as_mut_ptr(), dst.len())
        };
    }

    #[inline]
    fn check_tail(&self, offset: usize, len: usize) {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.tail_len()),
            "{len} bytes at {offset} do not fit a tail of {}",
            self.tail_len()
        );
    }

    /// Runs `f` on the tail's bytes while holding `lock(&self)`, a mutex of this object under
    /// which alone its tail is read or written.
    pub fn with_tail_locked<R>(
        &self,
        lock: impl FnOnce(&S) -> &RawMutex,
        wait: Wait,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        let mutex = lock(self);
        mutex.lock(wait).map_err(Error::from)?;
        // SAFETY: the tail is `tail_len` bytes of the mapping `self` keeps alive, and we hold the
        // object's own lock, which every reader and writer of the tail takes: no other
        // reference to these bytes exists until `unlock`. (A process ignoring the lock can only
        // make the bytes wrong.)
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.tail(), self.tail_len()) };
        let out = f(bytes);
        mutex.unlock();
        Ok(out)
    }

    /// How many bytes follow `S` (as checked against the mapping: never more than it holds).
    #[inline]
    pub fn tail_len(&self) -> usize {
        self.inner.tail_len
    }

    /// The descriptor of the memory object.
    pub fn fd(&self) -> BorrowedFd<'_> {
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
        Shared::open(fd, std::any::type_name::<S>()).map_err(crate::wire::refuse)
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("fd", &self.fd)
            .field("frozen", &self.frozen)
            .finish()
    }
}

impl<S: Layout> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("layout", &std::any::type_name::<S>())
            .field("tail_len", &self.tail_len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustix::fs::SealFlags;

    use super::*;

    crate::shared_struct! {
        struct Cell {
            n: AtomicU64,
        }
    }

    impl Layout for Cell {
        const MAGIC: u32 = 0x5445_5354;
    }

    /// A copy of `cell`'s bytes in a new memfd, sealed with `seals`.
    fn copy(cell: &Shared<Cell>, len: usize, seals: SealFlags) -> OwnedFd {
        let fd = sys::memfd("crafted").unwrap();
        // SAFETY: the mapping holds at least `len` bytes (callers pass at most its length).
        let bytes = unsafe { std::slice::from_raw_parts(cell.region().as_ptr(), len) };
        sys::write_file(fd.as_fd(), bytes).unwrap();
        sys::add_seals(fd.as_fd(), seals).unwrap();
        fd
    }

    fn reason(r: Result<Shared<Cell>>) -> String {
        match r {
            Ok(_) => "accepted".into(),
            Err(Error::Decode { reason, .. }) => reason,
            Err(e) => panic!("not a refusal: {e}"),
        }
    }

    #[test]
    fn new_objects_are_sealed_against_resizing() {
        let cell = Shared::<Cell>::new("test", 100).unwrap();
        let seals = sys::seals(cell.fd()).unwrap();
        assert!(seals.contains(sys::SIZE_SEALS), "{seals:?}");
        assert!(!seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE));
        let len = cell.region().len() as u64;
        for to in [0, len - 1, len + 1, len * 2] {
            assert_eq!(
                rustix::fs::ftruncate(cell.fd(), to),
                Err(rustix::io::Errno::PERM)
            );
        }
        assert_eq!(
            rustix::fs::fcntl_add_seals(cell.fd(), SealFlags::FUTURE_WRITE),
            Err(rustix::io::Errno::PERM)
        );
        cell.n.store(7, Ordering::Relaxed);
        let other = Shared::<Cell>::open(sys::dup(cell.fd()).unwrap(), "a cell").unwrap();
        assert_eq!(
            (other.n.load(Ordering::Relaxed), other.tail_len()),
            (7, 100)
        );
    }

    #[test]
    fn descriptors_that_could_change_size_are_refused_before_they_are_mapped() {
        let cell = Shared::<Cell>::new("test", 64).unwrap();
        cell.n.store(7, Ordering::Relaxed);
        let len = cell.region().len();
        let open = |fd| reason(Shared::<Cell>::open(fd, "a cell"));
        let size = SealFlags::SHRINK | SealFlags::GROW;
        assert_eq!(open(copy(&cell, len, sys::SIZE_SEALS)), "accepted");
        for seals in [
            SealFlags::empty(),
            size,
            SealFlags::SHRINK | SealFlags::SEAL,
        ] {
            let why = open(copy(&cell, len, seals));
            assert!(
                why.contains("not sealed against resizing"),
                "{seals:?}: {why}"
            );
        }
        let why = open(copy(&cell, len, sys::SIZE_SEALS | SealFlags::WRITE));
        assert!(why.contains("write-sealed"), "{why}");
        // Sealed, but smaller than its header says, or than a header.
        assert!(open(copy(&cell, len - 8, sys::SIZE_SEALS)).contains("wrong size"));
        assert!(open(copy(&cell, 16, sys::SIZE_SEALS)).contains("of 16 bytes"));
        assert!(open(copy(&cell, 0, sys::SIZE_SEALS)).contains("of 0 bytes"));
        // Not a memfd at all.
        let (pipe, _w) = rustix::pipe::pipe().unwrap();
        assert!(open(pipe).contains("not sealed"));
        // Another kind of object, sealed and of the right size.
        let other = Shared::<Cell>::new("test", 64).unwrap();
        other.header().magic.store(1, Ordering::Relaxed);
        let fd = sys::dup(other.fd()).unwrap();
        assert!(open(fd).contains("another kind of object"));
    }

    #[test]
    fn a_header_overwritten_later_cannot_widen_the_mapping() {
        let cell = Shared::<Cell>::new("test", 64).unwrap();
        let other = Shared::<Cell>::open(sys::dup(cell.fd()).unwrap(), "a cell").unwrap();
        // Any holder can write the shared header: the length checked at open stands.
        cell.header().tail_len.store(u32::MAX, Ordering::Relaxed);
        assert_eq!((cell.tail_len(), other.tail_len()), (64, 64));
    }
}

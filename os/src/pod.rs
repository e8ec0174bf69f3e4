//! Plain data in shared memory with a robust lock: the storage of the runtime's `Value` and
//! `Array` (`T` is [`bytemuck::Pod`]: any bytes are a valid `T`, so a process killed in the
//! middle of a write leaves a wrong value at worst, never an invalid one).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::robust::RawMutex;
use crate::shm::{Layout, Shared};
use crate::wire::{self, Wait};

crate::shared_struct! {
    /// The shared-memory header of a [`Data`]: its lock, type fingerprint and item count, followed
    /// by the items.
    pub struct DataCell {
        mutex: RawMutex,
        /// Fingerprint of `T`: a `Value<u64>` does not open as a `Value<f64>`.
        type_tag: AtomicU64,
        /// Items of `T` after the cell.
        len: AtomicU64,
    }
}

impl Layout for DataCell {
    const MAGIC: u32 = 0x4441_5441;
    fn in_use_here(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// `len` items of `T` in shared memory. The common part of the four types below.
pub struct Data<T> {
    cell: Shared<DataCell>,
    /// The number of items, checked against the mapping once (the cell's copy is shared memory,
    /// which any holder may overwrite).
    len: usize,
    _type: PhantomData<T>,
}

impl<T: Pod> Data<T> {
    /// Copies `items` into a new shared-memory object (`what` names it in errors); `T` may be
    /// aligned to at most 64 bytes.
    pub fn new(items: &[T], what: &'static str) -> Result<Data<T>> {
        if std::mem::align_of::<T>() > 64 {
            return Err(Error::Unsupported(
                "shared values need an alignment of at most 64 bytes",
            ));
        }
        let cell = Shared::<DataCell>::new(what, std::mem::size_of_val(items))?;
        cell.type_tag
            .store(wire::fingerprint::<T>(), Ordering::Relaxed);
        cell.len.store(items.len() as u64, Ordering::Release);
        let data = Data {
            cell,
            len: items.len(),
            _type: PhantomData,
        };
        // SAFETY: fresh memory of exactly this many items, not shared with anyone yet.
        unsafe { data.slice_mut() }.copy_from_slice(items);
        Ok(data)
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ptr(&self) -> *mut T {
        self.cell.tail().cast()
    }

    /// # Safety
    /// The caller holds the lock (or has the memory to itself): nobody writes meanwhile.
    unsafe fn slice(&self) -> &[T] {
        // SAFETY: `len` items, 64-byte aligned, in the mapping `cell` keeps alive; any bytes
        // are a `T`; no writer meanwhile (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }

    /// # Safety
    /// The caller holds the lock (or has the memory to itself): nobody else reads or writes.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self) -> &mut [T] {
        // SAFETY: as `slice`, and nobody else reads or writes (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
    }

    /// Reads item `i` without a lock: a volatile read (another process may be writing it).
    pub fn read(&self, i: usize) -> Option<T> {
        // SAFETY: in bounds, aligned (64-byte aligned start), and any bytes are a valid `T`.
        (i < self.len()).then(|| unsafe { self.ptr().add(i).read_volatile() })
    }

    /// Writes item `i` without a lock: a volatile write (other processes may be reading it). Panics
    /// if `i` is out of range.
    pub fn write(&self, i: usize, value: T) {
        let len = self.len();
        assert!(
            i < len,
            "index {i} out of range for a shared array of {len}"
        );
        // SAFETY: as `read`.
        unsafe { self.ptr().add(i).write_volatile(value) }
    }

    /// Takes the robust lock, waiting as `wait` says: a guard giving access to the items.
    pub fn lock(&self, wait: Wait) -> Result<DataGuard<'_, T>> {
        let owner_died = self.cell.mutex.lock(wait)?;
        Ok(DataGuard {
            data: self,
            owner_died,
            _thread: PhantomData,
        })
    }

    /// Opens a received cell as items of `T`, refusing one whose type fingerprint or size does not
    /// match.
    pub fn open(cell: Shared<DataCell>) -> Result<Data<T>> {
        let size = std::mem::size_of::<T>() as u64;
        let len = cell.len.load(Ordering::Acquire);
        if cell.type_tag.load(Ordering::Relaxed) != wire::fingerprint::<T>()
            || len.checked_mul(size) != Some(cell.tail_len() as u64)
        {
            return Err(Error::Decode {
                expected: std::any::type_name::<T>(),
                reason: "shared memory holding another type".into(),
            });
        }
        Ok(Data {
            cell,
            len: len as usize,
            _type: PhantomData,
        })
    }
}

impl<T> Clone for Data<T> {
    fn clone(&self) -> Self {
        Data {
            cell: self.cell.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T> Serialize for Data<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.cell.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Data<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Data::open(Shared::deserialize(d)?).map_err(crate::wire::refuse)
    }
}

/// Exclusive access to a [`Value`] or [`Array`] while its lock is held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct DataGuard<'a, T> {
    data: &'a Data<T>,
    owner_died: bool,
    _thread: PhantomData<*const ()>,
}

impl<T> DataGuard<'_, T> {
    /// True when the previous holder died holding the lock (its write may be half done).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T> Drop for DataGuard<'_, T> {
    fn drop(&mut self) {
        self.data.cell.mutex.unlock();
    }
}

/// The guard of a [`Value`]: derefs to the value.
pub type ValueGuard<'a, T> = DataGuard<'a, T>;

impl<T: Pod> DataGuard<'_, T> {
    /// The items, while the lock is held.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the lock is held.
        unsafe { self.data.slice() }
    }

    /// The items, while the lock is held.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: the lock is held and `&mut self` makes this the only borrow.
        unsafe { self.data.slice_mut() }
    }
}

impl<T: Pod> Deref for DataGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held; a Value has exactly one item.
        unsafe { &self.data.slice()[0] }
    }
}

impl<T: Pod> DerefMut for DataGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes this the only borrow.
        unsafe { &mut self.data.slice_mut()[0] }
    }
}

impl<T> std::fmt::Debug for Data<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for DataGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataGuard")
            .field("items", &self.as_slice())
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

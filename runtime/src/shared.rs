//! Plain data in shared memory: `Value<T>` and `Array<T>` (each with its own robust lock),
//! `RawValue<T>` and `RawArray<T>` (no lock), and `SharedMemory` (raw bytes, optionally named).
//!
//! `T` is plain old data ([`bytemuck::Pod`]: integers, floats, arrays of them, `#[repr(C)]`
//! structs deriving `Pod`): any bytes are a valid `T`, so a process killed in the middle of a
//! write leaves a wrong value at worst, never an invalid one.

use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::sys;
use crate::wire::{Fd, Wait};
pub(crate) use procactor_os::pod::Data;
pub use procactor_os::pod::{DataGuard, ValueGuard};

macro_rules! handle_common {
    ($ty:ident) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    data: self.data.clone(),
                }
            }
        }

        impl<T> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.data.serialize(s)
            }
        }

        impl<'de, T: Pod> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($ty {
                    data: Data::deserialize(d)?,
                })
            }
        }
    };
}

/// One `T` in shared memory with its own robust lock (Python's `multiprocessing.Value`).
///
/// `get` and `set` take the lock; `lock()` holds it for a read-modify-write, which a plain
/// `v.set(v.get() + 1)` from two processes is not.
///
/// ```
/// # procactor::init();
/// use procactor::{Process, Value};
///
/// fn bump(v: Value<i64>) {
///     for _ in 0..1000 {
///         *v.lock() += 1;
///     }
/// }
///
/// let v = Value::new(0i64)?;
/// let ps = (0..2)
///     .map(|_| Process::new(bump, v.clone()).start())
///     .collect::<Result<Vec<_>, _>>()?;
/// for p in ps {
///     p.join()?;
/// }
/// assert_eq!(v.get(), 2000);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Value<T> {
    data: Data<T>,
}

handle_common!(Value);

impl<T: Pod> Value<T> {
    /// A new shared value.
    pub fn new(value: T) -> Result<Value<T>> {
        Ok(Value {
            data: Data::new(&[value], "procactor-value")?,
        })
    }

    /// Reads it (under the lock).
    pub fn get(&self) -> T {
        *self.lock()
    }

    /// Writes it (under the lock).
    pub fn set(&self, value: T) {
        *self.lock() = value;
    }

    /// Holds the lock; the guard derefs to the value. Panics if this thread already holds it
    /// (that would wait for ever).
    pub fn lock(&self) -> ValueGuard<'_, T> {
        self.data
            .lock(Wait::Forever)
            .unwrap_or_else(|e| panic!("Value::lock: {e}"))
    }

    /// Holds the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>> {
        self.data.lock(Wait::timeout(timeout))
    }
}

/// Items of `T` in shared memory with one robust lock (Python's `multiprocessing.Array`).
///
/// ```
/// # procactor::init();
/// use procactor::{Array, Process};
///
/// fn double(a: Array<f64>) {
///     for x in a.lock().iter_mut() {
///         *x *= 2.0;
///     }
/// }
///
/// let a = Array::from_slice(&[1.0, 2.0, 3.0])?;
/// Process::new(double, a.clone()).start()?.join()?;
/// assert_eq!(a.to_vec(), [2.0, 4.0, 6.0]);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Array<T> {
    data: Data<T>,
}

handle_common!(Array);

/// The guard of an [`Array`]: derefs to the slice of items.
pub struct ArrayGuard<'a, T>(DataGuard<'a, T>);

impl<T: Pod> Array<T> {
    /// `len` copies of `value`.
    pub fn new(len: usize, value: T) -> Result<Array<T>> {
        Array::from_slice(&vec![value; len])
    }

    /// A copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        Ok(Array {
            data: Data::new(items, "procactor-array")?,
        })
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i` (under the lock), `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.lock().get(i).copied()
    }

    /// Sets item `i` (under the lock). Panics past the end, as slice indexing does.
    pub fn set(&self, i: usize, value: T) {
        self.lock()[i] = value;
    }

    /// A copy of all items (under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }

    /// Holds the lock; the guard derefs to `[T]`. Panics if this thread already holds it.
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        ArrayGuard(
            self.data
                .lock(Wait::Forever)
                .unwrap_or_else(|e| panic!("Array::lock: {e}")),
        )
    }

    /// Holds the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>> {
        self.data.lock(Wait::timeout(timeout)).map(ArrayGuard)
    }
}

impl<T> ArrayGuard<'_, T> {
    /// True when the previous holder died holding the lock.
    pub fn owner_died(&self) -> bool {
        self.0.owner_died()
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_slice()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.as_mut_slice()
    }
}

/// One `T` in shared memory without a lock (Python's `RawValue`): each `get`/`set` is one
/// volatile access, so concurrent read-modify-writes lose updates (see the race demo).
///
/// ```
/// # procactor::init();
/// let v = procactor::shared::RawValue::new(7u32)?;
/// v.set(v.get() * 6);
/// assert_eq!(v.get(), 42);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct RawValue<T> {
    data: Data<T>,
}

handle_common!(RawValue);

impl<T: Pod> RawValue<T> {
    /// A new shared value.
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            data: Data::new(&[value], "procactor-rawvalue")?,
        })
    }

    /// Reads it.
    pub fn get(&self) -> T {
        self.data.read(0).unwrap_or_else(T::zeroed)
    }

    /// Writes it.
    pub fn set(&self, value: T) {
        self.data.write(0, value)
    }
}

/// Items of `T` in shared memory without a lock (Python's `RawArray`).
///
/// ```
/// # procactor::init();
/// let a = procactor::shared::RawArray::new(3, 0u8)?;
/// a.set(1, 9);
/// assert_eq!(a.to_vec(), [0, 9, 0]);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct RawArray<T> {
    data: Data<T>,
}

handle_common!(RawArray);

impl<T: Pod> RawArray<T> {
    /// `len` copies of `value`.
    pub fn new(len: usize, value: T) -> Result<RawArray<T>> {
        RawArray::from_slice(&vec![value; len])
    }

    /// A copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        Ok(RawArray {
            data: Data::new(items, "procactor-rawarray")?,
        })
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i`, `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.data.read(i)
    }

    /// Sets item `i`. Panics past the end.
    pub fn set(&self, i: usize, value: T) {
        self.data.write(i, value)
    }

    /// A copy of all items (each read once; not a snapshot if others write meanwhile).
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).filter_map(|i| self.data.read(i)).collect()
    }
}

procactor_os::shared_struct! {
    pub(crate) struct BytesCell {
        /// Handles (per process) attached to a named object: the last one out unlinks the name.
        attached: AtomicU32,
    }
}

impl Layout for BytesCell {
    const MAGIC: u32 = 0x4259_5445;
}

/// A block of raw bytes shared between processes (Python's `shared_memory.SharedMemory`).
///
/// Anonymous ([`new`](SharedMemory::new)) blocks travel as handles (`Process` arguments,
/// messages) and are freed with their last handle. Named ones ([`create`](SharedMemory::create))
/// can also be attached by name from any process of the same user
/// ([`open`](SharedMemory::open)); the name is removed when the last handle is dropped, or by
/// [`unlink`](SharedMemory::unlink). A process killed while attached keeps the name alive until
/// `unlink`.
///
/// **Resizing.** A process whose mapped memory is truncated under it dies of SIGBUS when it
/// touches the lost pages. An anonymous block, like every other procactor object, is a memfd
/// sealed against resizing: nobody, the holders of its descriptor included, can shrink or grow
/// it, and a descriptor that arrives unsealed is refused before it is mapped. A named block is a
/// file in `/dev/shm`, which cannot be sealed. It is created mode 0600 (owner only, whatever
/// the umask), and `open` checks its owner and size before mapping it; a named block received
/// in a message must be the object its name names. What remains: any process of the same user
/// with write access to the file (through `/dev/shm/NAME`, or a descriptor of it) can still
/// truncate it while others have it mapped, and kill them with SIGBUS. Prefer anonymous blocks
/// where a name is not needed.
///
/// ```
/// # procactor::init();
/// use procactor::SharedMemory;
///
/// let name = format!("procactor-doc-{}", std::process::id());
/// let shm = SharedMemory::create(&name, 16)?;
/// shm.write(0, b"hello")?;
/// let other = SharedMemory::open(&name)?;
/// assert_eq!(&other.to_vec()[..5], b"hello");
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    cell: Shared<BytesCell>,
    name: Option<Arc<Attached>>,
}

/// This process's attachment to a named block.
struct Attached {
    name: String,
    cell: Shared<BytesCell>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.cell.attached.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = sys::shm_unlink(&self.name);
        }
    }
}

fn shm_path(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(Error::InvalidState(
            "a SharedMemory name is 1 to 200 characters without '/'",
        ));
    }
    Ok(format!("/{name}"))
}

/// Opens the existing named object `path` (`/name`) for reading and writing.
fn open_path(path: &str) -> Result<OwnedFd> {
    sys::shm_open(path).map_err(|e| Error::io("shm_open", e))
}

const WHAT: &str = "a procactor SharedMemory";

impl SharedMemory {
    /// An anonymous block of `size` zeroed bytes.
    pub fn new(size: usize) -> Result<SharedMemory> {
        Ok(SharedMemory {
            cell: Shared::new("procactor-shm", size)?,
            name: None,
        })
    }

    /// A new named block of `size` zeroed bytes, readable and writable by its owner only (mode
    /// 0600, whatever the umask); `Err(NameTaken)` if the name exists. A size of 0 is refused
    /// (an `InvalidInput` I/O error), as CPython refuses it: nobody could attach and use it.
    ///
    /// ```
    /// use procactor::SharedMemory;
    /// let name = format!("procactor-doc-{}", std::process::id());
    /// assert!(SharedMemory::create(&name, 0).is_err());
    /// let shm = SharedMemory::create(&name, 16)?;
    /// assert_eq!(shm.len(), 16);
    /// shm.unlink()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::io(
                "create a named SharedMemory",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a size of 0: give the block a size",
                ),
            ));
        }
        let path = shm_path(name)?;
        let fd = sys::shm_create(&path)
            .map_err(|e| Error::io("shm_open", e))?
            .ok_or_else(|| Error::NameTaken(name.to_string()))?;
        let cell =
            Shared::<BytesCell>::create_named(fd, "procactor-shm", size).inspect_err(|_| {
                let _ = sys::shm_unlink(&path);
            })?;
        Ok(SharedMemory::attach(cell, path))
    }

    /// Attaches the named block another process of this user created (its size checked before
    /// it is mapped).
    pub fn open(name: &str) -> Result<SharedMemory> {
        let path = shm_path(name)?;
        let cell = Shared::open_named(open_path(&path)?, WHAT)?;
        Ok(SharedMemory::attach(cell, path))
    }

    /// A named block received from another process: the descriptor must be the very object its
    /// name names now (anything else, an unsealed memfd with a name attached in particular, is
    /// refused before it is mapped).
    fn receive_named(fd: OwnedFd, path: String) -> Result<SharedMemory> {
        let refused = |reason: String| Error::Decode {
            expected: WHAT,
            reason,
        };
        let name = path
            .strip_prefix('/')
            .ok_or_else(|| refused(format!("the name {path:?}")))?;
        let same = open_path(&shm_path(name)?).and_then(|named| {
            let id = |fd: BorrowedFd| sys::file_stat(fd).map(|st| st.id);
            id(named.as_fd())
                .and_then(|a| Ok(a == id(fd.as_fd())?))
                .map_err(|e| Error::io("fstat", e))
        });
        if !matches!(same, Ok(true)) {
            return Err(refused(format!(
                "a memory object that the name {path:?} does not name"
            )));
        }
        Ok(SharedMemory::attach(Shared::open_named(fd, WHAT)?, path))
    }

    fn attach(cell: Shared<BytesCell>, name: String) -> SharedMemory {
        cell.attached.fetch_add(1, Ordering::AcqRel);
        SharedMemory {
            cell: cell.clone(),
            name: Some(Arc::new(Attached { name, cell })),
        }
    }

    /// The name it was created with (`None` for an anonymous block).
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(|a| &a.name[1..])
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.cell.tail_len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first byte. Other processes may write the memory at any time: accessing it through
    /// this pointer is up to you (use your own `Lock`, or atomics).
    pub fn as_ptr(&self) -> *mut u8 {
        self.cell.tail()
    }

    /// Copies `data` in at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // A concurrent writer can only make the bytes wrong: the contract of raw shared memory.
        self.cell.write_tail(offset, data);
        Ok(())
    }

    /// Copies `buf.len()` bytes out from `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        self.cell.read_tail(offset, buf);
        Ok(())
    }

    /// A copy of all the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        // Cannot fail: the whole block.
        let _ = self.read(0, &mut v);
        v
    }

    /// Removes the name now (attached handles keep working; nobody new can `open` it).
    pub fn unlink(&self) -> Result<()> {
        match &self.name {
            Some(a) => sys::shm_unlink(&a.name).map_err(|e| Error::io("shm_unlink", e)),
            None => Ok(()),
        }
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::InvalidState("access past the end of a SharedMemory")),
        }
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.cell, self.name.as_ref().map(|a| a.name.as_str())).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (Fd(fd), name) = <(Fd, Option<String>)>::deserialize(d)?;
        match name {
            // An anonymous block is a sealed memfd (see `Shared::open`).
            None => Shared::open(fd, WHAT).map(|cell| SharedMemory { cell, name: None }),
            Some(path) => SharedMemory::receive_named(fd, path),
        }
        .map_err(crate::wire::refuse)
    }
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

macro_rules! debug_handle {
    ($($ty:ident),*) => {$(
        impl<T: Pod + std::fmt::Debug> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("type", &std::any::type_name::<T>())
                    .field("len", &self.data.len())
                    .finish_non_exhaustive()
            }
        }
    )*};
}

debug_handle!(Value, Array, RawValue, RawArray);

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("items", &self.0.as_slice())
            .field("owner_died", &self.owner_died())
            .finish()
    }
}
